//! Typed configuration (SPEC §2): TOML file, `ODGW_<SECTION>__<KEY>` env
//! overrides, defaults, and validation that reports every bad key at once
//! before any port is bound.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use odgw_core::{ByteSize, HumanDuration, Rate, SecretString};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use toml::{Table, Value};

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

fn secs(n: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(n))
}

/// Every problem found in a configuration, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.0.len())?;
        if self.0.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("): ")?;
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for ConfigErrors {}

/// Where env overrides and env-held secrets come from; a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Where the configuration was read from: the file (if any) and the
/// environment of its overrides. Kept by the gateway so that a reload reads
/// the configuration exactly the way startup did.
#[derive(Clone)]
pub struct ConfigSource {
    path: Option<PathBuf>,
    env: std::sync::Arc<dyn Env + Send + Sync>,
}

impl fmt::Debug for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The env may hold secrets: show only where the file is.
        f.debug_struct("ConfigSource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ConfigSource {
    pub fn new(path: Option<PathBuf>, env: std::sync::Arc<dyn Env + Send + Sync>) -> Self {
        Self { path, env }
    }

    /// The config file, or `None` for defaults plus env overrides.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The environment that overrides and secrets are read from.
    pub fn env(&self) -> &(dyn Env + Send + Sync) {
        &*self.env
    }

    /// [`Config::load`] from this source.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        Config::load(self.path.as_deref(), &*self.env)
    }
}

/// The `section.key` names whose values differ between `a` and `b`, sorted.
/// `auth.issuers` counts as one key.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(Value::Table(a)), Ok(Value::Table(b))) = (Value::try_from(a), Value::try_from(b))
    else {
        // Both serialize in practice (check-config prints them); if one
        // ever did not, claim every section changed rather than none.
        return vec!["*".to_owned()];
    };
    let empty = Table::new();
    let mut out = Vec::new();
    let sections: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for section in sections {
        let sa = a.get(section).and_then(Value::as_table).unwrap_or(&empty);
        let sb = b.get(section).and_then(Value::as_table).unwrap_or(&empty);
        let keys: std::collections::BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
        for key in keys {
            if sa.get(key) != sb.get(key) {
                out.push(format!("{section}.{key}"));
            }
        }
    }
    out
}

/// Env variables holding secrets directly (SPEC §2).
pub const ENV_DEVELOPER_KEY: &str = "ODGW_DEVELOPER_KEY";
pub const ENV_ADMIN_TOKEN: &str = "ODGW_ADMIN_TOKEN";
pub const ENV_MASTER_KEY: &str = "ODGW_MASTER_KEY";
pub const ENV_POSTGRES_URL: &str = "ODGW_POSTGRES_URL";
pub const ENV_REDIS_URL: &str = "ODGW_REDIS_URL";
pub const ENV_CONSOLE_CLIENT_SECRET: &str = "ODGW_CONSOLE_CLIENT_SECRET";

impl Config {
    /// Reads `path` (or nothing: all defaults), applies env overrides, and
    /// validates. Every problem is reported in one [`ConfigErrors`].
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigErrors> {
        let config = Self::parse(path, env)?;
        config.validate(env)?;
        Ok(config)
    }

