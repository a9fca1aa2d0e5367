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
use odgw::{context::AccessLine, logging::json::JsonFormat};
use odgw_core::RequestId;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// Events per batch in the paired run, and batch pairs.
const BATCH: u32 = 20_000;
const PAIRS: u32 = 30;

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

/// The gateway's own access event ([`AccessLine`]) for a proxied request
/// that reached the upstream: no error code, no subject.
struct Inputs {
    request_id: RequestId,
    method: http::Method,
    path: String,
    tenant: Option<String>,
    subject: Option<String>,
}

fn inputs() -> Inputs {
    Inputs {
        request_id: RequestId::from_client(Some(&http::HeaderValue::from_static(
            "0b6f2c1e-5d3a-4f7e-9c11-2a4b6d8e0f13",
        ))),
        method: http::Method::GET,
        path: "/api/v1/patients/12345/appointments".to_owned(),
        tenant: Some("clinic-a".to_owned()),
        subject: None,
    }
}

fn emit(inputs: &Inputs) {
    AccessLine {
        request_id: black_box(&inputs.request_id),
        method: black_box(&inputs.method),
        path: black_box(&inputs.path),
        status: black_box(200),
        outcome: black_box("forwarded"),
        error_code: None,
        tenant: black_box(inputs.tenant.as_deref()),
        subject: black_box(inputs.subject.as_deref()),
        upstream_status: black_box(Some(200)),
        upstream_ms: black_box(Some(12)),
        duration_ms: black_box(14),
    }
    .emit();
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
