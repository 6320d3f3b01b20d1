//! The OR board over real sockets: SIU messages over MLLP into the OR
//! board, the log and the projection; the OR endpoints; bumping by an
//! emergency add-on; overrun risk; parking and no-effect triggers; a
//! restart and `verify`.

use std::time::Duration;

use edge_node::integration::client::{AckLine, send};

use crate::support::TestApp;

/// One SIU message. `start` is an HL7 time, `room` the AIL-3 PL.
struct Siu<'a> {
    trigger: &'a str,
    control: &'a str,
    case: &'a str,
    room: &'a str,
    start: &'a str,
    minutes: u32,
    urgent: bool,
    surgeon: &'a str,
    procedure: &'a str,
    /// SCH-25 `Complete`.
    complete: bool,
}

impl Default for Siu<'_> {
    fn default() -> Self {
        Siu {
            trigger: "S12",
            control: "X",
            case: "C1",
            room: "OR^OR-1^^TH",
            start: "202612100800",
            minutes: 60,
            urgent: false,
            surgeon: "S01",
            procedure: "inguinal_hernia_repair",
            complete: false,
        }
    }
}

impl Siu<'_> {
    fn bytes(&self) -> Vec<u8> {
        let reason = if self.urgent { "EMERGENCY" } else { "ROUTINE" };
        let prio = if self.urgent { "S" } else { "R" };
        let done = if self.complete {
            format!("{}Complete", "|".repeat(14))
        } else {
            String::new()
        };
        let Siu {
            trigger,
            control,
            case,
            room,
            start,
            minutes,
            surgeon,
            procedure,
            ..
        } = self;
        format!(
            "MSH|^~\\&|ORSCHED|TH|HMS|EDGE|20261204070000||SIU^{trigger}^SIU_S12|{control}|P|2.5.1\r\
             SCH|{case}^ORSCHED||||||{reason}||{minutes}|min|^^^{start}^^{prio}{done}\r\
             PID|1||MRN-7^^^TH^MR||Doe^John||19610315|M\r\
             PV1|1|O|{}V7\r\
             RGS|1\r\
             AIS|1||{procedure}^Hernia repair|{start}|||{minutes}|min\r\
             AIL|1||{room}\r\
             AIP|1||{surgeon}^Grey^Meredith|SURG^Surgeon\r\
             OBX|1|NM|ASA^ASA class||3\r",
            "|".repeat(16)
        )
        .into_bytes()
    }
}

async fn send_all(app: &TestApp, msgs: &[Vec<u8>]) -> Vec<AckLine> {
    send(app.mllp, msgs, Duration::from_secs(10)).await.unwrap()
}

fn codes(acks: &[AckLine]) -> Vec<(String, String)> {
    acks.iter()
        .map(|a| (a.control_id.clone(), a.code.clone()))
        .collect()
}

async fn cases(app: &TestApp, query: &str) -> Vec<serde_json::Value> {
    let mut c = app.conn(&app.nurse).await;
    let r = c.get(&format!("/api/v1/or/cases?{query}")).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json().unwrap()["cases"].as_array().unwrap().clone()
}

fn field<'a>(cases: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    cases
        .iter()
        .find(|c| c["case_id"] == id)
        .unwrap_or_else(|| panic!("case {id} not in {cases:?}"))
}

