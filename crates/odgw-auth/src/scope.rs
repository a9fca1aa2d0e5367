//! Which scope a request needs (SPEC §4 "Scopes").

use http::Method;
use odgw_core::{ErrorCode, GatewayError, Principal};

/// Reading data: GET and HEAD.
pub const SCOPE_READ: &str = "od:read";
/// Changing data: POST, PUT, PATCH, DELETE, and any other method.
pub const SCOPE_WRITE: &str = "od:write";
/// Raw SQL over patient data: anything under `/queries`.
pub const SCOPE_QUERY: &str = "od:query";

/// Whether `api_path` (the path after `/api/v1`) is under `/queries`.
///
/// Open Dental runs on ASP.NET, whose routing ignores case, empty segments
/// and percent-encoding of ordinary characters, so the first segment is
/// compared after undoing all of those: `/QUERIES/shortquery`,
/// `//queries`, `/%71ueries` and `/queries/` all count.
fn is_queries_path(api_path: &str) -> bool {
    let Some(first) = api_path.split('/').find(|s| !s.is_empty()) else {
        return false;
    };
    let decoded = percent_encoding::percent_decode_str(first).decode_utf8_lossy();
    // Trailing dots and spaces are dropped by some Windows/IIS path handling.
    let trimmed = decoded.trim().trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case("queries")
}

/// The scope a request needs: `od:query` for anything under `/queries`
/// (whatever the method), else `od:read` for GET/HEAD and `od:write` for
/// every other method (unknown methods get the stricter scope).
///
/// `api_path` is the URI path after `/api/v1`, e.g. `/queries/ShortQuery`.
pub fn required_scope(method: &Method, api_path: &str) -> &'static str {
    if is_queries_path(api_path) {
        SCOPE_QUERY
    } else if method == Method::GET || method == Method::HEAD {
        SCOPE_READ
    } else {
        SCOPE_WRITE
    }
}

/// Refuses with 403 `insufficient_scope` (naming the scope) when
/// `require_scopes` is on and the principal lacks [`required_scope`].
pub fn check_scope(
    principal: &Principal,
    method: &Method,
    api_path: &str,
    require_scopes: bool,
) -> Result<(), GatewayError> {
    if !require_scopes {
        return Ok(());
    }
    let scope = required_scope(method, api_path);
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(GatewayError::new(
            ErrorCode::InsufficientScope,
            format!("token lacks scope {scope}"),
        )
        .with_scope(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odgw_core::Identity;

    fn principal(scopes: &[&str]) -> Principal {
        Principal::new(Identity {
            subject: "u".into(),
            issuer: "i".into(),
            tenants: vec![],
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: 0,
        })
    }

    #[test]
    fn method_rules() {
        assert_eq!(required_scope(&Method::GET, "/patients"), SCOPE_READ);
        assert_eq!(required_scope(&Method::HEAD, "/patients/1"), SCOPE_READ);
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(required_scope(&m, "/patients"), SCOPE_WRITE, "{m}");
        }
        for m in [Method::OPTIONS, Method::TRACE, Method::CONNECT] {
            assert_eq!(required_scope(&m, "/patients"), SCOPE_WRITE, "{m}");
        }
        let custom = Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(required_scope(&custom, "/patients"), SCOPE_WRITE);
    }

    #[test]
    fn queries_need_query_scope_whatever_the_spelling() {
        for path in [
            "/queries",
            "/queries/",
            "/queries/ShortQuery",
            "/QUERIES/shortquery",
            "/Queries/SHORTQUERY/",
            "//queries/ShortQuery",
            "/%71ueries/ShortQuery",
            "/%51UERIES",
            "/queries./ShortQuery",
            "queries",
        ] {
            for m in [Method::PUT, Method::POST, Method::GET] {
                assert_eq!(required_scope(&m, path), SCOPE_QUERY, "{m} {path}");
            }
        }
        for path in ["/queriesx", "/patients/queries", "/", ""] {
            assert_ne!(required_scope(&Method::PUT, path), SCOPE_QUERY, "{path}");
        }
    }

    #[test]
    fn write_is_neither_needed_nor_enough_for_queries() {
        let writer = principal(&["od:read", "od:write"]);
        let err = check_scope(&writer, &Method::PUT, "/queries/ShortQuery", true).unwrap_err();
        assert_eq!(err.code, ErrorCode::InsufficientScope);
        assert_eq!(err.scope.as_deref(), Some(SCOPE_QUERY));
        let querier = principal(&["od:query"]);
        assert!(check_scope(&querier, &Method::PUT, "/QUERIES/ShortQuery/", true).is_ok());
        assert!(check_scope(&querier, &Method::POST, "/queries", true).is_ok());
        assert!(check_scope(&querier, &Method::GET, "/patients", true).is_err());
    }

    #[test]
    fn read_and_write_are_separate() {
        let reader = principal(&["od:read"]);
        assert!(check_scope(&reader, &Method::GET, "/patients", true).is_ok());
        let err = check_scope(&reader, &Method::POST, "/patients", true).unwrap_err();
        assert_eq!(err.scope.as_deref(), Some(SCOPE_WRITE));
        let writer = principal(&["od:write"]);
        let err = check_scope(&writer, &Method::GET, "/patients", true).unwrap_err();
        assert_eq!(err.scope.as_deref(), Some(SCOPE_READ));
        assert!(check_scope(&principal(&[]), &Method::DELETE, "/queries", false).is_ok());
    }
}
