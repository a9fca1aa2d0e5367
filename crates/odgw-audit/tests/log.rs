//! The file log: durability, group commit, rotation, recovery, failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use common::{all_lines, draft, files_ending, open, segments, settings};
use odgw_audit::{verify, AuditError, AuditRecord, AuditSink, FileAuditLog, FIELDS, GENESIS_HASH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_gapless_and_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    // Queue all 200 before the writer may take a batch, so the test shows
    // group commit itself rather than depending on scheduling luck.
    log.hold_writes(true);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(draft(i)).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.pending() < 200 {
        assert!(Instant::now() < deadline, "appends never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.hold_writes(false);
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    assert!(
        log.batches() <= 2,
        "200 records took {} fsyncs",
        log.batches()
    );
    assert_eq!(log.records(), 200);

    let report = verify(dir.path()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_running_concurrent_appends_stay_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 8 * 1024).await;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(draft(i)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    assert!(log.batches() <= 300);
    let report = verify(dir.path()).unwrap();
    assert!(report.ok && report.records == 300, "{report:?}");
}

#[tokio::test]
async fn written_lines_carry_every_field_in_spec_order_with_owner_only_modes() {
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("nested").join("audit");
    let log = open(&audit_dir, 64 << 20).await;
    let mut sparse = odgw_audit::RecordDraft::new(odgw_audit::RecordKind::Admin);
    sparse.action = Some("tenant.put".into());
    sparse.target = Some("demo".into());
    assert_eq!(log.append(draft(1)).await.unwrap(), 1);
    assert_eq!(log.append(sparse).await.unwrap(), 2);
    log.flush_and_close().await;

    let lines = all_lines(&audit_dir);
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let mut last = 0;
        for name in FIELDS {
            let at = line
                .find(&format!("\"{name}\":"))
                .unwrap_or_else(|| panic!("{name} missing in {line}"));
            assert!(at >= last, "{name} out of order in {line}");
            last = at;
        }
        assert!(line.contains(",\"hash\":\""), "{line}");
        assert!(line.ends_with("\"}"));
    }
    assert!(lines[1].contains(r#""tenant":null"#) && lines[1].contains(r#""status":null"#));
    let first: AuditRecord = serde_json::from_str(&lines[0]).unwrap();
    let second: AuditRecord = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(first.prev_hash, GENESIS_HASH);
    assert_eq!(second.prev_hash, first.hash);
    assert_eq!(first.hash, first.compute_hash());
    // RFC 3339 UTC with milliseconds.
    assert_eq!(first.ts.len(), "2026-11-27T20:40:39.123Z".len());
    assert!(first.ts.ends_with('Z') && first.ts.as_bytes()[19] == b'.');

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&audit_dir), 0o700);
    assert_eq!(mode(&segments(&audit_dir)[0]), 0o600);
    assert_eq!(mode(&audit_dir.join(odgw_audit::LOCK_FILE)), 0o600);
}

#[tokio::test]
async fn rotation_and_reopen_continue_seq_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 2_000).await;
    for i in 1..=30 {
        assert_eq!(log.append(draft(i)).await.unwrap(), i);
    }
    log.flush_and_close().await;
    let first_run = segments(dir.path());
    assert!(first_run.len() >= 4, "only {} segments", first_run.len());
    // Each segment is named for the first seq it holds.
    for path in &first_run {
        let text = std::fs::read_to_string(path).unwrap();
        let first: AuditRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("audit-{:020}-", first.seq)),
            "{name}"
        );
    }

    let log = open(dir.path(), 2_000).await;
    for i in 31..=40 {
        assert_eq!(log.append(draft(i)).await.unwrap(), i);
    }
    log.flush_and_close().await;
    let report = verify(dir.path()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 40);
    assert!(!report.torn_tail);
}

async fn write_then_tear(tail: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    for i in 1..=5 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    let segment = segments(dir.path()).pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(tail).unwrap();
    dir
}

async fn assert_torn_tail_recovered(dir: &tempfile::TempDir, tail: &[u8]) {
    let before = verify(dir.path()).unwrap();
    assert!(
        before.ok && before.torn_tail && before.records == 5,
        "{before:?}"
    );

    let log = open(dir.path(), 64 << 20).await;
    let torn = files_ending(dir.path(), ".torn");
    assert_eq!(torn.len(), 1, "torn tail not moved aside");
    assert_eq!(std::fs::read(&torn[0]).unwrap(), tail);
    let lines = all_lines(dir.path());
    assert_eq!(lines.len(), 5);
    assert_eq!(log.append(draft(6)).await.unwrap(), 6);
    log.flush_and_close().await;

    let after = verify(dir.path()).unwrap();
    assert!(
        after.ok && !after.torn_tail && after.records == 6,
        "{after:?}"
    );
}

#[tokio::test]
async fn torn_last_line_without_newline_is_moved_aside_and_chain_continues() {
    let tail = br#"{"seq":6,"ts":"2026-11-27T20:4"#;
    let dir = write_then_tear(tail).await;
    assert_torn_tail_recovered(&dir, tail).await;
}

