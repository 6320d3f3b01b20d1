//! HL7 ADT semantics: what each trigger does to the board and the patient
//! index. Sans-IO: [`plan`] reads a parsed message and the current board and
//! returns board commands, or the reason the message must be parked.
//!
//! - A01 admit: occupy PV1-3. A02 transfer: from the visit's bed to PV1-3
//!   (the old bed becomes dirty). A03 discharge / A11 cancel admit: free the
//!   visit's bed (dirty). A13 cancel discharge: re-occupy the visit's last bed
//!   if it is still vacant.
//! - A04 register, A28/A31 person add/update: patient index only. A08 update:
//!   demographics; a changed PV1-3 is a correction move.
//! - A05 pre-admit / A14 pending admit: hold PV1-42 (else PV1-3). A27/A38:
//!   release that hold. A16 / A25: set / clear the expected discharge.
//! - A12 cancel transfer: back to PV1-3 from PV1-6, the bed being dirty or
//!   not; out of order (the visit moved on) it is parked.
//! - A17 swap: both visits' beds exchange, both or neither.
//! - A20 bed status (NPU, table 0116). A06/A07 class change, A09/A10
//!   tracking, A21/A22 leave of absence: the bed stays held.
//! - A40 merge: MRG-1 into PID-3 in the patient index and on the board.
//! - A15 pending transfer: hold PV1-42 while the visit keeps its bed (the
//!   A02 that follows moves it there); A26: release that hold.
//! - Anything else is parked with ERR 201, nothing lost, replayable once
//!   supported.

use std::collections::HashMap;

use hms_domain::{
    Address, BedId, BirthDate, EncounterId, Identifier, Mrn, PatientRef, PersonName, Phone, Sex,
};

use crate::board::{Board, Command};
use crate::integration::hl7::{ErrorCode, Location, Message};

/// HL7 location (facility, point of care, room, bed) → configured bed.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    map: HashMap<(String, String, String, String), BedId>,
}

impl Locations {
    /// From the configuration's bed mappings.
    pub fn from_config(cfg: &firmware_config::Config) -> Self {
        let map = cfg
            .beds
            .iter()
            .map(|b| {
                (
                    (
                        b.hl7.facility.clone(),
                        b.hl7.point_of_care.clone(),
                        b.hl7.room.clone(),
                        b.hl7.bed.clone(),
                    ),
                    b.id.clone(),
                )
            })
            .collect();
        Self { map }
    }

    /// From `((facility, point of care, room, bed), bed id)` pairs.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = ((String, String, String, String), BedId)>,
    ) -> Self {
        Self {
            map: pairs.into_iter().collect(),
        }
    }

    /// The bed at a PL value (components: point of care, room, bed, facility).
    fn bed(&self, m: &Message, raw_pl: &str) -> Option<BedId> {
        let c = |n| m.component(raw_pl, n, 1).unwrap_or_default();
        self.map.get(&(c(4), c(1), c(2), c(3))).cloned()
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
    let sex = match m.get("PID-8").as_deref() {
        Some("F") => Some(Sex::Female),
        Some("M") => Some(Sex::Male),
        Some("O" | "A" | "N") => Some(Sex::Other),
        _ => None,
    };
    Ok(PatientRef {
        mrn: Mrn::new(mrn),
        name: name.map(PersonName::new),
        birth_date: birth_date.map(BirthDate::new),
        sex,
    })
}

fn visit(m: &Message) -> Result<EncounterId, Refusal> {
    let v = m.get("PV1-19").ok_or_else(|| {
        refuse(
            ErrorCode::RequiredFieldMissing,
            "PV1",
            19,
            "PV1-19 (visit number) is missing",
        )
    })?;
    EncounterId::new(v.as_str()).map_err(|e| {
        refuse(
            ErrorCode::DataType,
            "PV1",
            19,
            format!("PV1-19 is not a usable visit id: {e}"),
        )
    })
}

