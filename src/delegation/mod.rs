//! Delegation: an agent acting for a person or another agent (RFC 8693 token
//! exchange with an actor, and Identity Assertion JWT grants). The new token's
//! `sub` is the subject, its `act` chain names the agent(s), outermost = the
//! current actor. Who may act for whom is declared (a client's `delegates`, a
//! trust policy's `actors`); along a chain, resource, scopes and lifetime only
//! ever narrow: an exchanged token never exceeds the subject token's own
//! resource and scopes. A chain is at most five deep and never loops (the
//! subject cannot come back as an actor). The decision is pure (`narrow`);
//! this service gathers its inputs and audits refusals.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::audit::{AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::federation::{Federated, Federation, Purpose, Refusal};
use crate::jose::jwt;
use crate::leases::{Lease, Links};
use crate::storage::Store;
use crate::tenants::{Catalog, Client, Grant, uri};
use crate::tokens::claims::AccessClaims;
use crate::tokens::issuer::{IssuerId, Provenance};
use crate::tokens::terms::MintTerms;
use crate::tokens::validate::{Validity, Verifier};

/// The deepest actor chain allowed.
pub const MAX_DEPTH: usize = 5;

/// Who acts: the authenticated client, or the holder of an actor token.
#[derive(Debug, Clone)]
pub struct Actor {
    /// From the catalog, stamped: the delegated lease commits only while
    /// the actor's client is as it was read.
    pub client: Client,
    pub workload: String,
    /// The actor token's lease, when the actor presented one: the new token
    /// descends from it too.
    pub lease: Option<Box<Lease>>,
}

