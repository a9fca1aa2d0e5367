//! [`CachedKeyStore`]: keeps decrypted tenant records in memory so the hot
//! path does not read the store and open two AES-GCM ciphertexts for every
//! request.
//!
//! Correctness rests on every write being seen by this wrapper: writes made
//! through it drop the tenant's entry once the inner store has made them
//! durable, and writes made by another replica sharing the store arrive as
//! [`CachedKeyStore::forget`] / [`CachedKeyStore::forget_all`] from the
//! store's change feed. A read racing with a write or a forget never puts
//! the old record back: reads remember the write epoch they started in and
//! store their result only if no write or forget finished meanwhile,
//! checked and stored under the same lock that bumps the epoch.
//!
//! Entries also expire after [`DEFAULT_TTL`], which bounds staleness should
//! a change notice be lost. Separately, the record last read for each
//! tenant is kept for [`DEFAULT_MAX_STALE`] and served only while the inner
//! store is unreachable ([`StoreError::Unavailable`]), so a database restart
//! does not stop traffic for tenants in use (stale-if-error). Keys are
//! [`SecretString`]s: their bytes are zeroed when an entry is evicted and
//! its last copy drops.
//!
//! [`SecretString`]: odgw_core::SecretString

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use odgw_core::TenantId;

use crate::{
    KeyStore, PutOutcome, SealedTenant, StoreError, TenantInput, TenantRecord, TenantSummary,
};

/// Tenants kept decrypted at most; beyond it the least useful are evicted.
pub const DEFAULT_CAPACITY: u64 = 50_000;

/// How long a decrypted record is trusted without reading the store again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// How long after it was last read a record may still be served while the
/// store is unreachable.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(600);

type Records = moka::sync::Cache<TenantId, Arc<TenantRecord>>;

/// A [`KeyStore`] that answers `get` from memory and passes everything
/// else through, dropping cached records on every write.
pub struct CachedKeyStore {
    inner: Arc<dyn KeyStore>,
    capacity: u64,
    records: Records,
    /// The record of each tenant as last read from the inner store,
    /// expiring `max_stale` after that read; `None` when disabled. Read
    /// only when the inner store is unavailable.
    last_known: Option<Records>,
    /// Bumped (under `write_lock`) after every write reached the inner
    /// store and on every forget.
    epoch: AtomicU64,
    write_lock: Mutex<()>,
    /// Set while answers come from `last_known`, so the outage is logged
    /// once rather than per request.
    serving_stale: AtomicBool,
}

impl CachedKeyStore {
    /// Wraps `inner` with the default capacity, time to live and
    /// [`DEFAULT_MAX_STALE`].
    pub fn new(inner: Arc<dyn KeyStore>) -> Self {
        Self::with_limits(inner, DEFAULT_CAPACITY, DEFAULT_TTL)
    }

    /// Wraps `inner` keeping at most `capacity` records, each trusted for
    /// `ttl` after it was read; stale-if-error uses [`DEFAULT_MAX_STALE`]
    /// (change it with [`CachedKeyStore::with_max_stale`]).
    pub fn with_limits(inner: Arc<dyn KeyStore>, capacity: u64, ttl: Duration) -> Self {
        Self {
            inner,
            capacity,
            records: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            last_known: last_known_cache(capacity, DEFAULT_MAX_STALE),
            epoch: AtomicU64::new(0),
            write_lock: Mutex::new(()),
            serving_stale: AtomicBool::new(false),
        }
    }

