//! The CLI's client for the admin API (`odgw tenant|cache|audit query`).

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use odgw_core::SecretString;

/// Talks to `/admin/v1/...` with the admin token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: SecretString,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An answer from the admin API.
#[derive(Debug)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub body: hyper::body::Incoming,
}

impl AdminClient {
    pub fn new(base: impl Into<String>, token: SecretString) -> anyhow::Result<Self> {
        odgw_auth::install_crypto_providers();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// Sends one request; non-2xx answers become errors carrying the
    /// problem's `code` and `detail`.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<AdminResponse> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut builder = Request::builder().method(method).uri(&url).header(
            header::AUTHORIZATION,
            format!("Bearer {}", self.token.expose()),
        );
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("bad admin URL")?;
        let response = self
            .client
            .request(request)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            bail!(
                "admin API answered {}: {}",
                status.as_u16(),
                problem_summary(&bytes)
            );
        }
        Ok(AdminResponse { status, body })
    }

    /// Sends a request and reads the whole (small) answer.
    pub async fn send_read(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let response = self.send(method, path_and_query, body).await?;
        let bytes = response
            .body
            .collect()
            .await
            .context("admin API answer was cut off")?
            .to_bytes();
        Ok((response.status, bytes))
    }
}

/// `code: detail` from a problem+json body, or the body's first line.
fn problem_summary(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let code = v.get("code").and_then(|c| c.as_str()).unwrap_or("error");
        let detail = v.get("detail").and_then(|d| d.as_str()).unwrap_or("");
        return format!("{code}: {detail}");
    }
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_problems() {
        let body =
            br#"{"type":"about:blank","status":404,"detail":"no such tenant","code":"not_found"}"#;
        assert_eq!(problem_summary(body), "not_found: no such tenant");
        assert_eq!(problem_summary(b"plain\nmore"), "plain");
    }
}
