//! `odgw token mint`: HS256 tokens for development and tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use odgw_core::SecretString;
use serde_json::json;

/// What goes into a minted token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    /// One tenant gives a string claim; several give an array.
    pub tenants: Vec<String>,
    pub scope: String,
    pub ttl: Duration,
}

/// Signs `request` with the HS256 `secret`.
pub fn mint(secret: &SecretString, request: &MintRequest) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let tenant = match request.tenants.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let claims = json!({
        "iss": request.issuer,
        "aud": request.audience,
        "sub": request.subject,
        "tenant": tenant,
        "scope": request.scope,
        "iat": now,
        "nbf": now,
        "exp": now + request.ttl.as_secs(),
    });
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}
