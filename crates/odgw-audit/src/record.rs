//! The record type, its canonical JSON and hash, and CSV rendering (SPEC §8).
//!
//! A record's fields are spelled once, in [`AuditRecord`]: serde derives the
//! written line from its declaration (fields in that order, `null` for
//! `None`) and reads lines back with it. The canonical JSON, which the hash
//! chain covers, is that line without its last member, `hash`. CSV takes its
//! header and its cells from [`FIELDS`], which tests hold equal to the
//! derived order. The hashed bytes must never change: existing segments are
//! verified against them (a test pins them).

use std::sync::LazyLock;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

use crate::AuditError;

/// Every field of a record, in the order SPEC §8 fixes for the written line,
/// the canonical JSON (which leaves out the last, `hash`) and CSV: the order
/// of [`AuditRecord`]'s declaration, which serde follows.
pub const FIELDS: [&str; 21] = [
    "seq",
    "ts",
    "kind",
    "request_id",
    "tenant",
    "subject",
    "issuer",
    "client_ip",
    "method",
    "path",
    "query",
    "status",
    "upstream_status",
    "outcome",
    "error_code",
    "duration_ms",
    "upstream_ms",
    "action",
    "target",
    "prev_hash",
    "hash",
];

/// `prev_hash` of the record with `seq` 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// One per data-plane request, written when its response is known.
    #[default]
    Request,
    /// Written before a POST, PUT, PATCH or DELETE is forwarded.
    Intent,
    /// One per admin API action.
    Admin,
}

impl RecordKind {
    /// The value of the `kind` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Intent => "intent",
            Self::Admin => "admin",
        }
    }
}

/// One line of the audit trail: SPEC §8's fields, in its order, every one
/// always present (`null` where it does not apply).
///
/// `Serialize` writes the line (without its newline): the fields in
/// declaration order, which is SPEC order, `hash` last. Reordering, renaming
/// or skipping a field here changes every hash; use [`canonical_json`] for
/// the hashed form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3 … with no gaps, across segments and restarts.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T20:40:39.123Z`. Kept
    /// as written so the hash is recomputed over exactly these characters.
    pub ts: String,
    /// `request`, `intent` or `admin`.
    pub kind: RecordKind,
    /// As in `X-Request-Id`.
    pub request_id: Option<String>,
    /// From the verified token; null when unknown.
    pub tenant: Option<String>,
    /// The token's `sub`; null when unknown.
    pub subject: Option<String>,
    /// The token's `iss`; null when unknown.
    pub issuer: Option<String>,
    /// Peer IP address, without port.
    pub client_ip: Option<String>,
    /// HTTP method as received.
    pub method: Option<String>,
    /// Path as received, e.g. `/api/v1/patients/11`.
    pub path: Option<String>,
    /// Raw query string without `?`, or null.
    pub query: Option<String>,
    /// Status sent to the client.
    pub status: Option<u16>,
    /// Open Dental's status; null when it was not called.
    pub upstream_status: Option<u16>,
    /// `forwarded`, `cache_hit`, `denied`, `rate_limited`, `upstream_error` or `gateway_error`.
    pub outcome: Option<String>,
    /// The `code` of SPEC §4, or null.
    pub error_code: Option<String>,
    /// Total time to the response head, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Time to the upstream's response head, in milliseconds.
    pub upstream_ms: Option<u64>,
    /// Admin records only, e.g. `tenant.put`.
    pub action: Option<String>,
    /// Admin records only, e.g. the tenant id.
    pub target: Option<String>,
    /// The previous record's `hash`; 64 zeros for `seq` 1.
    pub prev_hash: String,
    /// Lowercase hex SHA-256 of [`canonical_json`].
    pub hash: String,
}

