//! The cache itself: keys, stored responses, purges and counters.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use moka::future::Cache;
use odgw_core::TenantId;

/// What to cache and for how long (`[cache]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Path prefixes under `/api/v1` whose GETs are cached, e.g.
    /// `"/preferences"`. A prefix matches itself and everything below it
    /// (`/preferences/x`), not `/preferencesX`; case is ignored, as Open
    /// Dental's routing ignores it.
    pub routes: Vec<String>,
    /// How long an entry is served after it was stored.
    pub ttl: Duration,
    /// Upper bound, in bytes, on bodies and headers held.
    pub max_size: u64,
}

/// Memory an entry costs beyond its key, headers and body: the header map
/// and `Stored` structs, the key's allocations, moka's own per-entry
/// records (entry, access-order and expiry nodes, hash-table slot) and the
/// allocator's per-block slack around all of them. Counted in every entry's
/// weight so that `max_size` bounds the memory the cache really holds, not
/// just the payload bytes. Measured as (RSS growth − weighed bytes) / entries
/// while filling a 64 MiB cache through the gateway: about 2 KiB for 13,000
/// small entries, 2.6–2.8 KiB for 7,000 entries of 8 KiB bodies. A lower
/// figure lets a full cache hold that much more than `max_size`.
pub(crate) const ENTRY_OVERHEAD: usize = 2560;

/// The key of one cached response. The tenant is always part of it: a key
/// without it would serve one practice's patient data to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    tenant: TenantId,
    /// Changes when the tenant's keys or settings change.
    generation: u64,
    /// Bumped by purges, so that a fill racing a purge lands under a key
    /// nobody looks up any more.
    epoch: (u64, u64),
    /// The exact request path (case kept: only routing ignores case).
    path: String,
    /// The raw `name=value` pairs in sorted order, duplicates kept.
    query: String,
}

impl CacheKey {
    fn weight(&self) -> usize {
        self.tenant.as_str().len() + self.path.len() + self.query.len()
    }
}

/// A stored 200 response.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// For `Age`; std time because moka's TTL runs on real time too.
    pub(crate) stored_at: std::time::Instant,
}

impl Stored {
    /// What is kept of a 200: [`storable_headers`] and the body, copied into
    /// allocations of their own. hyper hands out header values and body
    /// chunks as slices of a connection's read buffer; a cached slice would
    /// keep that whole buffer (kilobytes) alive for the entry's lifetime,
    /// memory the cache's weigher never sees.
    pub(crate) fn detached(headers: &HeaderMap, body: &Bytes) -> Self {
        let kept = storable_headers(headers);
        let mut own = HeaderMap::with_capacity(kept.len());
        for (name, value) in &kept {
            // A value hyper parsed is always valid again; were it not, the
            // shared original is kept rather than the header dropped.
            let copy = match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(mut copy) => {
                    copy.set_sensitive(value.is_sensitive());
                    copy
                }
                Err(_) => value.clone(),
            };
            own.append(name.clone(), copy);
        }
        Self {
            headers: own,
            body: Bytes::copy_from_slice(body),
            stored_at: std::time::Instant::now(),
        }
    }

    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        self.body.len() + headers
    }
}

/// The per-tenant response cache shared by the cache layer and the admin
/// API (purges). Cheap to clone; clones share entries and counters.
///
/// Entries are bounded by weight (body and header bytes) to
/// [`CacheSettings::max_size`] and expire after [`CacheSettings::ttl`].
#[derive(Debug, Clone)]
pub struct ResponseCache {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    entries: Cache<CacheKey, Arc<Stored>>,
    /// Normalised route prefixes: lowercase, leading `/`, no trailing `/`.
    routes: Vec<String>,
    /// Bodies larger than this are returned but not stored, so one large
    /// answer cannot evict everything else.
    max_entry_body: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    global_epoch: AtomicU64,
    tenant_epochs: Mutex<HashMap<TenantId, u64>>,
}

