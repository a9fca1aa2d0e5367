//! The tenant pacing layer: waits for the tenant's upstream budget, and turns
//! Open Dental's own 429s into pauses and (for reads) one retry.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, StatusCode};
use http_body::Body as _;
use odgw_core::{
    Body, ErrorCode, GatewayError, RateLimitInfo, Request, RequestContext, RequestId, Response,
    ReturnedRequest,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{PaceRejection, Pacer, PacingSettings, Reason};

/// The pause taken when Open Dental's 429 has no usable `Retry-After`
/// (public clients use the same default).
pub const DEFAULT_UPSTREAM_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest pause an upstream `Retry-After` may impose, so a garbled or
/// hostile value cannot stall a tenant for hours.
pub const MAX_UPSTREAM_RETRY_AFTER: Duration = Duration::from_secs(120);

/// This layer's name in stack-order bug reports.
const LAYER: &str = "pacing";

/// Paces requests to their tenant's upstream budget.
///
/// Reads the [`RequestContext`] and the resolved [`odgw_core::Tenant`].
/// - No slot within `queue_timeout`, or the queue is full: 429
///   `rate_limited`, Open Dental is not called.
/// - The shared budget store is unreachable and its policy is to refuse
///   ([`Reason::Unavailable`]): 503 `limiter_unavailable`.
/// - Open Dental answers 429 (a 429 without an [`ErrorCode`] extension): the
///   tenant is paused for its `Retry-After`; a GET or HEAD without a body is
///   retried once if a slot comes within the request's deadline (arrival +
///   `queue_timeout`); otherwise, and for every other method, 429
///   `upstream_throttled`. The retry is sent from the [`ReturnedRequest`]
///   the inner service put on its 429; without one there is no retry.
#[derive(Debug, Clone)]
pub struct PacingLayer {
    pacer: Arc<dyn Pacer>,
    settings: PacingSettings,
}

impl PacingLayer {
    pub fn new(pacer: Arc<dyn Pacer>, settings: PacingSettings) -> Self {
        Self { pacer, settings }
    }
}

impl<S> Layer<S> for PacingLayer {
    type Service = Pacing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Pacing {
            inner,
            pacer: Arc::clone(&self.pacer),
            settings: self.settings,
        }
    }
}

/// The service made by [`PacingLayer`].
#[derive(Debug, Clone)]
pub struct Pacing<S> {
    inner: S,
    pacer: Arc<dyn Pacer>,
    settings: PacingSettings,
}

impl<S> Service<Request> for Pacing<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner service is awaited after the slot, not
        // before: holding a reserved inner service while queueing would tie
        // up capacity for the whole wait.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let pacer = Arc::clone(&self.pacer);
        let settings = self.settings;
        Box::pin(pace(inner, pacer, settings, request))
    }
}

async fn pace<S>(
    mut inner: S,
    pacer: Arc<dyn Pacer>,
    settings: PacingSettings,
    request: Request,
) -> Result<Response, S::Error>
where
    S: Service<Request, Response = Response>,
{
    let arrival = Instant::now();
    let context = RequestContext::of(&request, LAYER);
    let (tenant, context) = match context.and_then(|c| Ok((c.tenant(&request, LAYER)?, c))) {
        Ok(found) => found,
        Err(bug) => return Ok(bug.into_response()),
    };
    let request_id = context.id().clone();
    let (tenant_id, rate, burst) = (tenant.id.clone(), tenant.rate, tenant.burst);
    let limit = u64::from(burst.max(1));
    let deadline = arrival + settings.queue_timeout;

    let permit = pacer
        .acquire(&tenant_id, rate, burst, settings.queue_timeout)
        .await;
    let waited = match &permit {
        Ok(permit) => permit.waited,
        Err(_) => Duration::ZERO,
    };
    context
        .facts()
        .update(|f| f.pacing_wait_ms = Some(waited.as_millis() as u64));
    if let Err(rejection) = permit {
        if rejection.reason == Reason::Unavailable {
            // The outage itself is logged once by the limiter, not per request.
            tracing::debug!(
                tenant = %tenant_id,
                request_id = %request_id,
                "tenant budget store unreachable"
            );
            return Ok(limiter_unavailable(rejection.retry_after, &request_id));
        }
        tracing::info!(
            tenant = %tenant_id,
            request_id = %request_id,
            reason = ?rejection.reason,
            retry_after_ms = rejection.retry_after.as_millis() as u64,
            "tenant budget exhausted"
        );
        return Ok(rate_limited(&rejection, &request_id));
    }

    let replayable = replayable(&request);
    let mut response = inner.ready().await?.call(request).await?;
    let Some(retry_after) = upstream_throttle(&response) else {
        return Ok(response);
    };
    // The head to retry from, if the forwarder handed one back. This 429
    // itself never goes further up: odgw answers with its own 429 or with
    // the retry's response.
    let returned = response.extensions_mut().remove::<ReturnedRequest>();
    pacer.pause_until(&tenant_id, Instant::now() + retry_after);
    tracing::warn!(
        tenant = %tenant_id,
        request_id = %request_id,
        retry_after_ms = retry_after.as_millis() as u64,
        "open dental answered 429; tenant paused"
    );

    let Some(ReturnedRequest(head)) = returned.filter(|_| replayable) else {
        return Ok(upstream_throttled(retry_after, limit, &request_id));
    };
    let budget = deadline.saturating_duration_since(Instant::now());
    if let Err(rejection) = pacer.acquire(&tenant_id, rate, burst, budget).await {
        return Ok(upstream_throttled(
            rejection.retry_after.max(retry_after),
            limit,
            &request_id,
        ));
    }
    drop(response);
    let again = Request::from_parts(head, Body::empty());
    let response = inner.ready().await?.call(again).await?;
    match upstream_throttle(&response) {
        None => Ok(response),
        Some(retry_after) => {
            pacer.pause_until(&tenant_id, Instant::now() + retry_after);
            Ok(upstream_throttled(retry_after, limit, &request_id))
        }
    }
}

