//! DR replication: a primary ships every hospital's events to its region's
//! DR peer (a cloud in `mode = "replica"`).
//!
//! Replication is the sync protocol again: the primary signs with its own
//! Ed25519 key as node `dr:{its region}` and sends each hospital's events
//! after the replica's acknowledged position with the ordinary client
//! ([`cloud_sync_client::Client`]); the replica checks them with the same
//! rules as appliance batches ([`crate::store::ingest`]: idempotent by
//! (hospital, seq), in order, gaps refused, chain checked).
//!
//! Residency: a primary only starts with a peer whose region is in its
//! `allowed_dr_regions` (see [`crate::config`]); a replica only accepts
//! [`Primaries`] it enrolled, of regions in its own `allowed_dr_regions`,
//! and a hospital only from the region it first came from.
//!
//! The [`Replicator`] runs as a background task of the primary. It drives
//! one [`Shipper`] per hospital, the sans-IO state machine the appliance's
//! uplink drives too: ask the replica's position, send the events after it
//! in batches ([`MAX_BATCH_EVENTS`] events, [`crate::MAX_BATCH_BYTES`] of
//! JSON), resend from where a gap answer says, back off with jitter
//! ([`cloud_sync_client::resilience::jitter`]) behind a circuit breaker
//! after transient failures, and stop for a while after a refusal. A
//! hospital whose replica is failing does not hold up the others. It sleeps
//! until an ingest wakes it or the earliest hospital's deadline (back-off,
//! breaker, refusal, idle poll) passes, and returns as soon as it is
//! cancelled. [`ReplicationStatus`] reports each hospital as its shipper
//! stands: the primary's and the replica's positions, the lag in events and
//! seconds, and the last failure.
//!
//! The shipper checks the replica's acknowledgements exactly as it checks
//! the regional cloud's for an appliance (a seq beyond what was sent, no
//! hash, or a hash other than the primary's at that seq is refused, never
//! kept): the primary deletes nothing by them, but the replication status
//! and an operator's failover decision rest on the replica's position.
//!
//! This module imports [`crate::enrolment`] (the hospitals, refusals) and
//! [`crate::store`], never the cloud's state or its HTTP layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use cloud_sync_client::push::{PushError, Standby};
use cloud_sync_client::resilience::BreakerState;
use cloud_sync_client::shipper::{self, Action, Outcome, Phase, Shipper, ShipperConfig};
use cloud_sync_client::{Client, MAX_BATCH_EVENTS, SignedRequest, Signer, verify};
use hms_domain::{Envelope, HospitalId, NodeId, RegionId, Timestamp};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::enrolment::{EnrolError, Enrolment, Registry, Rejection};
use crate::store::OpenStore;
use crate::store::registry::RegistryDb;
use crate::takeover;

/// Node ids of primaries start with this, followed by the primary's region.
pub const DR_NODE_PREFIX: &str = "dr:";

/// The node id a primary of `region` signs as (an error only for a region
/// id too long to carry the prefix).
pub fn dr_node(region: &RegionId) -> Result<NodeId, hms_domain::IdError> {
    NodeId::new(format!("{DR_NODE_PREFIX}{region}"))
}

/// The primaries a replica accepts replication from.
#[derive(Debug, Clone, Default)]
pub struct Primaries {
    allowed: Vec<RegionId>,
    keys: HashMap<RegionId, Vec<u8>>,
}

impl Primaries {
    /// The enrolled primaries (`keys`) whose regions are `allowed`.
    pub fn new(allowed: Vec<RegionId>, keys: HashMap<RegionId, Vec<u8>>) -> Self {
        Self { allowed, keys }
    }

