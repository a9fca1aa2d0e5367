//! Traffic control through the real gateway (SPEC §5): tenant pacing, the
//! subject limit, upstream 429s, and the per-tenant cache.

use std::time::{Duration, Instant};

use http::{Method, Request};
use http_body_util::Full;
use odgw_mock::{Fault, ThrottleMode};
use serde_json::json;

use crate::support::*;

/// A gateway pacing every tenant at `rate`, against a mock that rejects a
/// customer key calling again within `mock_interval` (as Open Dental might).
async fn paced(rate: &str, queue_timeout: &str, mock_interval: Duration) -> TestGateway {
    let mut opts = Options::default()
        .env("ODGW_LIMITS__TENANT_RATE", rate)
        .env("ODGW_LIMITS__QUEUE_TIMEOUT", queue_timeout)
        .env("ODGW_LIMITS__SUBJECT_RATE", "unlimited");
    opts.mock.throttle = ThrottleMode::Reject {
        interval: mock_interval,
        retry_after_secs: 1,
    };
    TestGateway::start_with(opts).await
}

#[tokio::test]
async fn a_burst_is_spaced_to_the_budget_and_open_dental_never_throttles() {
    // Open Dental's paid tier: 1 request per second per customer key. The mock
    // rejects anything closer than 900 ms (a little slack for loopback jitter).
    let gw = paced("1/s", "15s", Duration::from_millis(900)).await;
    let token = gw.token(json!({}));
    let started = Instant::now();
    let calls = (0..10).map(|i| {
        gw.get(
            if i % 2 == 0 {
                "/api/v1/patients/11"
            } else {
                "/api/v1/patients/13"
            },
            Some(&token),
        )
    });
    let answers = futures_util::future::join_all(calls).await;
    for resp in &answers {
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let seen = gw.mock.mock.requests();
    assert_eq!(
        seen.len(),
        10,
        "one upstream call per request, no retries needed"
    );
    assert!(
        seen.iter().all(|r| r.response_status == 200),
        "Open Dental never answered 429"
    );
    for pair in seen.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(gap >= Duration::from_millis(900), "calls {gap:?} apart");
    }
    assert!(started.elapsed() >= Duration::from_secs(9));
    // The waits show in the pacing histogram: ten waited, the last ~9 s.
    let text = gw.metrics().await;
    assert!(text.contains("odgw_pacing_wait_seconds_count 10"), "{text}");
    assert!(
        text.contains(r#"odgw_pacing_wait_seconds_bucket{le="0.25"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"odgw_pacing_wait_seconds_bucket{le="10"} 10"#),
        "{text}"
    );
    assert!(text.contains("odgw_pacing_waiting 0"), "{text}");
}

#[tokio::test]
async fn overflow_beyond_queue_timeout_gets_a_truthful_retry_after() {
    let gw = paced("1/s", "2s", Duration::from_millis(900)).await;
    let token = gw.token(json!({}));
    let calls = (0..8).map(|_| gw.get("/api/v1/patients/11", Some(&token)));
    let answers = futures_util::future::join_all(calls).await;
    let admitted = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(admitted + refused.len(), 8);
    assert!(
        (2..=4).contains(&admitted),
        "{admitted} admitted within a 2 s queue"
    );
    let mut longest = 0;
    for resp in &refused {
        resp.assert_problem(429, "rate_limited");
        let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "Retry-After {retry}");
        longest = longest.max(retry);
        assert_eq!(resp.header("ratelimit-limit"), Some("1"));
        assert!(resp.header("ratelimit-remaining").is_some());
        assert!(resp.header("ratelimit-reset").is_some());
    }
    // Honouring the largest Retry-After gets through without waiting long.
    tokio::time::sleep(Duration::from_secs(longest)).await;
    let started = Instant::now();
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(gw
        .mock
        .mock
        .requests()
        .iter()
        .all(|r| r.response_status == 200));
}

#[tokio::test]
async fn a_busy_practice_does_not_delay_a_quiet_one() {
    let gw = paced("1/s", "30s", Duration::from_millis(900)).await;
    let busy = gw.token(json!({"tenant": "a", "sub": "batch-job"}));
    let quiet = gw.token(json!({"tenant": "b", "sub": "front-desk"}));
    let backlog =
        futures_util::future::join_all((0..5).map(|_| gw.get("/api/v1/patients/11", Some(&busy))));
    let quiet_call = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let resp = gw.get("/api/v1/patients/11", Some(&quiet)).await;
        (resp, started.elapsed())
    };
    let (busy_answers, (resp, waited)) = tokio::join!(backlog, quiet_call);
    assert_eq!(resp.status, 200);
    assert!(
        waited < Duration::from_millis(700),
        "the quiet practice waited {waited:?}"
    );
    assert!(busy_answers.iter().all(|r| r.status == 200));
}

