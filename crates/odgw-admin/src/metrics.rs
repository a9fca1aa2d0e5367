//! `GET /metrics`: the gateway's registry in the exposition format the
//! scraper asks for.
//!
//! Without an `Accept` that prefers it (curl, most tools), the answer is the
//! Prometheus text format 0.0.4, as odgw has always served (SPEC §6). A
//! scraper that prefers `application/openmetrics-text` (Prometheus does, by
//! default) gets OpenMetrics 1.0.0 text: the same families and samples,
//! with OpenMetrics' family names (`# TYPE odgw_requests counter` for the
//! samples `odgw_requests_total`), float bucket bounds (`le="10.0"`) and a
//! final `# EOF`.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue},
    response::IntoResponse,
};
use odgw_core::{ErrorCode, Response};
use prometheus_client::{
    encoding::{prometheus_text, text},
    registry::Registry,
};

use crate::{AppState, Ctx};

/// The content type of OpenMetrics 1.0.0 text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The two text formats `/metrics` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Prometheus text 0.0.4, the default.
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` ranks `application/openmetrics-text` above
    /// every range that also covers `text/plain`; Prometheus text otherwise
    /// (ties included, and a missing or unreadable header).
    fn negotiate(accept: Option<&HeaderValue>) -> Self {
        let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
            return Self::Prometheus;
        };
        let (mut openmetrics, mut plain) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or_default().trim();
            let q = params
                .filter_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    (name.trim().eq_ignore_ascii_case("q")).then(|| value.trim().parse().ok())?
                })
                .next()
                .unwrap_or(1.0_f32);
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(q);
            } else if ["text/plain", "text/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
            {
                plain = plain.max(q);
            }
        }
        if openmetrics > 0.0 && openmetrics > plain {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => OPENMETRICS,
        }
    }
}

pub(crate) async fn metrics(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
) -> Response {
    match exposition(&state.parts.metrics, headers.get(header::ACCEPT)) {
        Ok((content_type, body)) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response(),
        Err(_) => {
            // Writing to a String cannot fail; a collector that fails is a bug.
            tracing::error!("metrics could not be encoded");
            ctx.error(ErrorCode::Internal, "metrics could not be encoded")
        }
    }
}

/// The registry encoded in the format `accept` asks for, with its content
/// type.
fn exposition(
    registry: &Registry,
    accept: Option<&HeaderValue>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let format = Format::negotiate(accept);
    let mut body = String::new();
    match format {
        Format::Prometheus => prometheus_text::encode(&mut body, registry)?,
        Format::OpenMetrics => text::encode(&mut body, registry)?,
    }
    Ok((format.content_type(), body))
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    fn negotiate(accept: &str) -> Format {
        Format::negotiate(Some(
            &HeaderValue::from_str(accept).expect("a header value"),
        ))
    }

    #[test]
    fn prometheus_text_unless_openmetrics_is_preferred() {
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(negotiate("*/*"), Format::Prometheus);
        assert_eq!(negotiate("text/plain"), Format::Prometheus);
        assert_eq!(negotiate("application/json"), Format::Prometheus);
        // What Prometheus sends by default.
        assert_eq!(
            negotiate(
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("application/openmetrics-text"),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"),
            Format::Prometheus
        );
        assert_eq!(
            negotiate("application/openmetrics-text;q=0"),
            Format::Prometheus
        );
        assert_eq!(
            negotiate("application/openmetrics-text, text/plain"),
            Format::Prometheus,
            "a tie keeps the default"
        );
    }

    #[test]
    fn each_format_is_served_with_its_content_type() {
        let mut registry = Registry::default();
        let requests: Counter = Counter::default();
        requests.inc();
        registry.register("odgw_requests", "Requests", requests);
        let (content_type, body) = exposition(&registry, None).expect("encodes");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(
            body,
            "# HELP odgw_requests_total Requests.\n\
             # TYPE odgw_requests_total counter\n\
             odgw_requests_total 1\n"
        );
        let accept = HeaderValue::from_static("application/openmetrics-text;version=1.0.0");
        let (content_type, body) = exposition(&registry, Some(&accept)).expect("encodes");
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            body,
            "# HELP odgw_requests Requests.\n\
             # TYPE odgw_requests counter\n\
             odgw_requests_total 1\n\
             # EOF\n"
        );
    }
}
