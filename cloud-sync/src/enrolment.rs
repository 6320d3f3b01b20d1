//! Enrolment, authentication and residency of appliances.
//!
//! A regional cloud knows each hospital it serves by an [`Enrolment`]: its
//! region, its appliance and that appliance's public key. A cloud refuses to
//! enrol a hospital of another region (residency: a hospital's data is stored
//! only in its own region and that region's DR peer), and every sync request
//! must be signed by the enrolled appliance of the hospital it speaks for.
//! [`accept_batch`] ties authentication to ingest: nothing is stored unless
//! the signature, the hospital and the batch all check out.
//!
//! Enrolments are kept in the registry database
//! ([`crate::store::registry`]); this module imports only [`crate::store`].
//! Re-keying an enrolled hospital (another node or key) is refused unless
//! the caller says `replace` ([`enroll`]); a new or replaced enrolment is
//! audited in the registry with who made it.

use std::collections::HashMap;
use std::sync::Arc;

use cloud_sync_client::{SignatureError, SignedRequest, verify};
use hms_domain::sync::SyncBatch;
use hms_domain::{HospitalId, NodeId, RegionId};

pub use crate::store::registry::Enrolled;
use crate::store::registry::{EnrolmentRow, RegistryDb};
use crate::store::{HospitalStore, IngestError, Ingested, ingest};

/// One enrolled hospital.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The hospital.
    pub hospital: HospitalId,
    /// Its region.
    pub region: RegionId,
    /// Its appliance.
    pub node: NodeId,
    /// The appliance's Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
}

/// Why a request or an enrolment is refused. Nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The hospital belongs to another region: its data may not be stored here.
    #[error("hospital {hospital} is enrolled in region {enrolled}; this cloud serves {here}")]
    OtherRegion {
        /// The hospital.
        hospital: HospitalId,
        /// Its region.
        enrolled: RegionId,
        /// This cloud's region.
        here: RegionId,
    },
    /// The hospital is not enrolled here.
    #[error("hospital {0} is not enrolled in this region")]
    UnknownHospital(HospitalId),
    /// The request comes from another appliance than the enrolled one.
    #[error("node {node} is not the enrolled appliance of hospital {hospital}")]
    UnknownNode {
        /// The hospital.
        hospital: HospitalId,
        /// The node claimed.
        node: NodeId,
    },
    /// The signature does not verify with the enrolled key.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The batch names another hospital than the signed request.
    #[error("the request is signed for {signed} but the batch is for {batch}")]
    HospitalMismatch {
        /// The signer's hospital.
        signed: HospitalId,
        /// The batch's hospital.
        batch: HospitalId,
    },
    /// The public key is not 32 bytes.
    #[error("an Ed25519 public key has 32 bytes")]
    BadKey,
    /// A DR replication request (or primary enrolment) for a region this
    /// cloud may not hold data of (residency).
    #[error("this cloud holds no data of region {region} (not in allowed_dr_regions)")]
    RegionNotAllowed {
        /// The region claimed.
        region: RegionId,
    },
    /// A DR replication request from a primary that is not enrolled here.
    #[error("no primary of region {region} is enrolled here")]
    UnknownPrimary {
        /// The region claimed.
        region: RegionId,
    },
    /// The request does not fit this cloud's role (an appliance syncing with
    /// a replica, or replication sent to a cloud that is not a replica).
    #[error("{0}")]
    WrongRole(&'static str),
    /// This cloud takes no writes of the hospital from this sender: the
    /// request belongs at another of the region's addresses (421; see
    /// [`crate::takeover`]).
    #[error("{0}")]
    NotServedHere(NotServed),
    /// A replicated hospital arriving from another region than before.
    #[error("hospital {hospital} is replicated here from region {recorded}, not {claimed}")]
    RegionChanged {
        /// The hospital.
        hospital: HospitalId,
        /// The region recorded with its first replicated batch.
        recorded: RegionId,
        /// The region claimed now.
        claimed: RegionId,
    },
}

