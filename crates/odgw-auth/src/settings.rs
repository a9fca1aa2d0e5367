//! What the caller (config loading) hands to [`crate::Authenticator::new`].

use std::{fmt, time::Duration};

use jsonwebtoken::Algorithm;
use zeroize::Zeroizing;

/// Raw key bytes that must never be printed: an HMAC secret.
///
/// The buffer is zeroed when dropped; `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are used as they are (no decoding).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }

    /// The secret bytes. Call sites are the places to audit for leaks.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret holds no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of bytes in the secret.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(value: Vec<u8>) -> Self {
        Self::new(value)
    }
}

/// Where an issuer's verification keys come from (exactly one per issuer).
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Shared secret for HS256/HS384/HS512; its bytes are the key.
    HmacSecret(SecretBytes),
    /// One public key in PEM (SPKI / PKCS#8 public): RSA, EC P-256/P-384 or Ed25519.
    PublicKeyPem(Vec<u8>),
    /// A JWKS document fetched over HTTP(S), cached and refreshed.
    Jwks {
        /// `http://` or `https://` URL of the JWKS document.
        url: String,
    },
}

/// One trusted token issuer (`[[auth.issuers]]`).
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// Expected `iss`, compared exactly (byte for byte).
    pub issuer: String,
    /// The token's `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// Allow-list of signature algorithms; never taken from the token.
    pub algorithms: Vec<Algorithm>,
    /// Verification keys.
    pub keys: KeySource,
}

/// Settings shared by all issuers (`[auth]`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Name of the claim listing the tenants a token grants (string or array).
    pub tenant_claim: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Longest accepted token lifetime: `exp - iat`, or `exp - now` without `iat`.
    pub max_lifetime: Duration,
    /// Whether [`crate::check_scope`] enforces `od:read` / `od:write` / `od:query`.
    pub require_scopes: bool,
    /// How often the background task refetches every JWKS.
    pub jwks_refresh_interval: Duration,
    /// Shortest time between two fetches of one JWKS triggered by an unknown `kid`.
    pub jwks_min_refetch_interval: Duration,
    /// Deadline of one JWKS fetch (connect, headers and body).
    pub jwks_fetch_timeout: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            tenant_claim: "tenant".to_owned(),
            leeway: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(24 * 3600),
            require_scopes: true,
            jwks_refresh_interval: Duration::from_secs(300),
            jwks_min_refetch_interval: Duration::from_secs(30),
            jwks_fetch_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_print() {
        let s = SecretBytes::new(b"super-secret-hmac-key".to_vec());
        assert_eq!(format!("{s:?}"), "[redacted]");
        let source = KeySource::HmacSecret(s);
        assert!(!format!("{source:?}").contains("super-secret"));
    }
}
