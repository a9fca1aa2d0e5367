//! One request's way through the mock: record, fault, path, auth, throttle,
//! content checks, resource.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::config::{KeyPair, MockConfig, MAX_BODY_CHARS};
use crate::fault::{Fault, FaultMatch};
use crate::handlers::{self, Call, NO_SUCH_RESOURCE};
use crate::params::Params;
use crate::record::RecordedRequest;
use crate::respond::{self, Resp};
use crate::seed::Database;
use crate::throttle::{Admission, Throttle};
use crate::MockError;

/// Open Dental's 401 text for bad credentials.
pub const INVALID_KEYS: &str =
    "Either the Customer or Developer key is invalid, unassigned, or has been disabled";

/// The API's path prefix; everything else is 404.
const API_PREFIX: &str = "/api/v1/";

/// Bodies are read up to this many bytes: 16.8M characters of UTF-8 can take
/// up to four bytes each, and the character count decides.
const MAX_BODY_BYTES: usize = MAX_BODY_CHARS * 4;

/// State shared by every connection of one mock.
pub(crate) struct Shared {
    pub config: MockConfig,
    pub keys: Mutex<Vec<KeyPair>>,
    pub throttle: Mutex<Throttle>,
    pub faults: Mutex<VecDeque<(FaultMatch, Fault)>>,
    pub log: Mutex<Vec<RecordedRequest>>,
    pub db: Mutex<Database>,
}

/// What the per-connection task knows that a request does not carry.
#[derive(Clone)]
pub(crate) struct ConnContext {
    pub local_addr: SocketAddr,
    /// Becomes true when the server shuts down; hung requests end then.
    pub stop: watch::Receiver<bool>,
}

/// Locks a mutex; a panic in another holder cannot leave these values
/// half-updated in a way that matters to a test mock, so poison is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resolves once the server shuts down (or is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // Err means the sender was dropped: the server is gone, which counts too.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

enum Body {
    Ok(Bytes),
    TooLarge,
}

impl Shared {
    pub fn new(config: MockConfig) -> Self {
        Shared {
            keys: Mutex::new(config.keys.clone()),
            throttle: Mutex::new(Throttle::new(config.throttle.clone())),
            faults: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            db: Mutex::new(Database::seed()),
            config,
        }
    }

