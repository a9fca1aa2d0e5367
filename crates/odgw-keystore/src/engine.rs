//! The store logic shared by every backend: record format, sealing,
//! generations, export and import. Backends supply only a small ordered
//! key-value map ([`Kv`]) whose writes go through an exclusive writer
//! transaction ([`KvTxn`]): sled and the memory store hold an in-process
//! lock, PostgreSQL holds an advisory lock shared by every replica. So a
//! read-modify-write of a record and of the generation counter never
//! interleaves with another writer's, in this process or any other.
//!
//! Layout (all values JSON or ASCII, readable with any sled tool):
//!
//! - `meta/store`: format version, cipher, creation time and the sealed
//!   canary that proves the master key on every open;
//! - `meta/generation`: the store-wide generation counter, decimal;
//! - `tenant/{id}`: one tenant: clear metadata plus each key sealed with
//!   associated data naming the tenant, the field and that metadata.

use std::{collections::BTreeSet, future::Future};

use odgw_core::{Rate, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    seal::{Binding, Field, Sealer},
    tenant::validate,
    Change, MasterKey, PutOutcome, StoreError, TenantInput, TenantRecord, TenantSummary,
};

/// The on-disk format this build reads and writes.
pub(crate) const FORMAT: u64 = 1;
const CIPHER: &str = "AES-256-GCM";
const CANARY_PLAINTEXT: &[u8] = b"odgw keystore canary v1";

pub(crate) const META_STORE_KEY: &[u8] = b"meta/store";
pub(crate) const META_GENERATION_KEY: &[u8] = b"meta/generation";
pub(crate) const TENANT_PREFIX: &[u8] = b"tenant/";

pub(crate) fn tenant_key(id: &TenantId) -> Vec<u8> {
    [TENANT_PREFIX, id.as_str().as_bytes()].concat()
}

/// One change of a [`KvTxn::commit`] batch: `None` removes the key.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);
/// Key-value pairs returned by [`Kv::scan_prefix`].
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The ordered byte map a backend provides.
///
/// Reads outside a transaction serve the request path and listings; every
/// write goes through [`Kv::begin`].
pub(crate) trait Kv: Send + Sync + 'static {
    /// The exclusive writer transaction of this backend.
    type Txn<'a>: KvTxn + 'a
    where
        Self: 'a;

    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Future<Output = Result<Entries, StoreError>> + Send;

    /// Waits until no other writer (in any process sharing the store) holds
    /// the store, then holds it until the transaction is committed or
    /// dropped. Reads made through the transaction see every write
    /// committed before it began.
    fn begin(&self) -> impl Future<Output = Result<Self::Txn<'_>, StoreError>> + Send;
}

/// An exclusive writer transaction. Dropping it without committing writes
/// nothing.
pub(crate) trait KvTxn: Send {
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Future<Output = Result<Entries, StoreError>> + Send;

    /// Applies all `ops` atomically and durably before it returns (after a
    /// crash either all or none are visible) and publishes `changes` to the
    /// other replicas sharing the store, if any, in the same transaction.
    /// With no ops and no changes it only ends the transaction.
    fn commit(
        self,
        ops: Vec<Op>,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A map owned by this process alone: sled holds an exclusive file lock,
/// and the memory store is private. Its writers are serialized by an
/// in-process lock held for the whole transaction, and there are no other
/// replicas to tell about changes. Implementing this gives [`Kv`].
pub(crate) trait LocalKv: Send + Sync + 'static {
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// All entries whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError>;

    /// Applies a non-empty batch atomically and durably before it returns.
    fn apply(&self, ops: Vec<Op>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The lock a writer transaction holds.
    fn writer(&self) -> &tokio::sync::Mutex<()>;
}

impl<L: LocalKv> Kv for L {
    type Txn<'a> = LocalTxn<'a, L>;

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(key)
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.scan(prefix)
    }

    async fn begin(&self) -> Result<LocalTxn<'_, L>, StoreError> {
        Ok(LocalTxn {
            _writer: self.writer().lock().await,
            kv: self,
        })
    }
}

