//! The event envelope, typed event bodies and the SHA-256 hash chain.
//!
//! Every fact the appliance learns is one [`Envelope`] in its append-only log:
//! a dense per-appliance `seq` starting at 1, a [`Stream`], a `kind`, the source
//! time and the appliance time, the [`Actor`], a correlation id, and a typed
//! [`EventBody`] kept as canonical JSON text. Each envelope's `hash` covers its
//! predecessor's hash and every field byte-for-byte, so a gap, a reordering or
//! an edit anywhere in the log is detectable by [`verify_chain`], at the edge
//! and in the cloud alike.

use std::fmt;

use ring::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bed::{BedAttributes, BedState};
use crate::ids::{BedId, HospitalId, UnitId};
use crate::phi::PatientRef;
use crate::time::Timestamp;

/// The stream (topic) an event belongs to; retention is per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Admissions, transfers, discharges.
    Adt,
    /// Bed board changes.
    Bed,
    /// Operating-room scheduling.
    Or,
    /// Charge events.
    Billing,
    /// Security-relevant actions.
    Audit,
    /// Raw integration traffic (HL7 messages and their ACKs).
    Integration,
    /// Patient identity.
    Empi,
}

impl Stream {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Adt => "adt",
            Self::Bed => "bed",
            Self::Or => "or",
            Self::Billing => "billing",
            Self::Audit => "audit",
            Self::Integration => "integration",
            Self::Empi => "empi",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "adt" => Self::Adt,
            "bed" => Self::Bed,
            "or" => Self::Or,
            "billing" => Self::Billing,
            "audit" => Self::Audit,
            "integration" => Self::Integration,
            "empi" => Self::Empi,
            _ => return None,
        })
    }
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// Its name: a token name, an interface name, `system`.
    pub id: String,
}

impl Actor {
    /// The appliance itself (start-up reconciliation, timers).
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: "system".to_owned(),
        }
    }
}

/// Kinds of actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person, through a kiosk or workstation token.
    User,
    /// A shared device (unit kiosk).
    Device,
    /// An interface such as the HL7 feed.
    Interface,
    /// The appliance.
    System,
}

/// What changed a bed's state; becomes the event kind `bed.<transition>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A stay was put into a chosen bed.
    Assigned,
    /// A stay was placed by the appliance into the best free bed of a unit.
    Placed,
    /// The stay left the bed; the bed needs cleaning.
    Released,
    /// The bed was held for a stay.
    Reserved,
    /// A hold was released.
    ReservationCancelled,
    /// A vacant bed was marked dirty.
    MarkedDirty,
    /// Cleaning started.
    CleaningStarted,
    /// Cleaning finished.
    Cleaned,
    /// Taken out of service.
    Blocked,
    /// Back in service (needs cleaning).
    Unblocked,
    /// The stay moved out of this bed to another (the bed needs cleaning).
    TransferredOut,
    /// The stay moved into this bed from another.
    TransferredIn,
    /// A cancelled discharge put the stay back into its bed.
    Readmitted,
    /// The bed was held for a stay that is to move here from its current bed
    /// (pending transfer).
    TransferReserved,
}

impl Transition {
    /// The event kind for this transition.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Assigned => "bed.assigned",
            Self::Placed => "bed.placed",
            Self::Released => "bed.released",
            Self::Reserved => "bed.reserved",
            Self::ReservationCancelled => "bed.reservation_cancelled",
            Self::MarkedDirty => "bed.marked_dirty",
            Self::CleaningStarted => "bed.cleaning_started",
            Self::Cleaned => "bed.cleaned",
            Self::Blocked => "bed.blocked",
            Self::Unblocked => "bed.unblocked",
            Self::TransferredOut => "bed.transferred_out",
            Self::TransferredIn => "bed.transferred_in",
            Self::Readmitted => "bed.readmitted",
            Self::TransferReserved => "bed.transfer_reserved",
        }
    }
}

/// A bed a changed visit held, with the bed's version after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBed {
    /// The bed.
    pub bed: BedId,
    /// Its version after the change.
    pub version: u64,
}

