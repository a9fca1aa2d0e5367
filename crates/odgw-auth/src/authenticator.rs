//! [`Authenticator`]: the configured issuers and their keys, and `verify`.

use std::{collections::HashSet, fmt, sync::Arc};

use http::Uri;
use jsonwebtoken::{jwk::EllipticCurve, jwk::Jwk, Algorithm, AlgorithmFamily, DecodingKey};
use odgw_core::{Identity, Principal};
use tokio::task::JoinHandle;

use crate::{
    jwks::{build_http_client, HttpClient, JwksCache, KeySet},
    token::{self, UnverifiedToken},
    verified::{digest_of, Verified, VerifiedTokens},
    AuthError, AuthSettings, AuthSetupError, IssuerSettings, KeySource,
};

/// Verifies bearer tokens against the configured issuers.
///
/// Cheap to clone (an `Arc` inside). JWKS keys are fetched once by
/// [`Authenticator::new`], refreshed by the task from
/// [`Authenticator::spawn_background_refresh`], and refetched on demand when a
/// token names an unknown `kid`.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AuthSettings,
    issuers: Vec<Issuer>,
    /// Present when at least one issuer uses a JWKS.
    http: Option<HttpClient>,
    /// Dropped with `Inner`, which wakes and ends the background refresh task.
    shutdown: tokio::sync::watch::Sender<()>,
    /// Tokens already verified, so a repeated token skips the signature check.
    verified: VerifiedTokens,
}

#[derive(Debug)]
struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    keys: IssuerKeys,
}

#[derive(Debug)]
enum IssuerKeys {
    /// An HMAC secret or a PEM public key; its family matches every allowed algorithm.
    Static(DecodingKey),
    Jwks(Box<JwksCache>),
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // DecodingKey's Debug redacts key bytes, so issuers can be shown.
        f.debug_struct("Authenticator")
            .field("settings", &self.inner.settings)
            .field("issuers", &self.inner.issuers)
            .finish_non_exhaustive()
    }
}

fn family_name(family: AlgorithmFamily) -> &'static str {
    match family {
        AlgorithmFamily::Hmac => "an hmac secret",
        AlgorithmFamily::Rsa => "an rsa public key",
        AlgorithmFamily::Ec => "an ec public key",
        AlgorithmFamily::Ed => "an ed25519 public key",
    }
}

/// Builds the static key of a PEM issuer and checks it fits every algorithm.
fn pem_key(
    issuer: &str,
    pem: &[u8],
    algorithms: &[Algorithm],
) -> Result<DecodingKey, AuthSetupError> {
    let invalid = || AuthSetupError::InvalidPublicKey(issuer.to_owned());
    let family = algorithms[0].family();
    if algorithms.iter().any(|a| a.family() != family) {
        return Err(AuthSetupError::MixedKeyFamilies(issuer.to_owned()));
    }
    let key = match family {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        AlgorithmFamily::Hmac => {
            return Err(AuthSetupError::AlgorithmKeyMismatch {
                issuer: issuer.to_owned(),
                algorithm: algorithms[0],
                keys: "a public key",
            })
        }
    }
    .map_err(|_| invalid())?;
    // Re-deriving the JWK parses the key material for real (RSA modulus,
    // EC point length, Ed25519 length), so a broken file fails at startup.
    let jwk = Jwk::from_decoding_key(&key, None).map_err(|_| invalid())?;
    if let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(params) = &jwk.algorithm {
        for alg in algorithms {
            let fits = matches!(
                (alg, &params.curve),
                (Algorithm::ES256, EllipticCurve::P256) | (Algorithm::ES384, EllipticCurve::P384)
            );
            if !fits {
                return Err(AuthSetupError::AlgorithmKeyMismatch {
                    issuer: issuer.to_owned(),
                    algorithm: *alg,
                    keys: "this ec key's curve",
                });
            }
        }
    }
    Ok(key)
}

fn jwks_uri(issuer: &str, url: &str) -> Result<Uri, AuthSetupError> {
    let invalid = || AuthSetupError::InvalidJwksUrl(issuer.to_owned());
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    let scheme = uri.scheme_str().ok_or_else(invalid)?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
    match scheme {
        "https" => {}
        "http" => {
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                tracing::warn!(
                    issuer,
                    jwks_url = url,
                    "jwks fetched over plain http; use https outside tests"
                );
            }
        }
        _ => return Err(invalid()),
    }
    Ok(uri)
}

