//! Failures a test can queue on the mock.

use std::time::Duration;

/// One injected failure, consumed by the next matching request.
///
/// Faults apply before authentication and throttling: they stand for what
/// happens between the gateway and Open Dental (eConnector trouble, network),
/// so a faulted request never uses the customer key's throttle budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and body (JSON content type when the body parses
    /// as JSON, else plain text), plus `Retry-After` when given, e.g. `"2"` or
    /// an HTTP date.
    Status {
        /// Response status.
        status: u16,
        /// Response body, sent as is.
        body: String,
        /// `Retry-After` header value.
        retry_after: Option<String>,
    },
    /// Answer with exactly this status, these headers (in order, duplicates
    /// kept; invalid ones skipped) and this body, with no Content-Type unless
    /// given. For testing what a gateway does with upstream headers
    /// (hop-by-hop, `Set-Cookie`, ...).
    Response {
        /// Response status.
        status: u16,
        /// Headers to send, name and value.
        headers: Vec<(String, String)>,
        /// Response body, sent as is.
        body: String,
    },
    /// Wait this long, then handle the request normally.
    Delay(Duration),
    /// Never answer; the connection stays open until the client gives up or
    /// the mock shuts down.
    Hang,
    /// Close the connection without sending a response.
    Reset,
}

impl Fault {
    /// A 429 with `Retry-After`, the way a throttled Open Dental might answer.
    pub fn too_many_requests(retry_after: impl Into<String>) -> Self {
        Fault::Status {
            status: 429,
            body: "\"Too many requests.\"".to_owned(),
            retry_after: Some(retry_after.into()),
        }
    }
}

/// Which requests a queued fault applies to; the default matches any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultMatch {
    /// Request method, compared case-insensitively; `None` matches any.
    pub method: Option<String>,
    /// Prefix of the raw request path (e.g. `/api/v1/patients`); `None`
    /// matches any.
    pub path_prefix: Option<String>,
}

impl FaultMatch {
    /// Matches every request.
    pub fn any() -> Self {
        FaultMatch::default()
    }

    /// Matches requests with this method and a path starting with `prefix`.
    pub fn method_path(method: impl Into<String>, prefix: impl Into<String>) -> Self {
        FaultMatch {
            method: Some(method.into()),
            path_prefix: Some(prefix.into()),
        }
    }

    /// Matches requests whose path starts with `prefix`, any method.
    pub fn path(prefix: impl Into<String>) -> Self {
        FaultMatch {
            method: None,
            path_prefix: Some(prefix.into()),
        }
    }

    pub(crate) fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_by_method_and_prefix() {
        let m = FaultMatch::method_path("get", "/api/v1/patients");
        assert!(m.matches("GET", "/api/v1/patients/11"));
        assert!(!m.matches("PUT", "/api/v1/patients/11"));
        assert!(!m.matches("GET", "/api/v1/providers"));
        assert!(FaultMatch::any().matches("DELETE", "/x"));
        assert!(FaultMatch::path("/api/v1/pref").matches("GET", "/api/v1/preferences"));
    }
}
