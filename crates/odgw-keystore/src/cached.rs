//! [`CachedKeyStore`]: keeps decrypted tenant records in memory so the hot
//! path does not read the store and open two AES-GCM ciphertexts for every
//! request.
//!
//! Correctness rests on every write going through this wrapper (the gateway
//! builds one and shares it with the admin API): a write drops the
//! tenant's entry once the inner store has made it durable, so the next
//! request reads the new record. A read racing with a write never puts the
//! old record back: reads remember the write epoch they started in and
//! store their result only if no write finished meanwhile, checked and
//! stored under the same lock a write takes to bump the epoch.
//!
//! Entries also expire after [`DEFAULT_TTL`], which bounds staleness for a
//! future store shared by several gateways. Keys are [`SecretString`]s:
//! their bytes are zeroed when an entry is evicted and its last copy drops.
//!
//! [`SecretString`]: odgw_core::SecretString

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use odgw_core::TenantId;

use crate::{KeyStore, PutOutcome, StoreError, TenantInput, TenantRecord, TenantSummary};

/// Tenants kept decrypted at most; beyond it the least useful are evicted.
pub const DEFAULT_CAPACITY: u64 = 50_000;

/// How long a decrypted record is trusted without reading the store again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// A [`KeyStore`] that answers `get` from memory and passes everything
/// else through, dropping cached records on every write.
pub struct CachedKeyStore {
    inner: Arc<dyn KeyStore>,
    records: moka::sync::Cache<TenantId, Arc<TenantRecord>>,
    /// Bumped (under `write_lock`) after every write reached the inner store.
    epoch: AtomicU64,
    write_lock: Mutex<()>,
}

impl CachedKeyStore {
    /// Wraps `inner` with the default capacity and time to live.
    pub fn new(inner: Arc<dyn KeyStore>) -> Self {
        Self::with_limits(inner, DEFAULT_CAPACITY, DEFAULT_TTL)
    }

    pub fn with_limits(inner: Arc<dyn KeyStore>, capacity: u64, ttl: Duration) -> Self {
        Self {
            inner,
            records: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            epoch: AtomicU64::new(0),
            write_lock: Mutex::new(()),
        }
    }

    /// Records held in memory (approximate until pending evictions run).
    pub fn cached(&self) -> u64 {
        self.records.run_pending_tasks();
        self.records.entry_count()
    }

    /// Runs `write` against the inner store, then forgets `id` whatever the
    /// outcome: a failed write may still have reached the disk. The
    /// forgetting happens on drop, so it also runs when the caller stops
    /// waiting (a client hanging up during the flush): the store may
    /// already show the new record by then.
    async fn write<T>(
        &self,
        id: &TenantId,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _forget = Forget { store: self, id };
        write.await
    }
}

/// Drops a tenant's cached record when it goes out of scope.
struct Forget<'a> {
    store: &'a CachedKeyStore,
    id: &'a TenantId,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let store = self.store;
        let _guard = store.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        store.epoch.fetch_add(1, Ordering::AcqRel);
        store.records.invalidate(self.id);
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
        let fresh = self.inner.get(id).await?;
        if let Some(record) = &fresh {
            let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.epoch.load(Ordering::Acquire) == started_in {
                self.records.insert(id.clone(), Arc::clone(record));
            }
        }
        Ok(fresh)
    }

    async fn put(
        &self,
        id: &TenantId,
        input: TenantInput,
    ) -> Result<(PutOutcome, TenantSummary), StoreError> {
        self.write(id, self.inner.put(id, input)).await
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
        self.write(id, self.inner.set_enabled(id, enabled)).await
    }

    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        self.write(id, self.inner.delete(id)).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        // Always the real store: readiness must notice a broken disk or key.
        self.inner.health().await
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
    }

    #[derive(Debug)]
    struct ProbedStore {
        inner: MemoryKeyStore,
        probe: Arc<Probe>,
    }

    #[async_trait::async_trait]
    impl KeyStore for ProbedStore {
        async fn get(&self, id: &TenantId) -> Result<Option<Arc<TenantRecord>>, StoreError> {
            self.probe.reads.fetch_add(1, Ordering::SeqCst);
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
    }

    fn cached() -> (Arc<CachedKeyStore>, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let inner = ProbedStore {
            inner: MemoryKeyStore::new().unwrap(),
            probe: probe.clone(),
        };
        (Arc::new(CachedKeyStore::new(Arc::new(inner))), probe)
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
        probe.hold_reads.store(true, Ordering::SeqCst);
        let slow_read = tokio::spawn({
            let store = store.clone();
            async move { customer_key(&store).await }
        });
        // The slow read has the old record in hand; now the key changes.
        probe.read_done.notified().await;
        store.put(&acme(), input("NEW-KEY")).await.unwrap();
        probe.hold_reads.store(false, Ordering::SeqCst);
        probe.release.notify_one();
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
        let probe = Arc::new(Probe::default());
        let inner = ProbedStore {
            inner: MemoryKeyStore::new().unwrap(),
            probe: probe.clone(),
        };
        let store = CachedKeyStore::with_limits(Arc::new(inner), 10, Duration::from_millis(100));
        store.put(&acme(), input("KEY")).await.unwrap();
        customer_key(&store).await;
        customer_key(&store).await;
        assert_eq!(probe.reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        customer_key(&store).await;
        assert_eq!(probe.reads.load(Ordering::SeqCst), 2);
    }
}
