//! Tenant resolution: turns the tenant auth selected (in the
//! [`RequestContext`]) into the [`odgw_core::Tenant`] that pacing, cache and
//! forwarding need, by reading (and decrypting) the practice's record from
//! the key store.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use odgw_core::{ErrorCode, GatewayError, Request, RequestContext, Response};
use odgw_keystore::{KeyStore, StoreError, TenantDefaults};
use tower::{Layer, Service};

/// `Retry-After` on a 503 `store_unavailable`: about one reconnect attempt.
const STORE_RETRY_AFTER_SECS: u64 = 2;

/// This layer's name in stack-order bug reports.
const LAYER: &str = "tenant resolution";

/// Looks the tenant up and inserts it as [`odgw_core::Tenant`]; 403 `unknown_tenant`
/// or `tenant_disabled`, or 503 `store_unavailable`, otherwise.
#[derive(Debug, Clone)]
pub struct TenantLayer {
    store: Arc<dyn KeyStore>,
    defaults: Arc<TenantDefaults>,
}

impl TenantLayer {
    pub fn new(store: Arc<dyn KeyStore>, defaults: TenantDefaults) -> Self {
        Self {
            store,
            defaults: Arc::new(defaults),
        }
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantResolve<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TenantResolve {
            inner,
            store: self.store.clone(),
            defaults: self.defaults.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TenantResolve<S> {
    inner: S,
    store: Arc<dyn KeyStore>,
    defaults: Arc<TenantDefaults>,
}

impl<S> Service<Request> for TenantResolve<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        let defaults = self.defaults.clone();
        Box::pin(async move {
            let context = RequestContext::of(&req, LAYER)
                .and_then(|context| Ok((context.selected_tenant(LAYER)?, context)));
            let (tenant_id, context) = match context {
                Ok(found) => found,
                Err(bug) => return Ok(bug.into_response()),
            };
            let request_id = context.id();
            let record = match store.get(&tenant_id).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    return Ok(GatewayError::new(
                        ErrorCode::UnknownTenant,
                        "no key pair is stored for this tenant",
                    )
                    .into_response(request_id))
                }
                // A shared store out of reach, with no last known record to
                // fall back on: say so (503), as opposed to a broken store.
                Err(error @ StoreError::Unavailable { .. }) => {
                    tracing::warn!(%error, tenant = %tenant_id, "key store unreachable");
                    let mut problem = GatewayError::new(
                        ErrorCode::StoreUnavailable,
                        "the key store cannot be reached",
                    );
                    problem.retry_after = Some(STORE_RETRY_AFTER_SECS);
                    return Ok(problem.into_response(request_id));
                }
                Err(error) => {
                    tracing::error!(%error, tenant = %tenant_id, "key store read failed");
                    return Ok(
                        GatewayError::new(ErrorCode::Internal, "key store unavailable")
                            .into_response(request_id),
                    );
                }
            };
            if !record.enabled {
                return Ok(
                    GatewayError::new(ErrorCode::TenantDisabled, "the tenant is disabled")
                        .into_response(request_id),
                );
            }
            let tenant = match record.to_tenant(&defaults) {
                Ok(tenant) => tenant,
                Err(missing) => {
                    tracing::error!(tenant = %missing.0, "no developer key for tenant");
                    return Ok(GatewayError::new(
                        ErrorCode::UnknownTenant,
                        "no developer key is configured for this tenant",
                    )
                    .into_response(request_id));
                }
            };
            req.extensions_mut().insert(tenant);
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests;