/// The typed content of an event. Each variant carries the resulting state, so
/// replaying the log reproduces the projections exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A configured bed joined the board (vacant and clean).
    BedCommissioned {
        /// The bed.
        bed: BedId,
        /// Its unit.
        unit: UnitId,
        /// Its attributes.
        attributes: BedAttributes,
    },
    /// A bed's unit or attributes changed in the configuration.
    BedReconfigured {
        /// The bed.
        bed: BedId,
        /// Its unit.
        unit: UnitId,
        /// Its attributes.
        attributes: BedAttributes,
    },
    /// A vacant bed left the configuration and the board.
    BedDecommissioned {
        /// The bed.
        bed: BedId,
    },
    /// A bed's state changed.
    BedStateChanged {
        /// The bed.
        bed: BedId,
        /// Its version after the change.
        version: u64,
        /// What happened.
        transition: Transition,
        /// The state after the change.
        state: BedState,
        /// The patient, when a stay enters the bed and the caller named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patient: Option<PatientRef>,
        /// The stay that left or gave up the bed (release, cancelled reservation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ended: Option<crate::ids::EncounterId>,
        /// Isolation precautions set with the change (placement of a stay needing isolation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isolation: Option<bool>,
    },
    /// A bed's isolation flag changed.
    BedIsolationChanged {
        /// The bed.
        bed: BedId,
        /// Its version after the change.
        version: u64,
        /// Whether the bed is under isolation precautions.
        isolation: bool,
    },
    /// An occupied bed's expected-discharge flag changed.
    BedPendingDischargeChanged {
        /// The bed.
        bed: BedId,
        /// Its version after the change.
        version: u64,
        /// Whether a discharge is pending.
        pending: bool,
    },
    /// Two stays swapped beds (A17): each bed now holds the other's stay.
    BedsSwapped {
        /// One bed.
        bed: BedId,
        /// Its version after the swap.
        version: u64,
        /// The other bed.
        other: BedId,
        /// Its version after the swap.
        other_version: u64,
    },
    /// Two patient records were merged (A40): `from` no longer exists.
    PatientsMerged {
        /// The MRN merged away (MRG-1).
        from: crate::phi::Mrn,
        /// The surviving patient (PID).
        into: PatientRef,
    },
    /// A visit changed number or patient (A45 move visit, A50 change visit
    /// number, A42 merge visit): stay `from` is now stay `to` of `patient`,
    /// on every bed it held.
    VisitChanged {
        /// The visit number before (MRG-5, or PV1-19 for A45).
        from: crate::ids::EncounterId,
        /// The visit number after (PV1-19).
        to: crate::ids::EncounterId,
        /// The patient the visit belongs to now (PID).
        patient: PatientRef,
        /// The beds the visit held (occupied, reserved, or held for its
        /// pending transfer), each with its version after the change.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        beds: Vec<HeldBed>,
    },
    /// The regional EMPI assigned an enterprise id to a local patient (from
    /// the cloud's downlink).
    EidAssigned {
        /// The local patient.
        mrn: crate::phi::Mrn,
        /// The enterprise id.
        eid: String,
        /// The downlink position the assignment came from (where to resume).
        downlink_seq: u64,
    },
    /// Patient demographics were recorded or updated (PID of an ADT message).
    PatientRecorded {
        /// The patient as the message gave it.
        patient: PatientRef,
        /// The HL7 trigger that carried it (`A08`, `A28`…).
        trigger: String,
        /// Every identifier of PID-3 with its assigning authority.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        identifiers: Vec<crate::phi::Identifier>,
        /// PID-11, first repetition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<crate::phi::Address>,
        /// PID-13, first repetition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<crate::phi::Phone>,
        /// The visit (PV1-19), when the message names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visit: Option<crate::ids::EncounterId>,
        /// Patient class (PV1-2), when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
    },
    /// One inbound HL7 message, its processing outcome and the ACKs sent.
    Hl7Message {
        /// MSH-3 sending application.
        sending_app: String,
        /// MSH-4 sending facility.
        sending_facility: String,
        /// MSH-10 control id.
        control_id: String,
        /// MSH-9 message type and trigger (`ADT^A01`).
        message_type: String,
        /// `applied`, `parked` or `rejected`.
        status: String,
        /// MSA-1 of the (last) ACK: AA, AE, AR.
        ack_code: String,
        /// Why it was parked or rejected (no PHI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The message bytes exactly as received, hex-encoded (lossless).
        raw_hex: String,
        /// The ACKs sent, in order.
        acks: Vec<String>,
    },
    /// A parked HL7 message was replayed (after the configuration was fixed).
    Hl7Replayed {
        /// Seq of the `Hl7Message` event that parked it.
        parked_seq: u64,
        /// `applied` (it leaves the queue) or `parked` (still not applicable).
        status: String,
        /// Why it is still parked (no PHI).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Someone looked up patients in the appliance's local index (audit).
    /// Who is the event's actor (the token's name), when its times; what
    /// was searched for is never recorded, only how and how much.
    PatientsSearched {
        /// The caller's role (`nurse`, `bed_manager`, `admin`).
        role: String,
        /// `mrn` (exact look-up) or `demographics` (ranked search).
        by: String,
        /// The demographic fields given (`family_name`, `birth_date`…): their
        /// names, never their values.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        fields: Vec<String>,
        /// Patients in the answer.
        results: u32,
    },
    /// An API token of the appliance was created (`hms-edge token create`;
    /// audit). Who is the event's actor (the operator's login, `cli:NAME`),
    /// when its `occurred_at`; the token itself is never recorded.
    TokenCreated {
        /// The token's name (the actor of what is done with it).
        name: String,
        /// Its role (`viewer`, `nurse`, `bed_manager`, `admin`).
        role: String,
        /// When it expires, if it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
        /// The id of the `auth.sqlite` the change was made in (a new one,
        /// after a restore, numbers its changes from 1 again).
        credentials: String,
        /// The change's number in that file (each is recorded once).
        change: u64,
    },
    /// An operating-room case changed (SIU, or displaced by an emergency
    /// add-on); carries the whole case after the change.
    OrCaseChanged {
        /// What happened.
        change: crate::or::CaseChange,
        /// The case after the change.
        case: crate::or::OrCase,
    },
    /// The appliance recorded the predicted duration of a case's version.
    OrCasePredicted {
        /// The prediction.
        prediction: crate::or::CasePrediction,
    },
    /// A signed fleet command was accepted (audit), before it was carried
    /// out; its id is the last accepted from then on.
    FleetCommand {
        /// The command's id.
        id: u64,
        /// What it asked (`ping`, `sync_now`…).
        command: String,
    },
    /// A step of a signed bundle on this appliance (audit; docs/bundles.md):
    /// `applied` (switched to it, on probation), `in_force` (it passed
    /// probation), `rolled_back` (it failed probation; `previous` is in
    /// force again) or `refused` (it failed a check; nothing changed).
    Bundle {
        /// `config` or `model_set`.
        kind: String,
        /// The bundle's version.
        version: u64,
        /// What happened.
        step: String,
        /// The version in force before it (none: the appliance's own
        /// configuration or model set).
        previous: Option<u64>,
        /// The SHA-256 of the bundle file (hex).
        sha256: String,
        /// Why (a refusal or a rollback); never a file's contents.
        reason: Option<String>,
    },
    /// A financial transaction was posted (DFT FT1): a charge or a credit.
    ChargePosted {
        /// The transaction.
        charge: crate::charge::Charge,
    },
    /// A posted charge was reversed by a credit with its transaction id;
    /// carries the charge as it is now (`reversed`).
    ChargeReversed {
        /// The transaction.
        charge: crate::charge::Charge,
    },
    /// An API token of the appliance was revoked (`hms-edge token revoke`;
    /// audit). Who is the event's actor, when its `occurred_at`.
    TokenRevoked {
        /// The token's name.
        name: String,
        /// Its role.
        role: String,
        /// The id of the `auth.sqlite` the change was made in.
        credentials: String,
        /// The change's number in that file (each is recorded once).
        change: u64,
    },
}

