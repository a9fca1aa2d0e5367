//! The innermost service: sends the request to the tenant's Open Dental and
//! streams the answer back.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, HeaderMap, HeaderValue};
use http_body::Body as _;
use odgw_core::{
    Body, ErrorCode, GatewayError, Request, RequestContext, RequestFacts, RequestId, Response,
    Tenant, UpstreamBudget,
};
use tokio::time::Instant;
use tower::Service;

use crate::{
    check_path,
    client::UpstreamClient,
    error::UpstreamError,
    guard::BodyLimitTripped,
    strip_hop_by_hop,
    throttle::{replayable, upstream_retry_after, upstream_throttled},
    upstream::{authorization_value, upstream_headers, upstream_uri},
};

/// Forwards a request to `{tenant base_url}/{path}?{query}` (SPEC §4) with
/// the method, query and body unchanged and the headers from
/// [`upstream_headers`], and answers with the upstream's status, headers
/// (minus hop-by-hop and any `Odgw-*`) and streamed body. Upstream 4xx and 5xx
/// pass through as they are.
///
/// Reads the [`RequestContext`], the guard's [`odgw_core::ApiPath`] and the
/// resolved [`odgw_core::Tenant`] (a missing one is the stack-order bug's
/// 500), and fills `upstream_status` and `upstream_ms` in the facts
/// (those of the last answer when a request is sent twice).
/// Failures: 502 `upstream_unavailable`, 504 `upstream_timeout`, and 413
/// `body_too_large` when the [`crate::Guard`] cut the body off.
///
/// The forwarder owns every upstream retry. The [`UpstreamClient`] sends a
/// GET or HEAD once more when its connection failed before any answer.
/// When Open Dental answers 429 and the pacing layer put the tenant's
/// [`UpstreamBudget`] into the extensions, the tenant is paused for the
/// answer's `Retry-After`, and a GET or HEAD without a body is sent once
/// more when the budget has a slot before the request's deadline; otherwise,
/// for every other request, and when the retry is throttled too (another
/// pause), the answer is odgw's 429 `upstream_throttled`. Without a budget,
/// Open Dental's 429 is relayed like any other answer.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: UpstreamClient,
}

impl Forwarder {
    /// A forwarder sending through `client` (one shared client per process,
    /// so that its connection pools are shared).
    pub fn new(client: UpstreamClient) -> Self {
        Self { client }
    }
}

impl Service<Request> for Forwarder {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The client queues on its own pool; there is nothing to wait for.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let client = self.client.clone();
        Box::pin(async move { Ok(forward(client, request).await) })
    }
}

async fn forward(client: UpstreamClient, request: Request) -> Response {
    const LAYER: &str = "forwarder";
    let context = RequestContext::of(&request, LAYER).and_then(|c| {
        let api_path = c.api_path(&request, LAYER)?;
        Ok((c.tenant(&request, LAYER)?, api_path, c))
    });
    let (tenant, api_path, context) = match context {
        Ok(found) => found,
        Err(bug) => return bug.into_response(),
    };
    let (request_id, facts) = (context.id().clone(), context.facts().clone());
    let limit = request.extensions().get::<BodyLimitTripped>().cloned();
    // The guard has checked the path already; checking again keeps the
    // forwarder safe on its own.
    if let Err(error) = check_path(api_path.full()) {
        return GatewayError::new(ErrorCode::BadPath, error.to_string()).into_response(&request_id);
    }

    if authorization_value(&tenant.authorization).is_err() {
        tracing::error!(request_id = %request_id, tenant = %tenant.id, "tenant authorization is not a valid header value");
        return internal("tenant credentials unusable", &request_id);
    }
    let uri = match upstream_uri(&tenant.base_url, api_path.rest(), api_path.query()) {
        Ok(uri) => uri,
        Err(error) => {
            tracing::error!(request_id = %request_id, tenant = %tenant.id, %error, "bad upstream uri");
            return internal("tenant upstream url unusable", &request_id);
        }
    };

    let (head, body) = request.into_parts();
    let replay = replayable(&head.method, &head.headers, &body);
    let budget = head.extensions.get::<Arc<dyn UpstreamBudget>>().cloned();
    let exchange = Exchange {
        client: &client,
        request_id: &request_id,
        tenant: &tenant,
        facts: &facts,
        limit: limit.as_ref(),
    };

    let answer = match exchange.send(&head, uri.clone(), body).await {
        Ok(answer) => answer,
        Err(refusal) => return refusal,
    };
    // Without a budget (no pacing layer above) Open Dental's 429 passes on
    // like any other answer: there is nothing to pause and no slot to wait for.
    let Some(budget) = budget else {
        return answer;
    };
    let Some(retry_after) = upstream_retry_after(&answer) else {
        return answer;
    };
    // This 429 never goes further up: odgw answers with its own 429 or with
    // the retry's answer.
    budget.pause(retry_after);
    tracing::warn!(
        tenant = %tenant.id,
        request_id = %request_id,
        retry_after_ms = retry_after.as_millis() as u64,
        "open dental answered 429; tenant paused"
    );
    if !replay {
        return upstream_throttled(retry_after, budget.limit(), &request_id);
    }
    if let Err(no_slot) = budget.one_more_slot().await {
        return upstream_throttled(
            no_slot.retry_after.max(retry_after),
            budget.limit(),
            &request_id,
        );
    }
    drop(answer);
    match exchange.send(&head, uri, Body::empty()).await {
        Ok(answer) => match upstream_retry_after(&answer) {
            None => answer,
            Some(retry_after) => {
                budget.pause(retry_after);
                upstream_throttled(retry_after, budget.limit(), &request_id)
            }
        },
        Err(refusal) => refusal,
    }
}

