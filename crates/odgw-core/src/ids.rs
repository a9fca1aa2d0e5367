use std::{
    fmt,
    sync::{Arc, Mutex},
};

/// A tenant (practice) id: `[A-Za-z0-9._-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant id must match [A-Za-z0-9._-]{{1,64}}")]
pub struct InvalidTenantId;

impl TenantId {
    pub fn parse(value: &str) -> Result<Self, InvalidTenantId> {
        if is_token_chars(value, 64) {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidTenantId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A list of tenant ids, for places that must name several (a token's claim).
pub type TenantIdSet = Vec<TenantId>;

/// `[A-Za-z0-9._-]{1,max}`: the alphabet of tenant ids and request ids.
fn is_token_chars(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of one request, echoed in `X-Request-Id`, problem bodies, logs and
/// the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The client's id if it matches `[A-Za-z0-9._-]{1,128}`, else a new UUID.
    pub fn from_client(value: Option<&http::HeaderValue>) -> Self {
        match value.and_then(|v| v.to_str().ok()) {
            Some(v) if is_token_chars(v, 128) => Self(Arc::from(v)),
            _ => Self::generate(),
        }
    }

    pub fn generate() -> Self {
        // Formatted on the stack: the shared string is the only allocation.
        let mut text = uuid::Uuid::encode_buffer();
        Self(Arc::from(
            uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text) as &str,
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What inner layers learn about a request that outer layers (audit, access
/// log, metrics) must report after the response is made. Part of the
/// [`crate::RequestContext`]; inner layers fill what they know.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts(Arc<Mutex<Facts>>);

/// The fields of [`RequestFacts`]. Every field is a copy or a shared handle,
/// so a snapshot allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The tenant auth selected for the request.
    pub tenant: Option<TenantId>,
    /// The verified caller: `subject()` and `issuer()` read from it.
    pub principal: Option<crate::Principal>,
    /// Status Open Dental answered with, when it was called.
    pub upstream_status: Option<u16>,
    /// Milliseconds until the upstream's response head.
    pub upstream_ms: Option<u64>,
    /// The response came from the cache.
    pub cache_hit: bool,
    /// Milliseconds spent waiting for the tenant's upstream budget.
    pub pacing_wait_ms: Option<u64>,
}

impl Facts {
    /// The verified token's `sub`, once auth has run.
    pub fn subject(&self) -> Option<&str> {
        self.principal.as_ref().map(|p| p.subject.as_str())
    }

    /// The verified token's `iss`, once auth has run.
    pub fn issuer(&self) -> Option<&str> {
        self.principal.as_ref().map(|p| p.issuer.as_str())
    }

    /// The audit `outcome` of a finished request: from the odgw error code
    /// its response carries, else `cache_hit` or `forwarded`. Audit records,
    /// metrics and the access log all take it from here, so they agree.
    pub fn outcome(&self, code: Option<crate::ErrorCode>) -> &'static str {
        match code {
            Some(code) => code.outcome(),
            None if self.cache_hit => "cache_hit",
            None => "forwarded",
        }
    }
}

impl RequestFacts {
    /// Runs `f` with the facts locked. Never held across an await.
    pub fn update(&self, f: impl FnOnce(&mut Facts)) {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // facts are still the best we have.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    /// Reads one thing from the facts without copying the rest.
    pub fn read<T>(&self, f: impl FnOnce(&Facts) -> T) -> T {
        f(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn snapshot(&self) -> Facts {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::parse("practice-1.a_b").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a/b").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
        assert!(TenantId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn outcome_comes_from_the_code_then_the_cache() {
        let hit = Facts {
            cache_hit: true,
            ..Facts::default()
        };
        assert_eq!(Facts::default().outcome(None), "forwarded");
        assert_eq!(hit.outcome(None), "cache_hit");
        assert_eq!(
            hit.outcome(Some(crate::ErrorCode::RateLimited)),
            "rate_limited"
        );
        assert_eq!(
            Facts::default().outcome(Some(crate::ErrorCode::BadPath)),
            "denied"
        );
    }

    #[test]
    fn request_id_keeps_good_client_ids_only() {
        let good = http::HeaderValue::from_static("abc-123_x.y");
        assert_eq!(RequestId::from_client(Some(&good)).as_str(), "abc-123_x.y");
        let bad = http::HeaderValue::from_static("abc def");
        let generated = RequestId::from_client(Some(&bad));
        assert_eq!(generated.as_str().len(), 36);
        assert_ne!(generated.as_str(), "abc def");
    }
}

/// The peer address of the client connection (no port), inserted by the
/// server for audit records and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);
