//! People at the keyboard: an MCP client (named by its metadata document)
//! sends a person through `/oauth2/authorize`, the tenant's IdP (our own,
//! on loopback) signs them in, they agree on the consent page, and the
//! client redeems the code for a lease in the person's name and a rotating
//! refresh token. Driven here as a browser would, one redirect at a time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, claims, fixture, spawn_app};
use crate::idp::{IDP_CLIENT, IDP_SECRET, TestIdp};
use crate::on_both_backends;

on_both_backends!(
    a_person_signs_in_through_the_company_idp_and_their_client_gets_a_lease_in_their_name,
    a_refresh_token_rotates_and_its_reuse_revokes_the_whole_session,
    revoking_the_person_ends_their_access_and_refresh_tokens_and_no_one_elses,
    a_registered_client_signs_people_in_only_where_the_login_provider_allows_it,
);

pub const REDIRECT: &str = "http://127.0.0.1/callback";

/// The app, its tenant `acme` with a login provider, and the IdP.
pub struct People {
    pub app: TestApp,
    pub f: Fixture,
    pub idp: TestIdp,
    pub client: String,
}

pub async fn setup(b: Backend) -> People {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = TestIdp::start().await;
    let (s, body) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/login-providers",
            json!({"name": "okta", "issuer": idp.url, "client_id": IDP_CLIENT, "client_secret": IDP_SECRET,
                   "scopes": ["email", "profile"], "claims": {"groups": "engineering"},
                   "grants": [{"resource": f.resource, "scopes": ["issues:read", "issues:write"]}],
                   "max_ttl_seconds": 600, "refresh_ttl_seconds": 3600}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["has_client_secret"], true);
    assert!(!body.to_string().contains(IDP_SECRET), "the secret is never shown");
    let client = idp.client_document("vscode", &[REDIRECT]);
    People { app, f, idp, client }
}

/// A browser: follows nothing by itself, keeps mayfly's cookie.
pub struct Browser {
    http: reqwest::Client,
    cookie: Option<String>,
}

pub fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes().repeat(2));
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

pub fn location(res: &reqwest::Response) -> reqwest::Url {
    let l = res.headers().get("location").expect("a redirect").to_str().unwrap();
    reqwest::Url::parse(l).unwrap()
}

pub fn param(url: &reqwest::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.to_string())
}

impl Browser {
    pub fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { http, cookie: None }
    }

    pub async fn get(&mut self, url: &str) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        if let Some(set) = res.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax"), "{set}");
            self.cookie = Some(set.split(';').next().unwrap().to_string());
        }
        res
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(url).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }
}