/// What the actor presents as the subject.
#[derive(Debug, Clone, Copy)]
pub enum SubjectToken<'a> {
    /// A mayfly access token (RFC 8693 `…:access_token`).
    Mayfly(&'a str),
    /// A person's or workload's OIDC JWT or id_token, judged by trust policies.
    External(&'a str),
    /// An Identity Assertion JWT Authorization Grant (`typ: oauth-id-jag+jwt`).
    IdJag(&'a str),
}

/// The terms of the delegated token, for the issuer.
#[derive(Debug, Clone)]
pub struct Delegated {
    /// The actor as the minting client, with the narrowed grants and lifetime.
    pub terms: MintTerms,
    pub workflow: String,
    pub workload: String,
    pub provenance: Provenance,
}

fn refuse(why: impl Into<String>) -> Refusal {
    Refusal::Invalid(why.into())
}

/// How deep an `act` chain is (0 for none).
pub fn depth(act: Option<&Value>) -> usize {
    let mut n = 0;
    let mut cur = act;
    while let Some(a) = cur.filter(|a| a.is_object()) {
        n += 1;
        cur = a.get("act");
    }
    n
}

/// Every `sub` and `client_id` along a chain.
fn chain_members(act: Option<&Value>) -> (Vec<String>, Vec<String>) {
    let (mut subs, mut clients) = (Vec::new(), Vec::new());
    let mut cur = act;
    while let Some(a) = cur.filter(|a| a.is_object()) {
        subs.extend(a.get("sub").and_then(Value::as_str).map(str::to_string));
        clients.extend(a.get("client_id").and_then(Value::as_str).map(str::to_string));
        cur = a.get("act");
    }
    (subs, clients)
}

/// The new chain: the actor outermost, the previous chain inside.
pub fn extend_chain(actor: &Actor, previous: Option<&Value>) -> Value {
    let mut act = json!({"sub": actor.workload, "client_id": actor.client.client_id});
    if let Some(prev) = previous {
        act["act"] = prev.clone();
    }
    act
}

/// What the subject allows on `resource`: the scopes it may pass on, by the
/// subject's own token (same resource) or the grants behind it (another one).
fn allowed(subject_grants: &[Grant], resource: &str) -> Option<Vec<String>> {
    let canonical = uri::canonicalize(resource).ok()?;
    let scopes: Vec<String> = subject_grants
        .iter()
        .filter(|g| uri::canonicalize(&g.resource).is_ok_and(|r| r == canonical))
        .flat_map(|g| g.scopes.clone())
        .collect();
    (!scopes.is_empty()).then_some(scopes)
}

/// The pure narrowing: the subject's allowance meets the actor's grants.
/// Returns the grants the delegated token is minted under.
pub fn narrow(subject_allows: &[Grant], actor: &Client, resource: &str) -> Result<Vec<Grant>, String> {
    let subject_scopes = allowed(subject_allows, resource).ok_or("the subject's token does not reach this resource")?;
    let actor_scopes = allowed(&actor.grants, resource).ok_or("the actor has no grant for this resource")?;
    let scopes: Vec<String> = subject_scopes
        .into_iter()
        .filter(|s| actor_scopes.contains(s))
        .collect();
    if scopes.is_empty() {
        return Err("the subject and the actor share no scope on this resource".into());
    }
    Ok(vec![Grant {
        resource: resource.to_string(),
        scopes,
    }])
}

#[derive(Clone)]
pub struct Delegation {
    store: Store,
    catalog: Arc<Catalog>,
    verifier: Verifier,
    federation: Federation,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    issuer: IssuerId,
}

/// A subject as verified: who it is, what it allows, and its chain so far.
struct Subject {
    tenant: String,
    workflow: String,
    workload: String,
    grants: Vec<Grant>,
    exp: i64,
    act: Option<Value>,
    /// Whether `actor` is declared allowed to act for it.
    permits: Vec<String>,
    /// The subject's own client (a loop back to it is refused).
    client_id: Option<String>,
    /// The subject's lease, and what it is linked to.
    parent: Option<(Box<Lease>, Links)>,
    federated: Option<Federated>,
}

impl Delegation {
    pub fn new(
        store: Store,
        catalog: Arc<Catalog>,
        verifier: Verifier,
        federation: Federation,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        issuer: IssuerId,
    ) -> Self {
        Self {
            store,
            catalog,
            verifier,
            federation,
            audit,
            clock,
            issuer,
        }
    }

    async fn deny(&self, tenant: &str, actor: &Actor, why: &str, origin: &Origin) -> Refusal {
        let mut event = origin.event(actions::TOKEN_DENIED, Outcome::Denied, self.clock.now());
        event.reason = Some(format!("invalid_grant: delegation: {why}"));
        event.tenant = Some(tenant.to_string());
        event.client_id = Some(actor.client.client_id.clone());
        event.workload = Some(actor.workload.clone());
        match self.audit.append(&[event]).await {
            Ok(()) => refuse(why),
            Err(e) => e.into(),
        }
    }

    /// An `actor_token` presented under another client's authentication
    /// (someone else's token, perhaps stolen): refused, and audited in the
    /// presenting client's tenant.
    pub async fn refuse_foreign_actor_token(&self, presenter: Client, origin: &Origin) -> Refusal {
        let tenant = presenter.tenant_id.clone();
        let actor = Actor {
            workload: presenter.client_id.clone(),
            client: presenter,
            lease: None,
        };
        let why = "actor_token: not minted for the authenticated client";
        self.deny(&tenant, &actor, why, origin).await
    }

    /// The actor of an `actor_token`: an active, undelegated mayfly token.
    pub async fn actor_from_token(&self, token: &str) -> Result<Actor, Refusal> {
        let (claims, lease) = match self.verifier.check(token).await? {
            Validity::Active { claims, lease } => (claims, lease),
            Validity::Inactive { reason, .. } => return Err(refuse(format!("actor_token: {}", reason.as_str()))),
        };
        if claims.act.is_some() {
            return Err(refuse("actor_token: a delegated token cannot act"));
        }
        let client = self.client(&claims.tenant, &claims.client_id).await?;
        Ok(Actor {
            client,
            workload: claims.sub,
            lease: Some(lease),
        })
    }

    async fn client(&self, tenant: &str, client_id: &str) -> Result<Client, Refusal> {
        match self.catalog.client(Some(tenant), client_id).await? {
            Some(c) if !c.disabled => Ok(c),
            _ => Err(refuse("the actor is not an enabled client")),
        }
    }

    async fn mayfly_subject(&self, token: &str) -> Result<Subject, Refusal> {
        let (claims, lease): (Box<AccessClaims>, _) = match self.verifier.check(token).await? {
            Validity::Active { claims, lease } => (claims, lease),
            Validity::Inactive { reason, .. } => return Err(refuse(format!("subject_token: {}", reason.as_str()))),
        };
        // Its allowance: its own scopes on its own resource, nothing more.
        // Whatever else its client is granted belongs to that client, not to
        // the token: a `jira` read token never becomes a `github` write one.
        let grants = vec![Grant {
            resource: claims.aud.clone(),
            scopes: claims.scopes().map(str::to_string).collect(),
        }];
        let permits = match self.catalog.client(Some(&claims.tenant), &claims.client_id).await? {
            Some(c) => c.delegates.unwrap_or_default(),
            None => match lease.policy_id {
                Some(policy_id) => {
                    let found = self
                        .store
                        .read()
                        .await?
                        .conn()
                        .get_policy(&claims.tenant, policy_id)
                        .await;
                    found.map(|p| p.actors).unwrap_or_default()
                }
                None => Vec::new(),
            },
        };
        let links = self.store.read().await?.conn().links(lease.id).await?;
        Ok(Subject {
            tenant: claims.tenant.clone(),
            workflow: claims.workflow.clone(),
            workload: claims.sub.clone(),
            grants,
            exp: claims.exp,
            act: claims.act.clone(),
            permits,
            client_id: Some(claims.client_id.clone()),
            parent: Some((lease, links)),
            federated: None,
        })
    }

    fn external_subject(f: Federated, exp: i64) -> Subject {
        Subject {
            tenant: f.policy.tenant_id.clone(),
            workflow: f.matched.workflow.clone(),
            workload: f.matched.workload.clone(),
            grants: f.policy.grants.clone(),
            exp: exp.min(f.matched.exp),
            act: None,
            permits: f.policy.actors.clone(),
            client_id: None,
            parent: None,
            federated: Some(f),
        }
    }

    /// A person's or workload's OIDC token, or an ID-JAG, judged by the trust
    /// policies of the resource's tenant.
    async fn external(
        &self,
        token: &str,
        resource: &str,
        actor: &Actor,
        id_jag: bool,
        origin: &Origin,
    ) -> Result<Subject, Refusal> {
        let unverified = jwt::parse(token).map_err(|e| refuse(e.to_string()))?;
        if id_jag {
            // draft-ietf-oauth-identity-assertion-authz-grant: for this server,
            // this client and this resource only.
            let aud_ok = match unverified.claims.get("aud") {
                Some(Value::String(a)) => *a == self.issuer.url,
                Some(Value::Array(l)) => l.iter().any(|a| a.as_str() == Some(self.issuer.url.as_str())),
                _ => false,
            };
            let resource_ok = unverified
                .claim_str("resource")
                .and_then(|r| uri::canonicalize(r).ok())
                .is_some_and(|r| uri::canonicalize(resource).is_ok_and(|want| want == r));
            let why = if !aud_ok {
                Some("identity assertion: aud is not this server")
            } else if unverified.claim_str("client_id") != Some(actor.client.client_id.as_str()) {
                Some("identity assertion: issued to another client")
            } else if !resource_ok {
                Some("identity assertion: for another resource")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(self.deny(&actor.client.tenant_id, actor, why, origin).await);
            }
        }
        let purpose = Purpose::ActingFor(&actor.client.client_id);
        let f = self.federation.for_resource(token, resource, purpose, origin).await?;
        let exp = f.matched.exp;
        let mut subject = Self::external_subject(f, exp);
        // An ID-JAG says what the IdP granted (`scope`): never more than that.
        if id_jag && let Some(granted) = unverified.claim_str("scope") {
            let granted: Vec<&str> = granted.split(' ').filter(|s| !s.is_empty()).collect();
            for g in &mut subject.grants {
                g.scopes.retain(|s| granted.contains(&s.as_str()));
            }
        }
        Ok(subject)
    }

    /// The terms of a token for `actor` acting for the subject: `subject` is a
    /// mayfly access token (`mayfly_subject`) or an external JWT / ID-JAG.
    pub async fn exchange(
        &self,
        subject_token: SubjectToken<'_>,
        actor: Actor,
        resource: Option<&str>,
        expires_in: Option<&str>,
        origin: &Origin,
    ) -> Result<Delegated, Refusal> {
        let tenant = actor.client.tenant_id.clone();
        let required = || refuse("`resource` (or `audience`) is required");
        let subject = match subject_token {
            SubjectToken::Mayfly(token) => self.mayfly_subject(token).await?,
            SubjectToken::External(token) => {
                self.external(token, resource.ok_or_else(required)?, &actor, false, origin)
                    .await?
            }
            SubjectToken::IdJag(token) => {
                self.external(token, resource.ok_or_else(required)?, &actor, true, origin)
                    .await?
            }
        };
        let resource = match resource {
            Some(r) => r.to_string(),
            None => subject
                .grants
                .first()
                .map(|g| g.resource.clone())
                .ok_or_else(|| refuse("`resource` is required"))?,
        };
        if subject.tenant != tenant {
            return Err(self
                .deny(&tenant, &actor, "the subject belongs to another tenant", origin)
                .await);
        }
        if !subject.permits.contains(&actor.client.client_id) {
            let why = "the actor is not allowed to act for this subject (delegates / actors)";
            return Err(self.deny(&tenant, &actor, why, origin).await);
        }
        // Everyone already in the chain: its actors, the subject itself, and
        // the clients of every lease it descends from.
        let (subs, mut clients) = chain_members(subject.act.as_ref());
        clients.extend(subject.client_id.clone());
        if let Some((_, links)) = &subject.parent {
            clients.extend(links.clients.iter().cloned());
        }
        if clients.contains(&actor.client.client_id)
            || subs.contains(&actor.workload)
            || actor.workload == subject.workload
        {
            return Err(self
                .deny(&tenant, &actor, "the actor is already in the chain (a loop)", origin)
                .await);
        }
        if depth(subject.act.as_ref()) + 1 > MAX_DEPTH {
            let why = format!("the actor chain would be deeper than {MAX_DEPTH}");
            return Err(self.deny(&tenant, &actor, &why, origin).await);
        }
        let now = self.clock.now().timestamp();
        let remaining = subject.exp - now;
        if remaining <= 0 {
            return Err(self.deny(&tenant, &actor, "the subject has expired", origin).await);
        }
        if let Some(asked) = expires_in.and_then(|e| e.parse::<i64>().ok())
            && asked > remaining
        {
            let why = "expires_in goes beyond the subject token's exp";
            return Err(self.deny(&tenant, &actor, why, origin).await);
        }
        let grants = match narrow(&subject.grants, &actor.client, &resource) {
            Ok(g) => g,
            Err(why) => return Err(self.deny(&tenant, &actor, &why, origin).await),
        };
        let act = extend_chain(&actor, subject.act.as_ref());
        let (mut actors, actor_clients) = chain_members(Some(&act));
        actors.dedup();
        let mut links = Links {
            actors,
            ..Links::default()
        };
        if let Some((lease, inherited)) = subject.parent.clone() {
            links.inherit(&lease, inherited);
        }
        if let Some(lease) = &actor.lease {
            links.inherit(lease, Links::default());
        }
        for client in actor_clients {
            if !links.clients.contains(&client) {
                links.clients.push(client);
            }
        }
        let mut max_ttl = actor.client.max_ttl_seconds.min(remaining);
        if let Some(f) = &subject.federated {
            // The policy's ceiling holds for its subjects, whoever acts for them.
            max_ttl = max_ttl.min(f.policy.max_ttl_seconds);
        }
        let terms = MintTerms {
            workflows: vec![subject.workflow.clone()],
            grants,
            max_ttl_seconds: max_ttl,
            // The workload is the subject's, not one the actor chose.
            workload_pattern: None,
            workload_verified: true,
            ..MintTerms::of_client(&actor.client)
        };
        let provenance = Provenance {
            federated: subject.federated.as_ref().map(Federated::provenance),
            policy_id: subject.federated.as_ref().map(|f| f.policy.id),
            actor: Some(act),
            parent_id: subject.parent.as_ref().map(|(l, _)| l.id),
            links,
            // Bound by the token endpoint, to the key of the request's proof.
            jkt: None,
            spend: None,
        };
        Ok(Delegated {
            terms,
            workflow: subject.workflow,
            workload: subject.workload,
            provenance,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::tenants::ClientKind;

    fn client(id: &str, grants: Vec<(&str, Vec<&str>)>) -> Client {
        Client {
            workflows: vec!["*".into()],
            grants: grants
                .into_iter()
                .map(|(r, s)| Grant {
                    resource: r.into(),
                    scopes: s.into_iter().map(str::to_string).collect(),
                })
                .collect(),
            ..Client::new("acme", id, ClientKind::Agent, DateTime::UNIX_EPOCH)
        }
    }

    #[test]
    fn a_delegated_token_gets_only_what_both_subject_and_actor_hold() {
        let gh = "https://mcp.acme.test/github";
        let subject = vec![Grant {
            resource: gh.into(),
            scopes: vec!["issues:read".into(), "issues:write".into()],
        }];
        let agent = client("agent", vec![(gh, vec!["issues:read", "pulls:read"])]);
        let g = narrow(&subject, &agent, "https://MCP.acme.test/github/").unwrap();
        assert_eq!(g[0].scopes, ["issues:read"]);
        assert!(
            narrow(&subject, &agent, "https://mcp.acme.test/jira").is_err(),
            "beyond the subject"
        );
        let stranger = client("x", vec![("https://mcp.acme.test/jira", vec!["read"])]);
        assert!(narrow(&subject, &stranger, gh).is_err(), "beyond the actor");
    }

    #[test]
    fn chains_nest_the_current_actor_outermost_and_count_their_depth() {
        let agent = Actor {
            client: client("agent", vec![]),
            workload: "agent/pod-1".into(),
            lease: None,
        };
        let sub = Actor {
            client: client("sub-agent", vec![]),
            workload: "sub-agent".into(),
            lease: None,
        };
        let first = extend_chain(&agent, None);
        let second = extend_chain(&sub, Some(&first));
        assert_eq!(second["sub"], "sub-agent");
        assert_eq!(second["act"]["client_id"], "agent");
        assert_eq!((depth(None), depth(Some(&first)), depth(Some(&second))), (0, 1, 2));
        let (subs, clients) = chain_members(Some(&second));
        assert_eq!(
            (subs.len(), clients),
            (2, vec!["sub-agent".to_string(), "agent".to_string()])
        );
    }
}