impl EventBody {
    /// The stream the event belongs to.
    pub fn stream(&self) -> Stream {
        match self {
            Self::PatientRecorded { .. }
            | Self::PatientsMerged { .. }
            | Self::VisitChanged { .. } => Stream::Adt,
            Self::EidAssigned { .. } => Stream::Empi,
            Self::OrCaseChanged { .. } | Self::OrCasePredicted { .. } => Stream::Or,
            Self::ChargePosted { .. } | Self::ChargeReversed { .. } => Stream::Billing,
            Self::Hl7Message { .. } | Self::Hl7Replayed { .. } => Stream::Integration,
            Self::PatientsSearched { .. }
            | Self::TokenCreated { .. }
            | Self::TokenRevoked { .. }
            | Self::FleetCommand { .. }
            | Self::Bundle { .. } => Stream::Audit,
            _ => Stream::Bed,
        }
    }

    /// The event kind, `stream.what`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BedCommissioned { .. } => "bed.commissioned",
            Self::BedReconfigured { .. } => "bed.reconfigured",
            Self::BedDecommissioned { .. } => "bed.decommissioned",
            Self::BedStateChanged { transition, .. } => transition.kind(),
            Self::BedIsolationChanged { .. } => "bed.isolation_changed",
            Self::BedPendingDischargeChanged { .. } => "bed.pending_discharge_changed",
            Self::PatientRecorded { .. } => "adt.patient_recorded",
            Self::PatientsMerged { .. } => "adt.patients_merged",
            Self::VisitChanged { .. } => "adt.visit_changed",
            Self::BedsSwapped { .. } => "bed.swapped",
            Self::Hl7Message { .. } => "integration.hl7_message",
            Self::Hl7Replayed { .. } => "integration.hl7_replayed",
            Self::EidAssigned { .. } => "empi.eid_assigned",
            Self::PatientsSearched { .. } => "audit.patients_searched",
            Self::TokenCreated { .. } => "audit.token_created",
            Self::TokenRevoked { .. } => "audit.token_revoked",
            Self::OrCaseChanged { change, .. } => change.kind(),
            Self::OrCasePredicted { .. } => "or.case_predicted",
            Self::FleetCommand { .. } => "audit.fleet_command",
            Self::Bundle { .. } => "audit.bundle",
            Self::ChargePosted { .. } => "billing.charge_posted",
            Self::ChargeReversed { .. } => "billing.charge_reversed",
        }
    }

    /// The bed the event is about, used to index a bed's history.
    pub fn subject(&self) -> Option<&BedId> {
        match self {
            Self::BedCommissioned { bed, .. }
            | Self::BedReconfigured { bed, .. }
            | Self::BedDecommissioned { bed }
            | Self::BedStateChanged { bed, .. }
            | Self::BedIsolationChanged { bed, .. }
            | Self::BedPendingDischargeChanged { bed, .. }
            | Self::BedsSwapped { bed, .. } => Some(bed),
            Self::VisitChanged { beds, .. } => beds.first().map(|h| &h.bed),
            Self::PatientRecorded { .. }
            | Self::PatientsMerged { .. }
            | Self::Hl7Message { .. }
            | Self::Hl7Replayed { .. }
            | Self::EidAssigned { .. }
            | Self::PatientsSearched { .. }
            | Self::TokenCreated { .. }
            | Self::TokenRevoked { .. }
            | Self::OrCaseChanged { .. }
            | Self::OrCasePredicted { .. }
            | Self::FleetCommand { .. }
            | Self::Bundle { .. }
            | Self::ChargePosted { .. }
            | Self::ChargeReversed { .. } => None,
        }
    }

    /// Canonical JSON text, the form stored and hashed.
    pub fn to_canonical_json(&self) -> String {
        // Serializing a derive(Serialize) enum of structs, options and strings
        // cannot fail; map keys are never used in bodies.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"unserializable\":\"{e}\"}}"))
    }
}

