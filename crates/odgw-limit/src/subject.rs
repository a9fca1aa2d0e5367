//! The inbound limit per (tenant, issuer, subject), built on tower_governor,
//! or kept in Redis when several replicas share it
//! ([`crate::RedisLimits::subject_limit`]).

use std::{
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::BoxFuture;
use governor::{clock::Clock, middleware::NoOpMiddleware};
use odgw_core::{
    Body, ErrorCode, GatewayError, Rate, RateLimitInfo, Request, RequestContext, RequestId,
    Response, StackOrderBug, TenantId,
};
use tower::{Layer, Service};
use tower_governor::{
    governor::{Governor, GovernorConfig, GovernorConfigBuilder, SharedRateLimiter},
    key_extractor::KeyExtractor,
    GovernorError,
};

use crate::{
    cluster::{OnFailure, SubjectVerdict},
    pacing::{ceil_secs, limiter_unavailable},
    RedisLimits,
};

/// Whose inbound budget a request spends.
///
/// The issuer is part of the key so that equal `sub` values minted by two
/// identity providers are two callers, not one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubjectKey {
    pub tenant: TenantId,
    pub issuer: Arc<str>,
    pub subject: Arc<str>,
}

/// This layer's name in stack-order bug reports.
const LAYER: &str = "subject limit";

impl SubjectKey {
    /// The caller and tenant that auth recorded in the request's context.
    pub fn of(context: &RequestContext) -> Result<Self, StackOrderBug> {
        let principal = context.principal(LAYER)?;
        Ok(Self {
            tenant: context.selected_tenant(LAYER)?,
            issuer: Arc::from(principal.issuer.as_str()),
            subject: Arc::from(principal.subject.as_str()),
        })
    }
}

/// Reads the [`SubjectKey`] from the request's context ([`SubjectKey::of`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SubjectKeyExtractor;

impl KeyExtractor for SubjectKeyExtractor {
    type Key = SubjectKey;

    fn name(&self) -> &'static str {
        "tenant subject"
    }

    fn extract<T>(&self, req: &http::Request<T>) -> Result<Self::Key, GovernorError> {
        RequestContext::of(req, LAYER)
            .and_then(|context| SubjectKey::of(&context))
            .map_err(|_| GovernorError::UnableToExtractKey)
    }
}

type Config = GovernorConfig<SubjectKeyExtractor, NoOpMiddleware>;
type Limiter = SharedRateLimiter<SubjectKey, NoOpMiddleware>;

/// Builds the subject limit: `burst` requests at once per
/// (tenant, issuer, subject), refilled at `rate`. [`Rate::Unlimited`] gives a
/// layer that passes every request through.
pub fn subject_limit_layer(rate: Rate, burst: u32) -> SubjectLimitLayer {
    SubjectLimitLayer::new(rate, burst)
}

/// Refuses a caller's requests beyond its `subject_rate`/`subject_burst`
/// with 429 `rate_limited` at once (no queueing: the caller is the one to slow
/// down). Every rejection is a problem+json response with `Retry-After` and
/// `RateLimit-*`, like every other odgw 429.
///
/// Budgets are kept in process ([`subject_limit_layer`]) or in Redis, shared
/// by every replica ([`RedisLimits::subject_limit`]). In the shared mode the
/// in-process limiter is the fallback while Redis is unreachable with
/// `redis.on_failure = "local"`; with `"closed"` the layer answers 503
/// `limiter_unavailable` instead.
///
/// The in-process limiter remembers every key it has seen until
/// [`SubjectLimitLayer::housekeeping`] runs; call it periodically (or use
/// [`SubjectLimitLayer::spawn_housekeeping`]). Keys in Redis expire by
/// themselves.
#[derive(Debug, Clone)]
pub struct SubjectLimitLayer {
    /// The in-process limiter (the fallback in the shared mode).
    config: Option<Arc<Config>>,
    burst: u32,
    /// Set in the shared mode.
    shared: Option<Arc<SharedLimit>>,
}

/// The shared mode's parameters.
#[derive(Debug)]
struct SharedLimit {
    limits: RedisLimits,
    interval: Duration,
    /// How far ahead of now a caller's TAT may be: `(burst - 1) * interval`.
    tolerance: Duration,
}

