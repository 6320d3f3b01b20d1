//! Edge-to-cloud sync: the batch the appliance ships and the rules by which
//! the cloud accepts it. Sans-IO, shared by both sides.
//!
//! A batch is a run of consecutive events of one hospital. The cloud knows
//! the highest `seq` it has durably stored and that event's hash. Applying a
//! batch is idempotent by (hospital, seq): events at or below the stored
//! position are duplicates — acknowledged and ignored, provided they are the
//! same events (same hash); the first new event must be the next seq (a gap is
//! refused with the position the cloud expects), and the new events must
//! continue the hash chain. [`plan_ingest`] decides; the store only appends.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::event::{ChainVerifier, Envelope, EventHash};
use crate::ids::{HospitalId, NodeId};

/// Events shipped in one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatch {
    /// The hospital the events belong to.
    pub hospital: HospitalId,
    /// The appliance that sent them.
    pub node: NodeId,
    /// Consecutive events, ascending seq.
    pub events: Vec<Envelope>,
}

/// One enterprise id the regional EMPI assigned to a hospital's patient, as
/// the downlink (`GET /sync/v1/downlink`) delivers it, in `seq` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EidAssignment {
    /// Position in the hospital's downlink (dense from 1).
    pub seq: u64,
    /// The hospital's local patient.
    pub mrn: crate::phi::Mrn,
    /// The enterprise id.
    pub eid: String,
}

/// The cloud's durable position for a hospital.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Highest seq stored (0: none).
    pub seq: u64,
    /// Hash of that event ([`EventHash::GENESIS`] when none).
    pub hash: EventHash,
}

impl Position {
    /// Nothing stored yet.
    pub const START: Position = Position {
        seq: 0,
        hash: EventHash::GENESIS,
    };
}

/// Why a batch is refused; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// An event names another hospital than the batch.
    #[error("event {seq} belongs to hospital {found}, not {expected}")]
    WrongHospital {
        /// The event.
        seq: u64,
        /// The batch's hospital.
        expected: HospitalId,
        /// The event's hospital.
        found: HospitalId,
    },
    /// The batch's events are not consecutive.
    #[error("events are not consecutive: {after} is followed by {found}")]
    NotConsecutive {
        /// The seq before the break.
        after: u64,
        /// The seq after it.
        found: u64,
    },
    /// The first new event is not the next one: resend from `expected`.
    #[error("gap: the cloud expects seq {expected}, the batch continues at {found}")]
    Gap {
        /// The seq the cloud expects next.
        expected: u64,
        /// The first new seq of the batch.
        found: u64,
    },
    /// An event at or below the stored position differs from the stored one.
    #[error("event {seq} differs from the event the cloud stored under that seq")]
    Conflict {
        /// The seq.
        seq: u64,
    },
    /// The new events do not continue the hash chain (tampered or corrupt).
    #[error("hash chain broken at seq {seq}")]
    BrokenChain {
        /// The first event that does not verify.
        seq: u64,
    },
}

/// Decides which events of `batch` to store, given the cloud's `position`
/// and the hashes it stored (`stored_hash(seq)` for `seq <= position.seq`).
/// Returns the index range of the new events (possibly empty).
pub fn plan_ingest(
    position: Position,
    batch: &SyncBatch,
    stored_hash: impl Fn(u64) -> Option<EventHash>,
) -> Result<Range<usize>, Refusal> {
    let events = &batch.events;
    for (i, e) in events.iter().enumerate() {
        if e.hospital != batch.hospital {
            return Err(Refusal::WrongHospital {
                seq: e.seq,
                expected: batch.hospital.clone(),
                found: e.hospital.clone(),
            });
        }
        if i > 0 && e.seq != events[i - 1].seq + 1 {
            return Err(Refusal::NotConsecutive {
                after: events[i - 1].seq,
                found: e.seq,
            });
        }
    }
    let first_new = events
        .iter()
        .position(|e| e.seq > position.seq)
        .unwrap_or(events.len());
    for e in &events[..first_new] {
        if stored_hash(e.seq) != Some(e.hash) {
            return Err(Refusal::Conflict { seq: e.seq });
        }
    }
    let new = &events[first_new..];
    if let Some(first) = new.first()
        && first.seq != position.seq + 1
    {
        return Err(Refusal::Gap {
            expected: position.seq + 1,
            found: first.seq,
        });
    }
    let mut chain = ChainVerifier::resume(position.seq + 1, position.hash);
    for e in new {
        chain
            .check(e)
            .map_err(|_| Refusal::BrokenChain { seq: e.seq })?;
    }
    Ok(first_new..events.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hospital(h: &str) -> HospitalId {
        HospitalId::new(h).unwrap()
    }

    fn log(h: &str, n: u64) -> Vec<Envelope> {
        crate::event::sample_log(&hospital(h), n)
    }

    fn batch(events: &[Envelope]) -> SyncBatch {
        SyncBatch {
            hospital: hospital("h1"),
            node: NodeId::new("edge-1").unwrap(),
            events: events.to_vec(),
        }
    }

    #[test]
    fn new_duplicate_gap_conflict_and_tampering() {
        let all = log("h1", 6);
        let at = |n: u64| Position {
            seq: n,
            hash: if n == 0 {
                EventHash::GENESIS
            } else {
                all[n as usize - 1].hash
            },
        };
        let stored = |upto: u64| {
            let all = all.clone();
            move |s: u64| (s <= upto).then(|| all[s as usize - 1].hash)
        };
        // Fresh cloud, first batch.
        assert_eq!(
            plan_ingest(Position::START, &batch(&all[..3]), stored(0)),
            Ok(0..3)
        );
        // Overlapping resend: the known prefix is skipped.
        assert_eq!(plan_ingest(at(3), &batch(&all[1..6]), stored(3)), Ok(2..5));
        // All duplicates: nothing new, accepted.
        assert_eq!(plan_ingest(at(6), &batch(&all[..6]), stored(6)), Ok(6..6));
        // A gap is refused with the expected position.
        assert_eq!(
            plan_ingest(at(2), &batch(&all[3..]), stored(2)),
            Err(Refusal::Gap {
                expected: 3,
                found: 4
            })
        );
        // A "duplicate" that differs from what was stored.
        let other = log("h1", 3);
        let mut forged = other[1].clone();
        forged.correlation = Some("x".into());
        forged.hash = forged.compute_hash();
        assert_eq!(
            plan_ingest(at(3), &batch(&[forged]), stored(3)),
            Err(Refusal::Conflict { seq: 2 })
        );
        // Tampered content in a new event.
        let mut tampered = all[3..5].to_vec();
        tampered[1].body = tampered[1].body.replace("E5", "E9");
        assert_eq!(
            plan_ingest(at(3), &batch(&tampered), stored(3)),
            Err(Refusal::BrokenChain { seq: 5 })
        );
        // Not consecutive.
        let holes = vec![all[0].clone(), all[2].clone()];
        assert_eq!(
            plan_ingest(Position::START, &batch(&holes), stored(0)),
            Err(Refusal::NotConsecutive { after: 1, found: 3 })
        );
        // Another hospital's events in this hospital's batch.
        let theirs = log("h2", 1);
        assert!(matches!(
            plan_ingest(Position::START, &batch(&theirs), stored(0)),
            Err(Refusal::WrongHospital { .. })
        ));
    }
}
