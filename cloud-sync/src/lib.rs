//! The regional cloud of HMS Edge.
//!
//! One deployment per region receives every hospital's event log into that
//! hospital's own database, federates patients (EMPI), keeps analytics,
//! replicates to a DR peer and hosts the fleet console. The service is built in
//! later steps; this crate already fixes its boundary: it depends on
//! `hms-domain` and `cloud-sync-client`, never on `edge-node`.

pub use cloud_sync_client::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
