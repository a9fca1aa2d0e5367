//! Operability: configuration reload (POST /admin/v1/reload and SIGHUP), TLS
//! on the listeners with certificate rotation, and HTTP/2 on the data plane.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use odgw::{
    config::{Config, ConfigSource},
    listener::ConnectionLimits,
    Gateway,
};
use odgw_mock::{KeyPair, MockConfig, MockUpstream, RunningMock};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
};

use crate::support::*;

const NEW_ISSUER: &str = "https://new.test/";
const HS_SECRET: &[u8] = b"ops-test-hs256-secret-0123456789abcdef";
const NEW_SECRET: &[u8] = b"ops-test-new-issuer-secret-9876543210";
const PATIENT: &str = "/api/v1/patients/11";
const PREF: &str = "/api/v1/preferences?PrefName=ProgramVersion";
/// `[limits]` for tests that are not about limits.
const UNLIMITED: &str = "[limits]\ntenant_rate = \"unlimited\"\nsubject_rate = \"unlimited\"\n";

fn mock_config() -> MockConfig {
    let mut mock = MockConfig::test_defaults();
    mock.keys.push(KeyPair::new(DEV_KEY, KEY_A));
    mock
}

/// Secrets and a config file in a temp dir, for an in-process gateway or a
/// child `odgw serve`.
struct Files {
    _tmp: TempDir,
    root: PathBuf,
    config: PathBuf,
    upstream: String,
}

impl Files {
    fn new(upstream: String) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let s = root.join("secrets");
        std::fs::create_dir_all(&s).unwrap();
        let master = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        std::fs::write(s.join("master_key"), master).unwrap();
        std::fs::write(s.join("developer_key"), DEV_KEY).unwrap();
        std::fs::write(s.join("admin_token"), ADMIN_TOKEN).unwrap();
        std::fs::write(s.join("hs256"), HS_SECRET).unwrap();
        std::fs::write(s.join("hs256-new"), NEW_SECRET).unwrap();
        Self {
            config: root.join("odgw.toml"),
            _tmp: tmp,
            root,
            upstream,
        }
    }

    /// The config text: `server` goes into `[server]`, `extra` at the end.
    fn render(&self, server: &str, extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "2s"
{server}

[upstream]
base_url = "{base}"
developer_key_file = "{s}/developer_key"
connect_timeout = "1s"
timeout = "3s"

[[auth.issuers]]
issuer = "{HS_ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["HS256"]
secret_file = "{s}/hs256"

[admin]
token_file = "{s}/admin_token"

[store]
path = "{root}/keys"
master_key_file = "{s}/master_key"

[audit]
path = "{root}/audit"
write_timeout = "1s"

{extra}
"#,
            base = self.upstream,
            s = self.root.join("secrets").display(),
            root = self.root.display(),
        )
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    fn new_issuer(&self) -> String {
        format!(
            "[[auth.issuers]]\nissuer = \"{NEW_ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n",
            self.root.join("secrets/hs256-new").display()
        )
    }
}

/// An HS256 token for tenant "a" from `issuer`, signed with `secret`.
fn token(issuer: &str, secret: &[u8]) -> String {
    odgw_auth::install_crypto_providers();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &default_claims(issuer),
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn old_token() -> String {
    token(HS_ISSUER, HS_SECRET)
}

fn new_token() -> String {
    token(NEW_ISSUER, NEW_SECRET)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn send<C>(client: &Client<C, Full<Bytes>>, req: Request<Full<Bytes>>) -> (Version, Resp)
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let resp = client.request(req).await.unwrap();
    let version = resp.version();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        version,
        Resp {
            status,
            headers,
            body,
        },
    )
}

fn get_req(url: String, token: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap()
}

