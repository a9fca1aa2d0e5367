//! The cost of one pacing decision: an unlimited tenant (no state touched)
//! and a limited tenant whose budget always has room.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use odgw_core::{Rate, TenantId};
use odgw_limit::{LocalPacer, Pacer, PacingSettings};

fn pacing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pacer = LocalPacer::new(PacingSettings {
        queue_timeout: Duration::from_secs(10),
        queue_depth: 64,
    });
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
}

criterion_group!(benches, pacing);
criterion_main!(benches);
