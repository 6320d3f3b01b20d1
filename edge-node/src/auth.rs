//! Bearer tokens and roles.
//!
//! Tokens are 256-bit random strings (`hms_…`) shown once at creation; only
//! their SHA-256 is stored, in `auth.sqlite` beside the event store (credentials
//! are not clinical events, and `hms-edge token` must work while the
//! appliance runs, see docs/adr/0003). A token has a name (unique among
//! live tokens: it is the actor of what is done with it), a role, and may
//! expire.
//!
//! Look-ups hit an in-memory cache first: a kiosk request costs a hash, a
//! read lock and a clock read, no SQLite. A miss reads the table, so a token
//! created by another process works at once. An expired token is refused
//! from the cache like an unknown one. What other processes change
//! (`hms-edge token revoke`) is noticed by [`Follower`], four times a
//! second, through SQLite's `data_version` (answered from shared memory, no
//! disk read): the cache is then emptied, so a revoked token is refused
//! within a second. A generation number keeps a look-up that raced with a
//! revocation from putting the token back.
//!
//! When a token was last used is kept in memory and written by `follow`
//! at most once a minute per token (its first use at once), and once more
//! at shutdown. [`Follower`] also records each creation and revocation that
//! `auth.sqlite` holds as an `audit.token_created` / `audit.token_revoked`
//! event through the store's writer (ADR 0003).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use hms_domain::{Actor, ActorKind, Timestamp};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::board::Command;
use crate::store::credentials::{Change, Credentials, NewToken, Revocation, TokenRow};
use crate::store::{Store, WriteError, WriteRequest};

pub use crate::store::credentials::{AUTH_FILE, CreateError};

/// How often `follow` looks for changes other processes made.
pub const POLL: Duration = Duration::from_millis(250);

/// A token's last use is written at most this often (ms).
pub const LAST_USED_EVERY_MS: i64 = 60_000;

/// What a token may do. Ordered: each role may do everything the previous may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Kiosk: read the board.
    Viewer,
    /// Nursing: housekeeping status, isolation, expected discharges.
    Nurse,
    /// Bed management: assign, place, release, reserve, block.
    BedManager,
    /// Administration: everything.
    Admin,
}

impl Role {
    /// Parses `viewer`, `nurse`, `bed_manager` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "nurse" => Role::Nurse,
            "bed_manager" => Role::BedManager,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Nurse => "nurse",
            Role::BedManager => "bed_manager",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token name (user or device), recorded as the actor of its events.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    /// Who or what holds it.
    pub name: &'a str,
    /// Its role.
    pub role: Role,
    /// When it expires, if it does.
    pub expires: Option<Timestamp>,
    /// Who creates it (recorded as the actor of the audit event).
    pub by: &'a str,
}

/// A cached live token.
#[derive(Debug)]
struct Entry {
    principal: Principal,
    expires_ms: Option<i64>,
    /// Last use seen here (0: none).
    used_ms: AtomicI64,
    /// Last use written to `auth.sqlite` (0: none).
    stored_ms: AtomicI64,
}

