//! The store logic shared by every backend: record format, sealing,
//! generations, write serialization. Backends supply only a small ordered
//! key-value map ([`Kv`]).
//!
//! Layout (all values JSON or ASCII, readable with any sled tool):
//!
//! - `meta/store`: format version, cipher, creation time and the sealed
//!   canary that proves the master key on every open;
//! - `meta/generation`: the store-wide generation counter, decimal;
//! - `tenant/{id}`: one tenant: clear metadata plus each key sealed with
//!   associated data naming the tenant, the field and that metadata.

use std::future::Future;

use odgw_core::{Rate, TenantId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    seal::{Binding, Field, Sealer},
    tenant::validate,
    MasterKey, PutOutcome, StoreError, TenantInput, TenantRecord, TenantSummary,
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

/// One change of a [`Kv::apply`] batch: `None` removes the key.
pub(crate) type Op = (Vec<u8>, Option<Vec<u8>>);
/// Key-value pairs returned by [`Kv::scan_prefix`].
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The ordered byte map a backend provides.
pub(crate) trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// Applies all `ops` atomically: after a crash either all or none are
    /// visible.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Makes every applied batch durable.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// [`Kv::flush`] for synchronous contexts (opening the store).
    fn flush_blocking(&self) -> Result<(), StoreError>;
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
#[derive(Debug, Serialize, Deserialize)]
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

/// The backend-independent key store.
#[derive(Debug)]
pub(crate) struct Engine<K> {
    pub(crate) kv: K,
    sealer: Sealer,
    /// Serializes writers, so read-modify-write of a record and of the
    /// generation counter never interleave. Writes are rare admin actions.
    writes: tokio::sync::Mutex<()>,
}

impl<K: Kv> Engine<K> {
    /// Checks the master key against the stored canary, or stores a canary
    /// in a new, empty store.
    pub(crate) fn open(kv: K, master: &MasterKey) -> Result<Self, StoreError> {
        let engine = Self {
            kv,
            sealer: Sealer::new(master)?,
            writes: tokio::sync::Mutex::new(()),
        };
        if engine.kv.get(META_STORE_KEY)?.is_some() {
            engine.check_canary()?;
            engine.repair_generation()?;
        } else {
            // A canary can only be missing from a store that never held a
            // tenant; otherwise a wrong key could adopt someone else's data.
            if !engine.kv.scan_prefix(TENANT_PREFIX)?.is_empty() {
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
            engine.kv.apply(vec![
                (META_STORE_KEY.to_vec(), Some(store)),
                (META_GENERATION_KEY.to_vec(), Some(b"0".to_vec())),
            ])?;
            engine.kv.flush_blocking()?;
        }
        Ok(engine)
    }

    fn check_canary(&self) -> Result<(), StoreError> {
        let bytes = self
            .kv
            .get(META_STORE_KEY)?
            .ok_or_else(|| StoreError::corrupt("the master key canary (meta/store) is missing"))?;
        let store: StoredStore = serde_json::from_slice(&bytes)
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

    fn counter(&self) -> Result<u64, StoreError> {
        match self.kv.get(META_GENERATION_KEY)? {
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
    /// generation still on disk.
    fn repair_generation(&self) -> Result<(), StoreError> {
        let counter = self.counter()?;
        let highest = self
            .kv
            .scan_prefix(TENANT_PREFIX)?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice::<StoredTenant>(v).ok())
            .map(|t| t.meta.generation)
            .max()
            .unwrap_or(0);
        if highest > counter {
            tracing::warn!(
                counter,
                highest,
                "key store generation counter was behind its records; raised"
            );
            self.kv.apply(vec![(
                META_GENERATION_KEY.to_vec(),
                Some(highest.to_string().into_bytes()),
            )])?;
            self.kv.flush_blocking()?;
        }
        Ok(())
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
        if stored.format != FORMAT {
            return Err(StoreError::UnsupportedVersion {
                found: stored.format,
                supported: FORMAT,
            });
        }
        if stored.cipher != CIPHER {
            return Err(bad("record names an unknown cipher"));
        }
        if stored.meta.id != id.as_str() {
            return Err(bad("record belongs to another tenant id"));
        }
        let aad = stored.meta.aad_bytes()?;
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
                    bad(&format!(
                        "{} does not decrypt (the record was moved or edited outside odgw)",
                        field.name()
                    ))
                })
        };
        let customer_key = open(Field::CustomerKey, &stored.customer_key)?;
        let developer_key = match (stored.meta.has_developer_key, &stored.developer_key) {
            (true, Some(sealed)) => Some(open(Field::DeveloperKey, sealed)?),
            (false, None) => None,
            _ => return Err(bad("developer_key presence does not match its metadata")),
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

    /// Writes `record` with the next generation; durable before it returns.
    async fn write(&self, mut record: TenantRecord) -> Result<TenantRecord, StoreError> {
        let generation = self
            .counter()?
            .checked_add(1)
            .ok_or_else(|| StoreError::corrupt("meta/generation overflowed"))?;
        record.generation = generation;
        let bytes = self.encode(&record)?;
        self.kv.apply(vec![
            (
                META_GENERATION_KEY.to_vec(),
                Some(generation.to_string().into_bytes()),
            ),
            (tenant_key(&record.id), Some(bytes)),
        ])?;
        self.kv.flush().await?;
        Ok(record)
    }

    pub(crate) async fn get(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        match self.kv.get(&tenant_key(id))? {
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
        let _writer = self.writes.lock().await;
        let now = now_rfc3339();
        let (outcome, created_at) = match self.kv.get(&tenant_key(id))? {
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
        let record = self.write(record).await?;
        tracing::info!(tenant = %id, generation = record.generation, ?outcome, "tenant stored");
        Ok((outcome, record.summary()))
    }

    pub(crate) async fn list(&self) -> Result<Vec<TenantSummary>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in self.kv.scan_prefix(TENANT_PREFIX)? {
            let id = std::str::from_utf8(&key[TENANT_PREFIX.len()..])
                .ok()
                .and_then(|s| TenantId::parse(s).ok())
                .ok_or_else(|| StoreError::corrupt("a tenant key is not a valid tenant id"))?;
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
        let _writer = self.writes.lock().await;
        let Some(mut record) = self.get(id).await? else {
            return Ok(None);
        };
        if record.enabled == enabled {
            return Ok(Some(record.summary()));
        }
        record.enabled = enabled;
        record.updated_at = now_rfc3339();
        let record = self.write(record).await?;
        tracing::info!(tenant = %id, enabled, generation = record.generation, "tenant toggled");
        Ok(Some(record.summary()))
    }

    pub(crate) async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
        let _writer = self.writes.lock().await;
        let key = tenant_key(id);
        if self.kv.get(&key)?.is_none() {
            return Ok(false);
        }
        // The generation counter is left as is, so a re-created tenant gets
        // a generation above every one this id ever had.
        self.kv.apply(vec![(key, None)])?;
        self.kv.flush().await?;
        tracing::info!(tenant = %id, "tenant deleted");
        Ok(true)
    }

    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        self.check_canary()
    }
}
