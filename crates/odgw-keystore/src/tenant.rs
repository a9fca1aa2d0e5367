//! The tenant types callers see, and validation of what an operator submits.

use odgw_core::{Rate, SecretString, Tenant, TenantAccess, TenantId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::StoreError;

/// Longest customer or developer key accepted.
pub const MAX_KEY_CHARS: usize = 256;
/// Longest tenant display name accepted.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest base URL accepted.
pub const MAX_BASE_URL_CHARS: usize = 2048;

/// One tenant as stored, with its keys decrypted. `Debug` is safe to log:
/// the keys are [`SecretString`]s and print `[redacted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: Option<String>,
    /// Open Dental customer key (one per practice).
    pub customer_key: SecretString,
    /// Developer key for this tenant; `None` means the configured
    /// `upstream.developer_key_file` applies.
    pub developer_key: Option<SecretString>,
    /// Open Dental base URL without a trailing slash; `None` means
    /// `upstream.base_url`.
    pub base_url: Option<String>,
    /// Upstream budget; `None` means `limits.tenant_rate`.
    pub rate: Option<Rate>,
    /// Upstream burst; `None` means `limits.tenant_burst`.
    pub burst: Option<u32>,
    pub enabled: bool,
    /// RFC 3339 UTC, when the tenant was first stored (kept on replace).
    pub created_at: String,
    /// RFC 3339 UTC, when the tenant was last written.
    pub updated_at: String,
    /// Changes on every write to this tenant and is never reused in this
    /// store, even after delete and re-create, so caches keyed by it never
    /// serve entries made under an earlier key pair.
    pub generation: u64,
}

/// Gateway-wide settings a tenant falls back to when it has no own value.
#[derive(Debug, Clone)]
pub struct TenantDefaults {
    /// `upstream.base_url`, without a trailing slash.
    pub base_url: String,
    /// `upstream.developer_key_file` / `ODGW_DEVELOPER_KEY`, if configured.
    pub developer_key: Option<SecretString>,
    /// `limits.tenant_rate`.
    pub rate: Rate,
    /// `limits.tenant_burst`.
    pub burst: u32,
}

/// A tenant has no developer key of its own and none is configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {0} has no developer key and upstream.developer_key_file is not configured")]
pub struct MissingDeveloperKey(pub TenantId);

impl TenantRecord {
    /// What the admin API shows for this tenant.
    pub fn summary(&self) -> TenantSummary {
        TenantSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            customer_key_hint: self.customer_key.hint(),
            has_developer_key: self.developer_key.is_some(),
            base_url: self.base_url.clone(),
            rate: self.rate,
            burst: self.burst,
            enabled: self.enabled,
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    /// The [`Tenant`] request extension: own settings over `defaults`, and the
    /// `Authorization: ODFHIR {developer}/{customer}` value. Does not look at
    /// `enabled`; the caller refuses disabled tenants.
    pub fn to_tenant(&self, defaults: &TenantDefaults) -> Result<Tenant, MissingDeveloperKey> {
        let developer = self
            .developer_key
            .as_ref()
            .or(defaults.developer_key.as_ref())
            .ok_or_else(|| MissingDeveloperKey(self.id.clone()))?;
        let (developer, customer) = (developer.expose(), self.customer_key.expose());
        // Sized up front so the string never reallocates and leaves a copy of
        // the keys in freed memory.
        let mut value = String::with_capacity(7 + developer.len() + 1 + customer.len());
        value.push_str("ODFHIR ");
        value.push_str(developer);
        value.push('/');
        value.push_str(customer);
        Ok(Tenant::new(TenantAccess {
            id: self.id.clone(),
            base_url: self
                .base_url
                .clone()
                .unwrap_or_else(|| defaults.base_url.clone()),
            authorization: SecretString::new(value),
            rate: self.rate.unwrap_or(defaults.rate),
            burst: self.burst.unwrap_or(defaults.burst),
            generation: self.generation,
        }))
    }
}

/// A tenant as the admin API returns it: metadata and a hint of the customer
/// key (its last four characters), never a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSummary {
    #[serde(serialize_with = "ser_tenant_id", deserialize_with = "de_tenant_id")]
    pub id: TenantId,
    pub name: Option<String>,
    /// Last four characters of the customer key (`****` for short keys).
    pub customer_key_hint: String,
    pub has_developer_key: bool,
    pub base_url: Option<String>,
    pub rate: Option<Rate>,
    pub burst: Option<u32>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

fn ser_tenant_id<S: Serializer>(id: &TenantId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.as_str())
}

fn de_tenant_id<'de, D: Deserializer<'de>>(d: D) -> Result<TenantId, D::Error> {
    let text = String::deserialize(d)?;
    TenantId::parse(&text).map_err(serde::de::Error::custom)
}

/// What `PUT /admin/v1/tenants/{id}` submits: a full replacement of the
/// tenant. `enabled` defaults to `true`. Deserializes from the admin API's
/// JSON body (unknown fields refused).
#[derive(Debug, Clone)]
pub struct TenantInput {
    pub name: Option<String>,
    pub customer_key: SecretString,
    pub developer_key: Option<SecretString>,
    pub base_url: Option<String>,
    pub rate: Option<Rate>,
    pub burst: Option<u32>,
    pub enabled: Option<bool>,
}

