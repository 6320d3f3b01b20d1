//! The signed bundles a region hosts for its fleet, in the region's
//! database (`backend = "postgres"`), so every instance serves every
//! bundle uploaded through any of them ([`crate::bundles`] keeps a copy of
//! each under its data dir as a cache: bundles never change). With SQLite
//! there is one instance, and the bundles are files only.

use super::{Inner, RegistryDb};

/// The PostgreSQL migration that adds the table (region database version 4).
pub(super) const PG_MIGRATION: &str = "CREATE TABLE bundles (
         sha256    TEXT   PRIMARY KEY,
         summary   TEXT   NOT NULL,
         bytes     BYTEA  NOT NULL,
         stored_ms BIGINT NOT NULL
     );";

impl RegistryDb {
    fn bundles_pg(&self) -> anyhow::Result<&super::pg::Session> {
        match &self.inner {
            Inner::Postgres(pg) => Ok(pg),
            Inner::Sqlite(_) => {
                anyhow::bail!("with SQLite the bundles are files under the data dir")
            }
        }
    }

    /// Stores bundle `sha256` (its bytes and its summary, JSON) unless held;
    /// whether this call stored it. PostgreSQL only.
    pub fn put_bundle(
        &self,
        sha256: &str,
        summary_json: &str,
        bytes: &[u8],
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let (sha, summary, bytes) = (sha256.to_owned(), summary_json.to_owned(), bytes.to_vec());
        self.bundles_pg()?.call(move |c| {
            Ok(c.execute(
                "INSERT INTO bundles(sha256, summary, bytes, stored_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(sha256) DO NOTHING",
                &[&sha, &summary, &bytes, &now_ms],
            )? == 1)
        })
    }

    /// The bytes of bundle `sha256`, if held. PostgreSQL only.
    pub fn bundle_bytes(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let sha = sha256.to_owned();
        self.bundles_pg()?.call(move |c| {
            Ok(
                c.query_opt("SELECT bytes FROM bundles WHERE sha256 = $1", &[&sha])?
                    .map(|r| r.get(0)),
            )
        })
    }

    /// Whether bundle `sha256` is held. PostgreSQL only.
    pub fn holds_bundle(&self, sha256: &str) -> anyhow::Result<bool> {
        let sha = sha256.to_owned();
        self.bundles_pg()?.call(move |c| {
            Ok(
                c.query_opt("SELECT 1 FROM bundles WHERE sha256 = $1", &[&sha])?
                    .is_some(),
            )
        })
    }

    /// Every bundle's summary (JSON), in no order. PostgreSQL only.
    pub fn bundle_summaries(&self) -> anyhow::Result<Vec<String>> {
        self.bundles_pg()?.call(|c| {
            Ok(c.query("SELECT summary FROM bundles", &[])?
                .into_iter()
                .map(|r| r.get(0))
                .collect())
        })
    }
}
