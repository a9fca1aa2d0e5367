//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use odgw_audit::{AuditSettings, FileAuditLog, RecordDraft, RecordKind};

pub fn settings(dir: &Path, segment_max_bytes: u64) -> AuditSettings {
    AuditSettings {
        dir: dir.to_owned(),
        segment_max_bytes,
        write_timeout: Duration::from_secs(10),
        fail_closed: true,
    }
}

pub async fn open(dir: &Path, segment_max_bytes: u64) -> FileAuditLog {
    FileAuditLog::open(settings(dir, segment_max_bytes))
        .await
        .unwrap()
}

/// A request draft whose fields vary with `i`.
pub fn draft(i: u64) -> RecordDraft {
    RecordDraft {
        kind: RecordKind::Request,
        request_id: Some(format!("req-{i}")),
        tenant: Some(if i % 2 == 0 { "even" } else { "odd" }.to_owned()),
        subject: Some(format!("user-{}", i % 3)),
        issuer: Some("https://idp.example.com/".to_owned()),
        client_ip: Some("10.0.0.1".to_owned()),
        method: Some("GET".to_owned()),
        path: Some(format!("/api/v1/patients/{i}")),
        query: Some("Offset=0&Limit=100".to_owned()),
        status: Some(200),
        upstream_status: Some(200),
        outcome: Some("forwarded".to_owned()),
        error_code: None,
        duration_ms: Some(i),
        upstream_ms: Some(i),
        action: None,
        target: None,
    }
}

/// `*.jsonl` segments under `dir`, in name order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, ".jsonl")
}

pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// Every line (without newline) of every segment, in order.
pub fn all_lines(dir: &Path) -> Vec<String> {
    segments(dir)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}
