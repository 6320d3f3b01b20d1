//! Charges: what the revenue cycle's `billing.*` events carry.
//!
//! Each financial transaction (an HL7 DFT's FT1) is one [`Charge`], keyed by
//! its transaction id; amounts are whole cents, signed (a credit is
//! negative), so totals are exact. A reversal keeps the charge and marks it
//! `reversed`; totals leave it out.

use serde::{Deserialize, Serialize};

use crate::ids::EncounterId;
use crate::phi::Mrn;
use crate::time::Timestamp;

/// What a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeKind {
    /// A charge (FT1-6 `CG`, or an adjustment `AJ`).
    Charge,
    /// A credit (FT1-6 `CD`, or a negative quantity): counts against the total.
    Credit,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    /// Counts in the visit's total.
    Posted,
    /// Reversed by a later credit with the same transaction id: kept, not counted.
    Reversed,
}

impl ChargeStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Posted => "posted",
            Self::Reversed => "reversed",
        }
    }
}

/// One financial transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    /// FT1-2, else derived from the message (`{MSH-10}-{FT1-1}`).
    pub transaction_id: String,
    /// The visit (PV1-19), when the message names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit: Option<EncounterId>,
    /// The patient (PID-3), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<Mrn>,
    /// Where it was incurred: FT1-16's point of care, else PV1-3's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Transaction date (FT1-4), else the message time.
    pub date: Timestamp,
    /// Charge or credit.
    pub kind: ChargeKind,
    /// Charge code (FT1-7.1, else FT1-25.1): CPT, HCPCS or local.
    pub code: String,
    /// Its coding system (FT1-7.3), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_system: Option<String>,
    /// Description (FT1-7.2, else FT1-8), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Quantity (FT1-10; 1 when empty), signed like the amount.
    pub quantity: i64,
    /// Extended amount (FT1-11) in cents, signed (negative for a credit);
    /// `None` when the message gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
    /// Department (FT1-13.1), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Diagnosis codes of the message (DG1-3.1, FT1-19), in order, once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<String>,
    /// Posted or reversed.
    pub status: ChargeStatus,
}

impl Charge {
    /// What it adds to its visit's total, in cents (nothing once reversed).
    pub fn counted_cents(&self) -> i64 {
        match self.status {
            ChargeStatus::Posted => self.amount_cents.unwrap_or(0),
            ChargeStatus::Reversed => 0,
        }
    }
}

/// Cents as a decimal amount, `-12.50`.
pub fn format_cents(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A decimal amount (`125`, `125.5`, `-3.05`) in cents; `None` when it is
/// not one, has more than two decimals or does not fit.
pub fn parse_cents(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 2
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 15
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    let cents = whole.checked_mul(100)?.checked_add(frac)?;
    Some(if neg { -cents } else { cents })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_cents() {
        assert_eq!(parse_cents("125"), Some(12_500));
        assert_eq!(parse_cents("125.5"), Some(12_550));
        assert_eq!(parse_cents("-3.05"), Some(-305));
        assert_eq!(parse_cents(".75"), Some(75));
        assert_eq!(parse_cents("+1.00"), Some(100));
        for bad in [
            "",
            "-",
            ".",
            "1.234",
            "1e3",
            "12,50",
            "NaN",
            "1.2.3",
            "9999999999999999",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad:?}");
        }
        assert_eq!(format_cents(12_550), "125.50");
        assert_eq!(format_cents(-305), "-3.05");
        assert_eq!(format_cents(0), "0.00");
    }
}
