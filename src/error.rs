//! The one error type of the admin-side domain services: what went wrong, in
//! terms the HTTP layer maps to a status and a stable code. Storage failures
//! keep their class (unavailable stays unavailable).

use crate::storage::StoreError;
use crate::tenants::Invalid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Forbidden(String),
    /// A trust policy names an issuer the operator's federation settings refuse.
    #[error("{0}")]
    IssuerNotAllowed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Maps a store's "not found" to "`what` not found"; other errors pass.
    pub fn or_not_found(what: &'static str) -> impl Fn(StoreError) -> Error {
        move |e| match e {
            StoreError::NotFound => Error::NotFound(what),
            e => Error::Store(e),
        }
    }
}
