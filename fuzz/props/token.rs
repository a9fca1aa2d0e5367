//! `token`: the JWT pre-parser ([`odgw_auth::UnverifiedToken::parse`]: split,
//! decode header and claims, before any signature check) and
//! [`odgw_auth::Authenticator::verify`] with one HS256 issuer.
//!
//! The first byte picks a mode:
//! - raw: the rest is the token text;
//! - signed: the rest is `header bytes \n claims bytes`, each base64url
//!   encoded as they are and signed with the issuer's real secret, so the
//!   fuzzer reaches the claim checks behind the signature;
//! - valid: a well-formed token built from the rest (subject, tenant,
//!   scopes, lifetime, kid), then tampered with.
//!
//! Properties:
//! - verification never waits (static keys need no I/O) and never panics;
//! - pre-parse: over [`odgw_auth::MAX_TOKEN_BYTES`] is `TooLarge`, not
//!   three dot-separated parts is `Malformed`; only pre-parse errors come
//!   out of it; a pre-parsed token is exactly `signing_input.signature`
//!   with a non-empty signature, its header decodes to an object whose
//!   `alg` names the parsed algorithm (never `none`) and has no `crit`,
//!   `kid` and claims are what the token holds; a pre-parse error is also
//!   what `verify` returns;
//! - `verify` accepts only tokens HS256-signed with the issuer's secret,
//!   from its `iss`, for its audience, unexpired, with a subject, and the
//!   principal repeats those claims; JWKS-only errors never come out;
//! - a correctly signed token is refused only for its claims (never for
//!   its signature) when its header is valid HS256 and `iss` matches;
//! - a valid token is accepted, and refused after any one-character
//!   change, after switching to `alg: none` (with or without a signature),
//!   to `HS384` or to a lowercase `hs256`, and once expired.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::EncodingKey;
use odgw_auth::{
    Algorithm, AuthError, AuthSettings, Authenticator, IssuerSettings, KeySource, SecretBytes,
    UnverifiedToken, MAX_TOKEN_BYTES,
};
use odgw_core::Principal;
use serde_json::{json, Map, Value};

use super::input::Input;

const SECRET: &[u8] = b"odgw-fuzz-hs256-secret-0123456789";
const ISSUER: &str = "https://issuer.fuzz.test";
const AUDIENCE: &str = "odgw";

/// Errors only the pre-parser produces.
fn is_preparse_error(error: &AuthError) -> bool {
    matches!(
        error,
        AuthError::TooLarge
            | AuthError::Malformed
            | AuthError::AlgorithmNotAllowed
            | AuthError::CriticalHeader
    )
}

/// Errors about the claims, found after the signature checked out.
fn is_claims_error(error: &AuthError) -> bool {
    matches!(
        error,
        AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::IssuedInFuture
            | AuthError::LifetimeTooLong
            | AuthError::AudienceNotAllowed
            | AuthError::MissingClaim(_)
            | AuthError::InvalidClaim(_)
    )
}

pub fn check(data: &[u8]) {
    let auth = authenticator();
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => {
            let token = String::from_utf8_lossy(input.rest());
            let _verdict = raw(&auth, &token);
        }
        1 => signed(&auth, input),
        _ => valid_then_tampered(&auth, input),
    }
}

/// Polls `future` once: with static keys nothing may wait.
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("static-key authentication waited"),
    }
}

fn authenticator() -> Authenticator {
    let issuer = IssuerSettings {
        issuer: ISSUER.to_owned(),
        audiences: vec![AUDIENCE.to_owned()],
        algorithms: vec![Algorithm::HS256],
        keys: KeySource::HmacSecret(SecretBytes::new(SECRET)),
    };
    now_or_never(Authenticator::new(AuthSettings::default(), vec![issuer]))
        .unwrap_or_else(|e| panic!("authenticator: {e}"))
}

