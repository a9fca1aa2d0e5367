//! Attack regression suite (SECURITY.md): smuggling, header and path games,
//! JWT attacks, tenant crossing, slowloris.
//!
//! Every test attacks the real gateway and then asserts on what the mock Open
//! Dental actually received (its request log), not only on the status the
//! attacker saw: an attack is beaten when Open Dental sees nothing, or exactly
//! one well-formed request that odgw meant to send.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use odgw_mock::{Fault, FaultMatch, RecordedRequest};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::support::*;

// ---------------------------------------------------------------- helpers

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with exactly this header and payload text (no re-encoding,
/// so hand-written JSON survives), signed with `key` under `alg`.
fn forge(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    odgw_auth::install_crypto_providers();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// An unsigned token: `header.payload.` with the given signature part.
fn unsigned(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(file)).unwrap()).unwrap()
}

fn hs_key(gw: &TestGateway) -> EncodingKey {
    EncodingKey::from_secret(gw.hs_secret())
}

fn claims_text(issuer: &str, overrides: Value) -> String {
    merge(default_claims(issuer), overrides).to_string()
}

/// GET with a bearer token and extra headers through the normal client.
async fn get_with(gw: &TestGateway, path: &str, token: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::get(gw.url(path)).header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    gw.send(b.body(Full::default()).unwrap()).await
}

/// Sends raw bytes and returns everything the gateway answered before it
/// closed the connection (or 5 s passed).
async fn raw(gw: &TestGateway, request: &[u8]) -> String {
    raw_exchange(gw.data, request, Duration::from_secs(5)).await
}

/// The status codes of every HTTP/1.x response in a raw answer, in order.
fn statuses(answer: &str) -> Vec<u16> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(at) = rest.find("HTTP/1.") {
        let line = &rest[at..];
        if let Some(code) = line.get(9..12).and_then(|c| c.parse().ok()) {
            out.push(code);
        }
        rest = &rest[at + 7..];
    }
    out
}

/// The mock's host:port, which is the only Host Open Dental may ever see.
fn mock_authority(gw: &TestGateway) -> String {
    let base = gw.mock.base_url();
    let rest = base.strip_prefix("http://").unwrap();
    rest.split('/').next().unwrap().to_owned()
}

/// Asserts the one shape odgw ever sends upstream: our host, one `ODFHIR`
/// authorization of a known tenant, unambiguous framing, and nothing but the
/// allow-list.
#[track_caller]
fn assert_well_formed(gw: &TestGateway, r: &RecordedRequest) {
    assert_eq!(
        r.header_values("host"),
        vec![mock_authority(gw).as_str()],
        "host: {r:?}"
    );
    let auth = r.header_values("authorization");
    assert!(
        auth == vec![format!("ODFHIR {DEV_KEY}/{KEY_A}")]
            || auth == vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")],
        "authorization: {auth:?}"
    );
    let lengths = r.header_values("content-length");
    let te = r.header_values("transfer-encoding");
    assert!(lengths.len() <= 1, "content-length: {lengths:?}");
    assert!(
        lengths.is_empty() || te.is_empty(),
        "both content-length and transfer-encoding: {r:?}"
    );
    if let Some(len) = lengths.first() {
        assert_eq!(len.parse::<usize>().unwrap(), r.body.len(), "framing");
    }
    for (name, _) in &r.headers {
        assert!(
            [
                "accept",
                "authorization",
                "content-type",
                "content-length",
                "transfer-encoding",
                "user-agent",
                "x-request-id",
                "host",
            ]
            .contains(&name.as_str()),
            "{name} reached Open Dental: {:?}",
            r.headers
        );
    }
}

/// (method, path) of everything Open Dental saw, each checked well-formed.
fn upstream_log(gw: &TestGateway) -> Vec<(String, String)> {
    let seen = gw.mock.mock.requests();
    for r in &seen {
        assert_well_formed(gw, r);
    }
    seen.into_iter().map(|r| (r.method, r.path)).collect()
}

fn head(method: &str, target: &str, token: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n")
}

// ------------------------------------------------------ request smuggling

#[tokio::test]
async fn cl_te_smuggling_never_reaches_open_dental() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let body = r#"{"LName":"Smug","FName":"Gler"}"#;
    // The smuggled request carries no token: if anyone parsed it as a request
    // it would have to come from a framing disagreement.
    let smuggled = "GET /api/v1/patients/12 HTTP/1.1\r\nHost: gw\r\n\r\n";
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n{smuggled}", body.len());
    for framing in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 999\r\n",
    ] {
        gw.mock.mock.clear_requests();
        let req = format!(
            "{}Content-Type: application/json\r\n{framing}\r\n{chunked}",
            head("POST", "/api/v1/patients", &t)
        );
        let answer = raw(&gw, req.as_bytes()).await;
        let codes = statuses(&answer);
        // TE wins, the chunked body is the body, and the connection closes
        // after it (RFC 9112 §6.1): the tail is never read as a request.
        assert_eq!(codes, vec![201], "{framing:?}: {answer}");
        assert_eq!(
            upstream_log(&gw),
            vec![("POST".into(), "/api/v1/patients".into())],
            "{framing:?}"
        );
        assert_eq!(gw.mock.mock.requests()[0].body, Bytes::from(body));
    }
}

#[tokio::test]
async fn duplicate_conflicting_and_invalid_content_length_are_refused() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let body = r#"{"LName":"Len","FName":"Gth"}"#;
    let n = body.len();
    for lengths in [
        format!("Content-Length: {n}\r\nContent-Length: {}\r\n", n + 1),
        format!("Content-Length: {}\r\nContent-Length: {n}\r\n", n - 5),
        format!("Content-Length: {n}, {}\r\n", n + 1),
        format!("Content-Length: {n}, {n}\r\n"),
        format!("Content-Length: +{n}\r\n"),
        format!("Content-Length: -{n}\r\n"),
        format!("Content-Length: 0x{n:x}\r\n"),
        format!("Content-Length: {n} {n}\r\n"),
        "Content-Length: abc\r\n".to_owned(),
        "Content-Length: \r\n".to_owned(),
        "Content-Length: 99999999999999999999999\r\n".to_owned(),
    ] {
        let req = format!(
            "{}Content-Type: application/json\r\n{lengths}\r\n{body}",
            head("POST", "/api/v1/patients", &t)
        );
        let answer = raw(&gw, req.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![400], "{lengths:?}: {answer}");
    }
    assert!(upstream_log(&gw).is_empty());

    // Two identical lengths are one length: normalised to a single header.
    let req = format!(
        "{}Content-Type: application/json\r\nContent-Length: {n}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{body}",
        head("POST", "/api/v1/patients", &t)
    );
    let answer = raw(&gw, req.as_bytes()).await;
    assert_eq!(statuses(&answer), vec![201], "{answer}");
    assert_eq!(upstream_log(&gw).len(), 1);
    let r = &gw.mock.mock.requests()[0];
    assert_eq!(r.header_values("content-length"), vec![n.to_string()]);
    assert_eq!(r.body, Bytes::from(body));
}

