//! The encrypted tenant key store of odgw (SPEC §6, §7).
//!
//! - [`KeyStore`]: what the rest of odgw sees — get, put (full replacement),
//!   list, enable/disable, delete, health. Backends are interchangeable; sled
//!   is used only inside this crate.
//! - [`SledKeyStore`]: the production backend, a sled database in a private
//!   directory; every write is flushed to disk before it is acknowledged.
//! - [`MasterKey`]: the 32-byte key (base64 in `store.master_key_file` /
//!   `ODGW_MASTER_KEY`) that seals every tenant key with AES-256-GCM, a fresh
//!   random nonce per write, and associated data binding each ciphertext to
//!   its tenant, its field and the record's metadata. A sealed canary makes
//!   a wrong master key fail at open with [`StoreError::WrongMasterKey`].
//! - [`TenantRecord`] (decrypted, keys as zeroizing [`SecretString`]s),
//!   [`TenantSummary`] (what the admin API shows: a 4-character hint, never a
//!   key), [`TenantInput`] (what `PUT /admin/v1/tenants/{id}` submits).
//! - [`CachedKeyStore`]: decrypted records kept in memory for the hot path,
//!   dropped on every write made through it.
//! - `MemoryKeyStore` (feature `test-util`): the same logic without disk.
//!
//! [`SecretString`]: odgw_core::SecretString

mod cached;
mod engine;
mod error;
#[cfg(any(test, feature = "test-util"))]
mod memory;
mod seal;
mod sled_store;
mod tenant;

pub use cached::CachedKeyStore;
pub use error::StoreError;
#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryKeyStore;
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
        }
    };
}
pub(crate) use delegate_key_store;
