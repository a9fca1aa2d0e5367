//! The error type of the audit trail.

use std::{io, path::PathBuf};

/// Why an audit operation failed. Messages are lowercase and carry no record
/// content beyond file names and line numbers.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record was not made durable within the write timeout.
    #[error("audit write timed out")]
    Timeout,
    /// The log was closed (`flush_and_close`) or its writer is gone.
    #[error("audit log is closed")]
    Closed,
    /// The batch holding the record could not be written or synced; the
    /// record was not kept and consumed no sequence number.
    #[error("audit write failed: {0}")]
    WriteFailed(String),
    /// A file-system operation outside the write path failed.
    #[error("audit i/o error ({context}): {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A segment holds something that is not a valid record where a valid
    /// record is required.
    #[error("corrupt audit segment {file:?}: {detail}")]
    Corrupt {
        /// The segment.
        file: PathBuf,
        /// Where and what.
        detail: String,
    },
    /// Another writer (another odgw process) holds the audit directory.
    /// (The message leaves the directory to the caller's context.)
    #[error("in use by another odgw{}; each odgw needs an audit.path of its own", holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default())]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id, as it recorded it.
        holder: Option<u32>,
    },
    /// The settings cannot work (e.g. a zero segment size).
    #[error("invalid audit settings: {0}")]
    Settings(String),
    /// A timestamp given to a query did not parse.
    #[error("invalid timestamp {0:?}: expected RFC 3339 (e.g. 2026-11-27T20:40:39Z) or a date (2026-11-27)")]
    BadTimestamp(String),
}

impl AuditError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
