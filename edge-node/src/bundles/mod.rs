//! Signed bundles on the appliance (docs/bundles.md): which configuration
//! and model set it runs, changed from the centre, never backwards, and
//! rolled back by itself when a change does not come up healthy.
//!
//! A bundle arrives as a file in `data_dir/bundles/inbox/` (`hms-edge
//! bundle apply FILE` puts it there; so does the fleet's `apply_bundle`).
//! The supervisor of `hms-edge run` ([`crate::cli`]) takes it, [`check`]s
//! it and, when it passes, applies it:
//!
//! - **checks**, in order, the first failure refusing it with nothing
//!   changed: the signature against `[bundles] trusted_keys` (and the
//!   bundle's own integrity, `firmware_config::bundle::verify`); the
//!   version above every version of its kind applied here before
//!   (anti-rollback: [`Versions::highest`], kept in the store); the
//!   hospital (`*` or this appliance's); for a configuration, that it lints
//!   clean (relative paths resolve as for the appliance's own file), names
//!   this hospital, and keeps every bed that holds a patient; for a model
//!   set, that its manifest and files verify;
//! - **applies**: a configuration is written to
//!   `data_dir/bundles/config-<version>.toml`, the boot pointer
//!   ([`Active`], `data_dir/bundles/ACTIVE`) names it on probation, and the
//!   appliance restarts in-process on it (listeners on the same addresses,
//!   topology reconciled); a model set is installed as `hms-edge models
//!   install` does (the forecasts pick it up at their next refresh);
//! - **probation** (`[bundles] probation_s`): the store answers, the
//!   listeners are bound, and HL7 arrives if it was arriving before the
//!   switch (a message in the 5 minutes before). Passed: the bundle is in
//!   force. Failed: the previous configuration or model set comes back by
//!   itself. An appliance that stops during probation starts again on the
//!   previous configuration and records the rollback.
//!
//! Every step is an `audit.bundle` event ([`Step`]) with the version, the
//! version before, the bundle's SHA-256 and the reason of a refusal or
//! rollback; `/health` shows the component `bundles` ([`Status`]) and the
//! fleet status carries `config_version`. Each outcome is also written to
//! `data_dir/bundles/outcome/<sha256>.json` for the command that queued it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use firmware_config::bundle::{Bundle, BundleError, Hospital, Kind};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::Store;

/// The bundles' folder inside the data dir.
pub const DIR: &str = "bundles";

/// Where bundles wait to be applied (inside [`DIR`]).
pub const INBOX: &str = "inbox";

/// Where each bundle's outcome is written (inside [`DIR`]).
pub const OUTCOME: &str = "outcome";

/// The marker of a data dir whose appliance takes model sets only as
/// signed bundles (`[bundles]` without `allow_unsigned_models`): `hms-edge
/// models install` refuses to install there (inside [`DIR`]).
pub const SIGNED_MODELS_ONLY: &str = "SIGNED_MODELS_ONLY";

/// The boot pointer's file name (inside [`DIR`]).
const ACTIVE: &str = "ACTIVE";

/// How recent an HL7 message must be for the feed to count as flowing
/// before a switch.
pub const FLOWING_WINDOW: Duration = Duration::from_secs(300);

/// What `[bundles]` says, with the trusted keys read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The raw public keys whose signatures are trusted.
    pub trusted: Vec<[u8; 32]>,
    /// How long a new bundle is on probation.
    pub probation: Duration,
    /// Whether unsigned model sets may be installed locally.
    pub allow_unsigned_models: bool,
}

impl Settings {
    /// The settings of `config`; none without a `[bundles]` section.
    pub fn from_config(config: &firmware_config::Config) -> anyhow::Result<Option<Settings>> {
        let Some(b) = &config.bundles else {
            return Ok(None);
        };
        let mut trusted = vec![];
        for path in &b.trusted_keys {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the bundle key {}", path.display()))?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "the bundle key {} is {} bytes, not the raw 32 bytes of a public key",
                    path.display(),
                    bytes.len()
                )
            })?;
            trusted.push(key);
        }
        Ok(Some(Settings {
            trusted,
            probation: Duration::from_secs(b.probation_s),
            allow_unsigned_models: b.allow_unsigned_models,
        }))
    }
}

pub use crate::store::{BundleStep as Step, BundleVersions as Versions};

