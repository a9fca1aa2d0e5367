//! The cache's metrics (`odgw_cache_*`), read at scrape time from whichever
//! [`ResponseCache`] is in use then.

use odgw_core::scrape::register_scraped;
use prometheus_client::registry::Registry;

use crate::ResponseCache;

/// Registers `odgw_cache_hits_total`, `odgw_cache_misses_total`,
/// `odgw_cache_entries` and `odgw_cache_bytes`.
///
/// `current` answers the cache in use at each scrape: a reload with new
/// `[cache]` settings starts a new cache, whose counters start again from
/// zero (a counter reset to Prometheus). `None` (the gateway is gone)
/// exposes nothing.
pub fn register_metrics<F>(registry: &mut Registry, current: F)
where
    F: Fn() -> Option<ResponseCache> + Send + Sync + 'static,
{
    register_scraped(registry, "cache", move |scrape| {
        let Some(cache) = current() else {
            return Ok(());
        };
        scrape.counter("odgw_cache_hits", "Cache hits.", cache.hits())?;
        scrape.counter("odgw_cache_misses", "Cache misses.", cache.misses())?;
        scrape.gauge(
            "odgw_cache_entries",
            "Cached responses.",
            cache.entry_count(),
        )?;
        scrape.gauge(
            "odgw_cache_bytes",
            "Weighted size of the cache in bytes: keys, headers, bodies and a fixed per-entry overhead.",
            cache.weighted_size(),
        )
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use odgw_core::scrape::prometheus_text as render;

    use super::*;
    use crate::CacheSettings;

    #[test]
    fn exposes_the_current_cache_and_nothing_once_it_is_gone() {
        let settings = CacheSettings {
            routes: vec!["/api/v1/definitions".into()],
            ttl: Duration::from_secs(60),
            max_size: 1 << 20,
        };
        let cache = std::sync::Arc::new(std::sync::Mutex::new(Some(ResponseCache::new(settings))));
        let mut registry = Registry::default();
        let current = cache.clone();
        register_metrics(&mut registry, move || {
            current.lock().expect("not poisoned").clone()
        });
        let text = render(&registry);
        for line in [
            "# HELP odgw_cache_hits_total Cache hits.",
            "# TYPE odgw_cache_hits_total counter",
            "odgw_cache_hits_total 0",
            "# TYPE odgw_cache_misses_total counter",
            "odgw_cache_misses_total 0",
            "# TYPE odgw_cache_entries gauge",
            "odgw_cache_entries 0",
            "# HELP odgw_cache_bytes Weighted size of the cache in bytes: keys, headers, bodies and a fixed per-entry overhead.",
            "odgw_cache_bytes 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        *cache.lock().expect("not poisoned") = None;
        assert_eq!(render(&registry), "");
    }
}
