//! Metrics of finished data-plane requests, owned by the request-context
//! layer: [`RequestMetrics`] counts each [`Finished`] request.
//!
//! Every label value comes from a fixed set (method folded to `OTHER`,
//! status class, route template, outcome, error code, Open Dental's status
//! in `100..=599`), never a tenant or subject, so the number of series stays
//! bounded whatever clients send. Counting takes no lock that writers wait
//! on: the label families are read-locked once a label set exists, counters
//! and histogram buckets are atomics.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::Method;
use odgw_core::ErrorCode;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, MetricType, TypedMetric},
    registry::Registry,
};

/// Latency buckets in seconds, from cache hits to Open Dental's 60 s limit.
pub const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One finished data-plane request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub method: &'a Method,
    /// From `route_template`: bounded.
    pub route: &'static str,
    pub status: u16,
    pub outcome: &'static str,
    pub error_code: Option<ErrorCode>,
    pub elapsed: Duration,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<u64>,
    /// Time spent waiting for the practice's upstream budget.
    pub pacing_wait_ms: Option<u64>,
}

/// `odgw_requests_total`'s labels, in exposition order. All `'static`: a
/// request whose label set was seen before allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: &'static str,
    outcome: &'static str,
    route: &'static str,
}

/// `odgw_errors_total`'s label: odgw's own error `code`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    code: &'static str,
}

/// `odgw_upstream_responses_total`'s label: Open Dental's status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    status: u16,
}

/// The request metrics; clones share the same counts.
#[derive(Debug, Clone, Default)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: LatencyHistogram,
    upstream_seconds: LatencyHistogram,
    pacing_wait_seconds: LatencyHistogram,
    errors: Family<ErrorLabels, Counter>,
    upstream_responses: Family<UpstreamLabels, Counter>,
}

impl RequestMetrics {
    /// Adds these metrics to `registry` (which then reads the shared counts
    /// at every scrape).
    pub fn register_metrics(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters and a full stop to
        // each help text.
        registry.register(
            "odgw_requests",
            "Data-plane requests by method, status class, outcome and route template",
            self.requests.clone(),
        );
        registry.register(
            "odgw_request_duration_seconds",
            "Time from request to response head",
            self.request_seconds.clone(),
        );
        registry.register(
            "odgw_upstream_duration_seconds",
            "Time to Open Dental's response head",
            self.upstream_seconds.clone(),
        );
        registry.register(
            "odgw_pacing_wait_seconds",
            "Time requests waited for their practice's Open Dental budget",
            self.pacing_wait_seconds.clone(),
        );
        registry.register(
            "odgw_errors",
            "Errors made by odgw, by code (rate_limited and upstream_throttled are the rate-limit rejections)",
            self.errors.clone(),
        );
        registry.register(
            "odgw_upstream_responses",
            "Open Dental answers by status",
            self.upstream_responses.clone(),
        );
    }

    /// Counts one finished data-plane request.
    pub fn observe_request(&self, done: &Finished<'_>) {
        let Finished {
            method,
            route,
            status,
            outcome,
            error_code,
            elapsed,
            upstream_status,
            upstream_ms,
            pacing_wait_ms,
        } = *done;
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                status: status_class(status),
                outcome,
                route,
            })
            .inc();
        self.request_seconds.observe(elapsed);
        if let Some(ms) = upstream_ms {
            self.upstream_seconds.observe(Duration::from_millis(ms));
        }
        if let Some(ms) = pacing_wait_ms {
            self.pacing_wait_seconds.observe(Duration::from_millis(ms));
        }
        if let Some(code) = error_code {
            self.errors
                .get_or_create(&ErrorLabels {
                    code: code.as_str(),
                })
                .inc();
        }
        // Statuses are three digits, so this label set stays bounded.
        if let Some(status) = upstream_status.filter(|s| (100..=599).contains(s)) {
            self.upstream_responses
                .get_or_create(&UpstreamLabels { status })
                .inc();
        }
    }
}

/// Unknown methods fold into one label value to keep the set bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A histogram over [`BUCKETS`] made of atomics only.
///
/// prometheus-client's own `Histogram` takes a mutex on every observation;
/// the request-duration histogram is observed by every request, so that
/// would be one lock all requests queue on. Here an observation is two
/// relaxed atomic additions. A scrape reads the buckets one by one and
/// derives the count from them, so `+Inf` always equals `_count`; the sum
/// may include an observation whose bucket was read just before it.
#[derive(Debug, Clone, Default)]
struct LatencyHistogram {
    counts: Arc<HistogramCounts>,
}

