//! Token verification against static keys (HMAC secret, PEM public keys).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use odgw_auth::{AuthError, AuthSettings, AuthSetupError, Authenticator, KeySource, SecretBytes};
use odgw_core::{ErrorCode, GatewayError};
use serde_json::json;

const HS: &str = "https://hs.test/";
const RS: &str = "https://rs.test/";
const ES256: &str = "https://es256.test/";
const ES384: &str = "https://es384.test/";
const ED: &str = "https://ed.test/";

async fn all_families() -> Authenticator {
    Authenticator::new(
        settings(),
        vec![
            issuer(
                HS,
                &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                hmac_source(),
            ),
            issuer(
                RS,
                &[
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                pem_source("rsa"),
            ),
            issuer(ES256, &[Algorithm::ES256], pem_source("ec256")),
            issuer(ES384, &[Algorithm::ES384], pem_source("ec384")),
            issuer(ED, &[Algorithm::EdDSA], pem_source("ed25519")),
        ],
    )
    .await
    .unwrap()
}

/// Claims for `iss` with one field changed (or removed when `value` is null).
fn claims_with(iss: &str, field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut c = claims(iss);
    if value.is_null() {
        c.as_object_mut().unwrap().remove(field);
    } else {
        c[field] = value;
    }
    c
}

#[tokio::test]
async fn every_algorithm_family_verifies() {
    let auth = all_families().await;
    assert!(auth.is_ready());
    let cases = [
        (Algorithm::HS256, "hmac", HS),
        (Algorithm::HS384, "hmac", HS),
        (Algorithm::HS512, "hmac", HS),
        (Algorithm::RS256, "rsa", RS),
        (Algorithm::RS384, "rsa", RS),
        (Algorithm::RS512, "rsa", RS),
        (Algorithm::PS256, "rsa", RS),
        (Algorithm::PS384, "rsa", RS),
        (Algorithm::PS512, "rsa", RS),
        (Algorithm::ES256, "ec256", ES256),
        (Algorithm::ES384, "ec384", ES384),
        (Algorithm::EdDSA, "ed25519", ED),
    ];
    for (alg, key, iss) in cases {
        let token = sign(alg, key, None, &claims(iss));
        let principal = auth
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(principal.subject, "user-1");
        assert_eq!(principal.issuer, iss);
        assert_eq!(principal.tenants, vec!["t1"]);
        assert_eq!(principal.scopes, vec!["od:read", "od:write", "od:query"]);
        assert!(principal.expires_at > now());
    }
}

#[tokio::test]
async fn algorithm_outside_the_issuers_allow_list_is_refused() {
    let auth = all_families().await;
    // Valid signatures, but the issuer does not allow the algorithm.
    let token = sign(Algorithm::HS256, "hmac", None, &claims(RS));
    assert_eq!(
        auth.verify(&token).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    let token = sign(Algorithm::ES256, "ec256", None, &claims(ES384));
    assert_eq!(
        auth.verify(&token).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    let token = sign(Algorithm::RS256, "rsa", None, &claims(ED));
    assert_eq!(
        auth.verify(&token).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let auth = all_families().await;
    for alg in ["none", "NONE", "nOnE"] {
        let unsigned = format!("{}.{}.", b64(&json!({"alg": alg})), b64(&claims(HS)));
        assert_eq!(
            auth.verify(&unsigned).await,
            Err(AuthError::AlgorithmNotAllowed)
        );
        let with_sig = format!("{unsigned}AAAA");
        assert_eq!(
            auth.verify(&with_sig).await,
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_pem_is_refused() {
    let auth = Authenticator::new(
        settings(),
        vec![issuer(RS, &[Algorithm::RS256], pem_source("rsa"))],
    )
    .await
    .unwrap();
    let public_pem = key_file("rsa.pub.pem");
    let token = sign_raw(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims(RS),
        &EncodingKey::from_secret(&public_pem),
        Algorithm::HS256,
    );
    assert_eq!(
        auth.verify(&token).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[tokio::test]
async fn time_claims_are_enforced() {
    let auth = all_families().await;
    let now = now();
    let cases = [
        (claims_with(HS, "exp", json!(now - 120)), AuthError::Expired),
        (
            claims_with(HS, "exp", serde_json::Value::Null),
            AuthError::MissingClaim("exp"),
        ),
        (
            claims_with(HS, "exp", json!("tomorrow")),
            AuthError::InvalidClaim("exp"),
        ),
        (
            claims_with(HS, "nbf", json!(now + 300)),
            AuthError::NotYetValid,
        ),
        (
            claims_with(HS, "iat", json!(now + 300)),
            AuthError::IssuedInFuture,
        ),
        // max_lifetime is 1 h in these tests
        (
            json!({"iss": HS, "aud": "odgw", "sub": "u", "iat": now, "exp": now + 3601}),
            AuthError::LifetimeTooLong,
        ),
        (
            json!({"iss": HS, "aud": "odgw", "sub": "u", "exp": now + 7200}),
            AuthError::LifetimeTooLong,
        ),
    ];
    for (c, expected) in cases {
        let token = sign(Algorithm::HS256, "hmac", None, &c);
        assert_eq!(auth.verify(&token).await, Err(expected.clone()), "{c}");
    }
    // inside the leeway (30 s) is fine
    let c = claims_with(HS, "exp", json!(now - 5));
    assert!(auth
        .verify(&sign(Algorithm::HS256, "hmac", None, &c))
        .await
        .is_ok());
    let c = claims_with(HS, "nbf", json!(now + 5));
    assert!(auth
        .verify(&sign(Algorithm::HS256, "hmac", None, &c))
        .await
        .is_ok());
}

#[tokio::test]
async fn issuer_audience_and_subject_are_enforced() {
    let auth = all_families().await;
    let cases = [
        (
            claims_with("https://evil.test/", "iss", json!("https://evil.test/")),
            AuthError::UnknownIssuer,
        ),
        // iss is compared exactly: no trailing-slash or case folding
        (
            claims_with(HS, "iss", json!("https://hs.test")),
            AuthError::UnknownIssuer,
        ),
        (
            claims_with(HS, "iss", json!("HTTPS://HS.TEST/")),
            AuthError::UnknownIssuer,
        ),
        (
            claims_with(HS, "iss", json!([HS])),
            AuthError::InvalidClaim("iss"),
        ),
        (
            claims_with(HS, "iss", serde_json::Value::Null),
            AuthError::MissingClaim("iss"),
        ),
        (
            claims_with(HS, "aud", json!("someone-else")),
            AuthError::AudienceNotAllowed,
        ),
        (
            claims_with(HS, "aud", json!(["a", "b"])),
            AuthError::AudienceNotAllowed,
        ),
        (
            claims_with(HS, "aud", serde_json::Value::Null),
            AuthError::MissingClaim("aud"),
        ),
        (
            claims_with(HS, "sub", serde_json::Value::Null),
            AuthError::MissingClaim("sub"),
        ),
        (
            claims_with(HS, "sub", json!("")),
            AuthError::InvalidClaim("sub"),
        ),
    ];
    for (c, expected) in cases {
        let token = sign(Algorithm::HS256, "hmac", None, &c);
        assert_eq!(auth.verify(&token).await, Err(expected.clone()), "{c}");
    }
    let c = claims_with(HS, "aud", json!(["x", "other"]));
    assert!(auth
        .verify(&sign(Algorithm::HS256, "hmac", None, &c))
        .await
        .is_ok());
}

#[tokio::test]
async fn wrong_key_and_tampering_break_the_signature() {
    let auth = all_families().await;
    let token = sign(Algorithm::RS256, "rsa2", None, &claims(RS));
    assert_eq!(auth.verify(&token).await, Err(AuthError::BadSignature));
    let token = sign_raw(
        &json!({"alg": "HS256"}),
        &claims(HS),
        &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
        Algorithm::HS256,
    );
    assert_eq!(auth.verify(&token).await, Err(AuthError::BadSignature));
    // swap in a payload granting another tenant, keep the signature
    let good = sign(Algorithm::ES256, "ec256", None, &claims(ES256));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims_with(ES256, "tenant", json!("victim"))),
        parts[2]
    );
    assert_eq!(auth.verify(&forged).await, Err(AuthError::BadSignature));
    let garbage_sig = format!("{}.{}.!!!", parts[0], parts[1]);
    assert_eq!(auth.verify(&garbage_sig).await, Err(AuthError::Malformed));
}

#[tokio::test]
async fn crit_header_is_refused() {
    let auth = all_families().await;
    let token = sign_raw(
        &json!({"alg": "RS256", "crit": ["exp"], "exp": 1}),
        &claims(RS),
        &encoding_key("rsa"),
        Algorithm::RS256,
    );
    assert_eq!(auth.verify(&token).await, Err(AuthError::CriticalHeader));
}

#[tokio::test]
async fn key_location_headers_are_never_used() {
    let auth = all_families().await;
    let attacker_jwk = jwk("rsa2", Algorithm::RS256, "attacker", true);
    let header = json!({
        "alg": "RS256",
        "kid": "attacker",
        "jwk": attacker_jwk,
        "jku": "http://127.0.0.1:9/jwks.json",
        "x5u": "http://127.0.0.1:9/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    });
    // Signed by the attacker's key, which the token itself carries: refused.
    let forged = sign_raw(
        &header,
        &claims(RS),
        &encoding_key("rsa2"),
        Algorithm::RS256,
    );
    assert_eq!(auth.verify(&forged).await, Err(AuthError::BadSignature));
    // Signed by the configured key: the extra headers are ignored, not fatal.
    let genuine = sign_raw(&header, &claims(RS), &encoding_key("rsa"), Algorithm::RS256);
    assert!(auth.verify(&genuine).await.is_ok());
}

#[tokio::test]
async fn huge_tokens_are_refused_before_parsing() {
    let auth = all_families().await;
    let mut c = claims(HS);
    c["padding"] = json!("x".repeat(odgw_auth::MAX_TOKEN_BYTES));
    let token = sign(Algorithm::HS256, "hmac", None, &c);
    assert_eq!(auth.verify(&token).await, Err(AuthError::TooLarge));
    assert_eq!(
        auth.verify(&"a".repeat(1 << 20)).await,
        Err(AuthError::TooLarge)
    );
}

#[tokio::test]
async fn tenant_and_scope_claims_shape_the_principal() {
    let mut s = settings();
    s.tenant_claim = "practices".to_owned();
    let auth = hs_authenticator(s).await;
    let mut c = claims("https://hs.test/");
    c["practices"] = json!(["p1", "p2"]);
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["od:read"]);
    let p = auth
        .verify(&sign(Algorithm::HS256, "hmac", None, &c))
        .await
        .unwrap();
    assert_eq!(p.tenants, vec!["p1", "p2"]);
    assert_eq!(p.scopes, vec!["od:read"]);
    // the default claim name is ignored once another is configured
    c.as_object_mut().unwrap().remove("practices");
    let p = auth
        .verify(&sign(Algorithm::HS256, "hmac", None, &c))
        .await
        .unwrap();
    assert!(p.tenants.is_empty());
    c["practices"] = json!(42);
    let p = auth
        .verify(&sign(Algorithm::HS256, "hmac", None, &c))
        .await
        .unwrap();
    assert!(p.tenants.is_empty());
}

#[test]
fn auth_errors_become_invalid_token_without_token_content() {
    let e: GatewayError = AuthError::Expired.into();
    assert_eq!(e.code, ErrorCode::InvalidToken);
    assert_eq!(e.detail, "token expired");
    let e: GatewayError = AuthError::BadSignature.into();
    assert_eq!(e.detail, "bad signature");
    let e: GatewayError = AuthError::UnknownKeyId.into();
    assert_eq!(e.detail, "unknown key id");
    let e: GatewayError = AuthError::AlgorithmNotAllowed.into();
    assert_eq!(e.detail, "algorithm not allowed");
}

async fn setup_err(issuers: Vec<odgw_auth::IssuerSettings>) -> AuthSetupError {
    Authenticator::new(settings(), issuers).await.unwrap_err()
}

#[tokio::test]
async fn setup_refuses_inconsistent_configuration() {
    assert_eq!(setup_err(vec![]).await, AuthSetupError::NoIssuers);
    let dup = setup_err(vec![
        issuer(HS, &[Algorithm::HS256], hmac_source()),
        issuer(HS, &[Algorithm::HS256], hmac_source()),
    ])
    .await;
    assert_eq!(dup, AuthSetupError::DuplicateIssuer(HS.to_owned()));
    assert!(matches!(
        setup_err(vec![issuer(HS, &[Algorithm::RS256], hmac_source())]).await,
        AuthSetupError::AlgorithmKeyMismatch {
            algorithm: Algorithm::RS256,
            ..
        }
    ));
    assert!(matches!(
        setup_err(vec![issuer(
            RS,
            &[Algorithm::RS256, Algorithm::HS256],
            pem_source("rsa")
        )])
        .await,
        AuthSetupError::AlgorithmKeyMismatch {
            algorithm: Algorithm::HS256,
            ..
        }
    ));
    assert!(matches!(
        setup_err(vec![issuer(
            RS,
            &[Algorithm::HS256],
            KeySource::Jwks {
                url: "https://idp.test/jwks".into()
            }
        )])
        .await,
        AuthSetupError::AlgorithmKeyMismatch { .. }
    ));
    assert_eq!(
        setup_err(vec![issuer(
            RS,
            &[Algorithm::RS256, Algorithm::ES256],
            pem_source("rsa")
        )])
        .await,
        AuthSetupError::MixedKeyFamilies(RS.to_owned())
    );
    assert_eq!(
        setup_err(vec![issuer(RS, &[Algorithm::ES256], pem_source("rsa"))]).await,
        AuthSetupError::InvalidPublicKey(RS.to_owned())
    );
    assert_eq!(
        setup_err(vec![issuer(
            RS,
            &[Algorithm::RS256],
            KeySource::PublicKeyPem(b"not a pem".to_vec())
        )])
        .await,
        AuthSetupError::InvalidPublicKey(RS.to_owned())
    );
    assert!(matches!(
        setup_err(vec![issuer(
            ES384,
            &[Algorithm::ES384],
            pem_source("ec256")
        )])
        .await,
        AuthSetupError::AlgorithmKeyMismatch {
            algorithm: Algorithm::ES384,
            ..
        }
    ));
    assert_eq!(
        setup_err(vec![issuer(
            HS,
            &[Algorithm::HS256],
            KeySource::HmacSecret(SecretBytes::new(Vec::new()))
        )])
        .await,
        AuthSetupError::EmptySecret(HS.to_owned())
    );
    assert_eq!(
        setup_err(vec![issuer(RS, &[], pem_source("rsa"))]).await,
        AuthSetupError::NoAlgorithms(RS.to_owned())
    );
    let mut no_aud = issuer(HS, &[Algorithm::HS256], hmac_source());
    no_aud.audiences.clear();
    assert_eq!(
        setup_err(vec![no_aud]).await,
        AuthSetupError::NoAudiences(HS.to_owned())
    );
    for url in ["ftp://idp.test/jwks", "/jwks.json", "not a url", "https://"] {
        assert_eq!(
            setup_err(vec![issuer(
                RS,
                &[Algorithm::RS256],
                KeySource::Jwks { url: url.into() }
            )])
            .await,
            AuthSetupError::InvalidJwksUrl(RS.to_owned()),
            "{url}"
        );
    }
    // setup errors never print key material
    let msg = AuthSetupError::EmptySecret(HS.to_owned()).to_string();
    assert!(msg.starts_with("auth issuer"));
}

#[tokio::test]
async fn debug_output_redacts_secrets() {
    let auth = hs_authenticator(settings()).await;
    let debug = format!("{auth:?}");
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
}

#[tokio::test]
async fn a_remembered_token_still_expires_on_time() {
    let auth = hs_authenticator(AuthSettings {
        leeway: std::time::Duration::ZERO,
        ..settings()
    })
    .await;
    let exp = now() + 2;
    let token = sign(
        Algorithm::HS256,
        "hmac",
        None,
        &claims_with(HS, "exp", json!(exp)),
    );
    // Verified once, then answered from the verified-token cache.
    for _ in 0..3 {
        assert_eq!(auth.verify(&token).await.unwrap().expires_at, exp);
    }
    while now() < exp {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(auth.verify(&token).await, Err(AuthError::Expired));
    // A changed signature is never taken for the remembered token.
    let mut forged = sign(
        Algorithm::HS256,
        "hmac",
        None,
        &claims_with(HS, "exp", json!(now() + 600)),
    );
    assert!(auth.verify(&forged).await.is_ok());
    // Change the signature's last character to one it is not.
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'E' } else { 'A' });
    assert_eq!(auth.verify(&forged).await, Err(AuthError::BadSignature));
}
