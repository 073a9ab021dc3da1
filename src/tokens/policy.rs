//! The pure decision at the heart of minting: given the terms a grant
//! verified (`MintTerms`), the resource asked for and the request, which workflow, workload, scopes
//! and lifetime does the token get, or why is it refused. No I/O here.

use super::terms::{MintTerms, looks_like_person};
use crate::tenants::{self, uri};

/// What a token can be minted for: a registered resource, or the admin API.
#[derive(Debug, Clone)]
pub struct Target {
    pub canonical_uri: String,
    pub scopes: TargetScopes,
    pub default_ttl: i64,
    pub max_ttl: i64,
}

#[derive(Debug, Clone)]
pub enum TargetScopes {
    /// The scopes a resource declares.
    Listed(Vec<String>),
    /// The admin API: `mayfly:admin` and `mayfly:tenant:{tenant}:admin`.
    AdminApi,
}

impl TargetScopes {
    pub fn defines(&self, scope: &str) -> bool {
        match self {
            TargetScopes::Listed(list) => list.iter().any(|s| s == scope),
            TargetScopes::AdminApi => {
                scope == tenants::GLOBAL_ADMIN_SCOPE
                    || scope
                        .strip_prefix("mayfly:tenant:")
                        .and_then(|rest| rest.strip_suffix(":admin"))
                        .is_some_and(|t| tenants::validate_tenant_id(t).is_ok())
            }
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct MintRequest<'a> {
    pub scope: Option<&'a str>,
    pub workflow: Option<&'a str>,
    pub workload: Option<&'a str>,
    pub expires_in: Option<&'a str>,
}

/// Why a mint is refused; maps one to one onto OAuth error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    InvalidRequest(String),
    InvalidScope(String),
    InvalidTarget(String),
    UnauthorizedClient(String),
    /// RFC 9449: the client must prove possession of a DPoP key.
    InvalidDpopProof(String),
}

impl Denial {
    pub fn code(&self) -> &'static str {
        match self {
            Denial::InvalidRequest(_) => "invalid_request",
            Denial::InvalidScope(_) => "invalid_scope",
            Denial::InvalidTarget(_) => "invalid_target",
            Denial::UnauthorizedClient(_) => "unauthorized_client",
            Denial::InvalidDpopProof(_) => "invalid_dpop_proof",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Denial::InvalidRequest(m)
            | Denial::InvalidScope(m)
            | Denial::InvalidTarget(m)
            | Denial::UnauthorizedClient(m)
            | Denial::InvalidDpopProof(m) => m,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub workflow: String,
    pub workload: String,
    pub scopes: Vec<String>,
    pub ttl_seconds: i64,
}

pub fn decide(terms: &MintTerms, target: &Target, req: &MintRequest<'_>, ceiling: i64) -> Result<Decision, Denial> {
    let workflow = match req.workflow {
        Some(w) => w,
        None => terms.implied_workflow().ok_or_else(|| {
            Denial::InvalidRequest("`workflow` is required: this client may mint for more than one workflow".into())
        })?,
    };
    tenants::validate_workflow("workflow", workflow).map_err(|e| Denial::InvalidRequest(e.to_string()))?;
    if !terms.may_mint_for(workflow) {
        return Err(Denial::UnauthorizedClient(format!(
            "this client may not mint for workflow `{workflow}`"
        )));
    }

    let workload = req.workload.unwrap_or(&terms.client_id);
    tenants::validate_workload("workload", workload).map_err(|e| Denial::InvalidRequest(e.to_string()))?;
    match &terms.workload_pattern {
        // Validated (anchored, compiling) when it was set; a pattern that no
        // longer compiles matches nothing.
        Some(pattern) if !tenants::matches_whole(pattern, workload) => {
            return Err(Denial::UnauthorizedClient(
                "`workload` does not match this client's workload_pattern".into(),
            ));
        }
        None if !terms.workload_verified && looks_like_person(workload) => {
            return Err(Denial::UnauthorizedClient(
                "a `workload` that names a person (`person:…` or an address) needs a workload_pattern that allows it"
                    .into(),
            ));
        }
        _ => {}
    }

    // Scopes this client holds on this target, over all grants naming it.
    let mut held: Vec<&str> = Vec::new();
    let mut has_grant = false;
    for grant in &terms.grants {
        if uri::canonicalize(&grant.resource).is_ok_and(|c| c == target.canonical_uri) {
            has_grant = true;
            for s in &grant.scopes {
                if !held.contains(&s.as_str()) {
                    held.push(s);
                }
            }
        }
    }
    if !has_grant {
        return Err(Denial::InvalidTarget(
            "this client has no grant for the requested resource".into(),
        ));
    }

    let scopes: Vec<String> = match req.scope.map(str::trim).filter(|s| !s.is_empty()) {
        None => held
            .iter()
            .filter(|s| target.scopes.defines(s))
            .map(|s| s.to_string())
            .collect(),
        Some(requested) => {
            let mut granted = Vec::new();
            for s in requested.split(' ').filter(|s| !s.is_empty()) {
                if !tenants::is_scope_token(s) || !target.scopes.defines(s) {
                    return Err(Denial::InvalidScope(format!(
                        "the resource does not define scope `{s}`"
                    )));
                }
                // Defined but not granted: dropped (RFC 6749 §3.3); the response names what was granted.
                if held.contains(&s) && !granted.iter().any(|g: &String| g == s) {
                    granted.push(s.to_string());
                }
            }
            granted
        }
    };
    if scopes.is_empty() {
        return Err(Denial::InvalidScope(
            "none of the requested scopes is granted to this client".into(),
        ));
    }

    let cap = terms.max_ttl_seconds.min(target.max_ttl).min(ceiling);
    let requested_ttl = match req.expires_in {
        None => target.default_ttl,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(Denial::InvalidRequest(
                    "`expires_in` must be a positive integer of seconds".into(),
                ));
            }
        },
    };
    Ok(Decision {
        workflow: workflow.to_string(),
        workload: workload.to_string(),
        scopes,
        ttl_seconds: requested_ttl.min(cap),
    })
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::tenants::{Client, ClientKind, Grant};