impl SubjectLimitLayer {
    pub fn new(rate: Rate, burst: u32) -> Self {
        let burst = burst.max(1);
        let Some(interval) = rate.interval() else {
            return Self {
                config: None,
                burst,
                shared: None,
            };
        };
        // governor refuses a zero period; a rate that fine is unlimited in practice.
        let period = interval.max(Duration::from_nanos(1));
        let config = GovernorConfigBuilder::default()
            .key_extractor(SubjectKeyExtractor)
            .period(period)
            .burst_size(burst)
            .finish();
        Self {
            config: config.map(Arc::new),
            burst,
            shared: None,
        }
    }

    /// The shared mode (see [`RedisLimits::subject_limit`]).
    pub(crate) fn shared(rate: Rate, burst: u32, limits: RedisLimits) -> Self {
        let mut layer = Self::new(rate, burst);
        if let (Some(interval), Some(_)) = (rate.interval(), &layer.config) {
            let tolerance = interval
                .checked_mul(layer.burst - 1)
                .unwrap_or(Duration::MAX);
            layer.shared = Some(Arc::new(SharedLimit {
                limits,
                interval,
                tolerance,
            }));
        }
        layer
    }

    /// A layer that limits nothing.
    pub fn unlimited() -> Self {
        Self {
            config: None,
            burst: 1,
            shared: None,
        }
    }

    /// Whether budgets are kept in Redis, shared by every replica.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether this layer limits anything at all.
    pub fn is_limited(&self) -> bool {
        self.config.is_some()
    }

    fn limiter(&self) -> Option<&Limiter> {
        self.config.as_deref().map(Config::limiter)
    }

    /// Forgets the keys whose budget is full again. Such a key is
    /// indistinguishable from one never seen, so forgetting it gives nobody a
    /// fresh allowance early; the limiter's memory stays proportional to the
    /// callers active within the last refill period.
    pub fn housekeeping(&self) {
        if let Some(limiter) = self.limiter() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys the limiter remembers (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        self.limiter().map_or(0, |l| l.len())
    }

    /// Runs [`Self::housekeeping`] every `every` on the current tokio runtime
    /// until every clone of this layer (and the services it made) is gone.
    /// Returns `None` when there is nothing to keep.
    pub fn spawn_housekeeping(&self, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let config: Weak<Config> = Arc::downgrade(self.config.as_ref()?);
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(config) = config.upgrade() else {
                    return;
                };
                config.limiter().retain_recent();
                config.limiter().shrink_to_fit();
            }
        }))
    }
}

impl<S> Layer<S> for SubjectLimitLayer {
    type Service = SubjectLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = match (&self.config, &self.shared) {
            (None, _) => Inner::Unlimited(inner),
            (Some(config), Some(shared)) => Inner::Shared {
                inner,
                shared: Arc::clone(shared),
                fallback: Arc::clone(config),
            },
            (Some(config), None) => Inner::Limited {
                governor: Governor::new(inner, config).error_handler(verdict_response),
                // Holding the config keeps `spawn_housekeeping` running as
                // long as services exist.
                _config: Arc::clone(config),
            },
        };
        SubjectLimit {
            inner,
            burst: self.burst,
        }
    }
}

/// The service made by [`SubjectLimitLayer`].
#[derive(Debug, Clone)]
pub struct SubjectLimit<S> {
    inner: Inner<S>,
    burst: u32,
}

#[derive(Debug, Clone)]
enum Inner<S> {
    Unlimited(S),
    Limited {
        governor: Governor<SubjectKeyExtractor, NoOpMiddleware, S, Body>,
        _config: Arc<Config>,
    },
    Shared {
        inner: S,
        shared: Arc<SharedLimit>,
        /// The in-process limiter for `on_failure = "local"`; holding it
        /// also keeps `spawn_housekeeping` running.
        fallback: Arc<Config>,
    },
}

/// What the governor decided, carried out of its error handler (which does
/// not see the request) to [`SubjectLimit`], which renders it.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Over the limit; the budget has room again within this many whole
    /// seconds (rounded down by governor).
    TooMany {
        wait_secs: u64,
    },
    /// The request's context lacked the tenant or caller: a stack-order bug.
    NoKey,
    Other,
}

fn verdict_response(error: GovernorError) -> Response {
    let verdict = match error {
        GovernorError::TooManyRequests { wait_time, .. } => Verdict::TooMany {
            wait_secs: wait_time,
        },
        GovernorError::UnableToExtractKey => Verdict::NoKey,
        GovernorError::Other { .. } => Verdict::Other,
    };
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(verdict);
    response
}

