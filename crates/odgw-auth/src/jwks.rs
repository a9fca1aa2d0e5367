//! JWKS fetching and caching, one [`JwksCache`] per JWKS issuer.
//!
//! Keys are swapped in whole on every successful fetch, so a verification
//! never sees half a key set. Fetches of one cache are serialised by a tokio
//! mutex (single flight): concurrent tokens with an unknown `kid` wait for the
//! one fetch in progress instead of each starting their own, and a fetch
//! triggered by an unknown `kid` happens at most once per
//! `jwks_min_refetch_interval`, so garbage `kid`s cannot turn odgw into a
//! traffic amplifier against the identity provider.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
    Algorithm, AlgorithmFamily, DecodingKey,
};
use tokio::time::Instant;

use crate::AuthSetupError;

/// Largest JWKS document accepted; real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The client used for JWKS fetches: HTTP or HTTPS (webpki roots), aws-lc-rs.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub(crate) fn build_http_client() -> Result<HttpClient, AuthSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| AuthSetupError::HttpClient(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Why one JWKS fetch failed; logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("http status {0}")]
    Status(StatusCode),
    #[error("body larger than 1 MiB or unreadable")]
    Body,
    #[error("not a jwks document: {0}")]
    Parse(String),
}

/// The keys of one successful fetch, shared and never changed in place.
pub(crate) type KeySet = Arc<Vec<JwksKey>>;

/// One usable verification key from a JWKS.
#[derive(Debug, Clone)]
pub(crate) struct JwksKey {
    kid: String,
    key: DecodingKey,
    family: AlgorithmFamily,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
    /// For EC keys: the curve, which fixes the one ES* algorithm it serves.
    curve: Option<EllipticCurve>,
}

impl JwksKey {
    /// Whether this key may verify a signature made with `alg`.
    fn accepts(&self, alg: Algorithm) -> bool {
        if alg.family() != self.family || self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (alg, &self.curve) {
            (Algorithm::ES256, Some(curve)) => *curve == EllipticCurve::P256,
            (Algorithm::ES384, Some(curve)) => *curve == EllipticCurve::P384,
            (Algorithm::ES256 | Algorithm::ES384, None) => false,
            _ => true,
        }
    }
}

/// Turns one JWK into a key for an issuer that allows `allowed`, or `None`
/// when the key cannot serve that issuer (wrong use, type, curve or alg).
pub(crate) fn usable_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<JwksKey> {
    let kid = jwk.common.key_id.as_deref().filter(|k| !k.is_empty())?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
            return None;
        }
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(key_alg) => {
            let alg = Algorithm::try_from(key_alg).ok()?;
            if !allowed.contains(&alg) {
                return None;
            }
            Some(alg)
        }
    };
    let (family, curve, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => (
            AlgorithmFamily::Rsa,
            None,
            DecodingKey::from_rsa_components(&p.n, &p.e).ok()?,
        ),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 | EllipticCurve::P384 => (
                AlgorithmFamily::Ec,
                Some(p.curve.clone()),
                DecodingKey::from_ec_components(&p.x, &p.y).ok()?,
            ),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => (
                AlgorithmFamily::Ed,
                None,
                DecodingKey::from_ed_components(&p.x).ok()?,
            ),
            _ => return None,
        },
        // Symmetric keys are never taken from a network document.
        AlgorithmParameters::OctetKey(_) => return None,
        _ => return None,
    };
    let entry = JwksKey {
        kid: kid.to_owned(),
        key,
        family,
        alg,
        curve,
    };
    // The key must serve at least one algorithm the issuer allows; this also
    // rejects a JWK whose `alg` contradicts its `kty` or `crv`.
    allowed.iter().any(|a| entry.accepts(*a)).then_some(entry)
}

/// Parses a JWKS document, keeping the keys usable for `allowed`. Keys that
/// do not parse or do not fit are skipped, not fatal.
pub(crate) fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<JwksKey>, FetchError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| FetchError::Parse(e.to_string()))?;
    Ok(raw
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| usable_key(&jwk, allowed))
        .collect())
}

