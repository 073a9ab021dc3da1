//! Login providers, authorization requests, sessions, refresh tokens and
//! consents. Codes and refresh tokens are spent by a conditional UPDATE,
//! so two replicas redeeming the same one cannot both win.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Authorization, LoginProvider, Session};
use crate::leases::Selector;
use crate::storage::{Conn, Result, StoreError, run};

macro_rules! provider_columns {
    () => {
        "id, tenant_id, name, issuer, client_id, sealed_secret, scopes, claims, workload_template, workflow, grants,
         max_ttl_seconds, refresh_ttl_seconds, allow_registration, created_at, updated_at"
    };
}

macro_rules! authorization_columns {
    () => {
        "id, tenant_id, provider_id, client_id, client_name, redirect_uri, resource, scopes, client_state,
         code_challenge, browser_digest, idp_nonce, idp_verifier, person, identity, code_digest, session_id,
         created_at, expires_at, used_at"
    };
}

macro_rules! session_columns {
    () => {
        "id, tenant_id, provider_id, client_id, client_name, workload, workflow, resource, scopes, identity, jkt,
         root_lease_id, latest_lease_id, refreshes, created_at, last_used_at, expires_at, revoked_at, revoked_reason"
    };
}

fn found(n: u64) -> Result<()> {
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// A refresh token as stored: its family and whether it was spent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

impl Conn<'_> {
    pub async fn upsert_provider(&mut self, p: &LoginProvider, insert: bool) -> Result<()> {
        let sql = if insert {
            concat!(
                "INSERT INTO login_providers (",
                provider_columns!(),
                ")
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            )
        } else {
            "UPDATE login_providers SET name = $3, issuer = $4, client_id = $5, sealed_secret = $6, scopes = $7,
                    claims = $8, workload_template = $9, workflow = $10, grants = $11, max_ttl_seconds = $12,
                    refresh_ttl_seconds = $13, allow_registration = $14, created_at = $15, updated_at = $16
             WHERE id = $1 AND tenant_id = $2"
        };
        let n = run!(self, c => sqlx::query(sql)
            .bind(p.id).bind(&p.tenant_id).bind(&p.name).bind(&p.issuer).bind(&p.client_id)
            .bind(p.sealed_secret.as_deref()).bind(Json(&p.scopes)).bind(Json(&p.claims)).bind(&p.workload_template)
            .bind(&p.workflow).bind(Json(&p.grants)).bind(p.max_ttl_seconds).bind(p.refresh_ttl_seconds)
            .bind(p.allow_registration).bind(p.created_at).bind(p.updated_at)
            .execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    /// Every provider with a stored secret, in every tenant (`mayfly keys rewrap`).
    pub async fn providers_with_secrets(&mut self) -> Result<Vec<LoginProvider>> {
        Ok(run!(self, c => sqlx::query_as::<_, LoginProvider>(concat!(
            "SELECT ", provider_columns!(), " FROM login_providers WHERE sealed_secret IS NOT NULL ORDER BY id"))
            .fetch_all(c).await)?)
    }

    pub async fn reseal_provider_secret(&mut self, id: Uuid, sealed: &[u8]) -> Result<()> {
        run!(self, c => sqlx::query("UPDATE login_providers SET sealed_secret = $2 WHERE id = $1")
            .bind(id).bind(sealed).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn delete_provider(&mut self, tenant: &str, id: Uuid) -> Result<()> {
        let n = run!(self, c => sqlx::query("DELETE FROM login_providers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn get_provider(&mut self, tenant: &str, id: Uuid) -> Result<LoginProvider> {
        Ok(run!(self, c => sqlx::query_as::<_, LoginProvider>(concat!(
            "SELECT ", provider_columns!(), " FROM login_providers WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant).bind(id).fetch_one(c).await)?)
    }

    /// The tenant's providers in name order, after `after`.
    pub async fn list_providers(&mut self, tenant: &str, after: &str, limit: i64) -> Result<Vec<LoginProvider>> {
        Ok(run!(self, c => sqlx::query_as::<_, LoginProvider>(concat!(
            "SELECT ", provider_columns!(), " FROM login_providers WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3"))
            .bind(tenant).bind(after).bind(limit).fetch_all(c).await)?)
    }

    pub async fn insert_authorization(&mut self, a: &Authorization) -> Result<()> {
        run!(self, c => sqlx::query(concat!("INSERT INTO authorizations (", authorization_columns!(), ")
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"))
            .bind(&a.id).bind(&a.tenant_id).bind(a.provider_id).bind(&a.client_id).bind(a.client_name.as_deref())
            .bind(&a.redirect_uri).bind(&a.resource).bind(Json(&a.scopes)).bind(a.client_state.as_deref())
            .bind(&a.code_challenge).bind(&a.browser_digest).bind(&a.idp_nonce).bind(&a.idp_verifier)
            .bind(a.person.as_deref()).bind(a.identity.as_ref().map(Json)).bind(a.code_digest.as_deref())
            .bind(a.session_id).bind(a.created_at).bind(a.expires_at).bind(a.used_at)
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn get_authorization(&mut self, id: &str) -> Result<Authorization> {
        Ok(run!(self, c => sqlx::query_as::<_, Authorization>(concat!(
            "SELECT ", authorization_columns!(), " FROM authorizations WHERE id = $1"))
            .bind(id).fetch_one(c).await)?)
    }

    /// Records who signed in, once: false if the request was signed in before.
    pub async fn sign_in_authorization(
        &mut self,
        id: &str,
        person: &str,
        identity: &serde_json::Value,
    ) -> Result<bool> {
        let n = run!(self, c => sqlx::query(
            "UPDATE authorizations SET person = $2, identity = $3 WHERE id = $1 AND person IS NULL")
            .bind(id).bind(person).bind(Json(identity)).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Issues the code of a signed-in request, once: false if it had one.
    pub async fn issue_code(&mut self, id: &str, code_digest: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let n = run!(self, c => sqlx::query(
            "UPDATE authorizations SET code_digest = $2, expires_at = $3
             WHERE id = $1 AND code_digest IS NULL AND person IS NOT NULL AND used_at IS NULL")
            .bind(id).bind(code_digest).bind(expires_at).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Ends a request that will get no code (consent refused, sign-in failed).
    pub async fn close_authorization(&mut self, id: &str, now: DateTime<Utc>) -> Result<()> {
        run!(self, c => sqlx::query("UPDATE authorizations SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
            .bind(id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn authorization_by_code(&mut self, code_digest: &str) -> Result<Authorization> {
        Ok(run!(self, c => sqlx::query_as::<_, Authorization>(concat!(
            "SELECT ", authorization_columns!(), " FROM authorizations WHERE code_digest = $1"))
            .bind(code_digest).fetch_one(c).await)?)
    }

    /// Spends a code and names the session it starts: false if it was spent before.
    pub async fn spend_code(&mut self, id: &str, session: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let n = run!(self, c => sqlx::query(
            "UPDATE authorizations SET used_at = $2, session_id = $3 WHERE id = $1 AND used_at IS NULL")
            .bind(id).bind(now).bind(session).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    pub async fn prune_authorizations(&mut self, before: DateTime<Utc>) -> Result<u64> {
        Ok(
            run!(self, c => sqlx::query("DELETE FROM authorizations WHERE expires_at < $1")
            .bind(before).execute(c).await.map(|r| r.rows_affected()))?,
        )
    }

    pub async fn insert_session(&mut self, s: &Session) -> Result<()> {
        run!(self, c => sqlx::query(concat!("INSERT INTO sessions (", session_columns!(), ")
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"))
            .bind(s.id).bind(&s.tenant_id).bind(s.provider_id).bind(&s.client_id).bind(s.client_name.as_deref())
            .bind(&s.workload).bind(&s.workflow).bind(&s.resource).bind(Json(&s.scopes)).bind(Json(&s.identity))
            .bind(s.jkt.as_deref()).bind(s.root_lease_id).bind(s.latest_lease_id).bind(s.refreshes)
            .bind(s.created_at).bind(s.last_used_at).bind(s.expires_at).bind(s.revoked_at).bind(s.revoked_reason.as_deref())
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn get_session(&mut self, id: Uuid, tenant: Option<&str>) -> Result<Session> {
        Ok(run!(self, c => sqlx::query_as::<_, Session>(concat!(
            "SELECT ", session_columns!(), " FROM sessions WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)"))
            .bind(id).bind(tenant).fetch_one(c).await)?)
    }

    /// The tenant's sessions, newest first, before `before` (a session id).
    pub async fn list_sessions(
        &mut self,
        tenant: &str,
        workload: Option<&str>,
        (active_at, ended_at): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Session>> {
        Ok(run!(self, c => sqlx::query_as::<_, Session>(concat!(
            "SELECT ", session_columns!(), " FROM sessions WHERE tenant_id = $1 AND ($2 IS NULL OR workload = $2)
               AND ($3 IS NULL OR (revoked_at IS NULL AND expires_at > $3))
               AND ($6 IS NULL OR revoked_at IS NOT NULL OR expires_at <= $6) AND ($4 IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"))
            .bind(tenant).bind(workload).bind(active_at).bind(before).bind(limit).bind(ended_at).fetch_all(c).await)?)
    }

    /// A token minted in the session: its first lease, or its newest.
    pub async fn session_minted(&mut self, id: Uuid, lease: Uuid, first: bool, now: DateTime<Utc>) -> Result<()> {
        let sql = if first {
            "UPDATE sessions SET root_lease_id = $2, latest_lease_id = $2, last_used_at = $3 WHERE id = $1"
        } else {
            "UPDATE sessions SET latest_lease_id = $2, refreshes = refreshes + 1, last_used_at = $3 WHERE id = $1"
        };
        run!(self, c => sqlx::query(sql).bind(id).bind(lease).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Ends one session; false if it had ended.
    pub async fn end_session(&mut self, id: Uuid, now: DateTime<Utc>, reason: &str) -> Result<bool> {
        let n = run!(self, c => sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id).bind(now).bind(reason).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Ends every session of a login provider (it was deleted).
    pub async fn end_provider_sessions(&mut self, provider: Uuid, now: DateTime<Utc>) -> Result<u64> {
        Ok(run!(self, c => sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE provider_id = $1 AND revoked_at IS NULL")
            .bind(provider).bind(now).bind("login provider deleted").execute(c).await.map(|r| r.rows_affected()))?)
    }

    /// Ends every session a revocation rule reaches: the person (workload),
    /// the client, the workflow, the tenant, or any lease of the family. A key
    /// rule ends the tokens, not the sessions. Returns the first leases of
    /// the sessions it ended.
    pub async fn end_sessions_matching(
        &mut self,
        tenant: Option<&str>,
        selector: &Selector,
        now: DateTime<Utc>,
        reason: &str,
    ) -> Result<Vec<Option<Uuid>>> {
        let Some(tenant) = tenant else { return Ok(Vec::new()) };
        macro_rules! end {
            ($and:literal) => {
                concat!(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE tenant_id = $1 AND revoked_at IS NULL",
                    $and,
                    " RETURNING root_lease_id"
                )
            };
        }
        let ended = run!(self, c => {
            let q = |sql| sqlx::query_scalar::<_, Option<Uuid>>(sql).bind(tenant).bind(now).bind(reason);
            match selector {
                Selector::Key(_) => return Ok(Vec::new()),
                Selector::Tenant => q(end!("")),
                Selector::Workflow(w) => q(end!(" AND workflow = $4")).bind(w.as_str()),
                Selector::Workload(w) => q(end!(" AND workload = $4")).bind(w.as_str()),
                Selector::Client(id) => q(end!(" AND client_id = $4")).bind(id.as_str()),
                // Any lease of the family: the first, the newest, or one in
                // between (whose parent is the first).
                Selector::Lease(l) => q(end!(
                    " AND (root_lease_id = $4 OR latest_lease_id = $4
                           OR root_lease_id = (SELECT parent_id FROM leases WHERE id = $4))"
                ))
                .bind(*l),
            }
            .fetch_all(c).await
        })?;
        Ok(ended)
    }

    /// The leases of a session that may still be live: its first and every
    /// refresh (they name the first as parent).
    pub async fn session_leases(&mut self, root: Uuid, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
        Ok(run!(self, c => sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM leases WHERE (id = $1 OR parent_id = $1) AND expires_at > $2 AND revoked_at IS NULL")
            .bind(root).bind(now).fetch_all(c).await)?)
    }

    pub async fn insert_refresh(
        &mut self,
        digest: &str,
        session: Uuid,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        run!(self, c => sqlx::query(
            "INSERT INTO refresh_tokens (digest, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(digest).bind(session).bind(now).bind(expires_at).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn get_refresh(&mut self, digest: &str) -> Result<RefreshRow> {
        Ok(run!(self, c => sqlx::query_as::<_, RefreshRow>(
            "SELECT session_id, expires_at, used_at FROM refresh_tokens WHERE digest = $1")
            .bind(digest).fetch_one(c).await)?)
    }

    /// Spends a refresh token: false if it was spent before (a reuse).
    pub async fn spend_refresh(&mut self, digest: &str, now: DateTime<Utc>) -> Result<bool> {
        let n = run!(self, c => sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE digest = $1 AND used_at IS NULL")
            .bind(digest).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Gives back a refresh token whose refresh minted nothing (the client
    /// never saw a successor, so its next use must not read as a reuse).
    pub async fn unspend_refresh(&mut self, digest: &str, spent_at: DateTime<Utc>) -> Result<()> {
        run!(self, c => sqlx::query("UPDATE refresh_tokens SET used_at = NULL WHERE digest = $1 AND used_at = $2")
            .bind(digest).bind(spent_at).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn prune_refresh(&mut self, before: DateTime<Utc>) -> Result<u64> {
        Ok(
            run!(self, c => sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before).execute(c).await.map(|r| r.rows_affected()))?,
        )
    }

    /// The scopes a person agreed to for a client and resource, if any.
    pub async fn consent(
        &mut self,
        tenant: &str,
        client: &str,
        workload: &str,
        resource: &str,
    ) -> Result<Option<Vec<String>>> {
        let row = run!(self, c => sqlx::query_scalar::<_, Json<Vec<String>>>(
            "SELECT scopes FROM consents WHERE tenant_id = $1 AND client_id = $2 AND workload = $3 AND resource = $4")
            .bind(tenant).bind(client).bind(workload).bind(resource).fetch_optional(c).await)?;
        Ok(row.map(|j| j.0))
    }

    pub async fn remember_consent(
        &mut self,
        tenant: &str,
        client: &str,
        workload: &str,
        resource: &str,
        scopes: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        run!(self, c => sqlx::query(
            "INSERT INTO consents (tenant_id, client_id, workload, resource, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, client_id, workload, resource) DO UPDATE SET scopes = excluded.scopes, created_at = excluded.created_at")
            .bind(tenant).bind(client).bind(workload).bind(resource).bind(Json(scopes)).bind(now)
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Forgets what a person agreed to for a client (their session was ended).
    pub async fn forget_consent(&mut self, tenant: &str, client: &str, workload: &str) -> Result<()> {
        run!(self, c => sqlx::query("DELETE FROM consents WHERE tenant_id = $1 AND client_id = $2 AND workload = $3")
            .bind(tenant).bind(client).bind(workload).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The kind of a revocation rule (`kid` rules end tokens, not sessions).
    pub async fn rule_kind(&mut self, id: Uuid) -> Result<Option<String>> {
        Ok(
            run!(self, c => sqlx::query_scalar::<_, String>("SELECT kind FROM revocations WHERE id = $1")
            .bind(id).fetch_optional(c).await)?,
        )
    }
}

/// A client registered through RFC 7591.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_name: Option<String>,
    #[sqlx(json)]
    pub redirect_uris: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl Conn<'_> {
    pub async fn insert_registered_client(&mut self, c: &RegisteredClient, source: &str) -> Result<()> {
        run!(self, conn => sqlx::query(
            "INSERT INTO registered_clients (client_id, client_name, redirect_uris, source, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&c.client_id).bind(c.client_name.as_deref()).bind(Json(&c.redirect_uris)).bind(source).bind(c.created_at)
            .execute(conn).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn registered_client(&mut self, client_id: &str) -> Result<RegisteredClient> {
        Ok(run!(self, c => sqlx::query_as::<_, RegisteredClient>(
            "SELECT client_id, client_name, redirect_uris, created_at FROM registered_clients WHERE client_id = $1")
            .bind(client_id).fetch_one(c).await)?)
    }

    pub async fn count_registered_clients(&mut self) -> Result<i64> {
        Ok(run!(self, c => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM registered_clients").fetch_one(c).await)?)
    }

    pub async fn registered_client_used(&mut self, client_id: &str, now: DateTime<Utc>) -> Result<()> {
        run!(self, c => sqlx::query("UPDATE registered_clients SET last_used_at = $2 WHERE client_id = $1")
            .bind(client_id).bind(now).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Forgets what expired: authorization requests, refresh tokens,
    /// sessions 30 days after they ended, and registered clients that got no
    /// token within a day of registering, or none for 90 days.
    pub async fn prune_people(&mut self, now: DateTime<Utc>) -> Result<u64> {
        let day = now - chrono::TimeDelta::days(1);
        let mut n = self.prune_authorizations(now).await?;
        n += self.prune_refresh(now).await?;
        let month = now - chrono::TimeDelta::days(30);
        n += run!(self, c => sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(month).execute(c).await.map(|r| r.rows_affected()))?;
        let quarter = now - chrono::TimeDelta::days(90);
        n += run!(self, c => sqlx::query(
            "DELETE FROM registered_clients WHERE (last_used_at IS NULL AND created_at < $1) OR last_used_at < $2")
            .bind(day).bind(quarter).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n)
    }
}
