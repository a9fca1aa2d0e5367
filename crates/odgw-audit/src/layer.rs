//! The two tower layers that put audit on the request path.
//!
//! - [`AuditLayer`] (outside everything that can answer): one `request`
//!   record per request, durable before the response is released; a request
//!   whose client hangs up first is recorded as [`CLIENT_CLOSED`].
//! - [`IntentLayer`] (just before forwarding): an `intent` record for POST,
//!   PUT, PATCH and DELETE, durable before Open Dental is called, so a write
//!   that reaches Open Dental is on record even if odgw dies before the
//!   response comes back.
//!
//! Both read only the [`RequestContext`] (request id, peer address, and the
//! tenant and caller auth selected, from its facts) and the request line;
//! never bodies or header values.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Method;
use odgw_core::{
    ErrorCode, Facts, GatewayError, Request, RequestContext, RequestFacts, RequestId, Response,
    TenantId,
};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::{AuditError, AuditSink, RecordDraft, RecordKind};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// `Retry-After` of the 503 sent when a record cannot be made durable.
const RETRY_AFTER_SECS: u64 = 1;

/// What both layers share: where records go and what to do when they cannot.
#[derive(Debug, Clone)]
struct Policy {
    sink: Arc<dyn AuditSink>,
    fail_closed: bool,
    write_timeout: Duration,
    failures: Arc<AtomicU64>,
}

impl Policy {
    fn new(sink: Arc<dyn AuditSink>, fail_closed: bool, write_timeout: Duration) -> Self {
        Self {
            sink,
            fail_closed,
            write_timeout,
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn append(&self, draft: RecordDraft) -> Result<u64, AuditError> {
        match tokio::time::timeout(self.write_timeout, self.sink.append(draft)).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::Timeout),
        }
    }

    fn unavailable(&self, request_id: &RequestId) -> Response {
        GatewayError::new(
            ErrorCode::AuditUnavailable,
            "the audit record could not be made durable",
        )
        .with_retry_after(RETRY_AFTER_SECS)
        .into_response(request_id)
    }
}

/// Writes one `request` record per request and releases the response only
/// once that record is durable (SPEC §8).
///
/// With `fail_closed`, a record that cannot be made durable within
/// `write_timeout` turns the response into 503 `audit_unavailable` and the
/// original response (even one already received from Open Dental) is
/// dropped unseen. Without it, the response is released, the failure logged
/// and counted in [`AuditLayer::failures`].
///
/// `duration_ms` runs until the response head; body streaming is not timed.
#[derive(Debug, Clone)]
pub struct AuditLayer {
    policy: Policy,
}

impl AuditLayer {
    /// `fail_closed` and `write_timeout` are `audit.fail_closed` and
    /// `audit.write_timeout`; share one `sink` with the [`IntentLayer`].
    pub fn new(sink: Arc<dyn AuditSink>, fail_closed: bool, write_timeout: Duration) -> Self {
        Self {
            policy: Policy::new(sink, fail_closed, write_timeout),
        }
    }

