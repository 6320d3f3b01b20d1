//! The regional cloud's HTTP service (`hms-cloud run`): sync ingest.
//!
//! `POST /sync/v1/batches` takes a JSON [`hms_domain::sync::SyncBatch`]
//! signed by the enrolled appliance (headers `x-hms-hospital`, `x-hms-node`,
//! `x-hms-timestamp`, `x-hms-signature`) and answers, only after the batch
//! is durably stored, with the hospital's new position. Refusals store
//! nothing: 401 signature, 403 not enrolled here / other hospital, 409 a
//! sync rule (a gap names the seq to resend from), 400 malformed, 503 store.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud_sync_client::SignedRequest;
use hms_domain::HospitalId;
use hms_domain::sync::Refusal;
use serde_json::json;

use crate::enrolment::{BatchError, Registry, Rejection, accept_batch};
use crate::store::{HospitalStore, IngestError};

/// Opens a hospital's store (database per hospital).
pub type OpenStore =
    Arc<dyn Fn(&HospitalId) -> anyhow::Result<Box<dyn HospitalStore>> + Send + Sync>;

/// Shared state of the service.
#[derive(Clone)]
pub struct CloudState {
    /// Enrolled hospitals of this region.
    pub registry: Arc<Registry>,
    /// The store router.
    pub open: OpenStore,
    /// One ingest at a time per cloud (stores are single-writer).
    pub ingest_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for CloudState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudState")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// The ingest path.
pub const BATCHES: &str = "/sync/v1/batches";

/// The position path: where the cloud is for the signing hospital.
pub const POSITION: &str = "/sync/v1/position";

/// The router.
pub fn router(state: CloudState) -> Router {
    Router::new()
        .route(BATCHES, post(batches))
        .route(POSITION, get(position))
        .layer(DefaultBodyLimit::max(
            cloud_sync_client::MAX_BATCH_BYTES * 4,
        ))
        .with_state(state)
}

fn problem(status: StatusCode, kind: &str, detail: String, extra: serde_json::Value) -> Response {
    let mut body = json!({
        "type": format!("urn:hms:problem:{kind}"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = "application/problem+json".parse() {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, v);
    }
    resp
}

fn signed(headers: &HeaderMap) -> Option<SignedRequest> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    Some(SignedRequest {
        hospital: h("x-hms-hospital")?.parse().ok()?,
        node: h("x-hms-node")?.parse().ok()?,
        timestamp_ms: h("x-hms-timestamp")?.parse().ok()?,
        signature: h("x-hms-signature")?.to_owned(),
    })
}

async fn batches(State(state): State<CloudState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(req) = signed(&headers) else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unsigned",
            "sign the request: x-hms-hospital, x-hms-node, x-hms-timestamp, x-hms-signature".into(),
            json!({}),
        );
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        let _one = state.ingest_lock.lock().unwrap_or_else(|p| p.into_inner());
        let open = state.open.clone();
        let mut open_fn = move |h: &HospitalId| open(h);
        accept_batch(
            &state.registry,
            &mut open_fn,
            &req,
            "POST",
            BATCHES,
            &body,
            now,
        )
    })
    .await;
    match result {
        Ok(Ok(ingested)) => Json(json!({
            "acked_seq": ingested.acked.seq,
            "acked_hash": ingested.acked.hash,
            "stored": ingested.stored,
            "duplicates": ingested.duplicates,
        }))
        .into_response(),
        Ok(Err(BatchError::Rejected(r))) => {
            let status = match r {
                Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            problem(status, "rejected", r.to_string(), json!({}))
        }
        Ok(Err(BatchError::Malformed(m))) => {
            problem(StatusCode::BAD_REQUEST, "malformed-batch", m, json!({}))
        }
        Ok(Err(BatchError::Ingest(IngestError::Refused(r)))) => {
            let extra = match &r {
                Refusal::Gap { expected, .. } => json!({ "expected_seq": expected }),
                _ => json!({}),
            };
            problem(StatusCode::CONFLICT, "refused", r.to_string(), extra)
        }
        Ok(Err(BatchError::Ingest(IngestError::Store(e)))) => {
            tracing::error!(error = %format!("{e:#}"), "ingest store failure");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store could not commit; resend".into(),
                json!({}),
            )
        }
        Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "ingest failed to run".into(),
            json!({}),
        ),
    }
}

/// `GET /sync/v1/position` (signed, empty body): the hospital's stored position,
/// so an appliance knows where to resume after a restart.
async fn position(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    let Some(req) = signed(&headers) else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unsigned",
            "sign the request".into(),
            json!({}),
        );
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        let e = state
            .registry
            .authenticate(&req, "GET", POSITION, b"", now)?;
        let hospital = e.hospital.clone();
        (state.open)(&hospital)
            .and_then(|mut s| s.position())
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))
    })
    .await;
    match result {
        Ok(Ok(p)) => Json(json!({ "acked_seq": p.seq, "acked_hash": p.hash })).into_response(),
        Ok(Err(BatchError::Rejected(r))) => {
            let status = match r {
                Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            problem(status, "rejected", r.to_string(), json!({}))
        }
        _ => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the store is unavailable".into(),
            json!({}),
        ),
    }
}
