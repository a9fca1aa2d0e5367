//! What goes upstream (SPEC §4): the header allow-list and the target URI.

use http::{header, HeaderMap, HeaderValue, Uri};
use odgw_core::{headers::X_REQUEST_ID, RequestId, SecretString};

use crate::{
    error::{InvalidAuthorization, UpstreamUriError},
    guard::parse_content_length,
};

/// What Open Dental requires on every request (opendental-api.md §2).
const DEFAULT_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json");

/// The headers of the upstream request, built from nothing: the client's
/// `Accept` (every value), `Content-Type` (first value; `application/json`
/// when absent), `Content-Length` (only a single, well-formed value) and
/// `User-Agent` (first value); then odgw's own `Authorization` (the tenant's
/// `ODFHIR` value, marked sensitive) and `X-Request-Id`, overwriting.
///
/// Names are matched exactly, so look-alikes (`X_Forwarded_For`,
/// `content_type`) are dropped with everything else: cookies, `Forwarded`,
/// `X-Forwarded-*`, `Odgw-*`, `Host` (hyper sets it from the URI), and the
/// client's own `Authorization`. Run [`crate::strip_hop_by_hop`] on the client
/// headers first. An `authorization` that is not a valid header value is left
/// out; [`authorization_value`] lets callers refuse that case instead.
pub fn upstream_headers(
    client_headers: &HeaderMap,
    authorization: &SecretString,
    request_id: &RequestId,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(6);
    for value in client_headers.get_all(header::ACCEPT) {
        headers.append(header::ACCEPT, value.clone());
    }
    let content_type = client_headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    headers.insert(header::CONTENT_TYPE, content_type);
    let mut lengths = client_headers.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(length), None) = (lengths.next(), lengths.next()) {
        if parse_content_length(length.as_bytes()).is_some() {
            headers.insert(header::CONTENT_LENGTH, length.clone());
        }
    }
    if let Some(agent) = client_headers.get(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, agent.clone());
    }
    if let Ok(value) = authorization_value(authorization) {
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        headers.insert(X_REQUEST_ID, value);
    }
    headers
}

/// The tenant's `Authorization` value as a header value marked sensitive, so
/// that hyper's HPACK never indexes it and `Debug` output hides it.
pub fn authorization_value(
    authorization: &SecretString,
) -> Result<HeaderValue, InvalidAuthorization> {
    let mut value =
        HeaderValue::from_str(authorization.expose()).map_err(|_| InvalidAuthorization)?;
    value.set_sensitive(true);
    Ok(value)
}

