//! Typed reads of what only the log and the projections hold.
//!
//! Kiosk reads come from the board the writer publishes; these are for the
//! rest: the uplink (events after the cloud's position, the outbox), the
//! downlink's position, the patient index's pages and rows, the forecaster's seed,
//! the parked queue, a visit's charges and the coding suggestions' history. Each runs on a pooled read-only connection off the
//! async runtime (`Store::read`); no other module sees a connection.

use anyhow::Context;
use hms_domain::phi::{Address, BirthDate, Mrn, PersonName, Phone};
use hms_domain::{Envelope, EventHash, Timestamp};
use rusqlite::{OptionalExtension, params};

use super::Store;
use super::projection::{EVENT_COLUMNS, event_from_row};

/// Unacknowledged events, as the uplink measures them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outbox {
    /// Events after the position.
    pub events: u64,
    /// Their approximate size: body bytes plus `row_overhead` each.
    pub bytes: u64,
    /// `recorded_at` (ms) of the oldest of them.
    pub oldest_ms: Option<i64>,
}

/// One row of the patients projection.
#[derive(Debug, Clone)]
pub struct PatientRow {
    /// Medical record number.
    pub mrn: Mrn,
    /// Name.
    pub name: Option<PersonName>,
    /// Date of birth.
    pub birth_date: Option<BirthDate>,
    /// Administrative sex as stored (`female`, `male`, `other`).
    pub sex: Option<String>,
    /// Every identifier, as stored (JSON).
    pub identifiers_json: Option<String>,
    /// Address.
    pub address: Option<Address>,
    /// Phone.
    pub phone: Option<Phone>,
    /// Enterprise id.
    pub eid: Option<String>,
}

/// A bed movement in the log (for the forecaster's history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// When it was recorded (ms).
    pub at_ms: i64,
    /// The bed.
    pub bed: String,
    /// An admission into the bed (true) or a departure from it (false).
    pub admission: bool,
}

/// One parked message (no PHI: ids and the reason only), as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParkedRow {
    /// Seq of its `integration.hl7_message` event.
    pub seq: u64,
    /// MSH-3.
    pub sending_app: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-9 (`ADT^A01`).
    pub message_type: String,
    /// Why it could not apply.
    pub reason: String,
    /// When it was parked.
    pub parked_at: Timestamp,
}

/// A row of `SELECT mrn, name, birth_date, sex, identifiers, address,
/// phone, eid FROM patients`.
fn patient_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatientRow> {
    Ok(PatientRow {
        mrn: Mrn::new(r.get::<_, String>(0)?),
        name: r.get::<_, Option<String>>(1)?.map(PersonName::new),
        birth_date: r.get::<_, Option<String>>(2)?.map(BirthDate::new),
        sex: r.get(3)?,
        identifiers_json: r.get(4)?,
        address: r.get::<_, Option<String>>(5)?.map(Address::new),
        phone: r.get::<_, Option<String>>(6)?.map(Phone::new),
        eid: r.get(7)?,
    })
}

/// The rows of the patients with these MRNs (those that have one).
fn patients_by_mrn(
    conn: &rusqlite::Connection,
    mrns: &[String],
) -> rusqlite::Result<Vec<PatientRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT mrn, name, birth_date, sex, identifiers, address, phone, eid FROM patients
         WHERE mrn = ?1",
    )?;
    let mut out = Vec::with_capacity(mrns.len());
    for mrn in mrns {
        if let Some(row) = stmt.query_row([mrn], patient_row).optional()? {
            out.push(row);
        }
    }
    Ok(out)
}

