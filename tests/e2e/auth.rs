//! Token verification, tenant selection and scopes through the real gateway
//! (SPEC §4, rows missing_token … tenant_disabled).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::support::*;

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn missing_and_malformed_tokens() {
    let gw = TestGateway::start().await;
    let resp = gw.get("/api/v1/patients/11", None).await;
    resp.assert_problem(401, "missing_token");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));

    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Basic {}", "Zm9vOmJhcg=="))
        .body(Full::default())
        .unwrap();
    gw.send(req).await.assert_problem(401, "missing_token");

    let resp = gw.get("/api/v1/patients/11", Some("not.a.jwt")).await;
    resp.assert_problem(401, "invalid_token");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );

    // Two Authorization headers are refused even when both are valid.
    let token = gw.token(json!({}));
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    gw.send(req).await.assert_problem(401, "invalid_token");
    assert!(gw.mock.mock.requests().is_empty());
}

#[tokio::test]
async fn claims_are_checked_strictly() {
    let gw = TestGateway::start().await;
    let now = now();
    let cases = [
        ("expired", json!({"exp": now - 120, "iat": now - 600})),
        ("not yet valid", json!({"nbf": now + 600})),
        (
            "issued in the future",
            json!({"iat": now + 600, "exp": now + 900}),
        ),
        ("wrong audience", json!({"aud": "someone-else"})),
        ("no exp", json!({"exp": null})),
        (
            "overlong lifetime",
            json!({"iat": now, "exp": now + 2 * 86_400}),
        ),
        (
            "overlong lifetime without iat",
            json!({"iat": null, "exp": now + 2 * 86_400}),
        ),
        ("no sub", json!({"sub": null})),
    ];
    for (what, claims) in cases {
        let resp = gw.get("/api/v1/patients/11", Some(&gw.token(claims))).await;
        assert_eq!(resp.status, 401, "{what}: {resp:?}");
        resp.assert_problem(401, "invalid_token");
    }
    // Within leeway (30 s) an expired token still passes.
    let ok = gw.token(json!({"exp": now - 5, "iat": now - 60}));
    assert_eq!(gw.get("/api/v1/patients/11", Some(&ok)).await.status, 200);
    // An audience list containing ours passes.
    let ok = gw.token(json!({"aud": ["x", AUDIENCE]}));
    assert_eq!(gw.get("/api/v1/patients/11", Some(&ok)).await.status, 200);
}

#[tokio::test]
async fn wrong_issuer_alg_none_and_algorithm_confusion_fail() {
    let gw = TestGateway::start().await;
    // Signed with the right secret but claiming an unknown issuer.
    let t = gw.token(json!({"iss": "https://evil.test/"}));
    gw.get("/api/v1/patients/11", Some(&t))
        .await
        .assert_problem(401, "invalid_token");

    // alg none: header + claims, empty signature.
    let claims = default_claims(HS_ISSUER);
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    gw.get("/api/v1/patients/11", Some(&none))
        .await
        .assert_problem(401, "invalid_token");

    // HS256 signed with the RS issuer's public key PEM as the HMAC secret.
    let pem = std::fs::read(fixture("rsa.pub.pem")).unwrap();
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &default_claims(RS_ISSUER),
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    gw.get("/api/v1/patients/11", Some(&confused))
        .await
        .assert_problem(401, "invalid_token");

    // The RS issuer itself works with a real RS256 signature...
    let good = rs256_token("rsa.key", None, &default_claims(RS_ISSUER));
    assert_eq!(gw.get("/api/v1/patients/11", Some(&good)).await.status, 200);
    // ...but not with another key.
    let other = rs256_token("rsa2.key", None, &default_claims(RS_ISSUER));
    gw.get("/api/v1/patients/11", Some(&other))
        .await
        .assert_problem(401, "invalid_token");

    // A token with a crit header is refused.
    let crit = format!(
        "{}.{}.",
        b64(&json!({"alg": "HS256", "crit": ["exp"]})),
        b64(&default_claims(HS_ISSUER))
    );
    gw.get("/api/v1/patients/11", Some(&crit))
        .await
        .assert_problem(401, "invalid_token");
    assert_eq!(
        gw.mock.mock.requests().len(),
        1,
        "only the one good token reached Open Dental"
    );
}

