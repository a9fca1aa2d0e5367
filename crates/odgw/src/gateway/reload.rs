//! Configuration reload: re-reading, validating and swapping the runtime
//! and the TLS certificates (see the parent module's docs).

use std::{future::Future, path::Path, sync::Arc};

use odgw_admin::{ConfigReload, ReloadReport};

use crate::{
    config::{changed_keys, ConfigErrors},
    tls::{self, ReloadableCert, TlsError},
};

use super::{Runtime, Shared};

/// Why a reload was refused. The running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("odgw was started without a configuration source to reload from")]
    NoSource,
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Build(String),
}

/// Reloads a gateway's configuration; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(super) shared: Arc<Shared>,
}

impl Reloader {
    /// Re-reads the configuration and applies what can change at run time,
    /// or refuses it and changes nothing (see the module docs).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.shared.reload_lock.lock().await;
        let result = self.reload_locked().await;
        match &result {
            Ok(report) => {
                self.shared.reloads.inc();
                tracing::info!(changed = ?report.changed, "configuration reloaded");
                if !report.restart_required.is_empty() {
                    tracing::warn!(
                        keys = ?report.restart_required,
                        "configuration keys changed that take effect only after a restart"
                    );
                }
            }
            Err(error) => {
                self.shared.refused.inc();
                tracing::warn!(%error, "configuration reload refused; the running configuration is unchanged");
            }
        }
        result
    }

    async fn reload_locked(&self) -> Result<ReloadReport, ReloadError> {
        let shared = &self.shared;
        let source = shared
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(ReloadError::NoSource)?;
        let config = source.load()?;
        let current = shared.runtime.load_full();
        let fresh_limiter = current.config.limits.subject_rate != config.limits.subject_rate
            || current.config.limits.subject_burst != config.limits.subject_burst;

        // TLS stays on or off as started; while on, the files are re-read.
        let data_tls = shared.certs.data.is_some() && config.server.data_tls().is_some();
        let admin_tls = shared.certs.admin.is_some() && config.server.admin_tls().is_some();
        let reloadable = |key: &str| match key {
            "server.max_body" | "upstream.base_url" => true,
            // Which backend holds the budgets is fixed for the process.
            "limits.backend" => false,
            "server.tls_cert_file" | "server.tls_key_file" => data_tls,
            "server.admin_tls_cert_file" | "server.admin_tls_key_file" => admin_tls,
            _ => ["auth.", "limits.", "cache."]
                .iter()
                .any(|section| key.starts_with(section)),
        };
        let mut changed: Vec<String> = changed_keys(&current.config, &config)
            .into_iter()
            .filter(|k| reloadable(k))
            .collect();
        let restart_required: Vec<String> = changed_keys(&shared.startup, &config)
            .into_iter()
            .filter(|k| !reloadable(k))
            .collect();

        let new_data_cert = reload_cert(
            shared.certs.data.as_ref(),
            config.server.data_tls(),
            "server.tls_cert_file",
            &mut changed,
        )?;
        let new_admin_cert = reload_cert(
            shared.certs.admin.as_ref(),
            config.server.admin_tls(),
            "server.admin_tls_cert_file",
            &mut changed,
        )?;
        let runtime = Runtime::build(&shared.core, config, Some(&current))
            .await
            .map_err(|e| ReloadError::Build(format!("{e:#}")))?;

        // Everything is built and checked: swap all of it.
        shared.start_tasks(&runtime, fresh_limiter);
        shared.runtime.store(Arc::new(runtime));
        for (cert, key) in [new_data_cert, new_admin_cert].into_iter().flatten() {
            cert.replace(key);
        }
        changed.sort();
        changed.dedup();
        Ok(ReloadReport {
            reloaded: true,
            changed,
            restart_required,
        })
    }
}

impl ConfigReload for Reloader {
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ReloadReport, String>> + Send + '_>> {
        Box::pin(async move { Reloader::reload(self).await.map_err(|e| e.to_string()) })
    }
}

/// Reads a listener's certificate for a reload, when that listener serves
/// TLS and still has files configured; notes `key` as changed when the
/// served certificate will differ.
fn reload_cert<'a>(
    served: Option<&'a Arc<ReloadableCert>>,
    files: Option<(&Path, &Path)>,
    key: &str,
    changed: &mut Vec<String>,
) -> Result<Option<(&'a Arc<ReloadableCert>, rustls::sign::CertifiedKey)>, ReloadError> {
    let (Some(served), Some((cert, private))) = (served, files) else {
        return Ok(None);
    };
    let loaded = tls::load_certified_key(cert, private)
        .map_err(|e: TlsError| ReloadError::Tls(format!("{key}: {e}")))?;
    if served.end_entity_der().as_deref() != loaded.cert.first().map(|c| c.as_ref()) {
        changed.push(key.to_owned());
    }
    Ok(Some((served, loaded)))
}

pub(super) fn load_cert(
    files: Option<(&Path, &Path)>,
) -> Result<Option<rustls::sign::CertifiedKey>, TlsError> {
    files
        .map(|(cert, key)| tls::load_certified_key(cert, key))
        .transpose()
}
