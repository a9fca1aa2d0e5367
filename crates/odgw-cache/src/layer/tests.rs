use std::{
    convert::Infallible,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use http::Method;
use odgw_core::{ApiPath, Facts, Rate, SecretString, Tenant, TenantAccess, TenantId};
use tower::{service_fn, ServiceBuilder};

use super::*;
use crate::CacheSettings;

fn settings(ttl: Duration) -> CacheSettings {
    CacheSettings {
        routes: vec!["/preferences".to_owned()],
        ttl,
        max_size: 1 << 20,
    }
}

fn tenant(id: &str, generation: u64) -> Tenant {
    Tenant::new(TenantAccess {
        id: TenantId::parse(id).unwrap(),
        base_url: "http://127.0.0.1:1/api/v1".to_owned(),
        authorization: SecretString::new("ODFHIR dev/cust"),
        rate: Rate::Unlimited,
        burst: 1,
        generation,
    })
}

fn get(uri: &str, tenant: &Tenant) -> Request {
    request(Method::GET, uri, tenant)
}

fn request(method: Method, uri: &str, tenant: &Tenant) -> Request {
    let mut req = Request::new(Body::empty());
    *req.method_mut() = method;
    *req.uri_mut() = uri.parse().unwrap();
    admit(&mut req);
    req.extensions_mut().insert(tenant.clone());
    req
}

/// What the outer layers give a request before the cache: its context and
/// the guard's admitted path.
fn admit(req: &mut Request) {
    let path = ApiPath::from_uri(req.uri()).unwrap();
    req.extensions_mut().insert(path);
    req.extensions_mut()
        .insert(RequestContext::new(RequestId::generate(), None));
}

fn context(req: &Request) -> RequestContext {
    RequestContext::of(req, "test").unwrap()
}

/// Upstream stand-in: answers `status(n)` with body `v{n}` on its n-th call
/// (from 1), after a short timer so concurrent callers overlap.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    status: fn(usize) -> StatusCode,
}

impl Upstream {
    fn new(status: fn(usize) -> StatusCode) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            status,
        }
    }

    fn ok() -> Self {
        Self::new(|_| StatusCode::OK)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
           + Clone
           + Send
           + 'static {
        let this = self.clone();
        service_fn(move |req: Request| {
            let this = this.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Ok(context) = RequestContext::of(&req, "test") {
                    context
                        .facts()
                        .update(|f| f.upstream_status = Some((this.status)(n).as_u16()));
                }
                let mut response = Response::new(Body::from(format!("v{n}")));
                *response.status_mut() = (this.status)(n);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, HeaderValue::from_static("session=1"));
                Ok(response)
            }
        })
    }
}

fn stack(
    cache: &ResponseCache,
    upstream: &Upstream,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone {
    ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(upstream.service())
}

async fn body(response: Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn send(
    svc: &(impl Service<Request, Response = Response, Error = Infallible> + Clone),
    req: Request,
) -> (Response, Facts) {
    let facts = context(&req).facts().clone();
    let response = svc.clone().oneshot(req).await.unwrap();
    (response, facts.snapshot())
}

#[tokio::test]
async fn second_get_is_a_hit_without_an_upstream_call() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);

    let (first, facts) = send(&svc, get("/api/v1/preferences?PrefName=PracticeTitle", &t)).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["odgw-cache"], "miss");
    assert!(first.headers().get(header::AGE).is_none());
    assert!(!facts.cache_hit);
    assert_eq!(body(first).await, "v1");

    let (second, facts) = send(&svc, get("/api/v1/preferences?PrefName=PracticeTitle", &t)).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["odgw-cache"], "hit");
    assert_eq!(second.headers()[header::AGE], "0");
    assert_eq!(second.headers()[header::CONTENT_TYPE], "application/json");
    assert!(second.headers().get(header::SET_COOKIE).is_none());
    assert!(facts.cache_hit);
    assert_eq!(facts.upstream_status, None);
    assert_eq!(body(second).await, "v1");

    assert_eq!(upstream.calls(), 1);
    assert_eq!((cache.hits(), cache.misses()), (1, 1));
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 1);
    assert!(cache.weighted_size() > 0);
}

