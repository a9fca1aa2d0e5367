//! The per-tenant cache of reference GETs (SPEC §5 "Cache").
//!
//! - [`ResponseCache`]: moka-backed store keyed by (tenant, tenant
//!   generation, path, sorted query); bounded by [`CacheSettings::max_size`],
//!   expiring after [`CacheSettings::ttl`]; purged per tenant or entirely
//!   (the admin API's `DELETE /admin/v1/cache`, and whenever a tenant is
//!   disabled, deleted or re-keyed).
//! - [`CacheLayer`] / [`Cached`] serves hits without
//!   spending the tenant's upstream budget, and makes concurrent misses for
//!   one key share a single upstream call.
//! - [`register_metrics`]: `odgw_cache_*`, read from the cache in use at
//!   each scrape.
//!
//! Only Open Dental's 200 answers are stored. The tenant is part of every
//! key: an entry never answers another practice's request.

mod layer;
mod metrics;
mod store;

pub use layer::{CacheLayer, Cached};
pub use metrics::register_metrics;
/// For `fuzz/` and its corpus replay only.
#[doc(hidden)]
pub use store::sorted_query_for_fuzzing;
pub use store::{CacheSettings, ResponseCache};
