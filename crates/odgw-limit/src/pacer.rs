//! Per-tenant upstream budgets: the [`Pacer`] contract and its in-process
//! implementation, [`LocalPacer`].

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures_util::future::{self, BoxFuture};
use odgw_core::{Rate, TenantId};
use tokio::time::Instant;

/// How long and how many requests may wait for a tenant's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingSettings {
    /// The longest a request may wait for its slot (`limits.queue_timeout`).
    /// Read by the pacing layer, which passes it to [`Pacer::acquire`] as
    /// `max_wait` (and measures the upstream-429 retry's deadline from it);
    /// a pacer itself never reads it, so changing it needs no new pacer.
    pub queue_timeout: Duration,
    /// Requests per tenant that may wait at once before new ones are refused
    /// immediately (`limits.queue_depth`).
    pub queue_depth: usize,
}

/// A tenant's upstream budget, shared by every request for that tenant.
///
/// Open Dental throttles per customer key, so the budget belongs to the
/// tenant, not to a caller. Implementations keep it in process
/// ([`LocalPacer`]) or in a store shared by several replicas
/// ([`crate::RedisLimits::pacer`]); the contract is deliberately small so
/// both fit.
pub trait Pacer: Send + Sync + fmt::Debug {
    /// Reserves the tenant's next slot and waits for it.
    ///
    /// At most `burst` requests start at once, then one per
    /// [`Rate::interval`]; slots are handed out in order (FIFO). Waiting
    /// uses a timer, never a thread or a busy loop. Refuses at once, without
    /// reserving anything, when the slot is more than `max_wait` away or too
    /// many requests already wait. [`Rate::Unlimited`] resolves at once
    /// unless the tenant is paused.
    ///
    /// [`LocalPacer`] reserves when `acquire` is called, so call order is
    /// slot order; a shared pacer reserves when the future is first polled
    /// (it takes a round trip), so the order is that in which reservations
    /// reach the store. Callers await the future at once either way.
    fn acquire(
        &self,
        tenant: &TenantId,
        rate: Rate,
        burst: u32,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Permit, PaceRejection>>;

    /// Open Dental answered 429 with `Retry-After`: no request of this tenant
    /// starts before `until`, and the burst allowance is spent at that point.
    fn pause_until(&self, tenant: &TenantId, until: Instant);

    /// How many requests of this tenant are waiting for a slot right now
    /// (a shared pacer counts this replica's own waiters: a gauge must not
    /// cost a round trip).
    fn queue_depth(&self, tenant: &TenantId) -> usize;

    /// How many requests of all tenants are waiting right now (a gauge that
    /// needs no tenant label).
    fn waiting(&self) -> usize;
}

/// Leave to send one request upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// How long the request waited for its slot.
    pub waited: Duration,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `queue_depth` requests of the tenant are already waiting.
    QueueFull,
    /// The next free slot is further away than the request may wait.
    WouldExceedDeadline,
    /// The shared budget store cannot be reached and the failure policy is
    /// to refuse (`redis.on_failure = "closed"`); answered with 503
    /// `limiter_unavailable`, not 429.
    Unavailable,
}

/// A refused [`Pacer::acquire`]; nothing was reserved.
///
/// For [`Reason::Unavailable`], `retry_after` is about when the store is
/// probed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .reason {
    Reason::QueueFull => "tenant queue is full",
    Reason::WouldExceedDeadline => "tenant budget has no slot within the queue timeout",
    Reason::Unavailable => "tenant budget store is unreachable",
})]
pub struct PaceRejection {
    pub reason: Reason,
    /// How long until a request arriving then is admitted without waiting,
    /// provided nothing else arrives in between.
    pub retry_after: Duration,
    /// The tenant's burst: requests that may start at once.
    pub limit: u64,
    /// Slots left right now (always 0 on a rejection).
    pub remaining: u64,
}

/// Tenant entries beyond this many trigger a sweep of idle ones.
const MIN_SWEEP_AT: usize = 64;

