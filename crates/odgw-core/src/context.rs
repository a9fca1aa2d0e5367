//! The request context: what the request-context layer gives every request,
//! and the one way the layers inside it read it.
//!
//! The outermost odgw layer inserts one [`RequestContext`] per request. Every
//! inner layer takes it with [`RequestContext::of`], and takes what an
//! earlier inner layer produced (the caller and tenant auth selected, the
//! resolved [`Tenant`], the guard's [`ApiPath`]) through the context's
//! accessors. When something is missing, the stack was composed in the wrong
//! order: the accessors say so with a [`StackOrderBug`], which answers 500
//! `internal_error` and logs which layer missed what, the same way for every
//! layer.

use std::{net::IpAddr, sync::Arc};

use crate::{
    ApiPath, ErrorCode, GatewayError, Principal, RequestFacts, RequestId, Response, Tenant,
    TenantId,
};

/// A request's id, peer address and [`RequestFacts`]. Cheap to clone (one
/// reference count).
#[derive(Debug, Clone)]
pub struct RequestContext(Arc<Parts>);

#[derive(Debug)]
struct Parts {
    id: RequestId,
    client_ip: Option<IpAddr>,
    facts: RequestFacts,
}

impl RequestContext {
    /// A context with empty facts.
    pub fn new(id: RequestId, client_ip: Option<IpAddr>) -> Self {
        Self(Arc::new(Parts {
            id,
            client_ip,
            facts: RequestFacts::default(),
        }))
    }

    /// The context of `request`, or a [`StackOrderBug`] naming `layer` when
    /// the request-context layer did not run before it.
    pub fn of<B>(request: &http::Request<B>, layer: &'static str) -> Result<Self, StackOrderBug> {
        Self::from_extensions(request.extensions(), layer)
    }

    /// [`RequestContext::of`] for code that holds only the extensions (an
    /// axum extractor's request parts).
    pub fn from_extensions(
        extensions: &http::Extensions,
        layer: &'static str,
    ) -> Result<Self, StackOrderBug> {
        extensions.get::<Self>().cloned().ok_or(StackOrderBug {
            request_id: None,
            layer,
            missing: "request context",
        })
    }

    /// Echoed in `X-Request-Id`, problem bodies, logs and the audit record.
    pub fn id(&self) -> &RequestId {
        &self.0.id
    }

    /// The client connection's peer address, when the server knew it.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.0.client_ip
    }

    /// What the inner layers report back to the outer ones.
    pub fn facts(&self) -> &RequestFacts {
        &self.0.facts
    }

    /// The verified caller, once auth has run.
    pub fn principal(&self, layer: &'static str) -> Result<Principal, StackOrderBug> {
        let principal = self.0.facts.read(|f| f.principal.clone());
        principal.ok_or_else(|| self.stack_order_bug(layer, "verified caller"))
    }

    /// The tenant auth selected for the request, before it is resolved.
    pub fn selected_tenant(&self, layer: &'static str) -> Result<TenantId, StackOrderBug> {
        let tenant = self.0.facts.read(|f| f.tenant.clone());
        tenant.ok_or_else(|| self.stack_order_bug(layer, "selected tenant"))
    }

    /// The tenant resolved from the key store (keys, base URL, budget).
    pub fn tenant<B>(
        &self,
        request: &http::Request<B>,
        layer: &'static str,
    ) -> Result<Tenant, StackOrderBug> {
        let tenant = request.extensions().get::<Tenant>().cloned();
        tenant.ok_or_else(|| self.stack_order_bug(layer, "resolved tenant"))
    }

    /// The request's path as the guard admitted it.
    pub fn api_path<B>(
        &self,
        request: &http::Request<B>,
        layer: &'static str,
    ) -> Result<ApiPath, StackOrderBug> {
        let path = request.extensions().get::<ApiPath>().cloned();
        path.ok_or_else(|| self.stack_order_bug(layer, "admitted API path"))
    }

    fn stack_order_bug(&self, layer: &'static str, missing: &'static str) -> StackOrderBug {
        StackOrderBug {
            request_id: Some(self.0.id.clone()),
            layer,
            missing,
        }
    }
}

/// A layer ran without what an outer layer must have given the request: the
/// stack is composed in the wrong order. Never the client's doing, so never
/// a 4xx: the request is answered 500 `internal_error`.
#[derive(Debug, Clone)]
#[must_use = "a stack-order bug must be answered with its response"]
pub struct StackOrderBug {
    /// `None` when the context itself is missing.
    request_id: Option<RequestId>,
    layer: &'static str,
    missing: &'static str,
}

impl StackOrderBug {
    /// The id to answer under: the request's own, or a new one when the
    /// context itself is missing (logged with the bug, so it can be found).
    pub fn request_id(&self) -> RequestId {
        self.request_id.clone().unwrap_or_else(RequestId::generate)
    }

    /// Logs the bug and makes the 500 `internal_error` answer.
    pub fn into_response(self) -> Response {
        self.into_response_with_id(&self.request_id())
    }

    /// [`StackOrderBug::into_response`] under an id the caller already took
    /// from [`StackOrderBug::request_id`] (to record it elsewhere too).
    pub fn into_response_with_id(&self, request_id: &RequestId) -> Response {
        tracing::error!(
            request_id = %request_id,
            layer = self.layer,
            missing = self.missing,
            "stack-order bug: a layer ran without what an outer layer provides"
        );
        GatewayError::new(ErrorCode::Internal, "internal error").into_response(request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> http::Request<()> {
        http::Request::get("/api/v1/patients").body(()).unwrap()
    }

    #[test]
    fn a_missing_context_is_a_500_under_a_fresh_id() {
        let bug = RequestContext::of(&request(), "test layer").unwrap_err();
        let response = bug.into_response();
        assert_eq!(response.status(), 500);
        let id = response.headers()[crate::headers::X_REQUEST_ID]
            .to_str()
            .unwrap();
        assert_eq!(id.len(), 36, "a generated UUID: {id}");
    }

    #[test]
    fn missing_parts_answer_under_the_requests_id() {
        let mut req = request();
        let id = RequestId::from_client(Some(&http::HeaderValue::from_static("abc")));
        req.extensions_mut().insert(RequestContext::new(id, None));
        let ctx = RequestContext::of(&req, "test layer").unwrap();
        for bug in [
            ctx.principal("t").unwrap_err(),
            ctx.selected_tenant("t").unwrap_err(),
            ctx.tenant(&req, "t").unwrap_err(),
            ctx.api_path(&req, "t").unwrap_err(),
        ] {
            let response = bug.into_response();
            assert_eq!(response.status(), 500);
            assert_eq!(response.headers()[crate::headers::X_REQUEST_ID], "abc");
            assert_eq!(
                response.headers()[crate::headers::ODGW_ERROR],
                "internal_error"
            );
        }
    }

    #[test]
    fn auth_results_are_read_from_the_facts() {
        let ctx = RequestContext::new(RequestId::generate(), None);
        let tenant = TenantId::parse("demo").unwrap();
        ctx.facts().update(|f| f.tenant = Some(tenant.clone()));
        assert_eq!(ctx.selected_tenant("t").unwrap(), tenant);
        // Clones share one context: what one layer records, the others see.
        let clone = ctx.clone();
        clone.facts().update(|f| f.cache_hit = true);
        assert!(ctx.facts().snapshot().cache_hit);
    }
}
