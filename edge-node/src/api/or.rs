//! OR board endpoints (nurse and up; the patient is shown as on the bed
//! board, to the same roles):
//!
//! - `GET /api/v1/or/rooms`: the configured operating rooms;
//! - `GET /api/v1/or/cases?date=YYYY-MM-DD[&room=ID]`: the cases starting
//!   on that local day (today when `date` is left out), by room and start,
//!   each with its predicted duration (the `or_duration` model, else the
//!   fallback rule, with `prediction_source` and `prediction_reason` as the
//!   forecast endpoints give them) and `overrun_risk`: the predicted end
//!   runs past the start of the next scheduled case in the room.
//!
//! Each case shows the prediction recorded for its current version
//! ([`crate::inference::or_cases`]), or one made when the day is read
//! (cases not yet recorded, or beyond the recorder's window), in one batch.
//! Minutes are whole.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use hms_domain::{CaseId, CasePrediction, OrRoomId, Timestamp};
use serde::Serialize;
use serde_json::json;

use super::{AppState, Caller};
use crate::auth::Role;
use crate::inference::Reason;
use crate::inference::or_cases;
use crate::or_board::{Slot, timeline};
use hms_web::problem::Problem;

/// An operating room, as `GET /api/v1/or/rooms` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct OrRoomInfo {
    /// Room id.
    pub id: OrRoomId,
    /// Display name.
    pub name: String,
    /// The OR suite.
    pub suite: String,
}

/// One case of a day, with its prediction.
#[derive(Debug, Clone)]
pub struct DayCase {
    /// The case on the day's timeline.
    pub slot: Slot,
    /// `model` or `fallback`.
    pub source: &'static str,
    /// Why the fallback answered.
    pub reason: Option<Reason>,
}

/// The cases starting in `[from, to)` (in `room` when given), predicted
/// and in timeline order; shared by the API and the OR board page.
pub(crate) async fn day(
    state: &AppState,
    from: Timestamp,
    to: Timestamp,
    room: Option<&OrRoomId>,
) -> Vec<DayCase> {
    let cases = state.store.or_view().starting(from, to, room);
    // The recorded prediction of each case's current version, else one
    // made now for it.
    let recorded: HashMap<CaseId, CasePrediction> = state
        .store
        .or_predictions(cases.iter().map(|c| c.case_id.clone()).collect())
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "reading recorded OR predictions failed");
            vec![]
        })
        .into_iter()
        .map(|p| (p.case_id.clone(), p))
        .collect();
    let (have, missing): (Vec<_>, Vec<_>) = cases.into_iter().partition(|c| {
        recorded
            .get(&c.case_id)
            .is_some_and(|p| p.version == c.version)
    });
    let fresh = or_cases::predict(&state.forecaster, &missing, &state.settings.clock).await;
    let mut by_id: HashMap<CaseId, (&'static str, Option<Reason>)> = HashMap::new();
    let mut input = Vec::with_capacity(have.len() + missing.len());
    for (c, p) in have
        .into_iter()
        .map(|c| {
            let p = recorded[&c.case_id].clone();
            (c, p)
        })
        .chain(missing.into_iter().zip(fresh))
    {
        let source = if p.source == "model" {
            "model"
        } else {
            "fallback"
        };
        by_id.insert(
            c.case_id.clone(),
            (source, p.reason.as_deref().and_then(Reason::parse)),
        );
        input.push((c, f64::from(p.minutes)));
    }
    timeline(input)
        .into_iter()
        .map(|slot| {
            let (source, reason) = by_id
                .get(&slot.case.case_id)
                .copied()
                .unwrap_or(("fallback", None));
            DayCase {
                slot,
                source,
                reason,
            }
        })
        .collect()
}

/// A checked `date` (today when absent) and its local day's bounds.
pub(crate) fn day_bounds(
    state: &AppState,
    date: Option<&str>,
) -> Result<(String, Timestamp, Timestamp), Problem> {
    let date = match date {
        Some(d) => d.to_owned(),
        None => state.settings.clock.date(Timestamp::now()),
    };
    let (from, to) = state
        .settings
        .clock
        .day(&date)
        .ok_or_else(|| Problem::bad_request("date must be a calendar date, YYYY-MM-DD"))?;
    Ok((date, from, to))
}

/// A configured room by id.
pub(crate) fn room<'a>(state: &'a AppState, id: &str) -> Result<&'a OrRoomInfo, Problem> {
    state
        .settings
        .or_rooms
        .iter()
        .find(|r| r.id.as_str() == id)
        .ok_or_else(|| Problem::not_found("operating room", id))
}

/// The JSON of one case.
fn case_json(d: &DayCase) -> serde_json::Value {
    let c = &d.slot.case;
    json!({
        "case_id": c.case_id,
        "room": c.room,
        "status": c.status.as_str(),
        "priority": c.priority.as_str(),
        "start": c.start,
        "booked_minutes": c.booked_minutes,
        "booked_end": c.booked_end(),
        "predicted_minutes": (d.slot.predicted_minutes * 10.0).round() / 10.0,
        "predicted_end": d.slot.predicted_end(),
        "prediction_source": d.source,
        "prediction_reason": d.reason,
        "overrun_risk": d.slot.overrun_risk,
        "procedure": c.procedure,
        "procedure_text": c.procedure_text,
        "surgeon": c.surgeon,
        "surgeon_name": c.surgeon_name,
        "asa": c.asa,
        "patient": c.patient,
        "visit": c.visit,
        "bumped_by": c.bumped_by,
        "actual_start": c.actual_start,
        "actual_minutes": c.actual_minutes,
        "version": c.version,
    })
}

/// `GET /api/v1/or/rooms`.
pub async fn rooms(State(state): State<AppState>, c: Caller) -> Result<Response, Problem> {
    c.require(Role::Nurse, &state.metrics, "see the OR board")?;
    Ok(Json(json!({ "rooms": state.settings.or_rooms })).into_response())
}

/// The query of `GET /api/v1/or/cases`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesQuery {
    /// Local date, `YYYY-MM-DD`.
    pub date: Option<String>,
    /// One room.
    pub room: Option<String>,
}

/// `GET /api/v1/or/cases`.
pub async fn cases(
    State(state): State<AppState>,
    c: Caller,
    query: Result<Query<CasesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    c.require(Role::Nurse, &state.metrics, "see the OR board")?;
    let Ok(Query(q)) = query else {
        return Err(Problem::bad_request(
            "the query takes date=YYYY-MM-DD and room=ID, nothing else",
        ));
    };
    let (date, from, to) = day_bounds(&state, q.date.as_deref())?;
    let room = match q.room.as_deref() {
        Some(r) => Some(room(&state, r)?.id.clone()),
        None => None,
    };
    let day = day(&state, from, to, room.as_ref()).await;
    let cases: Vec<serde_json::Value> = day.iter().map(case_json).collect();
    Ok(Json(json!({ "date": date, "cases": cases })).into_response())
}
