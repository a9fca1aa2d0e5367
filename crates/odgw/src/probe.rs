//! The gateway's answers to the admin API: `tenant check` (a real call to
//! Open Dental with the tenant's keys) and `/readyz`.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use http_body_util::BodyExt;
use odgw_admin::{CheckReport, ReadinessCheck, TenantProbe};
use odgw_audit::{AuditSink, FileAuditLog};
use odgw_auth::Authenticator;
use odgw_core::{ApiPath, Body, ErrorCode, GatewayError, RequestContext, RequestId, TenantId};
use odgw_keystore::{KeyStore, StoreError};
use odgw_limit::{LimiterStatus, Pacer};
use odgw_proxy::Forwarder;
use tower::ServiceExt;

use odgw_keystore::TenantDefaults;

/// The PHI-free request Open Dental clients use as a health probe.
const CHECK_PATH: &str = "/api/v1/preferences?PrefName=ProgramVersion";
/// Largest check answer read (a one-element preference array is tiny).
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Runs `tenant check` through the same pacing budget and forwarder as the
/// data plane, so a check can never make Open Dental throttle the practice.
#[derive(Debug, Clone)]
pub struct UpstreamProbe {
    pub store: Arc<dyn KeyStore>,
    pub defaults: TenantDefaults,
    pub pacer: Arc<dyn Pacer>,
    pub forwarder: Forwarder,
    pub queue_timeout: Duration,
}

impl TenantProbe for UpstreamProbe {
    fn check(
        &self,
        tenant: TenantId,
    ) -> Pin<Box<dyn Future<Output = Result<CheckReport, GatewayError>> + Send>> {
        let this = self.clone();
        Box::pin(async move { this.run(tenant).await })
    }
}

impl UpstreamProbe {
    async fn run(self, id: TenantId) -> Result<CheckReport, GatewayError> {
        let record = self
            .store
            .get(&id)
            .await
            .map_err(|_| GatewayError::new(ErrorCode::Internal, "key store unavailable"))?
            .ok_or_else(|| GatewayError::new(ErrorCode::NotFound, "no such tenant"))?;
        let tenant = record.to_tenant(&self.defaults).map_err(|_| {
            GatewayError::new(
                ErrorCode::UnknownTenant,
                "no developer key is configured for this tenant",
            )
        })?;
        let _permit = self
            .pacer
            .acquire(&tenant.id, tenant.rate, tenant.burst, self.queue_timeout)
            .await
            .map_err(|rejection| {
                GatewayError::new(
                    ErrorCode::RateLimited,
                    "the tenant's upstream budget is exhausted",
                )
                .with_retry_after(rejection.retry_after.as_secs().max(1))
            })?;
        let mut request = http::Request::get(CHECK_PATH)
            .header(http::header::ACCEPT, "application/json")
            .body(Body::empty())
            .map_err(|_| GatewayError::new(ErrorCode::Internal, "internal error"))?;
        // What the outer layers would have given a client's request: its
        // context, the admitted path and the resolved tenant.
        let path = ApiPath::from_uri(request.uri())
            .ok_or_else(|| GatewayError::new(ErrorCode::Internal, "internal error"))?;
        let context = RequestContext::new(RequestId::generate(), None);
        request.extensions_mut().insert(path);
        request.extensions_mut().insert(tenant);
        request.extensions_mut().insert(context);
        let Ok(response) = self.forwarder.oneshot(request).await;
        if let Some(code) = response.extensions().get::<ErrorCode>().copied() {
            // The forwarder's own failure (unreachable, timeout): report it, not a status.
            return Ok(CheckReport {
                ok: false,
                upstream_status: None,
                program_version: None,
                detail: Some(code.as_str().to_owned()),
            });
        }
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_CHECK_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let program_version = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
            .ok()
            .and_then(|prefs| {
                prefs.into_iter().find_map(|p| {
                    (p.get("PrefName")?.as_str()? == "ProgramVersion")
                        .then(|| p.get("ValueString")?.as_str().map(str::to_owned))
                        .flatten()
                })
            });
        Ok(CheckReport {
            ok: status == 200 && program_version.is_some(),
            upstream_status: Some(status),
            program_version,
            detail: (status != 200).then(|| format!("open dental answered {status}")),
        })
    }
}

/// `/readyz`: config is loaded (we exist), the key store opens and decrypts,
/// the audit log is writable, and at least one issuer has usable keys.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub store: Arc<dyn KeyStore>,
    pub audit: Arc<FileAuditLog>,
    pub authenticator: Authenticator,
    /// The shared pacing store's state; `None` when pacing is in process.
    pub limiter: Option<LimiterStatus>,
}

impl Readiness {
    /// Shared backends (PostgreSQL, Redis) out of reach leave the replica
    /// ready, with the reason in `detail`: every replica shares them, so
    /// taking all of them out of the load balancer would turn clear answers
    /// (cached keys still serving, 503 `store_unavailable` or
    /// `limiter_unavailable`) into refused connections. What is this
    /// replica's own (its audit disk, its master key) does make it unready.
    pub async fn report(&self) -> odgw_admin::Readiness {
        let store = self.store.health().await;
        let mut checks = vec![
            match store {
                Ok(()) => ReadinessCheck {
                    name: "store",
                    ok: true,
                    detail: None,
                },
                // The database's own words (they may name its user) go to
                // the log, not to this unauthenticated endpoint.
                Err(error @ StoreError::Unavailable { .. }) => {
                    tracing::warn!(%error, "readiness: key store unreachable");
                    ReadinessCheck {
                        name: "store",
                        ok: true,
                        detail: Some(
                            "degraded: the key store cannot be reached; tenants in use keep their last known keys, admin changes are refused"
                                .to_owned(),
                        ),
                    }
                }
                Err(error) => ReadinessCheck {
                    name: "store",
                    ok: false,
                    detail: Some(error.to_string()),
                },
            },
            ReadinessCheck {
                name: "audit",
                ok: self.audit.is_healthy(),
                detail: (!self.audit.is_healthy())
                    .then(|| "audit records cannot be made durable".to_owned()),
            },
            ReadinessCheck {
                name: "auth",
                ok: self.authenticator.is_ready(),
                detail: (!self.authenticator.is_ready())
                    .then(|| "no issuer has usable keys yet".to_owned()),
            },
        ];
        if let Some(limiter) = self.limiter {
            checks.push(ReadinessCheck {
                name: "limiter",
                ok: true,
                detail: match limiter {
                    LimiterStatus::Shared => None,
                    LimiterStatus::Local => Some(
                        "degraded: redis unreachable; pacing in process (redis.on_failure = \"local\")"
                            .to_owned(),
                    ),
                    LimiterStatus::Unavailable => Some(
                        "degraded: redis unreachable; upstream requests refused with 503 limiter_unavailable (redis.on_failure = \"closed\")"
                            .to_owned(),
                    ),
                },
            });
        }
        odgw_admin::Readiness {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}
