//! Shared helpers for odgw-auth's integration tests: fixture keys, token
//! signing with arbitrary headers, and a JWKS server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey};
use odgw_auth::{AuthSettings, Authenticator, IssuerSettings, KeySource, SecretBytes};
use serde_json::{json, Value};

pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/keys/");
pub const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

pub fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}{name}")).unwrap()
}

/// The private key of fixture `name` (`rsa`, `rsa2`, `ec256`, `ec384`, `ed25519`)
/// or the HMAC test secret (`hmac`).
pub fn encoding_key(name: &str) -> EncodingKey {
    if name == "hmac" {
        return EncodingKey::from_secret(HMAC_SECRET);
    }
    let pem = key_file(&format!("{name}.key"));
    if name.starts_with("rsa") {
        EncodingKey::from_rsa_pem(&pem).unwrap()
    } else if name.starts_with("ec") {
        EncodingKey::from_ec_pem(&pem).unwrap()
    } else {
        EncodingKey::from_ed_pem(&pem).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Signs `claims` under exactly `header` (nothing added), with `key` and `alg`.
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// Signs with fixture key `key_name` and a header `{"alg", "typ", "kid"?}`.
pub fn sign(alg: Algorithm, key_name: &str, kid: Option<&str>, claims: &Value) -> String {
    odgw_auth::install_crypto_providers();
    let mut header = json!({"alg": format!("{alg:?}"), "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign_raw(&header, claims, &encoding_key(key_name), alg)
}

/// Valid claims for `iss`, audience `odgw`, tenant `t1`, all three scopes.
pub fn claims(iss: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "aud": "odgw",
        "sub": "user-1",
        "tenant": "t1",
        "scope": "od:read od:write od:query",
        "iat": now,
        "exp": now + 600,
    })
}

/// A public JWK for fixture key `name`, with `kid` and optionally `alg`.
pub fn jwk(name: &str, alg: Algorithm, kid: &str, with_alg: bool) -> Value {
    odgw_auth::install_crypto_providers();
    let mut jwk = Jwk::from_encoding_key(&encoding_key(name), alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    if !with_alg {
        jwk.common.key_algorithm = None;
    }
    serde_json::to_value(jwk).unwrap()
}

pub fn settings() -> AuthSettings {
    AuthSettings {
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(3600),
        ..AuthSettings::default()
    }
}

pub fn issuer(iss: &str, algorithms: &[Algorithm], keys: KeySource) -> IssuerSettings {
    IssuerSettings {
        issuer: iss.to_owned(),
        audiences: vec!["odgw".to_owned(), "other".to_owned()],
        algorithms: algorithms.to_vec(),
        keys,
    }
}

pub fn hmac_source() -> KeySource {
    KeySource::HmacSecret(SecretBytes::new(HMAC_SECRET.to_vec()))
}

pub fn pem_source(name: &str) -> KeySource {
    KeySource::PublicKeyPem(key_file(&format!("{name}.pub.pem")))
}

/// One HS256 issuer `https://hs.test/`.
pub async fn hs_authenticator(settings: AuthSettings) -> Authenticator {
    Authenticator::new(
        settings,
        vec![issuer(
            "https://hs.test/",
            &[Algorithm::HS256],
            hmac_source(),
        )],
    )
    .await
    .unwrap()
}

struct ServerState {
    body: Mutex<String>,
    status: Mutex<StatusCode>,
    delay: Mutex<Duration>,
    hits: AtomicUsize,
    /// Requests that carried a query string (only a followed `jku` would).
    queried: AtomicUsize,
}

/// A JWKS endpoint whose document, status and delay tests can change and
/// whose hit count they can read.
pub struct JwksServer {
    pub url: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve_jwks(
    State(state): State<Arc<ServerState>>,
    uri: axum::http::Uri,
) -> impl IntoResponse {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if uri.query().is_some() {
        state.queried.fetch_add(1, Ordering::SeqCst);
    }
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = *state.status.lock().unwrap();
    let body = state.body.lock().unwrap().clone();
    (status, [("content-type", "application/json")], body)
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        let state = Arc::new(ServerState {
            body: Mutex::new(json!({ "keys": keys }).to_string()),
            status: Mutex::new(StatusCode::OK),
            delay: Mutex::new(Duration::ZERO),
            hits: AtomicUsize::new(0),
            queried: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}/jwks.json"),
            state,
            task,
        }
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.set_body(json!({ "keys": keys }).to_string());
    }

    pub fn set_body(&self, body: String) {
        *self.state.body.lock().unwrap() = body;
    }

    pub fn set_status(&self, status: u16) {
        *self.state.status.lock().unwrap() = StatusCode::from_u16(status).unwrap();
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn queried(&self) -> usize {
        self.state.queried.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
