//! HL7 ADT semantics: what each trigger does to the board and the patient
//! index. Sans-IO: [`plan`] reads a parsed message and the current board and
//! returns board commands, or the reason the message must be parked.
//!
//! Places: a PL value is a configured bed, **off the board** (outside every
//! managed point of care: emergency, clinics, other sites; or not given), or
//! **unknown** (inside a managed point of care, no such room/bed: parked).
//! Off the board, a message is applied to the patient index and visit
//! registry and answered AA. The visit is PV1-19, else derived from PID-3 and
//! PV1-44 ([`visit`]).
//!
//! - A01 admit: occupy PV1-3. A02 transfer: from the visit's bed to PV1-3
//!   (the old bed becomes dirty); from off the board it is an admission to
//!   the board, out of it a release. A03 discharge / A11 cancel admit / A23
//!   delete visit: free the visit's bed (dirty). A13 cancel discharge:
//!   re-occupy the visit's last bed if it is still vacant.
//! - A04 register, A28/A31 person add/update: patient index only. A08 update:
//!   demographics; a changed bed in PV1-3 is a correction move.
//! - A05 pre-admit / A14 pending admit: hold PV1-42 (else PV1-3). A27/A38:
//!   release that hold. A16 / A25: set / clear the expected discharge.
//! - A12 cancel transfer: back to PV1-3 from PV1-6, the bed being dirty or
//!   not; out of order (the visit moved on) it is parked.
//! - A17 swap: both visits' beds exchange, both or neither.
//! - A20 bed status (NPU, table 0116). A06/A07 class change, A09/A10
//!   tracking, A21/A22 leave of absence: the bed stays held.
//! - A40 merge (and A18/A30/A34/A36/A39), A46/A47 identifier change: MRG-1
//!   into PID-3 in the patient index and on the board. A45 move visit, A50
//!   change visit number, A42 merge visit: the visit follows, on its beds.
//! - A15 pending transfer: hold PV1-42 while the visit keeps its bed (the
//!   A02 that follows moves it there); A26: release that hold.
//! - [`NO_EFFECT`] triggers are stored and answered AA.
//! - Anything else is parked with ERR 201, nothing lost, replayable once
//!   supported.

use std::collections::{HashMap, HashSet};

use hms_domain::{
    Address, BedId, BirthDate, EncounterId, Identifier, Mrn, PatientRef, PersonName, Phone, Sex,
};

use crate::board::{Board, Command};
use crate::integration::hl7::{ErrorCode, Location, Message};

/// HL7 location (facility, point of care, room, bed) → configured bed, and
/// which points of care the appliance manages.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    map: HashMap<(String, String, String, String), BedId>,
    /// (facility, point of care) of every configured bed.
    units: HashSet<(String, String)>,
    /// Points of care managed in any facility (`[hl7] managed_points_of_care`).
    extra: HashSet<String>,
}

/// Where a PL value (PV1-3, PV1-6, PV1-42, NPU-1) points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A configured bed.
    Bed(BedId),
    /// Outside every managed point of care (emergency, clinics, other
    /// sites): the visit is known, not on the board.
    OffBoard,
    /// Inside a managed point of care, but no configured room/bed: a
    /// configuration problem someone must fix (the message is parked).
    Unknown,
    /// The field is empty.
    Missing,
}

impl Locations {
    /// From the configuration's bed mappings and `[hl7]` section.
    pub fn from_config(cfg: &firmware_config::Config) -> Self {
        Self::from_pairs(cfg.beds.iter().map(|b| {
            (
                (
                    b.hl7.facility.clone(),
                    b.hl7.point_of_care.clone(),
                    b.hl7.room.clone(),
                    b.hl7.bed.clone(),
                ),
                b.id.clone(),
            )
        }))
        .managing(cfg.hl7.managed_points_of_care.iter().cloned())
    }

    /// From `((facility, point of care, room, bed), bed id)` pairs.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = ((String, String, String, String), BedId)>,
    ) -> Self {
        let map: HashMap<_, _> = pairs.into_iter().collect();
        let units = map
            .keys()
            .map(|(facility, poc, _, _)| (facility.clone(), poc.clone()))
            .collect();
        Self {
            map,
            units,
            extra: HashSet::new(),
        }
    }

    /// Also manages these points of care, in any facility.
    pub fn managing(mut self, points_of_care: impl IntoIterator<Item = String>) -> Self {
        self.extra.extend(points_of_care);
        self
    }

    /// Where a PL value (components: point of care, room, bed, facility) points.
    pub fn place(&self, m: &Message, raw_pl: &str) -> Place {
        let c = |n| m.component(raw_pl, n, 1).unwrap_or_default();
        let (poc, room, bed, facility) = (c(1), c(2), c(3), c(4));
        if poc.is_empty() && room.is_empty() && bed.is_empty() && facility.is_empty() {
            return Place::Missing;
        }
        if let Some(b) = self.map.get(&(facility.clone(), poc.clone(), room, bed)) {
            return Place::Bed(b.clone());
        }
        if self.extra.contains(&poc) || self.units.contains(&(facility, poc)) {
            Place::Unknown
        } else {
            Place::OffBoard
        }
    }
}

