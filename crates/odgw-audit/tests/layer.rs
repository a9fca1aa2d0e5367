//! AuditLayer and IntentLayer driven through ServiceBuilder + service_fn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use odgw_audit::{
    verify, AnnouncedRecords, Announcement, AuditError, AuditLayer, AuditSink, IntentLayer,
    RecordDraft, RecordKind,
};
use odgw_core::{
    Body, ErrorCode, GatewayError, Identity, Principal, Request, RequestContext, RequestFacts,
    RequestId, Response, TenantId,
};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// Records drafts in memory; can be told to fail, to hang, or to report
/// itself unhealthy (as the file log does after a failed batch).
#[derive(Debug, Default)]
struct MemorySink {
    drafts: Mutex<Vec<RecordDraft>>,
    fail: AtomicBool,
    hang: AtomicBool,
    unhealthy: AtomicBool,
    announced: Arc<AnnouncedRecords>,
    /// Announced records still outstanding at each append.
    outstanding_at_append: Mutex<Vec<usize>>,
}

impl MemorySink {
    fn drafts(&self) -> Vec<RecordDraft> {
        self.drafts.lock().unwrap().clone()
    }
}

#[async_trait]
impl AuditSink for MemorySink {
    async fn append(&self, draft: RecordDraft) -> Result<u64, AuditError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(AuditError::WriteFailed("disk full".into()));
        }
        self.outstanding_at_append
            .lock()
            .unwrap()
            .push(self.announced.outstanding());
        let mut drafts = self.drafts.lock().unwrap();
        drafts.push(draft);
        Ok(drafts.len() as u64)
    }
    fn is_healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::SeqCst)
    }
    fn announce(&self) -> Announcement {
        Announcement::on(&self.announced)
    }
}

const TIMEOUT: Duration = Duration::from_secs(2);

/// The caller auth found, as it leaves it in the request's facts.
fn alice() -> Principal {
    Principal::new(Identity {
        subject: "alice".into(),
        issuer: "https://idp.example.com/".into(),
        tenants: vec!["demo".into()],
        scopes: vec![],
        expires_at: u64::MAX,
    })
}

fn request(method: Method, uri: &str) -> (Request, RequestFacts) {
    request_from(method, uri, Some("2001:db8::7".parse().unwrap()))
}

/// A request with the context the request-context layer gives it.
fn request_from(
    method: Method,
    uri: &str,
    client_ip: Option<std::net::IpAddr>,
) -> (Request, RequestFacts) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer secret-token")
        .body(Body::from("{\"LName\":\"Secret\"}"))
        .unwrap();
    let id = RequestId::from_client(Some(&HeaderValue::from_static("rid-42")));
    let context = RequestContext::new(id, client_ip);
    req.extensions_mut().insert(context.clone());
    (req, context.facts().clone())
}

fn context(req: &Request) -> RequestContext {
    RequestContext::of(req, "test").unwrap()
}

/// An upstream stand-in that fills facts like the inner layers would.
fn upstream(
    called: Arc<AtomicUsize>,
    status: StatusCode,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone {
    service_fn(move |req: Request| {
        let called = Arc::clone(&called);
        async move {
            called.fetch_add(1, Ordering::SeqCst);
            let facts = context(&req).facts().clone();
            facts.update(|f| {
                f.tenant = Some(TenantId::parse("demo").unwrap());
                f.principal = Some(alice());
                f.upstream_status = Some(status.as_u16());
                f.upstream_ms = Some(3);
            });
            let mut resp = Response::new(Body::from("patient data"));
            *resp.status_mut() = status;
            Ok::<_, Infallible>(resp)
        }
    })
}

async fn body_text(resp: Response) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn request_record_carries_facts_and_request_line() {
    let sink = Arc::new(MemorySink::default());
    let called = Arc::new(AtomicUsize::new(0));
    let layer = AuditLayer::new(sink.clone(), true, TIMEOUT);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream(called.clone(), StatusCode::CREATED));
    let (req, _) = request(Method::GET, "/api/v1/patients/11?Offset=0&Limit=5");
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(body_text(resp).await, "patient data");

    let drafts = sink.drafts();
    assert_eq!(drafts.len(), 1);
    let d = &drafts[0];
    assert_eq!(d.kind, RecordKind::Request);
    assert_eq!(d.request_id.as_deref(), Some("rid-42"));
    assert_eq!(d.tenant.as_deref(), Some("demo"));
    assert_eq!(d.subject.as_deref(), Some("alice"));
    assert_eq!(d.issuer.as_deref(), Some("https://idp.example.com/"));
    assert_eq!(d.client_ip.as_deref(), Some("2001:db8::7"));
    assert_eq!(d.method.as_deref(), Some("GET"));
    assert_eq!(d.path.as_deref(), Some("/api/v1/patients/11"));
    assert_eq!(d.query.as_deref(), Some("Offset=0&Limit=5"));
    assert_eq!(d.status, Some(201));
    assert_eq!(d.upstream_status, Some(201));
    assert_eq!(d.upstream_ms, Some(3));
    assert_eq!(d.outcome.as_deref(), Some("forwarded"));
    assert_eq!(d.error_code, None);
    assert!(d.duration_ms.is_some());
    assert_eq!((d.action.as_deref(), d.target.as_deref()), (None, None));
    // Nothing from headers or body.
    let debug = format!("{d:?}");
    assert!(!debug.contains("secret-token") && !debug.contains("Secret"));
}

