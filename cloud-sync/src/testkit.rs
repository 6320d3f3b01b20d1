//! Helpers for the in-process tests: clouds served on loopback (HTTP or
//! HTTPS), enrolled appliances and their signers, operator tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use cloud_sync_client::{Endpoint, Signer, generate_key};
use hms_domain::sync::SyncBatch;
use hms_domain::{Envelope, HospitalId, NodeId};

use crate::enrolment::{Enrolment, enroll_durably, open_registry};
use crate::http::router;
use crate::state::CloudState;
use crate::store::{HospitalStore, SqliteRouter};

/// Timeout of client calls in tests (a guard, not a timing).
pub const T: Duration = Duration::from_secs(10);

/// Parses a test id.
pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid id")
}

/// Now, in ms.
pub fn now() -> i64 {
    hms_domain::Timestamp::now().as_millis()
}

/// A batch of `h`'s events from `edge-1`.
pub fn batch(h: &str, events: &[Envelope]) -> SyncBatch {
    SyncBatch {
        hospital: id(h),
        node: id::<NodeId>("edge-1"),
        events: events.to_vec(),
    }
}

/// A cloud under test: its state, where its data lives, its appliances.
pub struct Cloud {
    /// The service state.
    pub state: CloudState,
    /// The hospital stores.
    pub stores: SqliteRouter,
    /// The data dir.
    pub _dir: tempfile::TempDir,
    /// The signer of each enrolled hospital's appliance (`edge-1`).
    pub signers: Vec<(HospitalId, Signer)>,
}

impl Cloud {
    /// A primary cloud of `region` with the hospitals `hospitals` enrolled
    /// in that region, each with a fresh appliance key (node `edge-1`).
    pub fn primary(region: &str, hospitals: &[&str]) -> Cloud {
        let dir = tempfile::tempdir().expect("tempdir");
        let (reg, conn) = open_registry(dir.path(), id(region)).expect("registry");
        let mut signers = vec![];
        for h in hospitals {
            let (pkcs8, public) = generate_key().expect("key");
            enroll_durably(
                &reg,
                &conn,
                Enrolment {
                    hospital: id(h),
                    region: id(region),
                    node: id("edge-1"),
                    public_key: public,
                },
            )
            .expect("enrol");
            signers.push((
                id(h),
                Signer::new(&pkcs8, id(h), id("edge-1")).expect("signer"),
            ));
        }
        let stores = SqliteRouter::new(dir.path());
        Cloud {
            state: CloudState::new(reg, stores.clone().opener(), conn),
            stores,
            _dir: dir,
            signers,
        }
    }

    /// A replica cloud of `region` accepting the primaries `(region, public
    /// key)` (enrolled as `hms-cloud enroll-primary` does) of the `allowed`
    /// regions.
    pub fn replica(region: &str, allowed: &[&str], primaries: &[(&str, Vec<u8>)]) -> Cloud {
        let mut cloud = Cloud::primary(region, &[]);
        let allowed: Vec<hms_domain::RegionId> = allowed.iter().map(|r| id(r)).collect();
        let db = cloud.state.registry_db.clone();
        for (r, k) in primaries {
            crate::dr::enroll_primary(&db, &allowed, &id(r), k).expect("enrol primary");
        }
        let keys = db.primaries().expect("primaries");
        cloud.state = cloud
            .state
            .clone()
            .replica(crate::dr::Primaries::new(allowed, keys));
        cloud
    }

    /// The signer of hospital `h`'s appliance.
    pub fn signer(&self, h: &str) -> &Signer {
        &self
            .signers
            .iter()
            .find(|(id, _)| id.as_str() == h)
            .expect("enrolled hospital")
            .1
    }

    /// Every stored event of `h`.
    pub fn events(&self, h: &str) -> Vec<Envelope> {
        self.stores
            .open(&id(h))
            .expect("open")
            .events(1, 1_000_000)
            .expect("events")
    }

