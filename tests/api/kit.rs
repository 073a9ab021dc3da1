//! The calls tests make again and again, typed once: the client-credentials
//! form, the admin create/patch/delete with its expected status, and a
//! refusal's OAuth error code. A test then reads as the domain: "mint as the
//! CI client at this resource", "create this client", not a form retyped.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Database, TestApp};

/// A registered client's `(client_id, client_secret)`, as `fixture` hands them out.
pub type Creds = (String, String);

impl TestApp {
    /// `client_credentials` as `client` (client_secret_basic) at `resource`, plus `extra`
    /// form fields: the raw answer, for tests that judge a refusal.
    pub async fn ask_token(&self, client: &Creds, resource: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        form.extend_from_slice(extra);
        self.token_basic(&client.0, &client.1, &form).await
    }

    /// The same request, which must succeed: the access token.
    pub async fn mint_at(&self, client: &Creds, resource: &str, extra: &[(&str, &str)]) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        form.extend_from_slice(extra);
        self.mint(&client.0, &client.1, &form).await
    }

    /// The same request, which must be refused: its status and OAuth `error` code.
    pub async fn refused_at(&self, client: &Creds, resource: &str, extra: &[(&str, &str)]) -> (StatusCode, String) {
        let res = self.ask_token(client, resource, extra).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_ne!(status, StatusCode::OK, "expected a refusal: {body}");
        (status, body["error"].as_str().unwrap_or_default().to_string())
    }

    /// An admin POST that must answer 201: the created object.
    pub async fn created(&self, token: &str, path: &str, body: Value) -> Value {
        let (s, b) = self.post(token, path, body).await;
        assert_eq!(s, StatusCode::CREATED, "POST {path}: {b}");
        b
    }

    pub async fn patch(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(token, reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.admin(token, reqwest::Method::DELETE, path, None).await
    }
}

impl TestApp {
    /// An unauthenticated GET of a public JSON document (metadata, JWKS, health).
    pub async fn public(&self, path: &str) -> Value {
        let res = self.http.get(self.url(path)).send().await.unwrap();
        res.json().await.unwrap()
    }
}

/// Replicas answer under one public issuer URL, as behind a load balancer.
pub fn shared_issuer(c: mayfly::Config) -> mayfly::Config {
    mayfly::Config {
        issuer: "http://mayfly.test".into(),
        ..c
    }
}

/// Two replicas over one database, under one issuer, started one after the other.
pub async fn replicas(db: &Database) -> (TestApp, TestApp) {
    let a = TestApp::on_db(db.clone()).config(shared_issuer).start().await;
    let b = TestApp::on_db(db.clone()).config(shared_issuer).start().await;
    (a, b)
}

impl TestApp {
    /// Any token-endpoint form posted as `client` (client_secret_basic): status and body.
    pub async fn token_as(&self, client: &Creds, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let res = self.token_basic(&client.0, &client.1, form).await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// RFC 8693: `actor` exchanges the mayfly token `subject` (plus `extra` fields).
    pub async fn pass_on(&self, actor: &Creds, subject: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ];
        form.extend_from_slice(extra);
        self.token_as(actor, &form).await
    }
}

impl TestApp {
    /// A token-endpoint form with no HTTP authentication: the raw answer.
    pub async fn token_post(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url("/oauth2/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A token-endpoint form with no HTTP authentication (client auth, if any, in the body).
    pub async fn token_form(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let res = self.token_post(form).await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

pub const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl TestApp {
    /// RFC 7523 jwt-bearer: an external `assertion` (a CI or workload OIDC token) for `resource`.
    pub async fn jwt_bearer(&self, assertion: &str, resource: &str) -> (StatusCode, Value) {
        self.token_form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion),
            ("resource", resource),
        ])
        .await
    }
}

impl TestApp {
    /// `GET …/leases/{jti}` of `token`'s lease, in `tenant`, with `admin`.
    pub async fn lease_of(&self, admin: &str, tenant: &str, token: &str) -> Value {
        let jti = crate::harness::claims(token)["jti"].as_str().unwrap().to_string();
        let (s, lease) = self.get(admin, &format!("/v1/tenants/{tenant}/leases/{jti}")).await;
        assert_eq!(s, StatusCode::OK, "{lease}");
        lease
    }
}

/// An app on SQLite whose failed-authentication brake trips after `limit` failures.
pub async fn braked_after(limit: u32) -> TestApp {
    TestApp::on(crate::harness::Backend::Sqlite)
        .config(move |c| mayfly::Config {
            auth_failure_limit: limit,
            ..c
        })
        .start()
        .await
}

impl TestApp {
    /// A tenant's audit events of one `action` (up to 1,000, newest first).
    pub async fn events(&self, admin: &str, tenant: &str, action: &str) -> Vec<Value> {
        let path = format!("/v1/tenants/{tenant}/audit?action={action}&limit=1000");
        let (s, events) = self.get(admin, &path).await;
        assert_eq!(s, StatusCode::OK, "{events}");
        events["items"].as_array().unwrap().clone()
    }
}
