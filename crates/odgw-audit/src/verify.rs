//! Offline verification of the chain (`odgw audit verify`,
//! `GET /admin/v1/audit/verify`).

use std::path::Path;

use serde::Serialize;

use crate::{
    record::GENESIS_HASH,
    segment::{list_segments, parse_record, Line, LineReader},
    AuditError,
};

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The whole chain checks out (a torn tail does not make it bad).
    pub ok: bool,
    /// Records that verified, in order, before the first bad one (all of
    /// them when `ok`).
    pub records: u64,
    /// The seq of the first record position that fails a check: the
    /// position's expected seq (1, 2, 3 …), whatever seq the line there
    /// claims. A changed record gives its own seq; a removed record the seq
    /// it had (where continuity breaks); two swapped records the first of
    /// them; an inserted record its position.
    pub first_bad_seq: Option<u64>,
    /// What failed, where (file and line), in words.
    pub detail: Option<String>,
    /// The last segment ends in an incomplete or unparseable line: a record
    /// that never became durable (a crash, or a write in progress). Reported,
    /// not counted as a break; the next start moves it into a `*.torn` file.
    pub torn_tail: bool,
}

/// Recomputes the chain under `dir`: seqs 1, 2, 3 … without gaps across
/// segments; each record's `hash` over its canonical JSON; each `prev_hash`
/// equal to the previous record's `hash` (64 zeros for seq 1); each line in
/// canonical form. Stops at the first failure. Blocking file I/O.
///
/// The chain cannot show records removed from the very end; anchor the last
/// `seq`/`hash` elsewhere (e.g. in metrics or an external log) for that.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    let segments = list_segments(dir)?;
    let mut expected = 1u64;
    let mut prev = GENESIS_HASH.to_owned();
    let mut records = 0u64;
    let mut torn_tail = false;
    let bad = |seq: u64, records: u64, detail: String| VerifyReport {
        ok: false,
        records,
        first_bad_seq: Some(seq),
        detail: Some(detail),
        torn_tail: false,
    };
    for (index, segment) in segments.iter().enumerate() {
        let is_last_segment = index + 1 == segments.len();
        let name = segment
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut reader = LineReader::open(&segment.path)?;
        let read = |reader: &mut LineReader| {
            reader
                .next_line()
                .map_err(|e| AuditError::io(format!("reading {}", segment.path.display()), e))
        };
        let mut next: Option<Line> = read(&mut reader)?;
        let mut first_in_segment = true;
        while let Some(line) = next.take() {
            next = read(&mut reader)?;
            let at = format!("{name} line {}", line.number);
            // Only the end of the last segment can be torn: nothing follows
            // but, at most, an incomplete line.
            let at_end = is_last_segment && next.as_ref().is_none_or(|n| !n.complete);
            if !line.complete {
                if is_last_segment {
                    torn_tail = true;
                    break;
                }
                return Ok(bad(
                    expected,
                    records,
                    format!("{at}: incomplete line inside a closed segment"),
                ));
            }
            let record = match parse_record(&line.bytes) {
                Ok(record) => record,
                Err(_) if at_end => {
                    torn_tail = true;
                    break;
                }
                Err(reason) => return Ok(bad(expected, records, format!("{at}: {reason}"))),
            };
            if record.seq != expected {
                return Ok(bad(
                    expected,
                    records,
                    format!("{at}: expected seq {expected}, found seq {} (records removed, reordered or inserted)", record.seq),
                ));
            }
            if first_in_segment && segment.first_seq != record.seq {
                return Ok(bad(
                    expected,
                    records,
                    format!(
                        "{at}: segment is named for seq {} but starts with seq {}",
                        segment.first_seq, record.seq
                    ),
                ));
            }
            if record.compute_hash() != record.hash {
                return Ok(bad(
                    expected,
                    records,
                    format!("{at}: hash does not match the record's content (record changed)"),
                ));
            }
            if record.to_line().as_bytes().strip_suffix(b"\n") != Some(line.bytes.as_slice()) {
                return Ok(bad(
                    expected,
                    records,
                    format!("{at}: line is not in canonical form"),
                ));
            }
            if record.prev_hash != prev {
                return Ok(bad(
                    expected,
                    records,
                    format!("{at}: prev_hash does not match the previous record's hash (record inserted or replaced)"),
                ));
            }
            prev = record.hash;
            expected += 1;
            records += 1;
            first_in_segment = false;
        }
    }
    Ok(VerifyReport {
        ok: true,
        records,
        first_bad_seq: None,
        detail: None,
        torn_tail,
    })
}