impl ResponseCache {
    pub fn new(settings: CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.max_size)
            .weigher(|key: &CacheKey, value: &Arc<Stored>| {
                u32::try_from(key.weight() + value.weight() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            // moka refuses lifetimes over 1000 years; a year is plenty.
            .time_to_live(settings.ttl.min(Duration::from_secs(365 * 24 * 3600)))
            .support_invalidation_closures()
            .build();
        let routes = settings
            .routes
            .iter()
            .map(|r| {
                let r = r.trim().trim_end_matches('/').to_ascii_lowercase();
                if r.starts_with('/') || r.is_empty() {
                    r
                } else {
                    format!("/{r}")
                }
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                entries,
                routes,
                max_entry_body: settings.max_size / 8,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                global_epoch: AtomicU64::new(0),
                tenant_epochs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether a request with this method and path (the part after
    /// `/api/v1`) is served from the cache: GETs under a configured route.
    pub fn is_cacheable(&self, method: &Method, api_path: &str) -> bool {
        *method == Method::GET
            && self
                .shared
                .routes
                .iter()
                .any(|route| route_matches(route, api_path))
    }

    /// Makes every entry of `tenant` unreachable at once, including entries
    /// still being filled, and frees their memory soon after.
    pub fn purge_tenant(&self, tenant: &TenantId) {
        {
            let mut epochs = self
                .shared
                .tenant_epochs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *epochs.entry(tenant.clone()).or_insert(0) += 1;
        }
        let tenant = tenant.clone();
        // Fails only without `support_invalidation_closures`, which `new` sets;
        // the epoch bump above already made the entries unreachable.
        if let Err(error) = self
            .shared
            .entries
            .invalidate_entries_if(move |key, _| key.tenant == tenant)
        {
            tracing::warn!(%error, "cache purge could not schedule eviction");
        }
    }

    /// Makes every entry unreachable at once.
    pub fn purge_all(&self) {
        self.shared.global_epoch.fetch_add(1, Ordering::SeqCst);
        self.shared.entries.invalidate_all();
    }

    /// Entries held (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.shared.entries.entry_count()
    }

    /// Bytes held, as weighed: keys, headers, bodies and a fixed estimate of
    /// the bookkeeping per entry (approximate like [`Self::entry_count`]).
    pub fn weighted_size(&self) -> u64 {
        self.shared.entries.weighted_size()
    }

    /// Requests answered from the cache.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Cacheable requests that went upstream.
    pub fn misses(&self) -> u64 {
        self.shared.misses.load(Ordering::Relaxed)
    }

    /// Runs moka's pending maintenance (evictions, purges) now, so that
    /// [`Self::entry_count`] and [`Self::weighted_size`] are exact.
    pub async fn run_pending_tasks(&self) {
        self.shared.entries.run_pending_tasks().await;
    }

    pub(crate) fn key(
        &self,
        tenant: &TenantId,
        generation: u64,
        path: &str,
        query: Option<&str>,
    ) -> CacheKey {
        let tenant_epoch = self
            .shared
            .tenant_epochs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied()
            .unwrap_or(0);
        CacheKey {
            tenant: tenant.clone(),
            generation,
            epoch: (
                self.shared.global_epoch.load(Ordering::SeqCst),
                tenant_epoch,
            ),
            path: path.to_owned(),
            query: sorted_query(query),
        }
    }

    /// The cache key of a request as an opaque value (equality and hash only), for the
    /// fuzz targets under `fuzz/` and their corpus replay in
    /// `tests/e2e/fuzz_corpus.rs`; not a supported API.
    #[doc(hidden)]
    pub fn key_for_fuzzing(
        &self,
        tenant: &TenantId,
        generation: u64,
        path: &str,
        query: Option<&str>,
    ) -> impl Eq + Hash + std::fmt::Debug {
        self.key(tenant, generation, path, query)
    }

    pub(crate) fn entries(&self) -> &Cache<CacheKey, Arc<Stored>> {
        &self.shared.entries
    }

    pub(crate) fn fits(&self, body_len: usize) -> bool {
        u64::try_from(body_len).is_ok_and(|len| len <= self.shared.max_entry_body)
    }

    pub(crate) fn count_hit(&self) {
        self.shared.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_miss(&self) {
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
    }
}

fn route_matches(route: &str, api_path: &str) -> bool {
    let (route, path) = (route.as_bytes(), api_path.as_bytes());
    path.len() >= route.len()
        && path[..route.len()].eq_ignore_ascii_case(route)
        && (path.len() == route.len() || path[route.len()] == b'/')
}

/// `b=2&a=1` and `a=1&b=2` name the same resource; the raw pairs are sorted
/// by parameter name as they are (no decoding), so only byte-identical pairs
/// match. The sort is stable: repeated names keep their order, because an
/// upstream that reads the first (or last) value answers `a=1&a=2` and
/// `a=2&a=1` differently.
fn sorted_query(query: Option<&str>) -> String {
    let mut pairs: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    pairs.sort_by_key(|pair| pair.split_once('=').map_or(*pair, |(name, _)| name));
    pairs.join("&")
}

/// The query part of a cache key (pairs sorted by name), for the fuzz targets
/// under `fuzz/` and their corpus replay only; not a supported API.
#[doc(hidden)]
pub fn sorted_query_for_fuzzing(query: Option<&str>) -> String {
    sorted_query(query)
}

/// Headers never stored: hop-by-hop ones, cookies, and the ones odgw sets
/// itself on every answer.
const NOT_STORED: [HeaderName; 13] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::SET_COOKIE,
    header::AGE,
    odgw_core::headers::X_REQUEST_ID,
    odgw_core::headers::ODGW_CACHE,
];

/// The headers of a response as they are kept for replay.
pub(crate) fn storable_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in NOT_STORED.iter().chain(named.iter()) {
        kept.remove(name);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_ttl_does_not_panic() {
        let cache = ResponseCache::new(CacheSettings {
            routes: vec!["/preferences".to_owned()],
            ttl: Duration::from_secs(u64::MAX / 4),
            max_size: 1 << 20,
        });
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn stored_responses_do_not_pin_the_connection_buffer() {
        // One read buffer holding the response head and body, as hyper has it.
        let buffer = Bytes::from(vec![b'x'; 16 * 1024]);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(buffer.slice(0..16)).unwrap(),
        );
        let body = buffer.slice(100..400);
        let stored = Stored::detached(&headers, &body);
        assert_eq!(stored.body, body);
        assert_eq!(
            stored.headers[header::CONTENT_TYPE],
            headers[header::CONTENT_TYPE]
        );
        let within = |p: *const u8| buffer.as_ptr_range().contains(&p);
        assert!(!within(stored.body.as_ptr()));
        assert!(!within(
            stored.headers[header::CONTENT_TYPE].as_bytes().as_ptr()
        ));
    }

    fn cache(routes: &[&str]) -> ResponseCache {
        ResponseCache::new(CacheSettings {
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
            ttl: Duration::from_secs(60),
            max_size: 1 << 20,
        })
    }

    #[test]
    fn routes_match_prefix_segments_case_insensitively() {
        let c = cache(&["/preferences", "definitions/"]);
        for path in [
            "/preferences",
            "/Preferences",
            "/preferences/",
            "/PREFERENCES/x",
        ] {
            assert!(c.is_cacheable(&Method::GET, path), "{path}");
        }
        assert!(c.is_cacheable(&Method::GET, "/definitions"));
        for path in [
            "/preferencesx",
            "/pref",
            "/patients",
            "",
            "/",
            "/ü/preferences",
        ] {
            assert!(!c.is_cacheable(&Method::GET, path), "{path}");
        }
        for method in [Method::POST, Method::PUT, Method::HEAD, Method::DELETE] {
            assert!(!c.is_cacheable(&method, "/preferences"), "{method}");
        }
    }

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        assert_eq!(sorted_query(Some("b=2&a=1")), "a=1&b=2");
        assert_eq!(sorted_query(Some("a=1&b=2")), "a=1&b=2");
        assert_eq!(sorted_query(Some("a=1&a=1&")), "a=1&a=1");
        assert_ne!(sorted_query(Some("a=1")), sorted_query(Some("a=2")));
        // Repeated names keep their relative order.
        assert_eq!(sorted_query(Some("b=0&a=2&a=1")), "a=2&a=1&b=0");
        assert_ne!(sorted_query(Some("a=1&a=2")), sorted_query(Some("a=2&a=1")));
        assert_ne!(sorted_query(Some("a=%41")), sorted_query(Some("a=A")));
        assert_eq!(sorted_query(None), "");
    }

    #[test]
    fn keys_separate_tenants_generations_and_purges() {
        let c = cache(&["/preferences"]);
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let key = |t: &TenantId, g| c.key(t, g, "/api/v1/preferences", Some("x=1"));
        assert_eq!(key(&a, 1), key(&a, 1));
        assert_ne!(key(&a, 1), key(&b, 1));
        assert_ne!(key(&a, 1), key(&a, 2));
        let before = key(&a, 1);
        let other_before = key(&b, 1);
        c.purge_tenant(&a);
        assert_ne!(key(&a, 1), before);
        assert_eq!(key(&b, 1), other_before);
        c.purge_all();
        assert_ne!(key(&b, 1), other_before);
    }

    #[test]
    fn hop_by_hop_and_cookies_are_not_stored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-request-id", HeaderValue::from_static("upstream"));
        let kept = storable_headers(&h);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[header::CONTENT_TYPE], "application/json");
    }
}
