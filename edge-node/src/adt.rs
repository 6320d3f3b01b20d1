//! HL7 ADT semantics: what each trigger does to the board and the patient
//! index. Sans-IO: [`plan`] reads a parsed message and the current board and
//! returns board commands, or the reason the message must be parked.
//!
//! Supported now: A01 admit (occupy PV1-3), A02 transfer (PV1-3 from the
//! visit's bed), A03 discharge (free the visit's bed, which becomes dirty),
//! A04 register, A08 update (demographics; a changed PV1-3 is a correction
//! move, not a transfer), A11 cancel admit (free the bed), A13 cancel
//! discharge (re-occupy the visit's last bed when it is still free), A28/A31
//! person add/update. Other triggers are parked with ERR 201 so that nothing
//! is lost and they can be replayed once supported.

use std::collections::HashMap;

use hms_domain::{BedId, BirthDate, EncounterId, Mrn, PatientRef, PersonName, Sex};

use crate::board::{Board, Command};
use crate::hl7::{ErrorCode, Location, Message};

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
    let birth_date = m.get("PID-7").map(|d| {
        let d: String = d.chars().take(8).collect();
        match d.len() {
            8 => format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8]),
            6 => format!("{}-{}", &d[..4], &d[4..6]),
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
    let p = patient(m)?;
    let mut plan = Plan {
        commands: vec![],
        patient: Some(p.clone()),
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
        other => {
            return Err(refuse(
                ErrorCode::UnsupportedEvent,
                "MSH",
                9,
                format!("trigger {other:?} is not applied yet; message parked for replay"),
            ));
        }
    }
    Ok(plan)
}
