//! `audit`: the audit-line parser (`AuditRecord` deserialization),
//! [`odgw_audit::canonical_json`] and [`odgw_audit::verify`] over segment
//! files written from fuzz bytes.
//!
//! The first byte picks a mode:
//! - line: the rest is one line. If it parses as a record, writing that
//!   record (`to_line`) parses back to the same record; the line is the
//!   canonical JSON with `hash` appended as the last key (and the canonical
//!   JSON alone is not a record); `compute_hash` is the SHA-256 of the
//!   canonical JSON; writing the re-read record gives the same line.
//! - segments: the rest is split on `0xFE` into up to three segment files.
//!   `verify` returns a report, never an error or a panic, and the report is
//!   consistent: `ok` has no `first_bad_seq` or detail; not `ok` names
//!   `first_bad_seq = records + 1` with a detail and no torn tail; no more
//!   records than lines; the same answer twice.
//! - chain: a valid chain of 1–5 records built from the rest (field values
//!   are fuzz text, so escaping is exercised), in one or two segments, must
//!   verify with every record and no torn tail. Then one mutation:
//!   truncating the last segment leaves `ok` with exactly the whole lines
//!   before the cut and a torn tail iff a partial line remains; changing any
//!   one byte of line *i* (0-based, across segments) is caught at seq
//!   *i + 1* with *i* records verified, or — at the end of the last segment
//!   only — read as a torn tail after *i* records. Never `ok` with the
//!   changed record counted.

use std::path::Path;

use odgw_audit::{canonical_json, verify, AuditRecord, RecordDraft, RecordKind, GENESIS_HASH};

use super::input::Input;

const TS: &str = "20260101T000000000Z";

fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}-{TS}.jsonl")
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => line(input.rest()),
        1 => segments(input.rest()),
        _ => chain(input),
    }
}

fn line(bytes: &[u8]) {
    let Ok(record) = serde_json::from_slice::<AuditRecord>(bytes) else {
        return;
    };
    let written = record.to_line();
    assert!(written.ends_with('\n') && written.matches('\n').count() == 1);
    let reparsed: AuditRecord = serde_json::from_str(&written)
        .unwrap_or_else(|e| panic!("to_line does not parse back: {e}: {written}"));
    assert_eq!(reparsed, record, "to_line round trip changed the record");
    let canonical = canonical_json(&record);
    assert_eq!(canonical_json(&reparsed), canonical);
    let hash = serde_json::to_string(&record.hash).unwrap_or_default();
    assert!(canonical.ends_with('}') && canonical.starts_with("{\"seq\":"));
    assert_eq!(
        written,
        format!("{},\"hash\":{hash}}}\n", &canonical[..canonical.len() - 1]),
        "the line is not the canonical JSON plus hash"
    );
    assert!(
        serde_json::from_str::<AuditRecord>(&canonical).is_err(),
        "canonical JSON (no hash) parsed as a full record"
    );
    assert_eq!(
        record.compute_hash(),
        odgw_audit::sha256_hex(canonical.as_bytes())
    );
    // Writing is a fixed point: what was written once is written again.
    assert_eq!(reparsed.to_line(), written);
}

/// Writes `files` (name, bytes) into a fresh directory and verifies it.
fn verify_files(files: &[(String, Vec<u8>)]) -> odgw_audit::VerifyReport {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap_or_else(|e| panic!("write: {e}"));
    }
    let report = verify_dir(dir.path());
    assert_eq!(
        verify_dir(dir.path()),
        report,
        "verify is not deterministic"
    );
    report
}

fn verify_dir(dir: &Path) -> odgw_audit::VerifyReport {
    let report = verify(dir).unwrap_or_else(|e| panic!("verify failed on a readable dir: {e}"));
    if report.ok {
        assert_eq!(report.first_bad_seq, None);
        assert_eq!(report.detail, None);
    } else {
        assert_eq!(report.first_bad_seq, Some(report.records + 1));
        assert!(report.detail.is_some());
        assert!(!report.torn_tail);
    }
    report
}

