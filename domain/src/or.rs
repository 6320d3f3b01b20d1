//! Operating-room cases: what the OR board holds and what its events carry.
//!
//! A case is booked by the hospital's scheduling system (HL7 SIU) into an
//! operating room for a start time and a booked duration. Each
//! `or.case_*` event carries the whole case as it is after the change
//! (ADR 0002), so the OR board and its projection are rebuilt from the log
//! alone.

use serde::{Deserialize, Serialize};

use crate::ids::{CaseId, EncounterId, OrRoomId};
use crate::phi::PatientRef;
use crate::time::Timestamp;

/// Longest booked duration accepted, minutes (a day).
pub const MAX_BOOKED_MINUTES: u32 = 1440;

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Booked and expected to go ahead.
    Scheduled,
    /// Cancelled (S15) or discontinued (S16).
    Cancelled,
    /// The patient did not come (S26).
    NoShow,
    /// Displaced by an emergency add-on case in its room; waits to be
    /// rescheduled.
    Bumped,
    /// Deleted by the scheduling system (S17): no longer shown.
    Deleted,
    /// Done: the scheduling system reported it complete (SCH-25
    /// `Complete`), with its actual start and duration.
    Completed,
}

impl CaseStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Cancelled => "cancelled",
            Self::NoShow => "no_show",
            Self::Bumped => "bumped",
            Self::Deleted => "deleted",
            Self::Completed => "completed",
        }
    }
}

/// How urgent a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Planned ahead.
    #[default]
    Elective,
    /// An emergency add-on (stat or as soon as possible).
    Urgent,
}

impl Priority {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elective => "elective",
            Self::Urgent => "urgent",
        }
    }
}

/// What happened to a case; becomes the event kind `or.case_<change>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseChange {
    /// A new booking (S12).
    Scheduled,
    /// Moved to another time or room (S13).
    Rescheduled,
    /// Details changed (S14, or an S12 for a case already booked).
    Modified,
    /// Cancelled or discontinued (S15, S16).
    Cancelled,
    /// Deleted (S17).
    Deleted,
    /// The patient did not come (S26).
    NoShow,
    /// Displaced by an emergency add-on case.
    Bumped,
    /// Reported complete, with its actual times.
    Completed,
}

impl CaseChange {
    /// The event kind for this change.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Scheduled => "or.case_scheduled",
            Self::Rescheduled => "or.case_rescheduled",
            Self::Modified => "or.case_modified",
            Self::Cancelled => "or.case_cancelled",
            Self::Deleted => "or.case_deleted",
            Self::NoShow => "or.case_no_show",
            Self::Bumped => "or.case_bumped",
            Self::Completed => "or.case_completed",
        }
    }
}

/// A case's predicted duration as the appliance recorded it for one
/// version of the case (`or.case_predicted`): what the OR board showed, kept
/// so the regional cloud can compare booked, predicted and actual times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasePrediction {
    /// The case.
    pub case_id: CaseId,
    /// The version of the case predicted.
    pub version: u64,
    /// Its room.
    pub room: OrRoomId,
    /// Its booked start.
    pub start: Timestamp,
    /// Its booked minutes.
    pub booked_minutes: u32,
    /// Predicted minutes, rounded.
    pub minutes: u32,
    /// `model` or `fallback`.
    pub source: String,
    /// Why the fallback answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One operating-room case as the OR board holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrCase {
    /// The scheduling system's appointment id.
    pub case_id: CaseId,
    /// The operating room.
    pub room: OrRoomId,
    /// Where the case stands.
    pub status: CaseStatus,
    /// How urgent it is.
    #[serde(default)]
    pub priority: Priority,
    /// Booked start.
    pub start: Timestamp,
    /// Booked duration, minutes (1 to [`MAX_BOOKED_MINUTES`]).
    pub booked_minutes: u32,
    /// Procedure code (AIS-3.1), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<String>,
    /// Procedure text (AIS-3.2), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure_text: Option<String>,
    /// Surgeon code (AIP-3.1 of the surgeon), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surgeon: Option<String>,
    /// Surgeon's name (`FAMILY, GIVEN`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surgeon_name: Option<String>,
    /// ASA physical status class (1 to 6), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asa: Option<u8>,
    /// The patient (PID), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientRef>,
    /// The visit (PV1-19), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit: Option<EncounterId>,
    /// The emergency case that displaced this one, while it is bumped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bumped_by: Option<CaseId>,
    /// When it actually started (completed cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_start: Option<Timestamp>,
    /// How long it actually took, minutes (completed cases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_minutes: Option<u32>,
    /// Changes so far (1 for a new case).
    pub version: u64,
}

impl OrCase {
    /// A new elective case, version 1, scheduled in `room` at `start` for
    /// `booked_minutes`; nothing else known yet.
    pub fn booked(case_id: CaseId, room: OrRoomId, start: Timestamp, booked_minutes: u32) -> Self {
        OrCase {
            case_id,
            room,
            status: CaseStatus::Scheduled,
            priority: Priority::Elective,
            start,
            booked_minutes,
            procedure: None,
            procedure_text: None,
            surgeon: None,
            surgeon_name: None,
            asa: None,
            patient: None,
            visit: None,
            bumped_by: None,
            actual_start: None,
            actual_minutes: None,
            version: 1,
        }
    }

    /// The booked end.
    pub fn booked_end(&self) -> Timestamp {
        Timestamp::from_millis(
            self.start
                .as_millis()
                .saturating_add(i64::from(self.booked_minutes) * 60_000),
        )
    }

    /// Whether the case still takes its room (scheduled).
    pub fn is_active(&self) -> bool {
        self.status == CaseStatus::Scheduled
    }

    /// Whether its booked time overlaps `[from, to)`.
    pub fn overlaps(&self, from: Timestamp, to: Timestamp) -> bool {
        self.start < to && from < self.booked_end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(start_min: i64, minutes: u32) -> OrCase {
        OrCase::booked(
            CaseId::new("C1").unwrap(),
            OrRoomId::new("OR-1").unwrap(),
            Timestamp::from_millis(start_min * 60_000),
            minutes,
        )
    }

    #[test]
    fn overlap_is_half_open() {
        let c = case(60, 60);
        let at = |m: i64| Timestamp::from_millis(m * 60_000);
        assert!(c.overlaps(at(90), at(150)));
        assert!(c.overlaps(at(0), at(61)));
        assert!(!c.overlaps(at(120), at(180)), "starts as the other ends");
        assert!(!c.overlaps(at(0), at(60)), "ends as the other starts");
        assert_eq!(c.booked_end(), at(120));
    }

    #[test]
    fn a_case_round_trips_through_json_without_empty_fields() {
        let c = case(0, 90);
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains("procedure"), "{text}");
        assert!(text.contains("\"status\":\"scheduled\""), "{text}");
        assert_eq!(serde_json::from_str::<OrCase>(&text).unwrap(), c);
    }
}
