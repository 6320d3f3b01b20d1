//! Region failover to the DR peer: promotion of a replica, and fencing of
//! the primary it replaced.
//!
//! - **Standby.** A primary's replicator tells its replica, for every
//!   hospital it replicates, the hospital's appliance enrolment (node and
//!   public key) and its own head (last seq), at most every
//!   `dr::STANDBY_EVERY` while it changes
//!   (`PUT /sync/v1/standby`). The replica keeps them (the registry's
//!   `standby` table): it cannot authenticate an appliance without them, and
//!   it cannot know how far behind it is without the head.
//! - **Promotion** (`hms-cloud promote`, [`promote`]): an operator makes the
//!   replica serve the appliances of the hospitals it holds. A hospital
//!   whose replica holds less than the primary last reported is refused
//!   unless forced (the appliances resend what they still hold from the
//!   replica's position, so forcing loses nothing an appliance still
//!   holds); a hospital without a replicated enrolment cannot be promoted.
//!   A running replica picks a promotion up within [`REFRESH_EVERY`].
//! - **Who answers what.** A replica answers an appliance of a hospital not
//!   promoted here with 421 (`NotServed::Replica`), on which the appliance's
//!   uplink moves to its next address at once; it serves a promoted one as
//!   a primary would, and answers its old primary's replication for it with
//!   421 (`NotServed::Promoted`).
//! - **Fencing.** A primary whose replica answers 421 for a hospital fences
//!   itself from it (the registry's `fences` table, audited): from then on
//!   it answers that hospital's appliance with 421 (`NotServed::Fenced`) and
//!   replicates it no more, until an operator lifts the fence after
//!   re-pairing (`hms-cloud unfence`). So an old primary that comes back
//!   after its replica was promoted takes no more writes for the hospitals
//!   it lost once its replicator has reached the replica.
//!
//! The [`View`] is what a running cloud knows of both, read from the
//! registry every [`REFRESH_EVERY`] (and at once after its own fencing), so
//! requests never wait for the database. This module imports
//! [`crate::store`] and [`crate::enrolment`], never the cloud's state or its
//! HTTP layer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hms_domain::HospitalId;
use tokio_util::sync::CancellationToken;

use crate::enrolment::Enrolment;
use crate::store::OpenStore;
use crate::store::registry::RegistryDb;
use crate::store::registry::takeover::{FenceRow, StandbyRow};

/// How often a running cloud reads promotions and fences again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A hospital promoted on this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    /// Its appliance, as the primary enrolled it.
    pub enrolment: Enrolment,
    /// When it was promoted, ms since the epoch.
    pub since_ms: i64,
}

/// What a running cloud knows of promotions and fences.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Hospitals promoted here (a replica).
    pub promoted: HashMap<HospitalId, Promoted>,
    /// Hospitals this primary is fenced from.
    pub fenced: HashMap<HospitalId, FenceRow>,
}

/// Promotions and fences as a running cloud sees them (see the module doc).
#[derive(Debug)]
pub struct View {
    db: Arc<RegistryDb>,
    snap: RwLock<Arc<Snapshot>>,
}

impl View {
    /// An empty view over `db` (nothing promoted, nothing fenced) until
    /// [`View::refresh`].
    pub fn new(db: Arc<RegistryDb>) -> View {
        View {
            db,
            snap: RwLock::new(Arc::default()),
        }
    }

    /// Reads promotions and fences from the registry. Blocking.
    pub fn refresh(&self) -> anyhow::Result<()> {
        let promoted = self
            .db
            .standbys()?
            .into_iter()
            .filter_map(|s| {
                let since_ms = s.promoted_ms?;
                let e = s.enrolment;
                Some((
                    e.hospital.clone(),
                    Promoted {
                        enrolment: Enrolment {
                            hospital: e.hospital,
                            region: e.region,
                            node: e.node,
                            public_key: e.public_key,
                        },
                        since_ms,
                    },
                ))
            })
            .collect();
        let fenced = self
            .db
            .fences()?
            .into_iter()
            .map(|f| (f.hospital.clone(), f))
            .collect();
        let next = Arc::new(Snapshot { promoted, fenced });
        let mut snap = self.snap.write().unwrap_or_else(|p| p.into_inner());
        if **snap != *next {
            tracing::info!(
                promoted = next.promoted.len(),
                fenced = next.fenced.len(),
                "region failover state changed"
            );
            *snap = next;
        }
        Ok(())
    }

    /// The view now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `hospital`'s promotion here, if it was promoted.
    pub fn promoted(&self, hospital: &HospitalId) -> Option<Promoted> {
        self.snapshot().promoted.get(hospital).cloned()
    }

    /// `hospital`'s fence, if this primary is fenced from it.
    pub fn fenced(&self, hospital: &HospitalId) -> Option<FenceRow> {
        self.snapshot().fenced.get(hospital).cloned()
    }

