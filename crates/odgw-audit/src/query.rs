//! Reading records back: filters for the admin API and `odgw audit query`.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use time::OffsetDateTime;

use crate::{
    segment::{list_segments, parse_record, LineReader, SegmentInfo},
    AuditError, AuditRecord,
};

/// Which records to return. Every filter is optional; they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only records whose `tenant` is exactly this.
    pub tenant: Option<String>,
    /// Only records whose `subject` is exactly this.
    pub subject: Option<String>,
    /// Only records with `ts >= since`.
    pub since: Option<OffsetDateTime>,
    /// Only records with `ts <= until`.
    pub until: Option<OffsetDateTime>,
    /// Only records with `seq > after_seq` (for paging).
    pub after_seq: Option<u64>,
    /// At most this many records.
    pub limit: Option<usize>,
}

/// Returns the matching records under `dir`, oldest first, as a lazy
/// iterator.
///
/// Segments that cannot hold a match (by `since`, `until` or `after_seq`)
/// are never opened: their names say which seqs and times they cover. A
/// line that does not parse is yielded as an error and reading continues; a
/// last line still being written is skipped. This does blocking file I/O:
/// call it from `spawn_blocking` in async code.
pub fn query(dir: &Path, q: &Query) -> QueryIter {
    let mut iter = QueryIter {
        query: q.clone(),
        segments: VecDeque::new(),
        current: None,
        returned: 0,
        opened: 0,
        done: q.limit == Some(0),
        pending_error: None,
    };
    match list_segments(dir) {
        Ok(segments) => iter.segments = select(segments, q),
        Err(e) => iter.pending_error = Some(e),
    }
    iter
}

/// The segments that may hold records matching `q`.
fn select(segments: Vec<SegmentInfo>, q: &Query) -> VecDeque<SegmentInfo> {
    let mut chosen = VecDeque::new();
    for (i, segment) in segments.iter().enumerate() {
        if let Some(until) = q.until {
            if segment.first_ts > until {
                break;
            }
        }
        if let Some(next) = segments.get(i + 1) {
            // Segment i holds seqs below next.first_seq and times up to
            // next.first_ts (ts never goes backwards).
            if q.after_seq
                .is_some_and(|after| next.first_seq <= after.saturating_add(1))
            {
                continue;
            }
            if q.since.is_some_and(|since| next.first_ts < since) {
                continue;
            }
        }
        chosen.push_back(segment.clone());
    }
    chosen
}

/// The iterator returned by [`query`].
#[derive(Debug)]
pub struct QueryIter {
    query: Query,
    segments: VecDeque<SegmentInfo>,
    current: Option<(PathBuf, LineReader)>,
    returned: usize,
    opened: usize,
    done: bool,
    pending_error: Option<AuditError>,
}

impl QueryIter {
    /// How many segment files this query has opened so far.
    pub fn segments_opened(&self) -> usize {
        self.opened
    }

    /// Whether `record` passes every filter; `None` ends the query (past
    /// `until`: everything later is later still).
    fn matches(&self, record: &AuditRecord, ts: OffsetDateTime) -> Option<bool> {
        let q = &self.query;
        if q.until.is_some_and(|until| ts > until) {
            return None;
        }
        Some(
            q.after_seq.is_none_or(|after| record.seq > after)
                && q.since.is_none_or(|since| ts >= since)
                && (q.tenant.is_none() || record.tenant == q.tenant)
                && (q.subject.is_none() || record.subject == q.subject),
        )
    }
}

impl Iterator for QueryIter {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending_error.take() {
            self.done = true;
            return Some(Err(e));
        }
        while !self.done {
            let Some((path, reader)) = self.current.as_mut() else {
                let segment = self.segments.pop_front()?;
                match LineReader::open(&segment.path) {
                    Ok(reader) => {
                        self.opened += 1;
                        self.current = Some((segment.path, reader));
                    }
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            let line = match reader.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    self.current = None;
                    continue;
                }
                Err(e) => {
                    let err = AuditError::io(format!("reading {}", path.display()), e);
                    self.current = None;
                    return Some(Err(err));
                }
            };
            if !line.complete {
                // Being written right now, or a torn tail: not a record yet.
                continue;
            }
            let corrupt = |detail: String| AuditError::Corrupt {
                file: path.clone(),
                detail: format!("line {}: {detail}", line.number),
            };
            let record = match parse_record(&line.bytes) {
                Ok(record) => record,
                Err(reason) => return Some(Err(corrupt(reason))),
            };
            let ts = match record.timestamp() {
                Ok(ts) => ts,
                Err(e) => return Some(Err(corrupt(e.to_string()))),
            };
            match self.matches(&record, ts) {
                None => self.done = true,
                Some(false) => {}
                Some(true) => {
                    self.returned += 1;
                    if self.query.limit.is_some_and(|limit| self.returned >= limit) {
                        self.done = true;
                    }
                    return Some(Ok(record));
                }
            }
        }
        None
    }
}
