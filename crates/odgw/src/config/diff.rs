//! What a reload changes: configurations compared key by key.

use toml::{Table, Value};

use super::Config;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{secrets_env, MINIMAL};

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
}
