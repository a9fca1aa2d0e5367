//! Hop-by-hop header removal (RFC 9110 §7.6.1), and the outermost layer that
//! applies it to every request and response.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{header, HeaderMap, HeaderName};
use tower::{Layer, Service};

/// Headers that describe one connection, never the message: never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Removes the hop-by-hop headers, and every header named in any `Connection`
/// header.
///
/// All `Connection` headers are read; each value is split on `,`, tokens are
/// trimmed and matched case-insensitively. A token that is not a valid header
/// name cannot name a header and is ignored. The names are collected before
/// anything is removed, so `Connection: connection, x` still removes `x`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Applies [`strip_hop_by_hop`] to the request before any other layer reads
/// a header (so a header named in `Connection` counts as absent everywhere),
/// and to the response on its way out.
#[derive(Debug, Clone, Copy, Default)]
pub struct HopByHopLayer;

impl HopByHopLayer {
    /// The layer; it has no settings.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for HopByHopLayer {
    type Service = HopByHop<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HopByHop { inner }
    }
}

/// The service made by [`HopByHopLayer`].
#[derive(Debug, Clone)]
pub struct HopByHop<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for HopByHop<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = HopByHopFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        strip_hop_by_hop(request.headers_mut());
        HopByHopFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`HopByHop`]: strips the response's headers.
    #[derive(Debug)]
    pub struct HopByHopFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, ResBody, E> Future for HopByHopFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(self.project().inner.poll(cx))?;
        strip_hop_by_hop(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::HeaderValue;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<String> {
        let mut names: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn removes_the_fixed_hop_by_hop_list() {
        let mut headers = map(&[
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "Expires"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("Proxy-Authenticate", "Basic"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), ["accept"]);
    }

    #[test]
    fn removes_headers_named_in_connection() {
        // (headers in, header names left)
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
        );
        let table: &[Case] = &[
            (
                &[
                    ("Connection", "close, X-Request-Id"),
                    ("X-Request-Id", "abc"),
                    ("Accept", "*/*"),
                ],
                &["accept"],
            ),
            (
                &[
                    ("Connection", "Authorization"),
                    ("Authorization", "Bearer t"),
                    ("Accept", "*/*"),
                ],
                &["accept"],
            ),
            (
                &[
                    ("Connection", "keep-alive, Odgw-Tenant"),
                    ("Odgw-Tenant", "t1"),
                    ("Keep-Alive", "timeout=5"),
                    ("Accept", "*/*"),
                ],
                &["accept"],
            ),
            // Every Connection header counts, not just the first.
            (
                &[
                    ("Connection", "close"),
                    ("Connection", "x-a"),
                    ("connection", " X-B ,,x-c "),
                    ("X-A", "1"),
                    ("X-B", "2"),
                    ("X-C", "3"),
                    ("X-D", "4"),
                ],
                &["x-d"],
            ),
            // Mixed case in both the token and the header's own name.
            (
                &[
                    ("CONNECTION", "oDgW-tEnAnT"),
                    ("odgw-TENANT", "t1"),
                    ("User-Agent", "ua"),
                ],
                &["user-agent"],
            ),
            // Tokens that cannot be header names name nothing.
            (
                &[
                    ("Connection", "bad token, \"quoted\", x-ok"),
                    ("X-Ok", "1"),
                    ("Accept", "*/*"),
                ],
                &["accept"],
            ),
            // Listing Connection itself does not stop the other names working.
            (
                &[
                    ("Connection", "connection, cookie"),
                    ("Cookie", "a=b"),
                    ("Accept", "*/*"),
                ],
                &["accept"],
            ),
        ];
        for (input, want) in table {
            let mut headers = map(input);
            strip_hop_by_hop(&mut headers);
            assert_eq!(names(&headers), *want, "{input:?}");
        }
    }

    #[test]
    fn removes_all_values_of_a_named_header() {
        let mut headers = map(&[("Connection", "x-a"), ("X-A", "1"), ("X-A", "2")]);
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn non_utf8_connection_values_still_split() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xff, x-a").unwrap(),
        );
        headers.insert("x-a", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[tokio::test]
    async fn layer_strips_request_before_inner_and_response_after() {
        let svc = ServiceBuilder::new()
            .layer(HopByHopLayer::new())
            .service(service_fn(|req: http::Request<()>| async move {
                // What the inner layers see.
                assert!(req.headers().get("x-request-id").is_none());
                assert!(req.headers().get("connection").is_none());
                assert_eq!(req.headers()["accept"], "*/*");
                let response = http::Response::builder()
                    .header("connection", "close, x-secret")
                    .header("x-secret", "1")
                    .header("transfer-encoding", "chunked")
                    .header("content-type", "application/json")
                    .body(())
                    .unwrap();
                Ok::<_, Infallible>(response)
            }));
        let request = http::Request::builder()
            .header("connection", "x-request-id")
            .header("x-request-id", "client-chosen")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let response = svc.oneshot(request).await.unwrap();
        assert_eq!(names(response.headers()), ["content-type"]);
    }
}