#[tokio::test]
async fn the_subject_limit_answers_at_once_with_a_problem() {
    let opts = Options::default()
        .env("ODGW_LIMITS__SUBJECT_RATE", "1/min")
        .env("ODGW_LIMITS__SUBJECT_BURST", "3");
    let gw = TestGateway::start_with(opts).await;
    let alice = gw.token(json!({"sub": "alice"}));
    for _ in 0..3 {
        assert_eq!(
            gw.get("/api/v1/patients/11", Some(&alice)).await.status,
            200
        );
    }
    let started = Instant::now();
    let resp = gw.get("/api/v1/patients/11", Some(&alice)).await;
    resp.assert_problem(429, "rate_limited");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once"
    );
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        gw.mock.mock.requests().len(),
        3,
        "the refused request never reached Open Dental"
    );
    // The rejection is counted by reason; Open Dental's answers by status.
    let text = gw.metrics().await;
    assert!(
        text.contains(r#"odgw_errors_total{code="rate_limited"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"odgw_upstream_responses_total{status="200"} 3"#),
        "{text}"
    );
    // Another subject, and the same subject at another practice, have their own allowance.
    let bob = gw.token(json!({"sub": "bob"}));
    assert_eq!(gw.get("/api/v1/patients/11", Some(&bob)).await.status, 200);
    let alice_b = gw.token(json!({"sub": "alice", "tenant": "b"}));
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&alice_b)).await.status,
        200
    );
}

