//! The admin API of odgw (SPEC §6), served on `server.admin_listen`.
//!
//! [`router`] builds the axum router from [`AdminParts`]. Every `/admin/`
//! route requires `Authorization: Bearer <admin token>` (compared in constant
//! time); `/healthz`, `/readyz` and `/metrics` are open. Every change made
//! here (tenant put/enable/disable/delete, cache purge) leaves an `admin`
//! audit record that is durable before the response is sent, and so does
//! `POST /admin/v1/reload` ([`ConfigReload`]), refused or not.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::IntoResponse,
    routing::{delete, get, post, put},
    Router,
};
use odgw_audit::{AuditSink, RecordDraft, RecordKind};
use odgw_cache::ResponseCache;
use odgw_core::{
    ClientIp, ErrorCode, GatewayError, Rate, RequestContext, RequestId, Response, SecretString,
    StackOrderBug, TenantId,
};
use odgw_keystore::{KeyStore, PutOutcome, TenantInput};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

mod audit_routes;
mod auth;
mod metrics;

pub use auth::AdminToken;

/// The result of calling Open Dental with a tenant's keys.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    pub ok: bool,
    pub upstream_status: Option<u16>,
    pub program_version: Option<String>,
    /// Why the check failed, when it did (never a key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Calls Open Dental for `tenant check`; implemented by the gateway, which
/// owns the upstream client and the tenant's pacing budget.
pub trait TenantProbe: Send + Sync + std::fmt::Debug {
    fn check(
        &self,
        tenant: TenantId,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<CheckReport, GatewayError>> + Send>,
    >;
}

/// Readiness of the gateway's parts, for `/readyz`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<ReadinessCheck>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReadinessCheck {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

type Readyz = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Readiness> + Send>>
        + Send
        + Sync,
>;

/// The response cache in use right now: a reload may replace it (new
/// `[cache]` settings), and purges must reach the one being served.
pub type CurrentCache = Arc<dyn Fn() -> ResponseCache + Send + Sync>;

/// What `POST /admin/v1/reload` answers when the new configuration is applied.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Always true in an answer; a refused reload is a problem response.
    pub reloaded: bool,
    /// Keys whose new values are now in effect (`section.key`).
    pub changed: Vec<String>,
    /// Keys that differ from the running process but only take effect after
    /// a restart; their old values stay in effect.
    pub restart_required: Vec<String>,
}

/// Re-reads and applies the gateway's configuration; implemented by the
/// gateway. An `Err` is the reason the new configuration was refused (the
/// old one keeps serving); it never contains a secret.
pub trait ConfigReload: Send + Sync + std::fmt::Debug {
    fn reload(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<ReloadReport, String>> + Send + '_>,
    >;
}

/// What the admin API needs from the gateway.
#[derive(Clone)]
pub struct AdminParts {
    pub store: Arc<dyn KeyStore>,
    pub cache: CurrentCache,
    pub audit: Arc<dyn AuditSink>,
    pub audit_dir: PathBuf,
    pub token: SecretString,
    pub probe: Arc<dyn TenantProbe>,
    pub readiness: Readyz,
    /// Every part's metrics, encoded at each `GET /metrics`.
    pub metrics: Arc<Registry>,
    pub reload: Arc<dyn ConfigReload>,
}

impl std::fmt::Debug for AdminParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminParts")
            .field("audit_dir", &self.audit_dir)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct AppState {
    parts: AdminParts,
    token: AdminToken,
}

/// The admin router: `/admin/v1/...` (token required), `/healthz`, `/readyz`, `/metrics`.
pub fn router(parts: AdminParts) -> Router {
    let state = AppState {
        token: AdminToken::new(&parts.token),
        parts,
    };
    let admin = Router::new()
        .route("/admin/v1/tenants", get(list_tenants))
        .route(
            "/admin/v1/tenants/{id}",
            put(put_tenant).get(show_tenant).delete(delete_tenant),
        )
        .route("/admin/v1/tenants/{id}/enable", post(enable_tenant))
        .route("/admin/v1/tenants/{id}/disable", post(disable_tenant))
        .route("/admin/v1/tenants/{id}/check", post(check_tenant))
        .route("/admin/v1/cache", delete(purge_cache))
        .route("/admin/v1/audit", get(audit_routes::query))
        .route("/admin/v1/audit/verify", get(audit_routes::verify))
        .route("/admin/v1/reload", post(reload_config))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .layer(middleware::from_fn(run_to_completion));
    Router::new()
        .merge(admin)
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(with_request_id))
        .with_state(state)
}

