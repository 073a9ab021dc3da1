//! The token endpoint's part: redeeming a code (single use, bound to the
//! client, the redirect and the PKCE challenge) and rotating refresh tokens
//! (each spent once; a reuse ends the whole family). A session is a lease
//! chain: every access token after the first names the first as its
//! parent, so a rule on the first lease, the person, the client, the
//! workflow or the tenant ends it (`end_sessions_matching`, recorded with
//! the rule), and ending a session revokes its live leases by id, so a
//! gateway following the feed refuses them at once.

use chrono::TimeDelta;
use uuid::Uuid;

use super::{Authorization, LoginProvider, Session, digest, random_token, s256, same};
use crate::audit::{Origin, Outcome, actions};
use crate::leases::Links;
use crate::storage::StoreError;
use crate::tenants::uri;
use crate::tokens::issuer::{Issued, Provenance};
use crate::tokens::terms::MintTerms;

use super::People;

/// Why a code or refresh token got nothing: `invalid_grant` or `invalid_scope`.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Grant(String),
    #[error("{0}")]
    Scope(String),
    /// Too many refusals from this source: retry in this many seconds.
    #[error("too many failed requests; retry in {0} s")]
    Throttled(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A code as the token request presents it.
#[derive(Clone, Copy)]
pub struct CodeRedemption<'a> {
    pub code: &'a str,
    pub client_id: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub verifier: Option<&'a str>,
    pub resource: Option<&'a str>,
}

/// What happens after the mint: the session starts, or moves on.
pub enum Step {
    Start {
        session: Uuid,
    },
    Refresh {
        session: Uuid,
        spent: String,
        at: chrono::DateTime<chrono::Utc>,
    },
}

/// A code or refresh token accepted: what to mint.
pub struct Redeemed {
    pub terms: MintTerms,
    pub workflow: String,
    pub workload: String,
    pub resource: String,
    pub scope: String,
    pub provenance: Provenance,
    pub step: Step,
}

fn terms(p: &LoginProvider, client_id: &str) -> MintTerms {
    MintTerms {
        tenant_id: p.tenant_id.clone(),
        client_id: client_id.to_string(),
        workflows: vec![p.workflow.clone()],
        grants: p.grants.clone(),
        max_ttl_seconds: p.max_ttl_seconds,
        workload_pattern: None,
        workload_verified: true,
        max_mints_per_second: None,
        stamp: None,
        dpop_bound: false,
    }
}

impl People {
    async fn refuse(&self, origin: &Origin, tenant: Option<&str>, client: &str, why: &str) -> Refused {
        let mut e = origin.event(actions::TOKEN_DENIED, Outcome::Denied, self.clock.now());
        e.tenant = tenant.map(str::to_string);
        e.client_id = Some(crate::audit::sanitize(client, 2048));
        e.reason = Some(format!("invalid_grant: {why}"));
        match self.note_failure(origin, e, "people:token").await {
            Ok(Some(wait)) => Refused::Throttled(wait),
            Ok(None) => Refused::Grant(why.to_string()),
            Err(e) => e.into(),
        }
    }

    /// A spent code or refresh token presented again (RFC 6749 §4.1.2, RFC 9700
    /// §4.14): the session it started or belongs to ends (`ending` is the
    /// session's reason), and the request is refused with `why`.
    async fn replayed(
        &self,
        origin: &Origin,
        session: Option<(Uuid, &str)>,
        ending: &str,
        tenant: Option<&str>,
        client: &str,
        why: &str,
    ) -> Result<Refused, StoreError> {
        if let Some((id, session_tenant)) = session {
            self.end_session(id, session_tenant, ending, origin).await?;
        }
        Ok(self.refuse(origin, tenant, client, why).await)
    }

