//! The audit trail through the real gateway (SPEC §8, admin routes of §6).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use odgw_mock::Fault;
use serde_json::{json, Value};

use crate::support::*;

fn requests_of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["kind"] == kind).collect()
}

fn by_request_id<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["kind"] == "request" && l["request_id"] == id)
        .unwrap_or_else(|| panic!("no request record for {id}"))
}

#[tokio::test]
async fn every_request_of_every_outcome_leaves_exactly_one_record() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({"sub": "alice"}));
    // Reset twice: the GET and its one retry both fail → 502.
    gw.mock.mock.inject_matching(
        odgw_mock::FaultMatch::path("/api/v1/patients/13"),
        Fault::Reset,
    );
    gw.mock.mock.inject_matching(
        odgw_mock::FaultMatch::path("/api/v1/patients/13"),
        Fault::Reset,
    );

    let send = |id: &'static str, method: Method, path: &'static str, token: Option<String>| {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(gw.url(path))
            .header("x-request-id", id);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = if method == Method::POST {
            Bytes::from_static(br#"{"LName":"Audit","FName":"Ann"}"#)
        } else {
            Bytes::new()
        };
        gw.send(
            b.header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap(),
        )
    };
    // Warm the cache so one request below is a hit.
    gw.get("/api/v1/preferences?PrefName=PracticeTitle", Some(&token))
        .await;
    let before = audit_lines(&gw.root.join("audit")).len();

    let cases = vec![
        (
            "ok",
            Method::GET,
            "/api/v1/patients/11?Limit=1",
            Some(token.clone()),
            200,
            "forwarded",
            None,
        ),
        (
            "hit",
            Method::GET,
            "/api/v1/preferences?PrefName=PracticeTitle",
            Some(token.clone()),
            200,
            "cache_hit",
            None,
        ),
        (
            "write",
            Method::POST,
            "/api/v1/patients",
            Some(token.clone()),
            201,
            "forwarded",
            None,
        ),
        (
            "nofound",
            Method::GET,
            "/api/v1/patients/424242",
            Some(token.clone()),
            404,
            "forwarded",
            None,
        ),
        (
            "notoken",
            Method::GET,
            "/api/v1/patients/11",
            None,
            401,
            "denied",
            Some("missing_token"),
        ),
        (
            "badpath",
            Method::GET,
            "/api/v1/patients/%2e%2e",
            Some(token.clone()),
            400,
            "denied",
            Some("bad_path"),
        ),
        (
            "outside",
            Method::GET,
            "/other",
            Some(token.clone()),
            404,
            "denied",
            Some("not_found"),
        ),
        (
            "upstream",
            Method::GET,
            "/api/v1/patients/13",
            Some(token.clone()),
            502,
            "upstream_error",
            Some("upstream_unavailable"),
        ),
    ];
    let mut calls = Vec::new();
    for (id, method, path, token, ..) in &cases {
        calls.push(send(id, method.clone(), path, token.clone()));
    }
    let answers = futures_util::future::join_all(calls).await;
    for (answer, case) in answers.iter().zip(&cases) {
        assert_eq!(answer.status.as_u16(), case.4, "{}: {answer:?}", case.0);
    }
    let lines = audit_lines(&gw.root.join("audit"));
    let new = &lines[before..];
    let requests = requests_of_kind(new, "request");
    assert_eq!(
        requests.len(),
        cases.len(),
        "exactly one request record per request"
    );
    assert_eq!(
        requests_of_kind(new, "intent").len(),
        1,
        "one intent for the one write"
    );
    for (id, method, path, _, status, outcome, code) in &cases {
        let r = by_request_id(new, id);
        assert_eq!(r["method"], method.as_str());
        let (p, q) = path
            .split_once('?')
            .map_or((*path, None), |(p, q)| (p, Some(q)));
        assert_eq!(r["path"], p, "{id}");
        assert_eq!(r["query"], q.map_or(Value::Null, Value::from), "{id}");
        assert_eq!(r["status"], *status, "{id}");
        assert_eq!(r["outcome"], *outcome, "{id}");
        assert_eq!(
            r["error_code"],
            code.map_or(Value::Null, Value::from),
            "{id}"
        );
        assert_eq!(r["client_ip"], "127.0.0.1");
        assert!(r["duration_ms"].is_u64());
        let called = matches!(*id, "ok" | "write" | "nofound");
        assert_eq!(
            r["upstream_status"].is_null(),
            !called,
            "{id}: upstream_status {:?}",
            r["upstream_status"]
        );
        let known = !matches!(*id, "notoken" | "badpath" | "outside");
        assert_eq!(r["subject"] == "alice", known, "{id}");
        assert_eq!(r["tenant"] == "a", known, "{id}");
        assert_eq!(r["issuer"] == HS_ISSUER, known, "{id}");
        assert!(r["action"].is_null() && r["target"].is_null());
        let fields: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 21, "every field, always");
    }
    // The intent came before the upstream call and before the request record.
    let intent = new.iter().position(|l| l["kind"] == "intent").unwrap();
    let write = new
        .iter()
        .position(|l| l["kind"] == "request" && l["request_id"] == "write")
        .unwrap();
    assert!(intent < write);
    assert!(new[intent]["status"].is_null() && new[intent]["upstream_status"].is_null());

    // Nothing secret in the segments; the chain verifies online.
    for needle in [token.as_str(), KEY_A, DEV_KEY, "Audit"] {
        assert_eq!(
            dir_contains(&gw.root.join("audit"), needle.as_bytes()),
            None,
            "{needle} in audit"
        );
    }
    let report = gw
        .admin(Method::GET, "/admin/v1/audit/verify", None)
        .await
        .json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], lines.len() as u64);
    // Batch size and write latency are derivable from the metrics.
    let text = gw.metrics().await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing: {text}"))
    };
    assert_eq!(value("odgw_audit_records_total") as usize, lines.len());
    let batches = value("odgw_audit_batches_total");
    assert!(batches >= 1.0 && batches <= lines.len() as f64);
    assert!(value("odgw_audit_write_seconds_total") > 0.0);
    assert!(report["first_bad_seq"].is_null());
}