    /// Like [`Config::load`] but without the semantic checks (secret files,
    /// issuers): for CLI commands that only need to find the admin API.
    pub fn parse(path: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigErrors> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigErrors(vec![format!(
                    "cannot read config file {}: {e}",
                    p.display()
                )])
            })?,
            None => String::new(),
        };
        Self::parse_toml_str(&text, env)
    }

    /// Parses TOML text, applies env overrides, and validates.
    pub fn from_toml_str(text: &str, env: &dyn Env) -> Result<Self, ConfigErrors> {
        let config = Self::parse_toml_str(text, env)?;
        config.validate(env)?;
        Ok(config)
    }

    fn parse_toml_str(text: &str, env: &dyn Env) -> Result<Self, ConfigErrors> {
        let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![format!("config is not valid TOML: {}", e.message())])
        })?;
        let mut problems = Vec::new();
        apply_env_overrides(&mut table, env, &mut problems);
        check_shape(&table, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigErrors(vec![e.message().to_owned()]))
    }

    /// Semantic checks that need more than one key, or the file system.
    pub fn validate(&self, env: &dyn Env) -> Result<(), ConfigErrors> {
        let mut p = Vec::new();
        if self.server.listen == self.server.admin_listen && self.server.listen.port() != 0 {
            p.push("server.admin_listen: must differ from server.listen".into());
        }
        check_base_url("upstream.base_url", &self.upstream.base_url, &mut p);
        check_tls(
            ("server.tls_cert_file", self.server.tls_cert_file.as_deref()),
            ("server.tls_key_file", self.server.tls_key_file.as_deref()),
            &mut p,
        );
        check_tls(
            (
                "server.admin_tls_cert_file",
                self.server.admin_tls_cert_file.as_deref(),
            ),
            (
                "server.admin_tls_key_file",
                self.server.admin_tls_key_file.as_deref(),
            ),
            &mut p,
        );
        check_secret_source(
            "upstream.developer_key_file",
            self.upstream.developer_key_file.as_deref(),
            ENV_DEVELOPER_KEY,
            env,
            &mut p,
        );
        check_secret_source(
            "admin.token_file",
            self.admin.token_file.as_deref(),
            ENV_ADMIN_TOKEN,
            env,
            &mut p,
        );
        check_secret_source(
            "store.master_key_file",
            self.store.master_key_file.as_deref(),
            ENV_MASTER_KEY,
            env,
            &mut p,
        );
        self.validate_cluster(env, &mut p);
        self.validate_console(env, &mut p);
        if self.auth.tenant_claim.trim().is_empty() {
            p.push("auth.tenant_claim: must not be empty".into());
        }
        if self.auth.issuers.is_empty() {
            p.push("auth.issuers: at least one [[auth.issuers]] is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            check_issuer(&format!("auth.issuers[{i}]"), issuer, &mut p);
            if !seen.insert(issuer.issuer.as_str()) {
                p.push(format!(
                    "auth.issuers[{i}].issuer: {:?} is configured twice",
                    issuer.issuer
                ));
            }
        }
        if self.limits.tenant_burst == 0 {
            p.push("limits.tenant_burst: must be at least 1".into());
        }
        if self.limits.subject_burst == 0 {
            p.push("limits.subject_burst: must be at least 1".into());
        }
        if self.limits.queue_depth == 0 {
            p.push("limits.queue_depth: must be at least 1".into());
        }
        for (i, route) in self.cache.routes.iter().enumerate() {
            if !route.starts_with('/') || route.len() < 2 || route.contains(['?', '#', '%', '\\']) {
                p.push(format!(
                    "cache.routes[{i}]: {route:?} must be a path prefix under /api/v1 such as \"/preferences\""
                ));
            }
        }
        if self.audit.write_timeout.0.is_zero() {
            p.push("audit.write_timeout: must be greater than zero".into());
        }
        if self.upstream.timeout.0.is_zero() {
            p.push("upstream.timeout: must be greater than zero".into());
        }
        if self.upstream.connect_timeout.0.is_zero() {
            p.push("upstream.connect_timeout: must be greater than zero".into());
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(p))
        }
    }
}

impl Config {
    /// `[console]`: a complete OpenID client when `issuer` is set.
    fn validate_console(&self, env: &dyn Env, p: &mut Vec<String>) {
        let c = &self.console;
        if c.reviewer_scope.is_empty() || c.reviewer_scope.contains(char::is_whitespace) {
            p.push("console.reviewer_scope: must be one scope, without spaces".into());
        }
        if c.session_ttl.0.is_zero() || c.session_ttl.0 > std::time::Duration::from_secs(24 * 3600)
        {
            p.push("console.session_ttl: must be more than zero and at most 24h".into());
        }
        if let Some(url) = &c.redirect_url {
            check_base_url("console.redirect_url", url, p);
            if !url.ends_with("/console/callback") {
                p.push("console.redirect_url: must end with /console/callback".into());
            }
        }
        let Some(issuer) = &c.issuer else {
            if c.client_id.is_some() || c.client_secret_file.is_some() || c.redirect_url.is_some() {
                p.push(
                    "console.issuer: required when any other [console] sign-in key is set".into(),
                );
            }
            return;
        };
        check_base_url("console.issuer", issuer, p);
        // Plain http would carry the client secret, the codes and the
        // provider's signing keys in clear: only a provider on this machine
        // (development, tests) may use it.
        for (key, url) in [
            ("console.issuer", Some(issuer)),
            ("console.redirect_url", c.redirect_url.as_ref()),
        ] {
            if let Some(url) = url {
                if url.starts_with("http://") && !is_loopback_url(url) {
                    p.push(format!(
                        "{key}: must be https:// (http:// only for a loopback host)"
                    ));
                }
            }
        }
        // Without it, the callback address comes from the request's Host: a
        // provider that does not match redirect addresses exactly could then
        // hand a reviewer's code to whoever sent the Host.
        if c.redirect_url.is_none() && !is_loopback_url(issuer) {
            p.push(
                "console.redirect_url: required with a console.issuer that is not on loopback"
                    .into(),
            );
        }
        if c.client_id.as_deref().is_none_or(str::is_empty) {
            p.push("console.client_id: required with console.issuer".into());
        }
        check_secret_source(
            "console.client_secret_file",
            c.client_secret_file.as_deref(),
            ENV_CONSOLE_CLIENT_SECRET,
            env,
            p,
        );
    }

