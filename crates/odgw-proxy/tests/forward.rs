//! The forwarder end to end against small upstreams on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use axum::{extract::State, Router};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use odgw_core::{
    ApiPath, Body, ErrorCode, NoSlot, Rate, Request, RequestContext, RequestFacts, RequestId,
    Response, SecretString, Tenant, TenantAccess, TenantId, UpstreamBudget,
};
use odgw_proxy::{Forwarder, GuardLayer, UpstreamClient, UpstreamSettings};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    time::{timeout, Instant},
};
use tower::{ServiceBuilder, ServiceExt};

const AUTH: &str = "ODFHIR NFF6i0KrXrxDkZHt/VzkmZEaUWOjnQX2z";
/// Upper bound for anything that should happen "at once" on a busy machine.
const PATIENCE: Duration = Duration::from_secs(10);

fn settings(timeout: Duration) -> UpstreamSettings {
    UpstreamSettings {
        connect_timeout: Duration::from_secs(2),
        timeout,
        pool_idle_timeout: Duration::from_secs(30),
        pool_max_idle_per_host: 4,
    }
}

fn forwarder(timeout: Duration) -> Forwarder {
    Forwarder::new(UpstreamClient::new(settings(timeout)).unwrap())
}

/// A request as the stack hands it to the forwarder: context, admitted path
/// (when under `/api/v1/`) and tenant in the extensions.
fn request(
    method: &str,
    path_and_query: &str,
    addr: SocketAddr,
    body: Body,
) -> (Request, RequestFacts) {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(body)
        .unwrap();
    let context = RequestContext::new(
        RequestId::from_client(Some(&HeaderValue::from_static("rid-42"))),
        None,
    );
    let facts = context.facts().clone();
    if let Some(path) = ApiPath::from_uri(request.uri()) {
        request.extensions_mut().insert(path);
    }
    let ext = request.extensions_mut();
    ext.insert(context);
    ext.insert(Tenant::new(TenantAccess {
        id: TenantId::parse("practice-1").unwrap(),
        base_url: format!("http://{addr}/api/v1"),
        authorization: SecretString::new(AUTH),
        rate: Rate::Unlimited,
        burst: 1,
        generation: 1,
    }));
    (request, facts)
}

async fn body_bytes(response: Response) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

