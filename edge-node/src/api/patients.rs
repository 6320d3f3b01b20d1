//! `GET /api/v1/patients`: the local patient index (nurse and up).
//!
//! `?mrn=MRN` is an exact look-up: `{"patients": [...]}` with zero or one
//! patient. Otherwise the demographics given (`family_name`, `given_name`,
//! `birth_date`, `sex`, `postal_code`, `phone`, at least a name or a birth
//! date; `limit` 1–50, default 10) are a ranked search: best first, each
//! with its `score` in bits, only those with positive evidence. Every
//! patient carries the minimum necessary fields (MRN, name, birth date,
//! sex) and the EID (`pending` until the regional EMPI assigned one). An
//! unknown parameter is a 400 problem; query values never reach a log line.
//!
//! Every answered look-up is audited: an `audit.patients_searched` event
//! ([`hms_domain::EventBody::PatientsSearched`], stream `audit`) records who
//! (the token's name as the actor, and its role), when, how (`mrn` or
//! `demographics`, with the names of the fields given) and how many patients
//! the answer held, never a value searched for. The event is queued to the
//! audit queue ([`crate::audit`]) before the answer goes out, and a look-up
//! whose event cannot be queued (shutdown) is refused with 503 and shows
//! nothing; but the answer does not wait for the commit, so a search pays
//! no fsync: the queue hands the writer the events of up to 100 ms at once,
//! a commit that fails is logged at error level and counted
//! (`hms_audit_write_failures_total`), and a clean shutdown commits all
//! that was queued. Only a crash within that window can lose an audit event.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hms_domain::{Actor, ActorKind};
use serde_json::json;

use super::{AppState, Caller, RequestId};
use crate::auth::Role;
use crate::board::Command;
use crate::patients::{Hit, PatientJson};
use crate::store::WriteRequest;
use hms_web::problem::Problem;

/// `GET /api/v1/patients`.
pub async fn search(
    State(state): State<AppState>,
    c: Caller,
    Extension(rid): Extension<RequestId>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    c.require(Role::Nurse, &state.metrics, "look up patients")?;
    let Ok(Query(q)) = query else {
        return Err(Problem::bad_request("the query string does not decode"));
    };
    Ok(match lookup(&state, &c, &rid, &q).await? {
        Found::Exact(p) => Json(json!({ "patients": p })).into_response(),
        Found::Ranked(hits) => Json(json!({ "patients": hits })).into_response(),
    })
}

/// What a look-up found.
#[derive(Debug)]
pub enum Found {
    /// By MRN: zero or one patient.
    Exact(Vec<PatientJson>),
    /// By demographics: best first, with scores.
    Ranked(Vec<Hit>),
}

impl Found {
    /// The patients, in order.
    pub fn patients(&self) -> Vec<&PatientJson> {
        match self {
            Found::Exact(p) => p.iter().collect(),
            Found::Ranked(h) => h.iter().map(|h| &h.patient).collect(),
        }
    }
}

/// A look-up with the API's parameters (see the module doc), audited; the
/// API and the look-up page share it. The caller's role is checked here.
pub(crate) async fn lookup(
    state: &AppState,
    c: &Caller,
    rid: &RequestId,
    q: &HashMap<String, String>,
) -> Result<Found, Problem> {
    c.require(Role::Nurse, &state.metrics, "look up patients")?;
    if !state.patients.is_ready() {
        return Err(Problem::unavailable(
            "the patient index is loading; retry in a moment",
        ));
    }
    const KNOWN: [&str; 8] = [
        "mrn",
        "family_name",
        "given_name",
        "birth_date",
        "sex",
        "postal_code",
        "phone",
        "limit",
    ];
    if let Some(k) = q.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Problem::bad_request(format!(
            "unknown query parameter {:?}; use {}",
            hms_web::problem::safe_detail(k),
            KNOWN.join(", ")
        )));
    }
    let given = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if q.contains_key("mrn") {
        let Some(mrn) = given("mrn") else {
            return Err(Problem::bad_request("mrn must not be empty"));
        };
        let found: Vec<_> = state
            .patients
            .get(&state.store, mrn)
            .await
            .map_err(|e| unreadable(rid, &e))?
            .map(|p| p.json())
            .into_iter()
            .collect();
        audit(state, c, rid, "mrn", Vec::new(), found.len()).await?;
        return Ok(Found::Exact(found));
    }
    if given("family_name").is_none()
        && given("given_name").is_none()
        && given("birth_date").is_none()
    {
        return Err(Problem::bad_request(
            "give ?mrn= or demographics: a name (family_name, given_name) or a birth_date",
        ));
    }
    let limit = match given("limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=50).contains(&n) => n,
        Some(_) => return Err(Problem::bad_request("limit must be between 1 and 50")),
    };
    // HL7 codes or words, any case; what cannot be read searches without it.
    let sex = given("sex").and_then(hms_domain::phi::Sex::from_code);
    use hms_domain::phi::{Address, BirthDate, PersonName, Phone};
    let mut query = hms_domain::empi::Record::new("query", "query");
    query.family_name = given("family_name").map(PersonName::new);
    query.given_name = given("given_name").map(PersonName::new);
    query.birth_date = given("birth_date").map(BirthDate::new);
    query.sex = sex;
    query.postal_code = given("postal_code").map(Address::new);
    query.phone = given("phone").map(Phone::new);
    let hits = state
        .patients
        .search(&state.store, query, limit, 0.0)
        .await
        .map_err(|e| unreadable(rid, &e))?;
    let fields = KNOWN
        .iter()
        .filter(|k| !matches!(**k, "mrn" | "limit") && given(k).is_some())
        .map(|k| (*k).to_owned())
        .collect();
    audit(state, c, rid, "demographics", fields, hits.len()).await?;
    Ok(Found::Ranked(hits))
}

/// A look-up that could not read the store: logged here (no value searched
/// for is in the error), a 503 for the caller, nothing shown or audited.
fn unreadable(rid: &RequestId, e: &anyhow::Error) -> Problem {
    tracing::error!(request = %rid.0, error = %format!("{e:#}"), "a patient look-up could not read the store");
    Problem::unavailable("the patients could not be read; retry shortly")
}

/// Queues the audit event of an answered look-up (see the module doc):
/// waits for room in the audit queue, not for the commit.
async fn audit(
    state: &AppState,
    c: &Caller,
    rid: &RequestId,
    by: &str,
    fields: Vec<String>,
    results: usize,
) -> Result<(), Problem> {
    let req = WriteRequest {
        cmd: Command::RecordPatientSearch {
            role: c.0.role.as_str().to_owned(),
            by: by.to_owned(),
            fields,
            results: u32::try_from(results).unwrap_or(u32::MAX),
        },
        actor: Actor {
            kind: ActorKind::User,
            id: c.0.name.clone(),
        },
        correlation: Some(rid.0.clone()),
        occurred_at: None,
    };
    state.audit.record(req).await.map_err(|_| {
        tracing::error!(request = %rid.0, "a patient look-up could not be audited (the appliance is stopping); refused");
        Problem::unavailable("the look-up could not be audited; nothing was shown, retry shortly")
    })
}
