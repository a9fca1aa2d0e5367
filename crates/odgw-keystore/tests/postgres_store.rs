//! The PostgreSQL store through its public API, against a real server:
//! `ODGW_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`.
//! Each test works in its own random schema and drops it at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    future::Future,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use odgw_core::SecretString;
use odgw_keystore::{
    Change, ChangeFeed, KeyStore, MasterKey, PgKeyStore, PgSettings, PutOutcome, SealedTenant,
    SledKeyStore, StoreError,
};
use tokio_postgres::NoTls;

mod common;
use common::*;

/// How long a change may take to reach another replica's feed.
const FEED_DEADLINE: Duration = Duration::from_secs(2);

fn url() -> String {
    std::env::var("ODGW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn same_key(master: &MasterKey) -> MasterKey {
    MasterKey::from_base64(&master.to_base64()).unwrap()
}

/// A schema of this test's own, dropped (best effort, even after a
/// failed assertion) when the value goes.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "odgw_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Self { name }
    }

    fn settings(&self) -> PgSettings {
        PgSettings {
            url: SecretString::new(url()),
            schema: self.name.clone(),
            pool_size: 4,
            poll_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(3),
        }
    }

    async fn connect(&self, master: &MasterKey) -> PgKeyStore {
        PgKeyStore::connect(self.settings(), same_key(master))
            .await
            .unwrap()
    }

    /// The application name the store's sessions carry.
    fn application_name(&self) -> String {
        format!("odgw-keystore {}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let app = self.application_name();
        // Its own thread and runtime: this may run inside the test's
        // runtime, or while a failed test unwinds.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let fut = async {
                    let admin = admin().await;
                    // Sessions of stores dropped a moment ago may not be
                    // closed yet (the test's runtime is blocked on this
                    // thread), and one inside a transaction would make
                    // DROP SCHEMA wait for it.
                    let _ = admin
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE application_name = $1",
                            &[&app],
                        )
                        .await;
                    let _ = admin.batch_execute(&sql).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), fut).await;
            });
        })
        .join();
    }
}