/// Whether the request may be sent a second time after an upstream 429: a
/// GET or HEAD whose body is known to be empty. Writes never are, nor
/// anything whose body the first try consumed. The head itself comes back
/// from the forwarder ([`ReturnedRequest`]), so nothing is copied up front.
fn replayable(request: &Request) -> bool {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let declared_empty = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == b"0");
    let body_empty = request.body().size_hint().exact() == Some(0);
    read && declared_empty && body_empty
}

/// The pause Open Dental asks for, if this response is its 429 (odgw's own
/// 429s carry an [`ErrorCode`] and are not upstream throttling).
fn upstream_throttle(response: &Response) -> Option<Duration> {
    (response.status() == StatusCode::TOO_MANY_REQUESTS
        && response.extensions().get::<ErrorCode>().is_none())
    .then(|| {
        parse_retry_after(
            response.headers().get(header::RETRY_AFTER),
            SystemTime::now(),
        )
    })
}

/// Reads `Retry-After` as delta seconds or an HTTP date, relative to `now`.
/// Absent or unreadable values give [`DEFAULT_UPSTREAM_RETRY_AFTER`]; every
/// value is capped at [`MAX_UPSTREAM_RETRY_AFTER`].
pub fn parse_retry_after(value: Option<&HeaderValue>, now: SystemTime) -> Duration {
    let parsed = value.and_then(|v| v.to_str().ok()).and_then(|text| {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            // Too many digits to fit is still "a very long time".
            Some(text.parse().map_or(Duration::MAX, Duration::from_secs))
        } else {
            let date = httpdate::parse_http_date(text).ok()?;
            Some(date.duration_since(now).unwrap_or(Duration::ZERO))
        }
    });
    parsed
        .unwrap_or(DEFAULT_UPSTREAM_RETRY_AFTER)
        .min(MAX_UPSTREAM_RETRY_AFTER)
}

/// Whole seconds, rounded up: a client that waits this long is not early.
/// Whole seconds, rounded up: a client that waits this long is not early.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn rate_limited(rejection: &PaceRejection, request_id: &RequestId) -> Response {
    let secs = ceil_secs(rejection.retry_after);
    let detail = match rejection.reason {
        Reason::QueueFull => "too many requests are waiting for this tenant's upstream budget",
        Reason::WouldExceedDeadline => {
            "this tenant's upstream budget has no slot within the queue timeout"
        }
        // Answered by `limiter_unavailable`; kept truthful all the same.
        Reason::Unavailable => "this tenant's upstream budget cannot be reached",
    };
    GatewayError::new(ErrorCode::RateLimited, detail)
        .with_retry_after(secs)
        .with_rate_limit(RateLimitInfo {
            limit: rejection.limit,
            remaining: rejection.remaining,
            reset_secs: secs,
        })
        .into_response(request_id)
}

/// 503 `limiter_unavailable`: the shared budget store is down and the
/// policy is to refuse rather than risk Open Dental's throttle. Made here
/// for the pacing layer and the shared subject limit alike.
pub(crate) fn limiter_unavailable(retry_after: Duration, request_id: &RequestId) -> Response {
    GatewayError::new(
        ErrorCode::LimiterUnavailable,
        "the shared rate limiter is unreachable; try again shortly",
    )
    .with_retry_after(ceil_secs(retry_after).max(1))
    .into_response(request_id)
}

