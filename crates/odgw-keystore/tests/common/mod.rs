//! Fixtures shared by the key store integration tests (sled and PostgreSQL).
#![allow(dead_code)]

use odgw_core::{SecretString, TenantId};
use odgw_keystore::TenantInput;

pub const CUSTOMER_KEY: &str = "VzkmZEaUWOjnQX2z";
pub const DEVELOPER_KEY: &str = "NFFv2lvv1Dtg4eyT";

pub fn id(text: &str) -> TenantId {
    TenantId::parse(text).unwrap()
}

pub fn input(customer: &str) -> TenantInput {
    TenantInput::new(SecretString::new(customer))
}

/// A tenant with every field set, its keys [`CUSTOMER_KEY`] and
/// [`DEVELOPER_KEY`].
pub fn full_input() -> TenantInput {
    TenantInput {
        name: Some("Smile Dental".into()),
        customer_key: SecretString::new(CUSTOMER_KEY),
        developer_key: Some(SecretString::new(DEVELOPER_KEY)),
        base_url: Some("https://od.example/api/v1/".into()),
        rate: Some("2/s".parse().unwrap()),
        burst: Some(3),
        enabled: None,
    }
}

/// A temp dir only its owner can enter, as odgw requires of a store directory.
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}
