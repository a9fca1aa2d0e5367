//! JWKS issuers against a real HTTP endpoint on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::Algorithm;
use odgw_auth::{AuthError, AuthSettings, Authenticator, KeySource};
use serde_json::json;

const ISS: &str = "https://idp.test/";

async fn jwks_auth(
    server: &JwksServer,
    algorithms: &[Algorithm],
    settings: AuthSettings,
) -> Authenticator {
    Authenticator::new(
        settings,
        vec![issuer(
            ISS,
            algorithms,
            KeySource::Jwks {
                url: server.url.clone(),
            },
        )],
    )
    .await
    .unwrap()
}

fn with_min_refetch(min: Duration) -> AuthSettings {
    AuthSettings {
        jwks_min_refetch_interval: min,
        ..settings()
    }
}

/// Polls `condition` every 20 ms for up to 5 s.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn every_asymmetric_family_verifies_from_jwks() {
    let server = JwksServer::start(vec![
        jwk("rsa", Algorithm::RS256, "rsa-1", false),
        jwk("ec256", Algorithm::ES256, "ec-256", true),
        jwk("ec384", Algorithm::ES384, "ec-384", true),
        jwk("ed25519", Algorithm::EdDSA, "ed-1", true),
    ])
    .await;
    let algorithms = [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    let auth = jwks_auth(
        &server,
        &algorithms,
        with_min_refetch(Duration::from_secs(60)),
    )
    .await;
    assert!(auth.is_ready());
    assert_eq!(server.hits(), 1, "one initial fetch");
    for (alg, key, kid) in [
        (Algorithm::RS256, "rsa", "rsa-1"),
        (Algorithm::PS256, "rsa", "rsa-1"),
        (Algorithm::ES256, "ec256", "ec-256"),
        (Algorithm::ES384, "ec384", "ec-384"),
        (Algorithm::EdDSA, "ed25519", "ed-1"),
    ] {
        let token = sign(alg, key, Some(kid), &claims(ISS));
        let p = auth
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(p.issuer, ISS);
    }
    assert_eq!(server.hits(), 1, "known kids need no fetch");
}

#[tokio::test]
async fn kid_is_required_and_must_fit_the_algorithm() {
    let server = JwksServer::start(vec![
        jwk("rsa", Algorithm::RS512, "pinned-512", true),
        jwk("ec256", Algorithm::ES256, "ec", true),
        {
            let mut enc = jwk("rsa", Algorithm::RS256, "enc-key", false);
            enc["use"] = json!("enc");
            enc
        },
    ])
    .await;
    let auth = jwks_auth(
        &server,
        &[Algorithm::RS256, Algorithm::RS512, Algorithm::ES256],
        with_min_refetch(Duration::from_secs(60)),
    )
    .await;
    let token = sign(Algorithm::RS512, "rsa", None, &claims(ISS));
    assert_eq!(auth.verify(&token).await, Err(AuthError::MissingKeyId));
    // the JWK says RS512: an RS256 signature by the same key is refused
    let token = sign(Algorithm::RS256, "rsa", Some("pinned-512"), &claims(ISS));
    assert_eq!(
        auth.verify(&token).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    assert!(auth
        .verify(&sign(
            Algorithm::RS512,
            "rsa",
            Some("pinned-512"),
            &claims(ISS)
        ))
        .await
        .is_ok());
    // an EC key cannot verify an RSA signature, whatever the token says
    let token = sign(Algorithm::RS256, "rsa", Some("ec"), &claims(ISS));
    assert_eq!(
        auth.verify(&token).await,
        Err(AuthError::AlgorithmNotAllowed)
    );
    // a key published for encryption is not used for signatures
    let token = sign(Algorithm::RS256, "rsa", Some("enc-key"), &claims(ISS));
    assert_eq!(auth.verify(&token).await, Err(AuthError::UnknownKeyId));
    // The unknown kid caused one refetch; the interval now blocks more.
    assert_eq!(
        server.hits(),
        2,
        "one refetch for an unknown kid, then none"
    );
}

#[tokio::test]
async fn embedded_attacker_jwk_is_ignored() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    let auth = jwks_auth(
        &server,
        &[Algorithm::RS256],
        with_min_refetch(Duration::from_secs(60)),
    )
    .await;
    for kid in ["k1", "attacker"] {
        let header = json!({
            "alg": "RS256",
            "kid": kid,
            "jwk": jwk("rsa2", Algorithm::RS256, kid, true),
            "jku": format!("{}?evil", server.url),
            "x5u": "http://127.0.0.1:9/x.pem",
        });
        let forged = sign_raw(
            &header,
            &claims(ISS),
            &encoding_key("rsa2"),
            Algorithm::RS256,
        );
        let result = auth.verify(&forged).await;
        assert!(
            matches!(
                result,
                Err(AuthError::BadSignature | AuthError::UnknownKeyId)
            ),
            "{kid}: {result:?}"
        );
    }
    assert_eq!(server.queried(), 0, "jku is never fetched");
    assert!(server.hits() <= 2, "at most the one unknown-kid refetch");
}

