//! The audit review console of odgw: web pages on the admin listener under
//! `/console/` where compliance reviewers search, read, export and verify
//! the audit trail, without the admin token.
//!
//! - [`Console`]: the pages and their router ([`Console::router`]), built
//!   from [`ConsoleSettings`].
//! - Sign-in: OpenID Connect authorization code with PKCE ([`oidc`]); a
//!   reviewer needs `reviewer_scope` (default `odgw:audit`). In `serve
//!   --dev`, [`Console::dev_login_link`] prints a one-time link instead.
//! - Sessions: sealed cookies ([`session`]), HttpOnly, SameSite=Strict,
//!   Secure under TLS; logout needs the session's CSRF token.
//! - Read-only: the console has no route that changes a tenant or the
//!   cache, and the admin API accepts only the admin token, never a
//!   console session.
//! - Every search, view and export is itself an `admin` audit record
//!   (`audit.view`, `audit.export`), durable before anything is shown;
//!   sign-ins and sign-outs too (`console.login`, `console.logout`).
//! - Pages are server-rendered HTML with a strict CSP (`default-src
//!   'none'`), no script at all, no third-party asset; every record value
//!   is escaped ([`html::esc`]).

pub mod chart;
pub mod filter;
pub mod html;
pub mod oidc;
pub mod session;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Form, Router,
};
use odgw_audit::{AuditRecord, AuditSink, RecordDraft, RecordKind};
use odgw_core::{RequestContext, RequestId, StackOrderBug};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{
    filter::{Filter, FilterParams, PAGE_SIZE},
    html::Viewer,
    oidc::{LoginError, OidcClient, OidcSettings},
    session::{CookieKey, LoginFlow, Purpose, Session, LOGIN_COOKIE, SESSION_COOKIE},
};

/// The Content-Security-Policy of every console response: nothing but this
/// origin's stylesheet and images, no script of any kind, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How long a login may take between the redirect and the callback.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// How long a `serve --dev` login link stays usable.
const DEV_LINK_TTL: Duration = Duration::from_secs(900);
/// The issuer of sessions begun with a `serve --dev` login link.
const DEV_ISSUER: &str = "odgw-dev";
/// Rows of a patient access report at most.
const MAX_PATIENT_ROWS: usize = 2000;

/// What the console needs.
pub struct ConsoleSettings {
    /// The identity provider; `None` when only dev links sign in.
    pub oidc: Option<OidcSettings>,
    /// The scope a reviewer must hold (`console.reviewer_scope`).
    pub reviewer_scope: String,
    /// How long a session lasts (`console.session_ttl`).
    pub session_ttl: Duration,
    /// Mark cookies `Secure` (the admin listener serves TLS).
    pub secure_cookies: bool,
    pub cookie_key: CookieKey,
    /// The audit segments (`audit.path`).
    pub audit_dir: PathBuf,
    /// Where the console's own records go (the gateway's audit log).
    pub audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("oidc", &self.oidc)
            .field("reviewer_scope", &self.reviewer_scope)
            .field("session_ttl", &self.session_ttl)
            .field("audit_dir", &self.audit_dir)
            .finish_non_exhaustive()
    }
}

/// The console; cheap to clone.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: ConsoleSettings,
    oidc: Option<OidcClient>,
    /// One-time `serve --dev` login tokens and when each expires.
    dev_links: Mutex<HashMap<String, u64>>,
}

/// The console could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("console: {0}")]
pub struct ConsoleError(String);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Facts about one console request, for its audit record.
#[derive(Debug, Clone)]
struct Seen {
    request_id: RequestId,
    client_ip: Option<String>,
    method: Method,
    path: String,
    query: Option<String>,
}

impl Seen {
    /// The same request recorded without its query: the sign-in routes
    /// carry one-time secrets there (an authorization code, a dev link's
    /// token), and SPEC §8 keeps tokens out of the trail.
    fn without_query(mut self) -> Self {
        self.query = None;
        self
    }

    /// The request as the admin listener's request-context middleware
    /// ([`odgw_admin::with_request_id`]) saw it.
    fn of(req: &Request) -> Result<Self, StackOrderBug> {
        let context = RequestContext::of(req, "console")?;
        Ok(Self {
            request_id: context.id().clone(),
            client_ip: context.client_ip().map(|ip| ip.to_string()),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
        })
    }
}