/// Why a cloud does not serve a hospital's sync requests (421 Misdirected
/// Request: an appliance's uplink moves to its next address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    /// To an appliance: this cloud is a DR replica and the hospital was not
    /// promoted here.
    #[error(
        "this cloud is the DR replica of hospital {0}; it serves the hospital's appliance only \
         once promoted (hms-cloud promote): sync with the region's primary"
    )]
    Replica(HospitalId),
    /// To an appliance: this primary is fenced from the hospital, whose DR
    /// replica was promoted.
    #[error(
        "hospital {hospital} was promoted on this region's DR peer (fenced here since {since_ms} \
         ms after the epoch); sync with the DR peer until the region is re-paired"
    )]
    Fenced {
        /// The hospital.
        hospital: HospitalId,
        /// Since when.
        since_ms: i64,
    },
    /// To a DR primary: the hospital was promoted on this replica, so the
    /// primary is fenced from it.
    #[error(
        "hospital {hospital} was promoted on this replica at {since_ms} ms after the epoch; \
         its old primary is fenced from it until re-paired"
    )]
    Promoted {
        /// The hospital.
        hospital: HospitalId,
        /// When it was promoted.
        since_ms: i64,
    },
}

/// Why an enrolment (of an appliance, or of a DR primary) was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// Residency or a bad key: refused, nothing recorded.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The hospital is enrolled already with another node or key, and
    /// replacing it was not asked for: nothing recorded.
    #[error(
        "hospital {hospital} is enrolled already (node {node}) with another node or key; \
         re-keying it must be asked for explicitly (replace)"
    )]
    AlreadyEnrolled {
        /// The hospital.
        hospital: HospitalId,
        /// Its enrolled node.
        node: NodeId,
    },
    /// The registry database failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The hospitals one regional cloud serves. Shared by the running service:
/// an enrolment through the operator API takes effect at once.
///
/// With a registry database shared by several instances (PostgreSQL,
/// [`Registry::share`]), another instance may enrol or re-key a hospital:
/// a hospital not known here is looked up there, a request that does not
/// match what is known here (another node, a signature the key does not
/// verify) is checked again against what is stored there, and the list of
/// hospitals is read again at most every [`REFRESH_EVERY`].
#[derive(Debug)]
pub struct Registry {
    region: RegionId,
    hospitals: std::sync::RwLock<HashMap<HospitalId, Enrolment>>,
    shared: std::sync::OnceLock<Arc<RegistryDb>>,
    listed: std::sync::Mutex<Option<std::time::Instant>>,
    looked: std::sync::Mutex<HashMap<HospitalId, std::time::Instant>>,
    reload_every: std::time::Duration,
    /// Look-ups in the current second (its start, the count), and the most
    /// allowed in one: many distinct unknown hospitals cost no more.
    lookups: std::sync::Mutex<(Option<std::time::Instant>, usize)>,
    lookup_budget: usize,
}

/// Look-ups of the shared registry one instance makes per second at most.
pub const LOOKUPS_PER_SECOND: usize = 50;

/// How often one hospital's enrolment may be read again from a shared
/// registry.
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Hospitals whose last look-up is remembered (then forgotten all at once).
const MAX_LOOKED: usize = 10_000;

/// How stale the list of hospitals may be with a shared registry.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Clone for Registry {
    fn clone(&self) -> Self {
        let shared = std::sync::OnceLock::new();
        if let Some(db) = self.shared.get() {
            let _ = shared.set(db.clone());
        }
        Self {
            region: self.region.clone(),
            hospitals: std::sync::RwLock::new(self.read().clone()),
            shared,
            listed: std::sync::Mutex::new(None),
            looked: std::sync::Mutex::new(HashMap::new()),
            reload_every: self.reload_every,
            lookups: std::sync::Mutex::new((None, 0)),
            lookup_budget: self.lookup_budget,
        }
    }
}

/// The registry kept in `registry.sqlite` under the cloud's data dir, and
/// that database (for later enrolments and the cloud's bookkeeping).
pub fn open_registry(
    data_dir: &std::path::Path,
    region: RegionId,
) -> anyhow::Result<(Registry, RegistryDb)> {
    registry_from(RegistryDb::open(data_dir)?, region)
}

