//! Consistent local snapshots of the event store: `hms-edge backup` and
//! `hms-edge restore --from FILE`.
//!
//! A backup is `VACUUM INTO` from a read-only connection — a consistent
//! snapshot even while the appliance writes (WAL readers do not block the
//! writer) — then fsynced and checked with `PRAGMA integrity_check`. A restore
//! copies a snapshot into an empty data dir, fsyncs it, and runs the full
//! verification (hash chain, replay == projections) before declaring success.
//! Credentials (`auth.sqlite`) are not part of a snapshot.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{DB_FILE, connection, verify};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The snapshot file.
    pub file: PathBuf,
    /// Events in it.
    pub events: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

fn fsync(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        // The directory entry too, so the file survives a power cut.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn integrity(path: &Path) -> anyhow::Result<u64> {
    let conn = connection::open_read_only(path)?;
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if ok != "ok" {
        bail!("integrity check of {} failed: {ok}", path.display());
    }
    Ok(conn.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))? as u64)
}

/// Writes a consistent snapshot of the store in `data_dir` to `out` (which must not exist).
pub fn backup(data_dir: &Path, out: &Path) -> anyhow::Result<Backup> {
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        bail!("no store at {}", db.display());
    }
    if out.exists() {
        bail!("{} already exists; backups never overwrite", out.display());
    }
    let conn = connection::open_read(&db)?;
    let target = out.to_str().context("the backup path is not valid UTF-8")?;
    conn.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("writing the snapshot to {}", out.display()))?;
    fsync(out)?;
    let events = integrity(out)?;
    let bytes = std::fs::metadata(out)?.len();
    Ok(Backup {
        file: out.to_owned(),
        events,
        bytes,
    })
}

/// Restores a snapshot into `data_dir`, which must hold no store yet, and verifies it.
pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<verify::Report> {
    integrity(from).with_context(|| format!("{} is not a usable snapshot", from.display()))?;
    // Nobody else may own the data dir while it is being filled.
    let _owner = super::lock::DataDirLock::take(data_dir)?;
    let db = data_dir.join(DB_FILE);
    if db.exists() {
        bail!(
            "{} already holds a store; restore only into an empty data dir",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join(format!("{DB_FILE}.restoring"));
    std::fs::copy(from, &tmp).with_context(|| format!("copying {}", from.display()))?;
    fsync(&tmp)?;
    std::fs::rename(&tmp, &db)?;
    fsync(&db)?;
    let report = verify::verify(data_dir)?;
    if !report.ok() {
        bail!("the restored store does not verify: {:?}", report.problems);
    }
    Ok(report)
}

/// Prefix of scheduled snapshot files; the rest of the name is the time in
/// ms since the epoch, zero-padded, so names sort by age.
pub const SCHEDULED_PREFIX: &str = "hms-backup-";

/// Takes one scheduled snapshot into `dir` and then removes the oldest
/// scheduled snapshots beyond `keep`. Older ones go only after the new one
/// was written, fsynced and integrity-checked. Returns the new snapshot and
/// the files removed.
pub fn take_scheduled(
    data_dir: &Path,
    dir: &Path,
    keep: usize,
) -> anyhow::Result<(Backup, Vec<PathBuf>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ms = hms_domain::Timestamp::now().as_millis().max(0);
    let mut out = dir.join(format!("{SCHEDULED_PREFIX}{ms:015}.sqlite"));
    while out.exists() {
        ms += 1;
        out = dir.join(format!("{SCHEDULED_PREFIX}{ms:015}.sqlite"));
    }
    let made = backup(data_dir, &out)?;
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(SCHEDULED_PREFIX) && n.ends_with(".sqlite"))
        })
        .collect();
    all.sort();
    let excess = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for old in all.into_iter().take(excess) {
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
        removed.push(old);
    }
    Ok((made, removed))
}

/// Takes a snapshot every `cfg.interval_h` hours until `shutdown` fires.
pub async fn scheduled(
    data_dir: PathBuf,
    cfg: firmware_config::BackupSection,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = std::time::Duration::from_secs(cfg.interval_h.max(1) * 3600);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let (data, dir, keep) = (data_dir.clone(), cfg.dir.clone(), cfg.keep);
        match tokio::task::spawn_blocking(move || take_scheduled(&data, &dir, keep)).await {
            Ok(Ok((b, removed))) => tracing::info!(
                file = %b.file.display(),
                events = b.events,
                bytes = b.bytes,
                removed = removed.len(),
                "scheduled backup written"
            ),
            Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "scheduled backup failed"),
            Err(e) => tracing::error!(error = %e, "scheduled backup task failed"),
        }
    }
}