impl TenantInput {
    /// An input with only the customer key set.
    pub fn new(customer_key: SecretString) -> Self {
        Self {
            name: None,
            customer_key,
            developer_key: None,
            base_url: None,
            rate: None,
            burst: None,
            enabled: None,
        }
    }
}

impl<'de> Deserialize<'de> for TenantInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            name: Option<String>,
            customer_key: String,
            developer_key: Option<String>,
            base_url: Option<String>,
            rate: Option<Rate>,
            burst: Option<u32>,
            enabled: Option<bool>,
        }
        let w = Wire::deserialize(d)?;
        // The key strings move into `SecretString` without a copy.
        Ok(Self {
            name: w.name,
            customer_key: SecretString::new(w.customer_key),
            developer_key: w.developer_key.map(SecretString::new),
            base_url: w.base_url,
            rate: w.rate,
            burst: w.burst,
            enabled: w.enabled,
        })
    }
}

/// Whether a `put` made a new tenant or replaced one (201 vs 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

/// Checks `input` and returns it normalized (base URL without trailing
/// slash). Errors name the field and the rule, never the value of a key.
pub(crate) fn validate(mut input: TenantInput) -> Result<TenantInput, StoreError> {
    check_key("customer_key", &input.customer_key)?;
    if let Some(dev) = &input.developer_key {
        check_key("developer_key", dev)?;
    }
    if let Some(name) = &input.name {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(StoreError::InvalidInput(format!(
                "name must be 1 to {MAX_NAME_CHARS} characters without control characters (omit it for none)"
            )));
        }
    }
    if let Some(url) = input.base_url.take() {
        input.base_url = Some(normalize_base_url(&url)?);
    }
    if let Some(rate) = input.rate {
        // Only rates written in the config syntax survive a round trip
        // through the stored text unchanged.
        if rate.to_string().parse::<Rate>().ok() != Some(rate) {
            return Err(StoreError::InvalidInput(
                "rate must be N/s, N/min, N/h or unlimited".to_owned(),
            ));
        }
    }
    if input.burst == Some(0) {
        return Err(StoreError::InvalidInput(
            "burst must be at least 1".to_owned(),
        ));
    }
    Ok(input)
}

fn check_key(field: &str, key: &SecretString) -> Result<(), StoreError> {
    let text = key.expose();
    // Visible ASCII only: the keys go into an HTTP header value, and a
    // stray space or newline from a pasted key would be sent verbatim.
    let ok = !text.is_empty()
        && text.len() <= MAX_KEY_CHARS
        && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!(
            "{field} must be 1 to {MAX_KEY_CHARS} visible ASCII characters (no spaces or control characters)"
        )))
    }
}

