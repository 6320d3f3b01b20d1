//! Client side of the edge-to-cloud sync protocol.
//!
//! The appliance (`edge-node`) and the regional cloud (`cloud-sync`) never depend
//! on each other; they meet here and in `hms-domain`. The uplink that ships the
//! event log is built on this crate (see `docs/sync-protocol.md` once it exists).
//! Today the crate only names the upper bound of one batch, so the appliance's
//! outbox reader and the cloud's ingest agree on it from the start.

/// Most events in one sync batch.
pub const MAX_BATCH_EVENTS: usize = 1_000;

/// Most bytes (uncompressed JSON) in one sync batch.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
