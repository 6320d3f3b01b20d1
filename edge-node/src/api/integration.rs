//! The parked-message queue of the HL7 feed: list and replay.
//!
//! Messages that parsed but could not be applied (unknown location, visit not
//! found, unsupported trigger) were answered AE and kept. After the cause is
//! fixed (usually the configuration, then a restart), a replay re-applies
//! them through the writer; those that now apply leave the queue.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, Caller, Segment};
use crate::auth::Role;
use crate::store::WriteError;
use crate::store::queries::ParkedRow;
use hms_web::problem::Problem;

async fn parked_seqs(state: &AppState) -> Result<Vec<ParkedRow>, Problem> {
    state.store.parked().await.map_err(|e| {
        tracing::error!(error = %e, "reading the parked queue failed");
        Problem::unavailable("the parked queue is unavailable")
    })
}

/// `GET /api/v1/integration/parked`: the parked messages, oldest first (no PHI).
pub async fn list(State(state): State<AppState>, c: Caller) -> Result<Response, Problem> {
    c.require(Role::BedManager, &state.metrics, "see parked messages")?;
    let rows = parked_seqs(&state).await?;
    Ok(Json(json!({ "parked": rows })).into_response())
}

fn store_problem(e: WriteError) -> Problem {
    match e {
        WriteError::Closed => Problem::unavailable("the appliance is shutting down"),
        _ => Problem::unavailable("the store could not commit the replay; nothing was changed"),
    }
}

/// `POST /api/v1/integration/parked/{seq}/replay`: replay one message.
pub async fn replay_one(
    State(state): State<AppState>,
    c: Caller,
    Segment(seq): Segment,
) -> Result<Response, Problem> {
    c.require(Role::Admin, &state.metrics, "replay parked messages")?;
    let n: u64 = seq
        .parse()
        .map_err(|_| Problem::not_found("parked-message", &seq))?;
    match state.store.replay(n).await.map_err(store_problem)? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(Problem::not_found("parked-message", &seq)),
    }
}

/// `POST /api/v1/integration/parked/replay`: replay every parked message, oldest first.
pub async fn replay_all(State(state): State<AppState>, c: Caller) -> Result<Response, Problem> {
    c.require(Role::Admin, &state.metrics, "replay parked messages")?;
    let mut out = vec![];
    for row in parked_seqs(&state).await? {
        if let Some(r) = state.store.replay(row.seq).await.map_err(store_problem)? {
            out.push(r);
        }
    }
    Ok(Json(json!({ "replayed": out })).into_response())
}
