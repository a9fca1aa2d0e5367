//! odgw's audit trail (SPEC §8): a tamper-evident, hash-chained log of every
//! data-plane request and admin action, made durable before the response is
//! released.
//!
//! - [`AuditRecord`] / [`RecordDraft`]: the record with SPEC's 21 fields in
//!   SPEC order, and what a caller fills in before the writer seals it;
//!   [`canonical_json`] is the hashed form.
//! - [`FileAuditLog`]: the [`AuditSink`] that writes JSON Lines segments with
//!   one writer thread, group commit (one `fdatasync` per batch), a SHA-256
//!   chain, rotation, and torn-tail recovery on open. [`NullSink`] is for
//!   benchmarks only.
//! - [`AuditLayer`] and [`IntentLayer`]:
//!   the tower layers that put the log on the request path, fail closed.
//! - [`query`], [`verify`], [`to_csv_row`]: reading, checking and exporting.
//! - [`register_metrics`]: `odgw_audit_*`, read at each scrape.
//!
//! Layout on disk: `audit-{first seq:020}-{first ts}.jsonl` segments (0600)
//! in a 0700 directory; lexical order is seq order. Torn tails are kept in
//! `*.torn` files beside them.

#![warn(missing_docs)]
mod claim;
mod error;
mod layer;
mod metrics;
mod query;
mod record;
mod segment;
mod sink;
mod verify;
mod writer;

pub use claim::LOCK_FILE;
pub use error::AuditError;
pub use layer::{needs_intent, Audit, AuditLayer, Intent, IntentLayer, CLIENT_CLOSED};
pub use metrics::register_metrics;
pub use query::{query, Query, QueryIter};
pub use record::{
    canonical_json, format_ts, parse_timestamp, sha256_hex, to_csv_header, to_csv_row, AuditRecord,
    RecordDraft, RecordKind, FIELDS, GENESIS_HASH,
};
pub use sink::{AnnouncedRecords, Announcement, AuditSink, NullSink};
pub use verify::{verify, VerifyReport};
pub use writer::{AuditSettings, FileAuditLog, DEFAULT_SEGMENT_MAX_BYTES};