fn verify(auth: &Authenticator, token: &str) -> Result<Principal, AuthError> {
    now_or_never(auth.verify(token))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sign(signing_input: &str, alg: Algorithm) -> String {
    jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        alg,
    )
    .unwrap_or_else(|e| panic!("signing: {e}"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every property that holds for any token text; returns the verdict.
fn raw(auth: &Authenticator, token: &str) -> Result<Principal, AuthError> {
    let pre = UnverifiedToken::parse(token);
    check_preparse(token, &pre);
    let verdict = verify(auth, token);
    if let Err(error) = &pre {
        assert_eq!(
            verdict.as_ref().err(),
            Some(error),
            "verify after {error:?}"
        );
    }
    match &verdict {
        Err(error) => assert!(
            !matches!(
                error,
                AuthError::MissingKeyId | AuthError::UnknownKeyId | AuthError::KeysUnavailable
            ),
            "jwks error {error:?} from a static-key issuer"
        ),
        Ok(principal) => check_accepted(token, principal),
    }
    verdict
}

fn check_preparse(token: &str, pre: &Result<UnverifiedToken<'_>, AuthError>) {
    if token.len() > MAX_TOKEN_BYTES {
        assert_eq!(pre.as_ref().err(), Some(&AuthError::TooLarge));
        return;
    }
    if token.matches('.').count() != 2 {
        assert_eq!(pre.as_ref().err(), Some(&AuthError::Malformed));
        return;
    }
    let parsed = match pre {
        Err(error) => {
            assert!(is_preparse_error(error), "pre-parse gave {error:?}");
            return;
        }
        Ok(parsed) => parsed,
    };
    assert_eq!(
        format!("{}.{}", parsed.signing_input, parsed.signature),
        token,
        "signing input and signature are not the token"
    );
    assert!(!parsed.signature.is_empty(), "empty signature pre-parsed");
    let (header_part, payload_part) = parsed
        .signing_input
        .split_once('.')
        .unwrap_or_else(|| panic!("signing input without a dot"));
    let header = decode_object(header_part).unwrap_or_else(|| panic!("header is not an object"));
    let alg = header.get("alg").and_then(Value::as_str);
    assert_eq!(alg, Some(format!("{:?}", parsed.alg).as_str()), "alg");
    assert_ne!(alg, Some("none"));
    assert!(!header.contains_key("crit"), "crit header pre-parsed");
    assert_eq!(
        parsed.kid.as_deref(),
        header
            .get("kid")
            .map(|kid| kid.as_str().unwrap_or_else(|| panic!("kid not a string"))),
    );
    assert_eq!(
        Some(&parsed.claims),
        decode_object(payload_part).as_ref(),
        "claims"
    );
    match parsed.issuer() {
        Ok(iss) => assert_eq!(parsed.claims.get("iss"), Some(&json!(iss))),
        Err(_) => assert!(!matches!(parsed.claims.get("iss"), Some(Value::String(_)))),
    }
}

/// What an accepted token must have been.
fn check_accepted(token: &str, principal: &Principal) {
    let parsed = UnverifiedToken::parse(token)
        .unwrap_or_else(|e| panic!("accepted a token that does not pre-parse: {e:?}"));
    assert_eq!(parsed.alg, Algorithm::HS256, "accepted another algorithm");
    assert_eq!(
        parsed.signature,
        sign(parsed.signing_input, Algorithm::HS256),
        "accepted a signature not made with the issuer's secret"
    );
    let claims = &parsed.claims;
    assert_eq!(claims.get("iss"), Some(&json!(ISSUER)));
    assert_eq!(principal.issuer, ISSUER);
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(auds)) => auds.contains(&json!(AUDIENCE)),
        _ => false,
    };
    assert!(audience_ok, "accepted without the audience");
    assert_eq!(claims.get("sub"), Some(&json!(principal.subject)));
    assert!(!principal.subject.is_empty());
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("accepted without a numeric exp"));
    assert_eq!(principal.expires_at as f64, exp.floor(), "expires_at");
    let leeway = AuthSettings::default().leeway.as_secs();
    assert!(
        principal.expires_at + leeway > now(),
        "accepted an expired token"
    );
}

/// Signs whatever header and claims bytes the fuzzer chose.
fn signed(auth: &Authenticator, mut input: Input<'_>) {
    let header = input.field(b'\n');
    let claims = input.rest();
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let token = format!("{signing_input}.{}", sign(&signing_input, Algorithm::HS256));
    let verdict = raw(auth, &token);
    let Ok(parsed) = UnverifiedToken::parse(&token) else {
        return;
    };
    let Err(error) = verdict else { return };
    match parsed.issuer() {
        Ok(ISSUER) if parsed.alg == Algorithm::HS256 => assert!(
            is_claims_error(&error),
            "correctly signed HS256 token refused with {error:?}"
        ),
        Ok(ISSUER) => assert_eq!(error, AuthError::AlgorithmNotAllowed),
        Ok(_) => assert_eq!(error, AuthError::UnknownIssuer),
        Err(_) => assert!(matches!(
            error,
            AuthError::MissingClaim("iss") | AuthError::InvalidClaim("iss")
        )),
    }
}

