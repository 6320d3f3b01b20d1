//! The integration hub: the hospital's HL7 v2 feed over MLLP.
//!
//! Sans-IO, and so free of tokio, SQLite and HTTP (`cargo xtask tidy`):
//! - [`mllp`]: the MLLP framer (resync, oversize, FS without CR);
//! - [`dedup`]: when a message is a duplicate (same sender keys, same content);
//! - [`hl7`]: pre-parse and parse of HL7 v2 messages, escapes, ACKs, batches;
//! - [`adt`]: ADT semantics, a parsed message and the board in, board
//!   commands (or a refusal that parks the message) out;
//! - [`dft`]: DFT charge semantics, a parsed message and the stored
//!   charges in, `billing.*` events (or a refusal) out;
//! - [`siu`]: SIU scheduling semantics, a parsed message and the OR board
//!   in, `or.case_*` events (or a refusal) out.
//!
//! With IO, and nothing else of the appliance:
//! - [`client`]: the MLLP client behind `hms-edge hl7 send`.
//!
//! The listener, which hands every frame to the store, is [`crate::feed`]:
//! the store's writer applies [`hl7`] and [`adt`], so a listener in here
//! would make `integration` and `store` depend on each other.

pub mod adt;
pub mod client;
pub mod dedup;
pub mod dft;
pub mod hl7;
pub mod mllp;
pub mod siu;
