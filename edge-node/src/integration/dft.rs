//! HL7 DFT semantics: charges posted by the hospital's financial systems.
//! Sans-IO: [`plan`] reads a parsed DFT^P03 or P11 and the charges already
//! stored (a look-up by transaction id) and returns the `billing.*` events
//! to record, or the reason the message must be parked.
//!
//! Each FT1 is one transaction, keyed by FT1-2 (else `{MSH-10}-{FT1-1}`):
//!
//! - type FT1-6 `CG` (charge, also when empty) or `AJ` (adjustment): a
//!   charge; `CD`: a credit; `PY` (payment): not a charge, no effect; any
//!   other type parks the message (ERR 103);
//! - a negative quantity (FT1-10) makes a charge a credit; amounts (FT1-11,
//!   the extended amount) are whole cents, negative for a credit;
//! - **idempotent by transaction id**: the same transaction again (same
//!   kind, code, quantity, amount and visit) changes nothing; a credit with the id of a posted charge **reverses** it (the
//!   charge stays, marked `reversed`, out of the totals); a charge with the
//!   id of another, different transaction parks the message (ERR 206);
//! - the visit is PV1-19, the patient PID-3; a visit the appliance does not
//!   know is accepted (charges often arrive after discharge, or before the
//!   ADT feed told of the visit) and the charges are found by its id;
//! - diagnoses: DG1-3 of every DG1, and FT1-19, for coding suggestions.
//!
//! All transactions of a message apply, or none (the message is parked).

use hms_domain::{Charge, ChargeKind, ChargeStatus, EncounterId, EventBody, Timestamp};

use crate::integration::adt::Refusal;
use crate::integration::hl7::time::HospitalTime;
use crate::integration::hl7::{ErrorCode, Location, Message, Segment};

/// Longest transaction id kept.
pub const MAX_TRANSACTION_ID: usize = 64;

fn refuse(code: ErrorCode, seq: usize, field: usize, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        location: Some(Location {
            segment: "FT1".into(),
            sequence: seq,
            field: Some(field),
            component: None,
        }),
        reason: reason.into(),
    }
}

fn comp(m: &Message, s: &Segment, field: usize, c: usize) -> Option<String> {
    s.raw(field)
        .and_then(|r| m.component(r, c, 1))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The diagnosis codes of a message: DG1-3.1 of each DG1, then FT1-19.
fn diagnoses(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut add = |code: Option<String>| {
        if let Some(c) = code
            && !out.contains(&c)
        {
            out.push(c);
        }
    };
    for s in m.segments().iter().filter(|s| s.id() == "DG1") {
        add(comp(m, s, 3, 1));
    }
    for s in m.segments().iter().filter(|s| s.id() == "FT1") {
        if let Some(raw) = s.raw(19) {
            for rep in raw.split(m.delimiters.repetition) {
                add(m
                    .component(rep, 1, 1)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty()));
            }
        }
    }
    out
}

/// Whether `b` is `a` sent again: the same kind, code, quantity, amount
/// and visit (times and descriptive fields may differ between sends).
fn same_transaction(a: &Charge, b: &Charge) -> bool {
    (a.kind, &a.code, a.quantity, a.amount_cents, &a.visit)
        == (b.kind, &b.code, b.quantity, b.amount_cents, &b.visit)
}

