//! The fleet's staged rollouts in the region's database (`backend =
//! "postgres"`), so every instance shows them and another instance drives
//! a rollout on when the one driving it dies ([`crate::rollout`]). Each is
//! kept as the JSON [`crate::rollout`] writes. With SQLite there is one
//! instance, and rollouts live in its memory.

use anyhow::Context;

use super::{Inner, RegistryDb};

/// The PostgreSQL migration that adds the table (region database version 5).
pub(super) const PG_MIGRATION: &str = "CREATE SEQUENCE rollout_ids;
     CREATE TABLE rollouts (
         id         BIGINT  PRIMARY KEY,
         body       TEXT    NOT NULL,
         ended      BOOLEAN NOT NULL,
         updated_ms BIGINT  NOT NULL
     );";

impl RegistryDb {
    fn rollouts_pg(&self) -> anyhow::Result<&super::pg::Session> {
        match &self.inner {
            Inner::Postgres(pg) => Ok(pg),
            Inner::Sqlite(_) => anyhow::bail!("with SQLite rollouts live in the cloud's memory"),
        }
    }

    /// A new rollout id, never given before in the region. PostgreSQL only.
    pub fn next_rollout_id(&self) -> anyhow::Result<u64> {
        self.rollouts_pg()?.call(|c| {
            let id: i64 = c.query_one("SELECT nextval('rollout_ids')", &[])?.get(0);
            u64::try_from(id).context("rollout id")
        })
    }

    /// Stores rollout `id` as `body` (JSON), replacing what was stored.
    /// PostgreSQL only.
    pub fn put_rollout(&self, id: u64, body: &str, ended: bool, now_ms: i64) -> anyhow::Result<()> {
        let (id, body) = (i64::try_from(id).context("rollout id")?, body.to_owned());
        self.rollouts_pg()?.call(move |c| {
            c.execute(
                "INSERT INTO rollouts(id, body, ended, updated_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body, ended = excluded.ended,
                    updated_ms = excluded.updated_ms",
                &[&id, &body, &ended, &now_ms],
            )?;
            Ok(())
        })
    }

    /// The newest `limit` rollouts: (id, body), newest first. PostgreSQL only.
    pub fn rollouts(&self, limit: usize) -> anyhow::Result<Vec<(u64, String)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.rollouts_pg()?.call(move |c| {
            c.query(
                "SELECT id, body FROM rollouts ORDER BY id DESC LIMIT $1",
                &[&limit],
            )?
            .into_iter()
            .map(|r| {
                Ok((
                    u64::try_from(r.get::<_, i64>(0)).context("rollout id")?,
                    r.get(1),
                ))
            })
            .collect()
        })
    }
}