/// Gives every admin request its [`RequestContext`] (and echoes its id in
/// `X-Request-Id`), as on the data plane. Public so that routes merged beside the admin API (the console)
/// get the same.
pub async fn with_request_id(mut req: axum::extract::Request, next: Next) -> Response {
    let id = RequestId::from_client(req.headers().get("x-request-id"));
    let client_ip = req.extensions().get::<ClientIp>().map(|c| c.0).or_else(|| {
        req.extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    });
    req.extensions_mut()
        .insert(RequestContext::new(id.clone(), client_ip));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Runs each admin request in a task of its own. hyper drops a request's
/// handler when its client hangs up; for a change that would leave it applied
/// without its audit record (SPEC §8: one record per admin action), or cut off
/// in the middle of the store's flush. The client that left simply never
/// reads the answer.
async fn run_to_completion(req: axum::extract::Request, next: Next) -> Response {
    let context = match RequestContext::of(&req, "admin") {
        Ok(context) => context,
        Err(bug) => return bug.into_response(),
    };
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "admin request handler failed");
            GatewayError::new(ErrorCode::Internal, "internal error").into_response(context.id())
        }
    }
}

/// Facts about one admin request, for its problem responses and audit record.
#[derive(Debug, Clone)]
struct Ctx {
    request_id: RequestId,
    client_ip: Option<std::net::IpAddr>,
    method: Method,
    path: String,
    query: Option<String>,
    started: Instant,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = Response;
    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let context = RequestContext::from_extensions(&parts.extensions, "admin")
            .map_err(StackOrderBug::into_response)?;
        Ok(Ctx {
            request_id: context.id().clone(),
            client_ip: context.client_ip(),
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            started: Instant::now(),
        })
    }
}

impl Ctx {
    fn error(
        &self,
        code: ErrorCode,
        detail: impl Into<std::borrow::Cow<'static, str>>,
    ) -> Response {
        GatewayError::new(code, detail).into_response(&self.request_id)
    }

    /// Appends the `admin` record for a change and waits until it is durable.
    /// If it cannot be made durable the client learns so (503), even though
    /// the change itself was already applied.
    async fn audited(
        &self,
        audit: &Arc<dyn AuditSink>,
        action: &'static str,
        target: Option<&str>,
        response: Response,
    ) -> Response {
        let code = response.extensions().get::<ErrorCode>().copied();
        let mut draft = RecordDraft::new(RecordKind::Admin);
        draft.request_id = Some(self.request_id.as_str().to_owned());
        draft.client_ip = self.client_ip.map(|ip| ip.to_string());
        draft.method = Some(self.method.as_str().to_owned());
        draft.path = Some(self.path.clone());
        draft.query = self.query.clone();
        draft.status = Some(response.status().as_u16());
        // A change that went through has no data-plane outcome; a refused one is `denied`.
        draft.outcome = code.map(|c| c.outcome().to_owned());
        draft.error_code = code.map(|c| c.as_str().to_owned());
        draft.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        draft.action = Some(action.to_owned());
        draft.target = target.map(str::to_owned);
        match audit.append(draft).await {
            Ok(_) => response,
            Err(error) => {
                tracing::error!(%error, action, "admin audit record not durable");
                self.error(
                    ErrorCode::AuditUnavailable,
                    "the change was applied but its audit record could not be made durable",
                )
            }
        }
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "serialization failed").into_response(),
    }
}

fn parse_id(id: &str) -> Result<TenantId, GatewayError> {
    TenantId::parse(id).map_err(|_| {
        GatewayError::new(
            ErrorCode::BadRequest,
            "tenant id must match [A-Za-z0-9._-]{1,64}",
        )
    })
}