#[derive(Debug, Default)]
struct HistogramCounts {
    /// Observations per bucket, not cumulative; the last slot holds those
    /// above the highest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// In nanoseconds: an integer adds atomically, without a retry loop.
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts = &self.counts.buckets;
        let buckets: [(f64, u64); BUCKETS.len()] =
            std::array::from_fn(|i| (BUCKETS[i], counts[i].load(Ordering::Relaxed)));
        let above = counts[BUCKETS.len()].load(Ordering::Relaxed);
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>() + above;
        let sum = Duration::from_nanos(self.counts.sum_nanos.load(Ordering::Relaxed));
        // The encoder adds the `+Inf` bucket (= count) itself.
        encoder.encode_histogram::<NoLabelSet>(sum.as_secs_f64(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text;

    fn finished(method: &Method) -> Finished<'_> {
        Finished {
            method,
            route: "/api/v1/patients/{id}",
            status: 200,
            outcome: "forwarded",
            error_code: None,
            elapsed: Duration::from_millis(3),
            upstream_status: None,
            upstream_ms: None,
            pacing_wait_ms: None,
        }
    }

    fn render(metrics: &RequestMetrics) -> String {
        let mut registry = Registry::default();
        metrics.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn counts_requests_by_bounded_labels() {
        let m = RequestMetrics::default();
        let get = Method::GET;
        m.observe_request(&finished(&get));
        let brew = Method::from_bytes(b"BREW").expect("a valid extension method");
        m.observe_request(&Finished {
            route: "other",
            status: 401,
            outcome: "denied",
            error_code: Some(ErrorCode::InvalidToken),
            ..finished(&brew)
        });
        m.observe_request(&Finished {
            status: 429,
            outcome: "upstream_error",
            error_code: Some(ErrorCode::UpstreamThrottled),
            upstream_status: Some(429),
            ..finished(&get)
        });
        // A status outside 100..=599 never becomes a label value.
        m.observe_request(&Finished {
            upstream_status: Some(999),
            ..finished(&get)
        });
        let text = render(&m);
        for line in [
            "# HELP odgw_requests_total Data-plane requests by method, status class, outcome and route template.",
            "# TYPE odgw_requests_total counter",
            r#"odgw_requests_total{method="GET",status="2xx",outcome="forwarded",route="/api/v1/patients/{id}"} 2"#,
            r#"odgw_requests_total{method="OTHER",status="4xx",outcome="denied",route="other"} 1"#,
            r#"odgw_requests_total{method="GET",status="4xx",outcome="upstream_error",route="/api/v1/patients/{id}"} 1"#,
            "# TYPE odgw_errors_total counter",
            r#"odgw_errors_total{code="invalid_token"} 1"#,
            r#"odgw_errors_total{code="upstream_throttled"} 1"#,
            "# HELP odgw_upstream_responses_total Open Dental answers by status.",
            r#"odgw_upstream_responses_total{status="429"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("999"), "{text}");
        assert!(!text.contains("BREW"), "{text}");
    }

    #[test]
    fn histograms_keep_todays_buckets_and_count_only_what_happened() {
        let m = RequestMetrics::default();
        let get = Method::GET;
        m.observe_request(&Finished {
            upstream_ms: Some(2),
            pacing_wait_ms: Some(1500),
            ..finished(&get)
        });
        m.observe_request(&Finished {
            elapsed: Duration::from_millis(1),
            upstream_ms: Some(1),
            pacing_wait_ms: Some(0),
            ..finished(&get)
        });
        // Above the highest bound: only in +Inf.
        m.observe_request(&Finished {
            elapsed: Duration::from_secs(61),
            ..finished(&get)
        });
        let text = render(&m);
        let expected_request_seconds = [
            "# HELP odgw_request_duration_seconds Time from request to response head.",
            "# TYPE odgw_request_duration_seconds histogram",
            r#"odgw_request_duration_seconds_bucket{le="0.001"} 1"#,
            r#"odgw_request_duration_seconds_bucket{le="0.0025"} 1"#,
            r#"odgw_request_duration_seconds_bucket{le="0.005"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="0.01"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="0.025"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="0.05"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="0.1"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="0.25"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="0.5"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="1"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="2.5"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="5"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="10"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="30"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="60"} 2"#,
            r#"odgw_request_duration_seconds_bucket{le="+Inf"} 3"#,
            "odgw_request_duration_seconds_sum 61.004",
            "odgw_request_duration_seconds_count 3",
        ]
        .join("\n");
        assert!(text.contains(&expected_request_seconds), "{text}");
        for line in [
            "odgw_upstream_duration_seconds_count 2",
            r#"odgw_upstream_duration_seconds_bucket{le="0.001"} 1"#,
            "odgw_pacing_wait_seconds_count 2",
            r#"odgw_pacing_wait_seconds_bucket{le="0.001"} 1"#,
            r#"odgw_pacing_wait_seconds_bucket{le="1"} 1"#,
            r#"odgw_pacing_wait_seconds_bucket{le="2.5"} 2"#,
            "odgw_pacing_wait_seconds_sum 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn a_bound_is_inclusive() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_secs(60));
        let counts: Vec<u64> = h
            .counts
            .buckets
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        let quarter = BUCKETS.iter().position(|b| *b == 0.25).expect("0.25 bound");
        assert_eq!(counts[quarter], 1);
        assert_eq!(counts[BUCKETS.len() - 1], 1, "60 s is in le=60");
        assert_eq!(counts[BUCKETS.len()], 0, "nothing above 60 s");
    }

    #[test]
    fn empty_metrics_still_expose_their_histograms() {
        let text = render(&RequestMetrics::default());
        assert!(
            text.contains("odgw_request_duration_seconds_count 0"),
            "{text}"
        );
        assert!(
            text.contains(r#"odgw_pacing_wait_seconds_bucket{le="+Inf"} 0"#),
            "{text}"
        );
    }
}
