//! AuthService driven through ServiceBuilder + service_fn (no sockets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use common::*;
use http::{header, Method, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use odgw_auth::{AuthLayer, AuthSettings, Authenticator};
use odgw_core::{
    ApiPath, Body, ErrorCode, Request, RequestContext, RequestFacts, RequestId, Response, TenantId,
};
use serde_json::{json, Value};
use tower::{service_fn, ServiceBuilder, ServiceExt};

const ISS: &str = "https://hs.test/";

struct Harness {
    auth: Authenticator,
    calls: Arc<AtomicUsize>,
}

impl Harness {
    async fn new(settings: AuthSettings) -> Self {
        Self {
            auth: hs_authenticator(settings).await,
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sends `request` through AuthLayer to an inner service that echoes
    /// the caller and tenant recorded in the request's context.
    async fn send(&self, request: Request) -> Response {
        let calls = self.calls.clone();
        let inner = service_fn(move |req: Request| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let context = RequestContext::of(&req, "test").unwrap();
                let principal = context.principal("test").unwrap();
                let tenant = context.selected_tenant("test").unwrap();
                let body = json!({
                    "sub": principal.subject,
                    "tenant": tenant.as_str(),
                    "authorization_seen": req.headers().contains_key(header::AUTHORIZATION),
                });
                Ok::<_, Infallible>(Response::new(Body::from(body.to_string())))
            }
        });
        ServiceBuilder::new()
            .layer(AuthLayer::new(self.auth.clone()))
            .service(inner)
            .oneshot(request)
            .await
            .unwrap()
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn token(claims: &Value) -> String {
    sign(Algorithm::HS256, "hmac", None, claims)
}

/// A request with what the outer layers give it: its context and the
/// guard's admitted path.
fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> (Request, RequestFacts) {
    let mut builder = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(Body::empty()).unwrap();
    let context = RequestContext::new(
        RequestId::from_client(Some(&http::HeaderValue::from_static("rid-1"))),
        None,
    );
    let admitted = ApiPath::from_uri(req.uri()).expect("a path the guard admits");
    req.extensions_mut().insert(admitted);
    req.extensions_mut().insert(context.clone());
    (req, context.facts().clone())
}

async fn json_body(resp: Response) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn valid_token_reaches_inner_with_principal_and_tenant() {
    let h = Harness::new(settings()).await;
    let bearer = format!("Bearer {}", token(&claims(ISS)));
    let (req, facts) = request(
        Method::GET,
        "/api/v1/patients/1",
        &[("authorization", &bearer)],
    );
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json_body(resp).await;
    assert_eq!(body["sub"], "user-1");
    assert_eq!(body["tenant"], "t1");
    assert_eq!(
        body["authorization_seen"], false,
        "bearer token is not passed on"
    );
    let f = facts.snapshot();
    assert_eq!(f.subject(), Some("user-1"));
    assert_eq!(f.issuer(), Some(ISS));
    assert_eq!(f.tenant.as_ref().map(TenantId::as_str), Some("t1"));
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn missing_or_non_bearer_token_is_missing_token() {
    let h = Harness::new(settings()).await;
    let jwt = token(&claims(ISS));
    let basic = "Basic dXNlcjpwYXNz".to_owned();
    let empty_bearer = "Bearer ".to_owned();
    let no_scheme = jwt.clone();
    for headers in [
        vec![],
        vec![("authorization", basic.as_str())],
        vec![("authorization", empty_bearer.as_str())],
        vec![("authorization", no_scheme.as_str())],
    ] {
        let (req, _) = request(Method::GET, "/api/v1/patients", &headers);
        let resp = h.send(req).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert_eq!(resp.headers()["odgw-error"], "missing_token");
        assert_eq!(resp.headers()["x-request-id"], "rid-1");
        assert_eq!(
            resp.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::MissingToken)
        );
        assert_eq!(json_body(resp).await["code"], "missing_token");
    }
    // the scheme is case-insensitive
    let lower = format!("bearer {jwt}");
    let (req, _) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &lower)],
    );
    assert_eq!(h.send(req).await.status(), StatusCode::OK);
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn bad_or_repeated_tokens_are_invalid_token() {
    let h = Harness::new(settings()).await;
    let good = format!("Bearer {}", token(&claims(ISS)));
    let (req, _) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &good), ("authorization", &good)],
    );
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["odgw-error"], "invalid_token");

    let mut expired = claims(ISS);
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 4000);
    let jwt = token(&expired);
    let bearer = format!("Bearer {jwt}");
    let (req, facts) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &bearer)],
    );
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let body = json_body(resp).await;
    assert_eq!(body["code"], "invalid_token");
    assert_eq!(body["detail"], "token expired");
    assert!(!body.to_string().contains(&jwt[..20]), "token never echoed");
    assert!(
        facts.snapshot().subject().is_none(),
        "unverified subject is not recorded"
    );
    assert_eq!(h.calls(), 0);
}