/// `/oauth2/authorize` with these parameters.
pub fn authorize_url(app: &TestApp, params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(&app.url("/oauth2/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.to_string()
}

impl People {
    /// The usual request: code, S256, the fixture's resource, both scopes.
    pub fn request<'a>(&'a self, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("response_type", "code"),
            ("client_id", self.client.as_str()),
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("resource", self.f.resource.as_str()),
            ("scope", "issues:read issues:write"),
            ("state", "xyz"),
        ]
    }

    /// Through the IdP and back to mayfly's callback: the callback's answer.
    pub async fn through_idp(&self, browser: &mut Browser, params: &[(&str, &str)]) -> reqwest::Response {
        let res = browser.get(&authorize_url(&self.app, params)).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{}", res.text().await.unwrap());
        let idp = location(&res);
        assert!(idp.as_str().starts_with(&self.idp.url), "{idp}");
        assert_eq!(param(&idp, "code_challenge_method").as_deref(), Some("S256"));
        assert!(param(&idp, "nonce").is_some());
        let back = browser.get(idp.as_str()).await;
        assert_eq!(back.status(), StatusCode::FOUND);
        browser.get(location(&back).as_str()).await
    }

    /// A whole sign-in with consent given: the client's redirect.
    pub async fn sign_in(&self, challenge: &str) -> reqwest::Url {
        let mut browser = Browser::new();
        let res = self.through_idp(&mut browser, &self.request(challenge)).await;
        let res = if res.status() == StatusCode::OK {
            let page = res.text().await.unwrap();
            let request = consent_request(&page);
            browser
                .post_form(
                    &self.app.url("/oauth2/consent"),
                    &[("request", &request), ("decision", "allow")],
                )
                .await
        } else {
            res
        };
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        location(&res)
    }

    /// Redeems a code at the token endpoint.
    pub async fn redeem(&self, code: &str, verifier: &str) -> reqwest::Response {
        self.app
            .token_post(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", self.client.as_str()),
                ("redirect_uri", "http://127.0.0.1:53682/callback"),
                ("code_verifier", verifier),
            ])
            .await
    }

    pub async fn refresh(&self, token: &str) -> reqwest::Response {
        self.app
            .token_post(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", self.client.as_str()),
            ])
            .await
    }

    /// Sign-in, consent and redemption: the token answer.
    pub async fn tokens(&self) -> Value {
        let (verifier, challenge) = pkce();
        let back = self.sign_in(&challenge).await;
        let res = self.redeem(&param(&back, "code").unwrap(), &verifier).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// The tenant's audit events with this action.
    pub async fn events(&self, action: &str) -> Vec<Value> {
        let (s, body) = self
            .app
            .get(&self.f.admin, &format!("/v1/tenants/acme/audit?action={action}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    pub async fn active(&self, token: &str) -> bool {
        let rs = (self.f.rs.0.as_str(), self.f.rs.1.as_str());
        self.app.introspect(rs, token).await["active"] == true
    }
}

/// Whether one of these audit events gives a reason containing `text`.
pub fn has_reason(events: &[Value], text: &str) -> bool {
    events
        .iter()
        .any(|e| e["reason"].as_str().is_some_and(|r| r.contains(text)))
}

/// The hidden request id of a consent page.
pub fn consent_request(page: &str) -> String {
    let at = page.find("name=\"request\" value=\"").expect("a consent form") + 22;
    page[at..].split('"').next().unwrap().to_string()
}

async fn a_person_signs_in_through_the_company_idp_and_their_client_gets_a_lease_in_their_name(b: Backend) {
    let p = setup(b).await;
    let meta: Value = p.app.public("/.well-known/oauth-authorization-server").await;
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    for grant in ["authorization_code", "refresh_token"] {
        assert!(
            meta["grant_types_supported"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g == grant),
            "{meta}"
        );
    }
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new();
    let res = p.through_idp(&mut browser, &p.request(&challenge)).await;
    assert_eq!(res.status(), StatusCode::OK, "the consent page");
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    let page = res.text().await.unwrap();
    for shown in [
        "vscode (test IDE)",
        &p.client,
        "person:alice@acme.test",
        &p.f.resource,
        "issues:write",
    ] {
        assert!(page.contains(shown), "the consent page names {shown}: {page}");
    }
    assert!(!page.contains("<script"), "no script");
    let request = consent_request(&page);
    // Another browser (no cookie) cannot answer it.
    let stranger = Browser::new()
        .post_form(
            &p.app.url("/oauth2/consent"),
            &[("request", &request), ("decision", "allow")],
        )
        .await;
    assert_eq!(stranger.status(), StatusCode::BAD_REQUEST);
    let res = browser
        .post_form(
            &p.app.url("/oauth2/consent"),
            &[("request", &request), ("decision", "allow")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = location(&res);
    assert!(back.as_str().starts_with("http://127.0.0.1:53682/callback?"), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("xyz"));
    assert_eq!(param(&back, "iss").as_deref(), Some(p.app.issuer.as_str()), "RFC 9207");
    let code = param(&back, "code").unwrap();
    assert!(code.starts_with("mfy_ac_"));

    let res = p.redeem(&code, &verifier).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "issues:read issues:write");
    assert!(t["refresh_token"].as_str().unwrap().starts_with("mfy_rt_"));
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "person:alice@acme.test");
    assert_eq!(c["client_id"], p.client.as_str());
    assert_eq!(c["workflow"], "interactive");
    assert_eq!(c["aud"], p.f.resource.as_str());
    assert!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 600,
        "the provider's max TTL"
    );
    assert!(p.active(t["access_token"].as_str().unwrap()).await);

    // The lease and the audit trail name the person and the client.
    let (s, lease) = p
        .app
        .get(
            &p.f.admin,
            &format!("/v1/tenants/acme/leases/{}", c["jti"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{lease}");
    assert_eq!(lease["workload"], "person:alice@acme.test");
    assert_eq!(lease["client_id"], p.client.as_str());
    for action in ["login.succeeded", "consent.granted", "token.issued"] {
        let events = p.events(action).await;
        assert!(
            events
                .iter()
                .any(|e| e["workload"] == "person:alice@acme.test" && e["client_id"] == p.client.as_str()),
            "{action}: {events:?}"
        );
    }
    let (s, sessions) = p.app.get(&p.f.admin, "/v1/tenants/acme/sessions?active=true").await;
    assert_eq!(s, StatusCode::OK, "{sessions}");
    let session = &sessions["items"][0];
    assert_eq!(session["workload"], "person:alice@acme.test");
    assert_eq!(session["root_lease_id"], c["jti"]);
    assert_eq!(session["identity"]["email"], "alice@acme.test");

    // A loopback redirect may be named by any local program: consent is asked again.
    let (_, challenge) = pkce();
    let res = p.through_idp(&mut Browser::new(), &p.request(&challenge)).await;
    assert_eq!(res.status(), StatusCode::OK, "consent again for a loopback redirect");
    // For an https redirect it is remembered: the second sign-in goes straight back.
    let web = p.idp.client_document("webide", &["https://ide.example/cb"]);
    let mut params = p.request(&challenge);
    params.retain(|(k, _)| *k != "client_id" && *k != "redirect_uri");
    params.extend([("client_id", web.as_str()), ("redirect_uri", "https://ide.example/cb")]);
    let mut browser = Browser::new();
    let res = p.through_idp(&mut browser, &params).await;
    let request = consent_request(&res.text().await.unwrap());
    let res = browser
        .post_form(
            &p.app.url("/oauth2/consent"),
            &[("request", &request), ("decision", "allow")],
        )
        .await;
    assert!(location(&res).as_str().starts_with("https://ide.example/cb?code="));
    let res = p.through_idp(&mut Browser::new(), &params).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "no second consent page");
    assert!(param(&location(&res), "code").is_some());
}

async fn a_refresh_token_rotates_and_its_reuse_revokes_the_whole_session(b: Backend) {
    let p = setup(b).await;
    let first = p.tokens().await;
    let rt1 = first["refresh_token"].as_str().unwrap();
    let res = p.refresh(rt1).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2, "rotated");
    let c2 = claims(second["access_token"].as_str().unwrap());
    assert_eq!(c2["sub"], "person:alice@acme.test");
    assert!(p.active(second["access_token"].as_str().unwrap()).await);
    // Narrowing is allowed, widening is not.
    let narrowed = p
        .app
        .token_post(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt2),
            ("client_id", p.client.as_str()),
            ("scope", "issues:admin"),
        ])
        .await;
    assert_eq!(narrowed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(narrowed.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // Another client cannot use it, and does not burn it.
    let foreign = p
        .app
        .token_post(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt2),
            ("client_id", "https://evil.test/client"),
        ])
        .await;
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);

    // The spent one again: the whole family ends.
    let reuse = p.refresh(rt1).await;
    assert_eq!(reuse.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reuse.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(
        p.refresh(rt2).await.status(),
        StatusCode::BAD_REQUEST,
        "the successor is dead too"
    );
    assert!(
        !p.active(second["access_token"].as_str().unwrap()).await,
        "and its access tokens"
    );
    assert!(!p.active(first["access_token"].as_str().unwrap()).await);
    let revoked = p.events("session.revoked").await;
    assert!(has_reason(&revoked, "reused"), "{revoked:?}");
    let (_, sessions) = p.app.get(&p.f.admin, "/v1/tenants/acme/sessions").await;
    assert!(sessions["items"][0]["revoked_at"].is_string(), "{sessions}");
}