impl Entry {
    fn live_at(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<[u8; 32], Arc<Entry>>,
    /// Bumped each time the cache is emptied because of an outside change.
    generation: u64,
}

/// The token store.
#[derive(Debug, Clone)]
pub struct Tokens {
    cache: Arc<RwLock<Cache>>,
    /// The stored hashes (read on a cache miss).
    store: Arc<Credentials>,
    /// The cache generation, for streams that end when their token goes.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Open sessions seen here: the session id's hash → its token's hash.
    sessions: Arc<RwLock<HashMap<[u8; 32], [u8; 32]>>>,
    /// Bumped when a session ends here, for streams that end with it.
    ended: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What a live stream was opened with.
#[derive(Debug, Clone)]
enum Credential {
    Token(String),
    Session(String),
}

/// How long a kiosk sign-in code is valid.
pub const PAIR_CODE_TTL_MS: i64 = 10 * 60 * 1000;

/// The symbols of a sign-in code: no 0/O or 1/I/L look-alikes. A code has
/// 8 of them (31^8, about 2^39.6), is valid 10 minutes and works once.
const CODE_SYMBOLS: &[u8; 31] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// A sign-in code issued by [`Tokens::pair`].
#[derive(Debug, Clone)]
pub struct PairCode {
    /// The code as a person types it (`ABCD-EFGH`).
    pub code: String,
    /// When it stops working.
    pub expires: Timestamp,
    /// Whether a viewer token of that name was created for it.
    pub created_token: bool,
}

/// A code as typed, normalised: upper case, without spaces and dashes.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(bytes)
}

fn hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Who runs this process, as the actor of the token changes it makes:
/// `cli:LOGIN` (`SUDO_USER`, else `USER`, else `LOGNAME`).
pub fn operator_login() -> String {
    let login = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{login}")
}

impl Tokens {
    /// Opens (creating) the credential store of `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Tokens> {
        Ok(Tokens {
            store: Arc::new(Credentials::open(data_dir)?),
            cache: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            sessions: Arc::default(),
            ended: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Signs in with a token: opens a session (stored durably, so it
    /// survives a restart of the appliance) and returns its id, the value
    /// of the session cookie. `None` when the token is not live. Blocking.
    pub fn sign_in(&self, token: &str) -> anyhow::Result<Option<(String, Principal)>> {
        let token = token.trim();
        let Some((p, _)) = self.resolve(token, Timestamp::now().as_millis())? else {
            return Ok(None);
        };
        let id = self.open_session(hash(token))?;
        Ok(Some((id, p)))
    }

    /// Signs in with a one-time kiosk code ([`Tokens::pair`]): the code is
    /// used up, and a session opened for its token. `None` when the code is
    /// unknown, used, expired, or its token is no longer live. Blocking.
    pub fn sign_in_with_code(&self, code: &str) -> anyhow::Result<Option<(String, Principal)>> {
        self.sign_in_with_code_at(code, Timestamp::now().as_millis())
    }

    /// [`Tokens::sign_in_with_code`] at `now`.
    pub fn sign_in_with_code_at(
        &self,
        code: &str,
        now: i64,
    ) -> anyhow::Result<Option<(String, Principal)>> {
        let code = normalise_code(code);
        if code.len() != 8 || !code.bytes().all(|b| CODE_SYMBOLS.contains(&b)) {
            return Ok(None);
        }
        let Some(token) = self.store.redeem_pair_code(&hash(&code), now)? else {
            return Ok(None);
        };
        let Some((p, _)) = self.resolve_hash(token, now)? else {
            return Ok(None);
        };
        let id = self.open_session(token)?;
        Ok(Some((id, p)))
    }

    fn open_session(&self, token: [u8; 32]) -> anyhow::Result<String> {
        let id = format!(
            "s_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
        );
        let h = hash(&id);
        self.store
            .open_session(&h, &token, Timestamp::now().as_millis())?;
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(h, token);
        Ok(id)
    }

    /// The token hash of an open session (memory first, then the store).
    fn session_token(&self, id: &str) -> anyhow::Result<Option<[u8; 32]>> {
        if !id.starts_with("s_") || id.len() > 64 {
            return Ok(None);
        }
        let h = hash(id);
        if let Some(t) = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h)
        {
            return Ok(Some(*t));
        }
        let found = self.store.session_token(&h)?;
        if let Some(t) = found {
            self.sessions
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h, t);
        }
        Ok(found)
    }

    /// The principal of an open session whose token is live. Blocking (may
    /// read SQLite the first time a session is seen).
    pub fn session(&self, id: &str) -> anyhow::Result<Option<Principal>> {
        let now = Timestamp::now().as_millis();
        match self.session_token(id)? {
            Some(t) => Ok(self.resolve_hash(t, now)?.map(|(p, _)| p)),
            None => Ok(None),
        }
    }

    /// [`Tokens::session`] from memory only; `None` means "look it up".
    pub fn session_cached(&self, id: &str) -> Option<Principal> {
        let token = *self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash(id))?;
        let now_ms = Timestamp::now().as_millis();
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let e = cache.entries.get(&token)?;
        e.live_at(now_ms).then(|| use_entry(e, now_ms))
    }

