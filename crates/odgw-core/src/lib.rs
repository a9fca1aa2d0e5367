//! Shared types of odgw, used by every pipeline crate.
//!
//! - [`GatewayError`] and [`ErrorCode`]: the one mapping from an odgw-made error
//!   to its HTTP status, problem+json body, `Odgw-Error` header and audit code.
//! - [`RequestContext`]: what the request-context layer gives every request
//!   (its [`RequestId`], peer address and [`RequestFacts`]: what the outer
//!   layers learn from the inner ones, for the audit record and the access
//!   log), read one way by every layer, with the one [`StackOrderBug`] 500
//!   for a layer that runs without what an outer layer provides.
//! - Request extensions passed between layers: [`ApiPath`] from the guard,
//!   [`Tenant`] from tenant resolution, and [`UpstreamBudget`] (the tenant
//!   budget the pacing layer granted, for the forwarder's answer to Open
//!   Dental's 429).
//! - [`SecretString`]: zeroizing, never printed.
//! - [`units`]: the duration, rate and size syntax of the config.
//! - [`scrape`]: metrics read from a component when `/metrics` is scraped.

mod api_path;
mod budget;
mod context;
mod error;
mod ids;
mod principal;
pub mod scrape;
mod secret;
mod tenant;
pub mod units;

pub use api_path::ApiPath;
pub use budget::{NoSlot, UpstreamBudget};
pub use context::{RequestContext, StackOrderBug};
pub use error::{ceil_secs, ErrorCode, GatewayError, RateLimitInfo, PROBLEM_JSON};
pub use ids::{ClientIp, Facts, InvalidTenantId, RequestFacts, RequestId, TenantId, TenantIdSet};
pub use principal::{Identity, Principal};
pub use secret::SecretString;
pub use tenant::{Tenant, TenantAccess};
pub use units::{ByteSize, HumanDuration, Rate};

/// The request body type of the whole stack (axum's, as tower_governor needs).
pub type Body = axum::body::Body;
/// The request type of the whole stack.
pub type Request = http::Request<Body>;
/// The response type of the whole stack.
pub type Response = http::Response<Body>;

/// Header names odgw reads or writes.
pub mod headers {
    use http::HeaderName;
    /// Picks one tenant among those in the token's tenant claim.
    pub const ODGW_TENANT: HeaderName = HeaderName::from_static("odgw-tenant");
    /// The `code` of an odgw-made error.
    pub const ODGW_ERROR: HeaderName = HeaderName::from_static("odgw-error");
    /// `hit` or `miss` on cacheable routes.
    pub const ODGW_CACHE: HeaderName = HeaderName::from_static("odgw-cache");
    /// Correlates a request across client, odgw, upstream and audit.
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    /// IETF draft RateLimit headers sent with odgw's 429s.
    pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
}
