//! `headers`: the request-header sanitizer, in the order the stack runs it:
//! [`odgw_proxy::strip_hop_by_hop`] (outermost layer), the request id taken
//! from what is left (request context), then [`odgw_proxy::upstream_headers`]
//! (forwarder).
//!
//! Input: the first line is the tenant's `Authorization` value; every other
//! line is `name:value` (lines that do not make a valid header are skipped).
//!
//! Properties, for every input:
//! - after stripping: no hop-by-hop header and no header named in any
//!   `Connection` header is left; every other header is kept with all its
//!   values in order; stripping twice changes nothing;
//! - upstream gets only the allow-list (`Accept`, `Content-Type`,
//!   `Content-Length`, `User-Agent`) plus odgw's `Authorization` and
//!   `X-Request-Id`;
//! - exactly one `Authorization`, equal to the tenant's value and marked
//!   sensitive (none if that value cannot be a header value); the client's
//!   own `Authorization` never goes upstream;
//! - exactly one `X-Request-Id`: the surviving client id or a fresh UUID,
//!   never a value the client hid behind `Connection`;
//! - exactly one `Content-Type` (the client's first, else
//!   `application/json`); `Accept` values unchanged and in order; at most one
//!   `User-Agent` and `Content-Length`, and the latter only when the client
//!   sent exactly one all-digit value;
//! - a header named in `Connection` is absent upstream, unless odgw sets
//!   that header itself (then it carries odgw's value, not the client's).

use http::{header, HeaderMap, HeaderName, HeaderValue};
use odgw_core::{headers::X_REQUEST_ID, RequestId, SecretString};
use odgw_proxy::{strip_hop_by_hop, upstream_headers};

use super::input::Input;

/// RFC 9110 §7.6.1 plus the de-facto ones: never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// What may reach Open Dental.
const UPSTREAM_ALLOWED: [&str; 6] = [
    "accept",
    "content-type",
    "content-length",
    "user-agent",
    "authorization",
    "x-request-id",
];

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let tenant = SecretString::new(input.text(b'\n'));
    let mut client = HeaderMap::new();
    while !input.is_empty() {
        let line = input.field(b'\n');
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            client.append(name, value);
        }
    }

    let original = client.clone();
    strip_hop_by_hop(&mut client);
    let stripped = client;
    let named = connection_named(&original);
    check_stripped(&original, &stripped, &named);

    let request_id = RequestId::from_client(stripped.get(X_REQUEST_ID));
    let upstream = upstream_headers(&stripped, &tenant, &request_id);
    check_upstream(&original, &stripped, &named, &tenant, &upstream);
}

/// Every name listed in any `Connection` header of the client's request.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect()
}

fn values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Vec<&'a HeaderValue> {
    headers.get_all(name).iter().collect()
}

fn check_stripped(original: &HeaderMap, stripped: &HeaderMap, named: &[HeaderName]) {
    for name in HOP_BY_HOP {
        assert!(
            !stripped.contains_key(name),
            "hop-by-hop {name} survived stripping"
        );
    }
    for name in named {
        assert!(
            !stripped.contains_key(name),
            "{name} was named in Connection but survived stripping"
        );
    }
    for name in original.keys() {
        let removable = named.contains(name) || HOP_BY_HOP.contains(&name.as_str());
        if !removable {
            assert_eq!(
                values(original, name),
                values(stripped, name),
                "stripping changed {name}, which is neither hop-by-hop nor named"
            );
        }
    }
    for name in stripped.keys() {
        assert!(original.contains_key(name), "stripping added {name}");
    }
    let mut twice = stripped.clone();
    strip_hop_by_hop(&mut twice);
    assert_eq!(&twice, stripped, "stripping is not idempotent");
}

fn check_upstream(
    original: &HeaderMap,
    stripped: &HeaderMap,
    named: &[HeaderName],
    tenant: &SecretString,
    upstream: &HeaderMap,
) {
    for name in upstream.keys() {
        assert!(
            UPSTREAM_ALLOWED.contains(&name.as_str()),
            "{name} went upstream but is not on the allow-list"
        );
    }

    let authorization = values(upstream, &header::AUTHORIZATION);
    match HeaderValue::from_str(tenant.expose()) {
        Ok(want) => {
            assert_eq!(authorization.len(), 1, "want exactly one Authorization");
            assert_eq!(authorization[0], want, "Authorization is not the tenant's");
            assert!(
                authorization[0].is_sensitive(),
                "Authorization not sensitive"
            );
        }
        Err(_) => assert!(
            authorization.is_empty(),
            "an invalid tenant value produced an Authorization"
        ),
    }

    let ids = values(upstream, &X_REQUEST_ID);
    assert_eq!(ids.len(), 1, "want exactly one X-Request-Id");
    let id = ids[0];
    if stripped.get(X_REQUEST_ID) != Some(id) {
        assert!(
            is_uuid(id.as_bytes()),
            "X-Request-Id {id:?} is neither the client's nor fresh"
        );
    }
    let hidden: Vec<&HeaderValue> = values(original, &X_REQUEST_ID)
        .into_iter()
        .filter(|v| !values(stripped, &X_REQUEST_ID).contains(v))
        .collect();
    assert!(
        !hidden.contains(&id),
        "X-Request-Id uses a value the client hid behind Connection"
    );

    let content_types = values(upstream, &header::CONTENT_TYPE);
    assert_eq!(content_types.len(), 1, "want exactly one Content-Type");
    let want_type = stripped
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    assert_eq!(content_types[0], want_type);

    assert_eq!(
        values(upstream, &header::ACCEPT),
        values(stripped, &header::ACCEPT),
        "Accept values changed"
    );

    let agents = values(upstream, &header::USER_AGENT);
    assert!(agents.len() <= 1);
    assert_eq!(agents.first().copied(), stripped.get(header::USER_AGENT));

    let lengths = values(upstream, &header::CONTENT_LENGTH);
    let client_lengths = values(stripped, &header::CONTENT_LENGTH);
    assert!(lengths.len() <= 1, "several Content-Length upstream");
    let single_digits = match client_lengths.as_slice() {
        [one] => {
            let b = one.as_bytes();
            // Up to 19 digits always fits a u64; longer ones may not.
            (!b.is_empty() && b.iter().all(u8::is_ascii_digit)).then_some(b.len() <= 19)
        }
        _ => None,
    };
    match lengths.first() {
        Some(length) => {
            assert!(single_digits.is_some(), "doubtful Content-Length forwarded");
            assert_eq!(*length, client_lengths[0]);
        }
        None => assert_ne!(
            single_digits,
            Some(true),
            "a single well-formed Content-Length was dropped"
        ),
    }

    // Named in Connection: gone, or replaced by odgw's own value.
    for name in named {
        if *name == header::AUTHORIZATION || *name == X_REQUEST_ID {
            continue; // checked above: odgw's value only
        }
        if *name == header::CONTENT_TYPE {
            assert_eq!(upstream[header::CONTENT_TYPE], "application/json");
            continue;
        }
        assert!(
            !upstream.contains_key(name),
            "{name} was named in Connection but went upstream"
        );
    }
}

/// `8-4-4-4-12` lowercase hex, as `RequestId::generate` makes.
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