#[tokio::test]
async fn tenant_selection_and_crossing() {
    let gw = TestGateway::start().await;
    // Token for a: practice b cannot be reached, in any way.
    let a = gw.token(json!({"tenant": "a"}));
    for value in ["b", "a,b", "b ", " a, b", "A"] {
        let req = Request::get(gw.url("/api/v1/patients/11"))
            .header("authorization", format!("Bearer {a}"))
            .header("odgw-tenant", value)
            .body(Full::default())
            .unwrap();
        gw.send(req).await.assert_problem(403, "tenant_not_allowed");
    }
    // Two Odgw-Tenant headers are refused.
    let both = gw.token(json!({"tenant": ["a", "b"]}));
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {both}"))
        .header("odgw-tenant", "a")
        .header("odgw-tenant", "b")
        .body(Full::default())
        .unwrap();
    gw.send(req).await.assert_problem(403, "tenant_not_allowed");
    // Several tenants and no header: none chosen.
    gw.get("/api/v1/patients/11", Some(&both))
        .await
        .assert_problem(403, "tenant_not_allowed");
    assert!(gw.mock.mock.requests().is_empty());

    // The header picks b among several: b's key pair goes upstream.
    let req = Request::get(gw.url("/api/v1/patients/11"))
        .header("authorization", format!("Bearer {both}"))
        .header("odgw-tenant", "b")
        .body(Full::default())
        .unwrap();
    assert_eq!(gw.send(req).await.status, 200);
    let seen = gw.mock.mock.requests();
    assert_eq!(
        seen[0].header_values("authorization"),
        vec![format!("ODFHIR {DEV_KEY}/{KEY_B}")]
    );

    // A token without the tenant claim grants nothing.
    let none = gw.token(json!({"tenant": null}));
    gw.get("/api/v1/patients/11", Some(&none))
        .await
        .assert_problem(403, "tenant_not_allowed");
}

#[tokio::test]
async fn unknown_and_disabled_tenants() {
    let gw = TestGateway::start().await;
    let t = gw.token(json!({"tenant": "nobody"}));
    gw.get("/api/v1/patients/11", Some(&t))
        .await
        .assert_problem(403, "unknown_tenant");

    let resp = gw
        .admin(Method::POST, "/admin/v1/tenants/a/disable", None)
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["enabled"], false);
    let t = gw.token(json!({}));
    gw.get("/api/v1/patients/11", Some(&t))
        .await
        .assert_problem(403, "tenant_disabled");
    gw.admin(Method::POST, "/admin/v1/tenants/a/enable", None)
        .await;
    assert_eq!(gw.get("/api/v1/patients/11", Some(&t)).await.status, 200);
}