// --- a recording upstream (axum) -------------------------------------------

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(
    State(log): State<Log>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    log.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers,
        body,
    });
    let builder = http::Response::builder()
        .header("x-od-trace", "t1")
        .header("content-type", "application/json");
    let path = parts.uri.path();
    let first_on_path = log
        .lock()
        .unwrap()
        .iter()
        .filter(|seen| seen.uri.split('?').next() == Some(path))
        .count()
        == 1;
    if path == "/api/v1/throttled" {
        builder
            .status(429)
            .header("retry-after", "1")
            .body(axum::body::Body::from(r#"{"error":"slow down"}"#))
            .unwrap()
    } else if path == "/api/v1/throttled-once" && first_on_path {
        builder
            .status(429)
            .header("retry-after", "2")
            .body(axum::body::Body::from(r#"{"error":"slow down"}"#))
            .unwrap()
    } else if path == "/api/v1/throttled-until" {
        let until = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(4));
        builder
            .status(429)
            .header("retry-after", until)
            .body(axum::body::Body::from(r#"{"error":"slow down"}"#))
            .unwrap()
    } else if parts.uri.path() == "/api/v1/missing" {
        builder
            .status(404)
            .header("odgw-error", "spoofed")
            .header("proxy-authenticate", "Basic")
            .body(axum::body::Body::from(r#"{"error":"not found"}"#))
            .unwrap()
    } else {
        builder
            .status(200)
            .body(axum::body::Body::from("[]"))
            .unwrap()
    }
}

async fn recording_upstream() -> (SocketAddr, Log) {
    let log = Log::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(record).with_state(log.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, log)
}

// --- a tenant budget, as the pacing layer hands it down ----------------------

/// Records what the forwarder asks of the budget; its slot comes at once,
/// or never (`no_slot`).
#[derive(Debug, Default)]
struct TestBudget {
    pauses: Mutex<Vec<Duration>>,
    slots_asked: AtomicUsize,
    no_slot: Option<Duration>,
}

impl UpstreamBudget for TestBudget {
    fn pause(&self, retry_after: Duration) {
        self.pauses.lock().unwrap().push(retry_after);
    }

    fn one_more_slot(&self) -> Pin<Box<dyn Future<Output = Result<(), NoSlot>> + Send + '_>> {
        self.slots_asked.fetch_add(1, Ordering::SeqCst);
        let answer = match self.no_slot {
            Some(retry_after) => Err(NoSlot { retry_after }),
            None => Ok(()),
        };
        Box::pin(std::future::ready(answer))
    }

    fn limit(&self) -> u64 {
        7
    }
}

impl TestBudget {
    fn pauses(&self) -> Vec<Duration> {
        self.pauses.lock().unwrap().clone()
    }
    fn slots_asked(&self) -> usize {
        self.slots_asked.load(Ordering::SeqCst)
    }
}

/// `request` with `budget` in its extensions, as below the pacing layer.
fn paced(mut request: Request, budget: &Arc<TestBudget>) -> Request {
    let budget: Arc<dyn UpstreamBudget> = budget.clone();
    request.extensions_mut().insert(budget);
    request
}

async fn assert_upstream_throttled(response: Response, retry_after: &str) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let h = response.headers();
    assert_eq!(h["odgw-error"], "upstream_throttled");
    assert_eq!(h["content-type"], "application/problem+json");
    assert_eq!(h["x-request-id"], "rid-42");
    assert_eq!(h["retry-after"], retry_after);
    assert_eq!(h["ratelimit-limit"], "7");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-reset"], retry_after);
    assert!(h.get("x-od-trace").is_none(), "the upstream's 429 went up");
    assert_eq!(
        response.extensions().get::<ErrorCode>(),
        Some(&ErrorCode::UpstreamThrottled)
    );
    let body: serde_json::Value = serde_json::from_slice(&body_bytes(response).await).unwrap();
    assert_eq!(body["code"], "upstream_throttled");
    assert_eq!(body["status"], 429);
}

// --- raw TCP upstreams -----------------------------------------------------

/// Reads until the end of a request head; `None` on EOF or error first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

const OK_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n[]";

/// Counts connections; `answer(n)` says whether connection `n` (from 1) gets
/// a 200 or is closed right after its request head arrived.
async fn flaky_upstream(answer: fn(usize) -> bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_some() && answer(n) {
                    stream.write_all(OK_RESPONSE).await.unwrap();
                    // Keep the connection open like a keep-alive server.
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    (addr, count)
}

// --- tests -----------------------------------------------------------------

#[tokio::test]
async fn sends_exact_authorization_and_the_allow_list_only() {
    let (addr, log) = recording_upstream().await;
    let (mut req, facts) = request(
        "GET",
        "/api/v1/patients/11?LName=O%27Brien&a=1&a=2",
        addr,
        Body::empty(),
    );
    for (name, value) in [
        ("accept", "application/json"),
        ("user-agent", "practice-app/2"),
        ("authorization", "Bearer client.jwt"),
        ("cookie", "sid=1"),
        ("x-forwarded-for", "10.1.1.1"),
        ("x_forwarded_for", "10.1.1.2"),
        ("forwarded", "for=10.1.1.3"),
        ("odgw-tenant", "practice-2"),
        ("odgw-anything", "1"),
        ("x-request-id", "client-rid"),
        ("x-request_id", "client-rid-2"),
        ("host", "evil.example"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
    ] {
        req.headers_mut()
            .append(name, HeaderValue::from_static(value));
    }
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-od-trace"], "t1");
    assert!(response.headers().get("odgw-error").is_none());
    assert_eq!(body_bytes(response).await, "[]");

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/api/v1/patients/11?LName=O%27Brien&a=1&a=2");
    let mut names: Vec<&str> = seen.headers.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "authorization",
            "content-type",
            "host",
            "user-agent",
            "x-request-id"
        ]
    );
    let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(auth, [AUTH]);
    assert_eq!(seen.headers["x-request-id"], "rid-42");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["accept"], "application/json");
    assert_eq!(seen.headers["user-agent"], "practice-app/2");
    assert_eq!(seen.headers["host"], addr.to_string().as_str());

    let facts = facts.snapshot();
    assert_eq!(facts.upstream_status, Some(200));
    assert!(facts.upstream_ms.is_some());
}

#[tokio::test]
async fn upstream_errors_pass_through_untouched() {
    let (addr, _log) = recording_upstream().await;
    let (req, facts) = request("DELETE", "/api/v1/missing", addr, Body::empty());
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Not an odgw error: no header, no code for the audit record.
    assert!(response.headers().get("odgw-error").is_none());
    assert!(response.extensions().get::<ErrorCode>().is_none());
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-od-trace"], "t1");
    assert!(response.headers().get("proxy-authenticate").is_none());
    assert_eq!(body_bytes(response).await, r#"{"error":"not found"}"#);
    assert_eq!(facts.snapshot().upstream_status, Some(404));
}

/// A forwarder on its own (no pacing above, so no budget) has nothing to
/// pause and no slot to wait for: Open Dental's 429 is relayed as it came.
#[tokio::test]
async fn without_a_budget_an_upstream_429_is_relayed_as_it_came() {
    let (addr, log) = recording_upstream().await;
    let (req, facts) = request("GET", "/api/v1/throttled?a=1", addr, Body::empty());
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["x-od-trace"], "t1");
    assert!(response.headers().get("odgw-error").is_none());
    assert!(response.extensions().get::<ErrorCode>().is_none());
    assert_eq!(body_bytes(response).await, r#"{"error":"slow down"}"#);
    assert_eq!(facts.snapshot().upstream_status, Some(429));
    assert_eq!(log.lock().unwrap().len(), 1);
}

/// The retry after Open Dental's 429 is the same request once more, sent
/// when the budget grants its slot after the pause.
#[tokio::test]
async fn an_upstream_429_pauses_the_tenant_and_a_bodiless_get_is_sent_once_more() {
    let (addr, log) = recording_upstream().await;
    let budget = Arc::new(TestBudget::default());
    let (mut req, facts) = request("GET", "/api/v1/throttled-once?a=1", addr, Body::empty());
    req.headers_mut()
        .insert("accept", HeaderValue::from_static("application/json"));
    let response = forwarder(PATIENCE)
        .oneshot(paced(req, &budget))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<ErrorCode>().is_none());
    assert_eq!(body_bytes(response).await, "[]");
    assert_eq!(budget.pauses(), [Duration::from_secs(2)]);
    assert_eq!(budget.slots_asked(), 1);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, seen[1].method);
    assert_eq!(seen[0].uri, seen[1].uri);
    assert_eq!(
        seen[0].headers, seen[1].headers,
        "the retry is the same request"
    );
    assert_eq!(seen[1].headers["x-request-id"], "rid-42");
    assert_eq!(seen[1].headers["accept"], "application/json");
    // The facts are the retry's: what the client's answer came from.
    assert_eq!(facts.snapshot().upstream_status, Some(200));
}

#[tokio::test]
async fn a_retry_throttled_again_pauses_again_and_is_upstream_throttled() {
    let (addr, log) = recording_upstream().await;
    for method in ["GET", "HEAD"] {
        log.lock().unwrap().clear();
        let budget = Arc::new(TestBudget::default());
        let (req, facts) = request(method, "/api/v1/throttled", addr, Body::empty());
        let response = forwarder(PATIENCE)
            .oneshot(paced(req, &budget))
            .await
            .unwrap();
        assert_upstream_throttled(response, "1").await;
        assert_eq!(log.lock().unwrap().len(), 2, "{method}: exactly one retry");
        assert_eq!(budget.pauses(), [Duration::from_secs(1); 2], "{method}");
        assert_eq!(budget.slots_asked(), 1, "{method}");
        assert_eq!(facts.snapshot().upstream_status, Some(429), "{method}");
    }
}

#[tokio::test]
async fn writes_and_reads_with_a_body_are_paused_but_never_sent_twice() {
    let (addr, log) = recording_upstream().await;
    for (method, body) in [
        ("POST", "{}"),
        ("PUT", "{}"),
        ("PATCH", "{}"),
        ("DELETE", ""),
        ("GET", "{}"),
    ] {
        log.lock().unwrap().clear();
        let budget = Arc::new(TestBudget::default());
        let (req, _) = request(method, "/api/v1/throttled", addr, Body::from(body));
        let response = forwarder(PATIENCE)
            .oneshot(paced(req, &budget))
            .await
            .unwrap();
        assert_upstream_throttled(response, "1").await;
        assert_eq!(log.lock().unwrap().len(), 1, "{method} was sent twice");
        assert_eq!(budget.pauses(), [Duration::from_secs(1)], "{method}");
        assert_eq!(budget.slots_asked(), 0, "{method}");
    }
}

#[tokio::test]
async fn no_slot_before_the_deadline_is_upstream_throttled_with_the_longer_wait() {
    let (addr, log) = recording_upstream().await;
    // Open Dental asks for 1 s; the budget's next slot is 3 s or 0.2 s away.
    for (no_slot, retry_after) in [(3000, "3"), (200, "1")] {
        log.lock().unwrap().clear();
        let budget = Arc::new(TestBudget {
            no_slot: Some(Duration::from_millis(no_slot)),
            ..TestBudget::default()
        });
        let (req, _) = request("GET", "/api/v1/throttled", addr, Body::empty());
        let response = forwarder(PATIENCE)
            .oneshot(paced(req, &budget))
            .await
            .unwrap();
        assert_upstream_throttled(response, retry_after).await;
        assert_eq!(log.lock().unwrap().len(), 1);
        assert_eq!(budget.pauses(), [Duration::from_secs(1)]);
        assert_eq!(budget.slots_asked(), 1);
    }
}

#[tokio::test]
async fn an_http_date_retry_after_is_the_pause() {
    let (addr, _log) = recording_upstream().await;
    let budget = Arc::new(TestBudget {
        no_slot: Some(Duration::ZERO),
        ..TestBudget::default()
    });
    let (req, _) = request("GET", "/api/v1/throttled-until", addr, Body::empty());
    forwarder(PATIENCE)
        .oneshot(paced(req, &budget))
        .await
        .unwrap();
    let pauses = budget.pauses();
    // HTTP dates have whole-second resolution: 3 to 4 s, never the 5 s default.
    assert!(
        pauses.len() == 1
            && pauses[0] >= Duration::from_secs(3)
            && pauses[0] <= Duration::from_secs(4),
        "{pauses:?}"
    );
}

/// When the retry gets no answer at all, the client learns of that failure,
/// and the facts keep the answer that did come (the 429).
#[tokio::test]
async fn a_retry_without_an_answer_is_502_and_the_facts_keep_the_429() {
    const THROTTLED: &[u8] =
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                // The first connection answers 429 and closes; later ones
                // close without an answer.
                if read_head(&mut stream).await.is_some() && n == 1 {
                    stream.write_all(THROTTLED).await.unwrap();
                }
            });
        }
    });
    let budget = Arc::new(TestBudget::default());
    let (req, facts) = request("GET", "/api/v1/patients", addr, Body::empty());
    let response = forwarder(PATIENCE)
        .oneshot(paced(req, &budget))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["odgw-error"], "upstream_unavailable");
    assert_eq!(budget.pauses(), [Duration::ZERO]);
    assert_eq!(facts.snapshot().upstream_status, Some(429));
    // The 429's connection, then the retry and the client's own retry of it.
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_one_megabyte_body_arrives_intact() {
    let (addr, log) = recording_upstream().await;
    let payload: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let payload = Bytes::from(payload);

    // Declared length.
    let (mut req, _) = request(
        "POST",
        "/api/v1/documents",
        addr,
        Body::from(payload.clone()),
    );
    req.headers_mut()
        .insert("content-length", HeaderValue::from(payload.len()));
    req.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Streamed in 64 KiB chunks with no declared length (chunked upstream).
    let chunks: Vec<Result<Bytes, Infallible>> = payload
        .chunks(65_536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let (req, _) = request("PUT", "/api/v1/documents/1", addr, body);
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["content-length"], "1048576");
    assert_eq!(seen[0].headers["content-type"], "application/octet-stream");
    assert!(seen[1].headers.get("content-length").is_none());
    assert_eq!(seen[1].headers["transfer-encoding"], "chunked");
    for s in &seen {
        assert_eq!(s.body.len(), payload.len());
        assert!(s.body == payload, "body changed in transit");
    }
}