    fn client() -> MintTerms {
        MintTerms::of_client(&Client {
            name: "CI".into(),
            workflows: vec!["release".into()],
            grants: vec![Grant {
                resource: "https://mcp.acme.test/github/".into(),
                scopes: vec!["issues:read".into()],
            }],
            ..Client::new("acme", "ci-release", ClientKind::Ci, DateTime::UNIX_EPOCH)
        })
    }

    fn target() -> Target {
        Target {
            canonical_uri: "https://mcp.acme.test/github".into(),
            scopes: TargetScopes::Listed(vec!["issues:read".into(), "issues:write".into()]),
            default_ttl: 600,
            max_ttl: 3600,
        }
    }

    #[test]
    fn an_sdk_style_request_gets_the_implied_workflow_and_default_scopes() {
        let d = decide(&client(), &target(), &MintRequest::default(), 3600).unwrap();
        assert_eq!(d.workflow, "release");
        assert_eq!(d.workload, "ci-release");
        assert_eq!(d.scopes, vec!["issues:read"]);
        assert_eq!(d.ttl_seconds, 600);
    }

    #[test]
    fn defined_but_ungranted_scopes_are_dropped_and_unknown_ones_refused() {
        let req = MintRequest {
            scope: Some("issues:read issues:write"),
            ..Default::default()
        };
        assert_eq!(
            decide(&client(), &target(), &req, 3600).unwrap().scopes,
            vec!["issues:read"]
        );

        let req = MintRequest {
            scope: Some("issues:write"),
            ..Default::default()
        };
        assert!(matches!(
            decide(&client(), &target(), &req, 3600),
            Err(Denial::InvalidScope(_))
        ));

        let req = MintRequest {
            scope: Some("issues:raed"),
            ..Default::default()
        };
        let err = decide(&client(), &target(), &req, 3600).unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        assert!(err.message().contains("issues:raed"));
    }

