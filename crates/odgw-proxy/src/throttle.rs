//! Open Dental's 429 (SPEC §5): how long it asks odgw to wait, which
//! requests may be sent again after it, and odgw's own 429
//! `upstream_throttled` when no retry is made or the retry is throttled too.

use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, StatusCode};
use http_body::Body as _;
use odgw_core::{ceil_secs, Body, ErrorCode, GatewayError, RateLimitInfo, RequestId, Response};

/// The pause taken when Open Dental's 429 has no usable `Retry-After`
/// (public clients use the same default).
pub const DEFAULT_UPSTREAM_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest pause an upstream `Retry-After` may impose, so a garbled or
/// hostile value cannot stall a tenant for hours.
pub const MAX_UPSTREAM_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The pause Open Dental asks for, if `response` (its answer, as relayed)
/// is a 429.
pub(crate) fn upstream_retry_after(response: &Response) -> Option<Duration> {
    (response.status() == StatusCode::TOO_MANY_REQUESTS).then(|| {
        parse_retry_after(
            response.headers().get(header::RETRY_AFTER),
            SystemTime::now(),
        )
    })
}

/// Reads `Retry-After` as delta seconds or an HTTP date, relative to `now`.
/// Absent or unreadable values give [`DEFAULT_UPSTREAM_RETRY_AFTER`]; every
/// value is capped at [`MAX_UPSTREAM_RETRY_AFTER`].
pub fn parse_retry_after(value: Option<&HeaderValue>, now: SystemTime) -> Duration {
    let parsed = value.and_then(|v| v.to_str().ok()).and_then(|text| {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits to fit is still "a very long time".
            Some(text.parse().map_or(Duration::MAX, Duration::from_secs))
        } else {
            let date = httpdate::parse_http_date(text).ok()?;
            Some(date.duration_since(now).unwrap_or(Duration::ZERO))
        }
    });
    parsed
        .unwrap_or(DEFAULT_UPSTREAM_RETRY_AFTER)
        .min(MAX_UPSTREAM_RETRY_AFTER)
}

/// Whether a request may be sent a second time after an upstream 429: a
/// GET or HEAD whose body is known to be empty and has ended. Writes never
/// are, nor anything whose body the first try consumed.
pub(crate) fn replayable(method: &Method, headers: &http::HeaderMap, body: &Body) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let declared_empty = headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == b"0");
    let body_empty = body.size_hint().exact() == Some(0) && body.is_end_stream();
    read && declared_empty && body_empty
}

/// 429 `upstream_throttled`: Open Dental throttled the tenant and odgw made
/// no retry, or the retry was throttled too. `retry_after` is the longer of
/// Open Dental's pause and the wait for the tenant's next slot; `limit` is
/// the size of the tenant's budget.
pub(crate) fn upstream_throttled(
    retry_after: Duration,
    limit: u64,
    request_id: &RequestId,
) -> Response {
    let secs = ceil_secs(retry_after);
    GatewayError::new(
        ErrorCode::UpstreamThrottled,
        "open dental throttled this tenant and no retry fits the deadline",
    )
    .with_retry_after(secs)
    .with_rate_limit(RateLimitInfo {
        limit,
        remaining: 0,
        reset_secs: secs,
    })
    .into_response(request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hv = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_retry_after(Some(&hv("7")), now),
            Duration::from_secs(7)
        );
        assert_eq!(parse_retry_after(Some(&hv(" 0 ")), now), Duration::ZERO);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        let date = HeaderValue::from_str(&date).unwrap();
        assert_eq!(parse_retry_after(Some(&date), now), Duration::from_secs(42));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        let past = HeaderValue::from_str(&past).unwrap();
        assert_eq!(parse_retry_after(Some(&past), now), Duration::ZERO);
        assert_eq!(parse_retry_after(None, now), DEFAULT_UPSTREAM_RETRY_AFTER);
        assert_eq!(
            parse_retry_after(Some(&hv("soon")), now),
            DEFAULT_UPSTREAM_RETRY_AFTER
        );
        assert_eq!(
            parse_retry_after(Some(&hv("-3")), now),
            DEFAULT_UPSTREAM_RETRY_AFTER
        );
        assert_eq!(
            parse_retry_after(Some(&hv("86400")), now),
            MAX_UPSTREAM_RETRY_AFTER
        );
        assert_eq!(
            parse_retry_after(Some(&hv("99999999999999999999999")), now),
            MAX_UPSTREAM_RETRY_AFTER
        );
    }

    #[test]
    fn only_bodiless_reads_are_replayable() {
        let none = http::HeaderMap::new();
        let mut zero = http::HeaderMap::new();
        zero.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let mut two = http::HeaderMap::new();
        two.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        for method in [Method::GET, Method::HEAD] {
            assert!(replayable(&method, &none, &Body::empty()), "{method}");
            assert!(replayable(&method, &zero, &Body::empty()), "{method}");
            assert!(!replayable(&method, &two, &Body::empty()), "{method}");
            assert!(!replayable(&method, &none, &Body::from("{}")), "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(!replayable(&method, &none, &Body::empty()), "{method}");
        }
    }

    #[test]
    fn upstream_throttled_is_a_complete_429() {
        let id = RequestId::generate();
        let response = upstream_throttled(Duration::from_millis(1500), 3, &id);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = response.headers();
        assert_eq!(h["odgw-error"], "upstream_throttled");
        assert_eq!(h["retry-after"], "2");
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "2");
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::UpstreamThrottled)
        );
    }
}
