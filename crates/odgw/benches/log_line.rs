//! CPU cost of one access-log line (the event `context.rs` emits for every
//! proxied request) with `--log-format json`: tracing-subscriber's stock
//! `json().flatten_event(true)` formatter against odgw's `JsonFormat`, both
//! writing to `io::sink()` so only producing the line is measured. A third
//! subscriber whose formatter writes nothing gives the cost of the event
//! dispatch itself (callsite, registry, fmt layer), common to both.
//!
//! After the criterion groups, a paired run alternates stock and odgw batches
//! (swapping which goes first each round) and prints the ratio of their
//! summed times, which drift in background load affects equally.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fmt, io,
    time::{Duration, Instant},
};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use odgw::logging::json::JsonFormat;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// Events per batch in the paired run, and batch pairs.
const BATCH: u32 = 20_000;
const PAIRS: u32 = 30;

/// A `%` field like odgw's `RequestId`.
struct Shown(&'static str);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Writes nothing: what the line costs without formatting.
struct Nothing;

impl<S, N> FormatEvent<S, N> for Nothing
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, _: Writer<'_>, _: &Event<'_>) -> fmt::Result {
        Ok(())
    }
}

fn stock() -> Dispatch {
    Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(io::sink)
            .with_max_level(Level::INFO)
            .json()
            .flatten_event(true)
            .finish(),
    )
}

fn odgw_json() -> Dispatch {
    Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(io::sink)
            .with_max_level(Level::INFO)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonFormat::new())
            .finish(),
    )
}

fn nothing() -> Dispatch {
    Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(io::sink)
            .with_max_level(Level::INFO)
            .event_format(Nothing)
            .finish(),
    )
}

/// The access event as `context.rs` emits it, with the same value types:
/// a proxied request that reached the upstream, no error code, no subject.
fn access_event(
    request_id: &Shown,
    method: &http::Method,
    path: &String,
    facts_tenant: &Option<String>,
    facts_subject: &Option<String>,
) {
    let code: Option<&'static str> = None;
    let status: u16 = black_box(200);
    let outcome: &'static str = black_box("ok");
    let upstream_status: Option<u16> = black_box(Some(200));
    let upstream_ms: Option<u64> = black_box(Some(12));
    let duration_ms: u64 = black_box(14);
    tracing::info!(
        target: "odgw::access",
        request_id = %request_id,
        method = %method,
        path = %path,
        status,
        outcome,
        error_code = code,
        tenant = facts_tenant.as_deref(),
        subject = facts_subject.as_deref(),
        upstream_status,
        upstream_ms,
        duration_ms,
        "request"
    );
}

struct Inputs {
    request_id: Shown,
    method: http::Method,
    path: String,
    tenant: Option<String>,
    subject: Option<String>,
}

fn inputs() -> Inputs {
    Inputs {
        request_id: Shown("0b6f2c1e-5d3a-4f7e-9c11-2a4b6d8e0f13"),
        method: http::Method::GET,
        path: "/api/v1/patients/12345/appointments".to_owned(),
        tenant: Some("clinic-a".to_owned()),
        subject: None,
    }
}

fn emit(inputs: &Inputs) {
    access_event(
        black_box(&inputs.request_id),
        black_box(&inputs.method),
        black_box(&inputs.path),
        black_box(&inputs.tenant),
        black_box(&inputs.subject),
    );
}

fn log_line(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("access_log_line");
    for (name, dispatch) in [
        ("stock_json", stock()),
        ("odgw_json", odgw_json()),
        ("no_format", nothing()),
    ] {
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(|| emit(&inputs)));
        });
    }
    group.finish();
}

fn batch(dispatch: &Dispatch, inputs: &Inputs) -> Duration {
    tracing::dispatcher::with_default(dispatch, || {
        let start = Instant::now();
        for _ in 0..BATCH {
            emit(inputs);
        }
        start.elapsed()
    })
}

fn paired(_: &mut Criterion) {
    // `cargo test --benches` runs this unoptimised, without `--bench`:
    // one pair is enough to show it works.
    let pairs = if std::env::args().any(|arg| arg == "--bench") {
        PAIRS
    } else {
        1
    };
    let inputs = inputs();
    let (stock, ours, none) = (stock(), odgw_json(), nothing());
    let (mut stock_total, mut our_total, mut none_total) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 0..pairs {
        let order: [&Dispatch; 3] = if round % 2 == 0 {
            [&stock, &ours, &none]
        } else {
            [&none, &ours, &stock]
        };
        for dispatch in order {
            let elapsed = batch(dispatch, &inputs);
            if std::ptr::eq(dispatch, &stock) {
                stock_total += elapsed;
            } else if std::ptr::eq(dispatch, &ours) {
                our_total += elapsed;
            } else {
                none_total += elapsed;
            }
        }
    }
    let events = f64::from(BATCH * pairs);
    let per = |d: Duration| d.as_nanos() as f64 / events;
    let (stock_ns, our_ns, none_ns) = (per(stock_total), per(our_total), per(none_total));
    println!(
        "paired access-log line ({} events each): stock {stock_ns:.0} ns, odgw {our_ns:.0} ns, \
         no formatting {none_ns:.0} ns; odgw/stock {:.3}; formatting alone odgw/stock {:.3}",
        BATCH * pairs,
        our_ns / stock_ns,
        (our_ns - none_ns) / (stock_ns - none_ns),
    );
}

criterion_group!(benches, log_line, paired);
criterion_main!(benches);
