//! `auth.sqlite`: the hashes of the appliance's bearer tokens, and the
//! changes made to them that the event log has yet to record.
//!
//! Credentials are not clinical events and live beside the event store, not
//! in it (ADR 0003): `hms-edge token create`, `list` and `revoke` must work
//! while the appliance runs, so every command opens its own durable
//! connection (SQLite serialises writers) and the running appliance keeps
//! one session connection of its own for look-ups, for noticing what other
//! processes changed (`PRAGMA data_version`, answered from memory) and for
//! writing when tokens were last used.
//!
//! Each creation and revocation is written in the same transaction as a
//! row of `changes` (name, role, expiry, who; never the token). The running
//! appliance records each row as an `audit.token_*` event through its
//! writer, the one writer of the log, and then forgets it; rows written
//! while the appliance is stopped are recorded when it next starts. Change
//! numbers only grow (`AUTOINCREMENT`) and each file has a random id of its
//! own (`meta`), so the last number the log holds for this file's id says
//! which rows it holds already (a fresh file after a restore numbers from 1
//! again, under another id).
//!
//! The web pages' sign-in sessions live here too (`sessions`: the hash of
//! the session id and the hash of the token it was opened with, so a
//! session ends with its token), with the one-time sign-in codes of wall
//! kiosks (`pair_codes`: the hash of the code, the token it signs in as,
//! when it expires and whether it was used).
//!
//! The schema is versioned with `PRAGMA user_version` and migrated forward
//! on open; a file newer than this binary knows is refused.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::connection;

/// File name of the credential store inside the data dir.
pub const AUTH_FILE: &str = "auth.sqlite";

/// Forward-only migrations; index + 1 is the `user_version` they bring.
const MIGRATIONS: &[&str] = &[
    // 1: the tokens (what every earlier appliance created).
    "CREATE TABLE IF NOT EXISTS tokens (
         id         INTEGER PRIMARY KEY,
         name       TEXT    NOT NULL,
         role       TEXT    NOT NULL,
         hash       BLOB    NOT NULL UNIQUE,
         created_at INTEGER NOT NULL
     ) STRICT;",
    // 2: expiry, revocation, last use; the changes the log has yet to record.
    "ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
     ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
     ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
     CREATE INDEX IF NOT EXISTS tokens_by_name ON tokens(name);
     CREATE TABLE IF NOT EXISTS changes (
         id         INTEGER PRIMARY KEY AUTOINCREMENT,
         at         INTEGER NOT NULL,
         action     TEXT    NOT NULL CHECK (action IN ('created', 'revoked')),
         name       TEXT    NOT NULL,
         role       TEXT    NOT NULL,
         expires_at INTEGER,
         by         TEXT    NOT NULL
     ) STRICT;
     CREATE TABLE IF NOT EXISTS meta (
         key   TEXT PRIMARY KEY,
         value TEXT NOT NULL
     ) STRICT;",
    // 3: web sign-in sessions and kiosk sign-in codes.
    "CREATE TABLE IF NOT EXISTS sessions (
         hash       BLOB    PRIMARY KEY,
         token      BLOB    NOT NULL,
         created_at INTEGER NOT NULL,
         ended_at   INTEGER
     ) STRICT;
     CREATE TABLE IF NOT EXISTS pair_codes (
         hash       BLOB    PRIMARY KEY,
         token_name TEXT    NOT NULL,
         created_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         used_at    INTEGER,
         by         TEXT    NOT NULL
     ) STRICT;",
];

/// The schema version this binary writes.
pub const AUTH_VERSION: i64 = MIGRATIONS.len() as i64;

/// A token to store.
#[derive(Debug, Clone, Copy)]
pub struct NewToken<'a> {
    /// Its name, unique among the live tokens (neither revoked nor expired).
    pub name: &'a str,
    /// Its role.
    pub role: &'a str,
    /// SHA-256 of the token.
    pub hash: &'a [u8; 32],
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
    /// When it expires, ms since the epoch.
    pub expires_ms: Option<i64>,
    /// Who created it (`cli:LOGIN`).
    pub by: &'a str,
}

/// Why a token was not stored.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The name or expiry is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A live token (neither revoked nor expired) has that name, so the
    /// actor of an event names one token at any time.
    #[error(
        "a token named {0:?} exists already; choose another name, or revoke it first \
         (`hms-edge token revoke {0}`)"
    )]
    Duplicate(String),
    /// The file could not be written.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What a live token (not revoked) grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Its name.
    pub name: String,
    /// Its role, as stored.
    pub role: String,
    /// When it expires, ms since the epoch.
    pub expires_ms: Option<i64>,
    /// When its use was last written, ms since the epoch.
    pub last_used_ms: Option<i64>,
}

