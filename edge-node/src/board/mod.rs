//! The bed board: live bed state, validated transitions and placement. Sans-IO.
//!
//! [`Board::apply`] validates a [`Command`] against the current state and, when
//! it is allowed, returns the [`EventBody`] changes it caused after applying
//! them with [`Board::apply_change`]. Replaying the event log goes through
//! `apply_change` alone, so live state and replayed state cannot drift apart.
//!
//! The board is owned by the store's writer thread; readers get an immutable
//! [`BoardView`] whose beds are shared `Arc`s, so publishing a view after each
//! group commit costs one pointer copy per bed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hms_domain::{
    BedAttributes, BedId, BedState, EncounterId, EventBody, GenderRestriction, Housekeeping,
    LevelOfCare, PatientRef, Sex, Timestamp, Transition, UnitId,
};
use serde::{Deserialize, Serialize};

/// One bed as the board knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bed {
    /// The bed.
    pub id: BedId,
    /// Its unit.
    pub unit: UnitId,
    /// Static attributes.
    pub attributes: BedAttributes,
    /// Occupancy and housekeeping state.
    pub state: BedState,
    /// Isolation precautions in force.
    pub isolation: bool,
    /// A discharge is expected (counts as pending out).
    pub pending_discharge: bool,
    /// Bumped on every change; callers send the version they saw.
    pub version: u64,
    /// When the bed entered its current state.
    pub since: Timestamp,
    /// The patient of the stay holding the bed, when known.
    pub patient: Option<PatientRef>,
}

/// Unit census, derived from the beds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    /// Beds in the unit.
    pub total: u32,
    /// Occupied beds.
    pub occupied: u32,
    /// Vacant and clean: ready for a patient.
    pub available: u32,
    /// Vacant and dirty.
    pub dirty: u32,
    /// Being cleaned.
    pub cleaning: u32,
    /// Out of service.
    pub blocked: u32,
    /// Held for an incoming stay.
    pub reserved: u32,
    /// Incoming stays (reservations).
    pub pending_in: u32,
    /// Occupied beds with a discharge expected.
    pub pending_out: u32,
    /// Beds under isolation precautions.
    pub isolation: u32,
}

impl Census {
    fn count(&mut self, bed: &Bed, transfers: &HashMap<EncounterId, usize>) {
        self.total += 1;
        if let BedState::Occupied { encounter } = &bed.state
            && transfers.contains_key(encounter)
            && !bed.pending_discharge
        {
            // A stay with a pending transfer is leaving this bed.
            self.pending_out += 1;
        }
        match bed.state {
            BedState::VacantClean => self.available += 1,
            BedState::VacantDirty => self.dirty += 1,
            BedState::Cleaning => self.cleaning += 1,
            BedState::Occupied { .. } => {
                self.occupied += 1;
                if bed.pending_discharge {
                    self.pending_out += 1;
                }
            }
            BedState::Reserved { .. } => {
                self.reserved += 1;
                self.pending_in += 1;
            }
            BedState::Blocked { .. } => self.blocked += 1,
        }
        if bed.isolation {
            self.isolation += 1;
        }
    }
}

/// What a stay needs from a bed when the appliance picks one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// The patient's sex, for gender-restricted beds and same-sex rooms.
    #[serde(default)]
    pub sex: Option<Sex>,
    /// Needs an isolation-capable bed in a room of its own.
    #[serde(default)]
    pub isolation: bool,
    /// Needs this level of care.
    #[serde(default)]
    pub level_of_care: Option<LevelOfCare>,
    /// Needs telemetry.
    #[serde(default)]
    pub telemetry: bool,
    /// Needs a bariatric bed.
    #[serde(default)]
    pub bariatric: bool,
}

