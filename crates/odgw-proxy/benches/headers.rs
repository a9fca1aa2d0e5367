//! The per-request header rewrite, on a realistic 12-header client GET:
//! `strip_hop_by_hop` (what `HopByHop` does first to every request),
//! `upstream_headers` (the allow-list plus `Authorization: ODFHIR …` and
//! `X-Request-Id`, what `Forwarder` sends), and both in sequence as a
//! request goes through the stack.
//!
//! `strip_hop_by_hop` works in place, so each measured call gets its own
//! copy of the client headers, made outside the measured time; in all three
//! the header maps are dropped outside the measured time too.
//!
//! Run with `cargo bench -p odgw-proxy --bench headers`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use odgw_core::{headers::X_REQUEST_ID, RequestId, SecretString};
use odgw_proxy::{strip_hop_by_hop, upstream_headers};

const TENANT_AUTHORIZATION: &str = "ODFHIR NFF6i0KrXrxDkZHt/VzkmZEaUWOjnQX2z";
const USER_AGENT: &str = "practice-app/2.3.1 (Windows NT 10.0; Win64; x64)";
const REQUEST_ID: &str = "9b2f6c1e-4d7a-4f0e-9a53-0c8e2d61b7aa";

/// A bearer token of realistic size (an RS256 JWT with a dozen claims is
/// about 800 bytes); only its shape matters here, nothing verifies it.
fn bearer() -> String {
    let header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0";
    let payload: String = "eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS8iLCJzdWIiOiJhbGljZSJ9"
        .chars()
        .cycle()
        .take(400)
        .collect();
    let signature: String = "Qm9ndXNTaWduYXR1cmVCeXRlc18tMDEyMzQ1Njc4OQ"
        .chars()
        .cycle()
        .take(342)
        .collect();
    format!("Bearer {header}.{payload}.{signature}")
}

/// What a practice application sends through a keep-alive connection.
fn client_headers() -> HeaderMap {
    let bearer = bearer();
    let pairs: [(&str, &str); 12] = [
        ("host", "gateway.example.com"),
        ("user-agent", USER_AGENT),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-US,en;q=0.9"),
        ("authorization", &bearer),
        ("connection", "keep-alive"),
        ("x-request-id", REQUEST_ID),
        ("odgw-tenant", "practice-1"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("cache-control", "no-cache"),
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    assert_eq!(headers.len(), 12);
    headers
}

fn sorted_names(headers: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    names
}

/// Fails the bench unless `out` is exactly what should go upstream.
fn check_upstream(out: &HeaderMap, request_id: &RequestId) {
    assert_eq!(
        sorted_names(out),
        [
            "accept",
            "authorization",
            "content-type",
            "user-agent",
            "x-request-id"
        ]
    );
    assert_eq!(out["accept"], "application/json");
    assert_eq!(out["content-type"], "application/json");
    assert_eq!(out["user-agent"], USER_AGENT);
    assert_eq!(out["authorization"], TENANT_AUTHORIZATION);
    assert!(out["authorization"].is_sensitive());
    assert_eq!(out[X_REQUEST_ID], request_id.as_str());
}

fn headers(c: &mut Criterion) {
    let client = client_headers();
    let authorization = SecretString::new(TENANT_AUTHORIZATION);
    // The gateway keeps a well-formed client id (an outer layer does this).
    let request_id = RequestId::from_client(client.get(X_REQUEST_ID));
    assert_eq!(request_id.as_str(), REQUEST_ID);

    let mut stripped = client.clone();
    strip_hop_by_hop(&mut stripped);
    assert_eq!(stripped.len(), 11);
    assert!(stripped.get("connection").is_none());
    assert!(stripped.get("authorization").is_some());
    check_upstream(
        &upstream_headers(&stripped, &authorization, &request_id),
        &request_id,
    );

    let mut group = c.benchmark_group("headers");
    group.bench_function("strip_hop_by_hop", |b| {
        b.iter_batched_ref(
            || client.clone(),
            |headers| strip_hop_by_hop(black_box(headers)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("upstream_headers", |b| {
        b.iter_batched(
            || (),
            |()| {
                upstream_headers(
                    black_box(&stripped),
                    black_box(&authorization),
                    black_box(&request_id),
                )
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("rewrite", |b| {
        b.iter_batched_ref(
            || client.clone(),
            |headers| {
                strip_hop_by_hop(black_box(headers));
                upstream_headers(headers, black_box(&authorization), &request_id)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
