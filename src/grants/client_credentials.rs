//! `client_credentials` (RFC 6749 §4.4): a client mints for itself, by
//! secret or private_key_jwt. A workload token a trust policy binds to the
//! client names the workload (and the workflow, unless asked).

use super::{Decided, GrantError, TokenEndpoint, TokenRequest};
use crate::audit::Origin;
use crate::tokens::terms::MintTerms;

pub(super) async fn decide(ep: &TokenEndpoint, req: &TokenRequest<'_>, origin: &Origin) -> Result<Decided, GrantError> {
    let Some((client, federated)) = ep.authenticate(req, origin).await? else {
        return Err(GrantError::InvalidClient);
    };
    let mut decided = Decided::of(MintTerms::of_client(&client));
    if let Some(f) = federated {
        decided.terms.workload_verified = true;
        decided.workflow = Some(f.matched.workflow.clone());
        decided.workload = Some(f.matched.workload.clone());
        decided.provenance.federated = Some(f.provenance());
        decided.provenance.policy_id = Some(f.policy.id);
    }
    Ok(decided)
}
