//! Auth, throttling, faults, the request log and the server lifecycle, over
//! real HTTP on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use http::{header, Method, StatusCode};
use odgw_mock::{
    Fault, FaultMatch, KeyPair, MockConfig, MockUpstream, ThrottleMode, INVALID_KEYS,
    TEST_CUSTOMER_KEY, TEST_DEVELOPER_KEY,
};
use serde_json::json;
use support::{test_auth, Harness, BOUND};

#[tokio::test]
async fn auth_accepts_only_the_exact_odfhir_pair() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let path = "/api/v1/preferences?PrefName=ProgramVersion";
    let good = test_auth();
    let wrong_cust = format!("ODFHIR {TEST_DEVELOPER_KEY}/WrongCustomerKey1");
    let swapped = format!("ODFHIR {TEST_CUSTOMER_KEY}/{TEST_DEVELOPER_KEY}");
    let basic = "Basic TkZGNmkwS3JYcnhEa1pIdDpWemttWkVhVVdPam5RWDJ6";
    let bearer = format!("Bearer {TEST_DEVELOPER_KEY}/{TEST_CUSTOMER_KEY}");
    let lower = format!("odfhir {TEST_DEVELOPER_KEY}/{TEST_CUSTOMER_KEY}");
    let cases: [(&str, &str, StatusCode); 7] = [
        ("good", &good, StatusCode::OK),
        ("wrong customer key", &wrong_cust, StatusCode::UNAUTHORIZED),
        ("swapped keys", &swapped, StatusCode::UNAUTHORIZED),
        ("basic", basic, StatusCode::UNAUTHORIZED),
        ("bearer", &bearer, StatusCode::UNAUTHORIZED),
        ("lowercase scheme", &lower, StatusCode::UNAUTHORIZED),
        ("garbled", "ODFHIR", StatusCode::UNAUTHORIZED),
    ];
    for (what, auth, status) in cases {
        let r = h
            .send(Method::GET, path, &[("authorization", auth)], "")
            .await
            .unwrap();
        assert_eq!(r.status, status, "{what}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(r.json(), json!(INVALID_KEYS), "{what}");
        }
    }
    let missing = h.send(Method::GET, path, &[], "").await.unwrap();
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);

    let log = h.mock().requests();
    assert_eq!(
        log.len(),
        cases.len() + 1,
        "refused requests are logged too"
    );
    let statuses: Vec<_> = log.iter().map(|r| r.response_status).collect();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);
    assert_eq!(log[0].customer_key.as_deref(), Some(TEST_CUSTOMER_KEY));
    assert_eq!(log[1].customer_key.as_deref(), Some("WrongCustomerKey1"));
    assert_eq!(log[3].customer_key, None, "Basic carries no customer key");
    assert_eq!(log[7].header("authorization"), None);

    // Keys can be added and withdrawn at run time.
    h.mock()
        .add_key(KeyPair::new(TEST_DEVELOPER_KEY, "WrongCustomerKey1"));
    let now_ok = h
        .send(Method::GET, path, &[("authorization", &wrong_cust)], "")
        .await
        .unwrap();
    assert_eq!(now_ok.status, StatusCode::OK);
    assert!(h.mock().remove_key("WrongCustomerKey1"));
    let again = h
        .send(Method::GET, path, &[("authorization", &wrong_cust)], "")
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn missing_auth_status_is_configurable() {
    let h = Harness::start(MockConfig {
        missing_auth_status: 400,
        ..MockConfig::test_defaults()
    })
    .await;
    let r = h
        .send(Method::GET, "/api/v1/providers", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let bad = h
        .send(
            Method::GET,
            "/api/v1/providers",
            &[("authorization", "Bearer x")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        bad.status,
        StatusCode::UNAUTHORIZED,
        "a bad header is still 401"
    );
}

#[tokio::test]
async fn paths_outside_the_api_and_unknown_resources_are_404() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    for path in [
        "/",
        "/api/v2/patients",
        "/api/v1",
        "/patients/11",
        "/api/v1/nosuch",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    // Known path, unsupported method.
    assert_eq!(
        h.send_json(Method::DELETE, "/api/v1/patients/11", "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Auth is checked before the resource is looked up.
    let r = h
        .send(
            Method::GET,
            "/api/v1/nosuch",
            &[("authorization", "Bearer x")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn json_content_type_can_be_required() {
    let h = Harness::start(MockConfig {
        require_json_content_type: true,
        ..MockConfig::test_defaults()
    })
    .await;
    let auth = test_auth();
    let without = h
        .send(
            Method::GET,
            "/api/v1/providers",
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(without.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);

    let lax = Harness::start(MockConfig::test_defaults()).await;
    let r = lax
        .send(
            Method::GET,
            "/api/v1/providers",
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "not enforced by default");
}

#[tokio::test]
async fn reject_throttle_is_per_customer_key() {
    let h = Harness::start(MockConfig {
        // Long enough that the second call surely falls inside it.
        throttle: ThrottleMode::Reject {
            interval: Duration::from_secs(30),
            retry_after_secs: 5,
        },
        ..MockConfig::test_defaults()
    })
    .await;
    let other = KeyPair::new(TEST_DEVELOPER_KEY, "SecondOfficeKey1");
    h.mock().add_key(other.clone());

    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);
    let second = h.get("/api/v1/providers").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers[header::RETRY_AFTER], "5");

    // Same developer key, other customer key: its own budget.
    let r = h
        .send(
            Method::GET,
            "/api/v1/providers",
            &[("authorization", &other.authorization())],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // Refused auth does not touch the budget; 429s are logged.
    let statuses: Vec<_> = h
        .mock()
        .requests()
        .iter()
        .map(|r| (r.customer_key.clone().unwrap(), r.response_status))
        .collect();
    assert_eq!(
        statuses,
        [
            (TEST_CUSTOMER_KEY.to_owned(), 200),
            (TEST_CUSTOMER_KEY.to_owned(), 429),
            ("SecondOfficeKey1".to_owned(), 200),
        ]
    );

    h.mock().set_throttle(ThrottleMode::Off);
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);
}

#[tokio::test]
async fn reject_window_reopens_after_the_interval() {
    let interval = Duration::from_millis(300);
    let h = Harness::start(MockConfig {
        throttle: ThrottleMode::Reject {
            interval,
            retry_after_secs: 1,
        },
        ..MockConfig::test_defaults()
    })
    .await;
    let start = Instant::now();
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);
    // Bounded retry loop: the window must reopen after `interval`.
    let mut reopened = None;
    for _ in 0..200 {
        if h.get("/api/v1/providers").await.status == StatusCode::OK {
            reopened = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reopened = reopened.expect("window reopened");
    assert!(reopened >= interval, "{reopened:?}");
}

#[tokio::test]
async fn delay_throttle_spaces_calls() {
    let interval = Duration::from_millis(300);
    let h = Harness::start(MockConfig {
        throttle: ThrottleMode::Delay { interval },
        ..MockConfig::test_defaults()
    })
    .await;
    let start = Instant::now();
    let (a, b, c) = tokio::join!(
        h.get("/api/v1/providers"),
        h.get("/api/v1/operatories"),
        h.get("/api/v1/preferences?PrefName=ProgramVersion"),
    );
    let elapsed = start.elapsed();
    assert!([a.status, b.status, c.status]
        .iter()
        .all(|s| *s == StatusCode::OK));
    assert!(
        elapsed >= 2 * interval,
        "three calls need two intervals: {elapsed:?}"
    );
    let mut times: Vec<_> = h.mock().requests().iter().map(|r| r.received_at).collect();
    times.sort();
    assert_eq!(times.len(), 3);
}

#[tokio::test]
async fn status_fault_with_retry_after_then_normal_service() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    h.mock().inject(Fault::too_many_requests("2"));
    h.mock().inject(Fault::Status {
        status: 400,
        body: "eConnector is not running".into(),
        retry_after: None,
    });
    assert_eq!(h.mock().pending_faults(), 2);
    let first = h.get("/api/v1/patients/11").await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers[header::RETRY_AFTER], "2");
    let second = h.get("/api/v1/patients/11").await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    assert_eq!(second.text(), "eConnector is not running");
    assert_eq!(h.get("/api/v1/patients/11").await.status, StatusCode::OK);

    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    h.mock().inject(Fault::too_many_requests(date));
    // Faults apply before auth: they stand for trouble on the way to the DB.
    let r = h
        .send(Method::GET, "/api/v1/patients/11", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers[header::RETRY_AFTER], date);
    let statuses: Vec<_> = h
        .mock()
        .requests()
        .iter()
        .map(|r| r.response_status)
        .collect();
    assert_eq!(statuses, [429, 400, 200, 429]);
}

#[tokio::test]
async fn matching_faults_skip_other_requests() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    h.mock().inject_matching(
        FaultMatch::method_path("PUT", "/api/v1/queries"),
        Fault::Status {
            status: 504,
            body: "\"did not complete processing within the 60 second time limit\"".into(),
            retry_after: None,
        },
    );
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);
    assert_eq!(h.mock().pending_faults(), 1);
    let r = h.short_query("", "SELECT 1").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(h.mock().pending_faults(), 0);
    assert_eq!(h.short_query("", "SELECT 1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn delay_fault_and_latency_slow_the_answer() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    h.mock().inject(Fault::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(300));

    let slow = Harness::start(MockConfig {
        latency: Duration::from_millis(200),
        ..MockConfig::test_defaults()
    })
    .await;
    let start = Instant::now();
    let r = slow
        .send(Method::GET, "/api/v1/providers", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "latency applies to errors too"
    );
}

#[tokio::test]
async fn hang_never_answers_until_shutdown() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    h.mock().inject(Fault::Hang);
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        h.send_json(Method::GET, "/api/v1/providers", ""),
    )
    .await;
    assert!(waited.is_err(), "the client timed out");
    let log = h.mock().requests();
    assert_eq!(log.len(), 1, "a hung request is logged on arrival");
    assert_eq!(log[0].response_status, 0);

    // A second connection is served while the first hangs.
    let mock = h.mock().clone();
    let raw_hang = {
        mock.inject(Fault::Hang);
        let addr = h.running.addr;
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /api/v1/providers HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            out
        })
    };
    // Wait (bounded) until the hanging request has arrived.
    for _ in 0..200 {
        if mock.requests().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);

    let Harness { running, .. } = h;
    tokio::time::timeout(BOUND, running.shutdown())
        .await
        .expect("shutdown is not blocked by hung requests")
        .unwrap();
    let got = tokio::time::timeout(BOUND, raw_hang)
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_empty(), "the hung request never got a response");
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    h.mock().inject(Fault::Reset);
    let auth = test_auth();
    let err = h
        .send(
            Method::GET,
            "/api/v1/providers",
            &[("authorization", &auth)],
            "",
        )
        .await
        .err()
        .expect("a connection error, not a response");
    assert!(!err.to_string().is_empty());

    h.mock().inject(Fault::Reset);
    let raw = h
        .raw(b"GET /api/v1/providers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    match raw {
        Ok(bytes) => assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    let statuses: Vec<_> = h
        .mock()
        .requests()
        .iter()
        .map(|r| r.response_status)
        .collect();
    assert_eq!(statuses, [0, 0]);
    assert_eq!(h.get("/api/v1/providers").await.status, StatusCode::OK);
}

#[tokio::test]
async fn log_keeps_duplicate_headers_body_and_raw_target() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let body = r#"{"SqlCommand":"SELECT 1"}"#;
    let request = format!(
        "PUT /api/v1/queries/ShortQuery?Offset=0&x=%2F HTTP/1.1\r\n\
         Host: mock.test\r\n\
         X-Dup: first\r\n\
         Authorization: {}\r\n\
         X-Dup: second\r\n\
         Cookie: a=1\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        test_auth(),
        body.len()
    );
    let raw = h.raw(request.as_bytes()).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with(r#"[{"1":1}]"#), "{text}");

    let log = h.mock().requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, "/api/v1/queries/ShortQuery");
    assert_eq!(r.query.as_deref(), Some("Offset=0&x=%2F"));
    assert_eq!(r.header_values("x-dup"), ["first", "second"]);
    assert_eq!(r.header("cookie"), Some("a=1"));
    assert_eq!(r.header("host"), Some("mock.test"));
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(r.headers.len(), 8);
    assert_eq!(&r.body[..], body.as_bytes());
    assert_eq!(r.customer_key.as_deref(), Some(TEST_CUSTOMER_KEY));
    assert_eq!(r.response_status, 200);

    h.mock().clear_requests();
    assert!(h.mock().requests().is_empty());
}

