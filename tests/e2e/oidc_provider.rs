//! A fake OpenID Connect provider for the console tests: discovery, an HTML
//! login form at `/authorize`, the authorization-code grant with PKCE (S256)
//! at `/token`, and the `rsa` fixture key as its JWKS (kid `k1`).
//!
//! It checks what a real provider checks (client, redirect URI, one-time
//! code, PKCE verifier) and records every `/authorize` and `/token` call so a
//! test can assert how the relying party behaved.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Form, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::support::{fixture, now};

/// The key id the provider signs with; `jwks-k1.json` publishes it.
pub const KID: &str = "k1";
/// The scope that makes a user an audit reviewer.
pub const REVIEWER_SCOPE: &str = "odgw:audit";

/// One `GET /authorize` as the provider received it.
#[derive(Debug, Clone)]
pub struct AuthorizeCall {
    pub params: BTreeMap<String, String>,
    /// `None` when the provider showed the login form; else why it refused.
    pub refused: Option<String>,
}

/// One `POST /token` as the provider received it.
#[derive(Debug, Clone)]
pub struct TokenCall {
    /// The form fields (`client_secret` replaced by `[redacted]`).
    pub form: BTreeMap<String, String>,
    /// The client id of an HTTP Basic `Authorization` header, if one was sent.
    pub basic_client_id: Option<String>,
    /// The `code_challenge` that `/authorize` recorded for this code.
    pub code_challenge: Option<String>,
    /// `None` when tokens were issued; else the OAuth error returned.
    pub refused: Option<String>,
}

/// What `/authorize` handed out, redeemed once at `/token`.
#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    username: String,
    scope: String,
}

#[derive(Debug, Default)]
struct Inner {
    redirect_uris: Vec<String>,
    codes: HashMap<String, Grant>,
    authorize_calls: Vec<AuthorizeCall>,
    token_calls: Vec<TokenCall>,
}

#[derive(Clone)]
struct Shared {
    issuer: String,
    client_id: String,
    client_secret: String,
    key: Arc<EncodingKey>,
    inner: Arc<Mutex<Inner>>,
}

/// A running fake provider; stops when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OidcProvider {
    /// Starts a provider on 127.0.0.1:0 that knows one confidential client.
    pub async fn start(client_id: &str, client_secret: &str) -> Self {
        odgw_auth::install_crypto_providers();
        let pem = std::fs::read(fixture("rsa.key")).unwrap();
        let key = EncodingKey::from_rsa_pem(&pem).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = Shared {
            issuer: format!("http://{addr}"),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            key: Arc::new(key),
            inner: inner.clone(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/login", post(login))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// The issuer URL (no trailing slash), as configured in `[console]`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers a redirect URI the client may use (exact match).
    pub fn allow_redirect_uri(&self, uri: &str) {
        self.inner.lock().unwrap().redirect_uris.push(uri.into());
    }

    pub fn authorize_calls(&self) -> Vec<AuthorizeCall> {
        self.inner.lock().unwrap().authorize_calls.clone()
    }

    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.inner.lock().unwrap().token_calls.clone()
    }
}

/// base64url(SHA-256(verifier)), the S256 code challenge of RFC 7636.
pub fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><h1>{t}</h1>{body}</body></html>",
            t = odgw_console::html::esc(title)
        )),
    )
        .into_response()
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{}/authorize", s.issuer),
        "token_endpoint": format!("{}/token", s.issuer),
        "jwks_uri": format!("{}/jwks", s.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "grant_types_supported": ["authorization_code"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", REVIEWER_SCOPE],
    }))
}

async fn jwks() -> Response {
    let body = std::fs::read(fixture("jwks-k1.json")).unwrap();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The authorize parameters carried through the login form.
const CARRIED: [&str; 6] = [
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
];

fn check_authorize(s: &Shared, p: &BTreeMap<String, String>) -> Result<(), String> {
    let field = |name: &str| p.get(name).map(String::as_str).unwrap_or("");
    if field("response_type") != "code" {
        return Err("response_type must be code".into());
    }
    if field("client_id") != s.client_id {
        return Err(format!("unknown client_id {:?}", field("client_id")));
    }
    let redirect = field("redirect_uri");
    if !s
        .inner
        .lock()
        .unwrap()
        .redirect_uris
        .iter()
        .any(|r| r == redirect)
    {
        return Err(format!("redirect_uri {redirect:?} is not registered"));
    }
    if !field("scope").split(' ').any(|x| x == "openid") {
        return Err("scope must include openid".into());
    }
    if field("state").is_empty() {
        return Err("state is required".into());
    }
    if field("code_challenge_method") != "S256" {
        return Err("code_challenge_method must be S256 (PKCE is required)".into());
    }
    let challenge = field("code_challenge");
    if challenge.len() != 43 {
        return Err("code_challenge must be base64url(sha256(verifier)), 43 characters".into());
    }
    Ok(())
}

async fn authorize(
    State(s): State<Shared>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let checked = check_authorize(&s, &params);
    s.inner.lock().unwrap().authorize_calls.push(AuthorizeCall {
        params: params.clone(),
        refused: checked.clone().err(),
    });
    if let Err(why) = checked {
        // Never redirect on a bad client or redirect URI (RFC 6749 §4.1.2.1).
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            &format!("<p id=\"error\">{}</p>", odgw_console::html::esc(&why)),
        );
    }
    let mut hidden = String::new();
    for name in CARRIED {
        if let Some(v) = params.get(name) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                odgw_console::html::esc(v)
            ));
        }
    }
    page(
        StatusCode::OK,
        "Fake OpenID provider: sign in",
        &format!(
            "<form id=\"login-form\" method=\"post\" action=\"/login\">{hidden}\
             <label for=\"username\">Username</label> \
             <input id=\"username\" name=\"username\" autocomplete=\"off\"> \
             <button id=\"login\" type=\"submit\">Sign in</button></form>"
        ),
    )
}

