//! The upstream HTTP client: pooled HTTP/1.1 over rustls (aws-lc-rs) for
//! `https://` tenants and plain TCP for local-mode offices on `http://`.

use std::{error::Error as StdError, io, sync::Arc, time::Duration};

use http::Method;
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use odgw_core::Body;
use tokio::time::Instant;

use crate::error::{BodyLimitExceeded, ClientBuildError, UpstreamError};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How the upstream client connects and how long it waits (`[upstream]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// TCP connect timeout (`upstream.connect_timeout`).
    pub connect_timeout: Duration,
    /// Deadline for the response head, retries included (`upstream.timeout`).
    pub timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream host. Every practice on
    /// api.opendental.com shares one host, so this bounds the idle
    /// connections of all of them: too small, and the connections a burst
    /// opened are closed as it ends, for the next burst to reopen (TCP and
    /// TLS handshakes; 32 made 1 request in 7 reconnect at 64 in flight).
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSettings {
    /// SPEC §2 defaults; Open Dental's own limit is 60 s, so 65 s lets its
    /// 504 through before odgw gives up. An idle TLS connection holds tens
    /// of KiB of buffers, so 256 of them stay well inside the memory budget.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(65),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 256,
        }
    }
}

/// The shared upstream client; cheap to clone (the pools are shared).
///
/// [`UpstreamClient::send`] applies the deadline and retry rules of SPEC §4;
/// every upstream call of odgw (forwarding, the admin tenant check) should
/// go through it.
#[derive(Clone)]
pub struct UpstreamClient {
    /// Behind one `Arc`: the forwarder clones the client for every request,
    /// and a hyper client clone copies its connector and pool handles.
    inner: Arc<Clients>,
}

struct Clients {
    pooled: HttpsClient,
    /// Keeps no idle connections, so a retry always opens a fresh one instead
    /// of picking another pooled connection to the server that just failed.
    fresh: HttpsClient,
    timeout: Duration,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// Builds the client: webpki roots, TLS 1.2/1.3 from the aws-lc-rs
    /// provider, ALPN `http/1.1` only.
    pub fn new(settings: UpstreamSettings) -> Result<Self, ClientBuildError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut http = HttpConnector::new();
        // The HTTPS wrapper decides per scheme; the inner connector must
        // accept https:// URIs to hand them to it.
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector.clone());
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            inner: Arc::new(Clients {
                pooled,
                fresh,
                timeout: settings.timeout,
            }),
        })
    }

    /// The deadline for a response head (`upstream.timeout`).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Sends `request` and waits for the response head; the body is left to
    /// stream.
    ///
    /// The whole exchange, a retry included, must finish within
    /// `upstream.timeout`. A GET or HEAD without a body is retried once, on a
    /// fresh connection, when the first attempt failed before any response
    /// arrived (connect failure, connection closed or reset); no other
    /// request is ever retried here. (The one other upstream retry, after
    /// Open Dental's 429, is the [`crate::Forwarder`]'s: a second `send`
    /// with its own deadline.)
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let Clients {
            pooled,
            fresh,
            timeout,
        } = &*self.inner;
        let deadline = Instant::now() + *timeout;
        let retry = retryable(&request).then(|| clone_empty(&request));
        let exchange = async {
            let error = match pooled.request(request).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            match retry {
                Some(again) if nothing_received(&error) => {
                    tracing::debug!(error = %error, "retrying idempotent upstream request");
                    fresh
                        .request(again)
                        .await
                        .map_err(|error| classify(error, true))
                }
                _ => Err(classify(error, false)),
            }
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(*timeout)),
        }
    }
}

fn retryable(request: &http::Request<Body>) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD) && request.body().is_end_stream()
}

/// A copy of an empty-bodied request, made before the original is consumed.
fn clone_empty(request: &http::Request<Body>) -> http::Request<Body> {
    let mut copy = http::Request::new(Body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether the failure came before any response byte, so that an idempotent
/// request may be sent again without the upstream having answered it.
fn nothing_received(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() {
        return true;
    }
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            if hyper_error.is_incomplete_message() || hyper_error.is_canceled() {
                return true;
            }
        }
        if let Some(io_error) = cause.downcast_ref::<io::Error>() {
            if matches!(
                io_error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ) {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// Finds the body-limit cut in the error chain (the client reports it as a
/// failure to write the body), else reports the upstream as unavailable.
fn classify(error: hyper_util::client::legacy::Error, retried: bool) -> UpstreamError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(limit) = cause.downcast_ref::<BodyLimitExceeded>() {
            return UpstreamError::BodyTooLarge(*limit);
        }
        source = cause.source();
    }
    let stage = if error.is_connect() {
        "connect"
    } else {
        "exchange"
    };
    UpstreamError::Unavailable {
        stage,
        retried,
        source: error,
    }
}
