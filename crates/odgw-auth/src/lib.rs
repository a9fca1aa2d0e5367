//! JWT authentication for odgw (SPEC §2 `[auth]`, §4 client authentication,
//! tenant selection and scopes).
//!
//! - [`Authenticator`]: the configured issuers ([`IssuerSettings`], keys from
//!   a [`KeySource`]: HMAC secret, PEM public key or JWKS) and
//!   [`Authenticator::verify`], which turns a bearer token into an
//!   [`odgw_core::Principal`] or an [`AuthError`]. JWKS are cached, refreshed
//!   in the background and refetched (coalesced, rate limited) for unknown
//!   `kid`s.
//! - [`select_tenant`]: the token's tenant claim plus `Odgw-Tenant` → one
//!   [`odgw_core::TenantId`].
//! - [`required_scope`] / [`check_scope`]: `od:read`, `od:write`, `od:query`.
//! - [`AuthLayer`] / [`AuthService`]: the tower layer doing all of the above
//!   for each request, answering 401/403 problem responses itself.
//! - [`register_metrics`]: `odgw_jwks_*` and `odgw_token_verifications_*`,
//!   read from the authenticator in use at each scrape.
//!
//! A token that verified once is remembered (by its SHA-256) until it
//! expires, so repeated requests skip the signature check; see `verified`.
//!
//! Verification is strict: the algorithm comes from the issuer's allow-list
//! (the token's `alg` must be in it, `none` never is), the key from the
//! issuer's configuration (`jku`, `x5u`, `jwk` and `x5c` are never read),
//! any `crit` header is refused, and tokens over [`MAX_TOKEN_BYTES`] are
//! refused before decoding.

mod authenticator;
mod error;
mod jwks;
mod layer;
mod metrics;
mod scope;
mod settings;
mod tenant;
mod token;
mod verified;

pub use authenticator::Authenticator;
pub use error::{AuthError, AuthSetupError};
pub use layer::{AuthLayer, AuthService};
pub use metrics::register_metrics;
pub use scope::{check_scope, required_scope, SCOPE_QUERY, SCOPE_READ, SCOPE_WRITE};
pub use settings::{AuthSettings, IssuerSettings, KeySource, SecretBytes};
pub use tenant::select_tenant;
/// The token pre-parser, for `fuzz/` and its corpus replay only.
#[doc(hidden)]
pub use token::UnverifiedToken;
pub use token::MAX_TOKEN_BYTES;

/// Re-exported so callers name algorithms without depending on jsonwebtoken.
pub use jsonwebtoken::Algorithm;

/// Installs aws-lc-rs as the process-wide crypto provider of jsonwebtoken
/// (which panics at first use without exactly one) and of rustls.
///
/// Idempotent: a provider already installed (by an earlier call or by the
/// application) is left in place. [`Authenticator::new`] calls it too.
pub fn install_crypto_providers() {
    // Err only means a provider is already installed, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
