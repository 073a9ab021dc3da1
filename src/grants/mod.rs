//! The token endpoint as a pipeline: a request parsed once (`request`),
//! the client authenticated once, one module per grant deciding the terms
//! (`client_credentials`, `jwt_bearer`, `token_exchange`), then one mint. A
//! new grant or proof (DPoP) is one more stage here, not one more branch in
//! a handler. Nothing here knows HTTP: errors are `GrantError`, which the
//! edge turns into RFC 6749 answers.

mod client_credentials;
pub mod dpop;
mod jwt_bearer;
mod people;
pub mod request;
mod token_exchange;

use std::sync::Arc;

use crate::audit::Origin;
use crate::delegation::{Actor, Delegation};
use crate::federation::{Federated, Federation, Refusal};
use crate::jose::jwt;
use crate::people::People;
use crate::storage::StoreError;
use crate::tenants::{Authenticator, Client, authn::Refused};
use crate::tokens::issuer::{Issued, Issuer, MintError, Provenance};
use crate::tokens::limits::Limited;
use crate::tokens::terms::MintTerms;

pub use request::{ClientAuth, Grant, TokenRequest};

/// How many times a client_credentials mint caught by a catalog change is
/// decided again (the catalog has caught up by then).
const ATTEMPTS: usize = 3;

/// Why a token request got no token, in the shapes RFC 6749 §5.2 knows.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// An OAuth error code and a description safe to show the caller.
    #[error("{code}: {description}")]
    Refused { code: &'static str, description: String },
    #[error("client authentication failed")]
    InvalidClient,
    /// Too many failures from this source: retry in this many seconds.
    #[error("too many failed requests; retry in {0} s")]
    Throttled(i64),
    /// A tenant or client limit: 429 with Retry-After.
    #[error("limit reached: {}", .0.what)]
    Limited(Limited),
    /// A DPoP proof refused (`invalid_dpop_proof`), or a nonce asked for
    /// (`use_dpop_nonce`, with the nonce to use).
    #[error("{code}: {description}")]
    Dpop {
        code: &'static str,
        description: String,
        nonce: Option<String>,
    },
    /// No signing key is loaded: 503.
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl GrantError {
    fn invalid_grant(why: impl Into<String>) -> Self {
        GrantError::Refused {
            code: "invalid_grant",
            description: why.into(),
        }
    }
}

impl From<Refusal> for GrantError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(why) => GrantError::invalid_grant(why),
            Refusal::Throttled(wait) => GrantError::Throttled(wait),
            Refusal::Store(e) => e.into(),
        }
    }
}

impl From<Refused> for GrantError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Throttled(wait) => GrantError::Throttled(wait),
            Refused::Invalid => GrantError::InvalidClient,
            Refused::Store(e) => e.into(),
        }
    }
}

impl From<MintError> for GrantError {
    fn from(e: MintError) -> Self {
        match e {
            MintError::Denied(d) => GrantError::Refused {
                code: d.code(),
                description: d.message().to_string(),
            },
            MintError::NoSigningKey => GrantError::Unavailable("no signing key is loaded"),
            MintError::Signing(_) => GrantError::Unavailable("the signing key is unavailable; retry shortly"),
            MintError::Limited(l) => GrantError::Limited(l),
            MintError::Stale => StoreError::Stale.into(),
            // The proof's jti, spent with the lease, was spent before.
            MintError::Store(StoreError::Spent) => GrantError::Dpop {
                code: "invalid_dpop_proof",
                description: "the DPoP proof was used before (jti replayed)".into(),
                nonce: None,
            },
            MintError::Store(e) => e.into(),
        }
    }
}

/// What a grant decided: the terms, where the token comes from, the
/// workflow and workload a verified identity names (None: the request's),
/// and the token type to report (token exchange).
struct Decided {
    terms: MintTerms,
    provenance: Provenance,
    workflow: Option<String>,
    workload: Option<String>,
    issued_token_type: Option<&'static str>,
    /// The resource and scope a person's session fixes (None: the request's).
    resource: Option<String>,
    scope: Option<String>,
    /// A person's session moves on once the lease is committed.
    after: Option<crate::people::sessions::Step>,
}

impl Decided {
    fn of(terms: MintTerms) -> Self {
        Self {
            terms,
            provenance: Provenance::default(),
            workflow: None,
            workload: None,
            issued_token_type: None,
            resource: None,
            scope: None,
            after: None,
        }
    }
}

