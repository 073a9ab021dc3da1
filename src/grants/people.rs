//! `authorization_code` and `refresh_token`: a person's MCP client (a
//! public client, named by its metadata document URL) redeems its code or
//! rotates its refresh token. The decisions are `people::sessions`'; here
//! they become mint terms, and the session's next step runs after the mint.

use super::{ClientAuth, Decided, GrantError, TokenEndpoint, TokenRequest};
use crate::audit::Origin;
use crate::people::sessions::{CodeRedemption, Redeemed, Refused};

impl From<Refused> for GrantError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Grant(why) => GrantError::invalid_grant(why),
            Refused::Scope(why) => GrantError::Refused {
                code: "invalid_scope",
                description: why,
            },
            Refused::Throttled(wait) => GrantError::Throttled(wait),
            Refused::Store(e) => e.into(),
        }
    }
}

pub(super) async fn decide(
    ep: &TokenEndpoint,
    req: &TokenRequest<'_>,
    jkt: Option<&str>,
    origin: &Origin,
) -> Result<Decided, GrantError> {
    // Interactive clients are public (token_endpoint_auth_method none):
    // they name themselves, and PKCE stands in for a secret.
    if !matches!(req.auth, ClientAuth::None) {
        return Err(GrantError::InvalidClient);
    }
    let redeemed = match &req.grant {
        super::Grant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            let presented = CodeRedemption {
                code,
                client_id: req.client_id,
                redirect_uri: *redirect_uri,
                verifier: *code_verifier,
                resource: req.resource,
            };
            ep.people.redeem_code(&presented, jkt, origin).await?
        }
        super::Grant::RefreshToken { token } => {
            ep.people
                .refresh(token, req.client_id, req.resource, req.ask.scope, jkt, origin)
                .await?
        }
        _ => return Err(GrantError::invalid_grant("not a people grant")),
    };
    let Redeemed {
        terms,
        workflow,
        workload,
        resource,
        scope,
        provenance,
        step,
    } = redeemed;
    super::record_span(&terms.tenant_id, Some(&terms.client_id));
    let mut decided = Decided::of(terms);
    decided.provenance = provenance;
    decided.workflow = Some(workflow);
    decided.workload = Some(workload);
    decided.resource = Some(resource);
    decided.scope = Some(scope);
    decided.after = Some(step);
    Ok(decided)
}
