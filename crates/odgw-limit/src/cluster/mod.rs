//! Budgets shared by every odgw replica through one Redis (`limits.backend =
//! "redis"`): [`RedisLimits`] holds the connection and its health, and hands
//! out the shared tenant pacer ([`RedisLimits::pacer`]) and subject limit
//! ([`RedisLimits::subject_limit`]).
//!
//! Every decision is one Lua script run atomically on Redis's own clock
//! (`TIME`), so replicas need neither a lock nor synchronised clocks. The
//! scripts sit beside this file; their headers describe the keys they use.
//!
//! While Redis cannot be reached, [`OnFailure`] decides: pace in process
//! (each replica then spends a tenant's whole budget on its own) or refuse
//! with 503 `limiter_unavailable`. A failed operation switches at once, later
//! requests go straight to the policy without waiting for Redis, and a probe
//! (at most one per second from the request path, plus
//! [`RedisLimits::spawn_health_check`]) switches back once Redis answers.

mod pacer;

use std::{
    fmt,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::Duration,
};

use aws_lc_rs::{
    hkdf::{Salt, HKDF_SHA256},
    hmac,
};
use odgw_core::{Rate, SecretString, TenantId};
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    RedisError, Script, ScriptInvocation,
};
use zeroize::Zeroizing;

use crate::{Pacer, PacingSettings, SubjectKey, SubjectLimitLayer};

/// How often at most the request path probes a Redis that is down.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a tenant's upstream pause is kept in Redis after it ends, so
/// that the next reservation still finds it and spends the burst. Covers
/// any burst tolerance up to this long; beyond it the tenant simply starts
/// with a full burst, as a fresh one would.
const PAUSE_GRACE: Duration = Duration::from_secs(600);

/// Durations handed to the scripts are capped here: Lua numbers are doubles,
/// exact to 2^53, and Redis's clock in µs is about 2^51 already.
const MAX_SCRIPT_MICROS: u64 = 1 << 50;

/// How to reach Redis and what to do while it cannot be reached (`[redis]`).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` or a unix socket URL
    /// (`redis+unix:///path`). It may hold a password, so it never appears in
    /// a log line or an error.
    pub url: SecretString,
    /// Prefix of every key odgw writes (`redis.key_prefix`), so several
    /// deployments can share one server.
    pub key_prefix: String,
    /// What pacing does while Redis cannot be reached (`redis.on_failure`).
    pub on_failure: OnFailure,
    /// How long one Redis operation may take before Redis counts as
    /// unreachable (`redis.timeout`).
    pub command_timeout: Duration,
    /// A secret every replica holds (odgw passes its master key). Subject
    /// budgets are named by an HMAC-SHA256 of (tenant, issuer, subject)
    /// under a key derived from it (HKDF-SHA256), so replicas with the same
    /// secret share them and nobody who can only read Redis can tell whose
    /// they are. Only the derived key is kept.
    pub subject_secret: SecretString,
}

/// `redis.on_failure`: what the limits do while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Keep budgets in this process ([`LimiterStatus::Local`]). Each replica
    /// then spends a tenant's whole budget on its own, so Open Dental may see
    /// up to `replicas × rate` until Redis is back.
    Local,
    /// Refuse requests that need a budget with 503 `limiter_unavailable`
    /// ([`LimiterStatus::Unavailable`]) rather than risk Open Dental's
    /// throttle.
    Closed,
}

/// Where the budgets are kept right now (for readiness and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterStatus {
    /// In Redis, shared by every replica.
    Shared,
    /// Redis is unreachable and `on_failure = "local"`: in this process.
    Local,
    /// Redis is unreachable and `on_failure = "closed"`: requests that need
    /// a budget are refused with 503 `limiter_unavailable`.
    Unavailable,
}

/// Why [`RedisLimits::connect`] failed. Never contains the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// The URL cannot be used at all (an unreachable server is not an error).
    #[error("redis url is not usable: {0}")]
    InvalidUrl(&'static str),
    /// The key that names subject budgets could not be derived.
    #[error("cannot derive the key that names subject budgets in redis")]
    SubjectKey,
}

