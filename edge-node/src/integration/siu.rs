//! HL7 SIU semantics: what each scheduling trigger does to the OR board.
//! Sans-IO: [`plan`] reads a parsed message and the current OR board and
//! returns the `or.case_*` events to record, or the reason the message must
//! be parked.
//!
//! The case is SCH-1 (placer appointment id), else SCH-2 (filler). Its room
//! is the first AIL-3 that names a configured `[[or_room]]`
//! ([`OrLocations`]); an AIL-3 inside an OR point of care that names no
//! configured room parks the message, and an appointment whose AIL-3s are
//! all outside the OR points of care (a clinic's) is stored and answered AA
//! without effect.
//!
//! - S12 new booking (an S12 for a case already booked updates it).
//! - S13 reschedule: the new time, duration and room; a cancelled, bumped
//!   or no-show case is scheduled again.
//! - S14 modification: the fields given replace the case's, the rest stay.
//! - S15 cancel, S16 discontinue: `cancelled`. S26: `no_show`. S17 delete:
//!   the case leaves the board (an unknown case: nothing to do).
//! - S12, S13 or S14 with SCH-25 `Complete`: the case is done (`completed`);
//!   the message's start and duration are its actual start and minutes, and
//!   the booking stays as it was.
//! - S13 and S14 for a case not on the board book it, as S12 would: they
//!   carry the whole booking. S15, S16 and S26 for a case not on the board
//!   are parked (the booking may itself be parked and replayed later).
//! - [`NO_EFFECT`] triggers are stored and answered AA; any other trigger
//!   is parked with ERR 201.
//!
//! Fields: start TQ1-7, else SCH-11.4, AIS-4, AIL-6; booked duration SCH-9
//! (units SCH-10), else AIS-7 (units AIS-8), else SCH-11.3 (`M90`, `H2`),
//! minutes unless the units say otherwise, 1 to 1,440; priority urgent when
//! TQ1-9 or SCH-11.6 is `S` (stat) or `A` (as soon as possible), or SCH-7
//! is `EMERGENCY`; procedure AIS-3; surgeon the AIP whose role (AIP-4)
//! names a surgeon, else the first AIP; ASA class an OBX whose OBX-3 is
//! `ASA` (OBX-5, 1 to 6); patient PID and visit PV1-19 when present.
//!
//! **Bumping**: an urgent case scheduled (S12, S13, S14) into a room
//! displaces every elective scheduled case of that room whose booked time
//! overlaps its own: each becomes `bumped`, naming the urgent case, in the
//! same transaction, until an S13 reschedules it.

use std::collections::{HashMap, HashSet};

use hms_domain::{
    CaseChange, CaseId, CaseStatus, EncounterId, EventBody, OrCase, OrRoomId, Priority, Timestamp,
};

use crate::integration::adt::{self, Refusal};
use crate::integration::hl7::time::HospitalTime;
use crate::integration::hl7::{ErrorCode, Location, Message, Segment};
use crate::or_board::OrBoard;

/// SIU triggers stored and answered AA without effect: service and
/// resource notifications (S18 to S25) and S27 (broadcast).
pub const NO_EFFECT: &[&str] = &[
    "S18", "S19", "S20", "S21", "S22", "S23", "S24", "S25", "S27",
];

/// HL7 location (facility, point of care, room, bed) → configured OR room,
/// and which points of care hold operating rooms.
#[derive(Debug, Clone, Default)]
pub struct OrLocations {
    map: HashMap<(String, String, String, String), OrRoomId>,
    units: HashSet<(String, String)>,
}

/// Where an AIL-3 points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrPlace {
    /// A configured operating room.
    Room(OrRoomId),
    /// Outside every OR point of care.
    Elsewhere,
    /// Inside an OR point of care, but no configured room.
    Unknown,
}

impl OrLocations {
    /// From the configuration's `[[or_room]]` mappings.
    pub fn from_config(cfg: &firmware_config::Config) -> Self {
        Self::from_pairs(cfg.or_rooms.iter().map(|r| {
            (
                (
                    r.hl7.facility.clone(),
                    r.hl7.point_of_care.clone(),
                    r.hl7.room.clone(),
                    r.hl7.bed.clone(),
                ),
                r.id.clone(),
            )
        }))
    }

