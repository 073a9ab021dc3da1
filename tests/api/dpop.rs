//! Sender-constrained tokens at the token endpoint (RFC 9449): a valid proof
//! binds the token, its lease and its introspection to the proof's key; a
//! bad proof, a replayed one (on another replica too), a missing or stale
//! nonce, and a bound client without a proof each get the RFC's error and
//! mint nothing.

use mayfly::clock::Clock;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::federation;
use crate::harness::{Backend, Database, TestApp, claims, fixture, spawn_app};
use crate::kit::{ACCESS_TOKEN, EXCHANGE, JWT_BEARER};
use crate::oidc::{self, FakeIssuer, Signer, sign_with};
use crate::on_both_backends;

/// A client's DPoP key.
pub(crate) struct Holder {
    key: Signer,
    alg: &'static str,
}

impl Holder {
    pub(crate) fn ec() -> Self {
        Holder {
            key: oidc::ec_signer(),
            alg: "ES256",
        }
    }

    fn rsa() -> Self {
        Holder {
            key: oidc::rsa_signer(),
            alg: "RS256",
        }
    }

    fn jwk(&self) -> Value {
        let mut jwk = self.key.jwk("k");
        for member in ["kid", "use", "alg"] {
            jwk.as_object_mut().unwrap().remove(member);
        }
        jwk
    }

    pub(crate) fn jkt(&self) -> String {
        mayfly::jose::thumbprint(&self.jwk()).unwrap()
    }

    /// A proof with these claims (over the defaults) and header members.
    fn proof_with(&self, claims: Value, header: Value) -> String {
        let mut h = json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk()});
        for (k, v) in header.as_object().unwrap() {
            h[k] = v.clone();
        }
        sign_with(&self.key, &h, &claims)
    }

    pub(crate) fn proof(&self, app: &TestApp, extra: Value) -> String {
        let mut c = json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": "POST",
                           "htu": app.url("/oauth2/token"), "iat": app.clock.now().timestamp()});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        self.proof_with(c, json!({}))
    }
}

/// POSTs to the token endpoint with client_secret_basic and these DPoP headers.
async fn token(
    app: &TestApp,
    client: &(String, String),
    form: &[(&str, &str)],
    proofs: &[&str],
) -> (StatusCode, Value, HeaderMap) {
    let mut req = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth(&client.0, Some(&client.1))
        .form(form);
    for p in proofs {
        req = req.header("DPoP", *p);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, res.json().await.unwrap(), headers)
}

/// PATCHes the fixture's CI client.
async fn patch_ci(app: &TestApp, f: &crate::harness::Fixture, body: Value) -> Value {
    let path = format!("/v1/tenants/acme/clients/{}", f.ci.0);
    let (s, out) = app.patch(&f.admin, &path, body).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    out
}

async fn lease_count(app: &TestApp, admin: &str) -> usize {
    let (s, b) = app.get(admin, "/v1/tenants/acme/leases?limit=500").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().len()
}

on_both_backends!(
    a_valid_proof_binds_the_token_its_lease_and_its_introspection_to_the_key,
    each_bad_proof_is_refused_with_invalid_dpop_proof_and_mints_nothing,
    a_client_registered_for_bound_tokens_gets_nothing_without_a_proof,
    an_exchanged_token_binds_to_the_proof_and_a_bound_subject_needs_its_own_key,
    a_ci_jobs_oidc_token_through_jwt_bearer_is_bound_by_its_proof_too,
    a_private_key_jwt_client_registered_for_bound_tokens_gets_one_with_its_proof,
);

