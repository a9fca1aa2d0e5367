//! Prometheus metrics in the text exposition format, kept deliberately small:
//! counters and histograms with bounded label sets (never tenant or subject).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::Method;
use odgw_core::ErrorCode;

/// Latency buckets in seconds, from cache hits to Open Dental's 60 s limit.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, name: &str, out: &mut String) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Registry {
    /// (method, route template, status class, outcome) → count. Every label
    /// is from a fixed set, so counting a request allocates nothing.
    requests: BTreeMap<(&'static str, &'static str, &'static str, &'static str), u64>,
    request_seconds: Histogram,
    upstream_seconds: Histogram,
    pacing_wait_seconds: Histogram,
    /// odgw-made errors by `code` (rate_limited, upstream_throttled, …).
    errors: BTreeMap<&'static str, u64>,
    /// Open Dental's answers by status.
    upstream_responses: BTreeMap<u16, u64>,
}

/// One finished data-plane request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    pub method: &'a Method,
    /// From [`crate::routes::route_template`]: bounded.
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

/// A gauge or counter read from a component at scrape time.
pub type Collector = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Shared handle to the gateway's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    collectors: Arc<Mutex<Vec<Collector>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
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

impl Metrics {
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
        // Unknown methods fold into one label value to keep the set bounded.
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "OTHER",
        };
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        *r.requests
            .entry((method, route, status_class(status), outcome))
            .or_default() += 1;
        r.request_seconds.observe(elapsed.as_secs_f64());
        if let Some(ms) = upstream_ms {
            r.upstream_seconds.observe(ms as f64 / 1000.0);
        }
        if let Some(ms) = pacing_wait_ms {
            r.pacing_wait_seconds.observe(ms as f64 / 1000.0);
        }
        if let Some(code) = error_code {
            *r.errors.entry(code.as_str()).or_default() += 1;
        }
        // Statuses are three digits, so this label set stays bounded.
        if let Some(status) = upstream_status.filter(|s| (100..=599).contains(s)) {
            *r.upstream_responses.entry(status).or_default() += 1;
        }
    }

    /// Adds a scrape-time collector (cache size, audit failures, …).
    pub fn register(&self, collector: Collector) {
        self.collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(collector);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP odgw_build_info Build information.");
        let _ = writeln!(out, "# TYPE odgw_build_info gauge");
        let _ = writeln!(
            out,
            "odgw_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        {
            let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "# HELP odgw_requests_total Data-plane requests by method, status class, outcome and route template.");
            let _ = writeln!(out, "# TYPE odgw_requests_total counter");
            for ((method, route, class, outcome), n) in &r.requests {
                let _ = writeln!(
                    out,
                    "odgw_requests_total{{method=\"{method}\",status=\"{class}\",outcome=\"{outcome}\",route=\"{route}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP odgw_request_duration_seconds Time from request to response head."
            );
            let _ = writeln!(out, "# TYPE odgw_request_duration_seconds histogram");
            r.request_seconds
                .render("odgw_request_duration_seconds", &mut out);
            let _ = writeln!(
                out,
                "# HELP odgw_upstream_duration_seconds Time to Open Dental's response head."
            );
            let _ = writeln!(out, "# TYPE odgw_upstream_duration_seconds histogram");
            r.upstream_seconds
                .render("odgw_upstream_duration_seconds", &mut out);
            let _ = writeln!(
                out,
                "# HELP odgw_pacing_wait_seconds Time requests waited for their practice's Open Dental budget."
            );
            let _ = writeln!(out, "# TYPE odgw_pacing_wait_seconds histogram");
            r.pacing_wait_seconds
                .render("odgw_pacing_wait_seconds", &mut out);
            let _ = writeln!(
                out,
                "# HELP odgw_errors_total Errors made by odgw, by code (rate_limited and upstream_throttled are the rate-limit rejections)."
            );
            let _ = writeln!(out, "# TYPE odgw_errors_total counter");
            for (code, n) in &r.errors {
                let _ = writeln!(out, "odgw_errors_total{{code=\"{code}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP odgw_upstream_responses_total Open Dental answers by status."
            );
            let _ = writeln!(out, "# TYPE odgw_upstream_responses_total counter");
            for (status, n) in &r.upstream_responses {
                let _ = writeln!(
                    out,
                    "odgw_upstream_responses_total{{status=\"{status}\"}} {n}"
                );
            }
        }
        let collectors = self
            .collectors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for collect in collectors {
            collect(&mut out);
        }
        out
    }
}

/// Writes one gauge or counter with HELP and TYPE lines.
pub fn write_metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_collectors() {
        let m = Metrics::default();
        m.observe_request(&Finished {
            method: &Method::GET,
            route: "/api/v1/patients/{id}",
            status: 200,
            outcome: "forwarded",
            error_code: None,
            elapsed: Duration::from_millis(3),
            upstream_status: Some(200),
            upstream_ms: Some(2),
            pacing_wait_ms: Some(1500),
        });
        m.observe_request(&Finished {
            method: &Method::from_bytes(b"BREW").unwrap(),
            route: "other",
            status: 401,
            outcome: "denied",
            error_code: Some(ErrorCode::InvalidToken),
            elapsed: Duration::from_millis(1),
            upstream_status: None,
            upstream_ms: None,
            pacing_wait_ms: None,
        });
        m.observe_request(&Finished {
            method: &Method::GET,
            route: "/api/v1/patients/{id}",
            status: 429,
            outcome: "upstream_error",
            error_code: Some(ErrorCode::UpstreamThrottled),
            elapsed: Duration::from_millis(1),
            upstream_status: Some(429),
            upstream_ms: Some(1),
            pacing_wait_ms: Some(0),
        });
        m.register(Arc::new(|out: &mut String| {
            write_metric(out, "odgw_cache_entries", "gauge", "Cached responses.", 7)
        }));
        let text = m.render();
        assert!(
            text.contains(
                r#"odgw_requests_total{method="GET",status="2xx",outcome="forwarded",route="/api/v1/patients/{id}"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"odgw_requests_total{method="OTHER",status="4xx",outcome="denied",route="other"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"odgw_request_duration_seconds_bucket{le="0.005"} 3"#),
            "{text}"
        );
        assert!(
            text.contains("odgw_upstream_duration_seconds_count 2"),
            "{text}"
        );
        assert!(text.contains("odgw_cache_entries 7"), "{text}");
        assert!(
            text.contains(r#"odgw_errors_total{code="invalid_token"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"odgw_errors_total{code="upstream_throttled"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"odgw_upstream_responses_total{status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"odgw_upstream_responses_total{status="429"} 1"#),
            "{text}"
        );
    }
}
