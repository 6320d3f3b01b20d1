//! The HL7 feed over a real MLLP socket: ADT semantics on the board and in
//! the log, duplicates, parking, and robustness of the framing.

use std::time::Duration;

use edge_node::integration::client::{AckLine, send};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestApp;

/// An ADT message for visit V1 of patient MRN-1 at location `pl`.
fn adt(trigger: &str, control: &str, pl: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^{trigger}^ADT_A01|{control}|P|2.5.1\r\
         EVN|{trigger}|20261127101500\r\
         PID|1||MRN-1^^^TH^MR||Doe^Jane||19700102|F\r\
         PV1|1|I|{pl}||||||||||||||||V1\r"
    )
    .into_bytes()
}

async fn send_all(app: &TestApp, msgs: &[Vec<u8>]) -> Vec<AckLine> {
    send(app.mllp, msgs, Duration::from_secs(10)).await.unwrap()
}

async fn bed(app: &TestApp, id: &str) -> serde_json::Value {
    let mut c = app.conn(&app.nurse).await;
    c.get(&format!("/api/v1/beds/{id}"))
        .await
        .unwrap()
        .json()
        .unwrap()["bed"]
        .clone()
}

fn events(app: &TestApp) -> Vec<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT kind, subject FROM events WHERE kind NOT LIKE 'bed.commissioned' \
             AND kind NOT LIKE 'audit.token_%' ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admit_transfer_discharge_and_cancelled_discharge() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    // 3W-000 is PL 3W^0^0^TH, 3W-002 is 3W^1^2^TH.
    let acks = send_all(
        &app,
        &[
            adt("A01", "C1", "3W^0^0^TH"),
            adt("A02", "C2", "3W^1^2^TH"),
            adt("A03", "C3", "3W^1^2^TH"),
            adt("A13", "C4", "3W^1^2^TH"),
        ],
    )
    .await;
    let codes: Vec<_> = acks
        .iter()
        .map(|a| (a.control_id.as_str(), a.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [("C1", "AA"), ("C2", "AA"), ("C3", "AA"), ("C4", "AA")],
        "{acks:?}"
    );
    // The transfer left 3W-000 dirty; the cancelled discharge put V1 back in 3W-002.
    let b0 = bed(&app, "3W-000").await;
    assert_eq!(b0["state"], "vacant_dirty");
    let b2 = bed(&app, "3W-002").await;
    assert_eq!(b2["state"], "occupied");
    assert_eq!(b2["encounter"], "V1");
    assert_eq!(b2["patient"]["mrn"], "MRN-1");
    assert_eq!(b2["patient"]["name"], "Doe, Jane");
    assert_eq!(b2["patient"]["sex"], "female");
    let kinds: Vec<String> = events(&app).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "adt.patient_recorded",
            "bed.assigned",
            "integration.hl7_message",
            "adt.patient_recorded",
            "bed.transferred_out",
            "bed.transferred_in",
            "integration.hl7_message",
            "adt.patient_recorded",
            "bed.released",
            "integration.hl7_message",
            "adt.patient_recorded",
            "bed.readmitted",
            "integration.hl7_message",
        ]
    );
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_gets_the_identical_ack_and_changes_nothing() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let msg = adt("A01", "DUP-1", "3W^0^0^TH");
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let mut acks = vec![];
    for _ in 0..2 {
        s.write_all(&edge_node::integration::mllp::Framer::encode(&msg))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = vec![];
        while !got.ends_with(b"\x1c\r") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        acks.push(got);
    }
    assert_eq!(acks[0], acks[1], "byte-identical ACKs");
    assert!(String::from_utf8_lossy(&acks[0]).contains("MSA|AA|DUP-1"));
    let hl7_events = events(&app)
        .iter()
        .filter(|(k, _)| k == "integration.hl7_message")
        .count();
    assert_eq!(hl7_events, 1);
    assert_eq!(bed(&app, "3W-000").await["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_locations_and_unsupported_triggers_are_parked_with_ae() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let acks = send_all(
        &app,
        &[
            // Inside the managed unit 3W, but no such room/bed.
            adt("A01", "P1", "3W^9^9^TH"),
            adt("A99", "P2", "3W^0^0^TH"),
            adt("A03", "P3", "3W^0^0^TH"),
        ],
    )
    .await;
    assert_eq!(acks[0].code, "AE");
    assert!(
        acks[0].error.as_deref().unwrap().contains("parked"),
        "{acks:?}"
    );
    assert_eq!(acks[1].code, "AE");
    assert!(acks[1].error.as_deref().unwrap().contains("A99"));
    assert_eq!(acks[2].code, "AE", "a discharge of a visit holding no bed");
    // Nothing changed on the board; every message is kept for replay.
    assert_eq!(bed(&app, "3W-000").await["state"], "vacant_clean");
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let parked: i64 = conn
        .query_row("SELECT count(*) FROM parked", [], |r| r.get(0))
        .unwrap();
    assert_eq!(parked, 3);
    // The AE ACK carries the ERR location of the unknown bed.
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    s.write_all(&edge_node::integration::mllp::Framer::encode(&adt(
        "A01",
        "P4",
        "3W^1^7^TH",
    )))
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.contains("MSA|AE|P4") && text.contains("ERR||PV1^1^3|204^"),
        "{text}"
    );
    assert!(!text.contains("Doe"), "no PHI in the ACK: {text}");
    // Counted by outcome and ACK code.
    let mut anon = hms_e2e::client::Conn::connect(app.addr, None)
        .await
        .unwrap();
    let metrics = String::from_utf8(anon.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    for needle in [
        "hms_hl7_messages_total{kind=\"parked\"} 4",
        "hms_hl7_acks_total{kind=\"AE\"} 4",
        "hms_mllp_frames_total 4",
        "hms_hl7_ack_duration_seconds_count 4",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_off_the_board_and_no_effect_triggers_are_accepted_not_parked() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let acks = send_all(
        &app,
        &[
            // Emergency: not a managed point of care.
            adt("A01", "O1", "ED^^^TH"),
            adt("A08", "O2", "ED^^^TH"),
            // Adverse reaction, account move, unlink: stored, no effect.
            adt("A60", "O3", "ED^^^TH"),
            adt("A44", "O4", "ED^^^TH"),
            adt("A37", "O5", "ED^^^TH"),
            // From the emergency department into a managed bed: admitted to the board.
            adt("A02", "O6", "3W^0^0^TH"),
            // Out to another site: the bed is released.
            adt("A02", "O7", "OTHER^1^1^SITE2"),
            adt("A03", "O8", "OTHER^1^1^SITE2"),
        ],
    )
    .await;
    let codes: Vec<&str> = acks.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["AA"; 8], "{acks:?}");
    assert_eq!(bed(&app, "3W-000").await["state"], "vacant_dirty");
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let parked: i64 = conn
        .query_row("SELECT count(*) FROM parked", [], |r| r.get(0))
        .unwrap();
    assert_eq!(parked, 0);
    // The visit is in the registry although it began off the board.
    let known: i64 = conn
        .query_row(
            "SELECT count(*) FROM encounters WHERE encounter_id = 'V1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(known, 1);
    let kinds: Vec<String> = events(&app).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "integration.hl7_message")
            .count(),
        8,
        "every message is stored: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_control_id_is_a_new_message_answered_for_itself() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let admit = adt("A01", "MSG00001", "3W^0^0^TH");
    // Same sender keys and control id, another patient, another trigger.
    let register = b"MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101600||ADT^A28^ADT_A05|MSG00001|P|2.5.1\r\
EVN|A28|20261127101600\rPID|1||MRN-2^^^TH^MR||Roe^Rita||19800101|F\r"
        .to_vec();
    // The admit again, sent a minute later: a duplicate despite its new MSH-7.
    let resend = String::from_utf8(admit.clone())
        .unwrap()
        .replacen("20261127101500", "20261127101700", 1)
        .into_bytes();
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let mut acks = vec![];
    for m in [&admit, &register, &resend] {
        s.write_all(&edge_node::integration::mllp::Framer::encode(m))
            .await
            .unwrap();
        acks.push(read_acks(&mut s, 1).await.unwrap());
    }
    assert!(acks[0].contains("ACK^A01^ACK") && acks[0].contains("MSA|AA|MSG00001"));
    assert!(
        acks[1].contains("ACK^A28^ACK") && acks[1].contains("MSA|AA|MSG00001"),
        "the A28 is answered for its own content: {}",
        acks[1]
    );
    assert_ne!(acks[0], acks[1]);
    assert_eq!(
        acks[2], acks[0],
        "the resend gets the stored ACK, byte for byte"
    );
    // The A28 was applied: its patient is in the index.
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let recorded: i64 = conn
        .query_row(
            "SELECT count(*) FROM patients WHERE mrn = 'MRN-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 1);
    let stored: i64 = conn
        .query_row(
            "SELECT count(*) FROM hl7_messages WHERE control_id = 'MSG00001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 2, "two messages under one control id");
    assert_eq!(
        bed(&app, "3W-000").await["version"],
        2,
        "the admit applied once"
    );
    let mut anon = hms_e2e::client::Conn::connect(app.addr, None)
        .await
        .unwrap();
    let metrics = String::from_utf8(anon.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    for needle in [
        "hms_hl7_control_id_reused_total 1",
        "hms_hl7_messages_total{kind=\"duplicate\"} 1",
        "hms_hl7_messages_total{kind=\"applied\"} 2",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}

/// Reads until `want` ACK frames have arrived (10 s at most).
async fn read_acks(
    s: &mut tokio::net::TcpStream,
    want: usize,
) -> Result<String, tokio::time::error::Elapsed> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.iter().filter(|&&b| b == 0x1c).count() < want {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_robustness_over_a_socket() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    // Junk before VT: skipped, and the frame after it is acknowledged.
    let mut bytes = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    bytes.extend(edge_node::integration::mllp::Framer::encode(&adt(
        "A01",
        "J1",
        "3W^0^0^TH",
    )));
    s.write_all(&bytes).await.unwrap();
    let text = read_acks(&mut s, 1).await.unwrap();
    assert!(text.contains("MSA|AA|J1"), "{text}");
    let mut anon = hms_e2e::client::Conn::connect(app.addr, None)
        .await
        .unwrap();
    let metrics = String::from_utf8(anon.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert!(metrics.contains("hms_mllp_resyncs_total 1"), "{metrics}");
    assert!(
        metrics.contains("hms_mllp_skipped_bytes_total 18"),
        "{metrics}"
    );
    // Two frames in one write: two ACKs, in order.
    let mut two = edge_node::integration::mllp::Framer::encode(&adt("A02", "J2", "3W^1^2^TH"));
    two.extend(edge_node::integration::mllp::Framer::encode(&adt(
        "A03",
        "J3",
        "3W^1^2^TH",
    )));
    s.write_all(&two).await.unwrap();
    let text = read_acks(&mut s, 2).await.unwrap();
    let (a, b) = (
        text.find("MSA|AA|J2").unwrap(),
        text.find("MSA|AA|J3").unwrap(),
    );
    assert!(a < b, "{text}");
    // A malformed message: AR with an ERR, and the connection stays up.
    s.write_all(&edge_node::integration::mllp::Framer::encode(
        b"MSH|^~|broken|header|\rPID|1\r",
    ))
    .await
    .unwrap();
    let text = read_acks(&mut s, 1).await.unwrap();
    assert!(
        text.contains("MSA|AR|") && text.contains("\rERR|"),
        "{text}"
    );
    // An over-limit frame (default 1 MiB): AR, and the connection after it works.
    let mut big = adt("A08", "BIG", "3W^0^0^TH");
    big.extend(std::iter::repeat_n(b'x', (1 << 20) + 10));
    s.write_all(&edge_node::integration::mllp::Framer::encode(&big))
        .await
        .unwrap();
    let text = read_acks(&mut s, 1).await.unwrap();
    assert!(
        text.contains("MSA|AR|BIG") && text.contains("exceeds"),
        "{text}"
    );
    s.write_all(&edge_node::integration::mllp::Framer::encode(&adt(
        "A08",
        "AFTER",
        "3W^0^0^TH",
    )))
    .await
    .unwrap();
    let text = read_acks(&mut s, 1).await.unwrap();
    assert!(text.contains("MSA|AA|AFTER"), "{text}");
    // A client that disconnects mid-frame does no harm.
    let mut half = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    half.write_all(b"\x0bMSH|^~\\&|EPIC|TH|HMS|EDGE|2026||ADT^A01|HALF")
        .await
        .unwrap();
    drop(half);
    let acks = send_all(&app, &[adt("A08", "LATER", "3W^0^0^TH")]).await;
    assert_eq!(acks[0].code, "AA");
    // Nothing was stored for the half frame.
    assert!(!events(&app).is_empty());
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let half_rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM hl7_messages WHERE control_id = 'HALF'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(half_rows, 0);
    // The board API agrees with the feed: 3W-002 is dirty after the discharge
    // (commissioned v1, transferred in v2, released v3) and can be cleaned.
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/beds/3W-002/status",
            &json!({ "status": "clean", "version": 3 }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_without_cr_times_out_in_strict_mode_and_is_accepted_when_tolerated() {
    let msg = adt("A01", "F1", "3W^0^0^TH");
    let mut frame = vec![0x0b];
    frame.extend_from_slice(&msg);
    frame.push(0x1c); // no CR
    // Strict (the default): no ACK; the partial-frame timeout closes the
    // connection, it never hangs; a new connection works.
    let app = TestApp::start_with(&[("3W", 2, 2)], |c| c.mllp.frame_timeout_s = 1).await;
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the appliance closed the connection")
        .unwrap();
    assert_eq!(n, 0, "no ACK for an unterminated frame");
    let acks = send_all(&app, &[adt("A01", "F2", "3W^0^0^TH")]).await;
    assert_eq!(acks[0].code, "AA");
    app.stop().await;
    // Tolerant: FS alone ends the frame.
    let app = TestApp::start_with(&[("3W", 2, 2)], |c| c.mllp.tolerate_missing_cr = true).await;
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let text = read_acks(&mut s, 1).await.unwrap();
    assert!(text.contains("MSA|AA|F1"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_one_frame_is_acknowledged_per_message() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    let mut batch = b"FHS|^~\\&|EPIC|TH\rBHS|^~\\&|EPIC|TH\r".to_vec();
    batch.extend(adt("A01", "B1", "3W^0^0^TH"));
    // A bed the managed unit 3W does not have: parked.
    batch.extend(adt("A02", "B2", "3W^9^9^TH"));
    batch.extend(adt("A03", "B3", "3W^0^0^TH"));
    batch.extend(b"BTS|3\rFTS|1\r");
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    s.write_all(&edge_node::integration::mllp::Framer::encode(&batch))
        .await
        .unwrap();
    let text = read_acks(&mut s, 3).await.unwrap();
    let order: Vec<usize> = ["MSA|AA|B1", "MSA|AE|B2", "MSA|AA|B3"]
        .iter()
        .map(|n| {
            text.find(n)
                .unwrap_or_else(|| panic!("{n} missing in {text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(bed(&app, "3W-000").await["state"], "vacant_dirty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_index_keeps_identifiers_address_phone_and_visits() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let a04 = "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127||ADT^A04^ADT_A01|R1|P|2.5.1\r\
               PID|1||MRN-5^^^TH^MR~9434765919^^^NHS^NH||Smith^Anna||19850203|F|||\
               1 High Street^^Leeds^^LS1 4AB^GB||+44 113 496 0000\r\
               PV1|1|O|||||||||||||||||V55\r";
    let acks = send_all(&app, &[a04.as_bytes().to_vec()]).await;
    assert_eq!(acks[0].code, "AA");
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let (name, ids, address, phone): (String, String, String, String) = conn
        .query_row(
            "SELECT name, identifiers, address, phone FROM patients WHERE mrn = 'MRN-5'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(name, "Smith, Anna");
    let ids: serde_json::Value = serde_json::from_str(&ids).unwrap();
    assert_eq!(
        ids,
        json!([
            { "id": "MRN-5", "authority": "TH", "kind": "MR" },
            { "id": "9434765919", "authority": "NHS", "kind": "NH" }
        ])
    );
    assert_eq!(address, "1 High Street, Leeds, LS1 4AB, , GB");
    assert_eq!(phone, "+44 113 496 0000");
    let (status, class, mrn): (String, String, String) = conn
        .query_row(
            "SELECT status, class, mrn FROM encounters WHERE encounter_id = 'V55'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (status.as_str(), class.as_str(), mrn.as_str()),
        ("registered", "O", "MRN-5")
    );
    drop(conn);
    let dir = app.stop().await;
    assert!(
        edge_node::store::verify::verify(&dir.path().join("data"))
            .unwrap()
            .ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls() {
    use std::sync::Arc;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem_dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        pem_dir.path().join("cert.pem"),
        pem_dir.path().join("key.pem"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = firmware_config::MllpTls {
        cert: cert.clone(),
        key,
    };
    let app = TestApp::start_with(&[("3W", 2, 2)], move |c| c.mllp.tls = Some(tls)).await;
    // A client that trusts the appliance's certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(&edge_node::integration::mllp::Framer::encode(&adt(
        "A01",
        "T1",
        "3W^0^0^TH",
    )))
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"\x1c\r") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("MSA|AA|T1"));
    // Plain MLLP to the TLS port is not processed: no ACK, the connection closes.
    let mut plain = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    plain
        .write_all(&edge_node::integration::mllp::Framer::encode(&adt(
            "A01",
            "T2",
            "3W^1^1^TH",
        )))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(15), plain.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(r, Ok(0) | Err(_)) || !String::from_utf8_lossy(&buf).contains("MSA|"),
        "{r:?}"
    );
    assert_eq!(bed(&app, "3W-000").await["state"], "occupied");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_shows_in_both_beds_histories() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/hl7/a17_swap.hl7");
    let corpus = std::fs::read(path).unwrap();
    // a17_swap.hl7 uses ICU^0^0^TH for the second bed; this hospital has 3W only.
    let text = String::from_utf8(corpus)
        .unwrap()
        .replace("ICU^0^0^TH", "3W^1^2^TH");
    let msgs = edge_node::integration::hl7::split_messages(text.as_bytes());
    let acks = send_all(&app, &msgs).await;
    assert!(acks.iter().all(|a| a.code == "AA"), "{acks:?}");
    let mut c = app.conn(&app.nurse).await;
    for (bed, now) in [("3W-000", "V2"), ("3W-002", "V1")] {
        let v = c
            .get(&format!("/api/v1/beds/{bed}"))
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["bed"]["encounter"], now);
        assert_eq!(v["history"][0]["kind"], "bed.swapped", "{bed}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_is_a_reject_ack_and_the_resend_is_applied() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let db = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    // Simulate a failing disk: every event insert aborts.
    db.execute_batch(
        "CREATE TRIGGER fail_inserts BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'simulated IO failure'); END;",
    )
    .unwrap();
    let msg = adt("A01", "D1", "3W^0^0^TH");
    let acks = send_all(&app, std::slice::from_ref(&msg)).await;
    assert_eq!(acks[0].code, "AR", "{acks:?}");
    assert!(acks[0].error.as_deref().unwrap().contains("resend"));
    assert_eq!(bed(&app, "3W-000").await["state"], "vacant_clean");
    // The disk recovers; the sender resends the same message: it is applied,
    // not treated as a duplicate (nothing of the first attempt was stored).
    db.execute_batch("DROP TRIGGER fail_inserts").unwrap();
    let acks = send_all(&app, &[msg]).await;
    assert_eq!(acks[0].code, "AA", "{acks:?}");
    assert_eq!(bed(&app, "3W-000").await["state"], "occupied");
    drop(db);
    let dir = app.stop().await;
    assert!(
        edge_node::store::verify::verify(&dir.path().join("data"))
            .unwrap()
            .ok()
    );
}

/// An A01 for visit `visit` of patient `mrn` at `pl`, stamped `ts` (MSH-7
/// and EVN-2).
fn a01_at(control: &str, ts: &str, mrn: &str, visit: &str, pl: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|{ts}||ADT^A01^ADT_A01|{control}|P|2.5.1\r\
         EVN|A01|{ts}\r\
         PID|1||{mrn}^^^TH^MR||Doe^Jane||19700102|F\r\
         PV1|1|I|{pl}||||||||||||||||{visit}\r"
    )
    .into_bytes()
}

/// The source time (`occurred_at`) of the `bed.assigned` event of message
/// `control`, as RFC 3339.
fn assigned_at(app: &TestApp, control: &str) -> String {
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let ms: i64 = conn
        .query_row(
            "SELECT occurred_at FROM events WHERE kind = 'bed.assigned' AND correlation = ?1",
            [control],
            |r| r.get(0),
        )
        .unwrap();
    hms_domain::Timestamp::from_millis(ms).to_rfc3339()
}

/// Sends `content` in one MLLP frame on a new connection and returns the
/// first ACK's MSH-7.
async fn ack_msh7(app: &TestApp, content: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    s.write_all(&edge_node::integration::mllp::Framer::encode(content))
        .await
        .unwrap();
    let mut got = vec![];
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"\x1c\r") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let msh = text.trim_start_matches('\x0b');
    assert!(msh.starts_with("MSH|"), "{text:?}");
    msh.split('|').nth(6).unwrap().to_owned()
}

/// Warsaw's UTC offset as HL7 writes it, at an instant close to now (either
/// side of the call, should a DST change fall in between).
fn warsaw_offsets_now() -> Vec<String> {
    let tz = jiff::tz::TimeZone::get("Europe/Warsaw").unwrap();
    let now = jiff::Timestamp::now();
    [
        now - jiff::SignedDuration::from_secs(60),
        now + jiff::SignedDuration::from_secs(60),
    ]
    .iter()
    .map(|t| match tz.to_offset(*t).seconds() {
        3600 => "+0100".to_owned(),
        7200 => "+0200".to_owned(),
        other => panic!("Warsaw is at +01:00 or +02:00, not {other} s"),
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_without_an_offset_are_the_hospitals_local_time() {
    let warsaw = jiff::tz::TimeZone::get("Europe/Warsaw").unwrap();
    let app = TestApp::start_with(&[("3W", 4, 2)], move |c| {
        c.node.timezone = warsaw;
        c.mllp.max_frame_bytes = 2048;
    })
    .await;
    let acks = send_all(
        &app,
        &[
            // 02:30 on 2026-03-29 never shows on a Warsaw clock (02:00 CET
            // became 03:00 CEST): read with the offset before the gap, +01:00.
            a01_at("GAP", "20260329023000", "MRN-1", "V1", "3W^0^0^TH"),
            // 02:30 on 2026-10-25 shows twice: the first pass, CEST (+02:00).
            a01_at("FOLD", "20261025023000", "MRN-2", "V2", "3W^0^1^TH"),
            // A winter morning: CET.
            a01_at("WINTER", "20260115083000", "MRN-3", "V3", "3W^1^2^TH"),
            // An explicit offset means exactly that.
            a01_at("OFFSET", "20260115083000-0500", "MRN-4", "V4", "3W^1^3^TH"),
        ],
    )
    .await;
    assert!(acks.iter().all(|a| a.code == "AA"), "{acks:?}");
    assert_eq!(assigned_at(&app, "GAP"), "2026-03-29T01:30:00.000Z");
    assert_eq!(assigned_at(&app, "FOLD"), "2026-10-25T00:30:00.000Z");
    assert_eq!(assigned_at(&app, "WINTER"), "2026-01-15T07:30:00.000Z");
    assert_eq!(assigned_at(&app, "OFFSET"), "2026-01-15T13:30:00.000Z");
    assert_eq!(bed(&app, "3W-000").await["encounter"], "V1");

    // The ACK's MSH-7 is the appliance's time in Warsaw, with its offset:
    // from the writer (a stored message)…
    let offsets = warsaw_offsets_now();
    let applied = ack_msh7(
        &app,
        &a01_at("ACK1", "20260115083000", "MRN-5", "V5", "3W^1^3^TH"),
    )
    .await;
    // …and from the listener (a frame over the limit, never stored).
    let mut big = a01_at("ACK2", "20260115083000", "MRN-6", "V6", "3W^1^3^TH");
    big.extend(std::iter::repeat_n(b'x', 4096));
    let rejected = ack_msh7(&app, &big).await;
    for msh7 in [&applied, &rejected] {
        assert_eq!(msh7.len(), 19, "YYYYMMDDHHMMSS+HHMM: {msh7}");
        assert!(
            offsets.iter().any(|o| msh7.ends_with(o.as_str())),
            "{msh7} {offsets:?}"
        );
        // It reads back as now, give or take the test's run time.
        let t = edge_node::integration::hl7::time::HospitalTime::utc()
            .parse(msh7)
            .unwrap();
        let age = hms_domain::Timestamp::now().as_millis() - t.as_millis();
        assert!((0..120_000).contains(&age), "{msh7} is {age} ms old");
    }
    app.stop().await;
}

/// An admit into 3W bed `bed` (0 to 3) whose MSH-18 is `msh18` and whose
/// PID-5 is `name`, raw bytes; control id, MRN and visit are named `id`.
fn admit_in(msh18: &str, id: &str, bed: usize, name: &[u8]) -> Vec<u8> {
    let pl = format!("3W^{}^{bed}^TH", bed / 2);
    let mut m = format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^A01^ADT_A01|{id}|P|2.5.1|||||PL|{msh18}\r\
         EVN|A01|20261127101500\rPID|1||MRN-{id}^^^TH^MR||"
    )
    .into_bytes();
    m.extend_from_slice(name);
    m.extend_from_slice(format!("||19700102|F\rPV1|1|I|{pl}||||||||||||||||V-{id}\r").as_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polish_and_czech_names_in_windows_1250_and_8859_2_read_back() {
    let app = TestApp::start(&[("3W", 4, 2)]).await;
    // The same names in two encodings that differ in Ś, ą, Š, ť and ž:
    // Świątek^Iga and Šťastná^Božena in windows-1250, then in ISO 8859-2.
    let msgs = [
        admit_in("WINDOWS-1250", "W1", 0, b"\x8cwi\xb9tek^Iga"),
        admit_in("cp1250", "W2", 1, b"\x8a\x9dastn\xe1^Bo\x9eena"),
        admit_in("8859/2", "L1", 2, b"\xa6wi\xb1tek^Iga"),
        admit_in("8859/2", "L2", 3, b"\xa9\xbbastn\xe1^Bo\xbeena"),
    ];
    let acks = send_all(&app, &msgs).await;
    let codes: Vec<_> = acks.iter().map(ToString::to_string).collect();
    assert_eq!(codes, ["W1 AA", "W2 AA", "L1 AA", "L2 AA"]);
    for (id, name) in [
        ("3W-000", "Świątek, Iga"),
        ("3W-001", "Šťastná, Božena"),
        ("3W-002", "Świątek, Iga"),
        ("3W-003", "Šťastná, Božena"),
    ] {
        let b = bed(&app, id).await;
        assert_eq!(b["state"], "occupied", "{id}: {b}");
        assert_eq!(b["patient"]["name"], name, "{id}");
    }
    // Bytes that are not of the named set are refused, never garbled; an
    // unknown MSH-18 is refused at MSH-18.
    let acks = send_all(
        &app,
        &[
            admit_in("8859/6", "X1", 0, b"\xa1"),
            admit_in("UNICODE UTF-8", "X2", 0, b"\x8cwi"),
            admit_in("ISO IR87", "X3", 0, b"Doe^Jane"),
        ],
    )
    .await;
    let codes: Vec<_> = acks.iter().map(ToString::to_string).collect();
    expect_test::expect![[r#"
        [
            "X1 AR byte 129 is not a character of 8859/6",
            "X2 AR invalid UTF-8 at byte 136",
            "X3 AR @MSH^1^18 MSH-18 names a character set this appliance does not decode",
        ]
    "#]]
    .assert_debug_eq(&codes);
}

/// Connects from `ip` (a loopback address of this machine) to `to`.
async fn connect_from(ip: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Sends one admit and reads what comes back until the peer closes or an
/// ACK frame is complete (10 s at most).
async fn admit_over(s: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), control: &str) -> String {
    let _ = s
        .write_all(&edge_node::integration::mllp::Framer::encode(&adt(
            "A01",
            control,
            "3W^0^0^TH",
        )))
        .await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"\x1c\r") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_allow_list_per_peer_cap_and_first_frame_timeout() {
    let app = TestApp::start_with(&[("3W", 2, 2)], |c| {
        c.mllp.allow = Some(vec![
            "127.0.0.2/32".parse().unwrap(),
            "127.0.0.64/26".parse().unwrap(),
        ]);
        c.mllp.first_frame_timeout_s = 1;
    })
    .await;
    // Off the list: closed before anything is read, nothing stored.
    let mut outsider = connect_from("127.0.0.1", app.mllp).await;
    let got = admit_over(&mut outsider, "X1").await;
    assert!(!got.contains("MSA|"), "{got}");
    // The default share of one address is 8 connections: 64 idle sockets
    // from one allowed address do not block the sending system at another.
    let mut idle = vec![];
    for _ in 0..64 {
        idle.push(connect_from("127.0.0.2", app.mllp).await);
    }
    let mut sender = connect_from("127.0.0.70", app.mllp).await;
    let got = admit_over(&mut sender, "OK1").await;
    assert!(got.contains("MSA|AA|OK1"), "{got}");
    // The idle ones that got a slot are closed once their first frame is
    // overdue; the others were closed at once.
    for s in &mut idle {
        let mut b = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    }
    assert_eq!(bed(&app, "3W-000").await["state"], "occupied");
    let mut anon = hms_e2e::client::Conn::connect(app.addr, None)
        .await
        .unwrap();
    let metrics = String::from_utf8(anon.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    for needle in [
        "hms_mllp_connections_refused_total{reason=\"not_allowed\"} 1",
        "hms_mllp_connections_refused_total{reason=\"peer\"} 56",
        "hms_mllp_frames_total 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_mutual_tls_needs_a_client_certificate_from_the_hospital_ca() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_cert = rcgen::CertificateParams::new(vec!["adt-engine".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("cert.pem"), server.cert.pem()).unwrap();
    std::fs::write(path("key.pem"), server.signing_key.serialize_pem()).unwrap();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    let (cert, key, ca_file) = (path("cert.pem"), path("key.pem"), path("ca.pem"));
    let app = TestApp::start_with(&[("3W", 2, 2)], move |c| {
        c.mllp.tls = Some(firmware_config::MllpTls { cert, key });
        c.mllp.client_ca = Some(ca_file);
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.der().clone()).unwrap();
    let builder = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
    };
    let name = || rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // Without a client certificate: no ACK, whatever the handshake does.
    let anonymous = tokio_rustls::TlsConnector::from(Arc::new(builder().with_no_client_auth()));
    let tcp = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    if let Ok(mut s) = anonymous.connect(name(), tcp).await {
        let got = admit_over(&mut s, "M0").await;
        assert!(!got.contains("MSA|"), "{got}");
    }
    // With the engine's certificate: served.
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(client_key.serialize_der()).unwrap();
    let engine = tokio_rustls::TlsConnector::from(Arc::new(
        builder()
            .with_client_auth_cert(vec![client_cert.der().clone()], key_der)
            .unwrap(),
    ));
    let tcp = tokio::net::TcpStream::connect(app.mllp).await.unwrap();
    let mut s = engine.connect(name(), tcp).await.unwrap();
    let got = admit_over(&mut s, "M1").await;
    assert!(got.contains("MSA|AA|M1"), "{got}");
}

#[test]
fn the_largest_frame_allowed_still_fits_one_sync_request() {
    // A frame of the largest size `mllp.max_frame_bytes` may be set to,
    // stored with an ACK as long as any the appliance builds.
    let raw = vec![b'X'; firmware_config::MAX_SYNCABLE_FRAME_BYTES];
    let ack = "A".repeat(4096);
    let body = hms_domain::EventBody::Hl7Message {
        sending_app: "S".repeat(227),
        sending_facility: "F".repeat(227),
        control_id: "C".repeat(199),
        message_type: "ADT^A01".into(),
        status: "parked".into(),
        ack_code: "AE".into(),
        reason: Some("R".repeat(1024)),
        raw_hex: hms_domain::event::to_hex(&raw),
        acks: vec![ack.clone(), ack],
    };
    let json = body.to_canonical_json();
    // The envelope (seq, times, actor, hashes) adds well under 1 KiB.
    let request = json.len() + 1024;
    let limit = 4 * cloud_sync_client::MAX_BATCH_BYTES;
    assert!(request < limit, "{request} bytes of JSON, limit {limit}");
}
