//! Protected health information (PHI) newtypes.
//!
//! Names, medical record numbers and dates of birth are wrapped so that they can
//! never reach a log line or an error body by accident: their `Debug` prints
//! `[PHI]` and they have no `Display`. Code that really needs the value (the
//! store, an authorised API response) calls `expose()`, which is easy to grep.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! phi_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The protected value. Never log it.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[PHI]")
            }
        }
    };
}

phi_type!(
    /// A medical record number (PID-3 at the hospital's own assigning authority).
    Mrn
);
phi_type!(
    /// A person's name as shown to clinicians, e.g. `DOE, JANE`.
    PersonName
);
phi_type!(
    /// A date of birth, ISO 8601 (`YYYY-MM-DD`, partial dates allowed).
    BirthDate
);

phi_type!(
    /// A postal address, one line (`street, city, postal code, state, country`).
    Address
);
phi_type!(
    /// A telephone number.
    Phone
);

/// One patient identifier (PID-3 repetition) with its assigning authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// The identifier (PHI).
    pub id: Mrn,
    /// Assigning authority (CX-4), e.g. the hospital or a national registry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub authority: String,
    /// Identifier type (CX-5), e.g. `MR`, `NH`, `PI`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// Administrative sex as used for bed cohorting (HL7 table 0001, reduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Other or unknown: never restricts placement on its own.
    Other,
}

impl Sex {
    /// Administrative sex as senders write it: the codes of HL7 table 0001
    /// (`F`, `M`, `O`, `A` ambiguous, `N` not applicable, `X`; `U` unknown)
    /// or the words (`female`, `male`, `other`, `unknown`), in any case and
    /// with spaces around. `U`, `unknown`, empty and anything else is no
    /// sex at all (`None`): a value that cannot be read is never a reason to
    /// refuse a record or a message.
    pub fn from_code(s: &str) -> Option<Sex> {
        let s = s.trim();
        let is = |w: &str| s.eq_ignore_ascii_case(w);
        if is("f") || is("female") {
            Some(Sex::Female)
        } else if is("m") || is("male") {
            Some(Sex::Male)
        } else if is("o") || is("other") || is("a") || is("ambiguous") || is("n") || is("x") {
            Some(Sex::Other)
        } else {
            None
        }
    }
}

/// A patient as the board and the kiosk see one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRef {
    /// Medical record number.
    pub mrn: Mrn,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<PersonName>,
    /// Date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<BirthDate>,
    /// Administrative sex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<Sex>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sex_reads_hl7_codes_and_words_in_any_case_and_nothing_else() {
        for (given, read) in [
            ("F", Some(Sex::Female)),
            ("female", Some(Sex::Female)),
            (" Female ", Some(Sex::Female)),
            ("FEMALE", Some(Sex::Female)),
            ("m", Some(Sex::Male)),
            ("Male", Some(Sex::Male)),
            ("O", Some(Sex::Other)),
            ("A", Some(Sex::Other)),
            ("N", Some(Sex::Other)),
            ("X", Some(Sex::Other)),
            ("Other", Some(Sex::Other)),
            ("U", None),
            ("unknown", None),
            ("", None),
            ("femme", None),
            ("1", None),
        ] {
            assert_eq!(Sex::from_code(given), read, "{given:?}");
        }
    }

    #[test]
    fn debug_never_shows_phi() {
        let p = PatientRef {
            mrn: Mrn::new("MRN-123456"),
            name: Some(PersonName::new("DOE, JANE")),
            birth_date: Some(BirthDate::new("1970-01-02")),
            sex: Some(Sex::Female),
        };
        let shown = format!("{p:?} {:?}", p.mrn);
        assert!(!shown.contains("123456"), "{shown}");
        assert!(!shown.contains("DOE"), "{shown}");
        assert!(!shown.contains("1970"), "{shown}");
        assert!(shown.contains("[PHI]"));
        // Serialization (to the store, to authorised API callers) keeps the value.
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("MRN-123456"));
    }
}
