//! After the IdP: the callback checks the person's id_token and the
//! provider's claim conditions, the consent page's answer is recorded (and
//! remembered per client, person and resource), and the single-use code is
//! issued to the client's redirect with `iss` (RFC 9207).

use chrono::TimeDelta;
use serde_json::json;

use super::flow::{ConsentView, Next, Refusal, page};
use super::{Authorization, CODE_SECONDS, People, digest, random_token, same};
use crate::audit::{Origin, Outcome, actions};
use crate::federation::policy::{conditions_hold, render};
use crate::storage::StoreError;
use crate::tenants::{redirect, validate_workload};

impl People {
    /// Loads a request this browser started and that is still open.
    async fn open(&self, id: &str, browser: Option<&str>) -> Result<Authorization, Refusal> {
        let expired = || {
            page(
                400,
                "Sign-in expired",
                "This sign-in is unknown or has expired. Start again from your application.",
            )
        };
        if id.is_empty() || id.len() > 64 {
            return Err(expired());
        }
        let a = match self.store.read().await?.conn().get_authorization(id).await {
            Ok(a) => a,
            Err(StoreError::NotFound) => return Err(expired()),
            Err(e) => return Err(e.into()),
        };
        if !browser.is_some_and(|b| same(&digest(b), &a.browser_digest)) {
            return Err(page(
                400,
                "Different browser",
                "This sign-in was started in another browser (or its cookie was blocked). Start again from your application.",
            ));
        }
        if a.used_at.is_some() || a.code_digest.is_some() || a.expires_at <= self.clock.now() {
            return Err(expired());
        }
        Ok(a)
    }

