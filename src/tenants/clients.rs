//! Clients in the directory: registration (the secret is shown once),
//! changes, deletion (which revokes every token the client holds) and secret
//! rotation with a grace period.

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

pub use super::client_input::{
    ClientPatch, GrantBody, NewClient, Rotated, SecretRotation, WorkflowName, check_jwks, check_rate,
};
use super::client_input::{taken_away, workflow_names};
use super::directory::Directory;
use super::{
    Client, ClientKind, GLOBAL_ADMIN_SCOPE, Grant, SYSTEM_TENANT, invalid, secret, tenant_admin_scope, uri,
    validate_client_id, validate_name, validate_workflows,
};
use crate::audit::{AuditEvent, Caller, actions};
use crate::error::Error;
use crate::leases::{Cover, Selector};
use crate::storage::{StoreError, Tx};

/// The client, read inside `tx` (404 if it is not in this tenant).
async fn client_in(tx: &mut Tx, tenant: &str, client_id: &str) -> Result<Client, Error> {
    tx.conn()
        .get_client(tenant, client_id)
        .await
        .map_err(Error::or_not_found("client"))
}

fn client_event(caller: &Caller, action: &str, c: &Client, now: DateTime<Utc>) -> AuditEvent {
    let mut event = caller.event(action, now);
    event.tenant = Some(c.tenant_id.clone());
    event.client_id = Some(c.client_id.clone());
    event
}

impl Directory {
    /// Ends every token `c` holds, on every replica once `tx` commits (a rule on
    /// the client), and says so on `event`.
    async fn end_client_tokens(
        &self,
        tx: &mut Tx,
        caller: &Caller,
        c: &Client,
        why: &str,
        event: &mut AuditEvent,
    ) -> Result<(), Error> {
        let selector = Selector::Client(c.client_id.clone());
        let rule = self
            .revocations
            .record(tx, caller, Some(&c.tenant_id), &selector, why, Cover::UpToNow)
            .await?;
        event.reason = Some(format!("{why}: its tokens are revoked (revocation {})", rule.id));
        Ok(())
    }

    fn check_max_ttl(&self, max_ttl: i64) -> Result<(), Error> {
        let ceiling = self.lifetimes.max_ttl;
        if !(1..=ceiling).contains(&max_ttl) {
            return Err(invalid("max_ttl_seconds", format!("must be between 1 and {ceiling}")).into());
        }
        Ok(())
    }