async fn revoking_the_person_ends_their_access_and_refresh_tokens_and_no_one_elses(b: Backend) {
    let p = setup(b).await;
    let alice = p.tokens().await;
    p.idp.sign_in_as(
        json!({"sub": "00u2bob", "email": "bob@acme.test", "email_verified": true, "groups": "engineering"}),
    );
    let bob = p.tokens().await;
    assert_eq!(
        claims(bob["access_token"].as_str().unwrap())["sub"],
        "person:bob@acme.test"
    );
    let (s, body) = p
        .app
        .post(
            &p.f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workload": "person:alice@acme.test", "reason": "laptop lost"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert!(!p.active(alice["access_token"].as_str().unwrap()).await);
    assert_eq!(
        p.refresh(alice["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Bob goes on.
    assert!(p.active(bob["access_token"].as_str().unwrap()).await);
    let res = p.refresh(bob["refresh_token"].as_str().unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let bob2: Value = res.json().await.unwrap();

    // An admin ends Bob's session in one call: its refresh token and live access tokens end.
    let (_, sessions) = p
        .app
        .get(&p.f.admin, "/v1/tenants/acme/sessions?workload=person:bob@acme.test")
        .await;
    let id = sessions["items"][0]["id"].as_str().unwrap().to_string();
    let (s, body) = p
        .app
        .delete(&p.f.admin, &format!("/v1/tenants/acme/sessions/{id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body["revoked_at"].is_string());
    assert!(!p.active(bob2["access_token"].as_str().unwrap()).await);
    assert_eq!(
        p.refresh(bob2["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
    // The feed carries a rule per live lease, so offline verifiers see it too.
    let (_, feed) = p.app.get(&p.f.admin, "/v1/revocations").await;
    let jti = claims(bob2["access_token"].as_str().unwrap())["jti"].clone();
    assert!(feed.to_string().contains(jti.as_str().unwrap()), "{feed}");
}

async fn a_registered_client_signs_people_in_only_where_the_login_provider_allows_it(b: Backend) {
    let mut p = setup(b).await;
    let register = |body: Value| {
        let (http, url) = (p.app.http.clone(), p.app.url("/oauth2/register"));
        async move {
            let res = http.post(url).json(&body).send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    for (body, code) in [
        (
            json!({"redirect_uris": ["http://evil.test/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["javascript:alert(1)"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
    ] {
        let (s, answer) = register(body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["error"], code, "{body}: {answer}");
    }
    let (s, registered) = register(json!({"redirect_uris": [REDIRECT], "client_name": "Claude Desktop",
                                          "software_id": "ignored", "scope": "issues:read"}))
    .await;
    assert_eq!(s, StatusCode::CREATED, "{registered}");
    assert_eq!(registered["token_endpoint_auth_method"], "none");
    assert!(registered.get("client_secret").is_none());
    p.client = registered["client_id"].as_str().unwrap().to_string();
    assert!(p.client.starts_with("mfy_dcr_"));

    // The provider does not allow registered clients yet: a page, no redirect.
    let (_, challenge) = pkce();
    let res = Browser::new().get(&authorize_url(&p.app, &p.request(&challenge))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("access_denied"));
    let (_, list) = p.app.get(&p.f.admin, "/v1/tenants/acme/login-providers").await;
    let provider = &list["items"][0];
    let (s, body) = p
        .app
        .patch(
            &p.f.admin,
            &format!("/v1/tenants/acme/login-providers/{}", provider["id"].as_str().unwrap()),
            json!({"name": "okta", "issuer": p.idp.url, "client_id": IDP_CLIENT, "claims": {"groups": "engineering"},
                        "grants": [{"resource": p.f.resource, "scopes": ["issues:read", "issues:write"]}],
                        "allow_registration": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["has_client_secret"], true, "a PATCH without the secret keeps it");
    let t = p.tokens().await;
    let c = claims(t["access_token"].as_str().unwrap());
    assert_eq!(c["client_id"], p.client.as_str());
    assert_eq!(c["sub"], "person:alice@acme.test");
    let events = p.events("client.registered").await;
    assert!(events.is_empty(), "registration is no tenant's event");
}