    /// Records that could not be written while failing open
    /// (`fail_closed = false`), since this layer was built.
    pub fn failures(&self) -> u64 {
        self.policy.failures()
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`AuditLayer`].
#[derive(Debug, Clone)]
pub struct Audit<S> {
    inner: S,
    policy: Policy,
}

impl<S> Service<Request> for Audit<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let context = RequestContext::of(&req, "audit");
        let client_ip = context.as_ref().ok().and_then(RequestContext::client_ip);
        let mut draft = request_line(&req, client_ip, RecordKind::Request);
        let policy = self.policy.clone();
        let announced = policy.sink.announce();
        // The clone-and-swap keeps the instance that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let context = match context {
                Ok(context) => context,
                Err(bug) => {
                    // Still one record per request, under the id it is answered with.
                    let id = bug.request_id();
                    draft.request_id = Some(id.to_string());
                    let response = bug.into_response_with_id(&id);
                    drop(announced);
                    return Ok(finish(&policy, draft, None, response, started, &id).await);
                }
            };
            let (request_id, facts) = (context.id(), context.facts());
            draft.request_id = Some(request_id.to_string());
            // Already known unable to make records durable: refuse before
            // anything is fetched from Open Dental only to be withheld.
            if policy.fail_closed && !policy.sink.is_healthy() {
                tracing::warn!(request_id = %request_id, "audit unavailable: refusing the request (fail closed)");
                return Ok(policy.unavailable(request_id));
            }
            let mut client_gone = ClientGone {
                policy: &policy,
                facts,
                started,
                draft: Some(draft),
            };
            let result = inner.call(req).await;
            let mut draft = client_gone.disarm();
            // The record is about to be appended: the writer need not wait for it.
            drop(announced);
            match result {
                Ok(response) => {
                    let facts = facts.snapshot();
                    Ok(finish(&policy, draft, Some(facts), response, started, request_id).await)
                }
                Err(error) => {
                    // No response reaches the client; still leave a trace.
                    fill_from_facts(&mut draft, &facts.snapshot());
                    draft.status = Some(500);
                    draft.error_code = Some(ErrorCode::Internal.as_str().to_owned());
                    draft.outcome = Some(ErrorCode::Internal.outcome().to_owned());
                    draft.duration_ms = Some(elapsed_ms(started));
                    if let Err(e) = policy.append(draft).await {
                        tracing::error!(request_id = %request_id, error = %e, "audit record for a failed request could not be made durable");
                    }
                    Err(error)
                }
            }
        })
    }
}

/// `outcome` of the `request` record of a request whose client went away
/// before its response was ready (`status` is null: nothing was sent).
/// An addition to SPEC §8's list.
pub const CLIENT_CLOSED: &str = "client_closed";

/// Holds a request's draft record while the layers inside run. hyper drops
/// the request's future when its client hangs up (a closed or reset
/// connection, a cancelled HTTP/2 stream); without this the request would
/// leave no record at all (SPEC §8: one per request), though Open Dental may
/// already have been called for it. Dropped while still holding the draft,
/// it appends the record with what was known by then, from a task of its
/// own since `Drop` cannot wait.
struct ClientGone<'a> {
    policy: &'a Policy,
    facts: &'a RequestFacts,
    started: Instant,
    draft: Option<RecordDraft>,
}

impl ClientGone<'_> {
    /// The request came back: its record is the caller's to complete.
    fn disarm(&mut self) -> RecordDraft {
        self.draft.take().unwrap_or_default()
    }
}

impl Drop for ClientGone<'_> {
    fn drop(&mut self) {
        let Some(mut draft) = self.draft.take() else {
            return;
        };
        fill_from_facts(&mut draft, &self.facts.snapshot());
        draft.outcome = Some(CLIENT_CLOSED.to_owned());
        draft.duration_ms = Some(elapsed_ms(self.started));
        let request_id = draft.request_id.clone().unwrap_or_default();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(%request_id, "client went away during shutdown; its audit record is lost");
            return;
        };
        tracing::debug!(%request_id, "client went away before the response; recording it");
        let policy = self.policy.clone();
        runtime.spawn(async move {
            if let Err(e) = policy.append(draft).await {
                tracing::error!(%request_id, error = %e,
                    "audit record of a request whose client went away could not be made durable");
            }
        });
    }
}

/// Completes the draft from the response and facts, appends it, and decides
/// what the client gets.
async fn finish(
    policy: &Policy,
    mut draft: RecordDraft,
    facts: Option<Facts>,
    response: Response,
    started: Instant,
    request_id: &RequestId,
) -> Response {
    let code = response.extensions().get::<ErrorCode>().copied();
    let facts = facts.unwrap_or_default();
    fill_from_facts(&mut draft, &facts);
    draft.status = Some(response.status().as_u16());
    draft.error_code = code.map(|c| c.as_str().to_owned());
    draft.outcome = Some(facts.outcome(code).to_owned());
    draft.duration_ms = Some(elapsed_ms(started));
    match policy.append(draft).await {
        Ok(_) => response,
        Err(e) if policy.fail_closed => {
            tracing::error!(request_id = %request_id, error = %e, status = response.status().as_u16(),
                "audit record could not be made durable; withholding the response (fail closed)");
            drop(response);
            policy.unavailable(request_id)
        }
        Err(e) => {
            policy.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(request_id = %request_id, error = %e,
                "audit record could not be made durable; releasing the response (fail open)");
            response
        }
    }
}