/// What a caller knows about an event; the writer adds `seq`, `ts`,
/// `prev_hash` and `hash` when it makes the record.
///
/// Never put bodies, tokens, keys or header values here (the request id is
/// the one header-derived value SPEC §8 asks for).
///
/// Its fields are [`AuditRecord`]'s from `kind` to `target`, with the same
/// names in the same order, so its `Serialize` writes exactly those members
/// of the record's line (a test holds the two together).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecordDraft {
    /// See [`AuditRecord::kind`].
    pub kind: RecordKind,
    /// See [`AuditRecord::request_id`].
    pub request_id: Option<String>,
    /// See [`AuditRecord::tenant`].
    pub tenant: Option<String>,
    /// See [`AuditRecord::subject`].
    pub subject: Option<String>,
    /// See [`AuditRecord::issuer`].
    pub issuer: Option<String>,
    /// See [`AuditRecord::client_ip`].
    pub client_ip: Option<String>,
    /// See [`AuditRecord::method`].
    pub method: Option<String>,
    /// See [`AuditRecord::path`].
    pub path: Option<String>,
    /// See [`AuditRecord::query`].
    pub query: Option<String>,
    /// See [`AuditRecord::status`].
    pub status: Option<u16>,
    /// See [`AuditRecord::upstream_status`].
    pub upstream_status: Option<u16>,
    /// See [`AuditRecord::outcome`].
    pub outcome: Option<String>,
    /// See [`AuditRecord::error_code`].
    pub error_code: Option<String>,
    /// See [`AuditRecord::duration_ms`].
    pub duration_ms: Option<u64>,
    /// See [`AuditRecord::upstream_ms`].
    pub upstream_ms: Option<u64>,
    /// See [`AuditRecord::action`].
    pub action: Option<String>,
    /// See [`AuditRecord::target`].
    pub target: Option<String>,
}

