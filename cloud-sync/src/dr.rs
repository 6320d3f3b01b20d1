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
//! The [`Replicator`] runs as a background task of the primary: after each
//! ingest it is woken, brings every hospital up to date, and on failure
//! retries with jittered exponential backoff
//! ([`cloud_sync_client::resilience::Backoff`]) until it is cancelled.
//! [`ReplicationStatus`] holds the lag per hospital (events behind, and for
//! how long).
//!
//! This module imports [`crate::enrolment`] (the hospitals, refusals) and
//! [`crate::store`], never the cloud's state or its HTTP layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloud_sync_client::push::PushError;
use cloud_sync_client::resilience::Backoff;
use cloud_sync_client::{Client, SignedRequest, Signer, verify};
use hms_domain::sync::SyncBatch;
use hms_domain::{Envelope, HospitalId, NodeId, RegionId, Timestamp};
use ring::rand::SecureRandom;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::enrolment::{EnrolError, Registry, Rejection};
use crate::store::OpenStore;
use crate::store::registry::RegistryDb;

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
    req.node.as_str().starts_with(DR_NODE_PREFIX)
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
    #[serde(skip)]
    behind_since_ms: Option<i64>,
    /// Ask the replica for its position before the next batch.
    #[serde(skip)]
    reask: bool,
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
}

impl ReplicationStatus {
    /// Empty status for replication to `peer` in `peer_region`.
    pub fn new(peer: String, peer_region: RegionId) -> Self {
        Self {
            peer,
            peer_region,
            hospitals: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
        }
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

/// The primary's replication task.
pub struct Replicator {
    client: Client,
    key: Vec<u8>,
    node: NodeId,
    registry: Arc<Registry>,
    open: OpenStore,
    status: Arc<ReplicationStatus>,
    wake: Arc<Notify>,
    backoff: Backoff,
    timeout: Duration,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("peer", &self.client.endpoint())
            .field("node", &self.node)
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
            client,
            key,
            node,
            registry,
            open,
            status,
            wake,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Replicates until `shutdown` is cancelled; a batch in flight then is
    /// abandoned (the replica stores a batch whole or not at all, and the
    /// next run resends from the replica's position).
    pub async fn run(self, shutdown: CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.replicate_forever() => {}
        }
        tracing::info!(peer = %self.status.peer, "DR replication stopped");
    }

    async fn replicate_forever(&self) {
        let mut attempt = 0u32;
        loop {
            let mut ok = true;
            for e in self.registry.hospitals() {
                if let Err(err) = self.replicate(&e.hospital).await {
                    ok = false;
                    tracing::warn!(hospital = %e.hospital, peer = %self.status.peer, error = %err, "DR replication failed; will retry");
                    self.status
                        .update(&e.hospital, |h| h.last_error = Some(err.to_string()));
                }
            }
            if ok {
                attempt = 0;
                self.wake.notified().await;
            } else {
                let delay = self.backoff.delay(attempt, jitter());
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&OpenStore) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, PushError> {
        let open = self.open.clone();
        tokio::task::spawn_blocking(move || f(&open))
            .await
            .map_err(|e| PushError::Transient(e.to_string()))?
            .map_err(|e| PushError::Transient(format!("local store: {e:#}")))
    }

    /// Brings the replica's copy of `hospital` up to the primary's position.
    pub async fn replicate(&self, hospital: &HospitalId) -> Result<(), PushError> {
        let signer = Signer::new(&self.key, hospital.clone(), self.node.clone())
            .map_err(|e| PushError::Transient(e.to_string()))?;
        let h = hospital.clone();
        let local = self.blocking(move |open| open(&h)?.position()).await?.seq;
        self.status
            .update(hospital, |s| s.primary_seq = s.primary_seq.max(local));
        let known = self
            .status
            .snapshot()
            .get(hospital)
            .filter(|s| !s.reask)
            .and_then(|s| s.replica_seq);
        let mut acked = match known {
            Some(s) => s,
            None => {
                self.client
                    .position(&signer, Timestamp::now().as_millis(), self.timeout)
                    .await?
                    .acked_seq
            }
        };
        self.status.update(hospital, |s| {
            s.replica_seq = Some(acked);
            s.reask = false;
        });
        while acked < local {
            let (h, from) = (hospital.clone(), acked + 1);
            let events = self
                .blocking(move |open| read_batch(open, &h, from))
                .await?;
            if events.is_empty() {
                break;
            }
            let batch = SyncBatch {
                hospital: hospital.clone(),
                node: self.node.clone(),
                events,
            };
            let now = Timestamp::now().as_millis();
            acked = match self.client.push(&signer, &batch, now, self.timeout).await {
                Ok(p) if p.acked_seq > acked => p.acked_seq,
                Ok(p) => {
                    return Err(PushError::Transient(format!(
                        "the replica acknowledged {} after a batch from {from}",
                        p.acked_seq
                    )));
                }
                // The replica is elsewhere than we thought: resend from where it is.
                Err(PushError::Gap { expected }) => expected.saturating_sub(1),
                Err(e) => {
                    // Ask the replica again next time.
                    self.status.update(hospital, |s| s.reask = true);
                    return Err(e);
                }
            };
            self.status.update(hospital, |s| {
                s.replica_seq = Some(acked);
                s.last_error = None;
            });
            tracing::debug!(%hospital, acked, "replicated");
        }
        self.status.update(hospital, |s| s.last_error = None);
        Ok(())
    }
}

/// Up to one batch of events from `from`, within the batch bounds.
fn read_batch(open: &OpenStore, hospital: &HospitalId, from: u64) -> anyhow::Result<Vec<Envelope>> {
    crate::store::batch_from(
        open(hospital)?.as_mut(),
        from,
        cloud_sync_client::MAX_BATCH_EVENTS,
    )
}

fn jitter() -> f64 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    f64::from(b[0]) / 256.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
