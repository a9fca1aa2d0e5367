//! The PostgreSQL backend: one key store shared by several odgw replicas.
//!
//! Tables, all in the configured schema (created and migrated at connect):
//!
//! - `kv (key, value)`: the same entries as the sled store, byte for byte
//!   (`meta/store`, `meta/generation`, `tenant/{id}`), so records move
//!   between backends unchanged. Values are the sealed JSON records: the
//!   database never sees a key in clear.
//! - `changes (seq, at, kind, tenant, origin)`: one row per write, followed
//!   by every replica's [`ChangeFeed`]; rows older than an hour are pruned,
//!   and `feed.pruned_through` remembers how far, so a feed that fell
//!   behind notices the gap.
//! - `schema_migrations (version, description, applied_at)`.
//!
//! Every writer transaction first takes `pg_advisory_xact_lock` on a key
//! derived from the schema name, so writers of all replicas run one at a
//! time: a re-key on one replica and a disable on another each read the
//! record the other committed. Connection trouble (refused, dropped,
//! timed out, server shutting down) is [`StoreError::Unavailable`]; the
//! pool drops broken connections and opens new ones, so the store recovers
//! by itself once PostgreSQL is back. Needs PostgreSQL 11 or newer
//! (`starts_with`); connections are plain TCP (`NoTls`).

mod feed;

use std::{
    error::Error,
    fmt,
    future::Future,
    sync::{atomic::AtomicI64, atomic::Ordering, Arc},
    time::Duration,
};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use odgw_core::{SecretString, TenantId};
use tokio_postgres::{
    types::{FromSql, ToSql},
    NoTls, Row,
};

pub use feed::{Change, ChangeFeed};

use crate::{
    engine::{Engine, Entries, Kv, KvTxn, Op},
    KeyStore, MasterKey, PutOutcome, SealedTenant, StoreError, TenantInput, TenantRecord,
    TenantSummary,
};

/// How to reach the shared store. `Debug` never shows the URL.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/db` (or key=value form). May
    /// carry a password, so it is a [`SecretString`] and never logged.
    pub url: SecretString,
    /// Schema holding odgw's tables: `[a-z_][a-z0-9_]{0,62}`. Several
    /// deployments can share a database with different schemas.
    pub schema: String,
    /// Connections this replica keeps at most (besides one per change feed).
    pub pool_size: usize,
    /// How often a change feed re-reads the change table even without a
    /// notification (notifications can be lost with a dropped connection).
    pub poll_interval: Duration,
    /// How long connecting, or waiting for a free pooled connection, may
    /// take before the store counts as unavailable.
    pub connect_timeout: Duration,
}

impl fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &"[redacted]")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("poll_interval", &self.poll_interval)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The cluster [`KeyStore`]: PostgreSQL shared by every replica.
pub struct PgKeyStore {
    engine: Engine<PgKv>,
}

impl fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgKeyStore")
            .field("schema", &self.engine.kv.shared.schema)
            .finish_non_exhaustive()
    }
}

impl PgKeyStore {
    /// Connects, creates or migrates the schema (safe when several replicas
    /// start at once), and checks `master` against the store's canary, or
    /// stores one in a new store.
    ///
    /// Fails with [`StoreError::WrongMasterKey`] when `master` is not the
    /// key the store was created with, [`StoreError::SchemaTooNew`] when a
    /// newer odgw migrated the schema, [`StoreError::InvalidSettings`] for
    /// a bad schema name or URL, and [`StoreError::Unavailable`] when the
    /// server cannot be reached within `connect_timeout`.
    pub async fn connect(settings: PgSettings, master: MasterKey) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared::new(settings)?);
        migrate(&shared).await?;
        let engine = Engine::open(
            PgKv {
                shared: Arc::clone(&shared),
            },
            &master,
        )
        .await?;
        // Where feeds made from now on start reading.
        let newest = shared.newest_seq().await?;
        shared.seen_seq.fetch_max(newest, Ordering::AcqRel);
        tracing::info!(schema = %shared.schema, "key store connected to postgresql");
        Ok(Self { engine })
    }

    /// The change feed of this store: every tenant write, import and purge
    /// announcement made by any replica (this one included) from about now
    /// on, in commit order. Each call makes a new, independent feed with
    /// its own listening connection; it stops when dropped. Call it from
    /// within a tokio runtime (otherwise the feed starts on its first
    /// [`ChangeFeed::next`]).
    pub fn changes(&self) -> ChangeFeed {
        ChangeFeed::start(Arc::clone(&self.engine.kv.shared))
    }

    /// The schema this store lives in.
    pub fn schema(&self) -> &str {
        &self.engine.kv.shared.schema
    }
}

