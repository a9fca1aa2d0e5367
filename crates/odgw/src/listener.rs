//! The accept loop shared by the data plane and the admin listener: HTTP/1.1
//! and HTTP/2 on plain TCP, bounded header reading (slowloris), graceful
//! shutdown with a grace period.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use odgw_core::{Body, ClientIp, Request, Response};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send its whole request head within this time.
    pub header_read_timeout: Duration,
    /// At most this many request headers.
    pub max_headers: usize,
    /// Read buffer cap, which bounds the request head's size.
    pub max_buf_size: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
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
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let hyper_service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ClientIp(peer_ip(peer)));
            service.clone().oneshot(req)
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), hyper_service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
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
