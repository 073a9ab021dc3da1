//! Minting: resolve the target, decide (pure, in `policy`), commit the lease
//! and its audit event, and only then sign and hand out the token. A token
//! the database does not know about never exists.

use std::sync::Arc;

use chrono::DateTime;
use uuid::Uuid;

use super::claims::{AccessClaims, Confirmation};
use super::commit::{Committed, IssueWriter, Seal};
use super::policy::{self, Denial, MintRequest, Target, TargetScopes};
use super::terms::MintTerms;
use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::jose::jws;
use crate::keys::Keyring;
use crate::leases::Lease;
use crate::storage::{Store, StoreError};
use crate::tenants::catalog::{Found, Stamp};
use crate::tenants::{Catalog, uri};

#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
    pub lease: Lease,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{}", .0.message())]
    Denied(Denial),
    #[error("no active signing key")]
    NoSigningKey,
    /// The signer failed (an HSM or KMS away, the RNG gone): 503.
    #[error(transparent)]
    Signing(crate::jose::SignError),
    #[error("limit reached: {}", .0.what)]
    Limited(super::limits::Limited),
    /// The client or resource changed while this mint was decided (another
    /// request or replica changed it); the catalog has caught up: decide again.
    #[error("the client or resource changed; decide again")]
    Stale,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a token comes from beyond its client: the external identity a
/// trust policy accepted, and (for delegation) the actor chain and the lease
/// it was exchanged from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub federated: Option<serde_json::Value>,
    pub policy_id: Option<Uuid>,
    pub actor: Option<serde_json::Value>,
    pub parent_id: Option<Uuid>,
    /// The chain's actors and ancestor leases, for revocation.
    pub links: crate::leases::Links,
    /// The DPoP key the token is bound to (RFC 9449): its thumbprint.
    pub jkt: Option<String>,
    /// Spent with the lease, or no lease (the proof's `jti`).
    pub spend: Option<super::commit::Spend>,
}

/// This server as an issuer: `iss`, and the admin API's resource URI.
#[derive(Debug, Clone)]
pub struct IssuerId {
    /// Exactly as configured; the `iss` claim.
    pub url: String,
    /// Canonical form, for matching resource URIs.
    pub canonical: String,
}

/// Token lifetimes, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// When neither the request nor the resource says otherwise.
    pub default_ttl: i64,
    /// The hard ceiling on any token.
    pub max_ttl: i64,
}

/// Mints tokens: the decision, the durable lease and audit event, the signature.
#[derive(Clone)]
pub struct Issuer {
    catalog: Arc<Catalog>,
    limits: super::limits::Limits,
    keyring: Arc<Keyring>,
    writer: IssueWriter,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    id: IssuerId,
    lifetimes: Lifetimes,
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl Issuer {
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        keyring: Arc<Keyring>,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        id: IssuerId,
        lifetimes: Lifetimes,
    ) -> Self {
        Self {
            limits: super::limits::Limits::new(store.clone(), audit.clone(), clock.clone()),
            writer: IssueWriter::spawn(store),
            catalog,
            keyring,
            audit,
            clock,
            id,
            lifetimes,
        }
    }