    async fn login_failed(&self, a: &Authorization, origin: &Origin, why: String) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.conn().close_authorization(&a.id, now).await?;
        tx.commit().await?;
        let mut e = origin.event(actions::LOGIN_FAILED, Outcome::Denied, now);
        e.tenant = Some(a.tenant_id.clone());
        e.client_id = Some(a.client_id.clone());
        e.resource = Some(a.resource.clone());
        e.reason = Some(crate::audit::sanitize(&why, 500));
        // Through the failure log and the brake, as every refusal anyone can cause.
        self.note_failure(origin, e, "people:authorize").await.map(|_| ())
    }

    /// `/oauth2/callback`: the IdP sent the person back.
    pub async fn callback(
        &self,
        state: &str,
        code: Option<&str>,
        idp_error: Option<&str>,
        idp_iss: Option<&str>,
        browser: Option<&str>,
        origin: &Origin,
    ) -> Result<Next, Refusal> {
        self.not_braked(origin)?;
        let a = self.open(state, browser).await?;
        if a.person.is_some() {
            return Err(page(
                400,
                "Already signed in",
                "This sign-in has been used. Start again from your application.",
            ));
        }
        let failed = page(
            403,
            "Sign-in failed",
            "Your sign-in at your company's identity provider could not be verified. Nothing was granted.",
        );
        let Some(code) = code else {
            let why = format!("the IdP answered error {}", idp_error.unwrap_or("(none)"));
            self.login_failed(&a, origin, crate::audit::sanitize(&why, 200)).await?;
            return Err(Refusal::Redirect(self.to_client(
                &a.redirect_uri,
                a.client_state.as_deref(),
                "access_denied",
                "sign-in was cancelled or refused",
            )));
        };
        let Some(provider) = self.provider_of(&a.tenant_id, a.provider_id).await? else {
            self.login_failed(&a, origin, "login provider deleted".into()).await?;
            return Err(failed);
        };
        // RFC 9207: an IdP that names itself must be the one asked (mix-up).
        if idp_iss.is_some_and(|i| i.trim_end_matches('/') != provider.issuer.trim_end_matches('/')) {
            self.login_failed(
                &a,
                origin,
                format!("login provider {}: the answer's iss is another issuer", provider.name),
            )
            .await?;
            return Err(failed);
        }
        let secret = self.providers.secret(&provider);
        let claims = match self
            .idp
            .sign_in(
                &provider.issuer,
                &provider.client_id,
                secret.as_ref(),
                code,
                &self.callback_uri(),
                &a.idp_verifier,
                &a.idp_nonce,
                self.clock.now(),
            )
            .await
        {
            Ok(c) => c,
            Err(why) => {
                self.login_failed(&a, origin, format!("login provider {}: {why}", provider.name))
                    .await?;
                return Err(failed);
            }
        };
        // An address the IdP has not verified names no one and admits no
        // one (social and multi-tenant IdPs let anyone claim any address).
        let uses_email = provider.workload_template.contains("{email}") || provider.claims.contains_key("email");
        if uses_email
            && !matches!(claims.get("email_verified"), Some(serde_json::Value::Bool(true)))
            && claims.get("email_verified").and_then(|v| v.as_str()) != Some("true")
        {
            self.login_failed(
                &a,
                origin,
                format!("login provider {}: email not verified", provider.name),
            )
            .await?;
            return Err(page(
                403,
                "Not allowed",
                "Your account's email address is not verified by your company's identity provider.",
            ));
        }
        let person = match conditions_hold(&provider.claims, &claims)
            .and_then(|()| render(&provider.workload_template, &claims))
        {
            Ok(p) if validate_workload("workload", &p).is_ok() => p,
            Ok(_) => {
                self.login_failed(&a, origin, "the workload template gives an invalid name".into())
                    .await?;
                return Err(failed);
            }
            Err(m) => {
                self.login_failed(&a, origin, format!("login provider {}: {}", provider.name, m.0))
                    .await?;
                return Err(page(
                    403,
                    "Not allowed",
                    "Your account is not allowed to use this resource.",
                ));
            }
        };
        let text = |n: &str| {
            claims
                .get(n)
                .and_then(|v| v.as_str())
                .map(|t| crate::audit::sanitize(t, 256))
        };
        let identity = json!({
            "issuer": provider.issuer, "subject": text("sub"), "email": text("email"),
            "name": text("name"), "provider": provider.name,
        });
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx.conn().sign_in_authorization(&a.id, &person, &identity).await? {
            return Err(page(
                400,
                "Already signed in",
                "This sign-in has been used. Start again from your application.",
            ));
        }
        let mut e = origin.event(actions::LOGIN_SUCCEEDED, Outcome::Success, now);
        e.tenant = Some(a.tenant_id.clone());
        e.client_id = Some(a.client_id.clone());
        e.workload = Some(person.clone());
        e.workflow = Some(provider.workflow.clone());
        e.resource = Some(a.resource.clone());
        e.reason = Some(format!("signed in at {} ({})", provider.issuer, provider.name));
        tx.conn().append_audit(&[e]).await?;
        let agreed = tx
            .conn()
            .consent(&a.tenant_id, &a.client_id, &person, &a.resource)
            .await?;
        tx.commit().await?;
        // Consent is asked again for loopback and private-scheme redirects:
        // any local program can name those (the CIMD security guidance).
        if redirect::consent_may_be_remembered(&a.redirect_uri)
            && agreed.is_some_and(|agreed| a.scopes.iter().all(|s| agreed.contains(s)))
        {
            return Ok(Next::Redirect(self.issue_code(&a).await?));
        }
        Ok(Next::Consent(ConsentView {
            request: a.id,
            client_id: a.client_id,
            client_name: a.client_name,
            resource: a.resource,
            scopes: a.scopes,
            person,
            redirect_uri: a.redirect_uri,
        }))
    }

    /// The consent page's answer.
    pub async fn consent(
        &self,
        request: &str,
        allow: bool,
        browser: Option<&str>,
        origin: &Origin,
    ) -> Result<String, Refusal> {
        let a = self.open(request, browser).await?;
        let Some(person) = a.person.clone() else {
            return Err(page(
                400,
                "Not signed in",
                "Sign in first. Start again from your application.",
            ));
        };
        let now = self.clock.now();
        let action = if allow {
            actions::CONSENT_GRANTED
        } else {
            actions::CONSENT_DENIED
        };
        let mut e = origin.event(action, if allow { Outcome::Success } else { Outcome::Denied }, now);
        e.tenant = Some(a.tenant_id.clone());
        e.client_id = Some(a.client_id.clone());
        e.workload = Some(person.clone());
        e.resource = Some(a.resource.clone());
        e.scopes = Some(a.scopes.clone());
        let mut tx = self.store.begin().await?;
        tx.conn().append_audit(&[e]).await?;
        if !allow {
            tx.conn().close_authorization(&a.id, now).await?;
            tx.commit().await?;
            return Ok(self.to_client(
                &a.redirect_uri,
                a.client_state.as_deref(),
                "access_denied",
                "consent refused",
            ));
        }
        tx.conn()
            .remember_consent(&a.tenant_id, &a.client_id, &person, &a.resource, &a.scopes, now)
            .await?;
        tx.commit().await?;
        self.issue_code(&a).await
    }

    /// Issues the single-use code and answers the client (RFC 9207 `iss`).
    async fn issue_code(&self, a: &Authorization) -> Result<String, Refusal> {
        let code = random_token("mfy_ac_");
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if !tx
            .conn()
            .issue_code(&a.id, &digest(&code), now + TimeDelta::seconds(CODE_SECONDS))
            .await?
        {
            return Err(page(
                400,
                "Sign-in expired",
                "This sign-in has been used. Start again from your application.",
            ));
        }
        tx.commit().await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &a.client_state {
            params.push(("state", s.as_str()));
        }
        params.push(("iss", self.issuer.url.as_str()));
        Ok(redirect::with_params(&a.redirect_uri, &params))
    }
}
