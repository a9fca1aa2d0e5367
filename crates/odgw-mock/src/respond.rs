//! Building responses without panicking paths.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::config::ErrorBodyStyle;

/// The response type of every mock handler.
pub(crate) type Resp = Response<Full<Bytes>>;

const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

pub(crate) fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON body; the mock's own types always serialize, so a failure is a
/// mock bug and answered 500.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => with_body(status, JSON, body.into()),
        Err(e) => {
            tracing::error!(error = %e, "mock response did not serialize");
            with_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                Bytes::from_static(b"mock serialization error"),
            )
        }
    }
}

/// An error in the configured style: `"message"` as JSON, or plain text.
pub(crate) fn error(style: ErrorBodyStyle, status: StatusCode, message: &str) -> Resp {
    match style {
        ErrorBodyStyle::JsonString => json(status, &message),
        ErrorBodyStyle::PlainText => with_body(status, TEXT, Bytes::from(message.to_owned())),
    }
}

/// An injected fault's body: JSON when it parses as JSON, else plain text.
pub(crate) fn raw(status: StatusCode, body: &str) -> Resp {
    let content_type = if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        JSON
    } else {
        TEXT
    };
    with_body(status, content_type, Bytes::from(body.to_owned()))
}

/// A response with exactly the given headers; invalid names or values are
/// skipped with a warning.
pub(crate) fn custom(status: StatusCode, headers: &[(String, String)], body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    for (name, value) in headers {
        match (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                resp.headers_mut().append(n, v);
            }
            _ => tracing::warn!(header = %name, "injected header is invalid; omitted"),
        }
    }
    resp
}

/// Sets `Retry-After`, skipping (with a warning) a value that is not a valid
/// header value.
pub(crate) fn set_retry_after(resp: &mut Resp, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Err(_) => tracing::warn!("injected Retry-After is not a valid header value; omitted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(resp: Resp) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn error_styles() {
        let json = error(
            ErrorBodyStyle::JsonString,
            StatusCode::NOT_FOUND,
            "Patient not found.",
        );
        assert_eq!(json.headers()[header::CONTENT_TYPE], JSON);
        assert_eq!(body_of(json).await, "\"Patient not found.\"");
        let text = error(
            ErrorBodyStyle::PlainText,
            StatusCode::NOT_FOUND,
            "Patient not found.",
        );
        assert_eq!(text.headers()[header::CONTENT_TYPE], TEXT);
        assert_eq!(body_of(text).await, "Patient not found.");
    }

    #[test]
    fn raw_bodies_pick_a_content_type() {
        assert_eq!(
            raw(StatusCode::BAD_REQUEST, "\"x\"").headers()[header::CONTENT_TYPE],
            JSON
        );
        assert_eq!(
            raw(StatusCode::BAD_REQUEST, "eConnector down").headers()[header::CONTENT_TYPE],
            TEXT
        );
        let mut r = raw(StatusCode::TOO_MANY_REQUESTS, "");
        set_retry_after(&mut r, "bad\nvalue");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        set_retry_after(&mut r, "2");
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