#[tokio::test]
async fn age_counts_whole_seconds_since_stored() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    send(&svc, get("/api/v1/preferences", &t)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (hit, _) = send(&svc, get("/api/v1/preferences", &t)).await;
    let age: u64 = hit.headers()[header::AGE]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&age), "{age}");
}

#[tokio::test]
async fn entries_never_cross_tenants() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    send(&svc, get("/api/v1/preferences", &tenant("a", 1))).await;
    let (other, facts) = send(&svc, get("/api/v1/preferences", &tenant("b", 1))).await;
    assert_eq!(other.headers()["odgw-cache"], "miss");
    assert!(!facts.cache_hit);
    assert_eq!(body(other).await, "v2");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn query_order_does_not_matter_but_values_do() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    send(&svc, get("/api/v1/preferences?a=1&b=2", &t)).await;
    let (swapped, _) = send(&svc, get("/api/v1/preferences?b=2&a=1", &t)).await;
    assert_eq!(swapped.headers()["odgw-cache"], "hit");
    let (other, _) = send(&svc, get("/api/v1/preferences?a=1&b=3", &t)).await;
    assert_eq!(other.headers()["odgw-cache"], "miss");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn path_case_routes_but_the_key_keeps_the_exact_path() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    let (first, _) = send(&svc, get("/api/v1/Preferences", &t)).await;
    assert_eq!(first.headers()["odgw-cache"], "miss");
    let (lower, _) = send(&svc, get("/api/v1/preferences", &t)).await;
    assert_eq!(lower.headers()["odgw-cache"], "miss");
    let (again, _) = send(&svc, get("/api/v1/Preferences", &t)).await;
    assert_eq!(again.headers()["odgw-cache"], "hit");
}

#[tokio::test(start_paused = true)]
async fn fifty_concurrent_misses_make_one_upstream_call() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            let req = get("/api/v1/preferences?PrefName=ProgramVersion", &t);
            tokio::spawn(async move { svc.oneshot(req).await.unwrap() })
        })
        .collect();
    let mut misses = 0;
    for handle in handles {
        let response = handle.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        if response.headers()["odgw-cache"] == "miss" {
            misses += 1;
        }
        assert_eq!(body(response).await, "v1");
    }
    assert_eq!(upstream.calls(), 1);
    assert_eq!(misses, 1, "only the request that filled is a miss");
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_an_unstored_answer() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::new(|_| StatusCode::SERVICE_UNAVAILABLE);
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            let req = get("/api/v1/preferences", &t);
            let facts = context(&req).facts().clone();
            tokio::spawn(async move { (svc.oneshot(req).await.unwrap(), facts) })
        })
        .collect();
    for handle in handles {
        let (response, facts) = handle.await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["odgw-cache"], "miss");
        assert_eq!(facts.snapshot().upstream_status, Some(503));
        assert_eq!(body(response).await, "v1");
    }
    assert_eq!(upstream.calls(), 1);
    // …and it was not stored.
    send(&svc, get("/api/v1/preferences", &t)).await;
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let cache = ResponseCache::new(settings(Duration::from_millis(200)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    send(&svc, get("/api/v1/preferences", &t)).await;
    let (hit, _) = send(&svc, get("/api/v1/preferences", &t)).await;
    assert_eq!(hit.headers()["odgw-cache"], "hit");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (expired, _) = send(&svc, get("/api/v1/preferences", &t)).await;
    assert_eq!(expired.headers()["odgw-cache"], "miss");
    assert_eq!(body(expired).await, "v2");
}

#[tokio::test]
async fn no_cache_refreshes_the_entry() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    send(&svc, get("/api/v1/preferences", &t)).await;
    for directive in ["no-cache", "max-age=0", "private, No-Cache"] {
        let mut req = get("/api/v1/preferences", &t);
        req.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(directive));
        let (fresh, _) = send(&svc, req).await;
        assert_eq!(fresh.headers()["odgw-cache"], "miss", "{directive}");
        let fresh_body = body(fresh).await;
        let (hit, _) = send(&svc, get("/api/v1/preferences", &t)).await;
        assert_eq!(hit.headers()["odgw-cache"], "hit");
        assert_eq!(
            body(hit).await,
            fresh_body,
            "{directive} replaced the entry"
        );
    }
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn purge_tenant_drops_only_that_tenant() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let (a, b) = (tenant("a", 1), tenant("b", 1));
    send(&svc, get("/api/v1/preferences", &a)).await;
    send(&svc, get("/api/v1/preferences?x=1", &a)).await;
    send(&svc, get("/api/v1/preferences", &b)).await;
    cache.purge_tenant(&a.id);
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 1, "a's entries are freed, b's kept");
    let (a_again, _) = send(&svc, get("/api/v1/preferences", &a)).await;
    assert_eq!(a_again.headers()["odgw-cache"], "miss");
    let (b_again, _) = send(&svc, get("/api/v1/preferences", &b)).await;
    assert_eq!(b_again.headers()["odgw-cache"], "hit");

    cache.purge_all();
    let (b_purged, _) = send(&svc, get("/api/v1/preferences", &b)).await;
    assert_eq!(b_purged.headers()["odgw-cache"], "miss");
}

