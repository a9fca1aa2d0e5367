//! Throughput of the whole data-plane stack (token check, tenant lookup,
//! forwarding to the in-process mock over loopback) with audit records made
//! durable by group commit, against the same stack with a benchmark-only
//! null sink. Both run in the same process, so the ratio is what matters
//! (issue: the audited path keeps at least 85%).
//!
//! Criterion measures each variant for seconds on end, one after the other,
//! so on a shared machine a change in background load between the two
//! shows up as a change in the ratio. After the criterion groups, a paired
//! run therefore alternates audited and null batches (swapping which goes
//! first each round) and prints the ratio of their summed times, which such
//! drift affects equally. It also prints how the audited batches were
//! committed (records per fdatasync, mean write-and-sync time), because at
//! a fixed number of requests in flight the audited path is bounded by
//! latency as much as by CPU: a request that waits for its batch's
//! fdatasync holds one of the in-flight slots, so the ratio rises with
//! concurrency and falls with the disk's flush latency. `TMPDIR=/dev/shm`
//! puts the audit log on tmpfs (fdatasync is free there), which separates
//! the records' CPU cost from the disk's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use odgw::{config::Config, gateway::DataPlane, Gateway};
use odgw_core::{Body, SecretString, TenantId};
use odgw_keystore::TenantInput;
use odgw_mock::{KeyPair, MockConfig, MockUpstream};
use tower::ServiceExt;

/// Requests in flight at once. Group commit trades a little latency (a
/// request waits for its batch's fsync) for throughput, so the ratio depends
/// on how many requests overlap: measure a moderate and a busy gateway.
const CONCURRENCY: [usize; 2] = [64, 256];
/// Requests per measured iteration, per unit of concurrency. Each batch
/// ends in a drain with fewer than `concurrency` requests in flight, where
/// the audited path's extra latency (linger, fsync) is not hidden by other
/// work; long batches keep that edge small, so the ratio is the one of
/// steady traffic.
const ROUNDS: usize = 16;
/// Audited/null batch pairs in the paired run, per concurrency.
const PAIRS: usize = 30;

struct Setup {
    audited: DataPlane,
    audit_log: Arc<odgw_audit::FileAuditLog>,
    null: DataPlane,
    token: String,
    _dir: tempfile::TempDir,
    _mock: odgw_mock::RunningMock,
}

async fn setup() -> Setup {
    odgw_auth::install_crypto_providers();
    let mut mock_config = MockConfig::test_defaults();
    mock_config
        .keys
        .push(KeyPair::new("benchDevKey00001", "benchCustKey0001"));
    let mock = MockUpstream::spawn(mock_config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let secret = "bench-hs256-secret-0123456789abcdef";
    std::fs::write(root.join("hs256"), secret).unwrap();
    let mut env = BTreeMap::new();
    env.insert(
        "ODGW_MASTER_KEY".to_owned(),
        base64::engine::general_purpose::STANDARD.encode([9u8; 32]),
    );
    env.insert("ODGW_ADMIN_TOKEN".to_owned(), "bench-admin".to_owned());
    env.insert(
        "ODGW_DEVELOPER_KEY".to_owned(),
        "benchDevKey00001".to_owned(),
    );
    let toml = format!(
        r#"
[upstream]
base_url = "{base}"
[[auth.issuers]]
issuer = "bench"
audiences = ["odgw"]
algorithms = ["HS256"]
secret_file = "{root}/hs256"
[store]
path = "{root}/keys"
[limits]
tenant_rate = "unlimited"
subject_rate = "unlimited"
[audit]
path = "{root}/audit"
"#,
        base = mock.base_url(),
        root = root.display(),
    );
    let config = Config::from_toml_str(&toml, &env).unwrap();
    let gateway = Gateway::build(config, &env).await.unwrap();
    gateway
        .store
        .put(
            &TenantId::parse("bench").unwrap(),
            TenantInput::new(SecretString::new("benchCustKey0001")),
        )
        .await
        .unwrap();
    let token = odgw::token::mint(
        &SecretString::new(secret),
        &odgw::token::MintRequest {
            issuer: "bench".into(),
            audience: "odgw".into(),
            subject: "bench-user".into(),
            tenants: vec!["bench".into()],
            scope: "od:read".into(),
            ttl: Duration::from_secs(3600),
        },
    )
    .unwrap();
    Setup {
        audited: gateway.data_plane(),
        audit_log: gateway.audit.clone(),
        null: gateway.data_plane_with_audit_sink(Arc::new(odgw_audit::NullSink::new())),
        token,
        _dir: dir,
        _mock: mock,
    }
}

async fn run_batch(svc: &DataPlane, token: &str, concurrency: usize) {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..concurrency * ROUNDS)
        .map(|_| {
            let req = http::Request::get("/api/v1/patients/11")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let svc = svc.clone();
            async move {
                let resp = svc.oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

fn audited_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let setup = runtime.block_on(setup());
    for concurrency in CONCURRENCY {
        let mut group = c.benchmark_group(format!("request_path/{concurrency}_in_flight"));
        group.throughput(Throughput::Elements((concurrency * ROUNDS) as u64));
        group.sample_size(20);
        group.bench_function("audited_group_commit", |b| {
            b.to_async(&runtime)
                .iter(|| run_batch(&setup.audited, &setup.token, concurrency))
        });
        group.bench_function("null_sink", |b| {
            b.to_async(&runtime)
                .iter(|| run_batch(&setup.null, &setup.token, concurrency))
        });
        group.finish();
    }
    for concurrency in CONCURRENCY {
        let log = &setup.audit_log;
        let (batches, records, seconds) = (log.batches(), log.records(), log.write_seconds());
        let (audited, null) = runtime.block_on(paired(&setup, concurrency));
        let per_sec = |d: Duration| (PAIRS * concurrency * ROUNDS) as f64 / d.as_secs_f64();
        let batches = (log.batches() - batches).max(1) as f64;
        println!(
            "paired/{concurrency}_in_flight: audited {:.0} req/s, null {:.0} req/s, audited keeps {:.1}% \
             ({:.1} records per fdatasync, {:.0} µs mean write and sync)",
            per_sec(audited),
            per_sec(null),
            100.0 * null.as_secs_f64() / audited.as_secs_f64(),
            (log.records() - records) as f64 / batches,
            (log.write_seconds() - seconds) * 1e6 / batches,
        );
    }
}

/// Total time of `PAIRS` audited and `PAIRS` null batches, interleaved.
async fn paired(setup: &Setup, concurrency: usize) -> (Duration, Duration) {
    let (mut audited, mut null) = (Duration::ZERO, Duration::ZERO);
    // Warm both paths (connections, caches) before timing anything.
    run_batch(&setup.audited, &setup.token, concurrency).await;
    run_batch(&setup.null, &setup.token, concurrency).await;
    for round in 0..PAIRS {
        let audited_first = round % 2 == 0;
        for audited_turn in [audited_first, !audited_first] {
            let started = std::time::Instant::now();
            if audited_turn {
                run_batch(&setup.audited, &setup.token, concurrency).await;
                audited += started.elapsed();
            } else {
                run_batch(&setup.null, &setup.token, concurrency).await;
                null += started.elapsed();
            }
        }
    }
    (audited, null)
}

criterion_group!(benches, audited_path);
criterion_main!(benches);
