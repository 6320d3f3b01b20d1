//! The operator API over HTTP: tokens, hospitals, census, ADT volumes,
//! charges and OR utilisation from hand-built event logs, and its
//! refusals.

use hms_e2e::client::Conn;

use crate::analytics::tests::{CENSUS, CHARGES, ROOM_DAYS, revenue_or_log, ward_log};
use crate::testkit::{Backend, Cloud, T, available, batch, now, serve};

on_each_backend!(
    #[tokio::test]
    hospitals_census_and_adt_volumes_from_the_stored_log,
    unknown_hospitals_and_units_are_404_and_bad_queries_400,
    operators_enrol_appliances_over_the_api_with_residency,
);

#[tokio::test]
async fn the_operator_api_needs_a_valid_token() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let at = serve(cloud.state.clone(), None).await;
    for token in [None, Some("hmsc_not-a-token"), Some("")] {
        let mut c = Conn::connect(at.addr, token).await.expect("connect");
        for path in [
            "/api/v1/hospitals",
            "/api/v1/hospitals/h1/census?from=2026-03-02T00:00:00Z&to=2026-03-02T01:00:00Z",
            "/api/v1/hospitals/h1/adt-volumes?from=2026-03-02&to=2026-03-02",
            "/api/v1/hospitals/h1/charges/daily?from=2026-03-02&to=2026-03-02",
            "/api/v1/hospitals/h1/or/utilisation?from=2026-03-02&to=2026-03-02",
            "/api/v1/replication",
        ] {
            let r = c.get(path).await.expect("get");
            assert_eq!(r.status, 401, "{path} with {token:?}");
            assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
        }
    }
    // A token made now works at once (no restart).
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    assert_eq!(c.get("/api/v1/hospitals").await.expect("get").status, 200);
}