impl Console {
    pub fn new(settings: ConsoleSettings) -> Result<Self, ConsoleError> {
        let oidc = settings
            .oidc
            .clone()
            .map(OidcClient::new)
            .transpose()
            .map_err(|e| ConsoleError(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                oidc,
                dev_links: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A one-time sign-in link for `serve --dev` (no identity provider):
    /// `{admin_base}/console/dev-login?token=…`, usable once within 15 minutes.
    pub fn dev_login_link(&self, admin_base: &str) -> Option<String> {
        let token = session::random_token(32)?;
        let mut links = self
            .inner
            .dev_links
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = now_secs();
        links.retain(|_, expires| *expires > now);
        links.insert(token.clone(), now + DEV_LINK_TTL.as_secs());
        Some(format!(
            "{}/console/dev-login?token={token}",
            admin_base.trim_end_matches('/')
        ))
    }

    /// The routes under `/console/`, to be merged into the admin router.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/console", get(|| async { redirect("/console/") }))
            .route("/console/", get(search))
            .route("/console/records/{seq}", get(record))
            .route("/console/chain", get(chain))
            .route("/console/patients", get(patients))
            .route("/console/export.csv", get(export_csv))
            .route("/console/export.jsonl", get(export_jsonl))
            .route("/console/chart.svg", get(chart_svg))
            .route("/console/style.css", get(style))
            .route("/console/login", get(login))
            .route("/console/callback", get(callback))
            .route("/console/dev-login", get(dev_login))
            .route("/console/logout", post(logout))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(self.clone())
    }

    fn settings(&self) -> &ConsoleSettings {
        &self.inner.settings
    }

    /// The signed-in reviewer, if the request carries a live session: one
    /// sealed by this master key, not expired, no longer than
    /// `session_ttl` from now (a shortened `session_ttl` ends older,
    /// longer sessions at once), and from the sign-in configured now (the
    /// identity provider's issuer; the dev issuer only without one), so
    /// replacing a provider ends the sessions it vouched for.
    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let text = session::cookie(headers, SESSION_COOKIE)?;
        let s: Session = self.settings().cookie_key.open(Purpose::Session, text)?;
        let now = now_secs();
        let issuer = match &self.settings().oidc {
            Some(oidc) => oidc.issuer.as_str(),
            None => DEV_ISSUER,
        };
        let live = s.expires_at > now
            && s.expires_at <= now.saturating_add(self.settings().session_ttl.as_secs());
        (live && s.issuer == issuer).then_some(s)
    }

    /// Appends the console's own `admin` record; `false` if it could not
    /// be made durable (then nothing may be shown).
    async fn audit(
        &self,
        seen: &Seen,
        who: Option<(&str, &str)>,
        action: &str,
        target: Option<String>,
        status: StatusCode,
    ) -> bool {
        let mut d = RecordDraft::new(RecordKind::Admin);
        d.request_id = Some(seen.request_id.as_str().to_owned());
        d.client_ip = seen.client_ip.clone();
        d.subject = who.map(|(s, _)| s.to_owned());
        d.issuer = who.map(|(_, i)| i.to_owned());
        d.method = Some(seen.method.as_str().to_owned());
        d.path = Some(seen.path.clone());
        d.query = seen.query.clone();
        d.status = Some(status.as_u16());
        d.action = Some(action.to_owned());
        d.target = target;
        match self.settings().audit.append(d).await {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, action, "console audit record not durable");
                false
            }
        }
    }

    /// Records a reviewer's access; `Some(503 page)` when the record could
    /// not be made durable, in which case nothing may be shown.
    async fn record_access(
        &self,
        seen: &Seen,
        s: &Session,
        action: &str,
        target: Option<String>,
        status: StatusCode,
    ) -> Option<Response> {
        let recorded = self
            .audit(seen, Some((&s.subject, &s.issuer)), action, target, status)
            .await;
        (!recorded).then(|| failure(StatusCode::SERVICE_UNAVAILABLE, NOT_DURABLE))
    }

    fn cookie_header(
        &self,
        name: &str,
        value: &str,
        max_age: Duration,
        same_site: &str,
    ) -> HeaderValue {
        let text = session::set_cookie(
            name,
            value,
            max_age.as_secs(),
            same_site,
            self.settings().secure_cookies,
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Signs `who` in: the session cookie, the login cookie cleared, and a
    /// page that moves on to the console from this origin (a SameSite=Strict
    /// cookie set during the provider's cross-site redirect is only sent on
    /// a navigation that starts here).
    fn start_session(&self, subject: String, issuer: String) -> Response {
        let Some(csrf) = session::random_token(24) else {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the random source failed",
            );
        };
        let ttl = self.settings().session_ttl;
        let s = Session {
            subject,
            issuer,
            expires_at: now_secs() + ttl.as_secs(),
            csrf,
        };
        let Some(sealed) = self.settings().cookie_key.seal(Purpose::Session, &s) else {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the session could not be sealed",
            );
        };
        let mut resp = Response::new(Body::from(html::page(
            "Signed in",
            None,
            Some("/console/"),
            &format!(
                r#"<p>Signed in as <b>{}</b>.</p><p><a id="continue" href="/console/">Continue to the audit console</a></p>"#,
                html::esc(&s.subject)
            ),
        )));
        set_html(&mut resp);
        let headers = resp.headers_mut();
        headers.append(
            header::SET_COOKIE,
            self.cookie_header(SESSION_COOKIE, &sealed, ttl, "Strict"),
        );
        headers.append(
            header::SET_COOKIE,
            self.cookie_header(LOGIN_COOKIE, "", Duration::ZERO, "Lax"),
        );
        resp
    }
}