#[tokio::test]
async fn scopes() {
    let gw = TestGateway::start().await;
    let read_only = gw.token(json!({"scope": "od:read"}));
    let post = |token: String, path: &'static str, method: Method, body: &'static str| {
        Request::builder()
            .method(method)
            .uri(gw.url(path))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    assert_eq!(
        gw.get("/api/v1/patients/11", Some(&read_only)).await.status,
        200
    );
    let resp = gw
        .send(post(
            read_only.clone(),
            "/api/v1/patients",
            Method::POST,
            "{}",
        ))
        .await;
    resp.assert_problem(403, "insufficient_scope");
    assert_eq!(
        resp.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope", scope="od:write""#)
    );
    let no_read = gw.token(json!({"scope": "od:write"}));
    gw.get("/api/v1/patients/11", Some(&no_read))
        .await
        .assert_problem(403, "insufficient_scope");

    // Raw SQL needs od:query; od:write is neither needed nor enough, in any spelling.
    let sql = r#"{"SqlCommand":"SELECT PatNum FROM patient"}"#;
    let writer = gw.token(json!({"scope": "od:read od:write"}));
    for path in [
        "/api/v1/queries/ShortQuery",
        "/api/v1/QUERIES/shortquery",
        "/api/v1/queries/ShortQuery/",
    ] {
        gw.send(post(writer.clone(), path, Method::PUT, sql))
            .await
            .assert_problem(403, "insufficient_scope");
    }
    gw.send(post(writer.clone(), "/api/v1/queries", Method::POST, sql))
        .await
        .assert_problem(403, "insufficient_scope");
    assert_eq!(
        gw.mock.mock.requests().len(),
        1,
        "only the permitted GET reached Open Dental"
    );
    let querier = gw.token(json!({"scope": "od:query", "scp": null}));
    let resp = gw
        .send(post(
            querier,
            "/api/v1/queries/ShortQuery",
            Method::PUT,
            sql,
        ))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    // scp as an array works too.
    let scp = gw.token(json!({"scope": null, "scp": ["od:read"]}));
    assert_eq!(gw.get("/api/v1/patients/11", Some(&scp)).await.status, 200);
}

/// A JWKS endpoint whose document the test can change, counting fetches.
struct Jwks {
    url: String,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(initial: &str) -> Jwks {
    let doc = Arc::new(Mutex::new(
        std::fs::read_to_string(fixture(initial)).unwrap(),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let (d, h) = (doc.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (d, h) = (d.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let body = d.lock().unwrap().clone();
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Jwks {
        url: format!("http://{addr}/jwks.json"),
        doc,
        hits,
    }
}

fn jwks_issuer(url: &str) -> Options {
    Options {
        extra_toml: format!(
            "\n[[auth.issuers]]\nissuer = \"{JWKS_ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\njwks_url = \"{url}\"\n"
        ),
        ..Options::default()
    }
}

const JWKS_ISSUER: &str = "https://jwks.test/";

#[tokio::test]
async fn jwks_requires_kid_and_coalesces_unknown_kid_refetches() {
    let jwks = jwks_server("jwks-k1.json").await;
    let gw = TestGateway::start_with(jwks_issuer(&jwks.url)).await;
    let claims = default_claims(JWKS_ISSUER);
    let k1 = rs256_token("rsa.key", Some("k1"), &claims);
    assert_eq!(gw.get("/api/v1/patients/11", Some(&k1)).await.status, 200);

    // No kid with a JWKS issuer: refused.
    let no_kid = rs256_token("rsa.key", None, &claims);
    gw.get("/api/v1/patients/11", Some(&no_kid))
        .await
        .assert_problem(401, "invalid_token");

    // A burst of tokens with an unknown kid: all refused, at most one refetch.
    let before = jwks.hits.load(Ordering::SeqCst);
    let k9 = rs256_token("rsa2.key", Some("k9"), &claims);
    let attempts = (0..20).map(|_| gw.get("/api/v1/patients/11", Some(&k9)));
    for resp in futures_util::future::join_all(attempts).await {
        resp.assert_problem(401, "invalid_token");
    }
    let refetches = jwks.hits.load(Ordering::SeqCst) - before;
    assert!(refetches <= 1, "{refetches} refetches for one unknown kid");
    // A kid that matches but a signature from another key still fails.
    let forged = rs256_token("rsa2.key", Some("k1"), &claims);
    gw.get("/api/v1/patients/11", Some(&forged))
        .await
        .assert_problem(401, "invalid_token");
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_without_restart() {
    let jwks = jwks_server("jwks-k1.json").await;
    let gw = TestGateway::start_with(jwks_issuer(&jwks.url)).await;
    let claims = default_claims(JWKS_ISSUER);
    let k1 = rs256_token("rsa.key", Some("k1"), &claims);
    assert_eq!(gw.get("/api/v1/patients/11", Some(&k1)).await.status, 200);

    // The IdP rotates: k2 is published while the gateway runs.
    *jwks.doc.lock().unwrap() = std::fs::read_to_string(fixture("jwks-k1-k2.json")).unwrap();
    let k2 = rs256_token("rsa2.key", Some("k2"), &claims);
    assert_eq!(gw.get("/api/v1/patients/11", Some(&k2)).await.status, 200);
    assert_eq!(gw.get("/api/v1/patients/11", Some(&k1)).await.status, 200);

    // The endpoint starts failing: the last good keys keep working.
    *jwks.doc.lock().unwrap() = "not json".into();
    assert_eq!(gw.get("/api/v1/patients/11", Some(&k2)).await.status, 200);
    // Startup fetch plus the one refetch for k2, both good.
    let text = gw.metrics().await;
    assert!(text.contains("odgw_jwks_fetches_total 2"), "{text}");
    assert!(text.contains("odgw_jwks_fetch_failures_total 0"), "{text}");
}

#[tokio::test]
async fn a_repeated_token_is_answered_from_memory_and_counted() {
    let gw = TestGateway::start().await;
    let token = gw.token(json!({}));
    for _ in 0..3 {
        assert_eq!(
            gw.get("/api/v1/patients/11", Some(&token)).await.status,
            200
        );
    }
    // A forged copy is never answered from memory.
    let forged = format!("{token}x");
    gw.get("/api/v1/patients/11", Some(&forged))
        .await
        .assert_problem(401, "invalid_token");
    let text = gw.metrics().await;
    assert!(
        text.contains("odgw_token_verifications_remembered_total 2"),
        "{text}"
    );
    assert!(
        text.contains("odgw_token_verifications_checked_total 2"),
        "{text}"
    );
}
