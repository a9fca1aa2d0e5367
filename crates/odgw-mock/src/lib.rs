//! A fake Open Dental REST API, faithful to `opendental-api.md`, for odgw's
//! tests and for `odgw mock-upstream` / `odgw serve --dev --mock-upstream`.
//!
//! - [`MockUpstream`]: the mock (cheap to clone, state behind an `Arc`). Serve
//!   it on a listener with [`MockUpstream::serve`], or start it on
//!   `127.0.0.1:0` in the background with [`MockUpstream::spawn`], which
//!   returns a [`RunningMock`].
//! - [`MockConfig`]: accepted [`KeyPair`]s, [`ThrottleMode`], and the choices
//!   Open Dental does not document (missing-auth status, error body style,
//!   Content-Type enforcement, unknown `PrefName`).
//! - [`Fault`]: failures queued with [`MockUpstream::inject`] (a status such as
//!   429 with `Retry-After`, a delay, a hang, a connection reset).
//! - [`RecordedRequest`]: every request as received, all headers kept, with the
//!   status it got, from [`MockUpstream::requests`].
//!
//! What it serves under `/api/v1/` (anything else is 404), after checking
//! `Authorization: ODFHIR {developer}/{customer}` (401 otherwise) and the
//! per-customer-key throttle: `GET /patients`, `/patients/Simple`,
//! `/patients/{n}`, `POST /patients`, `PUT /patients/{n}`, `GET /appointments`
//! and `/appointments/{n}`, `GET /providers[/{n}]`, `GET /operatories[/{n}]`,
//! `GET /preferences`, and `PUT /queries/ShortQuery`. Lists page with
//! `Offset`/`Limit` (default and cap [`MockConfig::max_page`]) and are bare
//! JSON arrays. Data follows Open Dental's quirks: `"true"`/`"false"` strings,
//! `yyyy-MM-dd[ HH:mm:ss]` dates in US Pacific time, `serverDateTime` inside
//! each element. Patients are mutable per mock instance, in memory.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use odgw_mock::{Fault, MockConfig, MockUpstream};
//! let running = MockUpstream::spawn(MockConfig::test_defaults()).await?;
//! running.mock.inject(Fault::too_many_requests("2"));
//! let base = running.base_url(); // http://127.0.0.1:PORT/api/v1
//! # let _ = base;
//! running.shutdown().await
//! # }
//! ```

mod clock;
mod config;
mod fault;
mod handlers;
mod model;
mod params;
mod record;
mod respond;
mod seed;
mod service;
mod sql;
mod throttle;

use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use config::{
    ErrorBodyStyle, KeyPair, MockConfig, ThrottleMode, UnknownPrefAnswer, MAX_BODY_CHARS,
    TEST_CUSTOMER_KEY, TEST_DEVELOPER_KEY,
};
pub use fault::{Fault, FaultMatch};
pub use handlers::NOT_READ_ONLY;
pub use record::RecordedRequest;
pub use service::INVALID_KEYS;

use service::{lock, ConnContext, Shared};

/// How long [`MockUpstream::serve`] lets open connections finish after the
/// shutdown signal before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a request got no response; returned to hyper, which then drops the
/// connection.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A queued [`Fault::Reset`].
    #[error("injected connection reset")]
    InjectedReset,
    /// The server shut down while the request was hanging.
    #[error("mock shut down before answering")]
    ShutDown,
    /// The request body could not be read.
    #[error("reading the request body failed: {0}")]
    ReadBody(Box<dyn std::error::Error + Send + Sync>),
}

