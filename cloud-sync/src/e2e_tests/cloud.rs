//! A cloud opened from its configuration and served as `hms-cloud run`
//! does, on each store backend: told to stop, it stops serving and ends its
//! background tasks, even with a request to a DR peer that never answers in
//! flight.

use std::time::Duration;

use hms_domain::HospitalId;
use hms_e2e::client::Conn;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::cloud::Cloud;
use crate::enrolment::{Enrolment, enroll_durably};
use crate::store::postgres::PgRouter;
use crate::store::{SqliteRouter, conformance, ingest};
use crate::testkit::{Backend, available, batch, id, off_runtime, pg_admin, unique_hospital};

/// Guard against a hang, not a timing: stopping takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

on_each_backend!(
    #[tokio::test]
    serve_returns_promptly_once_cancelled_with_the_dr_peer_silent_and_the_empi_idle,
);

/// Drops a hospital's PostgreSQL database when the test ends, however it ends.
struct DropDatabase(Option<(PgRouter, HospitalId)>);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        if let Some((router, h)) = self.0.take() {
            let _ = off_runtime(|| router.drop_database(&h));
            // The region's database of the test (its DR lease).
            let _ = off_runtime(|| router.drop_named(&format!("hms+{h}")));
        }
    }
}

async fn serve_returns_promptly_once_cancelled_with_the_dr_peer_silent_and_the_empi_idle(
    backend: Backend,
) {
    if !available(backend) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A hospital of its own: on PostgreSQL its database is named after it.
    let h = unique_hospital("serve");
    let (_, public) = cloud_sync_client::generate_key().expect("key");
    let (_cleanup, pg_config) = match backend {
        Backend::Sqlite => (DropDatabase(None), String::new()),
        Backend::Postgres => (
            DropDatabase(Some((
                PgRouter::new(pg_admin()).expect("PostgreSQL router"),
                h.clone(),
            ))),
            // The region's own database (the DR lease), of this test alone.
            format!(
                "backend = \"postgres\"\npostgres = \"{}\"\nregion_database = \"hms+{h}\"\n",
                pg_admin()
            ),
        ),
    };
    // It holds events (and is enrolled, below), so the replicator has work.
    {
        let log = batch(h.as_str(), &conformance::log(h.as_str(), 5));
        off_runtime(|| -> anyhow::Result<()> {
            match backend {
                Backend::Sqlite => {
                    ingest(&mut SqliteRouter::new(&data).open(&h)?, &log)?;
                }
                Backend::Postgres => {
                    let router = PgRouter::new(pg_admin())?;
                    router.drop_database(&h)?;
                    ingest(&mut router.open(&h)?, &log)?;
                }
            }
            Ok(())
        })
        .expect("ingest");
    }
    // A DR peer that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (dr_key, _) = cloud_sync_client::generate_key().expect("key");
    std::fs::write(dir.path().join("primary.pk8"), dr_key).expect("write");
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{pg_config}\
             allowed_dr_regions = [\"eu-central\"]\n\
             [dr]\npeer = \"http://{}\"\npeer_region = \"eu-central\"\nkey_file = \"primary.pk8\"\n",
            silent.local_addr().expect("addr")
        ),
    )
    .expect("write");
    let config = crate::config::load(&config).expect("config");
    {
        // In the registry of the backend (the region's database on PostgreSQL).
        let (reg, db) = config.open_registry().expect("registry");
        enroll_durably(
            &reg,
            &db,
            Enrolment {
                hospital: h.clone(),
                region: id("eu-west"),
                node: id("edge-1"),
                public_key: public,
            },
        )
        .expect("enrol");
    }
    let cloud = Cloud::open(config).expect("open");
    let empi = cloud.state().empi.clone();
    if backend == Backend::Sqlite {
        assert!(empi.get().is_some(), "the EMPI runs (idle)");
    }
    let status = cloud.state().replication.clone().expect("replication");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    assert_eq!(
        cloud.ready_line(addr),
        format!("hms-cloud ready http=http://{addr}")
    );
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(cloud.serve(listener, shutdown.clone()));
    // It serves, and keeps this connection open.
    let mut c = Conn::connect(addr, None).await.expect("connect");
    let health = c.get("/health").await.expect("health");
    assert_eq!(health.status, 200);
    // On PostgreSQL the EMPI runs once this instance holds the region's
    // EMPI lease (at once: it is the only one).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while empi.get().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the EMPI never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The replicator sends the silent peer the hospital's standby report: the
    // request arrives whole and stays unanswered.
    let (mut peer, _) = tokio::time::timeout(PATIENCE, silent.accept())
        .await
        .expect("the replicator connected to its peer")
        .expect("accept");
    let mut request = vec![];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(PATIENCE, peer.read(&mut buf))
            .await
            .expect("the request came")
            .expect("read");
        assert!(n > 0, "the replicator hung up");
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    // First the hospital's standby report (its enrolment, for a takeover).
    assert!(request.starts_with("PUT /sync/v1/standby "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("x-hms-hospital: {h}\r\n")),
        "{request}"
    );
    let lag = status.snapshot()[&h].clone();
    assert_eq!(
        (lag.primary_seq, lag.replica_seq, lag.last_error),
        (5, None, None),
        "in flight: the peer never answered, nothing failed yet"
    );

    shutdown.cancel();
    let done = tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve returned after the cancellation")
        .expect("the serve task");
    assert!(done.is_ok(), "{done:?}");
    // Nothing listens any more, and the request in flight was abandoned.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let mut rest = vec![];
    let n = tokio::time::timeout(PATIENCE, peer.read_to_end(&mut rest))
        .await
        .expect("the replicator hung up")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more was sent");
}
