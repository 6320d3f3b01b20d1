//! Shared vocabulary of HMS Edge.
//!
//! Ids, PHI newtypes, the bed vocabulary, timestamps and the event envelope with
//! its hash chain. This crate does no IO: it knows nothing of tokio, SQLite or
//! HTTP, so the appliance, the configuration tooling and the cloud can all use it.

pub mod bed;
pub mod charge;
pub mod empi;
pub mod event;
pub mod ids;
pub mod net;
pub mod or;
pub mod phi;
pub mod sync;
pub mod time;

pub use bed::{BedAttributes, BedState, GenderRestriction, Housekeeping, LevelOfCare};
pub use charge::{Charge, ChargeKind, ChargeStatus};
pub use event::{
    Actor, ActorKind, ChainError, ChainVerifier, Draft, Envelope, EventBody, EventHash, HeldBed,
    Stream, Transition, verify_chain,
};
pub use ids::{
    BedId, CaseId, EncounterId, HospitalId, IdError, NodeId, OrRoomId, RegionId, RoomId, UnitId,
};
pub use or::{CaseChange, CasePrediction, CaseStatus, OrCase, Priority};
pub use phi::{Address, BirthDate, Identifier, Mrn, PatientRef, PersonName, Phone, Sex};
pub use time::Timestamp;
