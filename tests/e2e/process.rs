//! The `odgw` binary as an operator runs it: config checking, startup
//! failures, the CLI, kill -9 and restart, and what reaches disk and logs.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::*;

pub(crate) const ODGW: &str = env!("CARGO_BIN_EXE_odgw");

/// Writes secrets and a config for a child `odgw serve` into `root`.
pub(crate) fn write_config(root: &Path, upstream: &str, master: [u8; 32]) -> PathBuf {
    let s = root.join("secrets");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(
        s.join("master_key"),
        base64::engine::general_purpose::STANDARD.encode(master),
    )
    .unwrap();
    std::fs::write(s.join("developer_key"), DEV_KEY).unwrap();
    std::fs::write(s.join("admin_token"), ADMIN_TOKEN).unwrap();
    std::fs::write(s.join("hs256"), "process-test-hs256-secret-0123456789").unwrap();
    let config = root.join("odgw.toml");
    std::fs::write(
        &config,
        format!(
            r#"{head}
[store]
path = "{root}/keys"
master_key_file = "{s}/master_key"
[limits]
tenant_rate = "unlimited"
subject_rate = "unlimited"
[audit]
path = "{root}/audit"
"#,
            head = config_head(&s, upstream, ""),
            s = s.display(),
            root = root.display(),
        ),
    )
    .unwrap();
    config
}

/// The sections every child `odgw serve` of these tests starts with:
/// listeners on port 0 (plus `server`, more `[server]` keys), the upstream,
/// the HS256 issuer [`hs_token`] signs for, and the admin token, read from
/// the files [`write_config`] puts in `secrets`.
pub(crate) fn config_head(secrets: &Path, upstream: &str, server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{server}
[upstream]
base_url = "{upstream}"
developer_key_file = "{s}/developer_key"
[[auth.issuers]]
issuer = "{HS_ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["HS256"]
secret_file = "{s}/hs256"
[admin]
token_file = "{s}/admin_token"
"#,
        s = secrets.display(),
    )
}

/// The mock Open Dental, accepting DEV_KEY with KEY_A as Open Dental would.
pub(crate) async fn mock_knowing_key_a() -> odgw_mock::RunningMock {
    let mut mock_config = odgw_mock::MockConfig::test_defaults();
    mock_config
        .keys
        .push(odgw_mock::KeyPair::new(DEV_KEY, KEY_A));
    odgw_mock::MockUpstream::spawn(mock_config).await.unwrap()
}

/// A child `odgw serve` whose stderr (JSON logs) is collected.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) logs: Arc<Mutex<Vec<String>>>,
    pub(crate) data: SocketAddr,
    pub(crate) admin: SocketAddr,
}

/// A test that panics half-way must not leave its `odgw` running.
impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Served {
    pub(crate) fn start(config: &Path) -> Result<Self, String> {
        let mut child = Command::new(ODGW)
            .args(["serve", "--config"])
            .arg(config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "debug")
            .env_remove("ODGW_MASTER_KEY")
            .env_remove("ODGW_ADMIN_TOKEN")
            .env_remove("ODGW_DEVELOPER_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "odgw listening" {
                        let _ = tx.send(Ok((
                            v["data"].as_str().unwrap().parse(),
                            v["admin"].as_str().unwrap().parse(),
                        )));
                    }
                } else {
                    let _ = tx.send(Err(line.clone()));
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok((Ok(data), Ok(admin)))) => Ok(Self {
                child,
                logs,
                data,
                admin,
            }),
            Ok(Err(line)) => {
                let _ = child.wait();
                Err(line)
            }
            other => {
                let _ = child.kill();
                Err(format!("odgw did not start: {other:?}"))
            }
        }
    }

    /// Waits (bounded) until a log line contains `needle`: INFO and DEBUG
    /// lines reach stderr in batches, a few milliseconds late.
    pub(crate) fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn kill9(mut self) -> Vec<String> {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        self.logs.lock().unwrap().clone()
    }
}

