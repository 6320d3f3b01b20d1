//! Region failover in the registry: what a DR replica knows of the
//! hospitals it may take over (the `standby` table: each hospital's
//! appliance enrolment and the primary's last reported head, sent by the
//! primary's replicator; promoted or not), and which hospitals a primary is
//! fenced from (the `fences` table: their replica was promoted). Promotion,
//! fencing and unfencing are audited in the same transaction.
//!
//! Both backends, one method each; the rules (who may promote, when a
//! replica is behind) are [`crate::takeover`]'s.

use anyhow::Context;
use hms_domain::HospitalId;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{AuditEntry, EnrolmentRow, Inner, RegistryDb, audit};

/// What a replica holds of one hospital it may take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyRow {
    /// The hospital's appliance as its primary enrolled it.
    pub enrolment: EnrolmentRow,
    /// The primary's last seq of the hospital when it last reported.
    pub head_seq: u64,
    /// When the primary last reported, ms since the epoch.
    pub updated_ms: i64,
    /// When the hospital was promoted here, if it was.
    pub promoted_ms: Option<i64>,
}

/// A hospital a primary no longer serves: its DR replica was promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRow {
    /// The hospital.
    pub hospital: HospitalId,
    /// Since when, ms since the epoch.
    pub since_ms: i64,
    /// What the replica said.
    pub detail: String,
}

/// The `standby` table's columns, in [`standby_row`]'s order.
const STANDBY_COLUMNS: &str =
    "hospital, region, node, public_key, head_seq, updated_ms, promoted_ms";

fn standby_row(
    (h, r, n, k, head, updated, promoted): (String, String, String, Vec<u8>, i64, i64, Option<i64>),
) -> anyhow::Result<StandbyRow> {
    Ok(StandbyRow {
        enrolment: EnrolmentRow {
            hospital: h.parse().context("stored hospital id")?,
            region: r.parse().context("stored region")?,
            node: n.parse().context("stored node id")?,
            public_key: k,
        },
        head_seq: u64::try_from(head).context("stored head seq")?,
        updated_ms: updated,
        promoted_ms: promoted,
    })
}

fn pg_standby_row(r: &postgres::Row) -> anyhow::Result<StandbyRow> {
    standby_row((
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
    ))
}

fn fence_row((h, since, detail): (String, i64, String)) -> anyhow::Result<FenceRow> {
    Ok(FenceRow {
        hospital: h.parse().context("stored hospital id")?,
        since_ms: since,
        detail,
    })
}

fn seq(n: u64) -> anyhow::Result<i64> {
    i64::try_from(n).context("seq beyond i64")
}

impl RegistryDb {
    /// Stores what the primary reported of a hospital (its appliance's
    /// enrolment and its head), keeping whether it was promoted here.
    pub fn put_standby(&self, e: &EnrolmentRow, head_seq: u64, now_ms: i64) -> anyhow::Result<()> {
        let (h, r, n, k, head) = (
            e.hospital.as_str().to_owned(),
            e.region.as_str().to_owned(),
            e.node.as_str().to_owned(),
            e.public_key.clone(),
            seq(head_seq)?,
        );
        match &self.inner {
            Inner::Postgres(pg) => pg.call(move |c| {
                c.execute(
                    "INSERT INTO standby(hospital, region, node, public_key, head_seq, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT(hospital) DO UPDATE SET region = excluded.region,
                        node = excluded.node, public_key = excluded.public_key,
                        head_seq = GREATEST(standby.head_seq, excluded.head_seq),
                        updated_ms = excluded.updated_ms",
                    &[&h, &r, &n, &k, &head, &now_ms],
                )?;
                Ok(())
            }),
            Inner::Sqlite(_) => {
                self.conn()?
                    .prepare_cached(
                        "INSERT INTO standby(hospital, region, node, public_key, head_seq, updated_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(hospital) DO UPDATE SET region = excluded.region,
                            node = excluded.node, public_key = excluded.public_key,
                            head_seq = max(head_seq, excluded.head_seq),
                            updated_ms = excluded.updated_ms",
                    )?
                    .execute(params![h, r, n, k, head, now_ms])?;
                Ok(())
            }
        }
    }

    /// Every hospital a replica may take over, promoted or not.
    pub fn standbys(&self) -> anyhow::Result<Vec<StandbyRow>> {
        let sql = format!("SELECT {STANDBY_COLUMNS} FROM standby ORDER BY hospital");
        match &self.inner {
            Inner::Postgres(pg) => {
                pg.call(move |c| c.query(&sql, &[])?.iter().map(pg_standby_row).collect())
            }
            Inner::Sqlite(_) => {
                let rows: Vec<_> = self
                    .conn()?
                    .prepare_cached(&sql)?
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                rows.into_iter().map(standby_row).collect()
            }
        }
    }

    /// Marks `hospital` promoted here at `now_ms` (audited as `actor`'s
    /// `promote`, with `detail`); false when it has no standby row or was
    /// promoted already (nothing written).
    pub fn promote(
        &self,
        hospital: &HospitalId,
        now_ms: i64,
        actor: &str,
        detail: &str,
    ) -> anyhow::Result<bool> {
        self.mark(
            "UPDATE standby SET promoted_ms = {at} WHERE hospital = {h} AND promoted_ms IS NULL",
            hospital,
            now_ms,
            actor,
            "promote",
            detail,
        )
    }

    /// Fences `hospital` at `now_ms` (audited as `actor`'s `fence`, with
    /// `detail`, which the fence keeps); false when it was fenced already.
    pub fn fence(
        &self,
        hospital: &HospitalId,
        now_ms: i64,
        actor: &str,
        detail: &str,
    ) -> anyhow::Result<bool> {
        self.mark(
            "INSERT INTO fences(hospital, since_ms, detail) VALUES ({h}, {at}, {detail})
             ON CONFLICT(hospital) DO NOTHING",
            hospital,
            now_ms,
            actor,
            "fence",
            detail,
        )
    }