#[tokio::test]
async fn bodies_over_16_8m_characters_are_refused() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    let sql = format!("SELECT '{}'", "a".repeat(odgw_mock::MAX_BODY_CHARS));
    let r = h.short_query("", &sql).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let log = h.mock().requests();
    assert!(log[0].body.is_empty(), "oversized bodies are not kept");
    assert_eq!(log[0].response_status, 400);
}

#[tokio::test]
async fn serve_on_a_caller_listener_until_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mock = MockUpstream::new(MockConfig::test_defaults());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mock.clone().serve(listener, async {
        let _ = rx.await;
    }));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = http::Request::get(format!("http://{addr}/api/v1/operatories/1"))
        .header("authorization", test_auth())
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.requests().len(), 1);
    drop(resp);
    drop(client);
    tx.send(()).unwrap();
    tokio::time::timeout(BOUND, server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn cli_entry_serves_until_its_signal_and_reports_bind_errors() {
    let listen = "127.0.0.1:0".parse().unwrap();
    let done = tokio::time::timeout(
        BOUND,
        odgw_mock::run_cli_until(listen, MockConfig::cli_defaults(), async {}),
    )
    .await
    .expect("returns once its shutdown future resolves");
    assert!(done.is_ok());

    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy = taken.local_addr().unwrap();
    let err = odgw_mock::run_cli_until(busy, MockConfig::cli_defaults(), async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
}

#[tokio::test]
async fn response_fault_sends_exact_headers() {
    let h = Harness::start(MockConfig::test_defaults()).await;
    h.mock().inject(Fault::Response {
        status: 200,
        headers: vec![
            ("Set-Cookie".into(), "a=1".into()),
            ("Set-Cookie".into(), "b=2".into()),
            ("X-Upstream".into(), "yes".into()),
            ("Bad Name".into(), "x".into()),
        ],
        body: "[]".into(),
    });
    let r = h.get("/api/v1/providers").await;
    assert_eq!(r.status, StatusCode::OK);
    let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(r.headers["x-upstream"], "yes");
    assert!(r.headers.get(header::CONTENT_TYPE).is_none());
    assert_eq!(r.text(), "[]");
}
