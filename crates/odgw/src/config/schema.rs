//! The configuration's shape (SPEC §2): one typed struct per section, with
//! the defaults SPEC §2 gives. Loading, the key table derived from these
//! structs, and validation live beside this module.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use odgw_core::{ByteSize, HumanDuration, Rate};
use serde::{Deserialize, Serialize};

/// The whole configuration. Field names and sections are SPEC §2's.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub audit: AuditConfig,
    /// Shared key store of a cluster (`store.backend = "postgres"`).
    pub postgres: PostgresConfig,
    /// Shared pacing budgets of a cluster (`limits.backend = "redis"`).
    pub redis: RedisConfig,
    /// The audit review console on the admin listener (`/console/`).
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body: ByteSize,
    pub shutdown_grace: HumanDuration,
    /// PEM certificate chain for TLS on the data plane (with `tls_key_file`;
    /// both or neither). Re-read on reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM certificate chain for TLS on the admin listener (with
    /// `admin_tls_key_file`; both or neither). Re-read on reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `admin_tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls_key_file: Option<PathBuf>,
    /// This replica's name in logs, `/readyz` and the cluster change feed.
    /// Defaults to the host name (a Kubernetes pod's name).
    pub node_id: String,
}

impl ServerConfig {
    /// The data plane's TLS files, when TLS is configured for it.
    pub fn data_tls(&self) -> Option<(&Path, &Path)> {
        Some((
            self.tls_cert_file.as_deref()?,
            self.tls_key_file.as_deref()?,
        ))
    }

    /// The admin listener's TLS files, when TLS is configured for it.
    pub fn admin_tls(&self) -> Option<(&Path, &Path)> {
        Some((
            self.admin_tls_cert_file.as_deref()?,
            self.admin_tls_key_file.as_deref()?,
        ))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            max_body: ByteSize(17_000_000),
            shutdown_grace: secs(30),
            tls_cert_file: None,
            tls_key_file: None,
            admin_tls_cert_file: None,
            admin_tls_key_file: None,
            node_id: host_name(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub developer_key_file: Option<PathBuf>,
    pub connect_timeout: HumanDuration,
    pub timeout: HumanDuration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.opendental.com/api/v1".into(),
            developer_key_file: None,
            connect_timeout: secs(5),
            timeout: secs(65),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tenant_claim: String,
    pub leeway: HumanDuration,
    pub max_lifetime: HumanDuration,
    pub require_scopes: bool,
    pub issuers: Vec<IssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tenant_claim: "tenant".into(),
            leeway: secs(30),
            max_lifetime: secs(24 * 3600),
            require_scopes: true,
            issuers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Where tenant keys live: this node's sled database, or PostgreSQL
    /// shared by every replica.
    pub backend: StoreBackend,
    /// The sled database (`backend = "sled"` only).
    pub path: PathBuf,
    pub master_key_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sled,
            path: "data/keys".into(),
            master_key_file: None,
        }
    }
}

/// `store.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One node: an embedded sled database at `store.path`.
    Sled,
    /// Several replicas: one PostgreSQL database (`[postgres]`).
    Postgres,
}

/// `limits.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// Budgets kept in this process (one node).
    Local,
    /// Budgets shared by every replica in Redis (`[redis]`).
    Redis,
}

/// `redis.on_failure`: what pacing does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisFailure {
    /// Pace in process (each replica spends the whole budget on its own).
    Local,
    /// Refuse with 503 `limiter_unavailable` rather than risk Open Dental's throttle.
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// File holding the connection URL (it may carry a password); or env
    /// `ODGW_POSTGRES_URL`.
    pub url_file: Option<PathBuf>,
    /// Schema holding odgw's tables; created and migrated at start.
    pub schema: String,
    /// Connections per replica.
    pub pool_size: usize,
    /// How long connecting or waiting for a pooled connection may take.
    pub connect_timeout: HumanDuration,
    /// How often the change feed re-reads what other replicas changed, in
    /// case a notification was lost (LISTEN/NOTIFY delivers sooner).
    pub poll_interval: HumanDuration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url_file: None,
            schema: "odgw".into(),
            pool_size: 8,
            connect_timeout: secs(5),
            poll_interval: secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// File holding the connection URL (it may carry a password); or env
    /// `ODGW_REDIS_URL`.
    pub url_file: Option<PathBuf>,
    /// Prefix of every key odgw writes, so several deployments share a server.
    pub key_prefix: String,
    pub on_failure: OnRedisFailure,
    /// How long one Redis command may take before Redis counts as unreachable.
    pub timeout: HumanDuration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url_file: None,
            key_prefix: "odgw:".into(),
            on_failure: OnRedisFailure::Local,
            timeout: HumanDuration(std::time::Duration::from_millis(250)),
        }
    }
}

/// `[console]`: sign-in to the audit review console through an OpenID
/// Connect provider. Without `issuer`, only `serve --dev` links sign in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// The provider's issuer URL (discovery at `{issuer}/.well-known/openid-configuration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// File holding the client secret; or env `ODGW_CONSOLE_CLIENT_SECRET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Where the provider sends the browser back, ending in
    /// `/console/callback`; default: derived from the request's Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// The scope a reviewer must be granted.
    pub reviewer_scope: String,
    /// How long a reviewer stays signed in.
    pub session_ttl: HumanDuration,
    /// Mark console cookies `Secure`. Default: when the admin listener
    /// serves TLS itself; set `true` behind a proxy that terminates TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_cookies: Option<bool>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            client_id: None,
            client_secret_file: None,
            redirect_url: None,
            reviewer_scope: "odgw:audit".into(),
            session_ttl: secs(8 * 3600),
            secure_cookies: None,
        }
    }
}

/// The host name, for `server.node_id`'s default.
fn host_name() -> String {
    let name = rustix::system::uname();
    let name = name.nodename().to_string_lossy();
    if name.is_empty() {
        "odgw".to_owned()
    } else {
        name.into_owned()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Where pacing budgets live: in process, or in Redis shared by replicas.
    pub backend: LimitsBackend,
    pub tenant_rate: Rate,
    pub tenant_burst: u32,
    pub queue_timeout: HumanDuration,
    pub queue_depth: usize,
    pub subject_rate: Rate,
    pub subject_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimitsBackend::Local,
            tenant_rate: Rate::Per {
                count: 1,
                period: std::time::Duration::from_secs(1),
            },
            tenant_burst: 1,
            queue_timeout: secs(10),
            queue_depth: 64,
            subject_rate: Rate::Per {
                count: 20,
                period: std::time::Duration::from_secs(1),
            },
            subject_burst: 40,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub routes: Vec<String>,
    pub ttl: HumanDuration,
    pub max_size: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            routes: vec!["/preferences".into()],
            ttl: secs(300),
            max_size: ByteSize(64 << 20),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub fail_closed: bool,
    pub write_timeout: HumanDuration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: "data/audit".into(),
            fail_closed: true,
            write_timeout: secs(2),
        }
    }
}

/// `n` seconds, for the defaults above.
pub(super) fn secs(n: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{secrets_env, MINIMAL};

    #[test]
    fn defaults_match_spec() {
        let c = Config::from_toml_str(MINIMAL, &secrets_env()).unwrap();
        assert_eq!(c.server.max_body, ByteSize(17_000_000));
        assert_eq!(c.upstream.timeout, secs(65));
        assert_eq!(c.limits.queue_depth, 64);
        assert_eq!(c.limits.subject_burst, 40);
        assert!(c.audit.fail_closed);
        assert!(c.auth.require_scopes);
    }
}
