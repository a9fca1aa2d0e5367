//! The `--log-format json` event formatter.
//!
//! It writes the same lines as tracing-subscriber's
//! `fmt().json().flatten_event(true)` for the events odgw emits, with less
//! work per line: no serde machinery, no `String` per field or for the
//! timestamp. Values, `Display`/`Debug` output included, are escaped as they
//! are written into one reused per-thread line buffer, which then goes to
//! the `fmt` layer's writer in a single write.
//!
//! One line is one JSON object, keys in this order:
//! `timestamp`, `level`, the event's fields in the order they were recorded
//! (`message` among them), `target`, then `span` and `spans` when the event
//! has a parent span. Numbers and bools stay JSON numbers and bools; `?`/`%`
//! fields, errors, `i128`/`u128` and byte slices become strings, as before;
//! an `Option` field that is `None` is not recorded by `tracing`, so its key
//! is absent. Non-finite floats become `null`.
//!
//! Strings are escaped as serde_json escapes them (`"`, `\`, and every
//! control character below U+0020; everything else is written as UTF-8), so
//! a client-controlled value such as a request path can neither end the
//! string nor start a new line.
//!
//! The timestamp is the text of tracing-subscriber's default `SystemTime`
//! timer (`2024-05-01T12:00:00.123456Z`), computed here without `write!`.
//!
//! Span fields are recorded by tracing-subscriber's [`JsonFields`] (spans
//! are not on the request path); this formatter copies that stored JSON
//! object and appends the span's `name`, which is what the stock formatter
//! produces after re-parsing it.
//!
//! Records from the `log` crate (bridged by the `LogTracer` that `try_init`
//! installs) get their `log.target` field as `target`, as the stock
//! formatter does; see `is_log_event` for how they are recognised.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
};

use tracing::{
    field::{Field, Visit},
    Event, Metadata, Subscriber,
};
use tracing_subscriber::{
    fmt::{
        format::{JsonFields, Writer},
        time::{FormatTime, SystemTime},
        FmtContext, FormatEvent, FormattedFields,
    },
    registry::{LookupSpan, SpanRef},
};

/// Formats events as one flat JSON object per line; see the module docs.
///
/// Use it together with [`JsonFields`] as the field formatter:
/// `fmt().fmt_fields(JsonFields::new()).event_format(JsonFormat::new())`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFormat {
    _private: (),
}

impl JsonFormat {
    /// The formatter. Timestamps are the text of tracing-subscriber's
    /// default `SystemTime` timer: RFC 3339 UTC with microseconds, e.g.
    /// `2024-05-01T12:00:00.123456Z`.
    pub fn new() -> Self {
        Self { _private: () }
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is assembled in a reused per-thread `String`, where each
        // piece is a plain `push_str`, and handed to `writer` (a `dyn`
        // call per write) in one piece. A `Display` impl that logs while its
        // own line is being formatted finds the buffer taken and writes
        // straight to its `writer` instead.
        LINE.try_with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                let result = self
                    .write_line(ctx, &mut *line, event)
                    .and_then(|()| writer.write_str(&line));
                if line.capacity() > LINE_CAPACITY_KEPT {
                    *line = String::new();
                }
                result
            }
            Err(_) => self.write_line(ctx, &mut writer, event),
        })
        .unwrap_or_else(|_| self.write_line(ctx, &mut writer, event))
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line longer than this (a huge path, say) does not keep its buffer.
const LINE_CAPACITY_KEPT: usize = 16 * 1024;

impl JsonFormat {
    fn write_line<S, W>(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        out: &mut W,
        event: &Event<'_>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        W: fmt::Write,
    {
        let meta = event.metadata();
        out.write_str("{\"timestamp\":\"")?;
        write_timestamp(out, std::time::SystemTime::now())?;
        out.write_str("\",\"level\":\"")?;
        out.write_str(meta.level().as_str())?;
        out.write_char('"')?;

        let mut fields = FieldWriter {
            out: &mut *out,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;

        out.write_str(",\"target\":")?;
        if is_log_event(meta) {
            write_log_target(out, event)?;
        } else {
            write_str_value(out, meta.target())?;
        }

        // As the stock formatter: `span` is the explicit parent or else the
        // current span; `spans` lists the current span's scope from the root.
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = current {
            out.write_str(",\"span\":")?;
            write_span(out, &span)?;
            out.write_str(",\"spans\":[")?;
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        out.write_char(',')?;
                    }
                    write_span(out, &span)?;
                }
            }
            out.write_char(']')?;
        }
        out.write_str("}\n")
    }
}

