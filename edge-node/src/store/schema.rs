//! SQLite schema and forward-only migrations of the appliance store.
//!
//! Each migration runs once, in order, inside one transaction, and is recorded
//! in `schema_migrations`. A database newer than this binary knows is refused
//! rather than guessed at.

use rusqlite::{Connection, OptionalExtension, params};

/// Migrations in order; index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    // 1: event log, projections, metadata.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    CREATE TABLE events (
        seq          INTEGER PRIMARY KEY,
        stream       TEXT    NOT NULL,
        kind         TEXT    NOT NULL,
        occurred_at  INTEGER NOT NULL,
        recorded_at  INTEGER NOT NULL,
        actor_kind   TEXT    NOT NULL,
        actor_id     TEXT    NOT NULL,
        correlation  TEXT,
        subject      TEXT,
        body         TEXT    NOT NULL,
        prev_hash    BLOB    NOT NULL,
        hash         BLOB    NOT NULL
    ) STRICT;
    CREATE INDEX events_by_subject ON events(subject, seq) WHERE subject IS NOT NULL;

    CREATE TABLE beds (
        bed_id            TEXT PRIMARY KEY,
        unit_id           TEXT    NOT NULL,
        attributes        TEXT    NOT NULL,
        state             TEXT    NOT NULL,
        isolation         INTEGER NOT NULL,
        pending_discharge INTEGER NOT NULL,
        version           INTEGER NOT NULL,
        since             INTEGER NOT NULL,
        patient           TEXT,
        updated_seq       INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE encounters (
        encounter_id TEXT PRIMARY KEY,
        mrn          TEXT,
        bed_id       TEXT,
        status       TEXT    NOT NULL,
        started_at   INTEGER,
        ended_at     INTEGER,
        updated_seq  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE patients (
        mrn          TEXT PRIMARY KEY,
        name         TEXT,
        birth_date   TEXT,
        sex          TEXT,
        updated_seq  INTEGER NOT NULL
    ) STRICT;
    "#,
    // 2: HL7 integration: duplicate detection and the parked-message queue.
    r#"
    CREATE TABLE hl7_messages (
        sending_app      TEXT    NOT NULL,
        sending_facility TEXT    NOT NULL,
        control_id       TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        acks             TEXT    NOT NULL,
        seq              INTEGER NOT NULL,
        PRIMARY KEY (sending_app, sending_facility, control_id)
    ) STRICT;

    CREATE TABLE parked (
        seq              INTEGER PRIMARY KEY,
        sending_app      TEXT    NOT NULL,
        sending_facility TEXT    NOT NULL,
        control_id       TEXT    NOT NULL,
        message_type     TEXT    NOT NULL,
        reason           TEXT    NOT NULL,
        parked_at        INTEGER NOT NULL
    ) STRICT;
    "#,
    // 3: the patient index keeps every identifier, address and phone; visits
    // registered without a bed are encounters too.
    r#"
    ALTER TABLE patients ADD COLUMN identifiers TEXT;
    ALTER TABLE patients ADD COLUMN address TEXT;
    ALTER TABLE patients ADD COLUMN phone TEXT;
    ALTER TABLE encounters ADD COLUMN class TEXT;
    "#,
    // 4: retention. The projections as of the last pruned-through seq (the
    // "base"; its seq and hash are in meta as base_seq and base_hash), so
    // that verification still replays the retained log onto a known state
    // after acknowledged, expired events have left the log. Same columns,
    // in the same order, as the live projections.
    r#"
    CREATE TABLE base_beds (
        bed_id            TEXT PRIMARY KEY,
        unit_id           TEXT    NOT NULL,
        attributes        TEXT    NOT NULL,
        state             TEXT    NOT NULL,
        isolation         INTEGER NOT NULL,
        pending_discharge INTEGER NOT NULL,
        version           INTEGER NOT NULL,
        since             INTEGER NOT NULL,
        patient           TEXT,
        updated_seq       INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE base_encounters (
        encounter_id TEXT PRIMARY KEY,
        mrn          TEXT,
        bed_id       TEXT,
        status       TEXT    NOT NULL,
        started_at   INTEGER,
        ended_at     INTEGER,
        updated_seq  INTEGER NOT NULL,
        class        TEXT
    ) STRICT;

    CREATE TABLE base_patients (
        mrn          TEXT PRIMARY KEY,
        name         TEXT,
        birth_date   TEXT,
        sex          TEXT,
        updated_seq  INTEGER NOT NULL,
        identifiers  TEXT,
        address      TEXT,
        phone        TEXT
    ) STRICT;

    CREATE TABLE base_hl7_messages (
        sending_app      TEXT    NOT NULL,
        sending_facility TEXT    NOT NULL,
        control_id       TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        acks             TEXT    NOT NULL,
        seq              INTEGER NOT NULL,
        PRIMARY KEY (sending_app, sending_facility, control_id)
    ) STRICT;

    CREATE TABLE base_parked (
        seq              INTEGER PRIMARY KEY,
        sending_app      TEXT    NOT NULL,
        sending_facility TEXT    NOT NULL,
        control_id       TEXT    NOT NULL,
        message_type     TEXT    NOT NULL,
        reason           TEXT    NOT NULL,
        parked_at        INTEGER NOT NULL
    ) STRICT;
    "#,
    // 5: the enterprise id the regional EMPI assigned to each local patient.
    r#"
    ALTER TABLE patients ADD COLUMN eid TEXT;
    ALTER TABLE base_patients ADD COLUMN eid TEXT;
    "#,
    // 6: a duplicate is the same sender keys *and* the same content
    // (`integration::dedup::digest`); one control id may now hold several
    // messages. `content` is filled from the log by [`backfill_content`];
    // '' for a message whose event has already left the log.
    r#"
    CREATE TABLE hl7_messages_v6 (
        sending_app      TEXT    NOT NULL,
        sending_facility TEXT    NOT NULL,
        control_id       TEXT    NOT NULL,
        content          TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        acks             TEXT    NOT NULL,
        seq              INTEGER NOT NULL,
        PRIMARY KEY (sending_app, sending_facility, control_id, content)
    ) STRICT;
    INSERT INTO hl7_messages_v6
        SELECT sending_app, sending_facility, control_id, '', status, acks, seq FROM hl7_messages;
    DROP TABLE hl7_messages;
    ALTER TABLE hl7_messages_v6 RENAME TO hl7_messages;

    CREATE TABLE base_hl7_messages_v6 (
        sending_app      TEXT    NOT NULL,
        sending_facility TEXT    NOT NULL,
        control_id       TEXT    NOT NULL,
        content          TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        acks             TEXT    NOT NULL,
        seq              INTEGER NOT NULL,
        PRIMARY KEY (sending_app, sending_facility, control_id, content)
    ) STRICT;
    INSERT INTO base_hl7_messages_v6
        SELECT sending_app, sending_facility, control_id, '', status, acks, seq FROM base_hl7_messages;
    DROP TABLE base_hl7_messages;
    ALTER TABLE base_hl7_messages_v6 RENAME TO base_hl7_messages;
    "#,
    // 7: the OR board: each case as its last `or.case_*` event left it
    // (`body` is the case's JSON; a deleted case keeps its row).
    r#"
    CREATE TABLE or_cases (
        case_id     TEXT    PRIMARY KEY,
        room_id     TEXT    NOT NULL,
        start_at    INTEGER NOT NULL,
        status      TEXT    NOT NULL,
        body        TEXT    NOT NULL,
        updated_seq INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX or_cases_start ON or_cases(start_at);
    CREATE TABLE base_or_cases (
        case_id     TEXT    PRIMARY KEY,
        room_id     TEXT    NOT NULL,
        start_at    INTEGER NOT NULL,
        status      TEXT    NOT NULL,
        body        TEXT    NOT NULL,
        updated_seq INTEGER NOT NULL
    ) STRICT;
    "#,
    // 8: charges (DFT FT1), each as its last `billing.*` event left it.
    r#"
    CREATE TABLE charges (
        transaction_id TEXT    PRIMARY KEY,
        visit_id       TEXT,
        unit           TEXT,
        code           TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        amount_cents   INTEGER,
        charged_at     INTEGER NOT NULL,
        body           TEXT    NOT NULL,
        updated_seq    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX charges_visit ON charges(visit_id);
    CREATE TABLE base_charges (
        transaction_id TEXT    PRIMARY KEY,
        visit_id       TEXT,
        unit           TEXT,
        code           TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        amount_cents   INTEGER,
        charged_at     INTEGER NOT NULL,
        body           TEXT    NOT NULL,
        updated_seq    INTEGER NOT NULL
    ) STRICT;
    "#,
    // 9: the predicted duration recorded for each OR case (its latest
    // `or.case_predicted`: the case version it was made for).
    r#"
    CREATE TABLE or_predictions (
        case_id     TEXT    PRIMARY KEY,
        version     INTEGER NOT NULL,
        body        TEXT    NOT NULL,
        updated_seq INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE base_or_predictions (
        case_id     TEXT    PRIMARY KEY,
        version     INTEGER NOT NULL,
        body        TEXT    NOT NULL,
        updated_seq INTEGER NOT NULL
    ) STRICT;
    "#,
];

/// Migration 6: the content digest of every stored message whose event is
/// still in the log, in the live table and in the retention base alike (a
/// replay from the base then gives the same rows as the live table).
fn backfill_content(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    for table in ["hl7_messages", "base_hl7_messages"] {
        let rows: Vec<(i64, String)> = tx
            .prepare(&format!(
                "SELECT h.seq, e.body FROM {table} h JOIN events e ON e.seq = h.seq"
            ))?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut update = tx.prepare(&format!("UPDATE {table} SET content = ?2 WHERE seq = ?1"))?;
        for (seq, body) in rows {
            if let Some(raw) = super::projection::hl7_raw(&body) {
                update.execute(params![seq, crate::integration::dedup::digest(&raw)])?;
            }
        }
    }
    Ok(())
}

/// The schema version this binary writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was written by a newer binary.
    #[error(
        "database schema version {found} is newer than this binary supports ({CURRENT_VERSION}); \
         run the newer hms-edge or restore a backup"
    )]
    TooNew {
        /// Version found.
        found: i64,
    },
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Brings the database up to [`CURRENT_VERSION`]. Returns the versions applied.
pub fn migrate(conn: &mut Connection) -> Result<Vec<i64>, MigrateError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         ) STRICT;",
    )?;
    let found: i64 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    if found > CURRENT_VERSION {
        return Err(MigrateError::TooNew { found });
    }
    let mut applied = vec![];
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        if version == 6 {
            backfill_content(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
            params![version, hms_domain::Timestamp::now().as_millis()],
        )?;
        tx.commit()?;
        applied.push(version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer_databases() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c).unwrap(), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(migrate(&mut c).unwrap(), Vec::<i64>::new());
        c.execute(
            "INSERT INTO schema_migrations(version, applied_at) VALUES (99, 0)",
            [],
        )
        .unwrap();
        assert!(matches!(
            migrate(&mut c),
            Err(MigrateError::TooNew { found: 99 })
        ));
    }

    #[test]
    fn version_6_fills_in_the_content_of_messages_still_in_the_log() {
        let mut c = Connection::open_in_memory().unwrap();
        // A store written by a binary of schema version 5.
        c.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT;",
        )
        .unwrap();
        for (i, sql) in MIGRATIONS[..5].iter().enumerate() {
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations VALUES (?1, 0)",
                [i as i64 + 1],
            )
            .unwrap();
        }
        let raw = b"MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A01|C1|P|2.5.1\rPID|1||M1\r";
        let body = hms_domain::EventBody::Hl7Message {
            sending_app: "EPIC".into(),
            sending_facility: "TH".into(),
            control_id: "C1".into(),
            message_type: "ADT^A01".into(),
            status: "applied".into(),
            ack_code: "AA".into(),
            reason: None,
            raw_hex: hms_domain::event::to_hex(raw),
            acks: vec!["ACK".into()],
        };
        c.execute(
            "INSERT INTO events VALUES (1, 'integration', 'integration.hl7_message', 0, 0, 'interface', 'hl7:EPIC', 'C1', NULL, ?1, x'00', x'00')",
            [body.to_canonical_json()],
        )
        .unwrap();
        for table in ["hl7_messages", "base_hl7_messages"] {
            // Seq 1 is in the log; seq 0 has already left it.
            c.execute_batch(&format!(
                "INSERT INTO {table} VALUES ('EPIC', 'TH', 'C1', 'applied', '[]', 1);
                 INSERT INTO {table} VALUES ('EPIC', 'TH', 'C0', 'applied', '[]', 0);"
            ))
            .unwrap();
        }
        assert_eq!(migrate(&mut c).unwrap(), vec![6, 7, 8, 9]);
        for table in ["hl7_messages", "base_hl7_messages"] {
            let rows: Vec<(String, String)> = c
                .prepare(&format!(
                    "SELECT control_id, content FROM {table} ORDER BY control_id"
                ))
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                rows,
                [
                    ("C0".to_owned(), String::new()),
                    ("C1".to_owned(), crate::integration::dedup::digest(raw)),
                ],
                "{table}"
            );
        }
    }
}