/// Lower-case hex of bytes (raw HL7 messages in events).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Bytes from lower- or upper-case hex; `None` if malformed.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A SHA-256 digest in the hash chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// The `prev_hash` of the first event.
    pub const GENESIS: EventHash = EventHash([0; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16)?;
            let lo = (chunk[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }

    /// From a byte slice of length 32.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", &self.to_hex()[..12])
    }
}

impl Serialize for EventHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("hash must be 64 hex digits"))
    }
}

/// An event before it is sealed into the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Source time (e.g. EVN-6), or the appliance time for kiosk actions.
    pub occurred_at: Timestamp,
    /// Who caused it.
    pub actor: Actor,
    /// Correlation id (HL7 control id, HTTP request id).
    pub correlation: Option<String>,
    /// The content.
    pub body: EventBody,
}

/// One sealed event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The hospital whose appliance recorded it.
    pub hospital: HospitalId,
    /// Dense sequence number, from 1.
    pub seq: u64,
    /// Stream.
    pub stream: Stream,
    /// Kind, `stream.what`.
    pub kind: String,
    /// Source time.
    pub occurred_at: Timestamp,
    /// Appliance time.
    pub recorded_at: Timestamp,
    /// Who caused it.
    pub actor: Actor,
    /// Correlation id.
    pub correlation: Option<String>,
    /// Subject (bed) the event is about, for indexing.
    pub subject: Option<String>,
    /// Canonical JSON of the [`EventBody`].
    pub body: String,
    /// Hash of the previous event ([`EventHash::GENESIS`] for seq 1).
    pub prev_hash: EventHash,
    /// Hash of this event.
    pub hash: EventHash,
}

