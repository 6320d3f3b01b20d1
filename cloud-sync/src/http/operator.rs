//! The operator API of the regional cloud (JSON, `Authorization: Bearer`).
//!
//! Tokens are made with `hms-cloud token create` and checked against their
//! SHA-256 in the registry database ([`crate::store::registry`]) on every
//! request, so a revocation (`hms-cloud token revoke`) or an expiry takes
//! effect at the next request; a missing, unknown, revoked or expired token
//! is a 401 problem with a `WWW-Authenticate: Bearer` challenge. Each route
//! needs one [`Scope`] (`admin` holds them all): the EMPI's need `empi`,
//! enrolment `enrol`, every other read `read`, and the fleet API
//! ([`super::fleet`]) `fleet`; a token without it is a 403 `missing-scope`
//! problem naming it.
//!
//! Every EMPI read (search, record look-up, review list, model) is audited
//! in the EMPI's audit before it is answered: who (`operator:{token}`),
//! when, which kind of query and how many results, never a value asked
//! for; an answer that cannot be audited is not given (503).
//!
//! - `GET /api/v1/hospitals`: every hospital (enrolled here, or on a replica
//!   replicated here) with region, event count, position and last ingest.
//! - `GET /api/v1/hospitals/{hospital}/census?from=RFC3339&to=RFC3339[&unit=U]`:
//!   occupied beds per unit at each hour boundary in `[from, to]`.
//! - `GET /api/v1/hospitals/{hospital}/adt-volumes?from=DATE&to=DATE`: ADT
//!   event counts per UTC day, by kind.
//! - `GET /api/v1/hospitals/{hospital}/charges/daily?from=DATE&to=DATE`:
//!   charges per UTC day of the transaction date (total, transactions,
//!   credits, reversed).
//! - `GET /api/v1/hospitals/{hospital}/or/utilisation?from=DATE&to=DATE[&room=R]`:
//!   OR cases per room and UTC day of the booked start (booked, predicted
//!   and actual minutes, overruns, cancellations, bumps, no-shows).
//! - `GET /api/v1/replication`: DR replication per hospital.
//! - `POST /api/v1/empi/records`: match-or-create a patient record in the
//!   regional EMPI → `{eid, decision, score}`; `GET
//!   /api/v1/empi/records/{source}/{local_id}` → its EID.
//! - `GET /api/v1/empi/model`: the matching model in force (version, when
//!   and on how many records it was trained, the EM report, thresholds, `m`,
//!   `u` and weight per field level) and the stored models; `POST
//!   /api/v1/empi/model/train` `{sample?, seed?}` trains one on the region's
//!   records and installs it (409 while another runs or with too few
//!   records, 422 when training gives no usable model); `POST
//!   /api/v1/empi/model/activate` `{version}` installs a stored one again.
//!   EIDs never change on installation ([`crate::empi::model`]).
//! - `POST /api/v1/hospitals`: enrols a hospital's appliance, as
//!   `hms-cloud enroll` does, effective at once; a hospital of another
//!   region is a 403 problem (residency), and nothing is recorded. The same
//!   enrolment again is a 200 that changes nothing; another node or key for
//!   an enrolled hospital is a 409 `already-enrolled` problem unless the
//!   body says `"replace": true`, and a replacement is audited in the
//!   registry (who, which hospital, the nodes).
//!
//! Census, volumes, charges and OR utilisation come from
//! [`crate::analytics`]; every one of them needs `read`. An unknown
//! hospital, unit or OR room is a 404 problem, a bad query parameter (and a
//! `from` before the first day the analytics hold charges or OR figures
//! of, [`crate::analytics::RETAIN_DAYS`]) a 400 problem. Every error
//! is a problem document ([`super::problem`]), chosen by the type of the
//! error, never by its message.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hms_domain::{HospitalId, OrRoomId, Timestamp, UnitId};
use serde_json::json;

use super::problem;
use crate::analytics::{DAY_MS, HOUR_MS, RETAIN_DAYS, hour_boundaries};
use crate::config::Mode;
use crate::state::CloudState;
pub use crate::store::registry::Scope;

/// Longest census, volume, charges or OR utilisation range, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

// A longest range up to the day of a hospital's latest event lies within
// the days the analytics keep.
const _: () = assert!(RETAIN_DAYS > MAX_RANGE_DAYS);