    /// Whether a client may still have tokens: one named by a metadata
    /// document or registered through RFC 7591 always; a tenant's interactive
    /// client while it is enabled.
    async fn client_enabled(&self, tenant: &str, client_id: &str) -> Result<bool, StoreError> {
        if super::cimd::is_document_url(client_id) || client_id.starts_with(super::registration::PREFIX) {
            return Ok(true);
        }
        match self.store.read().await?.conn().get_client(tenant, client_id).await {
            Ok(c) => Ok(!c.disabled),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `grant_type=authorization_code`.
    pub async fn redeem_code(
        &self,
        r: &CodeRedemption<'_>,
        jkt: Option<&str>,
        origin: &Origin,
    ) -> Result<Redeemed, Refused> {
        let CodeRedemption {
            code,
            client_id,
            redirect_uri,
            verifier,
            resource,
        } = *r;
        if let Some(wait) = self.braked(origin) {
            return Err(Refused::Throttled(wait));
        }
        let client = client_id.unwrap_or_default();
        let a: Authorization = match self
            .store
            .read()
            .await?
            .conn()
            .authorization_by_code(&digest(code))
            .await
        {
            Ok(a) => a,
            Err(StoreError::NotFound) => {
                return Err(self.refuse(origin, None, client, "unknown authorization code").await);
            }
            Err(e) => return Err(e.into()),
        };
        let tenant = Some(a.tenant_id.as_str());
        if client_id != Some(a.client_id.as_str()) {
            return Err(self
                .refuse(origin, tenant, client, "the code was issued to another client")
                .await);
        }
        // Read before the write transaction: holding it while waiting for a
        // second connection could starve the pool.
        let provider = self.provider_of(&a.tenant_id, a.provider_id).await?;
        let enabled = self.client_enabled(&a.tenant_id, &a.client_id).await?;
        let session = Uuid::now_v7();
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.conn().spend_code(&a.id, session, now).await? {
            drop(tx);
            // RFC 6749 §4.1.2: a code used twice revokes what it gave. Read
            // again: a concurrent redemption may have spent it just now.
            let spent_by = match a.session_id {
                Some(s) => Some(s),
                None => {
                    self.store
                        .read()
                        .await?
                        .conn()
                        .get_authorization(&a.id)
                        .await?
                        .session_id
                }
            };
            let why = "the authorization code was used before; what it minted is revoked";
            let first = spent_by.map(|s| (s, a.tenant_id.as_str()));
            return Err(self
                .replayed(origin, first, "authorization code replayed", tenant, client, why)
                .await?);
        }
        let canonical = |r: &str| uri::canonicalize(r).ok();
        let why = if a.expires_at <= now {
            Some("the authorization code expired")
        } else if redirect_uri != Some(a.redirect_uri.as_str()) {
            Some("redirect_uri differs from the authorization request's")
        } else if !verifier
            .is_some_and(|v| crate::tenants::redirect::pkce_shaped(v) && same(&s256(v), &a.code_challenge))
        {
            Some("PKCE verification failed (code_verifier)")
        } else if resource.is_some_and(|r| canonical(r).is_none() || canonical(r) != canonical(&a.resource)) {
            Some("the code was issued for another resource")
        } else if provider.is_none() {
            Some("the login provider was deleted")
        } else if !enabled {
            Some("the client was disabled or deleted")
        } else if a.person.is_none() || a.identity.is_none() {
            Some("the authorization was not signed in")
        } else {
            None
        };
        let (Some(provider), Some(person), Some(identity), None) =
            (provider, a.person.clone(), a.identity.clone(), why)
        else {
            // The code stays spent.
            tx.commit().await?;
            return Err(self.refuse(origin, tenant, client, why.unwrap_or("refused")).await);
        };
        let s = Session {
            id: session,
            tenant_id: a.tenant_id.clone(),
            provider_id: provider.id,
            client_id: a.client_id.clone(),
            client_name: a.client_name.clone(),
            workload: person.clone(),
            workflow: provider.workflow.clone(),
            resource: a.resource.clone(),
            scopes: a.scopes.clone(),
            identity: identity.clone(),
            jkt: jkt.map(str::to_string),
            root_lease_id: None,
            latest_lease_id: None,
            refreshes: 0,
            created_at: now,
            last_used_at: now,
            expires_at: now + TimeDelta::seconds(provider.refresh_ttl_seconds),
            revoked_at: None,
            revoked_reason: None,
        };
        // With the code's spending, and before the mint: a replay or a rule
        // recorded meanwhile finds the session.
        tx.conn().insert_session(&s).await?;
        if a.client_id.starts_with(super::registration::PREFIX) {
            // Kept from pruning: a registration counts as used once it got a token.
            tx.conn().registered_client_used(&a.client_id, now).await?;
        }
        tx.commit().await?;
        Ok(Redeemed {
            terms: terms(&provider, &a.client_id),
            workflow: provider.workflow,
            workload: person,
            resource: a.resource,
            scope: a.scopes.join(" "),
            provenance: Provenance {
                federated: Some(login_provenance(&identity, session)),
                ..Provenance::default()
            },
            step: Step::Start { session },
        })
    }

    /// `grant_type=refresh_token`.
    pub async fn refresh(
        &self,
        token: &str,
        client_id: Option<&str>,
        resource: Option<&str>,
        scope: Option<&str>,
        jkt: Option<&str>,
        origin: &Origin,
    ) -> Result<Redeemed, Refused> {
        if let Some(wait) = self.braked(origin) {
            return Err(Refused::Throttled(wait));
        }
        let client = client_id.unwrap_or_default();
        let token_digest = digest(token);
        let mut c = self.store.read().await?;
        let row = match c.conn().get_refresh(&token_digest).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Err(self.refuse(origin, None, client, "unknown refresh token").await),
            Err(e) => return Err(e.into()),
        };
        let s = c.conn().get_session(row.session_id, None).await?;
        drop(c);
        let tenant = Some(s.tenant_id.as_str());
        // Checked before spending: a thief without the client id or the key cannot burn it.
        if client_id != Some(s.client_id.as_str()) {
            return Err(self
                .refuse(origin, tenant, client, "the refresh token was issued to another client")
                .await);
        }
        if !self.client_enabled(&s.tenant_id, &s.client_id).await? {
            return Err(self
                .refuse(origin, tenant, client, "the client was disabled or deleted")
                .await);
        }
        if s.jkt.is_some() && s.jkt.as_deref() != jkt {
            return Err(self
                .refuse(
                    origin,
                    tenant,
                    client,
                    "the refresh token is bound to a DPoP key: prove it",
                )
                .await);
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.conn().spend_refresh(&token_digest, now).await? {
            drop(tx);
            let why = "the refresh token was used before; its session is revoked";
            let family = Some((s.id, s.tenant_id.as_str()));
            return Err(self
                .replayed(
                    origin,
                    family,
                    "refresh token reused after rotation",
                    tenant,
                    client,
                    why,
                )
                .await?);
        }
        tx.commit().await?;
        if s.revoked_at.is_some() || s.expires_at <= now || row.expires_at <= now {
            return Err(self
                .refuse(origin, tenant, client, "the session has ended: sign in again")
                .await);
        }
        // A rule on the newest lease (or reaching it) ends the session too;
        // an emergency key revocation ends tokens, not sessions.
        if let Some(latest) = s.latest_lease_id {
            let mut c = self.store.read().await?;
            let rule = match c.conn().lease_status(latest, Some(&s.tenant_id)).await {
                Ok(st) => st
                    .revoked_by
                    .or(st.lease.revocation_id)
                    .or(st.lease.revoked_at.map(|_| Uuid::nil())),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            let ends = match rule {
                None => false,
                Some(id) if id.is_nil() => true,
                Some(id) => c.conn().rule_kind(id).await?.as_deref() != Some("kid"),
            };
            drop(c);
            if ends {
                self.end_session(s.id, &s.tenant_id, "a revocation rule reached the session", origin)
                    .await?;
                return Err(self
                    .refuse(origin, tenant, client, "the session was revoked: sign in again")
                    .await);
            }
        }
        if let Some(r) = resource {
            let asked = uri::canonicalize(r).ok();
            if asked.is_none() || asked != uri::canonicalize(&s.resource).ok() {
                self.give_back(&token_digest, now).await?;
                return Err(self
                    .refuse(
                        origin,
                        tenant,
                        client,
                        "a refresh token is for its session's resource only",
                    )
                    .await);
            }
        }
        let scopes = match scope {
            None => s.scopes.clone(),
            Some(asked) => {
                let asked: Vec<String> = asked.split(' ').filter(|x| !x.is_empty()).map(str::to_string).collect();
                if asked.iter().any(|x| !s.scopes.contains(x)) {
                    self.give_back(&token_digest, now).await?;
                    return Err(Refused::Scope(
                        "a refresh may narrow the session's scopes, never widen them".into(),
                    ));
                }
                asked
            }
        };
        let Some(provider) = self.provider_of(&s.tenant_id, s.provider_id).await? else {
            return Err(self
                .refuse(origin, tenant, client, "the login provider was deleted")
                .await);
        };
        let mut provenance = Provenance {
            federated: Some(login_provenance(&s.identity, s.id)),
            parent_id: s.root_lease_id,
            ..Provenance::default()
        };
        if let Some(root) = s.root_lease_id {
            provenance.links = Links {
                ancestors: vec![root],
                clients: vec![s.client_id.clone()],
                ..Links::default()
            };
        }
        Ok(Redeemed {
            terms: terms(&provider, &s.client_id),
            workflow: s.workflow.clone(),
            workload: s.workload.clone(),
            resource: s.resource.clone(),
            scope: scopes.join(" "),
            provenance,
            step: Step::Refresh {
                session: s.id,
                spent: token_digest,
                at: now,
            },
        })
    }

    /// After the lease is committed: the session records it, and a fresh
    /// refresh token is stored (and returned once). A session ended while
    /// the token was minted gets nothing, and the lease is revoked.
    pub async fn minted(&self, step: &Step, issued: &Issued, origin: &Origin) -> Result<String, Refused> {
        let (session, first) = match step {
            Step::Start { session } => (*session, true),
            Step::Refresh { session, .. } => (*session, false),
        };
        let now = self.clock.now();
        let refresh = random_token("mfy_rt_");
        let mut tx = self.store.begin().await?;
        tx.conn().session_minted(session, issued.lease.id, first, now).await?;
        let s = tx.conn().get_session(session, None).await?;
        if s.revoked_at.is_none() {
            tx.conn()
                .insert_refresh(&digest(&refresh), session, now, s.expires_at)
                .await?;
            tx.commit().await?;
            return Ok(refresh);
        }
        // Ended while this token was minted: the token is never returned,
        // and its lease is revoked so that nothing live is left behind.
        let caller = crate::audit::Caller {
            identity: serde_json::json!({"system": "session", "session": session}),
            act: None,
            origin: origin.clone(),
        };
        self.revocations
            .record(
                &mut tx,
                &caller,
                Some(&s.tenant_id),
                &crate::leases::Selector::Lease(issued.lease.id),
                "session revoked while a token was minted",
                crate::leases::Cover::Forever,
            )
            .await?;
        tx.commit().await?;
        Err(Refused::Grant("the session was revoked: sign in again".into()))
    }

    /// A guard that gives a spent refresh token back when dropped before
    /// `done` (None for a code: a spent code is never given back).
    pub fn give_back_unless_done(&self, step: &Step) -> Option<GiveBack> {
        match step {
            Step::Refresh { spent, at, .. } => Some(GiveBack {
                store: self.store.clone(),
                spent: Some((spent.clone(), *at)),
            }),
            Step::Start { .. } => None,
        }
    }

    async fn give_back(&self, spent: &str, at: chrono::DateTime<chrono::Utc>) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.conn().unspend_refresh(spent, at).await?;
        tx.commit().await
    }
}

/// What leases and audit events record of the person's sign-in.
fn login_provenance(identity: &serde_json::Value, session: Uuid) -> serde_json::Value {
    let mut v = identity.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("session".into(), serde_json::json!(session));
        o.insert("login".into(), serde_json::json!(true));
    }
    v
}

/// Gives a spent refresh token back unless `done` was called: dropped
/// between spending and storing the successor (an error, the request's
/// timeout, the client gone), it spawns the give-back.
pub struct GiveBack {
    store: crate::storage::Store,
    spent: Option<(String, chrono::DateTime<chrono::Utc>)>,
}

impl GiveBack {
    pub fn done(&mut self) {
        self.spent = None;
    }
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        let Some((digest, at)) = self.spent.take() else { return };
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(mut tx) = store.begin().await
                    && tx.conn().unspend_refresh(&digest, at).await.is_ok()
                {
                    let _ = tx.commit().await;
                }
            });
        }
    }
}
