//! Builds every component from a validated [`Config`], composes the request
//! stack, and serves the data plane and the admin listener.
//!
//! # Reload
//!
//! What may change while odgw serves lives in one immutable [`Runtime`]: the
//! [`Authenticator`] (`[auth]`), the subject limiter, tenant pacer and
//! defaults (`[limits]`, `upstream.base_url`), the response cache
//! (`[cache]`), `server.max_body`, and the data-plane stack composed from
//! them. The gateway keeps the current runtime behind an [`ArcSwap`]; every
//! request loads it once, on arrival, and runs to the end on that stack, so
//! a reload never changes the rules under an in-flight request.
//!
//! [`Reloader::reload`] (SIGHUP, `POST /admin/v1/reload`) re-reads the
//! configuration from the same file and environment as startup, validates it
//! completely, re-reads the TLS certificates, builds the new runtime
//! (including the first JWKS fetch of every issuer) and only then swaps, all
//! at once. A refused configuration changes nothing.
//!
//! State survives a reload where its settings did not change: the subject
//! limiter while `subject_rate`/`subject_burst` are the same, the tenant
//! pacer while `queue_depth` is the same (rates and bursts are read per
//! request, so changing `tenant_rate`/`tenant_burst` keeps each tenant's
//! spent budget), and the cache while `routes`/`ttl`/`max_size` are the same.
//! When those settings do change, the component starts fresh: a new subject
//! limiter hands every caller a full burst, a new pacer lets each tenant
//! start with a full burst (while requests already queued on the old one
//! still go out on their old schedule), and a new cache starts empty.
//!
//! Keys that need a restart (listen addresses, `shutdown_grace`,
//! `[upstream]` other than `base_url`, `[admin]`, `[store]`, `[audit]`, and
//! turning TLS on or off for a listener) keep their running values; a
//! reload names them in `restart_required` and logs a warning.

mod build;
mod reload;
mod stack;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use odgw_audit::{AuditLayer, AuditSettings, AuditSink, FileAuditLog, IntentLayer};
use odgw_auth::Authenticator;
use odgw_cache::ResponseCache;
use odgw_console::Console;
use odgw_core::{SecretString, TenantId};
use odgw_keystore::{CachedKeyStore, ChangeFeed, KeyStore, TenantDefaults};
use odgw_limit::{Pacer, RedisLimits, SubjectLimitLayer};
use odgw_proxy::{Forwarder, UpstreamClient, UpstreamSettings};
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::util::BoxCloneService;

use odgw_admin::{AdminParts, TenantProbe};

use crate::{
    backends::{self, ChangeCounters},
    config::{self, Config, ConfigSource, Env},
    listener::{serve_listener_tls, ConnectionLimits},
    metrics::RequestMetrics,
    probe::{Readiness, UpstreamProbe},
    tls::{self, ReloadableCert},
};

pub use reload::{ReloadError, Reloader};
pub use stack::DataPlane;

use build::{build_console, register_metrics};
use reload::load_cert;
use stack::{stack, LiveDataPlane, Stack};

/// Everything a running gateway holds. Built by [`Gateway::build`] before any
/// port is bound, so that every startup error (bad master key, unreadable
/// secret, broken audit directory, bad certificate) surfaces first.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration odgw started with. Keys that need a restart keep
    /// these values; the reloadable ones are in [`Gateway::runtime`].
    pub config: Config,
    pub store: Arc<dyn KeyStore>,
    pub audit: Arc<FileAuditLog>,
    pub upstream: UpstreamClient,
    /// Every part's metrics, served on the admin listener's `/metrics`.
    pub metrics: Arc<Registry>,
    /// The audit review console (`/console/` on the admin listener).
    pub console: Console,
    shared: Arc<Shared>,
    limits: ConnectionLimits,
    admin_token: SecretString,
}

