//! A headless Chromium driven over W3C WebDriver: a chromedriver child
//! started on a port it picks itself, and a small client for the commands
//! the console tests use (navigate, find, click, type, cookies, alerts,
//! screenshots).
//!
//! The browser is required, not optional: when Debian's `chromium` or
//! `chromium-driver` is missing the tests fail saying so (`.ci/run`
//! installs both), because a browser test that skips itself cannot fail.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde_json::{json, Value};
use tokio::time::Instant;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long any one wait (an element, a URL, a driver command) may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Fails the test when the browser or its driver is not installed.
fn require_installed() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the console browser tests need Debian's chromium and \
             chromium-driver (apt-get install chromium chromium-driver; .ci/run installs \
             them). Refusing to skip: a browser test that skips itself cannot fail. \
             (package {package})"
        );
    }
}

/// A chromedriver child; killed (and reaped) on drop.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    port: u16,
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Sessions not yet closed, ended on drop so no browser outlives the test.
    sessions: Mutex<Vec<String>>,
    /// The sessions' fresh profiles, removed after their browsers are gone.
    profiles: Mutex<Vec<tempfile::TempDir>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let open = std::mem::take(&mut *self.sessions.lock().unwrap_or_else(|e| e.into_inner()));
        for id in open {
            delete_session_blocking(self.port, &id);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Only now that no browser writes to them.
        self.profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// `DELETE /session/{id}` without a runtime (drop may run while panicking),
/// bounded by socket timeouts.
fn delete_session_blocking(port: u16, id: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    // Read one response (head and Content-Length body): chromedriver keeps
    // the connection open even when asked to close it.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A WebDriver failure: the W3C `error` code and message, or a transport error.
#[derive(Debug, Clone)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl Driver {
    /// Starts chromedriver on a port of its choosing and waits until it is ready.
    pub async fn start() -> Self {
        require_installed();
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep reading (and discarding) stdout so chromedriver never blocks on it.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(rest.trim_end_matches('.').trim().to_string());
                }
            }
        });
        let port: u16 = match tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
            .await
            .unwrap()
        {
            Ok(port) => port.parse().unwrap(),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromedriver did not report its port within {WAIT:?}: {e}");
            }
        };
        let driver = Self {
            child,
            port,
            sessions: Mutex::new(Vec::new()),
            profiles: Mutex::new(Vec::new()),
            url: format!("http://127.0.0.1:{port}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            match driver.call(Method::GET, "/status", None).await {
                Ok(v) if v["ready"] == true => break,
                other if Instant::now() > deadline => {
                    panic!("chromedriver not ready within {WAIT:?}: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        driver
    }

    /// One WebDriver command; returns the response's `value`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{}", self.url, path));
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json; charset=utf-8");
                Bytes::from(v.to_string())
            }
            None if method == Method::POST => {
                req = req.header("content-type", "application/json; charset=utf-8");
                Bytes::from_static(b"{}")
            }
            None => Bytes::new(),
        };
        let transport = |e: String| WdError {
            error: "transport".into(),
            message: format!("{method} {path}: {e}"),
        };
        let exchange = async {
            let resp = self
                .client
                .request(req.body(Full::new(body)).unwrap())
                .await
                .map_err(|e| transport(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<_, WdError>((status, bytes))
        };
        // Chromedriver's own timeouts are shorter; this only bounds a hang.
        let (status, bytes) = tokio::time::timeout(WAIT * 3, exchange)
            .await
            .map_err(|_| transport("timed out".into()))??;
        let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            transport(format!(
                "{e} in {status} {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        let value = value["value"].take();
        if status.is_success() {
            Ok(value)
        } else {
            Err(WdError {
                error: value["error"].as_str().unwrap_or("unknown error").into(),
                message: value["message"].as_str().unwrap_or_default().into(),
            })
        }
    }

    /// A new headless Chromium with a fresh profile.
    pub async fn session(&self) -> Session<'_> {
        let profile = tempfile::Builder::new()
            .prefix("odgw-chromium-")
            .tempdir()
            .unwrap();
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--window-size=1280,1000",
                            format!("--user-data-dir={}", profile.path().display()),
                        ],
                    },
                },
            },
        });
        let value = self
            .call(Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM} through chromedriver: {e}"));
        let id = value["sessionId"].as_str().unwrap().to_string();
        self.sessions.lock().unwrap().push(id.clone());
        self.profiles.lock().unwrap().push(profile);
        let session = Session { driver: self, id };
        session
            .cmd(
                Method::POST,
                "/timeouts",
                Some(json!({"pageLoad": 30_000, "script": 10_000, "implicit": 0})),
            )
            .await
            .unwrap();
        session
    }
}

/// An element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One browser session. [`Session::close`] ends it; a session still open
/// when its [`Driver`] drops (a failed test) is ended there.
#[derive(Debug)]
pub struct Session<'d> {
    driver: &'d Driver,
    id: String,
}