/// A token as granted, and the token type to report (token exchange).
pub struct Granted {
    pub issued: Issued,
    pub issued_token_type: Option<&'static str>,
    /// A fresh DPoP nonce for the client's next proof, when nonces are required.
    pub dpop_nonce: Option<String>,
    /// A person's session only: the next refresh token (shown once).
    pub refresh_token: Option<String>,
}

impl Granted {
    /// `DPoP` for a sender-constrained token, else `Bearer`.
    pub fn token_type(&self) -> &'static str {
        match self.issued.lease.jkt {
            Some(_) => "DPoP",
            None => "Bearer",
        }
    }
}

/// The token endpoint's services, each with its own parts.
#[derive(Clone)]
pub struct TokenEndpoint {
    authn: Arc<Authenticator>,
    federation: Arc<Federation>,
    delegation: Arc<Delegation>,
    issuer: Arc<Issuer>,
    proofs: Arc<dpop::ProofCheck>,
    people: Arc<People>,
}

impl TokenEndpoint {
    pub fn new(
        authn: Arc<Authenticator>,
        federation: Arc<Federation>,
        delegation: Arc<Delegation>,
        issuer: Arc<Issuer>,
        proofs: Arc<dpop::ProofCheck>,
        people: Arc<People>,
    ) -> Self {
        Self {
            authn,
            federation,
            delegation,
            issuer,
            proofs,
            people,
        }
    }

    /// Grants a token, or says why not. A client_credentials mint decided on
    /// a catalog entry that changed underneath it is decided again from
    /// authentication on; other grants may have spent a single-use
    /// assertion, so their caller is told to retry (503).
    /// The DPoP proof, if any, is checked (and spent) once, before the grant.
    pub async fn token(&self, req: &TokenRequest<'_>, origin: &Origin) -> Result<Granted, GrantError> {
        let bound = self.proofs.check(req.dpop)?;
        let attempts = if req.grant.replayable() { ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            match self.attempt(req, bound.as_ref(), origin).await {
                Err(GrantError::Store(StoreError::Stale)) => continue,
                Ok(mut granted) => {
                    granted.dpop_nonce = self.proofs.nonce();
                    return Ok(granted);
                }
                other => return other,
            }
        }
        Err(StoreError::Stale.into())
    }