crate::delegate_key_store!(PgKeyStore);

/// The newest schema version this build knows.
const SCHEMA_VERSION: i64 = 1;

/// Migrations in order; `{s}` is the quoted schema. Each runs once, in the
/// transaction that records it in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "key-value entries, change feed",
    r#"
    CREATE TABLE {s}.kv (
        key text COLLATE "C" PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE {s}.changes (
        seq bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        kind text NOT NULL,
        tenant text,
        origin text
    );
    CREATE INDEX changes_at ON {s}.changes (at);
    CREATE TABLE {s}.feed (
        id int PRIMARY KEY CHECK (id = 1),
        pruned_through bigint NOT NULL
    );
    INSERT INTO {s}.feed (id, pruned_through) VALUES (1, 0);
    "#,
)];

/// Change rows are kept this long; a feed further behind resyncs.
const CHANGE_RETENTION: &str = "1 hour";

/// Extra time a database operation may take on top of `connect_timeout`
/// (queries, and waiting for another replica's write to finish).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The statements of one store, with its schema quoted in.
#[derive(Debug)]
struct Sql {
    get: String,
    scan: String,
    upsert: String,
    remove: String,
    insert_change: String,
    notify: String,
    prune: String,
    newest: String,
    poll: String,
    pruned: String,
}

impl Sql {
    fn new(s: &str) -> Self {
        Self {
            get: format!("SELECT value FROM {s}.kv WHERE key = $1"),
            scan: format!("SELECT key, value FROM {s}.kv WHERE starts_with(key, $1) ORDER BY key"),
            upsert: format!(
                "INSERT INTO {s}.kv (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            remove: format!("DELETE FROM {s}.kv WHERE key = $1"),
            insert_change: format!(
                "INSERT INTO {s}.changes (kind, tenant, origin) VALUES ($1, $2, $3) RETURNING seq"
            ),
            notify: "SELECT pg_notify($1, $2)".to_owned(),
            prune: format!(
                "WITH gone AS (DELETE FROM {s}.changes WHERE at < now() - interval '{CHANGE_RETENTION}' RETURNING seq) \
                 UPDATE {s}.feed SET pruned_through = GREATEST(pruned_through, (SELECT max(seq) FROM gone)) \
                 WHERE EXISTS (SELECT 1 FROM gone)"
            ),
            newest: format!(
                "SELECT GREATEST((SELECT pruned_through FROM {s}.feed), \
                 (SELECT COALESCE(max(seq), 0) FROM {s}.changes))::bigint"
            ),
            poll: format!(
                "SELECT seq, kind, tenant FROM {s}.changes WHERE seq > $1 ORDER BY seq LIMIT {}",
                feed::POLL_BATCH
            ),
            pruned: format!("SELECT pruned_through FROM {s}.feed"),
        }
    }
}

/// What the store, its transactions and its feeds share.
pub(crate) struct Shared {
    pool: Pool,
    /// For the feeds' own listening connections.
    pg_config: tokio_postgres::Config,
    schema: String,
    sql: Sql,
    write_lock: i64,
    migrate_lock: i64,
    /// The NOTIFY channel of this schema.
    channel: String,
    /// Written into each change row: which store instance made it.
    origin: String,
    /// The newest change seq this instance knows of (read at connect,
    /// committed by it, or seen by a feed); where new feeds start.
    seen_seq: AtomicI64,
    poll_interval: Duration,
    /// Bound on one operation, connection wait included.
    op_timeout: Duration,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn new(settings: PgSettings) -> Result<Self, StoreError> {
        let PgSettings {
            url,
            schema,
            pool_size,
            poll_interval,
            connect_timeout,
        } = settings;
        if !valid_schema(&schema) {
            return Err(StoreError::InvalidSettings(format!(
                "schema {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
            )));
        }
        if pool_size == 0 {
            return Err(StoreError::InvalidSettings(
                "pool_size must be at least 1".to_owned(),
            ));
        }
        if connect_timeout.is_zero() {
            return Err(StoreError::InvalidSettings(
                "connect_timeout must be above zero".to_owned(),
            ));
        }
        // The parser's message may quote part of the URL, password included.
        let mut pg_config: tokio_postgres::Config = url.expose().parse().map_err(|_| {
            StoreError::InvalidSettings(
                "the postgresql url is not a valid connection string".to_owned(),
            )
        })?;
        pg_config.connect_timeout(connect_timeout);
        // A peer that vanished without closing the socket is noticed within
        // about half a minute even on an idle feed connection.
        pg_config.keepalives(true);
        pg_config.keepalives_idle(Duration::from_secs(15));
        pg_config.keepalives_interval(Duration::from_secs(5));
        pg_config.keepalives_retries(3);
        if pg_config.get_application_name().is_none() {
            // Lets operators (and the tests) find this store's sessions.
            pg_config.application_name(format!("odgw-keystore {schema}"));
        }
        let manager = Manager::from_config(
            pg_config.clone(),
            NoTls,
            ManagerConfig {
                // A connection whose socket closed (server restart, killed
                // session) is dropped when taken from the pool; one that
                // fails a query is discarded by the code below.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|err| StoreError::Backend {
                context: "building the connection pool",
                source: err.to_string().into(),
            })?;
        let quoted = format!("\"{schema}\"");
        Ok(Self {
            pool,
            pg_config,
            sql: Sql::new(&quoted),
            write_lock: lock_key("write", &schema),
            migrate_lock: lock_key("migrate", &schema),
            channel: format!("odgw_keystore_{:016x}", fnv1a(&["channel", &schema])),
            origin: instance_id()?,
            schema,
            seen_seq: AtomicI64::new(0),
            poll_interval: poll_interval.max(Duration::from_millis(10)),
            op_timeout: connect_timeout + QUERY_TIMEOUT,
        })
    }