#[tokio::test]
async fn obfuscated_transfer_encoding_is_refused_or_normalised() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let body = r#"{"LName":"Obf","FName":"Te"}"#;
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    // Refused outright: chunked is not the final coding, the name is not a
    // token, or the header is malformed.
    for te in [
        "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Transfer-Encoding : chunked\r\n",
        "Transfer-Encoding\t: chunked\r\n",
        "Transfer-Encoding: chunk\r\n",
        "Transfer-Encoding: \"chunked\"\r\n",
        " Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding:\r\n chunked\r\n",
    ] {
        let req = format!(
            "{}Content-Type: application/json\r\nContent-Length: {}\r\n{te}\r\n{chunked}",
            head("POST", "/api/v1/patients", &t),
            chunked.len()
        );
        let answer = raw(&gw, req.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![400], "{te:?}: {answer}");
    }
    assert!(upstream_log(&gw).is_empty());

    // Spellings that do mean chunked: decoded, re-framed, sent once.
    for te in [
        "Transfer-Encoding:  chunked\r\n",
        "Transfer-Encoding: CHUNKED\r\n",
        "transfer-encoding: chunked \r\n",
        "Transfer-Encoding: identity, chunked\r\n",
    ] {
        gw.mock.mock.clear_requests();
        let req = format!(
            "{}Content-Type: application/json\r\n{te}Connection: close\r\n\r\n{chunked}",
            head("POST", "/api/v1/patients", &t)
        );
        let answer = raw(&gw, req.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![201], "{te:?}: {answer}");
        assert_eq!(upstream_log(&gw).len(), 1, "{te:?}");
        assert_eq!(gw.mock.mock.requests()[0].body, Bytes::from(body));
    }
}

#[tokio::test]
async fn http_1_0_bodies_and_pipelined_requests_hidden_in_bodies() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let hidden = format!(
        "GET /api/v1/patients/12 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\n\r\n"
    );
    let body = json!({"LName": "Hidden", "FName": hidden}).to_string();

    // HTTP/1.0 with a body: read by Content-Length, and the connection ends.
    let req = format!(
        "POST /api/v1/patients HTTP/1.0\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}{hidden}",
        body.len()
    );
    let answer = raw(&gw, req.as_bytes()).await;
    assert_eq!(statuses(&answer), vec![201], "{answer}");
    assert_eq!(
        upstream_log(&gw),
        vec![("POST".into(), "/api/v1/patients".into())]
    );
    assert_eq!(gw.mock.mock.requests()[0].body, Bytes::from(body.clone()));

    // HTTP/1.0 cannot use chunked at all.
    gw.mock.mock.clear_requests();
    let req = format!(
        "POST /api/v1/patients HTTP/1.0\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    assert_eq!(statuses(&raw(&gw, req.as_bytes()).await), vec![400]);
    assert!(upstream_log(&gw).is_empty());

    // A request text inside a body stays body: one upstream POST carrying it.
    let req = format!(
        "{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        head("POST", "/api/v1/patients", &t),
        body.len()
    );
    assert_eq!(statuses(&raw(&gw, req.as_bytes()).await), vec![201]);
    assert_eq!(upstream_log(&gw).len(), 1);
    assert_eq!(gw.mock.mock.requests()[0].body, Bytes::from(body));

    // A short Content-Length leaves a tail that is read as the client's next
    // request, so it is authenticated like any other (here: no token, 401),
    // and never rides along to Open Dental.
    gw.mock.mock.clear_requests();
    let short = r#"{"LName":"Short","FName":"Cl"}"#;
    let tail = "GET /api/v1/patients/12 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
    let req = format!(
        "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{short}{tail}",
        head("POST", "/api/v1/patients", &t),
        short.len()
    );
    let answer = raw(&gw, req.as_bytes()).await;
    assert_eq!(statuses(&answer), vec![201, 401], "{answer}");
    assert_eq!(
        upstream_log(&gw),
        vec![("POST".into(), "/api/v1/patients".into())]
    );
    assert_eq!(gw.mock.mock.requests()[0].body, Bytes::from(short));
}

#[tokio::test]
async fn upgrade_and_connect_are_never_tunnelled() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    // What a tunnel would carry straight to Open Dental if odgw upgraded.
    let tunnel = format!(
        "GET /api/v1/patients/12 HTTP/1.1\r\nHost: {}\r\nAuthorization: ODFHIR {DEV_KEY}/{KEY_B}\r\nConnection: close\r\n\r\n",
        mock_authority(&gw)
    );
    for upgrade in ["websocket", "h2c", "tls/1.2"] {
        gw.mock.mock.clear_requests();
        let req = format!(
            "{}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n{tunnel}",
            head("GET", "/api/v1/patients/11", &t)
        );
        let answer = raw(&gw, req.as_bytes()).await;
        // The upgrade is ignored, the tail is a new request (401, no token).
        assert_eq!(statuses(&answer), vec![200, 401], "{upgrade}: {answer}");
        assert!(!answer.contains(" 101 "), "{answer}");
        assert_eq!(
            upstream_log(&gw),
            vec![("GET".into(), "/api/v1/patients/11".into())]
        );
        let r = &gw.mock.mock.requests()[0];
        assert!(r.header("upgrade").is_none() && r.header("sec-websocket-key").is_none());
    }

    // CONNECT (authority form) is not a route; nothing is tunnelled.
    gw.mock.mock.clear_requests();
    let target = mock_authority(&gw);
    let req = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nAuthorization: Bearer {t}\r\n\r\n{tunnel}"
    );
    let answer = raw(&gw, req.as_bytes()).await;
    let codes = statuses(&answer);
    assert!(
        !codes.is_empty() && codes[0] != 200 && !codes.contains(&101),
        "{answer}"
    );
    assert!(upstream_log(&gw).is_empty());
}

#[tokio::test]
async fn an_upstream_101_or_odgw_headers_cannot_open_a_tunnel_or_forge_errors() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    gw.mock.mock.inject(Fault::Response {
        status: 101,
        headers: vec![
            ("connection".into(), "upgrade".into()),
            ("upgrade".into(), "websocket".into()),
            (
                "sec-websocket-accept".into(),
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
            ),
        ],
        body: String::new(),
    });
    let req = format!(
        "{}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nGET /api/v1/patients/12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        head("GET", "/api/v1/patients/11", &t)
    );
    let answer = raw(&gw, req.as_bytes()).await;
    // A 502, never a 101: the client's connection does not change protocol,
    // and the bytes after the request are never sent to Open Dental.
    let codes = statuses(&answer);
    assert_eq!(codes.first(), Some(&502), "{answer}");
    assert!(!codes.contains(&101), "{answer}");
    assert!(
        answer.contains("odgw-error: upstream_unavailable"),
        "{answer}"
    );
    assert_eq!(
        upstream_log(&gw),
        vec![("GET".into(), "/api/v1/patients/11".into())]
    );

    // An upstream cannot speak as odgw or set odgw's request id.
    gw.mock.mock.clear_requests();
    gw.mock.mock.inject(Fault::Response {
        status: 403,
        headers: vec![
            ("content-type".into(), "application/problem+json".into()),
            ("odgw-error".into(), "tenant_disabled".into()),
            ("odgw-cache".into(), "hit".into()),
            ("connection".into(), "x-request-id, x-keep".into()),
            ("x-keep".into(), "1".into()),
            ("x-request-id".into(), "upstream-chosen".into()),
            ("transfer-encoding".into(), "chunked".into()),
        ],
        body: r#"{"code":"tenant_disabled"}"#.into(),
    });
    let resp = gw.get("/api/v1/patients/11", Some(&t)).await;
    assert_eq!(resp.status, 403);
    assert!(resp.header("odgw-error").is_none(), "{resp:?}");
    assert!(resp.header("odgw-cache").is_none());
    assert!(resp.header("x-keep").is_none());
    assert_ne!(resp.header("x-request-id"), Some("upstream-chosen"));
    assert_eq!(
        resp.header("x-request-id"),
        gw.mock.mock.requests()[0].header("x-request-id")
    );
}

// ------------------------------------------------------------ header games

