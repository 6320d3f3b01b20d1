//! Bed vocabulary shared by the configuration, the board and the cloud.

use serde::{Deserialize, Serialize};

use crate::ids::EncounterId;
use crate::phi::Sex;
use crate::time::Timestamp;

/// Level of care a bed is staffed and equipped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelOfCare {
    /// Intensive care.
    Icu,
    /// Step-down / high dependency.
    StepDown,
    /// General medical or surgical ward.
    Acute,
    /// Observation / short stay.
    Observation,
    /// Emergency department.
    Emergency,
    /// Maternity and obstetrics.
    Maternity,
    /// Paediatrics.
    Pediatric,
    /// Neonatal care.
    Neonatal,
    /// Mental health.
    Psychiatric,
    /// Rehabilitation.
    Rehab,
}

impl LevelOfCare {
    /// All levels, for validation messages.
    pub const ALL: [LevelOfCare; 10] = [
        Self::Icu,
        Self::StepDown,
        Self::Acute,
        Self::Observation,
        Self::Emergency,
        Self::Maternity,
        Self::Pediatric,
        Self::Neonatal,
        Self::Psychiatric,
        Self::Rehab,
    ];

    /// The snake_case name used in config and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icu => "icu",
            Self::StepDown => "step_down",
            Self::Acute => "acute",
            Self::Observation => "observation",
            Self::Emergency => "emergency",
            Self::Maternity => "maternity",
            Self::Pediatric => "pediatric",
            Self::Neonatal => "neonatal",
            Self::Psychiatric => "psychiatric",
            Self::Rehab => "rehab",
        }
    }
}

/// Which patients a bed may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenderRestriction {
    /// Any patient.
    #[default]
    Any,
    /// Female patients only.
    Female,
    /// Male patients only.
    Male,
}

impl GenderRestriction {
    /// Whether a patient of sex `sex` (if known) may take the bed.
    pub fn admits(self, sex: Option<Sex>) -> bool {
        matches!(
            (self, sex),
            (Self::Any, _) | (Self::Female, Some(Sex::Female)) | (Self::Male, Some(Sex::Male))
        )
    }
}

/// Static attributes of a bed, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BedAttributes {
    /// Gender restriction.
    #[serde(default)]
    pub gender: GenderRestriction,
    /// The bed is in a room that can isolate (negative pressure, own bathroom…).
    #[serde(default)]
    pub isolation_capable: bool,
    /// Telemetry monitoring is available.
    #[serde(default)]
    pub telemetry: bool,
    /// Bariatric bed.
    #[serde(default)]
    pub bariatric: bool,
    /// Level of care.
    pub level_of_care: LevelOfCare,
    /// Room the bed is in, when rooms are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<crate::ids::RoomId>,
    /// Free tags (`window`, `near-station`…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The occupancy and housekeeping state of a bed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BedState {
    /// Empty and clean: can be assigned.
    VacantClean,
    /// Empty, waiting for housekeeping.
    VacantDirty,
    /// Housekeeping in progress.
    Cleaning,
    /// A patient is in the bed.
    Occupied {
        /// The stay occupying the bed.
        encounter: EncounterId,
    },
    /// Held for an incoming patient.
    Reserved {
        /// The stay the bed is held for.
        encounter: EncounterId,
    },
    /// Out of service.
    Blocked {
        /// Why (maintenance, staffing, infection control…).
        reason: String,
        /// Until when, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
    },
}

impl BedState {
    /// The snake_case name of the state.
    pub fn name(&self) -> &'static str {
        match self {
            Self::VacantClean => "vacant_clean",
            Self::VacantDirty => "vacant_dirty",
            Self::Cleaning => "cleaning",
            Self::Occupied { .. } => "occupied",
            Self::Reserved { .. } => "reserved",
            Self::Blocked { .. } => "blocked",
        }
    }

    /// The encounter occupying or holding the bed.
    pub fn encounter(&self) -> Option<&EncounterId> {
        match self {
            Self::Occupied { encounter } | Self::Reserved { encounter } => Some(encounter),
            _ => None,
        }
    }
}

/// Housekeeping status a kiosk may set (the target of a status change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Housekeeping {
    /// Mark a vacant bed dirty.
    Dirty,
    /// Start cleaning.
    Cleaning,
    /// Cleaning finished: the bed is ready.
    Clean,
}
