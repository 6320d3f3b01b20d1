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
//! Predictions are made when a day is read, in one batch for its cases.
//! Patient age (from the birth date at the case's start) and the ASA class
//! feed the model when the SIU messages gave them, else [`DEFAULT_AGE`] and
//! [`DEFAULT_ASA`].

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use hms_domain::{CaseId, OrCase, OrRoomId, Timestamp};
use serde::Serialize;
use serde_json::json;

use super::{AppState, Caller};
use crate::auth::Role;
use crate::inference::Reason;
use crate::inference::forecast::OrCase as Features;
use crate::or_board::{Slot, timeline};
use hms_web::problem::Problem;

/// Age given to the model when the case names no birth date (years).
pub const DEFAULT_AGE: f64 = 55.0;

/// ASA class given to the model when the case names none.
pub const DEFAULT_ASA: u8 = 2;

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

/// Patient age in whole years at `at`, from `YYYY-MM-DD`.
fn age_at(birth: &str, at: &str) -> Option<f64> {
    let ymd = |s: &str| -> Option<(i32, i32, i32)> {
        let mut p = s.splitn(3, '-');
        Some((
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
            p.next()?.get(..2)?.parse().ok()?,
        ))
    };
    let (by, bm, bd) = ymd(birth)?;
    let (y, m, d) = ymd(at)?;
    let years = y - by - i32::from((m, d) < (bm, bd));
    (0..=120).contains(&years).then_some(f64::from(years))
}

/// The model's features of a case.
fn features(c: &OrCase, state: &AppState) -> Features {
    let age = c
        .patient
        .as_ref()
        .and_then(|p| p.birth_date.as_ref())
        .and_then(|b| age_at(b.expose(), &state.settings.clock.date(c.start)))
        .unwrap_or(DEFAULT_AGE);
    Features {
        booked_minutes: f64::from(c.booked_minutes),
        age,
        asa: c.asa.unwrap_or(DEFAULT_ASA),
        procedure: c.procedure.clone().unwrap_or_default(),
        surgeon: c.surgeon.clone().unwrap_or_default(),
    }
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
    let feats: Vec<Features> = cases.iter().map(|c| features(c, state)).collect();
    let predictions = state.forecaster.predict_or(&feats).await;
    let mut by_id: HashMap<CaseId, (&'static str, Option<Reason>)> = HashMap::new();
    let mut input = Vec::with_capacity(cases.len());
    for (c, p) in cases.into_iter().zip(predictions) {
        by_id.insert(c.case_id.clone(), (p.source, p.reason));
        input.push((c, p.minutes));
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
