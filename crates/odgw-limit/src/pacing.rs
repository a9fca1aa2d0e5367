//! The tenant pacing layer: waits for the tenant's upstream budget, and hands
//! the forwarder that budget, through which it answers Open Dental's own 429s
//! with a pause and (for reads) one retry.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::BoxFuture;
use odgw_core::{
    ErrorCode, GatewayError, NoSlot, Rate, RateLimitInfo, Request, RequestContext, RequestId,
    Response, TenantId, UpstreamBudget,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::{PaceRejection, Pacer, PacingSettings, Reason};

/// This layer's name in stack-order bug reports.
const LAYER: &str = "pacing";

/// Paces requests to their tenant's upstream budget.
///
/// Reads the [`RequestContext`] and the resolved [`odgw_core::Tenant`].
/// - No slot within `queue_timeout`, or the queue is full: 429
///   `rate_limited`, Open Dental is not called.
/// - The shared budget store is unreachable and its policy is to refuse
///   ([`Reason::Unavailable`]): 503 `limiter_unavailable`.
/// - Otherwise the request goes on with an `Arc<dyn UpstreamBudget>` in
///   its extensions. When Open Dental answers 429 the forwarder pauses the
///   tenant through it for the `Retry-After`, and waits through it for the
///   slot of its one retry of a bodiless GET or HEAD: a slot that must come
///   before the request's deadline, its arrival here plus `queue_timeout`
///   (the first wait counts against it). Answers from inside pass through
///   untouched.
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

    // The forwarder answers Open Dental's 429 through this handle: it pauses
    // the tenant and waits for the retry's slot within the same deadline.
    let budget: Arc<dyn UpstreamBudget> = Arc::new(GrantedBudget {
        pacer,
        tenant: tenant_id,
        rate,
        burst,
        limit,
        deadline,
    });
    let mut request = request;
    request.extensions_mut().insert(budget);
    inner.ready().await?.call(request).await
}

/// The tenant budget of a request that got its slot: what the forwarder
/// uses after Open Dental's 429.
#[derive(Debug)]
struct GrantedBudget {
    pacer: Arc<dyn Pacer>,
    tenant: TenantId,
    rate: Rate,
    burst: u32,
    /// The tenant's burst, for `RateLimit-Limit`.
    limit: u64,
    /// The request's arrival at the pacing layer plus `queue_timeout`.
    deadline: Instant,
}

impl UpstreamBudget for GrantedBudget {
    fn pause(&self, retry_after: Duration) {
        self.pacer
            .pause_until(&self.tenant, Instant::now() + retry_after);
    }

    fn one_more_slot(&self) -> BoxFuture<'_, Result<(), NoSlot>> {
        Box::pin(async move {
            let max_wait = self.deadline.saturating_duration_since(Instant::now());
            self.pacer
                .acquire(&self.tenant, self.rate, self.burst, max_wait)
                .await
                .map(drop)
                .map_err(|rejection| NoSlot {
                    retry_after: rejection.retry_after,
                })
        })
    }

    fn limit(&self) -> u64 {
        self.limit
    }
}

