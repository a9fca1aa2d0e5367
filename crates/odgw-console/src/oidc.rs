//! The OpenID Connect client: discovery, the authorization-code request with
//! PKCE (S256), the code exchange, and the ID token check.
//!
//! The ID token is verified by [`odgw_auth::Authenticator`], configured with
//! the one issuer, the client id as audience, the provider's JWKS and an
//! asymmetric-algorithm allow-list: the same strict checks as data-plane
//! tokens. The `nonce` must equal the one sent with this login.

use std::{sync::Arc, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use odgw_auth::{Algorithm, AuthSettings, Authenticator, IssuerSettings, KeySource};
use odgw_core::SecretString;
use serde::Deserialize;
use tokio::sync::Mutex;

/// How long one call to the identity provider may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or token response read.
const MAX_BODY: usize = 256 * 1024;
/// ID token algorithms odgw accepts (never HMAC with the client secret, never `none`).
const ALLOWED_ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// The identity provider as configured in `[console]`.
#[derive(Clone)]
pub struct OidcSettings {
    /// Compared exactly with the discovery document's and the ID token's `iss`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Where the provider sends the browser back; `None`: derived from the
    /// login request's `Host` (`http(s)://{host}/console/callback`).
    pub redirect_url: Option<String>,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

/// Why a login failed. Shown to the reviewer; never holds a token or secret.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached or answered unexpectedly ({0})")]
    Provider(String),
    #[error("the identity provider's answer was refused: {0}")]
    Refused(String),
}

impl LoginError {
    /// The text for the sign-in page, which anyone may open: a refusal
    /// names which check failed (texts of odgw's own); a provider failure
    /// says no more than that, since its detail (connection and library
    /// errors) is for odgw's log only.
    pub fn page_text(&self) -> String {
        match self {
            Self::Provider(_) => {
                "the identity provider cannot be reached or answered unexpectedly; the details are in odgw's log".to_owned()
            }
            Self::Refused(_) => self.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
}

/// A discovery document's endpoints, each checked by [`endpoint`], and the
/// ID token algorithms both sides accept.
#[derive(Debug)]
struct Endpoints {
    authorization_endpoint: url::Url,
    token_endpoint: http::Uri,
    jwks_uri: url::Url,
    algorithms: Vec<Algorithm>,
}

impl Discovery {
    /// Refuses a document for another issuer, or one that would send the
    /// client secret and code (token endpoint), the signing keys (JWKS) or
    /// the browser (authorization endpoint) anywhere but https.
    fn check(self, issuer: &str) -> Result<Endpoints, LoginError> {
        if self.issuer != issuer {
            return Err(LoginError::Refused(
                "the discovery document names another issuer".into(),
            ));
        }
        let token_endpoint = endpoint("token_endpoint", &self.token_endpoint)?
            .as_str()
            .parse()
            .map_err(|_| LoginError::Refused("token_endpoint is not a URL".into()))?;
        let algorithms = ALLOWED_ALGORITHMS
            .into_iter()
            .filter(|a| {
                self.id_token_signing_alg_values_supported.is_empty()
                    || self
                        .id_token_signing_alg_values_supported
                        .iter()
                        .any(|s| s == &format!("{a:?}"))
            })
            .collect();
        Ok(Endpoints {
            authorization_endpoint: endpoint(
                "authorization_endpoint",
                &self.authorization_endpoint,
            )?,
            token_endpoint,
            jwks_uri: endpoint("jwks_uri", &self.jwks_uri)?,
            algorithms,
        })
    }
}

/// `text` as the URL of an identity provider endpoint: https, or plain http
/// only to a loopback host (a provider in a test), and no credentials in
/// it. Plain http elsewhere would carry the client secret and the code in
/// clear, and let anyone on the path swap the signing keys.
fn endpoint(name: &str, text: &str) -> Result<url::Url, LoginError> {
    let refused = || LoginError::Refused(format!("{name} must be an https URL"));
    let url = url::Url::parse(text).map_err(|_| refused())?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(refused()),
    };
    let plain = url.username().is_empty() && url.password().is_none();
    match url.scheme() {
        "https" if plain => Ok(url),
        "http" if plain && loopback => Ok(url),
        _ => Err(refused()),
    }
}

/// What discovery found, with the verifier for the provider's ID tokens.
#[derive(Debug)]
struct Provider {
    authorization_endpoint: url::Url,
    token_endpoint: http::Uri,
    verifier: Authenticator,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The console's client of one OpenID provider. Discovery happens at the
/// first login (and again after a failed one), so odgw starts while the
/// provider is down.
#[derive(Debug)]
pub struct OidcClient {
    settings: OidcSettings,
    http: HttpClient,
    provider: Mutex<Option<Arc<Provider>>>,
}

/// What a successful login proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    pub subject: String,
    pub issuer: String,
    /// Scopes from the ID token (`scope`/`scp`) and the token response's `scope`.
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: String,
    #[serde(default)]
    scope: Option<String>,
}

impl OidcClient {
    pub fn new(settings: OidcSettings) -> Result<Self, LoginError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| LoginError::Provider(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            settings,
            http: Client::builder(TokioExecutor::new()).build(connector),
            provider: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    async fn provider(&self) -> Result<Arc<Provider>, LoginError> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        endpoint("the issuer", &self.settings.issuer)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let body = self
            .call(http::Request::get(url.as_str()), Bytes::new())
            .await?;
        let d: Discovery = serde_json::from_slice(&body)
            .map_err(|_| LoginError::Provider("discovery document is not valid".into()))?;
        let found = d.check(&self.settings.issuer)?;
        let verifier = Authenticator::new(
            AuthSettings {
                require_scopes: false,
                ..AuthSettings::default()
            },
            vec![IssuerSettings {
                issuer: self.settings.issuer.clone(),
                audiences: vec![self.settings.client_id.clone()],
                algorithms: found.algorithms,
                keys: KeySource::Jwks {
                    url: found.jwks_uri.into(),
                },
            }],
        )
        .await
        .map_err(|e| LoginError::Provider(e.to_string()))?;
        let provider = Arc::new(Provider {
            authorization_endpoint: found.authorization_endpoint,
            token_endpoint: found.token_endpoint,
            verifier,
        });
        *slot = Some(provider.clone());
        Ok(provider)
    }

    /// The provider URL to send the browser to.
    pub async fn authorize_url(
        &self,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<String, LoginError> {
        let provider = self.provider().await?;
        let mut url = provider.authorization_endpoint.clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &format!("openid {scope}"))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce_challenge(verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges `code` (with the PKCE verifier) and checks the ID token.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<LoggedIn, LoginError> {
        let provider = self.provider().await;
        let provider = match provider {
            Ok(p) => p,
            Err(e) => return Err(e),
        };
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .append_pair("client_id", &self.settings.client_id)
            .finish();
        // client_secret_basic: both halves form-urlencoded first (RFC 6749 §2.3.1).
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.settings.client_id),
            enc(self.settings.client_secret.expose())
        ));
        let request = http::Request::post(provider.token_endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        let body = self.call(request, Bytes::from(form)).await?;
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| LoginError::Refused("the token response has no id_token".into()))?;
        let principal = provider
            .verifier
            .verify(&answer.id_token)
            .await
            .map_err(|e| LoginError::Refused(format!("id token: {e}")))?;
        if claim_nonce(&answer.id_token).as_deref() != Some(nonce) {
            return Err(LoginError::Refused(
                "id token nonce does not match this login".into(),
            ));
        }
        let mut scopes = principal.scopes.clone();
        if let Some(granted) = answer.scope {
            scopes.extend(granted.split_whitespace().map(str::to_owned));
        }
        Ok(LoggedIn {
            subject: principal.subject.clone(),
            issuer: principal.issuer.clone(),
            scopes,
        })
    }

    /// Forgets what discovery found, so the next login fetches it again.
    pub async fn forget_provider(&self) {
        *self.provider.lock().await = None;
    }

    async fn call(
        &self,
        request: http::request::Builder,
        body: Bytes,
    ) -> Result<Bytes, LoginError> {
        let request = request
            .header(http::header::USER_AGENT, "odgw")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(body))
            .map_err(|e| LoginError::Provider(e.to_string()))?;
        let work = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| LoginError::Provider(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| LoginError::Provider("answer too large or cut off".into()))?
                .to_bytes();
            if !status.is_success() {
                return Err(LoginError::Refused(format!(
                    "the provider answered {status}"
                )));
            }
            Ok(body)
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| LoginError::Provider("timed out".into()))?
    }
}