/// Why a log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A seq is missing or repeated.
    #[error("expected seq {expected}, found {found}")]
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// `prev_hash` does not match the previous event's hash.
    #[error("seq {seq}: prev_hash does not match the previous event")]
    BrokenLink {
        /// The event.
        seq: u64,
    },
    /// The stored hash does not match the content.
    #[error("seq {seq}: hash does not match the content (tampered or corrupted)")]
    BadHash {
        /// The event.
        seq: u64,
    },
}

impl Envelope {
    /// Seals a draft as event `seq` after `prev_hash`.
    pub fn seal(
        hospital: &HospitalId,
        seq: u64,
        prev_hash: EventHash,
        recorded_at: Timestamp,
        draft: Draft,
    ) -> Self {
        let mut env = Envelope {
            hospital: hospital.clone(),
            seq,
            stream: draft.body.stream(),
            kind: draft.body.kind().to_owned(),
            occurred_at: draft.occurred_at,
            recorded_at,
            actor: draft.actor,
            correlation: draft.correlation,
            subject: draft.body.subject().map(|b| b.as_str().to_owned()),
            body: draft.body.to_canonical_json(),
            prev_hash,
            hash: EventHash::GENESIS,
        };
        env.hash = env.compute_hash();
        env
    }

    /// The hash this envelope's content implies.
    pub fn compute_hash(&self) -> EventHash {
        fn field(ctx: &mut digest::Context, bytes: &[u8]) {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
        fn opt(ctx: &mut digest::Context, v: Option<&str>) {
            match v {
                Some(s) => {
                    ctx.update(&[1]);
                    field(ctx, s.as_bytes());
                }
                None => ctx.update(&[0]),
            }
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"hms-event-v1\0");
        ctx.update(&self.prev_hash.0);
        ctx.update(&self.seq.to_be_bytes());
        field(&mut ctx, self.hospital.as_str().as_bytes());
        field(&mut ctx, self.stream.as_str().as_bytes());
        field(&mut ctx, self.kind.as_bytes());
        ctx.update(&self.occurred_at.as_millis().to_be_bytes());
        ctx.update(&self.recorded_at.as_millis().to_be_bytes());
        field(&mut ctx, format!("{:?}", self.actor.kind).as_bytes());
        field(&mut ctx, self.actor.id.as_bytes());
        opt(&mut ctx, self.correlation.as_deref());
        opt(&mut ctx, self.subject.as_deref());
        field(&mut ctx, self.body.as_bytes());
        let d = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        EventHash(out)
    }

    /// Decodes the typed body.
    pub fn decode_body(&self) -> Result<EventBody, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// Incremental chain verifier: feed envelopes in order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_seq: u64,
    prev: EventHash,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    /// Starts at seq 1 with the genesis hash.
    pub fn new() -> Self {
        Self::resume(1, EventHash::GENESIS)
    }

    /// Resumes after a known position.
    pub fn resume(next_seq: u64, prev: EventHash) -> Self {
        Self { next_seq, prev }
    }

    /// Checks the next envelope.
    pub fn check(&mut self, env: &Envelope) -> Result<(), ChainError> {
        if env.seq != self.next_seq {
            return Err(ChainError::Gap {
                expected: self.next_seq,
                found: env.seq,
            });
        }
        if env.prev_hash != self.prev {
            return Err(ChainError::BrokenLink { seq: env.seq });
        }
        if env.compute_hash() != env.hash {
            return Err(ChainError::BadHash { seq: env.seq });
        }
        self.prev = env.hash;
        self.next_seq += 1;
        Ok(())
    }
}

/// A hash-chained log of `n` bed events of `hospital` (seq 1 to `n`, each
/// occupying bed `B{seq % 7}` for encounter `E{seq}`, recorded at `seq` ms,
/// correlation `c{seq}`): the one sample log of tests, benchmarks and the
/// cloud stores' conformance suite.
pub fn sample_log(hospital: &HospitalId, n: u64) -> Vec<Envelope> {
    let mut prev = EventHash::GENESIS;
    (1..=n)
        .map(|seq| {
            let body = EventBody::BedStateChanged {
                bed: BedId::known(format!("B{}", seq % 7)),
                version: seq,
                transition: Transition::Assigned,
                state: BedState::Occupied {
                    encounter: crate::ids::EncounterId::known(format!("E{seq}")),
                },
                patient: None,
                ended: None,
                isolation: None,
            };
            let e = Envelope::seal(
                hospital,
                seq,
                prev,
                Timestamp::from_millis(seq as i64),
                Draft {
                    occurred_at: Timestamp::from_millis(0),
                    actor: Actor::system(),
                    correlation: Some(format!("c{seq}")),
                    body,
                },
            );
            prev = e.hash;
            e
        })
        .collect()
}

/// Verifies a whole log from seq 1.
pub fn verify_chain<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Result<u64, ChainError> {
    let mut v = ChainVerifier::new();
    let mut n = 0;
    for e in events {
        v.check(e)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bed::LevelOfCare;

    fn hospital() -> HospitalId {
        HospitalId::new("demo").unwrap()
    }

    fn chain(n: u64) -> Vec<Envelope> {
        sample_log(&hospital(), n)
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), Ok(5));
    }

