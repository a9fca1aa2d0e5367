//! Server-rendered pages. Every value that comes from a record, a filter or
//! an identity provider passes through [`esc`] before it reaches HTML: a
//! path or subject holding markup is shown as text, never run.

use std::fmt::Write as _;

use odgw_audit::{AuditRecord, VerifyReport};

use crate::filter::{Filter, OUTCOMES};

/// Escapes text for HTML element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn opt(value: Option<&str>) -> String {
    value.map(esc).unwrap_or_default()
}

/// Who is looking, for the page header and the logout form.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub subject: &'a str,
    pub csrf: &'a str,
}

/// The frame of every page. `viewer` is `None` on pages shown before
/// sign-in; `refresh` adds a meta refresh to that same-site URL.
pub fn page(title: &str, viewer: Option<Viewer<'_>>, refresh: Option<&str>, body: &str) -> String {
    let refresh = refresh
        .map(|url| {
            format!(
                r#"<meta http-equiv="refresh" content="0;url={}">"#,
                esc(url)
            )
        })
        .unwrap_or_default();
    let nav = match viewer {
        Some(v) => format!(
            r#"<nav><a id="nav-search" href="/console/">Search</a> <a id="nav-chain" href="/console/chain">Chain status</a> <a id="nav-patients" href="/console/patients">Patient access report</a>
<span class="who">Signed in as <b id="reviewer">{}</b></span>
<form id="logout" method="post" action="/console/logout"><input type="hidden" name="csrf" value="{}"><button id="logout-submit" type="submit">Sign out</button></form></nav>"#,
            esc(v.subject),
            esc(v.csrf)
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · odgw audit</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{refresh}
<link rel="stylesheet" href="/console/style.css"></head>
<body><header><h1>odgw audit review</h1>{nav}</header>
<main><h2>{title}</h2>
{body}
</main></body></html>
"#,
        title = esc(title),
    )
}

/// A short message page (errors, sign-in steps).
pub fn message(
    title: &str,
    viewer: Option<Viewer<'_>>,
    text: &str,
    link: Option<(&str, &str, &str)>,
) -> String {
    let link = link
        .map(|(id, href, label)| {
            format!(
                r#"<p><a id="{}" href="{}">{}</a></p>"#,
                esc(id),
                esc(href),
                esc(label)
            )
        })
        .unwrap_or_default();
    page(
        title,
        viewer,
        None,
        &format!(r#"<p class="message">{}</p>{link}"#, esc(text)),
    )
}

fn input(name: &str, label: &str, value: &str, kind: &str, hint: &str) -> String {
    format!(
        r#"<label>{} <input type="{kind}" name="{name}" value="{}" placeholder="{}"></label>"#,
        esc(label),
        esc(value),
        esc(hint)
    )
}

fn time_value(t: Option<time::OffsetDateTime>) -> String {
    t.map(odgw_audit::format_ts).unwrap_or_default()
}

/// The search form, pre-filled with `f`.
pub fn search_form(f: &Filter) -> String {
    let mut outcome =
        String::from(r#"<label>Outcome <select name="outcome"><option value="">any</option>"#);
    for o in OUTCOMES {
        let selected = if f.outcome.as_deref() == Some(o) {
            " selected"
        } else {
            ""
        };
        let _ = write!(outcome, r#"<option value="{o}"{selected}>{o}</option>"#);
    }
    outcome.push_str("</select></label>");
    format!(
        r#"<form id="search" method="get" action="/console/">
{}{}{}{}{}{}{}{}
<button id="search-submit" type="submit">Search</button></form>"#,
        input(
            "tenant",
            "Tenant",
            f.tenant.as_deref().unwrap_or(""),
            "text",
            "office-2"
        ),
        input(
            "subject",
            "Subject",
            f.subject.as_deref().unwrap_or(""),
            "text",
            "svc@example.com"
        ),
        input(
            "patient",
            "Patient (PatNum)",
            &f.patient.map(|p| p.to_string()).unwrap_or_default(),
            "text",
            "11"
        ),
        input(
            "path",
            "Path prefix",
            f.path.as_deref().unwrap_or(""),
            "text",
            "/api/v1/patients"
        ),
        outcome,
        input(
            "status",
            "Status",
            &f.status.map(|s| s.to_string()).unwrap_or_default(),
            "text",
            "403"
        ),
        input(
            "since",
            "Since",
            &time_value(f.since),
            "text",
            "2026-11-01T00:00:00Z"
        ),
        input(
            "until",
            "Until",
            &time_value(f.until),
            "text",
            "2026-12-01T00:00:00Z"
        ),
    )
}

fn cell(class: &str, value: Option<&str>) -> String {
    format!(r#"<td class="{class}">{}</td>"#, opt(value))
}

fn number(value: Option<u64>) -> Option<String> {
    value.map(|v| v.to_string())
}

/// The results table, oldest first.
pub fn results(records: &[AuditRecord]) -> String {
    if records.is_empty() {
        return r#"<p id="no-results">No record matches.</p>"#.to_owned();
    }
    let mut out = String::from(
        r#"<table id="results"><thead><tr><th>seq</th><th>time</th><th>kind</th><th>tenant</th><th>subject</th><th>method</th><th>path</th><th>query</th><th>status</th><th>outcome</th><th>action</th></tr></thead><tbody>"#,
    );
    for r in records {
        let _ = write!(
            out,
            r#"<tr class="record" data-seq="{seq}"><td><a class="seq" href="/console/records/{seq}">{seq}</a></td>{}{}{}{}{}{}{}{}{}{}</tr>"#,
            cell("ts", Some(&r.ts)),
            cell("kind", Some(r.kind.as_str())),
            cell("tenant", r.tenant.as_deref()),
            cell("subject", r.subject.as_deref()),
            cell("method", r.method.as_deref()),
            cell("path", r.path.as_deref()),
            cell("query", r.query.as_deref()),
            cell("status", number(r.status.map(u64::from)).as_deref()),
            cell("outcome", r.outcome.as_deref()),
            cell("action", r.action.as_deref()),
            seq = r.seq,
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The search page: form, export links, chart, results and the next page.
pub fn search_page(
    viewer: Viewer<'_>,
    f: &Filter,
    records: &[AuditRecord],
    next_after: Option<u64>,
) -> String {
    let qs = f.query_string();
    let join = |base: &str, extra: &str| {
        let mut url = base.to_owned();
        let parts: Vec<&str> = [qs.as_str(), extra]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        if !parts.is_empty() {
            url.push('?');
            url.push_str(&parts.join("&"));
        }
        url
    };
    let next = next_after
        .map(|seq| {
            format!(
                r#"<p><a id="next-page" href="{}">Next page</a></p>"#,
                esc(&join("/console/", &format!("after_seq={seq}")))
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"{form}
<p class="exports">Export this filter: <a id="export-csv" href="{csv}">CSV</a> <a id="export-jsonl" href="{jsonl}">JSON Lines</a></p>
<figure><img id="chart" src="{chart}" alt="Requests per hour by outcome" width="960" height="260"><figcaption>Requests per hour by outcome</figcaption></figure>
{results}
{next}"#,
        form = search_form(f),
        csv = esc(&join("/console/export.csv", "")),
        jsonl = esc(&join("/console/export.jsonl", "")),
        chart = esc(&join("/console/chart.svg", "")),
        results = results(records),
    );
    page("Search", Some(viewer), None, &body)
}

/// One record, every field.
pub fn record_page(viewer: Viewer<'_>, r: &AuditRecord) -> String {
    let value = serde_json::to_value(r).unwrap_or_default();
    let mut body = String::from(r#"<dl id="record">"#);
    if let Some(fields) = value.as_object() {
        for (name, v) in fields {
            let text = match v {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(
                body,
                r#"<dt>{n}</dt><dd class="field-{n}">{}</dd>"#,
                esc(&text),
                n = esc(name)
            );
        }
    }
    body.push_str("</dl>");
    if let Some(patnum) = patient_of(r) {
        let _ = write!(
            body,
            r#"<p><a id="patient-link" href="/console/patients?patnum={patnum}">Every access to patient {patnum}</a></p>"#
        );
    }
    page(&format!("Record {}", r.seq), Some(viewer), None, &body)
}

fn patient_of(r: &AuditRecord) -> Option<u64> {
    let path = r.path.as_deref()?;
    let mut segments = path.split('/');
    segments.find(|s| s.eq_ignore_ascii_case("patients"))?;
    segments.next()?.parse().ok()
}

/// The chain check over the whole trail.
pub fn chain_page(viewer: Viewer<'_>, report: &VerifyReport) -> String {
    let first_bad = report
        .first_bad_seq
        .map(|s| s.to_string())
        .unwrap_or_default();
    let text = if report.ok {
        format!("The chain is intact: {} records verified.", report.records)
    } else {
        format!(
            "The chain is broken: the first bad record is seq {}.",
            if first_bad.is_empty() {
                "?"
            } else {
                &first_bad
            }
        )
    };
    let detail = if report.ok || first_bad.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p><a id="first-bad" href="/console/records/{first_bad}">Show record {first_bad}</a></p>"#
        )
    };
    let body = format!(
        r#"<p id="chain-status" class="{class}" data-ok="{ok}" data-first-bad-seq="{first_bad}">{}</p>{detail}"#,
        esc(&text),
        class = if report.ok { "ok" } else { "bad" },
        ok = report.ok,
    );
    page("Chain status", Some(viewer), None, &body)
}

/// Every access to one patient: who, when, what, outcome.
pub fn patient_page(
    viewer: Viewer<'_>,
    patnum: Option<u64>,
    records: &[AuditRecord],
    truncated: bool,
) -> String {
    let form = format!(
        r#"<form id="patient-search" method="get" action="/console/patients"><label>PatNum <input type="text" name="patnum" value="{}"></label> <button id="patient-submit" type="submit">Report</button></form>"#,
        patnum.map(|p| p.to_string()).unwrap_or_default()
    );
    let Some(patnum) = patnum else {
        return page("Patient access report", Some(viewer), None, &form);
    };
    let mut table = String::from(
        r#"<table id="patient-report"><thead><tr><th>time</th><th>who</th><th>tenant</th><th>what</th><th>outcome</th><th>status</th><th>record</th></tr></thead><tbody>"#,
    );
    for r in records {
        let what = format!(
            "{} {}{}",
            r.method.as_deref().unwrap_or(""),
            r.path.as_deref().unwrap_or(""),
            r.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        );
        let _ = write!(
            table,
            r#"<tr class="access">{}{}{}{}{}{}<td><a href="/console/records/{seq}">{seq}</a></td></tr>"#,
            cell("ts", Some(&r.ts)),
            cell("subject", r.subject.as_deref()),
            cell("tenant", r.tenant.as_deref()),
            cell("what", Some(&what)),
            cell("outcome", r.outcome.as_deref()),
            cell("status", number(r.status.map(u64::from)).as_deref()),
            seq = r.seq,
        );
    }
    table.push_str("</tbody></table>");
    let count = format!(
        r#"<p id="patient-count">{} accesses to patient {patnum}{}.</p>"#,
        records.len(),
        if truncated {
            " (the newest are not shown; narrow the search)"
        } else {
            ""
        }
    );
    page(
        "Patient access report",
        Some(viewer),
        None,
        &format!("{form}{count}{table}"),
    )
}

/// The console's stylesheet (served from `/console/style.css`: the CSP
/// allows no inline style).
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330}\
header{background:#1d3557;color:#fff;padding:.5rem 1rem}header h1{font-size:1.1rem;margin:0 0 .3rem}\
nav a{color:#fff;margin-right:1rem}nav form{display:inline}.who{margin-right:1rem}\
main{padding:1rem}form#search label,form#patient-search label{display:inline-block;margin:0 .8rem .5rem 0}\
table{border-collapse:collapse;font-size:.85rem;width:100%}td,th{border:1px solid #ccd;padding:.2rem .4rem;text-align:left;vertical-align:top}\
td.path,td.query,td.subject{word-break:break-all}.bad{color:#a00;font-weight:bold}.ok{color:#060;font-weight:bold}\
dl#record{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dd{margin:0;word-break:break-all}\
img#chart{max-width:100%;height:auto;border:1px solid #ccd}";