    /// Checks a replication request: signed by node `dr:{region}` with the
    /// key of that region's enrolled primary, the region allowed here.
    /// Returns the region.
    pub fn authenticate(
        &self,
        req: &SignedRequest,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<RegionId, Rejection> {
        let region: RegionId = req
            .node
            .as_str()
            .strip_prefix(DR_NODE_PREFIX)
            .and_then(|r| r.parse().ok())
            .ok_or(Rejection::WrongRole(
                "replication is signed by node dr:{region}",
            ))?;
        if !self.allowed.contains(&region) {
            return Err(Rejection::RegionNotAllowed { region });
        }
        let key = self
            .keys
            .get(&region)
            .ok_or_else(|| Rejection::UnknownPrimary {
                region: region.clone(),
            })?;
        verify(key, req, method, path, body, now_ms)?;
        Ok(region)
    }
}

/// Enrols (or re-keys) the DR primary of `region` on a replica, in `db`;
/// a region outside `allowed` is refused (residency), and so is a key that
/// is not 32 bytes.
pub fn enroll_primary(
    db: &RegistryDb,
    allowed: &[RegionId],
    region: &RegionId,
    public_key: &[u8],
) -> Result<(), EnrolError> {
    if !allowed.contains(region) {
        return Err(Rejection::RegionNotAllowed {
            region: region.clone(),
        }
        .into());
    }
    if public_key.len() != 32 {
        return Err(Rejection::BadKey.into());
    }
    db.put_primary(region, public_key)?;
    Ok(())
}

/// Whether a signed request comes from a DR primary (rather than an appliance).
pub fn is_primary(req: &SignedRequest) -> bool {
    is_primary_node(&req.node)
}

/// Whether `node` is a DR primary's node id (`dr:{region}`).
pub fn is_primary_node(node: &NodeId) -> bool {
    node.as_str().starts_with(DR_NODE_PREFIX)
}

/// Replication state of one hospital, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HospitalLag {
    /// The primary's position.
    pub primary_seq: u64,
    /// The replica's acknowledged position (unknown until first asked).
    pub replica_seq: Option<u64>,
    /// Events the replica is behind.
    pub lag_events: u64,
    /// Seconds since the replica was last caught up (0 when it is).
    pub lag_seconds: f64,
    /// The last failure, if the last attempt failed (no PHI: transport or refusal detail).
    pub last_error: Option<String>,
    /// Where the hospital's shipper stands (not reported over HTTP, which
    /// shows the positions and the failure).
    #[serde(skip)]
    pub phase: Option<Phase>,
    /// Its circuit breaker, as last seen (not reported over HTTP either).
    #[serde(skip)]
    pub breaker: Option<BreakerState>,
    #[serde(skip)]
    behind_since_ms: Option<i64>,
    /// Whether this primary is fenced from the hospital (its replica was
    /// promoted for it): it replicates it no more.
    pub fenced: bool,
}

/// Replication lag per hospital, shared by the replicator and the HTTP service.
#[derive(Debug)]
pub struct ReplicationStatus {
    /// The peer's URL.
    pub peer: String,
    /// The peer's region.
    pub peer_region: RegionId,
    hospitals: Mutex<BTreeMap<HospitalId, HospitalLag>>,
    changed: watch::Sender<u64>,
    /// Whether this instance replicates now (with several instances, only
    /// the holder of the region's DR lease does).
    replicating: std::sync::atomic::AtomicBool,
}

