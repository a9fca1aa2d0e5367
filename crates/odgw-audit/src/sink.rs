//! The [`AuditSink`] trait and the benchmark-only [`NullSink`].

use std::{
    fmt::Debug,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Condvar, Mutex,
    },
    time::Instant,
};

use async_trait::async_trait;

use crate::{AuditError, RecordDraft};

/// Where audit records go. [`crate::FileAuditLog`] is the real one.
#[async_trait]
pub trait AuditSink: Send + Sync + Debug {
    /// Makes the draft a durable record and returns its `seq`. Resolves only
    /// once the record is on stable storage; an error means the record was
    /// not kept.
    async fn append(&self, draft: RecordDraft) -> Result<u64, AuditError>;

    /// False while records cannot be made durable (for `/readyz`).
    fn is_healthy(&self) -> bool;

    /// Tells the sink that a request has started whose record will be
    /// appended soon; drop the [`Announcement`] just before appending it (or
    /// when no record will come). A group-committing sink uses the count of
    /// announced records to decide whether waiting a moment would let more
    /// records share one fsync. Sinks without batching ignore it.
    fn announce(&self) -> Announcement {
        Announcement::none()
    }
}

/// Records announced and not yet appended, and a way for a batching
/// writer to wait until none is left (see [`AuditSink::announce`]).
#[derive(Debug, Default)]
pub struct AnnouncedRecords {
    count: AtomicUsize,
    /// Set while a writer waits in [`AnnouncedRecords::wait_for_none`], so
    /// the last arrival knows to wake it (and pays for the lock only then).
    waiting: AtomicBool,
    lock: Mutex<()>,
    none_left: Condvar,
}

impl AnnouncedRecords {
    /// Records announced and not yet appended.
    pub fn outstanding(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Blocks the calling thread until no announced record is outstanding
    /// or `deadline` passes.
    pub fn wait_for_none(&self, deadline: Instant) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.store(true, Ordering::SeqCst);
        while self.outstanding() > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = self
                .none_left
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// One announced record is appended now, or will never come.
    fn settle(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.waiting.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.none_left.notify_all();
        }
    }
}

/// One announced record; see [`AuditSink::announce`].
#[derive(Debug)]
#[must_use = "dropping it at once announces nothing"]
pub struct Announcement(Option<Arc<AnnouncedRecords>>);

impl Announcement {
    /// An announcement nobody counts.
    pub fn none() -> Self {
        Self(None)
    }

    /// Counts one more record on `records` until dropped.
    pub fn on(records: &Arc<AnnouncedRecords>) -> Self {
        records.count.fetch_add(1, Ordering::SeqCst);
        Self(Some(Arc::clone(records)))
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Some(records) = self.0.take() {
            records.settle();
        }
    }
}

/// A sink that accepts every draft and writes nothing.
///
/// **For benchmarks only**: it exists to measure what the audit layer costs
/// without the disk. Using it in a server would release responses with no
/// audit record, which SPEC §8 forbids.
#[derive(Debug, Default)]
pub struct NullSink {
    seq: AtomicU64,
}

impl NullSink {
    /// A sink that numbers drafts from 1 and drops them.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl AuditSink for NullSink {
    async fn append(&self, _draft: RecordDraft) -> Result<u64, AuditError> {
        Ok(self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn is_healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn announcements_count_until_dropped() {
        let records = Arc::new(AnnouncedRecords::default());
        let first = Announcement::on(&records);
        let second = Announcement::on(&records);
        assert_eq!(records.outstanding(), 2);
        drop(first);
        assert_eq!(records.outstanding(), 1);
        drop(second);
        assert_eq!(records.outstanding(), 0);
        drop(Announcement::none());
        assert_eq!(records.outstanding(), 0);
    }

    #[test]
    fn a_waiting_writer_wakes_when_the_last_record_arrives() {
        let records = Arc::new(AnnouncedRecords::default());
        let pending: Vec<_> = (0..3).map(|_| Announcement::on(&records)).collect();
        let arrivals = std::thread::spawn(move || {
            for announcement in pending {
                std::thread::sleep(Duration::from_millis(20));
                drop(announcement);
            }
        });
        let started = Instant::now();
        // Far deadline: only the last arrival can end the wait in time.
        records.wait_for_none(started + Duration::from_secs(30));
        assert_eq!(records.outstanding(), 0);
        assert!(started.elapsed() < Duration::from_secs(20));
        arrivals.join().unwrap();
    }

    #[test]
    fn the_wait_ends_at_the_deadline_when_records_do_not_come() {
        let records = Arc::new(AnnouncedRecords::default());
        let _never = Announcement::on(&records);
        let started = Instant::now();
        records.wait_for_none(started + Duration::from_millis(30));
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(records.outstanding(), 1);
    }
}