    /// A new operator token.
    pub fn token(&self, name: &str) -> String {
        self.state
            .registry_db
            .create_token(name, now())
            .expect("token")
    }
}

/// A served cloud: its address and how many connections it accepted.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far (after the TLS handshake for https).
    pub accepted: Arc<AtomicUsize>,
}

impl Served {
    /// The plain-HTTP endpoint.
    pub fn http(&self) -> Endpoint {
        Endpoint::parse(&format!("http://{}", self.addr), None).expect("endpoint")
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Serves `state` on a loopback port, over TLS when `tls` is given.
pub async fn serve(state: CloudState, tls: Option<tokio_rustls::TlsAcceptor>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let app = router(state);
    match tls {
        None => {
            let l = listener.tap_io(move |_| {
                count.fetch_add(1, Ordering::SeqCst);
            });
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        Some(acceptor) => {
            let l = hms_web::tls::TlsListener::new(listener, acceptor)
                .expect("tls listener")
                .tap_io(move |_| {
                    count.fetch_add(1, Ordering::SeqCst);
                });
            tokio::spawn(async move { axum::serve(l, app).await });
        }
    }
    Served { addr, accepted }
}

/// A self-signed certificate for `localhost`: (cert PEM, key PEM) files in `dir`.
pub fn self_signed(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).expect("write");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write");
    (cert, key)
}

/// EMPI training sized for debug builds: fewer random pairs for `u`.
pub fn quick_training() -> crate::empi::model::TrainSettings {
    let mut settings = crate::empi::model::TrainSettings::default();
    settings.config.u_pairs = 100_000;
    settings
}

/// Fills an `empi.sqlite` in `dir` with the seeded synthetic records of
/// `people` people (about 1.7 records each, sources h1 to h4), under the
/// EIDs the hand-set engine gives them in order, as registrations would;
/// returns their keys. Faster than registering each.
pub fn seed_empi(dir: &std::path::Path, people: usize) -> Vec<hms_domain::empi::RecordKey> {
    use hms_domain::empi::synth::{SynthConfig, generate};
    use hms_domain::empi::{Engine, Params, RecordKey};
    let downlink = Arc::new(crate::downlink::Downlink::in_memory().expect("downlink"));
    drop(crate::empi::RegionalEmpi::open(dir, downlink).expect("schema"));
    let data = generate(&SynthConfig {
        people,
        ..SynthConfig::default()
    });
    let mut engine = Engine::new(Params::default());
    let mut db = crate::store::empi::EmpiDb::open(dir).expect("open");
    let tx = db.transaction().expect("tx");
    let mut keys = vec![];
    for l in &data {
        let eid = engine.match_or_create(&l.record).eid;
        tx.put_record(&l.record, eid).expect("insert");
        keys.push(RecordKey {
            source: l.record.source.clone(),
            local_id: l.record.local_id.clone(),
        });
    }
    tx.commit().expect("commit");
    keys
}

/// Builds a hospital's hash-chained log from typed bodies, as the appliance
/// seals them.
pub struct LogBuilder {
    hospital: HospitalId,
    events: Vec<Envelope>,
}

/// Milliseconds of an RFC 3339 time.
pub fn at(rfc3339: &str) -> i64 {
    hms_domain::Timestamp::parse_rfc3339(rfc3339)
        .expect("test time")
        .as_millis()
}

impl LogBuilder {
    /// An empty log of hospital `h`.
    pub fn new(h: &str) -> Self {
        Self {
            hospital: id(h),
            events: vec![],
        }
    }

    /// Appends `body`, recorded (appliance time) and occurred (source time) at `when`.
    pub fn add(&mut self, when: &str, body: hms_domain::EventBody) -> &mut Self {
        self.add_at(when, when, body)
    }

    /// Appends `body` recorded at `recorded`, occurred at `occurred`.
    pub fn add_at(
        &mut self,
        recorded: &str,
        occurred: &str,
        body: hms_domain::EventBody,
    ) -> &mut Self {
        use hms_domain::{Actor, Draft, EventHash, Timestamp};
        let prev = self.events.last().map_or(EventHash::GENESIS, |e| e.hash);
        let seq = self.events.len() as u64 + 1;
        self.events.push(Envelope::seal(
            &self.hospital,
            seq,
            prev,
            Timestamp::from_millis(at(recorded)),
            Draft {
                occurred_at: Timestamp::from_millis(at(occurred)),
                actor: Actor::system(),
                correlation: Some(format!("c{seq}")),
                body,
            },
        ));
        self
    }

    /// The log.
    pub fn events(&self) -> Vec<Envelope> {
        self.events.clone()
    }
}

/// Bodies for hand-built logs.
pub mod body {
    use hms_domain::{
        BedAttributes, BedState, EventBody, LevelOfCare, Mrn, PatientRef, Transition,
    };

    use super::id;

    fn attributes() -> BedAttributes {
        BedAttributes {
            gender: Default::default(),
            isolation_capable: false,
            telemetry: false,
            bariatric: false,
            level_of_care: LevelOfCare::Acute,
            room: None,
            tags: vec![],
        }
    }

    /// A bed joins unit `unit`.
    pub fn commission(bed: &str, unit: &str) -> EventBody {
        EventBody::BedCommissioned {
            bed: id(bed),
            unit: id(unit),
            attributes: attributes(),
        }
    }

    /// A bed moves to unit `unit`.
    pub fn reconfigure(bed: &str, unit: &str) -> EventBody {
        EventBody::BedReconfigured {
            bed: id(bed),
            unit: id(unit),
            attributes: attributes(),
        }
    }

    /// A bed leaves the board.
    pub fn decommission(bed: &str) -> EventBody {
        EventBody::BedDecommissioned { bed: id(bed) }
    }

    /// A stay enters `bed`.
    pub fn occupy(bed: &str, encounter: &str) -> EventBody {
        EventBody::BedStateChanged {
            bed: id(bed),
            version: 1,
            transition: Transition::Assigned,
            state: BedState::Occupied {
                encounter: id(encounter),
            },
            patient: None,
            ended: None,
            isolation: None,
        }
    }

    /// `bed` is held for a stay (not occupied).
    pub fn reserve(bed: &str, encounter: &str) -> EventBody {
        EventBody::BedStateChanged {
            bed: id(bed),
            version: 1,
            transition: Transition::Reserved,
            state: BedState::Reserved {
                encounter: id(encounter),
            },
            patient: None,
            ended: None,
            isolation: None,
        }
    }

    /// The stay leaves `bed` (it becomes dirty).
    pub fn release(bed: &str, encounter: &str) -> EventBody {
        EventBody::BedStateChanged {
            bed: id(bed),
            version: 2,
            transition: Transition::Released,
            state: BedState::VacantDirty,
            patient: None,
            ended: Some(id(encounter)),
            isolation: None,
        }
    }

    /// Two beds swap their stays.
    pub fn swap(bed: &str, other: &str) -> EventBody {
        EventBody::BedsSwapped {
            bed: id(bed),
            version: 3,
            other: id(other),
            other_version: 3,
        }
    }

    /// An ADT message with trigger `trigger` recorded a patient.
    pub fn adt(trigger: &str) -> EventBody {
        EventBody::PatientRecorded {
            patient: PatientRef {
                mrn: Mrn::new("MRN-1"),
                name: None,
                birth_date: None,
                sex: None,
            },
            trigger: trigger.to_owned(),
            identifiers: vec![],
            address: None,
            phone: None,
            visit: None,
            class: None,
        }
    }

    /// Two patient records were merged.
    pub fn merge() -> EventBody {
        EventBody::PatientsMerged {
            from: Mrn::new("MRN-2"),
            into: PatientRef {
                mrn: Mrn::new("MRN-1"),
                name: None,
                birth_date: None,
                sex: None,
            },
        }
    }
}