#[tokio::test]
async fn unknown_kid_refetch_is_coalesced_rate_limited_and_picks_up_rotation() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    let min = Duration::from_millis(1500);
    let auth = jwks_auth(&server, &[Algorithm::RS256], with_min_refetch(min)).await;
    assert_eq!(server.hits(), 1);
    let old_token = sign(Algorithm::RS256, "rsa", Some("k1"), &claims(ISS));
    assert!(auth.verify(&old_token).await.is_ok());

    // Rotation: the IdP now publishes only k2 (and answers slowly, so that
    // concurrent requests overlap with the fetch).
    tokio::time::sleep(min + Duration::from_millis(200)).await;
    server.set_keys(vec![jwk("rsa2", Algorithm::RS256, "k2", true)]);
    server.set_delay(Duration::from_millis(300));
    let new_token = sign(Algorithm::RS256, "rsa2", Some("k2"), &claims(ISS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let auth = auth.clone();
        let token = new_token.clone();
        tasks.spawn(async move { auth.verify(&token).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().unwrap().subject, "user-1");
    }
    assert_eq!(server.hits(), 2, "20 concurrent unknown kids → one fetch");

    // Right after a fetch, unknown kids do not fetch again; k1 is gone.
    let started = Instant::now();
    let bogus = sign(Algorithm::RS256, "rsa", Some("bogus"), &claims(ISS));
    assert_eq!(auth.verify(&bogus).await, Err(AuthError::UnknownKeyId));
    assert_eq!(auth.verify(&old_token).await, Err(AuthError::UnknownKeyId));
    if started.elapsed() < min / 2 {
        assert_eq!(server.hits(), 2, "rate limited");
    }

    // After the interval, many concurrent unknown kids make exactly one fetch.
    tokio::time::sleep(min + Duration::from_millis(200)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let auth = auth.clone();
        let token = sign(
            Algorithm::RS256,
            "rsa",
            Some(&format!("bogus-{i}")),
            &claims(ISS),
        );
        tasks.spawn(async move { auth.verify(&token).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap(), Err(AuthError::UnknownKeyId));
    }
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn failed_fetches_keep_the_last_good_keys() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    let settings = AuthSettings {
        jwks_refresh_interval: Duration::from_millis(50),
        jwks_min_refetch_interval: Duration::from_secs(600),
        jwks_fetch_timeout: Duration::from_millis(500),
        ..settings()
    };
    let auth = jwks_auth(&server, &[Algorithm::RS256], settings).await;
    let refresher = auth.spawn_background_refresh();
    let token = sign(Algorithm::RS256, "rsa", Some("k1"), &claims(ISS));

    // 500, then a body that is not a JWKS, then one over 1 MiB.
    for failure in 0..3 {
        match failure {
            0 => server.set_status(500),
            1 => {
                server.set_status(200);
                server.set_body("<html>maintenance</html>".to_owned());
            }
            _ => server.set_body(format!(
                "{{\"keys\":[],\"pad\":\"{}\"}}",
                "x".repeat(1 << 20)
            )),
        }
        let before = server.hits();
        assert!(
            eventually(|| server.hits() >= before + 2).await,
            "refresh keeps running"
        );
        assert!(
            auth.verify(&token).await.is_ok(),
            "failure {failure}: old keys kept"
        );
        assert!(auth.is_ready());
    }

    // A good document again: the background refresh installs the new key
    // (no unknown-kid refetch can happen: min interval is 10 min).
    server.set_keys(vec![jwk("rsa2", Algorithm::RS256, "k2", true)]);
    let new_token = sign(Algorithm::RS256, "rsa2", Some("k2"), &claims(ISS));
    let mut accepted = false;
    for _ in 0..250 {
        if auth.verify(&new_token).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "rotated key picked up by the background refresh");
    refresher.abort();
}

#[tokio::test]
async fn initial_fetch_failure_is_not_fatal() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    server.set_status(503);
    let min = Duration::from_millis(300);
    let auth = jwks_auth(&server, &[Algorithm::RS256], with_min_refetch(min)).await;
    assert!(!auth.is_ready());
    let token = sign(Algorithm::RS256, "rsa", Some("k1"), &claims(ISS));
    assert_eq!(auth.verify(&token).await, Err(AuthError::KeysUnavailable));
    server.set_status(200);
    tokio::time::sleep(min + Duration::from_millis(100)).await;
    assert!(auth.verify(&token).await.is_ok());
    assert!(auth.is_ready());
}

#[tokio::test]
async fn hanging_endpoint_is_bounded_by_the_fetch_timeout() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    server.set_delay(Duration::from_secs(30));
    let settings = AuthSettings {
        jwks_fetch_timeout: Duration::from_millis(200),
        ..settings()
    };
    let started = Instant::now();
    let auth = jwks_auth(&server, &[Algorithm::RS256], settings).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!auth.is_ready());
}