pub(crate) fn cli(args: &[&str], admin: SocketAddr, stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(ODGW)
        .args(args)
        .args(["--admin-url", &format!("http://{admin}")])
        .env("ODGW_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// `odgw tenant put <id>` with KEY_A on stdin, which must succeed.
fn put_tenant_with_cli(admin: SocketAddr, id: &str) {
    let out = cli(&["tenant", "put", id], admin, Some(KEY_A));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn hs_token(sub: &str, tenant: &str) -> String {
    odgw_auth::install_crypto_providers();
    let claims = merge(
        default_claims(HS_ISSUER),
        json!({"sub": sub, "tenant": tenant}),
    );
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"process-test-hs256-secret-0123456789"),
    )
    .unwrap()
}

async fn get(addr: SocketAddr, path: &str, token: &str) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Default::default())
        .unwrap();
    client.request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn kill_9_and_restart_keep_tenants_and_no_secret_reaches_disk_or_logs() {
    let mock = mock_knowing_key_a().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &mock.base_url(), [3; 32]);

    let served = Served::start(&config).unwrap();
    // The CLI reads the key from stdin, never argv.
    let out = cli(
        &[
            "tenant",
            "put",
            "clinic-7",
            "--customer-key-file",
            "-",
            "--name",
            "Clinic 7",
        ],
        served.admin,
        Some(&format!("{KEY_A}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!shown.contains(KEY_A), "{shown}");
    assert!(shown.contains(&KEY_A[KEY_A.len() - 4..]));

    let token = hs_token("bob", "clinic-7");
    assert_eq!(get(served.data, "/api/v1/patients/11", &token).await, 200);
    served.wait_for_log("odgw::access");
    let logs = served.kill9();

    // Nothing secret on disk or in the debug logs.
    let all_logs = logs.join("\n");
    assert!(
        all_logs.contains("odgw::access") || all_logs.contains("\"request\""),
        "access log missing"
    );
    for needle in [KEY_A, DEV_KEY, token.as_str(), ADMIN_TOKEN] {
        assert!(!all_logs.contains(needle), "{needle} found in logs");
        for dir in ["keys", "audit"] {
            assert_eq!(
                dir_contains(&tmp.path().join(dir), needle.as_bytes()),
                None,
                "{needle} found on disk"
            );
        }
    }

    // Restart after SIGKILL: the tenant is there and still decrypts.
    let served = Served::start(&config).unwrap();
    let out = cli(&["tenant", "show", "clinic-7"], served.admin, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Clinic 7"));
    assert_eq!(get(served.data, "/api/v1/patients/11", &token).await, 200);
    let seen = mock.mock.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|r| r.header_values("authorization") == vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")]));
    served.kill9();
}

#[tokio::test]
async fn a_wrong_master_key_stops_startup_with_a_clear_message() {
    let mock = odgw_mock::MockUpstream::spawn(odgw_mock::MockConfig::test_defaults())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &mock.base_url(), [1; 32]);
    let served = Served::start(&config).unwrap();
    put_tenant_with_cli(served.admin, "t1");
    served.kill9();

    write_config(tmp.path(), &mock.base_url(), [2; 32]);
    let out = Command::new(ODGW)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("master key"), "{stderr}");
    assert!(
        !stderr.contains("odgw listening"),
        "no port may be bound: {stderr}"
    );
}

#[test]
fn check_config_reports_every_problem_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\nmax_body = \"lots\"\nfoo = 1\n[limits]\nqueue_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = Command::new(ODGW)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    for key in [
        "server.listen",
        "server.max_body",
        "server.foo",
        "limits.queue_timeout",
    ] {
        assert!(stderr.contains(key), "{key} missing from {stderr}");
    }

    let good = write_config(tmp.path(), "http://127.0.0.1:9/api/v1", [5; 32]);
    let out = Command::new(ODGW)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration is valid"));
    assert!(!stdout.contains(DEV_KEY) && !stdout.contains(ADMIN_TOKEN));
}

