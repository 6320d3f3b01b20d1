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

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, Caller};
use crate::auth::Role;
use hms_web::problem::Problem;

/// `GET /api/v1/patients`.
pub async fn search(
    State(state): State<AppState>,
    c: Caller,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    c.require(Role::Nurse, &state.metrics, "look up patients")?;
    if !state.patients.is_ready() {
        return Err(Problem::unavailable(
            "the patient index is loading; retry in a moment",
        ));
    }
    let Ok(Query(q)) = query else {
        return Err(Problem::bad_request("the query string does not decode"));
    };
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
            .get(mrn)
            .map(|p| p.json())
            .into_iter()
            .collect();
        return Ok(Json(json!({ "patients": found })).into_response());
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
    let sex = match given("sex") {
        None => None,
        Some("female") => Some(hms_domain::phi::Sex::Female),
        Some("male") => Some(hms_domain::phi::Sex::Male),
        Some("other") => Some(hms_domain::phi::Sex::Other),
        Some(_) => return Err(Problem::bad_request("sex is female, male or other")),
    };
    use hms_domain::phi::{Address, BirthDate, PersonName, Phone};
    let mut query = hms_domain::empi::Record::new("query", "query");
    query.family_name = given("family_name").map(PersonName::new);
    query.given_name = given("given_name").map(PersonName::new);
    query.birth_date = given("birth_date").map(BirthDate::new);
    query.sex = sex;
    query.postal_code = given("postal_code").map(Address::new);
    query.phone = given("phone").map(Phone::new);
    let index = state.patients.clone();
    let hits = tokio::task::spawn_blocking(move || index.search(&query, limit, 0.0))
        .await
        .map_err(|_| Problem::unavailable("the search did not run"))?;
    Ok(Json(json!({ "patients": hits })).into_response())
}