    /// Sets how long after its last successful read a tenant's record may
    /// still be served while the inner store is unavailable. Zero turns
    /// stale-if-error off: every miss then needs a reachable store.
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.last_known = last_known_cache(self.capacity, max_stale);
        self
    }

    /// Records held in memory (approximate until pending evictions run).
    pub fn cached(&self) -> u64 {
        self.records.run_pending_tasks();
        self.records.entry_count()
    }

    /// Drops the tenant's cached record (a change made by another replica).
    /// A read in flight when this is called does not cache what it read,
    /// and the record is no longer served while the store is unavailable.
    pub fn forget(&self, id: &TenantId) {
        self.bump_epoch(Some(id));
    }

    /// A tenant changed in the shared store (by another replica, or this
    /// one's own write coming back through the change feed): drops its
    /// record as [`CachedKeyStore::forget`] does, then, if this replica was
    /// using it, reads it again at once. Without the re-read, an outage
    /// right after the change would find no record to bridge it with, even
    /// though the store held the current one moments before. If the re-read
    /// fails, nothing is kept: a record older than the change is never
    /// served.
    pub async fn reload(&self, id: &TenantId) {
        let in_use = self.records.contains_key(id)
            || self
                .last_known
                .as_ref()
                .is_some_and(|last| last.contains_key(id));
        self.forget(id);
        if in_use {
            // An error leaves the tenant forgotten, which is the safe state;
            // the next request reports it.
            let _ = self.get(id).await;
        }
    }

    /// Drops every cached record (the change feed lost track, or many
    /// tenants changed at once), with the same guarantees as
    /// [`CachedKeyStore::forget`].
    pub fn forget_all(&self) {
        self.bump_epoch(None);
    }

    fn bump_epoch(&self, id: Option<&TenantId>) {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match id {
            Some(id) => {
                self.records.invalidate(id);
                if let Some(last) = &self.last_known {
                    last.invalidate(id);
                }
            }
            None => {
                self.records.invalidate_all();
                if let Some(last) = &self.last_known {
                    last.invalidate_all();
                }
            }
        }
    }

    /// Runs `write` against the inner store, then forgets `id` (or every
    /// tenant) whatever the outcome: a failed write may still have reached
    /// the disk. The forgetting happens on drop, so it also runs when the
    /// caller stops waiting (a client hanging up during the flush): the
    /// store may already show the new record by then.
    async fn write<T>(
        &self,
        id: Option<&TenantId>,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _forget = Forget { store: self, id };
        write.await
    }

    /// A miss the inner store could not answer because it is unreachable:
    /// the record last read, if that was within `max_stale`.
    fn stale(&self, id: &TenantId, error: &StoreError) -> Option<Arc<TenantRecord>> {
        let record = self.last_known.as_ref()?.get(id)?;
        if !self.serving_stale.load(Ordering::Acquire)
            && !self.serving_stale.swap(true, Ordering::AcqRel)
        {
            tracing::warn!(
                tenant = %id,
                error = %error,
                "key store unavailable; serving tenants' last known records until it is back"
            );
        }
        Some(record)
    }
}

fn last_known_cache(capacity: u64, max_stale: Duration) -> Option<Records> {
    (!max_stale.is_zero()).then(|| {
        moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(max_stale)
            .build()
    })
}

/// Drops a tenant's (or every) cached record when it goes out of scope.
struct Forget<'a> {
    store: &'a CachedKeyStore,
    id: Option<&'a TenantId>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.store.bump_epoch(self.id);
    }
}

impl std::fmt::Debug for CachedKeyStore {
    // Not derived: moka's Debug would list every cached tenant.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKeyStore")
            .field("inner", &self.inner)
            .field("cached", &self.records.entry_count())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl KeyStore for CachedKeyStore {
    async fn get(&self, id: &TenantId) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        if let Some(record) = self.records.get(id) {
            return Ok(Some(record));
        }
        let started_in = self.epoch.load(Ordering::Acquire);
        let fresh = match self.inner.get(id).await {
            Ok(fresh) => fresh,
            Err(err) if err.is_unavailable() => {
                return match self.stale(id, &err) {
                    Some(record) => Ok(Some(record)),
                    None => Err(err),
                };
            }
            Err(err) => return Err(err),
        };
        // Read first: a swap on every miss would write the shared cache
        // line even when nothing changes.
        if self.serving_stale.load(Ordering::Acquire)
            && self.serving_stale.swap(false, Ordering::AcqRel)
        {
            tracing::info!("key store reachable again; serving fresh records");
        }
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        match &fresh {
            Some(record) if self.epoch.load(Ordering::Acquire) == started_in => {
                self.records.insert(id.clone(), Arc::clone(record));
                if let Some(last) = &self.last_known {
                    last.insert(id.clone(), Arc::clone(record));
                }
            }
            Some(_) => {}
            // Gone from the store: nothing to fall back on either.
            None => {
                if let Some(last) = &self.last_known {
                    last.invalidate(id);
                }
            }
        }
        Ok(fresh)
    }