/// What a message does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Board commands, applied all or nothing.
    pub commands: Vec<Command>,
    /// Patient demographics to record.
    pub patient: Option<PatientRef>,
    /// The rest of the patient index entry: identifiers, address, phone, visit.
    pub details: Details,
}

/// Patient index details beyond [`PatientRef`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    /// PID-3, every repetition.
    pub identifiers: Vec<Identifier>,
    /// PID-11.
    pub address: Option<Address>,
    /// PID-13.
    pub phone: Option<Phone>,
    /// PV1-19.
    pub visit: Option<EncounterId>,
    /// PV1-2.
    pub class: Option<String>,
}

/// Reads the patient index details of a message.
pub fn details(m: &Message) -> Details {
    let identifiers = m
        .repetitions("PID", 3)
        .into_iter()
        .filter_map(|r| {
            let id = m.component(r, 1, 1).filter(|s| !s.is_empty())?;
            Some(Identifier {
                id: Mrn::new(id),
                authority: m.component(r, 4, 1).unwrap_or_default(),
                kind: m.component(r, 5, 1).unwrap_or_default(),
            })
        })
        .collect();
    // `street, city, postal code, state, country`, by position: a missing
    // part stays empty so the parts after it keep their meaning (the
    // patient index reads them back by position).
    let address = m.repetitions("PID", 11).first().and_then(|r| {
        let mut parts: Vec<String> = [1, 3, 5, 4, 6]
            .iter()
            .map(|&c| m.component(r, c, 1).unwrap_or_default())
            .collect();
        while parts.last().is_some_and(String::is_empty) {
            parts.pop();
        }
        (!parts.is_empty()).then(|| Address::new(parts.join(", ")))
    });
    let phone = m
        .repetitions("PID", 13)
        .first()
        .and_then(|r| m.component(r, 1, 1).filter(|s| !s.is_empty()))
        .map(Phone::new);
    Details {
        identifiers,
        address,
        phone,
        visit: m.get("PV1-19").and_then(|v| EncounterId::new(v).ok()),
        class: m.get("PV1-2"),
    }
}

/// Why a message cannot be applied (it is parked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HL7 error code for ERR-3.
    pub code: ErrorCode,
    /// ERR-2 location.
    pub location: Option<Location>,
    /// Reason (ids only, no PHI).
    pub reason: String,
}

fn refuse(code: ErrorCode, seg: &str, field: usize, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        location: Some(Location {
            segment: seg.into(),
            sequence: 1,
            field: Some(field),
            component: None,
        }),
        reason: reason.into(),
    }
}

/// Reads the patient from PID: MRN is the PID-3 repetition of type MR (else
/// the first), name `FAMILY, GIVEN` from PID-5, birth date PID-7, sex PID-8.
pub fn patient(m: &Message) -> Result<PatientRef, Refusal> {
    if m.segment("PID", 1).is_none() {
        return Err(refuse(
            ErrorCode::SegmentSequence,
            "PID",
            1,
            "the message has no PID segment",
        ));
    }
    let ids = m.repetitions("PID", 3);
    let pick = ids
        .iter()
        .find(|r| m.component(r, 5, 1).as_deref() == Some("MR"))
        .or(ids.first());
    let mrn = pick
        .and_then(|r| m.component(r, 1, 1))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            refuse(
                ErrorCode::RequiredFieldMissing,
                "PID",
                3,
                "PID-3 (patient identifier) is missing",
            )
        })?;
    let family = m.get("PID-5.1").unwrap_or_default();
    let given = m.get("PID-5.2").unwrap_or_default();
    let name = match (family.is_empty(), given.is_empty()) {
        (true, true) => None,
        (false, true) => Some(family),
        (true, false) => Some(given),
        (false, false) => Some(format!("{family}, {given}")),
    };
    // YYYYMMDD[…] → YYYY-MM-DD, YYYYMM → YYYY-MM; anything else kept as sent.
    let birth_date = m.get("PID-7").map(|d| {
        let digits: String = d.chars().take_while(char::is_ascii_digit).take(8).collect();
        match digits.len() {
            8 => format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..8]),
            6 => format!("{}-{}", &digits[..4], &digits[4..6]),
            4 => digits,
            _ => d,
        }
    });
    let sex = m.get("PID-8").as_deref().and_then(Sex::from_code);
    Ok(PatientRef {
        mrn: Mrn::new(mrn),
        name: name.map(PersonName::new),
        birth_date: birth_date.map(BirthDate::new),
        sex,
    })
}

