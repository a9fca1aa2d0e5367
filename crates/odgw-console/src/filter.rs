//! What a reviewer searches for: the filters of the search page, the
//! exports and the chart, read from the query string, and how a record is
//! matched against them.

use odgw_audit::{AuditRecord, RecordKind};
use serde::Deserialize;
use time::OffsetDateTime;

/// Records per page of search results.
pub const PAGE_SIZE: usize = 50;

/// The outcomes a reviewer can filter on (SPEC §8 plus `client_closed`).
pub const OUTCOMES: [&str; 7] = [
    "forwarded",
    "cache_hit",
    "denied",
    "rate_limited",
    "upstream_error",
    "gateway_error",
    "client_closed",
];

/// The query string as sent by the search form: every field optional, an
/// empty field meaning "any".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterParams {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    patient: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after_seq: String,
}

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub tenant: Option<String>,
    pub subject: Option<String>,
    /// An Open Dental `PatNum`: in the path (`/patients/{n}`) or the query (`PatNum=n`).
    pub patient: Option<u64>,
    /// A path prefix, e.g. `/api/v1/appointments`.
    pub path: Option<String>,
    pub outcome: Option<String>,
    pub status: Option<u16>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Keyset paging: records after this seq.
    pub after_seq: Option<u64>,
}

fn field(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl Filter {
    /// Validates the form's fields; the error names the field.
    pub(crate) fn parse(p: FilterParams) -> Result<Self, String> {
        let time = |name: &str, v: &str| {
            field(v)
                .map(|v| {
                    odgw_audit::parse_timestamp(&v).map_err(|_| {
                        format!("{name} must be an RFC 3339 time such as 2026-11-27T00:00:00Z")
                    })
                })
                .transpose()
        };
        let number = |name: &str, v: &str| {
            field(v)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("{name} must be a number"))
                })
                .transpose()
        };
        let outcome = field(&p.outcome);
        if let Some(o) = &outcome {
            if !OUTCOMES.contains(&o.as_str()) {
                return Err("outcome is not one of the listed outcomes".to_owned());
            }
        }
        let status = number("status", &p.status)?
            .map(|s| u16::try_from(s).map_err(|_| "status must be an HTTP status".to_owned()))
            .transpose()?;
        Ok(Self {
            tenant: field(&p.tenant),
            subject: field(&p.subject),
            patient: number("patient", &p.patient)?,
            path: field(&p.path),
            outcome,
            status,
            since: time("since", &p.since)?,
            until: time("until", &p.until)?,
            after_seq: number("after_seq", &p.after_seq)?,
        })
    }

    /// The part of the filter the audit reader applies itself (it skips
    /// whole segments by seq and time).
    pub fn audit_query(&self, limit: Option<usize>) -> odgw_audit::Query {
        odgw_audit::Query {
            tenant: self.tenant.clone(),
            subject: self.subject.clone(),
            since: self.since,
            until: self.until,
            after_seq: self.after_seq,
            limit,
        }
    }

    /// Whether the audit reader's query is the whole filter, so its
    /// `limit` may be used (the other filters are applied afterwards).
    pub fn reader_filters_all(&self) -> bool {
        self.patient.is_none()
            && self.path.is_none()
            && self.outcome.is_none()
            && self.status.is_none()
    }

    /// The filters the audit reader does not apply.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if let Some(prefix) = &self.path {
            if !r
                .path
                .as_deref()
                .is_some_and(|p| p.starts_with(prefix.as_str()))
            {
                return false;
            }
        }
        if let Some(outcome) = &self.outcome {
            if r.outcome.as_deref() != Some(outcome.as_str()) {
                return false;
            }
        }
        if self.status.is_some() && r.status != self.status {
            return false;
        }
        if let Some(patient) = self.patient {
            if !touches_patient(r, patient) {
                return false;
            }
        }
        true
    }

    /// The filter as a query string (without `after_seq`), for links that
    /// keep it: the next page, exports, the chart.
    pub fn query_string(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        let fmt = |t: &OffsetDateTime| odgw_audit::format_ts(*t);
        for (name, value) in [
            ("tenant", self.tenant.clone()),
            ("subject", self.subject.clone()),
            ("patient", self.patient.map(|p| p.to_string())),
            ("path", self.path.clone()),
            ("outcome", self.outcome.clone()),
            ("status", self.status.map(|s| s.to_string())),
            ("since", self.since.as_ref().map(fmt)),
            ("until", self.until.as_ref().map(fmt)),
        ] {
            if let Some(value) = value {
                q.append_pair(name, &value);
            }
        }
        q.finish()
    }
}

