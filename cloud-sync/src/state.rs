//! The state of one running cloud, shared by its HTTP handlers and its
//! background tasks: the registry of enrolled hospitals and its database,
//! the store router, primary or replica (and the DR primaries a replica
//! accepts), the replication status, the analytics cache, the downlink,
//! the regional EMPI, the fleet channel, the bundles hosted for the fleet
//! and the notifications an ingest sends.
//!
//! It also holds what a sync request needs beyond one domain module:
//! [`CloudState::authenticate`] (an appliance, or a DR primary on a
//! replica) and [`CloudState::ingest`] (store a batch, then note it and wake
//! the replicator and the EMPI).
//!
//! No HTTP here: [`crate::http`] builds on this module, which builds on the
//! domain modules ([`crate::enrolment`], [`crate::dr`], [`crate::empi`],
//! [`crate::analytics`], [`crate::downlink`], [`crate::fleet`],
//! [`crate::bundles`]) and
//! [`crate::store`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use cloud_sync_client::SignedRequest;
use hms_domain::{HospitalId, RegionId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::analytics;
use crate::config::Mode;
use crate::downlink::Downlink;
use crate::dr::{self, Primaries, ReplicationStatus};
use crate::empi::RegionalEmpi;
use crate::enrolment::{BatchError, NotServed, Registry, Rejection, ingest_body};
use crate::store::registry::RegistryDb;
use crate::store::{IngestError, Ingested};
use crate::takeover;

pub use crate::store::OpenStore;

/// Per-hospital ingest locks, and when each hospital's ingest time was
/// last written to the registry (at most every [`RECORD_INGEST_EVERY_MS`]:
/// a shared registry is another transaction per batch otherwise).
#[derive(Debug, Default)]
pub struct IngestLocks {
    locks: Mutex<HashMap<HospitalId, Arc<Mutex<()>>>>,
    recorded: Mutex<HashMap<HospitalId, i64>>,
}

/// How stale a hospital's recorded ingest time may be, ms.
pub const RECORD_INGEST_EVERY_MS: i64 = 1_000;

impl IngestLocks {
    /// The lock of `hospital`'s store.
    pub fn of(&self, hospital: &HospitalId) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(hospital.clone())
            .or_default()
            .clone()
    }

    /// Whether `hospital`'s ingest time is to be written now (the first
    /// time, then at most every [`RECORD_INGEST_EVERY_MS`]).
    pub fn record_due(&self, hospital: &HospitalId, now_ms: i64) -> bool {
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        match recorded.get(hospital) {
            Some(&t) if now_ms.saturating_sub(t) < RECORD_INGEST_EVERY_MS => false,
            _ => {
                recorded.insert(hospital.clone(), now_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod ingest_lock_tests {
    use super::*;

    #[test]
    fn one_lock_per_hospital_and_ingest_times_written_at_most_once_a_second() {
        let locks = IngestLocks::default();
        let (h1, h2): (HospitalId, HospitalId) =
            ("h1".parse().expect("id"), "h2".parse().expect("id"));
        assert!(Arc::ptr_eq(&locks.of(&h1), &locks.of(&h1)));
        assert!(!Arc::ptr_eq(&locks.of(&h1), &locks.of(&h2)));
        // Another hospital's ingest is not held up by this one's.
        let held = locks.of(&h1);
        let _guard = held.lock().expect("lock");
        assert!(locks.of(&h2).try_lock().is_ok());
        assert!(locks.of(&h1).try_lock().is_err());
        assert!(locks.record_due(&h1, 10_000));
        assert!(!locks.record_due(&h1, 10_999));
        assert!(locks.record_due(&h2, 10_999), "per hospital");
        assert!(locks.record_due(&h1, 11_000));
    }
}

/// Shared state of the cloud.
#[derive(Clone)]
pub struct CloudState {
    /// Enrolled hospitals of this region.
    pub registry: Arc<Registry>,
    /// The store router.
    pub open: OpenStore,
    /// One ingest at a time per hospital (its store is single-writer);
    /// hospitals ingest side by side.
    pub ingest_lock: Arc<IngestLocks>,
    /// The registry database: enrolments, API tokens, DR primaries, ingest
    /// records ([`crate::store::registry`]).
    pub registry_db: Arc<RegistryDb>,
    /// Primary or replica.
    pub mode: Mode,
    /// The DR primaries a replica accepts.
    pub primaries: Arc<Primaries>,
    /// DR lag, on a primary with a DR peer.
    pub replication: Option<Arc<ReplicationStatus>>,
    /// Notified after every ingest that stored events (wakes the replicator).
    pub ingested: Arc<Notify>,
    /// Analytics projections.
    pub analytics: Arc<analytics::Cache>,
    /// What goes back to the appliances (EIDs); none: the downlink answers 503.
    pub downlink: Option<Arc<Downlink>>,
    /// The regional EMPI (primary only): off, running here, or on
    /// standby while another instance of the region runs it.
    pub empi: Arc<crate::empi::Slot>,
    /// Notified after every ingest that stored events (wakes the EMPI).
    pub empi_wake: Arc<Notify>,
    /// The MQTT fleet channel (`[fleet]`); none: the fleet API answers 409.
    pub fleet: Option<crate::fleet::Channel>,
    /// The signed bundles hosted for `apply_bundle` (`data_dir/bundles/`);
    /// none: the bundle routes answer 503 and `apply_bundle` finds none.
    pub bundles: Option<Arc<crate::bundles::Bundles>>,
    /// The fleet's staged rollouts: since the cloud started, or the
    /// region's (PostgreSQL).
    pub rollouts: Arc<crate::rollout::Rollouts>,
    /// Whether the cloud serves HTTPS (the console's cookie is `Secure`).
    pub https: bool,
    /// Region failover: hospitals promoted here (a replica), hospitals
    /// this primary is fenced from ([`crate::takeover`]).
    pub takeover: Arc<takeover::View>,
}

impl std::fmt::Debug for CloudState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudState")
            .field("registry", &self.registry)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl CloudState {
    /// A primary without DR peer, over `registry`, the stores of `open` and
    /// the registry database `db` (as opened by
    /// [`crate::enrolment::open_registry`]).
    pub fn new(registry: Registry, open: OpenStore, db: RegistryDb) -> Self {
        let db = Arc::new(db);
        let takeover = Arc::new(takeover::View::new(db.clone()));
        let rollouts = Arc::new(if db.is_shared() {
            crate::rollout::Rollouts::shared(db.clone())
        } else {
            crate::rollout::Rollouts::default()
        });
        if db.is_shared() {
            // Other instances enrol too: follow their enrolments.
            registry.share(db.clone());
        }
        Self {
            registry: Arc::new(registry),
            open,
            ingest_lock: Arc::new(IngestLocks::default()),
            registry_db: db,
            mode: Mode::Primary,
            primaries: Arc::new(Primaries::default()),
            replication: None,
            ingested: Arc::new(Notify::new()),
            analytics: Arc::new(analytics::Cache::default()),
            downlink: None,
            empi: Arc::new(crate::empi::Slot::default()),
            empi_wake: Arc::new(Notify::new()),
            fleet: None,
            bundles: None,
            rollouts,
            https: false,
            takeover,
        }
    }

    /// Serves the fleet API over `channel` (its event loop runs apart:
    /// [`crate::fleet::run`]).
    pub fn with_fleet(mut self, channel: crate::fleet::Channel) -> Self {
        self.fleet = Some(channel);
        self
    }

    /// Hosts the signed bundles of `bundles` (the fleet's `apply_bundle`).
    pub fn with_bundles(mut self, bundles: crate::bundles::Bundles) -> Self {
        self.bundles = Some(Arc::new(bundles));
        self
    }

    /// Runs the regional EMPI over every ingested patient record.
    pub fn with_empi(mut self, empi: Arc<RegionalEmpi>) -> Self {
        self.empi = Arc::new(crate::empi::Slot::on(empi));
        self
    }

    /// Keeps the downlink in `downlink` (the file under the data dir).
    pub fn with_downlink(mut self, downlink: Downlink) -> Self {
        self.downlink = Some(Arc::new(downlink));
        self
    }

    /// Makes it a replica accepting `primaries`.
    pub fn replica(mut self, primaries: Primaries) -> Self {
        self.mode = Mode::Replica;
        self.primaries = Arc::new(primaries);
        self
    }

    /// Reports (and wakes) replication to a DR peer.
    pub fn with_replication(mut self, status: Arc<ReplicationStatus>) -> Self {
        self.replication = Some(status);
        self
    }

    /// Who a signed sync request comes from, once authenticated: on a
    /// primary an enrolled appliance, on a replica an enrolled DR primary
    /// (of an allowed region, and for a hospital only the region it first
    /// came from). Returns the hospital's region.
    pub fn authenticate(
        &self,
        req: &SignedRequest,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<RegionId, BatchError> {
        if dr::is_primary(req) {
            if self.mode != Mode::Replica {
                return Err(Rejection::WrongRole(
                    "this cloud is not a DR replica and accepts no replication",
                )
                .into());
            }
            let region = self
                .primaries
                .authenticate(req, method, path, body, now_ms)?;
            let recorded = self
                .registry_db
                .hospital_region(&req.hospital)
                .map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
            if let Some(recorded) = recorded
                && recorded != region
            {
                return Err(Rejection::RegionChanged {
                    hospital: req.hospital.clone(),
                    recorded,
                    claimed: region,
                }
                .into());
            }
            if let Some(p) = self.takeover.promoted(&req.hospital) {
                return Err(Rejection::NotServedHere(NotServed::Promoted {
                    hospital: req.hospital.clone(),
                    since_ms: p.since_ms,
                })
                .into());
            }
            Ok(region)
        } else {
            match self.appliance(req)? {
                Some(e) => {
                    Registry::verify_with(&e, req, method, path, body, now_ms)?;
                    Ok(e.region)
                }
                None => Ok(self
                    .registry
                    .authenticate(req, method, path, body, now_ms)?
                    .region),
            }
        }
    }

    /// Whether this cloud serves the appliance of `req`'s hospital, before
    /// anything else is checked: a replica only for a hospital promoted
    /// here (its enrolment, as the primary replicated it, is returned), a
    /// primary unless fenced from it (none returned: the registry has it).
    fn appliance(
        &self,
        req: &SignedRequest,
    ) -> Result<Option<crate::enrolment::Enrolment>, Rejection> {
        let h = &req.hospital;
        match self.mode {
            Mode::Replica => match self.takeover.promoted(h) {
                Some(p) => Ok(Some(p.enrolment)),
                None => Err(Rejection::NotServedHere(NotServed::Replica(h.clone()))),
            },
            Mode::Primary => match self.takeover.fenced(h) {
                Some(f) => Err(Rejection::NotServedHere(NotServed::Fenced {
                    hospital: h.clone(),
                    since_ms: f.since_ms,
                })),
                None => Ok(None),
            },
        }
    }

    /// What can be checked of a signed sync request before its body is
    /// read: the sender's role fits this cloud, this cloud serves the
    /// hospital, the node is the enrolled one and the signing time is
    /// within the allowed skew.
    pub fn precheck(&self, req: &SignedRequest, now_ms: i64) -> Result<(), Rejection> {
        if dr::is_primary(req) {
            return if self.mode == Mode::Replica {
                Ok(())
            } else {
                Err(Rejection::WrongRole(
                    "this cloud is not a DR replica and accepts no replication",
                ))
            };
        }
        match self.appliance(req)? {
            None => self.registry.precheck(req, now_ms),
            Some(e) => Registry::precheck_with(&e, req, now_ms),
        }
    }

    /// Ingests an authenticated, decompressed batch body of `hospital` (of
    /// `region`), one ingest at a time; when it stored events, records the
    /// ingest time, notes the new position for replication and wakes the
    /// replicator and the EMPI. Blocking: call it off the async runtime.
    pub fn ingest(
        &self,
        hospital: &HospitalId,
        region: &RegionId,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Ingested, BatchError> {
        let ingested = {
            let lock = self.ingest_lock.of(hospital);
            let _one = lock.lock().unwrap_or_else(|p| p.into_inner());
            let open = self.open.clone();
            let mut open_fn = move |h: &HospitalId| open(h);
            ingest_body(&mut open_fn, hospital, body)?
        };
        if ingested.stored > 0 {
            if self.ingest_lock.record_due(hospital, now_ms)
                && let Err(e) = self.registry_db.record_ingest(hospital, region, now_ms)
            {
                tracing::warn!(%hospital, error = %format!("{e:#}"), "could not record the ingest time");
            }
            if let Some(r) = &self.replication {
                r.note_ingest(hospital, ingested.acked.seq);
            }
            self.ingested.notify_one();
            self.empi_wake.notify_one();
        }
        Ok(ingested)
    }

    /// Whether `hospital`'s data is held here: enrolled on a primary,
    /// replicated here on a replica.
    pub fn holds(&self, hospital: &HospitalId) -> anyhow::Result<bool> {
        Ok(match self.mode {
            Mode::Primary => self.registry.get(hospital).is_some(),
            Mode::Replica => self.registry_db.hospital_region(hospital)?.is_some(),
        })
    }

    /// The EMPI's background task ([`crate::empi::run`]) over this state's
    /// hospitals, stores and ingest notifications, until `shutdown`; done at
    /// once when this cloud runs no EMPI.
    pub fn run_empi(&self, shutdown: CancellationToken) -> impl Future<Output = ()> + use<> {
        let (empi, registry, open, wake) = (
            self.empi.get(),
            self.registry.clone(),
            self.open.clone(),
            self.empi_wake.clone(),
        );
        async move {
            if let Some(empi) = empi {
                crate::empi::run(empi, registry, open, wake, shutdown).await;
            }
        }
    }
}
