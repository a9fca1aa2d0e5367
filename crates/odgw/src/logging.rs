//! Structured logs with `tracing`: `--log-format json|pretty`, filters from
//! `RUST_LOG` (default `info`). Logs go to stderr; stdout is for command output.
//!
//! JSON lines come from tracing-subscriber's own formatter ([`json_lines`]):
//! one flat object per line, `timestamp`, `level`, the event's fields,
//! `target`, then `span` and `spans` inside a span.
//!
//! Lines are handed to a background thread ([`tracing_appender::non_blocking()`])
//! that writes them to stderr, so a request never waits for a `write(2)`;
//! lines that arrive while it writes go out together in the next write. The
//! writer is lossless: when stderr cannot keep up, loggers wait instead of
//! lines being dropped. Call [`flush`] before the process exits.
//!
//! What can be lost: on `kill -9` or a power cut, the lines not yet written
//! (normally none or a few). The audit trail, not the log, is the durable
//! record of requests.

use std::{
    io::{self, IsTerminal, Write},
    sync::{Mutex, PoisonError},
};

use tracing_appender::non_blocking::{
    NonBlocking, NonBlockingBuilder, WorkerGuard, DEFAULT_BUFFERED_LINES_LIMIT,
};
use tracing_subscriber::{
    fmt,
    fmt::format::{Format, Json, JsonFields},
    EnvFilter,
};

use crate::cli::LogFormat;

/// Stops the background writer when dropped, after it has written every line
/// sent before; [`flush`] takes it out and drops it.
static WRITER_GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Bytes gathered before the writer thread must write: lines that queue up
/// while it writes leave together, in one system call.
const STDERR_BUFFER: usize = 64 * 1024;

/// Installs the global subscriber once; later calls are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into files or journals.
    let ansi = io::stderr().is_terminal();
    let (writer, guard) = background_writer(
        io::BufWriter::with_capacity(STDERR_BUFFER, io::stderr()),
        DEFAULT_BUFFERED_LINES_LIMIT,
    );
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(json_lines())
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    // A second call keeps the first subscriber; its own writer stops here.
    if installed.is_ok() {
        *WRITER_GUARD.lock().unwrap_or_else(PoisonError::into_inner) = Some(guard);
    }
}

/// Writes out every line logged so far and stops the writer thread; call
/// once, right before the process exits. Lines logged afterwards are lost.
pub fn flush() {
    let guard = WRITER_GUARD
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    // Dropping the guard waits (bounded) until the thread has written the
    // lines queued before it and flushed its buffer.
    drop(guard);
}

/// The `--log-format json` event format: tracing-subscriber's JSON with the
/// event's fields flattened into the line, the `target`, the current span as
/// `span` and the span scope as `spans`. Pair it with [`JsonFields`].
pub fn json_lines() -> Format<Json> {
    fmt::format()
        .json()
        .flatten_event(true)
        .with_target(true)
        .with_current_span(true)
        .with_span_list(true)
}

