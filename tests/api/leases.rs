//! The lease list: filters, cursor pagination, exact activity, and the
//! bound that keeps a tenant's list queries from starving minting.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, fixture, spawn_app};
use crate::on_both_backends;

on_both_backends!(leases_are_listed_with_filters_and_cursor_pagination);

async fn leases_are_listed_with_filters_and_cursor_pagination(b: Backend) {
    let app = spawn_app(b).await;
    let f = fixture(&app, "acme").await;
    for i in 0..5 {
        let workload = format!("agent/{i}");
        let workflow = if i % 2 == 0 { "triage" } else { "review" };
        app.mint_at(
            &f.agent,
            &f.resource,
            &[("workflow", workflow), ("workload", &workload)],
        )
        .await;
    }
    app.mint_at(&f.ci, &f.resource, &[]).await;

    let (_, triage) = app.get(&f.admin, "/v1/tenants/acme/leases?workflow=triage").await;
    assert_eq!(triage["items"].as_array().unwrap().len(), 3);
    let (_, ci) = app
        .get(&f.admin, &format!("/v1/tenants/acme/leases?client_id={}", f.ci.0))
        .await;
    assert_eq!(ci["items"].as_array().unwrap().len(), 1);
    let (_, one) = app.get(&f.admin, "/v1/tenants/acme/leases?workload=agent/3").await;
    assert_eq!(one["items"][0]["workflow"], "review");

    let mut seen = Vec::new();
    let mut path = "/v1/tenants/acme/leases?limit=4".to_string();
    loop {
        let (s, page) = app.get(&f.admin, &path).await;
        assert_eq!(s, StatusCode::OK);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tenants/acme/leases?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), 6, "no lease served twice: {seen:?}");
    let (_, whole) = app.get(&f.admin, "/v1/tenants/acme/leases?limit=100").await;
    let whole: Vec<String> = whole["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, whole, "the pages, in order, are the whole list");

    let (_, rules) = app
        .post(
            &f.admin,
            "/v1/tenants/acme/revocations",
            json!({"workflow": "review", "reason": "test"}),
        )
        .await;
    let (_, active) = app.get(&f.admin, "/v1/tenants/acme/leases?active=true").await;
    assert_eq!(active["items"].as_array().unwrap().len(), 4);
    let (_, inactive) = app.get(&f.admin, "/v1/tenants/acme/leases?active=false").await;
    let inactive = inactive["items"].as_array().unwrap();
    assert_eq!(inactive.len(), 2);
    assert!(
        inactive
            .iter()
            .all(|l| l["revocation_id"] == rules["id"] && l["active"] == false)
    );
}
