//! The cost of one pacing decision: an unlimited tenant (no state touched),
//! a limited tenant whose budget always has room, and the same through the
//! shared Redis pacer (one script round trip) when a Redis answers at
//! `ODGW_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); without one that
//! benchmark is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hash::BuildHasher, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use odgw_core::{Rate, SecretString, TenantId};
use odgw_limit::{
    LimiterStatus, LocalPacer, OnFailure, Pacer, PacingSettings, RedisLimits, RedisSettings,
};

fn pacing(c: &mut Criterion) {
    // IO for the Redis benchmark; the local ones only use the timer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = PacingSettings {
        queue_timeout: Duration::from_secs(10),
        queue_depth: 64,
    };
    let pacer = LocalPacer::new(settings);
    let tenant = TenantId::parse("practice-1").unwrap();
    // Fast enough that the budget never makes the benchmark wait.
    let limited = Rate::Per {
        count: 1_000_000,
        period: Duration::from_secs(1),
    };

    c.bench_function("acquire_unlimited", |b| {
        b.iter(|| {
            rt.block_on(pacer.acquire(&tenant, Rate::Unlimited, 1, Duration::from_secs(10)))
                .unwrap()
        })
    });
    c.bench_function("acquire_limited_with_room", |b| {
        b.iter(|| {
            rt.block_on(pacer.acquire(&tenant, limited, u32::MAX, Duration::from_secs(10)))
                .unwrap()
        })
    });

    let url = std::env::var("ODGW_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!(
        "odgw-bench:{:016x}:",
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
    );
    let limits = rt
        .block_on(RedisLimits::connect(RedisSettings {
            url: SecretString::new(url.clone()),
            key_prefix: prefix.clone(),
            // A benchmark against a dead Redis would measure nothing.
            on_failure: OnFailure::Closed,
            command_timeout: Duration::from_millis(250),
            subject_secret: SecretString::new("bench"),
        }))
        .ok()
        .filter(|limits| limits.status() == LimiterStatus::Shared);
    let Some(limits) = limits else {
        // Not the URL itself: it may hold a password.
        eprintln!("acquire_redis_round_trip skipped: no Redis answers at ODGW_TEST_REDIS_URL");
        return;
    };
    let shared = limits.pacer(settings);
    c.bench_function("acquire_redis_round_trip", |b| {
        b.iter(|| {
            rt.block_on(shared.acquire(&tenant, limited, u32::MAX, Duration::from_secs(10)))
                .unwrap()
        })
    });
    // The keys this run wrote (they would expire within seconds anyway).
    rt.block_on(async {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("DEL")
            .arg(
                [
                    "pace:practice-1",
                    "pace:practice-1:queue",
                    "probe",
                    "probe:queue",
                ]
                .map(|k| format!("{prefix}{k}"))
                .to_vec(),
            )
            .query_async::<i64>(&mut conn)
            .await
            .unwrap();
    });
}

criterion_group!(benches, pacing);
criterion_main!(benches);