async fn login(State(s): State<Shared>, Form(f): Form<BTreeMap<String, String>>) -> Response {
    let mut params = f.clone();
    params.insert("response_type".into(), "code".into());
    params.insert("code_challenge_method".into(), "S256".into());
    if let Err(why) = check_authorize(&s, &params) {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            &format!("<p id=\"error\">{}</p>", odgw_console::html::esc(&why)),
        );
    }
    let username = f.get("username").cloned().unwrap_or_default();
    if username.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "<p id=\"error\">username is required</p>",
        );
    }
    // Users named no-audit* are real users without the reviewer scope.
    let scope = if username.starts_with("no-audit") {
        "openid".to_string()
    } else {
        format!("openid {REVIEWER_SCOPE}")
    };
    let code = random_token();
    let grant = Grant {
        client_id: params["client_id"].clone(),
        redirect_uri: params["redirect_uri"].clone(),
        code_challenge: params["code_challenge"].clone(),
        nonce: params.get("nonce").cloned(),
        username,
        scope,
    };
    s.inner.lock().unwrap().codes.insert(code.clone(), grant);
    let mut target = url::Url::parse(&params["redirect_uri"]).unwrap();
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &params["state"]);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, target.to_string())],
    )
        .into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `client_id:client_secret` from an HTTP Basic header (RFC 6749 §2.3.1
/// form-encodes both before base64; the test client's values need none).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let basic = basic_credentials(&headers);
    let mut recorded = form.clone();
    if recorded.contains_key("client_secret") {
        recorded.insert("client_secret".into(), "[redacted]".into());
    }
    let code = form.get("code").cloned().unwrap_or_default();
    // A code is redeemed at most once, even by a request that fails.
    let grant = s.inner.lock().unwrap().codes.remove(&code);
    let result = issue(&s, basic.as_ref(), &form, grant.as_ref());
    s.inner.lock().unwrap().token_calls.push(TokenCall {
        form: recorded,
        basic_client_id: basic.map(|(id, _)| id),
        code_challenge: grant.map(|g| g.code_challenge),
        refused: result.as_ref().err().map(|(_, e, d)| format!("{e}: {d}")),
    });
    match result {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response(),
        Err((status, error, description)) => oauth_error(status, error, &description),
    }
}

type TokenError = (StatusCode, &'static str, String);

fn issue(
    s: &Shared,
    basic: Option<&(String, String)>,
    form: &BTreeMap<String, String>,
    grant: Option<&Grant>,
) -> Result<Value, TokenError> {
    let field = |name: &str| form.get(name).map(String::as_str);
    let (client_id, secret) = match (basic, field("client_id"), field("client_secret")) {
        (Some((id, secret)), _, None) => (id.as_str(), secret.as_str()),
        (None, Some(id), Some(secret)) => (id, secret),
        (Some(_), _, Some(_)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "use one client authentication method".into(),
            ))
        }
        _ => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication required".into(),
            ))
        }
    };
    if client_id != s.client_id || secret != s.client_secret {
        return Err((
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "wrong client credentials".into(),
        ));
    }
    if field("grant_type") != Some("authorization_code") {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code".into(),
        ));
    }
    let Some(grant) = grant else {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or already used code".into(),
        ));
    };
    if grant.client_id != client_id {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code was issued to another client".into(),
        ));
    }
    if field("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request".into(),
        ));
    }
    let Some(verifier) = field("code_verifier") else {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier is required (PKCE)".into(),
        ));
    };
    // RFC 7636 §4.1: 43 to 128 unreserved characters.
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed || s256(verifier) != grant.code_challenge {
        return Err((
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match code_challenge".into(),
        ));
    }
    let now = now();
    let mut claims = json!({
        "iss": s.issuer,
        "aud": s.client_id,
        "sub": grant.username,
        "iat": now,
        "exp": now + 300,
        "scope": grant.scope,
    });
    if let Some(nonce) = &grant.nonce {
        claims["nonce"] = json!(nonce);
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let id_token = jsonwebtoken::encode(&header, &claims, &s.key).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?;
    Ok(json!({
        "access_token": random_token(),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
        "scope": grant.scope,
    }))
}
