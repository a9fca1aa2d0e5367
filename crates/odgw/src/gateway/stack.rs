//! The data-plane stack: its composition and the service that runs each
//! request on the current runtime's stack.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use odgw_audit::{AuditLayer, IntentLayer};
use odgw_auth::{AuthLayer, Authenticator};
use odgw_cache::{CacheLayer, ResponseCache};
use odgw_context::RequestContextLayer;
use odgw_core::{Request, Response};
use odgw_keystore::TenantDefaults;
use odgw_limit::{Pacer, PacingLayer, SubjectLimitLayer};
use odgw_proxy::{Forwarder, GuardLayer, HopByHopLayer};
use odgw_tenant::TenantLayer;
use tower::{
    util::{BoxCloneService, BoxCloneSyncService, Oneshot},
    Service, ServiceBuilder, ServiceExt,
};

use crate::config::Config;

use super::{build::pacing_settings, Core, Runtime};

/// The data-plane service after type erasure.
pub type DataPlane = BoxCloneService<Request, Response, Infallible>;

/// A runtime's stack: like [`DataPlane`], and shareable between threads.
pub(super) type Stack = BoxCloneSyncService<Request, Response, Infallible>;

/// The reloadable parts of one runtime, borrowed to compose a stack.
pub(super) struct Parts<'a> {
    pub(super) config: &'a Config,
    pub(super) authenticator: &'a Authenticator,
    pub(super) subject_limit: &'a SubjectLimitLayer,
    pub(super) pacer: &'a Arc<dyn Pacer>,
    pub(super) cache: &'a ResponseCache,
    pub(super) defaults: &'a TenantDefaults,
}

impl Runtime {
    pub(super) fn parts(&self) -> Parts<'_> {
        Parts {
            config: &self.config,
            authenticator: &self.authenticator,
            subject_limit: &self.subject_limit,
            pacer: &self.pacer,
            cache: &self.cache,
            defaults: &self.defaults,
        }
    }
}

/// The data-plane stack, outer to inner. Reordering happens here only.
pub(super) fn stack(
    core: &Core,
    rt: &Parts<'_>,
    audit_layer: AuditLayer,
    intent_layer: IntentLayer,
) -> Stack {
    let stack = ServiceBuilder::new()
        // Strip hop-by-hop and Connection-named headers before anything reads a header.
        .layer(HopByHopLayer)
        // Request id, facts slot for inner layers, X-Request-Id, access log, metrics.
        .layer(RequestContextLayer::new(core.metrics.clone()))
        // Every response waits for its durable audit record (fail closed).
        .layer(audit_layer)
        // Cheap refusals first: 404 outside /api/v1/, 400 bad_path, 413 body_too_large.
        .layer(GuardLayer::new(rt.config.server.max_body.0))
        // JWT → Principal and the selected TenantId; 401/403.
        .layer(AuthLayer::new(rt.authenticator.clone()))
        // Per-(tenant, subject) inbound limit: answered at once, before any store read.
        .layer(rt.subject_limit.clone())
        // Key store → Tenant (keys, base_url, budget); 403 unknown/disabled.
        .layer(TenantLayer::new(core.store.clone(), rt.defaults.clone()))
        // Cached reference GETs answer here and spend no upstream budget.
        .layer(CacheLayer::new(rt.cache.clone()))
        // Wait for the tenant's Open Dental budget; hand it to the forwarder for upstream 429s.
        .layer(PacingLayer::new(
            rt.pacer.clone(),
            pacing_settings(rt.config),
        ))
        // Writes get a durable intent record before Open Dental is called.
        .layer(intent_layer)
        .service(Forwarder::new(core.upstream.clone()));
    BoxCloneSyncService::new(stack)
}

/// Loads the current runtime's stack per request; the request keeps that
/// stack (and everything it holds) until it is done.
#[derive(Clone)]
pub(super) struct LiveDataPlane {
    pub(super) runtime: Arc<ArcSwap<Runtime>>,
}

impl Service<Request> for LiveDataPlane {
    type Response = Response;
    type Error = Infallible;
    type Future = Oneshot<Stack, Request>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.runtime.load().stack.clone().oneshot(req)
    }
}