/// The visit of a message: PV1-19; when PV1-19 is empty, an id derived from
/// the patient (PID-3, as [`patient`] picks it, with its assigning
/// authority) and the admit time (PV1-44): `pv44-` and 20 hex digits of
/// their SHA-256, so no patient identifier shows in the visit id. Later
/// messages with the same PID-3 and PV1-44 find the same visit. With neither,
/// the message is refused (parked).
pub fn visit(m: &Message) -> Result<EncounterId, Refusal> {
    visit_of(m, 1)
}

fn visit_of(m: &Message, occurrence: usize) -> Result<EncounterId, Refusal> {
    let pv1 = m.segment("PV1", occurrence);
    let field = |n: usize| {
        pv1.and_then(|s| s.raw(n))
            .and_then(|r| m.component(r, 1, 1))
            .filter(|v| !v.is_empty())
    };
    let at = |seg: &str, n: usize| Location {
        segment: seg.into(),
        sequence: occurrence,
        field: Some(n),
        component: None,
    };
    if let Some(v) = field(19) {
        return EncounterId::new(v.as_str()).map_err(|e| Refusal {
            code: ErrorCode::DataType,
            location: Some(at("PV1", 19)),
            reason: format!("PV1-19 is not a usable visit id: {e}"),
        });
    }
    let admitted = field(44).ok_or_else(|| Refusal {
        code: ErrorCode::RequiredFieldMissing,
        location: Some(at("PV1", 19)),
        reason: "PV1-19 (visit number) is missing, and so is PV1-44 (admit time) to identify the visit by"
            .into(),
    })?;
    let instant = hms_domain::Timestamp::parse_hl7(&admitted).ok_or_else(|| Refusal {
        code: ErrorCode::DataType,
        location: Some(at("PV1", 44)),
        reason: "PV1-44 (admit time) is not an HL7 date/time".into(),
    })?;
    let pid = m
        .segment("PID", occurrence)
        .and_then(|s| s.raw(3))
        .unwrap_or("");
    let ids: Vec<&str> = if pid.is_empty() {
        vec![]
    } else {
        pid.split(m.delimiters.repetition).collect()
    };
    let pick = ids
        .iter()
        .find(|r| m.component(r, 5, 1).as_deref() == Some("MR"))
        .or(ids.first())
        .and_then(|r| {
            let id = m.component(r, 1, 1).filter(|s| !s.is_empty())?;
            Some((id, m.component(r, 4, 1).unwrap_or_default()))
        })
        .ok_or_else(|| Refusal {
            code: ErrorCode::RequiredFieldMissing,
            location: Some(at("PID", 3)),
            reason: "PV1-19 is missing and PID-3 is empty: the visit cannot be identified".into(),
        })?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        pick.1.as_bytes(),
        pick.0.as_bytes(),
        instant.as_millis().to_string().as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let hex: String = ctx.finish().as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    EncounterId::new(format!("pv44-{hex}")).map_err(|e| Refusal {
        code: ErrorCode::InternalError,
        location: Some(at("PV1", 19)),
        reason: format!("derived visit id: {e}"),
    })
}

/// Where `PV1-field` (first PV1) points.
fn place(m: &Message, loc: &Locations, field: usize) -> Place {
    place_in(m, loc, "PV1", 1, field)
}

fn place_in(m: &Message, loc: &Locations, seg: &str, occurrence: usize, field: usize) -> Place {
    match m
        .segment(seg, occurrence)
        .and_then(|s| s.raw(field))
        .filter(|r| !r.is_empty())
    {
        Some(raw) => loc.place(m, raw),
        None => Place::Missing,
    }
}

fn unknown_place(seg: &str, field: usize) -> Refusal {
    refuse(
        ErrorCode::UnknownKey,
        seg,
        field,
        format!("{seg}-{field} is in a managed point of care but names no configured room/bed"),
    )
}