    async fn put(
        &self,
        id: &TenantId,
        input: TenantInput,
    ) -> Result<(PutOutcome, TenantSummary), StoreError> {
        self.write(Some(id), self.inner.put(id, input)).await
    }

    async fn list(&self) -> Result<Vec<TenantSummary>, StoreError> {
        self.inner.list().await
    }

    async fn summary(&self, id: &TenantId) -> Result<Option<TenantSummary>, StoreError> {
        self.inner.summary(id).await
    }

    async fn set_enabled(
        &self,
        id: &TenantId,
        enabled: bool,
    ) -> Result<Option<TenantSummary>, StoreError> {
        self.write(Some(id), self.inner.set_enabled(id, enabled))
            .await
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        self.write(Some(id), self.inner.delete(id)).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        // Always the real store: readiness must notice a broken disk or key.
        self.inner.health().await
    }

    async fn announce_purge(&self, tenant: Option<&TenantId>) -> Result<(), StoreError> {
        // Response caches, not this one: the records did not change.
        self.inner.announce_purge(tenant).await
    }

    async fn export_sealed(&self) -> Result<Vec<SealedTenant>, StoreError> {
        self.inner.export_sealed().await
    }

    async fn import_sealed(&self, records: Vec<SealedTenant>) -> Result<usize, StoreError> {
        self.write(None, self.inner.import_sealed(records)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::AtomicUsize;

    use odgw_core::SecretString;
    use tokio::sync::Notify;

    use super::*;
    use crate::MemoryKeyStore;

    /// Counts reads and can hold a read between the store access and its
    /// answer, to force the race between a slow read and a write.
    #[derive(Debug, Default)]
    struct Probe {
        reads: AtomicUsize,
        hold_reads: std::sync::atomic::AtomicBool,
        read_done: Notify,
        release: Notify,
        /// Puts apply, then never finish (a flush the caller stops awaiting).
        hang_after_put: std::sync::atomic::AtomicBool,
        /// Reads fail as if the database could not be reached.
        unreachable: std::sync::atomic::AtomicBool,
        /// Reads fail with an error the database answered.
        broken: std::sync::atomic::AtomicBool,
    }

    impl Probe {
        /// Counts a read and fails it if told to.
        fn read(&self) -> Result<(), StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            if self.unreachable.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable {
                    context: "reading",
                    source: "connection refused".into(),
                });
            }
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    context: "reading",
                    source: "relation does not exist".into(),
                });
            }
            Ok(())
        }
    }

    /// A memory store behind a [`Probe`]. Tests may also write to the
    /// memory store directly, as another replica would, behind the cache's
    /// back.
    #[derive(Debug)]
    struct ProbedStore {
        inner: Arc<MemoryKeyStore>,
        probe: Arc<Probe>,
    }

    #[async_trait::async_trait]
    impl KeyStore for ProbedStore {
        async fn get(&self, id: &TenantId) -> Result<Option<Arc<TenantRecord>>, StoreError> {
            self.probe.read()?;
            let record = self.inner.get(id).await;
            if self.probe.hold_reads.load(Ordering::SeqCst) {
                self.probe.read_done.notify_one();
                self.probe.release.notified().await;
            }
            record
        }
        async fn put(
            &self,
            id: &TenantId,
            input: TenantInput,
        ) -> Result<(PutOutcome, TenantSummary), StoreError> {
            let result = self.inner.put(id, input).await;
            if self.probe.hang_after_put.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            result
        }
        async fn list(&self) -> Result<Vec<TenantSummary>, StoreError> {
            self.inner.list().await
        }
        async fn summary(&self, id: &TenantId) -> Result<Option<TenantSummary>, StoreError> {
            self.inner.summary(id).await
        }
        async fn set_enabled(
            &self,
            id: &TenantId,
            enabled: bool,
        ) -> Result<Option<TenantSummary>, StoreError> {
            self.inner.set_enabled(id, enabled).await
        }
        async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn health(&self) -> Result<(), StoreError> {
            self.inner.health().await
        }
        async fn announce_purge(&self, tenant: Option<&TenantId>) -> Result<(), StoreError> {
            self.inner.announce_purge(tenant).await
        }
        async fn export_sealed(&self) -> Result<Vec<SealedTenant>, StoreError> {
            self.inner.export_sealed().await
        }
        async fn import_sealed(&self, records: Vec<SealedTenant>) -> Result<usize, StoreError> {
            self.inner.import_sealed(records).await
        }
    }

    /// A fresh memory store, its probe, and the two as a [`ProbedStore`].
    fn probed() -> (Arc<ProbedStore>, Arc<Probe>, Arc<MemoryKeyStore>) {
        let probe = Arc::new(Probe::default());
        let memory = Arc::new(MemoryKeyStore::new().unwrap());
        let inner = ProbedStore {
            inner: memory.clone(),
            probe: probe.clone(),
        };
        (Arc::new(inner), probe, memory)
    }

    fn cached() -> (Arc<CachedKeyStore>, Arc<Probe>) {
        let (inner, probe, _) = probed();
        (Arc::new(CachedKeyStore::new(inner)), probe)
    }

    fn input(customer_key: &str) -> TenantInput {
        TenantInput {
            name: None,
            customer_key: SecretString::new(customer_key),
            developer_key: None,
            base_url: None,
            rate: None,
            burst: None,
            enabled: None,
        }
    }

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    async fn customer_key(store: &CachedKeyStore) -> Option<String> {
        let record = store.get(&acme()).await.unwrap()?;
        Some(record.customer_key.expose().to_owned())
    }

    /// Starts a read of acme and waits until it has the record in hand but
    /// has not answered yet; [`release_reads`] lets it answer.
    async fn read_held_midway(
        store: &Arc<CachedKeyStore>,
        probe: &Probe,
    ) -> tokio::task::JoinHandle<Option<String>> {
        probe.hold_reads.store(true, Ordering::SeqCst);
        let slow_read = tokio::spawn({
            let store = store.clone();
            async move { customer_key(&store).await }
        });
        probe.read_done.notified().await;
        slow_read
    }

    fn release_reads(probe: &Probe) {
        probe.hold_reads.store(false, Ordering::SeqCst);
        probe.release.notify_one();
    }

    #[tokio::test]
    async fn repeated_reads_hit_memory_and_writes_are_seen_at_once() {
        let (store, probe) = cached();
        assert_eq!(customer_key(&store).await, None);
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        for _ in 0..5 {
            assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-ONE"));
        }
        // One miss before the put (not remembered) and one read after it.
        assert_eq!(probe.reads.load(Ordering::SeqCst), 2);
        assert_eq!(store.cached(), 1);

        store.put(&acme(), input("KEY-TWO")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-TWO"));
        store.set_enabled(&acme(), false).await.unwrap();
        assert!(!store.get(&acme()).await.unwrap().unwrap().enabled);
        store.delete(&acme()).await.unwrap();
        assert_eq!(customer_key(&store).await, None);
        assert_eq!(store.cached(), 0);
    }

    #[tokio::test]
    async fn a_read_overtaken_by_a_write_does_not_keep_the_old_record() {
        let (store, probe) = cached();
        store.put(&acme(), input("OLD-KEY")).await.unwrap();
        // The slow read has the old record in hand; now the key changes.
        let slow_read = read_held_midway(&store, &probe).await;
        store.put(&acme(), input("NEW-KEY")).await.unwrap();
        release_reads(&probe);
        assert_eq!(slow_read.await.unwrap().as_deref(), Some("OLD-KEY"));
        assert_eq!(customer_key(&store).await.as_deref(), Some("NEW-KEY"));
    }

    #[tokio::test]
    async fn a_write_abandoned_mid_flush_still_drops_the_old_record() {
        let (store, probe) = cached();
        store.put(&acme(), input("OLD-KEY")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("OLD-KEY"));
        probe.hang_after_put.store(true, Ordering::SeqCst);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            store.put(&acme(), input("NEW-KEY")),
        )
        .await;
        assert!(abandoned.is_err(), "the put was meant to hang");
        assert_eq!(customer_key(&store).await.as_deref(), Some("NEW-KEY"));
    }

    #[tokio::test]
    async fn entries_expire_after_their_time_to_live() {
        let (inner, probe, _) = probed();
        let store = CachedKeyStore::with_limits(inner, 10, Duration::from_millis(100));
        store.put(&acme(), input("KEY")).await.unwrap();
        customer_key(&store).await;
        customer_key(&store).await;
        assert_eq!(probe.reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        customer_key(&store).await;
        assert_eq!(probe.reads.load(Ordering::SeqCst), 2);
    }

    /// A cache with the given time to live and stale window over a memory
    /// store that the test may also write to directly.
    fn over_shared(
        ttl: Duration,
        max_stale: Duration,
    ) -> (Arc<CachedKeyStore>, Arc<Probe>, Arc<MemoryKeyStore>) {
        let (inner, probe, memory) = probed();
        let store = CachedKeyStore::with_limits(inner, 10, ttl).with_max_stale(max_stale);
        (Arc::new(store), probe, memory)
    }

    /// A cache whose entries expire quickly.
    fn short_lived(max_stale: Duration) -> (Arc<CachedKeyStore>, Arc<Probe>, Arc<MemoryKeyStore>) {
        over_shared(Duration::from_millis(50), max_stale)
    }

    /// Waits (bounded) until acme's record has left the fresh cache, so
    /// the next get goes to the inner store.
    async fn until_expired(store: &CachedKeyStore) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.records.contains_key(&acme()) {
            assert!(std::time::Instant::now() < deadline, "entry never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_is_bridged_with_the_last_known_record() {
        let (store, probe, _) = short_lived(DEFAULT_MAX_STALE);
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        let fresh = store.get(&acme()).await.unwrap().unwrap();
        until_expired(&store).await;

        probe.unreachable.store(true, Ordering::SeqCst);
        let reads = probe.reads.load(Ordering::SeqCst);
        for _ in 0..3 {
            let stale = store.get(&acme()).await.unwrap().unwrap();
            assert_eq!(stale, fresh);
        }
        assert_eq!(
            probe.reads.load(Ordering::SeqCst),
            reads + 3,
            "each miss tried the store first"
        );
        // A tenant never read has nothing to fall back on.
        let other = TenantId::parse("other").unwrap();
        assert!(store.get(&other).await.unwrap_err().is_unavailable());

        // An error the database answered is not bridged.
        probe.unreachable.store(false, Ordering::SeqCst);
        probe.broken.store(true, Ordering::SeqCst);
        let err = store.get(&acme()).await.unwrap_err();
        assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    }

    /// A change announced for a tenant in use replaces its record with the
    /// stored one, which then bridges an outage; announced while the store
    /// is out of reach, it leaves nothing older than the change behind.
    #[tokio::test]
    async fn reload_keeps_the_current_record_or_nothing() {
        let (store, probe, memory) = short_lived(DEFAULT_MAX_STALE);
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-ONE"));
        // Another replica re-keys and says so.
        memory.put(&acme(), input("KEY-TWO")).await.unwrap();
        store.reload(&acme()).await;
        probe.unreachable.store(true, Ordering::SeqCst);
        until_expired(&store).await;
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-TWO"));

        // Announced during the outage: the old record is not served.
        store.reload(&acme()).await;
        assert!(store.get(&acme()).await.unwrap_err().is_unavailable());

        // A tenant this replica never used is not read for nothing.
        probe.unreachable.store(false, Ordering::SeqCst);
        let reads = probe.reads.load(Ordering::SeqCst);
        store.reload(&TenantId::parse("other").unwrap()).await;
        assert_eq!(probe.reads.load(Ordering::SeqCst), reads);
    }

    #[tokio::test]
    async fn a_reachable_store_is_read_again_after_the_time_to_live() {
        let (store, probe, memory) = short_lived(DEFAULT_MAX_STALE);
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-ONE"));
        // Another replica re-keys; this cache is not told.
        memory.put(&acme(), input("KEY-TWO")).await.unwrap();
        until_expired(&store).await;
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-TWO"));
        // Another replica deletes it: the stale copy goes too.
        memory.delete(&acme()).await.unwrap();
        until_expired(&store).await;
        assert_eq!(customer_key(&store).await, None);
        probe.unreachable.store(true, Ordering::SeqCst);
        assert!(store.get(&acme()).await.unwrap_err().is_unavailable());
    }

    #[tokio::test]
    async fn stale_records_are_served_only_within_max_stale() {
        let (store, probe, _) = short_lived(Duration::from_millis(200));
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        customer_key(&store).await;
        let read_at = std::time::Instant::now();
        probe.unreachable.store(true, Ordering::SeqCst);
        until_expired(&store).await;
        if read_at.elapsed() < Duration::from_millis(150) {
            assert!(store.get(&acme()).await.is_ok(), "still within max_stale");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.get(&acme()).await.is_ok() {
            assert!(std::time::Instant::now() < deadline, "served stale forever");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(read_at.elapsed() >= Duration::from_millis(200));

        // Zero turns the fallback off.
        let (store, probe, _) = short_lived(Duration::ZERO);
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        customer_key(&store).await;
        until_expired(&store).await;
        probe.unreachable.store(true, Ordering::SeqCst);
        assert!(store.get(&acme()).await.unwrap_err().is_unavailable());
    }

    #[tokio::test]
    async fn forgotten_tenants_are_reread_and_not_bridged() {
        // A long time to live, so only a forget makes it read again.
        let (store, probe, memory) = over_shared(Duration::from_secs(600), DEFAULT_MAX_STALE);
        store.put(&acme(), input("KEY-ONE")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-ONE"));
        memory.put(&acme(), input("KEY-TWO")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-ONE"));
        store.forget(&acme());
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-TWO"));

        memory.put(&acme(), input("KEY-THREE")).await.unwrap();
        store.forget_all();
        assert_eq!(store.cached(), 0);
        assert_eq!(customer_key(&store).await.as_deref(), Some("KEY-THREE"));

        // A forgotten record is not served during an outage either: it is
        // known to be out of date.
        store.forget(&acme());
        probe.unreachable.store(true, Ordering::SeqCst);
        assert!(store.get(&acme()).await.unwrap_err().is_unavailable());
        probe.unreachable.store(false, Ordering::SeqCst);
        customer_key(&store).await;
        store.forget_all();
        probe.unreachable.store(true, Ordering::SeqCst);
        assert!(store.get(&acme()).await.unwrap_err().is_unavailable());
    }

    #[tokio::test]
    async fn a_read_overtaken_by_a_forget_does_not_keep_the_old_record() {
        for forget_all in [false, true] {
            let (store, probe) = cached();
            store.put(&acme(), input("OLD-KEY")).await.unwrap();
            let slow_read = read_held_midway(&store, &probe).await;
            // Another replica re-keyed; its change arrives mid-read.
            if forget_all {
                store.forget_all();
            } else {
                store.forget(&acme());
            }
            release_reads(&probe);
            assert_eq!(slow_read.await.unwrap().as_deref(), Some("OLD-KEY"));
            assert_eq!(store.cached(), 0, "the old record was not kept");
        }
    }

    #[tokio::test]
    async fn an_import_drops_every_cached_record() {
        let master = crate::MasterKey::generate().unwrap();
        let again = || crate::MasterKey::from_base64(&master.to_base64()).unwrap();
        let source = MemoryKeyStore::with_master(again()).unwrap();
        source.put(&acme(), input("IMPORTED-KEY")).await.unwrap();
        let records = source.export_sealed().await.unwrap();

        let target = Arc::new(MemoryKeyStore::with_master(again()).unwrap());
        let store = CachedKeyStore::new(target);
        store.put(&acme(), input("LOCAL-KEY")).await.unwrap();
        assert_eq!(customer_key(&store).await.as_deref(), Some("LOCAL-KEY"));
        assert_eq!(store.import_sealed(records).await.unwrap(), 1);
        assert_eq!(customer_key(&store).await.as_deref(), Some("IMPORTED-KEY"));
        // Purges pass through (a memory store has nobody to tell).
        store.announce_purge(Some(&acme())).await.unwrap();
        assert_eq!(store.export_sealed().await.unwrap().len(), 1);
    }
}