/// `{base_url}/{api_path_rest}?{query}`, with the path rest and the query
/// taken raw, unchanged. Trailing `/` on `base_url` are ignored so a base URL
/// written `…/api/v1/` cannot produce an empty segment. The base URL must be
/// absolute `http` or `https` with a host.
pub fn upstream_uri(
    base_url: &str,
    api_path_rest: &str,
    query: Option<&str>,
) -> Result<Uri, UpstreamUriError> {
    let base = base_url.trim_end_matches('/');
    let base_uri: Uri = base.parse().map_err(|_| UpstreamUriError::BadBaseUrl)?;
    let scheme_ok = matches!(base_uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || base_uri.host().is_none_or(str::is_empty) || base_uri.query().is_some() {
        return Err(UpstreamUriError::BadBaseUrl);
    }
    let mut target = String::with_capacity(base.len() + api_path_rest.len() + 2);
    target.push_str(base);
    target.push('/');
    target.push_str(api_path_rest);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    // From the `String` itself: parsing a `&str` would copy it again.
    Uri::try_from(target).map_err(|_| UpstreamUriError::Invalid)
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn client(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn rid() -> RequestId {
        RequestId::from_client(Some(&HeaderValue::from_static("req-7")))
    }

    const AUTH: &str = "ODFHIR NFF6i0KrXrxDkZHt/VzkmZEaUWOjnQX2z";

    #[test]
    fn only_the_allow_list_and_odgw_headers_go_upstream() {
        let headers = client(&[
            ("Accept", "application/json"),
            ("Accept", "text/plain"),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Content-Length", "12"),
            ("User-Agent", "practice-app/1.0"),
            ("Authorization", "Bearer client.jwt.token"),
            ("Cookie", "session=1"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Host", "evil"),
            ("X_Forwarded_For", "10.0.0.2"),
            ("Forwarded", "for=10.0.0.3"),
            ("Odgw-Tenant", "other-practice"),
            ("Odgw-Anything", "1"),
            ("X-Request-Id", "client-id"),
            ("x-request_id", "client-id-2"),
            ("X_Request_Id", "client-id-3"),
            ("Content_Type", "text/html"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Host", "evil.example"),
            ("Origin", "https://evil.example"),
            ("Cache-Control", "no-cache"),
            ("Expect", "100-continue"),
        ]);
        let out = upstream_headers(&headers, &SecretString::new(AUTH), &rid());
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "content-length",
                "content-type",
                "user-agent",
                "x-request-id"
            ]
        );
        let accepts: Vec<_> = out.get_all("accept").iter().collect();
        assert_eq!(accepts, ["application/json", "text/plain"]);
        assert_eq!(out["content-type"], "application/json; charset=utf-8");
        assert_eq!(out["content-length"], "12");
        assert_eq!(out["user-agent"], "practice-app/1.0");
        assert_eq!(out.get_all("authorization").iter().count(), 1);
        assert_eq!(out["authorization"], AUTH);
        assert!(out["authorization"].is_sensitive());
        assert_eq!(out.get_all("x-request-id").iter().count(), 1);
        assert_eq!(out["x-request-id"], "req-7");
    }

    #[test]
    fn content_type_defaults_to_json() {
        let out = upstream_headers(&HeaderMap::new(), &SecretString::new(AUTH), &rid());
        assert_eq!(out["content-type"], "application/json");
        assert!(out.get("content-length").is_none());
        assert!(out.get("accept").is_none());
    }

    #[test]
    fn doubtful_content_lengths_are_not_forwarded() {
        for values in [&["5", "5"][..], &["+5"], &["5, 5"]] {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append("content-length", HeaderValue::from_str(value).unwrap());
            }
            let out = upstream_headers(&headers, &SecretString::new(AUTH), &rid());
            assert!(out.get("content-length").is_none(), "{values:?}");
        }
    }

    #[test]
    fn an_authorization_that_cannot_be_a_header_is_refused() {
        assert_eq!(
            authorization_value(&SecretString::new("ODFHIR a/b\r\nX-Evil: 1")),
            Err(InvalidAuthorization)
        );
        let out = upstream_headers(
            &client(&[("Authorization", "Bearer client")]),
            &SecretString::new("bad\nvalue"),
            &rid(),
        );
        assert!(out.get("authorization").is_none());
    }

    #[test]
    fn uri_joins_base_rest_and_raw_query() {
        let cases = [
            (
                "https://api.opendental.com/api/v1",
                "patients/11",
                None,
                "https://api.opendental.com/api/v1/patients/11",
            ),
            (
                "https://api.opendental.com/api/v1/",
                "patients",
                Some("LName=O%27Brien&Limit=5"),
                "https://api.opendental.com/api/v1/patients?LName=O%27Brien&Limit=5",
            ),
            (
                "http://192.168.1.20:30222/api/v1",
                "preferences",
                Some("PrefName=ProgramVersion"),
                "http://192.168.1.20:30222/api/v1/preferences?PrefName=ProgramVersion",
            ),
            (
                "http://localhost:30222/api/v1",
                "queries/ShortQuery",
                Some(""),
                "http://localhost:30222/api/v1/queries/ShortQuery?",
            ),
        ];
        for (base, rest, query, want) in cases {
            assert_eq!(upstream_uri(base, rest, query).unwrap().to_string(), want);
        }
    }

    #[test]
    fn uri_refuses_bad_bases() {
        for base in [
            "",
            "api.opendental.com/api/v1",
            "/api/v1",
            "ftp://host/api/v1",
            "https:///api/v1",
            "https://host/api/v1?x=1",
            "not a url",
        ] {
            assert_eq!(
                upstream_uri(base, "patients", None),
                Err(UpstreamUriError::BadBaseUrl),
                "{base}"
            );
        }
        assert_eq!(
            upstream_uri("https://host/api/v1", "pat ients", None),
            Err(UpstreamUriError::Invalid)
        );
    }
}