#[tokio::test]
async fn connection_cannot_launder_security_headers() {
    let gw = TestGateway::start().await;
    let a = gw.token(json!({}));
    let ab = gw.token(json!({"tenant": ["a", "b"]}));

    // Authorization named in Connection (any case, any position) is absent.
    for conn in [
        "Authorization",
        "keep-alive, AUTHORIZATION",
        "x, authorization ,y",
    ] {
        get_with(&gw, "/api/v1/patients/11", &a, &[("connection", conn)])
            .await
            .assert_problem(401, "missing_token");
    }
    // Proxy-Authorization is hop-by-hop: it is no token either.
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("proxy-authorization", format!("Bearer {a}"))
        .body(Full::default())
        .unwrap();
    gw.send(req).await.assert_problem(401, "missing_token");
    // Odgw-Tenant named in Connection: no tenant chosen among several.
    get_with(
        &gw,
        "/api/v1/patients/11",
        &ab,
        &[("connection", "Odgw-Tenant"), ("odgw-tenant", "b")],
    )
    .await
    .assert_problem(403, "tenant_not_allowed");
    assert!(upstream_log(&gw).is_empty());

    // X-Request-Id and Content-Type named in Connection are dropped before
    // odgw reads them: a fresh id, and the JSON default goes upstream.
    let req = Request::post(gw.url("/api/v1/patients"))
        .header("authorization", format!("Bearer {a}"))
        .header(
            "connection",
            "X-Request-Id, Content-Type, Content-Length, Host",
        )
        .header("x-request-id", "injected-id")
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(
            json!({"LName": "Conn", "FName": "Named"}).to_string(),
        )))
        .unwrap();
    let resp = gw.send(req).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_ne!(resp.header("x-request-id"), Some("injected-id"));
    assert_eq!(upstream_log(&gw).len(), 1);
    let r = &gw.mock.mock.requests()[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-request-id"), resp.header("x-request-id"));
    assert_eq!(r.header_values("host"), vec![mock_authority(&gw).as_str()]);
}

#[tokio::test]
async fn underscore_and_look_alike_header_names_mean_nothing() {
    let gw = TestGateway::start().await;
    let a = gw.token(json!({}));
    let ab = gw.token(json!({"tenant": ["a", "b"]}));
    let send = |lines: String| {
        let gw = &gw;
        async move {
            let req = format!(
                "GET /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\n{lines}Connection: close\r\n\r\n"
            );
            statuses(&raw(gw, req.as_bytes()).await)
        }
    };
    // A token only in a look-alike header is no token.
    for name in [
        "authorization_",
        "Authorization_",
        "authorization-",
        "x-authorization",
        "Authorisation",
    ] {
        assert_eq!(
            send(format!("{name}: Bearer {a}\r\n")).await,
            vec![401],
            "{name}"
        );
    }
    // Look-alikes of Odgw-Tenant choose nothing (several tenants: 403)...
    for name in [
        "odgw_tenant",
        "Odgw_Tenant",
        "odgw-tenant_",
        "odgwtenant",
        "x-odgw-tenant",
    ] {
        assert_eq!(
            send(format!("Authorization: Bearer {ab}\r\n{name}: b\r\n")).await,
            vec![403],
            "{name}"
        );
    }
    assert!(upstream_log(&gw).is_empty());
    // ...and with a one-tenant token they neither pick b nor reach upstream.
    let answer = send(format!(
        "Authorization: Bearer {a}\r\nodgw_tenant: b\r\nX_Forwarded_For: 10.0.0.1\r\nx_request_id: evil\r\nContent_Type: text/xml\r\n"
    ))
    .await;
    assert_eq!(answer, vec![200]);
    let seen = gw.mock.mock.requests();
    assert_eq!(upstream_log(&gw).len(), 1);
    assert_eq!(seen[0].customer_key.as_deref(), Some(KEY_A));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_ne!(seen[0].header("x-request-id"), Some("evil"));
}

#[tokio::test]
async fn duplicate_authorization_and_odd_tenant_headers_are_refused() {
    let gw = TestGateway::start().await;
    let a = gw.token(json!({}));
    let ab = gw.token(json!({"tenant": ["a", "b"]}));
    let bad = gw.token(json!({"tenant": "b", "sub": "mallory"}));
    let send = |lines: String| {
        let gw = &gw;
        async move {
            let req = format!(
                "GET /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\n{lines}Connection: close\r\n\r\n"
            );
            statuses(&raw(gw, req.as_bytes()).await)
        }
    };
    // Two Authorization headers, in every arrangement, and a list in one.
    for lines in [
        format!("Authorization: Bearer {a}\r\nAuthorization: Bearer {a}\r\n"),
        format!("Authorization: Bearer {a}\r\nauthorization: Bearer {bad}\r\n"),
        format!("AUTHORIZATION: Basic Zm9vOmJhcg==\r\nAuthorization: Bearer {a}\r\n"),
        format!("Authorization: Bearer {a}\r\nX-Pad: 1\r\nAuthorization: Bearer {bad}\r\n"),
        format!("Authorization: Bearer {a}, Bearer {bad}\r\n"),
        format!("Authorization: Bearer {a} {bad}\r\n"),
    ] {
        assert_eq!(send(lines.clone()).await, vec![401], "{lines}");
    }
    // Odgw-Tenant lists, whitespace, tabs, case and repetition.
    for lines in [
        "Odgw-Tenant: a, b\r\n",
        "Odgw-Tenant: a,b\r\n",
        "Odgw-Tenant: b,a\r\n",
        "Odgw-Tenant: a b\r\n",
        "Odgw-Tenant: a\tb\r\n",
        "Odgw-Tenant: \"b\"\r\n",
        "Odgw-Tenant: B\r\n",
        "Odgw-Tenant: b;a\r\n",
        "Odgw-Tenant: %62\r\n",
        "Odgw-Tenant: \r\n",
        "Odgw-Tenant: a\r\nOdgw-Tenant: b\r\n",
        "Odgw-Tenant: a\r\nODGW-TENANT: a\r\n",
        "odgw-tenant: b\r\nOdgw-Tenant: a\r\n",
    ] {
        assert_eq!(
            send(format!("Authorization: Bearer {ab}\r\n{lines}")).await,
            vec![403],
            "{lines:?}"
        );
    }
    // Token for a: b is unreachable whatever the spelling.
    for lines in [
        "Odgw-Tenant: b\r\n",
        "ODGW-TENANT: b\r\n",
        "oDgW-tEnAnT:\tb\t\r\n",
        "Odgw-Tenant:    b   \r\n",
    ] {
        assert_eq!(
            send(format!("Authorization: Bearer {a}\r\n{lines}")).await,
            vec![403],
            "{lines:?}"
        );
    }
    assert!(upstream_log(&gw).is_empty());
    // Surrounding SP/HTAB is not part of the value (RFC 9110 §5.5): still b.
    assert_eq!(
        send(format!(
            "Authorization: Bearer {ab}\r\nOdgw-Tenant: \t b \t\r\n"
        ))
        .await,
        vec![200]
    );
    assert_eq!(
        gw.mock.mock.requests()[0].customer_key.as_deref(),
        Some(KEY_B)
    );
}

