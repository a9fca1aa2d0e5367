//! What reaches Open Dental, and what comes back (SPEC §4).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use odgw_mock::Fault;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn forwards_with_the_tenants_key_pair_and_returns_the_answer_unchanged() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    let resp = gw.get("/api/v1/patients/11?x=1", Some(&token)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["LName"], "Allowed");
    assert!(resp.header("odgw-error").is_none());

    let seen = gw.mock.mock.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path, "/api/v1/patients/11");
    assert_eq!(r.query.as_deref(), Some("x=1"));
    assert_eq!(
        r.header_values("authorization"),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")]
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-request-id"), resp.header("x-request-id"));
}

#[tokio::test]
async fn a_replaced_or_deleted_key_pair_applies_to_the_very_next_request() {
    // Decrypted key pairs are kept in memory between requests; an admin
    // write must never leave the old pair in use.
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    let authorization_sent = |gw: &TestGateway| {
        let seen = gw.mock.mock.requests();
        let values = seen.last().unwrap().header_values("authorization");
        values.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    for _ in 0..2 {
        assert_eq!(
            gw.get("/api/v1/patients/11", Some(&token)).await.status,
            200
        );
    }
    assert_eq!(
        authorization_sent(&gw),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")]
    );

    gw.put_tenant("a", KEY_B).await;
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    assert_eq!(
        authorization_sent(&gw),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")]
    );

    assert_eq!(
        gw.admin(Method::DELETE, "/admin/v1/tenants/a", None)
            .await
            .status,
        204
    );
    gw.get("/api/v1/patients/11", Some(&token))
        .await
        .assert_problem(403, "unknown_tenant");
    assert_eq!(gw.mock.mock.requests().len(), 3);
}

#[tokio::test]
async fn nothing_but_the_allow_list_reaches_open_dental() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", "session=abc")
        .header("x-forwarded-for", "10.9.9.9")
        .header("x-forwarded-host", "evil")
        .header("forwarded", "for=1.2.3.4")
        .header("x_forwarded_for", "10.9.9.9")
        .header("odgw-tenant", "a")
        .header("odgw-debug", "1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-custom", "1")
        .header("accept", "application/json")
        .header("user-agent", "svc/1.0")
        .header("x-request-id", "trace-123")
        .body(Full::default())
        .unwrap();
    let resp = gw.send(req).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-request-id"), Some("trace-123"));
    let r = &gw.mock.mock.requests()[0];
    let mut names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    names.dedup();
    for name in &names {
        assert!(
            [
                "accept",
                "authorization",
                "content-type",
                "content-length",
                "user-agent",
                "x-request-id",
                "host"
            ]
            .contains(name),
            "{name} reached Open Dental: {:?}",
            r.headers
        );
    }
    assert_eq!(
        r.header_values("authorization"),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")]
    );
    assert_eq!(r.header("user-agent"), Some("svc/1.0"));
    assert_eq!(r.header("x-request-id"), Some("trace-123"));
}

#[tokio::test]
async fn connection_named_headers_count_as_absent() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    // X-Request-Id named in Connection is removed first: odgw makes a new one.
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {token}"))
        .header("connection", "close, X-Request-Id")
        .header("x-request-id", "smuggled-id")
        .body(Full::default())
        .unwrap();
    let resp = gw.send(req).await;
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").unwrap();
    assert_ne!(id, "smuggled-id");
    assert_eq!(id.len(), 36, "a fresh UUID");
    assert_eq!(gw.mock.mock.requests()[0].header("x-request-id"), Some(id));

    // Authorization named in Connection: the token is gone, so it is missing.
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {token}"))
        .header("connection", "Authorization")
        .body(Full::default())
        .unwrap();
    gw.send(req).await.assert_problem(401, "missing_token");

    // Odgw-Tenant named in Connection: with two tenants in the claim, none is chosen.
    let two = gw.token(json!({"tenant": ["a", "b"]}));
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {two}"))
        .header("connection", "keep-alive, odgw-tenant")
        .header("odgw-tenant", "b")
        .body(Full::default())
        .unwrap();
    gw.send(req).await.assert_problem(403, "tenant_not_allowed");
    assert_eq!(
        gw.mock.mock.requests().len(),
        1,
        "refusals never reach Open Dental"
    );
}