#[test]
fn token_mint_makes_a_token_the_gateway_accepts_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("hs");
    std::fs::write(&secret, "mint-secret-0123456789\n").unwrap();
    let out = Command::new(ODGW)
        .args(["token", "mint", "--secret-file"])
        .arg(&secret)
        .args([
            "--sub", "svc", "--tenant", "a", "--tenant", "b", "--scope", "od:read", "--ttl", "5m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    odgw_auth::install_crypto_providers();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["odgw"]);
    let data = jsonwebtoken::decode::<Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_secret(b"mint-secret-0123456789"),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["tenant"], json!(["a", "b"]));
    assert_eq!(data.claims["sub"], "svc");
    let lifetime = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_leaves_a_record_for_every_answered_request() {
    let mock = mock_knowing_key_a().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &mock.base_url(), [4; 32]);
    let served = Served::start(&config).unwrap();
    put_tenant_with_cli(served.admin, "a");

    let token = hs_token("loader", "a");
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (answered, token, data) = (answered.clone(), token.clone(), served.data);
        workers.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            for i in 0..500 {
                let id = format!("load-{w}-{i}");
                let req = http::Request::get(format!("http://{data}/api/v1/patients/11"))
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-request-id", &id)
                    .body(Default::default())
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => answered.lock().unwrap().push(id),
                    Ok(resp) => panic!("unexpected status {}", resp.status()),
                    Err(_) => return, // the gateway is gone
                }
            }
        }));
    }
    // Kill mid-load, once a good number of answers are in.
    for _ in 0..300 {
        if answered.lock().unwrap().len() >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.kill9();
    for w in workers {
        w.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 60, "load ran: {}", answered.len());
    assert!(answered.len() < 2000, "the kill came mid-load");

    // Restart (which repairs any torn tail), then check every answered request.
    let served = Served::start(&config).unwrap();
    served.kill9();
    let out = Command::new(ODGW)
        .args(["audit", "verify", "--dir"])
        .arg(tmp.path().join("audit"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chain verifies: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines = audit_lines(&tmp.path().join("audit"));
    let recorded: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "request")
        .filter_map(|l| l["request_id"].as_str())
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "answered without a durable record: {missing:?}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mock = odgw_mock::MockUpstream::spawn(odgw_mock::MockConfig::test_defaults())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &mock.base_url(), [6; 32]);
    let mut served = Served::start(&config).unwrap();
    let pid = served.child.id().to_string();
    // Core dumps are off before any secret is read, and cannot be re-enabled.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(code) = served.child.try_wait().unwrap() {
            exited = Some(code);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = exited.expect("odgw exited after SIGTERM");
    assert!(code.success(), "exit status {code:?}");
    // The log reader thread drains stderr after the exit.
    let mut logs = String::new();
    for _ in 0..40 {
        logs = served.logs.lock().unwrap().join("\n");
        if logs.contains("shutdown complete") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(logs.contains("shutdown complete"), "{logs}");
}

/// Two processes appending to one audit directory would break its chain for
/// good; the second refuses to start, naming the first, and the first serves
/// on with an intact trail.
#[tokio::test]
async fn a_second_odgw_on_the_same_audit_directory_refuses_to_start() {
    let mock = mock_knowing_key_a().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), &mock.base_url(), [4; 32]);
    let first = Served::start(&config).unwrap();
    put_tenant_with_cli(first.admin, "clinic-4");
    let token = hs_token("bob", "clinic-4");
    assert_eq!(get(first.data, "/api/v1/patients/11", &token).await, 200);

    // Its own key store, the same audit directory.
    let text = std::fs::read_to_string(&config).unwrap();
    let second_text = text.replace("/keys\"", "/keys-second\"");
    assert_ne!(text, second_text);
    let second_config = tmp.path().join("second.toml");
    std::fs::write(&second_config, second_text).unwrap();
    let refused = match Served::start(&second_config) {
        Err(line) => line,
        Ok(_) => panic!("a second odgw started on the same audit directory"),
    };
    assert!(refused.contains("in use by another odgw"), "{refused}");
    assert!(
        refused.contains(&format!("pid {}", first.child.id())),
        "{refused}"
    );

    assert_eq!(get(first.data, "/api/v1/patients/11", &token).await, 200);
    first.kill9();
    let report = odgw_audit::verify(&tmp.path().join("audit")).unwrap();
    assert!(report.ok, "{report:?}");
    // The tenant put and both requests, nothing from the refused start.
    assert_eq!(report.records, 3, "{report:?}");
}