#[tokio::test]
async fn unreachable_endpoint_is_not_fatal() {
    // Bind then drop a listener to get a port with nothing behind it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let auth = Authenticator::new(
        settings(),
        vec![issuer(
            ISS,
            &[Algorithm::RS256],
            KeySource::Jwks {
                url: format!("http://127.0.0.1:{port}/jwks.json"),
            },
        )],
    )
    .await
    .unwrap();
    assert!(!auth.is_ready());
}

#[tokio::test]
async fn background_refresh_ends_when_the_authenticator_is_dropped() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    let settings = AuthSettings {
        jwks_refresh_interval: Duration::from_secs(3600),
        ..settings()
    };
    let auth = jwks_auth(&server, &[Algorithm::RS256], settings).await;
    let clone = auth.clone();
    let handle = auth.spawn_background_refresh();
    drop(auth);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!handle.is_finished(), "a clone is still alive");
    drop(clone);
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("task ended")
        .unwrap();
}

#[tokio::test]
async fn an_unchanged_jwks_keeps_tokens_remembered_and_a_changed_one_does_not() {
    let server = JwksServer::start(vec![jwk("rsa", Algorithm::RS256, "k1", true)]).await;
    let settings = AuthSettings {
        jwks_refresh_interval: Duration::from_millis(50),
        jwks_min_refetch_interval: Duration::from_secs(600),
        ..settings()
    };
    let auth = jwks_auth(&server, &[Algorithm::RS256], settings).await;
    let refresher = auth.spawn_background_refresh();
    let token = sign(Algorithm::RS256, "rsa", Some("k1"), &claims(ISS));
    assert!(auth.verify(&token).await.is_ok());
    assert_eq!(auth.verification_counts(), (0, 1));

    // The same document fetched again: the token is still answered from memory.
    let before = server.hits();
    assert!(eventually(|| server.hits() >= before + 2).await);
    assert!(auth.verify(&token).await.is_ok());
    assert_eq!(auth.verification_counts(), (1, 1));

    // The key is withdrawn: the next use is checked in full, and refused.
    server.set_keys(vec![jwk("rsa2", Algorithm::RS256, "k2", true)]);
    let before = server.hits();
    assert!(eventually(|| server.hits() >= before + 2).await);
    assert_eq!(auth.verify(&token).await, Err(AuthError::UnknownKeyId));
    assert_eq!(auth.verification_counts(), (1, 2));
    refresher.abort();
}
