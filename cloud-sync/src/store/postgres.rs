//! The PostgreSQL backend: one database per hospital (`hms_{hospital}`, or
//! for an id too long for that within PostgreSQL's 63-byte identifiers a
//! shortened name with a hash of the whole id: [`database_name`]).
//!
//! The router connects to the server's maintenance database to create a
//! hospital's database on first use, then each store holds one connection
//! to its own database; a store handed back (dropped) returns its
//! connection to the router's pool, so steady ingest does not pay a
//! connection set-up per batch. A batch is appended with one statement
//! (arrays unnested server-side). Commits are durable (`synchronous_commit`
//! on, the server default), so a returned `append` is on disk. Every
//! session goes over TLS as the connection string's `sslmode` and
//! `sslrootcert` say ([`super::pg_tls`]); a server that cannot do what they
//! ask is refused, never used in plain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hms_domain::sync::Position;
use hms_domain::{Envelope, EventHash, HospitalId};
use postgres::Client;

use super::HospitalStore;
use super::pg_tls::PgTarget;

/// Where the PostgreSQL server is and how to reach it.
#[derive(Clone)]
pub struct PgRouter {
    /// The maintenance database, e.g. from
    /// `host=127.0.0.1 user=postgres dbname=postgres sslmode=verify-full sslrootcert=ca.pem`.
    admin: PgTarget,
    /// Idle connections per database.
    pool: Pool,
}

type Pool = Arc<Idle>;

/// Idle connections per database. The synchronous client closes a
/// connection by blocking on its own runtime, which panics on a thread of
/// another runtime: whatever is dropped where that would happen is closed
/// on a thread of its own instead.
#[derive(Default)]
struct Idle(Mutex<HashMap<String, Vec<Client>>>);

impl std::ops::Deref for Idle {
    type Target = Mutex<HashMap<String, Vec<Client>>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        let all: Vec<Client> = std::mem::take(self.0.get_mut().unwrap_or_else(|p| p.into_inner()))
            .into_values()
            .flatten()
            .collect();
        close_off_runtime(all);
    }
}

/// Drops `clients` here, or on a thread of their own when called from a
/// tokio runtime (where their blocking close would panic).
fn close_off_runtime(clients: Vec<Client>) {
    if clients.is_empty() {
        return;
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(clients));
    } else {
        drop(clients);
    }
}

/// Idle connections kept per hospital database.
const POOL_PER_DB: usize = 4;

impl std::fmt::Debug for PgRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRouter").finish_non_exhaustive()
    }
}

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); it
/// truncates longer ones silently, so two names that agree on their first
/// 63 bytes would be one database.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Bytes of the id kept in front of the hash in a shortened name.
const SHORT_PREFIX_BYTES: usize = 26;

/// The database name of a hospital (ids are tokens of `[A-Za-z0-9._:-]`,
/// at most 64 bytes): `hms_{hospital}` when that fits in
/// [`MAX_IDENTIFIER_BYTES`] (ids of up to 59 bytes, so every database named
/// before keeps its name), otherwise `hms_{first 26 bytes}+{32 hex digits
/// of the id's SHA-256}` (63 bytes). The `+` is outside the id alphabet, so
/// a shortened name is never another id's plain one, and two ids that share
/// any prefix get distinct databases.
pub fn database_name(hospital: &HospitalId) -> String {
    let id = hospital.as_str();
    let plain = format!("hms_{id}");
    if plain.len() <= MAX_IDENTIFIER_BYTES {
        return plain;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // The alphabet is ASCII: any byte offset is a character boundary.
    format!("hms_{}+{hex}", &id[..SHORT_PREFIX_BYTES.min(id.len())])
}

/// Creates the database `db` on the server of `admin` unless it exists
/// (another instance creating it at the same moment is no error). `db`
/// must hold no quote character (identifiers cannot be bound).
pub fn ensure_database(admin: &PgTarget, db: &str) -> anyhow::Result<()> {
    let mut admin = admin.connect().with_context(|| {
        format!(
            "connecting to the PostgreSQL maintenance database (sslmode={})",
            admin.mode().as_str()
        )
    })?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])?
        .is_some();
    if !exists {
        anyhow::ensure!(!db.contains('"'), "a database name with a quote: {db:?}");
        match admin.batch_execute(&format!("CREATE DATABASE \"{db}\"")) {
            Err(e) if e.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            // Two CREATE DATABASE at once may also meet on the catalogue's key.
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {}
            r => r.with_context(|| format!("creating database {db}"))?,
        }
    }
    Ok(())
}

impl PgRouter {
    /// A router over the server reached by `admin` (a libpq-style string,
    /// TLS settings included; see [`super::pg_tls`]). Connects to nothing
    /// yet; a string that does not parse or names an unusable CA file is
    /// refused.
    pub fn new(admin: impl AsRef<str>) -> anyhow::Result<Self> {
        Ok(Self {
            admin: PgTarget::parse(admin.as_ref()).map_err(anyhow::Error::msg)?,
            pool: Pool::default(),
        })
    }

