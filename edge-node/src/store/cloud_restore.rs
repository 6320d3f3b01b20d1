//! `hms-edge restore --from-cloud`: rebuilds a data dir from the cloud.
//!
//! A replacement appliance (or one whose disk was lost) asks its regional
//! cloud for the hospital's events, from seq 1, in bounded batches (signed
//! `GET /sync/v1/events`), and replays them through the same board and
//! projection code as the live writer and `hms-edge verify`, into a new
//! store file. Fetching and applying overlap: a task fetches the next batch
//! while a blocking thread applies the last one. The hash chain is checked
//! across batches; the new store is synced, moved into place only when
//! complete, and then verified in full. Credentials (`auth.sqlite`) are not
//! part of the log: create tokens again after a restore.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cloud_sync_client::{Client, MAX_BATCH_EVENTS, Signer};
use hms_domain::{Envelope, HospitalId, Timestamp};

use super::replay::Replayer;
use super::verify;
use super::{DB_FILE, schema};

/// What a restore from the cloud did.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Events restored.
    pub events: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The verification of the restored store.
    pub report: verify::Report,
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Rebuilds the store of `data_dir` (which must hold none) from the cloud.
/// `progress` is called with the number of events restored so far.
pub async fn restore_from_cloud(
    data_dir: &Path,
    hospital: &HospitalId,
    client: &Client,
    signer: &Signer,
    timeout: Duration,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Restored> {
    let started = Instant::now();
    // Nobody else may own the data dir while it is being filled.
    let _owner = super::lock::DataDirLock::take(data_dir)?;
    let db = data_dir.join(DB_FILE);
    if db.exists() {
        bail!(
            "{} already holds a store; restore only into an empty data dir",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let tmp = data_dir.join(format!("{DB_FILE}.restoring"));
    for p in [
        &tmp,
        &tmp.with_extension("restoring-wal"),
        &tmp.with_extension("restoring-shm"),
    ] {
        remove_if_exists(p)?;
    }
    let tmp_for_writer = tmp.clone();
    let hospital_for_writer = hospital.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Envelope>>(4);
    // The applying side: one connection, one transaction per batch.
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        // Nothing is acknowledged from this file until it is complete, synced
        // and renamed, so the bulk load needs no per-commit fsync.
        let mut conn = super::connection::open_bulk(&tmp_for_writer)
            .with_context(|| format!("creating {}", tmp_for_writer.display()))?;
        schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT INTO meta(key, value) VALUES ('hospital_id', ?1)",
            [hospital_for_writer.as_str()],
        )?;
        let mut replay = Replayer::new();
        let mut n = 0u64;
        while let Some(batch) = rx.blocking_recv() {
            let t = conn.transaction()?;
            for env in &batch {
                if env.hospital != hospital_for_writer {
                    bail!(
                        "the cloud sent an event of another hospital at seq {}",
                        env.seq
                    );
                }
                if let Some(problem) = replay.apply(&t, env)? {
                    bail!("the cloud's log does not replay: {problem}");
                }
            }
            t.commit()?;
            n += batch.len() as u64;
        }
        replay
            .board
            .check_invariants()
            .map_err(|e| anyhow::anyhow!("the restored board: {e}"))?;
        super::connection::finish_bulk(&conn)?;
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        drop(conn);
        std::fs::File::open(&tmp_for_writer)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp_for_writer.display()))?;
        Ok(n)
    });

    // The fetching side.
    let mut next = 1u64;
    let fetched: anyhow::Result<()> = async {
        loop {
            let now = Timestamp::now().as_millis();
            let batch = client
                .fetch(signer, next, MAX_BATCH_EVENTS, now, timeout)
                .await
                .map_err(|e| anyhow::anyhow!("fetching events from seq {next}: {e}"))?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            next = last.seq + 1;
            if tx.send(batch).await.is_err() {
                // The writer stopped: its error is reported below.
                return Ok(());
            }
            progress(next - 1);
        }
    }
    .await;
    drop(tx);
    let applied = writer.await.context("the restore writer failed")?;
    let events = match (fetched, applied) {
        (Ok(()), Ok(n)) => n,
        (Err(e), _) | (Ok(()), Err(e)) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if events == 0 {
        let _ = std::fs::remove_file(&tmp);
        bail!("the cloud holds no events for hospital {hospital}");
    }
    std::fs::rename(&tmp, &db)
        .with_context(|| format!("moving the restored store to {}", db.display()))?;
    let _ = std::fs::File::open(data_dir).and_then(|d| d.sync_all());
    let report = verify::verify(data_dir)?;
    if !report.ok() {
        bail!("the restored store does not verify: {:?}", report.problems);
    }
    Ok(Restored {
        events,
        seconds: started.elapsed().as_secs_f64(),
        report,
    })
}