fn admin_req(
    admin: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Request<Full<Bytes>> {
    let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

/// An in-process gateway started from a config file, so it can reload it.
struct Ops {
    files: Files,
    data: SocketAddr,
    admin: SocketAddr,
    client: HttpClient,
    _mock: RunningMock,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Ops {
    async fn start(server: &str, extra: &str) -> Self {
        Self::start_with(server, extra, ConnectionLimits::default()).await
    }

    async fn start_with(server: &str, extra: &str, limits: ConnectionLimits) -> Self {
        let mock = MockUpstream::spawn(mock_config()).await.unwrap();
        let files = Files::new(mock.base_url());
        files.write(&files.render(server, extra));
        let env: BTreeMap<String, String> = BTreeMap::new();
        let config = Config::load(Some(&files.config), &env).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::build(config, &env)
            .await
            .unwrap()
            .with_connection_limits(limits);
        gateway.set_config_source(ConfigSource::new(Some(files.config.clone()), Arc::new(env)));
        let data_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (data, admin) = (
            data_listener.local_addr().unwrap(),
            admin_listener.local_addr().unwrap(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(data_listener, admin_listener, async {
            let _ = rx.await;
        }));
        let ops = Self {
            files,
            data,
            admin,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _mock: mock,
            shutdown: Some(tx),
            task: Some(task),
        };
        if !server.contains("admin_tls_cert_file") {
            let (_, put) = ops
                .admin(
                    Method::PUT,
                    "/admin/v1/tenants/a",
                    Some(json!({ "customer_key": KEY_A })),
                )
                .await;
            assert!(put.status.is_success(), "{put:?}");
        }
        ops
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        send(
            &self.client,
            get_req(format!("http://{}{path}", self.data), token),
        )
        .await
        .1
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (Version, Resp) {
        send(&self.client, admin_req(self.admin, method, path, body)).await
    }

    async fn reload(&self) -> Resp {
        self.admin(Method::POST, "/admin/v1/reload", None).await.1
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn reload_adds_an_issuer_without_a_restart_and_keeps_the_cache() {
    let ops = Ops::start("", UNLIMITED).await;
    let (old, new) = (old_token(), new_token());
    assert_eq!(ops.get(PATIENT, &old).await.status, StatusCode::OK);
    ops.get(PATIENT, &new)
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(ops.get(PREF, &old).await.header("odgw-cache"), Some("miss"));
    assert_eq!(ops.get(PREF, &old).await.header("odgw-cache"), Some("hit"));

    let text = ops
        .files
        .render("", &format!("{UNLIMITED}\n{}", ops.files.new_issuer()));
    ops.files.write(&text);
    let answer = ops.reload().await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["reloaded"], true);
    assert_eq!(strings(&body["changed"]), ["auth.issuers"]);
    assert!(strings(&body["restart_required"]).is_empty(), "{body}");

    assert_eq!(ops.get(PATIENT, &new).await.status, StatusCode::OK);
    assert_eq!(ops.get(PATIENT, &old).await.status, StatusCode::OK);
    // [cache] did not change: the same cache, with its entry, serves on.
    assert_eq!(ops.get(PREF, &new).await.header("odgw-cache"), Some("hit"));

    // The same file again: nothing changes, and the answer says so.
    let again = ops.reload().await.json();
    assert!(strings(&again["changed"]).is_empty(), "{again}");
    let (_, metrics) = ops.admin(Method::GET, "/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(metrics.contains("odgw_config_reloads_total 2"), "{metrics}");
    ops.stop().await;
}

#[tokio::test]
async fn a_broken_config_is_refused_with_the_reason_and_the_old_one_serves_on() {
    let ops = Ops::start("", UNLIMITED).await;
    let (old, new) = (old_token(), new_token());
    // A new issuer (which would be applied) next to an unknown key (which refuses all of it).
    let text = ops.files.render(
        "bogus = 1",
        &format!("{UNLIMITED}\n{}", ops.files.new_issuer()),
    );
    ops.files.write(&text);
    let answer = ops.reload().await;
    answer.assert_problem(400, "bad_request");
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("server.bogus: unknown key"), "{detail}");

    assert_eq!(ops.get(PATIENT, &old).await.status, StatusCode::OK);
    ops.get(PATIENT, &new)
        .await
        .assert_problem(401, "invalid_token");

    // An issuer whose secret file is missing is refused as well.
    let missing = ops.files.new_issuer().replace("hs256-new", "no-such-file");
    ops.files
        .write(&ops.files.render("", &format!("{UNLIMITED}\n{missing}")));
    let answer = ops.reload().await;
    answer.assert_problem(400, "bad_request");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("auth.issuers[1]"),
        "{answer:?}"
    );
    assert_eq!(ops.get(PATIENT, &old).await.status, StatusCode::OK);

    // Refusals are counted, audited, and need the admin token.
    let (_, metrics) = ops.admin(Method::GET, "/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("odgw_config_reload_failures_total 2"),
        "{metrics}"
    );
    let records = audit_lines(&ops.files.root.join("audit"));
    let reloads: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "config.reload")
        .collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert!(reloads.iter().all(|r| r["status"] == 400), "{reloads:?}");
    let unauthenticated = Request::post(format!("http://{}/admin/v1/reload", ops.admin))
        .body(Full::default())
        .unwrap();
    send(&ops.client, unauthenticated)
        .await
        .1
        .assert_problem(401, "unauthorized");
    ops.stop().await;
}

#[tokio::test]
async fn a_limits_change_takes_effect_and_restart_only_keys_are_reported() {
    let limits = |burst: u32| {
        format!("[limits]\ntenant_rate = \"unlimited\"\nsubject_rate = \"1/h\"\nsubject_burst = {burst}\n")
    };
    let ops = Ops::start("", &limits(2)).await;
    let t = old_token();
    for _ in 0..2 {
        assert_eq!(ops.get(PATIENT, &t).await.status, StatusCode::OK);
    }
    ops.get(PATIENT, &t)
        .await
        .assert_problem(429, "rate_limited");

    // A new subject burst, plus two keys that only a restart can apply.
    let text = ops
        .files
        .render("", &limits(4))
        .replace("timeout = \"3s\"", "timeout = \"4s\"")
        .replace("/keys\"", "/keys-moved\"");
    ops.files.write(&text);
    let body = ops.reload().await.json();
    assert_eq!(
        strings(&body["changed"]),
        ["limits.subject_burst"],
        "{body}"
    );
    assert_eq!(
        strings(&body["restart_required"]),
        ["store.path", "upstream.timeout"],
        "{body}"
    );
    // The new limiter: a fresh burst of 4, then 429. The store is still the
    // one odgw started with (tenant "a" resolves).
    for _ in 0..4 {
        assert_eq!(ops.get(PATIENT, &t).await.status, StatusCode::OK);
    }
    ops.get(PATIENT, &t)
        .await
        .assert_problem(429, "rate_limited");
    ops.stop().await;
}

#[tokio::test]
async fn the_tenant_budget_survives_a_reload_that_keeps_the_pacer() {
    let limits = |queue_timeout: &str, depth: u32| {
        format!(
            "[limits]\ntenant_rate = \"1/h\"\ntenant_burst = 1\nqueue_timeout = \"{queue_timeout}\"\nqueue_depth = {depth}\nsubject_rate = \"unlimited\"\n"
        )
    };
    let ops = Ops::start("", &limits("200ms", 8)).await;
    let t = old_token();
    assert_eq!(ops.get(PATIENT, &t).await.status, StatusCode::OK);
    assert_eq!(
        ops.get(PATIENT, &t).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // queue_timeout changes, queue_depth does not: the pacer (and the spent
    // budget) is kept, so the reload hands Open Dental no fresh burst.
    ops.files.write(&ops.files.render("", &limits("300ms", 8)));
    let body = ops.reload().await.json();
    assert_eq!(
        strings(&body["changed"]),
        ["limits.queue_timeout"],
        "{body}"
    );
    assert_eq!(
        ops.get(PATIENT, &t).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A new queue_depth means a new pacer, which starts with a full budget (documented).
    ops.files.write(&ops.files.render("", &limits("300ms", 16)));
    assert_eq!(ops.reload().await.status, StatusCode::OK);
    assert_eq!(ops.get(PATIENT, &t).await.status, StatusCode::OK);
    ops.stop().await;
}

#[tokio::test]
async fn sighup_reloads_a_running_odgw_serve() {
    let mock = MockUpstream::spawn(mock_config()).await.unwrap();
    let files = Files::new(mock.base_url());
    files.write(&files.render("", UNLIMITED));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_odgw"))
        .args(["serve", "--config"])
        .arg(&files.config)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .env_remove("ODGW_MASTER_KEY")
        .env_remove("ODGW_ADMIN_TOKEN")
        .env_remove("ODGW_DEVELOPER_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (data, admin) = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "odgw listening" {
                let data: SocketAddr = v["data"].as_str().unwrap().parse().unwrap();
                let admin: SocketAddr = v["admin"].as_str().unwrap().parse().unwrap();
                return (data, admin);
            }
        }
        panic!("odgw exited before listening");
    })
    .await
    .expect("odgw serve did not start");
    // Keep draining stderr so the child never blocks on a full pipe.
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (_, put) = send(
        &client,
        admin_req(
            admin,
            Method::PUT,
            "/admin/v1/tenants/a",
            Some(json!({ "customer_key": KEY_A })),
        ),
    )
    .await;
    assert!(put.status.is_success(), "{put:?}");
    let url = format!("http://{data}{PATIENT}");
    let new = new_token();
    send(&client, get_req(url.clone(), &new))
        .await
        .1
        .assert_problem(401, "invalid_token");

    files.write(&files.render("", &format!("{UNLIMITED}\n{}", files.new_issuer())));
    let pid = child.id().unwrap().to_string();
    let kill = tokio::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = send(&client, get_req(url.clone(), &new)).await.1.status;
        if status == StatusCode::OK || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::OK, "the new issuer was not picked up");
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP ended odgw");
    assert_eq!(
        send(&client, get_req(url, &old_token())).await.1.status,
        StatusCode::OK
    );
    let reloaded = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if logs
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("configuration reloaded"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reloaded.is_ok(),
        "no reload log line: {:?}",
        logs.lock().unwrap()
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn http2_with_prior_knowledge_on_the_plain_data_plane() {
    let gw = TestGateway::start().await;
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(true);
    let h2: HttpClient = builder.build_http();
    let (version, resp) = send(&h2, get_req(gw.url(PATIENT), &gw.token(json!({})))).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(resp.status, StatusCode::OK, "{resp:?}");
    assert_eq!(resp.json()["PatNum"], 11);
    // Refusals are the same problem responses over h2.
    let (version, resp) = send(&h2, get_req(gw.url(PATIENT), "not-a-jwt")).await;
    assert_eq!(version, Version::HTTP_2);
    resp.assert_problem(401, "invalid_token");
}

// ---------------------------------------------------------------- TLS

/// A self-signed certificate for 127.0.0.1 and its key, as PEM and DER.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Cert {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    Cert {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        der: generated.cert.der().clone(),
    }
}

fn install(cert: &Cert, dir: &Path, name: &str) -> String {
    std::fs::write(dir.join(format!("{name}.crt")), &cert.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &cert.key_pem).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let prefix = if name == "admin" { "admin_" } else { "" };
    format!(
        "{prefix}tls_cert_file = \"{}\"\n{prefix}tls_key_file = \"{}\"\n",
        c.display(),
        k.display()
    )
}

fn client_tls(trusted: &[&Cert]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn https_client(trusted: &[&Cert], h2: bool) -> HttpsClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(trusted))
        .https_only();
    let mut client = Client::builder(TokioExecutor::new());
    if h2 {
        client.http2_only(true);
        client.build(builder.enable_http2().build())
    } else {
        client.build(builder.enable_http1().build())
    }
}

/// Completes a TLS handshake with `addr` and returns the certificate it served.
async fn served_certificate(addr: SocketAddr, trusted: &[&Cert]) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(trusted)));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn tls_serves_http1_and_h2_and_rotates_the_certificate_on_reload() {
    let (first, second) = (self_signed(), self_signed());
    let certs = tempfile::tempdir().unwrap();
    let server = install(&first, certs.path(), "data");
    let ops = Ops::start(&server, UNLIMITED).await;
    let url = format!("https://127.0.0.1:{}{PATIENT}", ops.data.port());
    let t = old_token();

    let (version, resp) = send(&https_client(&[&first], false), get_req(url.clone(), &t)).await;
    assert_eq!(
        (version, resp.status),
        (Version::HTTP_11, StatusCode::OK),
        "{resp:?}"
    );
    let (version, resp) = send(&https_client(&[&first], true), get_req(url.clone(), &t)).await;
    assert_eq!(
        (version, resp.status),
        (Version::HTTP_2, StatusCode::OK),
        "{resp:?}"
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = ops
        .client
        .request(get_req(format!("http://{}{PATIENT}", ops.data), &t))
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let both = [&first, &second];
    assert_eq!(
        served_certificate(ops.data, &both).await,
        first.der.as_ref()
    );

    // Rotate: new files in place, then reload. New connections get the new certificate.
    install(&second, certs.path(), "data");
    let body = ops.reload().await.json();
    assert_eq!(
        strings(&body["changed"]),
        ["server.tls_cert_file"],
        "{body}"
    );
    assert_eq!(
        served_certificate(ops.data, &both).await,
        second.der.as_ref()
    );
    let (_, resp) = send(&https_client(&[&second], true), get_req(url.clone(), &t)).await;
    assert_eq!(resp.status, StatusCode::OK);

    // A certificate that does not parse is refused; the current one stays.
    std::fs::write(
        certs.path().join("data.crt"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .unwrap();
    let answer = ops.reload().await;
    answer.assert_problem(400, "bad_request");
    let detail = answer.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("server.tls_cert_file"), "{detail}");
    assert_eq!(
        served_certificate(ops.data, &both).await,
        second.der.as_ref()
    );
    // A key that belongs to another certificate is refused too.
    std::fs::write(certs.path().join("data.crt"), &first.cert_pem).unwrap();
    let answer = ops.reload().await;
    answer.assert_problem(400, "bad_request");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{answer:?}"
    );
    assert_eq!(
        served_certificate(ops.data, &both).await,
        second.der.as_ref()
    );
    ops.stop().await;
}

#[tokio::test]
async fn a_tls_client_that_never_sends_a_client_hello_is_cut_off() {
    let cert = self_signed();
    let certs = tempfile::tempdir().unwrap();
    let server = format!(
        "{}{}",
        install(&cert, certs.path(), "data"),
        install(&cert, certs.path(), "admin")
    );
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ConnectionLimits::default()
    };
    let ops = Ops::start_with(&server, UNLIMITED, limits).await;

    // The admin listener speaks TLS too.
    let (version, health) = send(
        &https_client(&[&cert], false),
        Request::get(format!("https://127.0.0.1:{}/healthz", ops.admin.port()))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!((version, health.status), (Version::HTTP_11, StatusCode::OK));
    let mut put = admin_req(
        ops.admin,
        Method::PUT,
        "/admin/v1/tenants/a",
        Some(json!({ "customer_key": KEY_A })),
    );
    *put.uri_mut() = format!("https://127.0.0.1:{}/admin/v1/tenants/a", ops.admin.port())
        .parse()
        .unwrap();
    let (_, put) = send(&https_client(&[&cert], false), put).await;
    assert!(put.status.is_success(), "{put:?}");

    let started = Instant::now();
    // One client sends nothing at all, the other the first bytes of a record.
    let mut silent = tokio::net::TcpStream::connect(ops.data).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(ops.admin).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    for stream in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("the server sent {n} bytes to a client that sent no ClientHello"),
            Err(_) => panic!("a connection without a ClientHello was kept open"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    // A real client still gets through.
    let (_, resp) = send(
        &https_client(&[&cert], true),
        get_req(
            format!("https://127.0.0.1:{}{PATIENT}", ops.data.port()),
            &old_token(),
        ),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
}