    /// A fresh DPoP nonce, when nonces are required (for refusals too).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.proofs.nonce()
    }

    async fn attempt(
        &self,
        req: &TokenRequest<'_>,
        bound: Option<&dpop::Bound>,
        origin: &Origin,
    ) -> Result<Granted, GrantError> {
        let jkt = bound.map(|b| b.jkt.as_str());
        let decided = match &req.grant {
            Grant::ClientCredentials => client_credentials::decide(self, req, origin).await?,
            Grant::JwtBearer { assertion } => {
                dpop::bound_alike(&[assertion], jkt)?;
                jwt_bearer::decide(self, assertion, req, origin).await?
            }
            Grant::TokenExchange {
                subject,
                subject_type,
                actor_token,
            } => {
                let tokens: Vec<&str> = std::iter::once(*subject).chain(*actor_token).collect();
                dpop::bound_alike(&tokens, jkt)?;
                token_exchange::decide(self, subject, *subject_type, *actor_token, req, origin).await?
            }
            Grant::AuthorizationCode { .. } | Grant::RefreshToken { .. } => {
                people::decide(self, req, jkt, origin).await?
            }
        };
        let Decided {
            terms,
            mut provenance,
            workflow,
            workload,
            issued_token_type,
            resource: fixed_resource,
            scope: fixed_scope,
            after,
        } = decided;
        let mut ask = req.ask.clone();
        if fixed_scope.is_some() {
            ask.scope = fixed_scope.as_deref();
        }
        if let Some(w) = &workflow {
            ask.workflow = ask.workflow.or(Some(w));
        }
        if workload.is_some() {
            ask.workload = workload.as_deref();
        }
        // A delegated token's resource defaults to the subject's.
        let resource = fixed_resource.as_deref().or(req.resource).or_else(|| {
            provenance
                .actor
                .as_ref()
                .and(terms.grants.first().map(|g| g.resource.as_str()))
        });
        provenance.jkt = jkt.map(str::to_string);
        provenance.spend = bound.map(|b| b.spend.clone());
        // A refresh token spent for this request is given back if the
        // request ends before its successor is stored (an error, a timeout,
        // a client gone): the client's retry must not read as a reuse.
        let mut give_back = after.as_ref().and_then(|step| self.people.give_back_unless_done(step));
        let minted = self.issuer.mint(&terms, resource, &ask, origin, &provenance).await;
        let (issued, refresh_token) = match (minted, &after) {
            (Ok(issued), None) => (issued, None),
            (Ok(issued), Some(step)) => {
                let refresh = self.people.minted(step, &issued, origin).await?;
                give_back.as_mut().map(crate::people::sessions::GiveBack::done);
                (issued, Some(refresh))
            }
            (Err(e), _) => return Err(e.into()),
        };
        let span = tracing::Span::current();
        span.record("workflow", issued.lease.workflow.as_str());
        span.record("workload", issued.lease.workload.as_str());
        Ok(Granted {
            issued,
            issued_token_type,
            dpop_nonce: None,
            refresh_token,
        })
    }

    /// The authenticated client, if the request authenticates one; a policy
    /// match comes back when a trust policy vouched for a workload token.
    async fn authenticate(
        &self,
        req: &TokenRequest<'_>,
        origin: &Origin,
    ) -> Result<Option<(Client, Option<Federated>)>, GrantError> {
        let found = match &req.auth {
            ClientAuth::None => return Ok(None),
            ClientAuth::Secret(creds) => (self.authn.authenticate(creds, origin).await?, None),
            ClientAuth::PrivateKeyJwt { client_id, assertion } => {
                match self
                    .federation
                    .authenticate_client(*client_id, assertion, req.resource, origin)
                    .await
                {
                    Ok(found) => found,
                    Err(Refusal::Invalid(_)) => return Err(GrantError::InvalidClient),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        record_span(&found.0.tenant_id, Some(&found.0.client_id));
        Ok(Some(found))
    }

    /// Who acts in an exchange: the holder of an actor token (who must also
    /// authenticate as the client it was minted for), else the
    /// authenticated client, else nobody.
    async fn actor(
        &self,
        req: &TokenRequest<'_>,
        actor_token: Option<&str>,
        origin: &Origin,
    ) -> Result<Option<Actor>, GrantError> {
        if let Some(token) = actor_token {
            let actor = self.delegation.actor_from_token(token).await?;
            // A bearer actor token alone is not enough.
            let Some((client, _)) = self.authenticate(req, origin).await? else {
                return Err(GrantError::InvalidClient);
            };
            if client.tenant_id != actor.client.tenant_id || client.client_id != actor.client.client_id {
                return Err(self.delegation.refuse_foreign_actor_token(client, origin).await.into());
            }
            return Ok(Some(actor));
        }
        Ok(self.authenticate(req, origin).await?.map(|(client, _)| Actor {
            workload: client.client_id.clone(),
            client,
            lease: None,
        }))
    }
}

/// Names the tenant and client on the request's span, for the logs.
fn record_span(tenant: &str, client_id: Option<&str>) {
    let span = tracing::Span::current();
    span.record("tenant", tenant);
    if let Some(c) = client_id {
        span.record("client_id", c);
    }
}

/// `typ` compared as RFC 7515 §4.1.9 says: case-insensitively, with the
/// `application/` prefix optional.
fn is_id_jag_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == "oauth-id-jag+jwt"
}

/// Whether an external token is an Identity Assertion JWT Authorization
/// Grant. An ID-JAG is one whichever grant carries it: honoured only for
/// the client it names, never as a bare subject.
fn is_id_jag(token: &str) -> bool {
    jwt::parse(token).is_ok_and(|t| t.header.typ.as_deref().is_some_and(is_id_jag_type))
}

#[cfg(test)]
mod tests {
    use super::is_id_jag_type;

    #[test]
    fn id_jag_type_is_compared_as_rfc_7515_says() {
        for typ in ["oauth-id-jag+jwt", "OAuth-ID-JAG+JWT", "application/oauth-id-jag+jwt"] {
            assert!(is_id_jag_type(typ), "{typ}");
        }
        for typ in ["JWT", "at+jwt", "application/jwt", "xoauth-id-jag+jwt"] {
            assert!(!is_id_jag_type(typ), "{typ}");
        }
    }
}
