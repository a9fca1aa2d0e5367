use std::{ops::Deref, sync::Arc};

/// Who is calling, as established by a verified token. Inserted by the auth
/// layer; read by tenant selection, limits and audit.
///
/// A shared handle: the remembered-token cache and every layer that copies
/// the request's extensions hold the same [`Identity`], so a clone is a
/// reference count, not five allocations. Fields read through `Deref`
/// (`principal.subject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(Arc<Identity>);

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: String,
    /// The token's `iss`, exactly as configured for the issuer that verified it.
    pub issuer: String,
    /// The tenants the token grants (from `auth.tenant_claim`).
    pub tenants: Vec<String>,
    /// Scopes from `scope` (space separated) or `scp` (array).
    pub scopes: Vec<String>,
    /// The token's `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl Principal {
    pub fn new(identity: Identity) -> Self {
        Self(Arc::new(identity))
    }
}

impl Deref for Principal {
    type Target = Identity;
    fn deref(&self) -> &Identity {
        &self.0
    }
}

impl Identity {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
