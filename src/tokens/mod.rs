//! Access tokens: claims, the JWS encoding, the minting policy and the issuer
//! that commits a lease before any token leaves.

pub mod claims;
pub mod commit;
pub mod issuer;
pub mod limits;
pub mod policy;
pub mod terms;
pub mod validate;
