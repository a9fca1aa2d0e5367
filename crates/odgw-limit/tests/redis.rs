//! The shared limits against a real Redis: several `RedisLimits` stand for
//! several odgw replicas.
//!
//! Shared-budget tests use the Redis at `ODGW_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), each under its own random key prefix, deleted
//! at the end. Outage tests start a private `redis-server` on a free port and
//! kill it. Without a reachable Redis or a `redis-server` binary a test says
//! so on stderr and passes, unless `ODGW_TEST_REDIS_REQUIRED` is set (CI sets
//! it where Redis is installed): then it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    future::Future,
    hash::BuildHasher,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use http::{Method, StatusCode};
use odgw_core::{
    Body, Identity, Principal, Rate, Request, RequestContext, RequestId, Response, SecretString,
    Tenant, TenantAccess, TenantId,
};
use odgw_limit::{
    LimiterStatus, OnFailure, Pacer, PacingLayer, PacingSettings, Reason, RedisLimits,
    RedisSettings,
};
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

// ---------------------------------------------------------------- helpers

fn required() -> bool {
    std::env::var_os("ODGW_TEST_REDIS_REQUIRED").is_some_and(|v| !v.is_empty() && v != "0")
}

fn skip(why: &str) {
    assert!(!required(), "{why} (ODGW_TEST_REDIS_REQUIRED is set)");
    eprintln!("SKIPPED: {why}");
}

/// Unwraps a prerequisite, or skips the test.
macro_rules! need {
    ($prerequisite:expr) => {
        match $prerequisite {
            Ok(value) => value,
            Err(why) => {
                skip(&why);
                return;
            }
        }
    };
}

/// The shared test Redis, if it answers.
async fn test_redis() -> Result<String, String> {
    let url = std::env::var("ODGW_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    match tokio::time::timeout(Duration::from_secs(2), ping(&url)).await {
        Ok(Ok(())) => Ok(url),
        _ => Err("no Redis answers at ODGW_TEST_REDIS_URL (or redis://127.0.0.1:6379)".into()),
    }
}

async fn ping(url: &str) -> redis::RedisResult<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A key prefix no other test (or run) uses.
fn prefix() -> String {
    let random =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    format!("odgw-test:{random:016x}:")
}

/// Every key under `prefix`.
async fn keys(url: &str, prefix: &str) -> Vec<String> {
    let mut conn = conn(url).await;
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        found.extend(batch);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

async fn delete_keys(url: &str, prefix: &str) {
    let found = keys(url, prefix).await;
    if !found.is_empty() {
        let mut conn = conn(url).await;
        redis::cmd("DEL")
            .arg(&found)
            .query_async::<i64>(&mut conn)
            .await
            .unwrap();
    }
}

/// The secret every replica of a test cluster holds (odgw's master key).
const CLUSTER_SECRET: &str = "the cluster's master key";

async fn replica(url: &str, prefix: &str, on_failure: OnFailure) -> RedisLimits {
    replica_holding(url, prefix, on_failure, CLUSTER_SECRET).await
}

async fn replica_holding(
    url: &str,
    prefix: &str,
    on_failure: OnFailure,
    secret: &str,
) -> RedisLimits {
    RedisLimits::connect(RedisSettings {
        url: SecretString::new(url),
        key_prefix: prefix.to_owned(),
        on_failure,
        command_timeout: Duration::from_millis(250),
        subject_secret: SecretString::new(secret),
    })
    .await
    .unwrap()
}

/// Two replicas, A and B, sharing one Redis under a key prefix of their own.
struct Pair {
    url: String,
    prefix: String,
    a: RedisLimits,
    b: RedisLimits,
}

impl Pair {
    /// On the shared test Redis, with `on_failure = "closed"`.
    async fn new() -> Result<Self, String> {
        Ok(Self::on(test_redis().await?, OnFailure::Closed).await)
    }

    async fn on(url: String, on_failure: OnFailure) -> Self {
        let prefix = prefix();
        let a = replica(&url, &prefix, on_failure).await;
        let b = replica(&url, &prefix, on_failure).await;
        Self { url, prefix, a, b }
    }

    /// The tenant pacers of A and B.
    fn pacers(&self, queue_depth: usize) -> (Arc<dyn Pacer>, Arc<dyn Pacer>) {
        (
            self.a.pacer(pacing(queue_depth)),
            self.b.pacer(pacing(queue_depth)),
        )
    }

    /// A connection of the test's own, for looking at what the pair wrote.
    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        conn(&self.url).await
    }

    /// Every key the pair wrote.
    async fn keys(&self) -> Vec<String> {
        keys(&self.url, &self.prefix).await
    }

    async fn delete_keys(&self) {
        delete_keys(&self.url, &self.prefix).await;
    }
}

