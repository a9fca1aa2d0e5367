//! CPU cost of one access-log line (the event the request-context layer emits for every
//! proxied request) with `--log-format json`, formatted by the format
//! `odgw::logging::json_lines` configures (tracing-subscriber's JSON).
//!
//! - `json`: formatting the line into `io::sink()`, on the caller's thread.
//! - `json_queued`: what a request pays in the gateway: formatting plus
//!   queueing the line for tracing-appender's lossless background writer
//!   (which here writes to `io::sink()`).
//! - `no_format`: a formatter that writes nothing, giving the cost of the
//!   event dispatch itself (callsite, registry, fmt layer), common to all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fmt, io};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use odgw::logging::json_lines;
use odgw_context::AccessLine;
use odgw_core::RequestId;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_appender::non_blocking::NonBlockingBuilder;
use tracing_subscriber::{
    fmt::{
        format::{JsonFields, Writer},
        FmtContext, FormatEvent, FormatFields, MakeWriter,
    },
    registry::LookupSpan,
};

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

fn json<W>(writer: W) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    Dispatch::new(
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_max_level(Level::INFO)
            .fmt_fields(JsonFields::new())
            .event_format(json_lines())
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
    // Kept alive for the whole group: dropping it stops the writer thread.
    let (queued, _guard) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(io::sink());
    let mut group = c.benchmark_group("access_log_line");
    for (name, dispatch) in [
        ("json", json(io::sink)),
        ("json_queued", json(queued)),
        ("no_format", nothing()),
    ] {
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(|| emit(&inputs)));
        });
    }
    group.finish();
}

criterion_group!(benches, log_line);
criterion_main!(benches);