fn missing_place(seg: &str, field: usize) -> Refusal {
    refuse(
        ErrorCode::RequiredFieldMissing,
        seg,
        field,
        format!("{seg}-{field} (location) is missing"),
    )
}

/// `PV1-field` as a configured bed; `None` off the board. Unknown places in
/// a managed point of care are refused, and so is an empty field unless
/// `missing_ok`.
fn bed_at(
    m: &Message,
    loc: &Locations,
    field: usize,
    missing_ok: bool,
) -> Result<Option<BedId>, Refusal> {
    match place(m, loc, field) {
        Place::Bed(b) => Ok(Some(b)),
        Place::OffBoard => Ok(None),
        Place::Missing if missing_ok => Ok(None),
        Place::Missing => Err(missing_place("PV1", field)),
        Place::Unknown => Err(unknown_place("PV1", field)),
    }
}

/// Whether `PV1-field` says the visit is off the board (outside the managed
/// points of care, or no location given).
fn off_board(m: &Message, loc: &Locations, field: usize) -> bool {
    matches!(place(m, loc, field), Place::OffBoard | Place::Missing)
}

fn holds_no_bed(v: &EncounterId) -> Refusal {
    refuse(
        ErrorCode::UnknownKey,
        "PV1",
        19,
        format!("visit {v} holds no bed"),
    )
}

/// A20: NPU-1 names the bed, NPU-2 its status (table 0116).
fn bed_status(m: &Message, board: &Board, loc: &Locations) -> Result<Plan, Refusal> {
    let bed = match place_in(m, loc, "NPU", 1, 1) {
        Place::Bed(b) => b,
        // A bed of a place the appliance does not manage: nothing to change.
        Place::OffBoard => return Ok(Plan::default()),
        Place::Missing => {
            return Err(refuse(
                ErrorCode::RequiredFieldMissing,
                "NPU",
                1,
                "NPU-1 (bed location) is missing",
            ));
        }
        Place::Unknown => return Err(unknown_place("NPU", 1)),
    };
    let cmd = match m.get("NPU-2").as_deref() {
        Some("C") => Command::Block {
            bed,
            reason: "closed (A20)".into(),
            until: None,
            expected_version: None,
        },
        Some("K") => Command::Block {
            bed,
            reason: "contaminated (A20)".into(),
            until: None,
            expected_version: None,
        },
        Some("H") => Command::Housekeeping {
            bed,
            to: hms_domain::Housekeeping::Dirty,
            expected_version: None,
        },
        Some("U") => match board.bed(bed.as_str()).map(|b| &b.state) {
            Some(hms_domain::BedState::Blocked { .. }) => Command::Unblock {
                bed,
                expected_version: None,
            },
            Some(hms_domain::BedState::VacantClean) => return Ok(Plan::default()),
            _ => Command::Housekeeping {
                bed,
                to: hms_domain::Housekeeping::Clean,
                expected_version: None,
            },
        },
        Some("I") => Command::SetIsolation {
            bed,
            isolation: true,
            expected_version: None,
        },
        Some("O") => return Ok(Plan::default()),
        _ => {
            return Err(refuse(
                ErrorCode::TableValueNotFound,
                "NPU",
                2,
                "NPU-2 is not a bed status of table 0116 (C, H, I, K, O, U)",
            ));
        }
    };
    Ok(Plan {
        commands: vec![cmd],
        patient: None,
        details: Details::default(),
    })
}

/// ADT triggers that are stored and answered AA with no effect on the board
/// or the patient index (the appliance keeps no accounts, links, alternate
/// identifiers, doctors or clinical data), and triggers that are queries.
pub const NO_EFFECT: &[&str] = &[
    "A19", "A24", "A29", "A32", "A33", "A35", "A37", "A41", "A43", "A44", "A48", "A49", "A51",
    "A52", "A53", "A54", "A55", "A60", "A61", "A62",
];

/// Triggers that merge MRG-1 into PID-3 (A40 and its earlier forms) or
/// replace a patient identifier (A46, A47): the same effect on the index.
const MERGES: &[&str] = &["A18", "A30", "A34", "A36", "A39", "A40", "A46", "A47"];

/// MRG-`field` (first repetition, first component).
fn mrg(m: &Message, field: usize) -> Option<String> {
    m.segment("MRG", 1)
        .and_then(|s| s.raw(field))
        .and_then(|r| r.split(m.delimiters.repetition).next().map(str::to_owned))
        .and_then(|r| m.component(&r, 1, 1))
        .filter(|s| !s.is_empty())
}

