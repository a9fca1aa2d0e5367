//! The encrypted tenant key store of odgw (SPEC §6, §7).
//!
//! - [`KeyStore`]: what the rest of odgw sees — get, put (full replacement),
//!   list, enable/disable, delete, health. Backends are interchangeable; sled
//!   is used only inside this crate.
//! - [`SledKeyStore`]: the single-node backend (the default), a sled
//!   database in a private directory; every write is flushed to disk before
//!   it is acknowledged.
//! - [`PgKeyStore`]: the cluster backend, PostgreSQL shared by several
//!   replicas ([`PgSettings`]). Writers of all replicas are serialized by
//!   an advisory lock; each write also appends to a change table that
//!   every replica follows through its [`ChangeFeed`] (yielding
//!   [`Change`]s), so caches elsewhere drop what changed. Connection
//!   trouble is reported as [`StoreError::Unavailable`].
//! - [`MasterKey`]: the 32-byte key (base64 in `store.master_key_file` /
//!   `ODGW_MASTER_KEY`) that seals every tenant key with AES-256-GCM, a fresh
//!   random nonce per write, and associated data binding each ciphertext to
//!   its tenant, its field and the record's metadata. A sealed canary makes
//!   a wrong master key fail at open with [`StoreError::WrongMasterKey`].
//! - [`TenantRecord`] (decrypted, keys as zeroizing [`SecretString`]s),
//!   [`TenantSummary`] (what the admin API shows: a 4-character hint, never a
//!   key), [`TenantInput`] (what `PUT /admin/v1/tenants/{id}` submits).
//! - [`SealedTenant`]: a stored record in its sealed form, for
//!   [`KeyStore::export_sealed`] / [`KeyStore::import_sealed`] (moving
//!   tenants between stores with the same master key, e.g. sled →
//!   PostgreSQL).
//! - [`CachedKeyStore`]: decrypted records kept in memory for the hot path,
//!   dropped on every write made through it and on
//!   [`CachedKeyStore::forget`] (a change from another replica); while the
//!   store is unavailable it keeps serving the records it last read.
//! - `MemoryKeyStore` (feature `test-util`): the same logic without disk.
//!
//! [`SecretString`]: odgw_core::SecretString

mod cached;
mod engine;
mod error;
#[cfg(any(test, feature = "test-util"))]
mod memory;
mod postgres;
mod seal;
mod sled_store;
mod tenant;

pub use cached::{CachedKeyStore, DEFAULT_CAPACITY, DEFAULT_MAX_STALE, DEFAULT_TTL};
pub use engine::SealedTenant;
pub use error::StoreError;
#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryKeyStore;
pub use postgres::{valid_schema, Change, ChangeFeed, PgKeyStore, PgSettings};
pub use seal::{MasterKey, MASTER_KEY_LEN};
pub use sled_store::SledKeyStore;
pub use tenant::{
    MissingDeveloperKey, PutOutcome, TenantDefaults, TenantInput, TenantRecord, TenantSummary,
    MAX_BASE_URL_CHARS, MAX_KEY_CHARS, MAX_NAME_CHARS,
};

use std::sync::Arc;

use odgw_core::TenantId;

