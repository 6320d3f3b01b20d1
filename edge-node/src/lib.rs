//! The HMS Edge appliance.
//!
//! - [`board`]: the live bed board, sans-IO (`Board::apply(cmd) -> changes`).
//! - [`mllp`], [`hl7`]: MLLP framing and HL7 v2 parsing, sans-IO; [`adt`]: ADT semantics.
//! - [`integration`]: the MLLP listener.
//! - [`store`]: SQLite event log and projections behind one group-committing writer.
//! - [`api`]: the kiosk HTTP API.
//! - [`auth`]: bearer tokens and roles.
//! - [`metrics`]: Prometheus metrics.
//! - [`appliance`]: wiring, start-up reconciliation, graceful shutdown.

pub mod adt;
pub mod api;
pub mod appliance;
pub mod auth;
pub mod board;
pub mod forecast;
pub mod fuzz;
pub mod hl7;
pub mod inference;
pub mod integration;
pub mod metrics;
pub mod mllp;
pub mod models;
pub mod patients;
pub mod store;
pub mod uplink;