/// Writes `now` as tracing-subscriber's `SystemTime` timer does
/// (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, microseconds truncated), without
/// its `write!` calls: the digits go into one array, written at once.
/// Instants before 1970 or after 9999 (which it prints differently) are
/// left to that timer.
fn write_timestamp<W: fmt::Write>(out: &mut W, now: std::time::SystemTime) -> fmt::Result {
    /// 10000-01-01T00:00:00Z.
    const YEAR_10000: u64 = 253_402_300_800;
    let since_epoch = match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => since,
        _ => return SystemTime.format_time(&mut Writer::new(&mut Escaped(out))),
    };
    // Below year 10000 and after 1970: always in `time`'s range.
    let at = i64::try_from(since_epoch.as_secs())
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or(fmt::Error)?;
    let (year, month, day) = at.to_calendar_date();
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |offset: usize, width: usize, mut value: u64| {
        for slot in text[offset..offset + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.unsigned_abs().into());
    put(5, 2, u8::from(month).into());
    put(8, 2, day.into());
    put(11, 2, at.hour().into());
    put(14, 2, at.minute().into());
    put(17, 2, at.second().into());
    put(20, 6, u64::from(since_epoch.subsec_micros()));
    out.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// Events bridged from the `log` crate (by the `LogTracer` that `try_init`
/// installs) carry their real target in a `log.target` field; the stock
/// formatter reports that as `target`. Their metadata is named `log event`,
/// a name `tracing`'s macros never give an event.
fn is_log_event(meta: &Metadata<'_>) -> bool {
    meta.name() == "log event"
        && meta.target() == "log"
        && meta.fields().field("log.target").is_some()
}

/// Writes the `log.target` field of a bridged `log` record, or `"log"`.
fn write_log_target<W: fmt::Write>(out: &mut W, event: &Event<'_>) -> fmt::Result {
    struct Target<'a, W> {
        out: &'a mut W,
        result: Option<fmt::Result>,
    }
    impl<W: fmt::Write> Visit for Target<'_, W> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if self.result.is_none() && field.name() == "log.target" {
                self.result = Some(write_str_value(self.out, value));
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
    }
    let mut target = Target { out, result: None };
    event.record(&mut target);
    match target.result {
        Some(result) => result,
        None => write_str_value(out, "log"),
    }
}

/// `{<the span's stored JSON fields>,"name":"<span name>"}`.
fn write_span<W, R>(out: &mut W, span: &SpanRef<'_, R>) -> fmt::Result
where
    W: fmt::Write,
    R: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    // JsonFields stores a JSON object (`{}` when the span has no fields).
    let stored = extensions
        .get::<FormattedFields<JsonFields>>()
        .map(|f| f.fields.as_str().trim())
        .and_then(|s| s.strip_prefix('{'))
        .and_then(|s| s.strip_suffix('}'))
        .map(str::trim)
        .unwrap_or("");
    out.write_char('{')?;
    if !stored.is_empty() {
        out.write_str(stored)?;
        out.write_char(',')?;
    }
    out.write_str("\"name\":")?;
    write_str_value(out, span.name())?;
    out.write_char('}')
}

/// Writes each recorded field as `,"key":value`, stopping at the first error.
struct FieldWriter<'a, W> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> FieldWriter<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = write_entry(self.out, field, value);
        }
    }
}

fn write_entry<W: fmt::Write>(
    out: &mut W,
    field: &Field,
    value: impl FnOnce(&mut W) -> fmt::Result,
) -> fmt::Result {
    out.write_char(',')?;
    write_str_value(out, field.name())?;
    out.write_char(':')?;
    value(out)
}