    /// From `((facility, point of care, room, bed), room id)` pairs.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = ((String, String, String, String), OrRoomId)>,
    ) -> Self {
        let map: HashMap<_, _> = pairs.into_iter().collect();
        let units = map
            .keys()
            .map(|(f, p, _, _)| (f.clone(), p.clone()))
            .collect();
        Self { map, units }
    }

    /// Where a PL value (point of care, room, bed, facility) points.
    pub fn place(&self, m: &Message, raw_pl: &str) -> OrPlace {
        let c = |n| m.component(raw_pl, n, 1).unwrap_or_default();
        let (poc, room, bed, facility) = (c(1), c(2), c(3), c(4));
        if let Some(r) = self.map.get(&(facility.clone(), poc.clone(), room, bed)) {
            OrPlace::Room(r.clone())
        } else if self.units.contains(&(facility, poc)) {
            OrPlace::Unknown
        } else {
            OrPlace::Elsewhere
        }
    }
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

/// Every segment `id`, in order.
fn segments<'m>(m: &'m Message, id: &'m str) -> impl Iterator<Item = &'m Segment> + 'm {
    m.segments().iter().filter(move |s| s.id() == id)
}

/// Component `comp` of field `field` of segment `s`, first repetition; `None` when empty.
fn comp(m: &Message, s: &Segment, field: usize, comp: usize) -> Option<String> {
    s.raw(field)
        .and_then(|r| m.component(r, comp, 1))
        .filter(|v| !v.is_empty())
}

/// The first non-empty `comp` of `field` in any segment `id`.
fn first(m: &Message, id: &str, field: usize, c: usize) -> Option<String> {
    segments(m, id).find_map(|s| comp(m, s, field, c))
}

/// What a message says about a case; `None` where it says nothing.
#[derive(Debug, Default)]
struct Booking {
    room: Option<OrRoomId>,
    /// Some AIL-3 is in an OR point of care but names no configured room.
    unknown_room: bool,
    /// Some AIL-3 was given.
    any_place: bool,
    start: Option<Timestamp>,
    minutes: Option<u32>,
    priority: Priority,
    procedure: Option<String>,
    procedure_text: Option<String>,
    surgeon: Option<String>,
    surgeon_name: Option<String>,
    asa: Option<u8>,
    patient: Option<hms_domain::PatientRef>,
    visit: Option<EncounterId>,
    /// SCH-25 says the case is done.
    complete: bool,
}

/// Minutes in `quantity` `units` (`MIN`, `H`…; minutes when empty).
fn minutes(quantity: &str, units: Option<&str>, seg: &str, field: usize) -> Result<u32, Refusal> {
    let q: f64 = quantity.trim().parse().map_err(|_| {
        refuse(
            ErrorCode::DataType,
            seg,
            field,
            format!("{seg}-{field} (duration) is not a number"),
        )
    })?;
    let per = match units.map(|u| u.trim().to_ascii_uppercase()).as_deref() {
        None | Some("") | Some("M" | "MIN" | "MINS" | "MINUTE" | "MINUTES") => 1.0,
        Some("H" | "HR" | "HRS" | "HOUR" | "HOURS") => 60.0,
        Some("S" | "SEC" | "SECOND" | "SECONDS") => 1.0 / 60.0,
        Some("D" | "DAY" | "DAYS") => 1440.0,
        Some(_) => {
            return Err(refuse(
                ErrorCode::TableValueNotFound,
                seg,
                field + 1,
                format!(
                    "{seg}-{} (duration units) is not minutes, hours, seconds or days",
                    field + 1
                ),
            ));
        }
    };
    let m = (q * per).round();
    if !(1.0..=f64::from(hms_domain::or::MAX_BOOKED_MINUTES)).contains(&m) {
        return Err(refuse(
            ErrorCode::DataType,
            seg,
            field,
            format!(
                "{seg}-{field}: a booked duration must be 1 to {} minutes",
                hms_domain::or::MAX_BOOKED_MINUTES
            ),
        ));
    }
    Ok(m as u32)
}

/// SCH-11.3 durations: `M90`, `H2`, `S3600`, `D1`, or plain minutes.
fn tq_duration(s: &str) -> Result<u32, Refusal> {
    let (unit, rest) = match s.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => (Some(&s[..1]), &s[1..]),
        _ => (None, s),
    };
    minutes(rest, unit, "SCH", 11)
}

