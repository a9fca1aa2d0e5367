//! Reading a configuration: the TOML file, `ODGW_<SECTION>__<KEY>` env
//! overrides, a key-by-key shape check that reports every bad key at once,
//! and the secrets that may come from env or from files.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use odgw_core::SecretString;
use toml::{Table, Value};

use super::{keys, Config, ConfigErrors};

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
}

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
        match keys::keys_at(&[&section]) {
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
        let Some(keys) = keys::keys_at(&[section]) else {
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

/// One known key's value, checked as its field's type; `[[auth.issuers]]`
/// is checked table by table, key by key.
fn check_value(section: &str, key: &str, path: &str, value: &Value, problems: &mut Vec<String>) {
    if [section, key] != keys::ISSUERS {
        if let Some(message) = keys::check_key(section, key, value) {
            problems.push(format!("{path}: {message}"));
        }
        return;
    }
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_issuer_shape(&format!("{path}[{i}]"), item, problems);
            }
        }
        _ => problems.push(format!(
            "{path}: must be an array of [[auth.issuers]] tables"
        )),
    }
}

/// One `[[auth.issuers]]` table: every key known and of its field's type,
/// every key the struct cannot do without present.
fn check_issuer_shape(path: &str, value: &Value, problems: &mut Vec<String>) {
    let Value::Table(entries) = value else {
        problems.push(format!("{path}: must be a table"));
        return;
    };
    let known = keys::keys_at(keys::ISSUERS).unwrap_or_default();
    for (key, value) in entries {
        let key_path = format!("{path}.{key}");
        if !known.contains(&key.as_str()) {
            problems.push(format!("{key_path}: unknown key"));
        } else if !keys::issuer_key_fits(key, value) {
            problems.push(if keys::issuer_key_is_list(key) {
                format!("{key_path}: must be an array of strings")
            } else {
                format!("{key_path}: must be a string")
            });
        }
    }
    for required in keys::issuer_required_keys() {
        if !entries.contains_key(required) {
            problems.push(format!("{path}.{required}: missing"));
        }
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
    use crate::config::test_support::{env, secrets_env, MINIMAL};

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
    fn issuer_shape_is_checked_key_by_key() {
        let text = r#"
            [[auth.issuers]]
            issuer = 1
            audiences = "odgw"
            algorithms = ["RS256"]
            secret_file = 2
            colour = "blue"
            [[auth.issuers]]
            jwks_url = "https://idp/jwks"
        "#;
        let err = Config::from_toml_str(text, &secrets_env()).unwrap_err();
        assert_eq!(
            err.0,
            [
                "auth.issuers[0].audiences: must be an array of strings",
                "auth.issuers[0].colour: unknown key",
                "auth.issuers[0].issuer: must be a string",
                "auth.issuers[0].secret_file: must be a string",
                "auth.issuers[1].issuer: missing",
                "auth.issuers[1].audiences: missing",
                "auth.issuers[1].algorithms: missing",
            ]
        );
        let err = Config::from_toml_str("[auth]\nissuers = [1]\n", &secrets_env()).unwrap_err();
        assert_eq!(err.0, ["auth.issuers[0]: must be a table"]);
        let err = Config::from_toml_str("[auth]\nissuers = 1\n", &secrets_env()).unwrap_err();
        assert_eq!(
            err.0,
            ["auth.issuers: must be an array of [[auth.issuers]] tables"]
        );
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