fn upstream_throttled(retry_after: Duration, limit: u64, request_id: &RequestId) -> Response {
    let secs = ceil_secs(retry_after);
    GatewayError::new(
        ErrorCode::UpstreamThrottled,
        "open dental throttled this tenant and no retry fits the deadline",
    )
    .with_retry_after(secs)
    .with_rate_limit(RateLimitInfo {
        limit,
        remaining: 0,
        reset_secs: secs,
    })
    .into_response(request_id)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };

    use http_body_util::BodyExt;
    use odgw_core::{Rate, SecretString, Tenant, TenantAccess, TenantId};
    use tower::{service_fn, ServiceBuilder};

    use super::*;
    use crate::LocalPacer;

    fn tenant(rate: Rate, burst: u32) -> Tenant {
        Tenant::new(TenantAccess {
            id: TenantId::parse("practice-1").unwrap(),
            base_url: "http://127.0.0.1:1/api/v1".to_owned(),
            authorization: SecretString::new("ODFHIR dev/cust"),
            rate,
            burst,
            generation: 1,
        })
    }

    fn one_per_second() -> Rate {
        Rate::Per {
            count: 1,
            period: Duration::from_secs(1),
        }
    }

    fn request(method: Method, tenant: &Tenant) -> Request {
        let mut req = Request::new(Body::empty());
        *req.method_mut() = method;
        *req.uri_mut() = "/api/v1/patients/11".parse().unwrap();
        req.extensions_mut()
            .insert(RequestContext::new(RequestId::generate(), None));
        req.extensions_mut().insert(tenant.clone());
        req
    }

    fn request_id(req: &Request) -> Option<RequestId> {
        RequestContext::of(req, "test").ok().map(|c| c.id().clone())
    }

    fn settings(queue_timeout: u64, queue_depth: usize) -> PacingSettings {
        PacingSettings {
            queue_timeout: Duration::from_secs(queue_timeout),
            queue_depth,
        }
    }

    fn upstream_429(retry_after: &str) -> Response {
        let mut r = Response::new(Body::from("throttled"));
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(retry_after).unwrap(),
        );
        r
    }

    /// Upstream's 429 as the forwarder passes it up: with the head of a
    /// bodiless request returned in it.
    fn throttled_returning(req: Request, retry_after: &str) -> Response {
        let (head, body) = req.into_parts();
        let mut response = upstream_429(retry_after);
        if body.is_end_stream() {
            response.extensions_mut().insert(ReturnedRequest(head));
        }
        response
    }

    async fn problem(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// An inner service that answers 429 with `retry_after` for the first
    /// `throttled` calls and 200 after, recording when each call came.
    fn upstream(
        throttled: usize,
        retry_after: &'static str,
        calls: Arc<Mutex<Vec<(Method, Instant)>>>,
    ) -> impl Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send>
           + Clone
           + Send
           + 'static {
        let count = Arc::new(AtomicUsize::new(0));
        service_fn(move |req: Request| {
            let count = Arc::clone(&count);
            let calls = Arc::clone(&calls);
            async move {
                calls
                    .lock()
                    .unwrap()
                    .push((req.method().clone(), Instant::now()));
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < throttled {
                    Ok(throttled_returning(req, retry_after))
                } else {
                    Ok(Response::new(Body::from("ok")))
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_budget_wait_then_overflow_is_refused() {
        let pacer = Arc::new(LocalPacer::new(settings(2, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(2, 64)))
            .service(upstream(0, "0", Arc::clone(&calls)));
        let t = tenant(one_per_second(), 1);
        let t0 = Instant::now();
        let futures: Vec<_> = (0..4)
            .map(|_| svc.clone().oneshot(request(Method::GET, &t)))
            .collect();
        let responses = futures_util::future::join_all(futures).await;
        let statuses: Vec<_> = responses
            .iter()
            .map(|r| r.as_ref().unwrap().status())
            .collect();
        assert_eq!(
            statuses,
            vec![
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        let offsets: Vec<_> = calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at - t0)
            .collect();
        let s = Duration::from_secs;
        assert_eq!(offsets, vec![s(0), s(1), s(2)]);

        let rejected = responses.into_iter().nth(3).unwrap().unwrap();
        assert_eq!(rejected.headers()["odgw-error"], "rate_limited");
        // Slots 0, 1 and 2 s are taken; at 3 s a request goes at once.
        assert_eq!(rejected.headers()["retry-after"], "3");
        assert_eq!(rejected.headers()["ratelimit-limit"], "1");
        assert_eq!(rejected.headers()["ratelimit-remaining"], "0");
        assert_eq!(rejected.headers()["ratelimit-reset"], "3");
        assert_eq!(problem(rejected).await["code"], "rate_limited");
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_429_pauses_and_a_get_is_retried_once() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(upstream(1, "2", Arc::clone(&calls)));
        let t = tenant(one_per_second(), 1);
        let t0 = Instant::now();
        let response = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].1 - t0, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_is_the_returned_request_and_the_head_goes_no_further() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        let count = Arc::new(AtomicUsize::new(0));
        let inner = service_fn(move |req: Request| {
            seen2.lock().unwrap().push((
                request_id(&req),
                req.headers().get(header::ACCEPT).cloned(),
                req.uri().clone(),
            ));
            let n = count.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, std::convert::Infallible>(if n < 2 {
                    throttled_returning(req, "1")
                } else {
                    Response::new(Body::from("ok"))
                })
            }
        });
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(inner);
        let t = tenant(one_per_second(), 1);
        let mut req = request(Method::GET, &t);
        req.headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let id = request_id(&req);
        let response = svc.oneshot(req).await.unwrap();
        // The retry was throttled too: odgw's own 429, with no head in it.
        assert_eq!(response.headers()["odgw-error"], "upstream_throttled");
        assert!(response.extensions().get::<ReturnedRequest>().is_none());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1], "the retry is the same request");
        assert_eq!(seen[1].0, id);
        assert_eq!(seen[1].1.as_ref().unwrap(), "application/json");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_without_a_returned_request_is_not_retried() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(AtomicUsize::new(0));
        let calls2 = Arc::clone(&calls);
        let inner = service_fn(move |_req: Request| {
            calls2.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(upstream_429("1")) }
        });
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(inner);
        let t = tenant(one_per_second(), 1);
        let response = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(response.headers()["odgw-error"], "upstream_throttled");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_holds_other_requests_of_the_tenant_too() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(upstream(1, "3", Arc::clone(&calls)));
        let t = tenant(Rate::Unlimited, 1);
        let t0 = Instant::now();
        let first = svc.clone().oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let second = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        let offsets: Vec<_> = calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, at)| *at - t0)
            .collect();
        let s = Duration::from_secs;
        // Unlimited: the retry and the next request both go when the pause ends.
        assert_eq!(offsets, vec![s(0), s(3), s(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_never_retried() {
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
            let calls = Arc::new(Mutex::new(Vec::new()));
            let svc = ServiceBuilder::new()
                .layer(PacingLayer::new(pacer, settings(10, 64)))
                .service(upstream(1, "2", Arc::clone(&calls)));
            let t = tenant(one_per_second(), 1);
            let response = svc.oneshot(request(method.clone(), &t)).await.unwrap();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{method}");
            assert_eq!(response.headers()["odgw-error"], "upstream_throttled");
            assert_eq!(response.headers()["retry-after"], "2");
            assert_eq!(calls.lock().unwrap().len(), 1, "{method} was retried");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_with_a_body_is_not_retried() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(upstream(1, "1", Arc::clone(&calls)));
        let t = tenant(one_per_second(), 1);
        let mut req = request(Method::GET, &t);
        *req.body_mut() = Body::from("{}");
        let response = svc.oneshot(req).await.unwrap();
        assert_eq!(response.headers()["odgw-error"], "upstream_throttled");
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_deadline_is_upstream_throttled() {
        let pacer = Arc::new(LocalPacer::new(settings(3, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(3, 64)))
            .service(upstream(1, "30", Arc::clone(&calls)));
        let t = tenant(one_per_second(), 1);
        let before = Instant::now();
        let response = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(
            Instant::now(),
            before,
            "no point waiting for a retry that cannot fit"
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["odgw-error"], "upstream_throttled");
        assert_eq!(response.headers()["retry-after"], "30");
        assert_eq!(response.headers()["ratelimit-reset"], "30");
        assert_eq!(problem(response).await["code"], "upstream_throttled");
        assert_eq!(calls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_429_ends_in_upstream_throttled() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(upstream(5, "1", Arc::clone(&calls)));
        let t = tenant(one_per_second(), 1);
        let response = svc.oneshot(request(Method::HEAD, &t)).await.unwrap();
        assert_eq!(response.headers()["odgw-error"], "upstream_throttled");
        assert_eq!(calls.lock().unwrap().len(), 2, "exactly one retry");
    }

    #[tokio::test(start_paused = true)]
    async fn odgw_made_429s_below_are_not_upstream_throttling() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(AtomicUsize::new(0));
        let calls2 = Arc::clone(&calls);
        let inner = service_fn(move |req: Request| {
            calls2.fetch_add(1, Ordering::SeqCst);
            let rid = request_id(&req).unwrap();
            async move {
                Ok::<_, std::convert::Infallible>(
                    GatewayError::new(ErrorCode::RateLimited, "x").into_response(&rid),
                )
            }
        });
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(inner);
        let t = tenant(one_per_second(), 1);
        let response = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(response.headers()["odgw-error"], "rate_limited");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_tenant_is_an_internal_error() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(upstream(0, "0", Arc::new(Mutex::new(Vec::new()))));
        let mut req = Request::new(Body::empty());
        req.extensions_mut()
            .insert(RequestContext::new(RequestId::generate(), None));
        let response = svc.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["odgw-error"], "internal_error");
    }

    /// A pacer whose shared store is down with `on_failure = "closed"`.
    #[derive(Debug)]
    struct StoreDown;

    impl Pacer for StoreDown {
        fn acquire(
            &self,
            _tenant: &TenantId,
            _rate: Rate,
            burst: u32,
            _max_wait: Duration,
        ) -> BoxFuture<'_, Result<crate::Permit, PaceRejection>> {
            Box::pin(futures_util::future::ready(Err(PaceRejection {
                reason: Reason::Unavailable,
                retry_after: Duration::from_millis(400),
                limit: u64::from(burst),
                remaining: 0,
            })))
        }
        fn pause_until(&self, _tenant: &TenantId, _until: Instant) {}
        fn queue_depth(&self, _tenant: &TenantId) -> usize {
            0
        }
        fn waiting(&self) -> usize {
            0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_budget_store_is_503_limiter_unavailable() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(Arc::new(StoreDown), settings(10, 64)))
            .service(upstream(0, "0", Arc::clone(&calls)));
        let response = svc
            .oneshot(request(Method::GET, &tenant(one_per_second(), 1)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["odgw-error"], "limiter_unavailable");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(response.headers().get("ratelimit-limit").is_none());
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::LimiterUnavailable)
        );
        let body = problem(response).await;
        assert_eq!(body["code"], "limiter_unavailable");
        assert_eq!(body["status"], 503);
        assert!(calls.lock().unwrap().is_empty(), "open dental was called");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hv = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_retry_after(Some(&hv("7")), now),
            Duration::from_secs(7)
        );
        assert_eq!(parse_retry_after(Some(&hv(" 0 ")), now), Duration::ZERO);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        let date = HeaderValue::from_str(&date).unwrap();
        assert_eq!(parse_retry_after(Some(&date), now), Duration::from_secs(42));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        let past = HeaderValue::from_str(&past).unwrap();
        assert_eq!(parse_retry_after(Some(&past), now), Duration::ZERO);
        assert_eq!(parse_retry_after(None, now), DEFAULT_UPSTREAM_RETRY_AFTER);
        assert_eq!(
            parse_retry_after(Some(&hv("soon")), now),
            DEFAULT_UPSTREAM_RETRY_AFTER
        );
        assert_eq!(
            parse_retry_after(Some(&hv("-3")), now),
            DEFAULT_UPSTREAM_RETRY_AFTER
        );
        assert_eq!(
            parse_retry_after(Some(&hv("86400")), now),
            MAX_UPSTREAM_RETRY_AFTER
        );
        assert_eq!(
            parse_retry_after(Some(&hv("99999999999999999999999")), now),
            MAX_UPSTREAM_RETRY_AFTER
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http_date_retry_after_pauses_the_tenant() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let calls2 = Arc::clone(&calls);
        let count = Arc::new(AtomicUsize::new(0));
        let inner = service_fn(move |req: Request| {
            calls2
                .lock()
                .unwrap()
                .push((req.method().clone(), Instant::now()));
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(4));
                    Ok::<_, std::convert::Infallible>(throttled_returning(req, &date))
                } else {
                    Ok(Response::new(Body::from("ok")))
                }
            }
        });
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(inner);
        let t = tenant(one_per_second(), 1);
        let t0 = Instant::now();
        let response = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let waited = calls.lock().unwrap()[1].1 - t0;
        // HTTP dates have whole-second resolution: 3 to 4 s, never the 5 s default.
        assert!(
            waited >= Duration::from_secs(3) && waited <= Duration::from_secs(4),
            "{waited:?}"
        );
    }
}