    /// The hyper service body. `Err` makes hyper drop the connection without
    /// a response, which is how `Fault::Reset` is delivered.
    pub async fn handle(
        &self,
        req: hyper::Request<Incoming>,
        ctx: ConnContext,
    ) -> Result<Resp, MockError> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                let chars = std::str::from_utf8(&bytes).map_or(bytes.len(), |s| s.chars().count());
                if chars > MAX_BODY_CHARS {
                    Body::TooLarge
                } else {
                    Body::Ok(bytes)
                }
            }
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Body::TooLarge,
            Err(e) => return Err(MockError::ReadBody(e)),
        };
        let index = self.record(&parts, &body);
        let resp = self.respond(&parts, body, &ctx).await?;
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if let Some(entry) = lock(&self.log).get_mut(index) {
            entry.response_status = resp.status().as_u16();
        }
        Ok(resp)
    }

    fn record(&self, parts: &Parts, body: &Body) -> usize {
        let entry = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: match body {
                Body::Ok(b) => b.clone(),
                Body::TooLarge => Bytes::new(),
            },
            received_at: std::time::Instant::now(),
            customer_key: parse_authorization(&parts.headers)
                .ok()
                .map(|pair| pair.customer_key),
            response_status: 0,
        };
        let mut log = lock(&self.log);
        log.push(entry);
        log.len() - 1
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|(m, _)| m.matches(method, path))?;
        faults.remove(i).map(|(_, f)| f)
    }

    fn error(&self, status: StatusCode, message: &str) -> Resp {
        respond::error(self.config.error_body, status, message)
    }

    async fn respond(
        &self,
        parts: &Parts,
        body: Body,
        ctx: &ConnContext,
    ) -> Result<Resp, MockError> {
        let path = parts.uri.path();
        match self.take_fault(parts.method.as_str(), path) {
            None => {}
            Some(Fault::Status {
                status,
                body,
                retry_after,
            }) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut resp = respond::raw(status, &body);
                if let Some(v) = retry_after {
                    respond::set_retry_after(&mut resp, &v);
                }
                return Ok(resp);
            }
            Some(Fault::Response {
                status,
                headers,
                body,
            }) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Ok(respond::custom(status, &headers, body));
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            Some(Fault::Hang) => {
                stopped(&mut ctx.stop.clone()).await;
                return Err(MockError::ShutDown);
            }
            Some(Fault::Reset) => return Err(MockError::InjectedReset),
        }

        let Some(rest) = path.strip_prefix(API_PREFIX) else {
            return Ok(self.error(StatusCode::NOT_FOUND, NO_SUCH_RESOURCE));
        };

        let customer_key = match self.authenticate(&parts.headers) {
            Ok(key) => key,
            Err((status, message)) => return Ok(self.error(status, message)),
        };

        let admission = lock(&self.throttle).admit(&customer_key, tokio::time::Instant::now());
        match admission {
            Admission::Go => {}
            Admission::Wait(d) => tokio::time::sleep(d).await,
            Admission::Reject(secs) => {
                let mut resp = self.error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests. Please slow down.",
                );
                respond::set_retry_after(&mut resp, &secs.to_string());
                return Ok(resp);
            }
        }

        if self.config.require_json_content_type && !is_json(&parts.headers) {
            return Ok(self.error(
                StatusCode::BAD_REQUEST,
                "Content-Type must be application/json",
            ));
        }
        let body = match body {
            Body::Ok(b) => b,
            Body::TooLarge => {
                return Ok(self.error(
                    StatusCode::BAD_REQUEST,
                    "Request body exceeds the maximum content length of 16.8M characters",
                ))
            }
        };

        let call = Call {
            method: &parts.method,
            segments: rest.split('/').filter(|s| !s.is_empty()).collect(),
            params: Params::parse(parts.uri.query(), self.config.case_insensitive_params),
            body: &body,
            base_url: base_url(parts, ctx.local_addr),
        };
        let mut db = lock(&self.db);
        Ok(handlers::route(&call, &self.config, &mut db))
    }

    /// Checks `Authorization: ODFHIR {dev}/{cust}` against the accepted pairs;
    /// returns the customer key, or the status and message to answer.
    fn authenticate(&self, headers: &HeaderMap) -> Result<String, (StatusCode, &'static str)> {
        let pair = match parse_authorization(headers) {
            Ok(pair) => pair,
            Err(AuthProblem::Missing) => {
                let status = StatusCode::from_u16(self.config.missing_auth_status)
                    .unwrap_or(StatusCode::UNAUTHORIZED);
                let message = if status == StatusCode::UNAUTHORIZED {
                    INVALID_KEYS
                } else {
                    "Missing Authorization header"
                };
                return Err((status, message));
            }
            Err(AuthProblem::Invalid) => return Err((StatusCode::UNAUTHORIZED, INVALID_KEYS)),
        };
        if lock(&self.keys).contains(&pair) {
            Ok(pair.customer_key)
        } else {
            Err((StatusCode::UNAUTHORIZED, INVALID_KEYS))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum AuthProblem {
    Missing,
    Invalid,
}

/// Parses exactly `ODFHIR {dev}/{cust}`: scheme `ODFHIR`, one space, two
/// non-empty keys without whitespace or further `/`. A second
/// `Authorization` header makes the request invalid.
fn parse_authorization(headers: &HeaderMap) -> Result<KeyPair, AuthProblem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthProblem::Missing)?;
    if values.next().is_some() {
        return Err(AuthProblem::Invalid);
    }
    let text = value.to_str().map_err(|_| AuthProblem::Invalid)?;
    let keys = text.strip_prefix("ODFHIR ").ok_or(AuthProblem::Invalid)?;
    let (dev, cust) = keys.split_once('/').ok_or(AuthProblem::Invalid)?;
    let valid =
        |k: &str| !k.is_empty() && !k.contains('/') && !k.chars().any(|c| c.is_whitespace());
    if valid(dev) && valid(cust) {
        Ok(KeyPair::new(dev, cust))
    } else {
        Err(AuthProblem::Invalid)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `http://{authority}/api/v1` as the client addressed the mock.
fn base_url(parts: &Parts, local: SocketAddr) -> String {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| local.to_string());
    format!("http://{host}/api/v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth(values: &[&str]) -> Result<KeyPair, AuthProblem> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        parse_authorization(&h)
    }

    #[test]
    fn only_the_exact_odfhir_form_parses() {
        assert_eq!(auth(&["ODFHIR dev/cust"]), Ok(KeyPair::new("dev", "cust")));
        assert_eq!(auth(&[]), Err(AuthProblem::Missing));
        for bad in [
            "Basic ZGV2OmN1c3Q=",
            "Bearer dev/cust",
            "odfhir dev/cust",
            "ODFHIR  dev/cust",
            "ODFHIR dev",
            "ODFHIR /cust",
            "ODFHIR dev/",
            "ODFHIR dev/cust/x",
            "ODFHIR dev/cu st",
            "ODFHIRdev/cust",
            "",
        ] {
            assert_eq!(auth(&[bad]), Err(AuthProblem::Invalid), "{bad:?}");
        }
        assert_eq!(
            auth(&["ODFHIR dev/cust", "ODFHIR dev/cust"]),
            Err(AuthProblem::Invalid)
        );
    }

    #[test]
    fn json_content_type_allows_parameters() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