/// Shared with the subject limit's answers.
pub(crate) use odgw_core::ceil_secs;

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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::{header, HeaderValue, Method, StatusCode};
    use http_body_util::BodyExt;
    use odgw_core::{Body, SecretString, Tenant, TenantAccess};
    use tower::{service_fn, ServiceBuilder};

    use super::*;
    use crate::LocalPacer;

    type Infallible = std::convert::Infallible;

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

    async fn problem(response: Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    type Calls = Arc<Mutex<Vec<Instant>>>;

    /// An inner service that answers 200 at once, recording when each call came.
    fn upstream(
        calls: Calls,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
           + Clone
           + Send
           + 'static {
        service_fn(move |_req: Request| {
            calls.lock().unwrap().push(Instant::now());
            async { Ok(Response::new(Body::from("ok"))) }
        })
    }

    /// What the forwarder does with the budget on Open Dental's 429, for
    /// the first call only: pause the tenant for `retry_after`, then wait
    /// for the retry's slot. Records when each call came and when its retry
    /// would be sent (`Ok`), or why not (`Err`).
    fn throttled_once(
        retry_after: Duration,
        calls: Calls,
        retries: Arc<Mutex<Vec<Result<Instant, NoSlot>>>>,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
           + Clone
           + Send
           + 'static {
        service_fn(move |req: Request| {
            let first = {
                let mut calls = calls.lock().unwrap();
                calls.push(Instant::now());
                calls.len() == 1
            };
            let budget = req.extensions().get::<Arc<dyn UpstreamBudget>>().cloned();
            let retries = Arc::clone(&retries);
            async move {
                let budget = budget.expect("pacing hands the budget on");
                if first {
                    budget.pause(retry_after);
                    let slot = budget.one_more_slot().await.map(|()| Instant::now());
                    retries.lock().unwrap().push(slot);
                }
                Ok(Response::new(Body::from("ok")))
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_budget_wait_then_overflow_is_refused() {
        let pacer = Arc::new(LocalPacer::new(settings(2, 64)));
        let calls = Calls::default();
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(2, 64)))
            .service(upstream(Arc::clone(&calls)));
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
        let offsets: Vec<_> = calls.lock().unwrap().iter().map(|at| *at - t0).collect();
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
    async fn the_budget_pauses_the_tenant_and_the_retry_slot_comes_after_the_pause() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let (calls, retries) = (Calls::default(), Arc::default());
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(throttled_once(
                Duration::from_secs(2),
                Arc::clone(&calls),
                Arc::clone(&retries),
            ));
        let t = tenant(one_per_second(), 1);
        let t0 = Instant::now();
        let response = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let retries = retries.lock().unwrap();
        assert_eq!(*retries, [Ok(t0 + Duration::from_secs(2))]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_holds_other_requests_of_the_tenant_too() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let (calls, retries) = (Calls::default(), Arc::default());
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(throttled_once(
                Duration::from_secs(3),
                Arc::clone(&calls),
                Arc::clone(&retries),
            ));
        let t = tenant(Rate::Unlimited, 1);
        let t0 = Instant::now();
        let first = svc.clone().oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let second = svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(second.status(), StatusCode::OK);
        let s = Duration::from_secs;
        // Unlimited: the retry and the next request both go when the pause ends.
        assert_eq!(*retries.lock().unwrap(), [Ok(t0 + s(3))]);
        let offsets: Vec<_> = calls.lock().unwrap().iter().map(|at| *at - t0).collect();
        assert_eq!(offsets, vec![s(0), s(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_slot_past_the_deadline_is_answered_at_once() {
        let pacer = Arc::new(LocalPacer::new(settings(3, 64)));
        let (calls, retries) = (Calls::default(), Arc::default());
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(3, 64)))
            .service(throttled_once(
                Duration::from_secs(30),
                Arc::clone(&calls),
                Arc::clone(&retries),
            ));
        let t = tenant(one_per_second(), 1);
        let before = Instant::now();
        svc.oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(
            Instant::now(),
            before,
            "no point waiting for a retry that cannot fit"
        );
        let retries = retries.lock().unwrap();
        let Err(no_slot) = retries[0] else {
            panic!("a slot after the deadline: {retries:?}");
        };
        // When the slot would come: the end of the pause.
        assert_eq!(no_slot.retry_after, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_wait_counts_against_the_retry_deadline() {
        // All arrive at 0 with a 2 s queue timeout; the third gets the slot
        // at 2 s, and after a 1 s pause its retry's slot (3 s) is past its
        // deadline (2 s), though within 2 s of the slot it got.
        let pacer: Arc<dyn Pacer> = Arc::new(LocalPacer::new(settings(2, 64)));
        let (calls, retries) = (Calls::default(), Arc::new(Mutex::new(Vec::new())));
        let plain = ServiceBuilder::new()
            .layer(PacingLayer::new(Arc::clone(&pacer), settings(2, 64)))
            .service(upstream(Arc::clone(&calls)));
        let throttled = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(2, 64)))
            .service(throttled_once(
                Duration::from_secs(1),
                Calls::default(),
                Arc::clone(&retries),
            ));
        let t = tenant(one_per_second(), 1);
        let t0 = Instant::now();
        let (a, b, c) = tokio::join!(
            plain.clone().oneshot(request(Method::GET, &t)),
            plain.oneshot(request(Method::GET, &t)),
            throttled.oneshot(request(Method::GET, &t)),
        );
        for response in [a, b, c] {
            assert_eq!(response.unwrap().status(), StatusCode::OK);
        }
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        assert!(
            matches!(retries.lock().unwrap()[..], [Err(_)]),
            "{retries:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_names_the_tenants_limit() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let limits = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&limits);
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(service_fn(move |req: Request| {
                let budget = req.extensions().get::<Arc<dyn UpstreamBudget>>().cloned();
                seen.lock().unwrap().push(budget.map(|b| b.limit()));
                async { Ok::<_, Infallible>(Response::new(Body::empty())) }
            }));
        for burst in [0, 1, 4] {
            let t = tenant(Rate::Unlimited, burst);
            svc.clone().oneshot(request(Method::GET, &t)).await.unwrap();
        }
        assert_eq!(*limits.lock().unwrap(), [Some(1), Some(1), Some(4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_from_inside_pass_through_untouched() {
        // Open Dental's 429 is the forwarder's to answer, and odgw's own
        // 429s are final: pacing changes neither, and calls inside once.
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let calls = Calls::default();
        let seen = Arc::clone(&calls);
        let inner = service_fn(move |req: Request| {
            seen.lock().unwrap().push(Instant::now());
            let rid = request_id(&req).unwrap();
            async move {
                Ok::<_, Infallible>(if req.method() == Method::GET {
                    GatewayError::new(ErrorCode::RateLimited, "x").into_response(&rid)
                } else {
                    let mut r = Response::new(Body::from("throttled"));
                    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    r
                })
            }
        });
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(inner);
        let t = tenant(Rate::Unlimited, 1);
        let response = svc.clone().oneshot(request(Method::GET, &t)).await.unwrap();
        assert_eq!(response.headers()["odgw-error"], "rate_limited");
        let response = svc.oneshot(request(Method::HEAD, &t)).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().get("odgw-error").is_none());
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(calls.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn missing_tenant_is_an_internal_error() {
        let pacer = Arc::new(LocalPacer::new(settings(10, 64)));
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(pacer, settings(10, 64)))
            .service(upstream(Calls::default()));
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
        let calls = Calls::default();
        let svc = ServiceBuilder::new()
            .layer(PacingLayer::new(Arc::new(StoreDown), settings(10, 64)))
            .service(upstream(Arc::clone(&calls)));
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
}