#[tokio::test]
async fn rate_limited_requests_are_recorded_too() {
    let opts = Options::default()
        .env("ODGW_LIMITS__SUBJECT_RATE", "1/min")
        .env("ODGW_LIMITS__SUBJECT_BURST", "1");
    let gw = TestGateway::start_with(opts).await;
    let token = gw.token(json!({"sub": "eager"}));
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    let refused = gw.get("/api/v1/patients/11", Some(&token)).await;
    refused.assert_problem(429, "rate_limited");
    let lines = audit_lines(&gw.root.join("audit"));
    let r = by_request_id(&lines, refused.header("x-request-id").unwrap());
    assert_eq!(r["outcome"], "rate_limited");
    assert_eq!(r["error_code"], "rate_limited");
    assert_eq!(r["status"], 429);
    assert_eq!(r["subject"], "eager");
    assert!(r["upstream_status"].is_null());
}

#[tokio::test]
async fn admin_actions_are_recorded() {
    let gw = TestGateway::start().await;
    gw.admin(Method::POST, "/admin/v1/tenants/b/disable", None)
        .await;
    gw.admin(Method::DELETE, "/admin/v1/cache?tenant=a", None)
        .await;
    gw.admin(Method::DELETE, "/admin/v1/tenants/b", None).await;
    let lines = audit_lines(&gw.root.join("audit"));
    let admin: Vec<(String, String)> = requests_of_kind(&lines, "admin")
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        admin,
        vec![
            ("tenant.put".into(), "a".into()),
            ("tenant.put".into(), "b".into()),
            ("tenant.disable".into(), "b".into()),
            ("cache.purge".into(), "a".into()),
            ("tenant.delete".into(), "b".into()),
        ]
    );
    let put = requests_of_kind(&lines, "admin")[0];
    assert_eq!(put["method"], "PUT");
    assert_eq!(put["path"], "/admin/v1/tenants/a");
    assert_eq!(put["status"], 201);
    assert_eq!(dir_contains(&gw.root.join("audit"), KEY_A.as_bytes()), None);
}