impl<W: fmt::Write> Visit for FieldWriter<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |out| match serde_json::Number::from_f64(value) {
            // serde_json's float text (shortest round-trip form, `1.0` not `1`).
            Some(number) => write!(out, "{number}"),
            None => out.write_str("null"),
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| {
            if value < 0 {
                out.write_char('-')?;
            }
            write_u64(out, value.unsigned_abs())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write_u64(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_str_value(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

fn write_u64<W: fmt::Write>(out: &mut W, mut value: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.write_str(std::str::from_utf8(&digits[start..]).map_err(|_| fmt::Error)?)
}

/// Writes `value` as a quoted, escaped JSON string.
fn write_str_value<W: fmt::Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    out.write_char('"')?;
    write_escaped(out, value)?;
    out.write_char('"')
}

/// A `fmt::Write` that JSON-escapes what is written through it, so `Display`
/// and `Debug` output goes into the line without a temporary `String`.
struct Escaped<'a, W: ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

/// What a byte becomes inside a JSON string: 0 for itself, `u` for
/// `\u00XX`, any other letter `c` for `\c`. The same table as serde_json.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Writes `s` with JSON string escaping, in runs between escaped bytes.
/// Only ASCII bytes are escaped, so every run ends on a char boundary.
fn write_escaped<W: fmt::Write + ?Sized>(out: &mut W, s: &str) -> fmt::Result {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Nearly every string has nothing to escape: test that first.
    if !any_needs_escape(s.as_bytes()) {
        return out.write_str(s);
    }
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = ESCAPE[usize::from(byte)];
        if escape == 0 {
            continue;
        }
        if start < i {
            out.write_str(s.get(start..i).ok_or(fmt::Error)?)?;
        }
        if escape == b'u' {
            let hex = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ];
            out.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)?;
        } else {
            out.write_char('\\')?;
            out.write_char(char::from(escape))?;
        }
        start = i + 1;
    }
    match s.get(start..) {
        Some("") => Ok(()),
        Some(rest) => out.write_str(rest),
        None => Err(fmt::Error),
    }
}

/// Whether any byte of `bytes` [`needs_escape`]. No early exit, so the
/// loop compiles to SIMD compares over the whole string.
fn any_needs_escape(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(false, |found, &byte| found | needs_escape(byte))
}