fn read(m: &Message, loc: &OrLocations, clock: &HospitalTime) -> Result<Booking, Refusal> {
    let mut b = Booking::default();
    for ail in segments(m, "AIL") {
        let Some(raw) = ail.raw(3).filter(|r| !r.is_empty()) else {
            continue;
        };
        b.any_place = true;
        match loc.place(m, raw) {
            OrPlace::Room(r) if b.room.is_none() => b.room = Some(r),
            OrPlace::Room(_) | OrPlace::Elsewhere => {}
            OrPlace::Unknown => b.unknown_room = true,
        }
    }
    let time = |v: Option<String>, seg: &str, field: usize| -> Result<Option<Timestamp>, Refusal> {
        match v {
            None => Ok(None),
            Some(t) => clock.parse(&t).map(Some).ok_or_else(|| {
                refuse(
                    ErrorCode::DataType,
                    seg,
                    field,
                    format!("{seg}-{field} (start) is not an HL7 date/time"),
                )
            }),
        }
    };
    b.start = match first(m, "TQ1", 7, 1) {
        Some(t) => time(Some(t), "TQ1", 7)?,
        None => match m.get("SCH-11.4") {
            Some(t) => time(Some(t), "SCH", 11)?,
            None => match first(m, "AIS", 4, 1) {
                Some(t) => time(Some(t), "AIS", 4)?,
                None => time(first(m, "AIL", 6, 1), "AIL", 6)?,
            },
        },
    };
    b.minutes = if let Some(q) = m.get("SCH-9") {
        Some(minutes(&q, m.get("SCH-10.1").as_deref(), "SCH", 9)?)
    } else if let Some(q) = first(m, "AIS", 7, 1) {
        let units = first(m, "AIS", 8, 1);
        Some(minutes(&q, units.as_deref(), "AIS", 7)?)
    } else if let Some(d) = m.get("SCH-11.3") {
        Some(tq_duration(&d)?)
    } else {
        None
    };
    let urgent = |v: Option<String>| {
        v.is_some_and(|p| matches!(p.trim().to_ascii_uppercase().as_str(), "S" | "A"))
    };
    if urgent(first(m, "TQ1", 9, 1))
        || urgent(m.get("SCH-11.6"))
        || m.get("SCH-7.1")
            .is_some_and(|r| r.eq_ignore_ascii_case("EMERGENCY"))
    {
        b.priority = Priority::Urgent;
    }
    b.procedure = first(m, "AIS", 3, 1);
    b.procedure_text = first(m, "AIS", 3, 2);
    let surgeon = segments(m, "AIP")
        .find(|s| {
            comp(m, s, 4, 1)
                .or_else(|| comp(m, s, 4, 2))
                .is_some_and(|r| r.to_ascii_uppercase().contains("SURG"))
        })
        .or_else(|| segments(m, "AIP").next());
    if let Some(s) = surgeon {
        b.surgeon = comp(m, s, 3, 1);
        b.surgeon_name = match (comp(m, s, 3, 2), comp(m, s, 3, 3)) {
            (Some(f), Some(g)) => Some(format!("{f}, {g}")),
            (f, g) => f.or(g),
        };
    }
    b.asa = segments(m, "OBX")
        .find(|s| {
            comp(m, s, 3, 1).is_some_and(|c| c.eq_ignore_ascii_case("ASA"))
                || comp(m, s, 3, 2).is_some_and(|c| c.to_ascii_uppercase().starts_with("ASA"))
        })
        .and_then(|s| comp(m, s, 5, 1))
        .and_then(|v| v.trim().chars().next().and_then(|c| c.to_digit(10)))
        .filter(|d| (1..=6).contains(d))
        .map(|d| d as u8);
    if m.segment("PID", 1)
        .is_some_and(|s| s.raw(3).is_some_and(|r| !r.is_empty()))
    {
        b.patient = Some(adt::patient(m)?);
    }
    b.visit = m.get("PV1-19").and_then(|v| EncounterId::new(v).ok());
    b.complete = m.get("SCH-25.1").is_some_and(|s| {
        matches!(
            s.trim().to_ascii_uppercase().as_str(),
            "COMPLETE" | "COMPLETED"
        )
    });
    Ok(b)
}

