//! The shared tenant pacer: [`Pacer`] with its budgets in Redis.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures_util::future::{self, BoxFuture};
use odgw_core::{Rate, TenantId};
use tokio::time::Instant;

use super::{script_micros, OnFailure, PaceKeys, ReserveReply, Shared, PAUSE_GRACE, PROBE_EVERY};
use crate::{LocalPacer, PaceRejection, Pacer, PacingSettings, Permit, Reason};

/// `reserve.lua`'s verdicts.
const GO: i64 = 0;
const WAIT: i64 = 1;
const TOO_LATE: i64 = 2;
const QUEUE_FULL: i64 = 3;

/// A [`Pacer`] whose budgets every replica shares through Redis (made by
/// [`super::RedisLimits::pacer`]).
///
/// Unlike [`LocalPacer`], the reservation is made when the future is first
/// polled, since it takes a round trip; FIFO order is the order in which
/// reservations reach Redis. A [`LocalPacer`] serves unlimited tenants and,
/// with `on_failure = "local"`, everyone while Redis is unreachable.
pub(crate) struct RedisPacer {
    shared: Arc<Shared>,
    settings: PacingSettings,
    local: LocalPacer,
    /// This replica's waiters per tenant (the shared count lives in Redis).
    waiting: Arc<Mutex<HashMap<TenantId, usize>>>,
}

