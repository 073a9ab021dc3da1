//! Trust policies and the assertions seen once.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::federation::policy::TrustPolicy;
use crate::storage::{Conn, Result, StoreError, run};

macro_rules! policy_columns {
    () => {
        "id, tenant_id, name, issuer, audience, subject, subject_pattern, claims, max_token_age_seconds, single_use,
         workflow_template, workload_template, grants, max_ttl_seconds, owner, expires_at, client_id, actors,
         created_at, updated_at"
    };
}

fn found(n: u64) -> Result<()> {
    if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

impl Conn<'_> {
    pub async fn insert_policy(&mut self, p: &TrustPolicy) -> Result<()> {
        run!(self, c => sqlx::query(concat!("INSERT INTO trust_policies (", policy_columns!(), ")
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"))
            .bind(p.id).bind(&p.tenant_id).bind(&p.name).bind(&p.issuer).bind(&p.audience).bind(p.subject.as_deref())
            .bind(p.subject_pattern.as_deref()).bind(Json(&p.claims)).bind(p.max_token_age_seconds).bind(p.single_use)
            .bind(&p.workflow_template).bind(&p.workload_template).bind(Json(&p.grants)).bind(p.max_ttl_seconds)
            .bind(p.owner.as_deref()).bind(p.expires_at).bind(p.client_id.as_deref()).bind(Json(&p.actors))
            .bind(p.created_at).bind(p.updated_at)
            .execute(c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn update_policy(&mut self, p: &TrustPolicy) -> Result<()> {
        let n = run!(self, c => sqlx::query(
            "UPDATE trust_policies SET name = $3, issuer = $4, audience = $5, subject = $6, subject_pattern = $7,
                    claims = $8, max_token_age_seconds = $9, single_use = $10, workflow_template = $11,
                    workload_template = $12, grants = $13, max_ttl_seconds = $14, owner = $15, expires_at = $16,
                    client_id = $17, actors = $18, updated_at = $19
             WHERE tenant_id = $1 AND id = $2")
            .bind(&p.tenant_id).bind(p.id).bind(&p.name).bind(&p.issuer).bind(&p.audience).bind(p.subject.as_deref())
            .bind(p.subject_pattern.as_deref()).bind(Json(&p.claims)).bind(p.max_token_age_seconds).bind(p.single_use)
            .bind(&p.workflow_template).bind(&p.workload_template).bind(Json(&p.grants)).bind(p.max_ttl_seconds)
            .bind(p.owner.as_deref()).bind(p.expires_at).bind(p.client_id.as_deref()).bind(Json(&p.actors))
            .bind(p.updated_at)
            .execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn delete_policy(&mut self, tenant: &str, id: Uuid) -> Result<()> {
        let n = run!(self, c => sqlx::query("DELETE FROM trust_policies WHERE tenant_id = $1 AND id = $2")
            .bind(tenant).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
        found(n)
    }

    pub async fn get_policy(&mut self, tenant: &str, id: Uuid) -> Result<TrustPolicy> {
        Ok(run!(self, c => sqlx::query_as::<_, TrustPolicy>(concat!(
            "SELECT ", policy_columns!(), " FROM trust_policies WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant).bind(id).fetch_one(c).await)?)
    }

    pub async fn list_policies(&mut self, tenant: &str, after: &str, limit: i64) -> Result<Vec<TrustPolicy>> {
        Ok(run!(self, c => sqlx::query_as::<_, TrustPolicy>(concat!(
            "SELECT ", policy_columns!(), " FROM trust_policies WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3"))
            .bind(tenant).bind(after).bind(limit).fetch_all(c).await)?)
    }

    /// The tenant's policies for tokens of `issuer`, in name order. A trailing
    /// `/` does not tell issuers apart: policies are stored without it, and
    /// older ones stored with it still match.
    pub async fn policies_for_issuer(&mut self, tenant: &str, issuer: &str) -> Result<Vec<TrustPolicy>> {
        let bare = issuer.trim_end_matches('/');
        let slashed = format!("{bare}/");
        Ok(run!(self, c => sqlx::query_as::<_, TrustPolicy>(concat!(
            "SELECT ", policy_columns!(), " FROM trust_policies WHERE tenant_id = $1 AND issuer IN ($2, $3) ORDER BY name"))
            .bind(tenant).bind(bare).bind(slashed.as_str()).fetch_all(c).await)?)
    }

    /// The tenant's policies that authenticate `client_id` (private_key_jwt).
    pub async fn policies_for_client(&mut self, tenant: &str, client_id: &str) -> Result<Vec<TrustPolicy>> {
        Ok(run!(self, c => sqlx::query_as::<_, TrustPolicy>(concat!(
            "SELECT ", policy_columns!(), " FROM trust_policies WHERE tenant_id = $1 AND client_id = $2 ORDER BY name"))
            .bind(tenant).bind(client_id).fetch_all(c).await)?)
    }

    /// The tenant that registered a resource URI (canonical form), if any.
    pub async fn resource_owner(&mut self, canonical_uri: &str) -> Result<Option<String>> {
        Ok(run!(self, c => sqlx::query_scalar::<_, String>(
            "SELECT tenant_id FROM resources WHERE canonical_uri = $1")
            .bind(canonical_uri).fetch_optional(c).await)?)
    }

    /// Records an assertion as used; false if it was used before (a replay).
    pub async fn use_assertion(&mut self, issuer: &str, jti: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let n = run!(self, c => sqlx::query(
            "INSERT INTO used_assertions (issuer, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT (issuer, jti) DO NOTHING")
            .bind(issuer).bind(jti).bind(expires_at).execute(c).await.map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Records single-use values in one statement; answers those that were
    /// new (the others were used before). Keys must be distinct.
    pub async fn use_assertions(
        &mut self,
        items: &[(&str, &str, DateTime<Utc>)],
    ) -> Result<std::collections::HashSet<(String, String)>> {
        if items.is_empty() {
            return Ok(Default::default());
        }
        let fresh = run!(self, c => {
            let mut q = sqlx::QueryBuilder::new("INSERT INTO used_assertions (issuer, jti, expires_at) ");
            q.push_values(items, |mut row, (issuer, jti, until)| {
                row.push_bind(*issuer).push_bind(*jti).push_bind(*until);
            });
            q.push(" ON CONFLICT (issuer, jti) DO NOTHING RETURNING issuer, jti");
            q.build_query_as::<(String, String)>().fetch_all(c).await
        })?;
        Ok(fresh.into_iter().collect())
    }

    /// Forgets single-use values recorded in this transaction whose use did
    /// not happen after all.
    pub async fn forget_assertions(&mut self, items: &[(&str, &str)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        run!(self, c => {
            let mut q = sqlx::QueryBuilder::new("DELETE FROM used_assertions WHERE (issuer, jti) IN (");
            let mut list = q.separated(", ");
            for (issuer, jti) in items {
                list.push("(");
                list.push_bind_unseparated(*issuer);
                list.push_unseparated(", ");
                list.push_bind_unseparated(*jti);
                list.push_unseparated(")");
            }
            q.push(")");
            q.build().execute(c).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    pub async fn prune_used_assertions(&mut self, now: DateTime<Utc>) -> Result<u64> {
        Ok(
            run!(self, c => sqlx::query("DELETE FROM used_assertions WHERE expires_at < $1")
            .bind(now).execute(c).await.map(|r| r.rows_affected()))?,
        )
    }
}