fn set_html(resp: &mut Response) {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    set_html(&mut resp);
    resp
}

fn failure(status: StatusCode, text: &str) -> Response {
    html_response(status, html::message("Error", None, text, None))
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The signed-in reviewer; without a live session the request is sent to
/// the sign-in page instead.
struct Reviewer(Session);

impl axum::extract::FromRequestParts<Console> for Reviewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        console: &Console,
    ) -> Result<Self, Response> {
        console
            .session(&parts.headers)
            .map(Reviewer)
            .ok_or_else(|| redirect("/console/login"))
    }
}

fn viewer(s: &Session) -> Viewer<'_> {
    Viewer {
        subject: &s.subject,
        csrf: &s.csrf,
    }
}

/// Reads records matching `f` on the blocking pool: at most `max` of them
/// (`None`: all), plus whether more matched.
async fn read(
    console: &Console,
    f: Filter,
    max: Option<usize>,
) -> Result<(Vec<AuditRecord>, bool), String> {
    let dir = console.settings().audit_dir.clone();
    tokio::task::spawn_blocking(move || {
        let limit = max.filter(|_| f.reader_filters_all()).map(|m| m + 1);
        let mut out = Vec::new();
        for item in odgw_audit::query(&dir, &f.audit_query(limit)) {
            // An unreadable line is left out here; the chain page names it.
            let Ok(r) = item else { continue };
            if !f.matches(&r) {
                continue;
            }
            if max.is_some_and(|m| out.len() == m) {
                return (out, true);
            }
            out.push(r);
        }
        (out, false)
    })
    .await
    .map_err(|_| "reading the audit trail failed".to_owned())
    .map(Ok)?
}

/// The search form's filter from the query string; the error names the field.
fn filter(uri: &http::Uri) -> Result<Filter, String> {
    match Query::<FilterParams>::try_from_uri(uri) {
        Ok(Query(p)) => Filter::parse(p),
        Err(_) => Err("unknown search field".to_owned()),
    }
}

/// The 400 page for a search that does not validate.
fn bad_search(s: &Session, why: &str) -> Response {
    html_response(
        StatusCode::BAD_REQUEST,
        html::message(
            "Search",
            Some(viewer(s)),
            why,
            Some(("back", "/console/", "New search")),
        ),
    )
}

const NOT_DURABLE: &str =
    "the console could not record this access in the audit trail, so nothing is shown";

async fn search(State(console): State<Console>, Reviewer(s): Reviewer, req: Request) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let f = match filter(req.uri()) {
        Ok(f) => f,
        Err(why) => return bad_search(&s, &why),
    };
    let (records, more) = match read(&console, f.clone(), Some(PAGE_SIZE)).await {
        Ok(found) => found,
        Err(why) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &why),
    };
    if let Some(refused) = console
        .record_access(&seen, &s, "audit.view", f.tenant.clone(), StatusCode::OK)
        .await
    {
        return refused;
    }
    let next = more.then(|| records.last().map(|r| r.seq)).flatten();
    html_response(
        StatusCode::OK,
        html::search_page(viewer(&s), &f, &records, next),
    )
}