fn normalize_base_url(url: &str) -> Result<String, StoreError> {
    let bad = |why: &str| {
        StoreError::InvalidInput(format!(
            "base_url {why}; expected e.g. https://api.opendental.com/api/v1"
        ))
    };
    if url.len() > MAX_BASE_URL_CHARS || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(&format!(
            "must be at most {MAX_BASE_URL_CHARS} visible ASCII characters"
        )));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    if url.contains(['?', '#']) {
        return Err(bad("must not have a query or fragment"));
    }
    let (authority, _path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        // Credentials in the URL would be stored and shown in clear.
        return Err(bad("must not contain user credentials"));
    }
    let (host, port, host_ok) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').unwrap_or(("", ""));
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').unwrap_or("")),
            };
            let ok = host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            (host, port, ok)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let ok = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            (host, port, ok)
        }
    };
    let host_ok = host_ok && !host.is_empty();
    let port_ok =
        port.is_none_or(|p| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok());
    if !host_ok || !port_ok {
        return Err(bad("must have a valid host"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn input() -> TenantInput {
        TenantInput::new(SecretString::new("VzkmZEaUWOjnQX2z"))
    }

    fn err_of(i: TenantInput) -> String {
        validate(i).unwrap_err().to_string()
    }

    #[test]
    fn keys_are_checked_without_echoing_them() {
        for bad in ["", "has space", "tab\there", "new\nline", "nül-ascii"] {
            let mut i = input();
            i.customer_key = SecretString::new(bad);
            let msg = err_of(i);
            assert!(
                msg.starts_with("invalid tenant: customer_key must be"),
                "{msg}"
            );
            assert!(bad.is_empty() || !msg.contains(bad), "{msg}");
        }
        let mut i = input();
        i.customer_key = SecretString::new("k".repeat(MAX_KEY_CHARS + 1));
        assert!(err_of(i).contains("customer_key"));
        let mut i = input();
        i.customer_key = SecretString::new("k".repeat(MAX_KEY_CHARS));
        assert!(validate(i).is_ok());

        let mut i = input();
        i.developer_key = Some(SecretString::new("dev key"));
        assert!(err_of(i).contains("developer_key must be"));
    }

    #[test]
    fn base_urls_are_checked_and_normalized() {
        let norm = |u: &str| {
            let mut i = input();
            i.base_url = Some(u.to_owned());
            validate(i).map(|i| i.base_url.unwrap())
        };
        assert_eq!(
            norm("https://api.opendental.com/api/v1/").unwrap(),
            "https://api.opendental.com/api/v1"
        );
        assert_eq!(
            norm("http://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            norm("http://[::1]:9000/api/v1").unwrap(),
            "http://[::1]:9000/api/v1"
        );
        assert_eq!(norm("https://od.example//").unwrap(), "https://od.example");
        for bad in [
            "ftp://x.example",
            "api.opendental.com",
            "https://",
            "https:///api",
            "https://user:pw@x.example",
            "https://x.example/api?x=1",
            "https://x.example/#f",
            "https://x.example:port",
            "https://x.example:99999",
            "https://x.example:+80",
            "https://x.example:",
            "http://[::1/api",
            "https://x example",
            " https://x.example",
        ] {
            let msg = norm(bad).unwrap_err().to_string();
            assert!(msg.starts_with("invalid tenant: base_url"), "{bad}: {msg}");
        }
    }

    #[test]
    fn name_and_burst_limits() {
        let mut i = input();
        i.name = Some("n".repeat(MAX_NAME_CHARS + 1));
        assert!(err_of(i).contains("name must be 1 to 200"));
        let mut i = input();
        i.name = Some(String::new());
        assert!(err_of(i).contains("name must be"));
        let mut i = input();
        i.name = Some("Smile\u{7}Dental".to_owned());
        assert!(err_of(i).contains("name must be"));
        let mut i = input();
        i.name = Some("Zahnarztpraxis Müller".to_owned());
        assert!(validate(i).is_ok());
        let mut i = input();
        i.burst = Some(0);
        assert_eq!(err_of(i), "invalid tenant: burst must be at least 1");
        let mut i = input();
        i.rate = Some(Rate::Per {
            count: 1,
            period: Duration::from_secs(2),
        });
        assert!(err_of(i).contains("rate must be N/s, N/min, N/h or unlimited"));
        for ok in ["5/s", "5/min", "5/h", "unlimited"] {
            let mut i = input();
            i.rate = Some(ok.parse().unwrap());
            assert!(validate(i).is_ok(), "{ok}");
        }
    }

    #[test]
    fn input_deserializes_from_admin_json_and_refuses_unknown_fields() {
        let i: TenantInput = serde_json::from_str(
            r#"{"customer_key":"VzkmZEaUWOjnQX2z","rate":"2/s","burst":3,"enabled":false}"#,
        )
        .unwrap();
        assert_eq!(i.customer_key.expose(), "VzkmZEaUWOjnQX2z");
        assert_eq!(
            i.rate,
            Some(Rate::Per {
                count: 2,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!((i.burst, i.enabled), (Some(3), Some(false)));
        assert!(!format!("{i:?}").contains("VzkmZEaUWOjnQX2z"));
        assert!(serde_json::from_str::<TenantInput>(r#"{"customer_key":"k","colour":1}"#).is_err());
        assert!(serde_json::from_str::<TenantInput>(r#"{"name":"x"}"#).is_err());
    }

    #[test]
    fn to_tenant_builds_the_authorization_and_applies_defaults() {
        let record = TenantRecord {
            id: TenantId::parse("acme").unwrap(),
            name: None,
            customer_key: SecretString::new("CUSTOMERKEY1"),
            developer_key: None,
            base_url: None,
            rate: None,
            burst: Some(4),
            enabled: true,
            created_at: "2025-01-01T00:00:00Z".into(),
            updated_at: "2025-01-01T00:00:00Z".into(),
            generation: 9,
        };
        let mut defaults = TenantDefaults {
            base_url: "https://api.opendental.com/api/v1".into(),
            developer_key: None,
            rate: Rate::Unlimited,
            burst: 1,
        };
        assert_eq!(
            record.to_tenant(&defaults).unwrap_err().to_string(),
            "tenant acme has no developer key and upstream.developer_key_file is not configured"
        );
        defaults.developer_key = Some(SecretString::new("DEVKEY"));
        let t = record.to_tenant(&defaults).unwrap();
        assert_eq!(t.authorization.expose(), "ODFHIR DEVKEY/CUSTOMERKEY1");
        assert_eq!(t.base_url, "https://api.opendental.com/api/v1");
        assert_eq!((t.rate, t.burst, t.generation), (Rate::Unlimited, 4, 9));

        let mut own = record.clone();
        own.developer_key = Some(SecretString::new("OWNDEV"));
        own.base_url = Some("http://127.0.0.1:9".into());
        let t = own.to_tenant(&defaults).unwrap();
        assert_eq!(t.authorization.expose(), "ODFHIR OWNDEV/CUSTOMERKEY1");
        assert_eq!(t.base_url, "http://127.0.0.1:9");
    }
}