    #[test]
    fn tampering_gaps_and_reordering_are_detected() {
        let mut c = chain(4);
        c[2].body = c[2].body.replace("E3", "E9");
        assert_eq!(verify_chain(&c), Err(ChainError::BadHash { seq: 3 }));

        let mut c = chain(4);
        c.remove(1);
        assert_eq!(
            verify_chain(&c),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );

        let mut c = chain(4);
        // Re-sealing an edited event fixes its own hash but breaks the next link.
        c[1].correlation = Some("forged".into());
        c[1].hash = c[1].compute_hash();
        assert_eq!(verify_chain(&c), Err(ChainError::BrokenLink { seq: 3 }));
    }

    #[test]
    fn bodies_round_trip_and_name_their_kind() {
        let body = EventBody::BedCommissioned {
            bed: BedId::new("B1").unwrap(),
            unit: UnitId::new("3W").unwrap(),
            attributes: BedAttributes {
                gender: Default::default(),
                isolation_capable: true,
                telemetry: false,
                bariatric: false,
                level_of_care: LevelOfCare::Acute,
                room: None,
                tags: vec![],
            },
        };
        let json = body.to_canonical_json();
        expect_test::expect![[r#"{"type":"bed_commissioned","bed":"B1","unit":"3W","attributes":{"gender":"any","isolation_capable":true,"telemetry":false,"bariatric":false,"level_of_care":"acute"}}"#]].assert_eq(&json);
        assert_eq!(serde_json::from_str::<EventBody>(&json).unwrap(), body);
        assert_eq!(body.kind(), "bed.commissioned");
        let h = EventHash([0xab; 32]);
        assert_eq!(EventHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(from_hex("000fa5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(EventHash::from_hex("zz"), None);
    }
}