    #[test]
    fn ttl_is_capped_by_client_resource_and_ceiling() {
        // client max 900, resource default 600 and max `resource_max`, global `ceiling`.
        let ask = |expires_in: Option<&'static str>, resource_max: i64, ceiling: i64| {
            let t = Target {
                max_ttl: resource_max,
                ..target()
            };
            let req = MintRequest {
                expires_in,
                ..Default::default()
            };
            decide(&client(), &t, &req, ceiling).map(|d| d.ttl_seconds)
        };
        assert_eq!(ask(Some("60"), 3600, 3600), Ok(60), "below every cap: as asked");
        // Each cap binds in turn, the others leaving room.
        assert_eq!(ask(Some("100000"), 3600, 3600), Ok(900), "the client's max");
        assert_eq!(ask(Some("100000"), 400, 3600), Ok(400), "the resource's max");
        assert_eq!(ask(Some("100000"), 3600, 300), Ok(300), "the global ceiling");
        // Nothing asked: the resource's default, itself under every cap.
        assert_eq!(ask(None, 3600, 3600), Ok(600), "the resource's default");
        assert_eq!(ask(None, 3600, 120), Ok(120), "the default is capped too");
        for bad in ["0", "-5", "ten", "1.5"] {
            assert!(
                matches!(ask(Some(bad), 3600, 3600), Err(Denial::InvalidRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn workflows_outside_the_clients_list_are_refused() {
        let req = MintRequest {
            workflow: Some("deploy"),
            ..Default::default()
        };
        assert_eq!(
            decide(&client(), &target(), &req, 3600).unwrap_err().code(),
            "unauthorized_client"
        );
        let mut wild = client();
        wild.workflows = vec!["*".into()];
        assert_eq!(
            decide(&wild, &target(), &MintRequest::default(), 3600)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        assert_eq!(decide(&wild, &target(), &req, 3600).unwrap().workflow, "deploy");
    }

    #[test]
    fn a_workload_pattern_confines_the_sub_a_client_may_claim() {
        let mut c = client();
        c.workload_pattern = Some("^ci-release/[a-z0-9-]+$".into());
        let ask = |w: &'static str| MintRequest {
            workload: Some(w),
            ..Default::default()
        };
        assert_eq!(
            decide(&c, &target(), &ask("ci-release/job-7"), 3600).unwrap().workload,
            "ci-release/job-7"
        );
        assert_eq!(
            decide(&c, &target(), &ask("mayfly-admin"), 3600).unwrap_err().code(),
            "unauthorized_client"
        );
        // Without `workload`, the client id is the workload, and must match too.
        assert!(decide(&c, &target(), &MintRequest::default(), 3600).is_err());
    }

    #[test]
    fn a_caller_chosen_workload_that_names_a_person_needs_a_pattern_that_allows_it() {
        let ask = |w: &'static str| MintRequest {
            workload: Some(w),
            ..Default::default()
        };
        for person in ["person:alice", "alice@acme.test"] {
            let err = decide(&client(), &target(), &ask(person), 3600).unwrap_err();
            assert_eq!(err.code(), "unauthorized_client", "{person}");
        }
        assert!(decide(&client(), &target(), &ask("ci-release/job-7"), 3600).is_ok());
        // An explicit pattern may allow addresses ...
        let mut c = client();
        c.workload_pattern = Some("^[a-z]+@acme\\.test$".into());
        assert_eq!(
            decide(&c, &target(), &ask("alice@acme.test"), 3600).unwrap().workload,
            "alice@acme.test"
        );
        // ... and a verified identity (federation, delegation) names people freely.
        let mut v = client();
        v.workload_verified = true;
        assert!(decide(&v, &target(), &ask("person:alice"), 3600).is_ok());
    }

    #[test]
    fn a_resource_without_a_grant_is_an_invalid_target() {
        let mut t = target();
        t.canonical_uri = "https://mcp.acme.test/jira".into();
        assert_eq!(
            decide(&client(), &t, &MintRequest::default(), 3600).unwrap_err().code(),
            "invalid_target"
        );
    }

    #[test]
    fn the_admin_api_defines_only_admin_scopes() {
        assert!(TargetScopes::AdminApi.defines("mayfly:admin"));
        assert!(TargetScopes::AdminApi.defines("mayfly:tenant:acme:admin"));
        assert!(!TargetScopes::AdminApi.defines("mayfly:tenant::admin"));
        assert!(!TargetScopes::AdminApi.defines("issues:read"));
    }
}