    /// Lifts the fence of `hospital` (audited as `actor`'s `unfence`);
    /// false when it was not fenced.
    pub fn unfence(&self, hospital: &HospitalId, now_ms: i64, actor: &str) -> anyhow::Result<bool> {
        self.mark(
            "DELETE FROM fences WHERE hospital = {h}",
            hospital,
            now_ms,
            actor,
            "unfence",
            "",
        )
    }

    /// Runs `sql` (with `{h}`, `{at}` and `{detail}` bound) and, when it
    /// changed a row, audits `action` in the same transaction.
    fn mark(
        &self,
        sql: &str,
        hospital: &HospitalId,
        now_ms: i64,
        actor: &str,
        action: &'static str,
        detail: &str,
    ) -> anyhow::Result<bool> {
        let (h, actor, detail) = (
            hospital.as_str().to_owned(),
            actor.to_owned(),
            detail.to_owned(),
        );
        match &self.inner {
            Inner::Postgres(pg) => {
                let sql = sql
                    .replace("{h}", "$1")
                    .replace("{at}", "$2")
                    .replace("{detail}", "$3");
                // Bind as many as the statement names ($1 … $n).
                let n = (1..=3)
                    .rfind(|i| sql.contains(&format!("${i}")))
                    .unwrap_or(0);
                pg.call(move |c| {
                    let mut tx = c.transaction()?;
                    let all: [&(dyn postgres::types::ToSql + Sync); 3] = [&h, &now_ms, &detail];
                    let changed = tx.execute(&sql, &all[..n])? > 0;
                    if changed {
                        tx.execute(
                            "INSERT INTO audit(at_ms, actor, action, subject, detail)
                             VALUES ($1, $2, $3, $4, $5)",
                            &[&now_ms, &actor, &action, &h, &detail],
                        )?;
                    }
                    tx.commit()?;
                    Ok(changed)
                })
            }
            Inner::Sqlite(_) => {
                let sql = sql
                    .replace("{h}", "?1")
                    .replace("{at}", "?2")
                    .replace("{detail}", "?3");
                let mut conn = self.conn()?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = {
                    let mut stmt = tx.prepare(&sql)?;
                    let n = stmt.parameter_count();
                    let all: [&dyn rusqlite::ToSql; 3] = [&h, &now_ms, &detail];
                    stmt.execute(&all[..n])? > 0
                };
                if changed {
                    audit(
                        &tx,
                        &AuditEntry {
                            at_ms: now_ms,
                            actor: &actor,
                            action,
                            subject: &h,
                            detail: &detail,
                        },
                    )?;
                }
                tx.commit()?;
                Ok(changed)
            }
        }
    }

    /// The hospitals this primary is fenced from.
    pub fn fences(&self) -> anyhow::Result<Vec<FenceRow>> {
        const SQL: &str = "SELECT hospital, since_ms, detail FROM fences ORDER BY hospital";
        match &self.inner {
            Inner::Postgres(pg) => pg.call(|c| {
                c.query(SQL, &[])?
                    .into_iter()
                    .map(|r| fence_row((r.get(0), r.get(1), r.get(2))))
                    .collect()
            }),
            Inner::Sqlite(_) => {
                let rows: Vec<(String, i64, String)> = self
                    .conn()?
                    .prepare_cached(SQL)?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                rows.into_iter().map(fence_row).collect()
            }
        }
    }

    /// The standby row of `hospital`, if any.
    pub fn standby(&self, hospital: &HospitalId) -> anyhow::Result<Option<StandbyRow>> {
        let sql = format!("SELECT {STANDBY_COLUMNS} FROM standby WHERE hospital = ?1");
        let h = hospital.as_str().to_owned();
        match &self.inner {
            Inner::Postgres(pg) => {
                let sql = sql.replace("?1", "$1");
                pg.call(move |c| {
                    c.query_opt(&sql, &[&h])?
                        .map(|r| pg_standby_row(&r))
                        .transpose()
                })
            }
            Inner::Sqlite(_) => self
                .conn()?
                .prepare_cached(&sql)?
                .query_row([h], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .optional()?
                .map(standby_row)
                .transpose(),
        }
    }
}

/// The SQLite migration that adds the tables (registry version 5).
pub(super) const SQLITE_MIGRATION: &str = "CREATE TABLE standby (
         hospital    TEXT    PRIMARY KEY,
         region      TEXT    NOT NULL,
         node        TEXT    NOT NULL,
         public_key  BLOB    NOT NULL,
         head_seq    INTEGER NOT NULL,
         updated_ms  INTEGER NOT NULL,
         promoted_ms INTEGER
     ) STRICT;
     CREATE TABLE fences (
         hospital TEXT    PRIMARY KEY,
         since_ms INTEGER NOT NULL,
         detail   TEXT    NOT NULL
     ) STRICT;";

/// The PostgreSQL migration that adds them (region database version 3).
pub(super) const PG_MIGRATION: &str = "CREATE TABLE standby (
         hospital    TEXT   PRIMARY KEY,
         region      TEXT   NOT NULL,
         node        TEXT   NOT NULL,
         public_key  BYTEA  NOT NULL,
         head_seq    BIGINT NOT NULL,
         updated_ms  BIGINT NOT NULL,
         promoted_ms BIGINT
     );
     CREATE TABLE fences (
         hospital TEXT   PRIMARY KEY,
         since_ms BIGINT NOT NULL,
         detail   TEXT   NOT NULL
     );";
