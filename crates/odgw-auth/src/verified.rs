//! [`VerifiedTokens`]: remembers tokens whose signature and claims already
//! passed, so a client sending the same token again costs a SHA-256 and a
//! map lookup instead of a signature check (an RSA-2048 verify is ~25 µs).
//!
//! Why this is safe:
//! - the key is the SHA-256 of the whole token text, so only a
//!   byte-identical token (same claims, same signature) can hit an entry;
//! - only successful verifications are stored, never failures;
//! - an entry answers only while the token is unexpired by the same rule as
//!   a fresh check ([`token::is_expired`]); the other time claims (`nbf`,
//!   `iat`) were already in the past when it was stored and stay there;
//! - an entry from a JWKS key answers only while that issuer still holds
//!   the very key set it was verified with: any refresh (a rotation, a key
//!   withdrawn) sends the token through a full check again;
//! - the cache lives inside one [`crate::Authenticator`]: a config reload
//!   builds a new one with an empty cache.

use std::{sync::Arc, time::Duration};

use aws_lc_rs::digest;
use odgw_core::Principal;

use crate::{jwks::KeySet, token};

/// Tokens remembered at most; beyond it the least useful entries go.
const CAPACITY: u64 = 10_000;

/// The SHA-256 of a token's text.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn digest_of(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// What a successful verification established.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    /// Index of the issuer that verified it.
    pub(crate) issuer: usize,
    /// The JWKS key set the signature was checked against; `None` for a
    /// static key (a secret or PEM file, which only a reload changes).
    pub(crate) key_set: Option<KeySet>,
}

pub(crate) struct VerifiedTokens {
    entries: moka::sync::Cache<TokenDigest, Arc<Verified>>,
}

impl VerifiedTokens {
    /// `max_lifetime` bounds how long any entry can stay useful, so it is
    /// also the cache's time to live.
    pub(crate) fn new(max_lifetime: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(max_lifetime.max(Duration::from_secs(1)))
                .build(),
        }
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
        if token::is_expired(entry.principal.expires_at, now, leeway) || !key_set_is_current(&entry)
        {
            self.entries.invalidate(digest);
            return None;
        }
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

    fn verified(exp: u64) -> Verified {
        Verified {
            principal: Principal {
                subject: "alice".into(),
                issuer: "iss".into(),
                tenants: vec!["acme".into()],
                scopes: vec!["od:read".into()],
                expires_at: exp,
            },
            issuer: 0,
            key_set: None,
        }
    }

    #[test]
    fn answers_only_for_the_same_token_text() {
        let cache = VerifiedTokens::new(Duration::from_secs(3600));
        cache.insert(digest_of("a.b.c"), verified(2_000));
        assert!(cache.get(&digest_of("a.b.c"), 1_000, 0, |_| true).is_some());
        assert!(cache.get(&digest_of("a.b.d"), 1_000, 0, |_| true).is_none());
        assert!(cache
            .get(&digest_of("a.b.c "), 1_000, 0, |_| true)
            .is_none());
    }

    #[test]
    fn an_expired_entry_is_dropped_by_the_same_rule_as_a_fresh_check() {
        let cache = VerifiedTokens::new(Duration::from_secs(3600));
        cache.insert(digest_of("t"), verified(2_000));
        assert!(cache.get(&digest_of("t"), 2_029, 30, |_| true).is_some());
        assert!(cache.get(&digest_of("t"), 2_030, 30, |_| true).is_none());
        // Gone for good, even if the clock were to step back.
        assert!(cache.get(&digest_of("t"), 1_000, 30, |_| true).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_replaced_key_set_drops_the_entry() {
        let cache = VerifiedTokens::new(Duration::from_secs(3600));
        cache.insert(digest_of("t"), verified(2_000));
        assert!(cache.get(&digest_of("t"), 1_000, 0, |_| false).is_none());
        assert!(cache.get(&digest_of("t"), 1_000, 0, |_| true).is_none());
    }
}
