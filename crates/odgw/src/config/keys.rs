//! The table of known sections and keys, derived from the schema's structs
//! rather than written out beside them: a field added to a struct is a known
//! key at once (in the file, in `ODGW_<SECTION>__<KEY>` overrides and in
//! `[[auth.issuers]]`), and its value is checked as the field's own type.
//!
//! The names come from what `#[derive(Deserialize)]` asks a deserializer
//! for: a [`Probe`] stands in for the TOML and records the field list of the
//! struct at a path, then stops. The value checks deserialize [`Config`] (or
//! one [`IssuerConfig`]) from a table holding only the key in question, so
//! every other key keeps its default and an error can only be about that
//! value.

use serde::de::{
    self, value::Error as ProbeError, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};
use serde::Deserialize;
use toml::{Table, Value};

use super::schema::{Config, IssuerConfig};

/// Where the keys of one `[[auth.issuers]]` table sit in [`Config`].
pub(super) const ISSUERS: &[&str] = &["auth", "issuers"];

/// The keys of the table at `path` in [`Config`]: `&[]` names the sections,
/// `&["server"]` the keys of `[server]`, [`ISSUERS`] those of one
/// `[[auth.issuers]]`. `None` when no table is there (an unknown section).
pub(super) fn keys_at(path: &[&str]) -> Option<&'static [&'static str]> {
    probe(path).fields
}

/// Whether the key at `path` in [`Config`] holds a list.
fn is_list(path: &[&str]) -> bool {
    probe(path).list
}

/// Whether `key` of `[[auth.issuers]]` holds a list (of strings, as
/// [`IssuerConfig`]'s lists all are).
pub(super) fn issuer_key_is_list(key: &str) -> bool {
    is_list(&[ISSUERS[0], ISSUERS[1], key])
}

/// Checks `section.key = value` on its own: `None` when `value` is what the
/// field deserializes from, else serde's message about it.
pub(super) fn check_key(section: &str, key: &str, value: &Value) -> Option<String> {
    let only_key = Table::from_iter([(key.to_owned(), value.clone())]);
    let table = Table::from_iter([(section.to_owned(), Value::Table(only_key))]);
    let error = Value::Table(table).try_into::<Config>().err()?;
    // serde's `PathBuf` expects a "path string"; odgw has always told users
    // that a path key takes "a string", like every other text key.
    Some(
        error
            .message()
            .replace("expected path string", "expected a string"),
    )
}

/// Whether `key = value` is acceptable in one `[[auth.issuers]]` table (the
/// other keys hold their defaults while it is checked).
pub(super) fn issuer_key_fits(key: &str, value: &Value) -> bool {
    let mut table = issuer_defaults();
    table.insert(key.to_owned(), value.clone());
    Value::Table(table).try_into::<IssuerConfig>().is_ok()
}

/// The keys every `[[auth.issuers]]` must set, in the struct's order: those
/// without which [`IssuerConfig`] does not deserialize.
pub(super) fn issuer_required_keys() -> Vec<&'static str> {
    let defaults = issuer_defaults();
    keys_at(ISSUERS)
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(|key| {
            let mut without = defaults.clone();
            without.remove(*key);
            Value::Table(without).try_into::<IssuerConfig>().is_err()
        })
        .collect()
}

/// A complete `[[auth.issuers]]` table: the defaults of every field that
/// serializes (an unset `Option` does not).
fn issuer_defaults() -> Table {
    match Value::try_from(IssuerConfig::default()) {
        Ok(Value::Table(table)) => table,
        // IssuerConfig is a struct of strings and lists: it always
        // serializes as a table.
        _ => Table::new(),
    }
}

/// What a [`Probe`] found at its path.
#[derive(Debug, Default)]
struct Found {
    /// The field names of the struct there, when it is one.
    fields: Option<&'static [&'static str]>,
    /// Whether the value there is a list.
    list: bool,
}

fn probe(path: &[&str]) -> Found {
    let mut found = Found::default();
    // Deserializing from a probe always fails: it asks for names and stops.
    let _ = Config::deserialize(Probe {
        path,
        found: &mut found,
    });
    found
}

