//! Data-driven tests over the HL7 corpus in `edge-node/test_data/hl7/`: each
//! file is sent over MLLP to a fresh appliance; the ACKs (code, ERR location,
//! reason), the beds that are not plain vacant-clean, and the parked count are
//! compared with the expectation, and the store must verify afterwards.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use expect_test::{Expect, expect};

use crate::support::TestApp;

pub(crate) async fn run(file: &str, extra: Option<Vec<u8>>) -> String {
    let app = TestApp::start(&[("3W", 4, 2), ("ICU", 2, 1)]).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data/hl7")
        .join(file);
    let mut msgs = match extra {
        Some(bytes) => edge_node::integration::hl7::split_messages(&bytes),
        None => edge_node::integration::hl7::split_messages(&std::fs::read(&path).unwrap()),
    };
    msgs.retain(|m| !m.is_empty());
    let acks = edge_node::integration::client::send(app.mllp, &msgs, Duration::from_secs(10))
        .await
        .unwrap();
    let mut out = String::new();
    for a in &acks {
        writeln!(out, "{a}").unwrap();
    }
    let mut c = app.conn(&app.nurse).await;
    for unit in ["3W", "ICU"] {
        let v = c
            .get(&format!("/api/v1/units/{unit}/beds"))
            .await
            .unwrap()
            .json()
            .unwrap();
        for b in v["beds"].as_array().unwrap() {
            let plain = b["state"] == "vacant_clean" && b["isolation"] == false;
            if plain {
                continue;
            }
            write!(
                out,
                "{} {}",
                b["id"].as_str().unwrap(),
                b["state"].as_str().unwrap()
            )
            .unwrap();
            for k in ["encounter", "reason"] {
                if let Some(x) = b[k].as_str() {
                    write!(out, " {x}").unwrap();
                }
            }
            if let Some(p) = b["patient"].as_object() {
                write!(
                    out,
                    " [{} {}]",
                    p["mrn"].as_str().unwrap_or(""),
                    p.get("name").and_then(|n| n.as_str()).unwrap_or("")
                )
                .unwrap();
            }
            if b["isolation"] == true {
                out.push_str(" isolation");
            }
            if b["pending_discharge"] == true {
                out.push_str(" pending-discharge");
            }
            out.push('\n');
        }
    }
    let parked = c.get("/api/v1/integration/parked").await.unwrap();
    // Nurses may not read the queue: use the manager's view.
    let parked = if parked.status == 403 {
        let mut m = app.conn(&app.manager).await;
        m.get("/api/v1/integration/parked")
            .await
            .unwrap()
            .json()
            .unwrap()
    } else {
        parked.json().unwrap()
    };
    writeln!(
        out,
        "parked: {}",
        parked["parked"].as_array().unwrap().len()
    )
    .unwrap();
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{file}: {report:?}");
    out
}

