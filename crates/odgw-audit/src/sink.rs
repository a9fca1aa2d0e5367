//! The [`AuditSink`] trait and the benchmark-only [`NullSink`].

use std::{
    fmt::Debug,
    sync::atomic::{AtomicU64, Ordering},
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