#[tokio::test]
async fn obs_fold_bare_cr_and_control_bytes_in_headers_are_refused() {
    let gw = TestGateway::start().await;
    let a = gw.token(json!({}));
    let ab = gw.token(json!({"tenant": ["a", "b"]}));
    for lines in [
        // obs-fold continuing a header onto the next line
        format!("Authorization: Bearer\r\n {a}\r\n"),
        format!("Authorization: Bearer {ab}\r\nOdgw-Tenant: a\r\n b\r\n"),
        format!("Authorization: Bearer {ab}\r\nOdgw-Tenant: a\r\n\tb\r\n"),
        // bare CR inside a value, or as a line end
        format!("Authorization: Bearer {ab}\r\nOdgw-Tenant: a\rOdgw-Tenant: b\r\n"),
        format!("Authorization: Bearer {ab}\rOdgw-Tenant: b\r\n"),
        // NUL and other controls
        format!("Authorization: Bearer {ab}\r\nOdgw-Tenant: b\0\r\n"),
        format!("Authorization: Bearer {a}\0\r\n"),
        format!("Authorization: Bearer {ab}\r\nOdgw-Tenant: \x0bb\r\n"),
        // a header name with a space or colon games
        format!("Authorization: Bearer {ab}\r\nOdgw Tenant: b\r\n"),
        format!("Authorization : Bearer {a}\r\n"),
        format!("Authorization: Bearer {ab}\r\n: b\r\n"),
    ] {
        let req = format!("GET /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\n{lines}\r\n");
        let answer = raw(&gw, req.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![400], "{lines:?}: {answer}");
    }
    assert!(upstream_log(&gw).is_empty());

    // Bare LF line endings are tolerated by the parser; the request is
    // rebuilt from parsed fields, so upstream still sees one clean request.
    let req = format!(
        "GET /api/v1/patients/11 HTTP/1.1\nHost: gw\nAuthorization: Bearer {a}\nConnection: close\n\n"
    );
    let answer = raw(&gw, req.as_bytes()).await;
    assert_eq!(statuses(&answer), vec![200], "{answer}");
    assert_eq!(
        upstream_log(&gw),
        vec![("GET".into(), "/api/v1/patients/11".into())]
    );
}

#[tokio::test]
async fn client_request_ids_cannot_carry_anything_but_a_token() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let long = "r".repeat(129);
    for value in [
        long.as_str(),
        "a b",
        "a/b",
        "a\tb",
        "a\\b",
        "id\"quoted\"",
        "a,b",
        "",
        "%0d%0aX-Evil:1",
    ] {
        let resp = get_with(&gw, "/api/v1/patients/11", &t, &[("x-request-id", value)]).await;
        let id = resp.header("x-request-id").unwrap().to_owned();
        assert_ne!(id, value);
        assert_eq!(id.len(), 36, "a fresh UUID for {value:?}");
        let seen = gw.mock.mock.requests();
        assert_eq!(
            seen.last().unwrap().header_values("x-request-id"),
            vec![id.as_str()]
        );
    }
    // Non-ASCII bytes, sent raw.
    let mut req = head("GET", "/api/v1/patients/11", &t).into_bytes();
    req.extend_from_slice(b"X-Request-Id: caf\xe9\r\nConnection: close\r\n\r\n");
    let answer = raw(&gw, &req).await;
    assert_eq!(statuses(&answer), vec![200], "{answer}");
    let seen = gw.mock.mock.requests();
    assert_eq!(
        seen.last().unwrap().header("x-request-id").unwrap().len(),
        36
    );
    upstream_log(&gw);
}

