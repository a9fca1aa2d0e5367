//! The cache layer: answers hits, coalesces misses.

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use odgw_core::{
    headers::ODGW_CACHE, Body, ErrorCode, GatewayError, Request, RequestContext, RequestFacts,
    RequestId, Response,
};
use tower::{Layer, Service, ServiceExt};

use crate::store::{CacheKey, ResponseCache, Stored};

/// This layer's name in stack-order bug reports.
const LAYER: &str = "cache";

/// Serves GETs under the configured routes from a [`ResponseCache`]
/// (after tenant resolution, because the key needs the tenant; before
/// pacing, so hits spend no upstream budget).
///
/// - A hit answers at once with `Odgw-Cache: hit` and `Age`, and marks
///   [`RequestFacts`] `cache_hit`.
/// - Concurrent misses for one key make one inner call; the others wait for
///   it and are answered from its result (`hit` if it was stored).
/// - Only a 200 from upstream is stored; anything else, odgw's own errors
///   included, is returned (to every request that waited on it) and not
///   stored. Such answers carry `Odgw-Cache: miss`.
/// - `Cache-Control: no-cache` or `max-age=0` on the request skips the
///   lookup and replaces the entry with a fresh answer.
///
/// Reads the [`RequestContext`], the guard's [`odgw_core::ApiPath`] (cache
/// routes are relative to `/api/v1`) and, for a cacheable request, the
/// resolved [`odgw_core::Tenant`]; without them it answers the stack-order
/// bug's 500.
#[derive(Debug, Clone)]
pub struct CacheLayer {
    cache: ResponseCache,
}

impl CacheLayer {
    pub fn new(cache: ResponseCache) -> Self {
        Self { cache }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cached<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cached {
            inner,
            cache: self.cache.clone(),
        }
    }
}

/// The service made by [`CacheLayer`].
#[derive(Debug, Clone)]
pub struct Cached<S> {
    inner: S,
    cache: ResponseCache,
}

impl<S> Service<Request> for Cached<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Hits never reach the inner service, so its readiness is awaited
        // only when it is actually called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let context = RequestContext::of(&request, LAYER);
        let (api_path, context) = match context.and_then(|c| Ok((c.api_path(&request, LAYER)?, c)))
        {
            Ok(found) => found,
            Err(bug) => {
                let response = bug.into_response();
                return Box::pin(async move { Ok(response) });
            }
        };
        if !self
            .cache
            .is_cacheable(request.method(), api_path.relative())
        {
            return Box::pin(inner.oneshot(request));
        }
        Box::pin(serve(self.cache.clone(), inner, request, context))
    }
}

async fn serve<S>(
    cache: ResponseCache,
    inner: S,
    request: Request,
    context: RequestContext,
) -> Result<Response, S::Error>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    let tenant = match context.tenant(&request, LAYER) {
        Ok(tenant) => tenant,
        Err(bug) => return Ok(bug.into_response()),
    };
    let (request_id, facts) = (context.id(), context.facts());
    let key = cache.key(
        &tenant.id,
        tenant.generation,
        request.uri().path(),
        request.uri().query(),
    );

    if wants_refresh(request.headers()) {
        cache.count_miss();
        return refresh(&cache, inner, request, key, request_id).await;
    }
    if let Some(stored) = cache.entries().get(&key).await {
        cache.count_hit();
        return Ok(hit(&stored, facts));
    }

    let fill = fill(inner, request, cache.clone(), facts.clone());
    match cache.entries().entry(key).or_try_insert_with(fill).await {
        Ok(entry) if entry.is_fresh() => {
            cache.count_miss();
            Ok(with_cache_status(replay(entry.value()), "miss"))
        }
        // Stored by the request this one waited for (or just before).
        Ok(entry) => {
            cache.count_hit();
            Ok(hit(entry.value(), facts))
        }
        Err(unstored) => {
            cache.count_miss();
            unstored_response(&unstored, facts, request_id)
        }
    }
}

/// `Cache-Control: no-cache` or `max-age=0`: the client wants a fresh answer.
fn wants_refresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|d| d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("max-age=0"))
}

/// Why a fill left nothing in the cache; shared by every request that
/// waited on the fill.
enum Unstored<E> {
    /// An answer that must not be stored (not a 200, odgw-made, too large,
    /// `no-store`), buffered so that every waiter gets it.
    Answer(Buffered),
    /// The upstream body broke off while being read.
    BrokenBody,
    /// The inner service failed; the first waiter to look takes the error.
    Failed(Mutex<Option<E>>),
}

