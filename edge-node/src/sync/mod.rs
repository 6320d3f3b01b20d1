//! Cloud sync: the appliance's side of the sync protocol.
//!
//! - [`uplink`]: ships the event log to the regional cloud, driven by the
//!   sans-IO [`cloud_sync_client::shipper::Shipper`];
//! - [`downlink`]: records what the cloud sends back (EIDs) as events;
//! - [`status`]: the sync state `/health` reports and the acknowledged
//!   position retention follows.

pub mod downlink;
pub mod status;
pub mod uplink;
