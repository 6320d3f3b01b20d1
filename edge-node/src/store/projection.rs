//! Writing events and their projections (beds, encounters, patients, the
//! parked queue, OR cases and their recorded predictions, charges).
//!
//! The live writer and `hms-edge verify`'s replay call the same two functions,
//! [`insert_event`] and [`project`], so a projection rebuilt from the log can be
//! compared row for row with the one the appliance kept.

use hms_domain::{
    Actor, ActorKind, BedState, Envelope, EventBody, EventHash, HospitalId, PatientRef, Sex,
    Stream, Timestamp, Transition,
};
use rusqlite::{Connection, Row, params};

use crate::board::{Bed, Board};

/// Appends a sealed event.
pub fn insert_event(conn: &Connection, env: &Envelope) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events(seq, stream, kind, occurred_at, recorded_at, actor_kind, actor_id,
                            correlation, subject, body, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    stmt.execute(params![
        env.seq as i64,
        env.stream.as_str(),
        env.kind,
        env.occurred_at.as_millis(),
        env.recorded_at.as_millis(),
        actor_kind_str(env.actor.kind),
        env.actor.id,
        env.correlation,
        env.subject,
        env.body,
        &env.prev_hash.0[..],
        &env.hash.0[..],
    ])?;
    Ok(())
}

fn actor_kind_str(k: ActorKind) -> &'static str {
    match k {
        ActorKind::User => "user",
        ActorKind::Device => "device",
        ActorKind::Interface => "interface",
        ActorKind::System => "system",
    }
}

fn parse_actor_kind(s: &str) -> ActorKind {
    match s {
        "user" => ActorKind::User,
        "device" => ActorKind::Device,
        "interface" => ActorKind::Interface,
        _ => ActorKind::System,
    }
}

/// The columns [`event_from_row`] expects, in order.
pub const EVENT_COLUMNS: &str = "seq, stream, kind, occurred_at, recorded_at, actor_kind, \
                                 actor_id, correlation, subject, body, prev_hash, hash";

/// Reads an envelope from a row selected with [`EVENT_COLUMNS`].
pub fn event_from_row(hospital: &HospitalId, r: &Row<'_>) -> rusqlite::Result<Envelope> {
    let bad = |i: usize, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("bad {what}").into(),
        )
    };
    let stream: String = r.get(1)?;
    let prev: Vec<u8> = r.get(10)?;
    let hash: Vec<u8> = r.get(11)?;
    Ok(Envelope {
        hospital: hospital.clone(),
        seq: r.get::<_, i64>(0)? as u64,
        stream: Stream::parse(&stream).ok_or_else(|| bad(1, "stream"))?,
        kind: r.get(2)?,
        occurred_at: Timestamp::from_millis(r.get(3)?),
        recorded_at: Timestamp::from_millis(r.get(4)?),
        actor: Actor {
            kind: parse_actor_kind(&r.get::<_, String>(5)?),
            id: r.get(6)?,
        },
        correlation: r.get(7)?,
        subject: r.get(8)?,
        body: r.get(9)?,
        prev_hash: EventHash::from_slice(&prev).ok_or_else(|| bad(10, "prev_hash"))?,
        hash: EventHash::from_slice(&hash).ok_or_else(|| bad(11, "hash"))?,
    })
}