/// The case id: SCH-1, else SCH-2 (first component).
fn case_id(m: &Message) -> Result<CaseId, Refusal> {
    let raw = m
        .get("SCH-1.1")
        .or_else(|| m.get("SCH-2.1"))
        .ok_or_else(|| {
            refuse(
                ErrorCode::RequiredFieldMissing,
                "SCH",
                1,
                "SCH-1 and SCH-2 (appointment id) are both missing",
            )
        })?;
    CaseId::new(raw).map_err(|e| {
        refuse(
            ErrorCode::DataType,
            "SCH",
            1,
            format!("SCH-1 is not a usable case id: {e}"),
        )
    })
}

fn changed(change: CaseChange, case: OrCase) -> EventBody {
    EventBody::OrCaseChanged { change, case }
}

/// Decides what an SIU message does to the OR board.
pub fn plan(
    m: &Message,
    board: &OrBoard,
    loc: &OrLocations,
    clock: &HospitalTime,
) -> Result<Vec<EventBody>, Refusal> {
    let trigger = m.get("MSH-9.2").unwrap_or_default();
    if NO_EFFECT.contains(&trigger.as_str()) {
        return Ok(vec![]);
    }
    if !matches!(
        trigger.as_str(),
        "S12" | "S13" | "S14" | "S15" | "S16" | "S17" | "S26"
    ) {
        return Err(refuse(
            ErrorCode::UnsupportedEvent,
            "MSH",
            9,
            format!("SIU trigger {trigger:?} is not handled"),
        ));
    }
    if m.segment("SCH", 1).is_none() {
        return Err(refuse(
            ErrorCode::SegmentSequence,
            "SCH",
            1,
            "the message has no SCH segment",
        ));
    }
    let id = case_id(m)?;
    let b = read(m, loc, clock)?;
    let current = board.case(&id);
    let off_board = b.any_place && b.room.is_none() && !b.unknown_room;
    let not_on_board = || {
        refuse(
            ErrorCode::UnknownKey,
            "SCH",
            1,
            format!("case {id} is not on the OR board"),
        )
    };
    let unknown_room = || {
        refuse(
            ErrorCode::UnknownKey,
            "AIL",
            3,
            "AIL-3 is in an OR point of care but names no configured operating room",
        )
    };
    let status_change =
        |change: CaseChange, status: CaseStatus| -> Result<Vec<EventBody>, Refusal> {
            match current {
                Some(c) if c.status == status => Ok(vec![]),
                Some(c) => {
                    let mut next = (**c).clone();
                    next.status = status;
                    next.bumped_by = None;
                    next.version += 1;
                    Ok(vec![changed(change, next)])
                }
                None if off_board => Ok(vec![]),
                None => Err(not_on_board()),
            }
        };
    match trigger.as_str() {
        "S15" | "S16" => return status_change(CaseChange::Cancelled, CaseStatus::Cancelled),
        "S26" => return status_change(CaseChange::NoShow, CaseStatus::NoShow),
        "S17" => {
            return Ok(match current {
                None => vec![],
                Some(c) => {
                    let mut next = (**c).clone();
                    next.status = CaseStatus::Deleted;
                    next.version += 1;
                    vec![changed(CaseChange::Deleted, next)]
                }
            });
        }
        _ => {}
    }
    // S12, S13, S14: a booking or a change to one.
    if b.unknown_room && b.room.is_none() {
        return Err(unknown_room());
    }
    let case = match current {
        None => {
            if off_board {
                // A clinic's appointment: not an OR case.
                return Ok(vec![]);
            }
            let room = b.room.clone().ok_or_else(|| {
                refuse(
                    ErrorCode::RequiredFieldMissing,
                    "AIL",
                    3,
                    "AIL-3 (operating room) is missing",
                )
            })?;
            let start = b.start.ok_or_else(|| {
                refuse(
                    ErrorCode::RequiredFieldMissing,
                    "SCH",
                    11,
                    "the start (TQ1-7, SCH-11.4, AIS-4 or AIL-6) is missing",
                )
            })?;
            let booked_minutes = b.minutes.ok_or_else(|| {
                refuse(
                    ErrorCode::RequiredFieldMissing,
                    "SCH",
                    9,
                    "the booked duration (SCH-9, AIS-7 or SCH-11.3) is missing",
                )
            })?;
            OrCase {
                priority: b.priority,
                procedure: b.procedure,
                procedure_text: b.procedure_text,
                surgeon: b.surgeon,
                surgeon_name: b.surgeon_name,
                asa: b.asa,
                patient: b.patient,
                visit: b.visit,
                ..OrCase::booked(id.clone(), room, start, booked_minutes)
            }
        }
        Some(c) if b.complete => {
            // Done: the message's start and duration are the actual ones;
            // the booking stays as it was.
            if c.status == CaseStatus::Completed
                && c.actual_start == b.start.or(c.actual_start)
                && c.actual_minutes == b.minutes.or(c.actual_minutes)
            {
                return Ok(vec![]);
            }
            let mut next = (**c).clone();
            next.status = CaseStatus::Completed;
            next.bumped_by = None;
            next.actual_start = b.start.or(Some(c.start));
            next.actual_minutes = b.minutes.or(c.actual_minutes);
            next.version += 1;
            return Ok(vec![changed(CaseChange::Completed, next)]);
        }
        Some(c) => {
            let mut next = (**c).clone();
            if let Some(r) = b.room {
                next.room = r;
            }
            if let Some(s) = b.start {
                next.start = s;
            }
            if let Some(mins) = b.minutes {
                next.booked_minutes = mins;
            }
            next.priority = b.priority;
            next.procedure = b.procedure.or(next.procedure);
            next.procedure_text = b.procedure_text.or(next.procedure_text);
            next.surgeon = b.surgeon.or(next.surgeon);
            next.surgeon_name = b.surgeon_name.or(next.surgeon_name);
            next.asa = b.asa.or(next.asa);
            next.patient = b.patient.or(next.patient);
            next.visit = b.visit.or(next.visit);
            if trigger != "S14" {
                // A new booking or a reschedule puts the case back on.
                next.status = CaseStatus::Scheduled;
                next.bumped_by = None;
            }
            next.version += 1;
            next
        }
    };
    if current.is_none() && b.complete {
        // Reported done before it was ever booked here: booked as it ran.
        let mut done = case;
        done.status = CaseStatus::Completed;
        done.actual_start = Some(done.start);
        done.actual_minutes = Some(done.booked_minutes);
        return Ok(vec![changed(CaseChange::Completed, done)]);
    }
    let change = match (current.is_some(), trigger.as_str()) {
        (false, _) => CaseChange::Scheduled,
        (true, "S13") => CaseChange::Rescheduled,
        (true, _) => CaseChange::Modified,
    };
    let mut out = vec![];
    if case.priority == Priority::Urgent && case.is_active() {
        for other in board.overlapping(&case.room, case.start, case.booked_end()) {
            if other.case_id != case.case_id
                && other.priority == Priority::Elective
                && other.is_active()
            {
                let mut bumped = (**other).clone();
                bumped.status = CaseStatus::Bumped;
                bumped.bumped_by = Some(case.case_id.clone());
                bumped.version += 1;
                out.push(changed(CaseChange::Bumped, bumped));
            }
        }
    }
    if current.is_some_and(|c| **c == case_without_version(&case, c.version)) {
        // Nothing changed (a resent S14): stored, no event.
        return Ok(out);
    }
    out.insert(0, changed(change, case));
    Ok(out)
}