    /// Ends a session (sign-out): its streams end, its cookie is refused.
    pub fn sign_out(&self, id: &str) -> anyhow::Result<()> {
        let h = hash(id);
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&h);
        self.store.end_session(&h, Timestamp::now().as_millis())?;
        self.ended.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Issues a one-time sign-in code for a wall kiosk, valid
    /// [`PAIR_CODE_TTL_MS`]: it signs in as the live token named `name`,
    /// which is created (role viewer, its secret never shown) when there is
    /// none. Durable before it returns.
    pub fn pair(&self, name: &str, by: &str) -> Result<PairCode, CreateError> {
        let name = name.trim();
        let now = Timestamp::now().as_millis();
        let created_token = match self.store.live_token(name, now)? {
            Some(_) => false,
            None => {
                self.create_with(&TokenSpec {
                    name,
                    role: Role::Viewer,
                    expires: None,
                    by,
                })?;
                true
            }
        };
        let raw = random_bytes::<8>()?;
        let code: String = raw
            .iter()
            .map(|b| CODE_SYMBOLS[usize::from(b % 31)] as char)
            .collect();
        let expires = now + PAIR_CODE_TTL_MS;
        self.store
            .add_pair_code(&hash(&code), name, now, expires, by)?;
        Ok(PairCode {
            code: format!("{}-{}", &code[..4], &code[4..]),
            expires: Timestamp::from_millis(expires),
            created_token,
        })
    }

    /// Creates a token that does not expire, on behalf of this process's
    /// user, and returns it; only its hash is kept.
    pub fn create(&self, name: &str, role: Role) -> Result<String, CreateError> {
        self.create_with(&TokenSpec {
            name,
            role,
            expires: None,
            by: &operator_login(),
        })
    }