/// One connection to the Redis that holds the budgets shared by every
/// replica, and whether that Redis answers.
///
/// Cheap to clone; clones share the connection, its health and the failure
/// count. Build it once per process with [`RedisLimits::connect`], then take
/// the tenant pacer and the subject limit from it.
#[derive(Clone)]
pub struct RedisLimits {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the client nor the connection: their Debug shows the
        // server's address and could show more.
        f.debug_struct("RedisLimits")
            .field("key_prefix", &self.shared.prefix)
            .field("on_failure", &self.shared.on_failure)
            .field("status", &self.status())
            .field("failures", &self.failures())
            .finish()
    }
}

impl RedisLimits {
    /// Opens the connection and checks that Redis answers.
    ///
    /// Fails only for a URL that cannot be used (malformed, or `rediss://`:
    /// this build has no TLS for Redis). An unreachable Redis is not an
    /// error: the limits start in the [`OnFailure`] policy (one warning is
    /// logged) and turn shared by themselves once Redis answers.
    pub async fn connect(settings: RedisSettings) -> Result<Self, LimitError> {
        let url = settings.url.expose();
        let scheme = url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        if matches!(scheme.as_deref(), Some("rediss" | "valkeys")) {
            return Err(LimitError::InvalidUrl(
                "TLS (rediss://) is not supported; use redis:// on a trusted network or a unix socket",
            ));
        }
        // The client's own parse error may quote the URL, so it is dropped.
        let client = redis::Client::open(url).map_err(|_| {
            LimitError::InvalidUrl(
                "expected redis://[user:password@]host[:port][/db] or redis+unix:///path",
            )
        })?;
        let timeout = settings.command_timeout.max(Duration::from_millis(1));
        let conn = connection(&client, timeout).map_err(|_| {
            LimitError::InvalidUrl("the redis client refused this connection configuration")
        })?;
        let subject_names = SubjectNamer::derive(&settings.subject_secret)?;
        let shared = Arc::new(Shared {
            client,
            conn: RwLock::new(conn),
            prefix: settings.key_prefix,
            subject_names,
            on_failure: settings.on_failure,
            timeout,
            health: Health::new(),
            replica: format!("{:016x}", random_u64()),
            next_reservation: AtomicU64::new(1),
            scripts: Scripts::new(),
        });
        if shared.probe().await {
            tracing::info!(
                key_prefix = %shared.prefix,
                "redis reachable; tenant budgets and subject limits are shared"
            );
        }
        Ok(Self { shared })
    }

    /// The tenant pacer whose budgets every replica shares.
    ///
    /// The same GCRA as [`crate::LocalPacer`], made by one script on Redis
    /// per request; the caller then waits on a local timer. The reservation
    /// is made when the future is first polled. `settings.queue_depth`
    /// bounds the waiting requests of all replicas together, counted from
    /// the reservations themselves (those whose start lies ahead), so a
    /// replica that dies leaves no count behind. A waiter dropped before its
    /// slot hands the slot back if it is still the newest reservation; an
    /// upstream 429 ([`Pacer::pause_until`]) is written to Redis and holds
    /// every replica.
    ///
    /// Keys: `{prefix}pace:{tenant}` (a hash: TAT, pause, newest
    /// reservation) and `{prefix}pace:{tenant}:queue` (a sorted set), both
    /// expiring once the tenant is idle; `{prefix}probe` for health checks.
    /// One Redis (or a primary with replicas); Redis Cluster is not
    /// supported, as a tenant's two keys may sit in different slots.
    ///
    /// [`Rate::Unlimited`] tenants never touch Redis: they have nothing to
    /// share, and a pause from this replica's own upstream 429 holds them
    /// (pauses from other replicas do not; Open Dental does not throttle the
    /// Local and Service modes that such tenants use).
    ///
    /// [`Pacer::queue_depth`] and [`Pacer::waiting`] count this replica's
    /// waiters only: they are gauges, read without a round trip.
    pub fn pacer(&self, settings: PacingSettings) -> Arc<dyn Pacer> {
        Arc::new(pacer::RedisPacer::new(Arc::clone(&self.shared), settings))
    }