/// SIGTERM while the start waits on a dependency (here a "PostgreSQL" that
/// accepts connections and never answers) ends the start at once, with exit
/// status 0 and no port bound, instead of after the connect timeout.
#[tokio::test]
async fn sigterm_during_a_slow_start_ends_it_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "http://127.0.0.1:9/api/v1", [7; 32]);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://postgres@{}/test", silent.local_addr().unwrap());
    let log_path = tmp.path().join("stderr.log");
    let mut child = Command::new(ODGW)
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--log-format", "json"])
        .env("ODGW_STORE__BACKEND", "postgres")
        .env("ODGW_POSTGRES_URL", &url)
        .env("ODGW_POSTGRES__CONNECT_TIMEOUT", "60s")
        .env_remove("ODGW_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    // The start has reached the store once it connects; hold the connection.
    // (Bounded: an odgw that ends before connecting must fail the test.)
    silent.set_nonblocking(true).unwrap();
    let mut held = None;
    for _ in 0..400 {
        match silent.accept() {
            Ok((stream, _)) => {
                held = Some(stream);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(code) = child.try_wait().unwrap() {
                    panic!("odgw ended before reaching the store: {code:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let _held = held.expect("odgw reached the store within 20 s");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(code) = child.try_wait().unwrap() {
            exited = Some(code);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(code) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("odgw still starting 10 s after SIGTERM");
    };
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(code.success(), "exit status {code:?}\n{logs}");
    assert!(logs.contains("shutdown requested while starting"), "{logs}");
    assert!(!logs.contains("odgw listening"), "{logs}");
}

/// The README's first command, as a newcomer runs it (on free ports).
#[tokio::test]
async fn serve_dev_with_the_mock_works_offline_out_of_the_box() {
    use std::os::unix::fs::PermissionsExt;
    let cwd = tempfile::tempdir().unwrap();
    let log_path = cwd.path().join("stderr.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(ODGW)
        .args(["serve", "--dev", "--mock-upstream"])
        .current_dir(cwd.path())
        .env("ODGW_SERVER__LISTEN", "127.0.0.1:0")
        .env("ODGW_SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .env_remove("ODGW_MASTER_KEY")
        .env_remove("ODGW_ADMIN_TOKEN")
        .env_remove("ODGW_DEVELOPER_KEY")
        .env_remove("ODGW_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut data, mut token) = (None, None);
    while data.is_none() || token.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("dev banner");
        if let Some(rest) = line.trim().strip_prefix("data plane : http://") {
            data = rest.split('/').next().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("export TOKEN=") {
            token = Some(rest.to_owned());
        }
    }
    let data: SocketAddr = data.unwrap().parse().unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{data}/api/v1/patients/11"))
        .header("authorization", format!("Bearer {}", token.unwrap()))
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    // The access line reaches the file with the next batch of log lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut logs = String::new();
    while !logs.contains("odgw::access") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        logs = std::fs::read_to_string(&log_path).unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let patient: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(patient["LName"], "Allowed");
    // Logs to a file carry no terminal colour codes.
    assert!(logs.contains("odgw::access"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in a log file: {logs:?}"
    );
    let dir = cwd.path().join("odgw-dev");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for secret in ["master_key", "admin_token", "hs256.secret"] {
        let mode = std::fs::metadata(dir.join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
}