fn store_error(ctx: &Ctx, error: odgw_keystore::StoreError) -> Response {
    match &error {
        odgw_keystore::StoreError::InvalidInput(reason) => {
            ctx.error(ErrorCode::BadRequest, reason.clone())
        }
        // A shared store that cannot be reached. The change was almost
        // surely not made; if the connection broke during its COMMIT it may
        // have been. Repeating it is safe either way: every admin change
        // sets a state rather than adding to one.
        odgw_keystore::StoreError::Unavailable { .. } => {
            tracing::warn!(%error, "key store unreachable; admin change refused");
            let mut problem = GatewayError::new(
                ErrorCode::StoreUnavailable,
                "the key store cannot be reached; retry later",
            );
            problem.retry_after = Some(STORE_RETRY_AFTER_SECS);
            problem.into_response(&ctx.request_id)
        }
        _ => {
            tracing::error!(%error, "key store operation failed");
            ctx.error(ErrorCode::Internal, "key store operation failed")
        }
    }
}

/// `Retry-After` on a 503 `store_unavailable`: about one reconnect attempt.
const STORE_RETRY_AFTER_SECS: u64 = 2;

/// `PUT /admin/v1/tenants/{id}` body. Keys arrive here and nowhere else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutTenantBody {
    customer_key: String,
    developer_key: Option<String>,
    base_url: Option<String>,
    rate: Option<String>,
    burst: Option<u32>,
    name: Option<String>,
    enabled: Option<bool>,
}

async fn put_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let response = put_tenant_inner(&state, &ctx, &id, &body).await;
    let target = TenantId::parse(&id).ok();
    ctx.audited(
        &state.parts.audit,
        "tenant.put",
        target.as_ref().map(TenantId::as_str),
        response,
    )
    .await
}

async fn put_tenant_inner(state: &AppState, ctx: &Ctx, id: &str, body: &[u8]) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(e) => return e.into_response(&ctx.request_id),
    };
    // serde's messages could quote the offending value (a key): keep only
    // the position and kind of the problem.
    let body: PutTenantBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            let detail = match e.classify() {
                serde_json::error::Category::Data => {
                    "body must be {\"customer_key\", \"developer_key\"?, \"base_url\"?, \"rate\"?, \"burst\"?, \"name\"?, \"enabled\"?} with the right types".to_owned()
                }
                _ => format!("body is not valid JSON (line {}, column {})", e.line(), e.column()),
            };
            return ctx.error(ErrorCode::BadRequest, detail);
        }
    };
    let rate = match body.rate.as_deref().map(str::parse::<Rate>).transpose() {
        Ok(rate) => rate,
        Err(e) => return ctx.error(ErrorCode::BadRequest, e.to_string()),
    };
    let input = TenantInput {
        name: body.name,
        customer_key: SecretString::new(body.customer_key),
        developer_key: body.developer_key.map(SecretString::new),
        base_url: body.base_url,
        rate,
        burst: body.burst,
        enabled: body.enabled,
    };
    match state.parts.store.put(&id, input).await {
        Ok((outcome, summary)) => {
            // New keys or settings: nothing cached under the old ones may be served.
            (state.parts.cache)().purge_tenant(&id);
            let status = match outcome {
                PutOutcome::Created => StatusCode::CREATED,
                PutOutcome::Replaced => StatusCode::OK,
            };
            json(status, &summary)
        }
        Err(e) => store_error(ctx, e),
    }
}

async fn list_tenants(State(state): State<AppState>, ctx: Ctx) -> Response {
    match state.parts.store.list().await {
        Ok(list) => json(StatusCode::OK, &list),
        Err(e) => store_error(&ctx, e),
    }
}

async fn show_tenant(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return e.into_response(&ctx.request_id),
    };
    match state.parts.store.summary(&id).await {
        Ok(Some(summary)) => json(StatusCode::OK, &summary),
        Ok(None) => ctx.error(ErrorCode::NotFound, "no such tenant"),
        Err(e) => store_error(&ctx, e),
    }
}

async fn enable_tenant(state: State<AppState>, ctx: Ctx, id: Path<String>) -> Response {
    toggle(state, ctx, id, true).await
}

async fn disable_tenant(state: State<AppState>, ctx: Ctx, id: Path<String>) -> Response {
    toggle(state, ctx, id, false).await
}