    /// The subject limit shared by every replica: the same layer type and
    /// 429 responses as [`crate::subject_limit_layer`], with each caller's
    /// budget in Redis under a key that is a hash of (tenant, issuer,
    /// subject), so no subject text is stored in Redis.
    ///
    /// While Redis is unreachable, `on_failure = "local"` limits in process
    /// (as [`crate::subject_limit_layer`] does) and `"closed"` answers 503
    /// `limiter_unavailable`. [`Rate::Unlimited`] gives a layer that passes
    /// everything without touching Redis.
    pub fn subject_limit(&self, rate: Rate, burst: u32) -> SubjectLimitLayer {
        SubjectLimitLayer::shared(rate, burst, self.clone())
    }

    /// Where the budgets are kept right now.
    pub fn status(&self) -> LimiterStatus {
        if !self.shared.health.is_down() {
            LimiterStatus::Shared
        } else {
            match self.shared.on_failure {
                OnFailure::Local => LimiterStatus::Local,
                OnFailure::Closed => LimiterStatus::Unavailable,
            }
        }
    }

    /// Redis operations that failed (errors and timeouts, probes included)
    /// since [`Self::connect`]; a counter for metrics.
    pub fn failures(&self) -> u64 {
        self.shared.health.failures.load(Ordering::Relaxed)
    }

    /// Checks Redis every `every` on the current tokio runtime until every
    /// clone of these limits (and the pacers and layers made from them) is
    /// gone: an outage is noticed even while no request comes, and a
    /// recovery switches the limits back to shared. Requests also probe a
    /// Redis that is down, at most once per second, so recovery does not
    /// depend on this task; it makes [`Self::status`] timely.
    pub fn spawn_health_check(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let shared = Arc::downgrade(&self.shared);
        let every = every.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.probe().await;
            }
        })
    }

    /// Whether Redis is to be asked now; see [`Shared::usable`].
    pub(crate) fn usable(&self) -> bool {
        self.shared.usable()
    }

    pub(crate) fn on_failure(&self) -> OnFailure {
        self.shared.on_failure
    }

    /// One request of `key` against its shared inbound limit.
    pub(crate) async fn check_subject(
        &self,
        key: &SubjectKey,
        interval: Duration,
        tolerance: Duration,
    ) -> SubjectVerdict {
        let shared = &self.shared;
        let mut invocation = shared.scripts.subject.prepare_invoke();
        invocation
            .key(shared.subject_names.key_name(&shared.prefix, key))
            .arg(script_micros(interval))
            .arg(script_micros(tolerance));
        match shared.eval::<u64>(&invocation).await {
            None => SubjectVerdict::Unreachable,
            Some(0) => SubjectVerdict::Allowed,
            Some(wait) => SubjectVerdict::Denied(Duration::from_micros(wait)),
        }
    }
}

/// The answer of the shared subject limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubjectVerdict {
    Allowed,
    /// Over the limit; there is room again after this long.
    Denied(Duration),
    /// Redis did not answer; the failure policy decides.
    Unreachable,
}

/// What every handle of one [`RedisLimits`] shares.
struct Shared {
    /// Kept to open a fresh connection when Redis comes back.
    client: redis::Client,
    conn: RwLock<ConnectionManager>,
    prefix: String,
    subject_names: SubjectNamer,
    on_failure: OnFailure,
    timeout: Duration,
    health: Health,
    /// Random per process: with the counter it names reservations uniquely
    /// across replicas, so a hand-back can only ever match its own.
    replica: String,
    next_reservation: AtomicU64,
    scripts: Scripts,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("key_prefix", &self.prefix)
            .field("on_failure", &self.on_failure)
            .field("down", &self.health.is_down())
            .finish_non_exhaustive()
    }
}