#[tokio::test]
async fn request_and_response_bodies_stream_without_buffering() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (saw_first_chunk_tx, saw_first_chunk) = oneshot::channel::<()>();
    let (finish_tx, finish) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = read_head(&mut stream).await.unwrap();
        let mut chunk = [0u8; 4096];
        while !seen.windows(11).any(|w| w == b"first-chunk") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&chunk[..n]);
        }
        saw_first_chunk_tx.send(()).unwrap();
        while !seen.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&chunk[..n]);
        }
        // Head and a first response chunk now; the rest only when told.
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        finish.await.unwrap();
        stream.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    });

    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let (req, _) = request("POST", "/api/v1/commlogs", addr, Body::from_stream(stream));
    let call = tokio::spawn(forwarder(PATIENCE).oneshot(req));
    tx.send(Bytes::from_static(b"first-chunk")).await.unwrap();
    timeout(PATIENCE, saw_first_chunk)
        .await
        .expect("request body was held back")
        .unwrap();
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);

    let response = timeout(PATIENCE, call).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("transfer-encoding").is_none());
    let mut body = response.into_body();
    let first = timeout(PATIENCE, body.frame())
        .await
        .expect("response body was held back");
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "hello");
    finish_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, " world");
}

#[tokio::test]
async fn connection_refused_is_502() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    for method in ["GET", "POST"] {
        let (req, facts) = request(method, "/api/v1/patients", closed, Body::empty());
        let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{method}");
        assert_eq!(response.headers()["odgw-error"], "upstream_unavailable");
        assert_eq!(
            response.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::UpstreamUnavailable)
        );
        assert_eq!(facts.snapshot().upstream_status, None);
    }
}