async fn a_valid_proof_binds_the_token_its_lease_and_its_introspection_to_the_key(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", &f.resource)];
    for holder in [Holder::ec(), Holder::rsa()] {
        let (s, body, _) = token(&app, &f.ci, &form, &[&holder.proof(&app, json!({}))]).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "DPoP", "{body}");
        let token = body["access_token"].as_str().unwrap();
        let c = claims(token);
        assert_eq!(c["cnf"], json!({"jkt": holder.jkt()}));
        let (s, lease) = app
            .get(
                &f.admin,
                &format!("/v1/tenants/acme/leases/{}", c["jti"].as_str().unwrap()),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{lease}");
        assert_eq!(lease["jkt"], json!(holder.jkt()));
        let seen = app.introspect((&f.rs.0, &f.rs.1), token).await;
        assert_eq!(seen["active"], true, "{seen}");
        assert_eq!(seen["token_type"], "DPoP");
        assert_eq!(seen["cnf"], json!({"jkt": holder.jkt()}));
    }
    // Without a proof the same client gets a bearer token, and says so.
    let (s, body, _) = token(&app, &f.ci, &form, &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    assert!(claims(token).get("cnf").is_none());
    let seen = app.introspect((&f.rs.0, &f.rs.1), token).await;
    assert_eq!((seen["token_type"].as_str(), seen.get("cnf")), (Some("Bearer"), None));
    // The admin API checks no proofs, so no bound token is minted for it.
    let admin_form = [
        ("grant_type", "client_credentials"),
        ("resource", app.issuer.as_str()),
        ("scope", "mayfly:admin"),
    ];
    let root = ("mayfly-admin".to_string(), crate::harness::ADMIN_SECRET.to_string());
    let (s, body, _) = crate::dpop::token(&app, &root, &admin_form, &[&Holder::ec().proof(&app, json!({}))]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_dpop_proof");
    // Discovery names the proof algorithms.
    let meta: Value = app.public("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["ES256", "EdDSA", "RS256"])
    );
}

async fn each_bad_proof_is_refused_with_invalid_dpop_proof_and_mints_nothing(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", &f.resource)];
    let holder = Holder::ec();
    let now = app.clock.now().timestamp();
    let url = app.url("/oauth2/token");
    let port = url.rsplit(':').next().unwrap().to_string();
    let before = lease_count(&app, &f.admin).await;
    let other = Holder::ec();
    let mut private = holder.jwk();
    private["d"] = json!("AAAA");
    let mut cases: Vec<(&str, Vec<String>)> = vec![
        ("wrong htm", vec![holder.proof(&app, json!({"htm": "GET"}))]),
        (
            "trailing slash",
            vec![holder.proof(&app, json!({"htu": format!("{url}/")}))],
        ),
        (
            "another spelling of the host",
            vec![holder.proof(&app, json!({"htu": url.replace("127.0.0.1", "localhost")}))],
        ),
        (
            "through a proxy prefix",
            vec![holder.proof(
                &app,
                json!({"htu": url.replace("/oauth2/token", "/mayfly/oauth2/token")}),
            )],
        ),
        (
            "another port",
            vec![holder.proof(&app, json!({"htu": url.replace(&port, "1/oauth2/token")}))],
        ),
        ("iat too old", vec![holder.proof(&app, json!({"iat": now - 61}))]),
        ("iat in the future", vec![holder.proof(&app, json!({"iat": now + 30}))]),
        ("no jti", vec![holder.proof(&app, json!({"jti": ""}))]),
        (
            "signed by another key than its jwk",
            vec![other.proof_with(claims(&holder.proof(&app, json!({}))), json!({"jwk": holder.jwk()}))],
        ),
        (
            "a private key in jwk",
            vec![holder.proof_with(claims(&holder.proof(&app, json!({}))), json!({"jwk": private}))],
        ),
        (
            "alg none",
            vec![holder.proof_with(claims(&holder.proof(&app, json!({}))), json!({"alg": "none"}))],
        ),
        (
            "alg HS256",
            vec![holder.proof_with(claims(&holder.proof(&app, json!({}))), json!({"alg": "HS256"}))],
        ),
        (
            "typ JWT",
            vec![holder.proof_with(claims(&holder.proof(&app, json!({}))), json!({"typ": "JWT"}))],
        ),
        ("not a JWT", vec!["not-a-jwt".into()]),
        (
            "two DPoP headers",
            vec![holder.proof(&app, json!({})), holder.proof(&app, json!({}))],
        ),
    ];
    // A proof used once is spent.
    let spent = holder.proof(&app, json!({}));
    let (s, body, _) = token(&app, &f.ci, &form, &[&spent]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    cases.push(("a replayed jti", vec![spent]));
    for (case, proofs) in &cases {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let (s, body, _) = token(&app, &f.ci, &form, &proofs).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{case}: {body}");
    }
    assert_eq!(
        lease_count(&app, &f.admin).await,
        before + 1,
        "only the good proof minted"
    );
}

async fn a_client_registered_for_bound_tokens_gets_nothing_without_a_proof(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let body = patch_ci(&app, &f, json!({"dpop_bound_access_tokens": true})).await;
    assert_eq!(body["dpop_bound_access_tokens"], true);
    let form = [("grant_type", "client_credentials"), ("resource", &f.resource)];
    let before = lease_count(&app, &f.admin).await;
    let (s, body, _) = token(&app, &f.ci, &form, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert_eq!(lease_count(&app, &f.admin).await, before);
    let (s, events) = app
        .get(&f.admin, "/v1/tenants/acme/audit?action=token.denied&limit=10")
        .await;
    assert_eq!(s, StatusCode::OK);
    let denied = events["items"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{events}");
    assert_eq!(denied[0]["client_id"], json!(f.ci.0));
    assert!(
        denied[0]["reason"].as_str().unwrap().starts_with("invalid_dpop_proof:"),
        "{events}"
    );
    // With a proof it is served, bound.
    let holder = Holder::ec();
    let (s, body, _) = token(&app, &f.ci, &form, &[&holder.proof(&app, json!({}))]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        json!(holder.jkt())
    );
}

async fn an_exchanged_token_binds_to_the_proof_and_a_bound_subject_needs_its_own_key(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    patch_ci(&app, &f, json!({"delegates": [f.agent.0]})).await;
    let holder = Holder::ec();
    let form = [("grant_type", "client_credentials"), ("resource", &f.resource)];
    let (s, body, _) = token(&app, &f.ci, &form, &[&holder.proof(&app, json!({}))]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let subject = body["access_token"].as_str().unwrap().to_string();
    let exchange = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
        ("resource", f.resource.as_str()),
    ];
    let before = lease_count(&app, &f.admin).await;
    let stranger = Holder::ec();
    for (case, proofs) in [
        ("no proof", vec![]),
        ("another key", vec![stranger.proof(&app, json!({}))]),
    ] {
        let proofs: Vec<&str> = proofs.iter().map(String::as_str).collect();
        let (s, body, _) = token(&app, &f.agent, &exchange, &proofs).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{case}: {body}");
    }
    assert_eq!(lease_count(&app, &f.admin).await, before);
    let (s, body, _) = token(&app, &f.agent, &exchange, &[&holder.proof(&app, json!({}))]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let exchanged = body["access_token"].as_str().unwrap();
    let c = claims(exchanged);
    assert_eq!(c["cnf"], json!({"jkt": holder.jkt()}));
    assert_eq!(c["act"]["client_id"], json!(f.agent.0));
    let seen = app.introspect((&f.rs.0, &f.rs.1), exchanged).await;
    assert_eq!(seen["cnf"], json!({"jkt": holder.jkt()}), "{seen}");
    assert_eq!(seen["token_type"], "DPoP");
}

async fn a_ci_jobs_oidc_token_through_jwt_bearer_is_bound_by_its_proof_too(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    federation::policy(&app, &f, federation::github_policy(&idp, &app, &f)).await;
    let holder = Holder::ec();
    let assertion = idp.token("rsa-1", oidc::github(&app.issuer, "acme/app", "refs/heads/main"));
    let res = app
        .http
        .post(app.url("/oauth2/token"))
        .header("DPoP", holder.proof(&app, json!({})))
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion.as_str()),
            ("resource", f.resource.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["cnf"], json!({"jkt": holder.jkt()}));
    assert_eq!(c["sub"], "github:acme/app@refs/heads/main");
}

async fn a_private_key_jwt_client_registered_for_bound_tokens_gets_one_with_its_proof(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let signer = oidc::ec_signer();
    let body = app
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-keyed", "kind": "agent", "workflows": ["triage"],
                   "grants": [{"resource": f.resource, "scopes": ["issues:read"]}],
                   "jwks": {"keys": [FakeIssuer::jwk_of(&signer, "ec-key")]}, "dpop_bound_access_tokens": true}),
        )
        .await;
    assert_eq!(body["dpop_bound_access_tokens"], true);
    let holder = Holder::ec();
    let mint = |jti: &'static str, proof: Option<String>| {
        let t = app.clock.now().timestamp();
        let assertion = sign_with(
            &signer,
            &json!({"alg": "ES256", "kid": "ec-key"}),
            &json!({"iss": "acme-keyed", "sub": "acme-keyed", "aud": app.issuer, "iat": t, "exp": t + 60, "jti": jti}),
        );
        let mut req = app.http.post(app.url("/oauth2/token")).form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("resource", f.resource.as_str()),
        ]);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (s, body) = mint("a-1", None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_dpop_proof")),
        "{body}"
    );
    let (s, body) = mint("a-2", Some(holder.proof(&app, json!({})))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        json!(holder.jkt())
    );
}