/// What a reload can change, built as one piece and swapped as one piece.
pub struct Runtime {
    /// The configuration this runtime was built from. Its restart-only keys
    /// may differ from what is in effect (see [`Gateway::config`]).
    pub config: Config,
    pub authenticator: Authenticator,
    pub subject_limit: SubjectLimitLayer,
    pub pacer: Arc<dyn Pacer>,
    pub cache: ResponseCache,
    pub defaults: TenantDefaults,
    stack: Stack,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("authenticator", &self.authenticator)
            .field("subject_limit", &self.subject_limit)
            .field("pacer", &self.pacer)
            .finish_non_exhaustive()
    }
}

/// The parts that live as long as the process, shared by every runtime.
#[derive(Debug, Clone)]
struct Core {
    store: Arc<dyn KeyStore>,
    /// Shared pacing budgets (`limits.backend = "redis"`); `None`: in process.
    redis: Option<RedisLimits>,
    audit_layer: AuditLayer,
    intent_layer: IntentLayer,
    upstream: UpstreamClient,
    /// Observed by the request-context layer of every runtime's stack.
    metrics: RequestMetrics,
    developer_key: SecretString,
}

/// The certificates of the listeners that serve TLS.
#[derive(Debug, Default)]
struct Certs {
    data: Option<Arc<ReloadableCert>>,
    admin: Option<Arc<ReloadableCert>>,
}

/// State shared by the gateway, its [`Reloader`]s and its admin API.
#[derive(Debug)]
struct Shared {
    core: Core,
    startup: Config,
    runtime: Arc<ArcSwap<Runtime>>,
    certs: Certs,
    source: Mutex<Option<ConfigSource>>,
    /// One reload at a time, so each compares against the runtime it replaces.
    reload_lock: tokio::sync::Mutex<()>,
    /// JWKS refresh and limiter housekeeping tasks, aborted at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The decrypted-record cache in front of the store, told by the change
    /// feed what other replicas changed.
    keys: Arc<CachedKeyStore>,
    /// The shared store's change feed until `serve` starts applying it.
    changes: Mutex<Option<ChangeFeed>>,
    change_counters: ChangeCounters,
    /// Configuration reloads applied, and refused.
    reloads: Counter,
    refused: Counter,
}

