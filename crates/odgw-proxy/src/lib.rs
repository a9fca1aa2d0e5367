//! Forwarding for odgw (SPEC §4 "What goes upstream", "Paths", "What comes
//! back"): the part of the gateway that talks to Open Dental.
//!
//! - [`HopByHopLayer`] / [`HopByHop`]: the outermost layer; removes
//!   hop-by-hop headers and every header named in `Connection` from the
//!   request before anything reads a header, and from the response.
//! - [`GuardLayer`] / [`Guard`]: 404 `not_found` outside `/api/v1/`, 400
//!   `bad_path` ([`check_path`]), 413 `body_too_large` (declared, or cut off
//!   while streaming).
//! - [`upstream_headers`] and [`upstream_uri`]: the header allow-list and the
//!   target URI.
//! - [`UpstreamClient`]: pooled HTTP/1.1 client, rustls on aws-lc-rs for
//!   `https://`, plain TCP for local-mode `http://` offices; deadline and
//!   retry rules in [`UpstreamClient::send`].
//! - [`Forwarder`]: the innermost service of the stack, and the one owner of
//!   upstream retries: the client's retry after a failed connection, and
//!   after Open Dental's 429 a pause of the tenant's
//!   [`odgw_core::UpstreamBudget`] plus at most one retry of a GET or HEAD
//!   (429 `upstream_throttled` when that does not fit). [`parse_retry_after`]
//!   reads the pause Open Dental asks for.
//!
//! Header hygiene runs in one fixed order: strip hop-by-hop and
//! `Connection`-named headers ([`HopByHop`]), keep only the allow-list, add
//! odgw's own headers ([`upstream_headers`]), then frame the body from what is
//! actually sent rather than from the client's `Content-Length`.

mod client;
mod error;
mod forward;
mod guard;
mod hop;
mod path;
mod throttle;
mod upstream;

pub use client::{UpstreamClient, UpstreamSettings};
pub use error::{
    BodyLimitExceeded, ClientBuildError, InvalidAuthorization, PathError, UpstreamError,
    UpstreamUriError,
};
pub use forward::Forwarder;
pub use guard::{Guard, GuardLayer};
pub use hop::{strip_hop_by_hop, HopByHop, HopByHopFuture, HopByHopLayer};
pub use path::{check_path, check_path_bytes};
pub use throttle::{parse_retry_after, DEFAULT_UPSTREAM_RETRY_AFTER, MAX_UPSTREAM_RETRY_AFTER};
pub use upstream::{authorization_value, upstream_headers, upstream_uri};
