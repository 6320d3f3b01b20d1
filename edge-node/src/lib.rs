//! The HMS Edge appliance.
//!
//! Sans-IO (no tokio, SQLite or HTTP; `cargo xtask tidy` checks it):
//! - [`board`]: the live bed board (`Board::apply(cmd) -> changes`);
//! - [`integration`]'s [`mllp`](integration::mllp), [`hl7`](integration::hl7)
//!   and [`adt`](integration::adt): MLLP framing, HL7 v2 parsing and ADT
//!   semantics, and [`siu`](integration::siu), SIU scheduling semantics;
//! - [`or_board`]: the operating rooms' cases and their day timeline;
//! - [`coding`]: coding suggestions from the charge history.
//!
//! With IO, each behind its own door:
//! - [`store`]: the SQLite event log and projections behind one
//!   group-committing writer; the only module that speaks SQL;
//! - [`feed`]: the MLLP listener (the hospital's HL7 feed into the store);
//! - [`integration`]'s [`client`](integration::client): `hms-edge hl7 send`;
//! - [`api`]: the kiosk HTTP API;
//! - [`sync`]: the uplink to the regional cloud and the downlink back;
//! - [`fleet`]: status, telemetry and signed commands over MQTT;
//! - [`bundles`]: signed configuration and model-set bundles, checked,
//!   applied on probation and rolled back by themselves;
//! - [`inference`]: local ONNX models, the forecaster, model sets;
//! - [`patients`]: the local patient index;
//! - [`auth`]: bearer tokens and roles; [`metrics`]: Prometheus metrics;
//! - [`appliance`]: opens and serves the whole appliance;
//! - [`cli`]: the `hms-edge` subcommands; `main.rs` only calls it.

pub mod api;
pub mod appliance;
pub mod audit;
pub mod auth;
pub mod board;
pub mod bundles;
pub mod cli;
pub mod coding;
pub mod feed;
pub mod fleet;
pub mod fuzz;
pub mod inference;
pub mod integration;
pub mod metrics;
pub mod or_board;
pub mod patients;
pub mod store;
pub mod sync;