#[tokio::test]
async fn a_request_is_announced_until_its_record_is_appended() {
    // Group commit waits for announced records; a request still counted
    // while its own record is appended would make every batch wait in vain.
    let sink = Arc::new(MemorySink::default());
    let announced = sink.announced.clone();
    let seen_upstream = Arc::new(Mutex::new(None));
    let seen = seen_upstream.clone();
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .service(service_fn(move |_req: Request| {
            *seen.lock().unwrap() = Some(announced.outstanding());
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        }));
    let (req, _) = request(Method::GET, "/api/v1/patients/11");
    svc.oneshot(req).await.unwrap();
    assert_eq!(*seen_upstream.lock().unwrap(), Some(1));
    assert_eq!(*sink.outstanding_at_append.lock().unwrap(), vec![0]);
    assert_eq!(sink.announced.outstanding(), 0);
}

#[tokio::test]
async fn odgw_errors_and_cache_hits_set_outcome_and_code() {
    let sink = Arc::new(MemorySink::default());
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .service(service_fn(|req: Request| async move {
            let id = context(&req).id().clone();
            let resp = if req.uri().path().ends_with("cached") {
                let facts = context(&req).facts().clone();
                facts.update(|f| f.cache_hit = true);
                Response::new(Body::empty())
            } else if req.uri().path().ends_with("slow") {
                GatewayError::new(ErrorCode::UpstreamTimeout, "upstream timed out")
                    .into_response(&id)
            } else {
                GatewayError::new(ErrorCode::InvalidToken, "token expired").into_response(&id)
            };
            Ok::<_, Infallible>(resp)
        }));
    for path in ["/api/v1/x", "/api/v1/cached", "/api/v1/slow"] {
        let (req, _) = request_from(Method::GET, path, None);
        svc.clone().oneshot(req).await.unwrap();
    }
    let drafts = sink.drafts();
    assert_eq!(drafts[0].status, Some(401));
    assert_eq!(drafts[0].error_code.as_deref(), Some("invalid_token"));
    assert_eq!(drafts[0].outcome.as_deref(), Some("denied"));
    assert_eq!(drafts[0].upstream_status, None);
    assert_eq!(drafts[0].client_ip, None);
    assert_eq!(drafts[1].outcome.as_deref(), Some("cache_hit"));
    assert_eq!(drafts[1].error_code, None);
    assert_eq!(drafts[2].status, Some(504));
    assert_eq!(drafts[2].outcome.as_deref(), Some("upstream_error"));
}

#[tokio::test]
async fn fail_closed_withholds_the_upstream_response() {
    let sink = Arc::new(MemorySink::default());
    sink.fail.store(true, Ordering::SeqCst);
    let called = Arc::new(AtomicUsize::new(0));
    let layer = AuditLayer::new(sink.clone(), true, TIMEOUT);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(called.clone(), StatusCode::OK));
    let (req, _) = request(Method::GET, "/api/v1/patients/11");
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["odgw-error"], "audit_unavailable");
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["x-request-id"], "rid-42");
    let body = body_text(resp).await;
    assert!(body.contains("\"code\":\"audit_unavailable\""), "{body}");
    assert!(!body.contains("patient data"));
    assert_eq!(layer.failures(), 0);
}

#[tokio::test]
async fn a_known_unhealthy_sink_refuses_before_calling_upstream() {
    let sink = Arc::new(MemorySink::default());
    sink.unhealthy.store(true, Ordering::SeqCst);
    let called = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .service(upstream(called.clone(), StatusCode::OK));
    let (req, _) = request(Method::GET, "/api/v1/patients/11");
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["odgw-error"], "audit_unavailable");
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "Open Dental is not called"
    );

    // Fail open keeps serving even then.
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), false, TIMEOUT))
        .service(upstream(called.clone(), StatusCode::OK));
    let (req, _) = request(Method::GET, "/api/v1/patients/11");
    assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(called.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn fail_open_releases_the_response_and_counts() {
    let sink = Arc::new(MemorySink::default());
    sink.fail.store(true, Ordering::SeqCst);
    let layer = AuditLayer::new(sink.clone(), false, TIMEOUT);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(Arc::default(), StatusCode::OK));
    let (req, _) = request(Method::GET, "/api/v1/patients/11");
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_text(resp).await, "patient data");
    assert_eq!(layer.failures(), 1);
}