/// The fake Open Dental API. Clones share state (keys, throttle, faults, log,
/// data), so a test keeps a clone to inspect and steer a served mock.
#[derive(Clone)]
pub struct MockUpstream {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockUpstream")
            .field("requests", &lock(&self.shared.log).len())
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// A mock with freshly seeded data.
    pub fn new(config: MockConfig) -> Self {
        MockUpstream {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 (cleartext) on `listener` until `shutdown`
    /// resolves; then stops accepting, ends hung requests, lets open
    /// connections finish for up to five seconds, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let ctx = ConnContext { local_addr, stop: stop_rx.clone() };
                        connections.spawn(serve_connection(self.shared.clone(), stream, ctx));
                    }
                    Err(e) => {
                        // Per-connection failures (EMFILE, ECONNABORTED) must
                        // not end the server; pause so EMFILE cannot spin.
                        tracing::warn!(error = %e, "mock upstream accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            connections.abort_all();
        }
        Ok(())
    }

    /// Binds `127.0.0.1:0` and serves in the background until the returned
    /// [`RunningMock`] is dropped or shut down.
    pub async fn spawn(config: MockConfig) -> std::io::Result<RunningMock> {
        MockUpstream::new(config)
            .spawn_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
    }

    /// Like [`MockUpstream::spawn`], for an existing mock and a chosen address.
    pub async fn spawn_on(self, addr: SocketAddr) -> std::io::Result<RunningMock> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.clone().serve(listener, async move {
            // A dropped sender counts as the signal too.
            let _ = stopped.await;
        }));
        Ok(RunningMock {
            addr,
            mock: self,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Accepts another key pair from now on.
    pub fn add_key(&self, pair: KeyPair) {
        let mut keys = lock(&self.shared.keys);
        if !keys.contains(&pair) {
            keys.push(pair);
        }
    }

    /// Stops accepting every pair with this customer key (a key the office
    /// disabled); returns whether one was removed.
    pub fn remove_key(&self, customer_key: &str) -> bool {
        let mut keys = lock(&self.shared.keys);
        let before = keys.len();
        keys.retain(|k| k.customer_key != customer_key);
        keys.len() != before
    }

    /// Changes the throttle from the next request on.
    pub fn set_throttle(&self, mode: ThrottleMode) {
        lock(&self.shared.throttle).set_mode(mode);
    }

    /// Queues a fault for the next request, whatever it is.
    pub fn inject(&self, fault: Fault) {
        self.inject_matching(FaultMatch::any(), fault);
    }

    /// Queues a fault for the next request that `matcher` selects. Faults are
    /// consumed in queue order among those that match.
    pub fn inject_matching(&self, matcher: FaultMatch, fault: Fault) {
        lock(&self.shared.faults).push_back((matcher, fault));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.faults).len()
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, ctx: ConnContext) {
    let mut stop = ctx.stop.clone();
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let ctx = ctx.clone();
        async move { shared.handle(req, ctx).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = service::stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Injected resets and client hang-ups end up here; not a mock failure.
        tracing::debug!(error = %e, "mock upstream connection ended with an error");
    }
}

/// A mock served in the background. Dropping it, or [`RunningMock::shutdown`],
/// stops the server.
pub struct RunningMock {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The served mock, to inspect and steer.
    pub mock: MockUpstream,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl fmt::Debug for RunningMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningMock")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningMock {
    /// `http://127.0.0.1:PORT/api/v1`, the base URL a tenant would use.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Stops the server and waits until it has finished.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        drop(self.stop.take());
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningMock {
    fn drop(&mut self) {
        // Dropping the sender resolves the server's shutdown future.
        drop(self.stop.take());
    }
}

/// `odgw mock-upstream`: binds `listen`, prints where it listens (and the
/// public test key pair when it is accepted), serves until Ctrl-C.
pub async fn run_cli(listen: SocketAddr, config: MockConfig) -> std::io::Result<()> {
    run_cli_until(listen, config, async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C; serving until killed");
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// [`run_cli`] with the caller's shutdown signal (e.g. SIGTERM handling).
pub async fn run_cli_until(
    listen: SocketAddr,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("odgw mock-upstream: fake Open Dental API on http://{addr}/api/v1");
    let test_pair = KeyPair::new(TEST_DEVELOPER_KEY, TEST_CUSTOMER_KEY);
    if config.keys.contains(&test_pair) {
        // Open Dental publishes this pair; printing it reveals nothing.
        println!("  accepts: Authorization: {}", test_pair.authorization());
    }
    println!("  throttle: {:?}", config.throttle);
    MockUpstream::new(config).serve(listener, shutdown).await
}