    /// Creates a token and returns it; only its hash is kept. The name of a
    /// live token (neither revoked nor expired) is refused
    /// ([`CreateError::Duplicate`]).
    pub fn create_with(&self, spec: &TokenSpec<'_>) -> Result<String, CreateError> {
        let name = spec.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(CreateError::Invalid(
                "a token name is 1 to 64 printable characters".into(),
            ));
        }
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let token = format!(
            "hms_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        self.store.create(&NewToken {
            name,
            role: spec.role.as_str(),
            hash: &hash(&token),
            created_ms: Timestamp::now().as_millis(),
            expires_ms: spec.expires.map(Timestamp::as_millis),
            by: spec.by,
        })?;
        Ok(token)
    }

    /// Revokes the token(s) named `name`, on behalf of `by`. A running
    /// appliance refuses them within a second ([`Follower`]).
    pub fn revoke(&self, name: &str, by: &str) -> anyhow::Result<Revocation> {
        self.store
            .revoke(name.trim(), Timestamp::now().as_millis(), by)
    }

    /// Every token created here, oldest first (never the token).
    pub fn list(&self) -> anyhow::Result<Vec<TokenRow>> {
        self.store.list()
    }

    /// Resolves a presented token. Blocking (may read SQLite on a cache miss).
    pub fn authenticate(&self, token: &str) -> anyhow::Result<Option<Principal>> {
        self.authenticate_at(token, Timestamp::now().as_millis())
    }

    /// [`Tokens::authenticate`] at `now_ms`.
    pub fn authenticate_at(&self, token: &str, now_ms: i64) -> anyhow::Result<Option<Principal>> {
        Ok(self.resolve(token, now_ms)?.map(|(p, _)| p))
    }

    /// The principal of a live token and when it expires.
    fn resolve(
        &self,
        token: &str,
        now_ms: i64,
    ) -> anyhow::Result<Option<(Principal, Option<i64>)>> {
        if !token.starts_with("hms_") || token.len() > 128 {
            return Ok(None);
        }
        self.resolve_hash(hash(token), now_ms)
    }

    /// The principal of the live token whose hash is `h`, and when it expires.
    fn resolve_hash(
        &self,
        h: [u8; 32],
        now_ms: i64,
    ) -> anyhow::Result<Option<(Principal, Option<i64>)>> {
        let generation = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = cache.entries.get(&h) {
                return Ok(e
                    .live_at(now_ms)
                    .then(|| (use_entry(e, now_ms), e.expires_ms)));
            }
            cache.generation
        };
        let Some(grant) = self.store.lookup(&h)? else {
            return Ok(None);
        };
        let Some(role) = Role::parse(&grant.role) else {
            return Ok(None);
        };
        let stored = grant.last_used_ms.unwrap_or(0);
        let entry = Arc::new(Entry {
            principal: Principal {
                name: grant.name,
                role,
            },
            expires_ms: grant.expires_ms,
            used_ms: AtomicI64::new(stored),
            stored_ms: AtomicI64::new(stored),
        });
        if !entry.live_at(now_ms) {
            return Ok(None);
        }
        let p = use_entry(&entry, now_ms);
        let expires_ms = entry.expires_ms;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // Emptied meanwhile (a revocation, perhaps of this very token): what
        // was read may be stale, so it is not kept; the next request reads again.
        if cache.generation == generation {
            cache.entries.insert(h, entry);
        }
        Ok(Some((p, expires_ms)))
    }

    /// Resolves from the cache only (no IO); `None` means "look it up".
    /// An expired token is `None` (and then refused by the look-up).
    pub fn cached(&self, token: &str) -> Option<Principal> {
        let now_ms = Timestamp::now().as_millis();
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let e = cache.entries.get(&hash(token))?;
        e.live_at(now_ms).then(|| use_entry(e, now_ms))
    }

    /// Notices what other processes changed in `auth.sqlite` (a cheap
    /// check); if anything did, empties the cache and returns `true`.
    pub fn refresh(&self) -> anyhow::Result<bool> {
        if !self.store.changed()? {
            return Ok(false);
        }
        let (generation, dropped) = {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            let dropped = std::mem::take(&mut cache.entries);
            cache.generation += 1;
            (cache.generation, dropped)
        };
        self.changes.send_replace(generation);
        // What the dropped entries saw used and not yet written is written
        // now (or it would be lost).
        let uses = due_uses(dropped.iter(), 1);
        if let Err(e) = self.write_uses(&uses) {
            tracing::warn!(error = %format!("{e:#}"), "token last-use times not written");
        }
        Ok(true)
    }

    /// Writes the last use of tokens whose stored time is a minute old (or
    /// missing); with `all`, of every token used since it was written.
    pub fn flush_uses(&self, all: bool) -> anyhow::Result<usize> {
        let uses = {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            due_uses(
                cache.entries.iter(),
                if all { 1 } else { LAST_USED_EVERY_MS },
            )
        };
        self.write_uses(&uses)?;
        Ok(uses.len())
    }

    fn write_uses(&self, uses: &[([u8; 32], i64, Arc<Entry>)]) -> anyhow::Result<()> {
        let rows: Vec<([u8; 32], i64)> = uses.iter().map(|(h, at, _)| (*h, *at)).collect();
        self.store.record_use(&rows)?;
        for (_, at, e) in uses {
            e.stored_ms.fetch_max(*at, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Resolves once `token` is no longer valid (revoked, expired, or the
    /// store says it is unknown); never while it is. For streams that must
    /// end with their token.
    pub async fn invalidated(self, token: String) {
        self.gone(Credential::Token(token)).await;
    }

    /// Resolves once the session `id` no longer holds (signed out, or its
    /// token revoked or expired); never while it does.
    pub async fn session_ended(self, id: String) {
        self.gone(Credential::Session(id)).await;
    }

    async fn gone(self, credential: Credential) {
        let mut changes = self.changes.subscribe();
        let mut ended = self.ended.subscribe();
        loop {
            let (tokens, c) = (self.clone(), credential.clone());
            let resolved = tokio::task::spawn_blocking(move || {
                let now = Timestamp::now().as_millis();
                match &c {
                    Credential::Token(t) => tokens.resolve(t, now),
                    Credential::Session(id) => match tokens.session_token(id)? {
                        Some(h) => tokens.resolve_hash(h, now),
                        None => Ok(None),
                    },
                }
            })
            .await;
            let expires_ms = match resolved {
                Ok(Ok(Some((_, expires_ms)))) => expires_ms,
                // The store could not say: the stream goes on, asked again
                // at the next change.
                Ok(Err(_)) => None,
                _ => return,
            };
            let until_expiry = expires_ms.map(|e| {
                let left = e.saturating_sub(Timestamp::now().as_millis()).max(0);
                Duration::from_millis(left as u64)
            });
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return std::future::pending().await;
                    }
                }
                r = ended.changed() => {
                    if r.is_err() {
                        return std::future::pending().await;
                    }
                }
                () = async {
                    match until_expiry {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

fn use_entry(e: &Entry, now_ms: i64) -> Principal {
    e.used_ms.fetch_max(now_ms, Ordering::Relaxed);
    e.principal.clone()
}

/// `(hash, last use, entry)` of the tokens used at least `every_ms` after
/// the time stored for them, or used and never stored.
fn due_uses<'a>(
    entries: impl Iterator<Item = (&'a [u8; 32], &'a Arc<Entry>)>,
    every_ms: i64,
) -> Vec<([u8; 32], i64, Arc<Entry>)> {
    entries
        .filter_map(|(h, e)| {
            let used = e.used_ms.load(Ordering::Relaxed);
            let stored = e.stored_ms.load(Ordering::Relaxed);
            let due = used > stored && (stored == 0 || used - stored >= every_ms);
            due.then(|| (*h, used, e.clone()))
        })
        .collect()
}

/// The audit command of a change in the `auth.sqlite` whose id is `credentials`.
fn audit_request(credentials: &str, c: &Change) -> WriteRequest {
    let cmd = if c.created {
        Command::RecordTokenCreated {
            name: c.name.clone(),
            role: c.role.clone(),
            expires_at: c.expires_ms.map(Timestamp::from_millis),
            credentials: credentials.to_owned(),
            change: c.id,
        }
    } else {
        Command::RecordTokenRevoked {
            name: c.name.clone(),
            role: c.role.clone(),
            credentials: credentials.to_owned(),
            change: c.id,
        }
    };
    WriteRequest {
        cmd,
        actor: Actor {
            kind: ActorKind::User,
            id: c.by.clone(),
        },
        correlation: Some(format!("token-change-{}", c.id)),
        occurred_at: Some(Timestamp::from_millis(c.at_ms)),
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| anyhow::anyhow!("the credential task did not run"))?
}

/// Records the changes `auth.sqlite` holds that the log does not, in order,
/// then forgets them. `recorded` is the last change the log holds (read
/// from the log the first time).
async fn record_changes(
    tokens: &Tokens,
    store: &Store,
    recorded: &mut Option<u64>,
) -> anyhow::Result<()> {
    let creds = tokens.store.clone();
    let pending = blocking(move || creds.changes()).await?;
    let Some(last) = pending.last().map(|c| c.id) else {
        return Ok(());
    };
    let done = match *recorded {
        Some(d) => d,
        None => *recorded.insert(store.last_token_change(tokens.store.id()).await?),
    };
    for c in pending.iter().filter(|c| c.id > done) {
        match store.write(audit_request(tokens.store.id(), c)).await {
            Ok(_) => *recorded = Some(c.id),
            Err(WriteError::Rejected(e)) => {
                // Cannot happen (the board accepts every audit command);
                // skipped rather than retried for ever.
                tracing::error!(change = c.id, error = %e, "token change not recorded");
                *recorded = Some(c.id);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let creds = tokens.store.clone();
    let up_to = recorded.unwrap_or(0).min(last);
    blocking(move || creds.forget_changes(up_to)).await
}

/// Keeps the running appliance in step with `auth.sqlite` (see the module
/// doc): [`Follower::catch_up`] at start, then [`Follower::run`].
#[derive(Debug)]
pub struct Follower {
    tokens: Tokens,
    store: Store,
    /// The last change the log records (read from it when first needed).
    recorded: Option<u64>,
    /// A change could not be recorded: try again at the next poll.
    retry: bool,
}

impl Follower {
    /// A follower of `tokens` recording into `store`.
    pub fn new(tokens: Tokens, store: Store) -> Follower {
        Follower {
            tokens,
            store,
            recorded: None,
            retry: false,
        }
    }

    /// Notes `auth.sqlite` as it is now and records the changes made while
    /// the appliance was stopped; before anything else is served, so they
    /// come first in the log.
    pub async fn catch_up(&mut self) {
        let t = self.tokens.clone();
        if let Err(e) = blocking(move || t.refresh()).await {
            tracing::warn!(error = %format!("{e:#}"), "auth.sqlite could not be checked");
        }
        self.record().await;
    }

    async fn record(&mut self) {
        if let Err(e) = record_changes(&self.tokens, &self.store, &mut self.recorded).await {
            self.retry = true;
            tracing::warn!(error = %format!("{e:#}"), "token changes not yet recorded as audit events; retrying");
        } else {
            self.retry = false;
        }
    }

    /// Every [`POLL`] until `shutdown`: empties the token cache when another
    /// process changed the file, records token creations and revocations as
    /// audit events, and writes last-use times that are due; at shutdown
    /// records the changes still pending and writes the last-use times still
    /// unwritten (a change left by a crash is recorded at the next start).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let t = self.tokens.clone();
            let changed = match blocking(move || t.refresh()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "auth.sqlite could not be checked");
                    false
                }
            };
            if changed || self.retry {
                self.record().await;
            }
            let t = self.tokens.clone();
            if let Err(e) = blocking(move || t.flush_uses(false)).await {
                tracing::warn!(error = %format!("{e:#}"), "token last-use times not written");
            }
        }
        // What changed since the last poll is recorded before the store closes.
        self.record().await;
        let t = self.tokens.clone();
        if let Err(e) = blocking(move || t.flush_uses(true)).await {
            tracing::warn!(error = %format!("{e:#}"), "token last-use times not written at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_across_handles_and_end_with_sign_out_or_their_token() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let t = tokens.create("nurse-ann", Role::Nurse).unwrap();
        assert!(tokens.sign_in("hms_wrong").unwrap().is_none());
        let (id, p) = tokens.sign_in(&t).unwrap().unwrap();
        assert_eq!((p.name.as_str(), p.role), ("nurse-ann", Role::Nurse));
        assert!(id.starts_with("s_") && !id.contains(&t[4..]));
        assert_eq!(tokens.session(&id).unwrap(), Some(p.clone()));
        assert_eq!(tokens.session_cached(&id), Some(p.clone()));
        // A restarted appliance (a new handle) knows the session.
        let after_restart = Tokens::open(dir.path()).unwrap();
        assert_eq!(after_restart.session(&id).unwrap(), Some(p.clone()));
        assert!(after_restart.session("s_unknown").unwrap().is_none());
        assert!(
            after_restart.session(&t).unwrap().is_none(),
            "a token is not a session"
        );
        // Signed out: refused here and by the other handle.
        let (other, _) = tokens.sign_in(&t).unwrap().unwrap();
        tokens.sign_out(&id).unwrap();
        assert!(tokens.session(&id).unwrap().is_none());
        assert!(tokens.session_cached(&id).is_none());
        assert!(
            Tokens::open(dir.path())
                .unwrap()
                .session(&id)
                .unwrap()
                .is_none()
        );
        // The token revoked: its other session ends too.
        assert!(tokens.session(&other).unwrap().is_some());
        tokens.revoke("nurse-ann", "cli:test").unwrap();
        assert!(tokens.refresh().unwrap());
        assert!(tokens.session(&other).unwrap().is_none());
        assert!(tokens.session_cached(&other).is_none());
    }

    #[test]
    fn a_pair_code_works_once_within_ten_minutes_for_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        // No token of that name: a viewer token is made for it.
        let code = tokens.pair("wall-3w", "cli:test").unwrap();
        assert!(code.created_token);
        assert_eq!(code.code.len(), 9);
        assert_eq!(&code.code[4..5], "-");
        let (id, p) = tokens
            .sign_in_with_code(&code.code.to_lowercase().replace('-', " "))
            .unwrap()
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), ("wall-3w", Role::Viewer));
        assert!(tokens.session(&id).unwrap().is_some());
        assert!(
            tokens.sign_in_with_code(&code.code).unwrap().is_none(),
            "used once"
        );
        // An existing token is used as it is, with its role.
        tokens.create("station-4e", Role::Nurse).unwrap();
        let again = tokens.pair("station-4e", "cli:test").unwrap();
        assert!(!again.created_token);
        let late = again.expires.as_millis();
        assert!(
            tokens
                .sign_in_with_code_at(&again.code, late)
                .unwrap()
                .is_none(),
            "expired after 10 minutes"
        );
        let (_, p) = tokens
            .sign_in_with_code_at(&again.code, late - 1)
            .unwrap()
            .unwrap();
        assert_eq!(p.role, Role::Nurse);
        // A code whose token was revoked meanwhile signs nobody in.
        let third = tokens.pair("station-4e", "cli:test").unwrap();
        tokens.revoke("station-4e", "cli:test").unwrap();
        assert!(tokens.sign_in_with_code(&third.code).unwrap().is_none());
        assert!(tokens.sign_in_with_code("ABCD-EFG").unwrap().is_none());
        assert!(tokens.sign_in_with_code("0000-0000").unwrap().is_none());
    }

    #[test]
    fn created_tokens_authenticate_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let t = tokens.create("kiosk-3W", Role::Viewer).unwrap();
        assert!(t.starts_with("hms_") && t.len() > 40);
        let p = tokens.authenticate(&t).unwrap().unwrap();
        assert_eq!(
            p,
            Principal {
                name: "kiosk-3W".into(),
                role: Role::Viewer
            }
        );
        // A second handle (another process) sees it too.
        let other = Tokens::open(dir.path()).unwrap();
        assert_eq!(other.authenticate(&t).unwrap().unwrap().role, Role::Viewer);
        assert!(tokens.authenticate("hms_wrong").unwrap().is_none());
        assert!(tokens.authenticate("Basic abc").unwrap().is_none());
        // Only the hash is stored.
        let stored = tokens.store.stored_hashes().unwrap();
        assert_eq!(stored.len(), 1);
        let stored = &stored[0];
        assert_eq!(stored.len(), 32);
        assert!(!String::from_utf8_lossy(stored).contains(&t[4..]));
        assert!(tokens.create("", Role::Admin).is_err());
        assert!(Role::Viewer < Role::Nurse && Role::BedManager < Role::Admin);
    }

    #[test]
    fn an_expired_token_is_refused_from_the_cache_and_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let now = Timestamp::now();
        let expires = Timestamp::from_millis(now.as_millis() + 60_000);
        let t = tokens
            .create_with(&TokenSpec {
                name: "temp",
                role: Role::Nurse,
                expires: Some(expires),
                by: "cli:test",
            })
            .unwrap();
        let before = expires.as_millis() - 1;
        assert!(tokens.authenticate_at(&t, before).unwrap().is_some());
        // Cached now; at the expiry it is refused from the cache…
        assert!(
            tokens
                .authenticate_at(&t, expires.as_millis())
                .unwrap()
                .is_none()
        );
        // …and by a process that never cached it.
        let other = Tokens::open(dir.path()).unwrap();
        assert!(
            other
                .authenticate_at(&t, expires.as_millis())
                .unwrap()
                .is_none()
        );
        assert!(other.authenticate_at(&t, before).unwrap().is_some());
    }

    #[test]
    fn a_revocation_by_another_process_empties_the_cache_once_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let appliance = Tokens::open(dir.path()).unwrap();
        let cli = Tokens::open(dir.path()).unwrap();
        let t = cli.create("kiosk", Role::Viewer).unwrap();
        assert!(
            appliance.refresh().unwrap(),
            "the first check counts as a change"
        );
        assert!(appliance.authenticate(&t).unwrap().is_some());
        assert!(appliance.cached(&t).is_some());
        assert!(!appliance.refresh().unwrap(), "nothing changed");
        // Its own writes (last use) are no outside change.
        assert_eq!(appliance.flush_uses(true).unwrap(), 1);
        assert!(!appliance.refresh().unwrap());
        assert_eq!(
            cli.revoke("kiosk", "cli:test").unwrap(),
            Revocation::Revoked(1)
        );
        // Until noticed the cache still answers; once noticed, refused.
        assert!(appliance.cached(&t).is_some());
        assert!(appliance.refresh().unwrap());
        assert!(appliance.cached(&t).is_none());
        assert!(appliance.authenticate(&t).unwrap().is_none());
        let rows = cli.list().unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].revoked_ms.is_some() && rows[0].last_used_ms.is_some());
    }

    #[test]
    fn last_use_is_written_at_once_then_at_most_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let t = tokens.create("kiosk", Role::Viewer).unwrap();
        let t0 = Timestamp::now().as_millis();
        tokens.authenticate_at(&t, t0).unwrap().unwrap();
        assert_eq!(tokens.flush_uses(false).unwrap(), 1, "the first use");
        tokens.authenticate_at(&t, t0 + 30_000).unwrap().unwrap();
        assert_eq!(tokens.flush_uses(false).unwrap(), 0, "not yet a minute");
        tokens.authenticate_at(&t, t0 + 61_000).unwrap().unwrap();
        assert_eq!(tokens.flush_uses(false).unwrap(), 1);
        assert_eq!(tokens.list().unwrap()[0].last_used_ms, Some(t0 + 61_000));
        tokens.authenticate_at(&t, t0 + 62_000).unwrap().unwrap();
        assert_eq!(tokens.flush_uses(false).unwrap(), 0);
        assert_eq!(tokens.flush_uses(true).unwrap(), 1, "at shutdown");
        assert_eq!(tokens.list().unwrap()[0].last_used_ms, Some(t0 + 62_000));
    }
}