/// The API routes.
pub fn routes() -> Router<CloudState> {
    Router::new()
        .route("/api/v1/hospitals", get(hospitals).post(enrol))
        .route("/api/v1/hospitals/{hospital}/census", get(census))
        .route("/api/v1/hospitals/{hospital}/adt-volumes", get(adt_volumes))
        .route(
            "/api/v1/hospitals/{hospital}/charges/daily",
            get(charges_daily),
        )
        .route(
            "/api/v1/hospitals/{hospital}/or/utilisation",
            get(or_utilisation),
        )
        .route("/api/v1/replication", get(replication))
        .route("/api/v1/empi/records", axum::routing::post(empi_register))
        .route("/api/v1/empi/records/{source}/{local_id}", get(empi_record))
        .route("/api/v1/empi/search", axum::routing::post(empi_search))
        .route("/api/v1/empi/decisions", axum::routing::post(empi_decide))
        .route("/api/v1/empi/merge", axum::routing::post(empi_merge))
        .route("/api/v1/empi/reviews", get(empi_reviews))
        .route("/api/v1/empi/model", get(empi_model))
        .route(
            "/api/v1/empi/model/train",
            axum::routing::post(empi_model_train),
        )
        .route(
            "/api/v1/empi/model/activate",
            axum::routing::post(empi_model_activate),
        )
        .route(
            "/api/v1/empi/reviews/{id}/close",
            axum::routing::post(empi_close_review),
        )
}

fn unavailable() -> Response {
    problem::unavailable().into_response()
}

fn bad(detail: String) -> Response {
    problem::bad(detail).into_response()
}

fn not_found(detail: String) -> Response {
    problem::not_found(detail).into_response()
}

/// Runs `f` on a blocking thread; a failure is a 503 problem (logged).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "operator API store failure");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

/// Checks the bearer token and that it holds `scope`; returns the
/// operator's token name (401 without a live token, 403 without the scope).
pub(super) async fn operator(
    state: &CloudState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<String, Response> {
    let denied = |detail: &str| problem::unauthorized(detail).into_response();
    // An EMPI change relayed by another instance, which authenticated its
    // operator with the `empi` scope (the gate keeps this header from
    // anyone else).
    if let Some(name) = headers
        .get(super::RELAYED_OPERATOR)
        .and_then(|v| v.to_str().ok())
    {
        return if scope == Scope::Empi {
            Ok(name.to_owned())
        } else {
            Err(denied("a relayed request is an EMPI change"))
        };
    }
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
    else {
        return Err(denied(
            "send an operator token: Authorization: Bearer TOKEN",
        ));
    };
    let st = state.clone();
    let now = Timestamp::now().as_millis();
    match blocking(move || st.registry_db.operator(&token, now)).await? {
        Some(op) if op.scopes.allows(scope) => Ok(op.name),
        Some(op) => Err(
            problem::missing_scope(&op.name, scope.as_str(), &op.scopes.to_string())
                .into_response(),
        ),
        None => Err(denied("the token is not valid here")),
    }
}

/// Audits an EMPI read by `who` (see the module doc) before it is answered.
async fn audit_read(
    empi: &std::sync::Arc<crate::empi::RegionalEmpi>,
    who: &str,
    query: &'static str,
    results: usize,
) -> Result<(), Response> {
    let (empi, actor) = (empi.clone(), format!("operator:{who}"));
    blocking(move || empi.audit_read(&actor, query, results)).await
}

pub(super) async fn hospital_of(state: &CloudState, raw: &str) -> Result<HospitalId, Response> {
    let unknown = || not_found(format!("no hospital {raw:?} here"));
    let Ok(id) = raw.parse::<HospitalId>() else {
        return Err(unknown());
    };
    let (st, h) = (state.clone(), id.clone());
    if blocking(move || st.holds(&h)).await? {
        Ok(id)
    } else {
        Err(unknown())
    }
}

/// The rows of `GET /api/v1/hospitals` (blocking: it opens each store).
pub(super) fn hospital_rows(st: &CloudState) -> anyhow::Result<Vec<serde_json::Value>> {
    let status = st.registry_db.ingest_status()?;
    let mut list: Vec<(HospitalId, String)> = match st.mode {
        Mode::Primary => st
            .registry
            .hospitals()
            .into_iter()
            .map(|e| (e.hospital.clone(), e.region.to_string()))
            .collect(),
        Mode::Replica => status
            .iter()
            .map(|(h, s)| (h.clone(), s.region.to_string()))
            .collect(),
    };
    list.sort();
    let mut out = vec![];
    for (h, region) in list {
        let p = (st.open)(&h)?.position()?;
        let last = status
            .get(&h)
            .map(|s| Timestamp::from_millis(s.last_ingest_ms).to_rfc3339());
        out.push(json!({
            "id": h,
            "region": region,
            "events": p.seq,
            "position": { "seq": p.seq, "hash": p.hash },
            "last_ingest": last,
        }));
    }
    Ok(out)
}

async fn hospitals(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    if let Err(r) = operator(&state, &headers, Scope::Read).await {
        return r;
    }
    let st = state.clone();
    let rows = blocking(move || hospital_rows(&st)).await;
    match rows {
        Ok(rows) => axum::Json(json!({ "hospitals": rows })).into_response(),
        Err(r) => r,
    }
}

/// `POST /api/v1/empi/records` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmpiBody {
    #[serde(default)]
    source: String,
    #[serde(default)]
    local_id: String,
    given_name: Option<String>,
    family_name: Option<String>,
    birth_date: Option<String>,
    /// HL7 table 0001 codes or words, any case ([`hms_domain::phi::Sex::from_code`]).
    sex: Option<String>,
    address_line: Option<String>,
    city: Option<String>,
    postal_code: Option<String>,
    state: Option<String>,
    phone: Option<String>,
    national_id: Option<String>,
}