async fn hospitals_census_and_adt_volumes_from_the_stored_log(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1", "h2"]);
    let at = serve(cloud.state.clone(), None).await;
    let log = ward_log();
    let ep = at.http();
    // Shipped in two batches, the census asked in between: the cached
    // projection catches up with the events after it.
    cloud_sync_client::push(&ep, cloud.signer("h1"), &batch("h1", &log[..6]), now(), T)
        .await
        .expect("push");
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let census = "/api/v1/hospitals/h1/census?from=2026-03-02T06:00:00Z&to=2026-03-02T15:00:00Z";
    let early = c.get(census).await.expect("get").json().expect("json");
    assert_eq!(
        early["hours"][4]["occupied"],
        serde_json::json!({"3W": 1, "4E": 1})
    );
    cloud_sync_client::push(&ep, cloud.signer("h1"), &batch("h1", &log[6..]), now(), T)
        .await
        .expect("push");

    let r = c.get("/api/v1/hospitals").await.expect("get");
    assert_eq!(r.status, 200);
    let v = r.json().expect("json");
    let list = v["hospitals"].as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], "h1");
    assert_eq!(list[0]["region"], "eu-west");
    assert_eq!(list[0]["events"], log.len());
    assert_eq!(list[0]["position"]["seq"], log.len());
    assert_eq!(
        list[0]["position"]["hash"],
        log[log.len() - 1].hash.to_hex()
    );
    assert!(
        list[0]["last_ingest"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(list[1]["id"], "h2");
    assert_eq!(list[1]["events"], 0);
    assert!(list[1]["last_ingest"].is_null());

    let v = c.get(census).await.expect("get").json().expect("json");
    let hours = v["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), CENSUS.len());
    for (h, (when, want)) in hours.iter().zip(CENSUS) {
        assert_eq!(
            h["at"],
            hms_domain::Timestamp::parse_rfc3339(when)
                .expect("time")
                .to_rfc3339()
        );
        let got = h["occupied"]
            .as_object()
            .expect("units")
            .iter()
            .map(|(u, n)| format!("{u}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(got, want, "at {when}");
    }
    // One unit, a range not on the hour, an offset sent unencoded.
    let v = c
        .get("/api/v1/hospitals/h1/census?unit=4E&from=2026-03-02T10:30:00+01:00&to=2026-03-02T11:59:00Z")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(v["unit"], "4E");
    assert_eq!(
        v["hours"],
        serde_json::json!([
            {"at": "2026-03-02T10:00:00.000Z", "occupied": {"4E": 1}},
            {"at": "2026-03-02T11:00:00.000Z", "occupied": {"4E": 0}},
        ])
    );

    let v = c
        .get("/api/v1/hospitals/h1/adt-volumes?from=2026-02-28&to=2026-03-04")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(v["from"], "2026-02-28");
    let days: Vec<String> = v["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            format!(
                "{} {}/{}/{}/{}",
                d["date"].as_str().expect("date"),
                d["admissions"],
                d["transfers"],
                d["discharges"],
                d["other"]
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            "2026-02-28 0/0/0/0",
            "2026-03-01 1/0/0/0",
            "2026-03-02 1/1/1/2",
            "2026-03-03 0/0/1/1",
            "2026-03-04 0/0/0/0",
        ]
    );
}

/// Charges and OR utilisation of a log shipped as signed batches through
/// the sync API (SQLite: the figures come from the projection, which does
/// not depend on the backend).
#[tokio::test]
async fn charges_and_or_utilisation_from_a_shipped_log() {
    let cloud = Cloud::primary("eu-west", &["h1", "h2"]);
    let at = serve(cloud.state.clone(), None).await;
    let log = revenue_or_log();
    let ep = at.http();
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let charges = "/api/v1/hospitals/h1/charges/daily?from=2026-03-01&to=2026-03-04";
    let or = "/api/v1/hospitals/h1/or/utilisation?from=2026-03-01&to=2026-03-04";
    // Shipped in two batches, asked in between: the cached projection
    // catches up with the events after it (the reversal comes later).
    let reversal = log
        .iter()
        .position(|e| e.kind == "billing.charge_reversed")
        .expect("a reversal");
    cloud_sync_client::push(
        &ep,
        cloud.signer("h1"),
        &batch("h1", &log[..reversal]),
        now(),
        T,
    )
    .await
    .expect("push");
    let early = c.get(charges).await.expect("get").json().expect("json");
    assert_eq!(early["days"][1]["total_cents"], 126_500);
    assert_eq!(early["days"][1]["reversed"], 0);
    cloud_sync_client::push(
        &ep,
        cloud.signer("h1"),
        &batch("h1", &log[reversal..]),
        now(),
        T,
    )
    .await
    .expect("push");

    let r = c.get(charges).await.expect("get");
    assert_eq!(r.status, 200);
    let v = r.json().expect("json");
    let days: Vec<serde_json::Value> = CHARGES
        .iter()
        .map(|(date, cents, transactions, credits, reversed)| {
            serde_json::json!({
                "date": date, "total_cents": cents,
                "total": hms_domain::charge::format_cents(*cents),
                "transactions": transactions, "credits": credits, "reversed": reversed,
            })
        })
        .collect();
    assert_eq!(v, serde_json::json!({ "hospital": "h1", "days": days }));
    assert_eq!(v["days"][1]["total"], "1245.00");
    assert_eq!(v["days"][2]["total"], "130.50");

    let v = c.get(or).await.expect("get").json().expect("json");
    let room_day = |room: &str,
                    date: &str,
                    figures: [u64; 7],
                    rate: serde_json::Value,
                    [cancelled, bumped, no_show]: [u64; 3]| {
        let [
            cases,
            booked,
            predicted,
            predicted_cases,
            actual,
            completed,
            overruns,
        ] = figures;
        serde_json::json!({
            "room": room, "date": date, "cases": cases, "booked_minutes": booked,
            "predicted_minutes": predicted, "predicted_cases": predicted_cases,
            "actual_minutes": actual, "completed_cases": completed, "overruns": overruns,
            "overrun_rate": rate, "cancelled": cancelled, "bumped": bumped, "no_show": no_show,
        })
    };
    let want = [
        room_day(
            "OR-1",
            "2026-03-02",
            [4, 300, 315, 3, 260, 3, 1],
            0.5.into(),
            [0, 1, 0],
        ),
        room_day(
            "OR-2",
            "2026-03-02",
            [0; 7],
            serde_json::Value::Null,
            [1, 0, 1],
        ),
        room_day(
            "OR-2",
            "2026-03-03",
            [1, 90, 80, 1, 0, 0, 0],
            serde_json::Value::Null,
            [0, 0, 0],
        ),
    ];
    assert_eq!(ROOM_DAYS.len(), want.len());
    assert_eq!(v, serde_json::json!({ "hospital": "h1", "rooms": want }));
    // One room; a range with none of its cases; a deleted case's room.
    let v = c
        .get("/api/v1/hospitals/h1/or/utilisation?from=2026-03-03&to=2026-03-03&room=OR-2")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(v["rooms"], serde_json::json!([want[2]]));
    for path in [
        "/api/v1/hospitals/h1/or/utilisation?from=2026-03-03&to=2026-03-09&room=OR-1",
        "/api/v1/hospitals/h1/or/utilisation?from=2026-03-01&to=2026-03-04&room=OR-3",
    ] {
        let v = c.get(path).await.expect("get").json().expect("json");
        assert_eq!(v["rooms"], serde_json::json!([]), "{path}");
    }
    // A hospital without events: every day listed, all zero; no room.
    let v = c
        .get("/api/v1/hospitals/h2/charges/daily?from=2026-03-02&to=2026-03-02")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(
        v["days"],
        serde_json::json!([{"date": "2026-03-02", "total_cents": 0, "total": "0.00",
                            "transactions": 0, "credits": 0, "reversed": 0}])
    );
    let v = c
        .get("/api/v1/hospitals/h2/or/utilisation?from=2026-03-02&to=2026-03-02")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(v, serde_json::json!({ "hospital": "h2", "rooms": [] }));

    // Refusals: problem documents.
    let day = "from=2026-03-02&to=2026-03-02";
    for (path, status) in [
        (format!("/api/v1/hospitals/h9/charges/daily?{day}"), 404),
        (format!("/api/v1/hospitals/h9/or/utilisation?{day}"), 404),
        (
            format!("/api/v1/hospitals/h1/or/utilisation?{day}&room=OR-9"),
            404,
        ),
        (
            format!("/api/v1/hospitals/h2/or/utilisation?{day}&room=OR-1"),
            404,
        ),
        (
            format!("/api/v1/hospitals/h1/or/utilisation?{day}&room=bad%20room"),
            400,
        ),
        (
            format!("/api/v1/hospitals/h1/charges/daily?{day}&room=OR-1"),
            400,
        ),
        (
            format!("/api/v1/hospitals/h1/or/utilisation?{day}&unit=3W"),
            400,
        ),
        (
            "/api/v1/hospitals/h1/charges/daily?from=2026-03-02".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/or/utilisation?to=2026-03-02".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/charges/daily?from=2026-03-02T00:00:00Z&to=2026-03-03".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/or/utilisation?from=2026-02-30&to=2026-03-03".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/charges/daily?from=2026-03-03&to=2026-03-02".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/or/utilisation?from=2026-03-03&to=2026-03-02".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/charges/daily?from=2025-03-01&to=2026-03-02".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/or/utilisation?from=2025-03-01&to=2026-03-02".into(),
            400,
        ),
        // Before the days kept (400 days up to the log's latest event, 2026-03-03).
        (
            "/api/v1/hospitals/h1/charges/daily?from=2025-01-27&to=2025-01-28".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/or/utilisation?from=2025-01-27&to=2025-01-28".into(),
            400,
        ),
    ] {
        let r = c.get(&path).await.expect("get");
        assert_eq!(
            r.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/problem+json"),
            "{path}"
        );
    }
    // The first day kept answers.
    let r = c
        .get("/api/v1/hospitals/h1/charges/daily?from=2025-01-28&to=2025-01-28")
        .await
        .expect("get");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = c
        .get("/api/v1/hospitals/h1/charges/daily?from=2025-01-27&to=2025-01-28")
        .await
        .expect("get");
    let detail = r.json().expect("json")["detail"]
        .as_str()
        .expect("detail")
        .to_owned();
    assert!(detail.contains("kept from 2025-01-28 on"), "{detail}");
}

async fn unknown_hospitals_and_units_are_404_and_bad_queries_400(backend: Backend) {
    if !available(backend) {
        return;
    }
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let at = serve(cloud.state.clone(), None).await;
    cloud_sync_client::push(
        &at.http(),
        cloud.signer("h1"),
        &batch("h1", &ward_log()),
        now(),
        T,
    )
    .await
    .expect("push");
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let day = "from=2026-03-02T00:00:00Z&to=2026-03-02T23:00:00Z";
    for (path, status) in [
        (format!("/api/v1/hospitals/h9/census?{day}"), 404),
        (format!("/api/v1/hospitals/bad%20id/census?{day}"), 404),
        (
            "/api/v1/hospitals/h9/adt-volumes?from=2026-03-02&to=2026-03-02".into(),
            404,
        ),
        (format!("/api/v1/hospitals/h1/census?{day}&unit=9Z"), 404),
        (
            format!("/api/v1/hospitals/h1/census?{day}&unit=bad%20unit"),
            400,
        ),
        (
            "/api/v1/hospitals/h1/census?from=2026-03-02T00:00:00Z".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/census?from=yesterday&to=2026-03-02T00:00:00Z".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/census?from=2026-03-02T05:00:00Z&to=2026-03-02T04:00:00Z".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/census?from=2020-01-01T00:00:00Z&to=2026-03-02T00:00:00Z".into(),
            400,
        ),
        (format!("/api/v1/hospitals/h1/census?{day}&colour=red"), 400),
        (
            "/api/v1/hospitals/h1/adt-volumes?from=2026-03-02".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/adt-volumes?from=2026-13-01&to=2026-12-01".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/adt-volumes?from=2026-03-02&to=2026-03-01".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/adt-volumes?from=2024-01-01&to=2026-01-01".into(),
            400,
        ),
        (
            "/api/v1/hospitals/h1/adt-volumes?from=2026-03-02&to=2026-03-02%ZZ".into(),
            400,
        ),
    ] {
        let r = c.get(&path).await.expect("get");
        assert_eq!(
            r.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/problem+json"),
            "{path}"
        );
    }
}

async fn operators_enrol_appliances_over_the_api_with_residency(backend: Backend) {
    if !available(backend) {
        return;
    }
    use base64::Engine;
    let cloud = Cloud::primary_on(backend, "eu-west", &["h1"]);
    let at = serve(cloud.state.clone(), None).await;
    let (pkcs8, public) = cloud_sync_client::generate_key().expect("key");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&public);
    let body = |h: &str, region: &str, key: &str| serde_json::json!({ "hospital": h, "region": region, "node": "edge-9", "public_key": key });
    // Without a token: 401 and nothing enrolled.
    let mut anon = Conn::connect(at.addr, None).await.expect("connect");
    let r = anon
        .post("/api/v1/hospitals", &body("h9", "eu-west", &b64))
        .await
        .expect("post");
    assert_eq!(r.status, 401);
    assert!(
        cloud
            .state
            .registry
            .get(&crate::testkit::id("h9"))
            .is_none()
    );

    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    // Residency: another region's hospital is refused and not recorded.
    let r = c
        .post("/api/v1/hospitals", &body("h8", "us-east", &b64))
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{:?}", r.json());
    assert!(
        cloud
            .state
            .registry
            .get(&crate::testkit::id("h8"))
            .is_none()
    );
    // Bad input: 400 problems.
    for bad in [
        body("h9", "eu-west", "not base64!"),
        body("h9", "eu-west", "AAAA"),
        body("not a valid id", "eu-west", &b64),
        serde_json::json!({ "hospital": "h9" }),
    ] {
        let r = c.post("/api/v1/hospitals", &bad).await.expect("post");
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.content_type.as_deref(), Some("application/problem+json"));
    }
    // Enrolled: 201, and the appliance can sync at once (no restart).
    let r = c
        .post("/api/v1/hospitals", &body("h9", "eu-west", &b64))
        .await
        .expect("post");
    assert_eq!(r.status, 201);
    let signer = cloud_sync_client::Signer::new(
        &pkcs8,
        crate::testkit::id("h9"),
        crate::testkit::id("edge-9"),
    )
    .expect("signer");
    let log = crate::store::conformance::log("h9", 3);
    let pushed = cloud_sync_client::push(&at.http(), &signer, &batch("h9", &log), now(), T)
        .await
        .expect("push");
    assert_eq!(pushed.acked_seq, 3);
    // Re-keying the same hospital answers 200; it is durable across a restart.
    let r = c
        .post("/api/v1/hospitals", &body("h9", "eu-west", &b64))
        .await
        .expect("post");
    assert_eq!(r.status, 200);
    let (reg, _) =
        crate::enrolment::open_registry(cloud._dir.path(), crate::testkit::id("eu-west"))
            .expect("registry");
    assert!(reg.get(&crate::testkit::id("h9")).is_some());
}

#[tokio::test]
async fn empi_records_are_matched_or_created_with_stable_eids_and_audited() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let downlink = std::sync::Arc::new(crate::downlink::Downlink::in_memory().expect("downlink"));
    let empi = std::sync::Arc::new(
        crate::empi::RegionalEmpi::open(dir.path(), downlink.clone()).expect("empi"),
    );
    let at = serve(cloud.state.clone().with_empi(empi), None).await;
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let rec = |source: &str, id: &str, family: &str| {
        serde_json::json!({
            "source": source, "local_id": id, "given_name": "Florence", "family_name": family,
            "birth_date": "1980-05-12", "sex": "female", "postal_code": "LS1 4AB",
            "city": "Leeds", "address_line": "1 High Street"
        })
    };
    let first = c
        .post("/api/v1/empi/records", &rec("h1", "A-1", "Nightingale"))
        .await
        .expect("post");
    assert_eq!(first.status, 200);
    let first = first.json().expect("json");
    assert_eq!(first["decision"], "new_identity");
    let second = c
        .post("/api/v1/empi/records", &rec("h2", "B-9", "Nightingal"))
        .await
        .expect("post")
        .json()
        .expect("json");
    assert_eq!(second["eid"], first["eid"], "{second}");
    assert_eq!(second["decision"], "auto_link");
    assert!(second["score"].as_f64().expect("score") >= 10.0);
    let other = c
        .post("/api/v1/empi/records", &{
            let mut r = rec("h1", "A-2", "Seacole");
            r["given_name"] = "Mary".into();
            r["birth_date"] = "1965-01-23".into();
            r["postal_code"] = "YO1 7HH".into();
            r["city"] = "York".into();
            r["address_line"] = "9 Low Road".into();
            r
        })
        .await
        .expect("post")
        .json()
        .expect("json");
    assert_ne!(other["eid"], first["eid"]);
    // Sex as HL7 table 0001 codes or words in any case; what cannot be
    // read is no sex (never a 400). Each from a source of its own: one
    // source's two records are two people.
    for (source, sex) in [("h3", "Female"), ("h4", "F"), ("h5", "U"), ("h6", "zz")] {
        let r = c
            .post("/api/v1/empi/records", &{
                let mut r = rec(source, "C-1", "Nightingale");
                r["sex"] = sex.into();
                r
            })
            .await
            .expect("post");
        assert_eq!(r.status, 200, "sex {sex:?}");
        let v = r.json().expect("json");
        if sex.eq_ignore_ascii_case("female") || sex == "F" {
            // Read as female: the same person as the first record.
            assert_eq!(v["eid"], first["eid"], "sex {sex:?}: {v}");
        }
    }
    // Looked up by source and local id.
    let got = c
        .get("/api/v1/empi/records/h2/B-9")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(got["eid"], first["eid"]);
    assert_eq!(
        c.get("/api/v1/empi/records/h2/NOPE")
            .await
            .expect("get")
            .status,
        404
    );
    // The assignments went to each source's downlink (h1: two, h2: one).
    let h1 = crate::testkit::id("h1");
    assert_eq!(downlink.after(&h1, 0, 10).expect("read").len(), 2);
    // Bad input and no token.
    let r = c
        .post(
            "/api/v1/empi/records",
            &serde_json::json!({ "source": "h1" }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 400);
    let mut anon = Conn::connect(at.addr, None).await.expect("connect");
    assert_eq!(
        anon.post("/api/v1/empi/records", &rec("h1", "A-3", "X"))
            .await
            .expect("post")
            .status,
        401
    );
    // The EIDs survive a restart: the engine is rebuilt from the stored records.
    let again = crate::empi::RegionalEmpi::open(dir.path(), downlink).expect("reopen");
    assert_eq!(
        again
            .eid_of("h2", "B-9")
            .map(crate::empi::eid_text)
            .as_deref(),
        first["eid"].as_str()
    );
    // And the audit has one row per decision (3, and the 4 with other
    // spellings of sex).
    let n: i64 = crate::store::empi::EmpiDb::reader(&dir.path().join("empi.sqlite"))
        .expect("open")
        .count_audit(None, &["match"]);
    assert_eq!(n, 7);
}

#[tokio::test]
async fn empi_human_decisions_are_sticky_and_the_review_queue_opens_and_closes() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let downlink = std::sync::Arc::new(crate::downlink::Downlink::in_memory().expect("downlink"));
    let empi = std::sync::Arc::new(
        crate::empi::RegionalEmpi::open(dir.path(), downlink.clone()).expect("empi"),
    );
    let at = serve(cloud.state.clone().with_empi(empi.clone()), None).await;
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let post = |path: &'static str, body: serde_json::Value| {
        let token = token.clone();
        let addr = at.addr;
        async move {
            let mut c = Conn::connect(addr, Some(&token)).await.expect("connect");
            let r = c.post(path, &body).await.expect("post");
            (r.status, r.json().unwrap_or_default())
        }
    };
    let person = |src: &str, id: &str, given: &str, pc: &str| {
        serde_json::json!({
            "source": src, "local_id": id, "given_name": given, "family_name": "Nightingale",
            "birth_date": "1980-05-12", "sex": "female", "postal_code": pc
        })
    };
    let (_, a) = post(
        "/api/v1/empi/records",
        person("h1", "A-1", "Florence", "LS1 4AB"),
    )
    .await;
    let (_, b) = post(
        "/api/v1/empi/records",
        person("h2", "B-1", "Florence", "LS1 4AB"),
    )
    .await;
    assert_eq!(a["eid"], b["eid"]);
    // Unlink: split, and re-registering the same record does not rejoin.
    let key = |s: &str, id: &str| serde_json::json!({ "source": s, "local_id": id });
    let (status, change) = post(
        "/api/v1/empi/decisions",
        serde_json::json!({ "action": "unlink", "a": key("h1", "A-1"), "b": key("h2", "B-1") }),
    )
    .await;
    assert_eq!((status, change["change"].as_str()), (200, Some("split")));
    let (_, again) = post(
        "/api/v1/empi/records",
        person("h2", "B-1", "Florence", "LS1 4AB"),
    )
    .await;
    assert_ne!(again["eid"], a["eid"], "the unlink is sticky");
    // Link them back by hand; a merge of an identity with itself changes nothing.
    let (status, change) = post(
        "/api/v1/empi/decisions",
        serde_json::json!({ "action": "link", "a": key("h1", "A-1"), "b": key("h2", "B-1") }),
    )
    .await;
    assert_eq!((status, change["change"].as_str()), (200, Some("merged")));
    let (status, _) = post(
        "/api/v1/empi/decisions",
        serde_json::json!({ "action": "befriend", "a": key("h1", "A-1"), "b": key("h2", "B-1") }),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        "/api/v1/empi/decisions",
        serde_json::json!({ "action": "link", "a": key("h1", "A-1"), "b": key("h9", "nobody") }),
    )
    .await;
    assert_eq!(status, 409, "an unknown record is refused");
    // A near miss (same names, another birth date and postcode) is a new
    // identity with an open review task, which an operator closes.
    let mut near = person("h3", "C-1", "Florence", "YO1 7HH");
    near["birth_date"] = "1981-06-13".into();
    let (_, near) = post("/api/v1/empi/records", near).await;
    assert_eq!(near["decision"], "review", "{near}");
    assert_ne!(near["eid"], a["eid"]);
    let reviews = c
        .get("/api/v1/empi/reviews?status=open")
        .await
        .expect("get")
        .json()
        .expect("json");
    let open = reviews["reviews"].as_array().expect("list");
    let task = open
        .iter()
        .find(|r| r["local_id"] == "C-1")
        .expect("a review task for the near miss");
    assert_eq!(task["reason"], "threshold");
    assert!(task["candidates"].as_array().is_some_and(|c| !c.is_empty()));
    // The same person again under another local id of the same source: two
    // records of one register are two people, so a review, not a link.
    let (_, twice) = post("/api/v1/empi/records", {
        let mut r = person("h3", "C-2", "Florence", "YO1 7HH");
        r["birth_date"] = "1981-06-13".into();
        r
    })
    .await;
    assert_eq!(twice["decision"], "review", "{twice}");
    assert_ne!(twice["eid"], near["eid"]);
    let reviews = c
        .get("/api/v1/empi/reviews?status=open")
        .await
        .expect("get")
        .json()
        .expect("json");
    let twice_task = reviews["reviews"]
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["local_id"] == "C-2")
        .cloned()
        .expect("a review task for the second record of one source");
    assert_eq!(twice_task["reason"], "cannot_link", "{twice_task}");
    let id = task["id"].as_i64().expect("id");
    let mut closer = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let r = closer
        .post(
            &format!("/api/v1/empi/reviews/{id}/close"),
            &serde_json::json!({ "resolution": "different people" }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 200);
    let r = closer
        .post(
            &format!("/api/v1/empi/reviews/{id}/close"),
            &serde_json::json!({ "resolution": "again" }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 404, "closed once");
    let closed = c
        .get("/api/v1/empi/reviews?status=closed")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert!(
        closed["reviews"]
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["id"] == id && r["closed_by"] == "operator:ops")
    );
    // Search explains its candidates.
    let (status, hits) = post("/api/v1/empi/search", person("", "", "Florence", "LS1 4AB")).await;
    assert_eq!(status, 200);
    let first = &hits["candidates"][0];
    assert!(first["score"].as_f64().expect("score") > 0.0);
    assert!(first["explanation"].is_object(), "{first}");
    // Decisions survive a restart.
    drop(at);
    let reopened = crate::empi::RegionalEmpi::open(dir.path(), downlink).expect("reopen");
    assert_eq!(reopened.eid_of("h1", "A-1"), reopened.eid_of("h2", "B-1"));
}