    pub fn id(&self) -> &IssuerId {
        &self.id
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// Whether the lease writer still runs (it stops only on a panic).
    pub fn is_writing(&self) -> bool {
        self.writer.is_running()
    }

    /// The resource to mint for, and the catalog version it was read at
    /// (None for the admin API, which is no catalog entry).
    async fn resolve_target(&self, tenant: &str, resource: &str) -> Result<(Target, Option<Stamp>), MintError> {
        let canonical = uri::canonicalize(resource)
            .map_err(|e| MintError::Denied(Denial::InvalidTarget(format!("invalid resource: {e}"))))?;
        if canonical == self.id.canonical {
            let target = Target {
                canonical_uri: canonical,
                scopes: TargetScopes::AdminApi,
                default_ttl: self.lifetimes.default_ttl,
                max_ttl: self.lifetimes.max_ttl,
            };
            return Ok((target, None));
        }
        match self.catalog.resource(tenant, &canonical).await? {
            Some(Found { resource: r, stamp }) => Ok((
                Target {
                    canonical_uri: canonical,
                    scopes: TargetScopes::Listed(r.scopes),
                    default_ttl: r.default_ttl_seconds,
                    max_ttl: r.max_ttl_seconds,
                },
                Some(stamp),
            )),
            None => Err(MintError::Denied(Denial::InvalidTarget("unknown resource".into()))),
        }
    }

    /// Decides, commits the lease and its audit event, then signs. A denial is
    /// audited before it is returned.
    pub async fn mint(
        &self,
        terms: &MintTerms,
        resource: Option<&str>,
        req: &MintRequest<'_>,
        origin: &Origin,
        provenance: &Provenance,
    ) -> Result<Issued, MintError> {
        let mut read_at = None;
        let decided = match resource {
            _ if terms.dpop_bound && provenance.jkt.is_none() => Err(MintError::Denied(Denial::InvalidDpopProof(
                "this client's tokens are sender-constrained: send a DPoP proof".into(),
            ))),
            None => Err(MintError::Denied(Denial::InvalidRequest(
                "`resource` (or `audience`) is required".into(),
            ))),
            Some(resource) => match self.resolve_target(&terms.tenant_id, resource).await {
                // The admin API checks no DPoP proofs: a bound admin token would
                // be a bearer one there, so none is minted (DESIGN deviation).
                Ok((target, _)) if matches!(target.scopes, TargetScopes::AdminApi) && provenance.jkt.is_some() => {
                    Err(MintError::Denied(Denial::InvalidDpopProof(
                        "the admin API does not take DPoP-bound tokens: request admin tokens without a proof".into(),
                    )))
                }
                Ok((target, stamp)) => {
                    read_at = stamp;
                    policy::decide(terms, &target, req, self.lifetimes.max_ttl).map_err(MintError::Denied)
                }
                Err(e) => Err(e),
            },
        };
        let decision = match decided {
            Ok(d) => d,
            Err(MintError::Denied(denial)) => {
                // A denial read off a catalog entry that has since changed
                // (a grant added through another replica) is decided again.
                if let Some(read_at) = terms.stamp {
                    self.catalog.catch_up(&terms.tenant_id).await?;
                    if self.catalog.version(&terms.tenant_id) != read_at.tenant {
                        return Err(MintError::Stale);
                    }
                }
                let mut event = origin.event(actions::TOKEN_DENIED, Outcome::Denied, self.clock.now());
                event.reason = Some(format!("{}: {}", denial.code(), denial.message()));
                event.tenant = Some(terms.tenant_id.clone());
                event.client_id = Some(terms.client_id.clone());
                event.workflow = req.workflow.map(|w| truncate(w, 128));
                event.workload = req.workload.map(|w| truncate(w, 256));
                event.resource = resource.map(|r| truncate(r, 2048));
                self.audit.append(&[event]).await?;
                metrics::counter!("mayfly_tokens_denied_total", "reason" => denial.code()).increment(1);
                return Err(MintError::Denied(denial));
            }
            Err(e) => return Err(e),
        };
        let resource = resource.unwrap_or_default();
        let slot = match self.limits.admit(terms, origin).await? {
            Ok(slot) => slot,
            Err(limited) => return Err(MintError::Limited(limited)),
        };

        let signer = self.keyring.current().active.clone().ok_or(MintError::NoSigningKey)?;
        let now = self.clock.now();
        let iat = now.timestamp();
        let exp = iat + decision.ttl_seconds;
        let lease = Lease {
            seq: 0,
            id: Uuid::now_v7(),
            tenant_id: terms.tenant_id.clone(),
            workflow: decision.workflow,
            workload: decision.workload,
            client_id: terms.client_id.clone(),
            actor: provenance.actor.clone(),
            resource: resource.to_string(),
            scopes: decision.scopes,
            kid: signer.kid().to_string(),
            issued_at: now,
            expires_at: DateTime::from_timestamp(exp, 0).unwrap_or(now),
            revoked_at: None,
            revocation_id: None,
            source: Some(origin.source.clone()),
            request_id: Some(origin.request_id.clone()),
            federated: provenance.federated.clone(),
            policy_id: provenance.policy_id,
            parent_id: provenance.parent_id,
            jkt: provenance.jkt.clone(),
            links: provenance.links.clone(),
        };
        let action = match lease.actor {
            Some(_) => actions::TOKEN_EXCHANGED,
            None => actions::TOKEN_ISSUED,
        };
        let mut event = origin.event(action, Outcome::Success, now);
        event.actor = lease.actor.clone();
        let mut reason = Vec::new();
        if let Some(parent) = lease.parent_id {
            reason.push(format!("exchanged from lease {parent}"));
        }
        if let Some(f) = &lease.federated {
            reason.push(format!("federated: {f}"));
        }
        if !reason.is_empty() {
            event.reason = Some(reason.join("; "));
        }
        event.tenant = Some(lease.tenant_id.clone());
        event.workflow = Some(lease.workflow.clone());
        event.workload = Some(lease.workload.clone());
        event.client_id = Some(lease.client_id.clone());
        event.resource = Some(lease.resource.clone());
        event.scopes = Some(lease.scopes.clone());
        event.lease_id = Some(lease.id);

        // Terms and resource read from the catalog commit only while the
        // tenant's version is still the older of those they were decided on.
        let check = match (terms.stamp, read_at) {
            (Some(a), Some(b)) => Some(a.older(b)),
            (a, b) => a.or(b),
        };
        let scope = lease.scopes.join(" ");
        let claims = AccessClaims {
            iss: self.id.url.clone(),
            sub: lease.workload.clone(),
            aud: lease.resource.clone(),
            exp,
            iat,
            nbf: iat,
            jti: lease.id.to_string(),
            client_id: lease.client_id.clone(),
            scope: scope.clone(),
            tenant: lease.tenant_id.clone(),
            workflow: lease.workflow.clone(),
            act: lease.actor.clone(),
            lease_seq: None,
            cnf: lease.jkt.clone().map(|jkt| Confirmation { jkt }),
        };
        // Signed inside the lease's transaction once its number is known: a
        // token that cannot be signed leaves no lease behind.
        let seal: Seal = Arc::new(move |seq| {
            let (signer, mut claims) = (signer.clone(), claims.clone());
            claims.lease_seq = Some(seq);
            Box::pin(async move { jws::sign(&*signer, &claims).await })
        });
        let mut lease = lease;
        let committed = self
            .writer
            .commit(lease.clone(), event, check, provenance.spend.clone(), Some(seal))
            .await;
        let access_token = match committed {
            Ok(Committed {
                seq,
                token: Some(token),
            }) => {
                slot.committed();
                lease.seq = seq;
                token
            }
            Ok(Committed { token: None, .. }) => return Err(MintError::NoSigningKey),
            Err(StoreError::Stale) => {
                self.catalog.catch_up(&lease.tenant_id).await?;
                return Err(MintError::Stale);
            }
            Err(StoreError::Withdrawn(why)) => {
                tracing::error!(error = %why, lease = %lease.id, "cannot sign an access token; its lease was not committed");
                metrics::counter!("mayfly_signing_failures_total").increment(1);
                return Err(MintError::Signing(crate::jose::SignError {
                    kid: lease.kid.clone(),
                    why,
                }));
            }
            Err(e) => return Err(e.into()),
        };
        metrics::counter!("mayfly_tokens_issued_total").increment(1);
        Ok(Issued {
            access_token,
            expires_in: decision.ttl_seconds,
            scope,
            lease,
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::keys::KeyService;
    use crate::tenants::{Client, ClientKind, Grant, Resource, Tenant};
    use crate::testing::temp_store;

    struct Setup {
        issuer: Issuer,
        store: Store,
        keys: KeyService,
        client: Client,
        catalog: Arc<Catalog>,
        _dir: crate::testing::TempDir,
    }

    async fn setup() -> Setup {
        let (store, dir) = temp_store().await;
        let clock = crate::testing::test_clock();
        let now = clock.now();
        let keys = crate::testing::key_service(&store, clock.clone(), 3600).await;
        let client = Client {
            name: "CI".into(),
            workflows: vec!["release".into()],
            grants: vec![Grant {
                resource: "https://mcp.acme.test/github".into(),
                scopes: vec!["issues:read".into()],
            }],
            ..Client::new("acme", "acme-ci", ClientKind::Ci, now)
        };
        let mut tx = store.begin().await.unwrap();
        let mut c = tx.conn();
        c.insert_tenant(&Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            created_at: now,
            max_live_leases: None,
            max_mints_per_second: None,
        })
        .await
        .unwrap();
        c.insert_resource(&Resource {
            id: Uuid::now_v7(),
            tenant_id: "acme".into(),
            uri: "https://mcp.acme.test/github".into(),
            canonical_uri: "https://mcp.acme.test/github".into(),
            name: "GitHub".into(),
            scopes: vec!["issues:read".into(), "issues:write".into()],
            default_ttl_seconds: 600,
            max_ttl_seconds: 3600,
            created_at: now,
            updated_at: now,
            tools: None,
        })
        .await
        .unwrap();
        c.insert_client(&client).await.unwrap();
        tx.commit().await.unwrap();
        let catalog = Catalog::load(store.clone(), clock.clone()).await.unwrap();
        let issuer = Issuer::new(
            store.clone(),
            catalog.clone(),
            keys.keyring().clone(),
            AuditLog::new(store.clone()),
            clock,
            IssuerId {
                url: "http://mayfly.test".into(),
                canonical: "http://mayfly.test".into(),
            },
            Lifetimes {
                default_ttl: 900,
                max_ttl: 3600,
            },
        );
        Setup {
            issuer,
            store,
            keys,
            client,
            catalog,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_mint_commits_its_lease_and_event_before_the_signed_token_is_returned() {
        let s = setup().await;
        let issued = s
            .issuer
            .mint(
                &MintTerms::of_client(&s.client),
                Some("https://MCP.acme.test/github/"),
                &MintRequest {
                    scope: Some("issues:read issues:write"),
                    ..Default::default()
                },
                &Origin::default(),
                &Provenance::default(),
            )
            .await
            .unwrap();
        assert_eq!(issued.scope, "issues:read", "defined but ungranted scopes are dropped");
        assert_eq!(issued.expires_in, 600);
        let mut c = s.store.read().await.unwrap();
        let status = c.conn().lease_status(issued.lease.id, None).await.unwrap();
        assert_eq!(status.lease.workflow, "release");
        assert_eq!(
            status.lease.resource, "https://MCP.acme.test/github/",
            "aud kept verbatim"
        );
        let events = c
            .conn()
            .list_audit("acme", &Default::default(), i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(events[0].event.action, actions::TOKEN_ISSUED);
        assert_eq!(events[0].event.lease_id, Some(issued.lease.id));
        // The signature verifies against the published keys and names the lease.
        let (_, raw) = jws::verify(&issued.access_token, &s.keys.keyring().current().published).unwrap();
        let claims: AccessClaims = serde_json::from_slice(&raw).unwrap();
        assert_eq!(claims.jti, issued.lease.id.to_string());
    }

    #[tokio::test]
    async fn a_denied_mint_is_audited_and_leaves_no_lease() {
        let s = setup().await;
        let err = s
            .issuer
            .mint(
                &MintTerms::of_client(&s.client),
                Some("https://mcp.acme.test/jira"),
                &MintRequest::default(),
                &Origin::default(),
                &Provenance::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, MintError::Denied(Denial::InvalidTarget(_))));
        let mut c = s.store.read().await.unwrap();
        let events = c
            .conn()
            .list_audit("acme", &Default::default(), i64::MAX, 10)
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event.action, actions::TOKEN_DENIED);
        assert_eq!(c.conn().last_lease_seq().await.unwrap(), 0);
    }

    /// The client is read from the catalog, then deleted in the database
    /// before the mint commits (as through another replica whose notice has
    /// not arrived): the lease writer leaves the lease out and the mint goes
    /// back as stale; decided again, it is refused.
    #[tokio::test]
    async fn a_mint_decided_on_a_catalog_entry_changed_since_commits_nothing() {
        let s = setup().await;
        let mut client = s.client.clone();
        let read_at = s.catalog.stamp("acme");
        client.catalog_version = Some(read_at);
        assert!(read_at.tenant > 0 && read_at.global > 0);
        let mut tx = s.store.begin().await.unwrap();
        tx.conn()
            .delete_client("acme", "acme-ci", s.client.created_at)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(s.catalog.stamp("acme"), read_at, "not caught up yet");

        let mint = |client: Client| {
            let issuer = s.issuer.clone();
            async move {
                let req = MintRequest {
                    scope: Some("issues:read"),
                    ..Default::default()
                };
                let resource = Some("https://mcp.acme.test/github");
                issuer
                    .mint(
                        &MintTerms::of_client(&client),
                        resource,
                        &req,
                        &Origin::default(),
                        &Provenance::default(),
                    )
                    .await
            }
        };
        assert!(matches!(mint(client.clone()).await, Err(MintError::Stale)));
        let mut c = s.store.read().await.unwrap();
        assert_eq!(c.conn().last_lease_seq().await.unwrap(), 0, "no lease committed");
        assert!(s.catalog.version("acme") > read_at.tenant, "caught up");
        let fresh = s
            .catalog
            .check_secret("acme-ci", &secrecy::SecretString::from("x"))
            .await
            .unwrap();
        assert!(matches!(fresh, crate::tenants::catalog::Checked::Unknown), "{fresh:?}");
    }

    /// Terms no catalog client stands behind (a trust policy bound to none)
    /// still commit only while the resource they were decided on holds.
    #[tokio::test]
    async fn a_mint_without_a_client_stamp_still_checks_the_resource_it_read() {
        let s = setup().await;
        let terms = MintTerms {
            client_id: "policy.pods".into(),
            stamp: None,
            workload_verified: true,
            ..MintTerms::of_client(&s.client)
        };
        let found = s
            .catalog
            .resource("acme", "https://mcp.acme.test/github")
            .await
            .unwrap()
            .unwrap();
        let mut tx = s.store.begin().await.unwrap();
        tx.conn().delete_resource("acme", found.resource.id).await.unwrap();
        tx.commit().await.unwrap();
        let req = MintRequest {
            workload: Some("k8s:triage"),
            ..Default::default()
        };
        let resource = Some("https://mcp.acme.test/github");
        let minted = s
            .issuer
            .mint(&terms, resource, &req, &Origin::default(), &Provenance::default())
            .await;
        assert!(matches!(minted, Err(MintError::Stale)), "{minted:?}");
        let mut c = s.store.read().await.unwrap();
        assert_eq!(c.conn().last_lease_seq().await.unwrap(), 0, "no lease committed");
    }
}