/// One stored token, as `hms-edge token list` shows it (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// When it was created, ms since the epoch.
    pub created_ms: i64,
    /// When it expires.
    pub expires_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
    /// When it was last used (written at most once a minute).
    pub last_used_ms: Option<i64>,
}

/// A creation or revocation the log has yet to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its number (only grows).
    pub id: u64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// `true` for a creation, `false` for a revocation.
    pub created: bool,
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// When it expires (creations).
    pub expires_ms: Option<i64>,
    /// Who made the change.
    pub by: String,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked this many tokens of the name (more than one only for names
    /// shared by tokens created before names had to be unique).
    Revoked(usize),
    /// Every token of the name was revoked before.
    AlreadyRevoked,
    /// No token has that name.
    Unknown,
}

/// The credential store of one data dir.
#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    /// The file's random id.
    id: String,
    session: Mutex<Option<Session>>,
}

/// The running appliance's own connection and the last `data_version` it saw.
#[derive(Debug)]
struct Session {
    conn: Connection,
    data_version: Option<i64>,
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version = |c: &Connection| -> rusqlite::Result<i64> {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
    };
    if version(conn)? == AUTH_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > AUTH_VERSION {
        anyhow::bail!(
            "auth.sqlite has schema version {found}, newer than this hms-edge knows \
             ({AUTH_VERSION}); run the newer hms-edge"
        );
    }
    for sql in &MIGRATIONS[found.max(0) as usize..] {
        tx.execute_batch(sql)?;
    }
    let mut raw = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    tx.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('id', ?1)",
        [hms_domain::event::to_hex(&raw)],
    )?;
    tx.pragma_update(None, "user_version", AUTH_VERSION)?;
    tx.commit()?;
    Ok(())
}

fn open_writer(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = connection::open_credentials(path)
        .with_context(|| format!("opening {}", path.display()))?;
    migrate(&mut conn).with_context(|| format!("migrating {}", path.display()))?;
    Ok(conn)
}

fn positive(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v > 0)
}