/// The boot pointer: the configuration bundle the appliance starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// Its version (`config-<version>.toml`).
    pub version: u64,
    /// The version before it (none: the appliance's own file).
    pub previous: Option<u64>,
    /// `probation` or `in_force`.
    pub state: String,
    /// The bundle file's SHA-256.
    pub sha256: String,
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// The configuration file of config bundle `version`.
pub fn config_file(data_dir: &Path, version: u64) -> PathBuf {
    dir(data_dir).join(format!("config-{version}.toml"))
}

fn sync_dir(d: &Path) {
    let _ = std::fs::File::open(d).and_then(|f| f.sync_all());
}

/// Writes `bytes` to `path` durably: a temporary file, synced, renamed.
pub fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    sync_dir(parent);
    Ok(())
}

/// The boot pointer, when there is one (an unreadable one is none).
pub fn read_active(data_dir: &Path) -> Option<Active> {
    let text = std::fs::read_to_string(dir(data_dir).join(ACTIVE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Sets the boot pointer (none: start on the appliance's own file).
pub fn write_active(data_dir: &Path, active: Option<&Active>) -> anyhow::Result<()> {
    let path = dir(data_dir).join(ACTIVE);
    match active {
        Some(a) => write_durably(&path, &serde_json::to_vec(a)?),
        None => match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&dir(data_dir));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        },
    }
}

/// Removes configuration files other than `keep`'s versions.
pub fn prune_configs(data_dir: &Path, keep: &[u64]) {
    let Ok(entries) = std::fs::read_dir(dir(data_dir)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let version = name
            .strip_prefix("config-")
            .and_then(|n| n.strip_suffix(".toml"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(v) = version
            && !keep.contains(&v)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hms_domain::event::to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Puts a bundle into the inbox (atomically: no half file is ever taken);
/// its SHA-256, which names its outcome file.
pub fn enqueue(data_dir: &Path, bytes: &[u8]) -> anyhow::Result<String> {
    let sha = sha256_hex(bytes);
    let inbox = dir(data_dir).join(INBOX);
    std::fs::create_dir_all(&inbox).with_context(|| format!("creating {}", inbox.display()))?;
    let _ = std::fs::remove_file(outcome_file(data_dir, &sha));
    write_durably(&inbox.join(format!("{sha}.bundle")), bytes)?;
    Ok(sha)
}

/// The bundles waiting in the inbox, oldest first, taken out of it.
pub fn take_inbox(data_dir: &Path) -> Vec<Vec<u8>> {
    let inbox = dir(data_dir).join(INBOX);
    let Ok(entries) = std::fs::read_dir(&inbox) else {
        return vec![];
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "bundle"))
        .map(|p| {
            let t = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (t, p)
        })
        .collect();
    files.sort();
    let mut out = vec![];
    for (_, p) in files {
        match std::fs::read(&p) {
            Ok(bytes) => {
                let _ = std::fs::remove_file(&p);
                out.push(bytes);
            }
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "a queued bundle could not be read")
            }
        }
    }
    out
}

/// The outcome file of the bundle with SHA-256 `sha`.
pub fn outcome_file(data_dir: &Path, sha: &str) -> PathBuf {
    dir(data_dir).join(OUTCOME).join(format!("{sha}.json"))
}

/// Writes a step as its bundle's outcome (refused, in force, rolled back).
pub fn write_outcome(data_dir: &Path, step: &Step) {
    let path = outcome_file(data_dir, &step.sha256);
    if let Err(e) = serde_json::to_vec(&step.outcome())
        .map_err(anyhow::Error::from)
        .and_then(|b| write_durably(&path, &b))
    {
        tracing::warn!(error = %format!("{e:#}"), "a bundle's outcome file was not written");
    }
}

/// Why a bundle is refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The bundle itself: signature, integrity, format.
    #[error("{0}")]
    Bundle(#[from] BundleError),
    /// Not above the highest version of its kind applied here.
    #[error(
        "version {version} is not above version {highest}, the highest {kind} bundle applied \
         here (anti-rollback): sign the change with a higher version"
    )]
    NotNewer {
        /// Its kind.
        kind: &'static str,
        /// Its version.
        version: u64,
        /// The highest applied.
        highest: u64,
    },
    /// Signed for another hospital.
    #[error("the bundle is for hospital {bundle}, this appliance is hospital {here}")]
    OtherHospital {
        /// The bundle's hospital.
        bundle: String,
        /// This appliance's.
        here: String,
    },
    /// The configuration does not lint clean.
    #[error("the configuration does not pass lint: {0}")]
    Lint(String),
    /// The configuration names another hospital.
    #[error("the configuration is hospital {config}'s, this appliance is hospital {here}")]
    ConfigHospital {
        /// The configuration's `node.hospital_id`.
        config: String,
        /// This appliance's.
        here: String,
    },
    /// The configuration drops beds that hold a patient.
    #[error(
        "the configuration removes beds that hold a patient: {0}; discharge or transfer them \
         first"
    )]
    OccupiedBeds(String),
    /// The model set does not verify.
    #[error("the model set does not verify: {0}")]
    ModelSet(String),
    /// Another bundle of this kind is on probation.
    #[error("{0} bundle version {1} is on probation; send this one when it is decided")]
    Busy(&'static str, u64),
    /// The store could not be read.
    #[error("the store could not be read: {0}")]
    Store(String),
}

