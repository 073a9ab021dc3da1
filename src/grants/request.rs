//! A token request, parsed once: which grant, how the client authenticates,
//! the resource and what is asked of the token. Every shape check that needs
//! no lookup happens here, so the grants below only decide.

use secrecy::SecretString;

use super::GrantError;
use crate::tenants::authn::Credentials;
use crate::tokens::policy::MintRequest;

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const CLIENT_ASSERTION_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// How the caller authenticates as a client (RFC 6749 §2.3, RFC 7523 §2.2).
pub enum ClientAuth<'a> {
    /// `client_secret_basic` or `client_secret_post`.
    Secret(Credentials),
    /// `private_key_jwt`: an assertion signed by a registered key, or a
    /// workload token a trust policy binds to a client.
    PrivateKeyJwt {
        client_id: Option<&'a str>,
        assertion: &'a str,
    },
    /// None presented.
    None,
}

/// What the subject token of a token exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    /// A mayfly access token.
    AccessToken,
    /// An external JWT or OIDC id_token.
    Jwt,
}

pub enum Grant<'a> {
    ClientCredentials,
    /// RFC 7523: a workload's OIDC token, or an ID-JAG.
    JwtBearer {
        assertion: &'a str,
    },
    /// RFC 8693.
    TokenExchange {
        subject: &'a str,
        subject_type: SubjectType,
        /// A mayfly access token naming the actor.
        actor_token: Option<&'a str>,
    },
    /// RFC 6749 §4.1.3 with PKCE: a person's MCP client redeems its code.
    AuthorizationCode {
        code: &'a str,
        redirect_uri: Option<&'a str>,
        code_verifier: Option<&'a str>,
    },
    /// RFC 6749 §6: a rotating refresh token of a person's session.
    RefreshToken {
        token: &'a str,
    },
}

impl Grant<'_> {
    /// Whether a mint caught by a catalog change may be decided again from
    /// the start: the other grants may have spent a single-use assertion.
    pub fn replayable(&self) -> bool {
        matches!(self, Grant::ClientCredentials)
    }
}

pub struct TokenRequest<'a> {
    pub grant: Grant<'a>,
    pub auth: ClientAuth<'a>,
    /// `resource`, or its synonym `audience`.
    pub resource: Option<&'a str>,
    /// Scope, workflow, workload and lifetime as asked.
    pub ask: MintRequest<'a>,
    /// The `DPoP` header's proof (RFC 9449), if one was sent.
    pub dpop: Option<&'a str>,
    /// `client_id` as sent (a public client names itself this way).
    pub client_id: Option<&'a str>,
}

fn invalid(why: impl Into<String>) -> GrantError {
    GrantError::Refused {
        code: "invalid_request",
        description: why.into(),
    }
}

impl<'a> TokenRequest<'a> {
    /// Parses form parameters (`get` answers a non-empty value or None) and
    /// the credentials of a Basic `Authorization` header, if one was sent.
    pub fn parse(get: impl Fn(&str) -> Option<&'a str>, basic: Option<Credentials>) -> Result<Self, GrantError> {
        let grant_type = get("grant_type").ok_or_else(|| invalid("`grant_type` is required"))?;
        let resource = match (get("resource"), get("audience")) {
            (Some(r), Some(a)) if r != a => return Err(invalid("`resource` and `audience` disagree; send one")),
            (r, a) => r.or(a),
        };
        let ask = MintRequest {
            scope: get("scope"),
            workflow: get("workflow"),
            workload: get("workload"),
            expires_in: get("expires_in"),
        };
        let grant = match grant_type {
            GRANT_CLIENT_CREDENTIALS => Grant::ClientCredentials,
            GRANT_JWT_BEARER | GRANT_TOKEN_EXCHANGE if ask.workflow.is_some() || ask.workload.is_some() => {
                return Err(invalid(
                    "`workflow` and `workload` come from the subject, not the request",
                ));
            }
            GRANT_JWT_BEARER => Grant::JwtBearer {
                assertion: get("assertion").ok_or_else(|| invalid("`assertion` is required"))?,
            },
            GRANT_TOKEN_EXCHANGE => {
                let subject = get("subject_token").ok_or_else(|| invalid("`subject_token` is required"))?;
                let subject_type = match get("subject_token_type") {
                    Some(TOKEN_TYPE_ACCESS_TOKEN) => SubjectType::AccessToken,
                    Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ID_TOKEN) => SubjectType::Jwt,
                    _ => {
                        return Err(invalid(format!(
                            "`subject_token_type` must be {TOKEN_TYPE_ACCESS_TOKEN}, {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}"
                        )));
                    }
                };
                let actor_token = get("actor_token");
                if actor_token.is_some() && get("actor_token_type") != Some(TOKEN_TYPE_ACCESS_TOKEN) {
                    return Err(invalid(format!("`actor_token_type` must be {TOKEN_TYPE_ACCESS_TOKEN}")));
                }
                Grant::TokenExchange {
                    subject,
                    subject_type,
                    actor_token,
                }
            }
            GRANT_AUTHORIZATION_CODE | GRANT_REFRESH_TOKEN if ask.workflow.is_some() || ask.workload.is_some() => {
                return Err(invalid("`workflow` and `workload` come from the person's sign-in"));
            }
            GRANT_AUTHORIZATION_CODE => Grant::AuthorizationCode {
                code: get("code").ok_or_else(|| invalid("`code` is required"))?,
                redirect_uri: get("redirect_uri"),
                code_verifier: get("code_verifier"),
            },
            GRANT_REFRESH_TOKEN => Grant::RefreshToken {
                token: get("refresh_token").ok_or_else(|| invalid("`refresh_token` is required"))?,
            },
            _ => {
                return Err(GrantError::Refused {
                    code: "unsupported_grant_type",
                    description:
                        "supported: client_credentials, jwt-bearer, token-exchange, authorization_code, refresh_token"
                            .into(),
                });
            }
        };
        Ok(Self {
            grant,
            auth: client_auth(&get, basic)?,
            resource,
            ask,
            dpop: None,
            client_id: get("client_id"),
        })
    }
}