/// The Lua scripts, loaded once per connection (EVALSHA, falling back to
/// EVAL when Redis does not know them yet, e.g. after a restart).
struct Scripts {
    reserve: Script,
    hand_back: Script,
    pause: Script,
    subject: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            reserve: Script::new(include_str!("reserve.lua")),
            hand_back: Script::new(include_str!("hand_back.lua")),
            pause: Script::new(include_str!("pause.lua")),
            subject: Script::new(include_str!("subject.lua")),
        }
    }
}

/// Whether Redis answers, as last seen; and how often it did not.
struct Health {
    down: AtomicBool,
    failures: AtomicU64,
    /// Origin of the millisecond clocks below.
    epoch: std::time::Instant,
    down_since_ms: AtomicU64,
    next_probe_ms: AtomicU64,
}

impl Health {
    fn new() -> Self {
        Self {
            down: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            down_since_ms: AtomicU64::new(0),
            next_probe_ms: AtomicU64::new(0),
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The reply of `reserve.lua`: verdict, wait µs, previous TAT, previous newest id.
type ReserveReply = (i64, i64, i64, String);

impl Shared {
    fn connection(&self) -> ConnectionManager {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether to ask Redis now. When Redis is down, the answer is no
    /// without any waiting, and a probe is started at most once per
    /// [`PROBE_EVERY`] so that recovery needs no health-check task.
    fn usable(self: &Arc<Self>) -> bool {
        if !self.health.is_down() {
            return true;
        }
        let now = self.health.now_ms();
        let next = self.health.next_probe_ms.load(Ordering::Acquire);
        let claimed = now >= next
            && self
                .health
                .next_probe_ms
                .compare_exchange(
                    next,
                    now + PROBE_EVERY.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        if claimed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let me = Arc::clone(self);
                runtime.spawn(async move {
                    me.probe().await;
                });
            }
        }
        false
    }

    /// Runs one script within the command timeout. `None` when Redis failed
    /// to answer, which switches to the failure policy.
    async fn eval<T: redis::FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Option<T> {
        self.eval_on(self.connection(), invocation).await
    }

    /// [`Shared::eval`] on the connection `conn`.
    async fn eval_on<T: redis::FromRedisValue>(
        &self,
        mut conn: ConnectionManager,
        invocation: &ScriptInvocation<'_>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.failed(&describe(&error));
                None
            }
            Err(_) => {
                self.failed("timeout");
                None
            }
        }
    }

    /// Checks that Redis runs our scripts (not just that it answers PING: a
    /// read-only replica or a script error would fail every request).
    /// Returns whether it does, and switches the health accordingly.
    async fn probe(&self) -> bool {
        let was_down = self.health.is_down();
        let conn = if was_down {
            // A fresh connection rather than the old one: the manager
            // reconnects after a dropped connection but not after timeouts,
            // so the old one may be half-open for good.
            match connection(&self.client, self.timeout) {
                Ok(conn) => conn,
                Err(error) => {
                    self.failed(&describe(&error));
                    return false;
                }
            }
        } else {
            self.connection()
        };
        let probe_key = format!("{}probe", self.prefix);
        let mut invocation = self.scripts.reserve.prepare_invoke();
        invocation
            .key(&probe_key)
            .key(format!("{probe_key}:queue"))
            .arg(1)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg("probe");
        if self
            .eval_on::<ReserveReply>(conn.clone(), &invocation)
            .await
            .is_none()
        {
            return false;
        }
        if was_down {
            *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
        }
        self.recovered();
        true
    }

    /// Counts a failed operation; the first of an outage switches to the
    /// failure policy and is the outage's one warning.
    fn failed(&self, cause: &str) {
        self.health.failures.fetch_add(1, Ordering::Relaxed);
        if self.health.down.swap(true, Ordering::AcqRel) {
            tracing::debug!(cause, "redis operation failed");
            return;
        }
        let now = self.health.now_ms();
        self.health.down_since_ms.store(now, Ordering::Release);
        self.health
            .next_probe_ms
            .store(now + PROBE_EVERY.as_millis() as u64, Ordering::Release);
        match self.on_failure {
            OnFailure::Local => tracing::warn!(
                cause,
                on_failure = "local",
                "redis unreachable; tenant budgets and subject limits are kept in this process until it answers"
            ),
            OnFailure::Closed => tracing::warn!(
                cause,
                on_failure = "closed",
                "redis unreachable; requests needing a budget get 503 limiter_unavailable until it answers"
            ),
        }
    }

    fn recovered(&self) {
        if self.health.down.swap(false, Ordering::AcqRel) {
            let outage_ms = self
                .health
                .now_ms()
                .saturating_sub(self.health.down_since_ms.load(Ordering::Acquire));
            tracing::info!(
                outage_ms,
                "redis reachable again; tenant budgets and subject limits are shared again"
            );
        }
    }

    fn reservation_id(&self) -> String {
        let n = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.replica)
    }
}