/// The in-process [`Pacer`]: GCRA (virtual scheduling) per tenant.
///
/// Each tenant keeps a theoretical arrival time (TAT): the time at which the
/// budget would be back to "one slot per interval" had nothing else arrived.
/// A request is given the slot `max(now, TAT - (burst - 1) * interval)` and
/// moves the TAT one interval on, so `burst` requests start at once and the
/// rest one per interval, in arrival order.
///
/// A waiter dropped before its slot (the client went away) hands its slot
/// back when it is the newest reservation of its tenant; otherwise the slot
/// stays consumed, which leaves the upstream idle for one interval but never
/// lets requests start closer together than the budget allows.
///
/// State lives in one `Mutex<HashMap>` that is only held for the few
/// instructions of a reservation, never while waiting, so one tenant's
/// backlog never delays another's requests. Entries indistinguishable from a
/// fresh tenant are removed as the map grows and by [`LocalPacer::housekeeping`].
/// Clones share the same budgets. Only `queue_depth` of the settings is used
/// here; the wait limit comes with each `acquire`.
#[derive(Debug, Clone)]
pub struct LocalPacer {
    settings: PacingSettings,
    state: Arc<Mutex<Tenants>>,
}

#[derive(Debug)]
struct Tenants {
    by_id: HashMap<TenantId, TenantState>,
    /// Numbers reservations so a dropped waiter can tell whether it is the newest.
    next_seq: u64,
    /// Sweep idle entries once the map is larger than this.
    sweep_at: usize,
}

#[derive(Debug)]
struct TenantState {
    tat: Instant,
    /// An upstream pause not yet folded into `tat` (it needs the burst
    /// tolerance, which only `acquire` knows).
    pause: Option<Instant>,
    waiting: usize,
    /// The newest reservation that may still be handed back; 0 for none.
    last_seq: u64,
}

impl TenantState {
    fn fresh(now: Instant) -> Self {
        Self {
            tat: now,
            pause: None,
            waiting: 0,
            last_seq: 0,
        }
    }

    /// Behaves exactly like a missing entry from now on.
    fn is_idle(&self, now: Instant) -> bool {
        self.waiting == 0 && self.tat <= now && self.pause.is_none_or(|p| p <= now)
    }
}

/// What a successful reservation asks the caller to do.
enum Reservation {
    Now,
    Wait { start: Instant, guard: WaitGuard },
}

impl LocalPacer {
    pub fn new(settings: PacingSettings) -> Self {
        Self {
            settings,
            state: Arc::new(Mutex::new(Tenants {
                by_id: HashMap::new(),
                next_seq: 1,
                sweep_at: MIN_SWEEP_AT,
            })),
        }
    }

    /// Drops the entries of tenants whose budget is back to fresh. Safe to
    /// call at any time: a removed tenant's next request is treated exactly
    /// as the kept entry would have been.
    pub fn housekeeping(&self) {
        let now = Instant::now();
        let mut tenants = lock(&self.state);
        tenants.by_id.retain(|_, st| !st.is_idle(now));
        tenants.by_id.shrink_to_fit();
    }

    /// How many tenants currently have state (for metrics and tests).
    pub fn tracked_tenants(&self) -> usize {
        lock(&self.state).by_id.len()
    }

    fn reserve(
        &self,
        tenant: &TenantId,
        rate: Rate,
        burst: u32,
        max_wait: Duration,
        now: Instant,
    ) -> Result<Reservation, PaceRejection> {
        let burst = burst.max(1);
        let (interval, tolerance) = match rate.interval() {
            Some(t) => (t, t.checked_mul(burst - 1).unwrap_or(Duration::MAX)),
            None => (Duration::ZERO, Duration::ZERO),
        };
        let mut guard = lock(&self.state);
        let tenants = &mut *guard;
        if rate == Rate::Unlimited && !tenants.by_id.contains_key(tenant) {
            // Unlimited tenants only have state while an upstream pause holds.
            return Ok(Reservation::Now);
        }
        if tenants.by_id.len() >= tenants.sweep_at {
            tenants.by_id.retain(|_, st| !st.is_idle(now));
            tenants.sweep_at = (tenants.by_id.len() * 2).max(MIN_SWEEP_AT);
        }
        let seq = tenants.next_seq;
        let st = tenants
            .by_id
            .entry(tenant.clone())
            .or_insert_with(|| TenantState::fresh(now));

        if let Some(pause) = st.pause.take() {
            // The pause spends the whole burst: after it, requests are spaced
            // again instead of arriving at Open Dental all at once.
            let paused_tat = pause.checked_add(tolerance).unwrap_or(pause);
            if paused_tat > st.tat {
                st.tat = paused_tat;
                // The TAT no longer is what the newest waiter left behind.
                st.last_seq = 0;
            }
        }
        let earliest = st.tat.checked_sub(tolerance).unwrap_or(now);
        let start = earliest.max(now);
        let wait = start - now;
        if !wait.is_zero() {
            let reason = if wait > max_wait {
                Some(Reason::WouldExceedDeadline)
            } else if st.waiting >= self.settings.queue_depth {
                Some(Reason::QueueFull)
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(PaceRejection {
                    reason,
                    retry_after: wait,
                    limit: u64::from(burst),
                    remaining: 0,
                });
            }
        }

        let previous_tat = st.tat;
        let previous_seq = st.last_seq;
        st.tat = st.tat.max(start).checked_add(interval).unwrap_or(st.tat);
        st.last_seq = seq;
        tenants.next_seq += 1;
        if wait.is_zero() {
            return Ok(Reservation::Now);
        }
        st.waiting += 1;
        Ok(Reservation::Wait {
            start,
            guard: WaitGuard {
                state: Arc::clone(&self.state),
                tenant: tenant.clone(),
                seq,
                previous_tat,
                previous_seq,
                done: false,
            },
        })
    }
}