    /// `server.node_id`, the shared backends and their secrets.
    fn validate_cluster(&self, env: &dyn Env, p: &mut Vec<String>) {
        let node = &self.server.node_id;
        if node.is_empty()
            || node.len() > 64
            || !node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            p.push(format!(
                "server.node_id: {node:?} must match [A-Za-z0-9._-]{{1,64}}"
            ));
        }
        if self.store.backend == StoreBackend::Postgres {
            check_secret_source(
                "postgres.url_file",
                self.postgres.url_file.as_deref(),
                ENV_POSTGRES_URL,
                env,
                p,
            );
            let schema = &self.postgres.schema;
            if !odgw_keystore::valid_schema(schema) {
                p.push(format!(
                    "postgres.schema: {schema:?} must match [a-z_][a-z0-9_]{{0,62}}"
                ));
            }
            if self.postgres.pool_size == 0 {
                p.push("postgres.pool_size: must be at least 1".into());
            }
            if self.postgres.connect_timeout.0.is_zero() {
                p.push("postgres.connect_timeout: must be greater than zero".into());
            }
            if self.postgres.poll_interval.0.is_zero() {
                p.push("postgres.poll_interval: must be greater than zero".into());
            }
        }
        if self.limits.backend == LimitsBackend::Redis {
            check_secret_source(
                "redis.url_file",
                self.redis.url_file.as_deref(),
                ENV_REDIS_URL,
                env,
                p,
            );
            let prefix = &self.redis.key_prefix;
            if prefix.is_empty()
                || prefix.len() > 64
                || prefix.bytes().any(|b| !b.is_ascii_graphic())
            {
                p.push(format!(
                    "redis.key_prefix: {prefix:?} must be 1 to 64 printable characters without spaces"
                ));
            }
            if self.redis.timeout.0.is_zero() {
                p.push("redis.timeout: must be greater than zero".into());
            }
        }
    }
}

/// The known keys of each section, for "unknown key" errors and env overrides.
fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    Some(match section {
        "server" => &[
            "listen",
            "admin_listen",
            "max_body",
            "shutdown_grace",
            "tls_cert_file",
            "tls_key_file",
            "admin_tls_cert_file",
            "admin_tls_key_file",
            "node_id",
        ],
        "upstream" => &[
            "base_url",
            "developer_key_file",
            "connect_timeout",
            "timeout",
        ],
        "auth" => &[
            "tenant_claim",
            "leeway",
            "max_lifetime",
            "require_scopes",
            "issuers",
        ],
        "admin" => &["token_file"],
        "store" => &["backend", "path", "master_key_file"],
        "limits" => &[
            "backend",
            "tenant_rate",
            "tenant_burst",
            "queue_timeout",
            "queue_depth",
            "subject_rate",
            "subject_burst",
        ],
        "cache" => &["routes", "ttl", "max_size"],
        "audit" => &["path", "fail_closed", "write_timeout"],
        "postgres" => &[
            "url_file",
            "schema",
            "pool_size",
            "connect_timeout",
            "poll_interval",
        ],
        "redis" => &["url_file", "key_prefix", "on_failure", "timeout"],
        "console" => &[
            "issuer",
            "client_id",
            "client_secret_file",
            "redirect_url",
            "reviewer_scope",
            "session_ttl",
            "secure_cookies",
        ],
        _ => return None,
    })
}

