//! Cluster mode: several `odgw` processes sharing one PostgreSQL key store
//! and one Redis pacing store, against the real servers (no mocks of either).
//!
//! PostgreSQL: `ODGW_TEST_POSTGRES_URL`, else the machine's local server
//! (`postgres://postgres@127.0.0.1:5432/test`); every test works in a schema
//! of its own and drops it at the end. Redis: `ODGW_TEST_REDIS_URL`, else
//! `redis://127.0.0.1:6379`, every test under a key prefix of its own; the
//! tests that stop Redis run a private `redis-server` on a free port instead.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use odgw_mock::ThrottleMode;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::{
    process::{config_head, hs_token, write_config, Served, ODGW},
    support::*,
};

pub(crate) fn postgres_url() -> String {
    std::env::var("ODGW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub(crate) fn redis_url() -> String {
    std::env::var("ODGW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A name no other test (or earlier run) uses.
pub(crate) fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One test's share of the shared servers: a PostgreSQL schema and a Redis
/// key prefix nobody else uses, plus the secrets every replica reads.
struct Shared {
    root: tempfile::TempDir,
    schema: String,
    postgres_url: String,
    redis_url: String,
    key_prefix: String,
    /// `redis.on_failure` of every replica.
    on_failure: &'static str,
}

impl Shared {
    fn new() -> Self {
        Self::with_redis(redis_url())
    }

    fn with_redis(redis_url: String) -> Self {
        let root = tempfile::tempdir().unwrap();
        // The same secrets the single-node process tests write, so a store
        // exported there imports here.
        write_config(root.path(), "http://127.0.0.1:9/api/v1", [3; 32]);
        Self {
            root,
            schema: unique("odgw_e2e_"),
            postgres_url: postgres_url(),
            redis_url,
            key_prefix: format!("{}:", unique("odgw-e2e-")),
            on_failure: "local",
        }
    }

    fn secrets(&self) -> PathBuf {
        self.root.path().join("secrets")
    }

    /// Writes the config of replica `node` and returns its path. `postgres`
    /// may point at a proxy in front of the real server.
    fn node_config(&self, node: &str, upstream: &str, postgres: &str, extra: &str) -> PathBuf {
        let s = self.secrets();
        let dir = self.root.path().join(node);
        std::fs::create_dir_all(&dir).unwrap();
        let postgres_file = dir.join("postgres_url");
        std::fs::write(&postgres_file, postgres).unwrap();
        std::fs::write(s.join("redis_url"), &self.redis_url).unwrap();
        let config = dir.join("odgw.toml");
        std::fs::write(
            &config,
            format!(
                r#"{head}
[store]
backend = "postgres"
master_key_file = "{s}/master_key"
[postgres]
url_file = "{pg}"
schema = "{schema}"
pool_size = 4
connect_timeout = "2s"
poll_interval = "500ms"
[redis]
url_file = "{s}/redis_url"
key_prefix = "{prefix}"
on_failure = "{on_failure}"
timeout = "250ms"
[audit]
path = "{dir}/audit"
[limits]
backend = "redis"
subject_rate = "unlimited"
{extra}
"#,
                head = config_head(
                    &s,
                    upstream,
                    &format!("node_id = \"{node}\"\nshutdown_grace = \"2s\""),
                ),
                s = s.display(),
                pg = postgres_file.display(),
                schema = self.schema,
                prefix = self.key_prefix,
                on_failure = self.on_failure,
                dir = dir.display(),
            ),
        )
        .unwrap();
        config
    }

    fn start(&self, node: &str, upstream: &str, extra: &str) -> Served {
        let config = self.node_config(node, upstream, &self.postgres_url, extra);
        Served::start(&config).unwrap_or_else(|e| panic!("replica {node} did not start: {e}"))
    }

    async fn drop_schema(&self) {
        drop_schema(&self.postgres_url, &self.schema).await;
    }
}

/// Drops a test's PostgreSQL schema and everything in it.
pub(crate) async fn drop_schema(postgres_url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(postgres_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

/// The mock Open Dental with Open Dental's paid-tier throttle for KEY_A: a
/// call within 900 ms of the previous accepted one gets 429 (1/s, with a
/// little slack for loopback jitter).
async fn throttled_mock() -> odgw_mock::RunningMock {
    let mut config = odgw_mock::MockConfig::test_defaults();
    config.keys.push(odgw_mock::KeyPair::new(DEV_KEY, KEY_A));
    config.keys.push(odgw_mock::KeyPair::new(DEV_KEY, KEY_B));
    config.throttle = ThrottleMode::Reject {
        interval: Duration::from_millis(900),
        retry_after_secs: 1,
    };
    odgw_mock::MockUpstream::spawn(config).await.unwrap()
}

async fn plain_mock() -> odgw_mock::RunningMock {
    let mut config = odgw_mock::MockConfig::test_defaults();
    config.keys.push(odgw_mock::KeyPair::new(DEV_KEY, KEY_A));
    config.keys.push(odgw_mock::KeyPair::new(DEV_KEY, KEY_B));
    odgw_mock::MockUpstream::spawn(config).await.unwrap()
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let (path, method) = (req.uri().clone(), req.method().clone());
    let uri = format!("http://{addr}{path}");
    let mut req = req;
    *req.uri_mut() = uri.parse().unwrap();
    let resp = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(node: &Served, path: &str, token: &str) -> Resp {
    get_at(node.data, path, token).await
}

/// GET `path` on the data plane at `addr` with a bearer token.
async fn get_at(addr: SocketAddr, path: &str, token: &str) -> Resp {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    send(addr, req).await
}

async fn admin(node: &Served, method: Method, path: &str, body: Option<Value>) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::from(
            body.map(|b| b.to_string()).unwrap_or_default().into_bytes(),
        ))
        .unwrap();
    send(node.admin, req).await
}

async fn put_tenant(node: &Served, id: &str, customer_key: &str) -> Resp {
    admin(
        node,
        Method::PUT,
        &format!("/admin/v1/tenants/{id}"),
        Some(json!({ "customer_key": customer_key })),
    )
    .await
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_one_practice_within_its_open_dental_throttle() {
    let mock = throttled_mock().await;
    let shared = Shared::new();
    let limits = r#"tenant_rate = "1/s"
tenant_burst = 1
queue_timeout = "60s"
queue_depth = 64"#;
    let nodes: Vec<Served> = ["a", "b", "c"]
        .iter()
        .map(|n| shared.start(n, &mock.base_url(), limits))
        .collect();
    assert_eq!(put_tenant(&nodes[0], "practice", KEY_A).await.status, 201);

    let token = hs_token("loader", "practice");
    let calls = (0..30).map(|i| get(&nodes[i % 3], "/api/v1/patients/11", &token));
    let answers = futures_util::future::join_all(calls).await;
    for resp in &answers {
        assert_eq!(resp.status, 200, "{resp:?}");
    }

    let mut seen: Vec<_> = mock
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/patients/11")
        .collect();
    assert_eq!(seen.len(), 30, "one upstream call per request, no retries");
    assert!(
        seen.iter().all(|r| r.response_status == 200),
        "Open Dental never answered 429"
    );
    seen.sort_by_key(|r| r.received_at);
    for pair in seen.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(
            gap >= Duration::from_millis(900),
            "calls {gap:?} apart across replicas"
        );
    }
    for node in nodes {
        node.kill9();
    }
    shared.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_made_on_one_replica_are_in_force_on_all_within_two_seconds() {
    let mock = plain_mock().await;
    let shared = Shared::new();
    let limits = "tenant_rate = \"unlimited\"";
    let a = shared.start("a", &mock.base_url(), limits);
    let b = shared.start("b", &mock.base_url(), limits);
    let c = shared.start("c", &mock.base_url(), limits);
    let token = hs_token("reviewer", "office");
    let within = Duration::from_secs(2);

    // Put via A: usable via B and C.
    assert_eq!(put_tenant(&a, "office", KEY_A).await.status, 201);
    for node in [&b, &c] {
        eventually(within, "tenant put on A usable elsewhere", || async {
            get(node, "/api/v1/patients/11", &token).await.status == 200
        })
        .await;
    }
    // Every replica now holds the decrypted record in memory; disabling via
    // B must reach A's and C's copies.
    assert_eq!(get(&a, "/api/v1/patients/11", &token).await.status, 200);
    let disabled = admin(&b, Method::POST, "/admin/v1/tenants/office/disable", None).await;
    assert_eq!(disabled.status, 200, "{disabled:?}");
    for node in [&a, &c] {
        eventually(within, "disable on B in force elsewhere", || async {
            let resp = get(node, "/api/v1/patients/11", &token).await;
            if resp.status == StatusCode::FORBIDDEN {
                resp.assert_problem(403, "tenant_disabled");
                true
            } else {
                false
            }
        })
        .await;
    }

    // Re-key via C: A and B send the new key upstream.
    let rekey = admin(
        &c,
        Method::PUT,
        "/admin/v1/tenants/office",
        Some(json!({ "customer_key": KEY_B, "enabled": true })),
    )
    .await;
    assert_eq!(rekey.status, 200, "{rekey:?}");
    for node in [&a, &b] {
        eventually(within, "re-key on C in force elsewhere", || async {
            mock.mock.clear_requests();
            get(node, "/api/v1/patients/11", &token).await.status == 200
                && mock.mock.requests().iter().all(|r| {
                    r.header_values("authorization") == vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")]
                })
        })
        .await;
    }

    // Cached reference GETs on A and B; a purge via C empties both.
    for node in [&a, &b] {
        let first = get(node, "/api/v1/preferences?PrefName=PracticeTitle", &token).await;
        assert_eq!(first.header("odgw-cache"), Some("miss"), "{first:?}");
        let second = get(node, "/api/v1/preferences?PrefName=PracticeTitle", &token).await;
        assert_eq!(second.header("odgw-cache"), Some("hit"), "{second:?}");
    }
    let purged = admin(&c, Method::DELETE, "/admin/v1/cache?tenant=office", None).await;
    assert_eq!(purged.status, 204, "{purged:?}");
    for node in [&a, &b] {
        eventually(within, "purge on C in force elsewhere", || async {
            let resp = get(node, "/api/v1/preferences?PrefName=PracticeTitle", &token).await;
            resp.header("odgw-cache") == Some("miss")
        })
        .await;
    }

    // Delete via A: gone everywhere.
    let deleted = admin(&a, Method::DELETE, "/admin/v1/tenants/office", None).await;
    assert_eq!(deleted.status, 204);
    for node in [&b, &c] {
        eventually(within, "delete on A in force elsewhere", || async {
            get(node, "/api/v1/patients/11", &token).await.status == StatusCode::FORBIDDEN
        })
        .await;
    }
    for node in [a, b, c] {
        node.kill9();
    }
    shared.drop_schema().await;
}

/// A `redis-server` of this test's own, on a port that stays the same
/// across a stop and a start.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.resume();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn readyz(node: &Served) -> Value {
    let req = Request::get("/readyz").body(Full::default()).unwrap();
    send(node.admin, req).await.json()
}

fn limiter_detail(readyz: &Value) -> Option<String> {
    readyz["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "limiter")?
        .get("detail")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

async fn metrics(node: &Served) -> String {
    let req = Request::get("/metrics").body(Full::default()).unwrap();
    String::from_utf8(send(node.admin, req).await.body.to_vec()).unwrap()
}

/// Two replicas pacing one practice at 1/s: all answered 200, arrivals at
/// Open Dental at least 900 ms apart.
async fn paced_burst(nodes: [&Served; 2], mock: &odgw_mock::RunningMock, token: &str, n: usize) {
    mock.mock.clear_requests();
    let calls = (0..n).map(|i| get(nodes[i % 2], "/api/v1/patients/11", token));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let mut seen = mock.mock.requests();
    assert!(seen.iter().all(|r| r.response_status == 200), "no 429");
    seen.sort_by_key(|r| r.received_at);
    for pair in seen.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(gap >= Duration::from_millis(900), "calls {gap:?} apart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_mid_load_paces_locally_and_shares_again_when_back() {
    let mock = throttled_mock().await;
    let mut redis = PrivateRedis::start();
    let shared = Shared::with_redis(redis.url());
    let limits = "tenant_rate = \"1/s\"\nqueue_timeout = \"30s\"";
    let a = shared.start("a", &mock.base_url(), limits);
    let b = shared.start("b", &mock.base_url(), limits);
    assert_eq!(put_tenant(&a, "practice", KEY_A).await.status, 201);
    let token = hs_token("loader", "practice");
    paced_burst([&a, &b], &mock, &token, 4).await;
    assert_eq!(limiter_detail(&readyz(&a).await), None);

    // Redis stops mid-load: requests keep being answered, paced in process.
    let load = {
        let (a, token) = (a.data, token.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..6 {
                let resp = get_at(a, "/api/v1/patients/11", &token).await;
                statuses.push(resp.status.as_u16());
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.stop();
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let ready = readyz(&a).await;
    assert_eq!(ready["ready"], true, "{ready}");
    let detail = limiter_detail(&ready).unwrap_or_default();
    assert!(detail.contains("pacing in process"), "{ready}");
    let text = metrics(&a).await;
    assert!(text.contains("odgw_limiter_degraded 1"), "{text}");
    assert!(
        !text.contains("odgw_limiter_redis_failures_total 0\n"),
        "{text}"
    );

    // Redis back: both replicas share the budget again, without a restart.
    redis.resume();
    for node in [&a, &b] {
        eventually(Duration::from_secs(10), "shared pacing resumes", || async {
            limiter_detail(&readyz(node).await).is_none()
        })
        .await;
    }
    // Wait out whatever the local fallback still has scheduled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    paced_burst([&a, &b], &mock, &token, 6).await;
    assert!(metrics(&a).await.contains("odgw_limiter_degraded 0"));
    a.kill9();
    b.kill9();
    shared.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_with_on_failure_closed_refuses_with_503_and_recovers() {
    let mock = plain_mock().await;
    let mut redis = PrivateRedis::start();
    let mut shared = Shared::with_redis(redis.url());
    shared.on_failure = "closed";
    let a = shared.start("a", &mock.base_url(), "tenant_rate = \"10/s\"");
    assert_eq!(put_tenant(&a, "practice", KEY_A).await.status, 201);
    let token = hs_token("svc", "practice");
    assert_eq!(get(&a, "/api/v1/patients/11", &token).await.status, 200);

    redis.stop();
    eventually(
        Duration::from_secs(5),
        "503 while redis is down",
        || async {
            let resp = get(&a, "/api/v1/patients/11", &token).await;
            if resp.status == StatusCode::SERVICE_UNAVAILABLE {
                resp.assert_problem(503, "limiter_unavailable");
                true
            } else {
                false
            }
        },
    )
    .await;
    let ready = readyz(&a).await;
    assert!(
        limiter_detail(&ready)
            .unwrap_or_default()
            .contains("limiter_unavailable"),
        "{ready}"
    );
    let before = mock.mock.requests().len();
    assert_eq!(get(&a, "/api/v1/patients/11", &token).await.status, 503);
    assert_eq!(
        mock.mock.requests().len(),
        before,
        "nothing reaches Open Dental unpaced"
    );

    redis.resume();
    eventually(
        Duration::from_secs(10),
        "served again once redis is back",
        || async { get(&a, "/api/v1/patients/11", &token).await.status == 200 },
    )
    .await;
    a.kill9();
    shared.drop_schema().await;
}

/// A TCP proxy in front of the real PostgreSQL that can cut every
/// connection and refuse new ones, which is what a server restart does to
/// its clients, without stopping the server other tests are using.
struct CuttableProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (up, connections) = (up.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client); // refused, as a restarting server does
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            up,
            connections,
            accept,
        }
    }

    /// Every open connection is dropped; new ones are refused.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: SocketAddr) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some(&addr.ip().to_string())).unwrap();
    url.set_port(Some(addr.port())).unwrap();
    url.to_string()
}

fn postgres_addr(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).unwrap();
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(5432);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_while_serving_keeps_cached_keys_and_admin_writes_fail_cleanly() {
    let mock = plain_mock().await;
    let shared = Shared::new();
    let proxy = CuttableProxy::start(postgres_addr(&shared.postgres_url)).await;
    let config = shared.node_config(
        "a",
        &mock.base_url(),
        &via(&shared.postgres_url, proxy.addr),
        "tenant_rate = \"unlimited\"",
    );
    let a = Served::start(&config).unwrap();
    assert_eq!(put_tenant(&a, "office", KEY_A).await.status, 201);
    let token = hs_token("svc", "office");
    assert_eq!(get(&a, "/api/v1/patients/11", &token).await.status, 200);
    // The put comes back through the change feed; once it is applied, the
    // replica must still hold the tenant's current record (re-read, not
    // just forgotten), or the outage below would find nothing to serve.
    eventually(
        Duration::from_secs(10),
        "the replica's own put applied from the change feed",
        || async {
            metrics(&a)
                .await
                .lines()
                .any(|l| l.starts_with("odgw_store_changes_applied_total ") && !l.ends_with(" 0"))
        },
    )
    .await;

    proxy.cut();
    // Reads keep being served from the keys this replica already holds.
    for _ in 0..5 {
        assert_eq!(get(&a, "/api/v1/patients/11", &token).await.status, 200);
    }
    // Admin writes are refused with a clear 503 and change nothing.
    put_tenant(&a, "newcomer", KEY_B)
        .await
        .assert_problem(503, "store_unavailable");
    admin(&a, Method::POST, "/admin/v1/tenants/office/disable", None)
        .await
        .assert_problem(503, "store_unavailable");
    let ready = readyz(&a).await;
    assert_eq!(ready["ready"], true, "{ready}");

    proxy.restore();
    eventually(
        Duration::from_secs(15),
        "admin writes succeed again",
        || async { put_tenant(&a, "newcomer", KEY_B).await.status == StatusCode::CREATED },
    )
    .await;
    // Nothing half-written: the refused disable never happened, the put
    // that succeeded is whole (its keys decrypt and reach Open Dental).
    let listed = admin(&a, Method::GET, "/admin/v1/tenants", None)
        .await
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["newcomer", "office"], "{listed}");
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["enabled"] == true));
    mock.mock.clear_requests();
    let newcomer = hs_token("svc", "newcomer");
    assert_eq!(get(&a, "/api/v1/patients/11", &newcomer).await.status, 200);
    assert_eq!(
        mock.mock.requests()[0].header_values("authorization"),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")]
    );
    a.kill9();
    shared.drop_schema().await;
}

fn odgw(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(ODGW)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("ODGW_MASTER_KEY")
        .env_remove("ODGW_POSTGRES_URL")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_exported_and_imported_into_postgres_serves_the_same_tokens() {
    let mock = plain_mock().await;
    let shared = Shared::new();
    // The single-node config of the process tests, same secrets.
    let sled_config = write_config(shared.root.path(), &mock.base_url(), [3; 32]);
    let single = Served::start(&sled_config).unwrap();
    for (id, key) in [("north", KEY_A), ("south", KEY_B)] {
        assert_eq!(put_tenant(&single, id, key).await.status, 201);
    }
    let tokens = [hs_token("svc", "north"), hs_token("svc", "south")];
    for token in &tokens {
        assert_eq!(get(&single, "/api/v1/patients/11", token).await.status, 200);
    }
    // sled belongs to the running gateway: export says so instead of guessing.
    let export = shared.root.path().join("tenants.jsonl");
    let out = odgw(
        &["store", "export", "--output", export.to_str().unwrap()],
        &sled_config,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    single.kill9();

    let out = odgw(
        &["store", "export", "--output", export.to_str().unwrap()],
        &sled_config,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().count(), 2, "{exported}");
    for key in [KEY_A, KEY_B, DEV_KEY] {
        assert!(!exported.contains(key), "a clear key in the export");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let pg_config = shared.node_config("a", &mock.base_url(), &shared.postgres_url, "");
    // A record moved to another tenant id does not open: refused, nothing written.
    let moved = exported.replacen("north", "west", 1);
    let bad = shared.root.path().join("moved.jsonl");
    std::fs::write(&bad, &moved).unwrap();
    let out = odgw(&["store", "import", bad.to_str().unwrap()], &pg_config);
    assert!(!out.status.success(), "a moved record was imported");

    let out = odgw(&["store", "import", export.to_str().unwrap()], &pg_config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 2 tenants"));

    let replica = Served::start(&pg_config).unwrap();
    let listed = admin(&replica, Method::GET, "/admin/v1/tenants", None)
        .await
        .json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    mock.mock.clear_requests();
    for token in &tokens {
        assert_eq!(
            get(&replica, "/api/v1/patients/11", token).await.status,
            200
        );
    }
    let seen: Vec<Vec<String>> = mock
        .mock
        .requests()
        .iter()
        .map(|r| {
            r.header_values("authorization")
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(
        seen,
        [
            vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")],
            vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")]
        ]
    );
    replica.kill9();
    shared.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_master_key_stops_before_binding_a_port() {
    let mock = plain_mock().await;
    let shared = Shared::new();
    let a = shared.start("a", &mock.base_url(), "");
    assert_eq!(put_tenant(&a, "office", KEY_A).await.status, 201);

    let config = shared.node_config("b", &mock.base_url(), &shared.postgres_url, "");
    let other_key = shared.root.path().join("b").join("master_key");
    std::fs::write(
        &other_key,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{}/master_key", shared.secrets().display()),
        &other_key.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let out = odgw(&["serve"], &config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the master key does not match"), "{stderr}");
    assert!(
        !stderr.contains("odgw listening"),
        "no port may be bound: {stderr}"
    );
    assert!(!stderr.contains(&shared.postgres_url), "{stderr}");
    a.kill9();
    shared.drop_schema().await;
}
