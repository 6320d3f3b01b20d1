//! Cloud sync: the appliance's side of the sync protocol.
//!
//! - [`uplink`]: ships the event log to the regional cloud, driven by the
//!   sans-IO [`cloud_sync_client::shipper::Shipper`];
//! - [`downlink`]: records what the cloud sends back (EIDs) as events;
//! - [`failover`]: which of the cloud's addresses the uplink talks to;
//! - [`status`]: the sync state `/health` reports and the acknowledged
//!   position retention follows.

pub mod downlink;
pub mod failover;
pub mod status;
pub mod uplink;
