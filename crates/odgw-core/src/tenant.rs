use crate::{Rate, SecretString, TenantId};

/// The practice a request is for, resolved from the key store: where to send
/// it and with which credentials. Inserted by tenant resolution; read by
/// pacing, cache and forwarding.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    /// Open Dental base URL, e.g. `https://api.opendental.com/api/v1`
    /// (no trailing slash).
    pub base_url: String,
    /// The full `Authorization` value: `ODFHIR {developer}/{customer}`.
    pub authorization: SecretString,
    /// Upstream budget for this practice.
    pub rate: Rate,
    pub burst: u32,
    /// Changes whenever the tenant's keys or settings change, so caches keyed
    /// by it never serve entries made under an earlier key pair.
    pub generation: u64,
}
