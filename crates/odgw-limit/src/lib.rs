//! Traffic control for odgw (SPEC §5): what keeps a burst of client requests
//! from becoming a burst of 429s from Open Dental.
//!
//! - [`Pacer`]: a tenant's upstream budget (Open Dental throttles per customer
//!   key). [`LocalPacer`] keeps it in process with GCRA; requests over budget
//!   wait in FIFO order up to [`PacingSettings::queue_timeout`] and
//!   [`PacingSettings::queue_depth`].
//! - [`PacingLayer`] / [`Pacing`]: waits for the tenant's
//!   slot, answers 429 `rate_limited` when none comes in time, and hands the
//!   forwarder the tenant's budget (`odgw_core::UpstreamBudget`), through
//!   which it turns Open Dental's own 429 into a tenant pause plus at most
//!   one retry of a GET or HEAD (`upstream_throttled` when that does not fit).
//! - [`SubjectLimitLayer`] / [`SubjectLimit`] (built with
//!   [`subject_limit_layer`]): tower_governor keyed by tenant and JWT subject,
//!   answered at once with 429 `rate_limited`.
//! - [`RedisLimits`] (`limits.backend = "redis"`): one connection to a Redis
//!   shared by every replica, from which come a shared tenant pacer
//!   ([`RedisLimits::pacer`]) and a shared subject limit
//!   ([`RedisLimits::subject_limit`]), so a tenant's budget holds for all
//!   replicas together. [`RedisSettings`] and [`OnFailure`] configure it;
//!   [`LimiterStatus`] tells whether budgets are shared right now or, while
//!   Redis is unreachable, kept in process or refused with 503
//!   `limiter_unavailable`.
//! - [`register_pacing_metrics`] and [`RedisLimits::register_metrics`]:
//!   `odgw_pacing_waiting` and `odgw_limiter_*`, read at each scrape.
//!
//! Every 429 and 503 is made by `odgw_core::GatewayError`, so it carries
//! problem+json, `Odgw-Error` and `Retry-After` (and a 429 the `RateLimit-*`
//! headers).

mod cluster;
mod metrics;
mod pacer;
mod pacing;
mod subject;

pub use cluster::{LimitError, LimiterStatus, OnFailure, RedisLimits, RedisSettings};
pub use metrics::register_pacing_metrics;
pub use pacer::{LocalPacer, PaceRejection, Pacer, PacingSettings, Permit, Reason};
pub use pacing::{Pacing, PacingLayer};
pub use subject::{
    subject_limit_layer, SubjectKey, SubjectKeyExtractor, SubjectLimit, SubjectLimitLayer,
};
