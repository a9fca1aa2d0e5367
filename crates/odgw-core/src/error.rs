//! The one place where odgw-made errors become HTTP responses.

use std::{borrow::Cow, time::Duration};

use http::{header, HeaderValue, StatusCode};

use crate::{headers, Body, RequestId, Response};

/// Media type of odgw's error bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The stable `code` of every error odgw makes (SPEC §4). The same value goes
/// to the problem body, the `Odgw-Error` header and the audit `error_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadPath,
    BadRequest,
    MissingToken,
    InvalidToken,
    InsufficientScope,
    TenantNotAllowed,
    UnknownTenant,
    TenantDisabled,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    RateLimited,
    UpstreamThrottled,
    UpstreamUnavailable,
    AuditUnavailable,
    /// The shared key store (PostgreSQL) cannot be reached.
    StoreUnavailable,
    /// The shared pacing store (Redis) cannot be reached and
    /// `redis.on_failure = "closed"`.
    LimiterUnavailable,
    UpstreamTimeout,
    Unauthorized,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadPath => "bad_path",
            Self::BadRequest => "bad_request",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::TenantNotAllowed => "tenant_not_allowed",
            Self::UnknownTenant => "unknown_tenant",
            Self::TenantDisabled => "tenant_disabled",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::RateLimited => "rate_limited",
            Self::UpstreamThrottled => "upstream_throttled",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::AuditUnavailable => "audit_unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Unauthorized => "unauthorized",
            Self::Internal => "internal_error",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadPath | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::MissingToken | Self::InvalidToken | Self::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope
            | Self::TenantNotAllowed
            | Self::UnknownTenant
            | Self::TenantDisabled => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited | Self::UpstreamThrottled => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::AuditUnavailable | Self::StoreUnavailable | Self::LimiterUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The audit `outcome` of a request that ended with this error.
    pub const fn outcome(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::UpstreamThrottled | Self::UpstreamUnavailable | Self::UpstreamTimeout => {
                "upstream_error"
            }
            Self::AuditUnavailable
            | Self::StoreUnavailable
            | Self::LimiterUnavailable
            | Self::Internal => "gateway_error",
            _ => "denied",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whole seconds, rounded up, for `Retry-After` and `RateLimit-Reset`: a
/// client that waits this long is not early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Values for the `RateLimit-*` headers of a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the budget has room again.
    pub reset_secs: u64,
}

/// An error made by odgw, on its way to becoming a problem+json response.
///
/// `detail` is shown to the client: lowercase, and never containing a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub detail: Cow<'static, str>,
    /// `Retry-After` seconds (429 and 503).
    pub retry_after: Option<u64>,
    /// The scope that was missing (`insufficient_scope`).
    pub scope: Option<String>,
    pub rate_limit: Option<RateLimitInfo>,
}

impl GatewayError {
    pub fn new(code: ErrorCode, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            detail: detail.into(),
            retry_after: None,
            scope: None,
            rate_limit: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    pub fn with_rate_limit(mut self, info: RateLimitInfo) -> Self {
        self.rate_limit = Some(info);
        self
    }

    /// Renders the problem+json response. The response carries the
    /// [`ErrorCode`] as an extension so that audit and metrics read the same
    /// code the client sees.
    pub fn into_response(self, request_id: &RequestId) -> Response {
        let status = self.code.status();
        let body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail,
            "code": self.code.as_str(),
            "request_id": request_id.as_str(),
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(
            headers::ODGW_ERROR,
            HeaderValue::from_static(self.code.as_str()),
        );
        if let Ok(v) = HeaderValue::from_str(request_id.as_str()) {
            headers.insert(headers::X_REQUEST_ID, v);
        }
        if let Some(challenge) = self.www_authenticate() {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(info) = self.rate_limit {
            headers.insert(headers::RATELIMIT_LIMIT, HeaderValue::from(info.limit));
            headers.insert(
                headers::RATELIMIT_REMAINING,
                HeaderValue::from(info.remaining),
            );
            headers.insert(headers::RATELIMIT_RESET, HeaderValue::from(info.reset_secs));
        }
        response.extensions_mut().insert(self.code);
        response
    }

    fn www_authenticate(&self) -> Option<HeaderValue> {
        match self.code {
            ErrorCode::MissingToken => Some(HeaderValue::from_static("Bearer")),
            ErrorCode::InvalidToken => {
                Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#))
            }
            ErrorCode::InsufficientScope => {
                let scope = self.scope.as_deref().unwrap_or("");
                // Scope names are ours (od:read …), but never trust text in a header.
                let scope: String = scope
                    .chars()
                    .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
                    .collect();
                HeaderValue::from_str(&format!(
                    r#"Bearer error="insufficient_scope", scope="{scope}""#
                ))
                .ok()
            }
            ErrorCode::Unauthorized => Some(HeaderValue::from_static("Bearer")),
            _ => None,
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn problem_response_has_code_header_body_and_extension() {
        let rid = RequestId::from_client(Some(&HeaderValue::from_static("r-1")));
        let resp = GatewayError::new(ErrorCode::InvalidToken, "token expired").into_response(&rid);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["odgw-error"], "invalid_token");
        assert_eq!(resp.headers()["content-type"], PROBLEM_JSON);
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(
            resp.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::InvalidToken)
        );
    }

    #[test]
    fn rate_limited_carries_retry_after_and_ratelimit_headers() {
        let rid = RequestId::generate();
        let resp = GatewayError::new(ErrorCode::RateLimited, "tenant queue full")
            .with_retry_after(3)
            .with_rate_limit(RateLimitInfo {
                limit: 1,
                remaining: 0,
                reset_secs: 3,
            })
            .into_response(&rid);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "3");
        assert_eq!(resp.headers()["ratelimit-limit"], "1");
        assert_eq!(resp.headers()["ratelimit-remaining"], "0");
        assert_eq!(resp.headers()["ratelimit-reset"], "3");
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let resp = GatewayError::new(ErrorCode::InsufficientScope, "needs od:write")
            .with_scope("od:write")
            .into_response(&RequestId::generate());
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer error="insufficient_scope", scope="od:write""#
        );
    }
}