fn or_events(app: &TestApp) -> Vec<String> {
    let conn = rusqlite::Connection::open(app.data_dir().join("edge.sqlite")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT kind FROM events WHERE stream = 'or' AND kind != 'or.case_predicted' ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siu_books_reschedules_modifies_cancels_and_deletes_cases_on_the_or_board() {
    let app = TestApp::start_with_or(&[("3W", 2, 2)], 3).await;
    let s12 = |control, case, room, start| Siu {
        control,
        case,
        room,
        start,
        ..Siu::default()
    };
    let acks = send_all(
        &app,
        &[
            s12("M1", "C1", "OR^OR-1^^TH", "202612100800"),
            s12("M2", "C2", "OR^OR-1^^TH", "202612101000"),
            s12("M3", "C3", "OR^OR-2^^TH", "202612100900"),
            s12("M4", "C4", "OR^OR-3^^TH", "202612110800"),
        ]
        .map(|m| m.bytes()),
    )
    .await;
    assert!(codes(&acks).iter().all(|(_, c)| c == "AA"), "{acks:?}");

    let day = cases(&app, "date=2026-12-10").await;
    let ids: Vec<&str> = day.iter().map(|c| c["case_id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["C1", "C2", "C3"],
        "by room, then start; C4 is the next day"
    );
    let c1 = field(&day, "C1");
    assert_eq!(c1["room"], "OR-1");
    assert_eq!(c1["start"], "2026-12-10T08:00:00.000Z");
    assert_eq!(c1["booked_minutes"], 60);
    assert_eq!(c1["procedure"], "inguinal_hernia_repair");
    assert_eq!(c1["surgeon"], "S01");
    assert_eq!(c1["surgeon_name"], "Grey, Meredith");
    assert_eq!(c1["asa"], 3);
    assert_eq!(c1["patient"]["mrn"], "MRN-7");
    assert_eq!(c1["visit"], "V7");
    assert_eq!(c1["status"], "scheduled");
    assert_eq!(c1["priority"], "elective");
    // No model set in this appliance: the fallback rule, booked + 20 %.
    assert_eq!(c1["prediction_source"], "fallback");
    assert!(c1["prediction_reason"].is_string(), "{c1}");
    assert_eq!(c1["predicted_minutes"], 72.0);
    assert_eq!(
        c1["overrun_risk"], false,
        "72 min from 08:00 ends before 10:00"
    );
    let one_room = cases(&app, "date=2026-12-10&room=OR-2").await;
    assert_eq!(one_room.len(), 1);
    assert_eq!(one_room[0]["case_id"], "C3");

    // S13 moves C2 to OR-2 at 09:30 for 90 min; S14 changes C1's duration only.
    let acks = send_all(
        &app,
        &[
            Siu {
                trigger: "S13",
                control: "M5",
                case: "C2",
                room: "OR^OR-2^^TH",
                start: "202612100930",
                minutes: 90,
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S14",
                control: "M6",
                case: "C1",
                minutes: 150,
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S15",
                control: "M7",
                case: "C3",
                room: "OR^OR-2^^TH",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S26",
                control: "M8",
                case: "C4",
                room: "OR^OR-3^^TH",
                ..Siu::default()
            }
            .bytes(),
        ],
    )
    .await;
    assert!(codes(&acks).iter().all(|(_, c)| c == "AA"), "{acks:?}");
    let day = cases(&app, "date=2026-12-10").await;
    let c2 = field(&day, "C2");
    assert_eq!(c2["room"], "OR-2");
    assert_eq!(c2["start"], "2026-12-10T09:30:00.000Z");
    assert_eq!(c2["booked_minutes"], 90);
    assert_eq!(c2["version"], 2);
    let c1 = field(&day, "C1");
    assert_eq!(c1["booked_minutes"], 150);
    assert_eq!(c1["start"], "2026-12-10T08:00:00.000Z");
    assert_eq!(field(&day, "C3")["status"], "cancelled");
    // C3 is cancelled: it takes no room time, so it is never at risk and
    // does not put C2 at risk.
    assert_eq!(field(&day, "C3")["overrun_risk"], false);
    let next = cases(&app, "date=2026-12-11").await;
    assert_eq!(field(&next, "C4")["status"], "no_show");

    // S17 deletes C4; an S17 for a case never booked changes nothing.
    let acks = send_all(
        &app,
        &[
            Siu {
                trigger: "S17",
                control: "M9",
                case: "C4",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S17",
                control: "M10",
                case: "NEVER",
                ..Siu::default()
            }
            .bytes(),
        ],
    )
    .await;
    assert!(codes(&acks).iter().all(|(_, c)| c == "AA"), "{acks:?}");
    assert!(cases(&app, "date=2026-12-11").await.is_empty());
    assert_eq!(
        or_events(&app),
        [
            "or.case_scheduled",
            "or.case_scheduled",
            "or.case_scheduled",
            "or.case_scheduled",
            "or.case_rescheduled",
            "or.case_modified",
            "or.case_cancelled",
            "or.case_no_show",
            "or.case_deleted",
        ]
    );

    // The board survives a restart, and the log replays to the same projection.
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_add_on_bumps_the_elective_cases_it_overlaps_and_overrun_risk_is_flagged() {
    let app = TestApp::start_with_or(&[("3W", 2, 2)], 2).await;
    let acks = send_all(
        &app,
        &[
            // A: 08:00 for 60 min, predicted 72 (booked + 20 %): into B at 09:00.
            Siu {
                control: "A",
                case: "A",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                control: "B",
                case: "B",
                start: "202612100900",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                control: "C",
                case: "C",
                start: "202612101200",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                control: "D",
                case: "D",
                room: "OR^OR-2^^TH",
                ..Siu::default()
            }
            .bytes(),
        ],
    )
    .await;
    assert!(codes(&acks).iter().all(|(_, c)| c == "AA"), "{acks:?}");
    let day = cases(&app, "date=2026-12-10").await;
    assert_eq!(field(&day, "A")["overrun_risk"], true);
    assert_eq!(
        field(&day, "A")["predicted_end"],
        "2026-12-10T09:12:00.000Z"
    );
    assert_eq!(field(&day, "B")["overrun_risk"], false, "C starts at 12:00");
    assert_eq!(field(&day, "C")["overrun_risk"], false, "last in its room");

    // An emergency add-on in OR-1, 08:30 for 60 min, overlaps A and B.
    let acks = send_all(
        &app,
        &[Siu {
            control: "E",
            case: "E1",
            start: "202612100830",
            urgent: true,
            ..Siu::default()
        }
        .bytes()],
    )
    .await;
    assert_eq!(codes(&acks), [("E".to_owned(), "AA".to_owned())]);
    let day = cases(&app, "date=2026-12-10").await;
    for id in ["A", "B"] {
        let c = field(&day, id);
        assert_eq!(c["status"], "bumped", "{c}");
        assert_eq!(c["bumped_by"], "E1");
        assert_eq!(c["overrun_risk"], false, "a bumped case takes no room time");
    }
    assert_eq!(field(&day, "C")["status"], "scheduled");
    assert_eq!(field(&day, "D")["status"], "scheduled", "another room");
    let e = field(&day, "E1");
    assert_eq!(e["priority"], "urgent");
    assert_eq!(e["status"], "scheduled");
    assert_eq!(e["overrun_risk"], false);
    assert_eq!(
        or_events(&app)[4..],
        ["or.case_scheduled", "or.case_bumped", "or.case_bumped"],
        "the add-on and what it displaced, in one message's events"
    );

    // S13 puts a bumped case back on the list, in the afternoon.
    let acks = send_all(
        &app,
        &[Siu {
            trigger: "S13",
            control: "A2",
            case: "A",
            start: "202612101400",
            ..Siu::default()
        }
        .bytes()],
    )
    .await;
    assert_eq!(codes(&acks), [("A2".to_owned(), "AA".to_owned())]);
    let day = cases(&app, "date=2026-12-10").await;
    let a = field(&day, "A");
    assert_eq!(a["status"], "scheduled");
    assert!(a["bumped_by"].is_null(), "{a}");
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rooms_and_cases_are_parked_and_clinic_appointments_are_accepted_without_effect() {
    let app = TestApp::start_with_or(&[("3W", 2, 2)], 1).await;
    let no_sch =
        b"MSH|^~\\&|ORSCHED|TH|HMS|EDGE|20261204070000||SIU^S12|P6|P|2.5.1\rAIL|1||OR^OR-1^^TH\r"
            .to_vec();
    let no_start = "MSH|^~\\&|ORSCHED|TH|HMS|EDGE|20261204070000||SIU^S12|P7|P|2.5.1\r\
                    SCH|C7^ORSCHED||||||ROUTINE||60|min\rAIL|1||OR^OR-1^^TH\r"
        .as_bytes()
        .to_vec();
    let bad_units = "MSH|^~\\&|ORSCHED|TH|HMS|EDGE|20261204070000||SIU^S12|P8|P|2.5.1\r\
                     SCH|C8^ORSCHED||||||ROUTINE||60|furlongs|^^^202612100800\rAIL|1||OR^OR-1^^TH\r"
        .as_bytes()
        .to_vec();
    let acks = send_all(
        &app,
        &[
            Siu {
                control: "P1",
                case: "C1",
                room: "OR^OR-9^^TH",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                control: "P2",
                case: "C2",
                room: "CLINIC^R1^^TH",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S15",
                control: "P3",
                case: "GHOST",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S18",
                control: "P4",
                ..Siu::default()
            }
            .bytes(),
            Siu {
                trigger: "S01",
                control: "P5",
                ..Siu::default()
            }
            .bytes(),
            no_sch,
            no_start,
            bad_units,
            Siu {
                control: "P9",
                case: "C9",
                minutes: 2000,
                ..Siu::default()
            }
            .bytes(),
        ],
    )
    .await;
    let got: Vec<(String, String, Option<String>)> = acks
        .iter()
        .map(|a| (a.control_id.clone(), a.code.clone(), a.location.clone()))
        .collect();
    let want = [
        ("P1", "AE", Some("AIL^1^3")),
        ("P2", "AA", None),
        ("P3", "AE", Some("SCH^1^1")),
        ("P4", "AA", None),
        ("P5", "AE", Some("MSH^1^9")),
        ("P6", "AE", Some("SCH^1^1")),
        ("P7", "AE", Some("SCH^1^11")),
        ("P8", "AE", Some("SCH^1^10")),
        ("P9", "AE", Some("SCH^1^9")),
    ]
    .map(|(c, a, l)| (c.to_owned(), a.to_owned(), l.map(str::to_owned)));
    assert_eq!(got, want, "{acks:?}");
    assert!(
        acks[0]
            .error
            .as_deref()
            .unwrap()
            .contains("names no configured operating room"),
        "{:?}",
        acks[0].error
    );
    assert!(
        acks[2]
            .error
            .as_deref()
            .unwrap()
            .contains("not on the OR board"),
        "{:?}",
        acks[2].error
    );
    assert!(or_events(&app).is_empty(), "nothing reached the OR board");
    assert!(cases(&app, "date=2026-12-10").await.is_empty());

    // The parked booking applies once its room is the one meant: here the
    // operator replays it as it is, and it stays parked with its reason.
    let mut admin = app.conn(&app.admin).await;
    let parked = admin
        .get("/api/v1/integration/parked")
        .await
        .unwrap()
        .json()
        .unwrap();
    let n = parked["parked"].as_array().map_or(0, Vec::len);
    assert_eq!(n, 7, "{parked}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_or_endpoints_check_roles_dates_rooms_and_queries() {
    let app = TestApp::start_with_or(&[("3W", 2, 2)], 2).await;
    let mut viewer = app.conn(&app.viewer).await;
    let r = viewer.get("/api/v1/or/cases").await.unwrap();
    assert_eq!(r.status, 403);
    let r = viewer.get("/api/v1/or/rooms").await.unwrap();
    assert_eq!(r.status, 403);
    let mut nurse = app.conn(&app.nurse).await;
    let rooms = nurse.get("/api/v1/or/rooms").await.unwrap().json().unwrap();
    assert_eq!(
        rooms,
        serde_json::json!({ "rooms": [
            { "id": "OR-1", "name": "Theatre 1", "suite": "MAIN-OR" },
            { "id": "OR-2", "name": "Theatre 2", "suite": "MAIN-OR" },
        ]})
    );
    for (q, status) in [
        ("date=2026-02-30", 400),
        ("date=tomorrow", 400),
        ("date=2026-12-10&room=OR-9", 404),
        ("date=2026-12-10&unit=3W", 400),
        ("date=2026-12-10&room=OR-1", 200),
        ("", 200),
    ] {
        let r = nurse.get(&format!("/api/v1/or/cases?{q}")).await.unwrap();
        assert_eq!(
            r.status,
            status,
            "{q}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if status != 200 {
            assert_eq!(
                r.content_type.as_deref(),
                Some("application/problem+json"),
                "{q}"
            );
        }
    }
    let today = nurse.get("/api/v1/or/cases").await.unwrap().json().unwrap();
    assert_eq!(
        today["date"].as_str().unwrap().len(),
        10,
        "today's date is named: {today}"
    );
    app.stop().await;
}

/// Tomorrow (UTC, the test hospital's zone) as an HL7 date, `YYYYMMDD`.
fn tomorrow() -> String {
    let t =
        hms_domain::Timestamp::from_millis(hms_domain::Timestamp::now().as_millis() + 86_400_000);
    t.to_rfc3339()[..10].replace('-', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_cases_get_a_recorded_prediction_and_completed_cases_keep_their_actual_times() {
    let app = TestApp::start_with_or(&[("3W", 2, 2)], 1).await;
    let day = tomorrow();
    let (s1, s2) = (format!("{day}0800"), format!("{day}1000"));
    let acks = send_all(
        &app,
        &[
            Siu {
                control: "R1",
                case: "R1",
                start: &s1,
                ..Siu::default()
            }
            .bytes(),
            Siu {
                control: "R2",
                case: "R2",
                start: &s2,
                minutes: 90,
                ..Siu::default()
            }
            .bytes(),
        ],
    )
    .await;
    assert_eq!(
        codes(&acks).iter().filter(|(_, c)| c == "AA").count(),
        2,
        "{acks:?}"
    );
    // The recorder runs beside the feed: wait for both predictions.
    let db = app.data_dir().join("edge.sqlite");
    let predictions = || -> Vec<(String, i64, String)> {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.prepare("SELECT case_id, version, body FROM or_predictions ORDER BY case_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while predictions().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no predictions recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = predictions();
    assert_eq!((p[0].0.as_str(), p[0].1), ("R1", 1));
    let body: serde_json::Value = serde_json::from_str(&p[0].2).unwrap();
    assert_eq!(body["minutes"], 72, "booked 60 + 20 %: {body}");
    assert_eq!(body["source"], "fallback");
    let date = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..]);
    let listed = cases(&app, &format!("date={date}")).await;
    assert_eq!(field(&listed, "R1")["predicted_minutes"], 72.0);

    // R1 is reported done: started 08:10, took 95 minutes.
    let actual = format!("{day}0810");
    let acks = send_all(
        &app,
        &[Siu {
            trigger: "S14",
            control: "R3",
            case: "R1",
            start: &actual,
            minutes: 95,
            complete: true,
            ..Siu::default()
        }
        .bytes()],
    )
    .await;
    assert_eq!(codes(&acks), [("R3".to_owned(), "AA".to_owned())]);
    let listed = cases(&app, &format!("date={date}")).await;
    let r1 = field(&listed, "R1");
    assert_eq!(r1["status"], "completed");
    assert_eq!(r1["booked_minutes"], 60, "the booking stays");
    assert_eq!(r1["start"], format!("{date}T08:00:00.000Z"));
    assert_eq!(r1["actual_start"], format!("{date}T08:10:00.000Z"));
    assert_eq!(r1["actual_minutes"], 95);
    assert_eq!(r1["overrun_risk"], false, "done: nothing to run into");
    assert!(or_events(&app).contains(&"or.case_completed".to_owned()));
    let dir = app.stop().await;
    let report = edge_node::store::verify::verify(&dir.path().join("data")).unwrap();
    assert!(report.ok(), "{report:?}");
}
