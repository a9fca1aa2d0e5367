//! Building the cache key of a request (tenant, generation, purge epochs,
//! path, query sorted by parameter name), for a path without a query and
//! for one with four parameters out of order, plus the route check the
//! layer makes before it builds a key.
//!
//! `ResponseCache::key` is crate-private; `key_for_fuzzing` is its public
//! (doc-hidden) wrapper and returns the very same key.
//!
//! Run with `cargo bench -p odgw-cache --bench key`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use odgw_cache::{sorted_query_for_fuzzing, CacheSettings, ResponseCache};
use odgw_core::TenantId;

const PATH: &str = "/api/v1/preferences";
const QUERY: &str = "PrefName=PracticeTitle&Offset=0&Limit=100&DateTStamp=2024-01-01";
const SORTED: &str = "DateTStamp=2024-01-01&Limit=100&Offset=0&PrefName=PracticeTitle";

fn key(c: &mut Criterion) {
    let cache = ResponseCache::new(CacheSettings {
        routes: vec![
            "/preferences".to_owned(),
            "/definitions".to_owned(),
            "/providers".to_owned(),
            "/operatories".to_owned(),
        ],
        ttl: Duration::from_secs(3600),
        max_size: 64 << 20,
    });
    let tenant = TenantId::parse("practice-1").unwrap();
    // Purges of other tenants leave entries in the per-tenant epoch map that
    // every key lookup consults.
    for i in 0..64 {
        cache.purge_tenant(&TenantId::parse(&format!("practice-other-{i}")).unwrap());
    }

    // The key is opaque outside the crate: check it through equality and
    // its Debug form.
    let plain = cache.key_for_fuzzing(&tenant, 7, PATH, None);
    let queried = cache.key_for_fuzzing(&tenant, 7, PATH, Some(QUERY));
    assert_eq!(sorted_query_for_fuzzing(Some(QUERY)), SORTED);
    assert_eq!(
        queried,
        cache.key_for_fuzzing(&tenant, 7, PATH, Some(SORTED))
    );
    assert_ne!(queried, plain);
    assert_ne!(
        queried,
        cache.key_for_fuzzing(
            &tenant,
            7,
            PATH,
            Some("PrefName=PracticeTitle&Offset=1&Limit=100&DateTStamp=2024-01-01")
        )
    );
    assert_ne!(
        queried,
        cache.key_for_fuzzing(&tenant, 8, PATH, Some(QUERY))
    );
    let other = TenantId::parse("practice-2").unwrap();
    assert_ne!(queried, cache.key_for_fuzzing(&other, 7, PATH, Some(QUERY)));
    let shown = format!("{queried:?}");
    assert!(shown.contains("practice-1") && shown.contains(PATH) && shown.contains(SORTED));
    assert_eq!(plain, cache.key_for_fuzzing(&tenant, 7, PATH, Some("")));
    // What the layer asks first, with the path after `/api/v1`.
    let api_path = PATH.strip_prefix("/api/v1").unwrap();
    assert!(cache.is_cacheable(&Method::GET, api_path));
    assert!(!cache.is_cacheable(&Method::GET, "/patients"));
    assert!(!cache.is_cacheable(&Method::POST, api_path));

    let mut group = c.benchmark_group("cache_key");
    group.bench_function("no_query", |b| {
        b.iter(|| cache.key_for_fuzzing(black_box(&tenant), 7, black_box(PATH), black_box(None)));
    });
    group.bench_function("query_4_params", |b| {
        b.iter(|| {
            cache.key_for_fuzzing(
                black_box(&tenant),
                7,
                black_box(PATH),
                black_box(Some(QUERY)),
            )
        });
    });
    group.bench_function("is_cacheable", |b| {
        b.iter(|| cache.is_cacheable(black_box(&Method::GET), black_box(api_path)));
    });
    group.finish();
}

criterion_group!(benches, key);
criterion_main!(benches);