#[tokio::test]
async fn tls_failure_is_502() {
    // A plain-text server behind an https:// base URL: the handshake fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 512];
            let _ = stream.read(&mut hello).await;
            let _ = stream.write_all(OK_RESPONSE).await;
        }
    });
    let (mut req, facts) = request("GET", "/api/v1/patients", addr, Body::empty());
    let plain = req.extensions().get::<Tenant>().unwrap().clone();
    req.extensions_mut().insert(Tenant::new(TenantAccess {
        base_url: format!("https://{addr}/api/v1"),
        ..TenantAccess::clone(&plain)
    }));
    let response = timeout(PATIENCE, forwarder(PATIENCE).oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["odgw-error"], "upstream_unavailable");
    assert_eq!(facts.snapshot().upstream_status, None);
}

#[tokio::test]
async fn silent_upstream_is_504_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            held.push(stream); // accept, read nothing, answer nothing
        }
    });
    let limit = Duration::from_millis(400);
    let (req, facts) = request("GET", "/api/v1/patients", addr, Body::empty());
    let started = Instant::now();
    let response = forwarder(limit).oneshot(req).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()["odgw-error"], "upstream_timeout");
    assert!(elapsed >= limit, "{elapsed:?}");
    assert!(elapsed < limit + Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(facts.snapshot().upstream_status, None);
}