/// The writer transaction of a [`LocalKv`]: its writer lock, then one batch.
pub(crate) struct LocalTxn<'a, L> {
    _writer: tokio::sync::MutexGuard<'a, ()>,
    kv: &'a L,
}

impl<L: LocalKv> KvTxn for LocalTxn<'_, L> {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.read(key)
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.kv.scan(prefix)
    }

    /// `_changes` are dropped: nobody else shares the store.
    async fn commit(self, ops: Vec<Op>, _changes: Vec<Change>) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.kv.apply(ops).await
    }
}

/// Runs a future to completion on the current thread, for the synchronous
/// constructors of the sled and memory stores. Their futures need no
/// runtime: they are ready at once or woken by sled's own flusher thread.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    use std::{
        sync::Arc,
        task::{Context, Poll, Wake, Waker},
        thread::Thread,
    };

    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        // A wake between the poll and here leaves the token set, so this
        // returns at once instead of missing it.
        std::thread::park();
    }
}

/// The master key canary, as stored at `meta/store`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredStore {
    format: u64,
    cipher: String,
    created_at: String,
    canary: String,
}

/// A tenant, as stored at `tenant/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredTenant {
    pub(crate) format: u64,
    pub(crate) cipher: String,
    pub(crate) meta: Meta,
    /// base64(nonce ‖ ciphertext ‖ tag).
    pub(crate) customer_key: String,
    pub(crate) developer_key: Option<String>,
}

/// A tenant's clear metadata. Its compact JSON is part of the associated
/// data of the tenant's sealed keys, so editing any of it on disk makes the
/// record fail to open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub(crate) id: String,
    pub(crate) name: Option<String>,
    pub(crate) base_url: Option<String>,
    pub(crate) rate: Option<Rate>,
    pub(crate) burst: Option<u32>,
    pub(crate) enabled: bool,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) generation: u64,
    pub(crate) has_developer_key: bool,
}

impl Meta {
    fn of(record: &TenantRecord) -> Self {
        Self {
            id: record.id.as_str().to_owned(),
            name: record.name.clone(),
            base_url: record.base_url.clone(),
            rate: record.rate,
            burst: record.burst,
            enabled: record.enabled,
            created_at: record.created_at.clone(),
            updated_at: record.updated_at.clone(),
            generation: record.generation,
            has_developer_key: record.developer_key.is_some(),
        }
    }

    /// The bytes bound into the keys' associated data. Re-serializing the
    /// parsed struct gives the same bytes as at write time: every field
    /// type round-trips exactly through its JSON form.
    fn aad_bytes(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self)
            .map_err(|_| StoreError::corrupt("tenant metadata did not serialize"))
    }
}

/// RFC 3339 UTC with whole seconds, e.g. `2025-04-01T12:00:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A tenant's stored record in its sealed form, for moving tenants between
/// stores (`odgw store export` / `import`, e.g. from sled to PostgreSQL).
///
/// Serializes to exactly the JSON the stores keep (one object; the CLI
/// writes one per line): clear metadata plus the keys sealed with the
/// master key, bound to the tenant id, the field and the metadata. It
/// holds no key in clear, and it opens only in a store with the same
/// master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedTenant {
    record: StoredTenant,
}

impl SealedTenant {
    /// The tenant id the record names (checked on import).
    pub fn id(&self) -> &str {
        &self.record.meta.id
    }

    /// The record's generation, kept on import: it is bound into the
    /// sealed keys' associated data.
    pub fn generation(&self) -> u64 {
        self.record.meta.generation
    }
}

