//! The downlink: what the regional cloud sends back (today, the EIDs its
//! EMPI assigned to this hospital's patients).
//!
//! Read after the position the store has applied; each assignment is
//! recorded as an `empi.eid_assigned` event through the writer, so the
//! patient index, the projection and the resume position all follow from
//! the log.

use std::time::Duration;

use cloud_sync_client::{Client, Signer};
use hms_domain::Timestamp;

use crate::store::{Store, WriteRequest};

/// Reads the downlink after the store's position (signed as `signer`, each
/// request within `timeout`) and records each EID assignment as an event.
/// Returns how many it recorded.
pub async fn pull(store: &Store, client: &Client, signer: &Signer, timeout: Duration) -> usize {
    let after = match store.downlink_position().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "the downlink position could not be read");
            return 0;
        }
    };
    let now_ms = Timestamp::now().as_millis();
    let list = match client.downlink(signer, after, now_ms, timeout).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "downlink not read");
            return 0;
        }
    };
    let mut applied = 0;
    for a in list {
        let req = WriteRequest {
            cmd: crate::board::Command::AssignEid {
                mrn: a.mrn,
                eid: a.eid,
                downlink_seq: a.seq,
            },
            actor: hms_domain::Actor::system(),
            correlation: Some(format!("downlink:{}", a.seq)),
            occurred_at: None,
        };
        if let Err(e) = store.write(req).await {
            tracing::warn!(error = %e, seq = a.seq, "an EID assignment was not recorded; retried later");
            break;
        }
        applied += 1;
    }
    applied
}
