//! Enrolment, authentication and residency of appliances.
//!
//! A regional cloud knows each hospital it serves by an [`Enrolment`]: its
//! region, its appliance and that appliance's public key. A cloud refuses to
//! enrol a hospital of another region (residency: a hospital's data is stored
//! only in its own region and that region's DR peer), and every sync request
//! must be signed by the enrolled appliance of the hospital it speaks for.
//! [`accept_batch`] ties authentication to ingest: nothing is stored unless
//! the signature, the hospital and the batch all check out.

use std::collections::HashMap;

use cloud_sync_client::{SignatureError, SignedRequest, verify};
use hms_domain::sync::SyncBatch;
use hms_domain::{HospitalId, NodeId, RegionId};

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

/// The hospitals one regional cloud serves. Shared by the running service:
/// an enrolment through the operator API takes effect at once.
#[derive(Debug)]
pub struct Registry {
    region: RegionId,
    hospitals: std::sync::RwLock<HashMap<HospitalId, Enrolment>>,
}

impl Clone for Registry {
    fn clone(&self) -> Self {
        Self {
            region: self.region.clone(),
            hospitals: std::sync::RwLock::new(self.read().clone()),
        }
    }
}

/// The registry kept in `registry.sqlite` under the cloud's data dir.
pub fn open_registry(
    data_dir: &std::path::Path,
    region: RegionId,
) -> anyhow::Result<(Registry, rusqlite::Connection)> {
    use anyhow::Context;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let conn = rusqlite::Connection::open(data_dir.join("registry.sqlite"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS enrolments (
             hospital   TEXT PRIMARY KEY,
             region     TEXT NOT NULL,
             node       TEXT NOT NULL,
             public_key BLOB NOT NULL
         ) STRICT;",
    )?;
    crate::meta::init(&conn)?;
    let registry = Registry::new(region);
    let rows: Vec<(String, String, String, Vec<u8>)> = conn
        .prepare("SELECT hospital, region, node, public_key FROM enrolments")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (h, r, n, k) in rows {
        registry
            .enroll(Enrolment {
                hospital: h.parse().context("stored hospital id")?,
                region: r.parse().context("stored region")?,
                node: n.parse().context("stored node id")?,
                public_key: k,
            })
            .context("a stored enrolment no longer fits this cloud")?;
    }
    Ok((registry, conn))
}

/// Enrols a hospital durably (after the residency and key checks).
pub fn enroll_durably(
    registry: &Registry,
    conn: &rusqlite::Connection,
    e: Enrolment,
) -> Result<(), anyhow::Error> {
    registry.enroll(e.clone())?;
    conn.execute(
        "INSERT INTO enrolments(hospital, region, node, public_key) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(hospital) DO UPDATE SET region = excluded.region, node = excluded.node,
            public_key = excluded.public_key",
        rusqlite::params![
            e.hospital.as_str(),
            e.region.as_str(),
            e.node.as_str(),
            e.public_key
        ],
    )?;
    Ok(())
}

impl Registry {
    /// An empty registry for the cloud of `region`.
    pub fn new(region: RegionId) -> Self {
        Self {
            region,
            hospitals: std::sync::RwLock::new(HashMap::new()),
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
        let mut v: Vec<Enrolment> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.hospital.cmp(&b.hospital));
        v
    }

    /// The enrolment of `hospital`, if enrolled here.
    pub fn get(&self, hospital: &HospitalId) -> Option<Enrolment> {
        self.read().get(hospital).cloned()
    }

    /// Enrols (or re-keys) a hospital; a hospital of another region is refused.
    pub fn enroll(&self, e: Enrolment) -> Result<(), Rejection> {
        if e.region != self.region {
            return Err(Rejection::OtherRegion {
                hospital: e.hospital,
                enrolled: e.region,
                here: self.region.clone(),
            });
        }
        if e.public_key.len() != 32 {
            return Err(Rejection::BadKey);
        }
        self.hospitals
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.hospital.clone(), e);
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
        if e.node != req.node {
            return Err(Rejection::UnknownNode {
                hospital: req.hospital.clone(),
                node: req.node.clone(),
            });
        }
        verify(&e.public_key, req, method, path, body, now_ms)?;
        Ok(e)
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
