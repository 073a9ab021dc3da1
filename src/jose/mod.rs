//! JOSE, in one place, on ring: compact JWS for mayfly's own access tokens
//! (`jws`), verification of external JWTs with the algorithm pinned to the
//! key (`jwt`), JWKs and RFC 7638 thumbprints (`jwk`), and the `Signer` seam
//! every signing key sits behind (`signer`), and DPoP proofs (`dpop`). It knows no domain type: the
//! keys, tokens and federation modules build on it. No `none`, no HMAC, no
//! key a header brings along.

pub mod dpop;
pub mod jwk;
pub mod jws;
pub mod jwt;
pub mod signer;

pub use jwk::{VerifyingKey, thumbprint};
pub use signer::{Alg, SignError, Signer, Signing};
