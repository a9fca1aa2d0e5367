//! The sled backend: the only place odgw touches sled.
//!
//! sled 0.34 is beta and has been reported to lose or corrupt data after
//! crashes, so every write is `flush_async`ed before it is acknowledged, and
//! each write is one atomic batch (the tenant record plus the generation
//! counter). sled calls are synchronous but served from its page cache; the
//! store is small and written rarely, so they run inline on the async task.
//! sled takes an exclusive file lock, so only this process writes; its
//! writers are serialized by a tokio mutex held for the whole transaction.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use odgw_core::TenantId;

use crate::{
    engine::{block_on, Engine, Entries, LocalKv, Op},
    KeyStore, MasterKey, PutOutcome, SealedTenant, StoreError, TenantInput, TenantRecord,
    TenantSummary,
};

/// The production [`KeyStore`]: a sled database in a private directory.
pub struct SledKeyStore {
    engine: Engine<SledKv>,
}

impl fmt::Debug for SledKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledKeyStore")
            .field("path", &self.engine.kv.dir)
            .finish_non_exhaustive()
    }
}

impl SledKeyStore {
    /// Opens (or creates) the store at `path` and checks `master` against
    /// the store's canary.
    ///
    /// A new directory is created with mode 0700 and sled's files are made
    /// 0600. An existing directory open to all users is refused
    /// ([`StoreError::WorldAccessible`]); one open to its group (as
    /// Kubernetes' `fsGroup` makes volumes) is logged as a warning. Fails with [`StoreError::WrongMasterKey`] when `master` is
    /// not the key the store was created with. Blocking: sled recovers its
    /// log here; call it before serving or from `spawn_blocking`.
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, StoreError> {
        prepare_dir(path)?;
        let db = open_db(path)?;
        let kv = SledKv {
            db,
            dir: path.to_path_buf(),
            writer: tokio::sync::Mutex::new(()),
        };
        kv.tighten()?;
        // sled's futures need no runtime (see `block_on`), and this was
        // always a blocking call.
        let engine = block_on(Engine::open(kv, &master))?;
        Ok(Self { engine })
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.engine.kv.dir
    }

    /// Raw access to the sled tree, for tests that tamper with records.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &sled::Db {
        &self.engine.kv.db
    }
}

crate::delegate_key_store!(SledKeyStore);

struct SledKv {
    db: sled::Db,
    dir: PathBuf,
    /// Held by the writer transaction: serializes writers, so
    /// read-modify-write of a record and of the generation counter never
    /// interleave. Writes are rare admin actions.
    writer: tokio::sync::Mutex<()>,
}

impl fmt::Debug for SledKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledKv")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SledKv {
    /// Brings sled's files to 0600 (and subdirectories to 0700). sled may
    /// create new files (snapshots) later, so this runs after every flush as
    /// well; the 0700 directory already keeps others out.
    fn tighten(&self) -> Result<(), StoreError> {
        #[cfg(unix)]
        tighten_tree(&self.dir)?;
        Ok(())
    }
}

/// One process owns a sled store (sled holds an exclusive file lock).
impl LocalKv for SledKv {
    fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(StoreError::backend("reading"))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.db
            .scan_prefix(prefix)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .map_err(StoreError::backend("scanning"))
    }

    async fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in ops {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.db
            .apply_batch(batch)
            .map_err(StoreError::backend("writing"))?;
        self.db
            .flush_async()
            .await
            .map_err(StoreError::backend("flushing to disk"))?;
        // The write is durable at this point; a failed chmod must not make
        // the caller believe otherwise.
        if let Err(err) = self.tighten() {
            tracing::warn!(error = %err, "could not tighten key store file permissions");
        }
        Ok(())
    }

    fn writer(&self) -> &tokio::sync::Mutex<()> {
        &self.writer
    }
}

