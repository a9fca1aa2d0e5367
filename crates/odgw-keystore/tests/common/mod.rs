//! Fixtures shared by the key store integration tests (sled and PostgreSQL).
#![allow(dead_code)]

use std::sync::Arc;

use odgw_core::{SecretString, TenantId};
use odgw_keystore::{KeyStore, PutOutcome, TenantInput, TenantRecord, TenantSummary};

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

/// The first steps of each backend's round trip, on an empty store: it is
/// healthy and empty, tenant acme ([`full_input`]) is created and reads
/// back with both keys, and the listing of acme, Zeta and beta is sorted by
/// id. Returns acme's record and summary as created.
pub async fn create_read_and_list(store: &dyn KeyStore) -> (Arc<TenantRecord>, TenantSummary) {
    store.health().await.unwrap();
    assert!(store.list().await.unwrap().is_empty());
    assert!(store.get(&id("acme")).await.unwrap().is_none());

    let (outcome, summary) = store.put(&id("acme"), full_input()).await.unwrap();
    assert_eq!(outcome, PutOutcome::Created);
    assert_eq!(summary.customer_key_hint, "QX2z");
    assert_eq!(
        summary.base_url.as_deref(),
        Some("https://od.example/api/v1")
    );
    let record = store.get(&id("acme")).await.unwrap().unwrap();
    assert_eq!(record.customer_key.expose(), CUSTOMER_KEY);
    assert_eq!(
        record.developer_key.as_ref().unwrap().expose(),
        DEVELOPER_KEY
    );
    assert_eq!(record.summary(), summary);
    assert_eq!(
        store.summary(&id("acme")).await.unwrap(),
        Some(summary.clone())
    );

    store.put(&id("Zeta"), input("KEYZETA12345")).await.unwrap();
    store.put(&id("beta"), input("KEYBETA12345")).await.unwrap();
    let ids: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(ids, ["Zeta", "acme", "beta"], "sorted by id");
    (record, summary)
}
