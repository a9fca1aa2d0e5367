//! Semantic checks of a parsed configuration: rules that need more than one
//! key (TLS pairs, issuers, cluster backends, the console's OpenID client),
//! and files that must be readable, all reported at once.

use std::path::Path;

use super::{
    Config, ConfigErrors, Env, IssuerConfig, LimitsBackend, StoreBackend, ENV_ADMIN_TOKEN,
    ENV_CONSOLE_CLIENT_SECRET, ENV_DEVELOPER_KEY, ENV_MASTER_KEY, ENV_POSTGRES_URL, ENV_REDIS_URL,
};

impl Config {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{
        schema::secs,
        test_support::{env, secrets_env, MINIMAL},
        OnRedisFailure,
    };

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
}