/// Bound on sled's page cache (its default is 1 GiB). Reads on the request
/// path are served by the decrypted-record cache in front of the store, so
/// sled's own cache only speeds up misses and admin listings; without a
/// bound, a large store would grow RSS towards a gigabyte as it is read.
const PAGE_CACHE_BYTES: u64 = 32 << 20;

/// Opens sled at `path`. sled takes an exclusive file lock; a store closed a
/// moment ago (this process's previous handle, whose background flusher is
/// still winding down, or a previous odgw still exiting) releases it shortly,
/// so a held lock is retried for about a second before it is reported.
fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    const ATTEMPTS: u32 = 20;
    for attempt in 1..=ATTEMPTS {
        match sled::Config::new()
            .path(path)
            .cache_capacity(PAGE_CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled 0.34 reports a lock conflict only as text.
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if attempt == ATTEMPTS {
                    return Err(StoreError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(other) => return Err(StoreError::backend("opening the database")(other)),
        }
    }
    Err(StoreError::InUse {
        path: path.to_path_buf(),
    })
}

/// Creates the store directory private (0700). An existing one open to all
/// users is refused; one open to its group gets a warning.
fn prepare_dir(path: &Path) -> Result<(), StoreError> {
    let io = |context| {
        move |source| StoreError::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
    };
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(io("path is unusable")(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        ))),
        Ok(_meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = _meta.permissions().mode() & 0o777;
                if mode & 0o007 != 0 {
                    return Err(StoreError::WorldAccessible {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                if mode & 0o070 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{mode:o}"),
                        "key store directory is accessible to its group; run chmod 700 on it unless that is intended"
                    );
                }
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
                builder.mode(0o700);
                builder
                    .create(path)
                    .map_err(io("directory could not be created"))?;
                // The umask can only remove bits, but make the mode exact.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("directory permissions could not be set"))?;
            }
            #[cfg(not(unix))]
            builder
                .create(path)
                .map_err(io("directory could not be created"))?;
            Ok(())
        }
        Err(err) => Err(io("directory could not be read")(err)),
    }
}