#[tokio::test]
async fn zero_filled_last_line_counts_as_torn() {
    let tail = b"\0\0\0\0\0\0\0\0\n";
    let dir = write_then_tear(tail).await;
    assert_torn_tail_recovered(&dir, tail).await;
}

#[tokio::test]
async fn segment_holding_only_a_torn_line_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    for i in 1..=3 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    // A crash right after rotation: the new segment got half a line.
    let name = "audit-00000000000000000004-20990101T000000000Z.jsonl";
    std::fs::write(dir.path().join(name), b"{\"seq\":4,").unwrap();

    let log = open(dir.path(), 64 << 20).await;
    assert!(!dir.path().join(name).exists());
    assert_eq!(files_ending(dir.path(), ".torn").len(), 1);
    assert_eq!(log.append(draft(4)).await.unwrap(), 4);
    log.flush_and_close().await;
    let report = verify(dir.path()).unwrap();
    assert!(report.ok && report.records == 4, "{report:?}");
}

#[tokio::test]
async fn corrupt_record_before_the_tail_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    for i in 1..=3 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    let segment = segments(dir.path()).pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(b"garbage\nmore garbage\n").unwrap();
    let err = FileAuditLog::open(settings(dir.path(), 64 << 20))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn injected_write_failure_fails_within_timeout_then_recovers_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 64 << 20);
    s.write_timeout = Duration::from_secs(2);
    let log = FileAuditLog::open(s).await.unwrap();
    for i in 1..=3 {
        log.append(draft(i)).await.unwrap();
    }
    assert!(log.is_healthy());

    log.fail_writes(true);
    let started = Instant::now();
    let err = log.append(draft(99)).await.unwrap_err();
    assert!(matches!(err, AuditError::WriteFailed(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!log.is_healthy());
    let err = log.append(draft(100)).await.unwrap_err();
    assert!(matches!(err, AuditError::WriteFailed(_)), "{err}");

    log.fail_writes(false);
    // The failed records used no seq, and their half-written bytes are gone.
    assert_eq!(log.append(draft(4)).await.unwrap(), 4);
    assert!(log.is_healthy());
    log.flush_and_close().await;
    let report = verify(dir.path()).unwrap();
    assert!(
        report.ok && report.records == 4 && !report.torn_tail,
        "{report:?}"
    );
    assert!(!all_lines(dir.path()).iter().any(|l| l.contains("req-99")));
}

#[tokio::test]
async fn health_recovers_without_traffic_once_the_disk_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    log.fail_writes(true);
    assert!(log.append(draft(1)).await.is_err());
    assert!(!log.is_healthy());
    log.fail_writes(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.is_healthy() {
        assert!(Instant::now() < deadline, "never became healthy again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(log.append(draft(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn stalled_writer_times_out_and_the_abandoned_record_uses_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 64 << 20);
    s.write_timeout = Duration::from_millis(200);
    let log = FileAuditLog::open(s).await.unwrap();
    assert_eq!(log.append(draft(1)).await.unwrap(), 1);

    log.hold_writes(true);
    let started = Instant::now();
    let err = log.append(draft(2)).await.unwrap_err();
    assert!(matches!(err, AuditError::Timeout), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(!log.is_healthy());
    log.hold_writes(false);

    assert_eq!(log.append(draft(3)).await.unwrap(), 2);
    assert!(log.is_healthy());
    log.flush_and_close().await;
    let lines = all_lines(dir.path());
    assert_eq!(lines.len(), 2);
    assert!(!lines.iter().any(|l| l.contains("\"req-2\"")));
    assert!(verify(dir.path()).unwrap().ok);
}

/// A second writer on a directory in use is refused before it reads or
/// repairs anything, and the first writes on with an unbroken chain; once the
/// first is closed, the directory is free at once.
#[tokio::test]
async fn a_second_writer_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), 64 << 20).await;
    assert_eq!(first.append(draft(1)).await.unwrap(), 1);

    let second = FileAuditLog::open(settings(dir.path(), 64 << 20)).await;
    match second {
        Err(AuditError::InUse { dir: d, holder }) => {
            assert_eq!(d, dir.path());
            assert_eq!(holder, Some(std::process::id()));
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("two writers on one audit directory"),
    }
    assert_eq!(first.append(draft(2)).await.unwrap(), 2);
    first.flush_and_close().await;

    let again = open(dir.path(), 64 << 20).await;
    assert_eq!(again.append(draft(3)).await.unwrap(), 3);
    again.flush_and_close().await;
    let report = verify(dir.path()).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 3);
}

#[tokio::test]
async fn closed_log_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    log.append(draft(1)).await.unwrap();
    log.flush_and_close().await;
    log.flush_and_close().await;
    assert!(matches!(
        log.append(draft(2)).await,
        Err(AuditError::Closed)
    ));
    assert!(!log.is_healthy());
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 0);
    assert!(matches!(
        FileAuditLog::open(s.clone()).await,
        Err(AuditError::Settings(_))
    ));
    s.segment_max_bytes = 1;
    s.write_timeout = Duration::ZERO;
    assert!(matches!(
        FileAuditLog::open(s).await,
        Err(AuditError::Settings(_))
    ));
}