impl Session<'_> {
    pub async fn cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    /// Navigates and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub async fn current_url(&self) -> url::Url {
        let v = self.cmd(Method::GET, "/url", None).await.unwrap();
        url::Url::parse(v.as_str().unwrap()).unwrap()
    }

    /// The text of the whole page body as rendered.
    pub async fn body_text(&self) -> String {
        match self.find("body").await {
            Some(body) => self.text(&body).await,
            None => String::new(),
        }
    }

    /// The first element matching a CSS selector, if any (no waiting).
    pub async fn find(&self, css: &str) -> Option<Element> {
        let body = json!({"using": "css selector", "value": css});
        match self.cmd(Method::POST, "/element", Some(body)).await {
            Ok(v) => Some(Element(v[ELEMENT_KEY].as_str().unwrap().to_string())),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("find {css}: {e}"),
        }
    }

    /// Every element matching a CSS selector (no waiting).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .cmd(Method::POST, "/elements", Some(body))
            .await
            .unwrap_or_else(|e| panic!("find all {css}: {e}"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| Element(e[ELEMENT_KEY].as_str().unwrap().to_string()))
            .collect()
    }

    /// Every element matching `css` below `parent`.
    pub async fn find_all_in(&self, parent: &Element, css: &str) -> Vec<Element> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .cmd(
                Method::POST,
                &format!("/element/{}/elements", parent.0),
                Some(body),
            )
            .await
            .unwrap_or_else(|e| panic!("find all {css} in element: {e}"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| Element(e[ELEMENT_KEY].as_str().unwrap().to_string()))
            .collect()
    }

    /// The first element matching `css` below `parent`, if any.
    pub async fn find_in(&self, parent: &Element, css: &str) -> Option<Element> {
        self.find_all_in(parent, css).await.into_iter().next()
    }

    /// Waits (bounded by [`WAIT`]) for an element matching `css`; on timeout
    /// fails with the page's URL and text.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            if Instant::now() > deadline {
                let url = self.cmd(Method::GET, "/url", None).await;
                panic!(
                    "no element {css} within {WAIT:?} on {url:?}; page text:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until the current URL satisfies `pred`.
    pub async fn wait_for_url(&self, what: &str, pred: impl Fn(&url::Url) -> bool) -> url::Url {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.current_url().await;
            if pred(&url) {
                return url;
            }
            if Instant::now() > deadline {
                panic!(
                    "URL never became {what} within {WAIT:?} (now {url}); page text:\n{}",
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, e: &Element) -> Result<(), WdError> {
        self.cmd(Method::POST, &format!("/element/{}/click", e.0), None)
            .await
            .map(drop)
    }

    pub async fn clear(&self, e: &Element) {
        self.cmd(Method::POST, &format!("/element/{}/clear", e.0), None)
            .await
            .unwrap();
    }

    /// Types `text` into an element (after focusing it).
    pub async fn type_text(&self, e: &Element, text: &str) {
        self.cmd(
            Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )
        .await
        .unwrap_or_else(|err| panic!("type {text:?}: {err}"));
    }

    /// Chooses the `<option>` with this value inside a `<select>`.
    pub async fn select(&self, select: &Element, value: &str) {
        let css = format!("option[value=\"{value}\"]");
        let option = self
            .find_in(select, &css)
            .await
            .unwrap_or_else(|| panic!("no {css} in the select"));
        self.click(&option).await.unwrap();
    }

    /// The rendered text of an element.
    pub async fn text(&self, e: &Element) -> String {
        let v = self
            .cmd(Method::GET, &format!("/element/{}/text", e.0), None)
            .await
            .unwrap();
        v.as_str().unwrap_or_default().to_string()
    }

    /// An attribute as written in the markup.
    pub async fn attr(&self, e: &Element, name: &str) -> Option<String> {
        let v = self
            .cmd(
                Method::GET,
                &format!("/element/{}/attribute/{name}", e.0),
                None,
            )
            .await
            .unwrap();
        v.as_str().map(str::to_owned)
    }

    /// A DOM property (e.g. `href`, resolved to an absolute URL).
    pub async fn prop(&self, e: &Element, name: &str) -> Value {
        self.cmd(
            Method::GET,
            &format!("/element/{}/property/{name}", e.0),
            None,
        )
        .await
        .unwrap()
    }

    pub async fn tag_name(&self, e: &Element) -> String {
        let v = self
            .cmd(Method::GET, &format!("/element/{}/name", e.0), None)
            .await
            .unwrap();
        v.as_str().unwrap_or_default().to_lowercase()
    }

    /// Every cookie visible to the current page.
    pub async fn cookies(&self) -> Vec<Value> {
        let v = self.cmd(Method::GET, "/cookie", None).await.unwrap();
        v.as_array().cloned().unwrap_or_default()
    }

    pub async fn cookie(&self, name: &str) -> Option<Value> {
        self.cookies().await.into_iter().find(|c| c["name"] == name)
    }

    /// The text of an open alert, confirm or prompt; `Err("no such alert")` when none.
    pub async fn alert_text(&self) -> Result<String, WdError> {
        self.cmd(Method::GET, "/alert/text", None)
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
    }

    /// Saves a PNG of the viewport as `<dir>/<name>.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v = self
            .cmd(Method::GET, "/screenshot", None)
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(
            png.starts_with(b"\x89PNG"),
            "screenshot {name} is not a PNG"
        );
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the session (closes the browser).
    pub async fn close(self) {
        let _ = self
            .driver
            .call(Method::DELETE, &format!("/session/{}", self.id), None)
            .await;
        self.driver
            .sessions
            .lock()
            .unwrap()
            .retain(|s| *s != self.id);
    }
}

/// Where screenshots go: `<target>/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("console-screenshots")
}
