//! The audit trail's metrics (`odgw_audit_*`), read at scrape time: whether
//! records are being made durable, what group commit achieves, and how many
//! records could not be written.

use odgw_core::scrape::register_scraped;
use prometheus_client::registry::Registry;

use crate::{AuditLayer, AuditSink, FileAuditLog, IntentLayer};

/// Registers `odgw_audit_healthy`, `odgw_audit_write_failures_total` (the
/// failures of both layers), `odgw_audit_batches_total`,
/// `odgw_audit_records_total` and `odgw_audit_write_seconds_total` (with
/// the batches: mean batch size and write latency).
pub fn register_metrics(
    registry: &mut Registry,
    log: &FileAuditLog,
    audit_layer: &AuditLayer,
    intent_layer: &IntentLayer,
) {
    let (log, audit_layer, intent_layer) = (log.clone(), audit_layer.clone(), intent_layer.clone());
    register_scraped(registry, "audit", move |scrape| {
        scrape.gauge(
            "odgw_audit_healthy",
            "1 while audit records are being made durable.",
            u32::from(log.is_healthy()),
        )?;
        scrape.counter(
            "odgw_audit_write_failures",
            "Audit appends that failed.",
            audit_layer.failures() + intent_layer.failures(),
        )?;
        scrape.counter(
            "odgw_audit_batches",
            "Group-commit batches (one fsync each).",
            log.batches(),
        )?;
        scrape.counter(
            "odgw_audit_records",
            "Audit records made durable (records / batches = mean batch size).",
            log.records(),
        )?;
        scrape.counter(
            "odgw_audit_write_seconds",
            "Time spent writing and syncing batches (/ batches = mean write latency).",
            log.write_seconds(),
        )
    });
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use odgw_core::scrape::prometheus_text;

    use super::*;
    use crate::{AuditSettings, RecordDraft, RecordKind};

    #[tokio::test]
    async fn exposes_health_batches_records_and_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = FileAuditLog::open(AuditSettings::new(dir.path().to_path_buf()))
            .await
            .expect("opens");
        log.append(RecordDraft::new(RecordKind::Admin))
            .await
            .expect("appends");
        let sink: Arc<dyn AuditSink> = Arc::new(log.clone());
        let audit_layer = AuditLayer::new(sink.clone(), true, Duration::from_secs(5));
        let intent_layer = IntentLayer::new(sink, true, Duration::from_secs(5));
        let mut registry = Registry::default();
        register_metrics(&mut registry, &log, &audit_layer, &intent_layer);
        let text = prometheus_text(&registry);
        for line in [
            "# HELP odgw_audit_healthy 1 while audit records are being made durable.",
            "# TYPE odgw_audit_healthy gauge",
            "odgw_audit_healthy 1",
            "# TYPE odgw_audit_write_failures_total counter",
            "odgw_audit_write_failures_total 0",
            "odgw_audit_batches_total 1",
            "odgw_audit_records_total 1",
            "# TYPE odgw_audit_write_seconds_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let seconds: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("odgw_audit_write_seconds_total "))
            .and_then(|v| v.parse().ok())
            .expect("a number");
        assert!(seconds >= 0.0, "{text}");
    }
}