/// `case` with `version`, to compare with the case as it was.
fn case_without_version(case: &OrCase, version: u64) -> OrCase {
    OrCase {
        version,
        ..case.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integration::hl7::ParseConfig;

    /// `OR-1`, `OR-2` at `OR^OR-n^^TH`.
    fn locations() -> OrLocations {
        OrLocations::from_pairs((1..=2).map(|i| {
            (
                ("TH".into(), "OR".into(), format!("OR-{i}"), String::new()),
                OrRoomId::new(format!("OR-{i}")).unwrap(),
            )
        }))
    }

    fn msg(trigger: &str, body: &str) -> Message {
        let text = format!("MSH|^~\\&|OR|TH|||20261210||SIU^{trigger}|1|P|2.5\r{body}");
        Message::parse(text.as_bytes(), ParseConfig::default()).unwrap()
    }

    fn plan_on(board: &mut OrBoard, trigger: &str, body: &str) -> Result<Vec<EventBody>, Refusal> {
        let events = plan(
            &msg(trigger, body),
            board,
            &locations(),
            &HospitalTime::utc(),
        )?;
        for e in &events {
            board.apply_change(e).unwrap();
        }
        Ok(events)
    }

    fn only_case(events: &[EventBody]) -> &OrCase {
        match events {
            [EventBody::OrCaseChanged { case, .. }] => case,
            other => panic!("one case change expected, got {other:?}"),
        }
    }

    #[test]
    fn durations_come_from_sch_9_ais_7_or_the_timing_quantity_in_their_units() {
        let cases = [
            (
                "SCH|A||||||||2|H|^^^202612100800\rAIL|1||OR^OR-1^^TH\r",
                120,
            ),
            (
                "SCH|A||||||||||^^^202612100800\rAIS|1||P|202612100800|||5400|S\rAIL|1||OR^OR-1^^TH\r",
                90,
            ),
            (
                "SCH|A||||||||||^^M45^202612100800\rAIL|1||OR^OR-1^^TH\r",
                45,
            ),
            (
                "SCH|A||||||||||^^H2^202612100800\rAIL|1||OR^OR-1^^TH\r",
                120,
            ),
            ("SCH|A||||||||75||^^^202612100800\rAIL|1||OR^OR-1^^TH\r", 75),
        ];
        for (body, minutes) in cases {
            let mut b = OrBoard::new();
            let events = plan_on(&mut b, "S12", body).unwrap();
            assert_eq!(only_case(&events).booked_minutes, minutes, "{body}");
        }
        for (body, field) in [
            (
                "SCH|A||||||||2|fortnights|^^^202612100800\rAIL|1||OR^OR-1^^TH\r",
                10,
            ),
            (
                "SCH|A||||||||0|min|^^^202612100800\rAIL|1||OR^OR-1^^TH\r",
                9,
            ),
            (
                "SCH|A||||||||NaN|min|^^^202612100800\rAIL|1||OR^OR-1^^TH\r",
                9,
            ),
            ("SCH|A||||||||25|H|^^^202612100800\rAIL|1||OR^OR-1^^TH\r", 9),
            ("SCH|A||||||||60|min|^^^20261310\rAIL|1||OR^OR-1^^TH\r", 11),
        ] {
            let r = plan_on(&mut OrBoard::new(), "S12", body).unwrap_err();
            assert_eq!(
                r.location.and_then(|l| l.field),
                Some(field),
                "{body}: {}",
                r.reason
            );
        }
    }

    #[test]
    fn priority_surgeon_procedure_and_asa_are_read_from_their_segments() {
        let body = "SCH|A||||||ROUTINE||60|min|^^^202612100800^^R\r\
                    TQ1|1||||||||A\r\
                    AIS|1||colectomy^Colectomy\r\
                    AIL|1||CLINIC^1^^TH~x\rAIL|2||OR^OR-2^^TH\r\
                    AIP|1||N7^Nurse^Nia|NURSE\rAIP|2||S11^Okafor^Ada|SURGEON\r\
                    OBX|1|NM|8310-5^Temp||37\rOBX|2|NM|^ASA class||4\r";
        let events = plan_on(&mut OrBoard::new(), "S12", body).unwrap();
        let c = only_case(&events);
        assert_eq!(c.priority, Priority::Urgent, "TQ1-9 A: as soon as possible");
        assert_eq!(
            c.room.as_str(),
            "OR-2",
            "the first AIL that names an OR room"
        );
        assert_eq!(c.procedure.as_deref(), Some("colectomy"));
        assert_eq!(c.procedure_text.as_deref(), Some("Colectomy"));
        assert_eq!(c.surgeon.as_deref(), Some("S11"));
        assert_eq!(c.surgeon_name.as_deref(), Some("Okafor, Ada"));
        assert_eq!(c.asa, Some(4));
        assert_eq!(c.start, HospitalTime::utc().parse("202612100800").unwrap());
        let emergency = "SCH|B||||||EMERGENCY||60|min|^^^202612100800\rAIL|1||OR^OR-1^^TH\r";
        let events = plan_on(&mut OrBoard::new(), "S12", emergency).unwrap();
        assert_eq!(
            only_case(&events).priority,
            Priority::Urgent,
            "SCH-7 EMERGENCY"
        );
    }

    #[test]
    fn a_resent_s14_changes_nothing_and_an_s13_puts_a_cancelled_case_back() {
        let mut b = OrBoard::new();
        let body = "SCH|A||||||||60|min|^^^202612100800\rAIL|1||OR^OR-1^^TH\r";
        plan_on(&mut b, "S12", body).unwrap();
        assert_eq!(
            plan_on(&mut b, "S14", body).unwrap(),
            vec![],
            "same content: no event"
        );
        plan_on(&mut b, "S15", "SCH|A\r").unwrap();
        assert_eq!(
            plan_on(&mut b, "S15", "SCH|A\r").unwrap(),
            vec![],
            "cancelled already"
        );
        let events = plan_on(&mut b, "S13", "SCH|A||||||||||^^^202612101000\r").unwrap();
        let c = only_case(&events);
        assert_eq!(c.status, CaseStatus::Scheduled);
        assert_eq!(c.version, 3);
        assert_eq!(c.booked_minutes, 60, "kept: the S13 named no duration");
        assert_eq!(c.room.as_str(), "OR-1", "kept: the S13 named no room");
        assert_eq!(c.start, HospitalTime::utc().parse("202612101000").unwrap());
    }

    #[test]
    fn urgent_cases_bump_overlapping_elective_ones_only() {
        let mut b = OrBoard::new();
        for (id, start, room) in [
            ("A", "0800", "OR-1"),
            ("B", "0900", "OR-1"),
            ("C", "1100", "OR-1"),
            ("D", "0800", "OR-2"),
        ] {
            let body = format!("SCH|{id}||||||||60|min|^^^20261210{start}\rAIL|1||OR^{room}^^TH\r");
            plan_on(&mut b, "S12", &body).unwrap();
        }
        let urgent = "SCH|U1||||||EMERGENCY||90|min|^^^202612100830\rAIL|1||OR^OR-1^^TH\r";
        let events = plan_on(&mut b, "S12", urgent).unwrap();
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| match e {
                EventBody::OrCaseChanged { change, case } => (change.kind(), case.case_id.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("or.case_scheduled", "U1"),
                ("or.case_bumped", "A"),
                ("or.case_bumped", "B"),
            ]
        );
        // A second urgent case over the first does not bump it.
        let urgent2 = "SCH|U2||||||EMERGENCY||30|min|^^^202612100900\rAIL|1||OR^OR-1^^TH\r";
        let events = plan_on(&mut b, "S12", urgent2).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn cases_and_places_the_board_does_not_know() {
        let mut b = OrBoard::new();
        // A clinic's appointment: nothing on the OR board, accepted.
        let clinic = "SCH|K||||||||30|min|^^^202612100800\rAIL|1||CLINIC^7^^TH\r";
        assert_eq!(plan_on(&mut b, "S12", clinic).unwrap(), vec![]);
        assert_eq!(
            plan_on(&mut b, "S15", "SCH|K\rAIL|1||CLINIC^7^^TH\r").unwrap(),
            vec![]
        );
        // A room the OR point of care does not have: parked.
        let unknown = "SCH|X||||||||30|min|^^^202612100800\rAIL|1||OR^OR-7^^TH\r";
        let r = plan_on(&mut b, "S12", unknown).unwrap_err();
        assert_eq!(r.code, ErrorCode::UnknownKey);
        // Cancelling what the board never had: parked; deleting it: nothing to do.
        assert_eq!(
            plan_on(&mut b, "S26", "SCH|Z\r").unwrap_err().code,
            ErrorCode::UnknownKey
        );
        assert_eq!(plan_on(&mut b, "S17", "SCH|Z\r").unwrap(), vec![]);
        // An S14 for a case not yet booked books it.
        let s14 = "SCH|N||||||||30|min|^^^202612100800\rAIL|1||OR^OR-1^^TH\r";
        let events = plan_on(&mut b, "S14", s14).unwrap();
        assert_eq!(only_case(&events).version, 1);
        assert!(b.case(&CaseId::new("N").unwrap()).is_some());
    }
}