impl Pacer for LocalPacer {
    fn acquire(
        &self,
        tenant: &TenantId,
        rate: Rate,
        burst: u32,
        max_wait: Duration,
    ) -> BoxFuture<'_, Result<Permit, PaceRejection>> {
        let now = Instant::now();
        match self.reserve(tenant, rate, burst, max_wait, now) {
            Err(rejection) => Box::pin(future::ready(Err(rejection))),
            Ok(Reservation::Now) => Box::pin(future::ready(Ok(Permit {
                waited: Duration::ZERO,
            }))),
            Ok(Reservation::Wait { start, mut guard }) => Box::pin(async move {
                tokio::time::sleep_until(start).await;
                guard.done = true;
                drop(guard);
                Ok(Permit {
                    waited: start - now,
                })
            }),
        }
    }

    fn pause_until(&self, tenant: &TenantId, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut tenants = lock(&self.state);
        let st = tenants
            .by_id
            .entry(tenant.clone())
            .or_insert_with(|| TenantState::fresh(now));
        st.pause = Some(st.pause.map_or(until, |p| p.max(until)));
    }

    fn queue_depth(&self, tenant: &TenantId) -> usize {
        lock(&self.state)
            .by_id
            .get(tenant)
            .map_or(0, |st| st.waiting)
    }

    fn waiting(&self) -> usize {
        lock(&self.state).by_id.values().map(|st| st.waiting).sum()
    }
}

/// Counts a waiter while it waits, and hands its slot back if it is dropped
/// early while still being the newest reservation.
struct WaitGuard {
    state: Arc<Mutex<Tenants>>,
    tenant: TenantId,
    seq: u64,
    previous_tat: Instant,
    previous_seq: u64,
    /// The slot was reached; nothing to hand back.
    done: bool,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut tenants = lock(&self.state);
        // Entries with waiters are never swept, so the entry is there.
        if let Some(st) = tenants.by_id.get_mut(&self.tenant) {
            st.waiting = st.waiting.saturating_sub(1);
            if !self.done && st.last_seq == self.seq {
                st.tat = self.previous_tat;
                // The reservation before ours becomes the newest again, so it
                // too can hand its slot back if it is abandoned.
                st.last_seq = self.previous_seq;
            }
        }
    }
}