impl Credentials {
    /// Opens (creating and migrating) the credential store of `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Credentials> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let path = data_dir.join(AUTH_FILE);
        let id = open_writer(&path)?
            .query_row("SELECT value FROM meta WHERE key = 'id'", [], |r| r.get(0))
            .context("reading the id of auth.sqlite")?;
        Ok(Credentials {
            path,
            id,
            session: Mutex::new(None),
        })
    }

    /// The file's random id (what audit events name it by).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `f` on the session connection (opened on first use).
    fn session<T>(&self, f: impl FnOnce(&mut Session) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Session {
                conn: open_writer(&self.path)?,
                data_version: None,
            });
        }
        let session = guard.as_mut().context("token session unavailable")?;
        f(session)
    }

    /// Stores a token's hash and the change that records its creation,
    /// durably, before returning. The name of a live token (neither revoked
    /// nor expired at `created_ms`) is refused.
    pub fn create(&self, t: &NewToken<'_>) -> Result<(), CreateError> {
        let mut conn = open_writer(&self.path)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("locking auth.sqlite")?;
        let taken: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL
                                AND (expires_at IS NULL OR expires_at > ?2))",
                params![t.name, t.created_ms],
                |r| r.get(0),
            )
            .context("checking the name")?;
        if taken {
            return Err(CreateError::Duplicate(t.name.to_owned()));
        }
        tx.execute(
            "INSERT INTO tokens(name, role, hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![t.name, t.role, &t.hash[..], t.created_ms, t.expires_ms],
        )
        .context("storing the token")?;
        tx.execute(
            "INSERT INTO changes(at, action, name, role, expires_at, by)
             VALUES (?1, 'created', ?2, ?3, ?4, ?5)",
            params![t.created_ms, t.name, t.role, t.expires_ms, t.by],
        )
        .context("recording the change")?;
        tx.commit().context("committing the token")?;
        Ok(())
    }

    /// Revokes every live token named `name` at `now_ms`, recording one
    /// change for each, durably, before returning.
    pub fn revoke(&self, name: &str, now_ms: i64, by: &str) -> anyhow::Result<Revocation> {
        let mut conn = open_writer(&self.path)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("locking auth.sqlite")?;
        let live: Vec<(i64, String)> = tx
            .prepare("SELECT id, role FROM tokens WHERE name = ?1 AND revoked_at IS NULL")?
            .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if live.is_empty() {
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            return Ok(if known {
                Revocation::AlreadyRevoked
            } else {
                Revocation::Unknown
            });
        }
        for (id, role) in &live {
            tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
            tx.execute(
                "INSERT INTO changes(at, action, name, role, by) VALUES (?1, 'revoked', ?2, ?3, ?4)",
                params![now_ms, name, role, by],
            )?;
        }
        tx.commit().context("committing the revocation")?;
        Ok(Revocation::Revoked(live.len()))
    }

    /// Every stored token, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<TokenRow>> {
        let conn = open_writer(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT name, role, created_at, expires_at, revoked_at, last_used_at
             FROM tokens ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TokenRow {
                name: r.get(0)?,
                role: r.get(1)?,
                created_ms: r.get(2)?,
                expires_ms: r.get(3)?,
                revoked_ms: r.get(4)?,
                last_used_ms: positive(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The grant of a token's hash, unless it is unknown or revoked (expiry
    /// is the caller's to check, against its clock).
    pub fn lookup(&self, hash: &[u8; 32]) -> anyhow::Result<Option<Grant>> {
        self.session(|s| {
            Ok(s.conn
                .prepare_cached(
                    "SELECT name, role, expires_at, last_used_at FROM tokens
                     WHERE hash = ?1 AND revoked_at IS NULL",
                )?
                .query_row([&hash[..]], |r| {
                    Ok(Grant {
                        name: r.get(0)?,
                        role: r.get(1)?,
                        expires_ms: r.get(2)?,
                        last_used_ms: positive(r.get(3)?),
                    })
                })
                .optional()?)
        })
    }

    /// Whether another connection committed a change since the last call
    /// (`true` on the first). Costs no disk read: SQLite answers from the
    /// WAL index in shared memory.
    pub fn changed(&self) -> anyhow::Result<bool> {
        self.session(|s| {
            let now: i64 = s
                .conn
                .pragma_query_value(None, "data_version", |r| r.get(0))?;
            Ok(s.data_version.replace(now) != Some(now))
        })
    }

    /// Every change not yet forgotten, in order.
    pub fn changes(&self) -> anyhow::Result<Vec<Change>> {
        self.session(|s| {
            let mut stmt = s.conn.prepare_cached(
                "SELECT id, at, action, name, role, expires_at, by FROM changes ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Change {
                    id: r.get::<_, i64>(0)?.max(0) as u64,
                    at_ms: r.get(1)?,
                    created: r.get::<_, String>(2)? == "created",
                    name: r.get(3)?,
                    role: r.get(4)?,
                    expires_ms: r.get(5)?,
                    by: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Forgets the changes up to `id` (the log holds them).
    pub fn forget_changes(&self, up_to: u64) -> anyhow::Result<()> {
        self.session(|s| {
            s.conn
                .execute("DELETE FROM changes WHERE id <= ?1", [up_to as i64])?;
            Ok(())
        })
    }

    /// Writes when tokens were last used: `(hash, ms)`, in one transaction.
    pub fn record_use(&self, uses: &[([u8; 32], i64)]) -> anyhow::Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        self.session(|s| {
            let tx = s.conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE tokens SET last_used_at = max(coalesce(last_used_at, 0), ?2)
                     WHERE hash = ?1",
                )?;
                for (hash, at) in uses {
                    stmt.execute(params![&hash[..], at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The hash and role of the live token named `name` at `now_ms`.
    pub fn live_token(
        &self,
        name: &str,
        now_ms: i64,
    ) -> anyhow::Result<Option<([u8; 32], String)>> {
        let conn = open_writer(&self.path)?;
        let row: Option<(Vec<u8>, String)> = conn
            .query_row(
                "SELECT hash, role FROM tokens WHERE name = ?1 AND revoked_at IS NULL
                 AND (expires_at IS NULL OR expires_at > ?2) ORDER BY id DESC LIMIT 1",
                params![name, now_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(h, role)| Some((h.try_into().ok()?, role))))
    }

    /// Stores a sign-in code (its hash) for the token named `token_name`,
    /// valid until `expires_ms`, durably.
    pub fn add_pair_code(
        &self,
        hash: &[u8; 32],
        token_name: &str,
        now_ms: i64,
        expires_ms: i64,
        by: &str,
    ) -> anyhow::Result<()> {
        let conn = open_writer(&self.path)?;
        // Codes used or expired a day ago are of no use any more.
        conn.execute(
            "DELETE FROM pair_codes WHERE expires_at < ?1",
            [now_ms - 86_400_000],
        )?;
        conn.execute(
            "INSERT INTO pair_codes(hash, token_name, created_at, expires_at, by)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&hash[..], token_name, now_ms, expires_ms, by],
        )
        .context("storing the sign-in code")?;
        Ok(())
    }

    /// Uses a sign-in code: when it is known, unused and unexpired at
    /// `now_ms` and its token is live, marks it used (once and for all) and
    /// returns the token's hash.
    pub fn redeem_pair_code(
        &self,
        hash: &[u8; 32],
        now_ms: i64,
    ) -> anyhow::Result<Option<[u8; 32]>> {
        self.session(|s| {
            let tx = s
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let name: Option<String> = tx
                .query_row(
                    "SELECT token_name FROM pair_codes
                     WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                    params![&hash[..], now_ms],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(name) = name else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE pair_codes SET used_at = ?2 WHERE hash = ?1",
                params![&hash[..], now_ms],
            )?;
            let token: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT hash FROM tokens WHERE name = ?1 AND revoked_at IS NULL
                     AND (expires_at IS NULL OR expires_at > ?2) ORDER BY id DESC LIMIT 1",
                    params![name, now_ms],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            Ok(token.and_then(|t| t.try_into().ok()))
        })
    }

    /// Stores a new session (its hash) opened with the token `token`.
    pub fn open_session(
        &self,
        hash: &[u8; 32],
        token: &[u8; 32],
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.session(|s| {
            s.conn.execute(
                "INSERT INTO sessions(hash, token, created_at) VALUES (?1, ?2, ?3)",
                params![&hash[..], &token[..], now_ms],
            )?;
            Ok(())
        })
    }

    /// The hash of the token of a session that has not ended.
    pub fn session_token(&self, hash: &[u8; 32]) -> anyhow::Result<Option<[u8; 32]>> {
        self.session(|s| {
            let t: Option<Vec<u8>> = s
                .conn
                .prepare_cached("SELECT token FROM sessions WHERE hash = ?1 AND ended_at IS NULL")?
                .query_row([&hash[..]], |r| r.get(0))
                .optional()?;
            Ok(t.and_then(|t| t.try_into().ok()))
        })
    }

    /// Ends a session (sign-out); sessions that ended a day ago are deleted.
    pub fn end_session(&self, hash: &[u8; 32], now_ms: i64) -> anyhow::Result<()> {
        self.session(|s| {
            s.conn.execute(
                "UPDATE sessions SET ended_at = ?2 WHERE hash = ?1 AND ended_at IS NULL",
                params![&hash[..], now_ms],
            )?;
            s.conn.execute(
                "DELETE FROM sessions WHERE ended_at < ?1",
                [now_ms - 86_400_000],
            )?;
            Ok(())
        })
    }

    /// Every stored hash (what an audit of the file would see).
    pub fn stored_hashes(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let conn = connection::open_read(&self.path)?;
        let mut stmt = conn.prepare("SELECT hash FROM tokens ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_an_earlier_appliance_is_migrated_and_its_tokens_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUTH_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute(
                "INSERT INTO tokens(name, role, hash, created_at) VALUES ('kiosk', 'viewer', ?1, 5)",
                [&[7u8; 32][..]],
            )
            .unwrap();
        }
        let creds = Credentials::open(dir.path()).unwrap();
        let grant = creds.lookup(&[7u8; 32]).unwrap().unwrap();
        assert_eq!((grant.name.as_str(), grant.expires_ms), ("kiosk", None));
        let v: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, AUTH_VERSION);
        // Opening again changes nothing; a newer file is refused.
        Credentials::open(dir.path()).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", AUTH_VERSION + 1)
            .unwrap();
        let e = format!("{:#}", Credentials::open(dir.path()).unwrap_err());
        assert!(e.contains("newer than this hms-edge knows"), "{e}");
    }

    #[test]
    fn change_numbers_only_grow_even_once_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::open(dir.path()).unwrap();
        let new = |name, hash| NewToken {
            name,
            role: "viewer",
            hash,
            created_ms: 1,
            expires_ms: None,
            by: "cli:test",
        };
        creds.create(&new("a", &[1; 32])).unwrap();
        let first = creds.changes().unwrap();
        assert_eq!(first.len(), 1);
        creds.forget_changes(first[0].id).unwrap();
        assert!(creds.changes().unwrap().is_empty());
        creds.create(&new("b", &[2; 32])).unwrap();
        assert!(creds.changes().unwrap()[0].id > first[0].id);
        assert!(matches!(
            creds.create(&new("a", &[3; 32])),
            Err(CreateError::Duplicate(_))
        ));
        assert_eq!(
            creds.revoke("a", 9, "cli:test").unwrap(),
            Revocation::Revoked(1)
        );
        assert_eq!(
            creds.revoke("a", 9, "cli:test").unwrap(),
            Revocation::AlreadyRevoked
        );
        assert_eq!(
            creds.revoke("zz", 9, "cli:test").unwrap(),
            Revocation::Unknown
        );
        // A revoked name may be given again; the old token stays revoked.
        creds.create(&new("a", &[4; 32])).unwrap();
        assert!(creds.lookup(&[1; 32]).unwrap().is_none());
        assert!(creds.lookup(&[4; 32]).unwrap().is_some());
        // So may the name of an expired one.
        let expiring = NewToken {
            expires_ms: Some(5),
            ..new("e", &[5; 32])
        };
        creds.create(&expiring).unwrap();
        creds
            .create(&NewToken {
                created_ms: 5,
                ..new("e", &[6; 32])
            })
            .unwrap();
    }
}
