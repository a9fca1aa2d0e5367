//! Admin bearer-token check, in constant time.

use aws_lc_rs::digest;
use axum::{extract::State, middleware::Next};
use odgw_core::{ErrorCode, GatewayError, RequestContext, Response, SecretString};
use subtle::ConstantTimeEq;

use crate::AppState;

/// The admin token, kept only as its SHA-256 so that comparing it takes the
/// same time whatever the candidate's length or content.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

impl AdminToken {
    pub fn new(token: &SecretString) -> Self {
        Self(sha256(token.expose().as_bytes()))
    }

    /// True when `candidate` is the admin token.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        bool::from(sha256(candidate).ct_eq(&self.0))
    }
}

/// Refuses `/admin/` requests without `Authorization: Bearer <admin token>`.
pub(crate) async fn require_admin(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let context = match RequestContext::of(&req, "admin auth") {
        Ok(context) => context,
        Err(bug) => return bug.into_response(),
    };
    let mut values = req.headers().get_all(http::header::AUTHORIZATION).iter();
    let candidate = match (values.next(), values.next()) {
        (Some(value), None) => value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer ")),
        _ => None,
    };
    match candidate {
        Some(token) if state.token.matches(token) => next.run(req).await,
        _ => GatewayError::new(ErrorCode::Unauthorized, "admin token required")
            .into_response(context.id()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_exact_token() {
        let t = AdminToken::new(&SecretString::new("s3cret-admin"));
        assert!(t.matches(b"s3cret-admin"));
        assert!(!t.matches(b"s3cret-admin "));
        assert!(!t.matches(b"s3cret"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "AdminToken([redacted])");
    }
}
