//! Bearer tokens and roles.
//!
//! Tokens are 256-bit random strings (`hms_…`) shown once at creation; only
//! their SHA-256 is stored, in `auth.sqlite` beside the event store (credentials
//! are not clinical events, and `hms-edge token create` must work while the
//! appliance runs, see docs/adr/0003). Lookups hit an in-memory cache first;
//! a miss reads the table, so a token created by another process works at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::store::credentials::Credentials;

pub use crate::store::credentials::AUTH_FILE;

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

/// The token store.
#[derive(Debug, Clone)]
pub struct Tokens {
    cache: Arc<RwLock<HashMap<[u8; 32], Principal>>>,
    /// The stored hashes (read on a cache miss).
    store: Arc<Credentials>,
}

fn hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Tokens {
    /// Opens (creating) the credential store of `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Tokens> {
        Ok(Tokens {
            store: Arc::new(Credentials::open(data_dir)?),
            cache: Arc::default(),
        })
    }

    /// Creates a token and returns it; only its hash is kept.
    pub fn create(&self, name: &str, role: Role) -> anyhow::Result<String> {
        let name = name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            anyhow::bail!("token name must be 1 to 64 printable characters");
        }
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        let token = format!(
            "hms_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        self.store.insert(
            name,
            role.as_str(),
            &hash(&token),
            hms_domain::Timestamp::now().as_millis(),
        )?;
        Ok(token)
    }

    /// Resolves a presented token. Blocking (may read SQLite on a cache miss).
    pub fn authenticate(&self, token: &str) -> anyhow::Result<Option<Principal>> {
        if !token.starts_with("hms_") || token.len() > 128 {
            return Ok(None);
        }
        let h = hash(token);
        if let Some(p) = self.cache.read().unwrap_or_else(|p| p.into_inner()).get(&h) {
            return Ok(Some(p.clone()));
        }
        let Some((name, role)) = self.store.lookup(&h)? else {
            return Ok(None);
        };
        let Some(role) = Role::parse(&role) else {
            return Ok(None);
        };
        let p = Principal { name, role };
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(h, p.clone());
        Ok(Some(p))
    }

    /// Resolves from the cache only (no IO); `None` means "look it up".
    pub fn cached(&self, token: &str) -> Option<Principal> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash(token))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
