//! A real gateway on 127.0.0.1:0 with the mock Open Dental API in-process,
//! real sled files and audit segments in a temp dir, and real signed tokens.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use odgw::{config::Config, Gateway};
use odgw_mock::{KeyPair, MockConfig, MockUpstream, RunningMock};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const DEV_KEY: &str = "devKEY0000000001";
pub const HS_ISSUER: &str = "https://hs.test/";
pub const RS_ISSUER: &str = "https://rs.test/";
pub const AUDIENCE: &str = "odgw";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Customer keys of the standard test tenants; the mock accepts them with DEV_KEY.
pub const KEY_A: &str = "custKeyAlpha0001";
pub const KEY_B: &str = "custKeyBravo0002";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/keys")
        .join(name)
}

/// Options for one test gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra TOML appended to the generated config (sections not already present).
    pub extra_toml: String,
    /// Replacements for keys of the generated config, as `ODGW_SECTION__KEY` env overrides.
    pub env: BTreeMap<String, String>,
    pub mock: MockConfig,
    /// Create tenants "a" and "b" (keys KEY_A, KEY_B) before returning.
    pub tenants: bool,
    /// Reuse this directory (restart tests).
    pub dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        let mut mock = MockConfig::test_defaults();
        mock.keys.push(KeyPair::new(DEV_KEY, KEY_A));
        mock.keys.push(KeyPair::new(DEV_KEY, KEY_B));
        let mut env = BTreeMap::new();
        // Tests send bursts; pacing has its own tests.
        env.insert("ODGW_LIMITS__TENANT_RATE".into(), "unlimited".into());
        Self {
            extra_toml: String::new(),
            env,
            mock,
            tenants: true,
            dir: None,
        }
    }
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

/// A running gateway and its mock upstream.
pub struct TestGateway {
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub mock: RunningMock,
    pub root: PathBuf,
    /// The gateway's audit log, for the write-failure test seam.
    pub audit: std::sync::Arc<odgw_audit::FileAuditLog>,
    _tmp: Option<TempDir>,
    hs_secret: Vec<u8>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an odgw problem+json error with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {code}, got {} {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("odgw-error"), Some(code), "Odgw-Error header");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let body = self.json();
        assert_eq!(body["code"], code);
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], "about:blank");
        assert!(body["detail"].is_string());
        assert_eq!(
            body["request_id"].as_str(),
            self.header("x-request-id"),
            "problem request_id matches X-Request-Id"
        );
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let mock = MockUpstream::spawn(opts.mock.clone()).await.unwrap();
        let (tmp, root) = match &opts.dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir().unwrap();
                let root = tmp.path().to_path_buf();
                (Some(tmp), root)
            }
        };
        let hs_secret = b"hs256-secret-for-the-e2e-tests-0123456789".to_vec();
        let secrets = root.join("secrets");
        if !secrets.join("master_key").exists() {
            let master = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
            write(&secrets.join("master_key"), &format!("{master}\n"));
        }
        write(&secrets.join("developer_key"), &format!("{DEV_KEY}\n"));
        write(&secrets.join("admin_token"), &format!("{ADMIN_TOKEN}\n"));
        std::fs::write(secrets.join("hs256"), &hs_secret).unwrap();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "2s"

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

[[auth.issuers]]
issuer = "{RS_ISSUER}"
audiences = ["{AUDIENCE}", "other"]
algorithms = ["RS256"]
public_key_file = "{rsa}"

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
            base = mock.base_url(),
            s = secrets.display(),
            rsa = fixture("rsa.pub.pem").display(),
            root = root.display(),
            extra = opts.extra_toml,
        );
        let config = Config::from_toml_str(&toml, &opts.env).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::build(config, &opts.env).await.unwrap();
        let audit = gateway.audit.clone();
        let data_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let data = data_listener.local_addr().unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(data_listener, admin_listener, async {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let gw = Self {
            data,
            admin,
            mock,
            root,
            audit,
            _tmp: tmp,
            hs_secret,
            shutdown: Some(tx),
            task: Some(task),
            client,
        };
        if opts.tenants {
            gw.put_tenant("a", KEY_A).await;
            gw.put_tenant("b", KEY_B).await;
        }
        gw
    }

    /// Stops the gateway gracefully and waits for it. The returned guard
    /// keeps the temp dir (store, audit) alive for inspection.
    pub async fn stop(mut self) -> (PathBuf, Option<TempDir>) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        (self.root.clone(), self._tmp.take())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.data, path)
    }

    /// An HS256 token from the test issuer with these claims merged over
    /// valid defaults (sub "alice", tenant "a", od:read od:write).
    pub fn token(&self, overrides: Value) -> String {
        odgw_auth::install_crypto_providers();
        let claims = merge(default_claims(HS_ISSUER), overrides);
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.hs_secret),
        )
        .unwrap()
    }

    /// The HS256 secret, for tests that forge headers by hand.
    pub fn hs_secret(&self) -> &[u8] {
        &self.hs_secret
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Resp {
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// GET `path` on the data plane with a bearer token (if any).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut b = Request::get(self.url(path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        self.send(b.body(Full::default()).unwrap()).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.admin, path))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
        self.send(b.body(Full::new(body)).unwrap()).await
    }

    /// The Prometheus text of the admin listener's `/metrics` (asserted 200).
    pub async fn metrics(&self) -> String {
        let resp = self
            .send(
                Request::get(format!("http://{}/metrics", self.admin))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        String::from_utf8_lossy(&resp.body).into_owned()
    }

    pub async fn put_tenant(&self, id: &str, customer_key: &str) -> Resp {
        let resp = self
            .admin(
                Method::PUT,
                &format!("/admin/v1/tenants/{id}"),
                Some(json!({ "customer_key": customer_key })),
            )
            .await;
        assert!(resp.status.is_success(), "put tenant {id}: {resp:?}");
        resp
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn default_claims(issuer: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "tenant": "a",
        "scope": "od:read od:write",
        "iat": now,
        "exp": now + 600,
    })
}

/// `overrides` keys replace `base` keys; a `null` override removes the key.
pub fn merge(mut base: Value, overrides: Value) -> Value {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), overrides) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
    base
}

/// Signs claims with an RSA fixture key.
pub fn rs256_token(key_file: &str, kid: Option<&str>, claims: &Value) -> String {
    odgw_auth::install_crypto_providers();
    let pem = std::fs::read(fixture(key_file)).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// Sends raw bytes on a fresh connection and reads until the server closes
/// it or `wait` passes; returns everything received.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines of every audit segment under `dir`, in seq order.
pub fn audit_lines(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// True when `needle` occurs in any file below `dir`.
pub fn dir_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if let Some(found) = dir_contains(&path, needle) {
                return Some(found);
            }
        } else {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Some(path);
            }
        }
    }
    None
}

/// Runs `odgw audit query ARGS` against `gw`'s admin API and returns its
/// stdout (tokio's Command: the gateway serves on the test's runtime).
pub async fn cli_query(gw: &TestGateway, args: &[&str]) -> Vec<u8> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_odgw"))
        .args(["audit", "query"])
        .args(args)
        .args(["--admin-url", &format!("http://{}", gw.admin)])
        .env("ODGW_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "odgw audit query {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
