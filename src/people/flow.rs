//! The browser's part: `/oauth2/authorize` checks the MCP client and its
//! redirect, sends the person to the tenant's IdP (authorization code +
//! PKCE + nonce there too), takes them back at `/oauth2/callback`, asks for
//! consent once per client and person, and redirects to the client with a
//! single-use code and `iss` (RFC 9207). Until the redirect URI is known to
//! be the client's, every refusal is a page; after, it goes to the client.
//! The whole request is bound to the browser that started it (a cookie
//! whose digest is stored), so a sign-in cannot be planted in another.

use std::sync::Arc;

use chrono::TimeDelta;

use super::cimd::{self, Documents};
use super::idp::Idp;
use super::providers::LoginProviders;
use super::{AUTHORIZATION_SECONDS, Authorization, LoginProvider, digest, random_token, s256};
use crate::audit::{AuditEvent, AuditLog, Origin, Outcome, actions};
use crate::clock::Clock;
use crate::leases::Revocations;
use crate::storage::{Store, StoreError};
use crate::tenants::brake::{Brake, FailureLog};
use crate::tenants::redirect::{self, pkce_shaped};
use crate::tenants::{ClientKind, uri};
use crate::tokens::issuer::IssuerId;

/// Why an authorization request goes no further.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Shown to the person: the client or its redirect cannot be trusted,
    /// or the sign-in failed. A plain sentence, never internals.
    #[error("{message}")]
    Page {
        status: u16,
        title: &'static str,
        message: String,
    },
    /// Sent back to the client (its redirect URI, with `error` and `iss`).
    #[error("redirect")]
    Redirect(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn page(status: u16, title: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Page {
        status,
        title,
        message: message.into(),
    }
}

/// Where the browser goes next: the IdP, with the cookie binding the request.
pub struct Started {
    pub location: String,
    pub browser_cookie: String,
}

/// What the consent page shows.
pub struct ConsentView {
    pub request: String,
    pub client_id: String,
    pub client_name: Option<String>,
    pub resource: String,
    pub scopes: Vec<String>,
    pub person: String,
    /// Where the answer goes: the person sees its host (a name anyone may
    /// choose says less than where the code is sent).
    pub redirect_uri: String,
}

pub enum Next {
    Consent(ConsentView),
    Redirect(String),
}

/// The authorization request as sent (`get` answers a non-empty parameter).
pub struct AuthorizeRequest<'a> {
    pub client_id: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub response_type: Option<&'a str>,
    pub code_challenge: Option<&'a str>,
    pub code_challenge_method: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub state: Option<&'a str>,
}

#[derive(Clone)]
pub struct People {
    pub(super) store: Store,
    pub(super) audit: AuditLog,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) issuer: IssuerId,
    pub(super) providers: LoginProviders,
    pub(super) idp: Idp,
    pub(super) documents: Documents,
    pub(super) revocations: Revocations,
    registration: super::registration::Registration,
    brake: Arc<Brake>,
    failures: Arc<FailureLog>,
}

impl People {
    pub fn new(
        store: Store,
        audit: AuditLog,
        clock: Arc<dyn Clock>,
        issuer: IssuerId,
        providers: LoginProviders,
        revocations: Revocations,
        (brake, failures): (Arc<Brake>, Arc<FailureLog>),
    ) -> Result<Self, String> {
        let idp = Idp::new(providers.reach().clone())?;
        Ok(Self {
            registration: super::registration::Registration::new(store.clone(), audit.clone(), clock.clone()),
            documents: Documents::new(idp.outbound().clone()),
            idp,
            store,
            audit,
            clock,
            issuer,
            providers,
            revocations,
            brake,
            failures,
        })
    }

    pub fn providers(&self) -> &LoginProviders {
        &self.providers
    }

    pub fn registration(&self) -> &super::registration::Registration {
        &self.registration
    }