/// A bundle that passed [`check`], ready to apply.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The bundle.
    pub bundle: Bundle,
    /// The bundle file's SHA-256.
    pub sha256: String,
    /// The version of its kind in force now.
    pub previous: Option<u64>,
}

/// The kind's name as recorded.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Config => "config",
        Kind::ModelSet => "model_set",
    }
}

/// Lints a configuration bundle's text as if it were the file `base` (its
/// relative paths resolve there) and checks it keeps this hospital and
/// every bed that holds a patient.
fn check_config(
    text: &str,
    base: &Path,
    running: &firmware_config::Config,
    store: &Store,
) -> Result<(), Refused> {
    let (cfg, diagnostics) = firmware_config::lint_config(text, base);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == firmware_config::Severity::Error)
        .take(5)
        .map(|d| format!("line {}:{}: {}", d.line, d.col, d.message))
        .collect();
    let Some(cfg) = cfg.filter(|_| errors.is_empty()) else {
        return Err(Refused::Lint(errors.join("; ")));
    };
    if cfg.node.hospital_id != running.node.hospital_id {
        return Err(Refused::ConfigHospital {
            config: cfg.node.hospital_id.to_string(),
            here: running.node.hospital_id.to_string(),
        });
    }
    let kept: std::collections::HashSet<&str> = cfg.beds.iter().map(|b| b.id.as_str()).collect();
    let view = store.view();
    let mut dropped: Vec<String> = view
        .beds()
        .filter(|b| b.state.encounter().is_some() && !kept.contains(b.id.as_str()))
        .map(|b| b.id.to_string())
        .collect();
    dropped.sort();
    if !dropped.is_empty() {
        return Err(Refused::OccupiedBeds(dropped.join(", ")));
    }
    Ok(())
}

/// Writes a model set bundle's files into `staging` and verifies them.
pub fn stage_model_set(bundle: &Bundle, staging: &Path) -> Result<(), Refused> {
    let fail = |e: anyhow::Error| Refused::ModelSet(format!("{e:#}"));
    let _ = std::fs::remove_dir_all(staging);
    std::fs::create_dir_all(staging)
        .with_context(|| format!("creating {}", staging.display()))
        .map_err(fail)?;
    for f in &bundle.files {
        // Names are plain (verified with the signature).
        std::fs::write(staging.join(&f.name), &f.bytes)
            .with_context(|| format!("writing {}", f.name))
            .map_err(fail)?;
    }
    crate::inference::manifest::verify_set(staging)
        .map(|_| ())
        .map_err(Refused::ModelSet)
}

/// Checks a bundle for this appliance (see the module doc): `running` is
/// the configuration in force, `base` the appliance's own configuration
/// file (where a configuration's relative paths resolve).
pub async fn check(
    bytes: &[u8],
    settings: &Settings,
    store: &Store,
    running: &firmware_config::Config,
    base: &Path,
) -> Result<Checked, Refused> {
    let sha256 = sha256_hex(bytes);
    let bundle = firmware_config::bundle::verify(bytes, &settings.trusted)?;
    let kind = kind_name(bundle.kind);
    let versions = store
        .bundle_versions(kind)
        .await
        .map_err(|e| Refused::Store(format!("{e:#}")))?;
    if versions.state.as_deref() == Some("probation")
        && let Some(v) = versions.in_force
    {
        return Err(Refused::Busy(kind, v));
    }
    if let Some(highest) = versions.highest
        && bundle.version <= highest
    {
        return Err(Refused::NotNewer {
            kind,
            version: bundle.version,
            highest,
        });
    }
    if let Hospital::One(h) = &bundle.hospital
        && *h != running.node.hospital_id
    {
        return Err(Refused::OtherHospital {
            bundle: h.to_string(),
            here: running.node.hospital_id.to_string(),
        });
    }
    if bundle.kind == Kind::Config {
        let text = bundle
            .files
            .first()
            .map(|f| String::from_utf8(f.bytes.clone()))
            .transpose()
            .map_err(|_| Refused::Lint("the file is not UTF-8 text".into()))?
            .unwrap_or_default();
        check_config(&text, base, running, store)?;
    }
    Ok(Checked {
        bundle,
        sha256,
        previous: versions.in_force,
    })
}