impl RecordDraft {
    /// An empty draft of the given kind.
    pub fn new(kind: RecordKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// The draft's members of the canonical JSON, `"kind":…` through
    /// `"target":…`, each followed by a comma, so the caller's task, not the
    /// writer thread, pays for serializing them. Everything around them
    /// (`seq`, `ts`, `prev_hash`, `hash`) is only known to the writer, which
    /// seals the record from these bytes with [`seal_into`].
    pub(crate) fn to_members(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(384);
        json_into(&mut out, self);
        // `{"kind":…,"target":…}` becomes `"kind":…,"target":…,`.
        if out.first() == Some(&b'{') {
            out.remove(0);
        }
        if let Some(closing) = out.last_mut() {
            *closing = b',';
        }
        out
    }
}

fn json_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Only strings, integers and nulls are written, into memory, which
    // serde_json cannot fail on; a wrong line would never match its hash.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends record `seq`'s line (newline included) to `out` and returns its
/// `hash`. The canonical JSON is written first and hashed in place; the line
/// is then that same object with its closing `}` replaced by
/// `,"hash":"…"}` — which is exactly SPEC §8's "the same object with `hash`
/// appended last", at the price of one serialization instead of two.
pub(crate) fn seal_into(
    out: &mut Vec<u8>,
    seq: u64,
    ts: &str,
    members: &[u8],
    prev_hash: &str,
) -> String {
    let start = out.len();
    write_canonical(out, seq, ts, members, prev_hash);
    let hash = sha256_hex(&out[start..]);
    out.pop();
    out.extend_from_slice(b",\"hash\":");
    json_into(out, &hash);
    out.extend_from_slice(b"}\n");
    hash
}

/// The canonical JSON around a draft's [`RecordDraft::to_members`]. The
/// names of the four members that only the writer knows are spelled here a
/// second time; the pinned-bytes test fails if they drift from
/// [`AuditRecord`]'s.
fn write_canonical(out: &mut Vec<u8>, seq: u64, ts: &str, members: &[u8], prev_hash: &str) {
    out.extend_from_slice(b"{\"seq\":");
    json_into(out, &seq);
    out.extend_from_slice(b",\"ts\":");
    json_into(out, ts);
    out.push(b',');
    out.extend_from_slice(members);
    out.extend_from_slice(b"\"prev_hash\":");
    json_into(out, prev_hash);
    out.push(b'}');
}

impl AuditRecord {
    /// Seals a draft as record `seq`, chained to `prev_hash`, with `hash`
    /// computed over the canonical JSON.
    pub fn from_draft(draft: RecordDraft, seq: u64, ts: String, prev_hash: String) -> Self {
        let mut record = Self {
            seq,
            ts,
            kind: draft.kind,
            request_id: draft.request_id,
            tenant: draft.tenant,
            subject: draft.subject,
            issuer: draft.issuer,
            client_ip: draft.client_ip,
            method: draft.method,
            path: draft.path,
            query: draft.query,
            status: draft.status,
            upstream_status: draft.upstream_status,
            outcome: draft.outcome,
            error_code: draft.error_code,
            duration_ms: draft.duration_ms,
            upstream_ms: draft.upstream_ms,
            action: draft.action,
            target: draft.target,
            prev_hash,
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// Lowercase hex SHA-256 of this record's canonical JSON.
    pub fn compute_hash(&self) -> String {
        sha256_hex(canonical_json(self).as_bytes())
    }

    /// The line written to a segment: the full object, `hash` last, newline.
    pub fn to_line(&self) -> String {
        let mut line = Vec::with_capacity(512);
        json_into(&mut line, self);
        line.push(b'\n');
        // serde_json writes UTF-8.
        String::from_utf8(line).unwrap_or_default()
    }

    /// The record's `ts` parsed.
    pub fn timestamp(&self) -> Result<OffsetDateTime, AuditError> {
        OffsetDateTime::parse(&self.ts, &Rfc3339)
            .map_err(|_| AuditError::BadTimestamp(self.ts.clone()))
    }
}

/// SPEC §8's canonical JSON of a record: compact, keys in SPEC order, `hash`
/// left out, UTF-8. Its SHA-256 is the record's `hash`.
pub fn canonical_json(record: &AuditRecord) -> String {
    // Built only from serde_json output and ASCII punctuation.
    String::from_utf8(canonical_bytes(record)).unwrap_or_default()
}

/// The record's JSON without its last member, `hash`.
fn canonical_bytes(record: &AuditRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    json_into(&mut out, record);
    let mut hash_member = b",\"hash\":".to_vec();
    json_into(&mut hash_member, &record.hash);
    hash_member.push(b'}');
    // Always true, `hash` being declared last; were it not, the bytes left
    // whole would match no hash and verification would say so.
    if out.ends_with(&hash_member) {
        out.truncate(out.len() - hash_member.len());
        out.push(b'}');
    }
    out
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = digest::digest(&digest::SHA256, bytes);
    let mut text = [0u8; 64];
    // 32 digest bytes always fill exactly 64 hex digits, and `hex::encode`
    // (char by char into a String) costs more than the hash itself here.
    match hex::encode_to_slice(digest.as_ref(), &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => hex::encode(digest.as_ref()),
    }
}

/// Formats a record timestamp: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_ts(ts: OffsetDateTime) -> String {
    let ts = ts.to_offset(time::UtcOffset::UTC);
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    // The format has no component that can fail for years 0..=9999.
    ts.format(&fmt).unwrap_or_default()
}

/// Parses a query bound: RFC 3339 (`2026-11-27T20:40:39Z`, any offset) or a
/// bare date (`2026-11-27`, midnight UTC).
pub fn parse_timestamp(text: &str) -> Result<OffsetDateTime, AuditError> {
    let text = text.trim();
    if let Ok(ts) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(ts);
    }
    let date_fmt = format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &date_fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| AuditError::BadTimestamp(text.to_owned()))
}

/// The CSV header line (no line ending): [`FIELDS`], comma-separated.
pub fn to_csv_header() -> &'static str {
    static HEADER: LazyLock<String> = LazyLock::new(|| FIELDS.join(","));
    &HEADER
}

