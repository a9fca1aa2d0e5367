//! [`AuthLayer`] / [`AuthService`]: bearer token → the verified caller and
//! the selected tenant, recorded in the request's facts.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{header::AUTHORIZATION, HeaderValue};
use odgw_core::{headers::ODGW_TENANT, ErrorCode, GatewayError, Request, RequestContext, Response};
use tower::{Layer, Service};

use crate::{check_scope, select_tenant, Authenticator};

/// This layer's name in stack-order bug reports.
const LAYER: &str = "auth";

/// Adds [`AuthService`] to a stack. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
    require_scopes: bool,
}

impl AuthLayer {
    /// Uses `authenticator` for tokens and its settings' `require_scopes`.
    pub fn new(authenticator: Authenticator) -> Self {
        let require_scopes = authenticator.settings().require_scopes;
        Self {
            authenticator,
            require_scopes,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
            require_scopes: self.require_scopes,
        }
    }
}

/// Authenticates each request before calling `inner`.
///
/// Needs the [`RequestContext`] and the guard's [`odgw_core::ApiPath`] (500
/// `internal_error` without them: a stack-order bug). Then: exactly one `Authorization:
/// Bearer <token>` (absent or not Bearer → 401 `missing_token`; repeated →
/// 401 `invalid_token`), token verification (401 `invalid_token`), tenant
/// selection (403 `tenant_not_allowed`), scope check (403
/// `insufficient_scope`). The caller (`principal`) and the selected tenant
/// are written to the context's facts as soon as known, so denied requests
/// are audited with them, and inner layers read them from there. On success
/// the client's `Authorization` header is removed: nothing downstream needs
/// the bearer token, and it must never reach Open Dental.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Authenticator,
    require_scopes: bool,
}

/// The token of `Authorization: Bearer <token>`, scheme matched in any case.
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    let (scheme, token) = text.split_once([' ', '\t'])?;
    let token = token.trim_matches([' ', '\t']);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn authenticate(
    authenticator: &Authenticator,
    require_scopes: bool,
    request: &mut Request,
    context: &RequestContext,
    api_path: &str,
) -> Result<(), GatewayError> {
    let (facts, request_id) = (context.facts(), context.id());
    let principal = {
        let mut values = request.headers().get_all(AUTHORIZATION).iter();
        let token = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return Err(GatewayError::new(
                    ErrorCode::InvalidToken,
                    "multiple authorization headers",
                ))
            }
            (Some(value), None) => bearer_token(value),
        };
        let Some(token) = token else {
            return Err(GatewayError::new(
                ErrorCode::MissingToken,
                "missing bearer token",
            ));
        };
        match authenticator.verify(token).await {
            Ok(principal) => principal,
            Err(error) => {
                tracing::debug!(request_id = %request_id, %error, "token refused");
                return Err(error.into());
            }
        }
    };
    facts.update(|f| f.principal = Some(principal.clone()));
    let tenant_values: Vec<&HeaderValue> = request.headers().get_all(ODGW_TENANT).iter().collect();
    let tenant = select_tenant(&principal, &tenant_values)?;
    facts.update(|f| f.tenant = Some(tenant));
    check_scope(&principal, request.method(), api_path, require_scopes)?;
    request.headers_mut().remove(AUTHORIZATION);
    Ok(())
}

impl<S> Service<Request> for AuthService<S>
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

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was driven to readiness is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.authenticator.clone();
        let require_scopes = self.require_scopes;
        Box::pin(async move {
            let context = RequestContext::of(&request, LAYER)
                .and_then(|context| Ok((context.api_path(&request, LAYER)?, context)));
            let (api_path, context) = match context {
                Ok(found) => found,
                Err(bug) => return Ok(bug.into_response()),
            };
            let outcome = authenticate(
                &authenticator,
                require_scopes,
                &mut request,
                &context,
                api_path.relative(),
            )
            .await;
            match outcome {
                Ok(()) => inner.call(request).await,
                Err(error) => Ok(error.into_response(context.id())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let ok = |s: &str| bearer_token(&HeaderValue::from_str(s).unwrap()).map(str::to_owned);
        assert_eq!(ok("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(ok("bearer abc").as_deref(), Some("abc"));
        assert_eq!(ok("BEARER   abc ").as_deref(), Some("abc"));
        assert_eq!(ok("Bearer"), None);
        assert_eq!(ok("Bearer   "), None);
        assert_eq!(ok("Basic dXNlcjpwYXNz"), None);
        assert_eq!(ok("Bearerabc"), None);
        assert_eq!(ok("abc"), None);
        assert_eq!(
            bearer_token(&HeaderValue::from_bytes(b"Bearer caf\xe9").unwrap()),
            None
        );
    }
}
