//! Builds every component from a validated [`Config`], composes the request
//! stack, and serves the data plane and the admin listener.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use odgw_audit::{AuditLayer, AuditSettings, AuditSink, FileAuditLog, IntentLayer};
use odgw_auth::{AuthLayer, AuthSettings, Authenticator, IssuerSettings, KeySource};
use odgw_cache::{CacheLayer, CacheSettings, ResponseCache};
use odgw_core::{Request, Response};
use odgw_keystore::{KeyStore, MasterKey, SledKeyStore, TenantDefaults};
use odgw_limit::{LocalPacer, Pacer, PacingLayer, PacingSettings, SubjectLimitLayer};
use odgw_proxy::{Forwarder, GuardLayer, HopByHopLayer, UpstreamClient, UpstreamSettings};
use tokio::net::TcpListener;
use tower::{util::BoxCloneService, ServiceBuilder};

use odgw_admin::AdminParts;

use crate::{
    config::{self, Config, Env},
    context::RequestContextLayer,
    listener::{serve_listener, ConnectionLimits},
    metrics::{write_metric, Metrics},
    probe::{Readiness, UpstreamProbe},
    tenant::TenantLayer,
};

/// The data-plane service after type erasure.
pub type DataPlane = BoxCloneService<Request, Response, Infallible>;

/// Everything a running gateway holds. Built by [`Gateway::build`] before any
/// port is bound, so that every startup error (bad master key, unreadable
/// secret, broken audit directory) surfaces first.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub store: Arc<dyn KeyStore>,
    pub authenticator: Authenticator,
    pub cache: ResponseCache,
    pub pacer: Arc<dyn Pacer>,
    pub subject_limit: SubjectLimitLayer,
    pub audit: Arc<FileAuditLog>,
    audit_layer: AuditLayer,
    intent_layer: IntentLayer,
    pub upstream: UpstreamClient,
    pub metrics: Metrics,
    pub defaults: TenantDefaults,
    admin_token: odgw_core::SecretString,
}

impl Gateway {
    /// Opens the store, loads keys and secrets, and prepares every layer.
    pub async fn build(config: Config, env: &dyn Env) -> anyhow::Result<Self> {
        odgw_auth::install_crypto_providers();

        let master = config::read_secret(
            config.store.master_key_file.as_deref(),
            config::ENV_MASTER_KEY,
            env,
        )
        .context("master key")?;
        let master = MasterKey::from_base64(&master).context("master key")?;
        let store: Arc<dyn KeyStore> = Arc::new(
            SledKeyStore::open(&config.store.path, master)
                .with_context(|| format!("key store at {}", config.store.path.display()))?,
        );
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

        let authenticator = Authenticator::new(auth_settings(&config), issuer_settings(&config)?)
            .await
            .context("auth")?;

        let audit = Arc::new(
            FileAuditLog::open(AuditSettings {
                write_timeout: config.audit.write_timeout.0,
                fail_closed: config.audit.fail_closed,
                ..AuditSettings::new(config.audit.path.clone())
            })
            .await
            .with_context(|| format!("audit directory {}", config.audit.path.display()))?,
        );

        let cache = ResponseCache::new(CacheSettings {
            routes: config.cache.routes.clone(),
            ttl: config.cache.ttl.0,
            max_size: config.cache.max_size.0,
        });
        let pacer: Arc<dyn Pacer> = Arc::new(LocalPacer::new(pacing_settings(&config)));
        let upstream = UpstreamClient::new(UpstreamSettings {
            connect_timeout: config.upstream.connect_timeout.0,
            timeout: config.upstream.timeout.0,
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 32,
        })
        .context("upstream client")?;
        let defaults = TenantDefaults {
            base_url: config.upstream.base_url.trim_end_matches('/').to_owned(),
            developer_key: Some(developer_key),
            rate: config.limits.tenant_rate,
            burst: config.limits.tenant_burst,
        };
        let subject_limit = odgw_limit::subject_limit_layer(
            config.limits.subject_rate,
            config.limits.subject_burst,
        );
        let sink: Arc<dyn AuditSink> = audit.clone();
        let write_timeout = config.audit.write_timeout.0;
        let audit_layer = AuditLayer::new(sink.clone(), config.audit.fail_closed, write_timeout);
        let intent_layer = IntentLayer::new(sink, config.audit.fail_closed, write_timeout);
        let metrics = Metrics::default();
        register_collectors(&metrics, &cache, &audit, &audit_layer, &intent_layer);
        Ok(Self {
            config,
            store,
            authenticator,
            cache,
            pacer,
            subject_limit,
            audit,
            audit_layer,
            intent_layer,
            upstream,
            metrics,
            defaults,
            admin_token,
        })
    }

    /// The data-plane stack, outer to inner. Reordering happens here only.
    pub fn data_plane(&self) -> DataPlane {
        self.stack(self.audit_layer.clone(), self.intent_layer.clone())
    }

    /// The same stack with its audit records sent to `sink` instead of the
    /// audit log: for benchmarks that compare the audited path with a
    /// [`odgw_audit::NullSink`]. Never serve this.
    #[doc(hidden)]
    pub fn data_plane_with_audit_sink(&self, sink: Arc<dyn AuditSink>) -> DataPlane {
        let (fail_closed, timeout) = (
            self.config.audit.fail_closed,
            self.config.audit.write_timeout.0,
        );
        self.stack(
            AuditLayer::new(sink.clone(), fail_closed, timeout),
            IntentLayer::new(sink, fail_closed, timeout),
        )
    }