impl Store {
    /// Up to `max` events after seq `after`, in order, cut before the JSON
    /// of bodies (plus `row_overhead` each) passes `max_bytes` (at least one).
    pub async fn events_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
        row_overhead: usize,
    ) -> anyhow::Result<Vec<Envelope>> {
        self.read(move |conn, hospital| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after as i64, max as i64], |r| {
                event_from_row(hospital, r)
            })?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for row in rows {
                let e = row?;
                bytes += e.body.len() + row_overhead;
                if !out.is_empty() && bytes > max_bytes {
                    break;
                }
                out.push(e);
            }
            Ok(out)
        })
        .await
    }

    /// The hash of event `seq` (what the uplink checks the cloud's
    /// acknowledgements against): from the log, or the retention base's when
    /// retention removed that event and the base is at `seq`; none when the
    /// log holds neither.
    pub async fn event_hash(&self, seq: u64) -> anyhow::Result<Option<EventHash>> {
        self.read(move |conn, _| {
            let stored: Option<Vec<u8>> = conn
                .prepare_cached("SELECT hash FROM events WHERE seq = ?1")?
                .query_row([seq as i64], |r| r.get(0))
                .optional()?;
            if let Some(h) = stored {
                return Ok(Some(
                    EventHash::from_slice(&h)
                        .with_context(|| format!("event {seq} has a malformed hash"))?,
                ));
            }
            Ok(super::retention::base_of(conn, "main")?
                .filter(|(at, _)| *at == seq)
                .map(|(_, h)| h))
        })
        .await
    }

    /// The events after `after`: how many, their size (`row_overhead` added
    /// per event) and the oldest one's time.
    pub async fn outbox(&self, after: u64, row_overhead: u64) -> anyhow::Result<Outbox> {
        self.read(move |conn, _| {
            let (n, bytes): (i64, i64) = conn.query_row(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM events WHERE seq > ?1",
                [after as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let oldest_ms: Option<i64> = conn
                .query_row(
                    "SELECT recorded_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1",
                    [after as i64],
                    |r| r.get(0),
                )
                .ok();
            let events = n.max(0) as u64;
            Ok(Outbox {
                events,
                bytes: bytes.max(0) as u64 + events * row_overhead,
                oldest_ms,
            })
        })
        .await
    }

    /// The downlink position the store has applied (0: none yet).
    pub async fn downlink_position(&self) -> anyhow::Result<u64> {
        self.read(|conn, _| {
            Ok(conn
                .query_row(
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'downlink_seq'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                .max(0) as u64)
        })
        .await
    }

    /// The number of the last change of the `auth.sqlite` whose id is
    /// `credentials` that the log records as an `audit.token_*` event (0:
    /// none), so that each is recorded once ([`crate::auth::Follower`]).
    /// Scans the log backwards; asked only when there are changes to record.
    pub async fn last_token_change(&self, credentials: &str) -> anyhow::Result<u64> {
        let credentials = credentials.to_owned();
        self.read(move |conn, _| {
            let mut stmt = conn.prepare(
                "SELECT body FROM events
                 WHERE kind IN ('audit.token_created', 'audit.token_revoked')
                 ORDER BY seq DESC",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let body: String = row.get(0)?;
                match serde_json::from_str(&body).context("a token audit event does not parse")? {
                    hms_domain::EventBody::TokenCreated {
                        credentials: c,
                        change,
                        ..
                    }
                    | hms_domain::EventBody::TokenRevoked {
                        credentials: c,
                        change,
                        ..
                    } if c == credentials => return Ok(change),
                    _ => {}
                }
            }
            Ok(0)
        })
        .await
    }

    /// Up to `limit` rows of the patients projection with an MRN after
    /// `after` (from the first when `None`), in MRN order: the patient
    /// index reads the projection a page at a time, so a million patients
    /// are never held as rows at once.
    pub async fn patients_page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> anyhow::Result<Vec<PatientRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn, _| {
            // Two statements, so that each walks the MRN index from where
            // the page starts.
            let rows = match after {
                None => conn
                    .prepare_cached(
                        "SELECT mrn, name, birth_date, sex, identifiers, address, phone, eid
                         FROM patients ORDER BY mrn LIMIT ?1",
                    )?
                    .query_map([limit], patient_row)?
                    .collect::<Result<Vec<_>, _>>()?,
                Some(after) => conn
                    .prepare_cached(
                        "SELECT mrn, name, birth_date, sex, identifiers, address, phone, eid
                         FROM patients WHERE mrn > ?1 ORDER BY mrn LIMIT ?2",
                    )?
                    .query_map(params![after, limit], patient_row)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(rows)
        })
        .await
    }

    /// The rows of the patients projection with these MRNs (an MRN without
    /// a row is left out), in no particular order: the patient index's
    /// display fields and the changes it follows.
    pub async fn patients_by_mrn(&self, mrns: Vec<String>) -> anyhow::Result<Vec<PatientRow>> {
        self.read(move |conn, _| Ok(patients_by_mrn(conn, &mrns)?))
            .await
    }

    /// Runs `pick` off the async runtime, then reads the rows of the MRNs
    /// it names on the same thread: a ranked patient search (rank in
    /// memory, then the hits' display fields) in one trip. Rows as
    /// [`Store::patients_by_mrn`] gives them.
    pub async fn patients_picked<T, F>(&self, pick: F) -> anyhow::Result<(T, Vec<PatientRow>)>
    where
        T: Send + 'static,
        F: FnOnce() -> (T, Vec<String>) + Send + 'static,
    {
        self.read(move |conn, _| {
            let (picked, mrns) = pick();
            Ok((picked, patients_by_mrn(conn, &mrns)?))
        })
        .await
    }

    /// Bed movements recorded at or after `since_ms`, newest first, as
    /// `movement` classifies event kinds (`Some(true)` an admission,
    /// `Some(false)` a departure), and the oldest time the log reaches back
    /// to within that window (`now_ms` when it holds nothing that old).
    pub async fn movements_since(
        &self,
        since_ms: i64,
        now_ms: i64,
        movement: fn(&str) -> Option<bool>,
    ) -> anyhow::Result<(Vec<Movement>, i64)> {
        self.read(move |conn, _| {
            let mut stmt =
                conn.prepare("SELECT kind, subject, recorded_at FROM events ORDER BY seq DESC")?;
            let mut rows = stmt.query([])?;
            let mut out = vec![];
            let mut oldest = now_ms;
            while let Some(r) = rows.next()? {
                let at: i64 = r.get(2)?;
                if at < since_ms {
                    break;
                }
                oldest = oldest.min(at);
                let kind: String = r.get(0)?;
                if let (Some(admission), Some(bed)) =
                    (movement(&kind), r.get::<_, Option<String>>(1)?)
                {
                    out.push(Movement {
                        at_ms: at,
                        bed,
                        admission,
                    });
                }
            }
            Ok((out, oldest))
        })
        .await
    }

    /// The parked messages, oldest first.
    pub async fn parked(&self) -> anyhow::Result<Vec<ParkedRow>> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, sending_app, sending_facility, control_id, message_type, reason, parked_at
                 FROM parked ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ParkedRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    sending_app: r.get(1)?,
                    sending_facility: r.get(2)?,
                    control_id: r.get(3)?,
                    message_type: r.get(4)?,
                    reason: r.get(5)?,
                    parked_at: Timestamp::from_millis(r.get(6)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The charges of visit `visit`, in charge order, and whether the
    /// appliance knows the visit (from the ADT feed).
    pub async fn charges_of_visit(
        &self,
        visit: &str,
    ) -> anyhow::Result<(Vec<hms_domain::Charge>, bool)> {
        let visit = visit.to_owned();
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT body FROM charges WHERE visit_id = ?1 ORDER BY charged_at, transaction_id",
            )?;
            let rows = stmt.query_map([&visit], |r| r.get::<_, String>(0))?;
            let mut out = vec![];
            for body in rows {
                out.push(serde_json::from_str(&body?).context("a stored charge does not parse")?);
            }
            let known: i64 = conn
                .prepare_cached("SELECT count(*) FROM encounters WHERE encounter_id = ?1")?
                .query_row([&visit], |r| r.get(0))?;
            Ok((out, known > 0))
        })
        .await
    }

    /// The id of the last fleet command accepted (0: none).
    pub async fn fleet_command_id(&self) -> anyhow::Result<u64> {
        self.read(|conn, _| {
            Ok(conn
                .query_row(
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'fleet_command_id'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
                .max(0) as u64)
        })
        .await
    }

    /// The anti-rollback record of bundles of `kind` (`config`,
    /// `model_set`): the version in force, the highest ever applied, and
    /// the state of the last one applied (`probation`, `in_force`,
    /// `rolled_back`).
    pub async fn bundle_versions(&self, kind: &str) -> anyhow::Result<super::BundleVersions> {
        let kind = kind.to_owned();
        self.read(move |conn, _| {
            let get = |key: String| -> Option<String> {
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                    r.get::<_, String>(0)
                })
                .ok()
            };
            Ok(super::BundleVersions {
                in_force: get(format!("bundle.{kind}.in_force")).and_then(|v| v.parse().ok()),
                highest: get(format!("bundle.{kind}.highest")).and_then(|v| v.parse().ok()),
                state: get(format!("bundle.{kind}.state")),
            })
        })
        .await
    }

    /// The recorded predictions of cases `ids` (those that have one).
    pub async fn or_predictions(
        &self,
        ids: Vec<hms_domain::CaseId>,
    ) -> anyhow::Result<Vec<hms_domain::CasePrediction>> {
        self.read(move |conn, _| {
            let mut stmt =
                conn.prepare_cached("SELECT body FROM or_predictions WHERE case_id = ?1")?;
            let mut out = vec![];
            for id in &ids {
                let body: Option<String> =
                    stmt.query_row([id.as_str()], |r| r.get(0)).optional()?;
                if let Some(b) = body {
                    out.push(
                        serde_json::from_str(&b).context("a stored prediction does not parse")?,
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    /// The case version of every recorded prediction.
    pub async fn predicted_versions(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<hms_domain::CaseId, u64>> {
        self.read(|conn, _| {
            let mut stmt = conn.prepare("SELECT case_id, version FROM or_predictions")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = std::collections::HashMap::new();
            for row in rows {
                let (id, v) = row?;
                if let Ok(id) = hms_domain::CaseId::new(id) {
                    out.insert(id, v.max(0) as u64);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Every posted charge since `since` (ms), for the coding suggestions'
    /// statistics: visit, unit, code and the diagnoses the charge carried.
    pub async fn coding_history(&self, since_ms: i64) -> anyhow::Result<Vec<CodingRow>> {
        self.read(move |conn, _| {
            let mut stmt = conn
                .prepare("SELECT body FROM charges WHERE status = 'posted' AND charged_at >= ?1")?;
            let rows = stmt.query_map([since_ms], |r| r.get::<_, String>(0))?;
            let mut out = vec![];
            for body in rows {
                let c: hms_domain::Charge =
                    serde_json::from_str(&body?).context("a stored charge does not parse")?;
                if c.kind == hms_domain::ChargeKind::Charge {
                    out.push(CodingRow {
                        visit: c.visit.map(|v| v.as_str().to_owned()),
                        unit: c.unit,
                        code: c.code,
                        diagnoses: c.diagnoses,
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

/// One posted charge as the coding suggestions learn from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodingRow {
    /// The visit.
    pub visit: Option<String>,
    /// The unit it was incurred in.
    pub unit: Option<String>,
    /// The charge code.
    pub code: String,
    /// The diagnosis codes of its message.
    pub diagnoses: Vec<String>,
}
