//! Parsing a compact JWS by hand and checking its claims.
//!
//! jsonwebtoken is used for the signature only: the header and claims are
//! read here so that nothing in the token (its `alg`, `jku`, `jwk`, `x5u`,
//! `x5c`, …) can influence which key or algorithm is used, and so that every
//! claim rule of SPEC §4 is applied exactly once, in one place.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::AuthError;

/// Largest token accepted, checked before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A token split and decoded, signature not yet checked.
///
/// Public (and hidden from the docs) only so that the fuzz targets under
/// `fuzz/` and their corpus replay in `tests/e2e/fuzz_corpus.rs` can drive
/// the pre-parser directly; not a supported API.
#[doc(hidden)]
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: &'a str,
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

fn decode_json_object(part: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

impl<'a> UnverifiedToken<'a> {
    /// Splits `token` into its three parts and decodes the header and claims.
    /// Checks size, shape, `alg` (must name a known algorithm; `none` never
    /// does), `crit` (refused) and `kid` (a string when present); never the
    /// signature.
    pub fn parse(token: &'a str) -> Result<Self, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header_json = decode_json_object(header)?;
        let alg = match header_json.get("alg") {
            Some(Value::String(name)) => name
                .parse::<Algorithm>()
                .map_err(|_| AuthError::AlgorithmNotAllowed)?,
            _ => return Err(AuthError::Malformed),
        };
        // RFC 7515 §4.1.11: a recipient that does not understand a listed
        // extension must reject the token; odgw understands none.
        if header_json.contains_key("crit") {
            return Err(AuthError::CriticalHeader);
        }
        let kid = match header_json.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthError::Malformed),
        };
        // Checked after `alg` so that an unsigned `alg: none` token is
        // reported as what it is.
        if signature.is_empty() {
            return Err(AuthError::Malformed);
        }
        let claims = decode_json_object(payload)?;
        Ok(Self {
            signing_input: &token[..header.len() + 1 + payload.len()],
            signature,
            alg,
            kid,
            claims,
        })
    }

    /// The unverified `iss`, used only to choose whose keys to verify with.
    pub fn issuer(&self) -> Result<&str, AuthError> {
        match self.claims.get("iss") {
            Some(Value::String(iss)) => Ok(iss),
            Some(_) => Err(AuthError::InvalidClaim("iss")),
            None => Err(AuthError::MissingClaim("iss")),
        }
    }
}

/// A NumericDate claim: seconds since the epoch, fractions dropped.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(secs) = n.as_u64() {
                Ok(Some(secs))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                        Ok(Some(f.floor() as u64))
                    }
                    _ => Err(AuthError::InvalidClaim(name)),
                }
            }
        }
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

/// Now, as a JWT NumericDate: seconds since the Unix epoch (0 if the clock
/// reads earlier).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 7519 §4.1.4: the token is usable only before `exp` (plus the
/// configured clock-skew `leeway`). Shared with the verified-token cache so
/// a remembered token expires exactly when a fresh check would refuse it.
pub(crate) fn is_expired(exp: u64, now: u64, leeway: u64) -> bool {
    now >= exp.saturating_add(leeway)
}

/// Whether a time the token says has passed (`nbf`, `iat`) is still ahead
/// of `now` by more than the clock-skew `leeway`.
pub(crate) fn is_premature(at: u64, now: u64, leeway: u64) -> bool {
    at > now.saturating_add(leeway)
}

/// The later of `nbf` and `iat`: before it (minus leeway) the token is
/// refused. Call after [`check_times`] accepted the claims.
pub(crate) fn not_before(claims: &Map<String, Value>) -> Option<u64> {
    let nbf = numeric_date(claims, "nbf").ok().flatten();
    let iat = numeric_date(claims, "iat").ok().flatten();
    nbf.max(iat)
}

/// The time rules: `exp` required, `nbf`, future `iat`, `max_lifetime`.
/// All values in seconds. Returns `exp`.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    now: u64,
    leeway: u64,
    max_lifetime: u64,
) -> Result<u64, AuthError> {
    let exp = numeric_date(claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    if is_expired(exp, now, leeway) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|nbf| is_premature(nbf, now, leeway)) {
        return Err(AuthError::NotYetValid);
    }
    if iat.is_some_and(|iat| is_premature(iat, now, leeway)) {
        return Err(AuthError::IssuedInFuture);
    }
    let too_long = match iat {
        // Both times come from the issuer's clock: no skew to forgive.
        Some(iat) => exp.saturating_sub(iat) > max_lifetime,
        // Our clock against theirs: forgive the skew.
        None => exp.saturating_sub(now) > max_lifetime.saturating_add(leeway),
    };
    if too_long {
        return Err(AuthError::LifetimeTooLong);
    }
    Ok(exp)
}