    fn stack(&self, audit_layer: AuditLayer, intent_layer: IntentLayer) -> DataPlane {
        let c = &self.config;
        let stack = ServiceBuilder::new()
            // Strip hop-by-hop and Connection-named headers before anything reads a header.
            .layer(HopByHopLayer)
            // Request id, facts slot for inner layers, X-Request-Id, access log, metrics.
            .layer(RequestContextLayer::new(self.metrics.clone()))
            // Every response waits for its durable audit record (fail closed).
            .layer(audit_layer)
            // Cheap refusals first: 404 outside /api/v1/, 400 bad_path, 413 body_too_large.
            .layer(GuardLayer::new(c.server.max_body.0))
            // JWT → Principal and the selected TenantId; 401/403.
            .layer(AuthLayer::new(self.authenticator.clone()))
            // Per-(tenant, subject) inbound limit: answered at once, before any store read.
            .layer(self.subject_limit.clone())
            // Key store → Tenant (keys, base_url, budget); 403 unknown/disabled.
            .layer(TenantLayer::new(self.store.clone(), self.defaults.clone()))
            // Cached reference GETs answer here and spend no upstream budget.
            .layer(CacheLayer::new(self.cache.clone()))
            // Wait for the tenant's Open Dental budget; handle upstream 429s.
            .layer(PacingLayer::new(self.pacer.clone(), self.pacing_settings()))
            // Writes get a durable intent record before Open Dental is called.
            .layer(intent_layer)
            .service(Forwarder::new(self.upstream.clone()));
        BoxCloneService::new(stack)
    }

    fn pacing_settings(&self) -> PacingSettings {
        pacing_settings(&self.config)
    }

    /// The admin API router (SPEC §6).
    pub fn admin_router(&self) -> axum::Router {
        let readiness = Readiness {
            store: self.store.clone(),
            audit: self.audit.clone(),
            authenticator: self.authenticator.clone(),
        };
        let metrics = self.metrics.clone();
        odgw_admin::router(AdminParts {
            store: self.store.clone(),
            cache: self.cache.clone(),
            audit: self.audit.clone(),
            audit_dir: self.config.audit.path.clone(),
            token: self.admin_token.clone(),
            probe: Arc::new(UpstreamProbe {
                store: self.store.clone(),
                defaults: self.defaults.clone(),
                pacer: self.pacer.clone(),
                forwarder: Forwarder::new(self.upstream.clone()),
                queue_timeout: self.config.limits.queue_timeout.0,
            }),
            readiness: Arc::new(move || {
                let readiness = readiness.clone();
                Box::pin(async move { readiness.report().await })
            }),
            metrics: Arc::new(move || metrics.render()),
        })
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
        let limits = ConnectionLimits::default();
        let refresh = self.authenticator.spawn_background_refresh();
        // Forget subjects whose allowance has fully refilled, so limiter
        // memory stays bounded without handing anyone a fresh burst early.
        let housekeeping = self
            .subject_limit
            .spawn_housekeeping(Duration::from_secs(60));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let data_task = tokio::spawn(serve_listener(
            data,
            self.data_plane(),
            limits,
            stopped(stop_rx.clone()),
            grace,
        ));
        let admin_task = tokio::spawn(serve_listener(
            admin,
            self.admin_router(),
            limits,
            stopped(stop_rx),
            grace,
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stop_tx.send(true);
        let _ = tokio::join!(data_task, admin_task);
        refresh.abort();
        if let Some(task) = housekeeping {
            task.abort();
        }
        self.audit.flush_and_close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
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

fn register_collectors(
    metrics: &Metrics,
    cache: &ResponseCache,
    audit: &Arc<FileAuditLog>,
    audit_layer: &AuditLayer,
    intent_layer: &IntentLayer,
) {
    let cache = cache.clone();
    metrics.register(Arc::new(move |out: &mut String| {
        write_metric(
            out,
            "odgw_cache_hits_total",
            "counter",
            "Cache hits.",
            cache.hits(),
        );
        write_metric(
            out,
            "odgw_cache_misses_total",
            "counter",
            "Cache misses.",
            cache.misses(),
        );
        write_metric(
            out,
            "odgw_cache_entries",
            "gauge",
            "Cached responses.",
            cache.entry_count(),
        );
        write_metric(
            out,
            "odgw_cache_bytes",
            "gauge",
            "Weighted size of the cache in bytes.",
            cache.weighted_size(),
        );
    }));
    let audit = audit.clone();
    let (audit_layer, intent_layer) = (audit_layer.clone(), intent_layer.clone());
    metrics.register(Arc::new(move |out: &mut String| {
        write_metric(
            out,
            "odgw_audit_healthy",
            "gauge",
            "1 while audit records are being made durable.",
            u8::from(audit.is_healthy()),
        );
        write_metric(
            out,
            "odgw_audit_write_failures_total",
            "counter",
            "Audit appends that failed.",
            audit_layer.failures() + intent_layer.failures(),
        );
        write_metric(
            out,
            "odgw_audit_batches_total",
            "counter",
            "Group-commit batches (one fsync each).",
            audit.batches(),
        );
    }));
}
