//! The route, path and body-size guard: everything about a request that can
//! be refused before anyone reads a token.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::future::{ready, Either, Ready};
use http::{header, Method};
use http_body::{Body as HttpBody, Frame, SizeHint};
use odgw_core::{ApiPath, Body, ErrorCode, GatewayError, Request, RequestContext, Response};
use tower::{Layer, Service};

use crate::{check_path, error::BodyLimitExceeded};

/// Answers, in this order: 404 `not_found` outside `/api/v1/{path}`, 400
/// `bad_path` for a path [`check_path`] refuses, 405 `method_not_allowed`
/// for any method but GET, HEAD, POST, PUT, PATCH and DELETE spelled exactly
/// (a case variant such as `delete` or `Post` included), 400 `bad_request`
/// for an invalid or repeated `Content-Length`, 413 `body_too_large` for a
/// declared length over `max_body`. Every other request goes on with its
/// [`ApiPath`] inserted and its body wrapped so that a body without a
/// declared length is cut off at `max_body`; the [`crate::Forwarder`] turns
/// that cut into 413.
#[derive(Debug, Clone, Copy)]
pub struct GuardLayer {
    max_body: u64,
}

impl GuardLayer {
    /// `max_body` is `server.max_body` in bytes.
    pub fn new(max_body: u64) -> Self {
        Self { max_body }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            max_body: self.max_body,
        }
    }
}

/// The service made by [`GuardLayer`].
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    max_body: u64,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let context = match RequestContext::of(&request, "guard") {
            Ok(context) => context,
            Err(bug) => return Either::Left(ready(Ok(bug.into_response()))),
        };
        match self.admit(request) {
            Ok(request) => Either::Right(self.inner.call(request)),
            Err(error) => Either::Left(ready(Ok(error.into_response(context.id())))),
        }
    }
}

impl<S> Guard<S> {
    fn admit(&self, request: Request) -> Result<Request, GatewayError> {
        let Some(path) = ApiPath::from_uri(request.uri()) else {
            return Err(GatewayError::new(ErrorCode::NotFound, "no such route"));
        };
        check_path(path.full())
            .map_err(|e| GatewayError::new(ErrorCode::BadPath, e.to_string()))?;
        if !is_forwardable_method(request.method()) {
            return Err(GatewayError::new(
                ErrorCode::MethodNotAllowed,
                "only GET, HEAD, POST, PUT, PATCH and DELETE are forwarded",
            ));
        }
        let declared = declared_length(request.headers())?;
        let too_large = || {
            GatewayError::new(
                ErrorCode::BodyTooLarge,
                format!("request body exceeds {} bytes", self.max_body),
            )
        };
        if declared.is_some_and(|len| len > self.max_body) {
            return Err(too_large());
        }
        // A body framed by a Content-Length that `Connection` made us drop
        // still knows its length.
        if request.body().size_hint().lower() > self.max_body {
            return Err(too_large());
        }
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(path);
        let tripped = BodyLimitTripped::default();
        parts.extensions.insert(tripped.clone());
        let body = Body::new(LimitedBody {
            inner: body,
            remaining: self.max_body,
            limit: self.max_body,
            tripped,
        });
        Ok(Request::from_parts(parts, body))
    }
}

/// The methods Open Dental's API uses, spelled exactly.
///
/// Everything else is refused: extension methods (`MERGE`, `PROPFIND`) would
/// pass odgw's scope, intent-audit and retry rules as "unknown", and case
/// variants (`delete`, `Post`) are distinct methods to odgw (RFC 9110 §9.1)
/// but a DELETE or POST to Open Dental's case-insensitive ASP.NET routing.
/// `CONNECT`, `TRACE` and `OPTIONS` have no use against the API.
fn is_forwardable_method(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ]
    .contains(method)
}

/// The one declared body length, if any. Hyper already refuses most bad
/// values on HTTP/1; this also covers HTTP/2 and requests built in-process.
fn declared_length(headers: &http::HeaderMap) -> Result<Option<u64>, GatewayError> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GatewayError::new(
            ErrorCode::BadRequest,
            "more than one content-length header",
        ));
    }
    parse_content_length(value.as_bytes())
        .map(Some)
        .ok_or_else(|| GatewayError::new(ErrorCode::BadRequest, "invalid content-length header"))
}

/// Digits only: `u64::from_str` would also take a leading `+`.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Set when the [`LimitedBody`] of a request cut it off; the forwarder reads
/// it to answer 413 even when the upstream client reports the cut as some
/// other failure.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyLimitTripped(Arc<AtomicBool>);