/// The enrolments of `db` in memory, and `db`.
pub fn registry_from(db: RegistryDb, region: RegionId) -> anyhow::Result<(Registry, RegistryDb)> {
    use anyhow::Context;
    let registry = Registry::new(region);
    for row in db.enrolments()? {
        registry
            .enroll(Enrolment {
                hospital: row.hospital,
                region: row.region,
                node: row.node,
                public_key: row.public_key,
            })
            .context("a stored enrolment no longer fits this cloud")?;
    }
    Ok((registry, db))
}

/// Enrols a hospital durably (after the residency and key checks),
/// replacing what was enrolled, audited as the system's (set-ups and tests;
/// operators go through [`enroll`]).
pub fn enroll_durably(
    registry: &Registry,
    db: &RegistryDb,
    e: Enrolment,
) -> Result<(), EnrolError> {
    let now = hms_domain::Timestamp::now().as_millis();
    enroll(registry, db, e, true, "system", now).map(drop)
}

/// Enrols a hospital durably after the residency and key checks, audited
/// as `actor`'s. The same enrolment again changes nothing
/// ([`Enrolled::Unchanged`]); another node or key for an enrolled hospital
/// is [`EnrolError::AlreadyEnrolled`] unless `replace`. Effective at once
/// in `registry`.
pub fn enroll(
    registry: &Registry,
    db: &RegistryDb,
    e: Enrolment,
    replace: bool,
    actor: &str,
    now_ms: i64,
) -> Result<Enrolled, EnrolError> {
    registry.check(&e)?;
    let row = EnrolmentRow {
        hospital: e.hospital.clone(),
        region: e.region.clone(),
        node: e.node.clone(),
        public_key: e.public_key.clone(),
    };
    match db.put_enrolment_checked(&row, replace, actor, now_ms)? {
        Enrolled::Refused { node } => Err(EnrolError::AlreadyEnrolled {
            hospital: e.hospital,
            node,
        }),
        done => {
            registry.enroll(e)?;
            Ok(done)
        }
    }
}

impl Registry {
    /// An empty registry for the cloud of `region`.
    pub fn new(region: RegionId) -> Self {
        Self {
            region,
            hospitals: std::sync::RwLock::new(HashMap::new()),
            shared: std::sync::OnceLock::new(),
            listed: std::sync::Mutex::new(None),
            looked: std::sync::Mutex::new(HashMap::new()),
            reload_every: RELOAD_EVERY,
            lookups: std::sync::Mutex::new((None, 0)),
            lookup_budget: LOOKUPS_PER_SECOND,
        }
    }

    /// The same, looking the shared registry up at most `budget` times a
    /// second (default [`LOOKUPS_PER_SECOND`]).
    pub fn with_lookup_budget(mut self, budget: usize) -> Self {
        self.lookup_budget = budget;
        self
    }

    /// The same, reading a hospital again from a shared registry at most
    /// every `every` (default [`RELOAD_EVERY`]).
    pub fn with_reload_every(mut self, every: std::time::Duration) -> Self {
        self.reload_every = every;
        self
    }

    /// Follows `db`, a registry database other instances write too (see
    /// the type's doc). Once; later calls change nothing.
    pub fn share(&self, db: Arc<RegistryDb>) {
        let _ = self.shared.set(db);
    }

