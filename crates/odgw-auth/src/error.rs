//! Errors of this crate and their mapping to odgw's error codes.

use jsonwebtoken::Algorithm;
use odgw_core::{ErrorCode, GatewayError};

/// Why a token was refused. Every variant becomes 401 `invalid_token`; the
/// message is the client-visible `detail` and never contains token content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unsupported critical header")]
    CriticalHeader,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("missing key id")]
    MissingKeyId,
    #[error("unknown key id")]
    UnknownKeyId,
    /// The issuer's JWKS has never been fetched successfully.
    #[error("signing keys unavailable")]
    KeysUnavailable,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token lifetime too long")]
    LifetimeTooLong,
    #[error("audience not allowed")]
    AudienceNotAllowed,
    #[error("missing {0} claim")]
    MissingClaim(&'static str),
    #[error("invalid {0} claim")]
    InvalidClaim(&'static str),
}

impl From<AuthError> for GatewayError {
    fn from(error: AuthError) -> Self {
        GatewayError::new(ErrorCode::InvalidToken, error.to_string())
    }
}

/// Why the auth configuration cannot be used. Reported at startup, before
/// any port is bound; messages name the issuer but never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    #[error("auth: at least one issuer is required")]
    NoIssuers,
    #[error("auth: tenant_claim must not be empty")]
    EmptyTenantClaim,
    #[error("auth: jwks refresh intervals and timeout must be greater than zero")]
    ZeroInterval,
    #[error("auth issuer: issuer must not be empty")]
    EmptyIssuer,
    #[error("auth issuer {0:?}: configured more than once")]
    DuplicateIssuer(String),
    #[error("auth issuer {0:?}: audiences must list at least one non-empty audience")]
    NoAudiences(String),
    #[error("auth issuer {0:?}: algorithms must list at least one algorithm")]
    NoAlgorithms(String),
    #[error("auth issuer {issuer:?}: algorithm {algorithm:?} cannot be used with {keys}")]
    AlgorithmKeyMismatch {
        issuer: String,
        algorithm: Algorithm,
        keys: &'static str,
    },
    #[error("auth issuer {0:?}: a public key file serves one key type; algorithms mix RSA, EC and EdDSA")]
    MixedKeyFamilies(String),
    #[error("auth issuer {0:?}: public key is not a valid PEM public key for its algorithms")]
    InvalidPublicKey(String),
    #[error("auth issuer {0:?}: hmac secret is empty")]
    EmptySecret(String),
    #[error("auth issuer {0:?}: jwks_url must be an http:// or https:// url with a host")]
    InvalidJwksUrl(String),
    #[error("auth: cannot build the jwks http client: {0}")]
    HttpClient(String),
}