#[tokio::test]
async fn case_variant_methods_cannot_dodge_scope_or_intent_audit() {
    let gw = TestGateway::start().await;
    let reader = gw.token(json!({"scope": "od:read"}));
    let writer = gw.token(json!({"scope": "od:read od:write"}));
    let body = r#"{"LName":"Case","FName":"Method"}"#;
    // Methods are case-sensitive (RFC 9110 §9.1), but Open Dental's ASP.NET
    // routing is not: "delete" would be a DELETE there, without the intent
    // record odgw makes for DELETE. Case variants are refused outright (405),
    // before any scope check.
    for method in [
        "delete", "Delete", "post", "pOST", "put", "Patch", "get", "Get", "head",
    ] {
        for token in [&reader, &writer] {
            let req = format!(
                "{method} /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let answer = raw(&gw, req.as_bytes()).await;
            let codes = statuses(&answer);
            assert_eq!(codes, vec![405], "{method}: {answer}");
        }
    }
    assert!(
        upstream_log(&gw).is_empty(),
        "{:?}",
        gw.mock.mock.requests()
    );
    // Extension methods are never forwarded, whatever the scope: they would
    // bypass the intent record that writes get.
    for method in ["PROPFIND", "MERGE", "TRACE", "OPTIONS"] {
        for token in [&reader, &writer] {
            let req = format!(
                "{method} /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            );
            let answer = raw(&gw, req.as_bytes()).await;
            assert_eq!(statuses(&answer), vec![405], "{method}: {answer}");
        }
    }
    assert!(upstream_log(&gw).is_empty());
}

// -------------------------------------------------------------- path games

#[tokio::test]
async fn path_traversal_and_encoding_games_are_refused() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    for target in [
        "/api/v1/patients/../../admin/v1/tenants",
        "/api/v1/../v1/patients/11",
        "/api/v1/patients/..",
        "/api/v1/%2e%2e/admin",
        "/api/v1/%2E%2e/admin",
        "/api/v1/.%2E/admin",
        "/api/v1/%2e/patients",
        "/api/v1/patients%2F..%2F..%2Fadmin",
        "/api/v1/patients%2f11",
        "/api/v1//patients/11",
        "/api/v1/patients//11",
        "/api/v1/patients\\..\\admin",
        "/api/v1/patients/%5C11",
        "/api/v1/patients/..;/admin",
        "/api/v1/patients/.;x=1/11",
        "/api/v1/%252e%252e/admin",
        "/api/v1/patients/%00",
        "/api/v1/patients/%0d%0aX-Injected:%201",
        "/api/v1/patients/%",
        "/api/v1/patients/%zz",
    ] {
        let answer = raw(
            &gw,
            format!("{}Connection: close\r\n\r\n", head("GET", target, &t)).as_bytes(),
        )
        .await;
        assert_eq!(statuses(&answer), vec![400], "{target}: {answer}");
        assert!(
            answer.contains("odgw-error: bad_path"),
            "{target}: {answer}"
        );
    }
    // Raw non-UTF-8 and overlong-UTF-8 bytes in the target.
    for target in [
        &b"/api/v1/patients/\xff\xfe"[..],
        b"/api/v1/\xc0\xae\xc0\xae/admin",
        b"/api/v1/pat\x80ients",
        b"/api/v1/patients/11\x00",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(
            format!(
                " HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let answer = raw(&gw, &req).await;
        assert_eq!(statuses(&answer), vec![400], "{target:?}: {answer}");
    }
    assert!(upstream_log(&gw).is_empty());

    // `;` that is not hiding a dot segment is data, forwarded byte for byte.
    let answer = raw(
        &gw,
        format!(
            "{}Connection: close\r\n\r\n",
            head("GET", "/api/v1/patients;x=1/11", &t)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(statuses(&answer).len(), 1, "{answer}");
    assert_eq!(
        upstream_log(&gw),
        vec![("GET".into(), "/api/v1/patients;x=1/11".into())]
    );
}

#[tokio::test]
async fn overlong_paths_are_bounded() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    // 10 KB: within the head limit; forwarded once, unchanged.
    let long = format!("/api/v1/patients/{}", "a".repeat(10 * 1024));
    let answer = raw(
        &gw,
        format!("{}Connection: close\r\n\r\n", head("GET", &long, &t)).as_bytes(),
    )
    .await;
    assert_eq!(
        statuses(&answer).len(),
        1,
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert_eq!(upstream_log(&gw), vec![("GET".into(), long)]);

    // 100 KB: over the 64 KiB head limit; refused by the server itself.
    gw.mock.mock.clear_requests();
    let huge = format!("/api/v1/patients/{}", "a".repeat(100 * 1024));
    let started = Instant::now();
    let answer = raw(
        &gw,
        format!("{}Connection: close\r\n\r\n", head("GET", &huge, &t)).as_bytes(),
    )
    .await;
    let codes = statuses(&answer);
    assert_eq!(codes, vec![431], "request head over max_buf_size");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(upstream_log(&gw).is_empty());
    // And the gateway still serves.
    assert_eq!(gw.get("/api/v1/patients/11", Some(&t)).await.status, 200);
}

#[tokio::test]
async fn absolute_form_targets_and_host_never_choose_the_upstream() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    // A listener that would notice any connection odgw made to it.
    let decoy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_addr = decoy.local_addr().unwrap();
    let decoy_hits = Arc::new(AtomicUsize::new(0));
    let hits = decoy_hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = decoy.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    });

    let targets = [
        "http://evil.invalid/api/v1/patients/11".to_owned(),
        format!("http://{decoy_addr}/api/v1/patients/11"),
        format!("https://{decoy_addr}/api/v1/patients/11"),
        format!("http://user:pw@{decoy_addr}/api/v1/patients/11"),
    ];
    let hosts = [
        "evil.invalid".to_owned(),
        decoy_addr.to_string(),
        format!("{decoy_addr}\r\nHost: evil.invalid"),
        format!("{decoy_addr}@evil.invalid"),
    ];
    let mut forwarded = 0;
    for target in &targets {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: {decoy_addr}\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(&gw, req.as_bytes()).await;
        let codes = statuses(&answer);
        assert!(
            codes == vec![200] || codes == vec![400],
            "{target}: {answer}"
        );
        forwarded += usize::from(codes == vec![200]);
    }
    for host in &hosts {
        let req = format!(
            "GET /api/v1/patients/11 HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: {decoy_addr}\r\nForwarded: host={decoy_addr}\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(&gw, req.as_bytes()).await;
        let codes = statuses(&answer);
        assert!(
            codes == vec![200] || codes == vec![400],
            "{host:?}: {answer}"
        );
        forwarded += usize::from(codes == vec![200]);
    }
    // Two Host headers, or none: still only the tenant's base_url.
    for hosts in [
        format!("Host: {decoy_addr}\r\nHost: evil.invalid\r\n"),
        String::new(),
    ] {
        let req = format!(
            "GET /api/v1/patients/11 HTTP/1.1\r\n{hosts}Authorization: Bearer {t}\r\nConnection: close\r\n\r\n"
        );
        let codes = statuses(&raw(&gw, req.as_bytes()).await);
        assert!(codes == vec![200] || codes == vec![400], "{hosts:?}");
        forwarded += usize::from(codes == vec![200]);
    }
    // Absolute form naming odgw's own admin listener is just a path: 404.
    let req = format!(
        "GET http://{}/admin/v1/tenants HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n",
        gw.admin
    );
    assert_eq!(statuses(&raw(&gw, req.as_bytes()).await), vec![404]);

    assert!(forwarded >= 3, "most forms are plain requests");
    let log = upstream_log(&gw);
    assert_eq!(log.len(), forwarded);
    assert!(log
        .iter()
        .all(|(m, p)| m == "GET" && p == "/api/v1/patients/11"));
    assert_eq!(
        decoy_hits.load(Ordering::SeqCst),
        0,
        "odgw connected to the decoy"
    );
}

// ------------------------------------------------------------ JWT attacks

#[tokio::test]
async fn alg_none_in_every_spelling_and_signature_stripping_fail() {
    let gw = TestGateway::start().await;
    let claims = default_claims(HS_ISSUER);
    let good = gw.token(json!({}));
    let sig = good.rsplit('.').next().unwrap().to_owned();
    let mut forged = Vec::new();
    for alg in [
        "none", "None", "NONE", "nOnE", "", "none ", "HS256 ", "hs256",
    ] {
        for signature in ["", sig.as_str(), "AAAA"] {
            forged.push(unsigned(
                &json!({"alg": alg, "typ": "JWT"}),
                &claims,
                signature,
            ));
        }
    }
    // Signature stripping and truncation of a genuine token.
    let (signing_input, _) = good.rsplit_once('.').unwrap();
    forged.push(format!("{signing_input}."));
    forged.push(signing_input.to_owned());
    forged.push(format!("{signing_input}.{}", &sig[..sig.len() - 2]));
    // No alg at all, alg as a non-string.
    forged.push(unsigned(&json!({"typ": "JWT"}), &claims, &sig));
    forged.push(unsigned(&json!({"alg": ["HS256"]}), &claims, &sig));
    forged.push(unsigned(&json!({"alg": null}), &claims, ""));
    for token in &forged {
        gw.get("/api/v1/patients/11", Some(token))
            .await
            .assert_problem(401, "invalid_token");
    }
    assert!(upstream_log(&gw).is_empty());
    // The control: the genuine token passes.
    assert_eq!(gw.get("/api/v1/patients/11", Some(&good)).await.status, 200);
}

#[tokio::test]
async fn hs_rs_confusion_and_disallowed_algorithms_fail() {
    let gw = TestGateway::start().await;
    let pem = std::fs::read(fixture("rsa.pub.pem")).unwrap();
    let pem_text = String::from_utf8(pem.clone()).unwrap();
    let der_b64: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&der_b64)
        .unwrap();
    let rs_claims = claims_text(RS_ISSUER, json!({}));
    let hs_claims = claims_text(HS_ISSUER, json!({}));
    let mut forged = Vec::new();
    // The public key, in every form an attacker might guess, as an HMAC secret.
    for secret in [
        pem.clone(),
        pem_text.trim_end().as_bytes().to_vec(),
        der_b64.clone().into_bytes(),
        der,
    ] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let header = json!({"alg": format!("{alg:?}"), "typ": "JWT"}).to_string();
            forged.push(forge(
                &header,
                &rs_claims,
                &EncodingKey::from_secret(&secret),
                alg,
            ));
        }
    }
    // Right key, algorithm outside the RS issuer's allow-list (RS256 only).
    let rsa = rsa_key("rsa.key");
    for alg in [Algorithm::PS256, Algorithm::RS384, Algorithm::RS512] {
        let header = json!({"alg": format!("{alg:?}")}).to_string();
        forged.push(forge(&header, &rs_claims, &rsa, alg));
    }
    // An RS256 header on a token HMAC-signed for the HS issuer.
    let h = hs_key(&gw);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"RS256"}"#),
        b64(hs_claims.as_bytes())
    );
    let mac = jsonwebtoken::crypto::sign(input.as_bytes(), &h, Algorithm::HS256).unwrap();
    forged.push(format!("{input}.{mac}"));
    // HS384 with the genuine HS secret: not in that issuer's allow-list.
    forged.push(forge(
        r#"{"alg":"HS384"}"#,
        &hs_claims,
        &h,
        Algorithm::HS384,
    ));
    // Header alg switched on a genuine RS256 token.
    let genuine = rs256_token("rsa.key", None, &default_claims(RS_ISSUER));
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let switched = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    parts[0] = &switched;
    forged.push(parts.join("."));
    for token in &forged {
        gw.get("/api/v1/patients/11", Some(token))
            .await
            .assert_problem(401, "invalid_token");
    }
    assert!(upstream_log(&gw).is_empty());
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&genuine)).await.status,
        200
    );
}