#[tokio::test(start_paused = true)]
async fn a_fill_racing_a_purge_is_not_served_after_it() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let a = tenant("a", 1);
    let in_flight = tokio::spawn(svc.clone().oneshot(get("/api/v1/preferences", &a)));
    tokio::task::yield_now().await;
    assert_eq!(upstream.calls(), 1, "the fill has started");
    cache.purge_tenant(&a.id);
    in_flight.await.unwrap().unwrap();
    let (after, _) = send(&svc, get("/api/v1/preferences", &a)).await;
    assert_eq!(after.headers()["odgw-cache"], "miss");
}

#[tokio::test]
async fn a_new_generation_misses() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    send(&svc, get("/api/v1/preferences", &tenant("a", 1))).await;
    let (rekeyed, _) = send(&svc, get("/api/v1/preferences", &tenant("a", 2))).await;
    assert_eq!(rekeyed.headers()["odgw-cache"], "miss");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn non_200_is_never_stored() {
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::BAD_REQUEST,
        StatusCode::CREATED,
    ] {
        let cache = ResponseCache::new(settings(Duration::from_secs(60)));
        let upstream = Upstream::new(match status {
            StatusCode::NOT_FOUND => |_| StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST => |_| StatusCode::BAD_REQUEST,
            _ => |_| StatusCode::CREATED,
        });
        let svc = stack(&cache, &upstream);
        let t = tenant("a", 1);
        for _ in 0..2 {
            let (r, _) = send(&svc, get("/api/v1/preferences", &t)).await;
            assert_eq!(r.status(), status);
            assert_eq!(r.headers()["odgw-cache"], "miss");
        }
        assert_eq!(upstream.calls(), 2, "{status}");
    }
}

