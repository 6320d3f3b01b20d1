//! The regional cloud's HTTP service: one router with the sync API for
//! appliances and DR primaries ([`sync`]: batches, position, restore
//! reads, downlink, bundles, health), the operator API ([`operator`]) and
//! its fleet part ([`fleet`]: appliances' status and signed commands over
//! MQTT, the bundles `apply_bundle` sends; [`rollouts`]: staged rollouts
//! of a bundle), the
//! operators' web pages ([`console`]: the fleet console under `/console`),
//! a body limit and the checks made before any body is read (`gate`), the
//! relay of EMPI changes to the instance running the EMPI ([`relay`]), and
//! the security headers of `hms_web` on every response. Every API error is
//! an `application/problem+json` document ([`problem`]).
//!
//! Handlers do only HTTP: they read the request, run the work (through
//! [`crate::state::CloudState`] and the domain modules, blocking work off
//! the runtime) and answer. Nothing below this module imports it.

pub mod console;
pub mod fleet;
mod gate;
pub mod operator;
pub mod problem;
pub mod relay;
pub mod rollouts;
pub mod sync;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use cloud_sync_client::MAX_BATCH_BYTES;

use crate::state::CloudState;

/// Largest request body accepted, as sent and once decompressed.
pub const MAX_BODY_BYTES: usize = 4 * MAX_BATCH_BYTES;

/// The ingest path.
pub const BATCHES: &str = cloud_sync_client::push::BATCHES;

/// The position path: where the cloud is for the signing hospital.
pub const POSITION: &str = cloud_sync_client::push::POSITION;

/// The restore path.
pub const EVENTS: &str = cloud_sync_client::push::EVENTS;

/// The downlink path: EIDs for the signing hospital's patients.
pub const DOWNLINK: &str = cloud_sync_client::push::DOWNLINK;

/// The bundles path, for appliances: `{BUNDLES}/{sha256}`.
pub const BUNDLES: &str = cloud_sync_client::push::BUNDLES;

/// The standby path (a DR primary's report to its replica).
pub const STANDBY: &str = cloud_sync_client::push::STANDBY;

/// The header a relayed EMPI change carries its operator's name in
/// ([`relay`]).
pub const RELAYED_OPERATOR: &str = "x-hms-relayed-operator";

/// Marks a request [`relay`] made in-process (never one from the network).
#[derive(Debug, Clone, Copy)]
pub struct Relayed;

/// The health path.
pub const HEALTH: &str = "/health";

/// The router.
pub fn router(state: CloudState) -> Router {
    Router::new()
        .route(BATCHES, post(sync::batches))
        .route(POSITION, get(sync::position))
        .route(STANDBY, put(sync::standby))
        .route(EVENTS, get(sync::events))
        .route(DOWNLINK, get(sync::downlink))
        .route("/sync/v1/bundles/{sha256}", get(sync::bundle))
        .route(HEALTH, get(sync::health))
        .merge(operator::routes())
        .merge(fleet::routes())
        .merge(rollouts::routes())
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            relay::relay_changes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::before_body,
        ))
        .layer(axum::middleware::from_fn(
            hms_web::headers::security_headers,
        ))
        .with_state(state)
}
