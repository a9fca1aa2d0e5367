//! [`MemoryKeyStore`]: the store logic over an in-memory map, for tests.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use odgw_core::TenantId;

use crate::{
    engine::{block_on, Engine, Entries, LocalKv, Op},
    KeyStore, MasterKey, PutOutcome, SealedTenant, StoreError, TenantInput, TenantRecord,
    TenantSummary,
};

/// A [`KeyStore`] with the same validation, sealing, generations and
/// errors as [`crate::SledKeyStore`], kept in memory. Nothing touches disk.
#[derive(Debug)]
pub struct MemoryKeyStore {
    engine: Engine<MemoryKv>,
}

impl MemoryKeyStore {
    /// An empty store sealed under a fresh random master key.
    pub fn new() -> Result<Self, StoreError> {
        Self::with_master(MasterKey::generate()?)
    }

    /// An empty store sealed under `master`.
    pub fn with_master(master: MasterKey) -> Result<Self, StoreError> {
        Ok(Self {
            // Every future of the memory store is ready at once.
            engine: block_on(Engine::open(MemoryKv::default(), &master))?,
        })
    }
}

crate::delegate_key_store!(MemoryKeyStore);

#[derive(Debug, Default)]
struct MemoryKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Held by the writer transaction, as in the sled store.
    writer: tokio::sync::Mutex<()>,
}

impl MemoryKv {
    fn map(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave a half-applied batch
        // (batches are applied in one go below), so poisoning is ignored.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LocalKv for MemoryKv {
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map().get(key).cloned())
    }

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .map()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut map = self.map();
        for (key, value) in ops {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn writer(&self) -> &tokio::sync::Mutex<()> {
        &self.writer
    }
}

#[cfg(test)]
mod tests {
    use odgw_core::SecretString;

    use super::*;

    fn id(text: &str) -> TenantId {
        TenantId::parse(text).unwrap()
    }

    #[tokio::test]
    async fn same_semantics_as_the_sled_store() {
        let store = MemoryKeyStore::new().unwrap();
        store.health().await.unwrap();
        let input = || TenantInput::new(SecretString::new("VzkmZEaUWOjnQX2z"));
        let (outcome, summary) = store.put(&id("b"), input()).await.unwrap();
        assert_eq!(
            (outcome, summary.customer_key_hint.as_str()),
            (PutOutcome::Created, "QX2z")
        );
        let g1 = store.get(&id("b")).await.unwrap().unwrap().generation;
        assert_eq!(
            store.put(&id("b"), input()).await.unwrap().0,
            PutOutcome::Replaced
        );
        store.put(&id("a"), input()).await.unwrap();
        let ids: Vec<_> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, [id("a"), id("b")]);
        assert!(store.delete(&id("b")).await.unwrap());
        store.put(&id("b"), input()).await.unwrap();
        assert!(store.get(&id("b")).await.unwrap().unwrap().generation > g1 + 1);
        assert!(
            !store
                .set_enabled(&id("b"), false)
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
        assert!(store.set_enabled(&id("zz"), false).await.unwrap().is_none());
        let bad = TenantInput::new(SecretString::new("has space"));
        assert!(matches!(
            store.put(&id("c"), bad).await,
            Err(StoreError::InvalidInput(_))
        ));
    }

    #[tokio::test]
    async fn values_are_sealed_in_memory_too() {
        let store = MemoryKeyStore::new().unwrap();
        store
            .put(
                &id("a"),
                TenantInput::new(SecretString::new("VzkmZEaUWOjnQX2z")),
            )
            .await
            .unwrap();
        let map = store.engine.kv.map();
        assert!(map
            .values()
            .all(|v| !v.windows(16).any(|w| w == b"VzkmZEaUWOjnQX2z")));
    }
}
