//! The request-context layer of odgw: the outermost layer that reads
//! requests (inside hop-by-hop stripping).
//!
//! - [`RequestContextLayer`]: gives every request its
//!   [`odgw_core::RequestContext`] (request id, peer address, facts), stamps
//!   `X-Request-Id` on every response, writes the one [`AccessLine`] and
//!   counts the request in [`RequestMetrics`].
//! - [`routes::route_template`]: the bounded `route` label of those metrics.

mod layer;
mod metrics;
pub mod routes;

pub use layer::{AccessLine, RequestContextLayer, RequestContextService};
pub use metrics::{Finished, RequestMetrics};