/// What `/health` and the fleet status show of bundles.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    enabled: bool,
    config: Versions,
    model_set: Versions,
    last: Option<Value>,
}

impl Status {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks bundles as taken (`[bundles]` present).
    pub fn enable(&self) {
        self.lock().enabled = true;
    }

    /// Sets the versions of `kind`.
    pub fn set(&self, kind: &str, v: Versions) {
        let mut s = self.lock();
        match kind {
            "config" => s.config = v,
            _ => s.model_set = v,
        }
    }

    /// Notes the last step.
    pub fn step(&self, step: &Step) {
        let mut v = step.outcome();
        v["at"] = json!(hms_domain::Timestamp::now());
        self.lock().last = Some(v);
    }

    /// The configuration bundle's version in force (the fleet status's
    /// `config_version`).
    pub fn config_version(&self) -> Option<u64> {
        self.lock().config.in_force
    }

    /// `/health`'s `bundles` component: `disabled` without `[bundles]`;
    /// `probation` while one is on probation; `degraded` when the last one
    /// was rolled back; else `ok`.
    pub fn report(&self) -> Value {
        let s = self.lock();
        if !s.enabled {
            return json!({ "status": "disabled" });
        }
        let states = [s.config.state.as_deref(), s.model_set.state.as_deref()];
        let last_rolled_back = s.last.as_ref().is_some_and(|l| l["step"] == "rolled_back");
        let status = if states.contains(&Some("probation")) {
            "probation"
        } else if last_rolled_back {
            "degraded"
        } else {
            "ok"
        };
        json!({
            "status": status,
            "config": s.config,
            "model_set": s.model_set,
            "last": s.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_pointer_and_the_inbox_survive_as_files() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_active(d.path()), None);
        let a = Active {
            version: 3,
            previous: Some(2),
            state: "probation".into(),
            sha256: "ab".into(),
        };
        write_active(d.path(), Some(&a)).unwrap();
        assert_eq!(read_active(d.path()), Some(a));
        write_active(d.path(), None).unwrap();
        assert_eq!(read_active(d.path()), None);
        write_active(d.path(), None).unwrap();

        let sha = enqueue(d.path(), b"one").unwrap();
        assert_eq!(sha, sha256_hex(b"one"));
        enqueue(d.path(), b"two").unwrap();
        let taken = take_inbox(d.path());
        assert_eq!(taken.len(), 2);
        assert!(taken.contains(&b"one".to_vec()) && taken.contains(&b"two".to_vec()));
        assert!(take_inbox(d.path()).is_empty(), "taken out");

        for v in [1, 2, 3] {
            write_durably(&config_file(d.path(), v), b"x").unwrap();
        }
        prune_configs(d.path(), &[3, 2]);
        assert!(!config_file(d.path(), 1).exists());
        assert!(config_file(d.path(), 2).exists() && config_file(d.path(), 3).exists());
    }

    #[test]
    fn health_says_probation_then_degraded_after_a_rollback() {
        let s = Status::default();
        assert_eq!(s.report()["status"], "disabled");
        s.enable();
        assert_eq!(s.report()["status"], "ok");
        s.set(
            "config",
            Versions {
                in_force: Some(4),
                highest: Some(4),
                state: Some("probation".into()),
            },
        );
        assert_eq!(s.report()["status"], "probation");
        assert_eq!(s.config_version(), Some(4));
        let step = Step {
            kind: "config",
            version: 4,
            step: "rolled_back",
            previous: Some(3),
            sha256: "cd".into(),
            reason: Some("no HL7".into()),
        };
        s.step(&step);
        s.set(
            "config",
            Versions {
                in_force: Some(3),
                highest: Some(4),
                state: Some("rolled_back".into()),
            },
        );
        let r = s.report();
        assert_eq!(r["status"], "degraded");
        assert_eq!(r["last"]["reason"], "no HL7");
        assert_eq!(r["config"]["in_force"], 3);
    }
}
