//! The audit review console (#17) in a real headless Chromium: login through
//! a fake OpenID Connect provider (authorization code + PKCE), search and
//! paging, record detail, chain status after tampering, exports against
//! `odgw audit query`, the patient report, logout with CSRF, the reviewer's
//! lack of admin rights, and hostile data rendered inert.
//!
//! Every page visited is saved as
//! `target/console-screenshots/<test>-<page>.png` for review.

use std::{
    io::{Seek, SeekFrom, Write},
    path::PathBuf,
};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::{
    browser::{screenshot_dir, Driver, Session, WAIT},
    oidc_provider::{s256, OidcProvider},
    support::*,
};

const CLIENT_ID: &str = "odgw-console";
const COOKIE: &str = "odgw_console";

/// A gateway with `[console]` pointing at a running fake provider.
struct Console {
    gw: TestGateway,
    provider: OidcProvider,
    _secrets: TempDir,
}

impl Console {
    async fn start() -> Self {
        let mut secret = [0u8; 24];
        aws_lc_rs::rand::fill(&mut secret).unwrap();
        let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let provider = OidcProvider::start(CLIENT_ID, &secret).await;
        let secrets = tempfile::tempdir().unwrap();
        let secret_file = secrets.path().join("console_client_secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        // No redirect_url: odgw derives it from the admin listener's Host.
        let extra_toml = format!(
            r#"
[console]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{file}"
"#,
            issuer = provider.issuer(),
            file = secret_file.display(),
        );
        let gw = TestGateway::start_with(Options {
            extra_toml,
            ..Options::default()
        })
        .await;
        provider.allow_redirect_uri(&format!("http://{}/console/callback", gw.admin));
        Self {
            gw,
            provider,
            _secrets: secrets,
        }
    }

    /// An absolute URL on the admin listener.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin)
    }

