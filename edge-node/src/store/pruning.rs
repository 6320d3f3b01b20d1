//! The pruning task of a running appliance: every [`PRUNE_EVERY`], the
//! retention base advances to the cloud's acknowledged position and the
//! events that qualify leave the log (see [`super::retention`] for the
//! rules and the steps), all writes going through the writer's queue.

use anyhow::Context;
use firmware_config::Retention;
use hms_domain::Timestamp;

use super::Store;
use super::retention::{Advanced, Cutoffs, base_of, compute_base};

/// How often a running appliance prunes.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Events deleted per writer transaction.
const CHUNK: usize = 2_000;

/// One pruning round: advances the base to `acked` (the cloud's
/// acknowledged seq), then deletes the events that qualify at `now`, in
/// chunks through the writer. Returns the base move and the events deleted.
pub async fn prune_once(
    store: &Store,
    acked: u64,
    retention: &Retention,
    now: Timestamp,
) -> anyhow::Result<(Advanced, usize)> {
    let db = store.db_path().to_owned();
    let delta = tokio::task::spawn_blocking(move || compute_base(&db, acked))
        .await
        .context("the retention task failed")??;
    let advanced = match delta {
        Some(d) => {
            let (from, to) = (d.from, d.to);
            let rows = store.write_base(d).await?;
            Advanced { from, to, rows }
        }
        None => {
            let db = store.db_path().to_owned();
            let conn = super::connection::open_read(&db)?;
            let at = base_of(&conn, "main")?.map_or(0, |b| b.0);
            Advanced {
                from: at,
                to: at,
                rows: 0,
            }
        }
    };
    let cutoffs = Cutoffs::at(retention, now);
    let mut deleted = 0;
    loop {
        let n = store.prune(advanced.to, cutoffs, CHUNK).await?;
        deleted += n;
        if n < CHUNK {
            break;
        }
    }
    Ok((advanced, deleted))
}

/// One round of [`run`]: prunes up to the acknowledged position `acked`
/// holds now (the uplink publishes only positions it checked), and nothing
/// while it is unknown (connecting, or refused: an acknowledgement that did
/// not check out leaves it unknown). `None` when nothing was known.
pub async fn round(
    store: &Store,
    retention: &Retention,
    acked: &tokio::sync::watch::Receiver<Option<u64>>,
    now: Timestamp,
) -> anyhow::Result<Option<(Advanced, usize)>> {
    let acked = *acked.borrow();
    match acked {
        None => Ok(None),
        Some(acked) => prune_once(store, acked, retention, now).await.map(Some),
    }
}

/// Prunes every [`PRUNE_EVERY`] up to the cloud's acknowledged position
/// (`acked`, which the uplink publishes; nothing while it is unknown), until
/// `shutdown` fires.
pub async fn run(
    store: Store,
    retention: Retention,
    acked: tokio::sync::watch::Receiver<Option<u64>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        match round(&store, &retention, &acked, Timestamp::now()).await {
            Ok(None) => {}
            Ok(Some((a, deleted))) => tracing::info!(
                base_from = a.from,
                base_to = a.to,
                rows = a.rows,
                deleted,
                "retention round"
            ),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "retention round failed"),
        }
    }
}