async fn record(
    State(console): State<Console>,
    Reviewer(s): Reviewer,
    Path(seq): Path<String>,
    req: Request,
) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let Ok(seq) = seq.parse::<u64>() else {
        return html_response(
            StatusCode::NOT_FOUND,
            html::message("Record", Some(viewer(&s)), "no such record", None),
        );
    };
    let f = Filter {
        after_seq: Some(seq.saturating_sub(1)),
        ..Filter::default()
    };
    let found = match read(&console, f, Some(1)).await {
        Ok((records, _)) => records.into_iter().find(|r| r.seq == seq),
        Err(why) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &why),
    };
    let status = if found.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    if let Some(refused) = console
        .record_access(
            &seen,
            &s,
            "audit.view",
            found.as_ref().and_then(|r| r.tenant.clone()),
            status,
        )
        .await
    {
        return refused;
    }
    match found {
        Some(r) => html_response(StatusCode::OK, html::record_page(viewer(&s), &r)),
        None => html_response(
            status,
            html::message("Record", Some(viewer(&s)), "no such record", None),
        ),
    }
}

async fn chain(State(console): State<Console>, Reviewer(s): Reviewer, req: Request) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let dir = console.settings().audit_dir.clone();
    let report = match tokio::task::spawn_blocking(move || odgw_audit::verify(&dir)).await {
        Ok(Ok(report)) => report,
        _ => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the audit segments could not be read",
            )
        }
    };
    if let Some(refused) = console
        .record_access(&seen, &s, "audit.view", None, StatusCode::OK)
        .await
    {
        return refused;
    }
    html_response(StatusCode::OK, html::chain_page(viewer(&s), &report))
}

#[derive(Debug, Deserialize)]
struct PatientParams {
    #[serde(default)]
    patnum: String,
}

async fn patients(State(console): State<Console>, Reviewer(s): Reviewer, req: Request) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let refuse = |why: &str| {
        html_response(
            StatusCode::BAD_REQUEST,
            html::message("Patient access report", Some(viewer(&s)), why, None),
        )
    };
    let patnum = match Query::<PatientParams>::try_from_uri(req.uri()) {
        Ok(Query(p)) if p.patnum.trim().is_empty() => None,
        Ok(Query(p)) => match p.patnum.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return refuse("patnum must be a number"),
        },
        Err(_) => return refuse("the only field is patnum"),
    };
    let Some(patnum) = patnum else {
        return html_response(
            StatusCode::OK,
            html::patient_page(viewer(&s), None, &[], false),
        );
    };
    let f = Filter {
        patient: Some(patnum),
        ..Filter::default()
    };
    let (records, truncated) = match read(&console, f, Some(MAX_PATIENT_ROWS)).await {
        Ok(found) => found,
        Err(why) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &why),
    };
    if let Some(refused) = console
        .record_access(
            &seen,
            &s,
            "audit.view",
            Some(format!("patient {patnum}")),
            StatusCode::OK,
        )
        .await
    {
        return refused;
    }
    html_response(
        StatusCode::OK,
        html::patient_page(viewer(&s), Some(patnum), &records, truncated),
    )
}

async fn chart_svg(
    State(console): State<Console>,
    Reviewer(s): Reviewer,
    req: Request,
) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let f = match filter(req.uri()) {
        Ok(f) => f,
        Err(why) => return bad_search(&s, &why),
    };
    let dir = console.settings().audit_dir.clone();
    let query_filter = f.clone();
    let svg = tokio::task::spawn_blocking(move || {
        let mut hourly = chart::Hourly::default();
        for r in odgw_audit::query(&dir, &query_filter.audit_query(None)).flatten() {
            if query_filter.matches(&r) {
                hourly.add(&r.ts, r.outcome.as_deref());
            }
        }
        hourly.svg()
    })
    .await;
    let Ok(svg) = svg else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the audit trail failed",
        );
    };
    if let Some(refused) = console
        .record_access(&seen, &s, "audit.view", f.tenant.clone(), StatusCode::OK)
        .await
    {
        return refused;
    }
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    Jsonl,
}

async fn export_csv(console: State<Console>, reviewer: Reviewer, req: Request) -> Response {
    export(console, reviewer, req, Format::Csv).await
}

async fn export_jsonl(console: State<Console>, reviewer: Reviewer, req: Request) -> Response {
    export(console, reviewer, req, Format::Jsonl).await
}