/// One client authentication method, never two.
fn client_auth<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    basic: Option<Credentials>,
) -> Result<ClientAuth<'a>, GrantError> {
    let both = || invalid("use one client authentication method, not both");
    if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type") != Some(CLIENT_ASSERTION_JWT) {
            return Err(invalid(format!(
                "`client_assertion_type` must be {CLIENT_ASSERTION_JWT}"
            )));
        }
        if get("client_secret").is_some() || basic.is_some() {
            return Err(both());
        }
        return Ok(ClientAuth::PrivateKeyJwt {
            client_id: get("client_id"),
            assertion,
        });
    }
    match (basic, get("client_id"), get("client_secret")) {
        (Some(_), _, Some(_)) => Err(both()),
        (Some(creds), form_id, None) => {
            if form_id.is_some_and(|f| f != creds.client_id) {
                return Err(invalid("client_id does not match the Authorization header"));
            }
            Ok(ClientAuth::Secret(creds))
        }
        (None, Some(id), Some(secret)) => Ok(ClientAuth::Secret(Credentials {
            client_id: id.to_string(),
            secret: SecretString::from(secret.to_string()),
        })),
        (None, _, _) => Ok(ClientAuth::None),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<TokenRequest<'static>, GrantError> {
        let form: &'static HashMap<String, String> = Box::leak(Box::new(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ));
        TokenRequest::parse(|n| form.get(n).map(String::as_str).filter(|v| !v.is_empty()), None)
    }

    fn code(r: Result<TokenRequest<'static>, GrantError>) -> &'static str {
        match r {
            Err(GrantError::Refused { code, .. }) => code,
            Err(_) => "other error",
            Ok(_) => "accepted",
        }
    }

    #[test]
    fn each_malformed_request_is_refused_before_any_lookup() {
        let cc = ("grant_type", GRANT_CLIENT_CREDENTIALS);
        assert_eq!(code(parse(&[])), "invalid_request");
        assert_eq!(code(parse(&[("grant_type", "password")])), "unsupported_grant_type");
        assert_eq!(
            code(parse(&[cc, ("resource", "https://a"), ("audience", "https://b")])),
            "invalid_request"
        );
        assert_eq!(
            code(parse(&[cc, ("resource", "https://a"), ("audience", "https://a")])),
            "accepted"
        );
        assert_eq!(code(parse(&[("grant_type", GRANT_JWT_BEARER)])), "invalid_request");
        let jb = [
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", "x.y.z"),
            ("workload", "me"),
        ];
        assert_eq!(code(parse(&jb)), "invalid_request", "the subject names the workload");
        let te = ("grant_type", GRANT_TOKEN_EXCHANGE);
        assert_eq!(code(parse(&[te, ("subject_token", "t")])), "invalid_request");
        let typed = ("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN);
        assert_eq!(code(parse(&[te, ("subject_token", "t"), typed])), "accepted");
        assert_eq!(
            code(parse(&[te, ("subject_token", "t"), typed, ("actor_token", "a")])),
            "invalid_request"
        );
        let pkj = [cc, ("client_assertion", "a.b.c"), ("client_secret", "s")];
        assert_eq!(
            code(parse(&pkj)),
            "invalid_request",
            "the assertion type is required first"
        );
        let both = [
            cc,
            ("client_assertion", "a.b.c"),
            ("client_assertion_type", CLIENT_ASSERTION_JWT),
            ("client_secret", "s"),
        ];
        assert_eq!(code(parse(&both)), "invalid_request", "one method, not two");
    }

    #[test]
    fn the_client_authentication_method_is_read_once() {
        let r = parse(&[
            ("grant_type", GRANT_CLIENT_CREDENTIALS),
            ("client_id", "ci"),
            ("client_secret", "s"),
        ])
        .unwrap();
        assert!(matches!(r.auth, ClientAuth::Secret(ref c) if c.client_id == "ci"));
        let r = parse(&[
            ("grant_type", GRANT_CLIENT_CREDENTIALS),
            ("client_assertion", "a.b.c"),
            ("client_assertion_type", CLIENT_ASSERTION_JWT),
        ])
        .unwrap();
        assert!(matches!(r.auth, ClientAuth::PrivateKeyJwt { client_id: None, .. }));
        let r = parse(&[("grant_type", GRANT_CLIENT_CREDENTIALS), ("client_id", "ci")]).unwrap();
        assert!(matches!(r.auth, ClientAuth::None), "an id alone authenticates nothing");
    }
}