#[tokio::test]
async fn get_is_retried_once_on_a_fresh_connection() {
    let (addr, connections) = flaky_upstream(|n| n >= 2).await;
    let (req, facts) = request("GET", "/api/v1/patients", addr, Body::empty());
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, "[]");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(facts.snapshot().upstream_status, Some(200));

    let (addr, connections) = flaky_upstream(|n| n >= 2).await;
    let (req, _) = request("HEAD", "/api/v1/patients", addr, Body::empty());
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn get_is_retried_after_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            read_head(&mut stream).await.unwrap();
            if n == 1 {
                // RST instead of FIN.
                stream.set_zero_linger().unwrap();
                drop(stream);
            } else {
                stream.write_all(OK_RESPONSE).await.unwrap();
                tokio::spawn(async move {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        }
    });
    let (req, _) = request("GET", "/api/v1/patients", addr, Body::empty());
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_retry_shares_the_first_attempts_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for n in 1.. {
            let (mut stream, _) = listener.accept().await.unwrap();
            if n == 1 {
                read_head(&mut stream).await.unwrap();
                drop(stream);
            } else {
                held.push(stream); // the retry hangs
            }
        }
    });
    let limit = Duration::from_millis(400);
    let (req, _) = request("GET", "/api/v1/patients", addr, Body::empty());
    let started = Instant::now();
    let response = forwarder(limit).oneshot(req).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(elapsed >= limit, "{elapsed:?}");
    assert!(elapsed < limit + Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn get_is_retried_only_once() {
    let (addr, connections) = flaky_upstream(|_| false).await;
    let (req, _) = request("GET", "/api/v1/patients", addr, Body::empty());
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.headers()["odgw-error"], "upstream_unavailable");
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn post_put_delete_are_never_retried() {
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let (addr, connections) = flaky_upstream(|n| n >= 2).await;
        let (req, _) = request(
            method,
            "/api/v1/appointments",
            addr,
            Body::from(r#"{"AptNum":1}"#),
        );
        let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{method}");
        assert_eq!(response.headers()["odgw-error"], "upstream_unavailable");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "{method}");
    }
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_and_never_complete_upstream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (received_tx, received) = oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        let mut chunk = [0u8; 8192];
        // Read until the client gives up on the connection; never answer.
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
        }
        let _ = received_tx.send(all);
    });

    let max_body = 64 * 1024;
    let chunks: Vec<Result<Bytes, Infallible>> =
        (0..40).map(|_| Ok(Bytes::from(vec![b'x'; 4096]))).collect();
    let (req, facts) = request(
        "POST",
        "/api/v1/documents",
        addr,
        Body::from_stream(futures_util::stream::iter(chunks)),
    );
    let stack = ServiceBuilder::new()
        .layer(GuardLayer::new(max_body))
        .service(forwarder(PATIENCE));
    let response = timeout(PATIENCE, stack.oneshot(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["odgw-error"], "body_too_large");
    assert_eq!(facts.snapshot().upstream_status, None);

    let received = timeout(PATIENCE, received)
        .await
        .expect("upstream connection left open")
        .unwrap();
    assert!(received.starts_with(b"POST /api/v1/documents HTTP/1.1\r\n"));
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "upstream got a complete chunked body"
    );
    let body_bytes = received.len() - received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        body_bytes < 2 * max_body as usize,
        "far more than the limit was sent"
    );
}

#[tokio::test]
async fn missing_context_is_an_internal_error_and_nothing_is_sent() {
    let (addr, log) = recording_upstream().await;
    let (mut req, _) = request("GET", "/api/v1/patients", addr, Body::empty());
    req.extensions_mut().remove::<Tenant>();
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["odgw-error"], "internal_error");
    assert_eq!(response.headers()["x-request-id"], "rid-42");

    let (mut req, _) = request("GET", "/api/v1/patients", addr, Body::empty());
    req.extensions_mut().remove::<ApiPath>();
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["x-request-id"], "rid-42");

    let (mut req, _) = request("GET", "/api/v1/patients", addr, Body::empty());
    req.extensions_mut().remove::<RequestContext>();
    let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn forwarder_refuses_bad_paths_on_its_own() {
    let (addr, log) = recording_upstream().await;
    for (path, status) in [
        ("/api/v1/%2e%2e/admin", 400),
        ("/api/v1/a//b", 400),
        // Never admitted by a guard: a stack-order bug, not a forward.
        ("/other", 500),
    ] {
        let (req, _) = request("GET", path, addr, Body::empty());
        let response = forwarder(PATIENCE).oneshot(req).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
    assert!(log.lock().unwrap().is_empty());
}