impl<S> Service<Request> for SubjectLimit<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.inner {
            Inner::Unlimited(inner) => inner.poll_ready(cx),
            Inner::Limited { governor, .. } => governor.poll_ready(cx),
            Inner::Shared { inner, .. } => inner.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let governor = match &mut self.inner {
            Inner::Unlimited(inner) => return Box::pin(inner.call(request)),
            Inner::Limited { governor, .. } => governor,
            Inner::Shared {
                inner,
                shared,
                fallback,
            } => {
                // The decision takes a round trip: take the service that
                // poll_ready readied, leave a fresh clone in its place.
                let clone = inner.clone();
                let ready = std::mem::replace(inner, clone);
                return Box::pin(limit_shared(
                    ready,
                    Arc::clone(shared),
                    Arc::clone(fallback),
                    self.burst,
                    request,
                ));
            }
        };
        let context = match RequestContext::of(&request, LAYER) {
            Ok(context) => context,
            Err(bug) => {
                let response = bug.into_response();
                return Box::pin(async move { Ok(response) });
            }
        };
        let burst = self.burst;
        let future = governor.call(request);
        Box::pin(async move {
            let response = future.await?;
            let Some(verdict) = response.extensions().get::<Verdict>().copied() else {
                return Ok(response);
            };
            Ok(match verdict {
                // governor rounds down; one more second is never early.
                Verdict::TooMany { wait_secs } => {
                    let key = SubjectKey::of(&context).ok();
                    let who = key.as_ref().map(|key| &*key.subject);
                    too_many(context.id(), who, wait_secs + 1, burst)
                }
                Verdict::NoKey => match SubjectKey::of(&context) {
                    Err(bug) => bug.into_response(),
                    Ok(_) => governor_failed(context.id()),
                },
                Verdict::Other => governor_failed(context.id()),
            })
        })
    }
}

/// The shared mode: asks Redis, or the failure policy while Redis is down.
async fn limit_shared<S>(
    mut inner: S,
    shared: Arc<SharedLimit>,
    fallback: Arc<Config>,
    burst: u32,
    request: Request,
) -> Result<Response, S::Error>
where
    S: Service<Request, Response = Response>,
{
    // Taken before the first await: the request body is not Sync.
    let context = RequestContext::of(&request, LAYER);
    let (key, context) = match context.and_then(|c| Ok((SubjectKey::of(&c)?, c))) {
        Ok(found) => found,
        Err(bug) => return Ok(bug.into_response()),
    };
    let verdict = if shared.limits.usable() {
        shared
            .limits
            .check_subject(&key, shared.interval, shared.tolerance)
            .await
    } else {
        SubjectVerdict::Unreachable
    };
    let wait = match verdict {
        SubjectVerdict::Allowed => None,
        SubjectVerdict::Denied(wait) => Some(wait),
        SubjectVerdict::Unreachable => match shared.limits.on_failure() {
            OnFailure::Local => {
                let limiter = fallback.limiter();
                limiter
                    .check_key(&key)
                    .err()
                    .map(|not_until| not_until.wait_time_from(limiter.clock().now()))
            }
            OnFailure::Closed => {
                // The outage itself is logged once by the limiter.
                return Ok(limiter_unavailable(Duration::from_secs(1), context.id()));
            }
        },
    };
    match wait {
        None => inner.call(request).await,
        Some(wait) => Ok(too_many(
            context.id(),
            Some(&key.subject),
            ceil_secs(wait).max(1),
            burst,
        )),
    }
}

fn too_many(request_id: &RequestId, subject: Option<&str>, secs: u64, burst: u32) -> Response {
    tracing::info!(
        request_id = %request_id,
        subject = subject.unwrap_or(""),
        retry_after = secs,
        "subject limit exceeded"
    );
    GatewayError::new(
        ErrorCode::RateLimited,
        "too many requests from this subject",
    )
    .with_retry_after(secs)
    .with_rate_limit(RateLimitInfo {
        limit: u64::from(burst),
        remaining: 0,
        reset_secs: secs,
    })
    .into_response(request_id)
}