/// Decides what `m` does. `last_bed` gives the bed a visit last held (from the
/// encounter projection), for cancelled discharges.
pub fn plan(
    m: &Message,
    board: &Board,
    loc: &Locations,
    last_bed: &dyn Fn(&EncounterId) -> Option<BedId>,
) -> Result<Plan, Refusal> {
    let msg_type = m.get("MSH-9.1").unwrap_or_default();
    let trigger = m.get("MSH-9.2").unwrap_or_default();
    if msg_type != "ADT" {
        return Err(refuse(
            ErrorCode::UnsupportedMessageType,
            "MSH",
            9,
            format!("message type {msg_type:?} is not handled"),
        ));
    }
    if NO_EFFECT.contains(&trigger.as_str()) {
        // Stored (the caller records the message itself), nothing else.
        return Ok(Plan::default());
    }
    if trigger == "A20" {
        // Bed status update: no patient involved.
        return bed_status(m, board, loc);
    }
    let p = patient(m)?;
    let mut plan = Plan {
        commands: vec![],
        patient: Some(p.clone()),
        details: details(m),
    };
    if plan.details.visit.is_none() && m.segment("PV1", 1).is_some() {
        // The visit registry knows a visit without PV1-19 by its fallback id.
        plan.details.visit = visit(m).ok();
    }
    match trigger.as_str() {
        "A04" | "A28" | "A31" => {}
        "A01" => {
            let v = visit(m)?;
            // Off the board (emergency, clinics, no location yet): the visit
            // is registered, the board is not touched.
            if let Some(bed) = bed_at(m, loc, 3, true)?
                && board.bed_of(&v).map(|b| &b.id) != Some(&bed)
            {
                // A repeated admit of the same visit into the same bed changes nothing.
                plan.commands.push(Command::Assign {
                    bed,
                    encounter: v,
                    patient: Some(p),
                    expected_version: None,
                });
            }
        }
        "A02" => {
            let v = visit(m)?;
            let to = bed_at(m, loc, 3, false)?;
            match (to, board.bed_of(&v)) {
                (Some(to), Some(cur)) if cur.id != to => plan.commands.push(Command::Transfer {
                    encounter: v,
                    to,
                    patient: Some(p),
                    allow_unclean: false,
                }),
                (Some(_), Some(_)) => {}
                // From off the board into a managed bed: an admission to the board.
                (Some(to), None) => plan.commands.push(Command::Assign {
                    bed: to,
                    encounter: v,
                    patient: Some(p),
                    expected_version: None,
                }),
                // Out of the board: the bed is released (or its hold cancelled).
                (None, Some(cur)) => plan.commands.push(
                    if matches!(cur.state, hms_domain::BedState::Reserved { .. }) {
                        Command::CancelReservation {
                            bed: cur.id.clone(),
                            expected_version: None,
                        }
                    } else {
                        Command::Release {
                            bed: cur.id.clone(),
                            expected_version: None,
                        }
                    },
                ),
                (None, None) => {}
            }
        }
        "A08" => {
            // Demographics; a changed bed in PV1-3 is a correction move. A
            // location off the board leaves the board as it is (A08 is not
            // a movement).
            let v = visit(m)?;
            if let (Some(to), Some(cur)) = (bed_at(m, loc, 3, true)?, board.bed_of(&v))
                && cur.id != to
            {
                plan.commands.push(Command::Transfer {
                    encounter: v,
                    to,
                    patient: Some(p),
                    allow_unclean: false,
                });
            }
        }
        "A03" | "A11" | "A23" => {
            // Discharge, cancel admit, delete visit: the visit leaves its bed.
            let v = visit(m)?;
            match board.bed_of(&v) {
                Some(b) => plan.commands.push(Command::Release {
                    bed: b.id.clone(),
                    expected_version: None,
                }),
                None if off_board(m, loc, 3) => {}
                None => return Err(holds_no_bed(&v)),
            }
        }
        "A13" => {
            let v = visit(m)?;
            if board.bed_of(&v).is_none() {
                match last_bed(&v) {
                    Some(bed) => plan.commands.push(Command::Readmit {
                        bed,
                        encounter: v,
                        patient: Some(p),
                    }),
                    None if off_board(m, loc, 3) => {}
                    None => {
                        return Err(refuse(
                            ErrorCode::UnknownKey,
                            "PV1",
                            19,
                            format!("visit {v} has no discharge to cancel"),
                        ));
                    }
                }
            }
        }
        // Class changes, tracking moves and leaves of absence: the bed stays held.
        "A06" | "A07" | "A09" | "A10" | "A21" | "A22" => {}
        "A05" | "A14" => {
            // Pre-admit / pending admit: hold the pending location (PV1-42),
            // else the assigned one (PV1-3), when either is a managed bed.
            let v = visit(m)?;
            let field = if place(m, loc, 42) == Place::Missing {
                3
            } else {
                42
            };
            if let Some(bed) = bed_at(m, loc, field, true)?
                && board.bed_of(&v).map(|b| &b.id) != Some(&bed)
            {
                plan.commands.push(Command::Reserve {
                    bed,
                    encounter: v,
                    patient: Some(p),
                    expected_version: None,
                });
            }
        }
        "A15" => {
            // Pending transfer: hold PV1-42 for the visit, which keeps its
            // bed; a visit off the board gets the bed held as for an admit.
            let v = visit(m)?;
            if let Some(to) = bed_at(m, loc, 42, false)? {
                match board.bed_of(&v) {
                    Some(_) if board.transfer_of(&v).map(|b| &b.id) == Some(&to) => {}
                    Some(cur) if cur.id == to => {}
                    Some(_) => plan
                        .commands
                        .push(Command::ReserveTransfer { encounter: v, to }),
                    None => plan.commands.push(Command::Reserve {
                        bed: to,
                        encounter: v,
                        patient: Some(p),
                        expected_version: None,
                    }),
                }
            }
        }
        "A26" => {
            // Cancel pending transfer: release the held bed.
            let v = visit(m)?;
            let held = board.transfer_of(&v).or_else(|| {
                board
                    .bed_of(&v)
                    .filter(|b| matches!(b.state, hms_domain::BedState::Reserved { .. }))
            });
            match held {
                Some(b) => plan.commands.push(Command::CancelReservation {
                    bed: b.id.clone(),
                    expected_version: None,
                }),
                None if off_board(m, loc, 42) => {}
                None => {
                    return Err(refuse(
                        ErrorCode::UnknownKey,
                        "PV1",
                        19,
                        format!("visit {v} has no pending transfer"),
                    ));
                }
            }
        }
        "A27" | "A38" => {
            // Cancel pending admit / pre-admit: release the hold, if any.
            let v = visit(m)?;
            if let Some(b) = board.bed_of(&v) {
                if !matches!(b.state, hms_domain::BedState::Reserved { .. }) {
                    return Err(refuse(
                        ErrorCode::ApplicationError,
                        "PV1",
                        19,
                        format!("visit {v} is already in bed {}; nothing to cancel", b.id),
                    ));
                }
                plan.commands.push(Command::CancelReservation {
                    bed: b.id.clone(),
                    expected_version: None,
                });
            }
        }
        "A16" | "A25" => {
            // Pending discharge / its cancellation: the expected-discharge flag.
            let v = visit(m)?;
            match board.bed_of(&v) {
                Some(b) => plan.commands.push(Command::SetPendingDischarge {
                    bed: b.id.clone(),
                    pending: trigger == "A16",
                    expected_version: None,
                }),
                None if off_board(m, loc, 3) => {}
                None => return Err(holds_no_bed(&v)),
            }
        }
        "A12" => {
            // Cancel transfer: back to PV1-3 (the location before the
            // transfer) from PV1-6 (the location being cancelled). If the
            // visit has moved on since (a later move arrived first), the
            // cancel is out of order and parked.
            let v = visit(m)?;
            let back = bed_at(m, loc, 3, false)?;
            let cancelled = place(m, loc, 6);
            let out_of_order = |cur: &BedId| {
                refuse(
                    ErrorCode::ApplicationError,
                    "PV1",
                    6,
                    format!(
                        "visit {v} is in bed {cur}, not in the transfer being cancelled; a later move arrived first"
                    ),
                )
            };
            match (back, board.bed_of(&v)) {
                (Some(back), Some(cur)) if cur.id == back => {}
                (Some(back), Some(cur)) => {
                    if cancelled != Place::Bed(cur.id.clone()) {
                        if cancelled == Place::Unknown {
                            return Err(unknown_place("PV1", 6));
                        }
                        return Err(out_of_order(&cur.id));
                    }
                    plan.commands.push(Command::Transfer {
                        encounter: v,
                        to: back,
                        patient: Some(p),
                        allow_unclean: true,
                    });
                }
                // The cancelled transfer took the visit off the board: back in.
                (Some(back), None) if matches!(cancelled, Place::OffBoard | Place::Missing) => {
                    plan.commands.push(Command::Readmit {
                        bed: back,
                        encounter: v,
                        patient: Some(p),
                    });
                }
                (Some(_), None) => return Err(holds_no_bed(&v)),
                // The cancelled transfer brought the visit onto the board: out again.
                (None, Some(cur)) => {
                    if cancelled != Place::Bed(cur.id.clone()) {
                        return Err(out_of_order(&cur.id));
                    }
                    plan.commands.push(Command::Release {
                        bed: cur.id.clone(),
                        expected_version: None,
                    });
                }
                (None, None) => {}
            }
        }
        "A17" => {
            // Swap: the second PID/PV1 pair names the other patient.
            let a = visit(m)?;
            if m.segment("PV1", 2).is_none() {
                return Err(Refusal {
                    code: ErrorCode::RequiredFieldMissing,
                    location: Some(Location {
                        segment: "PV1".into(),
                        sequence: 2,
                        field: Some(19),
                        component: None,
                    }),
                    reason: "A17 needs a second PV1 with a visit number".into(),
                });
            }
            let b = visit_of(m, 2)?;
            match (board.bed_of(&a), board.bed_of(&b)) {
                (Some(ba), Some(bb)) => plan.commands.push(Command::Swap {
                    a: ba.id.clone(),
                    b: bb.id.clone(),
                }),
                // Two visits off the board swapping places: nothing to change.
                (None, None)
                    if off_board(m, loc, 3)
                        && matches!(
                            place_in(m, loc, "PV1", 2, 3),
                            Place::OffBoard | Place::Missing
                        ) => {}
                _ => {
                    return Err(refuse(
                        ErrorCode::UnknownKey,
                        "PV1",
                        19,
                        "both visits of a swap must hold a bed",
                    ));
                }
            }
        }
        t if MERGES.contains(&t) => {
            // Merge (A40…) or identifier change (A47…): MRG-1, the prior
            // identifier, becomes PID-3.
            let from = mrg(m, 1).ok_or_else(|| {
                refuse(
                    ErrorCode::RequiredFieldMissing,
                    "MRG",
                    1,
                    "MRG-1 (prior patient identifier) is missing",
                )
            })?;
            plan.commands.push(Command::MergePatients {
                from: Mrn::new(from),
                into: p,
            });
        }
        "A45" | "A50" | "A42" => {
            // A45 move visit: the visit (MRG-5, else PV1-19) now belongs to
            // the PID patient. A50 change visit number / A42 merge visit:
            // MRG-5 becomes PV1-19.
            let to = visit(m)?;
            let from = match mrg(m, 5) {
                Some(f) => EncounterId::new(f.as_str()).map_err(|e| {
                    refuse(
                        ErrorCode::DataType,
                        "MRG",
                        5,
                        format!("MRG-5 is not a usable visit id: {e}"),
                    )
                })?,
                None if trigger == "A45" => to.clone(),
                None => {
                    return Err(refuse(
                        ErrorCode::RequiredFieldMissing,
                        "MRG",
                        5,
                        "MRG-5 (prior visit number) is missing",
                    ));
                }
            };
            // The visit registry learns the new number through the change
            // itself, not as a new visit beside the old one.
            plan.details.visit = None;
            plan.commands.push(Command::ChangeVisit {
                from,
                to,
                patient: p,
            });
        }
        other => {
            return Err(refuse(
                ErrorCode::UnsupportedEvent,
                "MSH",
                9,
                format!("trigger {other:?} is not applied yet"),
            ));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integration::hl7::{Message, ParseConfig};

    fn address_of(pid11: &str) -> Option<String> {
        let raw = format!(
            "MSH|^~\\&|A|B|C|D|20261127101500||ADT^A28^ADT_A05|1|P|2.5.1\rPID|1||M1^^^TH^MR||Doe^Jane||19700101|F|||{pid11}\r"
        );
        let m = Message::parse(raw.as_bytes(), ParseConfig::default()).expect("parses");
        details(&m).address.map(|a| a.expose().to_owned())
    }

    fn place_of(loc: &Locations, pl: &str) -> Place {
        let raw = format!("MSH|^~\\&|A|B|C|D|20261127101500||ADT^A01|1|P|2.5.1\rPV1|1|I|{pl}\r");
        let m = Message::parse(raw.as_bytes(), ParseConfig::default()).expect("parses");
        let pl = m.segment("PV1", 1).and_then(|s| s.raw(3)).unwrap_or("");
        loc.place(&m, pl)
    }

    #[test]
    fn places_are_beds_off_the_board_or_unknown_within_a_managed_point_of_care() {
        let bed = |s: &str| BedId::new(s).unwrap();
        let key = |f: &str, p: &str, r: &str, b: &str| (f.into(), p.into(), r.into(), b.into());
        let loc = Locations::from_pairs([(key("TH", "3W", "1", "A"), bed("3W-1A"))])
            .managing(["OR".to_owned()]);
        assert_eq!(place_of(&loc, "3W^1^A^TH"), Place::Bed(bed("3W-1A")));
        // Inside the beds' point of care (3W at TH), not a configured bed.
        assert_eq!(place_of(&loc, "3W^1^B^TH"), Place::Unknown);
        assert_eq!(place_of(&loc, "3W^^^TH"), Place::Unknown);
        // 3W of another facility, the emergency department: off the board.
        assert_eq!(place_of(&loc, "3W^1^A^SITE2"), Place::OffBoard);
        assert_eq!(place_of(&loc, "ED^^^TH"), Place::OffBoard);
        // Listed in [hl7] managed_points_of_care: managed in every facility.
        assert_eq!(place_of(&loc, "OR^5^^TH"), Place::Unknown);
        assert_eq!(place_of(&loc, "OR^5^^SITE2"), Place::Unknown);
        assert_eq!(place_of(&loc, ""), Place::Missing);
        assert_eq!(place_of(&loc, "^^^"), Place::Missing);
    }

    #[test]
    fn a_visit_without_pv1_19_is_the_patient_and_the_admit_time() {
        let visit_of = |pid3: &str, pv1: &str| {
            let raw = format!(
                "MSH|^~\\&|A|B|C|D|20261127101500||ADT^A01|1|P|2.5.1\rPID|1||{pid3}\r{pv1}\r"
            );
            let m = Message::parse(raw.as_bytes(), ParseConfig::default()).expect("parses");
            visit(&m)
        };
        let pv1 = |v: &str, admitted: &str| {
            let mut f = vec![""; 45];
            f[0] = "PV1";
            f[19] = v;
            f[44] = admitted;
            f.join("|")
        };
        assert_eq!(
            visit_of("M1^^^TH^MR", &pv1("V9", "202611270930")).unwrap(),
            EncounterId::new("V9").unwrap()
        );
        let a = visit_of("M1^^^TH^MR", &pv1("", "202611270930")).unwrap();
        assert!(
            a.as_str().starts_with("pv44-") && a.as_str().len() == 25,
            "{a}"
        );
        assert!(!a.as_str().contains("M1"), "no identifier in the visit id");
        // Same instant at another precision: the same visit.
        assert_eq!(
            visit_of("M1^^^TH^MR", &pv1("", "20261127093000")).unwrap(),
            a
        );
        // The MR repetition decides, not the order.
        assert_eq!(
            visit_of("X7^^^NHS^NH~M1^^^TH^MR", &pv1("", "202611270930")).unwrap(),
            a
        );
        assert_ne!(visit_of("M2^^^TH^MR", &pv1("", "202611270930")).unwrap(), a);
        assert_ne!(visit_of("M1^^^XX^MR", &pv1("", "202611270930")).unwrap(), a);
        assert_ne!(visit_of("M1^^^TH^MR", &pv1("", "202611271030")).unwrap(), a);
        let none = visit_of("M1^^^TH^MR", &pv1("", "")).unwrap_err();
        assert_eq!(none.code, ErrorCode::RequiredFieldMissing);
        let bad = visit_of("M1^^^TH^MR", &pv1("", "yesterday")).unwrap_err();
        assert_eq!(bad.location.unwrap().field, Some(44));
    }

    #[test]
    fn address_parts_keep_their_positions() {
        assert_eq!(
            address_of("12 Long St^^Canberra^ACT^2600^AU").as_deref(),
            Some("12 Long St, Canberra, 2600, ACT, AU")
        );
        // No city: the postal code is still third, not taken for the city.
        assert_eq!(
            address_of("12 Long St^^^ACT^2600").as_deref(),
            Some("12 Long St, , 2600, ACT")
        );
        assert_eq!(address_of("12 Long St").as_deref(), Some("12 Long St"));
        assert_eq!(address_of(""), None);
        let r = hms_domain::empi::Record::from_patient(
            "h1",
            &hms_domain::PatientRef {
                mrn: hms_domain::phi::Mrn::new("M1"),
                name: None,
                birth_date: None,
                sex: None,
            },
            Some(&Address::new("12 Long St, , 2600, ACT")),
            None,
            &[],
        );
        let p = hms_domain::empi::prepare(&r);
        assert!(p.city.is_none());
        assert_eq!(p.postal_code.as_deref(), Some("2600"));
    }
}