/// One record as a CSV row (RFC 4180 quoting, no line ending; join rows with
/// `\r\n`): the record's JSON values in [`FIELDS`] order, strings unquoted
/// unless they need it, numbers as JSON writes them, `null` an empty field.
/// Values are written as recorded — an audit export must not rewrite data —
/// so open it in a spreadsheet with care.
pub fn to_csv_row(r: &AuditRecord) -> String {
    // Strings and integers only: serializing cannot fail.
    let record = serde_json::to_value(r).unwrap_or_default();
    FIELDS
        .iter()
        .map(|name| match &record[*name] {
            Value::Null => String::new(),
            Value::String(text) => csv_quote(text),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn csv_quote(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditRecord {
        let draft = RecordDraft {
            kind: RecordKind::Request,
            request_id: Some("req-1".into()),
            tenant: Some("demo".into()),
            subject: Some("alice".into()),
            issuer: Some("https://idp.example.com/".into()),
            client_ip: Some("127.0.0.1".into()),
            method: Some("GET".into()),
            path: Some("/api/v1/patients/11".into()),
            query: None,
            status: Some(200),
            upstream_status: Some(200),
            outcome: Some("forwarded".into()),
            error_code: None,
            duration_ms: Some(12),
            upstream_ms: Some(9),
            action: None,
            target: None,
        };
        AuditRecord::from_draft(
            draft,
            1,
            "2026-11-27T20:40:39.123Z".into(),
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn canonical_json_is_exact_compact_ordered_and_without_hash() {
        let r = sample();
        let expected = concat!(
            r#"{"seq":1,"ts":"2026-11-27T20:40:39.123Z","kind":"request","request_id":"req-1","#,
            r#""tenant":"demo","subject":"alice","issuer":"https://idp.example.com/","#,
            r#""client_ip":"127.0.0.1","method":"GET","path":"/api/v1/patients/11","query":null,"#,
            r#""status":200,"upstream_status":200,"outcome":"forwarded","error_code":null,"#,
            r#""duration_ms":12,"upstream_ms":9,"action":null,"target":null,"#,
            r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000"}"#
        );
        assert_eq!(canonical_json(&r), expected);
        // Independent SHA-256 of the bytes above (computed with Python hashlib).
        assert_eq!(
            r.hash,
            "fa9f77caef2aa03ca3be0e4bbce439d33aa95bdf65e96a35d3182cb6cb7ce085"
        );
        assert_eq!(r.hash, sha256_hex(expected.as_bytes()));
    }

    #[test]
    fn written_line_has_every_field_in_spec_order_with_hash_last() {
        let r = sample();
        let line = r.to_line();
        assert!(line.ends_with('\n'));
        let canonical = canonical_json(&r);
        // The line is the canonical object with `hash` appended last.
        let expected = format!(
            "{},\"hash\":\"{}\"}}\n",
            &canonical[..canonical.len() - 1],
            r.hash
        );
        assert_eq!(line, expected);
        let mut last = 0;
        for name in FIELDS {
            let at = line.find(&format!("\"{name}\":")).unwrap();
            assert!(at >= last, "{name} out of order");
            last = at;
        }
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        // `Serialize` (used for query output) agrees with the written line.
        assert_eq!(format!("{}\n", serde_json::to_string(&r).unwrap()), line);
        assert_eq!(to_csv_header().split(',').collect::<Vec<_>>(), FIELDS);
    }

    #[test]
    fn sealing_pre_serialized_members_matches_the_record() {
        let r = sample();
        let draft = RecordDraft {
            kind: r.kind,
            request_id: r.request_id.clone(),
            tenant: r.tenant.clone(),
            subject: r.subject.clone(),
            issuer: r.issuer.clone(),
            client_ip: r.client_ip.clone(),
            method: r.method.clone(),
            path: Some("/a\"b\\c\u{1}é".into()),
            query: r.query.clone(),
            status: r.status,
            upstream_status: r.upstream_status,
            outcome: r.outcome.clone(),
            error_code: r.error_code.clone(),
            duration_ms: r.duration_ms,
            upstream_ms: r.upstream_ms,
            action: r.action.clone(),
            target: r.target.clone(),
        };
        let expected = AuditRecord::from_draft(draft.clone(), 7, r.ts.clone(), r.hash.clone());
        let mut out = b"previous line\n".to_vec();
        let hash = seal_into(&mut out, 7, &r.ts, &draft.to_members(), &r.hash);
        assert_eq!(hash, expected.hash);
        assert_eq!(&out[14..], expected.to_line().as_bytes());
        let back: AuditRecord = serde_json::from_slice(&out[14..]).unwrap();
        assert_eq!(back, expected);
    }

    /// The keys of a JSON object, in the order they are written.
    fn keys_in_order(json: &str) -> Vec<String> {
        struct Keys(Vec<String>);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some(key) = map.next_key::<String>()? {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            keys.push(key);
                        }
                        Ok(Keys(keys))
                    }
                }
                d.deserialize_map(Visitor)
            }
        }
        serde_json::from_str::<Keys>(json).unwrap().0
    }

    /// [`FIELDS`], which the CSV header and rows follow, is the order serde
    /// writes the record in, and the draft writes the record's members from
    /// `kind` to `target`, so the sealed line is the record's line.
    #[test]
    fn fields_are_the_derived_order_of_the_record_and_the_draft() {
        let record = sample();
        assert_eq!(keys_in_order(&record.to_line()), FIELDS);
        assert_eq!(
            keys_in_order(&serde_json::to_string(&RecordDraft::default()).unwrap()),
            FIELDS[2..FIELDS.len() - 2]
        );
        assert_eq!(to_csv_header(), FIELDS.join(","));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let line = sample().to_line().replacen("{", r#"{"extra":1,"#, 1);
        assert!(serde_json::from_str::<AuditRecord>(&line).is_err());
    }

    #[test]
    fn timestamps_have_milliseconds_and_utc() {
        let ts = time::macros::datetime!(2026-11-27 21:40:39.1239 +01:00);
        assert_eq!(format_ts(ts), "2026-11-27T20:40:39.123Z");
        let ts = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(format_ts(ts), "2026-01-02T03:04:05.000Z");
        assert_eq!(
            parse_timestamp("2026-11-27").unwrap(),
            time::macros::datetime!(2026-11-27 0:00 UTC)
        );
        assert_eq!(
            parse_timestamp("2026-11-27T20:40:39.5+01:00").unwrap(),
            time::macros::datetime!(2026-11-27 19:40:39.5 UTC)
        );
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn csv_quotes_per_rfc_4180() {
        let mut r = sample();
        r.query = Some("a=1,b=\"x\"".into());
        r.subject = Some("line\nbreak".into());
        let row = to_csv_row(&r);
        assert!(row.contains(r#","a=1,b=""x""","#), "{row}");
        assert!(row.contains(",\"line\nbreak\","), "{row}");
        assert!(row.starts_with("1,2026-11-27T20:40:39.123Z,request,req-1,demo,"));
        // null → empty field; 21 fields when the quoted commas are ignored.
        assert!(row.contains(",forwarded,,12,9,,,"), "{row}");
        let plain = to_csv_row(&sample());
        assert_eq!(plain.split(',').count(), 21);
        assert!(plain.ends_with(&sample().hash));
    }

    /// Every field set, with values that need JSON escaping and CSV quoting,
    /// and the largest numbers.
    fn full_draft() -> RecordDraft {
        RecordDraft {
            kind: RecordKind::Admin,
            request_id: Some("req \"1\"\\ <b>&".into()),
            tenant: Some("clinic-é日本😀".into()),
            subject: Some("line\nbreak\ttab\r\u{1}\u{7f}\u{2028}".into()),
            issuer: Some("https://idp.example.com/".into()),
            client_ip: Some("2001:db8::1".into()),
            method: Some("PATCH".into()),
            path: Some("/api/v1/patients/11,12".into()),
            query: Some("a=1&b=\"x\",y".into()),
            status: Some(u16::MAX),
            upstream_status: Some(0),
            outcome: Some("forwarded".into()),
            error_code: Some("upstream_unavailable".into()),
            duration_ms: Some(u64::MAX),
            upstream_ms: Some(0),
            action: Some("tenant.put".into()),
            target: Some("clinic-7".into()),
        }
    }

    /// The exact bytes (line, canonical JSON, `Serialize`, CSV) and hashes of
    /// a record with every field set and of one with none, as written by
    /// the hand-written serializer this crate had before the fields were
    /// spelled once: segments written then must still verify.
    #[test]
    fn bytes_are_pinned_for_a_full_and_a_minimal_record() {
        let full_ts = "2026-11-27T20:40:39.123Z";
        let minimal_ts = "2026-01-02T03:04:05.000Z";
        let cases = [
            (
                full_draft(),
                u64::MAX,
                full_ts,
                "ab".repeat(32),
                FULL_LINE,
                FULL_CSV,
                "0d5e7f218d215fc59555201df452c86f02b775a5b1af3350181b09b2487f0634",
            ),
            (
                RecordDraft::new(RecordKind::Intent),
                1,
                minimal_ts,
                GENESIS_HASH.to_owned(),
                MINIMAL_LINE,
                MINIMAL_CSV,
                "04da781f65667e19167f637379bd0bfd5e252775b6055130ea7adb1017a0ffc9",
            ),
        ];
        for (draft, seq, ts, prev_hash, line, csv, hash) in cases {
            let record = AuditRecord::from_draft(draft.clone(), seq, ts.into(), prev_hash.clone());
            assert_eq!(record.hash, hash);
            assert_eq!(record.compute_hash(), hash);
            assert_eq!(record.to_line(), line);
            // The canonical JSON is the line without `,"hash":"…"` and newline.
            let canonical = format!("{}}}", line.split(",\"hash\":").next().unwrap());
            assert_eq!(canonical_json(&record), canonical);
            assert_eq!(sha256_hex(canonical.as_bytes()), hash);
            assert_eq!(serde_json::to_string(&record).unwrap(), line.trim_end());
            assert_eq!(to_csv_row(&record), csv);
            // The writer's path: members serialized by the caller, sealed later.
            let mut sealed = Vec::new();
            let sealed_hash = seal_into(&mut sealed, seq, ts, &draft.to_members(), &prev_hash);
            assert_eq!(sealed_hash, hash);
            assert_eq!(String::from_utf8(sealed).unwrap(), line);
            // And read back.
            let back: AuditRecord = serde_json::from_str(line).unwrap();
            assert_eq!(back, record);
        }
        assert_eq!(to_csv_header(), CSV_HEADER);
    }

    const FULL_LINE: &str = "{\"seq\":18446744073709551615,\"ts\":\"2026-11-27T20:40:39.123Z\",\"kind\":\"admin\",\"request_id\":\"req \\\"1\\\"\\\\ <b>&\",\"tenant\":\"clinic-é日本😀\",\"subject\":\"line\\nbreak\\ttab\\r\\u0001\u{7f}\u{2028}\",\"issuer\":\"https://idp.example.com/\",\"client_ip\":\"2001:db8::1\",\"method\":\"PATCH\",\"path\":\"/api/v1/patients/11,12\",\"query\":\"a=1&b=\\\"x\\\",y\",\"status\":65535,\"upstream_status\":0,\"outcome\":\"forwarded\",\"error_code\":\"upstream_unavailable\",\"duration_ms\":18446744073709551615,\"upstream_ms\":0,\"action\":\"tenant.put\",\"target\":\"clinic-7\",\"prev_hash\":\"abababababababababababababababababababababababababababababababab\",\"hash\":\"0d5e7f218d215fc59555201df452c86f02b775a5b1af3350181b09b2487f0634\"}\n";
    const FULL_CSV: &str = "18446744073709551615,2026-11-27T20:40:39.123Z,admin,\"req \"\"1\"\"\\ <b>&\",clinic-é日本😀,\"line\nbreak\ttab\r\u{1}\u{7f}\u{2028}\",https://idp.example.com/,2001:db8::1,PATCH,\"/api/v1/patients/11,12\",\"a=1&b=\"\"x\"\",y\",65535,0,forwarded,upstream_unavailable,18446744073709551615,0,tenant.put,clinic-7,abababababababababababababababababababababababababababababababab,0d5e7f218d215fc59555201df452c86f02b775a5b1af3350181b09b2487f0634";
    const MINIMAL_LINE: &str = "{\"seq\":1,\"ts\":\"2026-01-02T03:04:05.000Z\",\"kind\":\"intent\",\"request_id\":null,\"tenant\":null,\"subject\":null,\"issuer\":null,\"client_ip\":null,\"method\":null,\"path\":null,\"query\":null,\"status\":null,\"upstream_status\":null,\"outcome\":null,\"error_code\":null,\"duration_ms\":null,\"upstream_ms\":null,\"action\":null,\"target\":null,\"prev_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"hash\":\"04da781f65667e19167f637379bd0bfd5e252775b6055130ea7adb1017a0ffc9\"}\n";
    const MINIMAL_CSV: &str = "1,2026-01-02T03:04:05.000Z,intent,,,,,,,,,,,,,,,,,0000000000000000000000000000000000000000000000000000000000000000,04da781f65667e19167f637379bd0bfd5e252775b6055130ea7adb1017a0ffc9";
    const CSV_HEADER: &str = "seq,ts,kind,request_id,tenant,subject,issuer,client_ip,method,path,query,status,upstream_status,outcome,error_code,duration_ms,upstream_ms,action,target,prev_hash,hash";
}