async fn empi_register(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, empi, b): (String, _, EmpiBody) =
        match empi_call(&state, &headers, &body, "an EMPI record").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    if b.source.trim().is_empty() || b.local_id.trim().is_empty() {
        return bad("source and local_id are required".into());
    }
    let r = empi_record_of(b);
    let actor = format!("operator:{who}");
    match blocking(move || empi.register(&r, &actor)).await {
        Ok(m) => axum::Json(json!({
            "eid": crate::empi::eid_text(m.eid),
            "decision": m.decision,
            "score": m.score,
            "degraded": m.degraded,
        }))
        .into_response(),
        Err(resp) => resp,
    }
}

fn empi_record_of(b: EmpiBody) -> hms_domain::empi::Record {
    use hms_domain::phi::{Address, BirthDate, Identifier, Mrn, PersonName, Phone};
    let mut r = hms_domain::empi::Record::new(b.source.trim(), b.local_id.trim());
    r.given_name = b.given_name.map(PersonName::new);
    r.family_name = b.family_name.map(PersonName::new);
    r.birth_date = b.birth_date.map(BirthDate::new);
    r.sex = b.sex.as_deref().and_then(hms_domain::phi::Sex::from_code);
    r.address_line = b.address_line.map(Address::new);
    r.city = b.city.map(Address::new);
    r.postal_code = b.postal_code.map(Address::new);
    r.state = b.state;
    r.phone = b.phone.map(Phone::new);
    if let Some(n) = b.national_id {
        r.identifiers.push(Identifier {
            id: Mrn::new(n),
            authority: "national".into(),
            kind: "NI".into(),
        });
    }
    r
}

/// The 409 problem of a cloud that runs no EMPI (a replica).
/// Why this cloud cannot answer an EMPI request: none runs here (409), or
/// another instance of the region runs it (503, try again: this one takes
/// over if that one stops).
fn no_empi(state: &CloudState) -> Response {
    match state.empi.state() {
        crate::empi::SlotState::Standby | crate::empi::SlotState::Following(_) => problem::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            problem::UNAVAILABLE,
            "the regional EMPI runs on another instance of this region (the holder of its \
             lease), which takes its changes; this instance answers reads, and takes over \
             if that one stops",
        )
        .into_response(),
        _ => problem::wrong_role("the regional EMPI runs on the primary").into_response(),
    }
}

/// The operator, the EMPI and the JSON body of an EMPI request, or the
/// problem to answer (401, 403 without the `empi` scope, 409 without an
/// EMPI, 400 for a bad body).
async fn empi_call<T: serde::de::DeserializeOwned>(
    state: &CloudState,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<(String, std::sync::Arc<crate::empi::RegionalEmpi>, T), Response> {
    empi_call_as(state, headers, body, what, Access::Change).await
}

/// Whether an EMPI request changes it (only where it runs) or reads it
/// (also where an engine follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Change,
}

/// The EMPI to answer with: where it runs, or, to read, where it is followed.
fn empi_for(
    state: &CloudState,
    access: Access,
) -> Option<std::sync::Arc<crate::empi::RegionalEmpi>> {
    match access {
        Access::Change => state.empi.get(),
        Access::Read => state.empi.reader(),
    }
}