/// Nonces required: a proof without one, or with one past its lifetime,
/// is answered `use_dpop_nonce` with a fresh nonce, which then works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nonces_required_a_proof_needs_a_fresh_server_nonce() {
    let app = TestApp::on(Backend::Sqlite)
        .config(|c| mayfly::Config {
            dpop_nonce: mayfly::config::DpopNonce::Required,
            ..c
        })
        .start()
        .await;
    let f = fixture(&app, "acme").await;
    let form = [("grant_type", "client_credentials"), ("resource", &f.resource)];
    let holder = Holder::ec();
    let (s, body, headers) = token(&app, &f.ci, &form, &[&holder.proof(&app, json!({}))]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "use_dpop_nonce");
    let nonce = headers["dpop-nonce"].to_str().unwrap().to_string();
    let (s, body, headers) = token(&app, &f.ci, &form, &[&holder.proof(&app, json!({"nonce": nonce}))]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        headers.contains_key("dpop-nonce"),
        "the next nonce comes with the token"
    );
    for (case, nonce) in [
        ("forged", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string()),
        ("stale", nonce),
    ] {
        app.advance(if case == "stale" { 301 } else { 0 });
        let (s, body, headers) = token(&app, &f.ci, &form, &[&holder.proof(&app, json!({"nonce": nonce}))]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert_eq!(body["error"], "use_dpop_nonce", "{case}");
        assert!(headers.contains_key("dpop-nonce"), "{case}");
    }
    // Without a proof there is nothing to bind: nonces concern proofs only.
    let (s, body, _) = token(&app, &f.ci, &form, &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// A proof spent at one replica is refused at another: the `jti` is spent
/// in the database both share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_to_another_replica_is_refused() {
    let db = Database::fresh(Backend::Postgres).await;
    let (a, b) = crate::kit::replicas(&db).await;
    let f = fixture(&a, "acme").await;
    let holder = Holder::ec();
    let now = a.clock.now().timestamp();
    let proof = holder.proof_with(
        json!({"jti": "once", "htm": "POST", "htu": "http://mayfly.test/oauth2/token", "iat": now}),
        json!({}),
    );
    let form = [("grant_type", "client_credentials"), ("resource", &f.resource)];
    let (s, body, _) = token(&a, &f.ci, &form, &[&proof]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    b.advance(now - b.clock.now().timestamp());
    let (s, body, _) = token(&b, &f.ci, &form, &[&proof]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert!(
        body["error_description"].as_str().unwrap().contains("replayed"),
        "{body}"
    );
}