impl BodyLimitTripped {
    pub(crate) fn is_tripped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn trip(&self) {
        self.0.store(true, Ordering::Release);
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyLimitExceeded`] as soon as more
    /// than `limit` bytes have passed, so an over-long chunked body is never
    /// sent upstream whole.
    struct LimitedBody {
        #[pin]
        inner: Body,
        remaining: u64,
        limit: u64,
        tripped: BodyLimitTripped,
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = match std::task::ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > *this.remaining {
                this.tripped.trip();
                let error = BodyLimitExceeded { limit: *this.limit };
                return Poll::Ready(Some(Err(error.into())));
            }
            *this.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;
    use odgw_core::RequestId;

    const MAX: u64 = 16;

    /// Runs one request through the guard; the inner service reads the whole
    /// body and answers 200 with it, or 299 when reading failed on the limit.
    async fn run(request: Request) -> Response {
        ServiceBuilder::new()
            .layer(GuardLayer::new(MAX))
            .service(service_fn(|request: Request| async move {
                let tripped = request.extensions().get::<BodyLimitTripped>().cloned();
                match request.into_body().collect().await {
                    Ok(body) => Ok::<_, Infallible>(Response::new(Body::from(body.to_bytes()))),
                    Err(error) => {
                        let limited = std::error::Error::source(&error)
                            .and_then(|e| e.downcast_ref::<BodyLimitExceeded>())
                            .is_some();
                        assert!(limited, "unexpected body error: {error}");
                        assert!(tripped.unwrap().is_tripped());
                        let mut response = Response::new(Body::empty());
                        *response.status_mut() = http::StatusCode::from_u16(299).unwrap();
                        Ok(response)
                    }
                }
            }))
            .oneshot(request)
            .await
            .unwrap()
    }

    fn request(path: &str) -> http::request::Builder {
        let mut builder = http::Request::builder().uri(path);
        builder
            .extensions_mut()
            .unwrap()
            .insert(RequestContext::new(
                RequestId::from_client(Some(&http::HeaderValue::from_static("rid-1"))),
                None,
            ));
        builder
    }

    async fn assert_refused(response: Response, status: u16, code: &str) {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["odgw-error"], code);
        assert_eq!(response.headers()["x-request-id"], "rid-1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], code);
        assert_eq!(body["request_id"], "rid-1");
    }

    #[tokio::test]
    async fn outside_api_v1_is_not_found() {
        for path in [
            "/",
            "/api",
            "/api/v1",
            "/api/v1/",
            "/api/v2/patients",
            "/API/V1/patients",
            "/api/v1x/patients",
            // The prefix is matched exactly: a case variant cannot reach
            // the scope check as a path under /api/v1.
            "/API/V1/queries/ShortQuery",
            "/admin/v1/tenants",
            "/healthz",
        ] {
            let response = run(request(path).body(Body::empty()).unwrap()).await;
            assert_refused(response, 404, "not_found").await;
        }
    }

    #[tokio::test]
    async fn bad_paths_are_400_before_any_inner_call() {
        for path in [
            "/api/v1/../admin",
            "/api/v1/patients/%2e%2E",
            "/api/v1/patients%2F11",
            "/api/v1//patients",
            "/api/v1/patients/.",
            "/api/v1/a%5Cb",
            "/api/v1/a%00",
        ] {
            let response = run(request(path).body(Body::empty()).unwrap()).await;
            assert_refused(response, 400, "bad_path").await;
        }
    }

    #[tokio::test]
    async fn only_the_apis_methods_spelled_exactly_are_forwarded() {
        for method in [
            "delete", "Delete", "post", "pOST", "put", "Patch", "get", "head", "PROPFIND", "MERGE",
            "OPTIONS", "TRACE", "CONNECT",
        ] {
            let response = run(request("/api/v1/patients/11")
                .method(method)
                .body(Body::empty())
                .unwrap())
            .await;
            assert_refused(response, 405, "method_not_allowed").await;
        }
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            let response = run(request("/api/v1/patients/11")
                .method(method)
                .body(Body::empty())
                .unwrap())
            .await;
            assert_eq!(response.status(), 200, "{method}");
        }
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_413() {
        let response = run(request("/api/v1/patients")
            .method("POST")
            .header("content-length", "17")
            .body(Body::from(vec![b'a'; 17]))
            .unwrap())
        .await;
        assert_refused(response, 413, "body_too_large").await;
    }

    #[tokio::test]
    async fn body_length_known_without_a_header_is_checked_too() {
        let response = run(request("/api/v1/patients")
            .method("POST")
            .body(Body::from(vec![b'a'; 17]))
            .unwrap())
        .await;
        assert_refused(response, 413, "body_too_large").await;
    }

    #[tokio::test]
    async fn invalid_or_repeated_content_length_is_bad_request() {
        for values in [
            &["+5"][..],
            &["abc"],
            &[""],
            &["5", "5"],
            &["5", "6"],
            &["-1"],
            &["99999999999999999999999"],
        ] {
            let mut builder = request("/api/v1/patients").method("POST");
            for value in values {
                builder = builder.header("content-length", *value);
            }
            let response = run(builder.body(Body::from("12345")).unwrap()).await;
            assert_refused(response, 400, "bad_request").await;
        }
    }

    #[tokio::test]
    async fn body_at_the_limit_passes_unchanged() {
        let response = run(request("/api/v1/patients/11")
            .method("PUT")
            .header("content-length", "16")
            .body(Body::from(vec![b'z'; 16]))
            .unwrap())
        .await;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &[b'z'; 16]);
    }

    #[tokio::test]
    async fn streamed_body_is_cut_at_the_limit() {
        let chunks = (0..5).map(|_| Ok::<_, Infallible>(Bytes::from_static(b"abcd")));
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let response = run(request("/api/v1/patients")
            .method("POST")
            .body(body)
            .unwrap())
        .await;
        assert_eq!(response.status().as_u16(), 299);

        let chunks = (0..4).map(|_| Ok::<_, Infallible>(Bytes::from_static(b"abcd")));
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let response = run(request("/api/v1/patients")
            .method("POST")
            .body(body)
            .unwrap())
        .await;
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn missing_request_id_is_an_internal_error() {
        let request = http::Request::builder()
            .uri("/api/v1/patients")
            .body(Body::empty())
            .unwrap();
        let response = run(request).await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["odgw-error"], "internal_error");
    }

    #[test]
    fn content_length_parsing_is_strict() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"17000000"), Some(17_000_000));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"1 ",
            b"0x10",
            b"1,1",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }
}
