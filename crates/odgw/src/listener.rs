//! The accept loop shared by the data plane and the admin listener: HTTP/1.1
//! and HTTP/2 on plain TCP or TLS (ALPN `h2`, `http/1.1`; h2 with prior
//! knowledge on plain TCP), bounded TLS handshakes and header reading (slowloris), idle
//! connection reaping, a connection cap, and graceful shutdown with a grace
//! period.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use http_body_util::BodyExt;

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use odgw_core::{Body, ClientIp, Request, Response};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send its whole request head within this time; a new
    /// connection must start its first request within it too (this also
    /// bounds the HTTP/1-or-2 sniffing, which has no timeout of its own).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed
    /// (HTTP/1 keep-alive and HTTP/2 alike).
    pub idle_timeout: Duration,
    /// At most this many open connections; beyond it odgw stops accepting
    /// until one closes (the kernel backlog queues the rest).
    pub max_connections: usize,
    /// At most this many request headers.
    pub max_headers: usize,
    /// Read buffer cap, which bounds the request head's size.
    pub max_buf_size: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_headers: 100,
            max_buf_size: 64 * 1024,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and gives in-flight connections up to `grace` to finish.
pub async fn serve_listener<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    serve_listener_tls(listener, None, service, limits, shutdown, grace).await;
}

/// Like [`serve_listener`], over TLS when `tls` is given.
///
/// The TLS handshake is bounded by `limits.header_read_timeout` and counts
/// against it: a client that opens a connection and never sends its
/// ClientHello (or dribbles it) is cut off exactly like one that never
/// finishes its request head.
pub async fn serve_listener_tls<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_buf_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_buf_size as u32);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, slot) = tokio::select! {
            accepted = accept(&listener, &slots) => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Watched from accept on, so shutdown also waits for (bounded) handshakes.
        let watcher = graceful.watcher();
        let connection = Connection {
            builder: builder.clone(),
            service: service.clone(),
            peer,
            limits,
            activity: Activity::new(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection.serve(TokioIo::new(stream), watcher).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(stream)) => connection.serve(TokioIo::new(stream), watcher).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "tls handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "shutdown grace period passed with connections still open"
        );
    }
}

/// One accepted connection, before its transport is known.
struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    peer: SocketAddr,
    limits: ConnectionLimits,
    /// Started at accept, so the TLS handshake counts against the header timeout.
    activity: Activity,
}

impl<S> Connection<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// Serves HTTP/1.1 or HTTP/2 on `io` until the client leaves, the
    /// connection idles out, or a graceful shutdown completes it.
    async fn serve<I>(self, io: TokioIo<I>, watcher: Watcher)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            builder,
            service,
            peer,
            limits,
            activity,
        } = self;
        let tracker = activity.clone();
        let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ClientIp(peer_ip(peer)));
            let busy = tracker.begin();
            let response = service.clone().oneshot(req);
            async move {
                let Ok(response) = response.await;
                // The connection stays busy until the body has been sent.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        });
        let conn = builder.serve_connection(io, hyper_service).into_owned();
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                result = &mut conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    break;
                }
                _ = tick.tick() => {
                    let limit = if activity.started() { limits.idle_timeout } else { limits.header_read_timeout };
                    if activity.idle_for() > limit {
                        tracing::debug!(%peer, "closing an idle connection");
                        break;
                    }
                }
            }
        }
    }
}

/// Waits for a connection slot, then for a connection. `None` after an
/// accept error (logged, with a short back-off so EMFILE does not spin).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, slot)),
        Err(error) => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Whether a connection is doing anything: requests in flight, and when it
/// last started or finished one.
#[derive(Debug, Clone)]
struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    started: AtomicBool,
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

/// Marks one request in flight until dropped.
#[derive(Debug)]
struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityState {
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }))
    }

    fn begin(&self) -> Busy {
        self.0.started.store(true, Ordering::Release);
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }

    fn touch(&self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn started(&self) -> bool {
        self.0.started.load(Ordering::Acquire)
    }

    /// How long the connection has had nothing in flight (zero while busy).
    fn idle_for(&self) -> Duration {
        if self.0.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.0
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// IPv4-mapped IPv6 peers are reported as IPv4.
fn peer_ip(peer: SocketAddr) -> std::net::IpAddr {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6)),
        v4 => v4,
    }
}
