//! `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an actor
//! (the authenticated client, or an actor token's holder) exchanges a
//! subject token (a mayfly token, a person's or workload's OIDC token, or an
//! ID-JAG) for a narrower token naming the chain; with no actor, an external
//! subject gets a token of its own, as with jwt-bearer.

use super::jwt_bearer::{delegated, direct};
use super::request::{SubjectType, TOKEN_TYPE_ACCESS_TOKEN};
use super::{Decided, GrantError, TokenEndpoint, TokenRequest, is_id_jag};
use crate::audit::Origin;
use crate::delegation::SubjectToken;

pub(super) async fn decide(
    ep: &TokenEndpoint,
    subject: &str,
    subject_type: SubjectType,
    actor_token: Option<&str>,
    req: &TokenRequest<'_>,
    origin: &Origin,
) -> Result<Decided, GrantError> {
    let issued = Some(TOKEN_TYPE_ACCESS_TOKEN);
    let subject = match subject_type {
        SubjectType::AccessToken => SubjectToken::Mayfly(subject),
        SubjectType::Jwt if is_id_jag(subject) => SubjectToken::IdJag(subject),
        SubjectType::Jwt => SubjectToken::External(subject),
    };
    match (ep.actor(req, actor_token, origin).await?, subject) {
        (Some(actor), subject) => delegated(ep, subject, actor, req, origin, issued).await,
        (None, SubjectToken::IdJag(_)) => Err(GrantError::InvalidClient),
        (None, SubjectToken::Mayfly(_)) => Err(GrantError::Refused {
            code: "invalid_request",
            description: "exchanging a mayfly token needs an actor: authenticate the client or send `actor_token`"
                .into(),
        }),
        (None, SubjectToken::External(token)) => direct(ep, token, req, origin, issued).await,
    }
}
