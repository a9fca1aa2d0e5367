//! HTTP helpers for the mock's network tests: a hyper-util client and a raw
//! TCP exchange for what a client library would normalise away.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use odgw_mock::{MockConfig, MockUpstream, RunningMock, TEST_CUSTOMER_KEY, TEST_DEVELOPER_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every network test gives up after this long instead of hanging CI.
pub const BOUND: Duration = Duration::from_secs(20);

pub fn test_auth() -> String {
    format!("ODFHIR {TEST_DEVELOPER_KEY}/{TEST_CUSTOMER_KEY}")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn array(&self) -> Vec<serde_json::Value> {
        match self.json() {
            serde_json::Value::Array(items) => items,
            other => panic!("expected an array, got {other}"),
        }
    }
}

pub struct Harness {
    pub running: RunningMock,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    pub async fn start(config: MockConfig) -> Self {
        let running = MockUpstream::spawn(config).await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Harness { running, client }
    }

    pub fn mock(&self) -> &MockUpstream {
        &self.running.mock
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.running.addr, path_and_query)
    }

    /// Sends a request; `path` is the full path (`/api/v1/...`).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, hyper_util::client::legacy::Error> {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let resp = tokio::time::timeout(BOUND, self.client.request(req))
            .await
            .expect("mock answered within the bound")?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// GET with the public test pair and a JSON Content-Type.
    pub async fn get(&self, path: &str) -> Reply {
        let auth = test_auth();
        self.send(
            Method::GET,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            "",
        )
        .await
        .unwrap()
    }

    /// A JSON body request with the public test pair.
    pub async fn send_json(&self, method: Method, path: &str, body: &str) -> Reply {
        let auth = test_auth();
        self.send(
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
        .unwrap()
    }

    pub async fn short_query(&self, query: &str, sql: &str) -> Reply {
        let body = serde_json::json!({ "SqlCommand": sql }).to_string();
        self.send_json(
            Method::PUT,
            &format!("/api/v1/queries/ShortQuery{query}"),
            &body,
        )
        .await
    }

    /// Writes raw bytes on a fresh connection and reads until the server
    /// closes it (requests should say `Connection: close`).
    pub async fn raw(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(self.running.addr).await?;
        stream.write_all(request).await?;
        let mut out = Vec::new();
        tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
            .await
            .expect("server closed the connection within the bound")?;
        Ok(out)
    }
}
