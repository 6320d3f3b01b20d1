//! A cloud opened from its configuration and served as `hms-cloud run`
//! does: told to stop, it stops serving and ends its background tasks, even
//! with a DR peer that never answers.

use std::time::Duration;

use hms_e2e::client::Conn;
use tokio_util::sync::CancellationToken;

use crate::cloud::Cloud;
use crate::enrolment::{Enrolment, enroll_durably, open_registry};
use crate::store::{SqliteRouter, conformance, ingest};
use crate::testkit::{batch, id};

/// Guard against a hang, not a timing: stopping takes milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn serve_returns_promptly_once_cancelled_with_the_dr_peer_silent_and_the_empi_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // h1 is enrolled and holds events, so the replicator has work.
    let (_, public) = cloud_sync_client::generate_key().expect("key");
    {
        let (reg, db) = open_registry(&data, id("eu-west")).expect("registry");
        enroll_durably(
            &reg,
            &db,
            Enrolment {
                hospital: id("h1"),
                region: id("eu-west"),
                node: id("edge-1"),
                public_key: public,
            },
        )
        .expect("enrol");
        let mut store = SqliteRouter::new(&data).open(&id("h1")).expect("open");
        ingest(&mut store, &batch("h1", &conformance::log("h1", 5))).expect("ingest");
    }
    // A DR peer that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (dr_key, _) = cloud_sync_client::generate_key().expect("key");
    std::fs::write(dir.path().join("primary.pk8"), dr_key).expect("write");
    let config = dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             allowed_dr_regions = [\"eu-central\"]\n\
             [dr]\npeer = \"http://{}\"\npeer_region = \"eu-central\"\nkey_file = \"primary.pk8\"\n",
            silent.local_addr().expect("addr")
        ),
    )
    .expect("write");
    let cloud = Cloud::open(crate::config::load(&config).expect("config")).expect("open");
    assert!(cloud.state().empi.is_some(), "the EMPI runs (idle)");
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
    // The replicator is asking the silent peer for its position.
    let h1: hms_domain::HospitalId = id("h1");
    tokio::time::timeout(
        PATIENCE,
        status.wait_until(|m| m.get(&h1).is_some_and(|s| s.primary_seq == 5)),
    )
    .await
    .expect("replication started");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        status.snapshot()[&h1].replica_seq,
        None,
        "the peer never answered"
    );

    shutdown.cancel();
    let done = tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve returned after the cancellation")
        .expect("the serve task");
    assert!(done.is_ok(), "{done:?}");
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    drop(silent);
}