/// The records of the current filter, all of them, in the bytes `odgw
/// audit query --format csv|jsonl` writes; recorded before the first byte.
async fn export(
    State(console): State<Console>,
    Reviewer(s): Reviewer,
    req: Request,
    format: Format,
) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let mut f = match filter(req.uri()) {
        Ok(f) => f,
        Err(why) => return bad_search(&s, &why),
    };
    f.after_seq = None;
    if let Some(refused) = console
        .record_access(&seen, &s, "audit.export", f.tenant.clone(), StatusCode::OK)
        .await
    {
        return refused;
    }
    let dir = console.settings().audit_dir.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        if format == Format::Csv {
            let header = format!("{}\n", odgw_audit::to_csv_header()).into_bytes();
            if tx.blocking_send(Ok(header)).is_err() {
                return;
            }
        }
        for item in odgw_audit::query(&dir, &f.audit_query(None)) {
            let chunk = match item {
                Ok(r) if !f.matches(&r) => continue,
                Ok(r) => match format {
                    Format::Csv => Ok(format!("{}\n", odgw_audit::to_csv_row(&r)).into_bytes()),
                    Format::Jsonl => serde_json::to_vec(&r)
                        .map(|mut line| {
                            line.push(b'\n');
                            line
                        })
                        .map_err(std::io::Error::other),
                },
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (content_type, name) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "odgw-audit.csv"),
        Format::Jsonl => ("application/x-ndjson", "odgw-audit.jsonl"),
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        html::STYLE,
    )
        .into_response()
}

/// `{scheme}://{host}/console/callback`, from the configuration or, when it
/// names none, from this request's `Host`.
fn redirect_uri(console: &Console, oidc: &OidcClient, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = &oidc.settings().redirect_url {
        return Some(url.clone());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    // Only a plain authority: no path, credentials or spaces can ride along.
    let authority: http::uri::Authority = host.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let scheme = if console.settings().secure_cookies {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{authority}/console/callback"))
}

async fn login(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some(oidc) = &console.inner.oidc else {
        return html_response(
            StatusCode::NOT_FOUND,
            html::message("Sign in", None, "sign-in is not configured ([console] issuer); in serve --dev use the printed login link", None),
        );
    };
    let Some(redirect_uri) = redirect_uri(&console, oidc, &headers) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "the request has no usable Host header; set console.redirect_url",
        );
    };
    let (Some(state), Some(nonce), Some(verifier)) = (
        session::random_token(24),
        session::random_token(24),
        session::random_token(32),
    ) else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the random source failed",
        );
    };
    let url = match oidc
        .authorize_url(
            &redirect_uri,
            &console.settings().reviewer_scope,
            &state,
            &nonce,
            &verifier,
        )
        .await
    {
        Ok(url) => url,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in could not start");
            oidc.forget_provider().await;
            return failure(StatusCode::BAD_GATEWAY, &e.page_text());
        }
    };
    let flow = LoginFlow {
        state,
        nonce,
        verifier,
        redirect_uri,
        expires_at: now_secs() + LOGIN_TTL.as_secs(),
    };
    let Some(sealed) = console.settings().cookie_key.seal(Purpose::Login, &flow) else {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the login could not be sealed",
        );
    };
    let mut resp = redirect(&url);
    resp.headers_mut().append(
        header::SET_COOKIE,
        console.cookie_header(LOGIN_COOKIE, &sealed, LOGIN_TTL, "Lax"),
    );
    resp
}

/// The `error` of a provider's refusal as shown and logged: one of the
/// codes of RFC 6749 §4.1.2.1 and OpenID Connect Core §3.1.2.6, else
/// "unknown error". Anyone can send a reviewer a callback link, so its
/// free text must not become a message on odgw's own page.
fn provider_error_code(error: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "invalid_request",
        "unauthorized_client",
        "access_denied",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "invalid_request_uri",
        "invalid_request_object",
        "registration_not_supported",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == error)
        .unwrap_or("unknown error")
}