/// What one upstream exchange of a request needs; the retry after a 429
/// sends the same request again through it.
struct Exchange<'a> {
    client: &'a UpstreamClient,
    request_id: &'a RequestId,
    tenant: &'a Tenant,
    facts: &'a RequestFacts,
    limit: Option<&'a BodyLimitTripped>,
}

impl Exchange<'_> {
    /// Sends `head` with `body` to `uri` and records `upstream_status` and
    /// `upstream_ms` in the facts when an answer comes. `Ok` is the
    /// upstream's answer ready to relay; `Err` is odgw's own error response.
    async fn send(
        &self,
        head: &http::request::Parts,
        uri: http::Uri,
        body: Body,
    ) -> Result<Response, Response> {
        let Self {
            client,
            request_id,
            tenant,
            facts,
            limit,
        } = *self;
        let mut headers = upstream_headers(&head.headers, &tenant.authorization, request_id);
        frame_body(&mut headers, &body);
        let mut upstream = http::Request::new(body);
        *upstream.method_mut() = head.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = headers;

        let started = Instant::now();
        let result = client.send(upstream).await;
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let cut_off = limit.is_some_and(|l| l.is_tripped());

        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let code = match &error {
                    _ if cut_off => ErrorCode::BodyTooLarge,
                    UpstreamError::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
                    UpstreamError::Timeout(_) => ErrorCode::UpstreamTimeout,
                    UpstreamError::Unavailable { .. } => ErrorCode::UpstreamUnavailable,
                };
                tracing::warn!(request_id = %request_id, tenant = %tenant.id, error = %error_chain(&error), code = %code, "upstream request failed");
                let detail = match code {
                    ErrorCode::BodyTooLarge => "request body too large",
                    ErrorCode::UpstreamTimeout => "no upstream response in time",
                    _ => "upstream unavailable",
                };
                return Err(GatewayError::new(code, detail).into_response(request_id));
            }
        };

        facts.update(|f| {
            f.upstream_status = Some(response.status().as_u16());
            f.upstream_ms = Some(elapsed_ms);
        });
        if !relayable(response.status()) {
            tracing::warn!(request_id = %request_id, tenant = %tenant.id, status = response.status().as_u16(), "upstream answered with an interim status as its final answer");
            return Err(
                GatewayError::new(ErrorCode::UpstreamUnavailable, "upstream unavailable")
                    .into_response(request_id),
            );
        }
        if cut_off {
            // The upstream answered before it saw the whole body; what it said
            // is about a request the client never finished sending.
            return Err(
                GatewayError::new(ErrorCode::BodyTooLarge, "request body too large")
                    .into_response(request_id),
            );
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        strip_odgw_headers(&mut parts.headers);
        parts.extensions = http::Extensions::new();
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

/// Whether an upstream status may be passed to the client as the final
/// answer. A 1xx is never final: relaying an upstream `101 Switching
/// Protocols` would tell the client its connection now speaks another
/// protocol, which odgw never tunnels (hop-by-hop `Upgrade` is not even
/// forwarded), so such an answer is an upstream failure.
fn relayable(status: http::StatusCode) -> bool {
    !status.is_informational()
}

/// Makes the upstream framing follow the body that is actually sent, never
/// the client's word: a known length is sent as `Content-Length`, an unknown
/// one as chunked. No client-supplied length can then disagree with the bytes
/// on the wire (the root of request smuggling).
fn frame_body(headers: &mut HeaderMap, body: &Body) {
    headers.remove(header::TRANSFER_ENCODING);
    if body.is_end_stream() && !headers.contains_key(header::CONTENT_LENGTH) {
        return;
    }
    match body.size_hint().exact() {
        Some(len) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
            // Hyper would otherwise send a GET's or HEAD's unknown-length
            // body as no body at all.
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
}

/// `Odgw-*` is odgw's namespace: an upstream must not make a response look
/// like an odgw error (`Odgw-Error`) or a cache answer.
fn strip_odgw_headers(headers: &mut HeaderMap) {
    let ours: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("odgw-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

fn internal(detail: &'static str, request_id: &RequestId) -> Response {
    GatewayError::new(ErrorCode::Internal, detail).into_response(request_id)
}

/// The error and its causes on one line, for the log.
fn error_chain(error: &UpstreamError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_the_body() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        frame_body(&mut headers, &Body::from("hello"));
        assert_eq!(headers[header::CONTENT_LENGTH], "5");
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());

        let mut headers = HeaderMap::new();
        frame_body(&mut headers, &Body::empty());
        assert!(headers.is_empty());

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        frame_body(&mut headers, &Body::empty());
        assert_eq!(headers[header::CONTENT_LENGTH], "0");

        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        let stream =
            futures_util::stream::iter([Ok::<_, Infallible>(bytes::Bytes::from_static(b"x"))]);
        frame_body(&mut headers, &Body::from_stream(stream));
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(headers[header::TRANSFER_ENCODING], "chunked");
    }

    #[test]
    fn interim_statuses_are_never_relayed() {
        for code in [100, 101, 102, 103, 199] {
            assert!(
                !relayable(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [200, 204, 301, 404, 429, 500, 504] {
            assert!(
                relayable(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn upstream_cannot_claim_odgw_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("odgw-error", HeaderValue::from_static("rate_limited"));
        headers.insert("odgw-cache", HeaderValue::from_static("hit"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        strip_odgw_headers(&mut headers);
        assert_eq!(headers.len(), 1);
    }
}
