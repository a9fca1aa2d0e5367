//! `Authenticator::verify` per algorithm, for a token the authenticator has
//! never seen (parse, signature check, claim checks, remembering it) and for
//! a token it verified before (SHA-256 of the token and a cache lookup).
//!
//! "First seen" cycles through pre-signed distinct tokens (distinct `sub`
//! and `jti`) and starts a fresh `Authenticator` (empty verified-token
//! cache) before every pass over them, outside the measured time, so no
//! measured call can be answered from memory.
//!
//! Run with `cargo bench -p odgw-auth --bench verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::HashSet,
    hint::black_box,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use odgw_auth::{AuthSettings, Authenticator, IssuerSettings, KeySource, SecretBytes};
use serde_json::json;
use tokio::runtime::Runtime;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/keys/");
const HMAC_SECRET: &[u8] = b"bench-only-hmac-secret-0123456789abcdef";
const AUDIENCE: &str = "odgw";
/// Distinct tokens signed per algorithm; one fresh authenticator per pass.
const DISTINCT_TOKENS: usize = 256;

fn key_file(name: &str) -> Vec<u8> {
    let path = format!("{KEYS}{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One algorithm under test: its issuer, how it is configured and signed.
struct Case {
    name: &'static str,
    alg: Algorithm,
    issuer: &'static str,
    /// Fixture file stem (`rsa`, `ec256`) or `None` for the HMAC secret.
    fixture: Option<&'static str>,
}

const CASES: [Case; 3] = [
    Case {
        name: "hs256",
        alg: Algorithm::HS256,
        issuer: "https://hs.bench/",
        fixture: None,
    },
    Case {
        name: "rs256",
        alg: Algorithm::RS256,
        issuer: "https://rs.bench/",
        fixture: Some("rsa"),
    },
    Case {
        name: "es256",
        alg: Algorithm::ES256,
        issuer: "https://es.bench/",
        fixture: Some("ec256"),
    },
];

impl Case {
    fn issuer_settings(&self) -> IssuerSettings {
        let keys = match self.fixture {
            None => KeySource::HmacSecret(SecretBytes::new(HMAC_SECRET.to_vec())),
            Some(stem) => KeySource::PublicKeyPem(key_file(&format!("{stem}.pub.pem"))),
        };
        IssuerSettings {
            issuer: self.issuer.to_owned(),
            audiences: vec![AUDIENCE.to_owned()],
            algorithms: vec![self.alg],
            keys,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        match self.fixture {
            None => EncodingKey::from_secret(HMAC_SECRET),
            Some(stem) => {
                let pem = key_file(&format!("{stem}.key"));
                match self.alg {
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                    _ => EncodingKey::from_ec_pem(&pem),
                }
                .unwrap()
            }
        }
    }

    /// `count` tokens differing in `sub` and `jti`, valid for two hours.
    fn tokens(&self, count: usize) -> Vec<String> {
        let key = self.encoding_key();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tokens: Vec<String> = (0..count)
            .map(|i| {
                let claims = json!({
                    "iss": self.issuer,
                    "aud": AUDIENCE,
                    "sub": format!("user-{i}"),
                    "jti": format!("{}-{i:08}", self.name),
                    "tenant": ["practice-1", "practice-2"],
                    "scope": "od:read od:write od:query",
                    "iat": now,
                    "nbf": now,
                    "exp": now + 7200,
                });
                jsonwebtoken::encode(&Header::new(self.alg), &claims, &key).unwrap()
            })
            .collect();
        let distinct: HashSet<&String> = tokens.iter().collect();
        assert_eq!(
            distinct.len(),
            count,
            "tokens must differ, or they would hit the cache"
        );
        tokens
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        max_lifetime: Duration::from_secs(3 * 3600),
        ..AuthSettings::default()
    }
}

/// A new authenticator, so its verified-token cache is empty.
fn fresh(rt: &Runtime, issuers: &[IssuerSettings]) -> Authenticator {
    rt.block_on(Authenticator::new(settings(), issuers.to_vec()))
        .unwrap()
}

/// Fails the bench unless `token` verifies to the expected principal.
fn check(rt: &Runtime, auth: &Authenticator, case: &Case, token: &str, index: usize) {
    let principal = rt
        .block_on(auth.verify(token))
        .unwrap_or_else(|e| panic!("{} token {index} refused: {e:?}", case.name));
    assert_eq!(principal.subject, format!("user-{index}"));
    assert_eq!(principal.issuer, case.issuer);
    assert_eq!(principal.tenants, ["practice-1", "practice-2"]);
    assert_eq!(principal.scopes, ["od:read", "od:write", "od:query"]);
}

fn verify(c: &mut Criterion) {
    odgw_auth::install_crypto_providers();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // All three issuers in one authenticator, as a gateway trusting several
    // identity providers would have them.
    let issuers: Vec<IssuerSettings> = CASES.iter().map(Case::issuer_settings).collect();

    let mut group = c.benchmark_group("verify");
    for case in &CASES {
        let tokens = case.tokens(DISTINCT_TOKENS);
        {
            let auth = fresh(&rt, &issuers);
            for (i, token) in tokens.iter().enumerate() {
                check(&rt, &auth, case, token, i);
            }
            // And once more from memory: the remembered path answers the same.
            check(&rt, &auth, case, &tokens[7], 7);
        }

        group.bench_function(format!("{}/first_seen", case.name), |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let auth = fresh(&rt, &issuers);
                    let pass = usize::try_from(left).map_or(tokens.len(), |l| l.min(tokens.len()));
                    measured += rt.block_on(async {
                        let start = Instant::now();
                        for token in &tokens[..pass] {
                            let principal = auth.verify(black_box(token)).await;
                            black_box(principal.expect("verify failed"));
                        }
                        start.elapsed()
                    });
                    left -= pass as u64;
                    drop(auth);
                }
                measured
            });
        });

        group.bench_function(format!("{}/remembered", case.name), |b| {
            let auth = fresh(&rt, &issuers);
            let token = &tokens[0];
            check(&rt, &auth, case, token, 0);
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let principal = auth.verify(black_box(token)).await;
                        black_box(principal.expect("verify failed"));
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