fn segments(bytes: &[u8]) {
    let mut files = Vec::new();
    let mut first_seq = 1;
    for content in bytes.split(|b| *b == 0xFE).take(3) {
        files.push((segment_name(first_seq), content.to_vec()));
        first_seq += content.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
    let report = verify_files(&files);
    assert!(report.records <= newlines, "more records than lines");
}

fn draft(input: &mut Input<'_>) -> RecordDraft {
    let kinds = [RecordKind::Request, RecordKind::Intent, RecordKind::Admin];
    let kind = kinds[usize::from(input.byte()) % kinds.len()];
    let flags = input.u16();
    let mut text = |bit: u16| (flags & (1 << bit) != 0).then(|| input.text(b'\n'));
    RecordDraft {
        kind,
        request_id: text(0),
        tenant: text(1),
        subject: text(2),
        issuer: text(3),
        client_ip: text(4),
        method: text(5),
        path: text(6),
        query: text(7),
        outcome: text(8),
        error_code: text(9),
        action: text(10),
        target: text(11),
        status: (flags & (1 << 12) != 0).then_some(200),
        upstream_status: (flags & (1 << 13) != 0).then_some(503),
        duration_ms: (flags & (1 << 14) != 0).then_some(u64::MAX),
        upstream_ms: (flags & (1 << 15) != 0).then_some(0),
    }
}

fn chain(mut input: Input<'_>) {
    let n = 1 + usize::from(input.byte()) % 5;
    let split = usize::from(input.byte()) % (n + 1);
    let mutation = input.byte();
    let position = usize::from(input.u16());
    let flip = input.byte() | 1;
    let ts = input.text(b'\n');
    let mut lines = Vec::with_capacity(n);
    let mut prev = GENESIS_HASH.to_owned();
    for seq in 1..=n as u64 {
        let record = AuditRecord::from_draft(draft(&mut input), seq, ts.clone(), prev);
        prev = record.hash.clone();
        lines.push(record.to_line().into_bytes());
    }
    // One or two segments, never an empty one.
    let split = if split == 0 || split == n { n } else { split };
    let mut files = vec![(segment_name(1), lines[..split].concat())];
    if split < n {
        files.push((segment_name(split as u64 + 1), lines[split..].concat()));
    }
    let report = verify_files(&files);
    assert!(
        report.ok && report.records == n as u64 && !report.torn_tail,
        "a valid chain did not verify: {report:?}"
    );

    let last = files.len() - 1;
    let earlier = if last == 0 { 0 } else { split as u64 };
    if mutation & 1 == 0 {
        let content = &files[last].1;
        let len = content.len();
        let cut = position % len;
        let kept = &content[..cut];
        let whole = kept.iter().filter(|b| **b == b'\n').count() as u64;
        let partial = !kept.is_empty() && !kept.ends_with(b"\n");
        files[last].1.truncate(cut);
        let report = verify_files(&files);
        assert!(
            report.ok && report.records == earlier + whole && report.torn_tail == partial,
            "truncating at {cut} of {len} gave {report:?}"
        );
    } else {
        let total: usize = files.iter().map(|(_, bytes)| bytes.len()).sum();
        let mut at = position % total;
        let mut file = 0;
        while at >= files[file].1.len() {
            at -= files[file].1.len();
            file += 1;
        }
        let line_index = files[..file]
            .iter()
            .map(|(_, bytes)| bytes.iter().filter(|b| **b == b'\n').count())
            .sum::<usize>()
            + files[file].1[..at].iter().filter(|b| **b == b'\n').count();
        files[file].1[at] ^= flip;
        let report = verify_files(&files);
        let i = line_index as u64;
        let caught = !report.ok && report.first_bad_seq == Some(i + 1) && report.records == i;
        let torn = report.ok && report.torn_tail && report.records == i && file == last;
        assert!(
            caught || torn,
            "changing byte {at} of segment {file} (line {i}) gave {report:?}"
        );
    }
}