#[tokio::test(start_paused = true)]
async fn hung_sink_gives_503_after_the_write_timeout() {
    let sink = Arc::new(MemorySink::default());
    sink.hang.store(true, Ordering::SeqCst);
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .service(upstream(Arc::default(), StatusCode::OK));
    let (req, _) = request(Method::GET, "/api/v1/patients/11");
    let started = tokio::time::Instant::now();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= TIMEOUT);
    assert!(started.elapsed() < TIMEOUT * 2);
}

#[tokio::test]
async fn missing_request_context_is_an_internal_error_not_a_forward() {
    let sink = Arc::new(MemorySink::default());
    let called = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .layer(IntentLayer::new(sink.clone(), true, TIMEOUT))
        .service(upstream(called.clone(), StatusCode::OK));
    let (mut req, _) = request(Method::POST, "/api/v1/patients");
    req.extensions_mut().remove::<RequestContext>();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()["odgw-error"], "internal_error");
    assert_eq!(called.load(Ordering::SeqCst), 0);
    let drafts = sink.drafts();
    assert_eq!(drafts.len(), 1, "the 500 itself is still audited");
    assert_eq!(drafts[0].outcome.as_deref(), Some("gateway_error"));
}

#[tokio::test]
async fn intent_is_durable_before_the_upstream_call() {
    let sink = Arc::new(MemorySink::default());
    let seen_at_call = Arc::new(Mutex::new(None));
    let inner = {
        let sink = sink.clone();
        let seen = seen_at_call.clone();
        service_fn(move |_req: Request| {
            *seen.lock().unwrap() = Some(sink.drafts());
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(IntentLayer::new(sink.clone(), true, TIMEOUT))
        .service(inner);
    let (req, facts) = request(Method::PUT, "/api/v1/patients/11?x=1");
    facts.update(|f| {
        f.tenant = Some(TenantId::parse("demo").unwrap());
        f.principal = Some(alice());
    });
    svc.clone().oneshot(req).await.unwrap();
    let seen = seen_at_call.lock().unwrap().take().unwrap();
    assert_eq!(seen.len(), 1);
    let d = &seen[0];
    assert_eq!(d.kind, RecordKind::Intent);
    assert_eq!(d.method.as_deref(), Some("PUT"));
    assert_eq!(d.path.as_deref(), Some("/api/v1/patients/11"));
    assert_eq!(d.query.as_deref(), Some("x=1"));
    assert_eq!(d.request_id.as_deref(), Some("rid-42"));
    assert_eq!(d.tenant.as_deref(), Some("demo"));
    assert_eq!(d.subject.as_deref(), Some("alice"));
    assert_eq!(d.client_ip.as_deref(), Some("2001:db8::7"));
    assert_eq!(
        (d.status, d.upstream_status, d.outcome.as_deref()),
        (None, None, None)
    );

    // Reads need no intent; each write's caller is the one auth recorded.
    let (get, _) = request(Method::GET, "/api/v1/patients/11");
    svc.clone().oneshot(get).await.unwrap();
    assert_eq!(sink.drafts().len(), 1);
    let (delete, facts) = request(Method::DELETE, "/api/v1/appointments/3");
    facts.update(|f| {
        f.principal = Some(Principal::new(Identity {
            subject: "bob".into(),
            issuer: "https://idp.example.com/".into(),
            tenants: vec!["demo".into()],
            scopes: vec!["od:write".into()],
            expires_at: 0,
        }))
    });
    svc.oneshot(delete).await.unwrap();
    let drafts = sink.drafts();
    assert_eq!(drafts.len(), 2);
    assert_eq!(drafts[1].subject.as_deref(), Some("bob"));
}

#[tokio::test]
async fn failed_intent_never_reaches_open_dental_when_failing_closed() {
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let sink = Arc::new(MemorySink::default());
        sink.fail.store(true, Ordering::SeqCst);
        let called = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(IntentLayer::new(sink.clone(), true, TIMEOUT))
            .service(upstream(called.clone(), StatusCode::OK));
        let (req, _) = request(method.clone(), "/api/v1/patients");
        let resp = svc.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{method}");
        assert_eq!(
            resp.extensions().get::<ErrorCode>(),
            Some(&ErrorCode::AuditUnavailable)
        );
        assert_eq!(called.load(Ordering::SeqCst), 0, "{method} was forwarded");
    }
}

#[tokio::test]
async fn failed_intent_proceeds_when_failing_open() {
    let sink = Arc::new(MemorySink::default());
    sink.fail.store(true, Ordering::SeqCst);
    let called = Arc::new(AtomicUsize::new(0));
    let layer = IntentLayer::new(sink.clone(), false, TIMEOUT);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(upstream(called.clone(), StatusCode::OK));
    let (req, _) = request(Method::POST, "/api/v1/patients");
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert_eq!(layer.failures(), 1);
}

#[tokio::test]
async fn both_layers_over_the_file_log_write_a_verifiable_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(common::open(dir.path(), 64 << 20).await);
    let sink: Arc<dyn AuditSink> = log.clone();
    let called = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .layer(IntentLayer::new(sink, true, TIMEOUT))
        .service(upstream(called.clone(), StatusCode::CREATED));

    let (req, _) = request(Method::POST, "/api/v1/patients");
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    let lines = common::all_lines(dir.path());
    assert_eq!(lines.len(), 2);
    assert!(lines[0].contains(r#""seq":1,"#) && lines[0].contains(r#""kind":"intent""#));
    assert!(lines[1].contains(r#""seq":2,"#) && lines[1].contains(r#""kind":"request""#));
    assert!(lines[1].contains(r#""client_ip":"2001:db8::7""#));

    // The disk refuses: no forward, 503 to the client, nothing half-written.
    log.fail_writes(true);
    let (req, _) = request(Method::POST, "/api/v1/patients");
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert!(!log.is_healthy());

    // The disk is back: the writer's idle probe notices within about a second
    // and requests flow again without a restart.
    log.fail_writes(false);
    for _ in 0..50 {
        if log.is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.is_healthy());
    let (req, _) = request(Method::GET, "/api/v1/patients/1");
    assert_eq!(
        svc.oneshot(req).await.unwrap().status(),
        StatusCode::CREATED
    );
    log.flush_and_close().await;
    let report = verify(dir.path()).unwrap();
    assert!(report.ok && report.records == 3, "{report:?}");
}

/// A write whose client goes away while Open Dental is handling it: the
/// intent is on record before the call, and the request's own record follows
/// with what was known (`client_closed`, no status), so the pair tells a
/// reviewer the write may have happened and nobody saw the answer.
#[tokio::test]
async fn a_request_dropped_mid_flight_is_recorded_as_client_closed() {
    let sink = Arc::new(MemorySink::default());
    let at_upstream = Arc::new(tokio::sync::Notify::new());
    let reached = Arc::clone(&at_upstream);
    let never_answers = service_fn(move |req: Request| {
        let reached = Arc::clone(&reached);
        async move {
            context(&req).facts().update(|f| {
                f.tenant = Some(TenantId::parse("demo").unwrap());
                f.principal = Some(alice());
            });
            reached.notify_one();
            std::future::pending::<()>().await;
            Ok::<Response, Infallible>(Response::new(Body::empty()))
        }
    });
    let svc = ServiceBuilder::new()
        .layer(AuditLayer::new(sink.clone(), true, TIMEOUT))
        .layer(IntentLayer::new(sink.clone(), true, TIMEOUT))
        .service(never_answers);
    let (req, _facts) = request(Method::PUT, "/api/v1/patients/11?x=1");
    let in_flight = tokio::spawn(svc.oneshot(req));
    at_upstream.notified().await;
    in_flight.abort();
    assert!(in_flight.await.unwrap_err().is_cancelled());

    let drafts = tokio::time::timeout(TIMEOUT, async {
        loop {
            let drafts = sink.drafts();
            if drafts.len() == 2 {
                return drafts;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the dropped request's record was never appended");
    assert_eq!(drafts[0].kind, RecordKind::Intent);
    let gone = &drafts[1];
    assert_eq!(gone.kind, RecordKind::Request);
    assert_eq!(gone.outcome.as_deref(), Some(odgw_audit::CLIENT_CLOSED));
    assert_eq!((gone.status, gone.upstream_status), (None, None));
    assert_eq!(gone.error_code, None);
    assert_eq!(gone.request_id.as_deref(), Some("rid-42"));
    assert_eq!(gone.tenant.as_deref(), Some("demo"));
    assert_eq!(gone.subject.as_deref(), Some("alice"));
    assert_eq!(gone.method.as_deref(), Some("PUT"));
    assert_eq!(gone.query.as_deref(), Some("x=1"));
    assert!(gone.duration_ms.is_some());
}