#[tokio::test]
async fn an_unwritable_audit_log_fails_closed_and_recovers_by_itself() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    let readyz = || async {
        gw.send(
            Request::get(format!("http://{}/readyz", gw.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await
    };
    assert_eq!(readyz().await.status, 200);

    // The disk refuses writes (tests run as root, so a read-only directory
    // would not stop them: the writer's failure seam stands in for it).
    gw.audit.fail_writes(true);
    // A write never reaches Open Dental: its intent cannot be made durable.
    let req = Request::post(gw.url("/api/v1/patients"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"LName":"A","FName":"B"}"#,
        )))
        .unwrap();
    gw.send(req).await.assert_problem(503, "audit_unavailable");
    assert!(gw.mock.mock.requests().is_empty());
    // Once known unhealthy, reads are refused before Open Dental is called too.
    let resp = gw.get("/api/v1/patients/11", Some(&token)).await;
    resp.assert_problem(503, "audit_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert!(
        gw.mock.mock.requests().is_empty(),
        "Open Dental received nothing"
    );
    let ready = readyz().await;
    assert_eq!(ready.status, 503);
    assert!(String::from_utf8_lossy(&ready.body).contains("audit"));

    // The disk is back: service resumes without a restart.
    gw.audit.fail_writes(false);
    let mut recovered = false;
    for _ in 0..50 {
        if readyz().await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "/readyz recovered");
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    let report = gw
        .admin(Method::GET, "/admin/v1/audit/verify", None)
        .await
        .json();
    assert_eq!(
        report["ok"], true,
        "no gap in seq after the failure: {report}"
    );
}

#[tokio::test]
async fn query_filters_and_csv_export_return_exactly_the_matches() {
    let gw = TestGateway::start().await;
    let alice = gw.token(json!({"sub": "alice", "tenant": "a"}));
    let bob = gw.token(json!({"sub": "bob", "tenant": "b"}));
    for _ in 0..3 {
        gw.get("/api/v1/patients/11", Some(&alice)).await;
    }
    for _ in 0..2 {
        gw.get("/api/v1/patients/13", Some(&bob)).await;
    }
    let ndjson = |resp: Resp| -> Vec<Value> {
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.header("content-type"), Some("application/x-ndjson"));
        String::from_utf8_lossy(&resp.body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = ndjson(gw.admin(Method::GET, "/admin/v1/audit", None).await);
    assert_eq!(all.len(), 7, "2 tenant puts + 5 requests");
    assert!(
        all.windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()),
        "oldest first"
    );

    let a = ndjson(
        gw.admin(Method::GET, "/admin/v1/audit?tenant=a", None)
            .await,
    );
    assert_eq!(a.len(), 3);
    assert!(a.iter().all(|r| r["tenant"] == "a"));
    let bob_only = ndjson(
        gw.admin(Method::GET, "/admin/v1/audit?subject=bob", None)
            .await,
    );
    assert_eq!(bob_only.len(), 2);
    let page = ndjson(
        gw.admin(Method::GET, "/admin/v1/audit?after_seq=3&limit=2", None)
            .await,
    );
    assert_eq!(
        page.iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    let since = all[4]["ts"].as_str().unwrap();
    let recent = ndjson(
        gw.admin(Method::GET, &format!("/admin/v1/audit?since={since}"), None)
            .await,
    );
    assert!(recent.len() >= 3 && recent.iter().all(|r| r["ts"].as_str().unwrap() >= since));
    let none = ndjson(
        gw.admin(
            Method::GET,
            "/admin/v1/audit?until=2000-01-01T00:00:00Z",
            None,
        )
        .await,
    );
    assert!(none.is_empty());
    gw.admin(Method::GET, "/admin/v1/audit?since=yesterday", None)
        .await
        .assert_problem(400, "bad_request");

    // The CLI's CSV export of the same filter: a header and one row per record.
    let out = cli_query(&gw, &["--tenant", "b", "--format", "csv"]).await;
    let csv = String::from_utf8(out).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("seq,ts,kind,request_id,tenant,subject,issuer"));
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains(",request,") && r.contains(",b,bob,")),
        "{csv}"
    );
}

