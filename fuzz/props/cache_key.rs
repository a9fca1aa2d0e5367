//! `cache_key`: the cache key of [`odgw_cache::ResponseCache`] and its
//! sorted query ([`odgw_cache::sorted_query_for_fuzzing`]).
//!
//! Input: a generation byte, then `tenant a \n tenant b \n path \n query`
//! (tenants mapped onto the tenant-id alphabet; a missing query line is no
//! query at all).
//!
//! Properties, for every input:
//! - the sorted query keeps exactly the non-empty `&`-separated pairs, sorted
//!   by name (the raw text before the first `=`), with pairs of one name in
//!   their original order; sorting is idempotent;
//! - reordering the pairs while keeping each name's pairs in order (so any
//!   order at all when names are distinct), and adding empty pairs, changes
//!   neither the sorted query nor the key;
//! - equal inputs give equal keys with equal hashes; a key built from the
//!   sorted query equals the original's; no query equals an empty one;
//! - the tenant is part of the key: another tenant, everything else equal,
//!   gives another key; so do another generation, path or sorted query;
//! - purging a tenant changes its keys and no other tenant's; purging all
//!   changes every key.

use std::{
    hash::{BuildHasher, Hash},
    time::Duration,
};

use odgw_cache::{sorted_query_for_fuzzing as sorted, CacheSettings, ResponseCache};
use odgw_core::TenantId;

use super::input::Input;

const TENANT_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

/// Maps arbitrary bytes onto a valid tenant id (1 to 64 characters).
fn tenant_from(bytes: &[u8]) -> String {
    let mut id: String = bytes
        .iter()
        .take(64)
        .map(|b| char::from(TENANT_ALPHABET[usize::from(*b) % TENANT_ALPHABET.len()]))
        .collect();
    if id.is_empty() {
        id.push('t');
    }
    id
}

fn pair_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

fn pairs(query: &str) -> Vec<&str> {
    query.split('&').filter(|p| !p.is_empty()).collect()
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    // Fixed keys: equal values must hash equal within one process.
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(value)
}

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let generation = u64::from(input.byte());
    let a = tenant_from(input.field(b'\n'));
    let mut b = tenant_from(input.field(b'\n'));
    if b == a {
        // Keep the same length and alphabet, change one character.
        let last = if a.ends_with('x') { 'y' } else { 'x' };
        b.pop();
        b.push(last);
    }
    let path = input.text(b'\n');
    let query = (!input.is_empty()).then(|| input.text(b'\n'));
    let a = TenantId::parse(&a).unwrap_or_else(|_| panic!("tenant id {a:?}"));
    let b = TenantId::parse(&b).unwrap_or_else(|_| panic!("tenant id {b:?}"));

    let sorted_query = check_sorted_query(query.as_deref());
    let reordered = reorder(query.as_deref().unwrap_or(""));
    assert_eq!(
        sorted(Some(&reordered)),
        sorted_query,
        "reordering {query:?} as {reordered:?} changed the sorted query"
    );

    let cache = ResponseCache::new(CacheSettings {
        routes: vec!["/preferences".to_owned()],
        ttl: Duration::from_secs(60),
        max_size: 1 << 20,
    });
    let q = query.as_deref();
    let key = |tenant: &TenantId, generation: u64, path: &str, query: Option<&str>| {
        cache.key_for_fuzzing(tenant, generation, path, query)
    };
    let base = key(&a, generation, &path, q);
    let again = key(&a, generation, &path, q);
    assert_eq!(base, again, "same request, different keys");
    assert_eq!(
        hash_of(&base),
        hash_of(&again),
        "equal keys, different hashes"
    );
    assert_eq!(key(&a, generation, &path, Some(&sorted_query)), base);
    assert_eq!(key(&a, generation, &path, Some(&reordered)), base);
    if sorted_query.is_empty() {
        assert_eq!(key(&a, generation, &path, None), base);
        assert_eq!(key(&a, generation, &path, Some("")), base);
    }

    assert_ne!(key(&b, generation, &path, q), base, "tenant not in the key");
    assert_ne!(
        key(&a, generation.wrapping_add(1), &path, q),
        base,
        "generation"
    );
    assert_ne!(key(&a, generation, &format!("{path}x"), q), base, "path");
    let more = format!("{}&zz=1", q.unwrap_or(""));
    assert_ne!(key(&a, generation, &path, Some(&more)), base, "query");

    let other = key(&b, generation, &path, q);
    cache.purge_tenant(&a);
    assert_ne!(key(&a, generation, &path, q), base, "purge kept a's key");
    assert_eq!(
        key(&b, generation, &path, q),
        other,
        "purging a changed b's key"
    );
    let after_purge = key(&a, generation, &path, q);
    cache.purge_all();
    assert_ne!(
        key(&a, generation, &path, q),
        after_purge,
        "purge_all kept a's key"
    );
    assert_ne!(
        key(&b, generation, &path, q),
        other,
        "purge_all kept b's key"
    );
}

/// Checks the sorted query against its definition; returns it.
fn check_sorted_query(query: Option<&str>) -> String {
    let out = sorted(query);
    let input_pairs = pairs(query.unwrap_or(""));
    let output_pairs = pairs(&out);
    assert_eq!(
        output_pairs.join("&"),
        out,
        "empty pairs in sorted query {out:?}"
    );
    let mut want = input_pairs.clone();
    let mut got = output_pairs.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "pairs lost or added: {query:?} -> {out:?}");
    assert!(
        output_pairs
            .windows(2)
            .all(|w| pair_name(w[0]) <= pair_name(w[1])),
        "not sorted by name: {out:?}"
    );
    for name in output_pairs.iter().map(|p| pair_name(p)) {
        let before: Vec<&str> = input_pairs
            .iter()
            .copied()
            .filter(|p| pair_name(p) == name)
            .collect();
        let after: Vec<&str> = output_pairs
            .iter()
            .copied()
            .filter(|p| pair_name(p) == name)
            .collect();
        assert_eq!(before, after, "pairs named {name:?} reordered: {out:?}");
    }
    assert_eq!(sorted(Some(&out)), out, "sorting {out:?} again changed it");
    out
}

/// The pairs grouped by name, groups in reverse order of first appearance
/// (each group keeping its order), with empty pairs sprinkled in.
fn reorder(query: &str) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for pair in pairs(query) {
        let name = pair_name(pair);
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, group)) => group.push(pair),
            None => groups.push((name, vec![pair])),
        }
    }
    let mut out = String::from("&");
    for (_, group) in groups.iter().rev() {
        for pair in group {
            out.push_str(pair);
            out.push_str("&&");
        }
    }
    out
}
