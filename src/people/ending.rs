//! How a person's session ends: a replayed code or refresh token, a rule
//! reaching it, an admin, or the client itself (RFC 7009). Its live leases
//! are revoked by id, so offline verifiers and gateways see it at once.

use uuid::Uuid;

use super::{People, Session, digest};
use crate::audit::{Caller, Origin, actions};
use crate::leases::{Cover, Selector};
use crate::storage::StoreError;

impl People {
    /// Ends a session and revokes its live leases (by id: offline verifiers
    /// and gateways see those at once), with one audit event.
    pub async fn end_session(&self, id: Uuid, tenant: &str, reason: &str, origin: &Origin) -> Result<(), StoreError> {
        let caller = Caller {
            identity: serde_json::json!({"system": "session", "session": id}),
            act: None,
            origin: origin.clone(),
        };
        self.end_session_as(&caller, id, tenant, reason).await
    }

    /// An admin (or mayfly itself) ends a session.
    pub async fn end_session_as(
        &self,
        caller: &Caller,
        id: Uuid,
        tenant: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let s = match tx.conn().get_session(id, Some(tenant)).await {
            Ok(s) => s,
            // A code spent by a refused redemption started no session.
            Err(StoreError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !tx.conn().end_session(id, now, reason).await? {
            // Ended before, with its leases: a replayed code or refresh token
            // must not make a write (and a rule) each time.
            return Ok(());
        }
        tx.conn().forget_consent(tenant, &s.client_id, &s.workload).await?;
        if let Some(root) = s.root_lease_id {
            for lease in tx.conn().session_leases(root, now).await? {
                self.revocations
                    .record(
                        &mut tx,
                        caller,
                        Some(tenant),
                        &Selector::Lease(lease),
                        reason,
                        Cover::Forever,
                    )
                    .await?;
            }
        }
        let mut e = caller.event(actions::SESSION_REVOKED, now);
        e.tenant = Some(tenant.to_string());
        e.client_id = Some(s.client_id.clone());
        e.workload = Some(s.workload.clone());
        e.workflow = Some(s.workflow.clone());
        e.lease_id = s.root_lease_id;
        e.reason = Some(format!("session {id}: {reason}"));
        tx.conn().append_audit(&[e]).await?;
        tx.commit().await
    }

    /// The tenant's sessions, newest first.
    pub async fn sessions(
        &self,
        tenant: &str,
        workload: Option<&str>,
        active: Option<bool>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.now();
        let list = self
            .store
            .read()
            .await?
            .conn()
            .list_sessions(
                tenant,
                workload,
                (active.filter(|a| *a).map(|_| now), active.filter(|a| !*a).map(|_| now)),
                before,
                limit,
            )
            .await?;
        Ok(list)
    }

    /// An admin revokes a session: its refresh token and live access tokens end.
    pub async fn revoke_session(
        &self,
        caller: &Caller,
        tenant: &str,
        id: &str,
    ) -> Result<Session, crate::error::Error> {
        let id: Uuid = id.parse().map_err(|_| crate::error::Error::NotFound("session"))?;
        let s = self
            .store
            .read()
            .await?
            .conn()
            .get_session(id, Some(tenant))
            .await
            .map_err(crate::error::Error::or_not_found("session"))?;
        self.end_session_as(caller, id, tenant, "revoked by an admin").await?;
        let mut c = self.store.read().await?;
        Ok(c.conn().get_session(s.id, Some(tenant)).await?)
    }

    /// RFC 7009 for a public client: it revokes its session by a refresh
    /// token it holds. Unknown or foreign tokens change nothing (the caller
    /// is answered the same either way).
    pub async fn revoke_refresh(
        &self,
        token: &str,
        client_id: Option<&str>,
        origin: &Origin,
    ) -> Result<(), StoreError> {
        let mut c = self.store.read().await?;
        let row = match c.conn().get_refresh(&digest(token)).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        let s = c.conn().get_session(row.session_id, None).await?;
        drop(c);
        if client_id != Some(s.client_id.as_str()) {
            return Ok(());
        }
        self.end_session(s.id, &s.tenant_id, "revoked by its client", origin)
            .await
    }
}