    /// Opens (creating if needed) the database of `hospital`, reusing an
    /// idle pooled connection when one is still alive.
    pub fn open(&self, hospital: &HospitalId) -> anyhow::Result<PgHospitalStore> {
        let db = database_name(hospital);
        loop {
            let idle = self
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&db)
                .and_then(Vec::pop);
            let Some(mut client) = idle else { break };
            if client.is_valid(Duration::from_secs(2)).is_ok() {
                return Ok(PgHospitalStore {
                    client: Some(client),
                    home: Some((self.pool.clone(), db)),
                });
            }
        }
        ensure_database(&self.admin, &db)?;
        let mut store = PgHospitalStore::connect(&self.admin.with_dbname(&db))?;
        store.home = Some((self.pool.clone(), db));
        Ok(store)
    }

    /// The router as an [`OpenStore`](super::OpenStore).
    pub fn opener(self) -> super::OpenStore {
        std::sync::Arc::new(move |h: &HospitalId| {
            Ok(Box::new(self.open(h)?) as Box<dyn HospitalStore>)
        })
    }

    /// Drops the database of `hospital` (tests, decommissioning).
    pub fn drop_database(&self, hospital: &HospitalId) -> anyhow::Result<()> {
        self.drop_named(&database_name(hospital))
    }

    /// Drops the database named `db` (a hospital's, or a region's: tests,
    /// decommissioning); its sessions are ended.
    pub fn drop_named(&self, db: &str) -> anyhow::Result<()> {
        anyhow::ensure!(!db.contains('"'), "a database name with a quote: {db:?}");
        let gone = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(db);
        close_off_runtime(gone.unwrap_or_default());
        let mut admin = self.admin.connect()?;
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))?;
        Ok(())
    }
}

/// One hospital's database on PostgreSQL.
pub struct PgHospitalStore {
    /// Always `Some` until dropped.
    client: Option<Client>,
    /// The pool the connection goes back to.
    home: Option<(Pool, String)>,
}

impl Drop for PgHospitalStore {
    fn drop(&mut self) {
        if let (Some(client), Some((pool, db))) = (self.client.take(), self.home.take())
            && !client.is_closed()
        {
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            let idle = pool.entry(db).or_default();
            if idle.len() < POOL_PER_DB {
                idle.push(client);
            } else {
                drop(pool);
                close_off_runtime(vec![client]);
            }
        }
    }
}

impl std::fmt::Debug for PgHospitalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHospitalStore").finish_non_exhaustive()
    }
}

impl PgHospitalStore {
    /// Connects to a hospital database and makes sure its schema exists.
    pub fn connect(target: &PgTarget) -> anyhow::Result<Self> {
        let mut client = target.connect().with_context(|| {
            format!(
                "connecting to PostgreSQL (sslmode={})",
                target.mode().as_str()
            )
        })?;
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS events (
                 seq      BIGINT PRIMARY KEY,
                 hash     BYTEA NOT NULL,
                 envelope TEXT NOT NULL
             )",
        )?;
        Ok(Self {
            client: Some(client),
            home: None,
        })
    }

    fn client(&mut self) -> anyhow::Result<&mut Client> {
        self.client
            .as_mut()
            .context("the PostgreSQL connection was handed back")
    }
}

impl HospitalStore for PgHospitalStore {
    fn position(&mut self) -> anyhow::Result<Position> {
        let row = self.client()?.query_opt(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            &[],
        )?;
        Ok(match row {
            None => Position::START,
            Some(r) => {
                let seq: i64 = r.get(0);
                let hash: Vec<u8> = r.get(1);
                Position {
                    seq: u64::try_from(seq).context("negative seq in the store")?,
                    hash: EventHash::from_slice(&hash).context("malformed hash in the store")?,
                }
            }
        })
    }

    fn stored_hash(&mut self, seq: u64) -> anyhow::Result<Option<EventHash>> {
        let row = self
            .client()?
            .query_opt("SELECT hash FROM events WHERE seq = $1", &[&(seq as i64)])?;
        Ok(row.and_then(|r| EventHash::from_slice(&r.get::<_, Vec<u8>>(0))))
    }

    fn append(&mut self, events: &[Envelope]) -> anyhow::Result<()> {
        let mut seqs = Vec::with_capacity(events.len());
        let mut hashes = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for e in events {
            seqs.push(e.seq as i64);
            hashes.push(e.hash.0.to_vec());
            bodies.push(serde_json::to_string(e)?);
        }
        // One statement, one round trip, atomic on its own.
        let inserted = self.client()?.execute(
            "INSERT INTO events(seq, hash, envelope)
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[])",
            &[&seqs, &hashes, &bodies],
        );
        match inserted {
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(super::Conflict.into())
            }
            r => r.map(drop).map_err(Into::into),
        }
    }

    fn events(&mut self, from: u64, limit: usize) -> anyhow::Result<Vec<Envelope>> {
        let rows = self.client()?.query(
            "SELECT envelope FROM events WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&(from as i64), &(limit as i64)],
        )?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }
}