/// [`empi_call`] for a request that changes the EMPI or reads it.
async fn empi_call_as<T: serde::de::DeserializeOwned>(
    state: &CloudState,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
    access: Access,
) -> Result<(String, std::sync::Arc<crate::empi::RegionalEmpi>, T), Response> {
    let who = operator(state, headers, Scope::Empi).await?;
    let Some(empi) = empi_for(state, access) else {
        return Err(no_empi(state));
    };
    let parsed: T =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not {what}: {e}")))?;
    Ok((who, empi, parsed))
}

/// `POST /api/v1/empi/search`: candidates for a record, with explanations.
async fn empi_search(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, empi, b): (String, _, EmpiBody) =
        match empi_call_as(&state, &headers, &body, "an EMPI record", Access::Read).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let q = empi_record_of(b);
    let hits = empi.search(&q, 10);
    if let Err(r) = audit_read(&empi, &who, "search", hits.len()).await {
        return r;
    }
    axum::Json(json!({
        "candidates": hits.iter().map(|h| json!({
            "source": h.key.source,
            "local_id": h.key.local_id.expose(),
            "eid": crate::empi::eid_text(h.eid),
            "score": h.score,
            "explanation": h.explanation,
        })).collect::<Vec<_>>()
    }))
    .into_response()
}

/// A record named by source and local id.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    source: String,
    local_id: String,
}

impl KeyBody {
    fn key(&self) -> hms_domain::empi::RecordKey {
        hms_domain::empi::RecordKey {
            source: self.source.clone(),
            local_id: hms_domain::phi::Mrn::new(self.local_id.clone()),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    action: String,
    a: KeyBody,
    b: KeyBody,
}

fn change_json(c: &hms_domain::empi::Change) -> serde_json::Value {
    use hms_domain::empi::Change;
    match c {
        Change::Unchanged => json!({ "change": "unchanged" }),
        Change::Merged { survivor, retired } => json!({
            "change": "merged",
            "survivor": crate::empi::eid_text(*survivor),
            "retired": crate::empi::eid_text(*retired),
        }),
        Change::Split { from, to, moved } => json!({
            "change": "split",
            "from": crate::empi::eid_text(*from),
            "to": crate::empi::eid_text(*to),
            "moved": moved.len(),
        }),
    }
}

fn decision_failed(e: crate::empi::DecisionError) -> Response {
    problem::decision(e).into_response()
}

/// `POST /api/v1/empi/decisions`: link, unlink or never-link two records.
async fn empi_decide(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, empi, b): (String, _, DecisionBody) =
        match empi_call(&state, &headers, &body, "a decision").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let actor = format!("operator:{who}");
    match tokio::task::spawn_blocking(move || {
        empi.decide(&b.a.key(), &b.b.key(), &b.action, &actor)
    })
    .await
    {
        Ok(Ok(c)) => axum::Json(change_json(&c)).into_response(),
        Ok(Err(e)) => decision_failed(e),
        Err(_) => unavailable(),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    survivor: String,
    other: String,
}

fn parse_eid(s: &str) -> Option<hms_domain::empi::Eid> {
    s.strip_prefix('E')?.parse().ok().map(hms_domain::empi::Eid)
}

/// `POST /api/v1/empi/merge`: two identities become one (the older survives).
async fn empi_merge(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, empi, b): (String, _, MergeBody) =
        match empi_call(&state, &headers, &body, "a merge").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let (Some(s), Some(o)) = (parse_eid(&b.survivor), parse_eid(&b.other)) else {
        return bad("survivor and other are EIDs (E followed by digits)".into());
    };
    let actor = format!("operator:{who}");
    match tokio::task::spawn_blocking(move || empi.merge(s, o, &actor)).await {
        Ok(Ok(c)) => axum::Json(change_json(&c)).into_response(),
        Ok(Err(e)) => decision_failed(e),
        Err(_) => unavailable(),
    }
}

/// `GET /api/v1/empi/reviews?status=open|closed`.
async fn empi_reviews(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match operator(&state, &headers, Scope::Empi).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(empi) = state.empi.reader() else {
        return no_empi(&state);
    };
    let status = q.get("status").map_or("open", String::as_str).to_owned();
    if status != "open" && status != "closed" {
        return bad("status is open or closed".into());
    }
    let e = empi.clone();
    let list = match blocking(move || e.reviews(&status)).await {
        Ok(list) => list,
        Err(r) => return r,
    };
    if let Err(r) = audit_read(&empi, &who, "reviews", list.len()).await {
        return r;
    }
    axum::Json(json!({ "reviews": list })).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    resolution: String,
}

/// `POST /api/v1/empi/reviews/{id}/close`.
async fn empi_close_review(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    let (who, empi, b): (String, _, CloseBody) =
        match empi_call(&state, &headers, &body, "a closing").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let actor = format!("operator:{who}");
    match blocking(move || empi.close_review(id, &actor, &b.resolution)).await {
        Ok(true) => axum::Json(json!({ "id": id, "status": "closed" })).into_response(),
        Ok(false) => not_found(format!("no open review {id}")),
        Err(r) => r,
    }
}

/// `GET /api/v1/empi/model`.
async fn empi_model(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    let who = match operator(&state, &headers, Scope::Empi).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(empi) = state.empi.reader() else {
        return no_empi(&state);
    };
    let e = empi.clone();
    let model = match blocking(move || e.describe_model()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = audit_read(&empi, &who, "model", 1).await {
        return r;
    }
    axum::Json(model).into_response()
}

/// `POST /api/v1/empi/model/train` body; an empty body takes the defaults.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainBody {
    /// Most records sampled.
    sample: Option<usize>,
    /// Sampling and EM seed.
    seed: Option<u64>,
}

/// `POST /api/v1/empi/model/activate` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    version: String,
}

