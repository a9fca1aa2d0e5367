//! Tenant key lookup on the request path: `SledKeyStore::get` (a sled read,
//! JSON decoding and two AES-256-GCM opens) against `CachedKeyStore::get`
//! over the same store when the record is in memory, and
//! `TenantRecord::to_tenant`, which builds the `Authorization: ODFHIR` value.
//!
//! The store is a real sled directory in a tempdir holding `TENANTS`
//! tenants, each with its own customer and developer key; lookups cycle
//! through all of them.
//!
//! Run with `cargo bench -p odgw-keystore --bench lookup`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use odgw_core::{Rate, SecretString, TenantId};
use odgw_keystore::{
    CachedKeyStore, KeyStore, MasterKey, SledKeyStore, TenantDefaults, TenantInput, TenantRecord,
};
use tokio::runtime::Runtime;

/// Tenants stored (each `put` is flushed to disk, so filling takes a while).
const TENANTS: usize = 2_000;

fn customer_key(i: usize) -> String {
    format!("Cust{i:012}")
}

fn developer_key(i: usize) -> String {
    format!("Devk{i:012}")
}

fn input(i: usize) -> TenantInput {
    TenantInput {
        name: Some(format!("Practice number {i}")),
        customer_key: SecretString::new(customer_key(i)),
        developer_key: Some(SecretString::new(developer_key(i))),
        base_url: Some(format!("https://office-{i}.example.com:30223/api/v1")),
        rate: Some("2/s".parse().unwrap()),
        burst: Some(4),
        enabled: None,
    }
}

/// Fails the bench unless `record` is tenant `i` with its keys decrypted.
fn check(record: Option<Arc<TenantRecord>>, ids: &[TenantId], i: usize) -> Arc<TenantRecord> {
    let record = record.unwrap_or_else(|| panic!("tenant {} not found", ids[i]));
    assert_eq!(record.id, ids[i]);
    assert_eq!(record.customer_key.expose(), customer_key(i));
    assert_eq!(
        record.developer_key.as_ref().map(SecretString::expose),
        Some(developer_key(i).as_str())
    );
    assert!(record.enabled);
    record
}

/// Measures `iters` lookups cycling through every tenant, inside one
/// `block_on` so the runtime's entry cost is not part of the number.
fn cycle(rt: &Runtime, store: &dyn KeyStore, ids: &[TenantId], iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for n in 0..iters {
            let id = &ids[(n % ids.len() as u64) as usize];
            let record = store.get(black_box(id)).await.expect("get failed");
            black_box(record.expect("tenant missing"));
        }
        start.elapsed()
    })
}

fn lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sled = Arc::new(
        SledKeyStore::open(&dir.path().join("keys"), MasterKey::generate().unwrap()).unwrap(),
    );
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::parse(&format!("practice-{i:05}")).unwrap())
        .collect();
    rt.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            sled.put(id, input(i)).await.unwrap();
        }
    });
    // The default capacity (50 000, not exported) with a long time to live,
    // so no entry expires while the bench runs (the default is 60 s; the hit
    // path is the same either way).
    let cached = CachedKeyStore::with_limits(
        Arc::clone(&sled) as Arc<dyn KeyStore>,
        50_000,
        Duration::from_secs(3600),
    );
    rt.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            check(sled.get(id).await.unwrap(), &ids, i);
            check(cached.get(id).await.unwrap(), &ids, i);
        }
        let unknown = TenantId::parse("no-such-practice").unwrap();
        assert!(sled.get(&unknown).await.unwrap().is_none());
    });
    assert_eq!(cached.cached(), TENANTS as u64, "every tenant is in memory");

    let mut group = c.benchmark_group("lookup");
    group.bench_function("sled_get", |b| {
        b.iter_custom(|iters| cycle(&rt, sled.as_ref(), &ids, iters));
    });
    group.bench_function("cached_get_hit", |b| {
        b.iter_custom(|iters| cycle(&rt, &cached, &ids, iters));
    });

    let index = TENANTS / 2;
    let record = check(rt.block_on(sled.get(&ids[index])).unwrap(), &ids, index);
    let defaults = TenantDefaults {
        base_url: "https://api.opendental.com/api/v1".to_owned(),
        developer_key: Some(SecretString::new("DefaultDevKey0000")),
        rate: Rate::Unlimited,
        burst: 1,
    };
    let tenant = record.to_tenant(&defaults).unwrap();
    assert_eq!(
        tenant.authorization.expose(),
        format!("ODFHIR {}/{}", developer_key(index), customer_key(index))
    );
    assert_eq!(tenant.base_url, record.base_url.clone().unwrap());
    assert_eq!(tenant.generation, record.generation);
    group.bench_function("to_tenant", |b| {
        b.iter(|| {
            record
                .to_tenant(black_box(&defaults))
                .expect("to_tenant failed")
        });
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