/// A lossless background writer in front of `sink`: log calls only queue
/// their line; when `queued_lines` are waiting they wait too, rather than
/// drop it. The thread flushes `sink` whenever the queue runs empty.
fn background_writer<W: Write + Send + 'static>(
    sink: W,
    queued_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(queued_lines)
        .thread_name("odgw-log")
        .finish(sink)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use serde_json::{json, Map, Value};
    use tracing::Level;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use odgw_context::AccessLine;
    use odgw_core::{ErrorCode, RequestId};

    /// Collects everything written to it.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What `emit` logs with the `--log-format json` format, as written.
    fn json_text_of(emit: impl Fn()) -> String {
        let out = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(Level::TRACE)
            .fmt_fields(JsonFields::new())
            .event_format(json_lines())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        out.text()
    }

    /// The lines `emit` logs with the `--log-format json` format, parsed;
    /// asserts each is one object on one line.
    fn json_lines_of(emit: impl Fn()) -> Vec<Map<String, Value>> {
        let text = json_text_of(emit);
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339 UTC with microseconds.
    fn assert_timestamp_format(ts: &str) {
        let pattern = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
        assert_eq!(ts.len(), pattern.len(), "timestamp {ts:?}");
        for (c, p) in ts.bytes().zip(pattern.iter()) {
            match p {
                b'd' => assert!(c.is_ascii_digit(), "timestamp {ts:?}"),
                _ => assert_eq!(c, *p, "timestamp {ts:?}"),
            }
        }
    }

    /// The gateway's access event ([`AccessLine`]), for a 502 GET.
    fn access_event(
        path: &str,
        error_code: Option<ErrorCode>,
        tenant: Option<&str>,
        subject: Option<&str>,
        upstream_status: Option<u16>,
        upstream_ms: Option<u64>,
    ) {
        let request_id = RequestId::from_client(Some(&http::HeaderValue::from_static(
            "0b6f2c1e-5d3a-4f7e-9c11-2a4b6d8e0f13",
        )));
        AccessLine {
            request_id: &request_id,
            method: &http::Method::GET,
            path,
            status: 502,
            outcome: "upstream_error",
            error_code,
            tenant,
            subject,
            upstream_status,
            upstream_ms,
            duration_ms: 17,
        }
        .emit();
    }

    #[test]
    fn access_line_keys_order_and_values() {
        let text = json_text_of(|| {
            access_event(
                "/api/v1/patients/12",
                Some(ErrorCode::UpstreamUnavailable),
                Some("clinic-a"),
                None,
                Some(503),
                None,
            )
        });
        // The exact line after the timestamp: key order, value types.
        let rest = text
            .strip_prefix("{\"timestamp\":\"")
            .unwrap_or_else(|| panic!("line does not start with the timestamp: {text:?}"));
        let (timestamp, rest) = rest.split_at(rest.find('"').unwrap());
        assert_timestamp_format(timestamp);
        assert_eq!(
            rest,
            "\",\"level\":\"INFO\",\"message\":\"request\",\
             \"request_id\":\"0b6f2c1e-5d3a-4f7e-9c11-2a4b6d8e0f13\",\"method\":\"GET\",\
             \"path\":\"/api/v1/patients/12\",\"status\":502,\"outcome\":\"upstream_error\",\
             \"error_code\":\"upstream_unavailable\",\"tenant\":\"clinic-a\",\
             \"upstream_status\":503,\"duration_ms\":17,\"target\":\"odgw::access\"}\n"
        );
    }

    #[test]
    fn access_line_with_every_option_set_or_none() {
        let lines = json_lines_of(|| {
            access_event(
                "/api/v1/appointments",
                None,
                Some("t"),
                Some("user@example.org"),
                Some(200),
                Some(4),
            );
            access_event("/", None, None, None, None, None);
        });
        assert_eq!(lines[0]["subject"], json!("user@example.org"));
        assert_eq!(lines[0]["upstream_ms"], json!(4));
        for absent in [
            "error_code",
            "tenant",
            "subject",
            "upstream_status",
            "upstream_ms",
        ] {
            assert!(!lines[1].contains_key(absent), "{absent}: {:?}", lines[1]);
        }
    }

    /// A client controls the path: quotes, backslashes, newlines and other
    /// control characters must stay inside the JSON string.
    #[test]
    fn client_path_cannot_split_or_forge_a_line() {
        let hostile = [
            "/x\",\"level\":\"ERROR\",\"forged\":\"1",
            "/x\n{\"timestamp\":\"2000-01-01T00:00:00.000000Z\",\"level\":\"ERROR\"}",
            "/x\r\n\u{0}\u{1b}[31m\\\"\\",
            "/\\u000a\\\"",
            "/\u{7f}\u{85}\u{2028}\u{2029}é日本😀",
        ];
        for path in hostile {
            let raw = json_text_of(|| access_event(path, None, None, None, None, None));
            assert_eq!(raw.matches('\n').count(), 1, "{raw:?}");
            assert!(!raw.contains('\r'), "{raw:?}");
            assert!(!raw.contains('\u{1b}'), "{raw:?}");
            let line: Map<String, Value> = serde_json::from_str(&raw).unwrap();
            assert_eq!(line["path"], json!(path));
            assert_eq!(line["level"], json!("INFO"));
            assert!(!line.contains_key("forged"));
        }
    }

    #[test]
    fn numbers_bools_and_errors_keep_their_json_types() {
        let lines = json_lines_of(|| {
            let err = io::Error::other("boom \"x\"");
            tracing::error!(
                max = u64::MAX,
                neg = -42i64,
                half = 1.5f64,
                yes = true,
                error = &err as &(dyn std::error::Error + 'static),
                "numbers"
            );
        });
        let line = &lines[0];
        assert_eq!(line["level"], json!("ERROR"));
        assert_eq!(line["max"], json!(u64::MAX));
        assert_eq!(line["neg"], json!(-42));
        assert_eq!(line["half"], json!(1.5));
        assert_eq!(line["yes"], json!(true));
        assert_eq!(line["error"], json!("boom \"x\""));
        assert_eq!(line["message"], json!("numbers"));
    }

    #[test]
    fn events_in_spans_carry_span_and_spans() {
        let lines = json_lines_of(|| {
            let outer = tracing::info_span!("outer", tenant = "clinic-a", n = 3u64);
            let _outer = outer.enter();
            tracing::info!("in outer");
            let inner = tracing::debug_span!("inner");
            let _inner = inner.enter();
            tracing::warn!("in inner");
        });
        assert_eq!(
            lines[0]["span"],
            json!({"tenant": "clinic-a", "n": 3, "name": "outer"})
        );
        assert_eq!(lines[0]["spans"].as_array().unwrap().len(), 1);
        assert_eq!(lines[1]["span"], json!({"name": "inner"}));
        assert_eq!(lines[1]["spans"][0]["name"], json!("outer"));
        assert_eq!(lines[1]["spans"][1], json!({"name": "inner"}));
        // Outside any span, neither key.
        let lines = json_lines_of(|| tracing::info!("alone"));
        assert!(!lines[0].contains_key("span"));
        assert!(!lines[0].contains_key("spans"));
    }

    /// Every line logged before the guard is dropped reaches the sink, in
    /// order, even when far more is logged than the queue holds.
    #[test]
    fn the_background_writer_loses_no_line_and_keeps_their_order() {
        let sink = Capture::default();
        let (writer, guard) = background_writer(sink.clone(), 8);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..2_000 {
                tracing::info!("line {i}");
            }
        });
        drop(guard);
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2_000);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!(" INFO line {i}"));
        }
    }

    /// Dropping the guard writes out what the thread had buffered.
    #[test]
    fn dropping_the_guard_flushes_a_buffered_sink() {
        let sink = Capture::default();
        let (writer, guard) =
            background_writer(io::BufWriter::with_capacity(1 << 20, sink.clone()), 8);
        let mut line = writer.make_writer();
        line.write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(sink.text(), "last words\n");
    }
}