fn encode(header: &Value, claims: &Value, alg: Algorithm) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(&signing_input, alg);
    format!("{signing_input}.{signature}")
}

/// A token that must verify, then variations of it that must not.
fn valid_then_tampered(auth: &Authenticator, mut input: Input<'_>) {
    let lifetime = 60 + u64::from(input.u16()) % 3600;
    let flags = input.byte();
    let position = usize::from(input.u16());
    let replacement = input.byte();
    // 200 characters each keep the token under MAX_TOKEN_BYTES even when
    // every character needs a six-byte JSON escape.
    let mut text = || input.text(b'\n').chars().take(200).collect::<String>();
    let mut subject = text();
    if subject.is_empty() {
        subject.push('s');
    }
    let tenant = text();
    let scope = text();
    let kid = text();

    let now = now();
    let exp = now + lifetime;
    let mut claims = json!({
        "iss": ISSUER,
        "sub": subject,
        "exp": exp,
        "tenant": tenant,
        "scope": scope,
    });
    claims["aud"] = if flags & 1 == 0 {
        json!(AUDIENCE)
    } else {
        json!(["other", AUDIENCE])
    };
    if flags & 2 != 0 {
        claims["iat"] = json!(now - 5);
    }
    if flags & 4 != 0 {
        claims["nbf"] = json!(now - 5);
    }
    let mut header = json!({"alg": "HS256", "typ": "JWT"});
    if flags & 8 != 0 {
        header["kid"] = json!(kid);
    }
    let token = encode(&header, &claims, Algorithm::HS256);
    let principal =
        raw(auth, &token).unwrap_or_else(|e| panic!("valid token refused with {e:?}: {token}"));
    assert_eq!(principal.subject, subject);
    assert_eq!(principal.expires_at, exp);
    assert_eq!(principal.tenants, vec![tenant]);
    let words: Vec<&str> = scope.split_ascii_whitespace().collect();
    assert!(principal.scopes.iter().all(|s| words.contains(&s.as_str())));
    assert!(words
        .iter()
        .all(|w| principal.scopes.iter().any(|s| s == w)));

    // Any one-character change.
    const ALPHABET: &[u8] = b"AaZz09-_.=+/ \"%";
    let at = position % token.len();
    let mut tampered = token.clone().into_bytes();
    let mut with = ALPHABET[usize::from(replacement) % ALPHABET.len()];
    if with == tampered[at] {
        with = if with == b'A' { b'B' } else { b'A' };
    }
    tampered[at] = with;
    let tampered = String::from_utf8_lossy(&tampered).into_owned();
    let verdict = raw(auth, &tampered);
    assert!(
        verdict.is_err(),
        "accepted {tampered} (one change of {token})"
    );

    let (_, payload_and_sig) = token.split_once('.').unwrap_or_default();
    let (payload, _) = payload_and_sig.split_once('.').unwrap_or_default();
    for alg in ["none", "None", "NONE", "hs256", ""] {
        let none_header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        for signature in ["", "AAAA"] {
            let forged = format!("{none_header}.{payload}.{signature}");
            let verdict = raw(auth, &forged);
            assert_eq!(
                verdict.err(),
                Some(AuthError::AlgorithmNotAllowed),
                "{forged}"
            );
        }
    }
    let other_alg = encode(&json!({"alg": "HS384"}), &claims, Algorithm::HS384);
    assert_eq!(
        raw(auth, &other_alg).err(),
        Some(AuthError::AlgorithmNotAllowed)
    );

    let leeway = AuthSettings::default().leeway.as_secs();
    claims["exp"] = json!(now - leeway - 1 - lifetime % 600);
    if let Some(claims) = claims.as_object_mut() {
        claims.remove("iat");
        claims.remove("nbf");
    }
    let expired = encode(&header, &claims, Algorithm::HS256);
    assert_eq!(raw(auth, &expired).err(), Some(AuthError::Expired));
}