#[tokio::test]
async fn tenant_selection_through_the_layer() {
    let h = Harness::new(settings()).await;
    let mut c = claims(ISS);
    c["tenant"] = json!(["t1", "t2"]);
    let bearer = format!("Bearer {}", token(&c));

    let (req, facts) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &bearer)],
    );
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["odgw-error"], "tenant_not_allowed");
    let f = facts.snapshot();
    assert_eq!(
        f.subject(),
        Some("user-1"),
        "subject known before tenant check"
    );
    assert!(f.tenant.is_none());

    let (req, facts) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &bearer), ("odgw-tenant", " t2 ")],
    );
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_body(resp).await["tenant"], "t2");
    assert_eq!(
        facts.snapshot().tenant.as_ref().map(TenantId::as_str),
        Some("t2")
    );

    for headers in [
        vec![("odgw-tenant", "t3")],
        vec![("odgw-tenant", "t1"), ("odgw-tenant", "t2")],
        vec![("odgw-tenant", "t1,t2")],
    ] {
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend(headers.iter().copied());
        let (req, _) = request(Method::GET, "/api/v1/patients", &all);
        let resp = h.send(req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(resp.headers()["odgw-error"], "tenant_not_allowed");
    }
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn scopes_through_the_layer() {
    let h = Harness::new(settings()).await;
    let with_scope = |scope: &str| {
        let mut c = claims(ISS);
        c["scope"] = json!(scope);
        format!("Bearer {}", token(&c))
    };
    let writer = with_scope("od:read od:write");
    for path in [
        "/api/v1/queries/ShortQuery",
        "/api/v1/QUERIES/shortquery",
        "/api/v1/Queries/ShortQuery/",
    ] {
        let (req, facts) = request(Method::PUT, path, &[("authorization", &writer)]);
        let resp = h.send(req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(resp.headers()["odgw-error"], "insufficient_scope");
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer error="insufficient_scope", scope="od:query""#
        );
        assert_eq!(
            facts.snapshot().tenant.as_ref().map(TenantId::as_str),
            Some("t1"),
            "tenant audited"
        );
    }
    let (req, _) = request(
        Method::POST,
        "/api/v1/queries",
        &[("authorization", &writer)],
    );
    assert_eq!(h.send(req).await.status(), StatusCode::FORBIDDEN);
    let (req, _) = request(
        Method::POST,
        "/api/v1/patients",
        &[("authorization", &writer)],
    );
    assert_eq!(h.send(req).await.status(), StatusCode::OK);

    let querier = with_scope("od:query");
    let (req, _) = request(
        Method::PUT,
        "/api/v1/queries/ShortQuery",
        &[("authorization", &querier)],
    );
    assert_eq!(h.send(req).await.status(), StatusCode::OK);

    let reader = with_scope("od:read");
    let (req, _) = request(
        Method::DELETE,
        "/api/v1/patients/1",
        &[("authorization", &reader)],
    );
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("od:write"));
    let (req, _) = request(
        Method::OPTIONS,
        "/api/v1/patients",
        &[("authorization", &reader)],
    );
    assert_eq!(h.send(req).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.calls(), 2);

    // require_scopes = false lets any verified token through
    let open = Harness::new(AuthSettings {
        require_scopes: false,
        ..settings()
    })
    .await;
    let none = with_scope("");
    let (req, _) = request(
        Method::PUT,
        "/api/v1/queries/ShortQuery",
        &[("authorization", &none)],
    );
    assert_eq!(open.send(req).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn missing_outer_extensions_are_internal_errors() {
    let h = Harness::new(settings()).await;
    let bearer = format!("Bearer {}", token(&claims(ISS)));
    let (mut req, _) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &bearer)],
    );
    req.extensions_mut().remove::<RequestContext>();
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["odgw-error"], "internal_error");

    let (mut req, _) = request(
        Method::GET,
        "/api/v1/patients",
        &[("authorization", &bearer)],
    );
    req.extensions_mut().remove::<ApiPath>();
    let resp = h.send(req).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["x-request-id"], "rid-1");
    assert_eq!(h.calls(), 0);
}
