//! Forecast and OR-duration endpoints. Every answer says whether the model
//! or the fallback rule gave it, and why.
//!
//! - `GET /api/v1/forecast`: the hospital roll-up (sums over units).
//! - `GET /api/v1/forecast/units/{unit}`: one unit, horizons 24/48/72 h.
//! - `POST /api/v1/or/cases/predict`: one case (an object) or many
//!   (`{"cases": [...]}`, at most [`MAX_CASES`]).
//!
//! Forecasts are served from the forecaster's cache; a request before the
//! first refresh triggers one.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::beds::Body;
use super::{AppState, Caller, Segment};
use crate::inference::forecast::{OrCase, roll_up};
use hms_web::problem::Problem;

/// Most OR cases in one request.
pub const MAX_CASES: usize = 1_000;

async fn forecasts(state: &AppState) -> std::sync::Arc<crate::inference::forecast::Forecasts> {
    let cached = state.forecaster.cached();
    if cached.generated_at.is_some() {
        cached
    } else {
        state.forecaster.refresh_now().await
    }
}

/// `GET /api/v1/forecast`.
pub async fn hospital(State(state): State<AppState>, _c: Caller) -> Response {
    Json(roll_up(&*forecasts(&state).await)).into_response()
}

/// `GET /api/v1/forecast/units/{unit}`.
pub async fn unit(
    State(state): State<AppState>,
    _c: Caller,
    Segment(unit): Segment,
) -> Result<Response, Problem> {
    let f = forecasts(&state).await;
    let u = f
        .units
        .iter()
        .find(|(id, _)| id.as_str() == unit)
        .map(|(_, u)| u)
        .ok_or_else(|| Problem::not_found("unit", &unit))?;
    Ok(Json(u).into_response())
}

/// One case or a list of cases.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OrRequest {
    /// `{"cases": [...]}`.
    Many {
        /// The cases.
        cases: Vec<OrCase>,
    },
    /// A single case.
    One(OrCase),
}

fn check(c: &OrCase, i: usize) -> Result<(), Problem> {
    let bad = |what: &str| Err(Problem::invalid(format!("case {i}: {what}")));
    if !(c.booked_minutes.is_finite() && (1.0..=1440.0).contains(&c.booked_minutes)) {
        return bad("booked_minutes must be between 1 and 1440");
    }
    if !(c.age.is_finite() && (0.0..=120.0).contains(&c.age)) {
        return bad("age must be between 0 and 120");
    }
    if !(1..=6).contains(&c.asa) {
        return bad("asa must be between 1 and 6");
    }
    if c.procedure.is_empty()
        || c.procedure.len() > 64
        || c.surgeon.is_empty()
        || c.surgeon.len() > 64
    {
        return bad("procedure and surgeon must be 1 to 64 characters");
    }
    Ok(())
}

/// `POST /api/v1/or/cases/predict`.
pub async fn predict_or(
    State(state): State<AppState>,
    _c: Caller,
    Body(req): Body<OrRequest>,
) -> Result<Response, Problem> {
    let (cases, one) = match req {
        OrRequest::Many { cases } => (cases, false),
        OrRequest::One(c) => (vec![c], true),
    };
    if cases.is_empty() || cases.len() > MAX_CASES {
        return Err(Problem::invalid(format!(
            "send 1 to {MAX_CASES} cases, not {}",
            cases.len()
        )));
    }
    for (i, c) in cases.iter().enumerate() {
        check(c, i)?;
    }
    let predictions = state.forecaster.predict_or(&cases).await;
    Ok(if one {
        Json(&predictions[0]).into_response()
    } else {
        Json(json!({ "predictions": predictions })).into_response()
    })
}
