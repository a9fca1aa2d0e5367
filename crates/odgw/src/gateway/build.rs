//! Building the gateway's components from a [`Config`]: the reloadable
//! [`Runtime`], the console, and the metrics registry.

use std::sync::{Arc, Weak};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use odgw_audit::{AuditSink, FileAuditLog};
use odgw_auth::{AuthSettings, Authenticator, IssuerSettings, KeySource};
use odgw_cache::{CacheSettings, ResponseCache};
use odgw_console::{oidc::OidcSettings, session::CookieKey, Console, ConsoleSettings};
use odgw_core::SecretString;
use odgw_keystore::TenantDefaults;
use odgw_limit::{LocalPacer, Pacer, PacingSettings};
use prometheus_client::registry::Registry;

use crate::{
    config::{self, Config, Env},
    metrics,
};

use super::{
    stack::{stack, Parts},
    Core, Runtime, Shared,
};

impl Runtime {
    /// Builds the runtime for `config`, carrying over from `previous` the
    /// stateful parts whose settings did not change (see the module docs).
    pub(super) async fn build(
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
}

/// The console, signing in through `[console]`'s provider when one is
/// configured. Its cookies are sealed under a key derived from the master
/// key, so every replica accepts every replica's sessions.
pub(super) fn build_console(
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

pub(super) fn pacing_settings(c: &Config) -> PacingSettings {
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
pub(super) fn register_metrics(shared: &Arc<Shared>, audit: &FileAuditLog) -> Registry {
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
