//! Leases through PostgreSQL: which instance of a region runs a task that
//! must run on exactly one (the DR replicator).
//!
//! A lease is a PostgreSQL session-level advisory lock, keyed by the
//! lease's name, in the region's own database (`region_database`, created
//! when missing): advisory locks are per database, so regions (and test
//! sites) that share a server do not meet. A [`Lease`] keeps one session on a thread of its
//! own: it tries `pg_try_advisory_lock` every `retry` until it holds the
//! lock, and while it holds it, checks its session every `retry`. The
//! server releases a session's advisory locks when the session ends, so
//! when the holder dies (a SIGKILL, its machine gone) or loses its session
//! (the database restarted), another instance gets the lock at its next
//! try; a holder whose session failed reports the lease lost at once and
//! tries again on a new session. [`Lease::held`] is a `watch` the task's
//! driver follows: run while `true`, stop when it turns `false`.
//!
//! The session lives on a plain thread (the `postgres` client blocks),
//! never on the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::pg_tls::PgTarget;

/// The advisory lock key of a lease name: the first 8 bytes of its SHA-256.
pub fn key(name: &str) -> i64 {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    i64::from_be_bytes(b)
}

/// A lease kept by a thread; released when dropped.
#[derive(Debug)]
pub struct Lease {
    name: String,
    held: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Starts trying to hold the lease `name` in the database `database` on
    /// the server of `admin` (its maintenance connection), every `retry`.
    pub fn keep(
        admin: PgTarget,
        database: &str,
        name: &str,
        retry: Duration,
    ) -> std::io::Result<Lease> {
        let (tx, held) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (label, key, db) = (name.to_owned(), key(name), database.to_owned());
        let thread = std::thread::Builder::new()
            .name(format!("lease-{name}"))
            .spawn(move || keeper(&admin, &db, &label, key, retry, &tx, &flag))?;
        Ok(Lease {
            name: name.to_owned(),
            held,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether this instance holds the lease, as it changes.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // The thread looks at the flag at least every 50 ms; its
            // session (and with it the lock) ends when it returns.
            let _ = t.join();
        }
    }
}

/// The lease's thread: see the module doc.
fn keeper(
    admin: &PgTarget,
    database: &str,
    name: &str,
    key: i64,
    retry: Duration,
    held: &watch::Sender<bool>,
    stop: &AtomicBool,
) {
    let mut session: Option<postgres::Client> = None;
    let mut holding = false;
    let mut reported_failure = false;
    while !stop.load(Ordering::SeqCst) {
        if session.is_none() {
            let opened = super::postgres::ensure_database(admin, database).and_then(|()| {
                admin
                    .with_dbname(database)
                    .connect()
                    .map_err(anyhow::Error::from)
            });
            match opened {
                Ok(c) => {
                    session = Some(c);
                    reported_failure = false;
                }
                Err(e) => {
                    if !reported_failure {
                        tracing::warn!(lease = name, error = %format!("{e:#}"), "lease: cannot reach PostgreSQL; retrying");
                        reported_failure = true;
                    }
                }
            }
        }
        if let Some(c) = session.as_mut() {
            let ok = if holding {
                c.is_valid(retry.max(Duration::from_secs(1))).is_ok()
            } else {
                match c.query_one("SELECT pg_try_advisory_lock($1)", &[&key]) {
                    Ok(row) => {
                        if row.get::<_, bool>(0) {
                            holding = true;
                            tracing::info!(lease = name, "lease taken: this instance runs it");
                            held.send_replace(true);
                        }
                        true
                    }
                    Err(_) => false,
                }
            };
            if !ok {
                if holding {
                    tracing::warn!(lease = name, "lease lost: the PostgreSQL session failed");
                    held.send_replace(false);
                }
                holding = false;
                session = None;
            }
        }
        // Sleep `retry`, looking at the flag every 50 ms.
        let until = std::time::Instant::now() + retry;
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(retry));
        }
    }
    if holding {
        held.send_replace(false);
    }
    // Closing the session releases the lock.
    drop(session);
}
