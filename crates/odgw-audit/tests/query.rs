//! `query`: filters, paging, and skipping segments outside a time range.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{draft, open, segments};
use odgw_audit::{query, AuditRecord, AuditSink, Query};

fn seqs(dir: &std::path::Path, q: &Query) -> Vec<u64> {
    query(dir, q).map(|r| r.unwrap().seq).collect()
}

#[tokio::test]
async fn filters_combine_and_page() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4_000).await;
    for i in 1..=30 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    assert!(segments(dir.path()).len() > 2);

    let all = seqs(dir.path(), &Query::default());
    assert_eq!(all, (1..=30).collect::<Vec<_>>());

    let even = Query {
        tenant: Some("even".into()),
        ..Query::default()
    };
    assert_eq!(
        seqs(dir.path(), &even),
        (2..=30).step_by(2).collect::<Vec<_>>()
    );

    let even_user0 = Query {
        tenant: Some("even".into()),
        subject: Some("user-0".into()),
        ..Query::default()
    };
    assert_eq!(seqs(dir.path(), &even_user0), vec![6, 12, 18, 24, 30]);

    let page = |after: Option<u64>| Query {
        after_seq: after,
        limit: Some(7),
        ..Query::default()
    };
    assert_eq!(seqs(dir.path(), &page(None)), (1..=7).collect::<Vec<_>>());
    assert_eq!(
        seqs(dir.path(), &page(Some(7))),
        (8..=14).collect::<Vec<_>>()
    );
    assert_eq!(seqs(dir.path(), &page(Some(28))), vec![29, 30]);
    assert!(seqs(dir.path(), &page(Some(30))).is_empty());
    let none = Query {
        limit: Some(0),
        ..Query::default()
    };
    assert!(seqs(dir.path(), &none).is_empty());

    // Paging by seq skips whole segments without opening them.
    let mut late = query(dir.path(), &page(Some(28)));
    assert_eq!(late.by_ref().count(), 2);
    assert_eq!(late.segments_opened(), 1);

    let nobody = Query {
        subject: Some("mallory".into()),
        ..Query::default()
    };
    assert!(seqs(dir.path(), &nobody).is_empty());
}

#[tokio::test]
async fn time_range_opens_only_segments_that_can_match() {
    let dir = tempfile::tempdir().unwrap();
    // One record per segment, each in its own millisecond.
    let log = open(dir.path(), 1).await;
    for i in 1..=10 {
        log.append(draft(i)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.flush_and_close().await;
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 10);
    let records: Vec<AuditRecord> = query(dir.path(), &Query::default())
        .map(Result::unwrap)
        .collect();
    let ts: Vec<_> = records.iter().map(|r| r.timestamp().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "timestamps not distinct"
    );

    let range = Query {
        since: Some(ts[3]),
        until: Some(ts[5]),
        ..Query::default()
    };
    let mut iter = query(dir.path(), &range);
    let got: Vec<u64> = iter.by_ref().map(|r| r.unwrap().seq).collect();
    assert_eq!(got, vec![4, 5, 6]);
    // Segment 3 may hold records up to segment 4's first ts, so it is read;
    // 1, 2 and 7..=10 cannot match and are never opened.
    assert_eq!(iter.segments_opened(), 4);

    // Proof by damage: wreck every segment outside the range.
    for index in [0, 1, 6, 7, 8, 9] {
        std::fs::write(&segs[index], b"this is not an audit record\n").unwrap();
    }
    let got: Vec<u64> = query(dir.path(), &range).map(|r| r.unwrap().seq).collect();
    assert_eq!(got, vec![4, 5, 6]);

    // Inside the range, damage is reported rather than skipped silently.
    std::fs::write(&segs[4], b"this is not an audit record\n").unwrap();
    let results: Vec<_> = query(dir.path(), &range).collect();
    assert!(results.iter().any(Result::is_err));
    assert_eq!(
        results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![4, 6]
    );
}

#[tokio::test]
async fn a_line_being_written_is_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20).await;
    for i in 1..=3 {
        log.append(draft(i)).await.unwrap();
    }
    log.flush_and_close().await;
    let segment = segments(dir.path()).pop().unwrap();
    let mut text = std::fs::read(&segment).unwrap();
    text.extend_from_slice(b"{\"seq\":4,\"ts\"");
    std::fs::write(&segment, text).unwrap();
    let results: Vec<_> = query(dir.path(), &Query::default()).collect();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(Result::is_ok));
}

#[test]
fn missing_directory_is_an_error_not_an_empty_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut iter = query(&dir.path().join("nope"), &Query::default());
    assert!(iter.next().unwrap().is_err());
    assert!(iter.next().is_none());
}