/// Decides what a DFT message does. `stored` finds a transaction already
/// posted.
pub fn plan(
    m: &Message,
    stored: &dyn Fn(&str) -> Option<Charge>,
    clock: &HospitalTime,
    at: Timestamp,
) -> Result<Vec<EventBody>, Refusal> {
    let trigger = m.get("MSH-9.2").unwrap_or_default();
    if !matches!(trigger.as_str(), "P03" | "P11") {
        return Err(Refusal {
            code: ErrorCode::UnsupportedEvent,
            location: Some(Location {
                segment: "MSH".into(),
                sequence: 1,
                field: Some(9),
                component: None,
            }),
            reason: format!("DFT trigger {trigger:?} is not handled"),
        });
    }
    let ft1: Vec<&Segment> = m.segments().iter().filter(|s| s.id() == "FT1").collect();
    if ft1.is_empty() {
        return Err(refuse(
            ErrorCode::SegmentSequence,
            1,
            1,
            "the message has no FT1 segment",
        ));
    }
    let visit = match m.get("PV1-19") {
        None => None,
        Some(v) => Some(EncounterId::new(v).map_err(|e| Refusal {
            code: ErrorCode::DataType,
            location: Some(Location {
                segment: "PV1".into(),
                sequence: 1,
                field: Some(19),
                component: None,
            }),
            reason: format!("PV1-19 is not a usable visit id: {e}"),
        })?),
    };
    let patient = crate::integration::adt::patient(m).ok().map(|p| p.mrn);
    let pv1_unit = m.get("PV1-3.1");
    let when = m
        .get("EVN-2")
        .or_else(|| m.get("MSH-7"))
        .and_then(|t| clock.parse(&t))
        .unwrap_or(at);
    let dx = diagnoses(m);
    let control = m.get("MSH-10").unwrap_or_default();
    let mut out: Vec<EventBody> = vec![];
    let mut seen: Vec<String> = vec![];
    for (i, s) in ft1.iter().enumerate() {
        let seq = i + 1;
        let id = match comp(m, s, 2, 1) {
            Some(id) => id,
            None => format!(
                "{control}-{}",
                comp(m, s, 1, 1).unwrap_or_else(|| seq.to_string())
            ),
        };
        if id.len() > MAX_TRANSACTION_ID || id.chars().any(char::is_control) {
            return Err(refuse(
                ErrorCode::DataType,
                seq,
                2,
                format!(
                    "FT1-2 (transaction id) must be at most {MAX_TRANSACTION_ID} printable characters"
                ),
            ));
        }
        if seen.contains(&id) {
            return Err(refuse(
                ErrorCode::DataType,
                seq,
                2,
                format!("transaction {id} appears twice in the message"),
            ));
        }
        seen.push(id.clone());
        let ty = comp(m, s, 6, 1).map(|t| t.to_ascii_uppercase());
        let mut kind = match ty.as_deref() {
            None | Some("CG") | Some("AJ") => ChargeKind::Charge,
            Some("CD") => ChargeKind::Credit,
            Some("PY") => continue,
            Some(_) => {
                return Err(refuse(
                    ErrorCode::TableValueNotFound,
                    seq,
                    6,
                    "FT1-6 is not a transaction type of table 0017 (CG, CD, AJ, PY)",
                ));
            }
        };
        let quantity: i64 = match comp(m, s, 10, 1) {
            None => 1,
            Some(q) => q
                .parse()
                .ok()
                .filter(|q: &i64| *q != 0 && q.abs() <= 1_000_000)
                .ok_or_else(|| {
                    refuse(
                        ErrorCode::DataType,
                        seq,
                        10,
                        "FT1-10 (quantity) must be a whole number other than 0, at most 1,000,000",
                    )
                })?,
        };
        if quantity < 0 {
            kind = ChargeKind::Credit;
        }
        let amount = match comp(m, s, 11, 1) {
            None => None,
            Some(a) => Some(hms_domain::charge::parse_cents(&a).ok_or_else(|| {
                refuse(
                    ErrorCode::DataType,
                    seq,
                    11,
                    "FT1-11 (extended amount) must be a decimal amount with at most two decimals",
                )
            })?),
        };
        let code = comp(m, s, 7, 1)
            .or_else(|| comp(m, s, 25, 1))
            .ok_or_else(|| {
                refuse(
                    ErrorCode::RequiredFieldMissing,
                    seq,
                    7,
                    "FT1-7 (transaction code) and FT1-25 (procedure code) are both missing",
                )
            })?;
        let date = match comp(m, s, 4, 1) {
            None => when,
            Some(t) => clock.parse(&t).ok_or_else(|| {
                refuse(
                    ErrorCode::DataType,
                    seq,
                    4,
                    "FT1-4 (transaction date) is not an HL7 date/time",
                )
            })?,
        };
        let sign = if kind == ChargeKind::Credit { -1 } else { 1 };
        let charge = Charge {
            transaction_id: id.clone(),
            visit: visit.clone(),
            patient: patient.clone(),
            unit: comp(m, s, 16, 1).or_else(|| pv1_unit.clone()),
            date,
            kind,
            code: code.clone(),
            code_system: comp(m, s, 7, 3),
            description: comp(m, s, 7, 2).or_else(|| comp(m, s, 8, 1)),
            quantity: sign * quantity.abs(),
            amount_cents: amount.map(|a| sign * a.abs()),
            department: comp(m, s, 13, 1),
            diagnoses: dx.clone(),
            status: ChargeStatus::Posted,
        };
        match stored(&id) {
            None => out.push(EventBody::ChargePosted { charge }),
            Some(old) if same_transaction(&old, &charge) => {}
            Some(old) if kind == ChargeKind::Credit && old.kind == ChargeKind::Charge => {
                if old.status == ChargeStatus::Posted {
                    out.push(EventBody::ChargeReversed {
                        charge: Charge {
                            status: ChargeStatus::Reversed,
                            ..old
                        },
                    });
                }
            }
            Some(_) => {
                return Err(refuse(
                    ErrorCode::ApplicationError,
                    seq,
                    2,
                    format!("transaction {id} is already posted with other content"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integration::hl7::ParseConfig;

    fn plan_of(
        body: &str,
        stored: &dyn Fn(&str) -> Option<Charge>,
    ) -> Result<Vec<Charge>, Refusal> {
        let text = format!("MSH|^~\\&|FIN|TH|||20261210120000||DFT^P11|C9|P|2.5\r{body}");
        let m = Message::parse(text.as_bytes(), ParseConfig::default()).unwrap();
        let events = plan(&m, stored, &HospitalTime::utc(), Timestamp::from_millis(0))?;
        Ok(events
            .into_iter()
            .map(|e| match e {
                EventBody::ChargePosted { charge } | EventBody::ChargeReversed { charge } => charge,
                other => panic!("{other:?}"),
            })
            .collect())
    }

    #[test]
    fn ids_codes_units_and_diagnoses_come_from_their_fields_or_fallbacks() {
        let body = "PV1|1|I|WARD^1\r\
                    FT1|1|||||CG||Room and board||1|200|||||ICU^3~x|||I10~E11.9||||||99291^Critical care\r\
                    FT1|2|||||AJ|A100^Adj\r\
                    DG1|1||K35.80\rDG1|2||I10\r";
        let c = plan_of(body, &|_| None).unwrap();
        assert_eq!(
            c[0].transaction_id, "C9-1",
            "no FT1-2: from MSH-10 and FT1-1"
        );
        assert_eq!(c[0].code, "99291", "no FT1-7: FT1-25");
        assert_eq!(c[0].description.as_deref(), Some("Room and board"), "FT1-8");
        assert_eq!(c[0].unit.as_deref(), Some("ICU"), "FT1-16 before PV1-3");
        assert_eq!(c[0].amount_cents, Some(20_000));
        assert_eq!(
            c[0].diagnoses,
            ["K35.80", "I10", "E11.9"],
            "DG1, then FT1-19, once each"
        );
        assert_eq!(
            c[0].date,
            HospitalTime::utc().parse("20261210120000").unwrap(),
            "MSH-7"
        );
        assert_eq!(c[1].unit.as_deref(), Some("WARD"));
        assert_eq!(
            c[1].kind,
            ChargeKind::Charge,
            "an adjustment counts as a charge"
        );
        assert_eq!(c[1].amount_cents, None, "no amount given");
    }

    #[test]
    fn a_transaction_twice_in_one_message_and_a_credit_of_a_credit_are_told_apart() {
        let r = plan_of("FT1|1|T1||||CG|A\rFT1|2|T1||||CG|A\r", &|_| None).unwrap_err();
        assert_eq!(
            r.location.map(|l| (l.sequence, l.field)),
            Some((2, Some(2)))
        );
        let credit = plan_of("FT1|1|T1||||CD|A||||1|5\r", &|_| None).unwrap();
        let stored = credit[0].clone();
        // The same credit again: nothing; a charge under its id: refused.
        assert_eq!(
            plan_of("FT1|1|T1||||CD|A||||1|5\r", &|_| Some(stored.clone())).unwrap(),
            vec![]
        );
        assert!(plan_of("FT1|1|T1||||CG|A||||1|5\r", &|_| Some(stored.clone())).is_err());
    }
}