fn model_failed(e: crate::empi::model::ModelError) -> Response {
    problem::model(e).into_response()
}

/// Runs a model change on a blocking thread and answers with the model in
/// force.
async fn model_change(
    empi: std::sync::Arc<crate::empi::RegionalEmpi>,
    change: impl FnOnce(
        &crate::empi::RegionalEmpi,
    ) -> Result<crate::empi::model::ModelInfo, crate::empi::model::ModelError>
    + Send
    + 'static,
) -> Response {
    let done = tokio::task::spawn_blocking(move || {
        change(&empi)?;
        empi.describe_model()
            .map_err(crate::empi::model::ModelError::Store)
    })
    .await;
    match done {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => model_failed(e),
        Err(_) => unavailable(),
    }
}

/// `POST /api/v1/empi/model/train`: trains on the region's records and
/// installs the model; answers when it is in force.
async fn empi_model_train(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use crate::empi::model::{MAX_SAMPLE, MIN_TRAIN_RECORDS};
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let (who, empi, b): (String, _, TrainBody) =
        match empi_call(&state, &headers, body, "a training request").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let mut settings = empi.train_settings();
    let sample = b.sample.unwrap_or(settings.sample);
    if !(MIN_TRAIN_RECORDS..=MAX_SAMPLE).contains(&sample) {
        return bad(format!(
            "sample is a number of records from {MIN_TRAIN_RECORDS} to {MAX_SAMPLE}"
        ));
    }
    settings.sample = sample;
    if let Some(seed) = b.seed {
        settings.config.seed = seed;
    }
    let actor = format!("operator:{who}");
    tracing::info!(operator = %who, sample, "EMPI model training requested");
    model_change(empi, move |e| e.train(&settings, &actor)).await
}

/// `POST /api/v1/empi/model/activate`: installs a stored model again (or
/// the hand-set one by its version).
async fn empi_model_activate(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, empi, b): (String, _, ActivateBody) =
        match empi_call(&state, &headers, &body, "a model to activate").await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let actor = format!("operator:{who}");
    tracing::info!(operator = %who, version = %b.version, "EMPI model activation requested");
    model_change(empi, move |e| e.activate(&b.version, &actor)).await
}

async fn empi_record(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path((source, local_id)): Path<(String, String)>,
) -> Response {
    let who = match operator(&state, &headers, Scope::Empi).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(empi) = state.empi.reader() else {
        return not_found("no such record in the regional EMPI".into());
    };
    let found = empi.eid_of(&source, &local_id);
    if let Err(r) = audit_read(&empi, &who, "record", usize::from(found.is_some())).await {
        return r;
    }
    match found {
        Some(eid) => axum::Json(json!({ "eid": crate::empi::eid_text(eid) })).into_response(),
        None => not_found("no such record in the regional EMPI".into()),
    }
}

/// `POST /api/v1/hospitals` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolBody {
    hospital: String,
    region: String,
    node: String,
    /// The appliance's raw 32-byte Ed25519 public key, base64 (standard).
    public_key: String,
    /// Re-key a hospital enrolled already with another node or key.
    #[serde(default)]
    replace: bool,
}

