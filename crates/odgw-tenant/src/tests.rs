//! Tenant resolution driven with real requests over the in-memory key store
//! (the same sealing and store logic as the sled store), with an inner
//! service that records what reached it.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http::{header, StatusCode};
use http_body_util::BodyExt;
use odgw_core::{headers, Body, Rate, RequestId, SecretString, Tenant, TenantId, PROBLEM_JSON};
use odgw_keystore::{
    KeyStore, MemoryKeyStore, PutOutcome, SealedTenant, StoreError, TenantInput, TenantRecord,
    TenantSummary,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};

use super::*;

/// Words of the store errors below; none may reach a client.
const STORE_ERROR_TEXT: &str = "postgres://odgw:hunter2@db.internal";

fn id(text: &str) -> TenantId {
    TenantId::parse(text).unwrap()
}

fn defaults() -> TenantDefaults {
    TenantDefaults {
        base_url: "http://127.0.0.1:1/api/v1".to_owned(),
        developer_key: Some(SecretString::new("dev")),
        rate: "5/s".parse().unwrap(),
        burst: 3,
    }
}

fn input(customer_key: &str) -> TenantInput {
    TenantInput::new(SecretString::new(customer_key))
}

async fn store_with(tenants: &[(&str, TenantInput)]) -> Arc<MemoryKeyStore> {
    let store = MemoryKeyStore::new().unwrap();
    for (tenant, input) in tenants {
        let (outcome, _) = store.put(&id(tenant), input.clone()).await.unwrap();
        assert_eq!(outcome, PutOutcome::Created);
    }
    Arc::new(store)
}

/// The inner service: counts its calls and keeps the [`Tenant`] it saw.
#[derive(Clone, Default)]
struct Inner {
    seen: Arc<Mutex<Vec<Option<Tenant>>>>,
}

impl Inner {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn tenant(&self) -> Tenant {
        let seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "the inner service runs once");
        seen[0].clone().expect("a Tenant extension")
    }

    fn service(
        &self,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
           + Clone
           + Send
           + 'static {
        let seen = self.seen.clone();
        service_fn(move |req: Request| {
            seen.lock()
                .unwrap()
                .push(req.extensions().get::<Tenant>().cloned());
            async { Ok(Response::new(Body::from("from the inner service"))) }
        })
    }
}

/// A request as auth leaves it: a context whose facts name `tenant`.
fn request_for(tenant: &str) -> (Request, RequestId) {
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = "/api/v1/patients".parse().unwrap();
    let request_id = RequestId::generate();
    let context = RequestContext::new(request_id.clone(), None);
    context.facts().update(|f| f.tenant = Some(id(tenant)));
    req.extensions_mut().insert(context);
    (req, request_id)
}

async fn send(store: Arc<dyn KeyStore>, inner: &Inner, req: Request) -> Response {
    ServiceBuilder::new()
        .layer(TenantLayer::new(store, defaults()))
        .service(inner.service())
        .oneshot(req)
        .await
        .unwrap()
}

/// Asserts a refusal: the problem+json for `code` with the headers every
/// odgw-made error carries (and no store error text in it), and the inner
/// service never called. Returns the problem body.
async fn refused(
    response: Response,
    inner: &Inner,
    status: StatusCode,
    code: &str,
) -> serde_json::Value {
    assert_eq!(
        inner.calls(),
        0,
        "a refused request reached the inner service"
    );
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    assert_eq!(response.headers()[headers::ODGW_ERROR], code);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        !text.contains(STORE_ERROR_TEXT),
        "store error leaked: {text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    body
}

#[tokio::test]
async fn an_enabled_tenant_reaches_the_inner_service_with_its_keys_and_the_defaults() {
    let store = store_with(&[("acme", input("cust"))]).await;
    let generation = store.get(&id("acme")).await.unwrap().unwrap().generation;
    let inner = Inner::default();
    let (req, _) = request_for("acme");

    let response = send(store, &inner, req).await;

    assert_eq!(response.status(), StatusCode::OK);
    let tenant = inner.tenant();
    assert_eq!(tenant.id, id("acme"));
    assert_eq!(tenant.authorization.expose(), "ODFHIR dev/cust");
    assert_eq!(tenant.base_url, "http://127.0.0.1:1/api/v1");
    assert_eq!(tenant.rate, defaults().rate);
    assert_eq!(tenant.burst, 3);
    assert_eq!(tenant.generation, generation);
}

#[tokio::test]
async fn a_tenants_own_settings_win_over_the_defaults() {
    let mut own = input("cust2");
    own.developer_key = Some(SecretString::new("owndev"));
    own.base_url = Some("https://od.example/api/v1/".to_owned());
    own.rate = Some(Rate::Unlimited);
    own.burst = Some(7);
    // Another tenant in the store, so the lookup has to pick the right one.
    let store = store_with(&[("acme", input("cust")), ("beta", own)]).await;
    let inner = Inner::default();
    let (req, _) = request_for("beta");

    let response = send(store, &inner, req).await;

    assert_eq!(response.status(), StatusCode::OK);
    let tenant = inner.tenant();
    assert_eq!(tenant.id, id("beta"));
    assert_eq!(tenant.authorization.expose(), "ODFHIR owndev/cust2");
    assert_eq!(tenant.base_url, "https://od.example/api/v1");
    assert_eq!((tenant.rate, tenant.burst), (Rate::Unlimited, 7));
}

