//! What changing or deleting a client does to the tokens it already holds,
//! as a resource server sees them through introspection.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Fixture, TestApp, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    removing_a_workflow_from_a_client_ends_its_tokens,
    deleting_a_client_ends_its_tokens_and_its_secret,
);

/// A CI client `acme-multi` of two workflows; returns its secret.
async fn multi(app: &TestApp, f: &Fixture) -> String {
    let body = app
        .created(
            &f.admin,
            "/v1/tenants/acme/clients",
            json!({"client_id": "acme-multi", "kind": "ci", "workflows": ["release", "nightly"],
                   "grants": [{"resource": f.resource, "scopes": ["issues:read"]}]}),
        )
        .await;
    body["client_secret"].as_str().unwrap().to_string()
}

fn form<'a>(f: &'a Fixture, workflow: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("grant_type", "client_credentials"),
        ("resource", f.resource.as_str()),
        ("workflow", workflow),
    ]
}

async fn active(app: &TestApp, f: &Fixture, token: &str) -> bool {
    app.introspect((&f.rs.0, &f.rs.1), token).await["active"] == true
}

async fn removing_a_workflow_from_a_client_ends_its_tokens(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let secret = multi(&app, &f).await;
    let nightly = app.mint("acme-multi", &secret, &form(&f, "nightly")).await;
    let release = app.mint("acme-multi", &secret, &form(&f, "release")).await;
    let control = app.mint(&f.ci.0, &f.ci.1, &form(&f, "release")).await;
    assert!(active(&app, &f, &nightly).await && active(&app, &f, &release).await);

    let (s, body) = app
        .patch(
            &f.admin,
            "/v1/tenants/acme/clients/acme-multi",
            json!({"workflows": ["release"]}),
        )
        .await;
    assert_eq!(
        (s, body["workflows"].clone()),
        (StatusCode::OK, json!(["release"])),
        "{body}"
    );
    assert!(!active(&app, &f, &nightly).await, "the removed workflow's token ended");
    // The rule is the client's (as for any narrowing): its other tokens end too.
    assert!(!active(&app, &f, &release).await);
    assert!(active(&app, &f, &control).await, "another client's token is untouched");
    let (_, events) = app.get(&f.admin, "/v1/tenants/acme/audit?action=client.updated").await;
    let reason = events["items"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("workflow removed: its tokens are revoked"),
        "{events}"
    );

    // From now on: the kept workflow mints, the removed one is refused.
    let again = app.mint("acme-multi", &secret, &form(&f, "release")).await;
    assert!(active(&app, &f, &again).await);
    let res = app.token_basic("acme-multi", &secret, &form(&f, "nightly")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "unauthorized_client");
}

async fn deleting_a_client_ends_its_tokens_and_its_secret(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    let secret = multi(&app, &f).await;
    let held = app.mint("acme-multi", &secret, &form(&f, "nightly")).await;
    let control = app.mint(&f.ci.0, &f.ci.1, &form(&f, "release")).await;
    assert!(active(&app, &f, &held).await);

    let (s, _) = app.delete(&f.admin, "/v1/tenants/acme/clients/acme-multi").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(
        !active(&app, &f, &held).await,
        "a deleted client's token is dead at once"
    );
    assert!(active(&app, &f, &control).await);
    let res = app.token_basic("acme-multi", &secret, &form(&f, "nightly")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (s, _) = app.get(&f.admin, "/v1/tenants/acme/clients/acme-multi").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
