//! The limiter's metrics: `odgw_pacing_waiting` from whichever [`Pacer`] is
//! in use at scrape time, and `odgw_limiter_*` from [`RedisLimits`].

use std::sync::Arc;

use odgw_core::scrape::register_scraped;
use prometheus_client::registry::Registry;

use crate::{LimiterStatus, Pacer, RedisLimits};

/// Registers `odgw_pacing_waiting`: requests of all practices waiting for
/// their Open Dental budget right now.
///
/// `current` answers the pacer in use at each scrape (a reload with a new
/// `queue_depth` builds a new one). `None` (the gateway is gone) exposes
/// nothing.
pub fn register_pacing_metrics<F>(registry: &mut Registry, current: F)
where
    F: Fn() -> Option<Arc<dyn Pacer>> + Send + Sync + 'static,
{
    register_scraped(registry, "pacing", move |scrape| {
        let Some(pacer) = current() else {
            return Ok(());
        };
        scrape.gauge(
            "odgw_pacing_waiting",
            "Requests waiting for their practice's Open Dental budget, all practices.",
            pacer.waiting(),
        )
    });
}

impl RedisLimits {
    /// Registers `odgw_limiter_degraded` (1 while Redis cannot be reached)
    /// and `odgw_limiter_redis_failures_total`, read at each scrape.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let limits = self.clone();
        register_scraped(registry, "redis limiter", move |scrape| {
            scrape.gauge(
                "odgw_limiter_degraded",
                "1 while Redis cannot be reached and pacing follows redis.on_failure.",
                u32::from(limits.status() != LimiterStatus::Shared),
            )?;
            scrape.counter(
                "odgw_limiter_redis_failures",
                "Redis operations that failed or timed out.",
                limits.failures(),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use odgw_core::scrape::prometheus_text as render;

    use super::*;
    use crate::{LocalPacer, PacingSettings};

    #[test]
    fn exposes_the_current_pacer_and_nothing_once_it_is_gone() {
        let pacer: Arc<dyn Pacer> = Arc::new(LocalPacer::new(PacingSettings {
            queue_timeout: std::time::Duration::from_secs(1),
            queue_depth: 4,
        }));
        let current = Arc::new(Mutex::new(Some(pacer)));
        let mut registry = Registry::default();
        let read = current.clone();
        register_pacing_metrics(&mut registry, move || {
            read.lock().expect("not poisoned").clone()
        });
        assert_eq!(
            render(&registry),
            "# HELP odgw_pacing_waiting Requests waiting for their practice's Open Dental budget, all practices.\n\
             # TYPE odgw_pacing_waiting gauge\n\
             odgw_pacing_waiting 0\n"
        );
        *current.lock().expect("not poisoned") = None;
        assert_eq!(render(&registry), "");
    }
}