impl ReplicationStatus {
    /// Empty status for replication to `peer` in `peer_region`.
    pub fn new(peer: String, peer_region: RegionId) -> Self {
        Self {
            peer,
            peer_region,
            hospitals: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
            replicating: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this instance replicates now.
    pub fn replicating(&self) -> bool {
        self.replicating.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_replicating(&self, on: bool) {
        self.replicating
            .store(on, std::sync::atomic::Ordering::SeqCst);
        self.changed.send_modify(|g| *g += 1);
    }

    fn update(&self, hospital: &HospitalId, f: impl FnOnce(&mut HospitalLag)) {
        let now = Timestamp::now().as_millis();
        {
            let mut map = self.hospitals.lock().unwrap_or_else(|p| p.into_inner());
            let h = map.entry(hospital.clone()).or_default();
            f(h);
            let behind = h.replica_seq.is_none_or(|r| r < h.primary_seq);
            if behind {
                h.behind_since_ms.get_or_insert(now);
            } else {
                h.behind_since_ms = None;
            }
        }
        self.changed.send_modify(|g| *g += 1);
    }

    /// Notes that the primary stored events of `hospital` up to `seq`.
    pub fn note_ingest(&self, hospital: &HospitalId, seq: u64) {
        self.update(hospital, |h| h.primary_seq = h.primary_seq.max(seq));
    }

    /// The lag of every hospital, now.
    pub fn snapshot(&self) -> BTreeMap<HospitalId, HospitalLag> {
        let now = Timestamp::now().as_millis();
        let map = self.hospitals.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(id, h)| {
                let mut h = h.clone();
                h.lag_events = h.primary_seq.saturating_sub(h.replica_seq.unwrap_or(0));
                h.lag_seconds = h
                    .behind_since_ms
                    .map_or(0.0, |t| (now.saturating_sub(t)).max(0) as f64 / 1000.0);
                (id.clone(), h)
            })
            .collect()
    }

    /// Waits until `pred` holds for the status (checked after every change).
    pub async fn wait_until(&self, pred: impl Fn(&BTreeMap<HospitalId, HospitalLag>) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if pred(&self.snapshot()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Why a [`Replicator`] cannot be made (a configuration error).
#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    /// The region does not fit in a node id with the `dr:` prefix.
    #[error("region {region} as a DR node id: {reason}")]
    NodeId {
        /// The region.
        region: RegionId,
        /// Why.
        reason: String,
    },
    /// The key is not a usable PKCS#8 Ed25519 key.
    #[error("the DR key: {0}")]
    Key(String),
}

/// How long a caught-up hospital idles before the replicator looks at its
/// store again; an ingest wakes it sooner.
pub const IDLE_POLL: Duration = Duration::from_secs(5);

/// How long one request to the replica may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often, at most, a hospital's standby report goes to the replica
/// while its head moves (at once when its enrolment changes).
pub const STANDBY_EVERY: Duration = Duration::from_secs(1);

/// How often, at least, a hospital's standby report goes to the replica
/// even when nothing changed: a primary hears of its replica's promotion
/// within about this long.
pub const STANDBY_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long after a refused standby report (other than a 421) the next is sent.
const REFUSED_STANDBY_RETRY: Duration = Duration::from_secs(60);

/// Who fences a hospital in the audit: the replicator, on its replica's word.
pub const FENCE_ACTOR: &str = "dr:replicator";

/// The primary's replication task: one [`Shipper`] per hospital.
pub struct Replicator {
    link: Link,
    registry: Arc<Registry>,
    wake: Arc<Notify>,
    config: ShipperConfig,
    lanes: BTreeMap<HospitalId, Lane>,
    /// Where this primary's fences are kept; none: it never fences itself
    /// (and sends no standby reports).
    takeover: Option<Arc<takeover::View>>,
}

/// What the replication of every hospital shares.
struct Link {
    client: Client,
    key: Vec<u8>,
    node: NodeId,
    open: OpenStore,
    status: Arc<ReplicationStatus>,
    timeout: Duration,
}

/// The replication of one hospital.
struct Lane {
    shipper: Shipper,
    signer: Signer,
    /// The primary's last seq, as last read from its store.
    local: u64,
    /// When to look at it again (the end of a wait or of an idle poll);
    /// none: at once.
    due: Option<Instant>,
    /// Whether `due` ends a wait (back-off, open breaker, refusal), which
    /// an ingest does not cut short, rather than an idle poll, which it does.
    waiting: bool,
    /// The last standby report the replica took: the enrolment and head it
    /// carried, and when.
    standby: Option<(Standby, Instant)>,
    /// After a refused standby report: not before then.
    standby_retry: Option<Instant>,
}

impl Lane {
    /// The exchange to make now, or the instant before which there is nothing to do.
    fn next(&mut self, now: Instant) -> Result<Action, Instant> {
        match self.shipper.next(now, self.local) {
            Action::Idle { until } => {
                self.due = Some(until);
                self.waiting = false;
                Err(until)
            }
            Action::Wait { until } => {
                self.due = Some(until);
                self.waiting = true;
                Err(until)
            }
            exchange => {
                self.due = None;
                Ok(exchange)
            }
        }
    }
}

/// What one step of a hospital did.
enum Step {
    /// An exchange with the replica: there may be more to do at once.
    Exchanged,
    /// Nothing to do before this instant (or, unless waiting, an ingest).
    Until(Instant),
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("peer", &self.link.client.endpoint())
            .field("node", &self.link.node)
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// A replicator of the hospitals of `registry` (stores via `open`) to
    /// the peer of `status`, signing with the PKCS#8 `key` as `dr:{region}`;
    /// `wake` is notified after each ingest.
    pub fn new(
        client: Client,
        key: Vec<u8>,
        registry: Arc<Registry>,
        open: OpenStore,
        status: Arc<ReplicationStatus>,
        wake: Arc<Notify>,
    ) -> Result<Self, ReplicatorError> {
        let node = dr_node(registry.region()).map_err(|e| ReplicatorError::NodeId {
            region: registry.region().clone(),
            reason: e.to_string(),
        })?;
        // Check the key now rather than at the first batch.
        let check = HospitalId::new("check").map_err(|e| ReplicatorError::Key(e.to_string()))?;
        Signer::new(&key, check, node.clone()).map_err(|e| ReplicatorError::Key(e.to_string()))?;
        Ok(Self {
            link: Link {
                client,
                key,
                node,
                open,
                status,
                timeout: REQUEST_TIMEOUT,
            },
            registry,
            wake,
            config: ShipperConfig {
                poll: IDLE_POLL,
                ..ShipperConfig::default()
            },
            lanes: BTreeMap::new(),
            takeover: None,
        })
    }

    /// Sends each hospital's standby report to the replica and fences this
    /// primary from a hospital the replica says was promoted there, in
    /// `takeover` (see [`crate::takeover`]).
    pub fn with_takeover(mut self, takeover: Arc<takeover::View>) -> Self {
        self.takeover = Some(takeover);
        self
    }

    /// Replicates until `shutdown` is cancelled; a batch in flight then is
    /// abandoned (the replica stores a batch whole or not at all, and the
    /// next run resends from the replica's position).
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.link.status.set_replicating(true);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.replicate_forever() => {}
        }
        self.link.status.set_replicating(false);
        tracing::info!(peer = %self.link.status.peer, "DR replication stopped");
    }

    /// As [`Replicator::run`], but only while `held` says this instance
    /// holds the region's DR lease ([`crate::store::lease`]): several
    /// instances of a region share the hospitals' logs, and one of them
    /// replicates. On taking the lease it starts every hospital afresh
    /// from the replica's position (another instance may have moved it).
    pub async fn run_elected(
        mut self,
        mut held: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = held.wait_for(|h| *h) => if r.is_err() { break },
            }
            self.lanes.clear();
            self.link.status.set_replicating(true);
            tracing::info!(peer = %self.link.status.peer, "DR replication: this instance holds the lease");
            let go_on = tokio::select! {
                _ = shutdown.cancelled() => false,
                r = held.wait_for(|h| !*h) => r.is_ok(),
                _ = self.replicate_forever() => false,
            };
            self.link.status.set_replicating(false);
            if !go_on {
                break;
            }
            tracing::warn!(peer = %self.link.status.peer, "DR replication: the lease was lost; another instance takes over");
        }
        tracing::info!(peer = %self.link.status.peer, "DR replication stopped");
    }

