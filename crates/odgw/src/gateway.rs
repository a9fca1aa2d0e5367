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

use std::{
    convert::Infallible,
    future::Future,
    path::Path,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use odgw_audit::{AuditLayer, AuditSettings, AuditSink, FileAuditLog, IntentLayer};
use odgw_auth::{AuthLayer, AuthSettings, Authenticator, IssuerSettings, KeySource};
use odgw_cache::{CacheLayer, CacheSettings, ResponseCache};
use odgw_console::{oidc::OidcSettings, session::CookieKey, Console, ConsoleSettings};
use odgw_context::RequestContextLayer;
use odgw_core::{Request, Response, SecretString, TenantId};
use odgw_keystore::{CachedKeyStore, ChangeFeed, KeyStore, TenantDefaults};
use odgw_limit::{LocalPacer, Pacer, PacingLayer, PacingSettings, RedisLimits, SubjectLimitLayer};
use odgw_proxy::{Forwarder, GuardLayer, HopByHopLayer, UpstreamClient, UpstreamSettings};
use odgw_tenant::TenantLayer;
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::{
    util::{BoxCloneService, BoxCloneSyncService, Oneshot},
    Service, ServiceBuilder, ServiceExt,
};

use odgw_admin::{AdminParts, ConfigReload, ReloadReport, TenantProbe};

use crate::{
    backends::{self, ChangeCounters},
    config::{self, changed_keys, Config, ConfigErrors, ConfigSource, Env},
    listener::{serve_listener_tls, ConnectionLimits},
    metrics::{self, RequestMetrics},
    probe::{Readiness, UpstreamProbe},
    tls::{self, ReloadableCert, TlsError},
};

/// The data-plane service after type erasure.
pub type DataPlane = BoxCloneService<Request, Response, Infallible>;

/// A runtime's stack: like [`DataPlane`], and shareable between threads.
type Stack = BoxCloneSyncService<Request, Response, Infallible>;

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
        let redis = backends::connect_limits(&config, env).await?;
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

/// The reloadable parts of one runtime, borrowed to compose a stack.
struct Parts<'a> {
    config: &'a Config,
    authenticator: &'a Authenticator,
    subject_limit: &'a SubjectLimitLayer,
    pacer: &'a Arc<dyn Pacer>,
    cache: &'a ResponseCache,
    defaults: &'a TenantDefaults,
}

impl Runtime {
    /// Builds the runtime for `config`, carrying over from `previous` the
    /// stateful parts whose settings did not change (see the module docs).
    async fn build(
        core: &Core,
        config: Config,
        previous: Option<&Runtime>,
    ) -> anyhow::Result<Self> {
        let authenticator = Authenticator::new(auth_settings(&config), issuer_settings(&config)?)
            .await
            .context("auth")?;
        let (l, c) = (&config.limits, &config.cache);
        let subject_limit = match previous {
            Some(p)
                if p.config.limits.subject_rate == l.subject_rate
                    && p.config.limits.subject_burst == l.subject_burst =>
            {
                p.subject_limit.clone()
            }
            _ => match &core.redis {
                Some(redis) => redis.subject_limit(l.subject_rate, l.subject_burst),
                None => odgw_limit::subject_limit_layer(l.subject_rate, l.subject_burst),
            },
        };
        // Pacers read only queue_depth from their settings; rates, bursts
        // and the queue timeout come with each request.
        let pacer = match previous {
            Some(p) if p.config.limits.queue_depth == l.queue_depth => p.pacer.clone(),
            _ => match &core.redis {
                Some(redis) => redis.pacer(pacing_settings(&config)),
                None => Arc::new(LocalPacer::new(pacing_settings(&config))) as Arc<dyn Pacer>,
            },
        };
        let cache = match previous {
            Some(p)
                if p.config.cache.routes == c.routes
                    && p.config.cache.ttl == c.ttl
                    && p.config.cache.max_size == c.max_size =>
            {
                p.cache.clone()
            }
            _ => ResponseCache::new(CacheSettings {
                routes: c.routes.clone(),
                ttl: c.ttl.0,
                max_size: c.max_size.0,
            }),
        };
        let defaults = TenantDefaults {
            base_url: config.upstream.base_url.trim_end_matches('/').to_owned(),
            developer_key: Some(core.developer_key.clone()),
            rate: l.tenant_rate,
            burst: l.tenant_burst,
        };
        let stack = stack(
            core,
            &Parts {
                config: &config,
                authenticator: &authenticator,
                subject_limit: &subject_limit,
                pacer: &pacer,
                cache: &cache,
                defaults: &defaults,
            },
            core.audit_layer.clone(),
            core.intent_layer.clone(),
        );
        Ok(Self {
            config,
            authenticator,
            subject_limit,
            pacer,
            cache,
            defaults,
            stack,
        })
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            config: &self.config,
            authenticator: &self.authenticator,
            subject_limit: &self.subject_limit,
            pacer: &self.pacer,
            cache: &self.cache,
            defaults: &self.defaults,
        }
    }
}