const ISSUER_KEYS: &[&str] = &[
    "issuer",
    "audiences",
    "algorithms",
    "jwks_url",
    "public_key_file",
    "secret_file",
];

/// `ODGW_SERVER__LISTEN=...` → `server.listen`. The value is read as a TOML
/// value when it parses as one (numbers, booleans, arrays), else as a string.
fn apply_env_overrides(table: &mut Table, env: &dyn Env, problems: &mut Vec<String>) {
    let mut vars = env.vars();
    vars.sort();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("ODGW_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        match section_keys(&section) {
            Some(keys) if keys.contains(&key.as_str()) => {}
            _ => {
                problems.push(format!("{name}: no config key {section}.{key}"));
                continue;
            }
        }
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(Value::String(raw));
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match section_table {
            Value::Table(t) => {
                t.insert(key, value);
            }
            _ => problems.push(format!("{section}: must be a table")),
        }
    }
}

/// Checks every key of every section on its own, so that all problems are
/// reported together rather than the first one serde meets.
fn check_shape(table: &Table, problems: &mut Vec<String>) {
    for (section, value) in table {
        let Some(keys) = section_keys(section) else {
            problems.push(format!("{section}: unknown section"));
            continue;
        };
        let Value::Table(entries) = value else {
            problems.push(format!("{section}: must be a table"));
            continue;
        };
        for (key, value) in entries {
            let path = format!("{section}.{key}");
            if !keys.contains(&key.as_str()) {
                problems.push(format!("{path}: unknown key"));
                continue;
            }
            check_value(section, key, &path, value, problems);
        }
    }
}

fn check_value(section: &str, key: &str, path: &str, value: &Value, problems: &mut Vec<String>) {
    fn is<T: DeserializeOwned>(path: &str, value: &Value, problems: &mut Vec<String>) {
        if let Err(e) = value.clone().try_into::<T>() {
            problems.push(format!("{path}: {}", e.message()));
        }
    }
    match (section, key) {
        ("server", "listen" | "admin_listen") => is::<SocketAddr>(path, value, problems),
        ("server", "max_body") | ("cache", "max_size") => is::<ByteSize>(path, value, problems),
        ("limits", "tenant_rate" | "subject_rate") => is::<Rate>(path, value, problems),
        ("limits", "tenant_burst" | "subject_burst") => is::<u32>(path, value, problems),
        ("limits", "queue_depth") | ("postgres", "pool_size") => is::<usize>(path, value, problems),
        ("store", "backend") => is::<StoreBackend>(path, value, problems),
        ("limits", "backend") => is::<LimitsBackend>(path, value, problems),
        ("redis", "on_failure") => is::<OnRedisFailure>(path, value, problems),
        ("auth", "require_scopes") | ("audit", "fail_closed") | ("console", "secure_cookies") => {
            is::<bool>(path, value, problems)
        }
        ("cache", "routes") => is::<Vec<String>>(path, value, problems),
        ("auth", "issuers") => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_issuer_shape(&format!("{path}[{i}]"), item, problems);
                }
            }
            _ => problems.push(format!(
                "{path}: must be an array of [[auth.issuers]] tables"
            )),
        },
        (
            _,
            "shutdown_grace" | "connect_timeout" | "timeout" | "leeway" | "max_lifetime"
            | "queue_timeout" | "ttl" | "write_timeout" | "poll_interval" | "session_ttl",
        ) => is::<HumanDuration>(path, value, problems),
        _ => is::<String>(path, value, problems),
    }
}

fn check_issuer_shape(path: &str, value: &Value, problems: &mut Vec<String>) {
    let Value::Table(entries) = value else {
        problems.push(format!("{path}: must be a table"));
        return;
    };
    for (key, value) in entries {
        let key_path = format!("{path}.{key}");
        if !ISSUER_KEYS.contains(&key.as_str()) {
            problems.push(format!("{key_path}: unknown key"));
        } else if matches!(key.as_str(), "audiences" | "algorithms") {
            if value.clone().try_into::<Vec<String>>().is_err() {
                problems.push(format!("{key_path}: must be an array of strings"));
            }
        } else if value.as_str().is_none() {
            problems.push(format!("{key_path}: must be a string"));
        }
    }
    for required in ["issuer", "audiences", "algorithms"] {
        if !entries.contains_key(required) {
            problems.push(format!("{path}.{required}: missing"));
        }
    }
}

