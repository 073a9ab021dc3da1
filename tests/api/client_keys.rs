//! What a client may register (security review, finding 9): only the
//! public members of its keys are stored, and a tenant holds a bounded
//! number of clients.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, fixture, spawn_app};
use crate::oidc::{self, FakeIssuer, now, sign_with};
use crate::on_both_backends;

async fn tenant(app: &TestApp, admin: &str, id: &str) {
    let (s, b) = app.post(admin, "/v1/tenants", json!({"id": id})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

on_both_backends!(
    a_clients_keys_are_stored_as_their_public_members_only_and_private_ones_are_refused,
    a_tenant_holds_at_most_max_clients_per_tenant_and_a_refusal_changes_nothing,
);

/// Finding 9: a client's `jwks` was stored raw, junk and all, and every
/// replica's catalog held it. Only the public members a verifier reads are
/// kept (the answer and a later GET show exactly that), and the keys still
/// authenticate; private members and oversized or malformed keys are refused
/// with 422 and change nothing.
async fn a_clients_keys_are_stored_as_their_public_members_only_and_private_ones_are_refused(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let idp = FakeIssuer::start().await;
    let signer = oidc::ec_signer();
    let (ec, rsa) = (FakeIssuer::jwk_of(&signer, "ec-key"), idp.public_jwk("rsa-1"));
    let junk = "j".repeat(10_000);
    let with_junk = |k: &Value| {
        let mut k = k.clone();
        k["x5c"] = json!([junk]);
        k["note"] = json!(junk);
        k["key_ops"] = json!(["verify"]);
        k
    };
    let mut ec_junk = with_junk(&ec);
    ec_junk["n"] = json!("an-rsa-member-on-an-ec-key");
    let path = "/v1/tenants/acme/clients";
    let body = |id: &str, jwks: Value| {
        json!({"client_id": id, "kind": "agent", "workflows": ["triage"],
               "grants": [{"resource": f.resource, "scopes": ["issues:read"]}], "jwks": jwks})
    };
    let created = app
        .created(
            &f.admin,
            path,
            body("acme-keyed", json!({"keys": [ec_junk, with_junk(&rsa)], "junk": junk})),
        )
        .await;
    let stored = json!({"keys": [ec, rsa]});
    // (Compared without printing: a failure would dump the junk.)
    let members = |jwks: &Value| -> Vec<Vec<String>> {
        let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
        keys.iter()
            .map(|k| k.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default())
            .collect()
    };
    assert!(created["jwks"] == stored, "kept {:?}", members(&created["jwks"]));
    let one = format!("{path}/acme-keyed");
    let read_back = app.get(&f.admin, &one).await.1["jwks"].clone();
    assert!(read_back == stored, "stored {:?}", members(&read_back));
    // What is kept still authenticates (private_key_jwt with the EC key).
    let t = now();
    let assertion = sign_with(
        &signer,
        &json!({"alg": "ES256", "kid": "ec-key"}),
        &json!({"iss": "acme-keyed", "sub": "acme-keyed", "aud": app.issuer, "iat": t, "exp": t + 60, "jti": "j-1"}),
    );
    let type_ = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", type_),
        ("client_assertion", &assertion),
        ("resource", &f.resource),
    ];
    let (s, answer) = app.token_form(&form).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    // A change is reduced the same way.
    let patch = |jwks: Value| app.patch(&f.admin, &one, json!({"jwks": jwks}));
    let (s, changed) = patch(json!({"keys": [with_junk(&ec)]})).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        changed["jwks"] == json!({"keys": [ec]}),
        "kept {:?}",
        members(&changed["jwks"])
    );

    let mut refused = Vec::new();
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        let mut leaky = if member == "k" { ec.clone() } else { rsa.clone() };
        leaky[member] = json!("c2VjcmV0");
        refused.push((json!({"keys": [leaky]}), member));
    }
    let mut long_kid = ec.clone();
    long_kid["kid"] = json!("k".repeat(257));
    let mut short_x = ec.clone();
    short_x["x"] = json!("AAAA");
    let mut number_kid = ec.clone();
    number_kid["kid"] = json!(7);
    let mut enc = ec.clone();
    enc["use"] = json!("enc");
    let eleven: Vec<Value> = (0..11).map(|_| ec.clone()).collect();
    for (jwks, why) in [
        (json!({"keys": [long_kid]}), "kid"),
        (json!({"keys": [short_x]}), "`x`"),
        (json!({"keys": [number_kid]}), "kid"),
        (json!({"keys": [enc]}), "signing key"),
        (json!({"keys": eleven}), "1 to 10"),
        (json!({"keys": []}), "1 to 10"),
        (json!([ec]), "JWK set"),
    ] {
        refused.push((jwks, why));
    }
    for (jwks, why) in refused {
        let (s, err) = app.post(&f.admin, path, body("acme-leaky", jwks.clone())).await;
        assert_eq!(
            (s, &err["error"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("validation_failed"))
        );
        assert!(err["message"].as_str().unwrap().contains(why), "{why}: {err}");
        let (s, err) = patch(jwks).await;
        assert_eq!(
            (s, &err["error"]),
            (StatusCode::UNPROCESSABLE_ENTITY, &json!("validation_failed"))
        );
    }
    assert_eq!(
        app.get(&f.admin, &format!("{path}/acme-leaky")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get(&f.admin, &one).await.1["jwks"], json!({"keys": [ec]}));
}

/// Finding 9: no cap on clients per tenant, each held in every replica's
/// catalog. Past MAYFLY_MAX_CLIENTS_PER_TENANT live clients a creation is a
/// 409 that creates and audits nothing; other tenants count on their own,
/// a deletion makes room, and concurrent creations never overshoot.
async fn a_tenant_holds_at_most_max_clients_per_tenant_and_a_refusal_changes_nothing(b: Backend) {
    let app = TestApp::on(b)
        .config(|c| mayfly::Config {
            max_clients_per_tenant: 4,
            ..c
        })
        .start()
        .await;
    let f = fixture(&app, "acme").await; // three clients
    let create = |tenant: &str, id: &str| {
        let (path, body) = (
            format!("/v1/tenants/{tenant}/clients"),
            json!({"client_id": id, "kind": "ci", "workflows": ["x"]}),
        );
        let (app, admin) = (&app, f.admin.clone());
        async move { app.post(&admin, &path, body).await }
    };
    assert_eq!(create("acme", "acme-fourth").await.0, StatusCode::CREATED);
    let (s, err) = create("acme", "acme-fifth").await;
    assert_eq!((s, &err["error"]), (StatusCode::CONFLICT, &json!("conflict")), "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("MAYFLY_MAX_CLIENTS_PER_TENANT")
    );
    assert_eq!(
        app.get(&f.admin, "/v1/tenants/acme/clients/acme-fifth").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/clients").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?client_id=acme-fifth").await;
    assert_eq!(events["items"], json!([]), "nothing audited as created");

    tenant(&app, &f.admin, "globex").await;
    assert_eq!(create("globex", "globex-first").await.0, StatusCode::CREATED);
    let (s, _) = app.delete(&f.admin, "/v1/tenants/acme/clients/acme-fourth").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // One place left, four racing for it: exactly one gets it.
    let racers = tokio::join!(
        create("acme", "acme-r1"),
        create("acme", "acme-r2"),
        create("acme", "acme-r3"),
        create("acme", "acme-r4")
    );
    let statuses = [racers.0.0, racers.1.0, racers.2.0, racers.3.0];
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::CREATED, StatusCode::CONFLICT].contains(s)),
        "{statuses:?}"
    );
    let (_, list) = app.get(&f.admin, "/v1/tenants/acme/clients").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
}