async fn enrol(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let who = match operator(&state, &headers, Scope::Enrol).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if state.mode == Mode::Replica {
        return problem::wrong_role(
            "a replica holds replicated data only; enrol appliances at the primary",
        )
        .into_response();
    }
    let b: EnrolBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("the body is not an enrolment: {e}")),
    };
    use base64::Engine;
    let enrolment = (|| -> Result<crate::enrolment::Enrolment, String> {
        Ok(crate::enrolment::Enrolment {
            hospital: b.hospital.parse().map_err(|e| format!("hospital: {e}"))?,
            region: b.region.parse().map_err(|e| format!("region: {e}"))?,
            node: b.node.parse().map_err(|e| format!("node: {e}"))?,
            public_key: base64::engine::general_purpose::STANDARD
                .decode(b.public_key.trim())
                .map_err(|e| format!("public_key is not base64: {e}"))?,
        })
    })();
    let e = match enrolment {
        Ok(e) => e,
        Err(m) => return bad(m),
    };
    let mut answer = json!({ "hospital": e.hospital, "region": e.region, "node": e.node });
    let (st, replace, actor) = (state.clone(), b.replace, format!("operator:{who}"));
    let now = Timestamp::now().as_millis();
    let done = tokio::task::spawn_blocking(move || {
        crate::enrolment::enroll(&st.registry, &st.registry_db, e, replace, &actor, now)
    })
    .await;
    match done {
        Ok(Ok(done)) => {
            use crate::enrolment::Enrolled;
            let (code, what) = match &done {
                Enrolled::New => (StatusCode::CREATED, "enrolled"),
                Enrolled::Unchanged => (StatusCode::OK, "unchanged"),
                Enrolled::Replaced { previous } => {
                    answer["replaced_node"] = json!(previous);
                    (StatusCode::OK, "replaced")
                }
                Enrolled::Refused { .. } => (StatusCode::CONFLICT, "refused"),
            };
            answer["enrolment"] = json!(what);
            tracing::info!(operator = %who, hospital = %answer["hospital"], outcome = what, "appliance enrolment");
            (code, axum::Json(answer)).into_response()
        }
        Ok(Err(err)) => problem::enrol(err).into_response(),
        Err(_) => unavailable(),
    }
}

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("the query parameter {name} is required"))
}

/// RFC 3339 text; a space where a `+` offset was sent unencoded reads as `+`.
fn instant(name: &str, raw: &str) -> Result<i64, String> {
    Timestamp::parse_rfc3339(&raw.replace(' ', "+"))
        .map(Timestamp::as_millis)
        .map_err(|_| format!("{name}={raw:?} is not an RFC 3339 time (2026-01-02T03:00:00Z)"))
}

/// `YYYY-MM-DD` as a day number since the epoch.
fn day(name: &str, raw: &str) -> Result<i64, String> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw, &fmt)
        .map(|d| i64::from(d.to_julian_day()) - 2_440_588)
        .map_err(|_| format!("{name}={raw:?} is not a date (YYYY-MM-DD)"))
}

pub(super) fn date_text(day: i64) -> String {
    Timestamp::from_millis(day * DAY_MS).to_rfc3339()[..10].to_owned()
}

/// `from` and `to` (`YYYY-MM-DD`) as day numbers, at most
/// [`MAX_RANGE_DAYS`] days, inclusive.
fn day_range(q: &HashMap<String, String>) -> Result<(i64, i64), String> {
    let from = day("from", param(q, "from")?)?;
    let to = day("to", param(q, "to")?)?;
    if to < from {
        return Err("to is before from".to_owned());
    }
    if to - from >= MAX_RANGE_DAYS {
        return Err(format!("the range is longer than {MAX_RANGE_DAYS} days"));
    }
    Ok((from, to))
}

/// The 400 detail of a range that starts before the analytics' `floor`.
fn before_floor(what: &str, floor: Option<i64>, from: i64) -> Option<String> {
    floor.filter(|f| from < *f).map(|f| {
        format!(
            "{what} are kept from {} on ({RETAIN_DAYS} days up to the hospital's latest event); from is earlier",
            date_text(f)
        )
    })
}

type RawQuery = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn query(q: RawQuery, allowed: &[&str]) -> Result<HashMap<String, String>, String> {
    let Query(q) = q.map_err(|e| format!("malformed query: {e}"))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown query parameter {k:?}; use {}",
            allowed.join(", ")
        ));
    }
    Ok(q)
}

/// Occupied beds per unit of `hospital` at each instant of `at` (ms), as
/// `GET …/census` lists them; none when `unit` is not one of its units
/// (blocking: it reads the store).
pub(super) fn census_points(
    st: &CloudState,
    hospital: &HospitalId,
    at: impl Iterator<Item = i64>,
    unit: Option<&UnitId>,
) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    let mut store = (st.open)(hospital)?;
    st.analytics.with(hospital, store.as_mut(), |p| {
        if let Some(u) = unit
            && !p.has_unit(u)
        {
            return None;
        }
        Some(
            at.map(|at| {
                json!({
                    "at": Timestamp::from_millis(at).to_rfc3339(),
                    "occupied": p.census_at(at, unit),
                })
            })
            .collect(),
        )
    })
}