const HMAC_ALGS: &[&str] = &["HS256", "HS384", "HS512"];
const ASYMMETRIC_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn check_issuer(path: &str, issuer: &IssuerConfig, p: &mut Vec<String>) {
    if issuer.issuer.trim().is_empty() {
        p.push(format!("{path}.issuer: must not be empty"));
    }
    if issuer.audiences.is_empty() || issuer.audiences.iter().any(|a| a.is_empty()) {
        p.push(format!(
            "{path}.audiences: list at least one non-empty audience"
        ));
    }
    if issuer.algorithms.is_empty() {
        p.push(format!("{path}.algorithms: list at least one algorithm"));
    }
    for alg in &issuer.algorithms {
        if !HMAC_ALGS.contains(&alg.as_str()) && !ASYMMETRIC_ALGS.contains(&alg.as_str()) {
            p.push(format!(
                "{path}.algorithms: {alg:?} is not supported (HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)"
            ));
        }
    }
    let sources = [
        issuer.jwks_url.is_some(),
        issuer.public_key_file.is_some(),
        issuer.secret_file.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if sources != 1 {
        p.push(format!(
            "{path}: set exactly one of jwks_url, public_key_file, secret_file"
        ));
    }
    let hmac = issuer
        .algorithms
        .iter()
        .any(|a| HMAC_ALGS.contains(&a.as_str()));
    let asym = issuer
        .algorithms
        .iter()
        .any(|a| ASYMMETRIC_ALGS.contains(&a.as_str()));
    if hmac && asym {
        p.push(format!(
            "{path}.algorithms: do not mix HS* with public-key algorithms in one issuer"
        ));
    }
    if issuer.secret_file.is_some() && asym {
        p.push(format!(
            "{path}.secret_file: only HS* algorithms use a secret_file"
        ));
    }
    if (issuer.public_key_file.is_some() || issuer.jwks_url.is_some()) && hmac {
        p.push(format!(
            "{path}.algorithms: HS* algorithms need a secret_file, not a public key"
        ));
    }
    if let Some(url) = &issuer.jwks_url {
        check_base_url(&format!("{path}.jwks_url"), url, p);
    }
    for file in [&issuer.public_key_file, &issuer.secret_file]
        .into_iter()
        .flatten()
    {
        check_readable(path, file, p);
    }
}

/// Whether `url`'s host is a loopback address or `localhost`.
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn check_base_url(path: &str, url: &str, p: &mut Vec<String>) {
    match url.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some_and(|h| !h.is_empty()) => {}
        _ => p.push(format!(
            "{path}: {url:?} must be an http:// or https:// URL"
        )),
    }
}

/// Both files or neither; when both, they must parse and belong together.
fn check_tls(cert: (&str, Option<&Path>), key: (&str, Option<&Path>), p: &mut Vec<String>) {
    match (cert.1, key.1) {
        (None, None) => {}
        (Some(_), None) => p.push(format!("{}: set together with {}", key.0, cert.0)),
        (None, Some(_)) => p.push(format!("{}: set together with {}", cert.0, key.0)),
        (Some(cert_file), Some(key_file)) => {
            if let Err(e) = crate::tls::load_certified_key(cert_file, key_file) {
                p.push(format!("{}: {e}", cert.0));
            }
        }
    }
}

