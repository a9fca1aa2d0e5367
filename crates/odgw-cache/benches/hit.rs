//! The cache-hit path through the layer: key building, lookup, and the
//! replayed response.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{convert::Infallible, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use odgw_cache::{CacheLayer, CacheSettings, ResponseCache};
use odgw_core::{
    ApiPath, Body, Rate, Request, RequestContext, RequestId, Response, SecretString, Tenant,
    TenantAccess, TenantId,
};
use tower::{service_fn, ServiceBuilder, ServiceExt};

fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let cache = ResponseCache::new(CacheSettings {
        routes: vec!["/preferences".to_owned()],
        ttl: Duration::from_secs(3600),
        max_size: 64 << 20,
    });
    let body = r#"[{"PrefName":"PracticeTitle","ValueString":"Sunrise Dental"}]"#;
    let svc = ServiceBuilder::new()
        .layer(CacheLayer::new(cache.clone()))
        .service(service_fn(move |_req: Request| async move {
            Ok::<_, Infallible>(Response::new(Body::from(body)))
        }));
    let tenant = Tenant::new(TenantAccess {
        id: TenantId::parse("practice-1").unwrap(),
        base_url: "https://api.opendental.com/api/v1".to_owned(),
        authorization: SecretString::new("ODFHIR dev/cust"),
        rate: Rate::Unlimited,
        burst: 1,
        generation: 1,
    });
    let request = || {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "/api/v1/preferences?PrefName=PracticeTitle&Offset=0"
            .parse()
            .unwrap();
        let path = ApiPath::from_uri(req.uri()).unwrap();
        req.extensions_mut().insert(path);
        req.extensions_mut()
            .insert(RequestContext::new(RequestId::generate(), None));
        req.extensions_mut().insert(tenant.clone());
        req
    };
    // Fill the entry once; everything measured below is a hit.
    rt.block_on(svc.clone().oneshot(request())).unwrap();

    c.bench_function("cache_hit_through_layer", |b| {
        b.iter(|| {
            let response = rt.block_on(svc.clone().oneshot(request())).unwrap();
            assert_eq!(response.headers()["odgw-cache"], "hit");
            response
        })
    });
}

criterion_group!(benches, hit);
criterion_main!(benches);
