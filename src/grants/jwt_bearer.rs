//! `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): a
//! workload's OIDC token judged by the trust policies of the resource's
//! tenant, or an Identity Assertion JWT Authorization Grant presented by the
//! agent client it names (the token's `sub` is the person, `act` the agent).

use super::{Decided, GrantError, TokenEndpoint, TokenRequest, is_id_jag};
use crate::audit::Origin;
use crate::delegation::SubjectToken;
use crate::federation::Purpose;

pub(super) async fn decide(
    ep: &TokenEndpoint,
    assertion: &str,
    req: &TokenRequest<'_>,
    origin: &Origin,
) -> Result<Decided, GrantError> {
    // Client authentication, when sent, must hold even where the grant
    // does not need it.
    let actor = ep.actor(req, None, origin).await?;
    if is_id_jag(assertion) {
        let Some(actor) = actor else {
            return Err(GrantError::InvalidClient);
        };
        return delegated(ep, SubjectToken::IdJag(assertion), actor, req, origin, None).await;
    }
    direct(ep, assertion, req, origin, None).await
}

/// An external token's own token, judged by a trust policy (no actor).
pub(super) async fn direct(
    ep: &TokenEndpoint,
    token: &str,
    req: &TokenRequest<'_>,
    origin: &Origin,
    issued_token_type: Option<&'static str>,
) -> Result<Decided, GrantError> {
    let resource = req.resource.ok_or_else(|| GrantError::Refused {
        code: "invalid_request",
        description: "`resource` (or `audience`) is required".into(),
    })?;
    let f = ep
        .federation
        .for_resource(token, resource, Purpose::Direct, origin)
        .await?;
    super::record_span(&f.policy.tenant_id, None);
    let terms = ep.federation.terms(&f, origin).await?;
    let mut decided = Decided::of(terms);
    decided.workflow = Some(f.matched.workflow.clone());
    decided.workload = Some(f.matched.workload.clone());
    decided.provenance.federated = Some(f.provenance());
    decided.provenance.policy_id = Some(f.policy.id);
    decided.issued_token_type = issued_token_type;
    Ok(decided)
}

/// A token for `actor` acting for the subject: narrowed, with the chain.
pub(super) async fn delegated(
    ep: &TokenEndpoint,
    subject: SubjectToken<'_>,
    actor: crate::delegation::Actor,
    req: &TokenRequest<'_>,
    origin: &Origin,
    issued_token_type: Option<&'static str>,
) -> Result<Decided, GrantError> {
    let d = ep
        .delegation
        .exchange(subject, actor, req.resource, req.ask.expires_in, origin)
        .await?;
    super::record_span(&d.terms.tenant_id, Some(&d.terms.client_id));
    let mut decided = Decided::of(d.terms);
    decided.provenance = d.provenance;
    decided.workflow = Some(d.workflow);
    decided.workload = Some(d.workload);
    decided.issued_token_type = issued_token_type;
    Ok(decided)
}
