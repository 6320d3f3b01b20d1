//! The regional cloud of HMS Edge.
//!
//! One deployment per region receives every hospital's event log into that
//! hospital's own database, federates patients in a regional EMPI, keeps
//! analytics, replicates to a DR peer and hands EIDs back to the
//! appliances. It depends on `hms-domain`, `cloud-sync-client` and
//! `hms-web`, never on `edge-node`.
//!
//! The modules, from the bottom up; each imports only modules listed
//! before it, so there is no cycle:
//!
//! - [`store`]: persistence, and the only place SQL is written. The
//!   per-hospital event stores with idempotent, in-order, chain-verified
//!   ingest (SQLite and PostgreSQL backends, the conformance suite every
//!   backend passes), and the cloud's own databases: [`store::registry`]
//!   (enrolments, operator tokens, DR primaries, ingest times, the audit,
//!   the last fleet command id per appliance),
//!   [`store::empi`] and [`store::downlink`]. Every SQLite connection is
//!   opened by [`store::sqlite`] (`synchronous=FULL`).
//! - the domain, each module independent of the state and of HTTP:
//!   [`enrolment`] (enrolled appliances, signed requests, residency, batch
//!   acceptance), [`downlink`] (EIDs back to the appliances), [`analytics`]
//!   (hourly census, ADT volumes), [`takeover`] (region failover:
//!   promotions of a replica, fences of the primary it replaced; uses
//!   `enrolment`), [`dr`] (replication from a primary to
//!   its region's DR replica, and the standby records a replica takes over
//!   with; uses `enrolment` and `takeover`), [`empi`] (the regional
//!   EMPI and its trained model; uses `enrolment` and `downlink`),
//!   [`config`] (the TOML file; uses the EMPI's training bounds),
//!   [`fleet`] (the MQTT fleet channel: the appliances' status and
//!   telemetry, signed commands; uses `config` and `enrolment`),
//!   [`bundles`] (the signed bundles this cloud hosts for the fleet's
//!   `apply_bundle`, kept under the data dir, and in the region's database
//!   when several instances share it; imports only `store`) and
//!   [`broker`] (the embedded MQTT broker of `[fleet] embedded = true`,
//!   rumqttd on threads of its own; imports nothing of this crate). A
//!   background task ([`empi::run`], [`dr::Replicator::run`],
//!   [`fleet::run`]) is handed the pieces it needs and a cancellation token.
//! - [`state`]: [`state::CloudState`], what the handlers and tasks share.
//! - [`http`]: the router, the sync API, the operator API and the problem
//!   documents every error becomes.
//! - [`cloud`]: [`cloud::Cloud`], opened from the configuration and served
//!   until cancelled, with every background task stopped and awaited; and
//!   [`cli`], the other `hms-cloud` commands. The binary only parses the
//!   command line.
//!
//! The fleet console (`/console`, server-drawn pages on `hms-web`'s stack)
//! is part of [`http`].

pub mod analytics;
pub mod broker;
pub mod bundles;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod downlink;
pub mod dr;
pub mod empi;
pub mod enrolment;
pub mod fleet;
pub mod http;
pub mod rollout;
pub mod state;
pub mod store;
pub mod takeover;

#[cfg(test)]
mod e2e_tests;
#[cfg(test)]
mod testkit;

pub use cloud_sync_client::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