    /// Rounds over the enrolled hospitals, one exchange each per round (a
    /// long backlog does not hold the others up), then sleeps until an
    /// ingest or the earliest deadline.
    async fn replicate_forever(&mut self) {
        let mut woken = true;
        loop {
            let mut exchanged = false;
            let mut next: Option<Instant> = None;
            for e in self.registry.hospitals() {
                if self.fenced(&e.hospital) {
                    continue;
                }
                match self.step(&e.hospital, woken).await {
                    Step::Exchanged => exchanged = true,
                    Step::Until(t) => next = Some(next.map_or(t, |n| n.min(t))),
                }
            }
            woken = false;
            if exchanged {
                continue;
            }
            let until = next.unwrap_or_else(|| Instant::now() + self.config.poll);
            tokio::select! {
                () = self.wake.notified() => woken = true,
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Drives `hospital` until its shipper has nothing more to do now:
    /// caught up (the replica's position is returned) or waiting after a
    /// failure or a refusal (the failure is returned). [`Replicator::run`]
    /// does the same for every hospital, for ever.
    pub async fn replicate(&mut self, hospital: &HospitalId) -> Result<u64, String> {
        while let Step::Exchanged = self.step(hospital, true).await {}
        let lane = &self.lanes[hospital];
        match (lane.waiting, lane.shipper.acked()) {
            (false, Some(acked)) => Ok(acked),
            _ => Err(lane
                .shipper
                .last_error()
                .unwrap_or("waiting to replicate")
                .to_owned()),
        }
    }

    /// One step of `hospital`'s shipper: at most one exchange with the
    /// replica. `woken`: an ingest happened, so an idle hospital looks at
    /// its store before its poll is due.
    async fn step(&mut self, hospital: &HospitalId, woken: bool) -> Step {
        let now = Instant::now();
        let lane = match self.lanes.entry(hospital.clone()) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                // The key was checked in `new`: a signer cannot fail here.
                let Ok(signer) =
                    Signer::new(&self.link.key, hospital.clone(), self.link.node.clone())
                else {
                    return Step::Until(now + self.config.refused_retry);
                };
                v.insert(Lane {
                    shipper: Shipper::new(self.config, cloud_sync_client::resilience::jitter),
                    signer,
                    local: 0,
                    due: None,
                    waiting: false,
                    standby: None,
                    standby_retry: None,
                })
            }
        };
        if let Some(due) = lane.due
            && now < due
            && (lane.waiting || !woken)
        {
            return Step::Until(due);
        }
        match self.link.local_seq(hospital).await {
            Ok(seq) => lane.local = seq,
            Err(e) => {
                let why = format!("reading the primary's store: {e:#}");
                if lane.shipper.last_error() != Some(why.as_str()) {
                    tracing::warn!(%hospital, error = %why, "DR replication cannot read the store; will retry");
                }
                lane.shipper
                    .record(Instant::now(), lane.local, Outcome::Unreadable(why));
            }
        }
        // Reported before the standby report, which may take a while.
        self.link.report(hospital, lane);
        if let Some(takeover) = &self.takeover
            && let Some(e) = self.registry.get(hospital)
            && self.link.standby(lane, &e, takeover).await
        {
            // Fenced: the replica took the hospital over.
            return Step::Until(Instant::now() + self.config.refused_retry);
        }
        let action = lane.next(Instant::now());
        self.link.report(hospital, lane);
        let action = match action {
            Ok(a) => a,
            Err(until) => return Step::Until(until),
        };
        let source = StoreSource {
            open: self.link.open.clone(),
            hospital: hospital.clone(),
        };
        let ex = shipper::exchange(
            &self.link.client,
            &lane.signer,
            &source,
            action,
            Timestamp::now().as_millis(),
            self.link.timeout,
        )
        .await;
        if let Outcome::Gap { expected } = ex.outcome {
            tracing::warn!(%hospital, expected, peer = %self.link.status.peer, "the replica asked to resend from an earlier seq");
        }
        if let (
            Outcome::Refused {
                status: 421,
                detail,
            },
            Some(takeover),
        ) = (&ex.outcome, &self.takeover)
        {
            self.link.fence(hospital, detail, takeover).await;
            return Step::Exchanged;
        }
        let failing_before = lane.shipper.last_error().is_some();
        lane.shipper.record(Instant::now(), lane.local, ex.outcome);
        if let Some(why) = lane.shipper.refusal() {
            tracing::error!(%hospital, peer = %self.link.status.peer, "DR replication refused: {why}");
        } else if let Some(e) = lane.shipper.last_error()
            && !failing_before
        {
            tracing::warn!(%hospital, peer = %self.link.status.peer, error = %e, "DR replication failed; will retry");
        } else if let Some(acked) = lane.shipper.acked() {
            tracing::debug!(%hospital, acked, "replicated");
        }
        self.link.report(hospital, lane);
        Step::Exchanged
    }
}

impl Replicator {
    /// Whether this primary is fenced from `hospital` (then it replicates
    /// it no more, and the status says why).
    fn fenced(&self, hospital: &HospitalId) -> bool {
        let Some(fence) = self.takeover.as_ref().and_then(|t| t.fenced(hospital)) else {
            return false;
        };
        self.link.status.update(hospital, |s| {
            s.fenced = true;
            s.last_error = Some(format!("fenced: {}", fence.detail));
        });
        true
    }
}

impl Link {
    /// Sends `lane`'s standby report for the enrolment `e` when it is due
    /// (never sent, the enrolment changed, or the head moved and
    /// [`STANDBY_EVERY`] passed). Whether the replica said the hospital was
    /// promoted there (this primary is then fenced from it).
    async fn standby(
        &self,
        lane: &mut Lane,
        e: &Enrolment,
        takeover: &Arc<takeover::View>,
    ) -> bool {
        let now = Instant::now();
        if lane.standby_retry.is_some_and(|t| now < t) {
            return false;
        }
        let report = Standby {
            hospital: e.hospital.clone(),
            region: e.region.clone(),
            node: e.node.clone(),
            public_key: base64::engine::general_purpose::STANDARD.encode(&e.public_key),
            head_seq: lane.local,
        };
        if !standby_due(lane.standby.as_ref(), &report, now) {
            return false;
        }
        let r = self
            .client
            .standby(
                &lane.signer,
                &report,
                Timestamp::now().as_millis(),
                self.timeout,
            )
            .await;
        match r {
            Ok(()) => {
                lane.standby = Some((report, now));
                lane.standby_retry = None;
                false
            }
            Err(PushError::Refused {
                status: 421,
                detail,
            }) => {
                self.fence(&e.hospital, &detail, takeover).await;
                true
            }
            Err(PushError::Refused { status, detail }) => {
                tracing::warn!(hospital = %e.hospital, peer = %self.status.peer, status, "the replica refused the standby report: {detail}");
                lane.standby_retry = Some(now + REFUSED_STANDBY_RETRY);
                false
            }
            // Unreachable: the exchange that follows fails alike and backs
            // off; the next report waits for the heartbeat.
            Err(_) => {
                lane.standby_retry = Some(now + STANDBY_HEARTBEAT);
                false
            }
        }
    }