    /// Where the IdP sends the person back (registered at the IdP).
    pub fn callback_uri(&self) -> String {
        format!("{}/oauth2/callback", self.issuer.url.trim_end_matches('/'))
    }

    /// An error redirect to the client, with `iss` (RFC 9207).
    pub(super) fn to_client(&self, redirect_uri: &str, state: Option<&str>, error: &str, description: &str) -> String {
        let mut params = vec![("error", error), ("error_description", description)];
        if let Some(s) = state {
            params.push(("state", s));
        }
        params.push(("iss", self.issuer.url.as_str()));
        redirect::with_params(redirect_uri, &params)
    }

    /// A login provider of the tenant, if it still exists.
    pub(super) async fn provider_of(&self, tenant: &str, id: uuid::Uuid) -> Result<Option<LoginProvider>, StoreError> {
        match self.store.read().await?.conn().get_provider(tenant, id).await {
            Ok(p) => Ok(Some(p)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Audits a refusal through the failure log (one event per source,
    /// tenant and reason a minute, within a budget) and counts it against
    /// the source's brake: a storm of refusals is throttled.
    pub(super) async fn note_failure(
        &self,
        origin: &Origin,
        event: AuditEvent,
        scope: &str,
    ) -> Result<Option<i64>, StoreError> {
        let Ok(ip) = origin.source.parse::<std::net::IpAddr>() else {
            self.audit.append(&[event]).await?;
            return Ok(None);
        };
        if let Some(first) = self.failures.note(ip, event) {
            self.audit.append(&[first]).await?;
        }
        metrics::counter!("mayfly_people_refusals_total").increment(1);
        Ok(self.brake.record_failure(ip, scope, self.clock.now()))
    }

    /// Seconds a braked source must wait (before any work is done for it).
    pub(super) fn braked(&self, origin: &Origin) -> Option<i64> {
        let ip = origin.source.parse::<std::net::IpAddr>().ok()?;
        self.brake.over_budget(ip, self.clock.now())
    }

    /// A page for a braked source.
    pub(super) fn not_braked(&self, origin: &Origin) -> Result<(), Refusal> {
        match self.braked(origin) {
            Some(_) => Err(page(
                429,
                "Too many requests",
                "Too many refused requests from your address. Wait a minute and start again.",
            )),
            None => Ok(()),
        }
    }

    /// Counts an event that costs (a registration) against the source's brake.
    pub(super) fn count(&self, origin: &Origin, scope: &str) -> Option<i64> {
        let ip = origin.source.parse::<std::net::IpAddr>().ok()?;
        self.brake.record_failure(ip, scope, self.clock.now())
    }

    async fn refused(
        &self,
        origin: &Origin,
        tenant: Option<&str>,
        client: Option<&str>,
        reason: String,
    ) -> Result<(), Refusal> {
        let mut e = origin.event(actions::AUTHORIZATION_REFUSED, Outcome::Denied, self.clock.now());
        e.tenant = tenant.map(str::to_string);
        e.client_id = client.map(|c| crate::audit::sanitize(c, 2048));
        e.reason = Some(crate::audit::sanitize(&reason, 500));
        match self.note_failure(origin, e, "people:authorize").await? {
            Some(_) => Err(page(
                429,
                "Too many requests",
                "Too many refused requests from your address. Wait a minute and start again.",
            )),
            None => Ok(()),
        }
    }

    /// `/oauth2/authorize`: checks the request and starts the sign-in.
    pub async fn begin(
        &self,
        r: &AuthorizeRequest<'_>,
        browser: Option<&str>,
        origin: &Origin,
    ) -> Result<Started, Refusal> {
        self.not_braked(origin)?;
        // The resource names the tenant: its audit trail gets every refusal.
        let canonical = r.resource.and_then(|res| uri::canonicalize(res).ok());
        let owner = match &canonical {
            Some(c) => self.store.read().await?.conn().resource_owner(c).await?,
            None => None,
        };
        let at = owner.as_deref();
        let Some(client_id) = r.client_id else {
            return Err(page(400, "Unknown application", "The request names no client_id."));
        };
        let registered = client_id.starts_with(super::registration::PREFIX);
        let found = if registered {
            match self.store.read().await?.conn().registered_client(client_id).await {
                Ok(c) => Ok(cimd::ClientMetadata {
                    client_id: c.client_id,
                    client_name: c.client_name,
                    redirect_uris: c.redirect_uris,
                }),
                Err(StoreError::NotFound) => Err("no such registered client".to_string()),
                Err(e) => return Err(e.into()),
            }
        } else if cimd::is_document_url(client_id) {
            self.documents
                .client(client_id)
                .await
                .map_err(|why| format!("client metadata document: {why}"))
        } else if let Some(tenant) = at {
            // A client the tenant's admins registered (`kind: interactive`).
            match self.store.read().await?.conn().get_client(tenant, client_id).await {
                Ok(c) if c.kind == ClientKind::Interactive && !c.disabled => Ok(cimd::ClientMetadata {
                    client_id: c.client_id,
                    client_name: Some(c.name),
                    redirect_uris: c.redirect_uris.unwrap_or_default(),
                }),
                Ok(_) | Err(StoreError::NotFound) => {
                    Err("no such enabled interactive client in the tenant".to_string())
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            Err("client_id is neither a metadata document URL nor a registered client".to_string())
        };
        let client = match found {
            Ok(c) => c,
            Err(why) => {
                self.refused(origin, at, Some(client_id), why).await?;
                return Err(page(
                    400,
                    "Unknown application",
                    "This application is not known: its client_id must be the https URL of a valid metadata document, \
                     or a registered client.",
                ));
            }
        };
        let redirect_uri = match (r.redirect_uri, client.redirect_uris.as_slice()) {
            (Some(asked), registered) if redirect::matches_registered(registered, asked) => asked.to_string(),
            (None, [only]) => only.clone(),
            (asked, _) => {
                let why = match asked {
                    Some(_) => "redirect_uri is not registered for the client",
                    None => "redirect_uri is required",
                };
                self.refused(origin, at, Some(client_id), why.into()).await?;
                return Err(page(
                    400,
                    "Unsafe redirect",
                    "The application asked to be answered at an address it has not registered. Nothing was sent.",
                ));
            }
        };
        // Before the person has signed in, a refusal is a page, never a
        // redirect: with metadata documents anyone is a client with
        // registered redirect URIs, and an error redirect would make mayfly
        // an open redirector (RFC 9700 §4.11.1).
        let back = |error: &str, description: &str| {
            page(
                400,
                "Request refused",
                format!("The application's request was refused ({error}): {description}."),
            )
        };
        if r.state.is_some_and(|s| s.len() > 1024) {
            return Err(back("invalid_request", "state is longer than 1024 characters"));
        }
        if r.response_type != Some("code") {
            self.refused(origin, at, Some(client_id), "response_type is not code".into())
                .await?;
            return Err(back("unsupported_response_type", "only response_type=code"));
        }
        match (r.code_challenge, r.code_challenge_method) {
            (Some(c), Some("S256")) if pkce_shaped(c) => {}
            (_, method) => {
                let why = match method {
                    Some("S256") => "code_challenge is missing or malformed",
                    Some(_) => "code_challenge_method must be S256",
                    None => "PKCE is required: code_challenge with code_challenge_method=S256",
                };
                self.refused(origin, at, Some(client_id), why.into()).await?;
                return Err(back("invalid_request", why));
            }
        }
        let Some(resource) = r.resource else {
            self.refused(origin, at, Some(client_id), "no resource".into()).await?;
            return Err(back(
                "invalid_target",
                "resource (RFC 8707) is required: it names the MCP server",
            ));
        };
        let (Some(tenant), Some(canonical)) = (owner.clone(), canonical) else {
            self.refused(origin, at, Some(client_id), "unknown resource".into())
                .await?;
            return Err(back("invalid_target", "unknown resource"));
        };
        // The first provider (by name) that grants the resource.
        let providers = self.store.read().await?.conn().list_providers(&tenant, "", 100).await?;
        let provider = providers
            .into_iter()
            .find(|p| granted_scopes(p, &canonical, None).is_some());
        let Some(provider) = provider else {
            self.refused(
                origin,
                Some(&tenant),
                Some(client_id),
                "the tenant has no login provider".into(),
            )
            .await?;
            return Err(back("access_denied", "people cannot sign in to this resource"));
        };
        if registered && !provider.allow_registration {
            self.refused(
                origin,
                Some(&tenant),
                Some(client_id),
                "the login provider does not allow registered clients".into(),
            )
            .await?;
            return Err(back(
                "access_denied",
                "this resource accepts clients named by a metadata document only",
            ));
        }
        let scopes = match granted_scopes(&provider, &canonical, r.scope) {
            Some(s) if !s.is_empty() => s,
            _ => {
                self.refused(
                    origin,
                    Some(&tenant),
                    Some(client_id),
                    "no requested scope is granted".into(),
                )
                .await?;
                return Err(back("invalid_scope", "none of the requested scopes can be granted"));
            }
        };
        let endpoints = match self.idp.endpoints(&provider.issuer).await {
            Ok(e) => e,
            Err(why) => {
                self.refused(
                    origin,
                    Some(&tenant),
                    Some(client_id),
                    format!("login provider {}: {why}", provider.name),
                )
                .await?;
                return Err(page(
                    503,
                    "Sign-in unavailable",
                    "Your company's sign-in service cannot be reached. Try again in a moment.",
                ));
            }
        };
        let now = self.clock.now();
        let browser_cookie = match browser {
            Some(b) if b.len() == 43 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') => {
                b.to_string()
            }
            _ => random_token(""),
        };
        let a = Authorization {
            id: random_token(""),
            tenant_id: tenant,
            provider_id: provider.id,
            client_id: client.client_id,
            client_name: client.client_name,
            redirect_uri,
            resource: resource.to_string(),
            scopes,
            client_state: r.state.map(str::to_string),
            code_challenge: r.code_challenge.unwrap_or_default().to_string(),
            browser_digest: digest(&browser_cookie),
            idp_nonce: random_token(""),
            idp_verifier: random_token(""),
            person: None,
            identity: None,
            code_digest: None,
            session_id: None,
            created_at: now,
            expires_at: now + TimeDelta::seconds(AUTHORIZATION_SECONDS),
            used_at: None,
        };
        let mut tx = self.store.begin().await?;
        tx.conn().insert_authorization(&a).await?;
        tx.commit().await?;
        let callback = self.callback_uri();
        let location = redirect::with_params(
            &endpoints.authorization_endpoint,
            &[
                ("response_type", "code"),
                ("client_id", provider.client_id.as_str()),
                ("redirect_uri", callback.as_str()),
                ("scope", provider.scopes.join(" ").as_str()),
                ("state", a.id.as_str()),
                ("nonce", a.idp_nonce.as_str()),
                ("code_challenge", s256(&a.idp_verifier).as_str()),
                ("code_challenge_method", "S256"),
            ],
        );
        Ok(Started {
            location,
            browser_cookie,
        })
    }
}

/// The scopes to ask the person for: those requested that the provider
/// grants on the resource (all it grants when none are requested). None
/// when it grants nothing there.
fn granted_scopes(p: &LoginProvider, canonical: &str, asked: Option<&str>) -> Option<Vec<String>> {
    let grant = p
        .grants
        .iter()
        .find(|g| uri::canonicalize(&g.resource).is_ok_and(|c| c == canonical))?;
    Some(match asked {
        None => grant.scopes.clone(),
        Some(asked) => {
            let mut out: Vec<String> = Vec::new();
            for s in asked.split(' ').filter(|s| !s.is_empty()) {
                if grant.scopes.iter().any(|g| g == s) && !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
            out
        }
    })
}
