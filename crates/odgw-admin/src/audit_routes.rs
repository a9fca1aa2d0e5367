//! `GET /admin/v1/audit` (NDJSON stream) and `GET /admin/v1/audit/verify`.

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, HeaderValue, StatusCode},
    response::IntoResponse,
};
use odgw_core::{ErrorCode, GatewayError, Response};
use serde::Deserialize;

use crate::{json, AppState, Ctx};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    tenant: Option<String>,
    subject: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

/// An RFC 3339 time (or a bare date) from a query parameter.
fn parse_time(
    name: &str,
    value: Option<&str>,
) -> Result<Option<time::OffsetDateTime>, GatewayError> {
    value
        .map(|v| {
            odgw_audit::parse_timestamp(v).map_err(|_| {
                GatewayError::new(
                    ErrorCode::BadRequest,
                    format!("{name} must be an RFC 3339 time such as 2026-11-27T00:00:00Z"),
                )
            })
        })
        .transpose()
}

/// Matching records, oldest first, one JSON object per line. Records are
/// streamed from the segments as they are read, never collected in memory.
pub(crate) async fn query(
    State(state): State<AppState>,
    ctx: Ctx,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return ctx.error(
            ErrorCode::BadRequest,
            "query parameters are tenant, subject, since, until, after_seq, limit",
        );
    };
    let (since, until) = match (
        parse_time("since", params.since.as_deref()),
        parse_time("until", params.until.as_deref()),
    ) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(e), _) | (_, Err(e)) => return e.into_response(&ctx.request_id),
    };
    let q = odgw_audit::Query {
        tenant: params.tenant,
        subject: params.subject,
        since,
        until,
        after_seq: params.after_seq,
        limit: params.limit,
    };
    let dir = state.parts.audit_dir.clone();
    // Segment reading is blocking file I/O: run it on the blocking pool and
    // hand lines to the response body through a bounded channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        for item in odgw_audit::query(&dir, &q) {
            let line = match item {
                Ok(record) => match serde_json::to_vec(&record) {
                    Ok(mut line) => {
                        line.push(b'\n');
                        Ok(line)
                    }
                    Err(e) => Err(std::io::Error::other(e)),
                },
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `{"ok", "records", "first_bad_seq"}` for the whole chain.
pub(crate) async fn verify(State(state): State<AppState>, ctx: Ctx) -> Response {
    let dir = state.parts.audit_dir.clone();
    match tokio::task::spawn_blocking(move || odgw_audit::verify(&dir)).await {
        Ok(Ok(report)) => json(StatusCode::OK, &report),
        Ok(Err(error)) => {
            tracing::error!(%error, "audit verification failed to run");
            ctx.error(
                ErrorCode::Internal,
                "audit verification could not read the segments",
            )
        }
        Err(_) => ctx.error(ErrorCode::Internal, "audit verification failed"),
    }
}