    /// Grants must name this tenant's resources and scopes they define; a
    /// grant on the admin API may only carry this tenant's admin scope.
    pub async fn validate_grants(&self, tx: &mut Tx, tenant: &str, grants: &[Grant]) -> Result<(), Error> {
        if grants.len() > 100 {
            return Err(invalid("grants", "at most 100 grants").into());
        }
        let mut seen = Vec::new();
        for g in grants {
            let canonical =
                uri::canonicalize(&g.resource).map_err(|e| invalid("grants", format!("{}: {e}", g.resource)))?;
            if seen.contains(&canonical) {
                return Err(invalid("grants", format!("`{}` is granted twice", g.resource)).into());
            }
            if g.scopes.is_empty() {
                return Err(invalid("grants", format!("grant on `{}` lists no scopes", g.resource)).into());
            }
            if canonical == self.issuer.canonical {
                // Clients of the system tenant are global admins; any other tenant's, its own admins.
                let allowed = if tenant == SYSTEM_TENANT {
                    GLOBAL_ADMIN_SCOPE.to_string()
                } else {
                    tenant_admin_scope(tenant)
                };
                if g.scopes.iter().any(|s| *s != allowed) {
                    let why = format!("on the admin API a client of `{tenant}` may hold only `{allowed}`");
                    return Err(invalid("grants", why).into());
                }
            } else {
                let resource = tx
                    .conn()
                    .find_resource_by_uri(tenant, &canonical)
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound => Error::from(invalid(
                            "grants",
                            format!("`{}` is not a resource of this tenant", g.resource),
                        )),
                        e => e.into(),
                    })?;
                if let Some(s) = g.scopes.iter().find(|s| !resource.scopes.contains(s)) {
                    return Err(invalid("grants", format!("`{}` does not define scope `{s}`", g.resource)).into());
                }
            }
            seen.push(canonical);
        }
        Ok(())
    }

    /// Whether `c` is an enabled holder of `mayfly:admin` on the admin API.
    fn is_global_admin(&self, c: &Client) -> bool {
        !c.disabled
            && c.tenant_id == SYSTEM_TENANT
            && c.grants.iter().any(|g| {
                uri::canonicalize(&g.resource).is_ok_and(|r| r == self.issuer.canonical)
                    && g.scopes.iter().any(|s| s == GLOBAL_ADMIN_SCOPE)
            })
    }

    /// The system tenant must keep one enabled global admin, or nobody could
    /// administer mayfly again. Checked inside the write transaction, under
    /// the writer-order lock, so two concurrent changes cannot both remove "the
    /// other" admin. `after` is the client as it will be (None: deleted).
    async fn keep_a_global_admin(&self, tx: &mut Tx, client_id: &str, after: Option<&Client>) -> Result<(), Error> {
        let mut conn = tx.conn();
        conn.lock_chain().await?;
        let others = conn.all_clients(SYSTEM_TENANT).await?;
        let holders = others
            .iter()
            .filter(|c| c.client_id != client_id)
            .chain(after)
            .filter(|c| self.is_global_admin(c))
            .count();
        if holders > 0 {
            return Ok(());
        }
        Err(Error::Conflict(
            "this would leave no enabled global admin; create another one first".into(),
        ))
    }

    /// Delegates name other clients of this tenant.
    async fn check_delegates(
        tx: &mut Tx,
        tenant: &str,
        self_id: &str,
        delegates: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        if delegates.len() > 100 {
            return Err(invalid("delegates", "at most 100").into());
        }
        for d in &delegates {
            if d == self_id {
                return Err(invalid("delegates", "a client does not delegate to itself").into());
            }
            tx.conn().get_client(tenant, d).await.map_err(|e| match e {
                StoreError::NotFound => {
                    Error::from(invalid("delegates", format!("`{d}` is not a client of this tenant")))
                }
                e => e.into(),
            })?;
        }
        Ok(delegates)
    }

    /// Checks a workload pattern: anchored, compiles, bounded.
    fn check_workload_pattern(pattern: &str) -> Result<(), Error> {
        if pattern.len() > 256 || !pattern.starts_with('^') || !pattern.ends_with('$') {
            return Err(invalid(
                "workload_pattern",
                "must be an anchored pattern `^…$` of at most 256 characters",
            )
            .into());
        }
        regex_lite::Regex::new(pattern).map_err(|e| invalid("workload_pattern", format!("does not compile: {e}")))?;
        Ok(())
    }

    /// `serves` names resources of this tenant; stored in canonical form.
    async fn check_serves(
        &self,
        tx: &mut Tx,
        tenant: &str,
        kind: ClientKind,
        serves: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        if kind != ClientKind::ResourceServer {
            return Err(invalid("serves", "only resource_server clients serve resources").into());
        }
        if serves.len() > 100 {
            return Err(invalid("serves", "at most 100 resources").into());
        }
        let mut out = Vec::new();
        for r in serves {
            let canonical = uri::canonicalize(&r).map_err(|e| invalid("serves", format!("{r}: {e}")))?;
            tx.conn()
                .find_resource_by_uri(tenant, &canonical)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => {
                        Error::from(invalid("serves", format!("`{r}` is not a resource of this tenant")))
                    }
                    e => e.into(),
                })?;
            out.push(canonical);
        }
        Ok(out)
    }

    /// Refuses a client past MAYFLY_MAX_CLIENTS_PER_TENANT. Counted under
    /// the writer-order lock (which inserting a client takes anyway, first), so
    /// concurrent creations on any replica cannot both take the last place.
    async fn room_for_a_client(&self, tx: &mut Tx, tenant: &str) -> Result<(), Error> {
        let mut conn = tx.conn();
        conn.lock_chain().await?;
        let live = conn.count_clients(tenant).await?;
        if live >= self.max_clients_per_tenant {
            let limit = self.max_clients_per_tenant;
            return Err(Error::Conflict(format!(
                "this tenant has reached its limit of {limit} clients (MAYFLY_MAX_CLIENTS_PER_TENANT); delete one first"
            )));
        }
        Ok(())
    }

    pub async fn create_client(
        &self,
        caller: &Caller,
        tenant: &str,
        body: NewClient,
    ) -> Result<(Client, Option<SecretString>), Error> {
        let client_id = body
            .client_id
            .unwrap_or_else(|| format!("{tenant}-{}", Uuid::new_v4().simple()));
        validate_client_id(&client_id)?;
        if client_id.starts_with("policy.") {
            return Err(invalid("client_id", "ids starting with `policy.` name trust policies").into());
        }
        if client_id.starts_with("mfy_") {
            return Err(invalid(
                "client_id",
                "ids starting with `mfy_` are mayfly's own (registered clients)",
            )
            .into());
        }
        if body.kind == ClientKind::Interactive && (body.jwks.is_some() || body.workflows.is_some()) {
            return Err(invalid(
                "kind",
                "an interactive client is public and names no workflows: its people's tokens take the login provider's",
            )
            .into());
        }
        let name = body.name.unwrap_or_else(|| client_id.clone());
        validate_name("name", &name)?;
        let workflows = match (body.workflows, body.kind) {
            (Some(w), _) => workflow_names(w),
            // An interactive client's tokens name the login provider's workflow.
            (None, ClientKind::ResourceServer | ClientKind::Interactive) => Vec::new(),
            (None, _) => return Err(invalid("workflows", "list the workflows it may mint for, or [\"*\"]").into()),
        };
        if !(workflows.is_empty() && matches!(body.kind, ClientKind::ResourceServer | ClientKind::Interactive)) {
            validate_workflows(&workflows)?;
        }
        if let Some(p) = &body.workload_pattern {
            Self::check_workload_pattern(p)?;
        }
        let grants: Vec<Grant> = body.grants.into_iter().map(Grant::from).collect();
        let max_ttl = body.max_ttl_seconds.unwrap_or(self.lifetimes.default_ttl);
        self.check_max_ttl(max_ttl)?;
        let now = self.clock.now();
        let client = Client {
            name,
            workflows,
            grants,
            max_ttl_seconds: max_ttl,
            workload_pattern: body.workload_pattern.filter(|p| !p.is_empty()),
            max_mints_per_second: check_rate("max_mints_per_second", body.max_mints_per_second)?,
            jwks: body.jwks.map(check_jwks).transpose()?,
            dpop_bound_access_tokens: body.dpop_bound_access_tokens.unwrap_or(false),
            redirect_uris: check_redirect_uris(body.kind, body.redirect_uris)?,
            ..Client::new(tenant, &client_id, body.kind, now)
        };
        let mut client = client;
        let secret = secret::generate();
        let mut tx = self.store.begin().await?;
        self.validate_grants(&mut tx, tenant, &client.grants).await?;
        if let Some(serves) = body.serves {
            client.serves = Some(self.check_serves(&mut tx, tenant, client.kind, serves).await?);
        }
        if let Some(delegates) = body.delegates {
            client.delegates = Some(Self::check_delegates(&mut tx, tenant, &client.client_id, delegates).await?);
        }
        self.room_for_a_client(&mut tx, tenant).await?;
        // Ids are global; say nothing about whose it is.
        tx.conn().insert_client(&client).await.map_err(|e| match e {
            StoreError::Conflict(_) => Error::Conflict("this client_id is not available".into()),
            e => e.into(),
        })?;
        // A client that registered keys authenticates with them only: no secret exists.
        // An interactive client is public: PKCE stands in for a secret.
        let secret = (client.jwks.is_none() && client.kind != ClientKind::Interactive).then_some(secret);
        if let Some(secret) = &secret {
            tx.conn()
                .insert_secret(&client.client_id, &secret::digest(secret.expose_secret()), now)
                .await?;
        }
        tx.conn()
            .append_audit(&[client_event(caller, actions::CLIENT_CREATED, &client, now)])
            .await?;
        self.commit(tx, tenant).await?;
        Ok((client, secret))
    }

    pub async fn list_clients(&self, tenant: &str, after: &str, limit: i64) -> Result<Vec<Client>, Error> {
        Ok(self
            .store
            .read()
            .await?
            .conn()
            .list_clients(tenant, after, limit)
            .await?)
    }

    pub async fn get_client(&self, tenant: &str, client_id: &str) -> Result<Client, Error> {
        self.store
            .read()
            .await?
            .conn()
            .get_client(tenant, client_id)
            .await
            .map_err(Error::or_not_found("client"))
    }

    /// Changes a client. Taking something away (disabling it, removing a
    /// workflow, a grant or a scope) also ends every token it holds, on every
    /// replica, when this returns: a rule on the client, like any revocation.
    pub async fn update_client(
        &self,
        caller: &Caller,
        tenant: &str,
        client_id: &str,
        patch: ClientPatch,
    ) -> Result<Client, Error> {
        let mut tx = self.store.begin().await?;
        let before = client_in(&mut tx, tenant, client_id).await?;
        let mut c = before.clone();
        if let Some(name) = patch.name {
            validate_name("name", &name)?;
            c.name = name;
        }
        if let Some(workflows) = patch.workflows {
            let workflows = workflow_names(workflows);
            validate_workflows(&workflows)?;
            c.workflows = workflows;
        }
        if let Some(grants) = patch.grants {
            let grants: Vec<Grant> = grants.into_iter().map(Grant::from).collect();
            self.validate_grants(&mut tx, tenant, &grants).await?;
            c.grants = grants;
        }
        if let Some(max_ttl) = patch.max_ttl_seconds {
            self.check_max_ttl(max_ttl)?;
            c.max_ttl_seconds = max_ttl;
        }
        if let Some(disabled) = patch.disabled {
            c.disabled = disabled;
        }
        if let Some(serves) = patch.serves {
            c.serves = Some(self.check_serves(&mut tx, tenant, c.kind, serves).await?);
        }
        if let Some(pattern) = patch.workload_pattern {
            if !pattern.is_empty() {
                Self::check_workload_pattern(&pattern)?;
            }
            c.workload_pattern = Some(pattern).filter(|p| !p.is_empty());
        }
        if let Some(jwks) = patch.jwks {
            c.jwks = Some(check_jwks(jwks)?);
        }
        if let Some(delegates) = patch.delegates {
            c.delegates = Some(Self::check_delegates(&mut tx, tenant, &c.client_id, delegates).await?);
        }
        if let Some(bound) = patch.dpop_bound_access_tokens {
            c.dpop_bound_access_tokens = bound;
        }
        if let Some(rate) = patch.max_mints_per_second {
            c.max_mints_per_second = check_rate("max_mints_per_second", Some(rate).filter(|r| *r != 0))?;
        }
        if tenant == SYSTEM_TENANT && self.is_global_admin(&before) && !self.is_global_admin(&c) {
            self.keep_a_global_admin(&mut tx, &c.client_id, Some(&c)).await?;
        }
        let now = self.clock.now();
        c.updated_at = now;
        tx.conn()
            .update_client(&c)
            .await
            .map_err(Error::or_not_found("client"))?;
        let mut event = client_event(caller, actions::CLIENT_UPDATED, &c, now);
        let narrowed = taken_away(&before, &c);
        if let Some(why) = narrowed {
            self.end_client_tokens(&mut tx, caller, &c, why, &mut event).await?;
        }
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(c)
    }

    /// Deleting a client ends its secrets and revokes every token it minted.
    pub async fn delete_client(&self, caller: &Caller, tenant: &str, client_id: &str) -> Result<(), Error> {
        let mut tx = self.store.begin().await?;
        let c = client_in(&mut tx, tenant, client_id).await?;
        if tenant == SYSTEM_TENANT && self.is_global_admin(&c) {
            self.keep_a_global_admin(&mut tx, &c.client_id, None).await?;
        }
        let now = self.clock.now();
        tx.conn()
            .delete_client(tenant, &c.client_id, now)
            .await
            .map_err(Error::or_not_found("client"))?;
        let selector = Selector::Client(c.client_id.clone());
        let rule = self
            .revocations
            .record(
                &mut tx,
                caller,
                Some(tenant),
                &selector,
                "client deleted",
                Cover::Forever,
            )
            .await?;
        let mut event = client_event(caller, actions::CLIENT_DELETED, &c, now);
        event.reason = Some(format!("revocation {}", rule.id));
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(())
    }

    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        tenant: &str,
        client_id: &str,
        body: SecretRotation,
    ) -> Result<Rotated, Error> {
        let grace = body.grace_period_seconds.unwrap_or(3600);
        if !(0..=7 * 24 * 3600).contains(&grace) {
            return Err(invalid("grace_period_seconds", "must be between 0 and 604800 (7 days)").into());
        }
        let mut tx = self.store.begin().await?;
        let c = client_in(&mut tx, tenant, client_id).await?;
        if c.kind == ClientKind::Interactive {
            return Err(invalid(
                "client_id",
                "an interactive client is public: it has no secret to rotate",
            )
            .into());
        }
        let now = self.clock.now();
        let previous_until = now + TimeDelta::seconds(grace);
        let secret = secret::generate();
        tx.conn()
            .expire_secrets_for_rotation(&c.client_id, now, previous_until)
            .await?;
        tx.conn()
            .insert_secret(&c.client_id, &secret::digest(secret.expose_secret()), now)
            .await?;
        let mut event = client_event(caller, actions::CLIENT_SECRET_ROTATED, &c, now);
        event.reason = Some(format!("previous secret valid for {grace} more seconds"));
        if grace == 0 {
            // A leaked secret: whatever it minted ends with it.
            let why = "secret rotated with no grace period";
            self.end_client_tokens(&mut tx, caller, &c, why, &mut event).await?;
        }
        tx.conn().append_audit(&[event]).await?;
        self.commit(tx, tenant).await?;
        Ok(Rotated {
            client: c,
            secret,
            previous_expires_at: previous_until,
        })
    }
}

/// An interactive client's redirect URIs (required there, refused elsewhere).
fn check_redirect_uris(kind: ClientKind, uris: Option<Vec<String>>) -> Result<Option<Vec<String>>, Error> {
    match (kind, uris) {
        (ClientKind::Interactive, Some(uris)) if (1..=10).contains(&uris.len()) => {
            for uri in &uris {
                if uri.len() > 2048 {
                    return Err(invalid("redirect_uris", "each at most 2048 characters").into());
                }
                crate::tenants::redirect::registrable(uri).map_err(|why| invalid("redirect_uris", why))?;
            }
            Ok(Some(uris))
        }
        (ClientKind::Interactive, _) => Err(invalid("redirect_uris", "an interactive client lists 1 to 10").into()),
        (_, Some(_)) => Err(invalid("redirect_uris", "only interactive clients have redirect URIs").into()),
        (_, None) => Ok(None),
    }
}
