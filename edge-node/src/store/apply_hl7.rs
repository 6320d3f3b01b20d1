//! What the writer does with an HL7 message, inside its transaction.
//!
//! A message is parsed (under `catch_unwind`: a parser defect costs one
//! message, never the writer), checked against the stored messages for a
//! duplicate, planned by the sans-IO semantics of its type (SIU:
//! [`crate::integration::siu`] onto the OR board; DFT:
//! [`crate::integration::dft`], charges; everything else:
//! [`crate::integration::adt`] into board commands) and applied; a message
//! that cannot apply is parked. Either way the message itself, its outcome and the exact ACK
//! bytes are stored as an `integration.hl7_message` event in the same
//! transaction, and the ACK leaves only after the commit. A replay of a
//! parked message goes through the same planning.

use hms_domain::{Actor, BedId, EventBody, Timestamp};
use rusqlite::OptionalExtension;

use super::writer::Writer;
use super::{Hl7Reply, Hl7Request, Replayed};
use crate::integration::hl7::Message;
use crate::integration::hl7::ack::{self, Header, Outcome as AckOutcome};
use crate::integration::{adt, dedup, dft, siu};

impl Writer {
    /// Stores one inbound message with its effects and ACKs (see the module doc).
    pub(super) fn apply_hl7(&mut self, req: Hl7Request) -> rusqlite::Result<Hl7Reply> {
        let at = Timestamp::now();
        let parse = self.parse;
        let parsed =
            std::panic::catch_unwind(|| Message::parse(&req.raw, parse)).unwrap_or_else(|_| {
                tracing::error!("HL7 parse panicked; message rejected");
                Err(crate::integration::hl7::ParseError {
                    code: crate::integration::hl7::ErrorCode::InternalError,
                    location: None,
                    reason: "internal error while reading the message".into(),
                })
            });
        let header = match &parsed {
            Ok(m) => Header::of(m),
            Err(_) => Header::salvage(&req.raw),
        };
        if parsed.is_ok() && !header.control_id.is_empty() {
            let content = dedup::digest(&req.raw);
            let stored: Vec<(String, String)> = self
                .conn
                .prepare_cached(
                    "SELECT content, acks FROM hl7_messages
                     WHERE sending_app = ?1 AND sending_facility = ?2 AND control_id = ?3",
                )?
                .query_map(
                    rusqlite::params![
                        header.sending_app,
                        header.sending_facility,
                        header.control_id
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            // A row with no content ('') is a message stored before contents
            // were compared whose event had already left the log (weeks
            // old): it is never taken for this one.
            let same = stored.iter().find(|(c, _)| *c == content);
            if let Some((_, acks)) = same {
                // A duplicate: the identical stored ACKs, nothing applied.
                let acks: Vec<String> = serde_json::from_str(acks).unwrap_or_default();
                self.published
                    .metrics
                    .hl7_messages
                    .get_or_create(&crate::metrics::KindLabels { kind: "duplicate" })
                    .inc();
                return Ok(Hl7Reply {
                    acks: acks.into_iter().map(String::into_bytes).collect(),
                    status: "duplicate",
                });
            }
            if !stored.is_empty() {
                // Same keys, other content: a new message, answered for itself.
                self.published.metrics.hl7_control_id_reused.inc();
                tracing::warn!(
                    sending_app = %header.sending_app,
                    sending_facility = %header.sending_facility,
                    control_id = %header.control_id,
                    stored = stored.len(),
                    "HL7 control id reused with other content; processed as a new message"
                );
            }
        }
        let actor = Actor {
            kind: hms_domain::ActorKind::Interface,
            id: format!(
                "hl7:{}",
                if header.sending_app.is_empty() {
                    "unknown"
                } else {
                    header.sending_app.as_str()
                }
            ),
        };
        let correlation = Some(header.control_id.clone()).filter(|c| !c.is_empty());
        let (outcome, status) = match &parsed {
            Err(e) => (
                AckOutcome::Reject {
                    code: e.code,
                    location: e.location.clone(),
                    reason: e.reason.clone(),
                },
                "rejected",
            ),
            Ok(m) => {
                let occurred_at = m
                    .get("EVN-6")
                    .or_else(|| m.get("EVN-2"))
                    .or_else(|| m.get("MSH-7"))
                    .and_then(|t| self.clock.parse(&t))
                    .unwrap_or(at);
                self.apply_message(m, at, occurred_at, &actor, correlation.as_ref())?
            }
        };
        let control = format!("ACK{}", self.next_seq);
        let acks = ack::acks(&header, &outcome, &control, &self.clock.format(at));
        let ack_code = acks
            .last()
            .and_then(|a| {
                let t = String::from_utf8_lossy(a).into_owned();
                t.split("\rMSA|")
                    .nth(1)
                    .map(|r| r.chars().take(2).collect::<String>())
            })
            .unwrap_or_default();
        let reason = match &outcome {
            AckOutcome::Accepted => None,
            AckOutcome::Error { reason, .. } | AckOutcome::Reject { reason, .. } => {
                Some(reason.clone())
            }
        };
        let body = EventBody::Hl7Message {
            sending_app: header.sending_app.clone(),
            sending_facility: header.sending_facility.clone(),
            control_id: header.control_id.clone(),
            message_type: parsed
                .as_ref()
                .ok()
                .map(|m| {
                    format!(
                        "{}^{}",
                        m.get("MSH-9.1").unwrap_or_default(),
                        m.get("MSH-9.2").unwrap_or_default()
                    )
                })
                .unwrap_or_default(),
            status: status.to_owned(),
            ack_code,
            reason,
            raw_hex: hms_domain::event::to_hex(&req.raw),
            acks: acks
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        };
        self.append(at, at, &actor, correlation.as_ref(), body)?;
        self.published
            .metrics
            .hl7_messages
            .get_or_create(&crate::metrics::KindLabels { kind: status })
            .inc();
        Ok(Hl7Reply { acks, status })
    }

    /// Re-applies a parked message; it leaves the queue when it applies now.
    pub(super) fn apply_replay(&mut self, seq: u64) -> rusqlite::Result<Option<Replayed>> {
        let parked: bool = self
            .conn
            .prepare_cached("SELECT count(*) FROM parked WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get::<_, i64>(0))?
            > 0;
        if !parked {
            return Ok(None);
        }
        let body: String = self
            .conn
            .prepare_cached("SELECT body FROM events WHERE seq = ?1")?
            .query_row([seq as i64], |r| r.get(0))?;
        let Some(raw) = super::projection::hl7_raw(&body) else {
            return Ok(None);
        };
        let at = Timestamp::now();
        let actor = Actor {
            kind: hms_domain::ActorKind::System,
            id: "replay".into(),
        };
        let (status, reason) = match Message::parse(&raw, self.parse) {
            Err(e) => ("parked", Some(e.reason)),
            Ok(m) => {
                let correlation = m.get("MSH-10");
                match self.apply_message(&m, at, at, &actor, correlation.as_ref())? {
                    (AckOutcome::Accepted, _) => ("applied", None),
                    (AckOutcome::Error { reason, .. } | AckOutcome::Reject { reason, .. }, _) => {
                        ("parked", Some(reason))
                    }
                }
            }
        };
        self.append(
            at,
            at,
            &actor,
            None,
            EventBody::Hl7Replayed {
                parked_seq: seq,
                status: status.to_owned(),
                reason: reason.clone(),
            },
        )?;
        Ok(Some(Replayed {
            seq,
            status,
            reason,
        }))
    }

    /// Applies a parsed message by its type (MSH-9.1): SIU to the OR board,
    /// everything else through the ADT semantics (which park what they do
    /// not handle).
    fn apply_message(
        &mut self,
        m: &Message,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
    ) -> rusqlite::Result<(AckOutcome, &'static str)> {
        match m.get("MSH-9.1").as_deref() {
            Some("SIU") => self.apply_siu(m, at, occurred_at, actor, correlation),
            Some("DFT") => self.apply_dft(m, at, occurred_at, actor, correlation),
            _ => self.apply_adt(m, at, occurred_at, actor, correlation),
        }
    }

    /// Applies the SIU semantics of a parsed message to the OR board; parks
    /// it when they cannot apply.
    fn apply_siu(
        &mut self,
        m: &Message,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
    ) -> rusqlite::Result<(AckOutcome, &'static str)> {
        let plan = guarded("SIU", || {
            siu::plan(m, &self.or_board, &self.or_locations, &self.clock)
        });
        let events = match plan {
            Ok(e) => e,
            Err(r) => return Ok(parked(r)),
        };
        let backup = (events.len() > 1).then(|| self.or_board.clone());
        for body in &events {
            if let Err(e) = self.or_board.apply_change(body) {
                // Planned from this board, so this is a defect: the message
                // is parked and the board left as it was.
                tracing::error!(error = %e, "an SIU plan did not fit the OR board; message parked");
                if let Some(b) = backup {
                    self.or_board = b;
                }
                return Ok(parked(internal_error()));
            }
        }
        for body in events {
            self.append(at, occurred_at, actor, correlation, body)?;
        }
        Ok((AckOutcome::Accepted, "applied"))
    }

    /// Applies the DFT semantics of a parsed message (charges); parks it
    /// when they cannot apply.
    fn apply_dft(
        &mut self,
        m: &Message,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
    ) -> rusqlite::Result<(AckOutcome, &'static str)> {
        let plan = guarded("DFT", || {
            let conn = &self.conn;
            let stored = |id: &str| -> Option<hms_domain::Charge> {
                conn.prepare_cached("SELECT body FROM charges WHERE transaction_id = ?1")
                    .and_then(|mut s| s.query_row([id], |r| r.get::<_, String>(0)).optional())
                    .ok()
                    .flatten()
                    .and_then(|b| serde_json::from_str(&b).ok())
            };
            dft::plan(m, &stored, &self.clock, at)
        });
        let events = match plan {
            Ok(e) => e,
            Err(r) => return Ok(parked(r)),
        };
        for body in events {
            self.append(at, occurred_at, actor, correlation, body)?;
        }
        Ok((AckOutcome::Accepted, "applied"))
    }

    /// Applies the ADT semantics of a parsed message; parks it when they cannot apply.
    fn apply_adt(
        &mut self,
        m: &Message,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
    ) -> rusqlite::Result<(AckOutcome, &'static str)> {
        let plan = guarded("ADT", || {
            let conn = &self.conn;
            let last_bed = |v: &hms_domain::EncounterId| -> Option<BedId> {
                conn.prepare_cached("SELECT bed_id FROM encounters WHERE encounter_id = ?1")
                    .and_then(|mut s| {
                        s.query_row([v.as_str()], |r| r.get::<_, Option<String>>(0))
                            .optional()
                    })
                    .ok()
                    .flatten()
                    .flatten()
                    .and_then(|b| BedId::new(b).ok())
            };
            adt::plan(m, &self.board, &self.locations, &last_bed)
        });
        let plan = match plan {
            Ok(p) => p,
            Err(r) => return Ok(parked(r)),
        };
        let backup = (plan.commands.len() > 1).then(|| self.board.clone());
        let mut changes = vec![];
        for cmd in plan.commands {
            match self.board.apply(cmd, at) {
                Ok(c) => changes.extend(c),
                Err(e) => {
                    if let Some(b) = backup {
                        self.board = b;
                    }
                    return Ok((
                        AckOutcome::Error {
                            code: crate::integration::hl7::ErrorCode::ApplicationError,
                            location: None,
                            reason: format!("{e}; message parked"),
                        },
                        "parked",
                    ));
                }
            }
        }
        if let Some(p) = plan.patient {
            let trigger = m.get("MSH-9.2").unwrap_or_default();
            let d = plan.details;
            self.append(
                at,
                occurred_at,
                actor,
                correlation,
                EventBody::PatientRecorded {
                    patient: p,
                    trigger,
                    identifiers: d.identifiers,
                    address: d.address,
                    phone: d.phone,
                    visit: d.visit,
                    class: d.class,
                },
            )?;
        }
        for body in changes {
            self.append(at, occurred_at, actor, correlation, body)?;
        }
        Ok((AckOutcome::Accepted, "applied"))
    }
}

/// Runs a message type's planning, which is pure, under `catch_unwind`: a
/// bug there must cost one message, not the writer. The message is then
/// parked for replay after a fix.
fn guarded<T>(
    kind: &'static str,
    plan: impl FnOnce() -> Result<T, adt::Refusal>,
) -> Result<T, adt::Refusal> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(plan)).unwrap_or_else(|_| {
        tracing::error!(kind, "planning panicked; message parked");
        Err(internal_error())
    })
}

/// The refusal of a message that met a defect of the appliance.
fn internal_error() -> adt::Refusal {
    adt::Refusal {
        code: crate::integration::hl7::ErrorCode::InternalError,
        location: None,
        reason: "internal error while applying the message".into(),
    }
}

/// The outcome of a message that cannot apply: AE with the refusal, parked.
fn parked(r: adt::Refusal) -> (AckOutcome, &'static str) {
    (
        AckOutcome::Error {
            code: r.code,
            location: r.location,
            reason: format!("{}; message parked", r.reason),
        },
        "parked",
    )
}
