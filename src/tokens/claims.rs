//! The access-token claims (RFC 9068 profile plus mayfly's tenant/workflow).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The workload.
    pub sub: String,
    /// Exactly the resource URI string the caller requested.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// The lease id.
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub tenant: String,
    pub workflow: String,
    /// RFC 8693 actor chain, where a human or agent delegated the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
    /// The lease's number in the database's sequence: offline verifiers
    /// compare it with a revocation rule's `cutoff_seq`, which orders tokens
    /// and rules exactly whatever the replicas' clocks say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seq: Option<i64>,
    /// RFC 9449 §6: the DPoP key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 7800 confirmation: the thumbprint of the holder's DPoP key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}