    /// Runs `op` with the operation deadline; running out is unavailability.
    async fn timed<T>(
        &self,
        context: &'static str,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable {
                context,
                source: format!("no answer within {} ms", self.op_timeout.as_millis()).into(),
            }),
        }
    }

    async fn connection(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// One statement outside any transaction. A pooled connection whose
    /// server went away since its last use fails once; the query is then
    /// retried once on a new connection, so a restarted server is picked
    /// up without an error when it is already back.
    async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.timed(context, async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let client = self.connection().await?;
                match query_on(&client, sql, params).await {
                    Ok(rows) => return Ok(rows),
                    Err(err) => {
                        let err = db_error(context, err);
                        if err.is_unavailable() {
                            discard(client);
                            if attempt < 2 {
                                continue;
                            }
                        }
                        return Err(err);
                    }
                }
            }
        })
        .await
    }

    /// The newest change seq, counting pruned ones.
    async fn newest_seq(&self) -> Result<i64, StoreError> {
        let rows = self
            .query("reading the change feed", &self.sql.newest, &[])
            .await?;
        first::<i64>(&rows, "reading the change feed")
    }

    /// Starts a transaction holding the advisory lock `lock`. The lock is
    /// a transaction lock: it is released by COMMIT or ROLLBACK, or by the
    /// server when the connection drops, so a crashed replica never leaves
    /// the store locked.
    async fn begin(&self, lock: i64) -> Result<PgTxn<'_>, StoreError> {
        const CONTEXT: &str = "starting a write";
        self.timed(CONTEXT, async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                // Guarded before BEGIN: whatever happens from here on (an
                // error, or the caller giving up), a connection that may be
                // inside a transaction is closed, never pooled again.
                let txn = PgTxn {
                    shared: self,
                    client: Some(self.connection().await?),
                };
                match txn.start(lock).await {
                    Ok(()) => return Ok(txn),
                    Err(err) => {
                        let err = db_error(CONTEXT, err);
                        // Nothing was written yet, so retrying is safe.
                        if err.is_unavailable() && attempt < 2 {
                            continue;
                        }
                        return Err(err);
                    }
                }
            }
        })
        .await
    }
}

/// The key-value map over the `kv` table.
pub(crate) struct PgKv {
    shared: Arc<Shared>,
}

impl Kv for PgKv {
    type Txn<'a> = PgTxn<'a>;

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key_text(key)?;
        let rows = self
            .shared
            .query("reading", &self.shared.sql.get, &[&key])
            .await?;
        value(&rows)
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let prefix = key_text(prefix)?;
        let rows = self
            .shared
            .query("scanning", &self.shared.sql.scan, &[&prefix])
            .await?;
        entries(&rows)
    }

    async fn begin(&self) -> Result<PgTxn<'_>, StoreError> {
        self.shared.begin(self.shared.write_lock).await
    }
}