#[tokio::test]
async fn odgw_errors_pass_through_uncached_with_their_code() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |req: Request| {
        counted.fetch_add(1, Ordering::SeqCst);
        let rid = context(&req).id().clone();
        async move {
            // An odgw-made 200 is unlikely, but must still not be stored.
            let mut r = GatewayError::new(ErrorCode::RateLimited, "queue full").into_response(&rid);
            *r.status_mut() = StatusCode::OK;
            Ok::<_, Infallible>(r)
        }
    });
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(inner);
    let t = tenant("a", 1);
    for _ in 0..2 {
        let r = svc
            .clone()
            .oneshot(get("/api/v1/preferences", &t))
            .await
            .unwrap();
        assert_eq!(
            r.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::RateLimited)
        );
        assert_eq!(r.headers()["odgw-error"], "rate_limited");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn other_paths_and_methods_are_not_cached() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let t = tenant("a", 1);
    for (method, uri) in [
        (Method::GET, "/api/v1/patients/11"),
        (Method::GET, "/api/v1/preferencesX"),
        (Method::POST, "/api/v1/preferences"),
        (Method::HEAD, "/api/v1/preferences"),
    ] {
        let before = upstream.calls();
        let (first, _) = send(&svc, request(method.clone(), uri, &t)).await;
        let (second, _) = send(&svc, request(method.clone(), uri, &t)).await;
        assert!(
            first.headers().get("odgw-cache").is_none(),
            "{method} {uri}"
        );
        assert!(
            second.headers().get("odgw-cache").is_none(),
            "{method} {uri}"
        );
        assert_eq!(upstream.calls(), before + 2, "{method} {uri}");
    }
    assert_eq!((cache.hits(), cache.misses()), (0, 0));
}

#[tokio::test]
async fn a_body_too_large_to_store_is_still_returned() {
    let cache = ResponseCache::new(CacheSettings {
        routes: vec!["/preferences".to_owned()],
        ttl: Duration::from_secs(60),
        max_size: 80, // entries up to 10 bytes
    });
    let inner = service_fn(|_req: Request| async {
        Ok::<_, Infallible>(Response::new(Body::from("x".repeat(11))))
    });
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(inner);
    let t = tenant("a", 1);
    for _ in 0..2 {
        let r = svc
            .clone()
            .oneshot(get("/api/v1/preferences", &t))
            .await
            .unwrap();
        assert_eq!(r.headers()["odgw-cache"], "miss");
        assert_eq!(body(r).await.len(), 11);
    }
}

#[tokio::test]
async fn no_store_from_upstream_is_respected() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |_req: Request| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            let mut r = Response::new(Body::from("secret"));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok::<_, Infallible>(r)
        }
    });
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(inner);
    let t = tenant("a", 1);
    for _ in 0..2 {
        svc.clone()
            .oneshot(get("/api/v1/preferences", &t))
            .await
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_cacheable_request_without_tenant_is_an_internal_error() {
    let cache = ResponseCache::new(settings(Duration::from_secs(60)));
    let upstream = Upstream::ok();
    let svc = stack(&cache, &upstream);
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = "/api/v1/preferences".parse().unwrap();
    admit(&mut req);
    let r = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.headers()["odgw-error"], "internal_error");
    assert_eq!(upstream.calls(), 0);

    // Nor does a request the guard never admitted reach upstream.
    let mut req = get("/api/v1/preferences", &tenant("a", 1));
    req.extensions_mut().remove::<ApiPath>();
    let r = svc.oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn max_size_counts_each_entrys_bookkeeping_not_only_its_bytes() {
    // 64 KiB of budget and 2-byte bodies: weighed by payload alone, hundreds
    // of entries would fit; with the per-entry overhead, at most
    // 64 KiB / ENTRY_OVERHEAD do.
    let cache = ResponseCache::new(CacheSettings {
        routes: vec!["/preferences".to_owned()],
        ttl: Duration::from_secs(60),
        max_size: 64 * 1024,
    });
    let inner =
        service_fn(|_req: Request| async { Ok::<_, Infallible>(Response::new(Body::from("{}"))) });
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(inner);
    let t = tenant("a", 1);
    for i in 0..400 {
        let path = format!("/api/v1/preferences/{i}");
        let r = svc.clone().oneshot(get(&path, &t)).await.unwrap();
        assert_eq!(body(r).await, "{}");
    }
    cache.run_pending_tasks().await;
    let entries = cache.entry_count();
    let most = (64 * 1024 / crate::store::ENTRY_OVERHEAD) as u64;
    assert!((most / 2..=most).contains(&entries), "{entries} entries");
    assert!(cache.weighted_size() <= 64 * 1024);
    assert!(cache.weighted_size() >= entries * crate::store::ENTRY_OVERHEAD as u64);
}
