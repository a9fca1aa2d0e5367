//! `verify` finds the first changed, removed, reordered or inserted record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{draft, open, segments};
use odgw_audit::{verify, AuditRecord, AuditSink, VerifyReport};

/// 20 records in one segment; returns the segment and its lines.
async fn one_segment_log() -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    for i in 1..=20 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    let segment = segments(dir.path()).pop().unwrap();
    let lines = std::fs::read_to_string(&segment)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (dir, segment, lines)
}

fn rewrite(segment: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(segment, text).unwrap();
}

fn assert_bad_at(report: &VerifyReport, seq: u64, words: &str) {
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, Some(seq), "{report:?}");
    assert_eq!(report.records, seq - 1, "{report:?}");
    let detail = report.detail.as_deref().unwrap();
    assert!(detail.contains(words), "{detail}");
}

#[tokio::test]
async fn untouched_log_verifies() {
    let (dir, _, _) = one_segment_log().await;
    let report = verify(dir.path()).unwrap();
    assert_eq!(
        report,
        VerifyReport {
            ok: true,
            records: 20,
            first_bad_seq: None,
            detail: None,
            torn_tail: false
        }
    );
}

#[tokio::test]
async fn empty_directory_verifies_with_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let report = verify(dir.path()).unwrap();
    assert!(report.ok && report.records == 0, "{report:?}");
    assert!(verify(&dir.path().join("missing")).is_err());
}

#[tokio::test]
async fn one_flipped_character_is_found_at_its_record() {
    let (dir, segment, mut lines) = one_segment_log().await;
    lines[6] = lines[6].replace("/api/v1/patients/7", "/api/v1/patients/8");
    rewrite(&segment, &lines);
    assert_bad_at(&verify(dir.path()).unwrap(), 7, "hash does not match");
}

#[tokio::test]
async fn flipped_character_in_the_hash_itself_is_found() {
    let (dir, segment, mut lines) = one_segment_log().await;
    let at = lines[11].rfind("\"}").unwrap() - 1;
    let flipped = if &lines[11][at..=at] == "0" { "1" } else { "0" };
    lines[11].replace_range(at..=at, flipped);
    rewrite(&segment, &lines);
    assert_bad_at(&verify(dir.path()).unwrap(), 12, "hash does not match");
}

#[tokio::test]
async fn deleted_line_is_found_where_continuity_breaks() {
    let (dir, segment, mut lines) = one_segment_log().await;
    lines.remove(6);
    rewrite(&segment, &lines);
    assert_bad_at(
        &verify(dir.path()).unwrap(),
        7,
        "expected seq 7, found seq 8",
    );
}

#[tokio::test]
async fn swapped_lines_are_found_at_the_first_out_of_place() {
    let (dir, segment, mut lines) = one_segment_log().await;
    lines.swap(9, 10);
    rewrite(&segment, &lines);
    assert_bad_at(
        &verify(dir.path()).unwrap(),
        10,
        "expected seq 10, found seq 11",
    );
}

#[tokio::test]
async fn inserted_forged_line_with_valid_hash_is_caught_by_linkage() {
    let (dir, segment, mut lines) = one_segment_log().await;
    // A copy of record 12 renumbered to 7 with a fresh, correct hash: only
    // its prev_hash (record 11's hash) gives it away.
    let mut forged: AuditRecord = serde_json::from_str(&lines[11]).unwrap();
    forged.seq = 7;
    forged.path = Some("/api/v1/patients/forged".into());
    forged.hash = forged.compute_hash();
    lines.insert(6, forged.to_line().trim_end().to_owned());
    rewrite(&segment, &lines);
    assert_bad_at(&verify(dir.path()).unwrap(), 7, "prev_hash does not match");
}

#[tokio::test]
async fn perfectly_linked_forgery_is_caught_at_the_record_it_displaced() {
    let (dir, segment, mut lines) = one_segment_log().await;
    // Same seq and prev_hash as the real record 7: position 7 checks out,
    // so the first position that fails is 8, holding the real record 7.
    let mut forged: AuditRecord = serde_json::from_str(&lines[6]).unwrap();
    forged.path = Some("/api/v1/patients/forged".into());
    forged.hash = forged.compute_hash();
    lines.insert(6, forged.to_line().trim_end().to_owned());
    rewrite(&segment, &lines);
    assert_bad_at(
        &verify(dir.path()).unwrap(),
        8,
        "expected seq 8, found seq 7",
    );
}

#[tokio::test]
async fn rewritten_chain_tail_is_caught_where_linkage_breaks() {
    let (dir, segment, mut lines) = one_segment_log().await;
    // Change record 15 and re-hash it, but leave 16 pointing at the old hash.
    let mut changed: AuditRecord = serde_json::from_str(&lines[14]).unwrap();
    changed.status = Some(500);
    changed.hash = changed.compute_hash();
    lines[14] = changed.to_line().trim_end().to_owned();
    rewrite(&segment, &lines);
    assert_bad_at(&verify(dir.path()).unwrap(), 16, "prev_hash does not match");
}

#[tokio::test]
async fn non_canonical_line_is_refused() {
    let (dir, segment, mut lines) = one_segment_log().await;
    lines[3] = lines[3].replacen("{\"seq\":4,", "{\"seq\": 4,", 1);
    rewrite(&segment, &lines);
    assert_bad_at(&verify(dir.path()).unwrap(), 4, "canonical form");
}

#[tokio::test]
async fn garbage_line_in_the_middle_is_not_a_torn_tail() {
    let (dir, segment, mut lines) = one_segment_log().await;
    lines[4] = "not json".into();
    rewrite(&segment, &lines);
    let report = verify(dir.path()).unwrap();
    assert_bad_at(&report, 5, "not a valid record");
    assert!(!report.torn_tail);
}

#[tokio::test]
async fn removed_middle_segment_is_found_at_its_first_seq() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1_500).await;
    for i in 1..=20 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let text = std::fs::read_to_string(&segs[1]).unwrap();
    let first: AuditRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    std::fs::remove_file(&segs[1]).unwrap();
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.first_bad_seq, Some(first.seq), "{report:?}");
}