/// A transaction on one pooled connection, holding an advisory lock.
///
/// Dropped without a successful commit (an error, or the caller giving
/// up), it closes its connection instead of returning it to the pool: the
/// server then rolls back and releases the lock, and no later user of the
/// pool can find itself inside this transaction.
pub(crate) struct PgTxn<'a> {
    shared: &'a Shared,
    client: Option<Object>,
}

impl PgTxn<'_> {
    fn client(&self) -> Result<&Object, StoreError> {
        // `None` only after commit, which consumes the transaction.
        self.client.as_ref().ok_or_else(|| StoreError::Backend {
            context: "writing",
            source: "the transaction has already ended".into(),
        })
    }

    async fn start(&self, lock: i64) -> Result<(), tokio_postgres::Error> {
        let client = match &self.client {
            Some(client) => client,
            None => return Ok(()),
        };
        // READ COMMITTED, not REPEATABLE READ: each statement after the
        // lock must see what the previous lock holder committed, and a
        // snapshot taken when the transaction began (before the lock was
        // granted) would not. The server's lock_timeout matches ours, so a
        // lock wait we gave up on does not linger there either.
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '{}ms'",
                self.shared.op_timeout.as_millis()
            ))
            .await?;
        let statement = client
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        client.execute(&statement, &[&lock]).await?;
        Ok(())
    }

    async fn run(
        &self,
        context: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        query_on(self.client()?, sql, params)
            .await
            .map_err(|err| db_error(context, err))
    }

    async fn finish(
        mut self,
        ops: Vec<Op>,
        changes: Vec<Change>,
    ) -> Result<Option<i64>, StoreError> {
        let sql = &self.shared.sql;
        for (key, value) in ops {
            let key = key_text(&key)?;
            match value {
                Some(value) => {
                    let value = String::from_utf8(value)
                        .map_err(|_| StoreError::corrupt("a value to store is not utf-8"))?;
                    self.run("writing", &sql.upsert, &[&key, &value]).await?;
                }
                None => {
                    self.run("writing", &sql.remove, &[&key]).await?;
                }
            }
        }
        // The change rows are inserted under the writer lock, so their seqs
        // are handed out in commit order. Without the lock, transaction A
        // could take seq 5, B seq 6, B commit first, and a feed reading
        // `seq > last` would move past 6 before 5 became visible, skipping
        // it for good.
        let mut newest = None;
        for change in &changes {
            let (kind, tenant) = match change {
                Change::Tenant(id) => ("tenant", Some(id.as_str())),
                Change::Purge(id) => ("purge", id.as_ref().map(TenantId::as_str)),
                // Feeds make these up; they are never stored.
                Change::Resync => continue,
            };
            let rows = self
                .run(
                    "recording a change",
                    &sql.insert_change,
                    &[&kind, &tenant, &self.shared.origin],
                )
                .await?;
            newest = Some(first::<i64>(&rows, "recording a change")?);
        }
        if let Some(seq) = newest {
            // Delivered at commit, and only if it commits.
            self.run(
                "recording a change",
                &sql.notify,
                &[&self.shared.channel, &seq.to_string()],
            )
            .await?;
            self.run("pruning old changes", &sql.prune, &[]).await?;
        }
        self.client()?
            .batch_execute("COMMIT")
            .await
            .map_err(|err| db_error("committing", err))?;
        // Committed: the connection is clean and goes back to the pool.
        drop(self.client.take());
        Ok(newest)
    }
}

impl KvTxn for PgTxn<'_> {
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key_text(key)?;
        let rows = self.run("reading", &self.shared.sql.get, &[&key]).await?;
        value(&rows)
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let prefix = key_text(prefix)?;
        let rows = self
            .run("scanning", &self.shared.sql.scan, &[&prefix])
            .await?;
        entries(&rows)
    }

    /// Durable on return: PostgreSQL flushes its WAL at COMMIT (with the
    /// default `synchronous_commit = on`).
    async fn commit(self, ops: Vec<Op>, changes: Vec<Change>) -> Result<(), StoreError> {
        let shared = self.shared;
        let newest = shared
            .timed("committing", self.finish(ops, changes))
            .await?;
        if let Some(seq) = newest {
            shared.seen_seq.fetch_max(seq, Ordering::AcqRel);
        }
        Ok(())
    }
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            discard(client);
        }
    }
}