    /// Fences this primary from `hospital`, which its replica says
    /// (`detail`) was promoted there.
    async fn fence(&self, hospital: &HospitalId, detail: &str, takeover: &Arc<takeover::View>) {
        let detail = format!("the DR peer {} answered: {detail}", self.status.peer);
        tracing::error!(%hospital, peer = %self.status.peer, "the hospital was promoted on the DR peer; this primary is fenced from it until re-paired (hms-cloud unfence)");
        let (view, h) = (takeover.clone(), hospital.clone());
        let now = Timestamp::now().as_millis();
        let stored = blocking(move || view.fence(&h, now, FENCE_ACTOR, &detail)).await;
        if let Err(e) = stored {
            tracing::error!(%hospital, error = %format!("{e:#}"), "could not record the fence; asking the replica again later");
        }
        self.status.update(hospital, |s| s.fenced = true);
    }

    /// The last seq of `hospital` in the primary's store.
    async fn local_seq(&self, hospital: &HospitalId) -> anyhow::Result<u64> {
        let (open, h) = (self.open.clone(), hospital.clone());
        blocking(move || Ok(open(&h)?.position()?.seq)).await
    }

    /// Reports where `lane` stands in the status: the positions it knows
    /// (the replica's last known one while it asks again), its phase, its
    /// breaker and its last failure.
    fn report(&self, hospital: &HospitalId, lane: &mut Lane) {
        let (local, acked, phase) = (lane.local, lane.shipper.acked(), lane.shipper.phase());
        let breaker = lane.shipper.breaker(Instant::now());
        let error = lane.shipper.last_error().map(str::to_owned);
        self.status.update(hospital, |s| {
            s.primary_seq = s.primary_seq.max(local);
            if acked.is_some() {
                s.replica_seq = acked;
            }
            s.last_error = error;
            s.phase = Some(phase);
            s.breaker = Some(breaker);
        });
    }
}

/// Whether a standby report `report` is to be sent at `now`, the last one
/// the replica took being `last`: none taken yet, the enrolment changed,
/// the head moved and [`STANDBY_EVERY`] passed, or [`STANDBY_HEARTBEAT`]
/// passed (so a primary whose hospitals are idle still hears of a
/// promotion of its replica).
fn standby_due(last: Option<&(Standby, Instant)>, report: &Standby, now: Instant) -> bool {
    let Some((sent, at)) = last else {
        return true;
    };
    let since = now.duration_since(*at);
    (&sent.node, &sent.public_key) != (&report.node, &report.public_key)
        || (sent.head_seq != report.head_seq && since >= STANDBY_EVERY)
        || since >= STANDBY_HEARTBEAT
}

/// A hospital's store on the primary, as its shipper's source: batches of
/// at most [`MAX_BATCH_EVENTS`] events and one batch of JSON.
struct StoreSource {
    open: OpenStore,
    hospital: HospitalId,
}

impl shipper::Source for StoreSource {
    async fn events_after(&self, after: u64) -> anyhow::Result<Vec<Envelope>> {
        let (open, h) = (self.open.clone(), self.hospital.clone());
        blocking(move || crate::store::batch_from(open(&h)?.as_mut(), after + 1, MAX_BATCH_EVENTS))
            .await
    }