/// The raw bytes of a stored `integration.hl7_message` event body (JSON).
pub fn hl7_raw(body: &str) -> Option<Vec<u8>> {
    match serde_json::from_str::<EventBody>(body).ok()? {
        EventBody::Hl7Message { raw_hex, .. } => hms_domain::event::from_hex(&raw_hex),
        _ => None,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Upserts a bed row from the board's current state of that bed.
fn write_bed(conn: &Connection, bed: &Bed, seq: u64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO beds(bed_id, unit_id, attributes, state, isolation, pending_discharge,
                          version, since, patient, updated_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(bed_id) DO UPDATE SET
            unit_id = excluded.unit_id, attributes = excluded.attributes, state = excluded.state,
            isolation = excluded.isolation, pending_discharge = excluded.pending_discharge,
            version = excluded.version, since = excluded.since, patient = excluded.patient,
            updated_seq = excluded.updated_seq",
    )?;
    stmt.execute(params![
        bed.id.as_str(),
        bed.unit.as_str(),
        json(&bed.attributes),
        json(&bed.state),
        bed.isolation,
        bed.pending_discharge,
        bed.version as i64,
        bed.since.as_millis(),
        bed.patient.as_ref().map(json),
        seq as i64,
    ])?;
    Ok(())
}

/// The columns [`bed_from_row`] expects, in order.
pub const BED_COLUMNS: &str =
    "bed_id, unit_id, attributes, state, isolation, pending_discharge, version, since, patient";

/// Reads a bed row selected with [`BED_COLUMNS`].
pub fn bed_from_row(r: &Row<'_>) -> rusqlite::Result<Bed> {
    fn de<T: serde::de::DeserializeOwned>(i: usize, s: &str) -> rusqlite::Result<T> {
        serde_json::from_str(s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    }
    let id: String = r.get(0)?;
    let unit: String = r.get(1)?;
    let patient: Option<String> = r.get(8)?;
    Ok(Bed {
        id: de(0, &json(&id))?,
        unit: de(1, &json(&unit))?,
        attributes: de(2, &r.get::<_, String>(2)?)?,
        state: de(3, &r.get::<_, String>(3)?)?,
        isolation: r.get(4)?,
        pending_discharge: r.get(5)?,
        version: r.get::<_, i64>(6)? as u64,
        since: Timestamp::from_millis(r.get(7)?),
        patient: patient.map(|p| de(8, &p)).transpose()?,
    })
}

fn sex_str(s: Sex) -> &'static str {
    match s {
        Sex::Female => "female",
        Sex::Male => "male",
        Sex::Other => "other",
    }
}

fn write_patient(conn: &Connection, p: &PatientRef, seq: u64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO patients(mrn, name, birth_date, sex, updated_seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(mrn) DO UPDATE SET
            name = coalesce(excluded.name, name),
            birth_date = coalesce(excluded.birth_date, birth_date),
            sex = coalesce(excluded.sex, sex),
            updated_seq = excluded.updated_seq",
    )?;
    stmt.execute(params![
        p.mrn.expose(),
        p.name.as_ref().map(|n| n.expose()),
        p.birth_date.as_ref().map(|d| d.expose()),
        p.sex.map(sex_str),
        seq as i64,
    ])?;
    Ok(())
}

/// Updates the projections for one event that the board has already applied.
pub fn project(
    conn: &Connection,
    env: &Envelope,
    body: &EventBody,
    board: &Board,
) -> rusqlite::Result<()> {
    match body {
        EventBody::PatientRecorded {
            patient,
            identifiers,
            address,
            phone,
            visit,
            class,
            ..
        } => {
            write_patient(conn, patient, env.seq)?;
            conn.prepare_cached(
                "UPDATE patients SET
                    identifiers = coalesce(?2, identifiers),
                    address = coalesce(?3, address),
                    phone = coalesce(?4, phone)
                 WHERE mrn = ?1",
            )?
            .execute(params![
                patient.mrn.expose(),
                (!identifiers.is_empty()).then(|| json(identifiers)),
                address.as_ref().map(|a| a.expose()),
                phone.as_ref().map(|p| p.expose()),
            ])?;
            if let Some(v) = visit {
                conn.prepare_cached(
                    "INSERT INTO encounters(encounter_id, mrn, bed_id, status, started_at, ended_at, updated_seq, class)
                     VALUES (?1, ?2, NULL, 'registered', NULL, NULL, ?3, ?4)
                     ON CONFLICT(encounter_id) DO UPDATE SET
                        mrn = excluded.mrn, class = coalesce(excluded.class, class),
                        updated_seq = excluded.updated_seq",
                )?
                .execute(params![v.as_str(), patient.mrn.expose(), env.seq as i64, class])?;
            }
            return Ok(());
        }
        EventBody::PatientsMerged { from, into } => {
            write_patient(conn, into, env.seq)?;
            conn.prepare_cached("UPDATE encounters SET mrn = ?2, updated_seq = ?3 WHERE mrn = ?1")?
                .execute(params![from.expose(), into.mrn.expose(), env.seq as i64])?;
            conn.prepare_cached("DELETE FROM patients WHERE mrn = ?1")?
                .execute([from.expose()])?;
            for b in board
                .view()
                .beds()
                .filter(|b| b.patient.as_ref().is_some_and(|p| p.mrn == into.mrn))
            {
                write_bed(conn, b, env.seq)?;
            }
            return Ok(());
        }
        EventBody::VisitChanged {
            from,
            to,
            patient,
            beds,
        } => {
            write_patient(conn, patient, env.seq)?;
            if from != to {
                let merged_into_known: bool = conn
                    .prepare_cached("SELECT count(*) FROM encounters WHERE encounter_id = ?1")?
                    .query_row([to.as_str()], |r| r.get::<_, i64>(0))?
                    > 0;
                if merged_into_known {
                    // A42: the old visit merges into one already known.
                    conn.prepare_cached("DELETE FROM encounters WHERE encounter_id = ?1")?
                        .execute([from.as_str()])?;
                } else {
                    conn.prepare_cached(
                        "UPDATE encounters SET encounter_id = ?2 WHERE encounter_id = ?1",
                    )?
                    .execute([from.as_str(), to.as_str()])?;
                }
            }
            conn.prepare_cached(
                "INSERT INTO encounters(encounter_id, mrn, bed_id, status, started_at, ended_at, updated_seq, class)
                 VALUES (?1, ?2, NULL, 'registered', NULL, NULL, ?3, NULL)
                 ON CONFLICT(encounter_id) DO UPDATE SET
                    mrn = excluded.mrn, updated_seq = excluded.updated_seq",
            )?
            .execute(params![to.as_str(), patient.mrn.expose(), env.seq as i64])?;
            for held in beds {
                if let Some(b) = board.bed(held.bed.as_str()) {
                    write_bed(conn, b, env.seq)?;
                }
            }
            return Ok(());
        }
        EventBody::BedsSwapped { bed, other, .. } => {
            for id in [bed, other] {
                if let Some(b) = board.bed(id.as_str()) {
                    write_bed(conn, b, env.seq)?;
                    if let Some(e) = b.state.encounter() {
                        conn.prepare_cached(
                            "UPDATE encounters SET bed_id = ?2, updated_seq = ?3 WHERE encounter_id = ?1",
                        )?
                        .execute(params![e.as_str(), id.as_str(), env.seq as i64])?;
                    }
                }
            }
            return Ok(());
        }
        EventBody::Hl7Message {
            sending_app,
            sending_facility,
            control_id,
            message_type,
            status,
            reason,
            acks,
            raw_hex,
            ..
        } => {
            // Rejected messages have no trustworthy key: a corrected resend is processed.
            if status != "rejected" && !control_id.is_empty() {
                let content = hms_domain::event::from_hex(raw_hex)
                    .map(|raw| crate::integration::dedup::digest(&raw))
                    .unwrap_or_default();
                conn.prepare_cached(
                    "INSERT OR REPLACE INTO hl7_messages(sending_app, sending_facility, control_id, content, status, acks, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    sending_app,
                    sending_facility,
                    control_id,
                    content,
                    status,
                    json(acks),
                    env.seq as i64
                ])?;
            }
            if status == "parked" {
                conn.prepare_cached(
                    "INSERT INTO parked(seq, sending_app, sending_facility, control_id, message_type, reason, parked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    env.seq as i64,
                    sending_app,
                    sending_facility,
                    control_id,
                    message_type,
                    reason.as_deref().unwrap_or(""),
                    env.recorded_at.as_millis()
                ])?;
            }
            return Ok(());
        }
        EventBody::EidAssigned {
            mrn,
            eid,
            downlink_seq,
        } => {
            conn.prepare_cached("UPDATE patients SET eid = ?2 WHERE mrn = ?1")?
                .execute(params![mrn.expose(), eid])?;
            // Where the uplink resumes reading the downlink.
            conn.prepare_cached(
                "INSERT INTO meta(key, value) VALUES ('downlink_seq', ?1)
                 ON CONFLICT(key) DO UPDATE SET
                    value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            )?
            .execute([downlink_seq.to_string()])?;
            return Ok(());
        }
        EventBody::FleetCommand { id, .. } => {
            // The last accepted command id: replays stay refused.
            conn.prepare_cached(
                "INSERT INTO meta(key, value) VALUES ('fleet_command_id', ?1)
                 ON CONFLICT(key) DO UPDATE SET
                    value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            )?
            .execute([id.to_string()])?;
            return Ok(());
        }
        EventBody::Bundle {
            kind,
            version,
            step,
            previous,
            ..
        } => {
            // Anti-rollback: the highest version ever applied of each kind,
            // and the one in force (absent: the appliance's own).
            let set = |key: String, value: String| -> rusqlite::Result<usize> {
                conn.prepare_cached(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )?
                .execute([key, value])
            };
            match step.as_str() {
                "applied" => {
                    conn.prepare_cached(
                        "INSERT INTO meta(key, value) VALUES (?1, ?2)
                         ON CONFLICT(key) DO UPDATE SET
                            value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                    )?
                    .execute([format!("bundle.{kind}.highest"), version.to_string()])?;
                    set(format!("bundle.{kind}.in_force"), version.to_string())?;
                    set(format!("bundle.{kind}.state"), "probation".into())?;
                }
                "in_force" => {
                    set(format!("bundle.{kind}.in_force"), version.to_string())?;
                    set(format!("bundle.{kind}.state"), "in_force".into())?;
                }
                "rolled_back" => {
                    match previous {
                        Some(p) => set(format!("bundle.{kind}.in_force"), p.to_string())?,
                        None => conn
                            .prepare_cached("DELETE FROM meta WHERE key = ?1")?
                            .execute([format!("bundle.{kind}.in_force")])?,
                    };
                    set(format!("bundle.{kind}.state"), "rolled_back".into())?;
                }
                _ => {}
            }
            return Ok(());
        }
        EventBody::OrCasePredicted { prediction } => {
            conn.prepare_cached(
                "INSERT INTO or_predictions(case_id, version, body, updated_seq)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(case_id) DO UPDATE SET
                    version = excluded.version, body = excluded.body,
                    updated_seq = excluded.updated_seq",
            )?
            .execute(params![
                prediction.case_id.as_str(),
                prediction.version as i64,
                json(prediction),
                env.seq as i64
            ])?;
            return Ok(());
        }
        EventBody::ChargePosted { charge } | EventBody::ChargeReversed { charge } => {
            conn.prepare_cached(
                "INSERT INTO charges(transaction_id, visit_id, unit, code, status, amount_cents,
                                     charged_at, body, updated_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(transaction_id) DO UPDATE SET
                    visit_id = excluded.visit_id, unit = excluded.unit, code = excluded.code,
                    status = excluded.status, amount_cents = excluded.amount_cents,
                    charged_at = excluded.charged_at, body = excluded.body,
                    updated_seq = excluded.updated_seq",
            )?
            .execute(params![
                charge.transaction_id,
                charge.visit.as_ref().map(|v| v.as_str()),
                charge.unit,
                charge.code,
                charge.status.as_str(),
                charge.amount_cents,
                charge.date.as_millis(),
                json(charge),
                env.seq as i64
            ])?;
            return Ok(());
        }
        EventBody::OrCaseChanged { case, .. } => {
            conn.prepare_cached(
                "INSERT INTO or_cases(case_id, room_id, start_at, status, body, updated_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(case_id) DO UPDATE SET
                    room_id = excluded.room_id, start_at = excluded.start_at,
                    status = excluded.status, body = excluded.body,
                    updated_seq = excluded.updated_seq",
            )?
            .execute(params![
                case.case_id.as_str(),
                case.room.as_str(),
                case.start.as_millis(),
                case.status.as_str(),
                json(case),
                env.seq as i64
            ])?;
            return Ok(());
        }
        EventBody::Hl7Replayed {
            parked_seq, status, ..
        } => {
            if status == "applied" {
                conn.prepare_cached("DELETE FROM parked WHERE seq = ?1")?
                    .execute([*parked_seq as i64])?;
                conn.prepare_cached("UPDATE hl7_messages SET status = 'applied' WHERE seq = ?1")?
                    .execute([*parked_seq as i64])?;
            }
            return Ok(());
        }
        _ => {}
    }
    if let Some(bed) = body.subject() {
        match board.bed(bed.as_str()) {
            Some(b) => write_bed(conn, b, env.seq)?,
            None => {
                conn.prepare_cached("DELETE FROM beds WHERE bed_id = ?1")?
                    .execute([bed.as_str()])?;
            }
        }
    }
    let EventBody::BedStateChanged {
        bed,
        transition,
        state,
        patient,
        ended,
        ..
    } = body
    else {
        return Ok(());
    };
    if let Some(p) = patient {
        write_patient(conn, p, env.seq)?;
    }
    let at = env.recorded_at.as_millis();
    let mrn = patient.as_ref().map(|p| p.mrn.expose());
    let seq = env.seq as i64;
    match (transition, state) {
        (Transition::Reserved, BedState::Reserved { encounter }) => upsert_encounter(
            conn,
            encounter.as_str(),
            mrn,
            bed.as_str(),
            "reserved",
            None,
            seq,
        )?,
        (
            Transition::Assigned
            | Transition::Placed
            | Transition::TransferredIn
            | Transition::Readmitted,
            BedState::Occupied { encounter },
        ) => upsert_encounter(
            conn,
            encounter.as_str(),
            mrn,
            bed.as_str(),
            "active",
            Some(at),
            seq,
        )?,
        (Transition::Released | Transition::ReservationCancelled, _) => {
            let status = if *transition == Transition::Released {
                "released"
            } else {
                "cancelled"
            };
            if let Some(e) = ended {
                conn.prepare_cached(
                    "UPDATE encounters SET status = ?2, ended_at = ?3, updated_seq = ?4
                     WHERE encounter_id = ?1",
                )?
                .execute(params![e.as_str(), status, at, seq])?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn upsert_encounter(
    conn: &Connection,
    encounter: &str,
    mrn: Option<&str>,
    bed: &str,
    status: &str,
    started_at: Option<i64>,
    seq: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO encounters(encounter_id, mrn, bed_id, status, started_at, ended_at, updated_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)
         ON CONFLICT(encounter_id) DO UPDATE SET
            mrn = coalesce(excluded.mrn, mrn), bed_id = excluded.bed_id, status = excluded.status,
            started_at = coalesce(started_at, excluded.started_at), ended_at = NULL,
            updated_seq = excluded.updated_seq",
    )?
    .execute(params![encounter, mrn, bed, status, started_at, seq])?;
    Ok(())
}