impl fmt::Debug for RedisPacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPacer")
            .field("shared", &self.shared)
            .field("settings", &self.settings)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl RedisPacer {
    pub(crate) fn new(shared: Arc<Shared>, settings: PacingSettings) -> Self {
        Self {
            shared,
            settings,
            local: LocalPacer::new(settings),
            waiting: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// What the failure policy answers while Redis cannot be asked.
    fn fallback(
        &self,
        tenant: &TenantId,
        rate: Rate,
        burst: u32,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Permit, PaceRejection>> {
        match self.shared.on_failure {
            OnFailure::Local => self.local.acquire(tenant, rate, burst, max_wait),
            OnFailure::Closed => Box::pin(future::ready(Err(PaceRejection {
                reason: Reason::Unavailable,
                retry_after: PROBE_EVERY,
                limit: u64::from(burst.max(1)),
                remaining: 0,
            }))),
        }
    }

    async fn acquire_shared(
        &self,
        tenant: TenantId,
        rate: Rate,
        interval: Duration,
        burst: u32,
        max_wait: Duration,
    ) -> Result<Permit, PaceRejection> {
        let called = Instant::now();
        let burst = burst.max(1);
        let tolerance = interval.checked_mul(burst - 1).unwrap_or(Duration::MAX);
        let keys = PaceKeys::new(&self.shared.prefix, &tenant);
        let id = self.shared.reservation_id();
        // Armed while the script is in flight: if this future is dropped
        // then, the reservation may exist, and at least leaves the queue.
        let mut hand_back = HandBack {
            shared: Arc::clone(&self.shared),
            keys,
            id,
            previous: None,
            armed: true,
        };
        let mut invocation = self.shared.scripts.reserve.prepare_invoke();
        invocation
            .key(&hand_back.keys.state)
            .key(&hand_back.keys.queue)
            .arg(script_micros(interval))
            .arg(script_micros(tolerance))
            .arg(script_micros(max_wait))
            .arg(self.settings.queue_depth)
            .arg(&hand_back.id);
        let reply = self.shared.eval::<ReserveReply>(&invocation).await;
        drop(invocation);
        let Some((verdict, wait_us, previous_tat, previous_last)) = reply else {
            // Redis failed; the reservation's fate is unknown, and Redis is
            // not asked again until a probe says it answers.
            hand_back.armed = false;
            let left = max_wait.saturating_sub(called.elapsed());
            return self.fallback(&tenant, rate, burst, left).await;
        };
        let wait = Duration::from_micros(u64::try_from(wait_us).unwrap_or(0));
        let rejection = |reason| PaceRejection {
            reason,
            retry_after: wait,
            limit: u64::from(burst),
            remaining: 0,
        };
        match verdict {
            WAIT => {
                hand_back.previous = Some((previous_tat, previous_last));
                let _counted = Waiter::new(&self.waiting, &tenant);
                tokio::time::sleep(wait).await;
                hand_back.armed = false;
                Ok(Permit {
                    waited: called.elapsed(),
                })
            }
            TOO_LATE => {
                hand_back.armed = false;
                Err(rejection(Reason::WouldExceedDeadline))
            }
            QUEUE_FULL => {
                hand_back.armed = false;
                Err(rejection(Reason::QueueFull))
            }
            GO => {
                hand_back.armed = false;
                Ok(Permit {
                    waited: called.elapsed(),
                })
            }
            other => {
                // Only a script from another odgw version could say this.
                hand_back.armed = false;
                self.shared
                    .failed(&format!("unexpected reservation verdict {other}"));
                let left = max_wait.saturating_sub(called.elapsed());
                self.fallback(&tenant, rate, burst, left).await
            }
        }
    }
}

impl Pacer for RedisPacer {
    fn acquire(
        &self,
        tenant: &TenantId,
        rate: Rate,
        burst: u32,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Permit, PaceRejection>> {
        let Some(interval) = rate.interval() else {
            // Nothing to share; only this replica's own pauses apply.
            return self.local.acquire(tenant, rate, burst, max_wait);
        };
        if !self.shared.usable() {
            return self.fallback(tenant, rate, burst, max_wait);
        }
        Box::pin(self.acquire_shared(tenant.clone(), rate, interval, burst, max_wait))
    }

    fn pause_until(&self, tenant: &TenantId, until: Instant) {
        // The local pacer pauses too: it serves unlimited tenants, and
        // everyone if Redis fails before the pause is written.
        self.local.pause_until(tenant, until);
        let delay = until.saturating_duration_since(Instant::now());
        if delay.is_zero() || !self.shared.usable() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let state = PaceKeys::new(&shared.prefix, tenant).state;
        runtime.spawn(async move {
            let mut invocation = shared.scripts.pause.prepare_invoke();
            invocation
                .key(&state)
                .arg(script_micros(delay))
                .arg(PAUSE_GRACE.as_millis() as u64);
            shared.eval::<i64>(&invocation).await;
        });
    }

    fn queue_depth(&self, tenant: &TenantId) -> usize {
        let shared = lock(&self.waiting).get(tenant).copied().unwrap_or(0);
        shared + self.local.queue_depth(tenant)
    }

    fn waiting(&self) -> usize {
        let shared: usize = lock(&self.waiting).values().sum();
        shared + self.local.waiting()
    }
}

/// Hands a reservation back (see `hand_back.lua`) when its waiter is
/// dropped before its slot.
struct HandBack {
    shared: Arc<Shared>,
    keys: PaceKeys,
    id: String,
    /// TAT and newest id before this reservation; `None` while unknown.
    previous: Option<(i64, String)>,
    armed: bool,
}

impl Drop for HandBack {
    fn drop(&mut self) {
        if !self.armed || !self.shared.usable() {
            // Nothing to give back, or Redis is down: the reservation then
            // leaves the queue by itself once its start time passes.
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let keys = self.keys.clone();
        let id = std::mem::take(&mut self.id);
        let (tat, last) = match self.previous.take() {
            Some((tat, last)) => (tat.to_string(), last),
            None => (String::new(), String::new()),
        };
        runtime.spawn(async move {
            let mut invocation = shared.scripts.hand_back.prepare_invoke();
            invocation
                .key(&keys.state)
                .key(&keys.queue)
                .arg(&id)
                .arg(&tat)
                .arg(&last);
            shared.eval::<i64>(&invocation).await;
        });
    }
}

/// Counts one of this replica's waiters for [`Pacer::queue_depth`].
struct Waiter<'a> {
    waiting: &'a Mutex<HashMap<TenantId, usize>>,
    tenant: &'a TenantId,
}

impl<'a> Waiter<'a> {
    fn new(waiting: &'a Mutex<HashMap<TenantId, usize>>, tenant: &'a TenantId) -> Self {
        *lock(waiting).entry(tenant.clone()).or_insert(0) += 1;
        Self { waiting, tenant }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(self.waiting);
        if let Some(n) = waiting.get_mut(self.tenant) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(self.tenant);
            }
        }
    }
}

fn lock(waiting: &Mutex<HashMap<TenantId, usize>>) -> MutexGuard<'_, HashMap<TenantId, usize>> {
    // Counts are plain integers; a panic elsewhere cannot leave them torn.
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}