async fn toggle(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    enabled: bool,
) -> Response {
    let action = if enabled {
        "tenant.enable"
    } else {
        "tenant.disable"
    };
    let response = match parse_id(&id) {
        Err(e) => e.into_response(&ctx.request_id),
        Ok(tid) => match state.parts.store.set_enabled(&tid, enabled).await {
            Ok(Some(summary)) => {
                if !enabled {
                    (state.parts.cache)().purge_tenant(&tid);
                }
                json(StatusCode::OK, &summary)
            }
            Ok(None) => ctx.error(ErrorCode::NotFound, "no such tenant"),
            Err(e) => store_error(&ctx, e),
        },
    };
    let target = TenantId::parse(&id).ok();
    ctx.audited(
        &state.parts.audit,
        action,
        target.as_ref().map(TenantId::as_str),
        response,
    )
    .await
}

async fn delete_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let response = match parse_id(&id) {
        Err(e) => e.into_response(&ctx.request_id),
        Ok(tid) => match state.parts.store.delete(&tid).await {
            Ok(true) => {
                (state.parts.cache)().purge_tenant(&tid);
                StatusCode::NO_CONTENT.into_response()
            }
            Ok(false) => ctx.error(ErrorCode::NotFound, "no such tenant"),
            Err(e) => store_error(&ctx, e),
        },
    };
    let target = TenantId::parse(&id).ok();
    ctx.audited(
        &state.parts.audit,
        "tenant.delete",
        target.as_ref().map(TenantId::as_str),
        response,
    )
    .await
}

async fn check_tenant(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let response = match parse_id(&id) {
        Err(e) => e.into_response(&ctx.request_id),
        Ok(tid) => match state.parts.probe.check(tid).await {
            Ok(report) => json(StatusCode::OK, &report),
            Err(error) => error.into_response(&ctx.request_id),
        },
    };
    let target = TenantId::parse(&id).ok();
    ctx.audited(
        &state.parts.audit,
        "tenant.check",
        target.as_ref().map(TenantId::as_str),
        response,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeQuery {
    tenant: Option<String>,
}

async fn purge_cache(
    State(state): State<AppState>,
    ctx: Ctx,
    query: Result<Query<PurgeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (response, target) = match query {
        Err(_) => (
            ctx.error(ErrorCode::BadRequest, "the only query parameter is tenant"),
            None,
        ),
        Ok(Query(PurgeQuery { tenant: Some(t) })) => match parse_id(&t) {
            Ok(tid) => {
                (state.parts.cache)().purge_tenant(&tid);
                (announce_purge(&state, &ctx, Some(&tid)).await, Some(t))
            }
            Err(e) => (e.into_response(&ctx.request_id), None),
        },
        Ok(Query(PurgeQuery { tenant: None })) => {
            (state.parts.cache)().purge_all();
            (announce_purge(&state, &ctx, None).await, None)
        }
    };
    ctx.audited(
        &state.parts.audit,
        "cache.purge",
        target.as_deref(),
        response,
    )
    .await
}

/// Tells every replica sharing the key store to purge too (a no-op for a
/// single node's store). This replica has purged already; if the others
/// cannot be told, the client gets 503 and may simply repeat the purge.
async fn announce_purge(state: &AppState, ctx: &Ctx, tenant: Option<&TenantId>) -> Response {
    match state.parts.store.announce_purge(tenant).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(ctx, e),
    }
}

/// `POST /admin/v1/reload`: re-read the configuration file and apply what
/// can change at run time; 400 `bad_request` with the reason when refused.
async fn reload_config(State(state): State<AppState>, ctx: Ctx) -> Response {
    let response = match state.parts.reload.reload().await {
        Ok(report) => json(StatusCode::OK, &report),
        Err(reason) => ctx.error(ErrorCode::BadRequest, reason),
    };
    ctx.audited(&state.parts.audit, "config.reload", None, response)
        .await
}

async fn readyz(State(state): State<AppState>) -> Response {
    let report = (state.parts.readiness)().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &report)
}

async fn not_found(ctx: Ctx, _headers: HeaderMap) -> Response {
    ctx.error(ErrorCode::NotFound, "no such admin route")
}