impl Shared {
    fn track(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Starts the background tasks a runtime needs. `fresh_limiter` is false
    /// when the subject limiter was carried over and already has its task.
    fn start_tasks(&self, runtime: &Runtime, fresh_limiter: bool) {
        self.track(runtime.authenticator.spawn_background_refresh());
        if fresh_limiter {
            // Forget subjects whose allowance has fully refilled, so limiter
            // memory stays bounded without handing anyone a fresh burst early.
            if let Some(task) = runtime
                .subject_limit
                .spawn_housekeeping(Duration::from_secs(60))
            {
                self.track(task);
            }
        }
    }

    /// Starts applying the shared store's change feed and watching Redis,
    /// when those backends are configured. Runs once, from `serve`.
    fn start_cluster_tasks(self: &Arc<Self>) {
        let feed = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(feed) = feed {
            // Weak: the task must not keep the runtimes alive after shutdown.
            let runtime = Arc::downgrade(&self.runtime);
            let current_cache = move || Some(runtime.upgrade()?.load().cache.clone());
            self.track(backends::spawn_change_applier(
                feed,
                self.keys.clone(),
                current_cache,
                self.change_counters.clone(),
            ));
        }
        if let Some(redis) = &self.core.redis {
            self.track(redis.spawn_health_check(backends::REDIS_HEALTH_INTERVAL));
        }
    }

    fn abort_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Gateway {
    /// Opens the store, loads keys, secrets and certificates, and prepares every layer.
    pub async fn build(config: Config, env: &dyn Env) -> anyhow::Result<Self> {
        odgw_auth::install_crypto_providers();

        let master = backends::read_master_key(&config, env)?;
        let opened = backends::open_store(&config, env, &master, true).await?;
        // One cached view shared by the data plane and the admin API, so
        // every admin write drops the decrypted record it replaces (and the
        // change feed, every record another replica replaced).
        let mut keys = CachedKeyStore::new(opened.store);
        if config.store.backend == config::StoreBackend::Sled {
            // Last known records bridge a shared store's outage; sled in
            // this process is never out of reach, so for it they would only
            // be a second copy of every decrypted record in memory.
            keys = keys.with_max_stale(Duration::ZERO);
        }
        let keys = Arc::new(keys);
        let store: Arc<dyn KeyStore> = keys.clone();
        let redis = backends::connect_limits(&config, env, &master).await?;
        let developer_key = config::read_secret(
            config.upstream.developer_key_file.as_deref(),
            config::ENV_DEVELOPER_KEY,
            env,
        )
        .context("developer key")?;
        let admin_token = config::read_secret(
            config.admin.token_file.as_deref(),
            config::ENV_ADMIN_TOKEN,
            env,
        )
        .context("admin token")?;
        let certs = Certs {
            data: load_cert(config.server.data_tls())
                .context("server.tls_cert_file")?
                .map(|key| Arc::new(ReloadableCert::new(key))),
            admin: load_cert(config.server.admin_tls())
                .context("server.admin_tls_cert_file")?
                .map(|key| Arc::new(ReloadableCert::new(key))),
        };

        let audit = Arc::new(
            FileAuditLog::open(AuditSettings {
                write_timeout: config.audit.write_timeout.0,
                fail_closed: config.audit.fail_closed,
                ..AuditSettings::new(config.audit.path.clone())
            })
            .await
            .with_context(|| format!("audit directory {}", config.audit.path.display()))?,
        );
        let upstream = UpstreamClient::new(UpstreamSettings {
            connect_timeout: config.upstream.connect_timeout.0,
            timeout: config.upstream.timeout.0,
            ..UpstreamSettings::default()
        })
        .context("upstream client")?;
        let sink: Arc<dyn AuditSink> = audit.clone();
        let write_timeout = config.audit.write_timeout.0;
        let audit_layer = AuditLayer::new(sink.clone(), config.audit.fail_closed, write_timeout);
        let intent_layer = IntentLayer::new(sink, config.audit.fail_closed, write_timeout);
        let core = Core {
            store: store.clone(),
            redis,
            audit_layer,
            intent_layer,
            upstream: upstream.clone(),
            metrics: RequestMetrics::default(),
            developer_key,
        };
        let console = build_console(&config, env, &master, audit.clone())?;
        let runtime = Runtime::build(&core, config.clone(), None).await?;
        let runtime = Arc::new(ArcSwap::from_pointee(runtime));
        let shared = Arc::new(Shared {
            core,
            startup: config.clone(),
            runtime,
            certs,
            source: Mutex::new(None),
            reload_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            keys,
            changes: Mutex::new(opened.changes),
            change_counters: ChangeCounters::default(),
            reloads: Counter::default(),
            refused: Counter::default(),
        });
        let metrics = Arc::new(register_metrics(&shared, &audit));
        tracing::info!(
            node = %config.server.node_id,
            store = ?config.store.backend,
            limits = ?config.limits.backend,
            "gateway built"
        );
        Ok(Self {
            config,
            store,
            audit,
            upstream,
            metrics,
            console,
            shared,
            limits: ConnectionLimits::default(),
            admin_token,
        })
    }

    /// The reloadable parts in effect right now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.shared.runtime.load_full()
    }

    /// Where [`Reloader::reload`] reads the configuration from: the file and
    /// environment odgw started with. Without it, reloads are refused.
    pub fn set_config_source(&self, source: ConfigSource) {
        *self.shared.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// A handle that reloads this gateway's configuration (for SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
        }
    }

    /// Replaces the per-connection limits (header and idle timeouts, caps).
    pub fn with_connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The data plane as served: each request runs on the stack of the
    /// runtime that is current when it arrives, to the end.
    pub fn data_plane(&self) -> DataPlane {
        BoxCloneService::new(LiveDataPlane {
            runtime: self.shared.runtime.clone(),
        })
    }