/// The tenant id of a `tenant/{id}` key.
fn tenant_id_of(key: &[u8]) -> Result<TenantId, StoreError> {
    std::str::from_utf8(&key[TENANT_PREFIX.len().min(key.len())..])
        .ok()
        .and_then(|s| TenantId::parse(s).ok())
        .ok_or_else(|| StoreError::corrupt("a tenant key is not a valid tenant id"))
}

/// The backend-independent key store.
#[derive(Debug)]
pub(crate) struct Engine<K> {
    pub(crate) kv: K,
    sealer: Sealer,
}

impl<K: Kv> Engine<K> {
    /// Checks the master key against the stored canary, or stores a canary
    /// in a new, empty store. Runs as one writer transaction, so replicas
    /// opening a new shared store at the same time agree on one canary.
    pub(crate) async fn open(kv: K, master: &MasterKey) -> Result<Self, StoreError> {
        let engine = Self {
            kv,
            sealer: Sealer::new(master)?,
        };
        let txn = engine.kv.begin().await?;
        if let Some(bytes) = txn.get(META_STORE_KEY).await? {
            engine.check_canary(&bytes)?;
            engine.repair_generation(txn).await?;
        } else {
            // A canary can only be missing from a store that never held a
            // tenant; otherwise a wrong key could adopt someone else's data.
            if !txn.scan_prefix(TENANT_PREFIX).await?.is_empty() {
                return Err(StoreError::corrupt(
                    "the store holds tenants but no master key canary (meta/store)",
                ));
            }
            let canary = engine.sealer.seal(&Binding::Canary, CANARY_PLAINTEXT)?;
            let store = StoredStore {
                format: FORMAT,
                cipher: CIPHER.to_owned(),
                created_at: now_rfc3339(),
                canary,
            };
            let store = serde_json::to_vec(&store)
                .map_err(|_| StoreError::corrupt("store metadata did not serialize"))?;
            txn.commit(
                vec![
                    (META_STORE_KEY.to_vec(), Some(store)),
                    (META_GENERATION_KEY.to_vec(), Some(b"0".to_vec())),
                ],
                Vec::new(),
            )
            .await?;
        }
        Ok(engine)
    }

    fn check_canary(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let store: StoredStore = serde_json::from_slice(bytes)
            .map_err(|_| StoreError::corrupt("meta/store is not valid json"))?;
        if store.format != FORMAT {
            return Err(StoreError::UnsupportedVersion {
                found: store.format,
                supported: FORMAT,
            });
        }
        if store.cipher != CIPHER {
            return Err(StoreError::corrupt(format!(
                "meta/store names cipher {:?}, expected {CIPHER}",
                store.cipher
            )));
        }
        let plain = self
            .sealer
            .open(&Binding::Canary, &store.canary)
            .map_err(|_| StoreError::WrongMasterKey)?;
        if plain.as_slice() != CANARY_PLAINTEXT {
            return Err(StoreError::corrupt(
                "the master key canary has unexpected contents",
            ));
        }
        Ok(())
    }

