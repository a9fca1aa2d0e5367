/// Who is calling, as established by a verified token. Inserted by the auth
/// layer; read by tenant selection, limits and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
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
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
