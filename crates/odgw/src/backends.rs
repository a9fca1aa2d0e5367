//! The backends chosen by `store.backend` and `limits.backend`: opening them
//! from the configuration, and applying on this replica what other replicas
//! changed in the shared key store.
//!
//! One node uses sled and in-process pacing. Several replicas share one
//! PostgreSQL key store (whose change feed tells every replica about tenant
//! changes and cache purges) and one Redis for pacing budgets.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use odgw_cache::ResponseCache;
use odgw_core::SecretString;
use odgw_keystore::{
    CachedKeyStore, Change, ChangeFeed, KeyStore, MasterKey, PgKeyStore, PgSettings, SledKeyStore,
};
use odgw_limit::{OnFailure, RedisLimits, RedisSettings};
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::task::JoinHandle;

use crate::config::{self, Config, Env, LimitsBackend, OnRedisFailure, StoreBackend};

/// A key store as opened from the configuration.
#[derive(Debug)]
pub struct OpenedStore {
    pub store: Arc<dyn KeyStore>,
    /// What other replicas change; `None` for a single node's store.
    pub changes: Option<ChangeFeed>,
}

/// The master key's text, from `store.master_key_file` or `ODGW_MASTER_KEY`,
/// checked and written one way (padded standard base64).
///
/// Base64 padding is optional on input, so one key has several spellings;
/// keys derived from the text (console cookies, Redis subject names) must be
/// the same on every replica however its file spells the key.
pub fn read_master_key(config: &Config, env: &dyn Env) -> anyhow::Result<SecretString> {
    let text = config::read_secret(
        config.store.master_key_file.as_deref(),
        config::ENV_MASTER_KEY,
        env,
    )
    .context("master key")?;
    Ok(MasterKey::from_base64(&text)
        .context("master key")?
        .to_base64())
}

/// Opens the configured key store and checks `master` (the master key's
/// text) against it; with `watch_changes`, also starts following what other
/// replicas change (a gateway does; a one-off CLI command does not). Every
/// error names what to fix; none contains a secret or the database URL.
pub async fn open_store(
    config: &Config,
    env: &dyn Env,
    master: &SecretString,
    watch_changes: bool,
) -> anyhow::Result<OpenedStore> {
    let master = MasterKey::from_base64(master).context("master key")?;
    match config.store.backend {
        StoreBackend::Sled => {
            let path = config.store.path.clone();
            let sled = SledKeyStore::open(&path, master)
                .with_context(|| format!("key store at {}", path.display()))?;
            Ok(OpenedStore {
                store: Arc::new(sled),
                changes: None,
            })
        }
        StoreBackend::Postgres => {
            let pg = &config.postgres;
            let url = config::read_secret(pg.url_file.as_deref(), config::ENV_POSTGRES_URL, env)
                .context("postgres url")?;
            let store = PgKeyStore::connect(
                PgSettings {
                    url,
                    schema: pg.schema.clone(),
                    pool_size: pg.pool_size,
                    poll_interval: pg.poll_interval.0,
                    connect_timeout: pg.connect_timeout.0,
                },
                master,
            )
            .await
            .with_context(|| format!("key store in postgresql schema {:?}", pg.schema))?;
            let changes = watch_changes.then(|| store.changes());
            Ok(OpenedStore {
                store: Arc::new(store),
                changes,
            })
        }
    }
}

/// Connects the shared pacing store when `limits.backend = "redis"`. An
/// unreachable Redis is not an error here: pacing starts in the
/// `redis.on_failure` policy and turns shared once Redis answers. Subject
/// budgets are named under a key derived from the master key, which every
/// replica holds.
pub async fn connect_limits(
    config: &Config,
    env: &dyn Env,
    master_key: &SecretString,
) -> anyhow::Result<Option<RedisLimits>> {
    if config.limits.backend == LimitsBackend::Local {
        return Ok(None);
    }
    let redis = &config.redis;
    let url = config::read_secret(redis.url_file.as_deref(), config::ENV_REDIS_URL, env)
        .context("redis url")?;
    let limits = RedisLimits::connect(RedisSettings {
        url,
        key_prefix: redis.key_prefix.clone(),
        on_failure: match redis.on_failure {
            OnRedisFailure::Local => OnFailure::Local,
            OnRedisFailure::Closed => OnFailure::Closed,
        },
        command_timeout: redis.timeout.0,
        subject_secret: master_key.clone(),
    })
    .await
    .context("redis")?;
    Ok(Some(limits))
}

/// How often the Redis health check runs while pacing is shared or not.
pub const REDIS_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Counts what the change feed applied, for `/metrics`. Clones share the
/// counts.
#[derive(Debug, Clone, Default)]
pub struct ChangeCounters {
    applied: Counter,
    resyncs: Counter,
}

impl ChangeCounters {
    /// Registers `odgw_store_changes_applied_total` and
    /// `odgw_store_resyncs_total` (prometheus-client appends `_total` and a
    /// full stop to each help text).
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "odgw_store_changes_applied",
            "Changes from the shared key store's feed applied here (tenant changes, purges, resyncs)",
            self.applied.clone(),
        );
        registry.register(
            "odgw_store_resyncs",
            "Times the change feed lost contact and this replica dropped every cached key and response",
            self.resyncs.clone(),
        );
    }
}

/// Applies every change from other replicas (and this one's own, coming
/// back: re-reading and purging again are harmless), until the gateway is
/// gone (`cache` answers `None`) or the task is aborted:
/// - a tenant put, toggled, re-keyed, imported or deleted: replace its
///   decrypted record with the one now stored (`CachedKeyStore::reload`; a
///   disabled tenant is refused from then on), and drop its cached
///   responses;
/// - a cache purge: purge the same here;
/// - a resync (the feed lost contact and may have missed changes): forget
///   every record and purge every response.
pub fn spawn_change_applier(
    mut feed: ChangeFeed,
    keys: Arc<CachedKeyStore>,
    cache: impl Fn() -> Option<ResponseCache> + Send + 'static,
    counters: ChangeCounters,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let change = feed.next().await;
            // `None`: the gateway is gone, and with it anything to apply to.
            let Some(cache) = cache() else { return };
            match &change {
                Change::Tenant(id) => {
                    keys.reload(id).await;
                    cache.purge_tenant(id);
                }
                Change::Purge(Some(id)) => cache.purge_tenant(id),
                Change::Purge(None) => cache.purge_all(),
                Change::Resync => {
                    keys.forget_all();
                    cache.purge_all();
                    counters.resyncs.inc();
                    tracing::info!(
                        "key store change feed resynced: cached keys and responses dropped"
                    );
                }
            }
            counters.applied.inc();
            tracing::debug!(?change, "key store change applied");
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn master_key_from(text: &str) -> anyhow::Result<SecretString> {
        let env: BTreeMap<String, String> =
            [(config::ENV_MASTER_KEY.to_owned(), text.to_owned())].into();
        let config = Config::parse(None, &env).unwrap();
        read_master_key(&config, &env)
    }

    #[test]
    fn the_master_key_text_is_one_spelling_per_key() {
        let padded = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(master_key_from(padded).unwrap().expose(), padded);
        assert_eq!(master_key_from(unpadded).unwrap().expose(), padded);
    }

    #[test]
    fn a_bad_master_key_is_refused_without_echoing_it() {
        let error = format!("{:#}", master_key_from("not base64 at all!").unwrap_err());
        assert!(error.starts_with("master key"), "{error}");
        assert!(!error.contains("not base64 at all"), "{error}");
    }
}