async fn fetch(client: &HttpClient, uri: &Uri, timeout: Duration) -> Result<Bytes, FetchError> {
    let work = async {
        // Some identity providers sit behind CDNs that refuse requests
        // without a User-Agent.
        let request = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "odgw")
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|_| FetchError::Body)?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// The key set of one JWKS issuer.
#[derive(Debug)]
pub(crate) struct JwksCache {
    issuer: String,
    uri: Uri,
    allowed: Vec<Algorithm>,
    keys: RwLock<KeySet>,
    /// SHA-256 of the document `keys` came from.
    document_digest: std::sync::Mutex<Option<[u8; 32]>>,
    /// A fetch has succeeded at least once.
    loaded: AtomicBool,
    /// Fetch attempts made so far; lets a waiter see that the fetch it queued
    /// behind already happened.
    attempts: AtomicU64,
    /// Fetch attempts that failed (the last good keys were kept).
    failures: AtomicU64,
    /// Single flight: held for the whole fetch; holds the start of the last attempt.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// Start of the last refetch caused by an unknown `kid`. Rate-limited on
    /// its own, so a scheduled refresh moments before an IdP rotates its keys
    /// does not delay accepting the new `kid`.
    last_kid_refetch: std::sync::Mutex<Option<Instant>>,
}

impl JwksCache {
    pub(crate) fn new(issuer: String, uri: Uri, allowed: Vec<Algorithm>) -> Self {
        Self {
            issuer,
            uri,
            allowed,
            keys: RwLock::new(Arc::new(Vec::new())),
            document_digest: std::sync::Mutex::new(None),
            loaded: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_attempt: tokio::sync::Mutex::new(None),
            last_kid_refetch: std::sync::Mutex::new(None),
        }
    }