#[tokio::test]
async fn kid_injection_is_never_used_to_find_a_key() {
    let gw = TestGateway::start().await;
    let attacker_pem = fixture("rsa2.pub.pem");
    let kids = [
        "../../etc/passwd".to_owned(),
        "/dev/null".to_owned(),
        "../../../../../../dev/null".to_owned(),
        attacker_pem.display().to_string(),
        "../../tests/fixtures/keys/rsa2.pub.pem".to_owned(),
        "rsa2.pub.pem".to_owned(),
        "' OR '1'='1".to_owned(),
        "x'; DROP TABLE keys; --".to_owned(),
        "k1\u{0}../../etc/passwd".to_owned(),
        "|cat /etc/passwd".to_owned(),
        "$(id)".to_owned(),
        "%2e%2e%2f".to_owned(),
    ];
    let rs_claims = claims_text(RS_ISSUER, json!({}));
    let hs_claims = claims_text(HS_ISSUER, json!({}));
    let attacker = rsa_key("rsa2.key");
    for kid in &kids {
        let rs_header = json!({"alg": "RS256", "kid": kid}).to_string();
        let hs_header = json!({"alg": "HS256", "kid": kid}).to_string();
        let forged = [
            // Signed with the key the kid points at.
            forge(&rs_header, &rs_claims, &attacker, Algorithm::RS256),
            // /dev/null or an empty lookup result as the HMAC key.
            forge(
                &hs_header,
                &hs_claims,
                &EncodingKey::from_secret(b""),
                Algorithm::HS256,
            ),
            forge(
                &hs_header,
                &hs_claims,
                &EncodingKey::from_secret(b"\n"),
                Algorithm::HS256,
            ),
            // The PEM the kid points at, as an HMAC secret.
            forge(
                &hs_header,
                &rs_claims,
                &EncodingKey::from_secret(&std::fs::read(&attacker_pem).unwrap()),
                Algorithm::HS256,
            ),
        ];
        for token in forged {
            gw.get("/api/v1/patients/11", Some(&token))
                .await
                .assert_problem(401, "invalid_token");
        }
    }
    assert!(upstream_log(&gw).is_empty());
    // Static keys ignore kid entirely: genuine signatures with odd kids pass.
    for kid in ["../../etc/passwd", "' OR '1'='1"] {
        let rs_header = json!({"alg": "RS256", "kid": kid}).to_string();
        let ok = forge(
            &rs_header,
            &rs_claims,
            &rsa_key("rsa.key"),
            Algorithm::RS256,
        );
        assert_eq!(gw.get("/api/v1/patients/11", Some(&ok)).await.status, 200);
    }
}

/// A listener counting connections: it stands for an attacker's key server.
async fn key_server(jwks_file: &str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let jwks = std::fs::read_to_string(fixture(jwks_file)).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let body = jwks.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/jwks.json"), hits)
}