/// Whether JSON needs `byte` escaped inside a string: a control character
/// below U+0020, `"` or `\`.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::{json, Map, Value};
    use tracing::{
        callsite::{Callsite, Identifier},
        field::FieldSet,
        metadata::Kind,
        subscriber::Interest,
        Level,
    };
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;
    use crate::context::AccessLine;
    use odgw_core::{ErrorCode, RequestId};

    /// Collects everything the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
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

    /// What `emit` logs through the stock `json().flatten_event(true)`
    /// formatter (`stock`) or through [`JsonFormat`].
    fn capture(stock: bool, emit: &dyn Fn()) -> String {
        let out = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(Level::TRACE);
        if stock {
            let subscriber = builder.json().flatten_event(true).finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            let subscriber = builder
                .fmt_fields(JsonFields::new())
                .event_format(JsonFormat::new())
                .finish();
            tracing::subscriber::with_default(subscriber, emit);
        }
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, what tracing-subscriber's SystemTime
    /// timer prints.
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

    /// Splits `{"timestamp":"<ts>",<rest>` into the timestamp and the rest.
    fn split_timestamp(line: &str) -> (&str, &str) {
        let after = line
            .strip_prefix("{\"timestamp\":\"")
            .unwrap_or_else(|| panic!("line does not start with the timestamp: {line:?}"));
        let end = after.find('"').unwrap();
        (&after[..end], &after[end..])
    }

    /// Runs `emit` under both formatters and asserts the lines are the same
    /// byte for byte apart from the timestamp value (same keys, order, value
    /// types and escaping), and the same parsed. Returns our parsed lines.
    fn assert_same_as_stock(emit: impl Fn()) -> Vec<Map<String, Value>> {
        let stock = capture(true, &emit);
        let ours = capture(false, &emit);
        let stock_lines: Vec<&str> = stock.split_inclusive('\n').collect();
        let our_lines: Vec<&str> = ours.split_inclusive('\n').collect();
        assert!(!stock_lines.is_empty(), "nothing was logged");
        assert_eq!(
            stock_lines.len(),
            our_lines.len(),
            "stock:\n{stock}\nours:\n{ours}"
        );
        let mut parsed = Vec::new();
        for (stock_line, our_line) in stock_lines.iter().zip(&our_lines) {
            for line in [stock_line, our_line] {
                assert!(line.ends_with('\n'), "{line:?}");
                assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            }
            let (stock_ts, stock_rest) = split_timestamp(stock_line);
            let (our_ts, our_rest) = split_timestamp(our_line);
            assert_timestamp_format(stock_ts);
            assert_timestamp_format(our_ts);
            assert_eq!(stock_rest, our_rest, "after the timestamp");

            let mut stock_value: Map<String, Value> = serde_json::from_str(stock_line).unwrap();
            let mut our_value: Map<String, Value> = serde_json::from_str(our_line).unwrap();
            assert!(our_value.remove("timestamp").unwrap().is_string());
            stock_value.remove("timestamp");
            assert_eq!(stock_value, our_value);
            parsed.push(our_value);
        }
        parsed
    }

    fn keys(object: &Map<String, Value>) -> Vec<&str> {
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// A `%` field with the given `Display` text.
    struct Shown(&'static str);

    impl fmt::Display for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
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
    fn access_event_matches_stock() {
        let lines = assert_same_as_stock(|| {
            access_event(
                "/api/v1/patients/12",
                Some(ErrorCode::UpstreamUnavailable),
                Some("clinic-a"),
                None,
                Some(503),
                None,
            )
        });
        let line = &lines[0];
        // Independent of the stock formatter: the keys and value types.
        assert_eq!(
            keys(line),
            [
                "duration_ms",
                "error_code",
                "level",
                "message",
                "method",
                "outcome",
                "path",
                "request_id",
                "status",
                "target",
                "tenant",
                "upstream_status",
            ]
        );
        assert_eq!(line["level"], json!("INFO"));
        assert_eq!(line["target"], json!("odgw::access"));
        assert_eq!(line["message"], json!("request"));
        assert_eq!(
            line["request_id"],
            json!("0b6f2c1e-5d3a-4f7e-9c11-2a4b6d8e0f13")
        );
        assert_eq!(line["method"], json!("GET"));
        assert_eq!(line["path"], json!("/api/v1/patients/12"));
        assert_eq!(line["status"], json!(502));
        assert_eq!(line["outcome"], json!("upstream_error"));
        assert_eq!(line["error_code"], json!("upstream_unavailable"));
        assert_eq!(line["tenant"], json!("clinic-a"));
        assert_eq!(line["upstream_status"], json!(503));
        assert_eq!(line["duration_ms"], json!(17));
    }

    #[test]
    fn access_event_with_every_option_set_or_none_matches_stock() {
        let lines = assert_same_as_stock(|| {
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
            let lines = assert_same_as_stock(|| access_event(path, None, None, None, None, None));
            assert_eq!(lines.len(), 1);
            let line = &lines[0];
            assert_eq!(line["path"], json!(path));
            assert_eq!(line["level"], json!("INFO"));
            assert!(!line.contains_key("forged"));
            // And on our output alone, without the stock formatter.
            let raw = capture(false, &|| access_event(path, None, None, None, None, None));
            assert_eq!(raw.matches('\n').count(), 1, "{raw:?}");
            assert!(!raw.contains('\r'), "{raw:?}");
            assert!(!raw.contains('\u{1b}'), "{raw:?}");
            let parsed: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(parsed["path"], json!(path));
        }
    }

    #[test]
    fn messages_with_quotes_newlines_and_unicode_match_stock() {
        let lines = assert_same_as_stock(|| {
            tracing::info!("said \"hi\"\nthen\ttabbed \\ back\u{8}\u{c} é 日本 😀 \u{1}");
            let shown = Shown("dis\"play\n");
            let text = "str \"value\"\n";
            tracing::warn!(shown = %shown, debugged = ?text, text, "formatted {} {:?}", 1, "two\"");
        });
        assert_eq!(
            lines[0]["message"],
            json!("said \"hi\"\nthen\ttabbed \\ back\u{8}\u{c} é 日本 😀 \u{1}")
        );
        assert_eq!(lines[1]["message"], json!("formatted 1 \"two\\\"\""));
        assert_eq!(lines[1]["shown"], json!("dis\"play\n"));
        assert_eq!(lines[1]["debugged"], json!("\"str \\\"value\\\"\\n\""));
        assert_eq!(lines[1]["text"], json!("str \"value\"\n"));
    }

    #[test]
    fn levels_match_stock() {
        let lines = assert_same_as_stock(|| {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!("i");
            tracing::warn!(target: "odgw::custom", "w");
            tracing::error!(error = %io::Error::other("disk full"), "e");
        });
        let levels: Vec<&Value> = lines.iter().map(|l| &l["level"]).collect();
        assert_eq!(
            levels,
            [
                &json!("TRACE"),
                &json!("DEBUG"),
                &json!("INFO"),
                &json!("WARN"),
                &json!("ERROR")
            ]
        );
        assert_eq!(lines[3]["target"], json!("odgw::custom"));
        assert_eq!(lines[4]["error"], json!("disk full"));
    }

    #[test]
    fn numbers_and_bools_match_stock() {
        let lines = assert_same_as_stock(|| {
            let err = io::Error::other("boom \"x\"");
            tracing::info!(
                zero = 0u64,
                max = u64::MAX,
                min = i64::MIN,
                neg = -42i64,
                pos = 42i64,
                small = 7u8,
                half = 1.5f64,
                whole = 1.0f64,
                neg_zero = -0.0f64,
                huge = 1e300f64,
                tiny = 5e-324f64,
                third = 1.0f64 / 3.0,
                nan = f64::NAN,
                inf = f64::INFINITY,
                yes = true,
                no = false,
                wide = i128::MIN,
                uwide = u128::MAX,
                error = &err as &(dyn std::error::Error + 'static),
                http.status = 200u16,
                r#type = "raw",
                "numbers"
            );
            tracing::info!(bytes = &b"a\x01\xff"[..], "bytes");
        });
        let line = &lines[0];
        assert_eq!(line["zero"], json!(0));
        assert_eq!(line["max"], json!(u64::MAX));
        assert_eq!(line["min"], json!(i64::MIN));
        assert_eq!(line["neg"], json!(-42));
        assert_eq!(line["half"], json!(1.5));
        assert!(line["whole"].is_f64());
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["inf"], Value::Null);
        assert_eq!(line["yes"], json!(true));
        assert_eq!(line["no"], json!(false));
        assert_eq!(line["wide"], json!(i128::MIN.to_string()));
        assert_eq!(line["http.status"], json!(200));
        assert_eq!(line["error"], json!("boom \"x\""));
    }

    #[test]
    fn events_in_spans_match_stock() {
        let lines = assert_same_as_stock(|| {
            let outer = tracing::info_span!(
                "outer",
                tenant = "clinic \"a\"\n",
                n = 3u64,
                neg = -1i64,
                ok = true,
                ratio = 0.25f64,
                shown = %Shown("x"),
                late = tracing::field::Empty,
            );
            let _outer = outer.enter();
            tracing::info!("in outer");
            outer.record("late", "recorded later");
            let inner = tracing::debug_span!("inner");
            {
                let _inner = inner.enter();
                tracing::warn!(k = 1u64, "in inner");
                let named = tracing::info_span!("named", name = "field called name");
                let _named = named.enter();
                tracing::error!("three deep");
            }
            drop(_outer);
            // An explicit parent with no current span: `span` is the parent,
            // `spans` is empty.
            tracing::info!(parent: &inner, "explicit parent");
            // An explicit root event inside a span.
            let _again = outer.enter();
            tracing::info!(parent: None, "explicit root");
        });
        assert_eq!(lines[0]["span"]["name"], json!("outer"));
        assert_eq!(lines[0]["span"]["tenant"], json!("clinic \"a\"\n"));
        assert_eq!(lines[0]["span"]["n"], json!(3));
        assert_eq!(lines[0]["span"]["ok"], json!(true));
        assert_eq!(lines[0]["spans"].as_array().unwrap().len(), 1);
        assert_eq!(lines[1]["span"]["name"], json!("inner"));
        assert_eq!(lines[1]["spans"][0]["late"], json!("recorded later"));
        assert_eq!(lines[1]["spans"][1], json!({"name": "inner"}));
        assert_eq!(lines[2]["spans"].as_array().unwrap().len(), 3);
        assert_eq!(lines[3]["span"]["name"], json!("inner"));
        assert_eq!(lines[3]["spans"], json!([]));
        assert_eq!(lines[4]["span"]["name"], json!("outer"));
    }

    #[test]
    fn the_escape_tests_agree_with_the_byte_table() {
        for byte in 0..=255u8 {
            assert_eq!(needs_escape(byte), ESCAPE[usize::from(byte)] != 0, "{byte}");
        }
        // Every byte value at every position of strings of 1 to 17 bytes,
        // among bytes of every kind.
        for len in 1..=17 {
            for position in 0..len {
                for filler in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff] {
                    for byte in 0..=255u8 {
                        let mut bytes = vec![filler; len];
                        bytes[position] = byte;
                        let expected = bytes.iter().any(|b| ESCAPE[usize::from(*b)] != 0);
                        assert_eq!(any_needs_escape(&bytes), expected, "{bytes:?}");
                    }
                }
            }
        }
        assert!(!any_needs_escape(b""));
    }

    #[test]
    fn escaping_matches_serde_json_for_every_ascii_byte() {
        let all: String = (0u8..0x80).map(char::from).collect();
        let samples = [
            all.as_str(),
            "",
            "plain",
            "\"",
            "\\",
            "a\u{1f}b",
            "é\u{0}日本😀\u{2028}",
        ];
        let mut samples: Vec<String> = samples.iter().map(|s| (*s).to_owned()).collect();
        for byte in 0u8..0x80 {
            for offset in 0..20 {
                let mut text = "é-abcdefghijklmnopqrstuvwxyz".to_owned();
                text.insert(offset + 2, char::from(byte));
                samples.push(text);
            }
        }
        for sample in &samples {
            let sample = sample.as_str();
            let mut ours = String::new();
            write_escaped(&mut ours, sample).unwrap();
            let theirs = serde_json::to_string(sample).unwrap();
            assert_eq!(format!("\"{ours}\""), theirs);
        }
    }

    fn timestamp_at(secs: u64, micros: u32) -> String {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(secs)
            + std::time::Duration::from_nanos(u64::from(micros) * 1000 + 999);
        let mut text = String::new();
        write_timestamp(&mut text, at).unwrap();
        text
    }

    #[test]
    fn timestamps_at_known_instants() {
        // Expected texts from Python's datetime.
        let known = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (951_868_799, 999_999, "2000-02-29T23:59:59.999999Z"),
            (1_709_210_096, 123_456, "2024-02-29T12:34:56.123456Z"),
            (4_102_444_800, 500_000, "2100-01-01T00:00:00.500000Z"),
            (253_402_300_799, 999_999, "9999-12-31T23:59:59.999999Z"),
            (1_234_567_890, 42, "2009-02-13T23:31:30.000042Z"),
            (681_696_000, 7, "1991-08-09T00:00:00.000007Z"),
        ];
        for (secs, micros, expected) in known {
            assert_eq!(timestamp_at(secs, micros), expected);
        }
    }

    /// Day by day from 1970 to 2500 against a plain calendar walk.
    #[test]
    fn dates_agree_with_a_calendar_walk() {
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        for days in 0..(530 * 366) {
            assert_eq!(
                timestamp_at(days * 86_400, 0)[..10],
                format!("{year:04}-{month:02}-{day:02}"),
                "day {days}"
            );
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    fn stock_timestamp() -> String {
        let mut text = String::new();
        SystemTime.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    }

    /// Outside 1970..=9999 the stock timer is asked instead (it reads the
    /// clock itself, so the text is that of the current time).
    #[test]
    fn timestamps_outside_the_fast_range_come_from_the_stock_timer() {
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_secs(86_400);
        let after = std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_800);
        for at in [before, after] {
            loop {
                let first = stock_timestamp();
                let mut ours = String::new();
                write_timestamp(&mut ours, at).unwrap();
                let last = stock_timestamp();
                assert_timestamp_format(&ours);
                if first[..19] == last[..19] {
                    assert_eq!(ours[..19], first[..19]);
                    break;
                }
            }
        }
    }

    /// Against tracing-subscriber's `SystemTime` timer: when two of its
    /// readings around ours fall in the same second, ours is in it too.
    #[test]
    fn timestamps_agree_with_the_stock_timer() {
        let mut compared = 0;
        while compared < 20 {
            let first = stock_timestamp();
            let mut ours = String::new();
            write_timestamp(&mut ours, std::time::SystemTime::now()).unwrap();
            let last = stock_timestamp();
            assert_timestamp_format(&ours);
            if first[..19] == last[..19] {
                assert_eq!(ours[..19], first[..19]);
                assert!(first[20..26] <= ours[20..26] && ours[20..26] <= last[20..26]);
                compared += 1;
            }
        }
    }

    /// A stand-in for `tracing-log`'s callsite for bridged `log` records
    /// (same name, target and fields), whose target is `log.target`.
    struct FakeLogCallsite;

    static FAKE_LOG_CALLSITE: FakeLogCallsite = FakeLogCallsite;
    static FAKE_LOG_META: Metadata<'static> = Metadata::new(
        "log event",
        "log",
        Level::WARN,
        None,
        None,
        None,
        FieldSet::new(
            &[
                "message",
                "log.target",
                "log.module_path",
                "log.file",
                "log.line",
            ],
            Identifier(&FAKE_LOG_CALLSITE),
        ),
        Kind::EVENT,
    );

    impl Callsite for FakeLogCallsite {
        fn set_interest(&self, _: Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            &FAKE_LOG_META
        }
    }

    fn emit_fake_log() {
        let fields = FAKE_LOG_META.fields();
        let message = format_args!("sending \"warning\" alert");
        let values: [(&Field, Option<&dyn tracing::Value>); 5] = [
            (
                &fields.field("message").unwrap(),
                Some(&message as &dyn tracing::Value),
            ),
            (
                &fields.field("log.target").unwrap(),
                Some(&"rustls::common_state" as &dyn tracing::Value),
            ),
            (
                &fields.field("log.module_path").unwrap(),
                Some(&"rustls::common_state" as &dyn tracing::Value),
            ),
            (&fields.field("log.file").unwrap(), None),
            (
                &fields.field("log.line").unwrap(),
                Some(&42u64 as &dyn tracing::Value),
            ),
        ];
        Event::dispatch(&FAKE_LOG_META, &fields.value_set(&values));
    }

    /// The stock formatter takes a bridged record's target from
    /// `log.target` (it recognises tracing-log's callsites by identity, so
    /// it reports this stand-in as target `log`). Everything else is the same.
    #[test]
    fn bridged_log_records_report_their_log_target() {
        let stock = capture(true, &emit_fake_log);
        let ours = capture(false, &emit_fake_log);
        let mut stock: Map<String, Value> = serde_json::from_str(&stock).unwrap();
        let mut ours: Map<String, Value> = serde_json::from_str(&ours).unwrap();
        assert_eq!(stock.remove("target"), Some(json!("log")));
        assert_eq!(ours.remove("target"), Some(json!("rustls::common_state")));
        stock.remove("timestamp");
        ours.remove("timestamp");
        assert_eq!(stock, ours);
        assert_eq!(ours["log.target"], json!("rustls::common_state"));
        assert_eq!(ours["message"], json!("sending \"warning\" alert"));
    }
}