fn check_readable(path: &str, file: &Path, p: &mut Vec<String>) {
    if let Err(e) = std::fs::metadata(file).and_then(|m| {
        if m.is_file() {
            Ok(())
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    }) {
        p.push(format!("{path}: cannot read {}: {e}", file.display()));
    }
}

fn check_secret_source(
    path: &str,
    file: Option<&Path>,
    env_name: &str,
    env: &dyn Env,
    p: &mut Vec<String>,
) {
    if env.var(env_name).is_some_and(|v| !v.trim().is_empty()) {
        return;
    }
    match file {
        Some(file) => check_readable(path, file, p),
        None => p.push(format!(
            "{path}: not set, and env {env_name} is not set either"
        )),
    }
}

/// Reads a secret from env `env_name` if set, else from `file`, trimming
/// surrounding whitespace (SPEC §2). Errors name the source, never the value.
pub fn read_secret(
    file: Option<&Path>,
    env_name: &str,
    env: &dyn Env,
) -> anyhow::Result<SecretString> {
    if let Some(value) = env.var(env_name) {
        let value = value.trim();
        if !value.is_empty() {
            return Ok(SecretString::new(value));
        }
    }
    let file = file.ok_or_else(|| anyhow::anyhow!("no {env_name} and no file configured"))?;
    read_secret_file(file)
}

/// Reads a secret file, trimming surrounding whitespace.
pub fn read_secret_file(file: &Path) -> anyhow::Result<SecretString> {
    let raw = std::fs::read(file)
        .map_err(|e| anyhow::anyhow!("cannot read secret file {}: {e}", file.display()))?;
    let raw = zeroize::Zeroizing::new(raw);
    let text = std::str::from_utf8(&raw)
        .map_err(|_| anyhow::anyhow!("secret file {} is not UTF-8 text", file.display()))?;
    let text = text.trim();
    if text.is_empty() {
        anyhow::bail!("secret file {} is empty", file.display());
    }
    Ok(SecretString::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn secrets_env() -> BTreeMap<String, String> {
        env(&[
            (ENV_DEVELOPER_KEY, "dev"),
            (ENV_ADMIN_TOKEN, "admin"),
            (ENV_MASTER_KEY, "master"),
        ])
    }

    const MINIMAL: &str = r#"
        [[auth.issuers]]
        issuer = "https://idp.example.com/"
        audiences = ["odgw"]
        algorithms = ["RS256"]
        jwks_url = "https://idp.example.com/jwks.json"
    "#;

    #[test]
    fn example_config_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/odgw.example.toml"
        ))
        .unwrap();
        // The example names files relative to where odgw runs; point them
        // into a temp dir (changing the cwd would race other tests).
        let root = dir.path().display().to_string();
        let text = text
            .replace("\"secrets/", &format!("\"{root}/secrets/"))
            .replace("\"keys/", &format!("\"{root}/keys/"));
        for f in [
            "secrets/developer_key",
            "secrets/admin_token",
            "secrets/master_key",
            "secrets/hs256",
            "keys/idp.pem",
        ] {
            let f = dir.path().join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "x").unwrap();
        }
        let result = Config::from_toml_str(&text, &BTreeMap::new());
        let config = result.unwrap();
        assert_eq!(config.server.listen.port(), 8080);
        assert_eq!(config.auth.issuers.len(), 3);
        assert_eq!(config.cache.routes, vec!["/preferences".to_string()]);
    }

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

    #[test]
    fn reports_every_bad_key_at_once() {
        let text = format!(
            "{MINIMAL}\n[server]\nlisten = \"nope\"\nbogus = 1\n[limits]\nqueue_timeout = \"10 parsecs\"\ntenant_rate = \"fast\"\n[nosuch]\nx = 1\n"
        );
        let err = Config::from_toml_str(&text, &secrets_env()).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("server.listen"), "{all}");
        assert!(all.contains("server.bogus: unknown key"), "{all}");
        assert!(all.contains("limits.queue_timeout"), "{all}");
        assert!(all.contains("limits.tenant_rate"), "{all}");
        assert!(all.contains("nosuch: unknown section"), "{all}");
        assert_eq!(err.0.len(), 5, "{all}");
    }

    #[test]
    fn missing_secret_files_are_reported() {
        let text = format!("{MINIMAL}\n[admin]\ntoken_file = \"/nonexistent/admin\"\n");
        let err = Config::from_toml_str(&text, &env(&[])).unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("admin.token_file: cannot read /nonexistent/admin"),
            "{all}"
        );
        assert!(
            all.contains("upstream.developer_key_file: not set"),
            "{all}"
        );
        assert!(all.contains("store.master_key_file: not set"), "{all}");
    }

    #[test]
    fn env_overrides_apply_and_unknown_env_keys_fail() {
        let mut e = secrets_env();
        e.insert("ODGW_SERVER__LISTEN".into(), "127.0.0.1:9999".into());
        e.insert("ODGW_LIMITS__QUEUE_DEPTH".into(), "5".into());
        let c = Config::from_toml_str(MINIMAL, &e).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.limits.queue_depth, 5);

        e.insert("ODGW_SERVER__NOPE".into(), "1".into());
        let err = Config::from_toml_str(MINIMAL, &e).unwrap_err();
        assert!(err.to_string().contains("ODGW_SERVER__NOPE"), "{err}");
    }

    #[test]
    fn issuer_rules() {
        let text = r#"
            [[auth.issuers]]
            issuer = "a"
            audiences = ["odgw"]
            algorithms = ["HS256", "RS256"]
            jwks_url = "https://idp/jwks"
            secret_file = "/nonexistent"
            [[auth.issuers]]
            issuer = "a"
            audiences = []
            algorithms = ["none"]
            colour = "blue"
        "#;
        let err = Config::from_toml_str(text, &secrets_env()).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("auth.issuers[1].colour: unknown key"), "{all}");
        // shape errors stop before semantic checks; fix the shape and look again
        let text = text.replace("colour = \"blue\"", "");
        let all = Config::from_toml_str(&text, &secrets_env())
            .unwrap_err()
            .to_string();
        for expected in [
            "auth.issuers[0]: set exactly one of",
            "do not mix HS*",
            "auth.issuers[1].audiences",
            "\"none\" is not supported",
            "configured twice",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }
    }

    fn cert_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn tls_files_come_in_pairs_and_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = cert_pair(dir.path(), "a");
        let (_, key_b) = cert_pair(dir.path(), "b");
        let with = |server: String| {
            Config::from_toml_str(&format!("{MINIMAL}\n[server]\n{server}"), &secrets_env())
        };
        let all = with(format!(
            "tls_cert_file = {:?}\n",
            cert_a.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            all.contains("server.tls_key_file: set together with server.tls_cert_file"),
            "{all}"
        );
        let all = with(format!(
            "admin_tls_cert_file = {:?}\nadmin_tls_key_file = {:?}\n",
            cert_a.display().to_string(),
            key_b.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(all.contains("server.admin_tls_cert_file:"), "{all}");
        assert!(all.contains("does not match"), "{all}");
        let c = with(format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert_a.display().to_string(),
            key_a.display().to_string()
        ))
        .unwrap();
        assert_eq!(
            c.server.data_tls(),
            Some((cert_a.as_path(), key_a.as_path()))
        );
        assert_eq!(c.server.admin_tls(), None);
    }

    #[test]
    fn changed_keys_names_each_differing_key() {
        let a = Config::from_toml_str(MINIMAL, &secrets_env()).unwrap();
        assert!(changed_keys(&a, &a.clone()).is_empty());
        let mut b = a.clone();
        b.limits.subject_burst = 3;
        b.server.tls_cert_file = Some("/etc/odgw/tls.crt".into());
        b.auth.issuers[0].audiences = vec!["other".into()];
        b.store.path = "elsewhere".into();
        assert_eq!(
            changed_keys(&a, &b),
            [
                "auth.issuers",
                "limits.subject_burst",
                "server.tls_cert_file",
                "store.path"
            ]
        );
    }

    #[test]
    fn cluster_backends_need_their_urls_and_valid_settings() {
        let text = format!(
            "{MINIMAL}\n[store]\nbackend = \"postgres\"\n[limits]\nbackend = \"redis\"\n\
             [postgres]\nschema = \"Bad-Schema\"\npool_size = 0\n[redis]\nkey_prefix = \"a b\"\n\
             [server]\nnode_id = \"no/slash\"\n"
        );
        let all = Config::from_toml_str(&text, &secrets_env())
            .unwrap_err()
            .to_string();
        for expected in [
            "postgres.url_file: not set, and env ODGW_POSTGRES_URL is not set either",
            "redis.url_file: not set, and env ODGW_REDIS_URL is not set either",
            "postgres.schema: \"Bad-Schema\"",
            "postgres.pool_size: must be at least 1",
            "redis.key_prefix",
            "server.node_id",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }

        let mut e = secrets_env();
        e.insert(ENV_POSTGRES_URL.into(), "postgres://db/odgw".into());
        e.insert(ENV_REDIS_URL.into(), "redis://cache".into());
        e.insert("ODGW_STORE__BACKEND".into(), "postgres".into());
        e.insert("ODGW_LIMITS__BACKEND".into(), "redis".into());
        e.insert("ODGW_REDIS__ON_FAILURE".into(), "closed".into());
        let c = Config::from_toml_str(MINIMAL, &e).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres);
        assert_eq!(c.limits.backend, LimitsBackend::Redis);
        assert_eq!(c.redis.on_failure, OnRedisFailure::Closed);
        assert_eq!(c.postgres.schema, "odgw");
        assert!(!c.server.node_id.is_empty());

        let bad =
            format!("{MINIMAL}\n[store]\nbackend = \"mysql\"\n[redis]\non_failure = \"maybe\"\n");
        let all = Config::from_toml_str(&bad, &secrets_env())
            .unwrap_err()
            .to_string();
        assert!(all.contains("store.backend"), "{all}");
        assert!(all.contains("redis.on_failure"), "{all}");
    }

    #[test]
    fn console_sign_in_needs_a_whole_client() {
        let text = format!(
            "{MINIMAL}\n[console]\nissuer = \"not a url\"\nredirect_url = \"https://odgw/elsewhere\"\nreviewer_scope = \"two scopes\"\nsession_ttl = \"48h\"\n"
        );
        let all = Config::from_toml_str(&text, &secrets_env())
            .unwrap_err()
            .to_string();
        for expected in [
            "console.issuer",
            "console.client_id: required",
            "console.client_secret_file: not set, and env ODGW_CONSOLE_CLIENT_SECRET",
            "console.redirect_url: must end with /console/callback",
            "console.reviewer_scope",
            "console.session_ttl",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in {all}");
        }
        let orphan = format!("{MINIMAL}\n[console]\nclient_id = \"x\"\n");
        let all = Config::from_toml_str(&orphan, &secrets_env())
            .unwrap_err()
            .to_string();
        assert!(all.contains("console.issuer: required"), "{all}");

        let mut e = secrets_env();
        e.insert(ENV_CONSOLE_CLIENT_SECRET.into(), "s".into());
        let remote = |extra: &str| {
            format!("{MINIMAL}\n[console]\nissuer = \"https://idp.example.com/\"\nclient_id = \"odgw\"\n{extra}")
        };
        let all = Config::from_toml_str(&remote(""), &e)
            .unwrap_err()
            .to_string();
        assert!(all.contains("console.redirect_url: required"), "{all}");
        let all = Config::from_toml_str(
            &remote("redirect_url = \"http://odgw.example.com/console/callback\""),
            &e,
        )
        .unwrap_err()
        .to_string();
        assert!(
            all.contains("console.redirect_url: must be https://"),
            "{all}"
        );
        let plain = format!("{MINIMAL}\n[console]\nissuer = \"http://idp.example.com/\"\nclient_id = \"odgw\"\nredirect_url = \"https://odgw/console/callback\"\n");
        let all = Config::from_toml_str(&plain, &e).unwrap_err().to_string();
        assert!(all.contains("console.issuer: must be https://"), "{all}");
        // A provider on this machine may use http and the Host-derived callback.
        let local = format!(
            "{MINIMAL}\n[console]\nissuer = \"http://127.0.0.1:9999\"\nclient_id = \"odgw\"\n"
        );
        Config::from_toml_str(&local, &e).unwrap();
        let good = remote("redirect_url = \"https://odgw.example.com/console/callback\"");
        let c = Config::from_toml_str(&good, &e).unwrap();
        assert_eq!(c.console.secure_cookies, None);
        let mut proxied = e.clone();
        proxied.insert("ODGW_CONSOLE__SECURE_COOKIES".into(), "true".into());
        let behind_proxy = Config::from_toml_str(&good, &proxied).unwrap();
        assert_eq!(behind_proxy.console.secure_cookies, Some(true));
        assert_eq!(c.console.reviewer_scope, "odgw:audit");
        assert_eq!(c.console.session_ttl, secs(8 * 3600));
    }

    #[test]
    fn secrets_are_trimmed_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "  abc \n").unwrap();
        assert_eq!(
            read_secret(Some(&f), "X", &env(&[])).unwrap().expose(),
            "abc"
        );
        assert_eq!(
            read_secret(Some(&f), "X", &env(&[("X", "fromenv\n")]))
                .unwrap()
                .expose(),
            "fromenv"
        );
        std::fs::write(&f, "\n").unwrap();
        assert!(read_secret(Some(&f), "X", &env(&[])).is_err());
    }
}
