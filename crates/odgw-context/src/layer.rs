//! The request-context layer: gives every request its [`RequestContext`]
//! (id, peer address, facts), stamps `X-Request-Id` on every response,
//! writes the one access-log line per request and counts it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Method};
use odgw_core::{
    headers, ClientIp, ErrorCode, Request, RequestContext, RequestId, Response, TenantId,
};
use tower::{Layer, Service};

use crate::metrics::{Finished, RequestMetrics};

/// Inserts the [`RequestContext`] every inner layer reads.
#[derive(Debug, Clone)]
pub struct RequestContextLayer {
    metrics: RequestMetrics,
}

impl RequestContextLayer {
    pub fn new(metrics: RequestMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContextService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestContextService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`RequestContextLayer`].
#[derive(Debug, Clone)]
pub struct RequestContextService<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S> Service<Request> for RequestContextService<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        // Runs after hop-by-hop stripping: an X-Request-Id named in
        // `Connection` is already gone and a new id is made.
        let request_id = RequestId::from_client(req.headers().get(headers::X_REQUEST_ID));
        // The server puts the peer address on the request; from here on it
        // is read from the context like everything else.
        let client_ip = req.extensions().get::<ClientIp>().map(|ip| ip.0);
        if let Some(ip) = client_ip {
            tracing::trace!(client_ip = %ip, "request received");
        }
        let context = RequestContext::new(request_id.clone(), client_ip);
        req.extensions_mut().insert(context.clone());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
                response.headers_mut().insert(headers::X_REQUEST_ID, value);
            }
            let facts = context.facts().snapshot();
            let code = response.extensions().get::<ErrorCode>().copied();
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            let outcome = facts.outcome(code);
            let route = crate::routes::route_template(&path);
            metrics.observe_request(&Finished {
                method: &method,
                route,
                status,
                outcome,
                error_code: code,
                elapsed,
                upstream_status: facts.upstream_status,
                upstream_ms: facts.upstream_ms,
                pacing_wait_ms: facts.pacing_wait_ms,
            });
            AccessLine {
                request_id: &request_id,
                method: &method,
                path: &path,
                status,
                outcome,
                error_code: code,
                tenant: facts.tenant.as_ref().map(TenantId::as_str),
                subject: facts.subject(),
                upstream_status: facts.upstream_status,
                upstream_ms: facts.upstream_ms,
                duration_ms: elapsed.as_millis() as u64,
            }
            .emit();
            Ok(response)
        })
    }
}

/// The one access-log line of a finished request (target `odgw::access`).
/// The request-context layer is its only producer in the gateway; the log
/// formatter's tests and the `log_line` bench emit it through here too, so
/// they format exactly the event the gateway writes.
#[derive(Debug)]
pub struct AccessLine<'a> {
    pub request_id: &'a RequestId,
    pub method: &'a Method,
    /// As received, client-controlled: the formatter must escape it.
    pub path: &'a str,
    pub status: u16,
    pub outcome: &'static str,
    pub error_code: Option<ErrorCode>,
    pub tenant: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<u64>,
    pub duration_ms: u64,
}

impl AccessLine<'_> {
    pub fn emit(&self) {
        tracing::info!(
            target: "odgw::access",
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            status = self.status,
            outcome = self.outcome,
            error_code = self.error_code.map(ErrorCode::as_str),
            tenant = self.tenant,
            subject = self.subject,
            upstream_status = self.upstream_status,
            upstream_ms = self.upstream_ms,
            duration_ms = self.duration_ms,
            "request"
        );
    }
}
