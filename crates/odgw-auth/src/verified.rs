//! [`VerifiedTokens`]: remembers tokens whose signature and claims already
//! passed, so a client sending the same token again costs a SHA-256 and a
//! map lookup instead of a signature check (an RSA-2048 verify is ~25 µs).
//!
//! Why this is safe:
//! - the key is the SHA-256 of the whole token text, so only a
//!   byte-identical token (same claims, same signature) can hit an entry;
//! - only successful verifications are stored, never failures;
//! - an entry answers only while the token's times pass the same rules as a
//!   fresh check: unexpired ([`token::is_expired`]) and, should the clock
//!   step back, not before its `nbf`/`iat` ([`token::is_premature`]); it is
//!   evicted once `exp` plus leeway has passed;
//! - an entry from a JWKS key answers only while that issuer still holds
//!   the very key set it was verified with: any refresh (a rotation, a key
//!   withdrawn) sends the token through a full check again;
//! - the cache lives inside one [`crate::Authenticator`]: a config reload
//!   builds a new one with an empty cache.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use aws_lc_rs::digest;
use moka::Expiry;
use odgw_core::Principal;

use crate::{jwks::KeySet, token};

/// Tokens remembered at most; beyond it the least useful entries go.
const CAPACITY: u64 = 10_000;

/// No entry lives longer than this, whatever `max_lifetime` says (moka
/// refuses lifetimes beyond 1000 years; no token should be trusted that long).
const LONGEST_STAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// The SHA-256 of a token's text.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn digest_of(token: &str) -> TokenDigest {
    digest_of_bytes(token.as_bytes())
}

/// SHA-256 of `bytes`.
pub(crate) fn digest_of_bytes(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// What a successful verification established.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    /// The later of `nbf` and `iat`, if the token has either.
    pub(crate) not_before: Option<u64>,
    /// Index of the issuer that verified it.
    pub(crate) issuer: usize,
    /// The JWKS key set the signature was checked against; `None` for a
    /// static key (a secret or PEM file, which only a reload changes).
    pub(crate) key_set: Option<KeySet>,
}

pub(crate) struct VerifiedTokens {
    entries: moka::sync::Cache<TokenDigest, Arc<Verified>>,
    /// Tokens answered from memory / checked in full (for metrics).
    remembered: AtomicU64,
    checked: AtomicU64,
}

/// Evicts each entry when its token expires (`exp` plus leeway).
struct UntilExpiry {
    leeway: u64,
    longest: Duration,
}

impl Expiry<TokenDigest, Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let now = token::now_secs();
        let usable_until = value.principal.expires_at.saturating_add(self.leeway);
        Some(Duration::from_secs(usable_until.saturating_sub(now)).min(self.longest))
    }
}