    /// Fences this primary from `hospital` (its replica said it was
    /// promoted there: `detail`), as `actor`, in the registry and at once
    /// in the view. Blocking. Whether it was not fenced before.
    pub fn fence(
        &self,
        hospital: &HospitalId,
        now_ms: i64,
        actor: &str,
        detail: &str,
    ) -> anyhow::Result<bool> {
        let new = self.db.fence(hospital, now_ms, actor, detail)?;
        self.refresh()?;
        Ok(new)
    }

    /// Reads the registry again every [`REFRESH_EVERY`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REFRESH_EVERY) => {}
            }
            let view = self.clone();
            let r = tokio::task::spawn_blocking(move || view.refresh()).await;
            match r {
                Ok(Ok(())) => failing = false,
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::warn!(error = %format!("{e:#}"), "cannot read promotions and fences; keeping the last known");
                }
                _ => {}
            }
        }
    }
}

/// One hospital as [`promote`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The hospital.
    pub hospital: HospitalId,
    /// The last seq this replica holds of it.
    pub held_seq: u64,
    /// The primary's last seq, as it last reported.
    pub primary_head: u64,
    /// When the primary last reported, ms since the epoch.
    pub reported_ms: i64,
    /// When it was promoted before this command, if it was.
    pub already_ms: Option<i64>,
}

impl Promotion {
    /// Events this replica lacks of what the primary last reported.
    pub fn behind(&self) -> u64 {
        self.primary_head.saturating_sub(self.held_seq)
    }
}

/// Why [`promote`] promoted nothing.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// Hospitals without a replicated enrolment: appliances could not sign
    /// in here.
    #[error(
        "no enrolment of {} was replicated here (the primary sends it while it replicates), \
         so its appliance could not sign in; nothing was promoted",
        list(.0)
    )]
    NoStandby(Vec<HospitalId>),
    /// Hospitals this replica holds less of than the primary last
    /// reported (not forced).
    #[error(
        "this replica is behind what the primary last reported: {}; nothing was promoted. \
         With --force the appliances resend, from this replica's position, what they still hold",
        .0.iter().map(|p| format!("{} holds seq {} of {} ({} behind)", p.hospital, p.held_seq, p.primary_head, p.behind())).collect::<Vec<_>>().join(", ")
    )]
    Behind(Vec<Promotion>),
    /// The registry or a store could not be read or written.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

fn list(ids: &[HospitalId]) -> String {
    ids.iter()
        .map(HospitalId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Promotes `hospitals` (none: every hospital with a replicated enrolment)
/// on the replica whose registry is `db` and whose stores `open` opens, as
/// `actor` at `now_ms`. All or nothing: a hospital without a replicated
/// enrolment, or (unless `force`) one this replica is behind on, promotes
/// none. Hospitals promoted before stay so and are reported with the time.
/// Blocking.
pub fn promote(
    db: &RegistryDb,
    open: &OpenStore,
    hospitals: &[HospitalId],
    force: bool,
    actor: &str,
    now_ms: i64,
) -> Result<Vec<Promotion>, PromoteError> {
    let standbys: HashMap<HospitalId, StandbyRow> = db
        .standbys()?
        .into_iter()
        .map(|s| (s.enrolment.hospital.clone(), s))
        .collect();
    let mut wanted: Vec<HospitalId> = if hospitals.is_empty() {
        let mut all: Vec<HospitalId> = standbys.keys().cloned().collect();
        // Held here (replicated) but never reported: named, so refused.
        for h in db.ingest_status()?.into_keys() {
            if !standbys.contains_key(&h) {
                all.push(h);
            }
        }
        all
    } else {
        hospitals.to_vec()
    };
    wanted.sort();
    wanted.dedup();
    let missing: Vec<HospitalId> = wanted
        .iter()
        .filter(|h| !standbys.contains_key(*h))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(PromoteError::NoStandby(missing));
    }
    let mut plan = Vec::with_capacity(wanted.len());
    for h in wanted {
        let s = &standbys[&h];
        let held_seq = if db.hospital_region(&h)?.is_some() {
            let mut store = open(&h)?;
            store.position()?.seq
        } else {
            0
        };
        plan.push(Promotion {
            hospital: h,
            held_seq,
            primary_head: s.head_seq,
            reported_ms: s.updated_ms,
            already_ms: s.promoted_ms,
        });
    }
    let behind: Vec<Promotion> = plan
        .iter()
        .filter(|p| p.already_ms.is_none() && p.behind() > 0)
        .cloned()
        .collect();
    if !behind.is_empty() && !force {
        return Err(PromoteError::Behind(behind));
    }
    for p in plan.iter().filter(|p| p.already_ms.is_none()) {
        let detail = format!(
            "holds seq {}; the primary reported seq {}{}",
            p.held_seq,
            p.primary_head,
            if p.behind() > 0 {
                format!(" ({} behind; forced)", p.behind())
            } else {
                String::new()
            }
        );
        db.promote(&p.hospital, now_ms, actor, &detail)?;
    }
    Ok(plan)
}
