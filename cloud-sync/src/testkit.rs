//! Helpers for the in-process tests: clouds on either store backend
//! (SQLite files, or PostgreSQL databases of their own), served on loopback
//! (HTTP or HTTPS, with a switch that takes them down and up again),
//! enrolled appliances and their signers, operator tokens.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::ListenerExt;
use cloud_sync_client::{Endpoint, Signer, generate_key};
use hms_domain::sync::SyncBatch;
use hms_domain::{Envelope, HospitalId, NodeId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use crate::config::Backend;
use crate::enrolment::{Enrolment, enroll_durably, open_registry};
use crate::http::router;
use crate::state::{CloudState, OpenStore};
use crate::store::postgres::PgRouter;
use crate::store::{HospitalStore, SqliteRouter, ingest};

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

/// Runs `f` on a thread of its own and returns what it returns (or
/// resumes its panic). Store calls block, and the PostgreSQL client runs a
/// runtime of its own, which it cannot do on an async runtime's thread.
pub fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The PostgreSQL server of the tests: `HMS_TEST_PG` (libpq-style), by
/// default the local server with trust authentication.
pub fn pg_admin() -> String {
    std::env::var("HMS_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
}

/// Whether `backend` can be tested here. A PostgreSQL server that cannot
/// be reached is a skip, said through [`hms_e2e::skip::skip`] (a failure
/// under `CI=true`); the test returns at once.
pub fn available(backend: Backend) -> bool {
    static REACHED: OnceLock<Result<(), String>> = OnceLock::new();
    match backend {
        Backend::Sqlite => true,
        Backend::Postgres => match REACHED.get_or_init(|| {
            off_runtime(|| {
                postgres::Client::connect(&pg_admin(), postgres::NoTls)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        }) {
            Ok(()) => true,
            Err(e) => {
                let test = std::thread::current()
                    .name()
                    .unwrap_or("a PostgreSQL test")
                    .to_owned();
                hms_e2e::skip::skip(
                    &test,
                    &format!(
                        "PostgreSQL unreachable ({}): {e}; set HMS_TEST_PG or start it",
                        pg_admin()
                    ),
                );
                false
            }
        },
    }
}

/// A hospital id no other test of any process uses, from `name`: for what
/// reaches PostgreSQL without going through [`Stores`] (a cloud opened from
/// its configuration), where a hospital's database is named after it.
pub fn unique_hospital(name: &str) -> HospitalId {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    id(&format!("{name}-{}-{n}", std::process::id()))
}

/// A test cloud's hospital logs: SQLite files under its data dir, or
/// PostgreSQL databases of its own (hospital `h` of this cloud lives in the
/// database of hospital `t{pid}-{n}-h`), so that tests run side by side
/// and a primary and its replica on one server stay apart. Each database
/// starts empty and is dropped with the last handle.
#[derive(Clone)]
pub struct Stores {
    open: OpenStore,
    sqlite: Option<PathBuf>,
    pg: Option<Arc<PgScope>>,
}

struct PgScope {
    router: PgRouter,
    prefix: String,
    used: Mutex<BTreeSet<HospitalId>>,
}

impl PgScope {
    /// The hospital whose database holds this cloud's `h`.
    fn holder(&self, h: &HospitalId) -> HospitalId {
        id(&format!("{}-{h}", self.prefix))
    }

    fn open(&self, h: &HospitalId) -> anyhow::Result<Box<dyn HospitalStore>> {
        let db = self.holder(h);
        {
            // The first open of a hospital starts it clean (a database left
            // by a crashed run of a process with the same id), and creates it
            // before anyone else can.
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.contains(h) {
                self.router.drop_database(&db)?;
                let store = self.router.open(&db)?;
                used.insert(h.clone());
                return Ok(Box::new(store));
            }
        }
        Ok(Box::new(self.router.open(&db)?))
    }
}

impl Drop for PgScope {
    fn drop(&mut self) {
        let used = std::mem::take(self.used.get_mut().unwrap_or_else(|p| p.into_inner()));
        off_runtime(|| {
            for h in &used {
                let _ = self.router.drop_database(&self.holder(h));
            }
        });
    }
}

impl Stores {
    /// The stores of a cloud whose data dir is `data_dir`, on `backend`.
    pub fn new(backend: Backend, data_dir: &Path) -> Stores {
        match backend {
            Backend::Sqlite => Stores {
                open: SqliteRouter::new(data_dir).opener(),
                sqlite: Some(data_dir.join("hospitals")),
                pg: None,
            },
            Backend::Postgres => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let scope = Arc::new(PgScope {
                    router: PgRouter::new(pg_admin()).expect("PostgreSQL router"),
                    prefix: format!(
                        "t{}-{}",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::SeqCst)
                    ),
                    used: Mutex::new(BTreeSet::new()),
                });
                let s = scope.clone();
                Stores {
                    open: Arc::new(move |h: &HospitalId| s.open(h)),
                    sqlite: None,
                    pg: Some(scope),
                }
            }
        }
    }

    /// The stores as the cloud's state opens them.
    pub fn opener(&self) -> OpenStore {
        self.open.clone()
    }

    /// Runs `f` on the store of `h`, off the async runtime.
    pub fn with<R: Send>(&self, h: &str, f: impl FnOnce(&mut dyn HospitalStore) -> R + Send) -> R {
        off_runtime(|| f((self.open)(&id(h)).expect("open the store").as_mut()))
    }

    /// Loses the copy of `h`, as a lost disk or a dropped database would:
    /// the next open finds an empty store.
    pub fn lose(&self, h: &str) {
        if let Some(dir) = &self.sqlite {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(dir.join(format!("{h}.sqlite{suffix}")));
            }
        }
        if let Some(pg) = &self.pg {
            let db = pg.holder(&id(h));
            off_runtime(|| pg.router.drop_database(&db)).expect("drop the database");
        }
    }
}

/// A cloud under test: its state, where its data lives, its appliances.
pub struct Cloud {
    /// The service state.
    pub state: CloudState,
    /// The hospital stores.
    pub stores: Stores,
    /// The data dir.
    pub _dir: tempfile::TempDir,
    /// The signer of each enrolled hospital's appliance (`edge-1`).
    pub signers: Vec<(HospitalId, Signer)>,
}

impl Cloud {
    /// A primary cloud of `region` with the hospitals `hospitals` enrolled
    /// in that region, each with a fresh appliance key (node `edge-1`),
    /// its logs in SQLite files.
    pub fn primary(region: &str, hospitals: &[&str]) -> Cloud {
        Cloud::primary_on(Backend::Sqlite, region, hospitals)
    }

    /// The same with its logs on `backend` (see [`available`]).
    pub fn primary_on(backend: Backend, region: &str, hospitals: &[&str]) -> Cloud {
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
        let stores = Stores::new(backend, dir.path());
        Cloud {
            state: CloudState::new(reg, stores.opener(), conn),
            stores,
            _dir: dir,
            signers,
        }
    }

    /// A replica cloud of `region` accepting the primaries `(region, public
    /// key)` (enrolled as `hms-cloud enroll-primary` does) of the `allowed`
    /// regions, its logs on `backend`.
    pub fn replica_on(
        backend: Backend,
        region: &str,
        allowed: &[&str],
        primaries: &[(&str, Vec<u8>)],
    ) -> Cloud {
        let mut cloud = Cloud::primary_on(backend, region, &[]);
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
            .with(h, |s| s.events(1, 1_000_000))
            .expect("events")
    }

    /// The seq of the last stored event of `h`.
    pub fn position(&self, h: &str) -> u64 {
        self.stores.with(h, |s| s.position()).expect("position").seq
    }

    /// Stores `events` of `h` straight into its store (as an earlier run
    /// would have), without telling anyone.
    pub fn seed(&self, h: &str, events: &[Envelope]) {
        let b = batch(h, events);
        self.stores
            .with(h, |s| ingest(s, &b).map(drop))
            .expect("seed");
    }

    /// Ingests `events` of `h` as an appliance's batch would be: stored,
    /// noted for replication, the replicator and the EMPI woken.
    pub fn ingest(&self, h: &str, events: &[Envelope]) {
        let body = serde_json::to_vec(&batch(h, events)).expect("json");
        let region = self.state.registry.region().clone();
        off_runtime(|| self.state.ingest(&id(h), &region, &body, now())).expect("ingest");
    }

    /// A new operator token.
    pub fn token(&self, name: &str) -> String {
        self.state
            .registry_db
            .create_token(name, now())
            .expect("token")
    }
}

/// A served cloud: its address, how many connections it accepted, and a
/// switch that takes it down and up again.
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far (after the TLS handshake for https),
    /// including those closed at once while it was down.
    pub accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
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

    /// Requests that reached the cloud's router so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Takes it down (`false`) or up again (plain HTTP only). While it is
    /// down it closes every new connection at once, and a kept one fails
    /// at its next read or write: clients see it as unreachable, and the
    /// port stays its own.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Accepts for [`serve`]: closes what comes while the switch is down.
struct Gate {
    listener: tokio::net::TcpListener,
    up: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl axum::serve::Listener for Gate {
    type Io = Cut;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Cut, SocketAddr) {
        loop {
            let Ok((io, addr)) = self.listener.accept().await else {
                tokio::task::yield_now().await;
                continue;
            };
            self.accepted.fetch_add(1, Ordering::SeqCst);
            if self.up.load(Ordering::SeqCst) {
                return (
                    Cut {
                        io,
                        up: self.up.clone(),
                    },
                    addr,
                );
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A served connection that fails once the switch is down.
struct Cut {
    io: tokio::net::TcpStream,
    up: Arc<AtomicBool>,
}

impl Cut {
    fn down(&self) -> Option<std::io::Error> {
        (!self.up.load(Ordering::SeqCst)).then(|| {
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the test took it down")
        })
    }
}

impl AsyncRead for Cut {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.down() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Cut {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match this.down() {
            Some(e) => Poll::Ready(Err(e)),
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves `state` on a loopback port, over TLS when `tls` is given.
pub async fn serve(state: CloudState, tls: Option<tokio_rustls::TlsAcceptor>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(true));
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let app = router(state).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            counted.fetch_add(1, Ordering::SeqCst);
            next.run(req)
        },
    ));
    match tls {
        None => {
            let gate = Gate {
                listener,
                up: up.clone(),
                accepted: accepted.clone(),
            };
            tokio::spawn(async move { axum::serve(gate, app).await });
        }
        Some(acceptor) => {
            let count = accepted.clone();
            let l = hms_web::tls::TlsListener::new(listener, acceptor)
                .expect("tls listener")
                .tap_io(move |_| {
                    count.fetch_add(1, Ordering::SeqCst);
                });
            tokio::spawn(async move { axum::serve(l, app).await });
        }
    }
    Served {
        addr,
        accepted,
        requests,
        up,
    }
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
    let downlink = Arc::new(crate::downlink::Downlink::in_memory().expect("downlink"));
    drop(crate::empi::RegionalEmpi::open(dir, downlink).expect("schema"));
    let mut db = crate::store::empi::EmpiDb::open(dir).expect("open");
    seed_empi_into(&mut db, people)
}

/// [`seed_empi`] into the EMPI tables of `db` (either backend).
pub fn seed_empi_into(
    db: &mut crate::store::empi::EmpiDb,
    people: usize,
) -> Vec<hms_domain::empi::RecordKey> {
    use hms_domain::empi::synth::{SynthConfig, generate};
    use hms_domain::empi::{Engine, Params, RecordKey};
    let data = generate(&SynthConfig {
        people,
        ..SynthConfig::default()
    });
    let mut engine = Engine::new(Params::default());
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
    use hms_domain::charge::{Charge, ChargeKind, ChargeStatus};
    use hms_domain::{
        BedAttributes, BedState, CaseChange, CasePrediction, CaseStatus, EventBody, LevelOfCare,
        Mrn, OrCase, PatientRef, Timestamp, Transition,
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

    /// A transaction of `cents` dated `date` (RFC 3339), posted.
    pub fn charge(transaction_id: &str, date: &str, kind: ChargeKind, cents: i64) -> Charge {
        Charge {
            transaction_id: transaction_id.to_owned(),
            visit: Some(id("V1")),
            patient: None,
            unit: Some("SURG".into()),
            date: Timestamp::from_millis(super::at(date)),
            kind,
            code: "44970".into(),
            code_system: None,
            description: None,
            quantity: if kind == ChargeKind::Credit { -1 } else { 1 },
            amount_cents: Some(cents),
            department: None,
            diagnoses: vec![],
            status: ChargeStatus::Posted,
        }
    }

    /// `billing.charge_posted` of `charge`.
    pub fn posted(charge: &Charge) -> EventBody {
        EventBody::ChargePosted {
            charge: charge.clone(),
        }
    }

    /// `billing.charge_reversed` of `charge`, as the appliance writes it
    /// (the posted charge, marked reversed).
    pub fn reversed(charge: &Charge) -> EventBody {
        EventBody::ChargeReversed {
            charge: Charge {
                status: ChargeStatus::Reversed,
                ..charge.clone()
            },
        }
    }

    /// An OR case, version 1, scheduled in `room` at `start` (RFC 3339)
    /// for `booked` minutes.
    pub fn or_case(case: &str, room: &str, start: &str, booked: u32) -> OrCase {
        OrCase::booked(
            id(case),
            id(room),
            Timestamp::from_millis(super::at(start)),
            booked,
        )
    }

    /// `or.case_<change>` leaving `case` as it is.
    pub fn case_changed(change: CaseChange, case: &OrCase) -> EventBody {
        EventBody::OrCaseChanged {
            change,
            case: case.clone(),
        }
    }

    /// The next version of `case` after `change`: its status follows the
    /// change (`completed` with `actual` minutes).
    pub fn changed(case: &mut OrCase, change: CaseChange, actual: Option<u32>) -> EventBody {
        case.version += 1;
        case.status = match change {
            CaseChange::Scheduled | CaseChange::Rescheduled | CaseChange::Modified => {
                CaseStatus::Scheduled
            }
            CaseChange::Cancelled => CaseStatus::Cancelled,
            CaseChange::Deleted => CaseStatus::Deleted,
            CaseChange::NoShow => CaseStatus::NoShow,
            CaseChange::Bumped => CaseStatus::Bumped,
            CaseChange::Completed => CaseStatus::Completed,
        };
        if change == CaseChange::Completed {
            case.actual_start = Some(case.start);
            case.actual_minutes = actual;
        }
        case_changed(change, case)
    }

    /// `or.case_predicted`: `minutes` for `case` at its current version.
    pub fn predicted(case: &OrCase, minutes: u32) -> EventBody {
        EventBody::OrCasePredicted {
            prediction: CasePrediction {
                case_id: case.case_id.clone(),
                version: case.version,
                room: case.room.clone(),
                start: case.start,
                booked_minutes: case.booked_minutes,
                minutes,
                source: "model".into(),
                reason: None,
            },
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

/// A region database of one test on the local PostgreSQL (`hms+{tag}-{pid}`):
/// dropped first (a crashed run leaves nothing behind) and again when this
/// is dropped (declare it before what opens it).
pub struct RegionDb {
    name: String,
}

impl RegionDb {
    /// A fresh one; none when PostgreSQL cannot be reached (a skip, said so;
    /// a failure under `CI=true`).
    pub fn fresh(tag: &str) -> Option<RegionDb> {
        if !available(Backend::Postgres) {
            return None;
        }
        let db = RegionDb {
            name: format!("hms+{tag}-{}", std::process::id()),
        };
        crate::store::registry::pg::drop_database(&pg_admin(), &db.name).expect("drop");
        Some(db)
    }

    /// Opens it as an instance's registry does (migrated).
    pub fn open(&self) -> Arc<crate::store::registry::RegistryDb> {
        let target = crate::store::pg_tls::PgTarget::parse(&pg_admin()).expect("target");
        Arc::new(
            crate::store::registry::RegistryDb::open_postgres(target, &self.name)
                .expect("registry"),
        )
    }
}

impl Drop for RegionDb {
    fn drop(&mut self) {
        let _ = crate::store::registry::pg::drop_database(&pg_admin(), &self.name);
    }
}