fn build_issuer(
    settings: IssuerSettings,
    http: &mut Option<HttpClient>,
) -> Result<Issuer, AuthSetupError> {
    let IssuerSettings {
        issuer,
        audiences,
        mut algorithms,
        keys,
    } = settings;
    if issuer.is_empty() {
        return Err(AuthSetupError::EmptyIssuer);
    }
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(AuthSetupError::NoAudiences(issuer));
    }
    let mut seen = HashSet::new();
    algorithms.retain(|a| seen.insert(*a));
    if algorithms.is_empty() {
        return Err(AuthSetupError::NoAlgorithms(issuer));
    }
    let mismatch =
        |algorithm: Algorithm, keys: &'static str| AuthSetupError::AlgorithmKeyMismatch {
            issuer: issuer.clone(),
            algorithm,
            keys,
        };
    let keys = match keys {
        KeySource::HmacSecret(secret) => {
            if let Some(alg) = algorithms
                .iter()
                .find(|a| a.family() != AlgorithmFamily::Hmac)
            {
                return Err(mismatch(*alg, family_name(AlgorithmFamily::Hmac)));
            }
            if secret.is_empty() {
                return Err(AuthSetupError::EmptySecret(issuer));
            }
            if secret.len() < 32 {
                tracing::warn!(issuer, "hmac secret is shorter than 32 bytes");
            }
            IssuerKeys::Static(DecodingKey::from_secret(secret.expose()))
        }
        KeySource::PublicKeyPem(pem) => {
            if let Some(alg) = algorithms
                .iter()
                .find(|a| a.family() == AlgorithmFamily::Hmac)
            {
                return Err(mismatch(*alg, "a public key"));
            }
            IssuerKeys::Static(pem_key(&issuer, &pem, &algorithms)?)
        }
        KeySource::Jwks { url } => {
            if let Some(alg) = algorithms
                .iter()
                .find(|a| a.family() == AlgorithmFamily::Hmac)
            {
                return Err(mismatch(*alg, "a jwks"));
            }
            let uri = jwks_uri(&issuer, &url)?;
            if http.is_none() {
                *http = Some(build_http_client()?);
            }
            IssuerKeys::Jwks(Box::new(JwksCache::new(
                issuer.clone(),
                uri,
                algorithms.clone(),
            )))
        }
    };
    Ok(Issuer {
        issuer,
        audiences,
        algorithms,
        keys,
    })
}

impl Authenticator {
    /// Validates the configuration and fetches every JWKS once.
    ///
    /// Refused: no issuer, a repeated issuer, an empty audience list, an
    /// algorithm whose family does not match the key source (HS* needs a
    /// secret; RS/PS/ES/EdDSA need a PEM or a JWKS), an unparsable PEM or a
    /// curve that does not fit ES256/ES384. A failed initial JWKS fetch is
    /// logged, not fatal: the keys come with the next refresh or refetch.
    pub async fn new(
        settings: AuthSettings,
        issuers: Vec<IssuerSettings>,
    ) -> Result<Self, AuthSetupError> {
        crate::install_crypto_providers();
        if settings.tenant_claim.is_empty() {
            return Err(AuthSetupError::EmptyTenantClaim);
        }
        if settings.jwks_refresh_interval.is_zero() || settings.jwks_fetch_timeout.is_zero() {
            return Err(AuthSetupError::ZeroInterval);
        }
        if issuers.is_empty() {
            return Err(AuthSetupError::NoIssuers);
        }
        let mut names = HashSet::new();
        let mut http = None;
        let mut built = Vec::with_capacity(issuers.len());
        for issuer in issuers {
            if !names.insert(issuer.issuer.clone()) {
                return Err(AuthSetupError::DuplicateIssuer(issuer.issuer));
            }
            built.push(build_issuer(issuer, &mut http)?);
        }
        let (shutdown, _) = tokio::sync::watch::channel(());
        let verified = VerifiedTokens::new(settings.max_lifetime, settings.leeway);
        let inner = Arc::new(Inner {
            verified,
            settings,
            issuers: built,
            http,
            shutdown,
        });
        inner.refresh_all().await;
        Ok(Self { inner })
    }

    /// The settings this authenticator was built with.
    pub fn settings(&self) -> &AuthSettings {
        &self.inner.settings
    }

