//! Segment files: naming, listing, reading lines, and the torn-tail check.
//!
//! A segment is named `audit-{first seq, 20 digits}-{first ts}.jsonl`, so
//! lexical order is seq order and the name alone is a small index: because
//! the writer never lets `ts` go backwards, segment *k* holds records with
//! `ts` between its own first ts and the next segment's first ts. Queries use
//! that to skip segments outside a time range without opening them.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use time::{macros::format_description, OffsetDateTime, PrimitiveDateTime};

use crate::{AuditError, AuditRecord};

/// A segment file found in the audit directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub path: PathBuf,
    pub first_seq: u64,
    pub first_ts: OffsetDateTime,
}

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

pub(crate) fn segment_name(first_seq: u64, first_ts: OffsetDateTime) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute][second][subsecond digits:3]Z");
    let ts = first_ts
        .to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default();
    format!("{PREFIX}{first_seq:020}-{ts}{SUFFIX}")
}

pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, OffsetDateTime)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (seq, ts) = rest.split_once('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fmt = format_description!("[year][month][day]T[hour][minute][second][subsecond digits:3]Z");
    let ts = PrimitiveDateTime::parse(ts, &fmt).ok()?.assume_utc();
    Some((seq.parse().ok()?, ts))
}

/// The segments under `dir`, oldest first. Other files (`*.torn`, the
/// probe file) are ignored; a `*.jsonl` file with a foreign name is skipped
/// with a warning.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, AuditError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| AuditError::io(format!("listing {}", dir.display()), e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_name(name) {
            Some((first_seq, first_ts)) => segments.push(SegmentInfo {
                path: entry.path(),
                first_seq,
                first_ts,
            }),
            None if name.ends_with(SUFFIX) => {
                tracing::warn!(file = %name, "ignoring a .jsonl file that is not an audit segment");
            }
            None => {}
        }
    }
    segments.sort_by(|a, b| (a.first_seq, &a.path).cmp(&(b.first_seq, &b.path)));
    Ok(segments)
}

/// One line of a segment, with its newline removed.
#[derive(Debug)]
pub(crate) struct Line {
    pub bytes: Vec<u8>,
    /// False for a last line without its newline (torn, or being written).
    pub complete: bool,
    /// 1-based line number within the segment.
    pub number: u64,
}

/// Reads a segment line by line.
#[derive(Debug)]
pub(crate) struct LineReader {
    reader: BufReader<File>,
    number: u64,
}

impl LineReader {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path)
            .map_err(|e| AuditError::io(format!("opening {}", path.display()), e))?;
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, file),
            number: 0,
        })
    }

    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        let mut bytes = Vec::new();
        if self.reader.read_until(b'\n', &mut bytes)? == 0 {
            return Ok(None);
        }
        self.number += 1;
        let complete = bytes.last() == Some(&b'\n');
        if complete {
            bytes.pop();
        }
        Ok(Some(Line {
            bytes,
            complete,
            number: self.number,
        }))
    }
}

/// Parses one line as a record.
pub(crate) fn parse_record(bytes: &[u8]) -> Result<AuditRecord, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a valid record: {e}"))
}

/// What the end of a segment looks like.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The last complete, parseable record.
    pub last: Option<AuditRecord>,
    /// Length of the segment without the torn tail.
    pub complete_len: u64,
    /// The torn tail's bytes, if any.
    pub torn: Option<Vec<u8>>,
}

/// Reads a segment's end without reading the whole file. The torn tail is
/// whatever follows the last newline, plus the last newline-terminated line
/// when that does not parse (a crash can leave zero-filled or half-written
/// blocks before the final page). Anything worse is corruption, not a torn
/// write, and is refused.
pub(crate) fn inspect_tail(path: &Path) -> Result<Tail, AuditError> {
    let ctx = |e| AuditError::io(format!("reading {}", path.display()), e);
    let mut file = File::open(path).map_err(ctx)?;
    let len = file.metadata().map_err(ctx)?.len();
    let mut complete_end = match find_prev_newline(&file, len).map_err(ctx)? {
        Some(p) => p + 1,
        None => 0,
    };
    let mut torn_start = complete_end;
    let mut last = None;
    for attempt in 0..2 {
        if complete_end == 0 {
            break;
        }
        let line_start = match find_prev_newline(&file, complete_end - 1).map_err(ctx)? {
            Some(p) => p + 1,
            None => 0,
        };
        let bytes = read_range(&mut file, line_start, complete_end - 1).map_err(ctx)?;
        match parse_record(&bytes) {
            Ok(record) => {
                last = Some(record);
                break;
            }
            Err(reason) if attempt == 0 => {
                tracing::debug!(file = %path.display(), %reason, "last line of segment does not parse");
                torn_start = line_start;
                complete_end = line_start;
            }
            Err(reason) => {
                return Err(AuditError::Corrupt {
                    file: path.to_owned(),
                    detail: format!(
                        "the record before the torn tail (byte {line_start}) is invalid: {reason}; run `odgw audit verify`"
                    ),
                })
            }
        }
    }
    let torn = if torn_start < len {
        Some(read_range(&mut file, torn_start, len).map_err(ctx)?)
    } else {
        None
    };
    Ok(Tail {
        last,
        complete_len: torn_start,
        torn,
    })
}

/// Position of the last `\n` in `file[..before]`.
fn find_prev_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 8 * 1024;
    let mut end = before;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

fn read_range(file: &mut File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((end - start) as usize);
    file.take(end - start).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq_and_round_trip() {
        let ts = time::macros::datetime!(2026-11-27 20:40:39.123 UTC);
        let a = segment_name(9, ts);
        let b = segment_name(10, ts);
        assert_eq!(a, "audit-00000000000000000009-20261127T204039123Z.jsonl");
        assert!(a < b);
        assert_eq!(parse_segment_name(&a), Some((9, ts)));
        assert_eq!(
            parse_segment_name("audit-9-20261127T204039123Z.jsonl"),
            None
        );
        assert_eq!(parse_segment_name(&format!("{a}.5.torn")), None);
    }
}
