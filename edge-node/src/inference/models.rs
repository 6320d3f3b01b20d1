//! Model sets installed into the data dir: `hms-edge models install DIR`
//! and `hms-edge models rollback`.
//!
//! An install verifies the set first (its manifest parses, it names only
//! plain files inside the set ([`crate::inference::manifest::UnsafeFile`]
//! otherwise, before anything is read or copied), and every model
//! file is there with the SHA-256 the manifest states), copies it into
//! `data_dir/models/<set>-<time>/`, syncs it, and only then switches the
//! pointer file `data_dir/models/CURRENT` by an atomic rename. The set it
//! replaces is named in `PREVIOUS`, so `rollback` can switch back; older
//! sets are removed. A running appliance picks up the new set at its next
//! forecast refresh.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::inference::manifest::{MANIFEST, Manifest, check_files};

const CURRENT: &str = "CURRENT";
const PREVIOUS: &str = "PREVIOUS";

fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

fn read_pointer(data_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(root(data_dir).join(name))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.contains('/') && !s.contains(".."))
}

/// The installed set's directory, when one is installed.
pub fn current(data_dir: &Path) -> Option<PathBuf> {
    read_pointer(data_dir, CURRENT)
        .map(|n| root(data_dir).join(n))
        .filter(|d| d.join(MANIFEST).is_file())
}

fn sync_dir(dir: &Path) {
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
}

/// Writes `name` into the pointer file `pointer`, atomically.
fn write_pointer(data_dir: &Path, pointer: &str, name: &str) -> anyhow::Result<()> {
    let dir = root(data_dir);
    let tmp = dir.join(format!("{pointer}.tmp"));
    std::fs::write(&tmp, format!("{name}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(pointer))?;
    sync_dir(&dir);
    Ok(())
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The set's version.
    pub version: String,
    /// Its directory under the data dir.
    pub dir: PathBuf,
    /// The set it replaced, kept for rollback.
    pub previous: Option<String>,
}

/// Verifies the set in `from` and makes it the current one.
pub fn install(data_dir: &Path, from: &Path) -> anyhow::Result<Installed> {
    let manifest = Manifest::load(from)?;
    if manifest.models.is_empty() {
        bail!("{} lists no models", from.join(MANIFEST).display());
    }
    // Only plain files of the set are read and copied.
    let mut files: Vec<(&str, PathBuf)> = vec![];
    for m in &manifest.models {
        let path = m
            .path(from)
            .with_context(|| format!("checking {}", from.join(MANIFEST).display()))?;
        files.push((m.file.as_str(), path));
    }
    files.push((MANIFEST, from.join(MANIFEST)));
    let bad: Vec<String> = check_files(from, &manifest)
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if !bad.is_empty() {
        bail!("the model set does not verify: {}", bad.join("; "));
    }
    let dir = root(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let safe: String = manifest
        .version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{safe}-{}", hms_domain::Timestamp::now().as_millis());
    let staging = dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    for (name, source) in files {
        let target = staging.join(name);
        std::fs::copy(&source, &target).with_context(|| format!("copying {}", source.display()))?;
        std::fs::File::open(&target)?.sync_all()?;
    }
    // The copy must still verify (a disk that lies is caught here).
    let copied = Manifest::load(&staging)?;
    if check_files(&staging, &copied)
        .iter()
        .any(|(_, r)| r.is_err())
    {
        let _ = std::fs::remove_dir_all(&staging);
        bail!("the copied model set does not verify");
    }
    sync_dir(&staging);
    let final_dir = dir.join(&name);
    std::fs::rename(&staging, &final_dir)?;
    sync_dir(&dir);
    let previous = read_pointer(data_dir, CURRENT);
    if let Some(p) = &previous {
        write_pointer(data_dir, PREVIOUS, p)?;
    }
    write_pointer(data_dir, CURRENT, &name)?;
    // Keep the current and the previous set only.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let keep = n == name
                || previous.as_deref() == Some(n.as_str())
                || n == CURRENT
                || n == PREVIOUS;
            if !keep && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(Installed {
        version: manifest.version,
        dir: final_dir,
        previous,
    })
}

/// Goes back to the configuration's own model set (`inference.models`):
/// the installed sets stay, but none is current (a signed model set that
/// failed its probation where none was installed before).
pub fn uninstall(data_dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(root(data_dir).join(CURRENT)) {
        Ok(()) => {
            sync_dir(&root(data_dir));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context("removing the current model set's pointer"),
    }
}

/// Switches back to the previous set; returns its directory.
pub fn rollback(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let Some(previous) = read_pointer(data_dir, PREVIOUS) else {
        bail!("no previous model set to roll back to");
    };
    let dir = root(data_dir).join(&previous);
    if !dir.join(MANIFEST).is_file() {
        bail!("the previous model set {} is gone", dir.display());
    }
    let current = read_pointer(data_dir, CURRENT);
    write_pointer(data_dir, CURRENT, &previous)?;
    match current {
        Some(c) => write_pointer(data_dir, PREVIOUS, &c)?,
        None => {
            let _ = std::fs::remove_file(root(data_dir).join(PREVIOUS));
        }
    }
    Ok(dir)
}