    /// Whether any key is available.
    pub(crate) fn has_keys(&self) -> bool {
        !self.snapshot().is_empty()
    }

    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn snapshot(&self) -> KeySet {
        // A poisoned lock only means a panic elsewhere during a swap of an Arc;
        // the stored value is still a whole key set.
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key with this `kid` able to verify `alg`, with the key set it
    /// was found in.
    pub(crate) fn find(&self, kid: &str, alg: Algorithm) -> Option<(DecodingKey, KeySet)> {
        let set = self.snapshot();
        let key = set
            .iter()
            .find(|k| k.kid == kid && k.accepts(alg))
            .map(|k| k.key.clone())?;
        Some((key, set))
    }

    /// Whether `set` is still this issuer's key set: every fetch, even one
    /// returning the same keys, replaces it.
    pub(crate) fn is_current(&self, set: &KeySet) -> bool {
        Arc::ptr_eq(&self.snapshot(), set)
    }

    /// Fetches attempted and fetches that failed.
    pub(crate) fn fetch_counts(&self) -> (u64, u64) {
        (
            self.attempts.load(Ordering::Acquire),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// Whether some key has this `kid` (whatever its algorithm).
    pub(crate) fn knows_kid(&self, kid: &str) -> bool {
        self.snapshot().iter().any(|k| k.kid == kid)
    }

    /// Periodic or initial refresh: always fetches (after any fetch in progress).
    pub(crate) async fn refresh(&self, client: &HttpClient, timeout: Duration) {
        let mut last = self.last_attempt.lock().await;
        self.fetch_locked(&mut last, client, timeout).await;
    }

    /// Refetch for a token whose `kid` is unknown: joins a fetch in progress,
    /// and fetches itself only if none happened within `min_interval`.
    pub(crate) async fn refetch_for_unknown_kid(
        &self,
        client: &HttpClient,
        timeout: Duration,
        min_interval: Duration,
    ) {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut last = self.last_attempt.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        {
            let mut kid_refetch = self
                .last_kid_refetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if kid_refetch.is_some_and(|at| at.elapsed() < min_interval) {
                return;
            }
            *kid_refetch = Some(Instant::now());
        }
        self.fetch_locked(&mut last, client, timeout).await;
    }

    async fn fetch_locked(
        &self,
        last: &mut Option<Instant>,
        client: &HttpClient,
        timeout: Duration,
    ) {
        *last = Some(Instant::now());
        let result = fetch(client, &self.uri, timeout).await.and_then(|body| {
            let digest = crate::verified::digest_of_bytes(&body);
            parse_jwks(&body, &self.allowed).map(|keys| (keys, digest))
        });
        match result {
            Ok((keys, digest)) => {
                if keys.is_empty() {
                    tracing::warn!(issuer = %self.issuer, jwks_url = %self.uri, "jwks holds no usable key");
                } else {
                    tracing::debug!(issuer = %self.issuer, keys = keys.len(), "jwks refreshed");
                }
                // The same document keeps the same key set, so tokens verified
                // against it stay remembered (a new set drops them all).
                let mut fetched = self
                    .document_digest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if *fetched != Some(digest) {
                    *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                    *fetched = Some(digest);
                }
                self.loaded.store(true, Ordering::Release);
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, jwks_url = %self.uri, %error, "jwks fetch failed; keeping the last good keys");
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"kty": "RSA", "kid": "k1", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in extra {
                obj.insert(k.clone(), val.clone());
            }
        }
        v
    }

    fn parse(keys: Vec<serde_json::Value>, allowed: &[Algorithm]) -> Vec<JwksKey> {
        let doc = json!({ "keys": keys }).to_string();
        parse_jwks(doc.as_bytes(), allowed).unwrap()
    }

    #[test]
    fn keeps_rsa_key_for_rs_and_ps() {
        let keys = parse(vec![rsa_jwk(json!({}))], &[Algorithm::RS256]);
        assert_eq!(keys.len(), 1);
        assert!(keys[0].accepts(Algorithm::RS256));
        assert!(keys[0].accepts(Algorithm::PS256));
        assert!(!keys[0].accepts(Algorithm::ES256));
        assert!(!keys[0].accepts(Algorithm::HS256));
    }

    #[test]
    fn skips_keys_that_cannot_serve_the_issuer() {
        let allowed = [Algorithm::RS256];
        let skipped = vec![
            rsa_jwk(json!({"use": "enc"})),
            rsa_jwk(json!({"key_ops": ["encrypt"]})),
            rsa_jwk(json!({"alg": "RS512"})),
            rsa_jwk(json!({"alg": "ES256"})),
            rsa_jwk(json!({"alg": "RSA-OAEP"})),
            rsa_jwk(json!({"kid": ""})),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"}),
            json!({"kty": "weird", "kid": "w"}),
            json!("not an object"),
        ];
        assert!(parse(skipped, &allowed).is_empty());
        // a JWK whose alg contradicts its kty is unusable even if both are allowed
        let contradiction = vec![rsa_jwk(json!({"alg": "ES256"}))];
        assert!(parse(contradiction, &[Algorithm::RS256, Algorithm::ES256]).is_empty());
        let kept = parse(
            vec![rsa_jwk(
                json!({"alg": "RS256", "use": "sig", "key_ops": ["verify"]}),
            )],
            &allowed,
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].alg, Some(Algorithm::RS256));
        assert!(
            !kept[0].accepts(Algorithm::PS256),
            "jwk alg pins the algorithm"
        );
    }

    #[test]
    fn ec_curve_fixes_the_algorithm() {
        let p256 = json!({"kty": "EC", "kid": "e", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let keys = parse(vec![p256.clone()], &[Algorithm::ES256, Algorithm::ES384]);
        assert_eq!(keys.len(), 1);
        assert!(keys[0].accepts(Algorithm::ES256));
        assert!(!keys[0].accepts(Algorithm::ES384));
        assert!(parse(vec![p256], &[Algorithm::ES384]).is_empty());
    }

    #[test]
    fn rejects_documents_without_keys() {
        assert!(parse_jwks(b"{\"error\":\"nope\"}", &[Algorithm::RS256]).is_err());
        assert!(parse_jwks(b"<html>", &[Algorithm::RS256]).is_err());
    }
}