impl VerifiedTokens {
    /// `max_lifetime` bounds how long any token stays valid, so no entry is
    /// kept longer; `leeway` is the clock skew allowed on the time claims.
    pub(crate) fn new(max_lifetime: Duration, leeway: Duration) -> Self {
        let longest = max_lifetime
            .saturating_add(leeway)
            .clamp(Duration::from_secs(1), LONGEST_STAY);
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(UntilExpiry {
                    leeway: leeway.as_secs(),
                    longest,
                })
                .build(),
            remembered: AtomicU64::new(0),
            checked: AtomicU64::new(0),
        }
    }

    /// Verifications answered from memory and verifications checked in
    /// full (successful or not) since this cache was built.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.remembered.load(Ordering::Relaxed),
            self.checked.load(Ordering::Relaxed),
        )
    }

    /// Counts a verification that was not answered from memory.
    pub(crate) fn count_checked(&self) {
        self.checked.fetch_add(1, Ordering::Relaxed);
    }

    /// The remembered verification of this token, if it still holds at
    /// `now` with `leeway`; `key_set_is_current` answers whether the JWKS
    /// key set it was verified with is still the issuer's.
    pub(crate) fn get(
        &self,
        digest: &TokenDigest,
        now: u64,
        leeway: u64,
        key_set_is_current: impl FnOnce(&Verified) -> bool,
    ) -> Option<Arc<Verified>> {
        let entry = self.entries.get(digest)?;
        let times_hold = !token::is_expired(entry.principal.expires_at, now, leeway)
            && !entry
                .not_before
                .is_some_and(|at| token::is_premature(at, now, leeway));
        if !times_hold || !key_set_is_current(&entry) {
            self.entries.invalidate(digest);
            return None;
        }
        self.remembered.fetch_add(1, Ordering::Relaxed);
        Some(entry)
    }

    pub(crate) fn insert(&self, digest: TokenDigest, verified: Verified) {
        self.entries.insert(digest, Arc::new(verified));
    }

    /// Entries held (approximate; for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use odgw_core::Identity;

    /// Now, in seconds: entries are evicted by the real clock, so test times
    /// are offsets from it.
    fn now() -> u64 {
        token::now_secs()
    }

    /// A verified token valid from `exp - 1100` (its `nbf`) until `exp`.
    fn verified(exp: u64) -> Verified {
        Verified {
            principal: Principal::new(Identity {
                subject: "alice".into(),
                issuer: "iss".into(),
                tenants: vec!["acme".into()],
                scopes: vec!["od:read".into()],
                expires_at: exp,
            }),
            not_before: Some(exp - 1100),
            issuer: 0,
            key_set: None,
        }
    }

    fn cache() -> VerifiedTokens {
        VerifiedTokens::new(Duration::from_secs(3600), Duration::from_secs(30))
    }

    #[test]
    fn answers_only_for_the_same_token_text() {
        let (cache, t) = (cache(), now());
        cache.insert(digest_of("a.b.c"), verified(t + 1000));
        assert!(cache.get(&digest_of("a.b.c"), t, 0, |_| true).is_some());
        assert!(cache.get(&digest_of("a.b.d"), t, 0, |_| true).is_none());
        assert!(cache.get(&digest_of("a.b.c "), t, 0, |_| true).is_none());
    }

    #[test]
    fn an_expired_entry_is_dropped_by_the_same_rule_as_a_fresh_check() {
        let (cache, t) = (cache(), now());
        cache.insert(digest_of("t"), verified(t + 1000));
        assert!(cache.get(&digest_of("t"), t + 1029, 30, |_| true).is_some());
        assert!(cache.get(&digest_of("t"), t + 1030, 30, |_| true).is_none());
        // Gone for good, even if the clock were to step back.
        assert!(cache.get(&digest_of("t"), t, 30, |_| true).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_clock_stepping_back_before_nbf_misses() {
        let (cache, t) = (cache(), now());
        cache.insert(digest_of("t"), verified(t + 1000));
        // nbf is t - 100: 30 s of leeway reach back to t - 130, no further.
        assert!(cache.get(&digest_of("t"), t - 130, 30, |_| true).is_some());
        assert!(cache.get(&digest_of("t"), t - 131, 30, |_| true).is_none());
    }

    #[test]
    fn entries_are_evicted_when_their_token_expires() {
        let (cache, t) = (
            VerifiedTokens::new(Duration::from_secs(3600), Duration::ZERO),
            now(),
        );
        cache.insert(digest_of("soon"), verified(t + 1));
        cache.insert(digest_of("later"), verified(t + 600));
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_absurd_max_lifetime_does_not_panic() {
        let cache = VerifiedTokens::new(Duration::from_secs(u64::MAX / 4), Duration::from_secs(30));
        let t = now();
        cache.insert(digest_of("t"), verified(t + 1000));
        assert!(cache.get(&digest_of("t"), t, 30, |_| true).is_some());
    }

    #[test]
    fn a_replaced_key_set_drops_the_entry() {
        let (cache, t) = (cache(), now());
        cache.insert(digest_of("t"), verified(t + 1000));
        assert!(cache.get(&digest_of("t"), t, 0, |_| false).is_none());
        assert!(cache.get(&digest_of("t"), t, 0, |_| true).is_none());
    }
}
