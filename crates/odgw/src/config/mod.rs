//! Typed configuration (SPEC §2): TOML file, `ODGW_<SECTION>__<KEY>` env
//! overrides, defaults, and validation that reports every bad key at once
//! before any port is bound.
//!
//! - `schema`: the structs, one per section, and their defaults;
//! - `keys`: the table of known sections and keys, derived from those structs
//!   (a field added there is a known key at once, in files and env overrides);
//! - `load`: reading the file and the environment, the key-by-key shape
//!   check, and secrets;
//! - `validate`: the checks that need more than one key, or the file system;
//! - `diff`: which keys a reload changes.

mod diff;
mod keys;
mod load;
mod schema;
mod validate;

use std::fmt;

pub use diff::changed_keys;
pub use load::{
    read_secret, read_secret_file, ConfigSource, Env, ProcessEnv, ENV_ADMIN_TOKEN,
    ENV_CONSOLE_CLIENT_SECRET, ENV_DEVELOPER_KEY, ENV_MASTER_KEY, ENV_POSTGRES_URL, ENV_REDIS_URL,
};
pub use schema::{
    AdminConfig, AuditConfig, AuthConfig, CacheConfig, Config, ConsoleConfig, IssuerConfig,
    LimitsBackend, LimitsConfig, OnRedisFailure, PostgresConfig, RedisConfig, ServerConfig,
    StoreBackend, StoreConfig, UpstreamConfig,
};

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

/// What the tests of every part share: an env map and the smallest valid file.
#[cfg(test)]
mod test_support {
    use std::collections::BTreeMap;

    use super::{ENV_ADMIN_TOKEN, ENV_DEVELOPER_KEY, ENV_MASTER_KEY};

    pub fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn secrets_env() -> BTreeMap<String, String> {
        env(&[
            (ENV_DEVELOPER_KEY, "dev"),
            (ENV_ADMIN_TOKEN, "admin"),
            (ENV_MASTER_KEY, "master"),
        ])
    }

    pub const MINIMAL: &str = r#"
        [[auth.issuers]]
        issuer = "https://idp.example.com/"
        audiences = ["odgw"]
        algorithms = ["RS256"]
        jwks_url = "https://idp.example.com/jwks.json"
    "#;
}
