//! [`UpstreamBudget`]: the pacing layer's handle on a request's tenant
//! budget, through which the forwarder answers Open Dental's 429.

use std::{fmt, future::Future, pin::Pin, time::Duration};

/// The tenant budget of one request, as the pacing layer granted it a slot.
///
/// The pacing layer puts an `Arc<dyn UpstreamBudget>` into the request
/// extensions; the forwarder, which owns every upstream retry, uses it when
/// Open Dental answers 429: it [`pause`](Self::pause)s the tenant for the
/// answer's `Retry-After` and, for a request it may send again, waits for
/// [`one_more_slot`](Self::one_more_slot) before the single retry. Without
/// the handle (a forwarder used on its own) an upstream 429 is passed on as
/// it came: nothing is paused and nothing is retried.
pub trait UpstreamBudget: fmt::Debug + Send + Sync {
    /// Open Dental throttled the tenant: no request of the tenant (on any
    /// replica sharing the budget) goes upstream for `retry_after`.
    fn pause(&self, retry_after: Duration);

    /// Waits for one more slot of the tenant's budget, but no later than
    /// the request's deadline (its arrival at the pacing layer plus
    /// `limits.queue_timeout`). When no slot comes in time the answer says
    /// so at once, with when one would.
    fn one_more_slot(&self) -> Pin<Box<dyn Future<Output = Result<(), NoSlot>> + Send + '_>>;

    /// The size of the tenant's budget, for the `RateLimit-Limit` header.
    fn limit(&self) -> u64;
}

/// No slot of the tenant's budget comes before the request's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSlot {
    /// How long until the budget could take the request.
    pub retry_after: Duration,
}