/// `base64url(SHA-256(verifier))` (RFC 7636 S256).
pub fn pkce_challenge(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The `nonce` claim of a token whose signature was already verified.
fn claim_nonce(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("nonce")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(issuer: &str, base: &str) -> Discovery {
        Discovery {
            issuer: issuer.to_owned(),
            authorization_endpoint: format!("{base}/authorize"),
            token_endpoint: format!("{base}/token"),
            jwks_uri: format!("{base}/jwks"),
            id_token_signing_alg_values_supported: vec!["RS256".into(), "HS256".into()],
        }
    }

    #[test]
    fn discovery_endpoints_must_be_https_or_loopback() {
        let ok = discovery("https://idp.example/", "https://idp.example")
            .check("https://idp.example/")
            .unwrap();
        assert_eq!(ok.token_endpoint, "https://idp.example/token");
        assert_eq!(ok.algorithms, vec![Algorithm::RS256], "never HS256");
        assert!(discovery("http://127.0.0.1:9", "http://127.0.0.1:9")
            .check("http://127.0.0.1:9")
            .is_ok());
        assert!(discovery("https://idp.example/", "https://idp.example")
            .check("https://other.example/")
            .is_err());
        // The client secret and code, the signing keys, the browser: none
        // of them goes anywhere in clear.
        for field in ["authorization", "token", "jwks"] {
            let mut d = discovery("https://idp.example/", "https://idp.example");
            let plain = "http://idp.example/x".to_owned();
            match field {
                "authorization" => d.authorization_endpoint = plain,
                "token" => d.token_endpoint = plain,
                _ => d.jwks_uri = plain,
            }
            let e = d.check("https://idp.example/").unwrap_err();
            assert!(matches!(e, LoginError::Refused(_)), "{field}: {e}");
        }
        let mut d = discovery("https://idp.example/", "https://idp.example");
        d.authorization_endpoint = "javascript:alert(1)".into();
        assert!(d.check("https://idp.example/").is_err());
        assert!(endpoint("x", "https://user:pw@idp.example/token").is_err());
        assert!(endpoint("x", "http://localhost:8080/token").is_ok());
        assert!(endpoint("x", "http://10.0.0.1/token").is_err());
    }

    #[test]
    fn provider_failures_show_no_detail_on_the_page() {
        let e = LoginError::Provider("tcp connect error 10.1.2.3:443".into());
        assert!(!e.page_text().contains("10.1.2.3"));
        assert!(e.to_string().contains("10.1.2.3"), "the log keeps it");
        let r = LoginError::Refused("id token: bad signature".into());
        assert!(r.page_text().contains("bad signature"));
    }

    #[test]
    fn pkce_s256_is_base64url_of_sha256_without_padding() {
        // Expected value computed independently with Python's hashlib:
        // base64.urlsafe_b64encode(sha256(verifier).digest()).rstrip(b"=").
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r7vw3tqRNdJZ3Q"),
            "kSJwmrh4-L6ahTgrj1U9I6RaRk1hZHresbM1xBa2ooQ"
        );
    }
}