fn lock(state: &Mutex<Tenants>) -> MutexGuard<'_, Tenants> {
    // A panic while holding the lock cannot leave a reservation half made
    // (all updates are plain assignments), so the state is still usable.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn per_second(n: u32) -> Rate {
        Rate::Per {
            count: n,
            period: Duration::from_secs(1),
        }
    }

    fn pacer(queue_timeout_secs: u64, queue_depth: usize) -> Arc<LocalPacer> {
        Arc::new(LocalPacer::new(PacingSettings {
            queue_timeout: Duration::from_secs(queue_timeout_secs),
            queue_depth,
        }))
    }

    /// Spawns `n` acquires in order and returns their start offsets from `t0`.
    async fn start_offsets(
        pacer: &Arc<LocalPacer>,
        t: &TenantId,
        rate: Rate,
        burst: u32,
        n: usize,
    ) -> Vec<Duration> {
        let t0 = Instant::now();
        let order = Arc::new(StdMutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..n {
            // The reservation is made here, in call order.
            let p = Arc::clone(pacer);
            let t = t.clone();
            let order = Arc::clone(&order);
            handles.push(tokio::spawn(async move {
                p.acquire(&t, rate, burst, Duration::from_secs(60))
                    .await
                    .unwrap();
                order.lock().unwrap().push((i, Instant::now() - t0));
            }));
            tokio::task::yield_now().await;
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut order = order.lock().unwrap().clone();
        order.sort_by_key(|(i, _)| *i);
        order.into_iter().map(|(_, d)| d).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn ten_concurrent_at_one_per_second_start_a_second_apart() {
        let p = pacer(60, 64);
        let offsets = start_offsets(&p, &tenant("a"), per_second(1), 1, 10).await;
        let expected: Vec<_> = (0..10).map(Duration::from_secs).collect();
        assert_eq!(offsets, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_goes_at_once_then_spacing() {
        let p = pacer(60, 64);
        let offsets = start_offsets(&p, &tenant("a"), per_second(2), 3, 6).await;
        let ms = |m| Duration::from_millis(m);
        assert_eq!(
            offsets,
            vec![ms(0), ms(0), ms(0), ms(500), ms(1000), ms(1500)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_handed_out_in_arrival_order() {
        let p = pacer(60, 64);
        let t = tenant("a");
        let finished = Arc::new(StdMutex::new(Vec::new()));
        let mut futures = Vec::new();
        for i in 0..5 {
            let fut = p.acquire(&t, per_second(1), 1, Duration::from_secs(60));
            let finished = Arc::clone(&finished);
            futures.push(async move {
                fut.await.unwrap();
                finished.lock().unwrap().push(i);
            });
        }
        // Poll them newest first: the order of the calls decides, not polling.
        futures.reverse();
        futures_util::future::join_all(futures).await;
        assert_eq!(*finished.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_beyond_max_wait_is_refused_with_a_truthful_retry_after() {
        let p = pacer(60, 64);
        let t = tenant("a");
        let rate = per_second(1);
        let max_wait = Duration::from_secs(3);
        let t0 = Instant::now();
        let mut waiting = Vec::new();
        for _ in 0..4 {
            waiting.push(p.acquire(&t, rate, 1, max_wait));
        }
        // Slots 0..3 s are taken; the next one is 4 s away.
        let rejection = p.acquire(&t, rate, 1, max_wait).await.unwrap_err();
        assert_eq!(rejection.reason, Reason::WouldExceedDeadline);
        assert_eq!(rejection.retry_after, Duration::from_secs(4));
        assert_eq!((rejection.limit, rejection.remaining), (1, 0));
        futures_util::future::join_all(waiting).await;

        // The backlog is served; now go to where Retry-After pointed.
        tokio::time::advance((t0 + rejection.retry_after) - Instant::now()).await;
        let before = Instant::now();
        let permit = p.acquire(&t, rate, 1, Duration::ZERO).await.unwrap();
        assert_eq!(permit.waited, Duration::ZERO);
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_from_a_rejection_is_enough() {
        let p = pacer(60, 64);
        let t = tenant("a");
        let rate = per_second(1);
        let _taken: Vec<_> = (0..5)
            .map(|_| p.acquire(&t, rate, 1, Duration::from_secs(10)))
            .collect();
        let rejection = p
            .acquire(&t, rate, 1, Duration::from_secs(2))
            .await
            .unwrap_err();
        // Advancing by exactly `retry_after` is enough for an immediate slot.
        tokio::time::advance(rejection.retry_after).await;
        let permit = p.acquire(&t, rate, 1, Duration::ZERO).await;
        assert_eq!(
            permit,
            Ok(Permit {
                waited: Duration::ZERO
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_is_refused_at_once() {
        let p = pacer(60, 2);
        let t = tenant("a");
        let rate = per_second(1);
        let first = p.acquire(&t, rate, 1, Duration::from_secs(60)).await;
        assert!(first.is_ok());
        let w1 = p.acquire(&t, rate, 1, Duration::from_secs(60));
        let w2 = p.acquire(&t, rate, 1, Duration::from_secs(60));
        assert_eq!(p.queue_depth(&t), 2);
        let before = Instant::now();
        let rejection = p
            .acquire(&t, rate, 1, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(rejection.reason, Reason::QueueFull);
        assert_eq!(rejection.retry_after, Duration::from_secs(3));
        assert_eq!(
            Instant::now(),
            before,
            "a full queue must not make the caller wait"
        );
        w1.await.unwrap();
        w2.await.unwrap();
        assert_eq!(p.queue_depth(&t), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_tenant_does_not_delay_a_quiet_one() {
        let p = pacer(60, 64);
        let busy = tenant("busy");
        let quiet = tenant("quiet");
        let rate = per_second(1);
        let backlog: Vec<_> = (0..31)
            .map(|_| p.acquire(&busy, rate, 1, Duration::from_secs(60)))
            .collect();
        assert_eq!(p.queue_depth(&busy), 30);
        let before = Instant::now();
        let permit = p.acquire(&quiet, rate, 1, Duration::ZERO).await.unwrap();
        assert_eq!(permit.waited, Duration::ZERO);
        assert_eq!(Instant::now(), before);
        drop(backlog);
        assert_eq!(p.queue_depth(&busy), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits_and_keeps_no_state() {
        let p = pacer(0, 0);
        let t = tenant("local");
        for _ in 0..1000 {
            let permit = p.acquire(&t, Rate::Unlimited, 1, Duration::ZERO).await;
            assert_eq!(
                permit,
                Ok(Permit {
                    waited: Duration::ZERO
                })
            );
        }
        assert_eq!(p.tracked_tenants(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_delays_the_next_slot_and_spends_the_burst() {
        let p = pacer(60, 64);
        let t = tenant("a");
        let rate = per_second(1);
        p.pause_until(&t, Instant::now() + Duration::from_secs(5));
        let offsets = start_offsets(&p, &t, rate, 3, 3).await;
        let s = Duration::from_secs;
        assert_eq!(offsets, vec![s(5), s(6), s(7)]);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_also_holds_unlimited_tenants() {
        let p = pacer(60, 64);
        let t = tenant("local");
        p.pause_until(&t, Instant::now() + Duration::from_secs(2));
        let rejection = p
            .acquire(&t, Rate::Unlimited, 1, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(rejection.retry_after, Duration::from_secs(2));
        let permit = p
            .acquire(&t, Rate::Unlimited, 1, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(permit.waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_newest_waiter_hands_its_slot_back() {
        let p = pacer(60, 64);
        let t = tenant("a");
        let rate = per_second(1);
        p.acquire(&t, rate, 1, Duration::from_secs(60))
            .await
            .unwrap();
        let kept = p.acquire(&t, rate, 1, Duration::from_secs(60)); // slot at 1 s
        let abandoned = p.acquire(&t, rate, 1, Duration::from_secs(60)); // slot at 2 s
        drop(abandoned);
        assert_eq!(p.queue_depth(&t), 1);
        let next = p.acquire(&t, rate, 1, Duration::from_secs(60));
        let t0 = Instant::now();
        kept.await.unwrap();
        let permit = next.await.unwrap();
        assert_eq!(permit.waited, Duration::from_secs(2));
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_middle_waiter_leaves_its_slot_consumed() {
        let p = pacer(60, 64);
        let t = tenant("a");
        let rate = per_second(1);
        p.acquire(&t, rate, 1, Duration::from_secs(60))
            .await
            .unwrap();
        let abandoned = p.acquire(&t, rate, 1, Duration::from_secs(60)); // 1 s
        let kept = p.acquire(&t, rate, 1, Duration::from_secs(60)); // 2 s
        drop(abandoned);
        let next = p.acquire(&t, rate, 1, Duration::from_secs(60));
        assert_eq!(kept.await.unwrap().waited, Duration::from_secs(2));
        assert_eq!(next.await.unwrap().waited, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tenants_are_forgotten() {
        let p = pacer(60, 64);
        let rate = per_second(1);
        for i in 0..10 {
            p.acquire(&tenant(&format!("t{i}")), rate, 1, Duration::ZERO)
                .await
                .unwrap();
        }
        assert_eq!(p.tracked_tenants(), 10);
        p.housekeeping();
        assert_eq!(p.tracked_tenants(), 10, "budgets still in use are kept");
        tokio::time::advance(Duration::from_secs(1)).await;
        p.housekeeping();
        assert_eq!(p.tracked_tenants(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_sweeps_itself_as_it_grows() {
        let p = pacer(60, 64);
        let rate = per_second(1);
        for i in 0..1000 {
            p.acquire(&tenant(&format!("t{i}")), rate, 1, Duration::ZERO)
                .await
                .unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(
            p.tracked_tenants() <= MIN_SWEEP_AT,
            "{}",
            p.tracked_tenants()
        );
    }
}
