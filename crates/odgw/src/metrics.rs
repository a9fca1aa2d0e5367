//! The gateway's metrics: one prometheus-client [`Registry`] that each part
//! fills with its own metrics, served on the admin listener's `/metrics`.
//!
//! The gateway only composes (see `gateway::register_metrics`): it creates
//! the registry, asks each part to register, and hands the registry to the
//! admin API. Parts that a reload replaces (cache, pacer, authenticator) are
//! read from the runtime current at scrape time.
//!
//! Every family a gateway can expose, by the name a scrape shows (Prometheus
//! text; prometheus-client registers counters without `_total` and adds it
//! when encoding), and where it is registered. No label carries a tenant or
//! subject.
//!
//! | family | type | registered by |
//! |---|---|---|
//! | `odgw_build_info{version}` | gauge (info) | [`register_build_info`] |
//! | `odgw_requests_total{method,status,outcome,route}` | counter | [`RequestMetrics`] |
//! | `odgw_request_duration_seconds` | histogram | [`RequestMetrics`] |
//! | `odgw_upstream_duration_seconds` | histogram | [`RequestMetrics`] |
//! | `odgw_pacing_wait_seconds` | histogram | [`RequestMetrics`] |
//! | `odgw_errors_total{code}` | counter | [`RequestMetrics`] |
//! | `odgw_upstream_responses_total{status}` | counter | [`RequestMetrics`] |
//! | `odgw_cache_hits_total`, `odgw_cache_misses_total` | counter | `odgw_cache::register_metrics` |
//! | `odgw_cache_entries`, `odgw_cache_bytes` | gauge | `odgw_cache::register_metrics` |
//! | `odgw_pacing_waiting` | gauge | `odgw_limit::register_pacing_metrics` |
//! | `odgw_limiter_degraded` | gauge | `odgw_limit::RedisLimits::register_metrics` |
//! | `odgw_limiter_redis_failures_total` | counter | `odgw_limit::RedisLimits::register_metrics` |
//! | `odgw_jwks_fetches_total`, `odgw_jwks_fetch_failures_total` | counter | `odgw_auth::register_metrics` |
//! | `odgw_token_verifications_remembered_total`, `odgw_token_verifications_checked_total` | counter | `odgw_auth::register_metrics` |
//! | `odgw_store_changes_applied_total`, `odgw_store_resyncs_total` | counter | `backends::ChangeCounters` |
//! | `odgw_config_reloads_total`, `odgw_config_reload_failures_total` | counter | `gateway::register_metrics` |
//! | `odgw_audit_healthy` | gauge | `odgw_audit::register_metrics` |
//! | `odgw_audit_write_failures_total`, `odgw_audit_batches_total`, `odgw_audit_records_total`, `odgw_audit_write_seconds_total` | counter | `odgw_audit::register_metrics` |
//!
//! The limiter families appear with `limits.backend = "redis"` only, the
//! store families with `store.backend = "postgres"` only.

use prometheus_client::{metrics::info::Info, registry::Registry};

pub use odgw_context::{Finished, RequestMetrics};

/// Registers `odgw_build_info{version="…"} 1`: which build a scrape came from.
pub fn register_build_info(registry: &mut Registry) {
    // An info metric: prometheus-client appends `_info` to the name.
    registry.register(
        "odgw_build",
        "Build information",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::{prometheus_text, text};

    #[test]
    fn build_info_reads_as_before_in_both_formats() {
        let mut registry = Registry::default();
        register_build_info(&mut registry);
        let mut prometheus = String::new();
        prometheus_text::encode(&mut prometheus, &registry).expect("encodes");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            prometheus,
            format!(
                "# HELP odgw_build_info Build information.\n\
                 # TYPE odgw_build_info gauge\n\
                 odgw_build_info{{version=\"{version}\"}} 1\n"
            )
        );
        let mut openmetrics = String::new();
        text::encode(&mut openmetrics, &registry).expect("encodes");
        assert!(
            openmetrics.contains(&format!("odgw_build_info{{version=\"{version}\"}} 1\n")),
            "{openmetrics}"
        );
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    }
}
