//! Append throughput with concurrent appenders: the real `FileAuditLog`
//! (group commit, one fdatasync per batch) against `NullSink` (no disk), to
//! show what durability costs per request and how group commit amortises it.
//!
//! Run with `cargo bench -p odgw-audit --bench append`.

use std::{sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use odgw_audit::{AuditSettings, AuditSink, FileAuditLog, NullSink, RecordDraft, RecordKind};

fn draft(i: u64) -> RecordDraft {
    RecordDraft {
        kind: RecordKind::Request,
        request_id: Some(format!("bench-{i}")),
        tenant: Some("demo".into()),
        subject: Some("alice".into()),
        issuer: Some("https://idp.example.com/".into()),
        client_ip: Some("10.1.2.3".into()),
        method: Some("GET".into()),
        path: Some(format!("/api/v1/patients/{i}")),
        query: Some("Offset=0&Limit=100".into()),
        status: Some(200),
        upstream_status: Some(200),
        outcome: Some("forwarded".into()),
        duration_ms: Some(12),
        upstream_ms: Some(9),
        ..RecordDraft::default()
    }
}

/// `appenders` tasks each append once and wait for durability.
async fn burst(sink: Arc<dyn AuditSink>, appenders: u64) {
    let tasks: Vec<_> = (0..appenders)
        .map(|i| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move { sink.append(draft(i)).await })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("append failed: {e}"),
            Err(e) => panic!("appender panicked: {e}"),
        }
    }
}

fn append(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    };
    let file: Arc<dyn AuditSink> = runtime.block_on(async {
        let mut settings = AuditSettings::new(dir.path());
        settings.write_timeout = Duration::from_secs(30);
        match FileAuditLog::open(settings).await {
            Ok(log) => Arc::new(log) as Arc<dyn AuditSink>,
            Err(e) => panic!("open: {e}"),
        }
    });
    let null: Arc<dyn AuditSink> = Arc::new(NullSink::new());

    let mut group = c.benchmark_group("append");
    group.sample_size(20);
    for appenders in [1u64, 16, 128] {
        group.throughput(Throughput::Elements(appenders));
        for (name, sink) in [("file", &file), ("null", &null)] {
            group.bench_with_input(BenchmarkId::new(name, appenders), &appenders, |b, &n| {
                b.iter(|| runtime.block_on(burst(Arc::clone(sink), n)));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
