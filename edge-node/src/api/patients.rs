//! `GET /api/v1/patients`: the local patient index (nurse and up).
//!
//! `?mrn=MRN` is an exact look-up: `{"patients": [...]}` with zero or one
//! patient, each with the minimum necessary fields (MRN, name, birth date,
//! sex) and the EID (`pending` until the regional EMPI assigned one). Any
//! other query parameter is a 400 problem; the MRN never reaches a log line.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::problem::Problem;
use super::{AppState, Caller};
use crate::auth::Role;

/// `GET /api/v1/patients`.
pub async fn search(
    State(state): State<AppState>,
    c: Caller,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    c.require(Role::Nurse, &state.metrics, "look up patients")?;
    let Ok(Query(q)) = query else {
        return Err(Problem::bad_request("the query string does not decode"));
    };
    if let Some(k) = q.keys().find(|k| k.as_str() != "mrn") {
        return Err(Problem::bad_request(format!(
            "unknown query parameter {:?}; look patients up with ?mrn=",
            super::problem::safe_detail(k)
        )));
    }
    let Some(mrn) = q.get("mrn").map(|m| m.trim()).filter(|m| !m.is_empty()) else {
        return Err(Problem::bad_request("give ?mrn="));
    };
    let found: Vec<_> = state
        .patients
        .get(mrn)
        .map(|p| p.json())
        .into_iter()
        .collect();
    Ok(Json(json!({ "patients": found })).into_response())
}