    /// The generation counter as seen inside a writer transaction.
    async fn counter(txn: &K::Txn<'_>) -> Result<u64, StoreError> {
        match txn.get(META_GENERATION_KEY).await? {
            None => Ok(0),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError::corrupt("meta/generation is not a number")),
        }
    }

    /// Belt and braces for "generations are never reused": the counter is
    /// written in the same atomic batch as each record, but should it ever
    /// lag (restored from an old backup, edited), lift it above every
    /// generation still stored.
    async fn repair_generation(&self, txn: K::Txn<'_>) -> Result<(), StoreError> {
        let counter = Self::counter(&txn).await?;
        let highest = txn
            .scan_prefix(TENANT_PREFIX)
            .await?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice::<StoredTenant>(v).ok())
            .map(|t| t.meta.generation)
            .max()
            .unwrap_or(0);
        let mut ops = Vec::new();
        if highest > counter {
            tracing::warn!(
                counter,
                highest,
                "key store generation counter was behind its records; raised"
            );
            ops.push((
                META_GENERATION_KEY.to_vec(),
                Some(highest.to_string().into_bytes()),
            ));
        }
        txn.commit(ops, Vec::new()).await
    }

    fn encode(&self, record: &TenantRecord) -> Result<Vec<u8>, StoreError> {
        let meta = Meta::of(record);
        let aad = meta.aad_bytes()?;
        let bind = |field| Binding::Tenant {
            id: &record.id,
            field,
            meta: &aad,
        };
        let customer_key = self.sealer.seal(
            &bind(Field::CustomerKey),
            record.customer_key.expose().as_bytes(),
        )?;
        let developer_key = match &record.developer_key {
            Some(key) => Some(
                self.sealer
                    .seal(&bind(Field::DeveloperKey), key.expose().as_bytes())?,
            ),
            None => None,
        };
        let stored = StoredTenant {
            format: FORMAT,
            cipher: CIPHER.to_owned(),
            meta,
            customer_key,
            developer_key,
        };
        serde_json::to_vec(&stored)
            .map_err(|_| StoreError::corrupt("tenant record did not serialize"))
    }

    fn decode(&self, id: &TenantId, bytes: &[u8]) -> Result<TenantRecord, StoreError> {
        let bad = |why: &str| StoreError::corrupt(format!("tenant {id}: {why}"));
        // serde's message may quote stored text; none of it is secret, but a
        // fixed message is enough to act on.
        let stored: StoredTenant =
            serde_json::from_slice(bytes).map_err(|_| bad("record is not valid json"))?;
        self.open_record(id, stored).map_err(|err| match err {
            OpenError::Store(err) => err,
            OpenError::Bad(why) => bad(&why),
        })
    }

    /// Checks a parsed record against `id` and opens its keys.
    fn open_record(&self, id: &TenantId, stored: StoredTenant) -> Result<TenantRecord, OpenError> {
        if stored.format != FORMAT {
            return Err(OpenError::Store(StoreError::UnsupportedVersion {
                found: stored.format,
                supported: FORMAT,
            }));
        }
        if stored.cipher != CIPHER {
            return Err(OpenError::Bad("record names an unknown cipher".into()));
        }
        if stored.meta.id != id.as_str() {
            return Err(OpenError::Bad("record belongs to another tenant id".into()));
        }
        let aad = stored.meta.aad_bytes().map_err(OpenError::Store)?;
        let open = |field: Field, sealed: &str| {
            self.sealer
                .open_secret(
                    &Binding::Tenant {
                        id,
                        field,
                        meta: &aad,
                    },
                    sealed,
                )
                .map_err(|_| {
                    OpenError::Bad(format!(
                        "{} does not decrypt (the record was moved or edited outside odgw)",
                        field.name()
                    ))
                })
        };
        let customer_key = open(Field::CustomerKey, &stored.customer_key)?;
        let developer_key = match (stored.meta.has_developer_key, &stored.developer_key) {
            (true, Some(sealed)) => Some(open(Field::DeveloperKey, sealed)?),
            (false, None) => None,
            _ => {
                return Err(OpenError::Bad(
                    "developer_key presence does not match its metadata".into(),
                ))
            }
        };
        let meta = stored.meta;
        Ok(TenantRecord {
            id: id.clone(),
            name: meta.name,
            customer_key,
            developer_key,
            base_url: meta.base_url,
            rate: meta.rate,
            burst: meta.burst,
            enabled: meta.enabled,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            generation: meta.generation,
        })
    }

    /// Writes `record` with the next generation in `txn`; durable before it
    /// returns.
    async fn write(
        &self,
        txn: K::Txn<'_>,
        mut record: TenantRecord,
    ) -> Result<TenantRecord, StoreError> {
        let generation = Self::counter(&txn)
            .await?
            .checked_add(1)
            .ok_or_else(|| StoreError::corrupt("meta/generation overflowed"))?;
        record.generation = generation;
        let bytes = self.encode(&record)?;
        txn.commit(
            vec![
                (
                    META_GENERATION_KEY.to_vec(),
                    Some(generation.to_string().into_bytes()),
                ),
                (tenant_key(&record.id), Some(bytes)),
            ],
            vec![Change::Tenant(record.id.clone())],
        )
        .await?;
        Ok(record)
    }

    pub(crate) async fn get(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        match self.kv.get(&tenant_key(id)).await? {
            Some(bytes) => self.decode(id, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) async fn put(
        &self,
        id: &TenantId,
        input: TenantInput,
    ) -> Result<(PutOutcome, TenantSummary), StoreError> {
        let input = validate(input)?;
        let txn = self.kv.begin().await?;
        let now = now_rfc3339();
        let (outcome, created_at) = match txn.get(&tenant_key(id)).await? {
            None => (PutOutcome::Created, now.clone()),
            // Replacing needs only the old creation time, not the old keys,
            // so a record that no longer decrypts can still be replaced.
            Some(bytes) => match serde_json::from_slice::<StoredTenant>(&bytes) {
                Ok(old) => (PutOutcome::Replaced, old.meta.created_at),
                Err(_) => {
                    tracing::warn!(tenant = %id, "replacing an unreadable tenant record; created_at restarts");
                    (PutOutcome::Replaced, now.clone())
                }
            },
        };
        let record = TenantRecord {
            id: id.clone(),
            name: input.name,
            customer_key: input.customer_key,
            developer_key: input.developer_key,
            base_url: input.base_url,
            rate: input.rate,
            burst: input.burst,
            enabled: input.enabled.unwrap_or(true),
            created_at,
            updated_at: now,
            generation: 0,
        };
        let record = self.write(txn, record).await?;
        tracing::info!(tenant = %id, generation = record.generation, ?outcome, "tenant stored");
        Ok((outcome, record.summary()))
    }

    pub(crate) async fn list(&self) -> Result<Vec<TenantSummary>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.kv.scan_prefix(TENANT_PREFIX).await? {
            let id = tenant_id_of(&key)?;
            out.push(self.decode(&id, &bytes)?.summary());
        }
        // Backends scan in byte order, which is `TenantId`'s order; sorting
        // keeps the contract independent of that.
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(crate) async fn summary(&self, id: &TenantId) -> Result<Option<TenantSummary>, StoreError> {
        Ok(self.get(id).await?.map(|r| r.summary()))
    }

    pub(crate) async fn set_enabled(
        &self,
        id: &TenantId,
        enabled: bool,
    ) -> Result<Option<TenantSummary>, StoreError> {
        let txn = self.kv.begin().await?;
        // Read under the writer lock: a re-key committed by another replica
        // a moment ago is what gets toggled, not the record before it.
        let Some(bytes) = txn.get(&tenant_key(id)).await? else {
            txn.commit(Vec::new(), Vec::new()).await?;
            return Ok(None);
        };
        let mut record = self.decode(id, &bytes)?;
        if record.enabled == enabled {
            txn.commit(Vec::new(), Vec::new()).await?;
            return Ok(Some(record.summary()));
        }
        record.enabled = enabled;
        record.updated_at = now_rfc3339();
        let record = self.write(txn, record).await?;
        tracing::info!(tenant = %id, enabled, generation = record.generation, "tenant toggled");
        Ok(Some(record.summary()))
    }

    pub(crate) async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let txn = self.kv.begin().await?;
        let key = tenant_key(id);
        if txn.get(&key).await?.is_none() {
            txn.commit(Vec::new(), Vec::new()).await?;
            return Ok(false);
        }
        // The generation counter is left as is, so a re-created tenant gets
        // a generation above every one this id ever had.
        txn.commit(vec![(key, None)], vec![Change::Tenant(id.clone())])
            .await?;
        tracing::info!(tenant = %id, "tenant deleted");
        Ok(true)
    }

    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        let bytes =
            self.kv.get(META_STORE_KEY).await?.ok_or_else(|| {
                StoreError::corrupt("the master key canary (meta/store) is missing")
            })?;
        self.check_canary(&bytes)
    }

    /// Records a response-cache purge for the replicas sharing the store.
    /// Writes no record; backends without other replicas publish nothing.
    pub(crate) async fn announce_purge(&self, tenant: Option<&TenantId>) -> Result<(), StoreError> {
        let txn = self.kv.begin().await?;
        txn.commit(Vec::new(), vec![Change::Purge(tenant.cloned())])
            .await
    }

    /// Every tenant record in its sealed form, sorted by id.
    pub(crate) async fn export(&self) -> Result<Vec<SealedTenant>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.kv.scan_prefix(TENANT_PREFIX).await? {
            let id = tenant_id_of(&key)?;
            let record: StoredTenant = serde_json::from_slice(&bytes).map_err(|_| {
                StoreError::corrupt(format!("tenant {id}: record is not valid json"))
            })?;
            if record.meta.id != id.as_str() {
                return Err(StoreError::corrupt(format!(
                    "tenant {id}: record belongs to another tenant id"
                )));
            }
            out.push(SealedTenant { record });
        }
        out.sort_by(|a, b| a.record.meta.id.cmp(&b.record.meta.id));
        Ok(out)
    }

    /// Stores sealed records as they are (same bytes, same generation).
    ///
    /// Every record is checked first: its id must be valid and unique in
    /// the batch, and both its keys must open with this store's master key
    /// under that id and its metadata. One bad record refuses the whole
    /// import before anything is written. Then all are written in one
    /// atomic, durable transaction that also lifts the generation counter
    /// above every imported generation, so later writes never reuse one.
    pub(crate) async fn import(&self, records: Vec<SealedTenant>) -> Result<usize, StoreError> {
        let refuse = |tenant: &str, reason: String| StoreError::ImportRefused {
            tenant: tenant.to_owned(),
            reason,
        };
        let mut seen = BTreeSet::new();
        let mut ops = Vec::with_capacity(records.len() + 1);
        let mut changes = Vec::with_capacity(records.len());
        let mut highest = 0;
        for SealedTenant { record } in records {
            let name = record.meta.id.clone();
            let id = TenantId::parse(&name)
                .map_err(|_| refuse(&name, "the id is not a valid tenant id".into()))?;
            if !seen.insert(id.clone()) {
                return Err(refuse(&name, "the tenant appears more than once".into()));
            }
            let bytes = serde_json::to_vec(&record)
                .map_err(|_| refuse(&name, "the record did not serialize".into()))?;
            let generation = record.meta.generation;
            // Opened only to prove the master key and the binding; the
            // decrypted keys are zeroized as the record drops here.
            self.open_record(&id, record).map_err(|err| {
                let reason = match err {
                    OpenError::Bad(why) => {
                        format!("{why}; was it exported from a store with another master key?")
                    }
                    OpenError::Store(err) => err.to_string(),
                };
                refuse(&name, reason)
            })?;
            highest = highest.max(generation);
            ops.push((tenant_key(&id), Some(bytes)));
            changes.push(Change::Tenant(id));
        }
        let count = changes.len();
        if count == 0 {
            return Ok(0);
        }
        let txn = self.kv.begin().await?;
        if highest > Self::counter(&txn).await? {
            ops.push((
                META_GENERATION_KEY.to_vec(),
                Some(highest.to_string().into_bytes()),
            ));
        }
        txn.commit(ops, changes).await?;
        tracing::info!(tenants = count, "tenants imported");
        Ok(count)
    }
}

/// Why a parsed record did not open: a store-level error, or a reason to
/// prefix with the tenant.
enum OpenError {
    Store(StoreError),
    Bad(String),
}