/// One statement on `client`, prepared once per connection.
async fn query_on(
    client: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// Closes a connection instead of returning it to the pool.
fn discard(client: Object) {
    drop(Object::take(client));
}

/// Creates the schema and brings it to [`SCHEMA_VERSION`], under an
/// advisory lock so replicas starting together migrate once, in turn.
async fn migrate(shared: &Shared) -> Result<(), StoreError> {
    const CONTEXT: &str = "migrating the schema";
    let txn = shared.begin(shared.migrate_lock).await?;
    shared
        .timed(CONTEXT, async {
            let quoted = format!("\"{}\"", shared.schema);
            let exists = txn
                .run(
                    CONTEXT,
                    "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                    &[&shared.schema],
                )
                .await?;
            // Checked first rather than CREATE SCHEMA IF NOT EXISTS, which
            // needs the CREATE privilege even when the schema exists.
            if !first::<bool>(&exists, CONTEXT)? {
                txn.batch(CONTEXT, &format!("CREATE SCHEMA {quoted}")).await?;
            }
            let table = format!("{quoted}.schema_migrations");
            let has_table = txn
                .run(
                    CONTEXT,
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&table],
                )
                .await?;
            if !first::<bool>(&has_table, CONTEXT)? {
                txn.batch(
                    CONTEXT,
                    &format!(
                        "CREATE TABLE {table} (version bigint PRIMARY KEY, \
                         description text NOT NULL, \
                         applied_at timestamptz NOT NULL DEFAULT now())"
                    ),
                )
                .await?;
            }
            let current = txn
                .run(
                    CONTEXT,
                    &format!("SELECT COALESCE(max(version), 0)::bigint FROM {table}"),
                    &[],
                )
                .await?;
            let current = first::<i64>(&current, CONTEXT)?;
            if current > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    schema: shared.schema.clone(),
                    found: current,
                    supported: SCHEMA_VERSION,
                });
            }
            for (version, description, sql) in MIGRATIONS {
                if *version <= current {
                    continue;
                }
                txn.batch(CONTEXT, &sql.replace("{s}", &quoted)).await?;
                let params: [&(dyn ToSql + Sync); 2] = [version, description];
                txn.run(
                    CONTEXT,
                    &format!("INSERT INTO {table} (version, description) VALUES ($1, $2)"),
                    &params,
                )
                .await?;
                tracing::info!(schema = %shared.schema, version, description, "key store schema migrated");
            }
            Ok(())
        })
        .await?;
    txn.commit(Vec::new(), Vec::new()).await
}

impl PgTxn<'_> {
    /// Statements without parameters or results (DDL).
    async fn batch(&self, context: &'static str, sql: &str) -> Result<(), StoreError> {
        self.client()?
            .batch_execute(sql)
            .await
            .map_err(|err| db_error(context, err))
    }
}

/// Whether `schema` is a schema name odgw accepts: `[a-z_][a-z0-9_]{0,62}`
/// (always safe to quote, never case-folded). `postgres.schema` is checked
/// with this same rule before any port is bound.
pub fn valid_schema(schema: &str) -> bool {
    let bytes = schema.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'_'))
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// FNV-1a (64-bit) of `parts`, NUL-separated: stable across builds and
/// platforms, which the advisory lock keys and channel names must be,
/// since every replica has to compute the same ones.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A NUL byte between parts (xor with zero leaves the hash as is).
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The advisory lock key for `purpose` on `schema`. Advisory locks are
/// shared by the whole database, so the key names the schema: deployments
/// in different schemas of one database do not block each other.
fn lock_key(purpose: &str, schema: &str) -> i64 {
    i64::from_ne_bytes(fnv1a(&["odgw-keystore", purpose, schema]).to_ne_bytes())
}

/// A random id for this store instance, recorded as a change's origin.
fn instance_id() -> Result<String, StoreError> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn key_text(key: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(key).map_err(|_| StoreError::corrupt("a store key is not utf-8"))
}

fn text_column(row: &Row, index: usize, context: &'static str) -> Result<String, StoreError> {
    row.try_get::<_, String>(index)
        .map_err(|err| db_error(context, err))
}

/// The answer of the `get` statement: the value, if the key exists.
fn value(rows: &[Row]) -> Result<Option<Vec<u8>>, StoreError> {
    rows.first()
        .map(|row| text_column(row, 0, "reading").map(String::into_bytes))
        .transpose()
}

