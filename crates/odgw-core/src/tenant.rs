use std::{ops::Deref, sync::Arc};

use crate::{Rate, SecretString, TenantId};

/// The practice a request is for, resolved from the key store: where to send
/// it and with which credentials. Inserted by tenant resolution; read by
/// pacing, cache and forwarding.
///
/// A shared handle: the layers that copy it out of the request's extensions
/// share one [`TenantAccess`], so the `Authorization` value is not copied
/// per layer and a clone is a reference count. Fields read through `Deref`
/// (`tenant.base_url`).
#[derive(Debug, Clone)]
pub struct Tenant(Arc<TenantAccess>);

/// What odgw needs to call Open Dental for one practice.
#[derive(Debug, Clone)]
pub struct TenantAccess {
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

impl Tenant {
    pub fn new(access: TenantAccess) -> Self {
        Self(Arc::new(access))
    }
}

impl Deref for Tenant {
    type Target = TenantAccess;
    fn deref(&self) -> &TenantAccess {
        &self.0
    }
}