fn location(m: &Message, loc: &Locations, field: usize) -> Result<BedId, Refusal> {
    let raw = m
        .segment("PV1", 1)
        .and_then(|s| s.raw(field))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            refuse(
                ErrorCode::RequiredFieldMissing,
                "PV1",
                field,
                format!("PV1-{field} (location) is missing"),
            )
        })?;
    loc.bed(m, raw).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownKey,
            "PV1",
            field,
            format!("PV1-{field} names a location that is not a configured bed"),
        )
    })
}

/// A20: NPU-1 names the bed, NPU-2 its status (table 0116).
fn bed_status(m: &Message, board: &Board, loc: &Locations) -> Result<Plan, Refusal> {
    // Bed status update: NPU-1 the bed, NPU-2 its status (table 0116).
    let raw = m
        .segment("NPU", 1)
        .and_then(|s| s.raw(1))
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            refuse(
                ErrorCode::RequiredFieldMissing,
                "NPU",
                1,
                "NPU-1 (bed location) is missing",
            )
        })?;
    let bed = loc.bed(m, raw).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownKey,
            "NPU",
            1,
            "NPU-1 names a location that is not a configured bed",
        )
    })?;
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
    match trigger.as_str() {
        "A04" | "A28" | "A31" => {}
        "A01" => {
            let v = visit(m)?;
            let bed = location(m, loc, 3)?;
            // A repeated admit of the same visit into the same bed changes nothing.
            if board.bed_of(&v).map(|b| &b.id) != Some(&bed) {
                plan.commands.push(Command::Assign {
                    bed,
                    encounter: v,
                    patient: Some(p),
                    expected_version: None,
                });
            }
        }
        "A02" | "A08" => {
            let v = visit(m)?;
            let to = if trigger == "A08" {
                match m
                    .segment("PV1", 1)
                    .and_then(|s| s.raw(3))
                    .filter(|r| !r.is_empty())
                {
                    Some(_) => Some(location(m, loc, 3)?),
                    None => None,
                }
            } else {
                Some(location(m, loc, 3)?)
            };
            match (to, board.bed_of(&v)) {
                (Some(to), Some(cur)) if cur.id != to => plan.commands.push(Command::Transfer {
                    encounter: v,
                    to,
                    patient: Some(p),
                    allow_unclean: false,
                }),
                (Some(_), None) if trigger == "A02" => {
                    return Err(refuse(
                        ErrorCode::UnknownKey,
                        "PV1",
                        19,
                        format!("visit {v} holds no bed to transfer from"),
                    ));
                }
                _ => {}
            }
        }
        "A03" | "A11" => {
            let v = visit(m)?;
            match board.bed_of(&v) {
                Some(b) => plan.commands.push(Command::Release {
                    bed: b.id.clone(),
                    expected_version: None,
                }),
                None => {
                    return Err(refuse(
                        ErrorCode::UnknownKey,
                        "PV1",
                        19,
                        format!("visit {v} holds no bed"),
                    ));
                }
            }
        }
        "A13" => {
            let v = visit(m)?;
            if board.bed_of(&v).is_none() {
                let bed = last_bed(&v).ok_or_else(|| {
                    refuse(
                        ErrorCode::UnknownKey,
                        "PV1",
                        19,
                        format!("visit {v} has no discharge to cancel"),
                    )
                })?;
                plan.commands.push(Command::Readmit {
                    bed,
                    encounter: v,
                    patient: Some(p),
                });
            }
        }
        // Class changes, tracking moves and leaves of absence: the bed stays held.
        "A06" | "A07" | "A09" | "A10" | "A21" | "A22" => {}
        "A05" | "A14" => {
            // Pre-admit / pending admit: hold the pending location (PV1-42),
            // else the assigned one (PV1-3), when either is given.
            let v = visit(m)?;
            let field = [42, 3].into_iter().find(|&f| {
                m.segment("PV1", 1)
                    .and_then(|s| s.raw(f))
                    .is_some_and(|r| !r.is_empty())
            });
            if let Some(f) = field {
                let bed = location(m, loc, f)?;
                if board.bed_of(&v).map(|b| &b.id) != Some(&bed) {
                    plan.commands.push(Command::Reserve {
                        bed,
                        encounter: v,
                        patient: Some(p),
                        expected_version: None,
                    });
                }
            }
        }
        "A15" => {
            // Pending transfer: hold PV1-42 for the visit, which keeps its bed.
            let v = visit(m)?;
            let to = location(m, loc, 42)?;
            if board.transfer_of(&v).map(|b| &b.id) != Some(&to) {
                plan.commands
                    .push(Command::ReserveTransfer { encounter: v, to });
            }
        }
        "A26" => {
            // Cancel pending transfer: release the held bed.
            let v = visit(m)?;
            let held = board.transfer_of(&v).ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownKey,
                    "PV1",
                    19,
                    format!("visit {v} has no pending transfer"),
                )
            })?;
            plan.commands.push(Command::CancelReservation {
                bed: held.id.clone(),
                expected_version: None,
            });
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
            let b = board.bed_of(&v).ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownKey,
                    "PV1",
                    19,
                    format!("visit {v} holds no bed"),
                )
            })?;
            plan.commands.push(Command::SetPendingDischarge {
                bed: b.id.clone(),
                pending: trigger == "A16",
                expected_version: None,
            });
        }
        "A12" => {
            // Cancel transfer: back to PV1-3 (the location before the
            // transfer) from PV1-6 (the location being cancelled). If the
            // visit has moved on since (a later move arrived first), the
            // cancel is out of order and parked.
            let v = visit(m)?;
            let back = location(m, loc, 3)?;
            let cur = board.bed_of(&v).ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownKey,
                    "PV1",
                    19,
                    format!("visit {v} holds no bed"),
                )
            })?;
            if cur.id != back {
                let cancelled = location(m, loc, 6)?;
                if cur.id != cancelled {
                    return Err(refuse(
                        ErrorCode::ApplicationError,
                        "PV1",
                        6,
                        format!(
                            "visit {v} is in bed {}, not in the transfer being cancelled; a later move arrived first",
                            cur.id
                        ),
                    ));
                }
                plan.commands.push(Command::Transfer {
                    encounter: v,
                    to: back,
                    patient: Some(p),
                    allow_unclean: true,
                });
            }
        }
        "A17" => {
            // Swap: the second PID/PV1 pair names the other patient.
            let a = visit(m)?;
            let b_visit = m
                .segment("PV1", 2)
                .and_then(|s| s.raw(19))
                .map(|r| m.component(r, 1, 1).unwrap_or_default())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Refusal {
                    code: ErrorCode::RequiredFieldMissing,
                    location: Some(Location {
                        segment: "PV1".into(),
                        sequence: 2,
                        field: Some(19),
                        component: None,
                    }),
                    reason: "A17 needs a second PV1 with a visit number".into(),
                })?;
            let b = EncounterId::new(b_visit).map_err(|e| {
                refuse(
                    ErrorCode::DataType,
                    "PV1",
                    19,
                    format!("second PV1-19: {e}"),
                )
            })?;
            let (Some(ba), Some(bb)) = (board.bed_of(&a), board.bed_of(&b)) else {
                return Err(refuse(
                    ErrorCode::UnknownKey,
                    "PV1",
                    19,
                    "both visits of a swap must hold a bed",
                ));
            };
            plan.commands.push(Command::Swap {
                a: ba.id.clone(),
                b: bb.id.clone(),
            });
        }
        "A40" => {
            // Merge: MRG-1 (prior identifier) into PID-3.
            let from = m
                .segment("MRG", 1)
                .and_then(|s| s.raw(1))
                .and_then(|r| r.split(m.delimiters.repetition).next().map(str::to_owned))
                .and_then(|r| m.component(&r, 1, 1))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
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