#[tokio::test]
async fn jku_x5u_jwk_and_x5c_headers_are_ignored() {
    // The attacker publishes its own key (rsa2, as k2) for jku/x5u to find.
    let (url, hits) = key_server("jwks-k1-k2.json").await;
    // A JWKS issuer too, so "keys from a URL" is a code path that exists;
    // its real JWKS has only k1.
    let (jwks_url, _) = key_server("jwks-k1.json").await;
    let opts = Options {
        extra_toml: format!(
            "\n[[auth.issuers]]\nissuer = \"https://jwks.test/\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\njwks_url = \"{jwks_url}\"\n"
        ),
        ..Options::default()
    };
    let gw = TestGateway::start_with(opts).await;
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks-k1-k2.json")).unwrap())
            .unwrap();
    let attacker_jwk = jwks["keys"][1].clone();
    assert_eq!(attacker_jwk["kid"], "k2");
    let attacker = rsa_key("rsa2.key");
    let rs_claims = claims_text(RS_ISSUER, json!({}));
    let headers = [
        json!({"alg": "RS256", "jku": url}),
        json!({"alg": "RS256", "kid": "k2", "jku": url}),
        json!({"alg": "RS256", "x5u": url}),
        json!({"alg": "RS256", "jwk": attacker_jwk}),
        json!({"alg": "RS256", "kid": "k2", "jwk": attacker_jwk}),
        json!({"alg": "RS256", "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]}),
        json!({"alg": "RS256", "jku": url, "x5u": url, "jwk": attacker_jwk}),
    ];
    for header in &headers {
        let token = forge(&header.to_string(), &rs_claims, &attacker, Algorithm::RS256);
        gw.get("/api/v1/patients/11", Some(&token))
            .await
            .assert_problem(401, "invalid_token");
        // The same against the JWKS issuer, under the attacker's kid.
        let mut h = header.clone();
        h["kid"] = json!("k2");
        let claims = claims_text("https://jwks.test/", json!({}));
        let token = forge(&h.to_string(), &claims, &attacker, Algorithm::RS256);
        gw.get("/api/v1/patients/11", Some(&token))
            .await
            .assert_problem(401, "invalid_token");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "odgw fetched a token-named URL"
    );
    assert!(upstream_log(&gw).is_empty());
    // Genuinely signed tokens carrying these headers are fine: they are ignored.
    let token = forge(
        &json!({"alg": "RS256", "jku": url, "jwk": attacker_jwk}).to_string(),
        &rs_claims,
        &rsa_key("rsa.key"),
        Algorithm::RS256,
    );
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    let token = forge(
        &json!({"alg": "RS256", "kid": "k1", "jku": url, "x5u": url}).to_string(),
        &claims_text("https://jwks.test/", json!({})),
        &rsa_key("rsa.key"),
        Algorithm::RS256,
    );
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&token)).await.status,
        200
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn crit_trailing_garbage_extra_segments_and_swapped_payloads_fail() {
    let gw = TestGateway::start().await;
    let h = hs_key(&gw);
    let claims = claims_text(HS_ISSUER, json!({}));
    let good = gw.token(json!({}));
    let mut forged = vec![
        // Validly signed, but with crit parameters odgw cannot honour.
        forge(
            r#"{"alg":"HS256","crit":["exp"]}"#,
            &claims,
            &h,
            Algorithm::HS256,
        ),
        forge(
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            &claims,
            &h,
            Algorithm::HS256,
        ),
        forge(
            r#"{"alg":"HS256","crit":[]}"#,
            &claims,
            &h,
            Algorithm::HS256,
        ),
        forge(
            r#"{"alg":"HS256","crit":"exp"}"#,
            &claims,
            &h,
            Algorithm::HS256,
        ),
    ];
    // Trailing garbage and extra segments on a genuine token.
    for suffix in [
        ".", ".x", "..", ".e30", "=", "==", "%00", "x", "\\", "#", ";",
    ] {
        forged.push(format!("{good}{suffix}"));
    }
    forged.push(format!("{good} garbage"));
    forged.push(format!("{good},{good}"));
    forged.push(format!("e30.{good}"));
    // Padding and standard (non-url) base64 inside the parts.
    let parts: Vec<&str> = good.split('.').collect();
    forged.push(format!("{}=.{}.{}", parts[0], parts[1], parts[2]));
    // Payload swapped for tenant b, signature kept.
    let b_claims = claims_text(HS_ISSUER, json!({"tenant": "b"}));
    forged.push(format!(
        "{}.{}.{}",
        parts[0],
        b64(b_claims.as_bytes()),
        parts[2]
    ));
    // Signature of another valid token reused.
    let other = gw.token(json!({"tenant": "b"}));
    let other_sig = other.rsplit('.').next().unwrap();
    forged.push(format!("{}.{}.{other_sig}", parts[0], parts[1]));
    // A JWE-shaped token (five segments).
    forged.push(format!(
        "{}.{}.{}.{}.{}",
        parts[0], "", parts[1], parts[2], "tag"
    ));
    for token in &forged {
        let resp = gw.get("/api/v1/patients/11", Some(token)).await;
        assert_eq!(resp.status, 401, "{token}: {resp:?}");
        resp.assert_problem(401, "invalid_token");
    }
    assert!(upstream_log(&gw).is_empty());
}

#[tokio::test]
async fn huge_tokens_and_deeply_nested_claims_are_bounded() {
    let gw = TestGateway::start().await;
    let h = hs_key(&gw);
    // 20 KB token: fits in the request head, refused by the token size cap.
    let padding = "x".repeat(15 * 1024);
    let big = forge(
        r#"{"alg":"HS256"}"#,
        &claims_text(HS_ISSUER, json!({"pad": padding})),
        &h,
        Algorithm::HS256,
    );
    assert!(big.len() > 16 * 1024);
    gw.get("/api/v1/patients/11", Some(&big))
        .await
        .assert_problem(401, "invalid_token");

    // 100 KB header line: over the server's head limit, refused before odgw.
    let huge = "A".repeat(100 * 1024);
    let req = format!(
        "GET /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {huge}\r\nConnection: close\r\n\r\n"
    );
    let started = Instant::now();
    let answer = raw(&gw, req.as_bytes()).await;
    let codes = statuses(&answer);
    assert_eq!(codes, vec![431], "request head over max_buf_size");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Claims and header nested thousands deep, validly signed and under the
    // size cap: refused without a stack overflow (the process would abort).
    let depth = 2500;
    let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let obj_nested = format!("{}1{}", "{\"a\":".repeat(800), "}".repeat(800));
    let tokens = [
        forge(
            r#"{"alg":"HS256"}"#,
            &claims_text(HS_ISSUER, json!({})).replacen('{', &format!("{{\"deep\":{nested},"), 1),
            &h,
            Algorithm::HS256,
        ),
        forge(
            r#"{"alg":"HS256"}"#,
            &claims_text(HS_ISSUER, json!({})).replacen(
                '{',
                &format!("{{\"deep\":{obj_nested},"),
                1,
            ),
            &h,
            Algorithm::HS256,
        ),
        forge(
            &format!(r#"{{"alg":"HS256","x":{nested}}}"#),
            &claims_text(HS_ISSUER, json!({})),
            &h,
            Algorithm::HS256,
        ),
        forge(
            r#"{"alg":"HS256"}"#,
            &claims_text(HS_ISSUER, json!({})).replacen("\"a\"", &nested, 1),
            &h,
            Algorithm::HS256,
        ),
    ];
    for token in &tokens {
        assert!(token.len() < 8 * 1024, "{}", token.len());
        gw.get("/api/v1/patients/11", Some(token))
            .await
            .assert_problem(401, "invalid_token");
    }
    assert!(upstream_log(&gw).is_empty());
    // Still alive and serving.
    let t = gw.token(json!({}));
    assert_eq!(gw.get("/api/v1/patients/11", Some(&t)).await.status, 200);
}

// --------------------------------------------------------- tenant crossing

#[tokio::test]
async fn a_token_for_a_never_reaches_b() {
    let gw = TestGateway::start().await;
    let a = gw.token(json!({}));
    // Header games with a token for a only.
    for value in [
        "b", "B", " b", "b\t", "a,b", "b,a", "a, b", "a;b", "a b", "*", "", "a\\b", "../b", "%62",
        "b.",
    ] {
        let resp = get_with(&gw, "/api/v1/patients/11", &a, &[("odgw-tenant", value)]).await;
        resp.assert_problem(403, "tenant_not_allowed");
    }
    // Tenant claim tricks: nothing that is not exactly "b" grants b.
    let tricks = [
        json!({"tenant": ["a", "b\u{0000}"]}),
        json!({"tenant": ["a", "b "]}),
        json!({"tenant": ["a", " b"]}),
        json!({"tenant": ["a", "B"]}),
        json!({"tenant": "a,b"}),
        json!({"tenant": "a b"}),
        json!({"tenant": ["a", ["b"]]}),
        json!({"tenant": ["a", {"id": "b"}]}),
        json!({"tenant": ["a", null, "b"]}),
        json!({"tenant": {"a": "b"}}),
        json!({"tenant": "b\u{0000}"}),
        json!({"tenant": "../b"}),
        json!({"tenant": "*"}),
        json!({"tenant": ["*"]}),
        json!({"tenant": true}),
        json!({"tenant": null, "Tenant": "b", "tenants": ["b"], "tenant_id": "b", "odgw-tenant": "b"}),
    ];
    for claims in &tricks {
        let token = gw.token(claims.clone());
        for headers in [&[][..], &[("odgw-tenant", "b")][..]] {
            let resp = get_with(&gw, "/api/v1/patients/11", &token, headers).await;
            assert_eq!(resp.status, 403, "{claims} {headers:?}: {resp:?}");
        }
    }
    // A tenant named in the query or path is just data.
    for path in [
        "/api/v1/patients/11?tenant=b",
        "/api/v1/patients/11?odgw-tenant=b&Odgw-Tenant=b",
    ] {
        assert_eq!(get_with(&gw, path, &a, &[]).await.status, 200);
    }
    // Claim names are exact: "Tenant": "b" beside "tenant": "a" means a.
    let shadow = gw.token(json!({"tenant": "a", "Tenant": "b", "TENANT": ["b"]}));
    assert_eq!(
        get_with(&gw, "/api/v1/patients/11", &shadow, &[])
            .await
            .status,
        200
    );
    let seen = gw.mock.mock.requests();
    assert_eq!(upstream_log(&gw).len(), 3);
    assert!(
        seen.iter()
            .all(|r| r.customer_key.as_deref() == Some(KEY_A)),
        "b's key went upstream: {seen:?}"
    );
}

#[tokio::test]
async fn cached_answers_never_cross_tenants() {
    let gw = TestGateway::start().await;
    let a = gw.token(json!({}));
    let b = gw.token(json!({"tenant": "b", "sub": "bob"}));
    let ab = gw.token(json!({"tenant": ["a", "b"], "sub": "carol"}));
    const SECRET: &str = "A-ONLY-PRACTICE-TITLE";
    let poison = |gw: &TestGateway| {
        gw.mock.mock.inject_matching(
            FaultMatch::path("/api/v1/preferences"),
            Fault::Response {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: format!(r#"[{{"PrefName":"PracticeTitle","ValueString":"{SECRET}"}}]"#),
            },
        );
    };
    let path = "/api/v1/preferences?PrefName=PracticeTitle&Limit=5";

    // a fills the cache with an answer only a may see.
    poison(&gw);
    let resp = get_with(&gw, path, &a, &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("odgw-cache"), Some("miss"));
    assert!(String::from_utf8_lossy(&resp.body).contains(SECRET));
    assert_eq!(
        get_with(&gw, path, &a, &[]).await.header("odgw-cache"),
        Some("hit")
    );

    // b, by every route to the same resource, gets its own upstream answer.
    let b_variants = [
        path.to_owned(),
        "/api/v1/preferences?Limit=5&PrefName=PracticeTitle".to_owned(),
        "/api/v1/preferences?PrefName=PracticeTitle&Limit=5&".to_owned(),
        "/api/v1/preferences?&Limit=5&PrefName=PracticeTitle&PrefName=PracticeTitle".to_owned(),
        "/api/v1/Preferences?PrefName=PracticeTitle&Limit=5".to_owned(),
        "/api/v1/preferences?PrefName=PracticeTitle&Limit=5&tenant=a".to_owned(),
    ];
    for p in &b_variants {
        for (token, headers) in [(&b, &[][..]), (&ab, &[("odgw-tenant", "b")][..])] {
            let resp = get_with(&gw, p, token, headers).await;
            assert!(
                !String::from_utf8_lossy(&resp.body).contains(SECRET),
                "{p}: b received a's cached answer"
            );
        }
    }
    // b's requests did go upstream with b's key, a's only once.
    let seen = gw.mock.mock.requests();
    upstream_log(&gw);
    let for_a = seen
        .iter()
        .filter(|r| r.customer_key.as_deref() == Some(KEY_A))
        .count();
    let for_b = seen
        .iter()
        .filter(|r| r.customer_key.as_deref() == Some(KEY_B))
        .count();
    assert_eq!(for_a, 1, "a filled once");
    assert!(for_b >= 1, "b asked its own Open Dental");
    assert_eq!(for_a + for_b, seen.len());

    // The cache sits behind auth and tenant checks: no token, a crossing
    // header or a disabled tenant get no cached bytes.
    let resp = gw.get(path, None).await;
    resp.assert_problem(401, "missing_token");
    let resp = get_with(&gw, path, &a, &[("odgw-tenant", "b")]).await;
    resp.assert_problem(403, "tenant_not_allowed");
    let resp = get_with(&gw, path, &a, &[("authorization", "Bearer x")]).await;
    resp.assert_problem(401, "invalid_token");
    gw.admin(Method::POST, "/admin/v1/tenants/a/disable", None)
        .await;
    get_with(&gw, path, &a, &[])
        .await
        .assert_problem(403, "tenant_disabled");

    // b poisoning its own entry (no-cache refresh) cannot touch a's.
    gw.admin(Method::POST, "/admin/v1/tenants/a/enable", None)
        .await;
    let path2 = "/api/v1/preferences?PrefName=PracticeTitle";
    assert_eq!(get_with(&gw, path2, &b, &[]).await.status, 200);
    poison(&gw);
    let resp = get_with(&gw, path2, &b, &[("cache-control", "no-cache")]).await;
    assert!(String::from_utf8_lossy(&resp.body).contains(SECRET));
    assert_eq!(
        get_with(&gw, path2, &b, &[]).await.header("odgw-cache"),
        Some("hit")
    );
    gw.mock.mock.clear_requests();
    let resp = get_with(&gw, path2, &a, &[]).await;
    assert_eq!(resp.header("odgw-cache"), Some("miss"));
    assert!(!String::from_utf8_lossy(&resp.body).contains(SECRET));
    assert_eq!(
        gw.mock.mock.requests()[0].customer_key.as_deref(),
        Some(KEY_A)
    );
}

// ------------------------------------------------- slowloris and big heads

#[tokio::test]
async fn slow_header_sender_is_cut_off_by_the_header_timeout() {
    let gw = TestGateway::start().await;
    let mut stream = TcpStream::connect(gw.data).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let started = Instant::now();
    let head = b"GET /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\nX-Slow: ";
    let drip = async {
        writer.write_all(head).await.unwrap();
        // One byte a second, never finishing the head, for at most 15 s.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        let mut seen = Vec::new();
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        seen
    };
    let seen = tokio::select! {
        seen = closed => seen,
        () = async { drip.await; tokio::time::sleep(Duration::from_secs(1)).await } => {
            panic!("connection still open after 16 s of dripping")
        }
    };
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(8) && took <= Duration::from_secs(14),
        "cut after {took:?}"
    );
    let answer = String::from_utf8_lossy(&seen);
    assert!(!answer.contains(" 200 "), "{answer}");
    assert!(gw.mock.mock.requests().is_empty());
}

#[tokio::test]
async fn stalled_heads_and_idle_keep_alive_connections_are_cut_off() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    // A few bytes of a head, then nothing.
    let mut stalled = TcpStream::connect(gw.data).await.unwrap();
    stalled.write_all(b"GET /api").await.unwrap();
    // One complete keep-alive request, then an idle connection.
    let mut idle = TcpStream::connect(gw.data).await.unwrap();
    idle.write_all(format!("{}\r\n", head("GET", "/api/v1/patients/11", &t)).as_bytes())
        .await
        .unwrap();
    let limit = Duration::from_secs(14);
    let (a, b) = tokio::join!(
        closed_within(&mut stalled, limit),
        closed_within(&mut idle, limit)
    );
    assert!(a.is_some(), "a stalled head is still open after {limit:?}");
    assert!(
        b.is_some(),
        "an idle keep-alive connection is still open after {limit:?}"
    );
    assert_eq!(upstream_log(&gw).len(), 1);
}

#[tokio::test]
async fn fifty_slow_connections_do_not_starve_others() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..50 {
        let mut s = TcpStream::connect(gw.data).await.unwrap();
        let partial = if i % 2 == 0 {
            format!(
                "GET /api/v1/patients/11 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {t}\r\nX-"
            )
        } else {
            "POST /api/v1/patients HTTP/1.1\r\nHo".to_owned()
        };
        s.write_all(partial.as_bytes()).await.unwrap();
        slow.push(s);
    }
    // Others are served promptly while all fifty hang mid-head.
    let started = Instant::now();
    let others = (0..10).map(|_| gw.get("/api/v1/patients/11", Some(&t)));
    for resp in futures_util::future::join_all(others).await {
        assert_eq!(resp.status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // None of the half-sent requests reached Open Dental.
    assert_eq!(upstream_log(&gw).len(), 10);
    drop(slow);
}

#[tokio::test]
async fn too_many_and_oversized_headers_are_refused() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({}));
    let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let req = format!(
        "{}{many}Connection: close\r\n\r\n",
        head("GET", "/api/v1/patients/11", &t)
    );
    let answer = raw(&gw, req.as_bytes()).await;
    assert_eq!(statuses(&answer), vec![431], "{answer}");

    for size in [70 * 1024, 100 * 1024] {
        let big = "v".repeat(size);
        let req = format!(
            "{}X-Big: {big}\r\nConnection: close\r\n\r\n",
            head("GET", "/api/v1/patients/11", &t)
        );
        let answer = raw(&gw, req.as_bytes()).await;
        assert_eq!(statuses(&answer), vec![431], "{size}");
    }
    // Many mid-sized headers adding up past the limit.
    let lots: String = (0..90)
        .map(|i| format!("X-M{i}: {}\r\n", "m".repeat(1000)))
        .collect();
    let req = format!(
        "{}{lots}Connection: close\r\n\r\n",
        head("GET", "/api/v1/patients/11", &t)
    );
    assert_eq!(statuses(&raw(&gw, req.as_bytes()).await), vec![431]);
    assert!(upstream_log(&gw).is_empty());

    // The gateway keeps serving normal requests.
    for _ in 0..3 {
        assert_eq!(gw.get("/api/v1/patients/11", Some(&t)).await.status, 200);
    }
    assert_eq!(upstream_log(&gw).len(), 3);
}

/// Waits until the server closes `stream` (EOF or error), at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]

async fn silent_connections_are_cut_off() {
    let gw = TestGateway::start().await;
    // Nothing at all, and a prefix of the 24-byte HTTP/2 preface that the
    // server sniffs before choosing HTTP/1 or HTTP/2: header_read_timeout
    // only starts once HTTP/1 has been chosen.
    let mut silent = TcpStream::connect(gw.data).await.unwrap();
    let mut preface = TcpStream::connect(gw.data).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let limit = Duration::from_secs(14);
    let (a, b) = tokio::join!(
        closed_within(&mut silent, limit),
        closed_within(&mut preface, limit)
    );
    assert!(
        a.is_some() && b.is_some(),
        "still open after {limit:?}: silent {}, preface prefix {}",
        a.is_none(),
        b.is_none()
    );
}

#[tokio::test]

async fn idle_http2_connections_are_cut_off() {
    let gw = TestGateway::start().await;
    // The HTTP/2 preface and an empty SETTINGS frame, then silence.
    let mut h2 = TcpStream::connect(gw.data).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let limit = Duration::from_secs(14);
    assert!(
        closed_within(&mut h2, limit).await.is_some(),
        "an idle HTTP/2 connection is still open after {limit:?}"
    );
}
