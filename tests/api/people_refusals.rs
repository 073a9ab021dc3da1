//! What people's sign-in refuses, each with its audit event: PKCE missing,
//! `plain` or wrong; an unregistered redirect; a replayed code (and what it
//! minted revoked); a metadata document on a private address; an id_token
//! with a wrong nonce, audience or signature; consent refused; and a login
//! provider of one tenant signing no one into another.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::Backend;
use crate::idp::{Fault, IDP_CLIENT};
use crate::on_both_backends;
use crate::people::{Browser, authorize_url, consent_request, has_reason, location, param, pkce, setup};

on_both_backends!(
    pkce_and_the_redirect_rule_are_enforced_and_each_refusal_is_audited,
    a_replayed_code_is_refused_and_what_it_minted_is_revoked,
    an_id_token_with_a_wrong_nonce_audience_or_signature_signs_no_one_in,
    consent_refused_sends_the_client_access_denied_and_no_code,
    client_documents_on_private_addresses_or_naming_another_id_are_refused,
    one_tenants_login_provider_never_signs_anyone_into_another_tenant,
    a_malformed_browser_query_gets_a_page_and_starts_nothing,
);

async fn pkce_and_the_redirect_rule_are_enforced_and_each_refusal_is_audited(b: Backend) {
    let p = setup(b).await;
    let (verifier, challenge) = pkce();
    let with = |drop: &[&str], add: &[(&'static str, &'static str)]| {
        let mut r: Vec<(String, String)> = p
            .request(&challenge)
            .into_iter()
            .filter(|(k, _)| !drop.contains(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r.extend(add.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        r
    };
    let go = |params: Vec<(String, String)>| {
        let url = authorize_url(
            &p.app,
            &params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
        );
        async move { Browser::new().get(&url).await }
    };
    for (params, what) in [
        (
            with(&["code_challenge", "code_challenge_method"], &[]),
            "PKCE is required",
        ),
        (
            with(&["code_challenge_method"], &[("code_challenge_method", "plain")]),
            "must be S256",
        ),
        (
            with(&["response_type"], &[("response_type", "token")]),
            "only response_type=code",
        ),
    ] {
        // Before sign-in a refusal is a page, never a redirect: anyone may be
        // a client with a metadata document (no open redirector).
        let res = go(params).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(res.headers().get("location").is_none());
        let page = res.text().await.unwrap();
        assert!(page.contains(what), "{what}: {page}");
    }
    // An unregistered redirect is never redirected to: a page.
    for bad in [
        "https://evil.test/callback",
        "http://127.0.0.1:53682/other",
        "http://10.0.0.1/callback",
    ] {
        let mut params = with(&["redirect_uri"], &[]);
        params.push(("redirect_uri".into(), bad.into()));
        let res = go(params).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(res.headers().get("location").is_none());
        let page = res.text().await.unwrap();
        assert!(
            page.contains("Unsafe redirect") && !page.contains("evil.test"),
            "{page}"
        );
    }
    let refused = p.events("authorization.refused").await;
    for why in [
        "PKCE is required",
        "code_challenge_method must be S256",
        "redirect_uri is not registered",
    ] {
        assert!(has_reason(&refused, why), "{why}: {refused:?}");
    }

    // A wrong verifier: invalid_grant, audited, and the code is spent.
    let back = p.sign_in(&challenge).await;
    let code = param(&back, "code").unwrap();
    let (wrong, _) = pkce();
    let res = p.redeem(&code, &wrong).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(
        p.redeem(&code, &verifier).await.status(),
        StatusCode::BAD_REQUEST,
        "spent"
    );
    let denied = p.events("token.denied").await;
    assert!(has_reason(&denied, "PKCE verification failed"), "{denied:?}");
    assert!(
        !Value::from(denied).to_string().contains(&code),
        "codes never reach the audit trail"
    );
}

async fn a_replayed_code_is_refused_and_what_it_minted_is_revoked(b: Backend) {
    let p = setup(b).await;
    let (verifier, challenge) = pkce();
    let back = p.sign_in(&challenge).await;
    let code = param(&back, "code").unwrap();
    let res = p.redeem(&code, &verifier).await;
    assert_eq!(res.status(), StatusCode::OK);
    let first: Value = res.json().await.unwrap();
    assert!(p.active(first["access_token"].as_str().unwrap()).await);
    let replay = p.redeem(&code, &verifier).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(replay.json::<Value>().await.unwrap()["error"], "invalid_grant");
    assert!(!p.active(first["access_token"].as_str().unwrap()).await, "revoked");
    assert_eq!(
        p.refresh(first["refresh_token"].as_str().unwrap()).await.status(),
        StatusCode::BAD_REQUEST
    );
    let revoked = p.events("session.revoked").await;
    assert!(has_reason(&revoked, "replayed"), "{revoked:?}");
    // A code redeemed by another client is refused too (and a made-up one).
    let (verifier, challenge) = pkce();
    let code = param(&p.sign_in(&challenge).await, "code").unwrap();
    let res = p
        .app
        .token_post(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", "https://evil.test/c"),
            ("redirect_uri", "http://127.0.0.1:53682/callback"),
            ("code_verifier", verifier.as_str()),
        ])
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        p.redeem("mfy_ac_made-up", &verifier).await.status(),
        StatusCode::BAD_REQUEST
    );
}

async fn an_id_token_with_a_wrong_nonce_audience_or_signature_signs_no_one_in(b: Backend) {
    let p = setup(b).await;
    for (fault, why) in [
        (Fault::WrongNonce, "wrong nonce"),
        (Fault::WrongAudience, "wrong aud"),
        (Fault::BadSignature, "signature"),
    ] {
        p.idp.fault(fault);
        let (_, challenge) = pkce();
        let res = p.through_idp(&mut Browser::new(), &p.request(&challenge)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{why}");
        let page = res.text().await.unwrap();
        assert!(
            page.contains("Sign-in failed") && !page.contains(why),
            "a plain page: {page}"
        );
        let failed = p.events("login.failed").await;
        assert!(has_reason(&failed, why), "{why}: {failed:?}");
    }
    // A person the provider's claim conditions do not admit.
    p.idp.fault(Fault::None);
    p.idp.sign_in_as(
        json!({"sub": "00u9eve", "email": "eve@acme.test", "email_verified": true, "groups": "contractors"}),
    );
    let (_, challenge) = pkce();
    let res = p.through_idp(&mut Browser::new(), &p.request(&challenge)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let failed = p.events("login.failed").await;
    assert!(has_reason(&failed, "claim groups"), "{failed:?}");
    // An address the IdP did not verify names no one.
    p.idp.sign_in_as(
        json!({"sub": "00u8mal", "email": "ceo@acme.test", "email_verified": false, "groups": "engineering"}),
    );
    let res = p.through_idp(&mut Browser::new(), &p.request(&challenge)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let failed = p.events("login.failed").await;
    assert!(has_reason(&failed, "email not verified"), "{failed:?}");
    let (_, leases) = p
        .app
        .get(&p.f.admin, "/v1/tenants/acme/leases?workload=person:eve@acme.test")
        .await;
    assert_eq!(leases["items"].as_array().unwrap().len(), 0);
}

async fn consent_refused_sends_the_client_access_denied_and_no_code(b: Backend) {
    let p = setup(b).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::new();
    let res = p.through_idp(&mut browser, &p.request(&challenge)).await;
    let request = consent_request(&res.text().await.unwrap());
    let res = browser
        .post_form(
            &p.app.url("/oauth2/consent"),
            &[("request", &request), ("decision", "deny")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = location(&res);
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert!(param(&back, "code").is_none());
    assert_eq!(param(&back, "iss").as_deref(), Some(p.app.issuer.as_str()));
    // The request is closed: allowing it afterwards gets nothing.
    let again = browser
        .post_form(
            &p.app.url("/oauth2/consent"),
            &[("request", &request), ("decision", "allow")],
        )
        .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let denied = p.events("consent.denied").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["workload"], "person:alice@acme.test");
}

async fn client_documents_on_private_addresses_or_naming_another_id_are_refused(b: Backend) {
    let p = setup(b).await;
    let (_, challenge) = pkce();
    let liar = p.idp.raw_document(
        "liar",
        json!({"client_id": "https://vscode.example/client", "redirect_uris": ["http://127.0.0.1/callback"]}),
    );
    for client in [
        "https://10.1.2.3/client.json",
        "https://169.254.169.254/latest/meta-data",
        liar.as_str(),
    ] {
        let mut params = p.request(&challenge);
        params.retain(|(k, _)| *k != "client_id");
        params.push(("client_id", client));
        let res = Browser::new().get(&authorize_url(&p.app, &params)).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{client}");
        assert!(res.headers().get("location").is_none());
    }
    let refused = p.events("authorization.refused").await;
    assert!(has_reason(&refused, "private"), "{refused:?}");
    assert!(has_reason(&refused, "link-local"), "{refused:?}");
    assert!(has_reason(&refused, "not its own URL"), "{refused:?}");
}

async fn one_tenants_login_provider_never_signs_anyone_into_another_tenant(b: Backend) {
    let p = setup(b).await;
    let beta = crate::harness::fixture(&p.app, "beta").await;
    // acme's provider cannot grant beta's resource.
    let (s, body) = p
        .app
        .post(
            &p.f.admin,
            "/v1/tenants/acme/login-providers",
            json!({"name": "sneaky", "issuer": p.idp.url, "client_id": IDP_CLIENT,
                   "grants": [{"resource": beta.resource, "scopes": ["issues:read"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // beta has no provider: nobody signs in there, whatever acme has.
    let (_, challenge) = pkce();
    let mut params = p.request(&challenge);
    params.retain(|(k, _)| *k != "resource");
    params.push(("resource", beta.resource.as_str()));
    let res = Browser::new().get(&authorize_url(&p.app, &params)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("access_denied"));
    // A beta admin sees none of acme's providers or sessions.
    let beta_admin = crate::harness::tenant_admin(&p.app, &p.f.admin, "beta").await;
    let (s, _) = p.app.get(&beta_admin, "/v1/tenants/acme/login-providers").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = p.app.get(&beta_admin, "/v1/tenants/acme/sessions").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// The query of /oauth2/authorize and /oauth2/callback is the browser's (an
/// attacker's link can say anything): a parameter given twice, one not
/// percent-decodable, or one over 4 KiB is answered with a 400 page naming
/// the fault, never a redirect, and no authorization starts (no cookie).
async fn a_malformed_browser_query_gets_a_page_and_starts_nothing(b: Backend) {
    let p = setup(b).await;
    let (_, challenge) = pkce();
    let good = authorize_url(&p.app, &p.request(&challenge));
    let long = "x".repeat(4097);
    for (url, fault) in [
        (format!("{good}&state=again"), "is repeated"),
        (format!("{good}&scope=%zz"), "not well formed"),
        (format!("{good}&nonce={long}"), "too long"),
        (p.app.url("/oauth2/callback?state=a&state=b"), "is repeated"),
        (p.app.url("/oauth2/callback?state=%zz&code=c"), "not well formed"),
    ] {
        let res = Browser::new().get(&url).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{fault}: {url:.120}");
        assert!(res.headers().get("location").is_none(), "{fault}: never a redirect");
        assert!(
            res.headers().get("set-cookie").is_none(),
            "{fault}: no authorization started"
        );
        let page = res.text().await.unwrap();
        assert!(page.contains(fault), "{fault}: {page}");
    }
}