/// Whether a record is an access to patient `patnum` through Open Dental:
/// a data-plane record (not an admin one, such as a reviewer's own visit to
/// `/console/patients?patnum=…`) with a path segment `patients/{patnum}` or
/// a `PatNum={patnum}` query parameter (any case, as Open Dental binds
/// parameter names).
pub fn touches_patient(r: &AuditRecord, patnum: u64) -> bool {
    if r.kind == RecordKind::Admin {
        return false;
    }
    let wanted = patnum.to_string();
    let in_path = r.path.as_deref().is_some_and(|path| {
        let segments: Vec<&str> = path.split('/').collect();
        segments
            .windows(2)
            .any(|w| w[0].eq_ignore_ascii_case("patients") && w[1] == wanted)
    });
    in_path
        || r.query.as_deref().is_some_and(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .any(|(k, v)| k.eq_ignore_ascii_case("PatNum") && v.trim() == wanted)
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use odgw_audit::RecordDraft;

    use super::*;

    fn record(path: &str, query: Option<&str>) -> AuditRecord {
        let mut d = RecordDraft::new(RecordKind::Request);
        d.path = Some(path.to_owned());
        d.query = query.map(str::to_owned);
        d.outcome = Some("forwarded".into());
        d.status = Some(200);
        AuditRecord::from_draft(d, 1, "2026-12-04T00:00:00.000Z".into(), "0".repeat(64))
    }

    #[test]
    fn patients_are_found_in_paths_and_queries_only_as_whole_numbers() {
        assert!(touches_patient(&record("/api/v1/patients/11", None), 11));
        assert!(touches_patient(
            &record("/api/v1/patients/11/notes", None),
            11
        ));
        assert!(!touches_patient(&record("/api/v1/patients/111", None), 11));
        assert!(touches_patient(
            &record("/api/v1/appointments", Some("PatNum=11&x=1")),
            11
        ));
        assert!(touches_patient(
            &record("/api/v1/procedurelogs", Some("patnum=11")),
            11
        ));
        assert!(!touches_patient(
            &record("/api/v1/procedurelogs", Some("PatNum=110")),
            11
        ));
        let mut own_view = record("/console/patients", Some("patnum=11"));
        own_view.kind = RecordKind::Admin;
        assert!(
            !touches_patient(&own_view, 11),
            "a reviewer's visit is no patient access"
        );
    }

    #[test]
    fn the_form_is_validated_field_by_field() {
        let p = |json: serde_json::Value| FilterParams::deserialize(json).unwrap();
        let f = Filter::parse(p(serde_json::json!({"tenant": " a ", "status": "403", "outcome": "denied", "path": "/api/v1/pat"}))).unwrap();
        assert_eq!(f.tenant.as_deref(), Some("a"));
        assert!(!f.reader_filters_all());
        let mut r = record("/api/v1/patients/1", None);
        assert!(!f.matches(&r));
        r.status = Some(403);
        r.outcome = Some("denied".into());
        assert!(f.matches(&r));
        assert!(Filter::parse(p(serde_json::json!({"outcome": "<b>"}))).is_err());
        assert!(Filter::parse(p(serde_json::json!({"since": "yesterday"})))
            .unwrap_err()
            .contains("since"));
        assert!(Filter::parse(p(serde_json::json!({"status": "99999"}))).is_err());
        assert_eq!(
            Filter::parse(p(serde_json::json!({"tenant": "a&b", "status": "200"})))
                .unwrap()
                .query_string(),
            "tenant=a%26b&status=200"
        );
    }
}