/// The keys of one tenant's shared budget.
#[derive(Debug, Clone)]
struct PaceKeys {
    /// `{prefix}pace:{tenant}`: TAT, pause and newest reservation.
    state: String,
    /// `{prefix}pace:{tenant}:queue`: the waiting reservations.
    queue: String,
}

impl PaceKeys {
    fn new(prefix: &str, tenant: &TenantId) -> Self {
        // Tenant ids are [A-Za-z0-9._-], so no tenant's state key can be
        // another tenant's queue key.
        let state = format!("{prefix}pace:{tenant}");
        let queue = format!("{state}:queue");
        Self { state, queue }
    }
}

/// Names subject budgets in Redis: `{prefix}subj:{hmac}`, the HMAC-SHA256
/// (lowercase hex) of (tenant, issuer, subject), each length-prefixed so that
/// no two triples give the same text.
///
/// Subject text (often an e-mail address) stays out of key names, `SCAN`
/// output and `SLOWLOG`; and because the HMAC is keyed, someone who can read
/// Redis cannot confirm a guessed subject by hashing it. Collisions would
/// only merge two callers' budgets.
struct SubjectNamer(hmac::Key);

impl SubjectNamer {
    /// HKDF-SHA256 of the shared secret with a label of its own, so this key
    /// is never a key used for anything else.
    fn derive(secret: &SecretString) -> Result<Self, LimitError> {
        let okm = Salt::new(HKDF_SHA256, b"odgw redis subject budgets")
            .extract(secret.expose().as_bytes());
        // Filled into a buffer that is zeroed on drop, rather than through
        // `hmac::Key::from(okm)`, which leaves the key bytes on the stack.
        let mut key = Zeroizing::new([0u8; 32]);
        okm.expand(&[b"hmac-sha256 v1"], hmac::HMAC_SHA256)
            .and_then(|material| material.fill(&mut key[..]))
            .map_err(|_| LimitError::SubjectKey)?;
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, &key[..])))
    }

    fn key_name(&self, prefix: &str, key: &SubjectKey) -> String {
        let tenant = key.tenant.as_str();
        let material = format!(
            "{}:{tenant}\n{}:{}\n{}:{}",
            tenant.len(),
            key.issuer.len(),
            key.issuer,
            key.subject.len(),
            key.subject
        );
        let tag = hmac::sign(&self.0, material.as_bytes());
        format!("{prefix}subj:{}", hex::encode(tag))
    }
}

fn connection(client: &redis::Client, timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // Retrying inside the manager would hold requests; the health probe
        // is the retry.
        .set_number_of_retries(0);
    // Lazy: nothing is dialled until the first command, so an unreachable
    // Redis costs a failed command, not a failed start.
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// What went wrong, for a log line: the error's class only. The client's
/// messages can name the server, and nothing here may echo the URL.
fn describe(error: &RedisError) -> String {
    if error.is_timeout() {
        "timeout".to_owned()
    } else if error.is_connection_refusal() {
        "connection refused".to_owned()
    } else if error.is_connection_dropped() {
        "connection dropped".to_owned()
    } else if error.is_io_error() {
        "io error".to_owned()
    } else if let Some(code) = error.code() {
        // Server error codes are fixed words (NOAUTH, READONLY, OOM …).
        format!("server error: {code}")
    } else {
        format!("{:?}", error.kind())
    }
}

fn script_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .min(MAX_SCRIPT_MICROS)
}