#[derive(Debug, Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(State(console): State<Console>, req: Request) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen.without_query(),
        Err(bug) => return bug.into_response(),
    };
    let Some(oidc) = &console.inner.oidc else {
        return failure(StatusCode::NOT_FOUND, "sign-in is not configured");
    };
    let refused = |status: StatusCode, text: &str| {
        html_response(
            status,
            html::message(
                "Sign in",
                None,
                text,
                Some(("retry", "/console/login", "Try again")),
            ),
        )
    };
    let Ok(Query(params)) = Query::<CallbackParams>::try_from_uri(req.uri()) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "the identity provider's answer is malformed",
        );
    };
    if let Some(error) = params.error {
        let code = provider_error_code(&error);
        tracing::info!(
            error = code,
            "console sign-in refused by the identity provider"
        );
        return refused(
            StatusCode::FORBIDDEN,
            &format!("the identity provider refused the sign-in ({code})"),
        );
    }
    let flow: Option<LoginFlow> = session::cookie(req.headers(), LOGIN_COOKIE)
        .and_then(|text| console.settings().cookie_key.open(Purpose::Login, text))
        .filter(|f: &LoginFlow| f.expires_at > now_secs());
    let (Some(flow), Some(code), Some(state)) = (flow, params.code, params.state) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "this sign-in expired or was not started here",
        );
    };
    if !bool::from(flow.state.as_bytes().ct_eq(state.as_bytes())) {
        return refused(
            StatusCode::BAD_REQUEST,
            "the sign-in state does not match (possible forgery)",
        );
    }
    let who = match oidc
        .finish(&code, &flow.redirect_uri, &flow.verifier, &flow.nonce)
        .await
    {
        Ok(who) => who,
        Err(e @ LoginError::Provider(_)) => {
            tracing::warn!(error = %e, "console sign-in could not finish");
            oidc.forget_provider().await;
            return refused(StatusCode::BAD_GATEWAY, &e.page_text());
        }
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in refused");
            return refused(StatusCode::FORBIDDEN, &e.page_text());
        }
    };
    let scope = &console.settings().reviewer_scope;
    let allowed = who.scopes.iter().any(|s| s == scope);
    let status = if allowed {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    };
    if !console
        .audit(
            &seen,
            Some((&who.subject, &who.issuer)),
            "console.login",
            None,
            status,
        )
        .await
    {
        return failure(StatusCode::SERVICE_UNAVAILABLE, NOT_DURABLE);
    }
    if !allowed {
        tracing::warn!(subject = %who.subject, "console sign-in refused: reviewer scope missing");
        let mut resp = refused(
            StatusCode::FORBIDDEN,
            &format!(
                "{} may not review the audit trail (the {scope} scope is missing)",
                who.subject
            ),
        );
        resp.headers_mut().append(
            header::SET_COOKIE,
            console.cookie_header(LOGIN_COOKIE, "", Duration::ZERO, "Lax"),
        );
        return resp;
    }
    tracing::info!(subject = %who.subject, "console sign-in");
    console.start_session(who.subject, who.issuer)
}

#[derive(Debug, Deserialize)]
struct DevLoginParams {
    token: String,
}