/// governor failed in a way it does not explain (not a refusal).
fn governor_failed(request_id: &RequestId) -> Response {
    tracing::error!(request_id = %request_id, "subject limiter failed");
    GatewayError::new(ErrorCode::Internal, "internal error").into_response(request_id)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;
    use odgw_core::{Identity, Principal};

    fn request(tenant: &str, subject: &str) -> Request {
        let mut req = Request::new(Body::empty());
        let context = RequestContext::new(RequestId::generate(), None);
        context.facts().update(|f| {
            f.tenant = Some(TenantId::parse(tenant).unwrap());
            f.principal = Some(Principal::new(Identity {
                subject: subject.to_owned(),
                issuer: "https://idp.example.com/".to_owned(),
                tenants: vec![tenant.to_owned()],
                scopes: vec!["od:read".to_owned()],
                expires_at: 0,
            }));
        });
        req.extensions_mut().insert(context);
        req
    }

    fn context(req: &Request) -> RequestContext {
        RequestContext::of(req, "test").unwrap()
    }

    fn ok_service(
    ) -> impl Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send>
           + Clone
           + Send
           + 'static {
        service_fn(|_req: Request| async { Ok(Response::new(Body::from("ok"))) })
    }

    fn per_minute(count: u32) -> Rate {
        Rate::Per {
            count,
            period: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn burst_then_429_problem_json() {
        let layer = subject_limit_layer(per_minute(1), 3);
        let svc = ServiceBuilder::new().layer(layer).service(ok_service());
        for _ in 0..3 {
            let r = svc.clone().oneshot(request("a", "alice")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let r = svc.clone().oneshot(request("a", "alice")).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["odgw-error"], "rate_limited");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(r.headers()["ratelimit-remaining"], "0");
        assert_eq!(r.headers()["ratelimit-reset"], r.headers()["retry-after"]);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(body["status"], 429);

        // Another subject, another tenant, another issuer: own budgets.
        let r = svc.clone().oneshot(request("a", "bob")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = svc.clone().oneshot(request("b", "alice")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let other_issuer = request("a", "alice");
        context(&other_issuer).facts().update(|f| {
            let mut identity = Identity::clone(f.principal.as_ref().unwrap());
            identity.issuer = "https://other.example.com/".to_owned();
            f.principal = Some(Principal::new(identity));
        });
        let r = svc.oneshot(other_issuer).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn rejection_carries_the_request_id() {
        let svc = ServiceBuilder::new()
            .layer(subject_limit_layer(per_minute(1), 1))
            .service(ok_service());
        svc.clone().oneshot(request("a", "alice")).await.unwrap();
        let req = request("a", "alice");
        let rid = context(&req).id().clone();
        let r = svc.oneshot(req).await.unwrap();
        assert_eq!(r.headers()["x-request-id"], rid.as_str());
    }

    #[tokio::test]
    async fn unlimited_passes_everything() {
        let layer = subject_limit_layer(Rate::Unlimited, 1);
        assert!(!layer.is_limited());
        let svc = ServiceBuilder::new().layer(layer).service(ok_service());
        for _ in 0..100 {
            let r = svc.clone().oneshot(request("a", "alice")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn missing_principal_is_an_internal_error() {
        let svc = ServiceBuilder::new()
            .layer(subject_limit_layer(per_minute(10), 10))
            .service(ok_service());
        let mut req = Request::new(Body::empty());
        req.extensions_mut()
            .insert(RequestContext::new(RequestId::generate(), None));
        let r = svc.oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(r.headers()["odgw-error"], "internal_error");
    }

    #[tokio::test]
    async fn housekeeping_forgets_only_full_budgets() {
        // 1000/s: a key refills within a millisecond.
        let fast = subject_limit_layer(
            Rate::Per {
                count: 1000,
                period: Duration::from_secs(1),
            },
            1,
        );
        let slow = subject_limit_layer(per_minute(1), 1);
        for layer in [&fast, &slow] {
            let svc = ServiceBuilder::new()
                .layer(layer.clone())
                .service(ok_service());
            for i in 0..20 {
                svc.clone()
                    .oneshot(request("a", &format!("user{i}")))
                    .await
                    .unwrap();
            }
            assert_eq!(layer.tracked_keys(), 20);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        fast.housekeeping();
        slow.housekeeping();
        assert_eq!(fast.tracked_keys(), 0);
        assert_eq!(slow.tracked_keys(), 20, "spent budgets must be remembered");
        // And a remembered key is still limited after housekeeping.
        let svc = ServiceBuilder::new().layer(slow).service(ok_service());
        let r = svc.oneshot(request("a", "user0")).await.unwrap();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn housekeeping_task_stops_with_the_layer() {
        let layer = subject_limit_layer(per_minute(1), 1);
        let handle = layer
            .spawn_housekeeping(Duration::from_millis(5))
            .expect("limited layer has state to keep");
        drop(layer);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("task ends once the layer is gone")
            .unwrap();
        assert!(subject_limit_layer(Rate::Unlimited, 1)
            .spawn_housekeeping(Duration::from_millis(5))
            .is_none());
    }
}