#[cfg(unix)]
fn tighten_tree(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            context: "file permissions could not be set",
            path,
            source,
        }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        // Symlinks are left alone: sled makes none, and following one could
        // chmod a file outside the store.
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let wanted = if meta.is_dir() {
            tighten_tree(&path)?;
            0o700
        } else if meta.is_file() {
            0o600
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != wanted {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))
                .map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use odgw_core::SecretString;
    use serde_json::Value;

    /// A temp dir only its owner can enter, as odgw requires of a store directory.
    fn private_tempdir() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    use super::*;
    use crate::engine::tenant_key;

    const CUSTOMER: &str = "VzkmZEaUWOjnQX2z";
    const DEVELOPER: &str = "NFFv2lvv1Dtg4eyT";

    fn id(text: &str) -> TenantId {
        TenantId::parse(text).unwrap()
    }

    fn input(customer: &str, developer: &str) -> TenantInput {
        TenantInput {
            developer_key: Some(SecretString::new(developer)),
            base_url: Some("https://od.example/api/v1".into()),
            ..TenantInput::new(SecretString::new(customer))
        }
    }

    async fn store_with_two() -> (tempfile::TempDir, SledKeyStore) {
        let dir = private_tempdir();
        let store = SledKeyStore::open(dir.path(), MasterKey::generate().unwrap()).unwrap();
        store
            .put(&id("a"), input(CUSTOMER, DEVELOPER))
            .await
            .unwrap();
        store
            .put(&id("b"), input("BBBBCUSTOMER", "BBBBDEVELOPER"))
            .await
            .unwrap();
        (dir, store)
    }

    fn raw_json(store: &SledKeyStore, tenant: &str) -> Value {
        let bytes = store.raw().get(tenant_key(&id(tenant))).unwrap().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn write_raw(store: &SledKeyStore, tenant: &str, value: &Value) {
        store
            .raw()
            .insert(tenant_key(&id(tenant)), serde_json::to_vec(value).unwrap())
            .unwrap();
    }

    async fn corrupt_message(store: &SledKeyStore, tenant: &str) -> String {
        let err = store.get(&id(tenant)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(!msg.contains(CUSTOMER) && !msg.contains(DEVELOPER), "{msg}");
        msg
    }

    #[tokio::test]
    async fn stored_record_is_versioned_json_without_plaintext() {
        let (_dir, store) = store_with_two().await;
        let stored = raw_json(&store, "a");
        assert_eq!(stored["format"], 1);
        assert_eq!(stored["cipher"], "AES-256-GCM");
        assert_eq!(stored["meta"]["id"], "a");
        assert_eq!(stored["meta"]["has_developer_key"], true);
        let sealed = stored["customer_key"].as_str().unwrap();
        // 12-byte nonce + 16 plaintext bytes + 16-byte tag, base64.
        assert_eq!(sealed.len(), (12 + 16 + 16usize).div_ceil(3) * 4);
        let text = stored.to_string();
        assert!(!text.contains(CUSTOMER) && !text.contains(DEVELOPER));
    }

    #[tokio::test]
    async fn ciphertext_copied_to_another_tenant_fails_to_decrypt() {
        let (_dir, store) = store_with_two().await;
        let a = raw_json(&store, "a");
        let b_original = raw_json(&store, "b");
        let mut b = b_original.clone();
        b["customer_key"] = a["customer_key"].clone();
        write_raw(&store, "b", &b);

        let msg = corrupt_message(&store, "b").await;
        assert_eq!(
            msg,
            "key store data is corrupt: tenant b: customer_key does not decrypt \
             (the record was moved or edited outside odgw)"
        );
        assert!(store.list().await.is_err(), "list reports the bad record");
        // The victim's own record and the store as a whole are unaffected.
        let a_rec = store.get(&id("a")).await.unwrap().unwrap();
        assert_eq!(a_rec.customer_key.expose(), CUSTOMER);
        store.health().await.unwrap();

        // Moving the developer key instead fails the same way.
        let mut b = b_original.clone();
        b["developer_key"] = a["developer_key"].clone();
        write_raw(&store, "b", &b);
        assert!(corrupt_message(&store, "b")
            .await
            .contains("developer_key does not decrypt"));
    }

    #[tokio::test]
    async fn whole_record_copied_to_another_id_fails() {
        let (_dir, store) = store_with_two().await;
        let mut a = raw_json(&store, "a");
        write_raw(&store, "c", &a);
        assert!(corrupt_message(&store, "c")
            .await
            .contains("belongs to another tenant id"));
        // Rewriting the id inside the copy does not help: the keys are bound
        // to the id they were sealed for.
        a["meta"]["id"] = "c".into();
        write_raw(&store, "c", &a);
        assert!(corrupt_message(&store, "c")
            .await
            .contains("customer_key does not decrypt"));
    }

    #[tokio::test]
    async fn swapping_customer_and_developer_fields_fails() {
        let (_dir, store) = store_with_two().await;
        let mut a = raw_json(&store, "a");
        let customer = a["customer_key"].clone();
        a["customer_key"] = a["developer_key"].clone();
        a["developer_key"] = customer;
        write_raw(&store, "a", &a);
        assert!(corrupt_message(&store, "a")
            .await
            .contains("customer_key does not decrypt"));
    }

    #[tokio::test]
    async fn edited_metadata_is_detected() {
        let (_dir, store) = store_with_two().await;
        let original = raw_json(&store, "a");

        // Redirecting a tenant's keys to another host.
        let mut edited = original.clone();
        edited["meta"]["base_url"] = "https://attacker.example".into();
        write_raw(&store, "a", &edited);
        corrupt_message(&store, "a").await;

        // Re-enabling a disabled tenant behind odgw's back.
        let mut edited = original.clone();
        edited["meta"]["enabled"] = false.into();
        write_raw(&store, "a", &edited);
        corrupt_message(&store, "a").await;

        // Dropping the tenant's own developer key (so the default applies).
        let mut edited = original.clone();
        edited["developer_key"] = Value::Null;
        write_raw(&store, "a", &edited);
        assert!(corrupt_message(&store, "a")
            .await
            .contains("developer_key presence"));
        edited["meta"]["has_developer_key"] = false.into();
        write_raw(&store, "a", &edited);
        corrupt_message(&store, "a").await;

        // Garbage and unknown versions are errors, not panics.
        store
            .raw()
            .insert(tenant_key(&id("a")), b"{not json".to_vec())
            .unwrap();
        assert!(corrupt_message(&store, "a")
            .await
            .contains("not valid json"));
        let mut future = original.clone();
        future["format"] = 2.into();
        write_raw(&store, "a", &future);
        let err = store.get(&id("a")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
            "{err:?}"
        );

        // The untouched record still opens.
        write_raw(&store, "a", &original);
        assert_eq!(
            store
                .get(&id("a"))
                .await
                .unwrap()
                .unwrap()
                .customer_key
                .expose(),
            CUSTOMER
        );
    }

    #[tokio::test]
    async fn a_broken_record_can_be_replaced_and_keeps_created_at() {
        let (_dir, store) = store_with_two().await;
        let mut a = raw_json(&store, "a");
        a["meta"]["created_at"] = "2000-01-01T00:00:00Z".into();
        write_raw(&store, "a", &a);
        corrupt_message(&store, "a").await;
        // Toggling needs the keys, so it reports the corruption...
        assert!(store.set_enabled(&id("a"), false).await.is_err());
        // ...but a full replacement repairs the tenant.
        let (outcome, summary) = store
            .put(&id("a"), input(CUSTOMER, DEVELOPER))
            .await
            .unwrap();
        assert_eq!(outcome, PutOutcome::Replaced);
        assert_eq!(summary.created_at, "2000-01-01T00:00:00Z");
        assert_ne!(summary.updated_at, summary.created_at);
        store.get(&id("a")).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn missing_canary_with_tenants_refuses_to_open() {
        let dir = private_tempdir();
        let master = MasterKey::generate().unwrap();
        let key = master.to_base64();
        {
            let store = SledKeyStore::open(dir.path(), master).unwrap();
            store
                .put(&id("a"), input(CUSTOMER, DEVELOPER))
                .await
                .unwrap();
            store.raw().remove(crate::engine::META_STORE_KEY).unwrap();
            store.raw().flush().unwrap();
            let err = store.health().await.unwrap_err();
            assert!(err.to_string().contains("canary"), "{err}");
        }
        let err =
            SledKeyStore::open(dir.path(), MasterKey::from_base64(&key).unwrap()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("no master key canary"), "{err}");
    }

    #[tokio::test]
    async fn lagging_generation_counter_is_raised_on_open() {
        let dir = private_tempdir();
        let master = MasterKey::generate().unwrap();
        let key = master.to_base64();
        let generation = {
            let store = SledKeyStore::open(dir.path(), master).unwrap();
            store
                .put(&id("a"), input(CUSTOMER, DEVELOPER))
                .await
                .unwrap();
            store
                .put(&id("a"), input(CUSTOMER, DEVELOPER))
                .await
                .unwrap();
            store
                .raw()
                .insert(crate::engine::META_GENERATION_KEY, b"0".to_vec())
                .unwrap();
            store.raw().flush().unwrap();
            store.get(&id("a")).await.unwrap().unwrap().generation
        };
        let store = SledKeyStore::open(dir.path(), MasterKey::from_base64(&key).unwrap()).unwrap();
        store
            .put(&id("b"), input(CUSTOMER, DEVELOPER))
            .await
            .unwrap();
        assert!(store.get(&id("b")).await.unwrap().unwrap().generation > generation);
    }
}