/// The data-plane stack, outer to inner. Reordering happens here only.
fn stack(core: &Core, rt: &Parts<'_>, audit_layer: AuditLayer, intent_layer: IntentLayer) -> Stack {
    let stack = ServiceBuilder::new()
        // Strip hop-by-hop and Connection-named headers before anything reads a header.
        .layer(HopByHopLayer)
        // Request id, facts slot for inner layers, X-Request-Id, access log, metrics.
        .layer(RequestContextLayer::new(core.metrics.clone()))
        // Every response waits for its durable audit record (fail closed).
        .layer(audit_layer)
        // Cheap refusals first: 404 outside /api/v1/, 400 bad_path, 413 body_too_large.
        .layer(GuardLayer::new(rt.config.server.max_body.0))
        // JWT → Principal and the selected TenantId; 401/403.
        .layer(AuthLayer::new(rt.authenticator.clone()))
        // Per-(tenant, subject) inbound limit: answered at once, before any store read.
        .layer(rt.subject_limit.clone())
        // Key store → Tenant (keys, base_url, budget); 403 unknown/disabled.
        .layer(TenantLayer::new(core.store.clone(), rt.defaults.clone()))
        // Cached reference GETs answer here and spend no upstream budget.
        .layer(CacheLayer::new(rt.cache.clone()))
        // Wait for the tenant's Open Dental budget; hand it to the forwarder for upstream 429s.
        .layer(PacingLayer::new(
            rt.pacer.clone(),
            pacing_settings(rt.config),
        ))
        // Writes get a durable intent record before Open Dental is called.
        .layer(intent_layer)
        .service(Forwarder::new(core.upstream.clone()));
    BoxCloneSyncService::new(stack)
}

/// Loads the current runtime's stack per request; the request keeps that
/// stack (and everything it holds) until it is done.
#[derive(Clone)]
struct LiveDataPlane {
    runtime: Arc<ArcSwap<Runtime>>,
}

