//! The small named errors of this crate. None of their messages carries a
//! secret: they may reach logs and, for [`PathError`], the client.

use std::time::Duration;

/// Why a request path was refused (SPEC §4 "Paths"); answered with 400
/// `bad_path`. The message is shown to the client as the problem `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    #[error("path contains an empty segment")]
    EmptySegment,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains an encoded '/' or '\\'")]
    EncodedSeparator,
    #[error("path contains an encoded '.'")]
    EncodedDot,
    #[error("path contains an encoded nul or control character")]
    EncodedControl,
    #[error("path contains an encoded '%' (double encoding)")]
    DoubleEncoding,
    #[error("path contains a malformed percent escape")]
    MalformedEscape,
    #[error("path contains a control, space or non-ascii byte")]
    InvalidByte,
}

/// A tenant base URL and request path that do not make an upstream URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUriError {
    #[error("upstream base url must be an absolute http or https url")]
    BadBaseUrl,
    #[error("upstream uri is invalid")]
    Invalid,
}

/// The tenant's `Authorization` value cannot be sent as a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant authorization is not a valid header value")]
pub struct InvalidAuthorization;

/// The upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The request body grew past `server.max_body`; answered with 413
/// `body_too_large`. Produced by the body that [`crate::Guard`] installs, and
/// recognised by the forwarder in the upstream client's error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyLimitExceeded {
    pub limit: u64,
}

/// Why no upstream response head arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No response head within `upstream.timeout`: 504 `upstream_timeout`.
    #[error("no upstream response within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset or closed, TLS failure, connect timeout:
    /// 502 `upstream_unavailable`.
    #[error("upstream unavailable ({stage})")]
    Unavailable {
        /// Where it failed: `connect` or `exchange`.
        stage: &'static str,
        /// Whether a second attempt was made.
        retried: bool,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The client's body passed the size limit while being streamed: 413.
    #[error(transparent)]
    BodyTooLarge(BodyLimitExceeded),
}