#[tokio::test]
async fn an_upstream_429_pauses_the_practice_and_a_get_waits_it_out() {
    let gw =
        TestGateway::start_with(Options::default().env("ODGW_LIMITS__QUEUE_TIMEOUT", "5s")).await;
    let token = gw.token(json!({}));
    gw.mock.mock.inject(Fault::too_many_requests("2"));
    let started = Instant::now();
    let resp = gw.get("/api/v1/patients/11", Some(&token)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let seen = gw.mock.mock.requests();
    assert_eq!(
        seen.iter().map(|r| r.response_status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    assert!(seen[1].received_at - seen[0].received_at >= Duration::from_millis(1900));

    // The pause holds for the practice's next request too, not just the retried one.
    gw.mock.mock.clear_requests();
    gw.mock.mock.inject(Fault::too_many_requests("2"));
    let first = gw.get("/api/v1/patients/11", Some(&token));
    let second = async {
        // Sent once Open Dental has throttled the first (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gw
            .mock
            .mock
            .requests()
            .iter()
            .any(|r| r.response_status == 429)
        {
            assert!(
                Instant::now() < deadline,
                "the first request never got its 429"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gw.get("/api/v1/patients/13", Some(&token)).await
    };
    let (a, b) = tokio::join!(first, second);
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    let seen = gw.mock.mock.requests();
    assert_eq!(
        seen.iter().filter(|r| r.response_status == 429).count(),
        1,
        "Open Dental throttled once"
    );
    assert!(seen[1].received_at - seen[0].received_at >= Duration::from_millis(1900));
}

#[tokio::test]
async fn an_upstream_429_beyond_the_deadline_or_on_a_write_is_upstream_throttled() {
    let gw =
        TestGateway::start_with(Options::default().env("ODGW_LIMITS__QUEUE_TIMEOUT", "1s")).await;
    let token = gw.token(json!({}));
    gw.mock.mock.inject(Fault::too_many_requests("30"));
    let resp = gw.get("/api/v1/patients/11", Some(&token)).await;
    resp.assert_problem(429, "upstream_throttled");
    let retry: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((25..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(gw.mock.mock.requests().len(), 1);

    // Writes are never retried.
    let gw =
        TestGateway::start_with(Options::default().env("ODGW_LIMITS__QUEUE_TIMEOUT", "10s")).await;
    gw.mock.mock.inject(Fault::too_many_requests("1"));
    let req = Request::post(gw.url("/api/v1/patients"))
        .header("authorization", format!("Bearer {}", gw.token(json!({}))))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"LName":"X","FName":"Y"}"#,
        )))
        .unwrap();
    gw.send(req).await.assert_problem(429, "upstream_throttled");
    assert_eq!(gw.mock.mock.requests().len(), 1, "the POST was not retried");
}

async fn cached_gateway(ttl: &str) -> TestGateway {
    TestGateway::start_with(Options::default().env("ODGW_CACHE__TTL", ttl)).await
}

const PREF: &str = "/api/v1/preferences?PrefName=ProgramVersion";

#[tokio::test]
async fn preferences_are_cached_per_practice() {
    let gw = cached_gateway("5m").await;
    let a = gw.token(json!({"tenant": "a"}));
    let b = gw.token(json!({"tenant": "b"}));
    let first = gw.get(PREF, Some(&a)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("odgw-cache"), Some("miss"));
    let second = gw.get(PREF, Some(&a)).await;
    assert_eq!(second.header("odgw-cache"), Some("hit"));
    assert!(second.header("age").is_some());
    assert_eq!(second.body, first.body);
    assert_eq!(
        gw.mock.mock.requests().len(),
        1,
        "the hit made no upstream call"
    );

    // Practice b never sees a's entry.
    let other = gw.get(PREF, Some(&b)).await;
    assert_eq!(other.header("odgw-cache"), Some("miss"));
    let seen = gw.mock.mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].header_values("authorization"),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")]
    );

    // Parameter order does not matter; Cache-Control: no-cache refreshes.
    let reordered = gw
        .get("/api/v1/preferences?Limit=5&Offset=0", Some(&a))
        .await;
    assert_eq!(reordered.header("odgw-cache"), Some("miss"));
    let reordered = gw
        .get("/api/v1/preferences?Offset=0&Limit=5", Some(&a))
        .await;
    assert_eq!(reordered.header("odgw-cache"), Some("hit"));
    let req = Request::get(gw.url(PREF))
        .header("authorization", format!("Bearer {a}"))
        .header("cache-control", "no-cache")
        .body(Full::default())
        .unwrap();
    assert_eq!(gw.send(req).await.header("odgw-cache"), Some("miss"));
    assert_eq!(gw.mock.mock.requests().len(), 4);

    // Patient data is not cached.
    gw.get("/api/v1/patients/11", Some(&a)).await;
    let again = gw.get("/api/v1/patients/11", Some(&a)).await;
    assert!(again.header("odgw-cache").is_none());
    assert_eq!(gw.mock.mock.requests().len(), 6);
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_call() {
    let gw =
        TestGateway::start_with(Options::default().env("ODGW_LIMITS__SUBJECT_RATE", "unlimited"))
            .await;
    let a = gw.token(json!({}));
    let answers = futures_util::future::join_all((0..50).map(|_| gw.get(PREF, Some(&a)))).await;
    assert!(answers
        .iter()
        .all(|r| r.status == 200 && r.body == answers[0].body));
    assert_eq!(gw.mock.mock.requests().len(), 1);
}

#[tokio::test]
async fn entries_expire_and_purges_and_tenant_changes_drop_them() {
    let gw = cached_gateway("1s").await;
    let a = gw.token(json!({}));
    gw.get(PREF, Some(&a)).await;
    assert_eq!(
        gw.get(PREF, Some(&a)).await.header("odgw-cache"),
        Some("hit")
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        gw.get(PREF, Some(&a)).await.header("odgw-cache"),
        Some("miss"),
        "TTL expired"
    );

    // Purge through the admin API.
    assert_eq!(
        gw.admin(Method::DELETE, "/admin/v1/cache?tenant=a", None)
            .await
            .status,
        204
    );
    assert_eq!(
        gw.get(PREF, Some(&a)).await.header("odgw-cache"),
        Some("miss")
    );
    assert_eq!(
        gw.admin(Method::DELETE, "/admin/v1/cache", None)
            .await
            .status,
        204
    );
    assert_eq!(
        gw.get(PREF, Some(&a)).await.header("odgw-cache"),
        Some("miss")
    );

    // Disable + enable, and re-keying, both drop the practice's entries.
    gw.admin(Method::POST, "/admin/v1/tenants/a/disable", None)
        .await;
    gw.admin(Method::POST, "/admin/v1/tenants/a/enable", None)
        .await;
    assert_eq!(
        gw.get(PREF, Some(&a)).await.header("odgw-cache"),
        Some("miss")
    );
    gw.put_tenant("a", KEY_A).await;
    assert_eq!(
        gw.get(PREF, Some(&a)).await.header("odgw-cache"),
        Some("miss")
    );
}

#[tokio::test]
async fn non_200_answers_are_never_cached() {
    let gw = cached_gateway("5m").await;
    let a = gw.token(json!({}));
    gw.mock.mock.inject(Fault::Status {
        status: 400,
        body: "\"eConnector is not running\"".into(),
        retry_after: None,
    });
    let first = gw.get(PREF, Some(&a)).await;
    assert_eq!(first.status, 400);
    assert!(
        first.header("odgw-error").is_none(),
        "Open Dental's own 400 passes through"
    );
    let second = gw.get(PREF, Some(&a)).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("odgw-cache"), Some("miss"));
    assert_eq!(gw.mock.mock.requests().len(), 2);
}