    /// Whether at least one issuer has keys to verify with (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.inner.issuers.iter().any(|i| match &i.keys {
            IssuerKeys::Static(_) => true,
            IssuerKeys::Jwks(cache) => cache.has_keys(),
        })
    }

    /// JWKS fetches made so far and how many of them failed (kept the last
    /// good keys), summed over issuers: for metrics.
    pub fn jwks_fetch_counts(&self) -> (u64, u64) {
        self.inner
            .issuers
            .iter()
            .filter_map(|i| match &i.keys {
                IssuerKeys::Jwks(cache) => Some(cache.fetch_counts()),
                IssuerKeys::Static(_) => None,
            })
            .fold((0, 0), |(a, f), (ca, cf)| (a + ca, f + cf))
    }

    /// Token verifications answered from memory (a byte-identical token
    /// verified before) and verifications checked in full, successful or
    /// not, since this authenticator was built: for metrics.
    pub fn verification_counts(&self) -> (u64, u64) {
        self.inner.verified.counts()
    }

    /// Starts the periodic JWKS refresh. The task holds only a weak
    /// reference and ends as soon as the last clone of this authenticator is
    /// dropped (or at once when no issuer uses a JWKS).
    pub fn spawn_background_refresh(&self) -> JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let mut shutdown = self.inner.shutdown.subscribe();
        let interval = self.inner.settings.jwks_refresh_interval;
        let has_jwks = self.inner.http.is_some();
        tokio::spawn(async move {
            if !has_jwks {
                return;
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    // Only ever an error: the sender lives in `Inner` and never sends.
                    _ = shutdown.changed() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                inner.refresh_all().await;
            }
        })
    }

    /// Verifies `token` (the text after `Bearer `) and returns who it names.
    ///
    /// The issuer is chosen by the token's unverified `iss`; everything else
    /// (algorithm allow-list, keys, audiences) comes from that issuer's
    /// configuration, never from the token. A byte-identical token that
    /// passed before and has not expired (and whose JWKS key set has not
    /// changed since) is answered from memory.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = digest_of(token);
        let inner = &self.inner;
        let now = token::now_secs();
        let leeway = inner.settings.leeway.as_secs();
        let remembered = inner.verified.get(&digest, now, leeway, |seen| {
            let keys = inner.issuers.get(seen.issuer).map(|i| &i.keys);
            match (keys, &seen.key_set) {
                (Some(IssuerKeys::Jwks(cache)), Some(set)) => cache.is_current(set),
                (Some(IssuerKeys::Static(_)), None) => true,
                _ => false,
            }
        });
        if let Some(seen) = remembered {
            return Ok(seen.principal.clone());
        }
        inner.verified.count_checked();
        let verified = self.verify_fully(token, now).await?;
        let principal = verified.principal.clone();
        inner.verified.insert(digest, verified);
        Ok(principal)
    }

    /// The whole check: issuer, algorithm, key, signature, time claims,
    /// audience and subject.
    async fn verify_fully(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        let parsed = UnverifiedToken::parse(token)?;
        let iss = parsed.issuer()?;
        let (issuer_index, issuer) = self
            .inner
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.issuer == iss)
            .ok_or(AuthError::UnknownIssuer)?;
        if !issuer.algorithms.contains(&parsed.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let (key, key_set) = match &issuer.keys {
            IssuerKeys::Static(key) => {
                if key.family() != parsed.alg.family() {
                    return Err(AuthError::AlgorithmNotAllowed);
                }
                (key.clone(), None)
            }
            IssuerKeys::Jwks(cache) => {
                let (key, set) = self.jwks_key(cache, &parsed).await?;
                (key, Some(set))
            }
        };
        match jsonwebtoken::crypto::verify(
            parsed.signature,
            parsed.signing_input.as_bytes(),
            &key,
            parsed.alg,
        ) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::BadSignature),
            Err(e) => {
                return Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::Base64(_) => AuthError::Malformed,
                    _ => AuthError::BadSignature,
                })
            }
        }
        let settings = &self.inner.settings;
        let claims = &parsed.claims;
        let expires_at = token::check_times(
            claims,
            now,
            settings.leeway.as_secs(),
            settings.max_lifetime.as_secs(),
        )?;
        token::check_audience(claims, &issuer.audiences)?;
        let subject = token::subject(claims)?;
        Ok(Verified {
            not_before: token::not_before(claims),
            principal: Principal::new(Identity {
                subject,
                issuer: issuer.issuer.clone(),
                tenants: token::tenants(claims, &settings.tenant_claim),
                scopes: token::scopes(claims),
                expires_at,
            }),
            issuer: issuer_index,
            key_set,
        })
    }

    async fn jwks_key(
        &self,
        cache: &JwksCache,
        parsed: &UnverifiedToken<'_>,
    ) -> Result<(DecodingKey, KeySet), AuthError> {
        let kid = parsed.kid.as_deref().ok_or(AuthError::MissingKeyId)?;
        if let Some(found) = cache.find(kid, parsed.alg) {
            return Ok(found);
        }
        if cache.knows_kid(kid) {
            // The key exists but serves another algorithm: a rotation would
            // bring a new kid, so refetching cannot help.
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if let Some(http) = &self.inner.http {
            let settings = &self.inner.settings;
            cache
                .refetch_for_unknown_kid(
                    http,
                    settings.jwks_fetch_timeout,
                    settings.jwks_min_refetch_interval,
                )
                .await;
        }
        if let Some(found) = cache.find(kid, parsed.alg) {
            return Ok(found);
        }
        if cache.knows_kid(kid) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if cache.loaded() {
            Err(AuthError::UnknownKeyId)
        } else {
            Err(AuthError::KeysUnavailable)
        }
    }
}

impl Inner {
    async fn refresh_all(self: &Arc<Self>) {
        let Some(http) = &self.http else { return };
        let timeout = self.settings.jwks_fetch_timeout;
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..self.issuers.len() {
            if !matches!(self.issuers[index].keys, IssuerKeys::Jwks(_)) {
                continue;
            }
            let inner = Arc::clone(self);
            let http = http.clone();
            tasks.spawn(async move {
                if let IssuerKeys::Jwks(cache) = &inner.issuers[index].keys {
                    cache.refresh(&http, timeout).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}
