//! mayfly: an ephemeral credential issuer for MCP servers. It mints scoped,
//! short-lived tokens per tenant, workflow and workload, records a lease for
//! each, and revokes precisely. See DESIGN.md for the contract.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod activity;
pub mod app;
pub mod audit;
mod bootstrap;
pub mod client;
pub mod clock;
pub mod config;
pub mod delegation;
pub mod error;
pub mod federation;
pub mod gateway;
pub mod grants;
pub mod http;
pub mod jose;
pub mod keys;
pub mod leases;
pub mod people;
pub mod state;
pub mod storage;
pub mod tenants;
#[cfg(test)]
mod testing;
pub mod tokens;

pub use app::{AppState, Options, Prepared, launch, prepare, serve};
pub use config::Config;