/// The answer of the `scan` statement.
fn entries(rows: &[Row]) -> Result<Entries, StoreError> {
    rows.iter()
        .map(|row| {
            Ok((
                text_column(row, 0, "scanning")?.into_bytes(),
                text_column(row, 1, "scanning")?.into_bytes(),
            ))
        })
        .collect()
}

/// The first column of the first row.
fn first<'a, T: FromSql<'a>>(rows: &'a [Row], context: &'static str) -> Result<T, StoreError> {
    let row = rows.first().ok_or_else(|| StoreError::Backend {
        context,
        source: "the query returned no row".into(),
    })?;
    row.try_get(0).map_err(|err| db_error(context, err))
}

/// A database failure as text: the server's message and SQLSTATE, or the
/// client's error chain. tokio-postgres never puts the connection string
/// in either, so neither the URL nor its password can appear.
#[derive(Debug)]
struct DbFailure(String);

impl fmt::Display for DbFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for DbFailure {}

impl DbFailure {
    fn of(err: &tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            return Self(format!("{} (sqlstate {})", db.message(), db.code().code()));
        }
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self(text)
    }
}

/// Whether `err` means the server could not be reached or talked to, as
/// opposed to it refusing a statement.
fn is_unavailable(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        let code = code.code();
        // Class 08: connection exception; 57P01-03: the server is shutting
        // down, crashed or starting up; 53300: too many connections.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // tokio-postgres's error kinds are private; these are its texts for
    // connecting, talking to and waiting for the server.
    let text = err.to_string();
    text.starts_with("error connecting to server")
        || text.starts_with("error communicating with the server")
        || text.starts_with("timeout waiting for server")
}

fn db_error(context: &'static str, err: tokio_postgres::Error) -> StoreError {
    let source = Box::new(DbFailure::of(&err));
    if is_unavailable(&err) {
        StoreError::Unavailable { context, source }
    } else {
        StoreError::Backend { context, source }
    }
}

fn pool_error(err: PoolError) -> StoreError {
    const CONTEXT: &str = "getting a database connection";
    match err {
        PoolError::Timeout(_) => StoreError::Unavailable {
            context: CONTEXT,
            source: "no connection within the connect timeout".into(),
        },
        PoolError::Backend(err) => db_error(CONTEXT, err),
        PoolError::Closed => StoreError::Unavailable {
            context: CONTEXT,
            source: "the connection pool is closed".into(),
        },
        other => StoreError::Backend {
            context: CONTEXT,
            source: other.to_string().into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        for ok in ["odgw", "_x", "a1_b2", &"a".repeat(63)] {
            assert!(valid_schema(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Odgw",
            "a-b",
            "a b",
            "a\"b",
            &"a".repeat(64),
            "ödgw",
        ] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }

    #[test]
    fn lock_keys_and_channels_are_stable_and_per_schema() {
        // Pinned: every replica, whatever its build, must compute these.
        assert_eq!(fnv1a(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(lock_key("write", "odgw"), lock_key("write", "odgw2"));
        assert_ne!(lock_key("write", "odgw"), lock_key("migrate", "odgw"));
        assert_eq!(lock_key("write", "odgw"), lock_key("write", "odgw"));
    }

    #[tokio::test]
    async fn bad_settings_are_refused_without_quoting_the_url() {
        let settings = |url: &str, schema: &str| PgSettings {
            url: SecretString::new(url),
            schema: schema.to_owned(),
            pool_size: 2,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        let master = || MasterKey::generate().unwrap();
        let err = PgKeyStore::connect(settings("postgres://u:hunter2@h/db", "Bad-Name"), master())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidSettings(_)), "{err:?}");
        let err = PgKeyStore::connect(
            settings("postgres://u:hunter2@h:notaport/db", "ok"),
            master(),
        )
        .await
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not a valid connection string"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let text = format!("{:?}", settings("postgres://u:hunter2@h/db", "ok"));
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_fast_and_the_message_is_clean() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let settings = PgSettings {
            url: SecretString::new("postgres://odgw:hunter2@127.0.0.1:1/db"),
            schema: "odgw".to_owned(),
            pool_size: 2,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
        };
        let started = std::time::Instant::now();
        let err = PgKeyStore::connect(settings, MasterKey::generate().unwrap())
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let msg = err.to_string();
        for secret in ["hunter2", "127.0.0.1:1", "postgres://"] {
            assert!(!msg.contains(secret), "{msg}");
        }
    }
}