/// Writes an `intent` record, durable before a POST, PUT, PATCH or DELETE is
/// forwarded to Open Dental (SPEC §8). Other methods pass straight through.
///
/// An intent record carries who, from where and what (method, path, query)
/// with `status`, `upstream_status`, `outcome`, `error_code`, `duration_ms`
/// and `upstream_ms` all null: nothing is known yet. The `request` record
/// written by [`AuditLayer`] when the response is known completes it (same
/// `request_id`).
///
/// When the intent cannot be made durable within `write_timeout`: with
/// `fail_closed`, 503 `audit_unavailable` and Open Dental is not called;
/// without, the request proceeds and the failure is counted.
#[derive(Debug, Clone)]
pub struct IntentLayer {
    policy: Policy,
}

impl IntentLayer {
    /// Same arguments as [`AuditLayer::new`].
    pub fn new(sink: Arc<dyn AuditSink>, fail_closed: bool, write_timeout: Duration) -> Self {
        Self {
            policy: Policy::new(sink, fail_closed, write_timeout),
        }
    }

    /// Intent records that could not be written while failing open.
    pub fn failures(&self) -> u64 {
        self.policy.failures()
    }
}

impl<S> Layer<S> for IntentLayer {
    type Service = Intent<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Intent {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`IntentLayer`].
#[derive(Debug, Clone)]
pub struct Intent<S> {
    inner: S,
    policy: Policy,
}

/// Methods that change data in Open Dental and so need an intent record.
pub fn needs_intent(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl<S> Service<Request> for Intent<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !needs_intent(req.method()) {
            return Box::pin(inner.call(req));
        }
        let policy = self.policy.clone();
        let context = match RequestContext::of(&req, "intent audit") {
            Ok(context) => context,
            Err(bug) => {
                let response = bug.into_response();
                return Box::pin(async move { Ok(response) });
            }
        };
        let request_id = context.id().clone();
        let mut draft = request_line(&req, context.client_ip(), RecordKind::Intent);
        draft.request_id = Some(request_id.to_string());
        // Who and for which tenant, as auth recorded them; nothing about the
        // response is known yet.
        let facts = context.facts().snapshot();
        draft.tenant = facts.tenant.as_ref().map(TenantId::to_string);
        draft.subject = facts.subject().map(str::to_owned);
        draft.issuer = facts.issuer().map(str::to_owned);
        Box::pin(async move {
            if let Err(e) = policy.append(draft).await {
                if policy.fail_closed {
                    tracing::error!(request_id = %request_id, error = %e,
                        "intent record could not be made durable; not forwarding (fail closed)");
                    return Ok(policy.unavailable(&request_id));
                }
                policy.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(request_id = %request_id, error = %e,
                    "intent record could not be made durable; forwarding anyway (fail open)");
            }
            inner.call(req).await
        })
    }
}

/// The parts of a record known from the request line and connection.
fn request_line(req: &Request, client_ip: Option<IpAddr>, kind: RecordKind) -> RecordDraft {
    RecordDraft {
        kind,
        client_ip: client_ip.map(|ip| ip.to_string()),
        method: Some(req.method().as_str().to_owned()),
        path: Some(req.uri().path().to_owned()),
        query: req.uri().query().map(str::to_owned),
        ..RecordDraft::default()
    }
}

fn fill_from_facts(draft: &mut RecordDraft, facts: &Facts) {
    draft.tenant = facts.tenant.as_ref().map(TenantId::to_string);
    draft.subject = facts.subject().map(str::to_owned);
    draft.issuer = facts.issuer().map(str::to_owned);
    draft.upstream_status = facts.upstream_status;
    draft.upstream_ms = facts.upstream_ms;
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