#[tokio::test]
async fn an_unknown_tenant_is_403_and_never_reaches_the_inner_service() {
    let store = store_with(&[("acme", input("cust"))]).await;
    let inner = Inner::default();
    let (req, request_id) = request_for("nobody");

    let response = send(store, &inner, req).await;

    let body = refused(response, &inner, StatusCode::FORBIDDEN, "unknown_tenant").await;
    assert_eq!(body["request_id"], request_id.as_str());
}

#[tokio::test]
async fn a_disabled_tenant_is_403_and_never_reaches_the_inner_service() {
    let mut disabled = input("cust");
    disabled.enabled = Some(false);
    let store = store_with(&[("acme", disabled)]).await;
    let inner = Inner::default();
    let (req, request_id) = request_for("acme");

    let response = send(store.clone(), &inner, req).await;

    let body = refused(response, &inner, StatusCode::FORBIDDEN, "tenant_disabled").await;
    assert_eq!(body["request_id"], request_id.as_str());

    // Enabled again, the same tenant passes: the refusal was the flag.
    store.set_enabled(&id("acme"), true).await.unwrap();
    let (req, _) = request_for("acme");
    assert_eq!(send(store, &inner, req).await.status(), StatusCode::OK);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn a_tenant_without_any_developer_key_is_403_unknown_tenant() {
    let store = store_with(&[("acme", input("cust"))]).await;
    let inner = Inner::default();
    let (req, _) = request_for("acme");
    let layer = TenantLayer::new(
        store,
        TenantDefaults {
            developer_key: None,
            ..defaults()
        },
    );

    let response = layer.layer(inner.service()).oneshot(req).await.unwrap();

    refused(response, &inner, StatusCode::FORBIDDEN, "unknown_tenant").await;
}

/// A store whose every operation fails with the error `fail` makes.
#[derive(Debug)]
struct FailingStore {
    fail: fn() -> StoreError,
}

impl FailingStore {
    fn unreachable() -> Arc<Self> {
        Arc::new(Self {
            fail: || StoreError::Unavailable {
                context: "reading a tenant",
                source: format!("connection to {STORE_ERROR_TEXT} refused").into(),
            },
        })
    }

    fn broken() -> Arc<Self> {
        Arc::new(Self {
            fail: || StoreError::Backend {
                context: "reading a tenant",
                source: format!("relation missing at {STORE_ERROR_TEXT}").into(),
            },
        })
    }
}

#[async_trait::async_trait]
impl KeyStore for FailingStore {
    async fn get(&self, _: &TenantId) -> Result<Option<Arc<TenantRecord>>, StoreError> {
        Err((self.fail)())
    }
    async fn put(
        &self,
        _: &TenantId,
        _: TenantInput,
    ) -> Result<(PutOutcome, TenantSummary), StoreError> {
        Err((self.fail)())
    }
    async fn list(&self) -> Result<Vec<TenantSummary>, StoreError> {
        Err((self.fail)())
    }
    async fn summary(&self, _: &TenantId) -> Result<Option<TenantSummary>, StoreError> {
        Err((self.fail)())
    }
    async fn set_enabled(
        &self,
        _: &TenantId,
        _: bool,
    ) -> Result<Option<TenantSummary>, StoreError> {
        Err((self.fail)())
    }
    async fn delete(&self, _: &TenantId) -> Result<bool, StoreError> {
        Err((self.fail)())
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err((self.fail)())
    }
    async fn export_sealed(&self) -> Result<Vec<SealedTenant>, StoreError> {
        Err((self.fail)())
    }
}

#[tokio::test]
async fn an_unreachable_store_is_503_with_retry_after_and_no_store_detail() {
    let inner = Inner::default();
    let (req, request_id) = request_for("acme");

    let response = send(FailingStore::unreachable(), &inner, req).await;

    assert_eq!(
        response.headers()[header::RETRY_AFTER],
        STORE_RETRY_AFTER_SECS.to_string().as_str()
    );
    let body = refused(
        response,
        &inner,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    )
    .await;
    assert_eq!(body["request_id"], request_id.as_str());
}

#[tokio::test]
async fn a_store_that_answers_with_an_error_is_500_without_its_detail() {
    let inner = Inner::default();
    let (req, _) = request_for("acme");

    let response = send(FailingStore::broken(), &inner, req).await;

    // Retrying will not help a broken store: no Retry-After.
    assert!(response.headers().get(header::RETRY_AFTER).is_none());
    refused(
        response,
        &inner,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
}

#[tokio::test]
async fn without_a_request_context_it_is_a_stack_order_bug() {
    let store = store_with(&[("acme", input("cust"))]).await;
    let inner = Inner::default();
    let req = Request::new(Body::empty());

    let response = send(store, &inner, req).await;

    refused(
        response,
        &inner,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
}

#[tokio::test]
async fn without_a_selected_tenant_it_is_a_stack_order_bug_under_the_requests_id() {
    let store = store_with(&[("acme", input("cust"))]).await;
    let inner = Inner::default();
    let mut req = Request::new(Body::empty());
    let request_id = RequestId::generate();
    // The context layer ran, auth did not.
    req.extensions_mut()
        .insert(RequestContext::new(request_id.clone(), None));

    let response = send(store, &inner, req).await;

    let body = refused(
        response,
        &inner,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    assert_eq!(body["request_id"], request_id.as_str());
}