/// A deserializer that holds no data: it walks `path` through the structs
/// (and lists of structs) that `Config`'s derived `Deserialize` asks it for,
/// and records what it finds at the end.
struct Probe<'a> {
    path: &'a [&'a str],
    found: &'a mut Found,
}

fn stop() -> ProbeError {
    de::Error::custom("probe: nothing to deserialize")
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            self.found.fields = Some(fields);
            return Err(stop());
        };
        if !fields.contains(first) {
            return Err(stop());
        }
        visitor.visit_map(OneEntry {
            key: Some(first),
            value: Some(Probe {
                path: rest,
                found: self.found,
            }),
        })
    }

    /// A list of tables is addressed like one of its tables.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.path.is_empty() {
            self.found.list = true;
        }
        visitor.visit_seq(OneItem(Some(self)))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(stop())
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The one key of a struct that a [`Probe`] walks into.
struct OneEntry<'a> {
    key: Option<&'a str>,
    value: Option<Probe<'a>>,
}

impl<'de> MapAccess<'de> for OneEntry<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.key
            .take()
            .map(|key| seed.deserialize(key.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(self.value.take().ok_or_else(stop)?)
    }
}

/// The one item of a list that a [`Probe`] walks into.
struct OneItem<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = ProbeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .take()
            .map(|probe| seed.deserialize(probe))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_keys_come_from_the_structs() {
        assert_eq!(
            keys_at(&[]).unwrap(),
            [
                "server", "upstream", "auth", "admin", "store", "limits", "cache", "audit",
                "postgres", "redis", "console"
            ]
        );
        // Optional keys, which a default config does not serialize, are known too.
        assert_eq!(
            keys_at(&["server"]).unwrap(),
            [
                "listen",
                "admin_listen",
                "max_body",
                "shutdown_grace",
                "tls_cert_file",
                "tls_key_file",
                "admin_tls_cert_file",
                "admin_tls_key_file",
                "node_id"
            ]
        );
        assert_eq!(
            keys_at(ISSUERS).unwrap(),
            [
                "issuer",
                "audiences",
                "algorithms",
                "jwks_url",
                "public_key_file",
                "secret_file"
            ]
        );
        assert_eq!(keys_at(&["nosuch"]), None);
        assert_eq!(keys_at(&["server", "listen"]), None);
        assert_eq!(keys_at(&["cache", "routes"]), None);
    }

    #[test]
    fn every_serialized_key_is_in_the_table() {
        let Value::Table(config) = Value::try_from(Config::default()).unwrap() else {
            panic!("a config serializes as a table");
        };
        for (section, value) in &config {
            let keys = keys_at(&[section]).unwrap();
            for key in value.as_table().unwrap().keys() {
                assert!(keys.contains(&key.as_str()), "{section}.{key}");
            }
        }
    }

    #[test]
    fn lists_and_required_issuer_keys() {
        assert!(is_list(&["cache", "routes"]));
        assert!(is_list(ISSUERS));
        assert!(issuer_key_is_list("audiences"));
        assert!(!issuer_key_is_list("jwks_url"));
        assert!(!is_list(&["server", "listen"]));
        assert_eq!(
            issuer_required_keys(),
            ["issuer", "audiences", "algorithms"]
        );
    }

    #[test]
    fn values_are_checked_as_their_fields_type() {
        assert_eq!(check_key("limits", "queue_depth", &Value::Integer(5)), None);
        assert_eq!(
            check_key("limits", "tenant_burst", &Value::Integer(-1)).as_deref(),
            Some("invalid value: integer `-1`, expected u32")
        );
        assert_eq!(
            check_key("audit", "path", &Value::Integer(1)).as_deref(),
            Some("invalid type: integer `1`, expected a string")
        );
        assert_eq!(
            check_key("console", "secure_cookies", &Value::String("yes".into())).as_deref(),
            Some("invalid type: string \"yes\", expected a boolean")
        );
        assert!(issuer_key_fits("secret_file", &Value::String("/k".into())));
        assert!(!issuer_key_fits("secret_file", &Value::Integer(1)));
        assert!(!issuer_key_fits("audiences", &Value::String("odgw".into())));
    }
}
