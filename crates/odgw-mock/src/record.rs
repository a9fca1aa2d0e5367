//! The request log: what reached the mock, exactly as received.

use std::time::Instant;

use bytes::Bytes;

/// One request as the mock received it, and the status it was answered with.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Raw path including `/api/v1`, still percent-encoded.
    pub path: String,
    /// Raw query without `?`, if any.
    pub query: Option<String>,
    /// Every header with its lowercase name, duplicates kept. Values of one
    /// name are adjacent and in received order; names appear in order of
    /// first appearance (HTTP/1 interleaving across names is not preserved).
    pub headers: Vec<(String, String)>,
    /// The request body; empty when it exceeded the body limit.
    pub body: Bytes,
    /// When the request head and body had been read.
    pub received_at: Instant,
    /// The customer key of a well-formed `ODFHIR dev/cust` header, whether or
    /// not the pair was accepted.
    pub customer_key: Option<String>,
    /// The status answered; 0 while unanswered, and for hung, reset or
    /// shut-down requests, which never get one.
    pub response_status: u16,
}

impl RecordedRequest {
    /// All values of a header (name compared case-insensitively).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).into_iter().next()
    }
}