#[tokio::test]
async fn bad_paths_are_refused_before_any_upstream_call() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    for path in [
        "/api/v1/patients/../appointments",
        "/api/v1/./patients",
        "/api/v1/patients/%2e%2e/x",
        "/api/v1/patients%2F11",
        "/api/v1/patients%2f11",
        "/api/v1/patients%5C11",
        "/api/v1/patients%00",
        "/api/v1/patients/%2E",
        "/api/v1//patients",
    ] {
        gw.get(path, Some(&token))
            .await
            .assert_problem(400, "bad_path");
    }
    // A literal backslash cannot be sent through http::Uri; send it raw.
    let raw = format!(
        "GET /api/v1/patients\\11 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let answer = raw_exchange(gw.data, raw.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(gw.mock.mock.requests().is_empty());
}

#[tokio::test]
async fn outside_api_v1_is_not_found() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    for path in [
        "/",
        "/api/v1",
        "/api/v2/patients",
        "/admin/v1/tenants",
        "/api/v1/",
    ] {
        gw.get(path, Some(&token))
            .await
            .assert_problem(404, "not_found");
    }
    assert!(gw.mock.mock.requests().is_empty());
}

#[tokio::test]
async fn bodies_over_max_body_are_refused() {
    let gw = TestGateway::start_with(Options::default().env("ODGW_SERVER__MAX_BODY", "1KiB")).await;
    let token = gw.token(json!({}));
    let req = Request::post(gw.url("/api/v1/patients"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(vec![b' '; 2048])))
        .unwrap();
    gw.send(req).await.assert_problem(413, "body_too_large");
    assert!(gw.mock.mock.requests().is_empty());

    // A body within the limit is streamed through intact.
    let body = json!({"LName": "Newpatient", "FName": "Nora"}).to_string();
    let req = Request::post(gw.url("/api/v1/patients"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let resp = gw.send(req).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(gw.mock.mock.requests()[0].body, Bytes::from(body));
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    let resp = gw.get("/api/v1/patients/999999", Some(&token)).await;
    assert_eq!(resp.status, 404);
    assert!(
        resp.header("odgw-error").is_none(),
        "upstream errors carry no Odgw-Error"
    );
    assert_ne!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_a_hang_is_504() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    gw.mock.mock.inject(Fault::Hang);
    let started = std::time::Instant::now();
    gw.get("/api/v1/patients/11", Some(&token))
        .await
        .assert_problem(504, "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );

    // A tenant whose Open Dental refuses connections.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let resp = gw
        .admin(
            http::Method::PUT,
            "/admin/v1/tenants/gone",
            Some(json!({"customer_key": KEY_A, "base_url": format!("http://127.0.0.1:{port}/api/v1")})),
        )
        .await;
    assert_eq!(resp.status, 201);
    let t = gw.token(json!({"tenant": "gone"}));
    gw.get("/api/v1/patients/11", Some(&t))
        .await
        .assert_problem(502, "upstream_unavailable");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_flushes_their_records() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    gw.mock
        .mock
        .inject(Fault::Delay(Duration::from_millis(1500)));
    let data = gw.data;
    let slow = {
        let token = token.clone();
        tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
            let req = Request::get(format!("http://{data}/api/v1/patients/11"))
                .header("authorization", format!("Bearer {token}"))
                .header("x-request-id", "in-flight")
                .body(Full::default())
                .unwrap();
            client.request(req).await.map(|r| r.status().as_u16())
        })
    };
    // Wait until the slow request has reached Open Dental, then shut down.
    for _ in 0..100 {
        if !gw.mock.mock.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.mock.mock.requests().len(), 1);
    let started = std::time::Instant::now();
    let (root, _keep) = gw.stop().await;
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "stop waited for it"
    );
    // No new connections after shutdown.
    assert!(tokio::net::TcpStream::connect(data).await.is_err());
    // Its record was made durable before the process would exit.
    let lines = audit_lines(&root.join("audit"));
    assert!(lines
        .iter()
        .any(|l| l["request_id"] == "in-flight" && l["status"] == 200));
}