#[tokio::test]
async fn slow_matching_degrades_to_exact_matching_and_says_so() {
    let cloud = Cloud::primary("eu-west", &["h1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let downlink = std::sync::Arc::new(crate::downlink::Downlink::in_memory().expect("downlink"));
    let empi =
        std::sync::Arc::new(crate::empi::RegionalEmpi::open(dir.path(), downlink).expect("empi"));
    // Every match counts as slow: the first one switches to exact matching.
    empi.set_slow_after(std::time::Duration::ZERO);
    let at = serve(cloud.state.clone().with_empi(empi.clone()), None).await;
    let token = cloud.token("ops");
    let mut c = Conn::connect(at.addr, Some(&token)).await.expect("connect");
    let rec = |id: &str, given: &str, dob: &str| {
        serde_json::json!({
            "source": "h1", "local_id": id, "given_name": given, "family_name": "Seacole",
            "birth_date": dob, "sex": "female"
        })
    };
    let first = c
        .post("/api/v1/empi/records", &rec("A-1", "Mary", "1965-01-23"))
        .await
        .expect("post")
        .json()
        .expect("json");
    assert_eq!(first["degraded"], false);
    assert!(empi.degraded());
    let mut anon = Conn::connect(at.addr, None).await.expect("connect");
    let health = anon
        .get("/health")
        .await
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(health, serde_json::json!({ "status": "degraded" }));
    // The details need a token; a token that is not valid is refused.
    let bad = Conn::connect(at.addr, Some("hmsc_not-a-token"))
        .await
        .expect("connect")
        .get("/health")
        .await
        .expect("get");
    assert_eq!(bad.status, 401);
    let health = c.get("/health").await.expect("get").json().expect("json");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["empi"]["matching"]
            .as_str()
            .is_some_and(|m| m.starts_with("exact"))
    );
    let same = c
        .post("/api/v1/empi/records", &rec("A-2", "Mary", "1965-01-23"))
        .await
        .expect("post")
        .json()
        .expect("json");
    assert_eq!(
        (same["degraded"].as_bool(), same["decision"].as_str()),
        (Some(true), Some("exact_match"))
    );
    assert_eq!(same["eid"], first["eid"]);
    assert!(same["score"].is_null());
    // Someone else born the same day is not that identity.
    let other = c
        .post(
            "/api/v1/empi/records",
            &serde_json::json!({
                "source": "h1", "local_id": "A-9", "given_name": "Ada",
                "family_name": "Lovelace", "birth_date": "1965-01-23"
            }),
        )
        .await
        .expect("post")
        .json()
        .expect("json");
    assert_eq!(other["decision"], "exact_new_identity", "{other}");
    assert_ne!(other["eid"], first["eid"]);
    // A near miss that the full engine would weigh gets its own identity now.
    let near = c
        .post("/api/v1/empi/records", &rec("A-3", "Mary", "1965-01-24"))
        .await
        .expect("post")
        .json()
        .expect("json");
    assert_eq!(near["decision"], "exact_new_identity");
    assert_ne!(near["eid"], first["eid"]);
}