/// 64 random bits without a random-number crate: std's `RandomState` is
/// seeded from the operating system's randomness.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str, issuer: &str, subject: &str) -> SubjectKey {
        SubjectKey {
            tenant: TenantId::parse(tenant).unwrap(),
            issuer: Arc::from(issuer),
            subject: Arc::from(subject),
        }
    }

    #[test]
    fn subject_keys_hide_the_subject_and_separate_the_parts() {
        let names = SubjectNamer::derive(&SecretString::new("master")).unwrap();
        let name = |k: &SubjectKey| names.key_name("p:", k);
        let alice = name(&key("t1", "https://idp/", "alice@example.com"));
        assert!(alice.starts_with("p:subj:"), "{alice}");
        assert_eq!(alice.len(), "p:subj:".len() + 64);
        assert!(!alice.contains("alice"));
        // Pinned (computed independently: HKDF-SHA256 then HMAC-SHA256 as
        // documented): a changed label or layout would split every
        // subject's budget between old and new replicas during an upgrade.
        assert_eq!(
            alice,
            "p:subj:742a51d8616259ba8d9a04dce1b36fe627227edb6314a0d12cd5d1372a230f1d"
        );
        let alice_under = |secret: &str| {
            SubjectNamer::derive(&SecretString::new(secret))
                .unwrap()
                .key_name("p:", &key("t1", "https://idp/", "alice@example.com"))
        };
        assert_eq!(
            alice,
            alice_under("master"),
            "every replica with the same secret computes the same key"
        );
        assert_ne!(
            alice,
            alice_under("other"),
            "the name depends on the secret"
        );
        // Moving text between the parts gives another key.
        assert_ne!(
            name(&key("t1", "a\n1:b", "c")),
            name(&key("t1", "a", "b\n1:c")),
        );
        assert_ne!(alice, name(&key("t2", "https://idp/", "alice@example.com")));
        assert_ne!(
            alice,
            name(&key("t1", "https://other/", "alice@example.com"))
        );
    }

    #[test]
    fn pace_keys_name_the_tenant() {
        let keys = PaceKeys::new("odgw:", &TenantId::parse("practice-1").unwrap());
        assert_eq!(keys.state, "odgw:pace:practice-1");
        assert_eq!(keys.queue, "odgw:pace:practice-1:queue");
    }

    #[test]
    fn durations_for_scripts_stay_exact_in_lua() {
        assert_eq!(script_micros(Duration::from_millis(250)), 250_000);
        assert_eq!(script_micros(Duration::MAX), MAX_SCRIPT_MICROS);
    }

    fn settings(url: &str) -> RedisSettings {
        RedisSettings {
            url: SecretString::new(url),
            key_prefix: "odgw:".to_owned(),
            on_failure: OnFailure::Local,
            command_timeout: Duration::from_millis(250),
            subject_secret: SecretString::new("master"),
        }
    }

    #[tokio::test]
    async fn unusable_urls_are_refused_without_echoing_them() {
        for url in [
            "http://user:hunter2@redis.internal:6379",
            "redis//user:hunter2@",
            "rediss://user:hunter2@redis.internal:6380",
            "hunter2",
        ] {
            let error = RedisLimits::connect(settings(url)).await.unwrap_err();
            let text = format!("{error} {error:?}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("redis.internal"), "{text}");
        }
        let tls = RedisLimits::connect(settings("rediss://h:6380"))
            .await
            .unwrap_err();
        assert!(tls.to_string().contains("TLS"), "{tls}");
    }

    #[test]
    fn replica_ids_are_random() {
        assert_ne!(random_u64(), random_u64());
    }
}
