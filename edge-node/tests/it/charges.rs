//! Charges over real sockets: DFT^P03/P11 over MLLP into the billing
//! stream and the charges projection; idempotency by transaction id,
//! reversals and credits; unknown visits; the charges endpoint's totals;
//! coding suggestions from the history and their fallback; roles; verify.

use std::time::Duration;

use edge_node::integration::client::{AckLine, send};
use serde_json::json;

use crate::support::TestApp;

/// One FT1: (transaction id, type, code, quantity, amount).
type Ft1<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn dft(control: &str, visit: &str, dx: &[&str], ft1: &[Ft1<'_>]) -> Vec<u8> {
    let mut s = format!(
        "MSH|^~\\&|FIN|TH|HMS|EDGE|20261210120000||DFT^P03^DFT_P03|{control}|P|2.5.1\r\
         EVN|P03|20261210120000\r\
         PID|1||MRN-7^^^TH^MR||Doe^John||19610315|M\r\
         PV1|1|I|SURG^1^1^TH{}{visit}\r",
        "|".repeat(16)
    );
    for (i, (txn, ty, code, qty, amount)) in ft1.iter().enumerate() {
        s.push_str(&format!(
            "FT1|{}|{txn}||20261210100000||{ty}|{code}^Charge {code}^CPT4|||{qty}|{amount}||OR\r",
            i + 1
        ));
    }
    for (i, d) in dx.iter().enumerate() {
        s.push_str(&format!("DG1|{}||{d}^^I10\r", i + 1));
    }
    s.into_bytes()
}

async fn send_all(app: &TestApp, msgs: &[Vec<u8>]) -> Vec<AckLine> {
    send(app.mllp, msgs, Duration::from_secs(10)).await.unwrap()
}

fn codes(acks: &[AckLine]) -> Vec<String> {
    acks.iter().map(|a| a.code.clone()).collect()
}

async fn charges(app: &TestApp, visit: &str) -> serde_json::Value {
    let mut c = app.conn(&app.manager).await;
    let r = c
        .get(&format!("/api/v1/charges?visit={visit}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_post_once_per_transaction_reverse_and_total_exactly() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let acks = send_all(
        &app,
        &[
            dft(
                "F1",
                "V7",
                &["K35.80"],
                &[
                    ("T1", "CG", "44970", "1", "1250.00"),
                    ("T2", "CG", "74177", "1", "310.25"),
                    ("T3", "", "J2270", "2", "14.5"),
                ],
            ),
            // The same transactions again under another control id: no change.
            dft(
                "F2",
                "V7",
                &["K35.80"],
                &[("T1", "CG", "44970", "1", "1250.00")],
            ),
            // T2 reversed by a credit with its id; T4 a credit of its own; a payment ignored.
            dft(
                "F3",
                "V7",
                &[],
                &[
                    ("T2", "CD", "74177", "1", "310.25"),
                    ("T4", "CD", "99999", "1", "20.00"),
                    ("T5", "PY", "PAY", "1", "100.00"),
                ],
            ),
            // The reversal again: nothing more.
            dft("F4", "V7", &[], &[("T2", "CD", "74177", "1", "310.25")]),
            // A negative quantity is a credit too.
            dft("F5", "V7", &[], &[("T6", "CG", "J2270", "-1", "7.25")]),
        ],
    )
    .await;
    assert_eq!(codes(&acks), ["AA"; 5], "{acks:?}");
    let v = charges(&app, "V7").await;
    assert_eq!(
        v["visit_known"], false,
        "no ADT message named V7: kept all the same"
    );
    assert_eq!(v["count"], 5);
    // 1250.00 + 14.50 - 20.00 - 7.25 (T2 reversed).
    assert_eq!(v["total_cents"], 123_725);
    assert_eq!(v["total"], "1237.25");
    let by_id = |id: &str| {
        v["charges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["transaction_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    assert_eq!(by_id("T2")["status"], "reversed");
    assert_eq!(by_id("T3")["quantity"], 2);
    assert_eq!(by_id("T3")["amount"], "14.50");
    assert_eq!(by_id("T4")["kind"], "credit");
    assert_eq!(by_id("T4")["amount_cents"], -2000);
    assert_eq!(by_id("T6")["kind"], "credit");
    assert_eq!(by_id("T6")["quantity"], -1);
    assert_eq!(by_id("T1")["diagnoses"], json!(["K35.80"]));
    assert_eq!(by_id("T1")["unit"], "SURG");
    assert_eq!(by_id("T1")["department"], "OR");
    assert_eq!(by_id("T1")["date"], "2026-12-10T10:00:00.000Z");

    // Once the ADT feed tells of V7, the same charges are the visit's.
    let a01 = format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261210130000||ADT^A01^ADT_A01|A1|P|2.5.1\r\
         PID|1||MRN-7^^^TH^MR||Doe^John||19610315|M\rPV1|1|I|3W^0^0^TH{}V7\r",
        "|".repeat(16)
    );
    assert_eq!(codes(&send_all(&app, &[a01.into_bytes()]).await), ["AA"]);
    let v = charges(&app, "V7").await;
    assert_eq!(v["visit_known"], true);
    assert_eq!(v["total_cents"], 123_725);

    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM events WHERE stream = 'billing' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        kinds,
        [
            "billing.charge_posted",
            "billing.charge_posted",
            "billing.charge_posted",
            "billing.charge_reversed",
            "billing.charge_posted",
            "billing.charge_posted",
        ]
    );
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_park_the_whole_message_with_the_field_named() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let no_ft1 =
        b"MSH|^~\\&|FIN|TH|HMS|EDGE|20261210120000||DFT^P03|B6|P|2.5.1\rPID|1||M1\r".to_vec();
    let acks = send_all(
        &app,
        &[
            dft("B1", "V1", &[], &[("T1", "ZZ", "A", "1", "1.00")]),
            dft("B2", "V1", &[], &[("T1", "CG", "A", "1.5", "1.00")]),
            dft("B3", "V1", &[], &[("T1", "CG", "A", "1", "1.005")]),
            // A good transaction beside a bad one: neither applies.
            dft(
                "B4",
                "V1",
                &[],
                &[
                    ("T1", "CG", "A", "1", "1.00"),
                    ("T2", "CG", "B", "1", "abc"),
                ],
            ),
            dft("B5", "V1", &[], &[("T1", "CG", "A", "1", "1.00")]),
            no_ft1,
            // T1 again with other content.
            dft("B7", "V1", &[], &[("T1", "CG", "A", "3", "3.00")]),
        ],
    )
    .await;
    let got: Vec<(String, Option<String>)> = acks
        .iter()
        .map(|a| (a.code.clone(), a.location.clone()))
        .collect();
    let want = [
        ("AE", Some("FT1^1^6")),
        ("AE", Some("FT1^1^10")),
        ("AE", Some("FT1^1^11")),
        ("AE", Some("FT1^2^11")),
        ("AA", None),
        ("AE", Some("FT1^1^1")),
        ("AE", Some("FT1^1^2")),
    ]
    .map(|(c, l)| (c.to_owned(), l.map(str::to_owned)));
    assert_eq!(got, want, "{acks:?}");
    assert!(
        acks[6]
            .error
            .as_deref()
            .unwrap()
            .contains("already posted with other content"),
        "{:?}",
        acks[6].error
    );
    let v = charges(&app, "V1").await;
    assert_eq!(v["count"], 1, "only B5's T1: {v}");
    assert_eq!(v["total_cents"], 100);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coding_suggestions_learn_from_posted_charges_and_fall_back_when_they_cannot() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let mut msgs = vec![];
    for i in 0..12 {
        let visit = format!("A{i}");
        let mut ft1 = vec![("", "CG", "44970", "1", "1250.00")];
        if i % 3 == 0 {
            ft1.push(("", "CG", "74177", "1", "310.00"));
        }
        msgs.push(dft(&format!("A{i}"), &visit, &["K35.80"], &ft1));
    }
    for i in 0..20 {
        let visit = format!("B{i}");
        msgs.push(dft(
            &format!("B{i}"),
            &visit,
            &["I10"],
            &[("", "CG", "99223", "1", "180.00")],
        ));
    }
    assert!(
        codes(&send_all(&app, &msgs).await)
            .iter()
            .all(|c| c == "AA")
    );
    let mut m = app.conn(&app.manager).await;
    let r = m
        .post(
            "/api/v1/coding/suggest",
            &json!({ "diagnoses": ["K35.80"], "unit": "SURG" }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let a = r.json().unwrap();
    assert_eq!(a["source"], "history");
    assert_eq!(a["history_visits"], 32);
    assert_eq!(
        a["suggestions"][0],
        json!({ "code": "44970", "score": 1.0, "support": 12 })
    );
    assert_eq!(
        a["suggestions"][1],
        json!({ "code": "74177", "score": 0.3333, "support": 4 })
    );

    // A diagnosis with no history, and a text over the limit: the unit's codes.
    for body in [
        json!({ "diagnoses": ["S72.0"], "unit": "SURG" }),
        json!({ "diagnoses": ["K35.80"], "unit": "SURG", "text": "x".repeat(4001) }),
    ] {
        let a = m
            .post("/api/v1/coding/suggest", &body)
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(a["source"], "fallback", "{a}");
        assert_eq!(
            a["suggestions"][0]["code"], "99223",
            "on 20 of 32 visits: {a}"
        );
    }
    let a = m
        .post(
            "/api/v1/coding/suggest",
            &json!({ "diagnoses": ["S72.0"], "unit": "SURG" }),
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(a["reason"], "too_little_history");

    // Roles and bad requests.
    let mut nurse = app.conn(&app.nurse).await;
    let r = nurse
        .post("/api/v1/coding/suggest", &json!({ "diagnoses": [] }))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(
        nurse.get("/api/v1/charges?visit=A1").await.unwrap().status,
        403
    );
    for (body, status) in [
        (json!({ "diagnoses": "K35.80" }), 422),
        (json!({ "diagnoses": [""] }), 422),
        (json!({ "diagnoses": ["K35.80"], "extra": 1 }), 422),
    ] {
        let r = m.post("/api/v1/coding/suggest", &body).await.unwrap();
        assert!(
            r.status == status || r.status == 400,
            "{body}: {}",
            r.status
        );
    }
    for q in ["", "visit=", "visit=a%20b", "visit=A1&x=1"] {
        let r = m.get(&format!("/api/v1/charges?{q}")).await.unwrap();
        assert_eq!(r.status, 400, "{q}");
    }
    app.stop().await;
}