/// `aud` (a string or an array of strings) must contain one of `audiences`.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    audiences: &[String],
) -> Result<(), AuthError> {
    let matches = |aud: &str| audiences.iter().any(|a| a == aud);
    match claims.get("aud") {
        None => Err(AuthError::MissingClaim("aud")),
        Some(Value::String(aud)) => {
            if matches(aud) {
                Ok(())
            } else {
                Err(AuthError::AudienceNotAllowed)
            }
        }
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                let Value::String(aud) = item else {
                    return Err(AuthError::InvalidClaim("aud"));
                };
                found |= matches(aud);
            }
            if found {
                Ok(())
            } else {
                Err(AuthError::AudienceNotAllowed)
            }
        }
        Some(_) => Err(AuthError::InvalidClaim("aud")),
    }
}

/// `sub`: a non-empty string.
pub(crate) fn subject(claims: &Map<String, Value>) -> Result<String, AuthError> {
    match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => Ok(sub.clone()),
        Some(_) => Err(AuthError::InvalidClaim("sub")),
        None => Err(AuthError::MissingClaim("sub")),
    }
}

/// The tenant claim: a string, or an array of strings. Anything else grants
/// no tenant (and tenant selection then refuses the request).
pub(crate) fn tenants(claims: &Map<String, Value>, claim: &str) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Value::String(t) = item else {
                    return Vec::new();
                };
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Scopes from `scope` (space separated) and `scp` (array). Identity
/// providers disagree on the shape, so each claim is read in both shapes.
pub(crate) fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    };
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(list)) => list.split_ascii_whitespace().for_each(&mut add),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut add),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn parse_splits_and_reads_header() {
        let h = b64(&json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}));
        let p = b64(&json!({"iss": "i"}));
        let token = format!("{h}.{p}.c2ln");
        let t = UnverifiedToken::parse(&token).unwrap();
        assert_eq!(t.alg, Algorithm::RS256);
        assert_eq!(t.kid.as_deref(), Some("k1"));
        assert_eq!(t.signing_input, format!("{h}.{p}"));
        assert_eq!(t.signature, "c2ln");
        assert_eq!(t.issuer().unwrap(), "i");
    }

    #[test]
    fn parse_refuses_bad_shapes() {
        let h = b64(&json!({"alg": "RS256"}));
        let p = b64(&json!({"iss": "i"}));
        for bad in [
            String::new(),
            format!("{h}.{p}"),
            format!("{h}.{p}."),
            format!("{h}..sig"),
            format!("{h}.{p}.sig.extra"),
            format!(".{p}.sig"),
            format!("{h}.!!!.sig"),
            format!("{h}.{}.sig", b64(&json!([1, 2]))),
            format!("{}.{p}.sig", b64(&json!({"kid": "x"}))),
            format!("{}.{p}.sig", b64(&json!({"alg": "RS256", "kid": 5}))),
        ] {
            assert_eq!(
                UnverifiedToken::parse(&bad).unwrap_err(),
                AuthError::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_refuses_none_unknown_alg_and_crit() {
        let p = b64(&json!({"iss": "i"}));
        for alg in ["none", "None", "HS1", "rs256"] {
            for sig in ["", ".sig"] {
                let token = format!("{}.{p}{sig}", b64(&json!({ "alg": alg })));
                let token = if sig.is_empty() {
                    format!("{token}.")
                } else {
                    token
                };
                assert_eq!(
                    UnverifiedToken::parse(&token).unwrap_err(),
                    AuthError::AlgorithmNotAllowed,
                    "{alg} {sig}"
                );
            }
        }
        let token = format!("{}.{p}.sig", b64(&json!({"alg": "RS256", "crit": ["exp"]})));
        assert_eq!(
            UnverifiedToken::parse(&token).unwrap_err(),
            AuthError::CriticalHeader
        );
        let token = format!("{}.{p}.sig", b64(&json!({"alg": "RS256", "crit": []})));
        assert_eq!(
            UnverifiedToken::parse(&token).unwrap_err(),
            AuthError::CriticalHeader
        );
    }

    #[test]
    fn parse_refuses_huge_tokens_before_decoding() {
        let token = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            UnverifiedToken::parse(&token).unwrap_err(),
            AuthError::TooLarge
        );
    }

    #[test]
    fn time_rules() {
        let now = 1_000_000;
        let check = |v: Value| check_times(&obj(v), now, 30, 3600);
        assert_eq!(check(json!({"exp": now + 60})), Ok(now + 60));
        assert_eq!(check(json!({})), Err(AuthError::MissingClaim("exp")));
        assert_eq!(
            check(json!({"exp": "soon"})),
            Err(AuthError::InvalidClaim("exp"))
        );
        assert_eq!(
            check(json!({"exp": -5})),
            Err(AuthError::InvalidClaim("exp"))
        );
        assert_eq!(check(json!({"exp": (now + 60) as f64 + 0.5})), Ok(now + 60));
        // exp within leeway passes; at the leeway edge fails
        assert!(check(json!({"exp": now - 29})).is_ok());
        assert_eq!(check(json!({"exp": now - 30})), Err(AuthError::Expired));
        assert_eq!(
            check(json!({"exp": now + 60, "nbf": now + 31})),
            Err(AuthError::NotYetValid)
        );
        assert!(check(json!({"exp": now + 60, "nbf": now + 30})).is_ok());
        assert_eq!(
            check(json!({"exp": now + 60, "iat": now + 31})),
            Err(AuthError::IssuedInFuture)
        );
        assert!(check(json!({"exp": now + 60, "iat": now + 30})).is_ok());
        // lifetime: exp - iat, no leeway
        assert!(check(json!({"exp": now + 3000, "iat": now - 600})).is_ok());
        assert_eq!(
            check(json!({"exp": now + 3001, "iat": now - 600})),
            Err(AuthError::LifetimeTooLong)
        );
        // lifetime without iat: exp - now, with leeway
        assert!(check(json!({"exp": now + 3630})).is_ok());
        assert_eq!(
            check(json!({"exp": now + 3631})),
            Err(AuthError::LifetimeTooLong)
        );
    }

    #[test]
    fn audience_rules() {
        let auds = vec!["odgw".to_owned(), "other".to_owned()];
        let check = |v: Value| check_audience(&obj(v), &auds);
        assert!(check(json!({"aud": "odgw"})).is_ok());
        assert!(check(json!({"aud": ["x", "other"]})).is_ok());
        assert_eq!(
            check(json!({"aud": "ODGW"})),
            Err(AuthError::AudienceNotAllowed)
        );
        assert_eq!(
            check(json!({"aud": []})),
            Err(AuthError::AudienceNotAllowed)
        );
        assert_eq!(
            check(json!({"aud": ["odgw", 1]})),
            Err(AuthError::InvalidClaim("aud"))
        );
        assert_eq!(
            check(json!({"aud": 1})),
            Err(AuthError::InvalidClaim("aud"))
        );
        assert_eq!(check(json!({})), Err(AuthError::MissingClaim("aud")));
    }

    #[test]
    fn subject_tenants_and_scopes() {
        assert_eq!(subject(&obj(json!({"sub": "u1"}))).unwrap(), "u1");
        assert_eq!(
            subject(&obj(json!({"sub": ""}))),
            Err(AuthError::InvalidClaim("sub"))
        );
        assert_eq!(
            subject(&obj(json!({"sub": 7}))),
            Err(AuthError::InvalidClaim("sub"))
        );
        assert_eq!(
            subject(&obj(json!({}))),
            Err(AuthError::MissingClaim("sub"))
        );

        let c = obj(json!({"t": "a", "arr": ["a", "b", "a"], "mixed": ["a", 1], "num": 5}));
        assert_eq!(tenants(&c, "t"), vec!["a"]);
        assert_eq!(tenants(&c, "arr"), vec!["a", "b"]);
        assert!(tenants(&c, "mixed").is_empty());
        assert!(tenants(&c, "num").is_empty());
        assert!(tenants(&c, "missing").is_empty());

        let s = obj(json!({"scope": " od:read  od:write ", "scp": ["od:query", 3, "od:read"]}));
        assert_eq!(scopes(&s), vec!["od:read", "od:write", "od:query"]);
        assert!(scopes(&obj(json!({"scope": 5}))).is_empty());
    }
}