/// ADT event counts of `hospital` per UTC day `from..=to` (days since the
/// epoch), as `GET …/adt-volumes` lists them (blocking).
pub(super) fn adt_days(
    st: &CloudState,
    hospital: &HospitalId,
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut store = (st.open)(hospital)?;
    st.analytics.with(hospital, store.as_mut(), |p| {
        (from..=to)
            .map(|d| {
                let c = p.adt_day(d);
                json!({
                    "date": date_text(d),
                    "admissions": c.admissions,
                    "transfers": c.transfers,
                    "discharges": c.discharges,
                    "other": c.other,
                })
            })
            .collect()
    })
}

async fn census(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    q: RawQuery,
) -> Response {
    if let Err(r) = operator(&state, &headers, Scope::Read).await {
        return r;
    }
    let hospital = match hospital_of(&state, &raw).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let parsed = (|| {
        let q = query(q, &["from", "to", "unit"])?;
        let from = instant("from", param(&q, "from")?)?;
        let to = instant("to", param(&q, "to")?)?;
        if to < from {
            return Err("to is before from".to_owned());
        }
        if to - from > MAX_RANGE_DAYS * DAY_MS {
            return Err(format!("the range is longer than {MAX_RANGE_DAYS} days"));
        }
        let unit = match q.get("unit") {
            None => None,
            Some(u) => Some(
                u.parse::<UnitId>()
                    .map_err(|e| format!("unit={u:?}: {e}"))?,
            ),
        };
        Ok((from, to, unit))
    })();
    let (from, to, unit) = match parsed {
        Ok(p) => p,
        Err(detail) => return bad(detail),
    };
    let (st, h, u) = (state.clone(), hospital.clone(), unit.clone());
    let result =
        blocking(move || census_points(&st, &h, hour_boundaries(from, to), u.as_ref())).await;
    match result {
        Ok(Some(hours)) => axum::Json(json!({
            "hospital": hospital,
            "unit": unit,
            "from": Timestamp::from_millis(from).to_rfc3339(),
            "to": Timestamp::from_millis(to).to_rfc3339(),
            "interval_seconds": HOUR_MS / 1000,
            "hours": hours,
        }))
        .into_response(),
        Ok(None) => not_found(format!(
            "hospital {hospital} has no unit {:?}",
            unit.as_ref().map(UnitId::as_str).unwrap_or("")
        )),
        Err(r) => r,
    }
}