/// Where tenant keys and settings live. Shared as `Arc<dyn KeyStore>`.
///
/// Every method that writes returns only once the write is durable.
/// Errors never contain key material.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// The tenant with its keys decrypted; `None` if unknown. Disabled
    /// tenants are returned too (check [`TenantRecord::enabled`]). Shared,
    /// so a store that keeps records in memory hands out its copy of the
    /// keys instead of a new one per request.
    async fn get(&self, id: &TenantId) -> Result<Option<Arc<TenantRecord>>, StoreError>;

    /// Stores `input` as the whole tenant (created, or replaced keeping
    /// `created_at`), with a new generation. Validates first
    /// ([`StoreError::InvalidInput`]).
    async fn put(
        &self,
        id: &TenantId,
        input: TenantInput,
    ) -> Result<(PutOutcome, TenantSummary), StoreError>;

    /// Every tenant, sorted by id. Fails with [`StoreError::Corrupt`] naming
    /// the tenant if any record does not open; `delete` or `put` repairs it.
    async fn list(&self) -> Result<Vec<TenantSummary>, StoreError>;

    /// One tenant's summary; `None` if unknown.
    async fn summary(&self, id: &TenantId) -> Result<Option<TenantSummary>, StoreError>;

    /// Enables or disables a tenant; `None` if unknown. Setting the current
    /// state again writes nothing.
    async fn set_enabled(
        &self,
        id: &TenantId,
        enabled: bool,
    ) -> Result<Option<TenantSummary>, StoreError>;

    /// Removes a tenant; `false` if it did not exist.
    async fn delete(&self, id: &TenantId) -> Result<bool, StoreError>;

    /// `Ok` while the store is readable and the master key still opens its
    /// canary (for `/readyz`).
    async fn health(&self) -> Result<(), StoreError>;

    /// Records a response-cache purge (of one tenant, or of all with
    /// `None`) so that every replica sharing this store applies it. A
    /// store with no other replicas has nobody to tell: the default does
    /// nothing.
    async fn announce_purge(&self, tenant: Option<&TenantId>) -> Result<(), StoreError> {
        let _ = tenant;
        Ok(())
    }

    /// Every tenant in its sealed form (keys still encrypted), sorted by id.
    async fn export_sealed(&self) -> Result<Vec<SealedTenant>, StoreError> {
        Err(unsupported("exporting tenants"))
    }

    /// Writes sealed records (from [`KeyStore::export_sealed`] of a store
    /// with the same master key) unchanged, replacing tenants with the same
    /// id; returns how many. Every record is verified to open with this
    /// store's master key under its own id before anything is written
    /// ([`StoreError::ImportRefused`] names the first that does not); then
    /// all are written in one atomic, durable transaction, keeping their
    /// generations and lifting the store's counter above them. Replicas
    /// sharing the store are told about each tenant.
    async fn import_sealed(&self, records: Vec<SealedTenant>) -> Result<usize, StoreError> {
        let _ = records;
        Err(unsupported("importing tenants"))
    }
}

/// The error of the export/import defaults, for stores that hold no
/// sealed records of their own.
fn unsupported(context: &'static str) -> StoreError {
    StoreError::Backend {
        context,
        source: "this key store does not support it".into(),
    }
}

/// Implements [`KeyStore`] for a type with an `engine: Engine<_>` field.
macro_rules! delegate_key_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl KeyStore for $ty {
            async fn get(
                &self,
                id: &TenantId,
            ) -> Result<Option<std::sync::Arc<TenantRecord>>, StoreError> {
                Ok(self.engine.get(id).await?.map(std::sync::Arc::new))
            }
            async fn put(
                &self,
                id: &TenantId,
                input: TenantInput,
            ) -> Result<(PutOutcome, TenantSummary), StoreError> {
                self.engine.put(id, input).await
            }
            async fn list(&self) -> Result<Vec<TenantSummary>, StoreError> {
                self.engine.list().await
            }
            async fn summary(&self, id: &TenantId) -> Result<Option<TenantSummary>, StoreError> {
                self.engine.summary(id).await
            }
            async fn set_enabled(
                &self,
                id: &TenantId,
                enabled: bool,
            ) -> Result<Option<TenantSummary>, StoreError> {
                self.engine.set_enabled(id, enabled).await
            }
            async fn delete(&self, id: &TenantId) -> Result<bool, StoreError> {
                self.engine.delete(id).await
            }
            async fn health(&self) -> Result<(), StoreError> {
                self.engine.health().await
            }
            async fn announce_purge(&self, tenant: Option<&TenantId>) -> Result<(), StoreError> {
                self.engine.announce_purge(tenant).await
            }
            async fn export_sealed(&self) -> Result<Vec<SealedTenant>, StoreError> {
                self.engine.export().await
            }
            async fn import_sealed(&self, records: Vec<SealedTenant>) -> Result<usize, StoreError> {
                self.engine.import(records).await
            }
        }
    };
}
pub(crate) use delegate_key_store;
