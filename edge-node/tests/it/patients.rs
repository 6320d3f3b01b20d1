//! The local patient index over HTTP: exact MRN look-up, minimum necessary
//! fields, roles, updates and merges from the ADT feed, the pending EID.

use std::time::Duration;

use edge_node::integration::client::send;
use serde_json::json;

use crate::support::TestApp;

fn msg(trigger: &str, structure: &str, control: &str, pid: &str, extra: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127101500||ADT^{trigger}^{structure}|{control}|P|2.5.1\r\
         EVN|{trigger}|20261127101500\r{pid}\r{extra}"
    )
    .into_bytes()
}

async fn lookup(app: &TestApp, token: &str, query: &str) -> (u16, serde_json::Value) {
    let mut c = app.conn(token).await;
    let r = c.get(&format!("/api/v1/patients{query}")).await.unwrap();
    (r.status, r.json().unwrap_or(serde_json::Value::Null))
}

/// Waits until the index shows `want` for `mrn` (it follows commits asynchronously).
async fn until(
    app: &TestApp,
    mrn: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..200 {
        let (_, v) = lookup(app, &app.nurse, &format!("?mrn={mrn}")).await;
        if want(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the index never showed the change for a patient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patients_are_looked_up_by_mrn_with_the_minimum_necessary() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let acks = send(
        app.mllp,
        &[
            msg(
                "A04",
                "ADT_A01",
                "P1",
                "PID|1||MRN-5^^^TH^MR~9434765919^^^NHS^NH||Smith^Anna||19850203|F|||\
                 1 High Street^^Leeds^^LS1 4AB^GB||+44 113 496 0000",
                "PV1|1|O|||||||||||||||||V55\r",
            ),
            msg(
                "A28",
                "ADT_A05",
                "P2",
                "PID|1||MRN-6^^^TH^MR||Smith^Ann||19850203|F",
                "",
            ),
        ],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(acks.iter().all(|a| a.code == "AA"), "{acks:?}");

    let v = until(&app, "MRN-5", |v| {
        v["patients"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!(
        v,
        json!({ "patients": [{
            "mrn": "MRN-5", "name": "Smith, Anna", "birth_date": "1985-02-03",
            "sex": "female", "eid": "pending"
        }]}),
        "address, phone and other identifiers are not shown"
    );
    // Roles: a kiosk may not look patients up; no token is 401.
    assert_eq!(lookup(&app, &app.viewer, "?mrn=MRN-5").await.0, 403);
    let mut anon = hms_e2e::client::Conn::connect(app.addr, None)
        .await
        .unwrap();
    assert_eq!(
        anon.get("/api/v1/patients?mrn=MRN-5").await.unwrap().status,
        401
    );
    // Unknown MRN: an empty list. Bad queries: 400 problems that do not echo PHI.
    assert_eq!(
        lookup(&app, &app.nurse, "?mrn=NOPE").await,
        (200, json!({ "patients": [] }))
    );
    for q in ["", "?mrn=", "?name=Smith"] {
        let (status, v) = lookup(&app, &app.nurse, q).await;
        assert_eq!(status, 400, "{q}");
        assert!(!v.to_string().contains("Smith"), "{v}");
    }

    // Ranked search by demographics: the closest first, with scores (once
    // the index holds both).
    until(&app, "MRN-6", |v| {
        v["patients"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let (status, v) = lookup(
        &app,
        &app.nurse,
        "?family_name=Smith&given_name=Anna&birth_date=1985-02-03",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let hits = v["patients"].as_array().unwrap();
    assert_eq!(hits[0]["mrn"], "MRN-5", "{v}");
    assert_eq!(hits[0]["eid"], "pending");
    assert!(hits[0].get("address").is_none());
    let second = hits
        .get(1)
        .unwrap_or_else(|| panic!("MRN-6 is not ranked second: {v}"));
    assert_eq!(second["mrn"], "MRN-6");
    assert!(hits[0]["score"].as_f64() > second["score"].as_f64(), "{v}");
    let (_, v) = lookup(
        &app,
        &app.nurse,
        "?family_name=Okonkwo&birth_date=1931-12-30",
    )
    .await;
    assert_eq!(v["patients"], json!([]), "nobody like that: {v}");
    for q in ["?sex=female", "?family_name=Smith&limit=0"] {
        assert_eq!(lookup(&app, &app.nurse, q).await.0, 400, "{q}");
    }
    // Sex as HL7 codes or words in any case; a value that cannot be read
    // is searched without (never a 400).
    let by_word = lookup(&app, &app.nurse, "?family_name=Smith&sex=female").await;
    for q in ["?family_name=Smith&sex=F", "?family_name=Smith&sex=Female"] {
        assert_eq!(lookup(&app, &app.nurse, q).await, by_word, "{q}");
    }
    let without = lookup(&app, &app.nurse, "?family_name=Smith").await;
    for q in ["?family_name=Smith&sex=U", "?family_name=Smith&sex=zz"] {
        assert_eq!(lookup(&app, &app.nurse, q).await, without, "{q}");
    }

    // An update (A08) changes the name; a merge (A40) removes the merged MRN.
    send(
        app.mllp,
        &[
            msg(
                "A08",
                "ADT_A01",
                "P3",
                "PID|1||MRN-5^^^TH^MR||Smith-Jones^Anna",
                "PV1|1|O\r",
            ),
            msg(
                "A40",
                "ADT_A39",
                "P4",
                "PID|1||MRN-5^^^TH^MR||Smith-Jones^Anna||19850203|F",
                "MRG|MRN-6^^^TH^MR\r",
            ),
        ],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let v = until(&app, "MRN-5", |v| {
        v["patients"][0]["name"] == "Smith-Jones, Anna"
    })
    .await;
    assert_eq!(
        v["patients"][0]["birth_date"], "1985-02-03",
        "kept when not resent"
    );
    until(&app, "MRN-6", |v| {
        v["patients"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_patient_look_up_is_audited_without_the_values_searched_for() {
    let app = TestApp::start(&[("3W", 2, 2)]).await;
    let acks = send(
        app.mllp,
        &[msg(
            "A04",
            "ADT_A01",
            "P1",
            "PID|1||MRN-5^^^TH^MR||Smith^Anna||19850203|F",
            "PV1|1|O|||||||||||||||||V55\r",
        )],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(acks.iter().all(|a| a.code == "AA"), "{acks:?}");
    // The nurse's token waits for the index; the bed manager's searches are
    // the ones looked at below.
    until(&app, "MRN-5", |v| {
        v["patients"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let bm = app.manager.clone();
    let (status, v) = lookup(&app, &bm, "?mrn=MRN-5").await;
    assert_eq!(
        (status, v["patients"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, v) = lookup(
        &app,
        &bm,
        "?family_name=Smith&birth_date=1985-02-03&limit=5",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let ranked = v["patients"].as_array().map(Vec::len).unwrap();
    assert_eq!(lookup(&app, &bm, "?mrn=NOPE-9").await.0, 200);
    // Refused look-ups show nothing and are not search events.
    assert_eq!(lookup(&app, &bm, "?mrn=").await.0, 400);
    assert_eq!(lookup(&app, &app.viewer, "?mrn=MRN-5").await.0, 403);
    // A clean stop commits every audit event that was queued.
    let dir = app.stop().await;
    let conn = rusqlite::Connection::open(dir.path().join("data/edge.sqlite")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT stream, actor_kind, actor_id, correlation, recorded_at, body FROM events
             WHERE kind = 'audit.patients_searched' AND actor_id != 'nurse-ann' ORDER BY seq",
        )
        .unwrap();
    let rows: Vec<(String, String, String, Option<String>, i64, String)> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let bodies: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::from_str(&r.5).unwrap())
        .collect();
    assert_eq!(
        bodies,
        vec![
            json!({"type": "patients_searched", "role": "bed_manager", "by": "mrn", "results": 1}),
            json!({"type": "patients_searched", "role": "bed_manager", "by": "demographics",
                   "fields": ["family_name", "birth_date"], "results": ranked}),
            json!({"type": "patients_searched", "role": "bed_manager", "by": "mrn", "results": 0}),
        ]
    );
    for (stream, actor_kind, actor, correlation, recorded_at, body) in &rows {
        assert_eq!((stream.as_str(), actor_kind.as_str()), ("audit", "user"));
        assert_eq!(actor, "bm-bob");
        assert!(
            correlation
                .as_deref()
                .is_some_and(|c| c.starts_with("req-"))
        );
        assert!(*recorded_at > 0);
        for value in ["MRN-5", "NOPE-9", "Smith", "1985"] {
            assert!(!body.contains(value), "{body}");
        }
    }
    // The nurse's polling was audited too.
    let polled: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'audit.patients_searched' \
             AND actor_id = 'nurse-ann'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(polled >= 1);
    // The log with its audit events still verifies (replay == projections).
    let (code, out, err) = crate::support::run_cli(&[
        "verify",
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
}