/// The `serve --dev` sign-in: a printed one-time link instead of an
/// identity provider.
async fn dev_login(State(console): State<Console>, req: Request) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen.without_query(),
        Err(bug) => return bug.into_response(),
    };
    let Ok(Query(params)) = Query::<DevLoginParams>::try_from_uri(req.uri()) else {
        return failure(StatusCode::BAD_REQUEST, "the link is malformed");
    };
    let valid = {
        let mut links = console
            .inner
            .dev_links
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        links
            .remove(&params.token)
            .is_some_and(|expires| expires > now_secs())
    };
    if !valid {
        return failure(
            StatusCode::FORBIDDEN,
            "this login link was used already or has expired",
        );
    }
    let (subject, issuer) = ("dev-reviewer".to_owned(), DEV_ISSUER.to_owned());
    if !console
        .audit(
            &seen,
            Some((&subject, &issuer)),
            "console.login",
            None,
            StatusCode::OK,
        )
        .await
    {
        return failure(StatusCode::SERVICE_UNAVAILABLE, NOT_DURABLE);
    }
    console.start_session(subject, issuer)
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(console): State<Console>, req: Request) -> Response {
    let seen = match Seen::of(&req) {
        Ok(seen) => seen,
        Err(bug) => return bug.into_response(),
    };
    let (parts, body) = req.into_parts();
    let Some(s) = console.session(&parts.headers) else {
        return redirect("/console/login");
    };
    let req = Request::from_parts(parts, body);
    let form = <Form<LogoutForm> as axum::extract::FromRequest<()>>::from_request(req, &()).await;
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    if !bool::from(s.csrf.as_bytes().ct_eq(csrf.as_bytes())) || csrf.is_empty() {
        return html_response(
            StatusCode::FORBIDDEN,
            html::message(
                "Sign out",
                Some(viewer(&s)),
                "the form's CSRF token is missing or wrong; nothing was done",
                None,
            ),
        );
    }
    if let Some(refused) = console
        .record_access(&seen, &s, "console.logout", None, StatusCode::OK)
        .await
    {
        return refused;
    }
    let mut resp = html_response(
        StatusCode::OK,
        html::message(
            "Signed out",
            None,
            "You are signed out.",
            Some(("sign-in", "/console/login", "Sign in again")),
        ),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        console.cookie_header(SESSION_COOKIE, "", Duration::ZERO, "Strict"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use odgw_core::SecretString;

    use super::*;

    const ISSUER: &str = "https://idp.example/";

    fn console(issuer: Option<&str>) -> Console {
        Console::new(ConsoleSettings {
            oidc: issuer.map(|issuer| OidcSettings {
                issuer: issuer.to_owned(),
                client_id: "odgw-console".into(),
                client_secret: SecretString::new("s3cret"),
                redirect_url: Some("https://odgw.example/console/callback".into()),
            }),
            reviewer_scope: "odgw:audit".into(),
            session_ttl: Duration::from_secs(3600),
            secure_cookies: true,
            cookie_key: CookieKey::derive(&SecretString::new("master")).unwrap(),
            audit_dir: PathBuf::from("/nonexistent"),
            audit: Arc::new(odgw_audit::NullSink::new()),
        })
        .unwrap()
    }

    fn with_session(console: &Console, s: &Session) -> HeaderMap {
        let sealed = console
            .settings()
            .cookie_key
            .seal(Purpose::Session, s)
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("{SESSION_COOKIE}={sealed}").parse().unwrap(),
        );
        headers
    }

    fn session(issuer: &str, expires_at: u64) -> Session {
        Session {
            subject: "alice".into(),
            issuer: issuer.into(),
            expires_at,
            csrf: "c".into(),
        }
    }

    async fn body_text(resp: Response) -> String {
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_session_counts_only_within_the_ttl_and_from_the_configured_issuer() {
        let c = console(Some(ISSUER));
        let now = now_secs();
        let live = session(ISSUER, now + 600);
        assert_eq!(c.session(&with_session(&c, &live)), Some(live));
        assert_eq!(
            c.session(&with_session(&c, &session(ISSUER, now - 1))),
            None,
            "expired"
        );
        assert_eq!(
            c.session(&with_session(&c, &session(ISSUER, now + 7200))),
            None,
            "sealed under a longer session_ttl than the one configured now"
        );
        assert_eq!(
            c.session(&with_session(
                &c,
                &session("https://old-idp.example/", now + 600)
            )),
            None,
            "from a provider no longer configured"
        );
        assert_eq!(
            c.session(&with_session(&c, &session(DEV_ISSUER, now + 600))),
            None,
            "a dev login is no sign-in where a provider is configured"
        );
        let dev = console(None);
        let s = session(DEV_ISSUER, now + 600);
        assert_eq!(dev.session(&with_session(&dev, &s)), Some(s));
    }

    #[tokio::test]
    async fn a_callback_link_cannot_put_its_own_words_on_the_page() {
        let c = console(Some(ISSUER));
        // As the admin listener's middleware hands requests to the console.
        let with_context = |mut req: Request| {
            req.extensions_mut()
                .insert(RequestContext::new(RequestId::generate(), None));
            req
        };
        let req = Request::get(
            "/console/callback?error=Your%20account%20is%20locked.%20Call%20555-0100&state=x",
        )
        .body(Body::empty())
        .unwrap();
        let resp = callback(State(c.clone()), with_context(req)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let page = body_text(resp).await;
        assert!(!page.contains("555-0100"), "{page}");
        assert!(page.contains("unknown error"), "{page}");
        let req = Request::get("/console/callback?error=access_denied")
            .body(Body::empty())
            .unwrap();
        let page = body_text(callback(State(c), with_context(req)).await).await;
        assert!(page.contains("(access_denied)"), "{page}");
    }

    #[tokio::test]
    async fn sign_in_never_starts_against_a_plain_http_provider() {
        // Refused before any connection: discovery over plain http would
        // let anyone on the path name the token endpoint and signing keys.
        let c = console(Some("http://idp.example"));
        let resp = login(State(c), HeaderMap::new()).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(resp.headers().get(header::LOCATION).is_none());
        let page = body_text(resp).await;
        assert!(page.contains("must be an https URL"), "{page}");
    }
}
