//! Identifiers shared by the appliance, the configuration and the cloud.
//!
//! Every id is a short, printable token (`[A-Za-z0-9._:-]`, 1–64 bytes). Ids are
//! not PHI: they are safe to log and to put in error bodies. Patient identifiers
//! (MRNs) are *not* here; they are PHI and live in [`crate::phi`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("id is empty")]
    Empty,
    /// The string is longer than [`MAX_ID_LEN`] bytes.
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// The string holds a character outside `[A-Za-z0-9._:-]`.
    #[error(
        "id contains {0:?}; only letters, digits, dot, underscore, colon and hyphen are allowed"
    )]
    BadChar(char),
}

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Checks that `s` is a valid id.
pub fn validate_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate_id(&s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// An id this crate made up itself and knows to be valid.
            #[allow(dead_code)]
            pub(crate) fn known(s: String) -> Self {
                debug_assert!(validate_id(&s).is_ok(), "{s:?} is not a valid id");
                Self(s)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A hospital, unique within its region.
    HospitalId
);
id_type!(
    /// A cloud region (data residency boundary), e.g. `eu-west`.
    RegionId
);
id_type!(
    /// One appliance of a hospital.
    NodeId
);
id_type!(
    /// A nursing unit (ward).
    UnitId
);
id_type!(
    /// A room inside a unit.
    RoomId
);
id_type!(
    /// A bed: the unit the board manages.
    BedId
);
id_type!(
    /// A hospital stay (visit), usually PV1-19 or an id issued by the kiosk.
    EncounterId
);
id_type!(
    /// An operating room (`[[or_room]]`).
    OrRoomId
);
id_type!(
    /// An operating-room case: the scheduling system's appointment id
    /// (SIU SCH-1, else SCH-2).
    CaseId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_tokens_and_reject_junk() {
        assert!(BedId::new("3W-301-A").is_ok());
        assert!(BedId::new("icu:01.b_2").is_ok());
        assert_eq!(BedId::new(""), Err(IdError::Empty));
        assert_eq!(BedId::new("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(BedId::new("x".repeat(65)), Err(IdError::TooLong));
        assert_eq!(UnitId::new("é"), Err(IdError::BadChar('é')));
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: BedId = serde_json::from_str("\"B-1\"").unwrap();
        assert_eq!(ok.as_str(), "B-1");
        let err = serde_json::from_str::<BedId>("\"B 1\"").unwrap_err();
        assert!(err.to_string().contains("only letters"), "{err}");
    }
}
