//! The fleet's commands and their results in the region's database
//! (`backend = "postgres"`), so every instance of a region shows every
//! command, whichever instance sent it and whichever received its result
//! ([`crate::fleet`]). Each change takes a new revision, by which an
//! instance reads what changed since it last looked. With SQLite there is
//! one instance, and its memory.

use anyhow::Context;
use hms_domain::{HospitalId, NodeId};

use super::{Inner, RegistryDb};

/// The PostgreSQL migration that adds the table (region database version 7).
pub(super) const PG_MIGRATION: &str = "CREATE SEQUENCE fleet_command_revs;
     CREATE TABLE fleet_commands (
         hospital   TEXT   NOT NULL,
         node       TEXT   NOT NULL,
         id         BIGINT NOT NULL,
         command    TEXT,
         sent_ms    BIGINT,
         expires_ms BIGINT,
         sent_by    TEXT,
         result     TEXT,
         result_ms  BIGINT,
         rev        BIGINT NOT NULL,
         PRIMARY KEY (hospital, node, id)
     );
     CREATE INDEX fleet_commands_by_rev ON fleet_commands(rev);";

/// One command as stored: what was sent (when this region sent it) and its
/// result (when one came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCommandRow {
    /// The appliance's hospital.
    pub hospital: HospitalId,
    /// The appliance.
    pub node: NodeId,
    /// The command id.
    pub id: u64,
    /// (command name, sent ms, expires ms, by), when sent from this region.
    pub sent: Option<(String, i64, i64, String)>,
    /// (result JSON, received ms), when it came.
    pub result: Option<(String, i64)>,
    /// Its revision.
    pub rev: i64,
}

impl RegistryDb {
    fn fleet_pg(&self) -> anyhow::Result<&super::pg::Session> {
        match &self.inner {
            Inner::Postgres(pg) => Ok(pg),
            Inner::Sqlite(_) => anyhow::bail!("with SQLite fleet commands live in memory"),
        }
    }

    /// Records command `id` sent to `node` of `hospital`. PostgreSQL only.
    #[allow(clippy::too_many_arguments)]
    pub fn put_fleet_sent(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        id: u64,
        command: &str,
        sent_ms: i64,
        expires_ms: i64,
        by: &str,
    ) -> anyhow::Result<()> {
        let (h, n, c, b) = (
            hospital.as_str().to_owned(),
            node.as_str().to_owned(),
            command.to_owned(),
            by.to_owned(),
        );
        let id = i64::try_from(id).context("command id")?;
        self.fleet_pg()?.call(move |c2| {
            c2.execute(
                "INSERT INTO fleet_commands(hospital, node, id, command, sent_ms, expires_ms,
                                            sent_by, rev)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, nextval('fleet_command_revs'))
                 ON CONFLICT(hospital, node, id) DO UPDATE SET command = excluded.command,
                    sent_ms = excluded.sent_ms, expires_ms = excluded.expires_ms,
                    sent_by = excluded.sent_by, rev = excluded.rev",
                &[&h, &n, &id, &c, &sent_ms, &expires_ms, &b],
            )?;
            Ok(())
        })
    }

    /// Records the result of command `id` (the first one kept).
    /// PostgreSQL only.
    pub fn put_fleet_result(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        id: u64,
        result_json: &str,
        at_ms: i64,
    ) -> anyhow::Result<()> {
        let (h, n, r) = (
            hospital.as_str().to_owned(),
            node.as_str().to_owned(),
            result_json.to_owned(),
        );
        let id = i64::try_from(id).context("command id")?;
        self.fleet_pg()?.call(move |c| {
            c.execute(
                "INSERT INTO fleet_commands(hospital, node, id, result, result_ms, rev)
                 VALUES ($1, $2, $3, $4, $5, nextval('fleet_command_revs'))
                 ON CONFLICT(hospital, node, id) DO UPDATE SET result = excluded.result,
                    result_ms = excluded.result_ms, rev = excluded.rev
                 WHERE fleet_commands.result IS NULL",
                &[&h, &n, &id, &r, &at_ms],
            )?;
            Ok(())
        })
    }

    /// Commands changed after revision `after`, by revision, at most
    /// `limit`. PostgreSQL only.
    pub fn fleet_commands_since(
        &self,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<FleetCommandRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.fleet_pg()?.call(move |c| {
            c.query(
                "SELECT hospital, node, id, command, sent_ms, expires_ms, sent_by, result,
                        result_ms, rev
                 FROM fleet_commands WHERE rev > $1 ORDER BY rev LIMIT $2",
                &[&after, &limit],
            )?
            .into_iter()
            .map(|r| {
                let sent = match (
                    r.get::<_, Option<String>>(3),
                    r.get::<_, Option<i64>>(4),
                    r.get::<_, Option<i64>>(5),
                    r.get::<_, Option<String>>(6),
                ) {
                    (Some(c), Some(s), Some(e), Some(b)) => Some((c, s, e, b)),
                    _ => None,
                };
                let result = match (r.get::<_, Option<String>>(7), r.get::<_, Option<i64>>(8)) {
                    (Some(j), Some(at)) => Some((j, at)),
                    _ => None,
                };
                Ok(FleetCommandRow {
                    hospital: r
                        .get::<_, String>(0)
                        .parse()
                        .context("stored hospital id")?,
                    node: r.get::<_, String>(1).parse().context("stored node id")?,
                    id: u64::try_from(r.get::<_, i64>(2)).context("command id")?,
                    sent,
                    result,
                    rev: r.get(9),
                })
            })
            .collect()
        })
    }
}