struct Buffered {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    error_code: Option<ErrorCode>,
    /// What the filling request learnt from upstream, for waiters' audit.
    upstream_status: Option<u16>,
    upstream_ms: Option<u64>,
}

/// Calls upstream once for a key; `Ok` is stored, `Err` is handed to every
/// waiter without being stored.
async fn fill<S>(
    inner: S,
    request: Request,
    cache: ResponseCache,
    facts: RequestFacts,
) -> Result<Arc<Stored>, Unstored<S::Error>>
where
    S: Service<Request, Response = Response>,
{
    let response = match inner.oneshot(request).await {
        Ok(response) => response,
        Err(error) => return Err(Unstored::Failed(Mutex::new(Some(error)))),
    };
    let (parts, body) = response.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return Err(Unstored::BrokenBody);
    };
    let error_code = parts.extensions.get::<ErrorCode>().copied();
    if error_code.is_none() && storable(parts.status, &parts.headers, &cache, &body) {
        return Ok(Arc::new(Stored::detached(&parts.headers, &body)));
    }
    let (upstream_status, upstream_ms) = facts.read(|f| (f.upstream_status, f.upstream_ms));
    Err(Unstored::Answer(Buffered {
        status: parts.status,
        headers: parts.headers,
        body,
        error_code,
        upstream_status,
        upstream_ms,
    }))
}

/// Only a whole 200 that upstream does not forbid storing, and small
/// enough not to crowd out everything else.
fn storable(status: StatusCode, headers: &HeaderMap, cache: &ResponseCache, body: &Bytes) -> bool {
    let no_store = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"));
    status == StatusCode::OK && !no_store && cache.fits(body.len())
}

/// `no-cache`: skip the lookup, call upstream, replace the entry.
async fn refresh<S>(
    cache: &ResponseCache,
    inner: S,
    request: Request,
    key: CacheKey,
    request_id: &RequestId,
) -> Result<Response, S::Error>
where
    S: Service<Request, Response = Response>,
{
    let response = inner.oneshot(request).await?;
    if response.status() != StatusCode::OK || response.extensions().get::<ErrorCode>().is_some() {
        return Ok(with_cache_status(response, "miss"));
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        return Ok(broken_body(request_id));
    };
    if storable(parts.status, &parts.headers, cache, &body) {
        let stored = Arc::new(Stored::detached(&parts.headers, &body));
        cache.entries().insert(key, stored).await;
    }
    let response = Response::from_parts(parts, Body::from(body));
    Ok(with_cache_status(response, "miss"))
}

fn replay(stored: &Stored) -> Response {
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.headers_mut() = stored.headers.clone();
    response
}

fn hit(stored: &Stored, facts: &RequestFacts) -> Response {
    facts.update(|f| f.cache_hit = true);
    let mut response = with_cache_status(replay(stored), "hit");
    response.headers_mut().insert(
        header::AGE,
        HeaderValue::from(stored.stored_at.elapsed().as_secs()),
    );
    response
}

fn with_cache_status(mut response: Response, status: &'static str) -> Response {
    response
        .headers_mut()
        .insert(ODGW_CACHE, HeaderValue::from_static(status));
    response
}

fn unstored_response<E>(
    unstored: &Unstored<E>,
    facts: &RequestFacts,
    request_id: &RequestId,
) -> Result<Response, E> {
    match unstored {
        Unstored::Answer(answer) => {
            facts.update(|f| {
                // A waiter's own request never reached upstream; the
                // answer it gets is the one upstream gave the fill.
                if f.upstream_status.is_none() {
                    f.upstream_status = answer.upstream_status;
                    f.upstream_ms = answer.upstream_ms;
                }
            });
            let mut response = Response::new(Body::from(answer.body.clone()));
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers.clone();
            if let Some(code) = answer.error_code {
                response.extensions_mut().insert(code);
            }
            Ok(with_cache_status(response, "miss"))
        }
        Unstored::BrokenBody => Ok(broken_body(request_id)),
        Unstored::Failed(error) => {
            let taken = error.lock().unwrap_or_else(|e| e.into_inner()).take();
            match taken {
                Some(error) => Err(error),
                // The error went to another waiter; errors are not Clone.
                None => Ok(GatewayError::new(ErrorCode::Internal, "internal error")
                    .into_response(request_id)),
            }
        }
    }
}

fn broken_body(request_id: &RequestId) -> Response {
    GatewayError::new(
        ErrorCode::UpstreamUnavailable,
        "open dental's response broke off",
    )
    .into_response(request_id)
}

#[cfg(test)]
mod tests;