fn pacing(queue_depth: usize) -> PacingSettings {
    PacingSettings {
        queue_timeout: Duration::from_secs(30),
        queue_depth,
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn per_second(count: u32) -> Rate {
    Rate::Per {
        count,
        period: Duration::from_secs(1),
    }
}

fn per_minute(count: u32) -> Rate {
    Rate::Per {
        count,
        period: Duration::from_secs(60),
    }
}

/// Polls `check` until it holds, failing the test after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Acquires a slot (waiting up to 30 s) in a task that yields when it
/// started.
fn spawn_acquire(
    pacer: &Arc<dyn Pacer>,
    t: &TenantId,
    rate: Rate,
    burst: u32,
) -> tokio::task::JoinHandle<Instant> {
    let (pacer, t) = (Arc::clone(pacer), t.clone());
    tokio::spawn(async move {
        pacer
            .acquire(&t, rate, burst, Duration::from_secs(30))
            .await
            .unwrap();
        Instant::now()
    })
}

/// The start times of `tasks` (from [`spawn_acquire`]), earliest first.
async fn start_times(tasks: Vec<tokio::task::JoinHandle<Instant>>) -> Vec<Instant> {
    let mut starts = Vec::new();
    for task in tasks {
        starts.push(task.await.unwrap());
    }
    starts.sort();
    starts
}

/// Starts `acquire` in a task and waits until its reservation is made (the
/// pacer counts it as waiting). Returns the task, which yields the start.
async fn waiting(
    pacer: &Arc<dyn Pacer>,
    t: &TenantId,
    rate: Rate,
) -> tokio::task::JoinHandle<Instant> {
    let before = pacer.queue_depth(t);
    let task = spawn_acquire(pacer, t, rate, 1);
    eventually("the waiter's reservation", Duration::from_secs(5), || {
        let depth = pacer.queue_depth(t);
        async move { depth == before + 1 }
    })
    .await;
    task
}

/// Waits until every one of `replicas` reports `status`.
async fn until_status(replicas: &[&RedisLimits], status: LimiterStatus, within: Duration) {
    eventually(&format!("status {status:?}"), within, || {
        let reached = replicas.iter().all(|r| r.status() == status);
        async move { reached }
    })
    .await;
}

fn assert_spaced(starts: &[Instant], interval: Duration) {
    let min_gap = interval.mul_f64(0.9);
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= min_gap,
            "starts {gap:?} apart, expected ≥ {min_gap:?}"
        );
    }
}

fn request(t: &str, subject: &str) -> Request {
    let mut req = Request::new(Body::empty());
    let context = RequestContext::new(RequestId::generate(), None);
    context.facts().update(|f| {
        f.tenant = Some(tenant(t));
        f.principal = Some(Principal::new(Identity {
            subject: subject.to_owned(),
            issuer: "https://idp.example.com/".to_owned(),
            tenants: vec![t.to_owned()],
            scopes: vec!["od:read".to_owned()],
            expires_at: 0,
        }));
    });
    req.extensions_mut().insert(context);
    req
}

fn paced_request(t: &str, rate: Rate) -> Request {
    let mut req = request(t, "alice");
    *req.method_mut() = Method::GET;
    req.extensions_mut().insert(Tenant::new(TenantAccess {
        id: tenant(t),
        base_url: "http://127.0.0.1:1/api/v1".to_owned(),
        authorization: SecretString::new("ODFHIR dev/cust"),
        rate,
        burst: 1,
        generation: 1,
    }));
    req
}