    /// The current runtime's stack with its audit records sent to `sink`
    /// instead of the audit log: for benchmarks that compare the audited
    /// path with a [`odgw_audit::NullSink`]. Never serve this.
    #[doc(hidden)]
    pub fn data_plane_with_audit_sink(&self, sink: Arc<dyn AuditSink>) -> DataPlane {
        let (fail_closed, timeout) = (
            self.config.audit.fail_closed,
            self.config.audit.write_timeout.0,
        );
        let runtime = self.runtime();
        BoxCloneService::new(stack(
            &self.shared.core,
            &runtime.parts(),
            AuditLayer::new(sink.clone(), fail_closed, timeout),
            IntentLayer::new(sink, fail_closed, timeout),
        ))
    }

    /// The admin API router (SPEC §6).
    pub fn admin_router(&self) -> axum::Router {
        let (store, audit) = (self.store.clone(), self.audit.clone());
        let redis = self.shared.core.redis.clone();
        let runtime = self.shared.runtime.clone();
        let readiness = move || {
            let readiness = Readiness {
                store: store.clone(),
                audit: audit.clone(),
                authenticator: runtime.load().authenticator.clone(),
                limiter: redis.as_ref().map(RedisLimits::status),
            };
            Box::pin(async move { readiness.report().await })
                as std::pin::Pin<Box<dyn Future<Output = odgw_admin::Readiness> + Send>>
        };
        let runtime = self.shared.runtime.clone();
        let admin = odgw_admin::router(AdminParts {
            store: self.store.clone(),
            cache: Arc::new(move || runtime.load().cache.clone()),
            audit: self.audit.clone(),
            audit_dir: self.config.audit.path.clone(),
            token: self.admin_token.clone(),
            probe: Arc::new(CurrentProbe {
                store: self.store.clone(),
                forwarder: Forwarder::new(self.upstream.clone()),
                runtime: self.shared.runtime.clone(),
            }),
            readiness: Arc::new(readiness),
            metrics: self.metrics.clone(),
            reload: Arc::new(self.reloader()),
        });
        // The console's own requests get a request id too (its audit
        // records and X-Request-Id), like every admin request.
        admin.merge(
            self.console
                .router()
                .layer(axum::middleware::from_fn(odgw_admin::with_request_id)),
        )
    }

    /// Serves both listeners until `shutdown` resolves, then drains in-flight
    /// requests (up to `server.shutdown_grace`) and flushes the audit log.
    pub async fn serve(
        self,
        data: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.config.server.shutdown_grace.0;
        let limits = self.limits;
        let data_tls = self
            .shared
            .certs
            .data
            .clone()
            .map(tls::acceptor)
            .transpose()
            .context("data plane tls")?;
        let admin_tls = self
            .shared
            .certs
            .admin
            .clone()
            .map(tls::acceptor)
            .transpose()
            .context("admin tls")?;
        self.shared.start_tasks(&self.runtime(), true);
        self.shared.start_cluster_tasks();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let data_task = tokio::spawn(serve_listener_tls(
            data,
            data_tls,
            self.data_plane(),
            limits,
            stopped(stop_rx.clone()),
            grace,
        ));
        let admin_task = tokio::spawn(serve_listener_tls(
            admin,
            admin_tls,
            self.admin_router(),
            limits,
            stopped(stop_rx),
            grace,
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stop_tx.send(true);
        let _ = tokio::join!(data_task, admin_task);
        self.shared.abort_tasks();
        self.audit.flush_and_close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// `tenant check` with the pacer, defaults and queue timeout in effect now.
#[derive(Debug, Clone)]
struct CurrentProbe {
    store: Arc<dyn KeyStore>,
    forwarder: Forwarder,
    runtime: Arc<ArcSwap<Runtime>>,
}

impl TenantProbe for CurrentProbe {
    fn check(
        &self,
        tenant: TenantId,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<odgw_admin::CheckReport, odgw_core::GatewayError>> + Send>,
    > {
        let runtime = self.runtime.load();
        UpstreamProbe {
            store: self.store.clone(),
            defaults: runtime.defaults.clone(),
            pacer: runtime.pacer.clone(),
            forwarder: self.forwarder.clone(),
            queue_timeout: runtime.config.limits.queue_timeout.0,
        }
        .check(tenant)
    }
}
