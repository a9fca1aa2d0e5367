//! [`ReturnedRequest`]: how a request head comes back up the stack when
//! Open Dental throttled it, so it can be sent again without a copy made in
//! advance for every request.

use std::fmt;

/// The head (method, URI, headers, extensions) of a request that Open
/// Dental answered with 429, put into that response's extensions by the
/// forwarder. Only heads of requests whose body was empty come back, so the
/// head alone is the whole request.
///
/// The pacing layer takes it out of every upstream 429 (a GET or HEAD is
/// sent once more from it; anything else drops it), so it never travels
/// further up than pacing. It holds the client's headers, the bearer token
/// among them: its `Debug` shows only the method and path.
#[derive(Clone)]
pub struct ReturnedRequest(pub http::request::Parts);

impl fmt::Debug for ReturnedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReturnedRequest")
            .field("method", &self.0.method)
            .field("path", &self.0.uri.path())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_headers() {
        let (parts, ()) = http::Request::get("/api/v1/patients/11?x=1")
            .header("authorization", "Bearer secret-token")
            .body(())
            .unwrap()
            .into_parts();
        let shown = format!("{:?}", ReturnedRequest(parts));
        assert!(shown.contains("/api/v1/patients/11"), "{shown}");
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