impl Service<Request> for LiveDataPlane {
    type Response = Response;
    type Error = Infallible;
    type Future = Oneshot<Stack, Request>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.runtime.load().stack.clone().oneshot(req)
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
    shared: Arc<Shared>,
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

fn load_cert(
    files: Option<(&Path, &Path)>,
) -> Result<Option<rustls::sign::CertifiedKey>, TlsError> {
    files
        .map(|(cert, key)| tls::load_certified_key(cert, key))
        .transpose()
}

/// The console, signing in through `[console]`'s provider when one is
/// configured. Its cookies are sealed under a key derived from the master
/// key, so every replica accepts every replica's sessions.
fn build_console(
    config: &Config,
    env: &dyn Env,
    master: &SecretString,
    audit: Arc<dyn AuditSink>,
) -> anyhow::Result<Console> {
    let c = &config.console;
    let oidc = match &c.issuer {
        Some(issuer) => Some(OidcSettings {
            issuer: issuer.clone(),
            client_id: c.client_id.clone().unwrap_or_default(),
            client_secret: config::read_secret(
                c.client_secret_file.as_deref(),
                config::ENV_CONSOLE_CLIENT_SECRET,
                env,
            )
            .context("console client secret")?,
            redirect_url: c.redirect_url.clone(),
        }),
        None => None,
    };
    Ok(Console::new(ConsoleSettings {
        oidc,
        reviewer_scope: c.reviewer_scope.clone(),
        session_ttl: c.session_ttl.0,
        secure_cookies: c
            .secure_cookies
            .unwrap_or(config.server.admin_tls().is_some()),
        cookie_key: CookieKey::derive(master)?,
        audit_dir: config.audit.path.clone(),
        audit,
    })?)
}

fn pacing_settings(c: &Config) -> PacingSettings {
    PacingSettings {
        queue_timeout: c.limits.queue_timeout.0,
        queue_depth: c.limits.queue_depth,
    }
}

fn auth_settings(c: &Config) -> AuthSettings {
    AuthSettings {
        tenant_claim: c.auth.tenant_claim.clone(),
        leeway: c.auth.leeway.0,
        max_lifetime: c.auth.max_lifetime.0,
        require_scopes: c.auth.require_scopes,
        ..AuthSettings::default()
    }
}

fn issuer_settings(c: &Config) -> anyhow::Result<Vec<IssuerSettings>> {
    c.auth
        .issuers
        .iter()
        .map(|i| {
            let keys = if let Some(url) = &i.jwks_url {
                KeySource::Jwks { url: url.clone() }
            } else if let Some(file) = &i.public_key_file {
                KeySource::PublicKeyPem(
                    std::fs::read(file)
                        .with_context(|| format!("cannot read {}", file.display()))?,
                )
            } else if let Some(file) = &i.secret_file {
                let secret = config::read_secret_file(file)?;
                KeySource::HmacSecret(secret.expose().as_bytes().to_vec().into())
            } else {
                anyhow::bail!("issuer {} has no key source", i.issuer);
            };
            let algorithms = i
                .algorithms
                .iter()
                .map(|a| {
                    a.parse()
                        .map_err(|_| anyhow::anyhow!("unsupported algorithm {a}"))
                })
                .collect::<anyhow::Result<_>>()?;
            Ok(IssuerSettings {
                issuer: i.issuer.clone(),
                audiences: i.audiences.clone(),
                algorithms,
                keys,
            })
        })
        .collect()
}

/// The registry served on `/metrics`: the gateway composes, each part
/// registers its own metrics.
fn register_metrics(shared: &Arc<Shared>, audit: &FileAuditLog) -> Registry {
    let mut registry = Registry::default();
    metrics::register_build_info(&mut registry);
    shared.core.metrics.register_metrics(&mut registry);
    // The cache, pacer and authenticator are read from the runtime current
    // at each scrape. A reload that builds a new one restarts its counters
    // from zero (a counter reset to Prometheus); see each part's docs.
    // Weak: the registry (held by the admin router) must not keep the
    // runtimes alive after the gateway is gone.
    let runtime: Weak<ArcSwap<Runtime>> = Arc::downgrade(&shared.runtime);
    let current = move || runtime.upgrade().map(|runtime| runtime.load_full());
    let cache = current.clone();
    odgw_cache::register_metrics(&mut registry, move || Some(cache()?.cache.clone()));
    let pacer = current.clone();
    odgw_limit::register_pacing_metrics(&mut registry, move || Some(pacer()?.pacer.clone()));
    odgw_auth::register_metrics(&mut registry, move || {
        Some(current()?.authenticator.clone())
    });
    if let Some(redis) = &shared.core.redis {
        redis.register_metrics(&mut registry);
    }
    let has_feed = shared
        .changes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some();
    if has_feed {
        shared.change_counters.register_metrics(&mut registry);
    }
    // prometheus-client appends `_total` and a full stop to each help text.
    registry.register(
        "odgw_config_reloads",
        "Configuration reloads applied (SIGHUP or POST /admin/v1/reload)",
        shared.reloads.clone(),
    );
    registry.register(
        "odgw_config_reload_failures",
        "Configuration reloads refused; the running configuration stayed in effect",
        shared.refused.clone(),
    );
    odgw_audit::register_metrics(
        &mut registry,
        audit,
        &shared.core.audit_layer,
        &shared.core.intent_layer,
    );
    registry
}