    /// Reads the enrolment of `hospital` from the shared database into
    /// memory; what is now known of it.
    /// At most once per `reload_every` ([`RELOAD_EVERY`]) per hospital: requests naming
    /// unknown hospitals, or forged ones, do not each cost a query.
    fn reload(&self, hospital: &HospitalId) -> Option<Enrolment> {
        let db = self.shared.get()?;
        {
            let now = std::time::Instant::now();
            let mut looked = self.looked.lock().unwrap_or_else(|p| p.into_inner());
            if looked
                .get(hospital)
                .is_some_and(|t| now.duration_since(*t) < self.reload_every)
            {
                return self.read().get(hospital).cloned();
            }
            // Requests naming many distinct unknown hospitals: a bounded
            // number of queries a second, whatever the names.
            let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
            if lookups
                .0
                .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1))
            {
                *lookups = (Some(now), 0);
            }
            if lookups.1 >= self.lookup_budget {
                return self.read().get(hospital).cloned();
            }
            lookups.1 += 1;
            if looked.len() >= MAX_LOOKED {
                looked.clear();
            }
            looked.insert(hospital.clone(), now);
        }
        match db.enrolment(hospital) {
            Ok(Some(row)) => {
                let e = Enrolment {
                    hospital: row.hospital,
                    region: row.region,
                    node: row.node,
                    public_key: row.public_key,
                };
                // A row of another region is not followed (residency).
                self.enroll(e.clone()).ok()?;
                Some(e)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%hospital, error = %format!("{e:#}"), "the shared registry cannot be read");
                None
            }
        }
    }

    /// The region served.
    pub fn region(&self) -> &RegionId {
        &self.region
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<HospitalId, Enrolment>> {
        self.hospitals.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The enrolled hospitals, sorted by id.
    pub fn hospitals(&self) -> Vec<Enrolment> {
        if let Some(db) = self.shared.get() {
            let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
            if listed.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
                *listed = Some(std::time::Instant::now());
                match db.enrolments() {
                    Ok(rows) => {
                        for row in rows {
                            let _ = self.enroll(Enrolment {
                                hospital: row.hospital,
                                region: row.region,
                                node: row.node,
                                public_key: row.public_key,
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the shared registry cannot be read");
                    }
                }
            }
        }
        let mut v: Vec<Enrolment> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.hospital.cmp(&b.hospital));
        v
    }

    /// The enrolment of `hospital`, if enrolled here.
    pub fn get(&self, hospital: &HospitalId) -> Option<Enrolment> {
        let known = self.read().get(hospital).cloned();
        known.or_else(|| self.reload(hospital))
    }

    /// Whether `e` may be enrolled here: its region is this cloud's (else
    /// refused, residency) and its key has 32 bytes.
    pub fn check(&self, e: &Enrolment) -> Result<(), Rejection> {
        if e.region != self.region {
            return Err(Rejection::OtherRegion {
                hospital: e.hospital.clone(),
                enrolled: e.region.clone(),
                here: self.region.clone(),
            });
        }
        if e.public_key.len() != 32 {
            return Err(Rejection::BadKey);
        }
        Ok(())
    }

    /// Enrols (or re-keys) a hospital in memory; a hospital of another
    /// region is refused.
    pub fn enroll(&self, e: Enrolment) -> Result<(), Rejection> {
        self.check(&e)?;
        self.hospitals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.hospital.clone(), e);
        Ok(())
    }

    /// What can be checked of a signed request before its body is read: the
    /// hospital is enrolled here, from this node, and the signing time is
    /// within the allowed clock skew.
    pub fn precheck(&self, req: &SignedRequest, now_ms: i64) -> Result<(), Rejection> {
        let mut e = self
            .get(&req.hospital)
            .ok_or_else(|| Rejection::UnknownHospital(req.hospital.clone()))?;
        if e.node != req.node
            && let Some(fresh) = self.reload(&req.hospital)
        {
            e = fresh;
        }
        Self::precheck_with(&e, req, now_ms)
    }

    /// [`Registry::precheck`] against the enrolment `e`: the node is its
    /// node, the signing time within the allowed clock skew.
    pub(crate) fn precheck_with(
        e: &Enrolment,
        req: &SignedRequest,
        now_ms: i64,
    ) -> Result<(), Rejection> {
        if e.node != req.node {
            return Err(Rejection::UnknownNode {
                hospital: req.hospital.clone(),
                node: req.node.clone(),
            });
        }
        let skew = now_ms.saturating_sub(req.timestamp_ms);
        if skew.abs() > cloud_sync_client::MAX_CLOCK_SKEW_MS {
            return Err(SignatureError::ClockSkew { skew_ms: skew }.into());
        }
        Ok(())
    }

    /// Checks a signed request against the enrolment of the hospital it claims.
    pub fn authenticate(
        &self,
        req: &SignedRequest,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Enrolment, Rejection> {
        let e = self
            .get(&req.hospital)
            .ok_or_else(|| Rejection::UnknownHospital(req.hospital.clone()))?;
        match Self::verify_with(&e, req, method, path, body, now_ms) {
            Err(first) if self.shared.get().is_some() => {
                // Re-keyed or moved on another instance? Check what is stored.
                match self.reload(&req.hospital) {
                    Some(fresh) if fresh != e => {
                        Self::verify_with(&fresh, req, method, path, body, now_ms)?;
                        Ok(fresh)
                    }
                    _ => Err(first),
                }
            }
            r => r.map(|()| e),
        }
    }

    /// Checks a signed request against the enrolment `e` (node and key).
    pub(crate) fn verify_with(
        e: &Enrolment,
        req: &SignedRequest,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), Rejection> {
        if e.node != req.node {
            return Err(Rejection::UnknownNode {
                hospital: req.hospital.clone(),
                node: req.node.clone(),
            });
        }
        verify(&e.public_key, req, method, path, body, now_ms)?;
        Ok(())
    }
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Authentication or residency (401/403).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The body is not a batch, or not valid in its content encoding (400).
    #[error("the body is not a sync batch: {0}")]
    Malformed(String),
    /// The body expands beyond the limit once decompressed (413).
    #[error("the body expands beyond {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The batch breaks the ingest rules, or the store failed (409/503).
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Authenticates a signed batch request and ingests it into the hospital's store.
pub fn accept_batch(
    registry: &Registry,
    open: &mut dyn FnMut(&HospitalId) -> anyhow::Result<Box<dyn HospitalStore>>,
    req: &SignedRequest,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<Ingested, BatchError> {
    let enrolment = registry.authenticate(req, method, path, body, now_ms)?;
    ingest_body(open, &enrolment.hospital, body)
}

/// Parses an (authenticated, decompressed) batch body of `hospital` and
/// ingests it into that hospital's store.
pub fn ingest_body(
    open: &mut dyn FnMut(&HospitalId) -> anyhow::Result<Box<dyn HospitalStore>>,
    hospital: &HospitalId,
    body: &[u8],
) -> Result<Ingested, BatchError> {
    let batch: SyncBatch =
        serde_json::from_slice(body).map_err(|e| BatchError::Malformed(e.to_string()))?;
    if &batch.hospital != hospital {
        return Err(Rejection::HospitalMismatch {
            signed: hospital.clone(),
            batch: batch.hospital,
        }
        .into());
    }
    let mut store = open(&batch.hospital).map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
    Ok(ingest(store.as_mut(), &batch)?)
}

#[cfg(test)]
mod tests {
    use cloud_sync_client::{Signer, generate_key};
    use hms_domain::sync::{Refusal, SyncBatch};
    use hms_domain::{HospitalId, NodeId, RegionId};

    use crate::enrolment::{BatchError, Enrolment, Registry, Rejection, accept_batch};
    use crate::store::{HospitalStore, IngestError, SqliteRouter, conformance};

    const PATH: &str = "/sync/v1/batches";
    const NOW: i64 = 1_767_000_000_000;

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect("valid id")
    }

    struct Setup {
        registry: Registry,
        router: SqliteRouter,
        _dir: tempfile::TempDir,
        signer: Signer,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = Registry::new(id("eu-west"));
        let (pkcs8, public) = generate_key().expect("key");
        registry
            .enroll(Enrolment {
                hospital: id("h1"),
                region: id("eu-west"),
                node: id("edge-1"),
                public_key: public,
            })
            .expect("enrol");
        let signer = Signer::new(&pkcs8, id("h1"), id("edge-1")).expect("signer");
        Setup {
            registry,
            router: SqliteRouter::new(dir.path()),
            _dir: dir,
            signer,
        }
    }

    fn body(h: &str, from: usize, to: usize) -> Vec<u8> {
        let events = conformance::log(h, 10)[from..to].to_vec();
        serde_json::to_vec(&SyncBatch {
            hospital: id(h),
            node: id("edge-1"),
            events,
        })
        .expect("json")
    }

    fn send(s: &Setup, signer: &Signer, body: &[u8]) -> Result<u64, BatchError> {
        let req = signer.sign("POST", PATH, NOW, body);
        let router = s.router.clone();
        let mut open =
            move |h: &HospitalId| Ok(Box::new(router.open(h)?) as Box<dyn HospitalStore>);
        accept_batch(&s.registry, &mut open, &req, "POST", PATH, body, NOW).map(|r| r.acked.seq)
    }

    fn stored(s: &Setup, h: &str) -> u64 {
        s.router
            .open(&id(h))
            .expect("open")
            .position()
            .expect("position")
            .seq
    }

    #[test]
    fn signed_batches_are_stored_and_every_forgery_is_refused() {
        let s = setup();
        assert_eq!(send(&s, &s.signer, &body("h1", 0, 4)).expect("accepted"), 4);
        // A second appliance signing as the first hospital (its own key).
        let (other, _) = generate_key().expect("key");
        let impostor = Signer::new(&other, id("h1"), id("edge-1")).expect("signer");
        assert!(matches!(
            send(&s, &impostor, &body("h1", 4, 6)),
            Err(BatchError::Rejected(Rejection::Signature(_)))
        ));
        // Another node name than the enrolled appliance.
        let node2 = Signer::new(&other, id("h1"), id("edge-2")).expect("signer");
        assert!(matches!(
            send(&s, &node2, &body("h1", 4, 6)),
            Err(BatchError::Rejected(Rejection::UnknownNode { .. }))
        ));
        // A batch tampered after signing.
        let good = body("h1", 4, 6);
        let req = s.signer.sign("POST", PATH, NOW, &good);
        let tampered = String::from_utf8(good)
            .expect("utf8")
            .replace("E5", "E9")
            .into_bytes();
        let router = s.router.clone();
        let mut open =
            move |h: &HospitalId| Ok(Box::new(router.open(h)?) as Box<dyn HospitalStore>);
        assert!(matches!(
            accept_batch(&s.registry, &mut open, &req, "POST", PATH, &tampered, NOW),
            Err(BatchError::Rejected(Rejection::Signature(_)))
        ));
        // A correctly signed batch with a gap.
        assert!(matches!(
            send(&s, &s.signer, &body("h1", 5, 8)),
            Err(BatchError::Ingest(IngestError::Refused(Refusal::Gap {
                expected: 5,
                found: 6
            })))
        ));
        // The hospital posting another hospital's events.
        assert!(matches!(
            send(&s, &s.signer, &body("h2", 0, 2)),
            Err(BatchError::Rejected(Rejection::HospitalMismatch { .. }))
        ));
        // A hospital that is not enrolled here.
        let (k3, _) = generate_key().expect("key");
        let stranger = Signer::new(&k3, id("h3"), id("edge-1")).expect("signer");
        assert!(matches!(
            send(&s, &stranger, &body("h3", 0, 2)),
            Err(BatchError::Rejected(Rejection::UnknownHospital(_)))
        ));
        // Nothing of the refused requests was stored.
        assert_eq!(stored(&s, "h1"), 4);
        assert_eq!(stored(&s, "h2"), 0);
        assert_eq!(stored(&s, "h3"), 0);
        // The rest, correctly signed and in order, is accepted.
        assert_eq!(send(&s, &s.signer, &body("h1", 4, 10)).expect("rest"), 10);
    }

    #[test]
    fn a_hospital_of_another_region_cannot_enrol() {
        let registry = Registry::new(id::<RegionId>("eu-west"));
        let (_, public) = generate_key().expect("key");
        let r = registry.enroll(Enrolment {
            hospital: id("h9"),
            region: id("us-east"),
            node: id::<NodeId>("edge-1"),
            public_key: public,
        });
        assert!(matches!(r, Err(Rejection::OtherRegion { .. })), "{r:?}");
    }

    /// Two instances on one registry database (PostgreSQL): what one
    /// enrols or re-keys, the other follows without a restart.
    #[test]
    fn an_instance_follows_enrolments_and_re_keys_made_by_another() {
        use crate::store::pg_tls::PgTarget;
        use crate::store::registry::RegistryDb;
        if !crate::testkit::available(crate::testkit::Backend::Postgres) {
            return;
        }
        let admin = crate::testkit::pg_admin();
        let db_name = format!("hms+follow-{}", std::process::id());
        let drop_db = || {
            crate::store::postgres::PgRouter::new(&admin)
                .expect("router")
                .drop_named(&db_name)
                .expect("drop");
        };
        drop_db();
        let open = |every: std::time::Duration| {
            let db = RegistryDb::open_postgres(PgTarget::parse(&admin).expect("target"), &db_name)
                .expect("open");
            let db = std::sync::Arc::new(db);
            let registry = Registry::new(id("eu-west")).with_reload_every(every);
            registry.share(db.clone());
            (registry, db)
        };
        let zero = std::time::Duration::ZERO;
        let ((a, a_db), (b, _b_db)) = (open(zero), open(zero));
        // An instance with the default limit on look-ups.
        let (limited, _l_db) = open(super::RELOAD_EVERY);
        let (key1, public1) = generate_key().expect("key");
        let enrol = |public: Vec<u8>, replace| {
            super::enroll(
                &a,
                &a_db,
                Enrolment {
                    hospital: id("h1"),
                    region: id("eu-west"),
                    node: id("edge-1"),
                    public_key: public,
                },
                replace,
                "cli:test",
                NOW,
            )
            .expect("enrol")
        };
        enrol(public1, false);
        // B learns of it on the first request.
        let signer1 = Signer::new(&key1, id("h1"), id("edge-1")).expect("signer");
        let req = signer1.sign("POST", PATH, NOW, b"{}");
        assert_eq!(
            b.authenticate(&req, "POST", PATH, b"{}", NOW)
                .expect("known")
                .node,
            id("edge-1")
        );
        // Re-keyed through A: B accepts the new key at once, the old one no more.
        let (key2, public2) = generate_key().expect("key");
        enrol(public2, true);
        let signer2 = Signer::new(&key2, id("h1"), id("edge-1")).expect("signer");
        let req = signer2.sign("POST", PATH, NOW, b"{}");
        b.authenticate(&req, "POST", PATH, b"{}", NOW)
            .expect("new key");
        let req = signer1.sign("POST", PATH, NOW, b"{}");
        assert!(matches!(
            b.authenticate(&req, "POST", PATH, b"{}", NOW),
            Err(Rejection::Signature(_))
        ));
        // A hospital nobody enrolled stays unknown.
        let stranger = Signer::new(&key1, id("h9"), id("edge-1")).expect("signer");
        let req = stranger.sign("POST", PATH, NOW, b"{}");
        assert!(matches!(
            b.precheck(&req, NOW),
            Err(Rejection::UnknownHospital(_))
        ));
        assert_eq!(b.hospitals().len(), 1);
        // Looked up a moment ago and unknown: not asked again at once (a
        // stream of requests naming unknown hospitals costs one query per
        // hospital and second), while an instance without the limit sees
        // the new enrolment.
        assert!(limited.get(&id("h2")).is_none());
        let (_, public3) = generate_key().expect("key");
        super::enroll(
            &a,
            &a_db,
            Enrolment {
                hospital: id("h2"),
                region: id("eu-west"),
                node: id("edge-1"),
                public_key: public3,
            },
            false,
            "cli:test",
            NOW,
        )
        .expect("enrol h2");
        assert!(limited.get(&id("h2")).is_none(), "within the limit");
        assert!(b.get(&id("h2")).is_some());
        // At most so many look-ups a second, whatever the hospitals named.
        let (budgeted, _bu_db) = open(zero);
        let budgeted = budgeted.with_lookup_budget(3);
        for n in 0..3 {
            assert!(budgeted.get(&id(&format!("unknown-{n}"))).is_none());
        }
        assert!(
            budgeted.get(&id("h2")).is_none(),
            "the second's look-ups are spent"
        );
        assert!(b.get(&id("h2")).is_some());
        drop((a, a_db, b, limited, budgeted));
        drop_db();
    }
}