    /// The replica's acknowledgements are checked like the appliance's
    /// (seq not beyond what was sent, hash equal to the primary's): a
    /// replica that answers otherwise is refused, its position is not
    /// reported as replicated, and it is asked again later.
    async fn hash_at(&self, seq: u64) -> anyhow::Result<Option<hms_domain::EventHash>> {
        let (open, h) = (self.open.clone(), self.hospital.clone());
        blocking(move || open(&h)?.stored_hash(seq)).await
    }
}

/// Runs a store call off the async runtime (store calls block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("the store task: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn standby_reports_go_on_change_at_most_every_second_and_every_five_seconds_anyway() {
        let t0 = Instant::now();
        let report = |node: &str, key: &str, head| Standby {
            hospital: "h1".parse().expect("id"),
            region: "eu-west".parse().expect("id"),
            node: node.parse().expect("id"),
            public_key: key.into(),
            head_seq: head,
        };
        let sent = (report("edge-1", "k1", 10), t0);
        assert!(
            standby_due(None, &report("edge-1", "k1", 10), t0),
            "never sent"
        );
        let ms = Duration::from_millis;
        // Unchanged: not before the heartbeat.
        assert!(!standby_due(
            Some(&sent),
            &report("edge-1", "k1", 10),
            t0 + ms(4_999)
        ));
        assert!(standby_due(
            Some(&sent),
            &report("edge-1", "k1", 10),
            t0 + STANDBY_HEARTBEAT
        ));
        // The head moved: after a second.
        assert!(!standby_due(
            Some(&sent),
            &report("edge-1", "k1", 11),
            t0 + ms(999)
        ));
        assert!(standby_due(
            Some(&sent),
            &report("edge-1", "k1", 11),
            t0 + STANDBY_EVERY
        ));
        // Re-keyed or another appliance: at once.
        assert!(standby_due(Some(&sent), &report("edge-1", "k2", 10), t0));
        assert!(standby_due(Some(&sent), &report("edge-2", "k1", 10), t0));
    }

    #[test]
    fn primaries_only_of_allowed_regions() {
        let conn = RegistryDb::in_memory().expect("db");
        let allowed: Vec<RegionId> = vec!["eu-west".parse().expect("id")];
        let eu: RegionId = "eu-west".parse().expect("id");
        let us: RegionId = "us-east".parse().expect("id");
        enroll_primary(&conn, &allowed, &eu, &[7; 32]).expect("allowed");
        let e = enroll_primary(&conn, &allowed, &us, &[7; 32]).expect_err("residency");
        assert!(e.to_string().contains("us-east"), "{e}");
        assert!(enroll_primary(&conn, &allowed, &eu, &[7; 31]).is_err());
        let p = conn.primaries().expect("read");
        assert_eq!(p.len(), 1);
        assert_eq!(p[&eu], vec![7; 32]);
    }
}
