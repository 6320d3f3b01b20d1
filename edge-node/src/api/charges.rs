//! Revenue-cycle endpoints (bed manager and up; docs/revenue.md):
//!
//! - `GET /api/v1/charges?visit=V`: a visit's charges (DFT FT1) with their
//!   status, and the visit's total in cents and as a decimal amount;
//!   whether the appliance knows the visit (charges for a visit it does
//!   not know are kept and shown all the same);
//! - `POST /api/v1/coding/suggest {"diagnoses": [...], "unit"?, "text"?}`:
//!   ranked charge and procedure codes for the diagnoses, from the
//!   appliance's own history ([`crate::coding`]), or the unit's most
//!   frequent codes with `source: "fallback"` and the reason.
//!
//! The suggestions' statistics are rebuilt from the charges projection
//! when a request finds them older than [`CODING_REFRESH`] (the first
//! request waits for them; later ones are answered from the last build
//! while a newer one is made).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use hms_domain::Timestamp;
use hms_domain::charge::format_cents;
use serde::Deserialize;
use serde_json::json;

use super::beds::Body;
use super::{AppState, Caller};
use crate::auth::Role;
use crate::coding::{Coder, Posted};
use hms_web::problem::Problem;

/// How old the suggestions' statistics may be before a request rebuilds them.
pub const CODING_REFRESH: Duration = Duration::from_secs(60);

/// Most diagnoses in one suggestion request.
pub const MAX_DIAGNOSES: usize = 50;

/// The coding suggestions' statistics and when they were built.
#[derive(Debug)]
pub struct CodingCache {
    built: Mutex<Option<(Instant, Arc<Coder>)>>,
    /// Serialises rebuilds.
    building: tokio::sync::Mutex<()>,
    /// `coding.max_text_chars`.
    pub max_text_chars: usize,
    /// `coding.history_days`.
    pub history_days: u64,
}

impl CodingCache {
    /// An empty cache with the configured limits.
    pub fn new(cfg: &firmware_config::CodingSection) -> Self {
        Self {
            built: Mutex::new(None),
            building: tokio::sync::Mutex::new(()),
            max_text_chars: usize::try_from(cfg.max_text_chars).unwrap_or(usize::MAX),
            history_days: cfg.history_days,
        }
    }

    fn current(&self) -> Option<(Instant, Arc<Coder>)> {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The statistics, rebuilt first when missing or older than [`CODING_REFRESH`].
    pub async fn coder(&self, state: &AppState) -> anyhow::Result<Arc<Coder>> {
        if let Some((at, c)) = self.current()
            && at.elapsed() < CODING_REFRESH
        {
            return Ok(c);
        }
        let _one = self.building.lock().await;
        if let Some((at, c)) = self.current()
            && at.elapsed() < CODING_REFRESH
        {
            return Ok(c);
        }
        let since = Timestamp::now().as_millis()
            - i64::try_from(self.history_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        let rows = state.store.coding_history(since).await?;
        let coder = Arc::new(
            tokio::task::spawn_blocking(move || {
                Coder::build(rows.into_iter().map(|r| Posted {
                    visit: r.visit,
                    unit: r.unit,
                    code: r.code,
                    diagnoses: r.diagnoses,
                }))
            })
            .await?,
        );
        *self.built.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), coder.clone()));
        Ok(coder)
    }
}

/// The query of `GET /api/v1/charges`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargesQuery {
    /// The visit id (PV1-19).
    pub visit: String,
}

/// `GET /api/v1/charges`.
pub async fn of_visit(
    State(state): State<AppState>,
    c: Caller,
    query: Result<Query<ChargesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    c.require(Role::BedManager, &state.metrics, "read charges")?;
    let Ok(Query(q)) = query else {
        return Err(Problem::bad_request(
            "the query takes visit=ID (the visit number), nothing else",
        ));
    };
    if hms_domain::EncounterId::new(q.visit.as_str()).is_err() {
        return Err(Problem::bad_request(
            "visit must be a visit id (letters, digits, . _ : -, at most 64 bytes)",
        ));
    }
    let (charges, known) = state.store.charges_of_visit(&q.visit).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "reading charges failed");
        Problem::unavailable("the charges could not be read")
    })?;
    let total: i64 = charges.iter().map(hms_domain::Charge::counted_cents).sum();
    let list: Vec<serde_json::Value> = charges
        .iter()
        .map(|c| {
            json!({
                "transaction_id": c.transaction_id,
                "date": c.date,
                "kind": c.kind,
                "status": c.status,
                "code": c.code,
                "code_system": c.code_system,
                "description": c.description,
                "quantity": c.quantity,
                "amount_cents": c.amount_cents,
                "amount": c.amount_cents.map(format_cents),
                "department": c.department,
                "unit": c.unit,
                "diagnoses": c.diagnoses,
            })
        })
        .collect();
    Ok(Json(json!({
        "visit": q.visit,
        "visit_known": known,
        "count": list.len(),
        "total_cents": total,
        "total": format_cents(total),
        "charges": list,
    }))
    .into_response())
}

/// A coding suggestion request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestRequest {
    /// ICD-10 codes of the visit.
    pub diagnoses: Vec<String>,
    /// The unit, for the fallback.
    #[serde(default)]
    pub unit: Option<String>,
    /// The clinical text; longer than `coding.max_text_chars`: the fallback.
    #[serde(default)]
    pub text: Option<String>,
}

/// `POST /api/v1/coding/suggest`.
pub async fn suggest(
    State(state): State<AppState>,
    c: Caller,
    Body(req): Body<SuggestRequest>,
) -> Result<Response, Problem> {
    c.require(
        Role::BedManager,
        &state.metrics,
        "ask for coding suggestions",
    )?;
    if req.diagnoses.len() > MAX_DIAGNOSES
        || req
            .diagnoses
            .iter()
            .any(|d| d.trim().is_empty() || d.len() > 16)
    {
        return Err(Problem::invalid(format!(
            "diagnoses: at most {MAX_DIAGNOSES} codes of 1 to 16 characters"
        )));
    }
    let coder = state.coding.coder(&state).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "building coding statistics failed");
        Problem::unavailable("the charge history could not be read")
    })?;
    let long = req
        .text
        .as_ref()
        .is_some_and(|t| t.chars().count() > state.coding.max_text_chars);
    let dx: Vec<String> = req.diagnoses.iter().map(|d| d.trim().to_owned()).collect();
    let answer = coder.suggest(&dx, req.unit.as_deref(), long);
    Ok(Json(json!({
        "suggestions": answer.suggestions,
        "source": answer.source,
        "reason": answer.reason,
        "history_visits": coder.visits,
    }))
    .into_response())
}