/// A plain connection for looking at (and interfering with) the database.
async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Awaits `fut`, failing the test after `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"))
}

/// The first change matching `wanted`, skipping others, within `limit`.
async fn wait_for(feed: &mut ChangeFeed, limit: Duration, wanted: &Change) -> Vec<Change> {
    let mut seen = Vec::new();
    within(limit, &format!("waiting for {wanted:?}"), async {
        loop {
            let change = feed.next().await;
            let done = &change == wanted;
            seen.push(change);
            if done {
                return;
            }
        }
    })
    .await;
    seen
}

/// Retries `op` until it succeeds or `limit` passes, returning the result.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(err) => {
                assert!(
                    err.is_unavailable(),
                    "{what}: only unavailability is expected, got {err:?}"
                );
                assert!(Instant::now() < deadline, "{what}: still failing: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn put_get_list_toggle_delete_round_trip() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let store = schema.connect(&master).await;
    let (record, _) = create_read_and_list(&store).await;

    let (outcome, _) = store
        .put(&id("acme"), input("NEWCUSTOMERKEY"))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Replaced);
    let replaced = store.get(&id("acme")).await.unwrap().unwrap();
    assert_eq!(replaced.created_at, record.created_at);
    assert!(replaced.generation > record.generation);
    assert_eq!(replaced.customer_key.expose(), "NEWCUSTOMERKEY");

    let off = store
        .set_enabled(&id("acme"), false)
        .await
        .unwrap()
        .unwrap();
    assert!(!off.enabled);
    let after = store.get(&id("acme")).await.unwrap().unwrap();
    assert!(!after.enabled && after.generation > replaced.generation);
    store
        .set_enabled(&id("acme"), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.get(&id("acme")).await.unwrap().unwrap().generation,
        after.generation,
        "setting the same state writes nothing"
    );
    assert!(store
        .set_enabled(&id("nobody"), true)
        .await
        .unwrap()
        .is_none());

    assert!(store.delete(&id("acme")).await.unwrap());
    assert!(!store.delete(&id("acme")).await.unwrap());
    assert!(store.get(&id("acme")).await.unwrap().is_none());
    store.put(&id("acme"), input(CUSTOMER_KEY)).await.unwrap();
    assert!(
        store.get(&id("acme")).await.unwrap().unwrap().generation > after.generation,
        "a re-created tenant never reuses a generation"
    );

    let bad = store.put(&id("bad"), input("two words")).await.unwrap_err();
    assert!(matches!(bad, StoreError::InvalidInput(_)), "{bad:?}");

    // A second connect to the same schema sees everything.
    let again = schema.connect(&master).await;
    assert_eq!(again.list().await.unwrap(), store.list().await.unwrap());
}

#[tokio::test]
async fn a_wrong_master_key_is_refused_at_connect() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let store = schema.connect(&master).await;
    store.put(&id("acme"), full_input()).await.unwrap();

    let err = PgKeyStore::connect(schema.settings(), MasterKey::generate().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey), "{err:?}");

    let store = schema.connect(&master).await;
    let record = store.get(&id("acme")).await.unwrap().unwrap();
    assert_eq!(record.customer_key.expose(), CUSTOMER_KEY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_a_fresh_schema_once() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let settings = schema.settings();
            let master = same_key(&master);
            tokio::spawn(async move { PgKeyStore::connect(settings, master).await })
        })
        .collect();
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(
            within(Duration::from_secs(30), "connect", connect)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    // They agreed on one canary: a tenant written by one opens in all.
    stores[0].put(&id("acme"), full_input()).await.unwrap();
    for store in &stores {
        let record = store.get(&id("acme")).await.unwrap().unwrap();
        assert_eq!(record.customer_key.expose(), CUSTOMER_KEY);
    }
    let admin = admin().await;
    let rows = admin
        .query(
            &format!(
                "SELECT version FROM \"{}\".schema_migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, [1], "each migration recorded once");
}

#[tokio::test]
async fn a_schema_from_a_newer_odgw_is_refused() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    drop(schema.connect(&master).await);
    admin()
        .await
        .execute(
            &format!(
                "INSERT INTO \"{}\".schema_migrations (version, description) VALUES (99, 'future')",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    let err = PgKeyStore::connect(schema.settings(), same_key(&master))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn a_change_on_one_replica_reaches_the_others_feed() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let a = schema.connect(&master).await;
    let b = schema.connect(&master).await;
    let mut feed_b = b.changes();
    let mut feed_a = a.changes();

    let started = Instant::now();
    a.put(&id("acme"), full_input()).await.unwrap();
    wait_for(&mut feed_b, FEED_DEADLINE, &Change::Tenant(id("acme"))).await;
    assert!(started.elapsed() < FEED_DEADLINE);
    let record = b.get(&id("acme")).await.unwrap().unwrap();
    assert_eq!(record.customer_key.expose(), CUSTOMER_KEY);
    // Its own writes are in the writer's feed too.
    wait_for(&mut feed_a, FEED_DEADLINE, &Change::Tenant(id("acme"))).await;

    a.announce_purge(Some(&id("acme"))).await.unwrap();
    wait_for(&mut feed_b, FEED_DEADLINE, &Change::Purge(Some(id("acme")))).await;
    b.announce_purge(None).await.unwrap();
    wait_for(&mut feed_a, FEED_DEADLINE, &Change::Purge(None)).await;
    wait_for(&mut feed_b, FEED_DEADLINE, &Change::Purge(None)).await;

    // Toggles and deletes, in commit order, nothing in between.
    a.set_enabled(&id("acme"), false).await.unwrap();
    a.delete(&id("acme")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(within(FEED_DEADLINE, "feed", feed_b.next()).await);
    }
    assert_eq!(
        seen,
        [Change::Tenant(id("acme")), Change::Tenant(id("acme"))]
    );
    assert!(b.get(&id("acme")).await.unwrap().is_none());
    // No-op writes announce nothing.
    assert!(!a.delete(&id("acme")).await.unwrap());
    b.put(&id("other"), input(CUSTOMER_KEY)).await.unwrap();
    assert_eq!(
        within(FEED_DEADLINE, "feed", feed_b.next()).await,
        Change::Tenant(id("other"))
    );

    // A feed starts at its creation: it does not replay older changes.
    let mut late = b.changes();
    a.put(&id("late"), input(CUSTOMER_KEY)).await.unwrap();
    assert_eq!(
        within(FEED_DEADLINE, "late feed", late.next()).await,
        Change::Tenant(id("late"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_two_replicas_lose_nothing() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let a = std::sync::Arc::new(schema.connect(&master).await);
    let b = std::sync::Arc::new(schema.connect(&master).await);
    let t = id("acme");

    // A re-key on A races a disable on B. Without one writer at a time,
    // the disable could write back the old key it had read, or both could
    // take the same generation.
    for round in 0..20 {
        a.put(&t, input(&format!("OLDKEY{round:04}")))
            .await
            .unwrap();
        let before = a.get(&t).await.unwrap().unwrap().generation;
        let new_key = format!("NEWKEY{round:04}");
        let rekey = {
            let (a, t, key) = (a.clone(), t.clone(), new_key.clone());
            tokio::spawn(async move { a.put(&t, input(&key)).await })
        };
        let disable = {
            let (b, t) = (b.clone(), t.clone());
            tokio::spawn(async move { b.set_enabled(&t, false).await })
        };
        rekey.await.unwrap().unwrap();
        disable.await.unwrap().unwrap();
        let after = b.get(&t).await.unwrap().unwrap();
        assert_eq!(after.customer_key.expose(), new_key, "round {round}");
        assert_eq!(
            after.generation,
            before + 2,
            "round {round}: both writes committed, one after the other"
        );
    }

    // Many writers on both replicas: every generation is handed out once.
    let writes: Vec<_> = (0..16)
        .map(|n| {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let tenant = id(&format!("t{n:02}"));
                store.put(&tenant, input(CUSTOMER_KEY)).await.unwrap();
                tenant
            })
        })
        .collect();
    let mut generations = Vec::new();
    for write in writes {
        let tenant = write.await.unwrap();
        generations.push(a.get(&tenant).await.unwrap().unwrap().generation);
    }
    generations.sort_unstable();
    generations.dedup();
    assert_eq!(generations.len(), 16, "{generations:?}");
}

#[tokio::test]
async fn no_plaintext_key_reaches_the_database() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let store = schema.connect(&master).await;
    store.put(&id("acme"), full_input()).await.unwrap();
    store.set_enabled(&id("acme"), false).await.unwrap();
    store.announce_purge(Some(&id("acme"))).await.unwrap();
    let exported = store.export_sealed().await.unwrap();
    store.import_sealed(exported).await.unwrap();

    let admin = admin().await;
    let tables = admin
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&schema.name],
        )
        .await
        .unwrap();
    assert!(tables.len() >= 4, "kv, changes, feed, schema_migrations");
    let mut saw_metadata = false;
    for table in &tables {
        let table: String = table.get(0);
        // Every column of every row, as text.
        let rows = admin
            .query(
                &format!("SELECT t::text FROM \"{}\".\"{table}\" t", schema.name),
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let text: String = row.get(0);
            assert!(
                !text.contains(CUSTOMER_KEY) && !text.contains(DEVELOPER_KEY),
                "{table} holds a plaintext key"
            );
            saw_metadata |= text.contains("Smile Dental");
        }
    }
    assert!(saw_metadata, "the search did see the stored records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_recover_by_themselves_and_the_feed_resyncs() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let store = schema.connect(&master).await;
    let mut feed = store.changes();
    store.put(&id("acme"), full_input()).await.unwrap();
    wait_for(&mut feed, FEED_DEADLINE, &Change::Tenant(id("acme"))).await;

    let admin = admin().await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&schema.application_name()],
        )
        .await
        .unwrap();
    assert!(killed.len() >= 2, "the pool's and the feed's sessions");

    // Right after the kill an operation may fail, but only as unavailable,
    // and the store comes back without being reconnected by hand.
    for _ in 0..3 {
        match store.get(&id("acme")).await {
            Ok(record) => assert!(record.is_some()),
            Err(err) => assert!(err.is_unavailable(), "{err:?}"),
        }
    }
    let limit = Duration::from_secs(10);
    let (acme, beta) = (id("acme"), id("beta"));
    let record = eventually(limit, "get", || store.get(&acme)).await;
    assert_eq!(record.unwrap().customer_key.expose(), CUSTOMER_KEY);
    eventually(limit, "health", || store.health()).await;
    eventually(limit, "put", || store.put(&beta, input(CUSTOMER_KEY))).await;

    // The feed lost its session: it says so once it is back, then goes on.
    let seen = wait_for(&mut feed, limit, &Change::Resync).await;
    assert_eq!(seen.last(), Some(&Change::Resync));
    store.put(&id("gamma"), input(CUSTOMER_KEY)).await.unwrap();
    wait_for(&mut feed, FEED_DEADLINE, &Change::Tenant(id("gamma"))).await;
}

#[tokio::test]
async fn a_feed_behind_the_pruned_changes_resyncs() {
    let schema = Schema::new();
    let master = MasterKey::generate().unwrap();
    let store = std::sync::Arc::new(schema.connect(&master).await);
    // Made outside any runtime, the feed fixes its start now but reads
    // nothing until its first `next`: it stands for a replica that fell
    // behind.
    let mut feed = {
        let store = store.clone();
        std::thread::spawn(move || store.changes()).join().unwrap()
    };
    store.put(&id("missed"), input(CUSTOMER_KEY)).await.unwrap();
    // That change is now more than an hour old, and the next write prunes it.
    admin()
        .await
        .execute(
            &format!(
                "UPDATE \"{}\".changes SET at = now() - interval '2 hours'",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    store.put(&id("kept"), input(CUSTOMER_KEY)).await.unwrap();

    assert_eq!(
        within(FEED_DEADLINE, "feed", feed.next()).await,
        Change::Resync,
        "a gap is reported, not skipped"
    );
    store.put(&id("after"), input(CUSTOMER_KEY)).await.unwrap();
    assert_eq!(
        within(FEED_DEADLINE, "feed", feed.next()).await,
        Change::Tenant(id("after"))
    );
}

/// JSON Lines, as `odgw store export` writes them, and back.
fn through_json_lines(records: Vec<SealedTenant>) -> Vec<SealedTenant> {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    assert!(!text.contains(CUSTOMER_KEY) && !text.contains(DEVELOPER_KEY));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn tenants_exported_from_sled_import_into_postgres_unchanged() {
    let dir = private_tempdir();
    let master = MasterKey::generate().unwrap();
    let sled = SledKeyStore::open(dir.path(), same_key(&master)).unwrap();
    sled.put(&id("acme"), full_input()).await.unwrap();
    sled.put(&id("beta"), input("KEYBETA12345")).await.unwrap();
    sled.set_enabled(&id("beta"), false).await.unwrap();
    sled.put(&id("gamma"), input("KEYGAMMA1234")).await.unwrap();
    let exported = sled.export_sealed().await.unwrap();
    assert_eq!(exported.len(), 3);
    let lines = through_json_lines(exported.clone());

    let schema = Schema::new();
    let pg = schema.connect(&master).await;
    // An existing tenant with the same id is replaced.
    pg.put(&id("acme"), input("PGONLYKEY1234")).await.unwrap();
    let other = schema.connect(&master).await;
    let mut feed = other.changes();

    assert_eq!(pg.import_sealed(lines).await.unwrap(), 3);
    assert_eq!(pg.list().await.unwrap(), sled.list().await.unwrap());
    let mut highest = 0;
    for tenant in ["acme", "beta", "gamma"] {
        let from_sled = sled.get(&id(tenant)).await.unwrap().unwrap();
        let from_pg = pg.get(&id(tenant)).await.unwrap().unwrap();
        assert_eq!(
            from_pg, from_sled,
            "{tenant}: same keys, settings, generation"
        );
        highest = highest.max(from_pg.generation);
    }
    // The very bytes sled exported are what PostgreSQL holds.
    let admin = admin().await;
    for record in &exported {
        let row = admin
            .query_one(
                &format!("SELECT value FROM \"{}\".kv WHERE key = $1", schema.name),
                &[&format!("tenant/{}", record.id())],
            )
            .await
            .unwrap();
        let stored: String = row.get(0);
        assert_eq!(stored, serde_json::to_string(record).unwrap());
    }
    // Running replicas hear of every imported tenant.
    for tenant in ["acme", "beta", "gamma"] {
        wait_for(&mut feed, FEED_DEADLINE, &Change::Tenant(id(tenant))).await;
    }
    // Later writes get generations above every imported one.
    pg.put(&id("delta"), input(CUSTOMER_KEY)).await.unwrap();
    assert!(pg.get(&id("delta")).await.unwrap().unwrap().generation > highest);
    // And PostgreSQL exports what it imported.
    let back = pg.export_sealed().await.unwrap();
    assert_eq!(back.len(), 4);
    assert_eq!(
        serde_json::to_string(&back[0]).unwrap(),
        serde_json::to_string(&exported[0]).unwrap()
    );
}

#[tokio::test]
async fn foreign_or_edited_records_are_refused_and_nothing_is_written() {
    let dir = private_tempdir();
    let master = MasterKey::generate().unwrap();
    let sled = SledKeyStore::open(dir.path(), same_key(&master)).unwrap();
    sled.put(&id("acme"), full_input()).await.unwrap();
    sled.put(&id("beta"), input("KEYBETA12345")).await.unwrap();
    let good = sled.export_sealed().await.unwrap();

    let foreign_dir = private_tempdir();
    let foreign = SledKeyStore::open(foreign_dir.path(), MasterKey::generate().unwrap()).unwrap();
    foreign
        .put(&id("zulu"), input("KEYZULU12345"))
        .await
        .unwrap();
    let foreign = foreign.export_sealed().await.unwrap();

    let schema = Schema::new();
    let pg = schema.connect(&master).await;
    pg.put(&id("acme"), input("PGONLYKEY1234")).await.unwrap();
    let before = pg.export_sealed().await.unwrap();
    let unchanged = |after: Vec<SealedTenant>| {
        let text = |v: &[SealedTenant]| serde_json::to_string(v).unwrap();
        assert_eq!(text(&after), text(&before), "nothing was written");
    };

    // Sealed under another master key.
    let mut batch = good.clone();
    batch.extend(foreign.clone());
    let err = pg.import_sealed(batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::ImportRefused { tenant, .. } if tenant == "zulu"),
        "{err:?}"
    );
    assert!(err.to_string().contains("nothing was written"), "{err}");
    unchanged(pg.export_sealed().await.unwrap());

    // Edited: base_url redirected.
    let mut edited: serde_json::Value = serde_json::to_value(&good[1]).unwrap();
    edited["meta"]["base_url"] = "https://attacker.example".into();
    let batch = vec![good[0].clone(), serde_json::from_value(edited).unwrap()];
    let err = pg.import_sealed(batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::ImportRefused { tenant, .. } if tenant == "beta"),
        "{err:?}"
    );
    unchanged(pg.export_sealed().await.unwrap());

    // Moved to another id.
    let mut moved: serde_json::Value = serde_json::to_value(&good[1]).unwrap();
    moved["meta"]["id"] = "charlie".into();
    let err = pg
        .import_sealed(vec![serde_json::from_value(moved).unwrap()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::ImportRefused { tenant, .. } if tenant == "charlie"),
        "{err:?}"
    );

    // The same tenant twice.
    let err = pg
        .import_sealed(vec![good[0].clone(), good[0].clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than once"), "{err}");
    unchanged(pg.export_sealed().await.unwrap());
    assert!(pg.get(&id("charlie")).await.unwrap().is_none());

    // Unknown fields never parse.
    let mut extra: serde_json::Value = serde_json::to_value(&good[0]).unwrap();
    extra["plaintext"] = "oops".into();
    assert!(serde_json::from_value::<SealedTenant>(extra).is_err());
}
