//! The authenticator's metrics (`odgw_jwks_*`, `odgw_token_verifications_*`),
//! read at scrape time from whichever [`Authenticator`] is in use then.

use odgw_core::scrape::register_scraped;
use prometheus_client::registry::Registry;

use crate::Authenticator;

/// Registers `odgw_jwks_fetches_total`, `odgw_jwks_fetch_failures_total`,
/// `odgw_token_verifications_remembered_total` and
/// `odgw_token_verifications_checked_total`.
///
/// `current` answers the authenticator in use at each scrape: a reload
/// builds a new one, whose counters start again from zero. `None` (the
/// gateway is gone) exposes nothing.
pub fn register_metrics<F>(registry: &mut Registry, current: F)
where
    F: Fn() -> Option<Authenticator> + Send + Sync + 'static,
{
    register_scraped(registry, "authenticator", move |scrape| {
        let Some(authenticator) = current() else {
            return Ok(());
        };
        let (fetches, failures) = authenticator.jwks_fetch_counts();
        let (remembered, checked) = authenticator.verification_counts();
        scrape.counter(
            "odgw_jwks_fetches",
            "JWKS fetches (startup, background refresh, unknown kid).",
            fetches,
        )?;
        scrape.counter(
            "odgw_jwks_fetch_failures",
            "JWKS fetches that failed; the last good keys were kept.",
            failures,
        )?;
        scrape.counter(
            "odgw_token_verifications_remembered",
            "Bearer tokens accepted from memory: verified before, unexpired, keys unchanged.",
            remembered,
        )?;
        scrape.counter(
            "odgw_token_verifications_checked",
            "Bearer tokens checked in full (signature and claims), accepted or not.",
            checked,
        )
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use odgw_core::scrape::prometheus_text as render;

    use super::*;
    use crate::{Algorithm, AuthSettings, IssuerSettings, KeySource, SecretBytes};

    #[tokio::test]
    async fn exposes_the_current_authenticator_and_nothing_once_it_is_gone() {
        let authenticator = Authenticator::new(
            AuthSettings::default(),
            vec![IssuerSettings {
                issuer: "https://idp.example".into(),
                audiences: vec!["odgw".into()],
                algorithms: vec![Algorithm::HS256],
                keys: KeySource::HmacSecret(SecretBytes::new(vec![7; 32])),
            }],
        )
        .await
        .expect("valid settings");
        let current = Arc::new(Mutex::new(Some(authenticator)));
        let mut registry = Registry::default();
        let read = current.clone();
        register_metrics(&mut registry, move || {
            read.lock().expect("not poisoned").clone()
        });
        let text = render(&registry);
        for line in [
            "# HELP odgw_jwks_fetches_total JWKS fetches (startup, background refresh, unknown kid).",
            "# TYPE odgw_jwks_fetches_total counter",
            "odgw_jwks_fetches_total 0",
            "odgw_jwks_fetch_failures_total 0",
            "# TYPE odgw_token_verifications_remembered_total counter",
            "odgw_token_verifications_remembered_total 0",
            "odgw_token_verifications_checked_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        *current.lock().expect("not poisoned") = None;
        assert_eq!(render(&registry), "");
    }
}