fn ok_service(
) -> impl tower::Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    service_fn(|_req: Request| async { Ok(Response::new(Body::from("ok"))) })
}

/// A private redis-server, killed on drop.
struct RedisServer {
    port: u16,
    password: Option<&'static str>,
    child: Option<Child>,
}

impl RedisServer {
    fn start(port: u16, password: Option<&'static str>) -> Result<Self, String> {
        let mut server = Self {
            port,
            password,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    fn restart(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ]);
        if let Some(password) = self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    async fn ready(&self) {
        let url = self.url();
        eventually("redis-server answers", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(500), ping(&url))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        })
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        match self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn private_server(password: Option<&'static str>) -> Result<RedisServer, String> {
    let server = RedisServer::start(free_port(), password)?;
    server.ready().await;
    Ok(server)
}

// ---------------------------------------------------------------- shared budgets

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_space_one_tenant_together() {
    let pair = need!(Pair::new().await);
    assert_eq!(pair.a.status(), LimiterStatus::Shared);
    let (pa, pb) = pair.pacers(64);
    let pacers = [pa, pb];
    let t = tenant("practice-1");
    let rate = per_second(10);

    let tasks = (0..10)
        .map(|i| spawn_acquire(&pacers[i % 2], &t, rate, 1))
        .collect();
    let starts = start_times(tasks).await;
    assert_spaced(&starts, Duration::from_millis(100));
    assert!(starts[9] - starts[0] >= Duration::from_millis(810));
    assert_eq!(pair.a.failures() + pair.b.failures(), 0);
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_depth_counts_the_waiters_of_every_replica() {
    let pair = need!(Pair::new().await);
    let (pa, pb) = pair.pacers(3);
    let t = tenant("practice-1");
    let rate = per_second(2);

    let first = pa.acquire(&t, rate, 1, Duration::ZERO).await.unwrap();
    assert!(first.waited < Duration::from_millis(100));
    let w1 = waiting(&pa, &t, rate).await;
    let w2 = waiting(&pa, &t, rate).await;
    let w3 = waiting(&pb, &t, rate).await;
    assert_eq!((pa.queue_depth(&t), pb.queue_depth(&t)), (2, 1));

    for pacer in [&pa, &pb] {
        let rejection = pacer
            .acquire(&t, rate, 1, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert_eq!(rejection.reason, Reason::QueueFull);
        // Slots at 0.5, 1 and 1.5 s are taken: the next is 2 s from the first.
        assert!(
            rejection.retry_after > Duration::from_millis(1500)
                && rejection.retry_after <= Duration::from_secs(2),
            "{:?}",
            rejection.retry_after
        );
        assert_eq!((rejection.limit, rejection.remaining), (1, 0));
    }
    for waiter in [w1, w2, w3] {
        waiter.abort();
    }
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_for_the_deadline_is_global_and_reserves_nothing() {
    let pair = need!(Pair::new().await);
    let (pa, pb) = pair.pacers(64);
    let t = tenant("practice-1");
    let rate = per_second(2);

    pa.acquire(&t, rate, 1, Duration::ZERO).await.unwrap();
    let rejection = pb
        .acquire(&t, rate, 1, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(rejection.reason, Reason::WouldExceedDeadline);
    assert!(
        rejection.retry_after > Duration::from_millis(300)
            && rejection.retry_after <= Duration::from_millis(500),
        "{:?}",
        rejection.retry_after
    );
    // Had the refusal reserved a slot, this would wait a whole second.
    let permit = pb
        .acquire(&t, rate, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        permit.waited >= Duration::from_millis(250) && permit.waited < Duration::from_millis(750),
        "{:?}",
        permit.waited
    );
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_from_one_replica_holds_the_other_and_spends_the_burst() {
    let pair = need!(Pair::new().await);
    let (pa, pb) = pair.pacers(64);
    let t = tenant("practice-1");
    let rate = per_second(10);

    let paused_at = Instant::now();
    pa.pause_until(&t, paused_at + Duration::from_secs(1));
    // The write is fire and forget; wait until Redis holds it.
    let state_key = format!("{}pace:practice-1", pair.prefix);
    eventually(
        "the pause reaches redis",
        Duration::from_secs(5),
        || async {
            redis::cmd("HEXISTS")
                .arg(&state_key)
                .arg("pause")
                .query_async::<bool>(&mut pair.conn().await)
                .await
                .unwrap()
        },
    )
    .await;

    let tasks = (0..3).map(|_| spawn_acquire(&pb, &t, rate, 3)).collect();
    let starts = start_times(tasks).await;
    let first = starts[0] - paused_at;
    assert!(
        first >= Duration::from_millis(950) && first < Duration::from_millis(1500),
        "the first request after the pause started at {first:?}"
    );
    // A burst of 3 would start them together; the pause spent it.
    assert_spaced(&starts, Duration::from_millis(100));
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlimited_tenants_leave_nothing_in_redis() {
    let pair = need!(Pair::new().await);
    let pacer = pair.a.pacer(pacing(64));
    for _ in 0..100 {
        let permit = pacer
            .acquire(&tenant("local"), Rate::Unlimited, 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(permit.waited, Duration::ZERO);
    }
    let found = pair.keys().await;
    assert!(found.iter().all(|k| !k.contains("pace:local")), "{found:?}");
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_newest_waiter_hands_its_slot_back_across_replicas() {
    let pair = need!(Pair::new().await);
    let (pa, pb) = pair.pacers(64);
    let t = tenant("practice-1");
    let rate = per_second(4);
    let queue_key = format!("{}pace:practice-1:queue", pair.prefix);

    let t0 = Instant::now();
    pa.acquire(&t, rate, 1, Duration::ZERO).await.unwrap(); // slot 0
    let kept = waiting(&pb, &t, rate).await; // 250 ms
    let abandoned = waiting(&pa, &t, rate).await; // 500 ms
    abandoned.abort();
    eventually(
        "the abandoned waiter leaves",
        Duration::from_secs(5),
        || async {
            redis::cmd("ZCARD")
                .arg(&queue_key)
                .query_async::<usize>(&mut pair.conn().await)
                .await
                .unwrap()
                == 1
        },
    )
    .await;
    assert_eq!(pa.queue_depth(&t), 0);

    // The 500 ms slot is free again: the next request takes it.
    pa.acquire(&t, rate, 1, Duration::from_secs(30))
        .await
        .unwrap();
    let next = t0.elapsed();
    assert!(
        next >= Duration::from_millis(450) && next < Duration::from_millis(650),
        "{next:?}"
    );
    kept.await.unwrap();
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_middle_waiter_leaves_its_slot_consumed() {
    let pair = need!(Pair::new().await);
    let (pa, pb) = pair.pacers(64);
    let t = tenant("practice-1");
    let rate = per_second(4);

    let t0 = Instant::now();
    pa.acquire(&t, rate, 1, Duration::ZERO).await.unwrap(); // slot 0
    let abandoned = waiting(&pa, &t, rate).await; // 250 ms
    let kept = waiting(&pb, &t, rate).await; // 500 ms
    abandoned.abort();
    let _ = abandoned.await;
    assert_eq!(pa.queue_depth(&t), 0);

    pa.acquire(&t, rate, 1, Duration::from_secs(30))
        .await
        .unwrap();
    let next = t0.elapsed();
    assert!(
        next >= Duration::from_millis(700) && next < Duration::from_millis(900),
        "{next:?}"
    );
    kept.await.unwrap();
    pair.delete_keys().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_subject_limit_is_shared_and_keeps_subjects_out_of_key_names() {
    let pair = need!(Pair::new().await);
    let (la, lb) = (
        pair.a.subject_limit(per_minute(1), 2),
        pair.b.subject_limit(per_minute(1), 2),
    );
    assert!(la.is_shared() && la.is_limited());
    let sa = ServiceBuilder::new().layer(la).service(ok_service());
    let sb = ServiceBuilder::new().layer(lb).service(ok_service());

    let r = sa
        .clone()
        .oneshot(request("t1", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = sb
        .clone()
        .oneshot(request("t1", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The burst of 2 is spent across both replicas.
    for svc in [&sa, &sb] {
        let r = svc
            .clone()
            .oneshot(request("t1", "alice@example.com"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["odgw-error"], "rate_limited");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        assert_eq!(r.headers()["ratelimit-limit"], "2");
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        assert_eq!(r.headers()["ratelimit-reset"], r.headers()["retry-after"]);
    }
    // Other subjects and tenants have budgets of their own.
    let r = sb.clone().oneshot(request("t1", "bob")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = sa
        .clone()
        .oneshot(request("t2", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let found: Vec<_> = pair
        .keys()
        .await
        .into_iter()
        .filter(|k| k.contains(":subj:"))
        .collect();
    assert_eq!(found.len(), 3, "{found:?}");
    for key in &found {
        let hash = key.strip_prefix(&format!("{}subj:", pair.prefix)).unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
    }
    pair.delete_keys().await;
}

/// Subject budgets are named by an HMAC under the cluster's secret: a
/// replica holding another secret (or someone hashing guessed subjects
/// without it) finds neither the budget nor its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subject_budget_names_are_keyed_by_the_cluster_secret() {
    let pair = need!(Pair::new().await);
    let outsider = replica_holding(&pair.url, &pair.prefix, OnFailure::Closed, "another key").await;
    let member = ServiceBuilder::new()
        .layer(pair.a.subject_limit(per_minute(1), 1))
        .service(ok_service());
    let stranger = ServiceBuilder::new()
        .layer(outsider.subject_limit(per_minute(1), 1))
        .service(ok_service());

    let alice = || request("t1", "alice@example.com");
    assert_eq!(
        member.clone().oneshot(alice()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        member.clone().oneshot(alice()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Same prefix, same subject, another secret: a budget of its own.
    assert_eq!(
        stranger.clone().oneshot(alice()).await.unwrap().status(),
        StatusCode::OK
    );

    let names: Vec<_> = pair
        .keys()
        .await
        .into_iter()
        .filter(|k| k.contains(":subj:"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    pair.delete_keys().await;
}

// ---------------------------------------------------------------- outages

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_policy_paces_in_process_while_redis_is_down_and_shares_again_after() {
    let mut server = need!(private_server(None).await);
    let pair = Pair::on(server.url(), OnFailure::Local).await;
    let (a, b) = (&pair.a, &pair.b);
    let _checks = (
        a.spawn_health_check(Duration::from_millis(100)),
        b.spawn_health_check(Duration::from_millis(100)),
    );
    let (pa, pb) = pair.pacers(64);
    let limited = ServiceBuilder::new()
        .layer(a.subject_limit(per_minute(1), 1))
        .service(ok_service());
    let t = tenant("practice-1");
    let rate = per_second(10);
    assert_eq!(a.status(), LimiterStatus::Shared);
    let r = limited
        .clone()
        .oneshot(request("practice-1", "alice"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    pa.acquire(&t, rate, 1, Duration::ZERO).await.unwrap();
    let second = pb
        .acquire(&t, rate, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        second.waited >= Duration::from_millis(90),
        "{:?}",
        second.waited
    );

    server.kill();
    // The first request after the outage pays at most the command timeout.
    let called = Instant::now();
    pa.acquire(&t, rate, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        called.elapsed() < Duration::from_millis(600),
        "{:?}",
        called.elapsed()
    );
    until_status(&[a], LimiterStatus::Local, Duration::from_secs(5)).await;
    assert!(a.failures() > 0);

    // Paced in process: spaced, and no request waits for Redis.
    let mut starts = Vec::new();
    for _ in 0..4 {
        let called = Instant::now();
        let permit = pa
            .acquire(&t, rate, 1, Duration::from_secs(5))
            .await
            .unwrap();
        starts.push(Instant::now());
        assert!(
            Instant::now() - called <= permit.waited + Duration::from_millis(50),
            "a request waited for the unreachable Redis"
        );
    }
    assert_spaced(&starts, Duration::from_millis(100));
    // The subject limit falls back to this process's own budget (a fresh one).
    let statuses: Vec<_> = [
        limited
            .clone()
            .oneshot(request("practice-1", "alice"))
            .await
            .unwrap(),
        limited
            .clone()
            .oneshot(request("practice-1", "alice"))
            .await
            .unwrap(),
    ]
    .iter()
    .map(Response::status)
    .collect();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);

    server.restart().unwrap();
    server.ready().await;
    until_status(&[a, b], LimiterStatus::Shared, Duration::from_secs(10)).await;
    // Shared again: the other replica's request waits for this one's.
    pa.acquire(&t, rate, 1, Duration::ZERO).await.unwrap();
    let after = pb
        .acquire(&t, rate, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        after.waited >= Duration::from_millis(90),
        "{:?}",
        after.waited
    );
    let found = pair.keys().await;
    assert!(
        found.contains(&format!("{}pace:practice-1", pair.prefix)),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_policy_answers_503_while_redis_is_down() {
    let mut server = need!(private_server(None).await);
    let url = server.url();
    let prefix = prefix();
    let a = replica(&url, &prefix, OnFailure::Closed).await;
    let _check = a.spawn_health_check(Duration::from_millis(100));
    let pacer = a.pacer(pacing(64));
    let t = tenant("practice-1");
    let rate = per_second(10);
    let paced = ServiceBuilder::new()
        .layer(PacingLayer::new(Arc::clone(&pacer), pacing(64)))
        .service(ok_service());
    let limited = ServiceBuilder::new()
        .layer(a.subject_limit(per_minute(100), 10))
        .service(ok_service());
    let r = paced
        .clone()
        .oneshot(paced_request("practice-1", rate))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    server.kill();
    let rejection = pacer
        .acquire(&t, rate, 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(rejection.reason, Reason::Unavailable);
    assert_eq!(a.status(), LimiterStatus::Unavailable);
    let called = Instant::now();
    for response in [
        paced
            .clone()
            .oneshot(paced_request("practice-1", rate))
            .await
            .unwrap(),
        limited
            .clone()
            .oneshot(request("practice-1", "alice"))
            .await
            .unwrap(),
    ] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["odgw-error"], "limiter_unavailable");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["retry-after"], "1");
    }
    assert!(
        called.elapsed() < Duration::from_millis(100),
        "refusals must not wait for the unreachable Redis"
    );
    // Unlimited tenants need no budget, so they still go.
    pacer
        .acquire(&t, Rate::Unlimited, 1, Duration::ZERO)
        .await
        .unwrap();

    server.restart().unwrap();
    server.ready().await;
    until_status(&[&a], LimiterStatus::Shared, Duration::from_secs(10)).await;
    pacer
        .acquire(&t, rate, 1, Duration::from_secs(5))
        .await
        .unwrap();
    let r = limited
        .oneshot(request("practice-1", "alice"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_unreachable_at_start_is_found_by_requests_once_it_answers() {
    // Reserve a port, then start nothing there yet.
    let port = free_port();
    let mut server = RedisServer {
        port,
        password: Some("hunter2"),
        child: None,
    };
    let url = server.url();
    let prefix = prefix();
    let started = Instant::now();
    let a = replica(&url, &prefix, OnFailure::Local).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(a.status(), LimiterStatus::Local);
    assert!(!format!("{a:?}").contains("hunter2"));
    let pacer = a.pacer(pacing(64));
    let t = tenant("practice-1");
    let fast = per_second(1000);
    pacer
        .acquire(&t, fast, 1, Duration::from_secs(1))
        .await
        .unwrap();

    need!(server.restart());
    server.ready().await;
    // No health-check task: requests probe a Redis that is down (at most
    // once a second) and find it.
    eventually("requests find redis", Duration::from_secs(10), || {
        let pacer = Arc::clone(&pacer);
        let (t, status) = (t.clone(), a.status());
        async move {
            pacer
                .acquire(&t, fast, 1, Duration::from_secs(1))
                .await
                .unwrap();
            status == LimiterStatus::Shared
        }
    })
    .await;
    pacer
        .acquire(&t, fast, 1, Duration::from_secs(1))
        .await
        .unwrap();
    let found = keys(&url, &prefix).await;
    assert!(
        found.contains(&format!("{prefix}pace:practice-1")),
        "{found:?}"
    );
}