    /// A request to the admin listener carrying only this session cookie.
    async fn with_cookie(&self, method: Method, path_or_url: &str, cookie: &str) -> Resp {
        let uri = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.url(path_or_url)
        };
        self.gw
            .send(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .header("cookie", format!("{COOKIE}={cookie}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
    }

    /// The audit trail as written.
    fn lines(&self) -> Vec<Value> {
        audit_lines(&self.gw.root.join("audit"))
    }

    /// The seqs of the records on disk that satisfy `pred`.
    fn seqs(&self, pred: impl Fn(&Value) -> bool) -> Vec<u64> {
        self.lines()
            .iter()
            .filter(|l| pred(l))
            .map(|l| l["seq"].as_u64().unwrap())
            .collect()
    }

    /// The console's own admin records for this reviewer.
    fn console_records(&self, action: &str, subject: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["kind"] == "admin" && l["action"] == action && l["subject"] == subject)
            .collect()
    }

    /// Sends a data-plane GET and returns the seq of its request record.
    async fn seed(&self, path: &str, token: Option<&str>) -> u64 {
        let before = self.lines().len();
        let resp = self.gw.get(path, token).await;
        let id = resp.header("x-request-id").unwrap().to_string();
        let lines = self.lines();
        assert!(lines.len() > before, "{path} left no audit record");
        lines
            .iter()
            .find(|l| l["kind"] == "request" && l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no request record for {path}"))["seq"]
            .as_u64()
            .unwrap()
    }
}

/// Names screenshots `<test>-<page>.png`.
struct Shots {
    test: &'static str,
}

impl Shots {
    async fn take(&self, s: &Session<'_>, page: &str) {
        s.screenshot(&screenshot_dir(), &format!("{}-{page}", self.test))
            .await;
    }
}

/// Logs `username` in through the provider's form and the callback page;
/// ends on the search page.
async fn login(s: &Session<'_>, c: &Console, username: &str, shots: &Shots) {
    s.goto(&c.url("/console/")).await;
    let user = s.wait_for("#username").await;
    let at = s.current_url().await;
    assert_eq!(
        (at.host_str(), at.port(), at.path()),
        (
            Some("127.0.0.1"),
            Some(c.provider.addr.port()),
            "/authorize"
        ),
        "/console/ without a session leads to the provider"
    );
    shots.take(s, "provider-login").await;
    s.type_text(&user, username).await;
    let button = s.wait_for("#login").await;
    s.click(&button).await.unwrap();
    // The callback page refreshes to /console/ by itself; follow its link
    // when it is still showing.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut callback_seen = false;
    loop {
        let url = s.current_url().await;
        if url.path() == "/console/" && s.find("#search").await.is_some() {
            break;
        }
        if url.path() == "/console/callback" {
            if let Some(next) = s.find("#continue").await {
                if !callback_seen {
                    callback_seen = true;
                    assert_eq!(
                        s.attr(&next, "href").await.as_deref(),
                        Some("/console/"),
                        "#continue leads to the search page"
                    );
                    shots.take(s, "callback").await;
                }
                // Stale when the refresh won the race; the loop checks again.
                let _ = s.click(&next).await;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "login as {username} never reached the search page (now {url}); page text:\n{}",
            s.body_text().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    shots.take(s, "search").await;
}

/// The session cookie's value, as the browser holds it.
async fn session_cookie(s: &Session<'_>) -> String {
    match s.cookie(COOKIE).await {
        Some(cookie) => cookie["value"].as_str().unwrap().to_string(),
        None => panic!("no {COOKIE} cookie; cookies: {:?}", s.cookies().await),
    }
}

/// One row of `#results`.
#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    path: String,
    subject: String,
    tenant: String,
    outcome: String,
    status: String,
}

async fn cell(s: &Session<'_>, row: &crate::browser::Element, class: &str) -> String {
    match s.find_in(row, &format!(".{class}")).await {
        Some(e) => s.text(&e).await,
        None => panic!("a result row has no .{class} cell"),
    }
}

/// The rows of `#results` on the current page, checked to be oldest first.
async fn rows(s: &Session<'_>) -> Vec<Row> {
    let mut out = Vec::new();
    for row in s.find_all("#results tr.record").await {
        let seq: u64 = s
            .attr(&row, "data-seq")
            .await
            .expect("a result row has data-seq")
            .parse()
            .expect("data-seq is a number");
        let link = s
            .find_in(&row, "a.seq")
            .await
            .expect("a result row links to its record");
        assert_eq!(
            s.attr(&link, "href").await.as_deref(),
            Some(format!("/console/records/{seq}").as_str())
        );
        out.push(Row {
            seq,
            path: cell(s, &row, "path").await,
            subject: cell(s, &row, "subject").await,
            tenant: cell(s, &row, "tenant").await,
            outcome: cell(s, &row, "outcome").await,
            status: cell(s, &row, "status").await,
        });
    }
    let seqs: Vec<u64> = out.iter().map(|r| r.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(seqs, sorted, "results are oldest first");
    out
}

/// Fills the search form on a fresh search page with `fields`, submits it
/// and returns the result rows of the first page.
async fn search(
    s: &Session<'_>,
    c: &Console,
    fields: &[(&str, &str)],
    shots: &Shots,
    page: &str,
) -> Vec<Row> {
    s.goto(&c.url("/console/")).await;
    s.wait_for("form#search").await;
    for (name, value) in fields {
        let css = format!("form#search [name=\"{name}\"]");
        let input = s
            .find(&css)
            .await
            .unwrap_or_else(|| panic!("the search form has no {css}"));
        if s.tag_name(&input).await == "select" {
            s.select(&input, value).await;
        } else {
            s.clear(&input).await;
            s.type_text(&input, value).await;
        }
    }
    let submit = s.wait_for("#search-submit").await;
    s.click(&submit).await.unwrap();
    let wanted: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.wait_for_url("the submitted search", |u| {
        u.path() == "/console/"
            && wanted.iter().all(|w| {
                u.query_pairs()
                    .any(|(k, v)| k == w.0.as_str() && v == w.1.as_str())
            })
    })
    .await;
    // An empty result is a message instead of a table.
    s.wait_for("#results, #no-results").await;
    shots.take(s, page).await;
    rows(s).await
}

fn seqs_of(rows: &[Row]) -> Vec<u64> {
    rows.iter().map(|r| r.seq).collect()
}

/// Asserts the console's nav links on the current page.
async fn assert_nav(s: &Session<'_>) {
    for id in ["#nav-search", "#nav-chain", "#nav-patients"] {
        assert!(s.find(id).await.is_some(), "page lacks {id}");
    }
}

/// Asserts a strict CSP (`default-src 'none'`, nothing inline) on a response.
#[track_caller]
fn assert_strict_csp(resp: &Resp, what: &str) {
    let csp = resp
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(csp.contains("default-src 'none'"), "{what}: CSP {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: CSP {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: CSP {csp}");
}

/// Every form on the current page reads (GET) except the logout form.
async fn assert_only_logout_posts(s: &Session<'_>, page: &str) {
    for form in s.find_all("form").await {
        let method = s
            .attr(&form, "method")
            .await
            .unwrap_or_default()
            .to_lowercase();
        let id = s.attr(&form, "id").await.unwrap_or_default();
        if method == "post" {
            assert_eq!(id, "logout", "{page}: a POST form other than logout");
            assert_eq!(
                s.attr(&form, "action").await.as_deref(),
                Some("/console/logout")
            );
        }
    }
}

/// The `name=value` pairs of a response's `Set-Cookie` headers.
fn set_cookies(resp: &Resp) -> Vec<String> {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(|v| v.trim().to_string())
        .collect()
}

/// True when a response sets a non-empty session cookie.
fn sets_session(resp: &Resp) -> bool {
    set_cookies(resp).iter().any(|c| {
        c.strip_prefix(&format!("{COOKIE}="))
            .is_some_and(|v| !v.is_empty())
    })
}

/// The login flow without a browser (for the status codes a browser hides):
/// `/console/login`, the provider's form post, then the callback with the
/// cookies `/console/login` set. Returns the callback's response.
async fn login_without_browser(c: &Console, username: &str) -> Resp {
    let start =
        c.gw.send(
            Request::get(c.url("/console/login"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(start.status, 303, "/console/login: {start:?}");
    let jar = set_cookies(&start).join("; ");
    let authorize = url::Url::parse(start.header("location").unwrap()).unwrap();
    assert_eq!(
        authorize.as_str().split('?').next(),
        Some(format!("{}/authorize", c.provider.issuer()).as_str())
    );
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in authorize.query_pairs() {
        form.append_pair(&k, &v);
    }
    form.append_pair("username", username);
    let signed_in =
        c.gw.send(
            Request::post(format!("{}/login", c.provider.issuer()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form.finish())))
                .unwrap(),
        )
        .await;
    assert_eq!(signed_in.status, 303, "provider login: {signed_in:?}");
    let callback = signed_in.header("location").unwrap().to_string();
    assert!(
        callback.starts_with(&c.url("/console/callback?")),
        "{callback}"
    );
    c.gw.send(
        Request::get(callback)
            .header("cookie", jar)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

/// Overwrites `from` with `to` (same length) inside the audit line of `seq`,
/// in place, as an intruder editing a segment would.
fn tamper(audit_dir: &std::path::Path, seq: u64, from: &str, to: &str) -> PathBuf {
    assert_eq!(from.len(), to.len());
    let prefix = format!("{{\"seq\":{seq},");
    for entry in std::fs::read_dir(audit_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = 0;
        for line in bytes.split(|b| *b == b'\n') {
            if line.starts_with(prefix.as_bytes()) {
                let at = line
                    .windows(from.len())
                    .position(|w| w == from.as_bytes())
                    .unwrap_or_else(|| panic!("record {seq} has no {from}"));
                let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.seek(SeekFrom::Start((offset + at) as u64)).unwrap();
                file.write_all(to.as_bytes()).unwrap();
                file.sync_all().unwrap();
                return path;
            }
            offset += line.len() + 1;
        }
    }
    panic!("no audit line for seq {seq}");
}

/// Asserts nothing hostile ran or was injected on the current page.
async fn assert_inert(s: &Session<'_>, page: &str) {
    let alert = s.alert_text().await;
    assert_eq!(
        alert.as_ref().map_err(|e| e.error.as_str()),
        Err("no such alert"),
        "{page}: an alert is open"
    );
    assert!(
        s.find_all("script").await.is_empty(),
        "{page}: a script element is in the DOM"
    );
    assert!(
        s.find_all("[onerror], [onload], [onclick]")
            .await
            .is_empty(),
        "{page}: an element with an event handler attribute is in the DOM"
    );
    for img in s.find_all("img").await {
        let src = s.attr(&img, "src").await.unwrap_or_default();
        assert!(
            src.starts_with("/console/chart.svg"),
            "{page}: an injected <img src={src:?}>"
        );
    }
}

/// Whether the record was a request for patient `patnum`: the PatNum in
/// the path (`/patients/N`) or in the query (`PatNum=N`).
fn is_patient(line: &Value, patnum: &str) -> bool {
    let path = line["path"].as_str().unwrap_or_default();
    let in_path = path
        .split('/')
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == "patients" && w[1] == patnum);
    let in_query = line["query"].as_str().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "PatNum" && v == patnum)
    });
    line["kind"] == "request" && (in_path || in_query)
}

/// Asserts the console's own admin records for `reviewer`: at least `min`
/// of them, each naming the reviewer, the provider and no tenant.
#[track_caller]
fn assert_console_records(c: &Console, action: &str, reviewer: &str, min: usize) {
    let records = c.console_records(action, reviewer);
    assert!(
        records.len() >= min,
        "expected at least {min} {action} records for {reviewer}, found {}: {records:#?}",
        records.len()
    );
    for r in &records {
        assert_eq!(r["issuer"], c.provider.issuer(), "{r}");
        assert_eq!(r["tenant"], Value::Null, "{r}");
    }
}

// ---------------------------------------------------------------------------
// The console.

#[tokio::test(flavor = "multi_thread")]
async fn console_login_through_the_provider_uses_pkce_and_a_strict_session_cookie() {
    let c = Console::start().await;
    // Without a session, the console sends a client to its login.
    let anonymous =
        c.gw.send(
            Request::get(c.url("/console/"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, 303, "{anonymous:?}");
    assert_eq!(anonymous.header("location"), Some("/console/login"));

    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "login" };
    login(&s, &c, "reviewer-1", &shots).await;
    assert_nav(&s).await;
    assert_only_logout_posts(&s, "search").await;

    // The authorization request asked for PKCE S256, with state and nonce.
    let authorize = c.provider.authorize_calls();
    assert_eq!(authorize.len(), 1, "{authorize:#?}");
    assert_eq!(authorize[0].refused, None);
    let p = &authorize[0].params;
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["client_id"], CLIENT_ID);
    assert_eq!(
        p["redirect_uri"],
        format!("http://{}/console/callback", c.gw.admin)
    );
    assert!(p["scope"].split(' ').any(|x| x == "openid"), "{p:?}");
    assert_eq!(p["code_challenge_method"], "S256");
    assert!(
        p.get("state").is_some_and(|v| v.len() >= 16),
        "state: {p:?}"
    );
    assert!(
        p.get("nonce").is_some_and(|v| v.len() >= 16),
        "nonce: {p:?}"
    );
    assert!(
        !p.contains_key("code_verifier"),
        "the verifier never leaves odgw"
    );

    // The code was redeemed once, with the verifier of that challenge.
    let tokens = c.provider.token_calls();
    assert_eq!(tokens.len(), 1, "{tokens:#?}");
    let t = &tokens[0];
    assert_eq!(t.refused, None, "{t:#?}");
    assert_eq!(t.form["grant_type"], "authorization_code");
    let verifier = t
        .form
        .get("code_verifier")
        .expect("PKCE code_verifier sent");
    assert_eq!(
        t.code_challenge.as_deref(),
        Some(p["code_challenge"].as_str())
    );
    assert_eq!(s256(verifier), p["code_challenge"], "S256 of the verifier");
    assert!(
        t.basic_client_id.as_deref() == Some(CLIENT_ID)
            || t.form.get("client_id").map(String::as_str) == Some(CLIENT_ID),
        "client authenticated: {t:#?}"
    );

    // The session cookie: HttpOnly, SameSite=Strict, scoped to /console,
    // not Secure on a plain-HTTP admin listener.
    let cookie = s
        .cookie(COOKIE)
        .await
        .unwrap_or_else(|| panic!("no {COOKIE} cookie"));
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["path"], "/console", "{cookie}");
    assert_eq!(cookie["secure"], false, "{cookie}");
    let value = cookie["value"].as_str().unwrap().to_string();
    assert!(value.len() >= 16, "{cookie}");
    assert!(
        !value.contains("reviewer-1"),
        "the cookie is opaque: {cookie}"
    );

    // Every page carries the strict CSP.
    for path in [
        "/console/",
        "/console/chain",
        "/console/patients?patnum=11",
        "/console/records/1",
    ] {
        let resp = c.with_cookie(Method::GET, path, &value).await;
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert_strict_csp(&resp, path);
        assert!(
            resp.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}: {resp:?}"
        );
    }

    // The nav reaches every page.
    s.click(&s.wait_for("#nav-chain").await).await.unwrap();
    s.wait_for("#chain-status").await;
    assert_nav(&s).await;
    shots.take(&s, "chain").await;
    s.click(&s.wait_for("#nav-patients").await).await.unwrap();
    s.wait_for_url("the patients page", |u| u.path() == "/console/patients")
        .await;
    assert_nav(&s).await;
    shots.take(&s, "patients").await;
    s.click(&s.wait_for("#nav-search").await).await.unwrap();
    s.wait_for("form#search").await;

    // A callback that odgw did not start gives no session.
    let forged =
        c.gw.send(
            Request::get(c.url("/console/callback?code=forged&state=forged"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert!(!forged.status.is_success(), "{forged:?}");
    assert!(!sets_session(&forged), "{forged:?}");
    assert_eq!(c.provider.token_calls().len(), 1, "no code was redeemed");
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_search_narrows_results_pages_and_is_audited() {
    let c = Console::start().await;
    let alice = c.gw.token(json!({"sub": "alice", "tenant": "a"}));
    let bob = c.gw.token(json!({"sub": "bob", "tenant": "b"}));
    for path in [
        "/api/v1/patients/11",
        "/api/v1/appointments?PatNum=11",
        "/api/v1/patients/12",
        "/api/v1/patients/110",
        "/api/v1/providers",
    ] {
        c.seed(path, Some(&alice)).await;
    }
    c.seed("/api/v1/operatories", Some(&bob)).await;
    c.seed("/api/v1/patients/13", Some(&bob)).await;
    // A denied request (no token) has no tenant.
    c.seed("/api/v1/providers", None).await;
    // Enough of tenant b for a second page of 50.
    for _ in 0..55 {
        c.seed("/api/v1/providers", Some(&bob)).await;
    }
    let lines = c.lines();
    let by_seq = |seq: u64| lines.iter().find(|l| l["seq"] == seq).unwrap().clone();

    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "search" };
    login(&s, &c, "reviewer-2", &shots).await;

    // Tenant: 57 records of b, over two pages.
    let want_b = c.seqs(|l| l["tenant"] == "b");
    assert_eq!(want_b.len(), 57);
    let page1 = search(&s, &c, &[("tenant", "b")], &shots, "tenant-b").await;
    assert_eq!(seqs_of(&page1), want_b[..50], "first page: the 50 oldest");
    for row in &page1 {
        let line = by_seq(row.seq);
        assert_eq!(row.tenant, "b");
        assert_eq!(row.path, line["path"].as_str().unwrap(), "{row:?}");
        assert_eq!(row.subject, line["subject"].as_str().unwrap(), "{row:?}");
        assert_eq!(row.outcome, line["outcome"].as_str().unwrap(), "{row:?}");
        assert_eq!(row.status, line["status"].to_string(), "{row:?}");
    }
    let next = s.wait_for("#next-page").await;
    let href = s.prop(&next, "href").await;
    let href = url::Url::parse(href.as_str().unwrap()).unwrap();
    assert!(
        href.query_pairs()
            .any(|(k, v)| k == "after_seq" && v == want_b[49].to_string()),
        "{href}"
    );
    assert!(
        href.query_pairs().any(|(k, v)| k == "tenant" && v == "b"),
        "the next page keeps the filter: {href}"
    );
    s.click(&next).await.unwrap();
    s.wait_for_url("page 2", |u| u.query_pairs().any(|(k, _)| k == "after_seq"))
        .await;
    s.wait_for("#results").await;
    shots.take(&s, "tenant-b-page-2").await;
    let page2 = rows(&s).await;
    assert_eq!(seqs_of(&page2), want_b[50..], "second page: the rest");
    assert!(s.find("#next-page").await.is_none(), "no third page");

    // Path prefix.
    let want = c.seqs(|l| {
        l["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/api/v1/appointments"))
    });
    assert_eq!(want.len(), 1);
    let got = search(&s, &c, &[("path", "/api/v1/appointments")], &shots, "path").await;
    assert_eq!(seqs_of(&got), want);

    // Patient 11, by path or by query; not 110, not 12.
    let want = c.seqs(|l| is_patient(l, "11"));
    assert_eq!(want.len(), 2);
    let got = search(&s, &c, &[("patient", "11")], &shots, "patient-11").await;
    assert_eq!(seqs_of(&got), want);

    // Outcome.
    let want = c.seqs(|l| l["outcome"] == "denied");
    assert!(!want.is_empty());
    let got = search(&s, &c, &[("outcome", "denied")], &shots, "outcome-denied").await;
    assert_eq!(seqs_of(&got), want);
    assert!(got.iter().all(|r| r.outcome == "denied"));

    // Subject and status together.
    let want = c.seqs(|l| l["subject"] == "alice" && l["status"] == 404);
    assert_eq!(want.len(), 1, "patient 12 does not exist");
    let got = search(
        &s,
        &c,
        &[("subject", "alice"), ("status", "404")],
        &shots,
        "alice-404",
    )
    .await;
    assert_eq!(seqs_of(&got), want);

    // Time range, from the URL the form would produce.
    let since = by_seq(want_b[0])["ts"].as_str().unwrap().to_string();
    let until = by_seq(want_b[10])["ts"].as_str().unwrap().to_string();
    let want = c.seqs(|l| {
        let ts = l["ts"].as_str().unwrap();
        ts >= since.as_str() && ts <= until.as_str()
    });
    let mut range = url::Url::parse(&c.url("/console/")).unwrap();
    range
        .query_pairs_mut()
        .append_pair("since", &since)
        .append_pair("until", &until);
    s.goto(range.as_str()).await;
    s.wait_for("#results").await;
    shots.take(&s, "time-range").await;
    assert_eq!(seqs_of(&rows(&s).await), want);

    // Record detail, from a result's link.
    search(&s, &c, &[("patient", "11")], &shots, "patient-11-again").await;
    let first = s.wait_for("#results tr.record a.seq").await;
    s.click(&first).await.unwrap();
    let record_seq = c.seqs(|l| is_patient(l, "11"))[0];
    s.wait_for_url("the record page", |u| {
        u.path() == format!("/console/records/{record_seq}")
    })
    .await;
    let dl = s.wait_for("dl#record").await;
    assert_eq!(
        s.text(&s.find_in(&dl, "dd.field-path").await.unwrap())
            .await,
        "/api/v1/patients/11"
    );
    assert_nav(&s).await;
    shots.take(&s, "record").await;

    // The patient access report.
    s.goto(&c.url("/console/patients?patnum=11")).await;
    s.wait_for("table#patient-report").await;
    shots.take(&s, "patients-11").await;
    assert_eq!(
        s.find_all("table#patient-report tr.access").await.len(),
        2,
        "patient 11's two accesses"
    );

    // The chart is an SVG image the page's own CSP lets load.
    s.goto(&c.url("/console/")).await;
    let chart = s.wait_for("img#chart").await;
    let src = s.attr(&chart, "src").await.unwrap();
    assert!(src.starts_with("/console/chart.svg"), "{src}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.prop(&chart, "complete").await != true {
        assert!(tokio::time::Instant::now() < deadline, "chart never loaded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let width = s.prop(&chart, "naturalWidth").await.as_u64().unwrap_or(0);
    assert!(width > 0, "the chart did not render (blocked or broken)");
    let cookie = session_cookie(&s).await;
    let svg = c
        .with_cookie(Method::GET, &format!("http://{}{src}", c.gw.admin), &cookie)
        .await;
    assert_eq!(svg.status, 200);
    assert!(
        svg.header("content-type")
            .is_some_and(|t| t.starts_with("image/svg+xml")),
        "{svg:?}"
    );
    assert!(String::from_utf8_lossy(&svg.body).contains("<svg"));
    let no_cookie =
        c.gw.send(
            Request::get(format!("http://{}{src}", c.gw.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert!(!no_cookie.status.is_success(), "chart without a session");

    // Each search and view above is an audit.view record of this reviewer.
    assert_console_records(&c, "audit.view", "reviewer-2", 10);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_export_equals_the_cli_output_and_is_audited() {
    let c = Console::start().await;
    let alice = c.gw.token(json!({"sub": "alice", "tenant": "a"}));
    let carol = c.gw.token(json!({"sub": "carol", "tenant": "a"}));
    let bob = c.gw.token(json!({"sub": "bob", "tenant": "b"}));
    c.seed("/api/v1/patients/11", Some(&alice)).await;
    c.seed("/api/v1/appointments?PatNum=11", Some(&carol)).await;
    c.seed("/api/v1/providers", Some(&bob)).await;
    let middle = c.seed("/api/v1/patients/13", Some(&alice)).await;
    c.seed("/api/v1/patients/12", Some(&carol)).await;
    c.seed("/api/v1/operatories", Some(&alice)).await;
    let since = c.lines().iter().find(|l| l["seq"] == middle).unwrap()["ts"]
        .as_str()
        .unwrap()
        .to_string();

    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "export" };
    login(&s, &c, "reviewer-3", &shots).await;
    let cookie = session_cookie(&s).await;

    let export = |css: &'static str| {
        let s = &s;
        async move {
            let link = s.wait_for(css).await;
            let href = s.prop(&link, "href").await;
            href.as_str().unwrap().to_string()
        }
    };
    // Each filter is also the CLI's flag of the same name.
    let cases = [
        (vec![("tenant", "a")], "tenant-a"),
        (
            vec![("tenant", "a"), ("subject", "carol")],
            "tenant-a-carol",
        ),
        (vec![("tenant", "a"), ("since", since.as_str())], "since"),
    ];
    let mut exports = 0;
    for (fields, name) in &cases {
        let fields = fields.as_slice();
        let cli_args: Vec<String> = fields
            .iter()
            .flat_map(|(k, v)| [format!("--{k}"), v.to_string()])
            .collect();
        if fields.iter().any(|(k, _)| *k == "since") {
            // Time inputs are typed by hand differently per browser; use the URL.
            let mut u = url::Url::parse(&c.url("/console/")).unwrap();
            for (k, v) in fields {
                u.query_pairs_mut().append_pair(k, v);
            }
            s.goto(u.as_str()).await;
            s.wait_for("#results").await;
            shots.take(&s, name).await;
        } else {
            search(&s, &c, fields, &shots, name).await;
        }
        for (css, format) in [("#export-csv", "csv"), ("#export-jsonl", "jsonl")] {
            let href = export(css).await;
            let parsed = url::Url::parse(&href).unwrap();
            assert_eq!(parsed.path(), format!("/console/export.{format}"), "{href}");
            for (k, v) in fields {
                assert!(
                    parsed.query_pairs().any(|(pk, pv)| pk == *k && pv == *v),
                    "{css} carries {k}={v}: {href}"
                );
            }
            let got = c.with_cookie(Method::GET, &href, &cookie).await;
            assert_eq!(got.status, 200, "{href}: {got:?}");
            // The export's own record carries the id the response names.
            let id = got.header("x-request-id").expect("X-Request-Id").to_owned();
            let recorded = audit_lines(&c.gw.root.join("audit"));
            assert!(
                recorded
                    .iter()
                    .any(|r| r["action"] == "audit.export" && r["request_id"] == id.as_str()),
                "no audit.export record with request id {id}"
            );
            exports += 1;
            let mut args = vec!["--format", format];
            args.extend(cli_args.iter().map(String::as_str));
            let want = cli_query(&c.gw, &args).await;
            assert!(!want.is_empty());
            if got.body != want {
                panic!(
                    "{name} {format}: the console export differs from `odgw audit query {}`\n\
                     --- console ({} bytes)\n{}\n--- cli ({} bytes)\n{}",
                    args.join(" "),
                    got.body.len(),
                    String::from_utf8_lossy(&got.body),
                    want.len(),
                    String::from_utf8_lossy(&want)
                );
            }
            // Without the session, no export.
            let anonymous =
                c.gw.send(Request::get(&href).body(Full::default()).unwrap())
                    .await;
            assert!(!anonymous.status.is_success(), "{href}: {anonymous:?}");
            assert!(anonymous.body != want);
        }
    }
    assert_console_records(&c, "audit.export", "reviewer-3", exports);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_chain_page_shows_the_first_bad_seq_of_a_tampered_segment() {
    let c = Console::start().await;
    let alice = c.gw.token(json!({"sub": "alice", "tenant": "a"}));
    c.seed("/api/v1/patients/11", Some(&alice)).await;
    let victim = c.seed("/api/v1/patients/12", Some(&alice)).await;
    c.seed("/api/v1/patients/13", Some(&alice)).await;

    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "chain" };
    login(&s, &c, "reviewer-4", &shots).await;
    s.click(&s.wait_for("#nav-chain").await).await.unwrap();
    let status = s.wait_for("p#chain-status").await;
    shots.take(&s, "ok").await;
    assert_eq!(s.attr(&status, "data-ok").await.as_deref(), Some("true"));
    assert_eq!(
        s.attr(&status, "data-first-bad-seq")
            .await
            .unwrap_or_default(),
        ""
    );

    let segment = tamper(
        &c.gw.root.join("audit"),
        victim,
        "\"/api/v1/patients/12\"",
        "\"/api/v1/patients/19\"",
    );
    s.goto(&c.url("/console/chain")).await;
    let status = s.wait_for("p#chain-status").await;
    shots.take(&s, "tampered").await;
    assert_eq!(
        s.attr(&status, "data-ok").await.as_deref(),
        Some("false"),
        "tampered {}",
        segment.display()
    );
    assert_eq!(
        s.attr(&status, "data-first-bad-seq").await,
        Some(victim.to_string())
    );
    assert!(
        s.text(&status).await.contains(&victim.to_string()),
        "the status names the seq"
    );
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_reviewer_session_cannot_put_a_tenant() {
    let c = Console::start().await;
    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "readonly" };
    login(&s, &c, "reviewer-5", &shots).await;
    let cookie = session_cookie(&s).await;
    let tenants_before = c.gw.admin(Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(tenants_before.status, 200);
    let admin_records = |c: &Console| {
        c.lines()
            .into_iter()
            .filter(|l| {
                l["kind"] == "admin"
                    && l["action"]
                        .as_str()
                        .is_some_and(|a| !a.starts_with("audit."))
            })
            .count()
    };
    let changes_before = admin_records(&c);

    // The admin API takes the admin token only: a session cookie, or the
    // session sent as a bearer token, is refused.
    let attempts: [(Method, &str, Option<Value>); 7] = [
        (
            Method::PUT,
            "/admin/v1/tenants/x",
            Some(json!({"customer_key": "custKeyXray0003"})),
        ),
        (
            Method::PUT,
            "/admin/v1/tenants/a",
            Some(json!({"customer_key": "custKeyXray0003"})),
        ),
        (Method::POST, "/admin/v1/tenants/a/disable", None),
        (Method::DELETE, "/admin/v1/tenants/b", None),
        (Method::DELETE, "/admin/v1/cache", None),
        (Method::POST, "/admin/v1/reload", None),
        (Method::GET, "/admin/v1/tenants", None),
    ];
    for (method, path, body) in attempts {
        for bearer in [false, true] {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(c.url(path))
                .header("cookie", format!("{COOKIE}={cookie}"));
            if bearer {
                b = b.header("authorization", format!("Bearer {cookie}"));
            }
            if body.is_some() {
                b = b.header("content-type", "application/json");
            }
            let payload = body
                .as_ref()
                .map(|v| Bytes::from(v.to_string()))
                .unwrap_or_default();
            let resp = c.gw.send(b.body(Full::new(payload)).unwrap()).await;
            resp.assert_problem(401, "unauthorized");
        }
    }

    // No console route changes anything either.
    for method in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
        for path in [
            "/console/",
            "/console/tenants/x",
            "/console/tenants",
            "/console/admin/v1/tenants/x",
            "/console/records/1",
            "/console/cache",
        ] {
            let resp = c.with_cookie(method.clone(), path, &cookie).await;
            assert!(
                !resp.status.is_success(),
                "{method} {path} with a reviewer session: {resp:?}"
            );
        }
    }
    let tenants_after = c.gw.admin(Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(
        tenants_before.json(),
        tenants_after.json(),
        "tenants unchanged"
    );
    assert_eq!(
        admin_records(&c),
        changes_before,
        "no admin change recorded"
    );
    let alice = c.gw.token(json!({"sub": "alice", "tenant": "a"}));
    assert_eq!(
        c.gw.get("/api/v1/patients/11", Some(&alice)).await.status,
        200
    );

    // And no page offers a form that writes, other than logout.
    for (path, css, page) in [
        ("/console/", "form#search", "search"),
        ("/console/records/1", "dl#record", "record"),
        ("/console/chain", "#chain-status", "chain"),
        ("/console/patients?patnum=11", "#patient-report", "patients"),
    ] {
        s.goto(&c.url(path)).await;
        s.wait_for(css).await;
        assert_nav(&s).await;
        assert_only_logout_posts(&s, page).await;
        shots.take(&s, page).await;
    }
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_renders_hostile_paths_and_subjects_as_text() {
    let c = Console::start().await;
    // The path as a client can send it: '<', '>' and '"' are not URI
    // characters, so they arrive percent-encoded and are recorded so.
    let path = "/api/v1/patients/%3Cscript%3Ealert(1)%3C/script%3E\
                %22%3E%3Cimg%20src=x%20onerror=alert(2)%3E";
    let decoded = "/api/v1/patients/<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
    // The subject is the token's own string, recorded as is.
    let subject = "<script>alert(3)</script>\"><img src=x onerror=alert(4)>";
    let alice = c.gw.token(json!({"sub": "alice", "tenant": "a"}));
    let hostile = c.gw.token(json!({"sub": subject, "tenant": "a"}));
    let path_seq = c.seed(path, Some(&alice)).await;
    let subject_seq = c.seed("/api/v1/providers", Some(&hostile)).await;
    let lines = c.lines();
    let line = |seq: u64| lines.iter().find(|l| l["seq"] == seq).unwrap().clone();
    assert_eq!(
        line(path_seq)["path"],
        path,
        "the path reached the audit trail"
    );
    assert_eq!(line(subject_seq)["subject"], subject);

    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "xss" };
    login(&s, &c, "reviewer-6", &shots).await;

    let got = search(&s, &c, &[("tenant", "a")], &shots, "results").await;
    assert_inert(&s, "results").await;
    let row = got.iter().find(|r| r.seq == path_seq).expect("path row");
    assert!(
        row.path == path || row.path == decoded,
        "the path is shown as its text: {:?}",
        row.path
    );
    let row = got
        .iter()
        .find(|r| r.seq == subject_seq)
        .expect("subject row");
    assert_eq!(row.subject, subject, "the subject is shown as its text");

    // The hostile subject typed into the filter comes back as text too.
    let got = search(&s, &c, &[("subject", subject)], &shots, "reflected").await;
    assert_inert(&s, "reflected").await;
    assert_eq!(seqs_of(&got), vec![subject_seq]);
    let input = s.find("form#search [name=\"subject\"]").await.unwrap();
    let value = s.prop(&input, "value").await;
    assert!(
        value == subject || value == "",
        "the subject input holds the filter as text: {value}"
    );

    for (seq, class, shown, page) in [
        (
            path_seq,
            "dd.field-path",
            vec![path, decoded],
            "record-path",
        ),
        (
            subject_seq,
            "dd.field-subject",
            vec![subject],
            "record-subject",
        ),
    ] {
        s.goto(&c.url(&format!("/console/records/{seq}"))).await;
        let dl = s.wait_for("dl#record").await;
        shots.take(&s, page).await;
        assert_inert(&s, page).await;
        let dd = s
            .find_in(&dl, class)
            .await
            .unwrap_or_else(|| panic!("{page}: no {class}"));
        let text = s.text(&dd).await;
        assert!(
            shown.contains(&text.as_str()),
            "{page}: {class} shows {text:?}"
        );
    }
    s.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_refuses_a_user_without_the_reviewer_scope() {
    let c = Console::start().await;
    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "no-scope" };
    s.goto(&c.url("/console/")).await;
    let user = s.wait_for("#username").await;
    shots.take(&s, "provider-login").await;
    s.type_text(&user, "no-audit-carol").await;
    s.click(&s.wait_for("#login").await).await.unwrap();
    s.wait_for_url("the callback", |u| u.path() == "/console/callback")
        .await;
    shots.take(&s, "refused").await;
    let text = s.body_text().await;
    let lower = text.to_lowercase();
    assert!(
        lower.contains("odgw:audit") || lower.contains("reviewer"),
        "the page says why: {text}"
    );
    assert!(s.find("#continue").await.is_none(), "{text}");
    assert!(s.find("form#search").await.is_none(), "{text}");
    assert_eq!(s.cookie(COOKIE).await, None, "no session cookie");
    // The provider did issue tokens: the refusal is odgw's.
    let tokens = c.provider.token_calls();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].refused, None);
    // Still no session: /console/ leads to the provider again.
    s.goto(&c.url("/console/")).await;
    s.wait_for("#username").await;
    shots.take(&s, "back-to-login").await;
    s.close().await;

    // The status a browser does not show: 403, and no cookie.
    let refused = login_without_browser(&c, "no-audit-dave").await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(!sets_session(&refused), "{refused:?}");
    assert_strict_csp(&refused, "the refusal page");
    // The same flow for a reviewer does give a working session.
    let accepted = login_without_browser(&c, "reviewer-7").await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    assert!(sets_session(&accepted), "{accepted:?}");
    let session = set_cookies(&accepted)
        .into_iter()
        .find_map(|c| c.strip_prefix(&format!("{COOKIE}=")).map(str::to_owned))
        .unwrap();
    let search_page = c.with_cookie(Method::GET, "/console/", &session).await;
    assert_eq!(search_page.status, 200);
    assert!(c.console_records("audit.view", "no-audit-carol").is_empty());
    assert!(c.console_records("audit.view", "no-audit-dave").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn console_logout_needs_the_csrf_token_and_ends_the_session() {
    let c = Console::start().await;
    let driver = Driver::start().await;
    let s = driver.session().await;
    let shots = Shots { test: "logout" };
    login(&s, &c, "reviewer-8", &shots).await;
    let cookie = session_cookie(&s).await;
    let form = s.wait_for("form#logout").await;
    assert_eq!(s.attr(&form, "method").await.as_deref(), Some("post"));
    let csrf_input = s
        .find_in(&form, "input[type=\"hidden\"][name=\"csrf\"]")
        .await
        .expect("a hidden csrf input");
    let csrf = s.attr(&csrf_input, "value").await.unwrap_or_default();
    assert!(csrf.len() >= 16, "csrf token {csrf:?}");
    assert!(!cookie.contains(&csrf), "the CSRF token is not the cookie");

    let logout = |cookie: Option<&str>, body: &str| {
        let mut b = Request::post(c.url("/console/logout"))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(v) = cookie {
            b = b.header("cookie", format!("{COOKIE}={v}"));
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        c.gw.send(req)
    };
    let wrong = "A".repeat(csrf.len());
    for (body, what) in [
        (String::new(), "no csrf"),
        ("csrf=".to_string(), "an empty csrf"),
        (format!("csrf={wrong}"), "a wrong csrf"),
    ] {
        let resp = logout(Some(&cookie), &body).await;
        assert_eq!(resp.status, 403, "logout with {what}: {resp:?}");
    }
    // The right token without the session cookie does not log anyone out either.
    let resp = logout(None, &format!("csrf={csrf}")).await;
    assert!(!resp.status.is_success(), "{resp:?}");
    let still = c.with_cookie(Method::GET, "/console/", &cookie).await;
    assert_eq!(still.status, 200, "the refused logouts left the session");

    s.click(&s.wait_for("#logout-submit").await).await.unwrap();
    s.wait_for_url("away from the search page", |u| {
        u.path() != "/console/" || u.query().is_some()
    })
    .await;
    shots.take(&s, "logged-out").await;
    assert!(
        s.cookie(COOKIE).await.is_none_or(|c| c["value"] == ""),
        "the session cookie is cleared"
    );
    s.goto(&c.url("/console/")).await;
    s.wait_for("#username").await;
    let at = s.current_url().await;
    assert_eq!(
        at.port(),
        Some(c.provider.addr.port()),
        "back at the provider"
    );
    shots.take(&s, "login-again").await;
    s.close().await;
}

// ---------------------------------------------------------------------------
// The harness itself: provider, WebDriver client and chromedriver.

/// The fake provider's login form works in the browser, and its token
/// endpoint enforces PKCE and one-time codes, so a console that passes the
/// tests below really did the flow.
#[tokio::test(flavor = "multi_thread")]
async fn harness_provider_login_form_and_pkce_checks() {
    let provider = OidcProvider::start(CLIENT_ID, "harness-secret").await;
    // A stand-in relying party that only shows what it was sent.
    let rp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rp_addr = rp.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::get(
            |q: axum::extract::Query<std::collections::BTreeMap<String, String>>| async move {
                axum::response::Html(format!(
                    "<p id=\"code\">{}</p><p id=\"state\">{}</p>",
                    q.get("code").cloned().unwrap_or_default(),
                    q.get("state").cloned().unwrap_or_default()
                ))
            },
        ),
    );
    tokio::spawn(async move { axum::serve(rp, app).await });
    let redirect = format!("http://{rp_addr}/cb");
    provider.allow_redirect_uri(&redirect);

    let verifier = "harness-verifier-0123456789-0123456789-0123456789";
    let mut authorize = url::Url::parse(&format!("{}/authorize", provider.issuer())).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid odgw:audit")
        .append_pair("state", "st-1")
        .append_pair("nonce", "n-1")
        .append_pair("code_challenge", &s256(verifier))
        .append_pair("code_challenge_method", "S256");

    let driver = Driver::start().await;
    let shots = Shots { test: "harness" };
    let code = provider_code(&driver, &authorize, &shots, "1").await;

    let token = |form: Vec<(&str, String)>, basic: bool| {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &form {
            body.append_pair(k, v);
        }
        let mut req = Request::post(format!("{}/token", provider.issuer()))
            .header("content-type", "application/x-www-form-urlencoded");
        if basic {
            use base64::Engine as _;
            req = req.header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{CLIENT_ID}:harness-secret"))
                ),
            );
        }
        let req = req.body(Full::new(Bytes::from(body.finish()))).unwrap();
        async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let form = |verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", redirect.clone()),
            ("code_verifier", verifier.to_string()),
        ]
    };
    // A wrong verifier is refused, and burns the code.
    let (status, body) = token(
        form("wrong-verifier-0123456789-0123456789-0123456789"),
        true,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = token(form(verifier), true).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "code is one-time"
    );

    // A fresh code with the right verifier (client_secret_post this time).
    let code = provider_code(&driver, &authorize, &shots, "2").await;
    let mut post = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", redirect.clone()),
        ("code_verifier", verifier.to_string()),
    ];
    post.push(("client_id", CLIENT_ID.to_string()));
    post.push(("client_secret", "harness-secret".to_string()));
    let (status, body) = token(post, false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let id_token = body["id_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("k1"));
    let key =
        jsonwebtoken::DecodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.pub.pem")).unwrap())
            .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[provider.issuer()]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "harness-user");
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["scope"], "openid odgw:audit");

    let calls = provider.token_calls();
    assert_eq!(calls.len(), 3);
    assert!(calls[0].refused.is_some() && calls[1].refused.is_some());
    assert_eq!(calls[2].refused, None);
    assert_eq!(calls[2].form["client_secret"], "[redacted]");
    assert_eq!(
        calls[2].code_challenge.as_deref(),
        Some(s256(verifier).as_str())
    );
}

/// Signs in at the provider in a new browser session and returns the code
/// the stand-in relying party was sent.
async fn provider_code(driver: &Driver, authorize: &url::Url, shots: &Shots, page: &str) -> String {
    let s = driver.session().await;
    s.goto(authorize.as_str()).await;
    let user = s.wait_for("#username").await;
    if page == "1" {
        shots.take(&s, "provider-login").await;
    }
    s.type_text(&user, "harness-user").await;
    s.click(&s.wait_for("#login").await).await.unwrap();
    let code = s.wait_for("#code").await;
    let code = s.text(&code).await;
    let state = s.find("#state").await.unwrap();
    assert_eq!(s.text(&state).await, "st-1");
    assert_eq!(s.alert_text().await.unwrap_err().error, "no such alert");
    shots.take(&s, &format!("relying-party-{page}")).await;
    s.close().await;
    code
}