async fn adt_volumes(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    q: RawQuery,
) -> Response {
    let (hospital, _, from, to) = match day_request(&state, &headers, &raw, q, &[]).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (st, h) = (state.clone(), hospital.clone());
    let result = blocking(move || adt_days(&st, &h, from, to)).await;
    match result {
        Ok(days) => axum::Json(json!({
            "hospital": hospital,
            "from": date_text(from),
            "to": date_text(to),
            "days": days,
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// The common start of a day-range analytics read: a `read` operator, a
/// hospital this cloud holds, a query of `from`, `to` and `extra` keys only,
/// and its day range; the query for the extra keys. The first problem is
/// the answer.
async fn day_request(
    state: &CloudState,
    headers: &HeaderMap,
    raw: &str,
    q: RawQuery,
    extra: &[&str],
) -> Result<(HospitalId, HashMap<String, String>, i64, i64), Response> {
    operator(state, headers, Scope::Read).await?;
    let hospital = hospital_of(state, raw).await?;
    let allowed: Vec<&str> = ["from", "to"].iter().chain(extra).copied().collect();
    let q = query(q, &allowed).map_err(bad)?;
    let (from, to) = day_range(&q).map_err(bad)?;
    Ok((hospital, q, from, to))
}

/// What a charges or OR utilisation request found: the answer, a 400
/// detail, or a 404 detail.
enum Found {
    Answer(serde_json::Value),
    Bad(String),
    Missing(String),
}

async fn charges_daily(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    q: RawQuery,
) -> Response {
    let (hospital, _, from, to) = match day_request(&state, &headers, &raw, q, &[]).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (st, h) = (state.clone(), hospital.clone());
    let result = blocking(move || {
        let mut store = (st.open)(&h)?;
        st.analytics.with(&h, store.as_mut(), |p| {
            if let Some(detail) = before_floor("charges", p.charges_floor(), from) {
                return Found::Bad(detail);
            }
            let days: Vec<_> = (from..=to)
                .map(|d| {
                    let c = p.charges_day(d);
                    let total = c.total_cents_i64();
                    json!({
                        "date": date_text(d),
                        "total_cents": total,
                        "total": hms_domain::charge::format_cents(total),
                        "transactions": c.transactions,
                        "credits": c.credits,
                        "reversed": c.reversed,
                    })
                })
                .collect();
            Found::Answer(json!({ "hospital": h, "days": days }))
        })
    })
    .await;
    found(result)
}

async fn or_utilisation(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    q: RawQuery,
) -> Response {
    let (hospital, q, from, to) = match day_request(&state, &headers, &raw, q, &["room"]).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let room = match q.get("room").map(|r| (r, r.parse::<OrRoomId>())) {
        None => None,
        Some((_, Ok(id))) => Some(id),
        Some((r, Err(e))) => return bad(format!("room={r:?}: {e}")),
    };
    let (st, h) = (state.clone(), hospital.clone());
    let result = blocking(move || {
        let mut store = (st.open)(&h)?;
        st.analytics.with(&h, store.as_mut(), |p| {
            if let Some(r) = &room
                && !p.has_or_room(r)
            {
                return Found::Missing(format!("hospital {h} has no OR room {:?}", r.as_str()));
            }
            if let Some(detail) = before_floor("OR figures", p.or_floor(), from) {
                return Found::Bad(detail);
            }
            let rooms: Vec<_> = p
                .or_room_days(from, to, room.as_ref())
                .into_iter()
                .map(|(r, d, f)| {
                    json!({
                        "room": r,
                        "date": date_text(d),
                        "cases": f.cases,
                        "booked_minutes": f.booked_minutes,
                        "predicted_minutes": f.predicted_minutes,
                        "predicted_cases": f.predicted_cases,
                        "actual_minutes": f.actual_minutes,
                        "completed_cases": f.completed_cases,
                        "overruns": f.overruns,
                        "overrun_rate": f.overrun_rate(),
                        "cancelled": f.cancelled,
                        "bumped": f.bumped,
                        "no_show": f.no_show,
                    })
                })
                .collect();
            Found::Answer(json!({ "hospital": h, "rooms": rooms }))
        })
    })
    .await;
    found(result)
}

fn found(result: Result<Found, Response>) -> Response {
    match result {
        Ok(Found::Answer(v)) => axum::Json(v).into_response(),
        Ok(Found::Bad(detail)) => bad(detail),
        Ok(Found::Missing(detail)) => not_found(detail),
        Err(r) => r,
    }
}

async fn replication(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    if let Err(r) = operator(&state, &headers, Scope::Read).await {
        return r;
    }
    match replication_status(&state).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(r) => r,
    }
}

/// The body of `GET /api/v1/replication`: this cloud's DR role and, per
/// hospital, the replication lag (primary) or what arrived (replica).
pub(super) async fn replication_status(state: &CloudState) -> Result<serde_json::Value, Response> {
    match (&state.mode, &state.replication) {
        (Mode::Primary, Some(r)) => {
            let hospitals: Vec<_> = r
                .snapshot()
                .into_iter()
                .map(|(h, lag)| {
                    let mut v = json!(lag);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("hospital".into(), json!(h));
                    }
                    v
                })
                .collect();
            Ok(json!({
                "role": "primary",
                "peer": r.peer,
                "peer_region": r.peer_region,
                "replicating": r.replicating(),
                "hospitals": hospitals,
            }))
        }
        (Mode::Primary, None) => Ok(json!({
            "role": "primary",
            "peer": null,
            "hospitals": [],
        })),
        (Mode::Replica, _) => {
            let st = state.clone();
            let rows = blocking(move || {
                let status = st.registry_db.ingest_status()?;
                let mut out = vec![];
                let mut rows: Vec<_> = status.into_iter().collect();
                rows.sort_by(|a, b| a.0.cmp(&b.0));
                for (h, s) in rows {
                    let p = (st.open)(&h)?.position()?;
                    out.push(json!({
                        "hospital": h,
                        "region": s.region,
                        "seq": p.seq,
                        "last_ingest": Timestamp::from_millis(s.last_ingest_ms).to_rfc3339(),
                    }));
                }
                Ok(out)
            })
            .await?;
            Ok(json!({
                "role": "replica",
                "hospitals": rows,
            }))
        }
    }
}