#[tokio::test]
async fn offline_verify_names_the_first_bad_record_of_a_tampered_copy() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    for _ in 0..4 {
        gw.get("/api/v1/patients/11", Some(&token)).await;
    }
    let (root, _keep) = gw.stop().await;
    let segments: Vec<_> = std::fs::read_dir(root.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(segments.len(), 1);
    let original = std::fs::read_to_string(&segments[0]).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), 6);

    let verify = |content: String| -> Value {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(copy.path().join(segments[0].file_name().unwrap()), content).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_odgw"))
            .args(["audit", "verify", "--dir"])
            .arg(copy.path())
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.success(), report["ok"] == true);
        report
    };
    assert_eq!(verify(original.clone())["ok"], true);
    let join = |ls: Vec<&str>| ls.join("\n") + "\n";
    // Flip one character in record 4.
    let flipped = original.replacen("\"status\":200", "\"status\":201", 2);
    let first_changed = lines
        .iter()
        .position(|l| l.contains("\"status\":200"))
        .unwrap();
    assert_eq!(verify(flipped)["first_bad_seq"], first_changed as u64 + 1);
    // Delete record 3.
    let mut deleted = lines.clone();
    deleted.remove(2);
    assert_eq!(verify(join(deleted))["first_bad_seq"], 3);
    // Swap records 4 and 5.
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    assert_eq!(verify(join(swapped))["first_bad_seq"], 4);
    // Insert a forged copy of record 2 after it.
    let mut inserted = lines.clone();
    inserted.insert(2, lines[1]);
    assert_eq!(verify(join(inserted))["first_bad_seq"], 3);
}

/// A gateway whose Open Dental takes 400 ms over its next answer, long
/// enough for a client to hang up while its request is inside.
async fn gateway_with_slow_open_dental() -> TestGateway {
    let gw = TestGateway::start().await;
    gw.mock
        .mock
        .inject(Fault::Delay(Duration::from_millis(400)));
    gw
}

/// Waits (bounded) until Open Dental has been asked something, so a hang-up
/// that follows happens with the request inside the gateway.
async fn until_open_dental_is_called(gw: &TestGateway) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gw.mock.mock.requests().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Open Dental never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `request` record with this request id, waited for (bounded): a
/// cut-short request's record is appended after its client has gone.
async fn request_record_of(gw: &TestGateway, request_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = audit_lines(&gw.root.join("audit"));
        if let Some(found) = lines
            .iter()
            .find(|l| l["kind"] == "request" && l["request_id"] == request_id)
        {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record for request {request_id}, whose client hung up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that hangs up while its request is inside the gateway (here:
/// while Open Dental takes its time) still leaves that request's record,
/// with `status` null (nothing was sent) and outcome `client_closed`. The
/// data was fetched from Open Dental on the caller's behalf either way.
#[tokio::test]
async fn a_request_whose_client_hangs_up_is_still_recorded() {
    use tokio::io::AsyncWriteExt;
    let gw = gateway_with_slow_open_dental().await;
    let token = gw.token(json!({}));
    let request = format!(
        "GET /api/v1/patients/11?x=1 HTTP/1.1\r\nhost: odgw\r\n\
         authorization: Bearer {token}\r\nx-request-id: gone-1\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(gw.data).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    until_open_dental_is_called(&gw).await;
    drop(stream);

    let record = request_record_of(&gw, "gone-1").await;
    assert_eq!(record["outcome"], "client_closed", "{record}");
    assert_eq!(record["status"], Value::Null, "{record}");
    assert_eq!(record["upstream_status"], Value::Null, "{record}");
    assert_eq!(record["error_code"], Value::Null, "{record}");
    assert_eq!(record["tenant"], "a", "{record}");
    assert_eq!(record["subject"], "alice", "{record}");
    assert_eq!(record["method"], "GET", "{record}");
    assert_eq!(record["path"], "/api/v1/patients/11", "{record}");
    assert_eq!(record["query"], "x=1", "{record}");
    assert!(record["duration_ms"].is_u64(), "{record}");
    let verify = gw.admin(Method::GET, "/admin/v1/audit/verify", None).await;
    assert_eq!(verify.json()["ok"], true, "{verify:?}");
}

/// The same over HTTP/2: the client cancels its stream (RST_STREAM) while
/// Open Dental takes its time; the connection stays up.
#[tokio::test]
async fn a_cancelled_http2_stream_is_still_recorded() {
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let gw = gateway_with_slow_open_dental().await;
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(true);
    let h2: Client<_, Full<Bytes>> = builder.build_http();
    let request = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {}", gw.token(json!({}))))
        .header("x-request-id", "gone-h2")
        .body(Full::default())
        .unwrap();
    let in_flight = tokio::spawn(async move { h2.request(request).await });
    until_open_dental_is_called(&gw).await;
    in_flight.abort();

    let record = request_record_of(&gw, "gone-h2").await;
    assert_eq!(record["outcome"], "client_closed", "{record}");
    assert_eq!(record["status"], Value::Null, "{record}");
    assert_eq!(record["subject"], "alice", "{record}");
}