async fn check(file: &str, want: Expect) {
    want.assert_eq(&run(file, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_transfers_discharges_and_their_cancels() {
    check(
        "a01_admit.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a01_a02_a03_a13_stay.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AA
        3W-000 vacant_dirty
        3W-002 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a11_cancel_admit.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        3W-000 vacant_dirty
        parked: 0
    "#]],
    )
    .await;
    check(
        "a12_cancel_transfer.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        ICU-000 vacant_dirty
        parked: 0
    "#]],
    )
    .await;
    check("a12_out_of_order.hl7", expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AE @PV1^1^6 visit V1 is in bed ICU-001, not in the transfer being cancelled; a later move arrived first; message parked
        3W-000 vacant_dirty
        ICU-000 vacant_dirty
        ICU-001 occupied V1 [MRN-1 Doe, Jane]
        parked: 1
    "#]]).await;
    check(
        "a13_bed_taken.hl7",
        expect![[r#"
            C1 AA
            C2 AA
            C3 AA
            C4 AA
            C5 AE bed 3W-000 is occupied: cannot readmit into; message parked
            3W-000 occupied V2 [MRN-2 Roe, Rick]
            parked: 1
        "#]],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_events_swaps_leaves_and_bed_status() {
    check(
        "a05_preadmit.hl7",
        expect![[r#"
        C1 AA
        ICU-001 reserved V3 [MRN-3 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a05_a38_preadmit.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        parked: 0
    "#]],
    )
    .await;
    check(
        "a14_a27_pending_admit.hl7",
        expect![[r#"
        C1 AA
        C2 AE bed 3W-003 is reserved: cannot reserve; message parked
        C3 AA
        parked: 1
    "#]],
    )
    .await;
    check(
        "a16_a25_pending_discharge.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AA
        C5 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane] pending-discharge
        3W-001 occupied V2 [MRN-2 Roe, Rita]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a15_pending_transfer.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        ICU-000 reserved V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a15_a26_pending_transfer_cancelled.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a15_a02_pending_transfer_done.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        3W-000 vacant_dirty
        ICU-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a37_no_effect.hl7",
        expect![[r#"
            C1 AA
            C2 AA
            3W-000 occupied V1 [MRN-1 Doe, Jane]
            parked: 0
        "#]],
    )
    .await;
    check(
        "a17_swap.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        3W-000 occupied V2 [MRN-2 Roe, Rick]
        ICU-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a17_swap_missing_bed.hl7",
        expect![[r#"
        C1 AA
        C2 AE @PV1^1^19 both visits of a swap must hold a bed; message parked
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 1
    "#]],
    )
    .await;
    check(
        "a21_a22_leave.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a20_bed_status.hl7",
        expect![[r#"
            C1 AA
            C2 AA
            C3 AA
            C4 AA
            C5 AE @NPU^1^2 NPU-2 is not a bed status of table 0116 (C, H, I, K, O, U); message parked
            C6 AA
            3W-001 vacant_dirty
            3W-002 vacant_clean isolation
            ICU-000 vacant_dirty
            parked: 1
        "#]],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_registrations_and_merges() {
    check(
        "a28_a31_a08_person.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AA
        3W-000 vacant_dirty
        3W-001 occupied V7 [MRN-7 Poe, Patty]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a40_merge.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        3W-000 occupied V1 [MRN-NEW Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "a04_a06_a07_a09_a10.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AA
        C5 AA
        C6 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_line_endings_and_batches() {
    check(
        "lf_endings.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "crlf_endings.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "bom.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "v27_msh2.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "latin1_names.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Müller, Jürgen]
        parked: 0
    "#]],
    )
    .await;
    check(
        "escapes_after_non_ascii.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Müller&Schmidt, Zoë^Ann]
        parked: 0
    "#]],
    )
    .await;
    check(
        "z_segments.hl7",
        expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]],
    )
    .await;
    check(
        "batch.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        3W-000 vacant_dirty
        3W-002 occupied V2 [MRN-2 Roe, Rick]
        parked: 0
    "#]],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_a_900_kib_message() {
    check(
        "malformed.hl7",
        expect![[r#"
             AR @MSH^1 the message does not start with an MSH segment
            M2 AR @MSH^1^2 MSH-2 must hold 4 encoding characters (5 from v2.7)
            M3 AR segment 2 has no valid segment id
            M4 AE @PID^1^3 PID-3 (patient identifier) is missing; message parked
            M5 AE @PV1^1^19 PV1-19 (visit number) is missing, and so is PV1-44 (admit time) to identify the visit by; message parked
            M6 AE @PV1^1^3 PV1-3 is in a managed point of care but names no configured room/bed; message parked
            M7 AR @MSH^1^18 MSH-18 names a character set this appliance does not decode
            M8 AE @PID^1^1 the message has no PID segment; message parked
            M9 AE @MSH^1^9 message type "ORU" is not handled; message parked
            parked: 5
        "#]],
    )
    .await;
    // A 900 KiB message (under the 1 MiB frame limit): NTE segments of text.
    let mut big =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/hl7/a01_admit.hl7"))
            .unwrap();
    while big.len() < 900 * 1024 {
        big.extend_from_slice(b"NTE|1||");
        big.extend(std::iter::repeat_n(b'n', 1000));
        big.push(b'\r');
    }
    expect![[r#"
        C1 AA
        3W-000 occupied V1 [MRN-1 Doe, Jane]
        parked: 0
    "#]]
    .assert_eq(&run("a01_admit.hl7", Some(big)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_off_the_board_and_without_a_number() {
    // ED and a clinic are outside the managed points of care: AA, recorded
    // off the board; moving into a managed bed admits to the board, moving
    // out releases; 3W^9^9 (inside 3W, no such bed) is parked.
    check("off_board_visits.hl7", expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AA
        C5 AA
        C6 AA
        C7 AA
        C8 AA
        C9 AA
        C10 AA
        C11 AE @PV1^1^3 PV1-3 is in a managed point of care but names no configured room/bed; message parked
        3W-000 vacant_dirty
        ICU-000 occupied V3 [MRN-3 Poe, Pat]
        parked: 1
    "#]]).await;
    // No PV1-19: the visit is PID-3 with PV1-44, whatever its precision.
    check("visit_without_number.hl7", expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AE @PV1^1^19 PV1-19 (visit number) is missing, and so is PV1-44 (admit time) to identify the visit by; message parked
        3W-001 vacant_dirty
        3W-003 occupied pv44-cbcbc4655a183b1dd4c6 [MRN-6 Ode, Bob]
        parked: 1
    "#]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifier_changes_no_effect_triggers_and_reused_control_ids() {
    check(
        "identifier_changes.hl7",
        expect![[r#"
        C1 AA
        C2 AA
        C3 AA
        C4 AA
        C5 AA
        C6 AA
        C7 AA
        C8 AA
        C9 AA
        C10 AA
        C11 AA
        C12 AA
        C13 AE @MRG^1^5 MRG-5 (prior visit number) is missing; message parked
        3W-000 occupied V7 [MRN-1 Doe, Jane]
        3W-001 occupied V2 [MRN-9 Roe, Rita]
        ICU-000 occupied V3 [MRN-4 Poe, Patrick]
        parked: 1
    "#]],
    )
    .await;
    // C1 four times: an A01, an A28 for another patient (new), the A01
    // again with a later MSH-7 (duplicate: AA, nothing applied), an A03 (new).
    check(
        "control_id_reuse.hl7",
        expect![[r#"
        C1 AA
        C1 AA
        C1 AA
        C1 AA
        3W-000 vacant_dirty
        parked: 0
    "#]],
    )
    .await;
}
