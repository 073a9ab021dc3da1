//! The integration suite: a real mayfly over real HTTP on a loopback port,
//! on SQLite and on Postgres. One binary, one module per area.

mod harness;

mod activity;
mod admin;
mod audit_trail;
mod catalog;
mod cli;
mod cli_one_shot;
mod client_keys;
mod clients;
mod console_assets;
mod console_session;
mod container;
mod delegation;
mod dev;
mod dpop;
mod durability;
mod failover;
mod federation;
mod federation_edges;
mod hardening;
mod house;
mod identity_assertion;
mod interop;
mod issuer_drift;
mod issuers;
mod leases;
mod limits;
mod logscan;
mod oidc;
mod openapi;
mod openbao;
mod operations;
mod revocation;
mod rotation;
mod security;
mod signer_pkcs11;
mod signer_transit;
mod softhsm;
mod store;
mod tlog_recovery;
mod tokens;
mod transparency;