/// A request to change the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Put a stay into a chosen bed (vacant-clean, or reserved for that stay).
    Assign {
        /// The bed.
        bed: BedId,
        /// The stay.
        encounter: EncounterId,
        /// Its patient.
        patient: Option<PatientRef>,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Put a stay into the best free bed of a unit.
    Place {
        /// The unit.
        unit: UnitId,
        /// The stay.
        encounter: EncounterId,
        /// Its patient.
        patient: Option<PatientRef>,
        /// What the bed must offer.
        requirements: Requirements,
    },
    /// The stay left the bed; it becomes dirty.
    Release {
        /// The bed.
        bed: BedId,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Hold a vacant-clean bed for a stay.
    Reserve {
        /// The bed.
        bed: BedId,
        /// The stay.
        encounter: EncounterId,
        /// Its patient.
        patient: Option<PatientRef>,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Release a hold.
    CancelReservation {
        /// The bed.
        bed: BedId,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Housekeeping status change of a vacant bed.
    Housekeeping {
        /// The bed.
        bed: BedId,
        /// Target status.
        to: Housekeeping,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Take a vacant bed out of service.
    Block {
        /// The bed.
        bed: BedId,
        /// Why.
        reason: String,
        /// Until when, if known.
        until: Option<Timestamp>,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Put a blocked bed back in service (it then needs cleaning).
    Unblock {
        /// The bed.
        bed: BedId,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Set or clear isolation precautions.
    SetIsolation {
        /// The bed.
        bed: BedId,
        /// Isolation on or off.
        isolation: bool,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Set or clear the expected-discharge flag of an occupied bed.
    SetPendingDischarge {
        /// The bed.
        bed: BedId,
        /// Pending or not.
        pending: bool,
        /// The version the caller saw.
        expected_version: Option<u64>,
    },
    /// Move a stay from the bed it holds to another (vacant-clean, or
    /// reserved for it); the old bed becomes dirty.
    Transfer {
        /// The stay.
        encounter: EncounterId,
        /// The new bed.
        to: BedId,
        /// Its patient, when the source names one.
        patient: Option<PatientRef>,
        /// Allow a vacant bed that is not clean (a cancelled transfer going back).
        allow_unclean: bool,
    },
    /// Hold a vacant-clean bed for a stay that occupies another bed and is to
    /// move there (pending transfer).
    ReserveTransfer {
        /// The stay.
        encounter: EncounterId,
        /// The bed to hold.
        to: BedId,
    },
    /// Swap the stays of two occupied beds (both or neither).
    Swap {
        /// One bed.
        a: BedId,
        /// The other bed.
        b: BedId,
    },
    /// Replace a merged-away patient by the surviving one on every bed.
    MergePatients {
        /// The MRN merged away.
        from: hms_domain::Mrn,
        /// The surviving patient.
        into: PatientRef,
    },
    /// Renumber a stay and/or give it to another patient (A45, A50, A42), on
    /// every bed it holds.
    ChangeVisit {
        /// The stay's number before.
        from: EncounterId,
        /// Its number after (may equal `from`).
        to: EncounterId,
        /// The patient it belongs to now.
        patient: PatientRef,
    },
    /// Put a stay back into a vacant bed whatever its housekeeping state
    /// (a cancelled discharge).
    Readmit {
        /// The bed.
        bed: BedId,
        /// The stay.
        encounter: EncounterId,
        /// Its patient.
        patient: Option<PatientRef>,
    },
    /// Add a configured bed (start-up reconciliation).
    Commission {
        /// The bed.
        bed: BedId,
        /// Its unit.
        unit: UnitId,
        /// Its attributes.
        attributes: BedAttributes,
    },
    /// Change a bed's unit or attributes (start-up reconciliation).
    Reconfigure {
        /// The bed.
        bed: BedId,
        /// Its unit.
        unit: UnitId,
        /// Its attributes.
        attributes: BedAttributes,
    },
    /// Remove a vacant bed that left the configuration.
    Decommission {
        /// The bed.
        bed: BedId,
    },
    /// Record the enterprise id the regional EMPI assigned to a patient.
    AssignEid {
        /// The local patient.
        mrn: hms_domain::phi::Mrn,
        /// The enterprise id.
        eid: String,
        /// The downlink position it came from.
        downlink_seq: u64,
    },
    /// Record that someone looked up patients (audit; the board is unchanged).
    RecordPatientSearch {
        /// The caller's role.
        role: String,
        /// `mrn` or `demographics`.
        by: String,
        /// The names of the demographic fields given, never their values.
        fields: Vec<String>,
        /// Patients in the answer.
        results: u32,
    },
    /// Record that an API token was created (audit of `hms-edge token
    /// create`; the board is unchanged).
    RecordTokenCreated {
        /// The token's name.
        name: String,
        /// Its role.
        role: String,
        /// When it expires, if it does.
        expires_at: Option<hms_domain::Timestamp>,
        /// The id of the `auth.sqlite` the change was made in.
        credentials: String,
        /// The change's number in that file.
        change: u64,
    },
    /// Record that an API token was revoked (audit of `hms-edge token
    /// revoke`; the board is unchanged).
    RecordTokenRevoked {
        /// The token's name.
        name: String,
        /// Its role.
        role: String,
        /// The id of the `auth.sqlite` the change was made in.
        credentials: String,
        /// The change's number in that file.
        change: u64,
    },
    /// Record an accepted fleet command (audit; no board change).
    RecordFleetCommand {
        /// Its id.
        id: u64,
        /// What it asked.
        command: String,
    },
    /// Record a step of a signed bundle (audit; no board change): the
    /// fields of [`EventBody::Bundle`].
    RecordBundle {
        /// `config` or `model_set`.
        kind: String,
        /// The bundle's version.
        version: u64,
        /// `applied`, `in_force`, `rolled_back` or `refused`.
        step: String,
        /// The version in force before it.
        previous: Option<u64>,
        /// The bundle file's SHA-256 (hex).
        sha256: String,
        /// Why (refusal, rollback).
        reason: Option<String>,
    },
}

impl Command {
    /// The bed a command names, if it names one.
    pub fn bed(&self) -> Option<&BedId> {
        match self {
            Command::Place { .. } => None,
            Command::Transfer { to, .. } => Some(to),
            Command::Swap { a, .. } => Some(a),
            Command::ReserveTransfer { to, .. } => Some(to),
            Command::MergePatients { .. }
            | Command::AssignEid { .. }
            | Command::RecordPatientSearch { .. }
            | Command::RecordTokenCreated { .. }
            | Command::RecordTokenRevoked { .. }
            | Command::RecordFleetCommand { .. }
            | Command::RecordBundle { .. }
            | Command::ChangeVisit { .. } => None,
            Command::Readmit { bed, .. } => Some(bed),
            Command::Assign { bed, .. }
            | Command::Release { bed, .. }
            | Command::Reserve { bed, .. }
            | Command::CancelReservation { bed, .. }
            | Command::Housekeeping { bed, .. }
            | Command::Block { bed, .. }
            | Command::Unblock { bed, .. }
            | Command::SetIsolation { bed, .. }
            | Command::SetPendingDischarge { bed, .. }
            | Command::Commission { bed, .. }
            | Command::Reconfigure { bed, .. }
            | Command::Decommission { bed } => Some(bed),
        }
    }
}

/// Why the board refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    /// No such bed.
    #[error("unknown bed {0}")]
    UnknownBed(BedId),
    /// No such unit.
    #[error("unknown unit {0}")]
    UnknownUnit(UnitId),
    /// The caller's view of the bed is out of date.
    #[error("bed {bed} is at version {current}, not {expected}")]
    StaleVersion {
        /// The bed.
        bed: BedId,
        /// The version the caller sent.
        expected: u64,
        /// The bed's version.
        current: u64,
    },
    /// The action is not allowed in the bed's state.
    #[error("bed {bed} is {state}: cannot {action}")]
    InvalidTransition {
        /// The bed.
        bed: BedId,
        /// Its state name.
        state: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// The stay already holds another bed.
    #[error("encounter {encounter} already holds bed {bed}")]
    EncounterAlreadyPlaced {
        /// The stay.
        encounter: EncounterId,
        /// The bed it holds.
        bed: BedId,
    },
    /// The stay holds no bed.
    #[error("encounter {0} holds no bed")]
    EncounterNotPlaced(EncounterId),
    /// No bed of the unit is free and matches the requirements.
    #[error("no bed available in unit {unit} matching the requirements")]
    NoBedAvailable {
        /// The unit.
        unit: UnitId,
    },
    /// The bed already exists (commissioning).
    #[error("bed {0} already exists")]
    DuplicateBed(BedId),
    /// A change in the log does not fit the board (replay of a corrupt log).
    #[error("event does not apply to the board: {0}")]
    Inconsistent(String),
}

impl BoardError {
    /// The bed the error is about, if any (to return its current state).
    pub fn bed(&self) -> Option<&BedId> {
        match self {
            Self::UnknownBed(b)
            | Self::StaleVersion { bed: b, .. }
            | Self::InvalidTransition { bed: b, .. }
            | Self::DuplicateBed(b) => Some(b),
            Self::EncounterAlreadyPlaced { bed, .. } => Some(bed),
            _ => None,
        }
    }
}

/// Beds per chunk of [`Beds`].
const CHUNK: usize = 64;

/// The beds of a board, in insertion order: a vector of shared chunks, so
/// that a view is cloned by copying a pointer per chunk (not per bed), and
/// a change copies only its own chunk, and only while a published view
/// still holds it (copy on write).
#[derive(Debug, Clone, Default)]
pub struct Beds {
    chunks: Vec<Arc<Vec<Arc<Bed>>>>,
    len: usize,
}

impl Beds {
    /// Number of beds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a bed.
    pub fn push(&mut self, bed: Arc<Bed>) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
        }
        if let Some(last) = self.chunks.last_mut() {
            Arc::make_mut(last).push(bed);
            self.len += 1;
        }
    }

    /// Bed `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&Arc<Bed>> {
        self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK))
    }

    /// Every bed, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Bed>> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

impl std::ops::Index<usize> for Beds {
    type Output = Arc<Bed>;
    fn index(&self, i: usize) -> &Arc<Bed> {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl std::ops::IndexMut<usize> for Beds {
    /// The bed's slot, its chunk copied first if a view still shares it.
    fn index_mut(&mut self, i: usize) -> &mut Arc<Bed> {
        &mut Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK]
    }
}

/// An immutable, cheaply cloned picture of the board for readers.
#[derive(Debug, Clone, Default)]
pub struct BoardView {
    beds: Beds,
    /// Stays that hold one bed and have another reserved (pending transfer).
    transfers: Arc<HashMap<EncounterId, usize>>,
    index: Arc<HashMap<BedId, usize>>,
    units: Arc<BTreeMap<UnitId, Vec<usize>>>,
}

impl BoardView {
    /// One bed.
    pub fn bed(&self, id: &str) -> Option<&Arc<Bed>> {
        self.index.get(id).map(|&i| &self.beds[i])
    }

    /// The units that have beds, in id order.
    pub fn unit_ids(&self) -> impl Iterator<Item = &UnitId> {
        self.units.keys()
    }

    /// The beds of a unit, in bed id order; `None` for a unit with no beds.
    pub fn unit_beds(&self, unit: &str) -> Option<impl Iterator<Item = &Arc<Bed>>> {
        self.units
            .get(unit)
            .map(|idx| idx.iter().map(|&i| &self.beds[i]))
    }

    /// Census of a unit.
    pub fn census(&self, unit: &str) -> Option<Census> {
        let beds = self.unit_beds(unit)?;
        let mut c = Census::default();
        for b in beds {
            c.count(b, &self.transfers);
        }
        Some(c)
    }

    /// All beds, in insertion order.
    pub fn beds(&self) -> impl Iterator<Item = &Arc<Bed>> {
        self.beds.iter()
    }

    /// The bed a placement in `unit` with `req` would take now (what
    /// [`Command::Place`] commits), without taking it: a proposal.
    pub fn propose(&self, unit: &UnitId, req: &Requirements) -> Result<&Arc<Bed>, BoardError> {
        self.best_bed(unit, req).map(|i| &self.beds[i])
    }

    /// Picks the best free bed of `unit` for `req`: vacant and clean, every
    /// requirement met, no mixed-sex room, and the fewest special capabilities
    /// wasted on a patient who does not need them; ties go to the lowest bed id.
    fn best_bed(&self, unit: &UnitId, req: &Requirements) -> Result<usize, BoardError> {
        let idx = self
            .units
            .get(unit)
            .ok_or_else(|| BoardError::UnknownUnit(unit.clone()))?;
        let beds = &self.beds;
        let mut best: Option<(u32, usize)> = None;
        for &i in idx {
            let b = &beds[i];
            let a = &b.attributes;
            if b.state != BedState::VacantClean
                || !a.gender.admits(req.sex)
                || (req.isolation && !a.isolation_capable)
                || req.level_of_care.is_some_and(|l| l != a.level_of_care)
                || (req.telemetry && !a.telemetry)
                || (req.bariatric && !a.bariatric)
            {
                continue;
            }
            let clash = room_mates(b, idx, beds).any(|o| {
                req.isolation
                    || o.isolation
                    || match (req.sex, o.patient.as_ref().and_then(|p| p.sex)) {
                        (Some(x), Some(y)) => x != y && x != Sex::Other && y != Sex::Other,
                        _ => false,
                    }
            });
            if clash {
                continue;
            }
            let waste = u32::from(a.isolation_capable && !req.isolation) * 4
                + u32::from(a.telemetry && !req.telemetry) * 2
                + u32::from(a.bariatric && !req.bariatric) * 2
                + u32::from(a.gender != GenderRestriction::Any && req.sex.is_none());
            if best.is_none_or(|(w, _)| waste < w) {
                best = Some((waste, i));
            }
        }
        best.map(|(_, i)| i)
            .ok_or_else(|| BoardError::NoBedAvailable { unit: unit.clone() })
    }

    /// Number of beds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the board has no beds.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// The live board.
#[derive(Debug, Clone, Default)]
pub struct Board {
    view: BoardView,
    /// Which bed each stay holds (occupied or reserved).
    encounters: HashMap<EncounterId, usize>,
}

impl PartialEq for Board {
    fn eq(&self, other: &Self) -> bool {
        let mine: BTreeMap<_, _> = self.view.beds().map(|b| (&b.id, &**b)).collect();
        let theirs: BTreeMap<_, _> = other.view.beds().map(|b| (&b.id, &**b)).collect();
        mine == theirs
    }
}

/// The other beds of `bed`'s room (within the unit) that a stay holds.
fn room_mates<'a>(
    bed: &'a Bed,
    unit_beds: &'a [usize],
    beds: &'a Beds,
) -> impl Iterator<Item = &'a Bed> + 'a {
    unit_beds.iter().map(move |&j| &*beds[j]).filter(move |o| {
        o.id != bed.id
            && bed.attributes.room.is_some()
            && o.attributes.room == bed.attributes.room
            && o.state.encounter().is_some()
    })
}

fn check_version(bed: &Bed, expected: Option<u64>) -> Result<(), BoardError> {
    match expected {
        Some(v) if v != bed.version => Err(BoardError::StaleVersion {
            bed: bed.id.clone(),
            expected: v,
            current: bed.version,
        }),
        _ => Ok(()),
    }
}

fn invalid(bed: &Bed, action: &'static str) -> BoardError {
    BoardError::InvalidTransition {
        bed: bed.id.clone(),
        state: bed.state.name(),
        action,
    }
}

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a board from stored beds (the projection), e.g. at start-up.
    pub fn from_beds(beds: impl IntoIterator<Item = Bed>) -> Result<Self, BoardError> {
        let mut board = Self::new();
        for bed in beds {
            board.insert(bed)?;
        }
        Ok(board)
    }

    /// The immutable view for readers.
    pub fn view(&self) -> BoardView {
        self.view.clone()
    }

    /// One bed.
    pub fn bed(&self, id: &str) -> Option<&Bed> {
        self.view.bed(id).map(|b| &**b)
    }

    /// One bed, shared with the views that hold it.
    pub fn shared(&self, id: &str) -> Option<Arc<Bed>> {
        self.view.bed(id).cloned()
    }

    /// The bed held for a stay's pending transfer.
    pub fn transfer_of(&self, encounter: &EncounterId) -> Option<&Bed> {
        self.view
            .transfers
            .get(encounter)
            .map(|&i| &*self.view.beds[i])
    }

    /// The bed a stay holds.
    pub fn bed_of(&self, encounter: &EncounterId) -> Option<&Bed> {
        self.encounters.get(encounter).map(|&i| &*self.view.beds[i])
    }

    fn insert(&mut self, bed: Bed) -> Result<(), BoardError> {
        if self.view.index.contains_key(&bed.id) {
            return Err(BoardError::DuplicateBed(bed.id));
        }
        let i = self.view.beds.len();
        if let Some(e) = bed.state.encounter() {
            match self.encounters.get(e).copied() {
                None => {
                    self.encounters.insert(e.clone(), i);
                }
                // One occupied and one reserved bed: a pending transfer.
                Some(other) if !self.view.transfers.contains_key(e) => {
                    let other_reserved =
                        matches!(self.view.beds[other].state, BedState::Reserved { .. });
                    let this_reserved = matches!(bed.state, BedState::Reserved { .. });
                    let transfers = Arc::make_mut(&mut self.view.transfers);
                    match (other_reserved, this_reserved) {
                        (false, true) => {
                            transfers.insert(e.clone(), i);
                        }
                        (true, false) => {
                            transfers.insert(e.clone(), other);
                            self.encounters.insert(e.clone(), i);
                        }
                        _ => {
                            return Err(BoardError::EncounterAlreadyPlaced {
                                encounter: e.clone(),
                                bed: self.view.beds[other].id.clone(),
                            });
                        }
                    }
                }
                Some(other) => {
                    return Err(BoardError::EncounterAlreadyPlaced {
                        encounter: e.clone(),
                        bed: self.view.beds[other].id.clone(),
                    });
                }
            }
        }
        Arc::make_mut(&mut self.view.index).insert(bed.id.clone(), i);
        let unit = bed.unit.clone();
        self.view.beds.push(Arc::new(bed));
        let beds = &self.view.beds;
        let list = Arc::make_mut(&mut self.view.units).entry(unit).or_default();
        list.push(i);
        list.sort_by(|&a, &b| beds[a].id.cmp(&beds[b].id));
        Ok(())
    }

    fn remove(&mut self, id: &BedId) -> Result<(), BoardError> {
        let i = *self
            .view
            .index
            .get(id)
            .ok_or_else(|| BoardError::UnknownBed(id.clone()))?;
        // Rebuild without the bed: decommissioning is rare (start-up only).
        let beds: Vec<Bed> = self
            .view
            .beds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, b)| (**b).clone())
            .collect();
        *self = Self::from_beds(beds)?;
        Ok(())
    }

    fn idx(&self, id: &BedId) -> Result<usize, BoardError> {
        self.view
            .index
            .get(id)
            .copied()
            .ok_or_else(|| BoardError::UnknownBed(id.clone()))
    }

    fn get(&self, id: &BedId) -> Result<&Bed, BoardError> {
        Ok(&self.view.beds[self.idx(id)?])
    }

    /// The bed, if the caller's expected version (when given) is current.
    fn checked(&self, id: &BedId, expected: Option<u64>) -> Result<&Bed, BoardError> {
        let b = self.get(id)?;
        check_version(b, expected)?;
        Ok(b)
    }

    fn ensure_free(
        &self,
        encounter: &EncounterId,
        except: Option<&BedId>,
    ) -> Result<(), BoardError> {
        if let Some(&i) = self.encounters.get(encounter) {
            let held = &self.view.beds[i];
            if Some(&held.id) != except {
                return Err(BoardError::EncounterAlreadyPlaced {
                    encounter: encounter.clone(),
                    bed: held.id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Validates and applies a command, returning the changes it made.
    pub fn apply(&mut self, cmd: Command, at: Timestamp) -> Result<Vec<EventBody>, BoardError> {
        let changes = self.plan(cmd)?;
        if changes.len() > 1 {
            // All or nothing: a later change failing must not leave earlier ones.
            let backup = self.clone();
            for c in &changes {
                if let Err(e) = self.apply_change(c, at) {
                    *self = backup;
                    return Err(e);
                }
            }
        } else {
            for c in &changes {
                self.apply_change(c, at)?;
            }
        }
        Ok(changes)
    }

    fn state_change(
        bed: &Bed,
        transition: Transition,
        state: BedState,
        patient: Option<PatientRef>,
    ) -> EventBody {
        // The stay that held the bed and does not hold it after the change.
        let ended = bed
            .state
            .encounter()
            .filter(|e| state.encounter() != Some(*e))
            .cloned();
        EventBody::BedStateChanged {
            bed: bed.id.clone(),
            version: bed.version + 1,
            transition,
            state,
            patient,
            ended,
            isolation: None,
        }
    }

    /// Decides what a command changes, without changing anything.
    fn plan(&self, cmd: Command) -> Result<Vec<EventBody>, BoardError> {
        use BedState as S;
        Ok(match cmd {
            Command::Assign {
                bed,
                encounter,
                patient,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                match &b.state {
                    S::VacantClean => self.ensure_free(&encounter, None)?,
                    S::Reserved { encounter: e } if *e == encounter => {}
                    _ => return Err(invalid(b, "assign")),
                }
                vec![Self::state_change(
                    b,
                    Transition::Assigned,
                    S::Occupied { encounter },
                    patient,
                )]
            }
            Command::Place {
                unit,
                encounter,
                patient,
                requirements,
            } => {
                self.ensure_free(&encounter, None)?;
                // The patient's recorded sex counts when the request names none.
                let requirements = Requirements {
                    sex: requirements
                        .sex
                        .or_else(|| patient.as_ref().and_then(|p| p.sex)),
                    ..requirements
                };
                let i = self.view.best_bed(&unit, &requirements)?;
                let b = &self.view.beds[i];
                let patient = patient.map(|mut p| {
                    if p.sex.is_none() {
                        p.sex = requirements.sex;
                    }
                    p
                });
                let mut change =
                    Self::state_change(b, Transition::Placed, S::Occupied { encounter }, patient);
                // A stay placed for isolation puts the bed under isolation, so
                // later placements keep others out of the room.
                if requirements.isolation
                    && !b.isolation
                    && let EventBody::BedStateChanged { isolation, .. } = &mut change
                {
                    *isolation = Some(true);
                }
                vec![change]
            }
            Command::Release {
                bed,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                if !matches!(b.state, S::Occupied { .. }) {
                    return Err(invalid(b, "release"));
                }
                vec![Self::state_change(
                    b,
                    Transition::Released,
                    S::VacantDirty,
                    None,
                )]
            }
            Command::Reserve {
                bed,
                encounter,
                patient,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                if b.state != S::VacantClean {
                    return Err(invalid(b, "reserve"));
                }
                self.ensure_free(&encounter, None)?;
                vec![Self::state_change(
                    b,
                    Transition::Reserved,
                    S::Reserved { encounter },
                    patient,
                )]
            }
            Command::CancelReservation {
                bed,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                let S::Reserved { encounter } = &b.state else {
                    return Err(invalid(b, "cancel the reservation of"));
                };
                let mut change =
                    Self::state_change(b, Transition::ReservationCancelled, S::VacantClean, None);
                // Cancelling a pending transfer does not end the stay.
                let transfer_hold = self
                    .view
                    .transfers
                    .get(encounter)
                    .map(|&i| &self.view.beds[i].id)
                    == Some(&b.id);
                if transfer_hold && let EventBody::BedStateChanged { ended, .. } = &mut change {
                    *ended = None;
                }
                vec![change]
            }
            Command::Housekeeping {
                bed,
                to,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                let (transition, state, action) = match to {
                    Housekeeping::Dirty => (Transition::MarkedDirty, S::VacantDirty, "mark dirty"),
                    Housekeeping::Cleaning => {
                        (Transition::CleaningStarted, S::Cleaning, "start cleaning")
                    }
                    Housekeeping::Clean => (Transition::Cleaned, S::VacantClean, "mark clean"),
                };
                let ok = matches!(
                    (&b.state, to),
                    (S::VacantClean, Housekeeping::Dirty)
                        | (S::VacantDirty, Housekeeping::Cleaning)
                        | (S::VacantDirty, Housekeeping::Clean)
                        | (S::Cleaning, Housekeeping::Clean)
                );
                if !ok {
                    return Err(invalid(b, action));
                }
                vec![Self::state_change(b, transition, state, None)]
            }
            Command::Block {
                bed,
                reason,
                until,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                if !matches!(b.state, S::VacantClean | S::VacantDirty | S::Cleaning) {
                    return Err(invalid(b, "block"));
                }
                vec![Self::state_change(
                    b,
                    Transition::Blocked,
                    S::Blocked { reason, until },
                    None,
                )]
            }
            Command::Unblock {
                bed,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                if !matches!(b.state, S::Blocked { .. }) {
                    return Err(invalid(b, "unblock"));
                }
                vec![Self::state_change(
                    b,
                    Transition::Unblocked,
                    S::VacantDirty,
                    None,
                )]
            }
            Command::SetIsolation {
                bed,
                isolation,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                if b.isolation == isolation {
                    return Ok(vec![]);
                }
                vec![EventBody::BedIsolationChanged {
                    bed,
                    version: b.version + 1,
                    isolation,
                }]
            }
            Command::SetPendingDischarge {
                bed,
                pending,
                expected_version,
            } => {
                let b = self.checked(&bed, expected_version)?;
                if pending && !matches!(b.state, S::Occupied { .. }) {
                    return Err(invalid(b, "expect a discharge from"));
                }
                if b.pending_discharge == pending {
                    return Ok(vec![]);
                }
                vec![EventBody::BedPendingDischargeChanged {
                    bed,
                    version: b.version + 1,
                    pending,
                }]
            }
            Command::Transfer {
                encounter,
                to,
                patient,
                allow_unclean,
            } => {
                let &from_i = self
                    .encounters
                    .get(&encounter)
                    .ok_or_else(|| BoardError::EncounterNotPlaced(encounter.clone()))?;
                let from = &self.view.beds[from_i];
                let target = self.get(&to)?;
                if from.id == target.id {
                    return Ok(vec![]);
                }
                if !matches!(from.state, S::Occupied { .. }) {
                    return Err(invalid(from, "transfer out of"));
                }
                match &target.state {
                    S::VacantClean => {}
                    S::VacantDirty | S::Cleaning if allow_unclean => {}
                    S::Reserved { encounter: e } if *e == encounter => {}
                    _ => return Err(invalid(target, "transfer into")),
                }
                let patient = patient.or_else(|| from.patient.clone());
                vec![
                    Self::state_change(from, Transition::TransferredOut, S::VacantDirty, None),
                    Self::state_change(
                        target,
                        Transition::TransferredIn,
                        S::Occupied { encounter },
                        patient,
                    ),
                ]
            }
            Command::ReserveTransfer { encounter, to } => {
                let from = self
                    .encounters
                    .get(&encounter)
                    .map(|&i| &*self.view.beds[i])
                    .filter(|b| matches!(b.state, S::Occupied { .. }))
                    .ok_or_else(|| BoardError::EncounterNotPlaced(encounter.clone()))?;
                if let Some(&held) = self.view.transfers.get(&encounter) {
                    return Err(BoardError::EncounterAlreadyPlaced {
                        encounter,
                        bed: self.view.beds[held].id.clone(),
                    });
                }
                let target = self.get(&to)?;
                if target.state != S::VacantClean {
                    return Err(invalid(target, "hold for a transfer"));
                }
                vec![Self::state_change(
                    target,
                    Transition::TransferReserved,
                    S::Reserved { encounter },
                    from.patient.clone(),
                )]
            }
            Command::Swap { a, b } => {
                let (x, y) = (self.get(&a)?, self.get(&b)?);
                for bed in [x, y] {
                    if !matches!(bed.state, S::Occupied { .. }) {
                        return Err(invalid(bed, "swap"));
                    }
                }
                if x.id == y.id {
                    return Ok(vec![]);
                }
                vec![EventBody::BedsSwapped {
                    bed: a,
                    version: x.version + 1,
                    other: b,
                    other_version: y.version + 1,
                }]
            }
            Command::MergePatients { from, into } => {
                if from == into.mrn {
                    return Ok(vec![]);
                }
                vec![EventBody::PatientsMerged { from, into }]
            }
            Command::ChangeVisit { from, to, patient } => {
                if from != to {
                    self.ensure_free(&to, None)?;
                    if let Some(t) = self.transfer_of(&to) {
                        return Err(BoardError::EncounterAlreadyPlaced {
                            encounter: to,
                            bed: t.id.clone(),
                        });
                    }
                }
                let beds: Vec<hms_domain::HeldBed> = [self.bed_of(&from), self.transfer_of(&from)]
                    .into_iter()
                    .flatten()
                    .map(|b| hms_domain::HeldBed {
                        bed: b.id.clone(),
                        version: b.version + 1,
                    })
                    .collect();
                let unchanged = from == to
                    && [self.bed_of(&from), self.transfer_of(&from)]
                        .into_iter()
                        .flatten()
                        .all(|b| b.patient.as_ref() == Some(&patient));
                if unchanged {
                    return Ok(vec![]);
                }
                vec![EventBody::VisitChanged {
                    from,
                    to,
                    patient,
                    beds,
                }]
            }
            Command::Readmit {
                bed,
                encounter,
                patient,
            } => {
                let b = self.get(&bed)?;
                if !matches!(b.state, S::VacantClean | S::VacantDirty | S::Cleaning) {
                    return Err(invalid(b, "readmit into"));
                }
                self.ensure_free(&encounter, None)?;
                vec![Self::state_change(
                    b,
                    Transition::Readmitted,
                    S::Occupied { encounter },
                    patient,
                )]
            }
            Command::Commission {
                bed,
                unit,
                attributes,
            } => {
                if self.view.index.contains_key(&bed) {
                    return Err(BoardError::DuplicateBed(bed));
                }
                vec![EventBody::BedCommissioned {
                    bed,
                    unit,
                    attributes,
                }]
            }
            Command::Reconfigure {
                bed,
                unit,
                attributes,
            } => {
                let b = self.get(&bed)?;
                if b.unit == unit && b.attributes == attributes {
                    return Ok(vec![]);
                }
                vec![EventBody::BedReconfigured {
                    bed,
                    unit,
                    attributes,
                }]
            }
            Command::Decommission { bed } => {
                let b = self.get(&bed)?;
                if b.state.encounter().is_some() {
                    return Err(invalid(b, "decommission"));
                }
                vec![EventBody::BedDecommissioned { bed }]
            }
            Command::AssignEid {
                mrn,
                eid,
                downlink_seq,
            } => vec![EventBody::EidAssigned {
                mrn,
                eid,
                downlink_seq,
            }],
            Command::RecordPatientSearch {
                role,
                by,
                fields,
                results,
            } => vec![EventBody::PatientsSearched {
                role,
                by,
                fields,
                results,
            }],
            Command::RecordTokenCreated {
                name,
                role,
                expires_at,
                credentials,
                change,
            } => vec![EventBody::TokenCreated {
                name,
                role,
                expires_at,
                credentials,
                change,
            }],
            Command::RecordTokenRevoked {
                name,
                role,
                credentials,
                change,
            } => vec![EventBody::TokenRevoked {
                name,
                role,
                credentials,
                change,
            }],
            Command::RecordFleetCommand { id, command } => {
                vec![EventBody::FleetCommand { id, command }]
            }
            Command::RecordBundle {
                kind,
                version,
                step,
                previous,
                sha256,
                reason,
            } => vec![EventBody::Bundle {
                kind,
                version,
                step,
                previous,
                sha256,
                reason,
            }],
        })
    }

    /// Applies one recorded change (live or from the log).
    pub fn apply_change(&mut self, change: &EventBody, at: Timestamp) -> Result<(), BoardError> {
        match change {
            EventBody::BedCommissioned {
                bed,
                unit,
                attributes,
            } => self.insert(Bed {
                id: bed.clone(),
                unit: unit.clone(),
                attributes: attributes.clone(),
                state: BedState::VacantClean,
                isolation: false,
                pending_discharge: false,
                version: 1,
                since: at,
                patient: None,
            }),
            EventBody::BedReconfigured {
                bed,
                unit,
                attributes,
            } => {
                let mut b = self.get(bed)?.clone();
                b.unit = unit.clone();
                b.attributes = attributes.clone();
                b.version += 1;
                if *unit != self.get(bed)?.unit {
                    self.remove(bed)?;
                    self.insert(b)
                } else {
                    let i = self.idx(bed)?;
                    self.view.beds[i] = Arc::new(b);
                    Ok(())
                }
            }
            EventBody::BedDecommissioned { bed } => self.remove(bed),
            EventBody::BedStateChanged {
                bed,
                version,
                state,
                patient,
                isolation,
                transition,
                ..
            } => {
                let i = self.idx(bed)?;
                let old_enc = self.view.beds[i].state.encounter().cloned();
                let new_enc = state.encounter().cloned();
                let pending_transfer = *transition == Transition::TransferReserved;
                if let Some(e) = &new_enc
                    && !pending_transfer
                    && self.encounters.get(e).is_some_and(|&j| j != i)
                {
                    return Err(BoardError::Inconsistent(format!(
                        "encounter {e} would hold two beds"
                    )));
                }
                let b = Arc::make_mut(&mut self.view.beds[i]);
                b.patient = match (&new_enc, patient) {
                    (None, _) => None,
                    (Some(_), Some(p)) => Some(p.clone()),
                    (Some(e), None) if old_enc.as_ref() == Some(e) => b.patient.take(),
                    (Some(_), None) => None,
                };
                if !matches!(state, BedState::Occupied { .. }) {
                    b.pending_discharge = false;
                }
                if let Some(iso) = isolation {
                    b.isolation = *iso;
                }
                b.state = state.clone();
                b.version = *version;
                b.since = at;
                if let Some(e) = old_enc {
                    if self.encounters.get(&e) == Some(&i) {
                        self.encounters.remove(&e);
                    }
                    if self.view.transfers.get(&e) == Some(&i) {
                        Arc::make_mut(&mut self.view.transfers).remove(&e);
                    }
                }
                match new_enc {
                    Some(e) if pending_transfer => {
                        Arc::make_mut(&mut self.view.transfers).insert(e, i);
                    }
                    Some(e) => {
                        self.encounters.insert(e, i);
                    }
                    None => {}
                }
                Ok(())
            }
            EventBody::BedIsolationChanged {
                bed,
                version,
                isolation,
            } => {
                let i = self.idx(bed)?;
                let b = Arc::make_mut(&mut self.view.beds[i]);
                b.isolation = *isolation;
                b.version = *version;
                Ok(())
            }
            EventBody::BedPendingDischargeChanged {
                bed,
                version,
                pending,
            } => {
                let i = self.idx(bed)?;
                let b = Arc::make_mut(&mut self.view.beds[i]);
                b.pending_discharge = *pending;
                b.version = *version;
                Ok(())
            }
            EventBody::BedsSwapped {
                bed,
                version,
                other,
                other_version,
            } => {
                let (i, j) = (self.idx(bed)?, self.idx(other)?);
                let (ea, eb) = (
                    self.view.beds[i].state.encounter().cloned(),
                    self.view.beds[j].state.encounter().cloned(),
                );
                let (Some(ea), Some(eb)) = (ea, eb) else {
                    return Err(BoardError::Inconsistent(
                        "swap of a bed without a stay".into(),
                    ));
                };
                let (pa, pb) = (
                    self.view.beds[i].patient.clone(),
                    self.view.beds[j].patient.clone(),
                );
                for (k, enc, pat, ver) in [(i, &eb, pb, *version), (j, &ea, pa, *other_version)] {
                    let b = Arc::make_mut(&mut self.view.beds[k]);
                    b.state = BedState::Occupied {
                        encounter: enc.clone(),
                    };
                    b.patient = pat;
                    b.pending_discharge = false;
                    b.version = ver;
                    b.since = at;
                }
                self.encounters.insert(ea, j);
                self.encounters.insert(eb, i);
                Ok(())
            }
            EventBody::PatientsMerged { from, into } => {
                // Only the chunks of the beds that change are copied.
                let merged: Vec<usize> = (0..self.view.beds.len())
                    .filter(|&i| {
                        self.view.beds[i]
                            .patient
                            .as_ref()
                            .is_some_and(|p| p.mrn == *from)
                    })
                    .collect();
                for i in merged {
                    Arc::make_mut(&mut self.view.beds[i]).patient = Some(into.clone());
                }
                Ok(())
            }
            EventBody::VisitChanged {
                from,
                to,
                patient,
                beds,
            } => {
                for held in beds {
                    let i = self.idx(&held.bed)?;
                    let b = Arc::make_mut(&mut self.view.beds[i]);
                    b.state = match &b.state {
                        BedState::Occupied { encounter } if encounter == from => {
                            BedState::Occupied {
                                encounter: to.clone(),
                            }
                        }
                        BedState::Reserved { encounter } if encounter == from => {
                            BedState::Reserved {
                                encounter: to.clone(),
                            }
                        }
                        _ => {
                            return Err(BoardError::Inconsistent(format!(
                                "bed {} does not hold visit {from}",
                                held.bed
                            )));
                        }
                    };
                    b.patient = Some(patient.clone());
                    b.version = held.version;
                }
                if let Some(i) = self.encounters.remove(from) {
                    self.encounters.insert(to.clone(), i);
                }
                if self.view.transfers.contains_key(from) {
                    let transfers = Arc::make_mut(&mut self.view.transfers);
                    if let Some(i) = transfers.remove(from) {
                        transfers.insert(to.clone(), i);
                    }
                }
                Ok(())
            }
            EventBody::PatientRecorded { .. }
            | EventBody::Hl7Message { .. }
            | EventBody::Hl7Replayed { .. }
            | EventBody::EidAssigned { .. }
            | EventBody::PatientsSearched { .. }
            | EventBody::TokenCreated { .. }
            | EventBody::TokenRevoked { .. }
            | EventBody::OrCaseChanged { .. }
            | EventBody::OrCasePredicted { .. }
            | EventBody::FleetCommand { .. }
            | EventBody::Bundle { .. }
            | EventBody::ChargePosted { .. }
            | EventBody::ChargeReversed { .. } => Ok(()),
        }
    }

    /// Checks the board's own invariants: no stay in two beds, index coherent.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen: HashMap<&EncounterId, &BedId> = HashMap::new();
        for (i, b) in self.view.beds().enumerate() {
            if let Some(e) = b.state.encounter() {
                if self.view.transfers.get(e) == Some(&i) {
                    // The reserved target of a pending transfer.
                    if !matches!(b.state, BedState::Reserved { .. }) {
                        return Err(format!(
                            "pending transfer of {e} points at a bed not reserved"
                        ));
                    }
                    continue;
                }
                if let Some(other) = seen.insert(e, &b.id) {
                    return Err(format!("encounter {e} holds {other} and {}", b.id));
                }
                match self.encounters.get(e) {
                    Some(&i) if self.view.beds[i].id == b.id => {}
                    _ => return Err(format!("encounter index wrong for {e}")),
                }
            }
        }
        if seen.len() != self.encounters.len() {
            return Err("encounter index has stale entries".into());
        }
        for (e, &i) in self.view.transfers.iter() {
            if self.view.beds.get(i).and_then(|b| b.state.encounter()) != Some(e) {
                return Err(format!("pending transfer of {e} is stale"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
