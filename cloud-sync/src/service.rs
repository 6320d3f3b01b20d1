//! The regional cloud's HTTP service (`hms-cloud run`): sync, restore, DR
//! ingest, health, and the operator API ([`crate::api`]).
//!
//! - `POST /sync/v1/batches` takes a JSON [`hms_domain::sync::SyncBatch`],
//!   gzip-compressed (`content-encoding: gzip`) or not, signed over the bytes
//!   as sent (headers `x-hms-hospital`, `x-hms-node`, `x-hms-timestamp`,
//!   `x-hms-signature`) by the enrolled appliance or, on a replica, by an
//!   enrolled DR primary (node `dr:{region}`, see [`crate::dr`]). It answers,
//!   only after the batch is durably stored, with the hospital's new position.
//!   Refusals store nothing: 401 signature, 403 not enrolled here / other
//!   hospital / wrong role / region not allowed, 409 a sync rule (a gap names
//!   the seq to resend from), 400 malformed, 413 too large (also once
//!   decompressed), 415 unknown encoding, 503 store.
//! - `GET /sync/v1/position` (signed): the signer's hospital's position.
//! - `GET /sync/v1/events?from=N&limit=M` (signed by the appliance, over the
//!   path with its query): the hospital's own events for restore.
//! - `GET /health` (no auth): `ok` or `degraded` (replication failing, EMPI
//!   matching degraded), with the DR lag in figures only and the EMPI's
//!   model version (and whether it was trained or is the hand-set one).
//!
//! Errors are `application/problem+json`. Logs carry hospital ids and seqs,
//! never event content.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cloud_sync_client::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS, SignedRequest, codec};
use hms_domain::sync::Refusal;
use hms_domain::{Envelope, HospitalId, RegionId};
use serde_json::json;
use tokio::sync::Notify;

use crate::analytics;
use crate::config::Mode;
use crate::dr::{self, Primaries, ReplicationStatus};
use crate::enrolment::{BatchError, Registry, Rejection, ingest_body};
use crate::store::{HospitalStore, IngestError};

/// Opens a hospital's store (database per hospital).
pub type OpenStore =
    Arc<dyn Fn(&HospitalId) -> anyhow::Result<Box<dyn HospitalStore>> + Send + Sync>;

/// Largest request body accepted, as sent and once decompressed.
pub const MAX_BODY_BYTES: usize = 4 * MAX_BATCH_BYTES;

/// Shared state of the service.
#[derive(Clone)]
pub struct CloudState {
    /// Enrolled hospitals of this region.
    pub registry: Arc<Registry>,
    /// The store router.
    pub open: OpenStore,
    /// One ingest at a time per cloud (stores are single-writer).
    pub ingest_lock: Arc<Mutex<()>>,
    /// The registry database: API tokens, ingest records ([`crate::meta`]).
    pub meta: Arc<Mutex<rusqlite::Connection>>,
    /// Primary or replica.
    pub mode: Mode,
    /// The DR primaries a replica accepts.
    pub primaries: Arc<Primaries>,
    /// DR lag, on a primary with a DR peer.
    pub replication: Option<Arc<ReplicationStatus>>,
    /// Notified after every ingest that stored events (wakes the replicator).
    pub ingested: Arc<Notify>,
    /// Analytics projections.
    pub analytics: Arc<analytics::Cache>,
    /// What goes back to the appliances (EIDs); none: the downlink answers 503.
    pub downlink: Option<Arc<crate::downlink::Downlink>>,
    /// The regional EMPI (primary only).
    pub empi: Option<Arc<crate::empi::RegionalEmpi>>,
    /// Notified after every ingest that stored events (wakes the EMPI).
    pub empi_wake: Arc<Notify>,
}

impl std::fmt::Debug for CloudState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudState")
            .field("registry", &self.registry)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl CloudState {
    /// A primary without DR peer, over `registry`, the stores of `open` and
    /// the registry database `meta` (as opened by
    /// [`crate::enrolment::open_registry`]).
    pub fn new(registry: Registry, open: OpenStore, meta: rusqlite::Connection) -> Self {
        Self {
            registry: Arc::new(registry),
            open,
            ingest_lock: Arc::new(Mutex::new(())),
            meta: Arc::new(Mutex::new(meta)),
            mode: Mode::Primary,
            primaries: Arc::new(Primaries::default()),
            replication: None,
            ingested: Arc::new(Notify::new()),
            analytics: Arc::new(analytics::Cache::default()),
            downlink: None,
            empi: None,
            empi_wake: Arc::new(Notify::new()),
        }
    }

    /// Runs the regional EMPI over every ingested patient record.
    pub fn with_empi(mut self, empi: Arc<crate::empi::RegionalEmpi>) -> Self {
        self.empi = Some(empi);
        self
    }

    /// Keeps the downlink in `downlink` (the file under the data dir).
    pub fn with_downlink(mut self, downlink: crate::downlink::Downlink) -> Self {
        self.downlink = Some(Arc::new(downlink));
        self
    }

    /// Makes it a replica accepting `primaries`.
    pub fn replica(mut self, primaries: Primaries) -> Self {
        self.mode = Mode::Replica;
        self.primaries = Arc::new(primaries);
        self
    }

    /// Reports (and wakes) replication to a DR peer.
    pub fn with_replication(mut self, status: Arc<ReplicationStatus>) -> Self {
        self.replication = Some(status);
        self
    }

    /// Runs `f` on the registry database.
    pub fn with_meta<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> T) -> T {
        let conn = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }
}

/// The ingest path.
pub const BATCHES: &str = cloud_sync_client::push::BATCHES;

/// The position path: where the cloud is for the signing hospital.
pub const POSITION: &str = cloud_sync_client::push::POSITION;

/// The restore path.
pub const EVENTS: &str = cloud_sync_client::push::EVENTS;

/// The downlink path: EIDs for the signing hospital's patients.
pub const DOWNLINK: &str = cloud_sync_client::push::DOWNLINK;

/// The health path.
pub const HEALTH: &str = "/health";

/// The router.
pub fn router(state: CloudState) -> Router {
    Router::new()
        .route(BATCHES, post(batches))
        .route(POSITION, get(position))
        .route(EVENTS, get(events))
        .route(DOWNLINK, get(downlink))
        .route(HEALTH, get(health))
        .merge(crate::api::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A problem+json answer.
pub fn problem(
    status: StatusCode,
    kind: &str,
    detail: String,
    extra: serde_json::Value,
) -> Response {
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

fn unsigned() -> Response {
    problem(
        StatusCode::UNAUTHORIZED,
        "unsigned",
        "sign the request: x-hms-hospital, x-hms-node, x-hms-timestamp, x-hms-signature".into(),
        json!({}),
    )
}

/// Who a signed sync request comes from, once authenticated.
fn authenticate(
    state: &CloudState,
    req: &SignedRequest,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<RegionId, BatchError> {
    if dr::is_primary(req) {
        if state.mode != Mode::Replica {
            return Err(Rejection::WrongRole(
                "this cloud is not a DR replica and accepts no replication",
            )
            .into());
        }
        let region = state
            .primaries
            .authenticate(req, method, path, body, now_ms)?;
        let recorded = state
            .with_meta(|c| crate::meta::hospital_region(c, &req.hospital))
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
        if let Some(recorded) = recorded
            && recorded != region
        {
            return Err(Rejection::RegionChanged {
                hospital: req.hospital.clone(),
                recorded,
                claimed: region,
            }
            .into());
        }
        Ok(region)
    } else {
        if state.mode == Mode::Replica {
            return Err(Rejection::WrongRole(
                "this cloud is a DR replica; appliances sync with their region's primary",
            )
            .into());
        }
        let e = state
            .registry
            .authenticate(req, method, path, body, now_ms)?;
        Ok(e.region.clone())
    }
}

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, String> {
    match headers
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => Ok(Encoding::Identity),
        Some(e) if e.is_empty() || e == "identity" => Ok(Encoding::Identity),
        Some(e) if e == codec::GZIP => Ok(Encoding::Gzip),
        Some(e) => Err(format!(
            "content-encoding {e:?} is not supported; use gzip or none"
        )),
    }
}

fn decode(enc: Encoding, body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
    match enc {
        Encoding::Identity => Ok(std::borrow::Cow::Borrowed(body)),
        Encoding::Gzip => match codec::gunzip_bounded(body, MAX_BODY_BYTES) {
            Ok(v) => Ok(std::borrow::Cow::Owned(v)),
            Err(codec::DecodeError::TooLarge { max }) => Err(BatchError::TooLarge { max }),
            Err(e) => Err(BatchError::Malformed(e.to_string())),
        },
    }
}

fn failure(e: BatchError) -> Response {
    match e {
        BatchError::Rejected(r) => {
            let status = match r {
                Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            problem(status, "rejected", r.to_string(), json!({}))
        }
        BatchError::Malformed(m) => {
            problem(StatusCode::BAD_REQUEST, "malformed-batch", m, json!({}))
        }
        BatchError::TooLarge { max } => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body expands beyond {max} bytes; send smaller batches"),
            json!({}),
        ),
        BatchError::Ingest(IngestError::Refused(r)) => {
            let extra = match &r {
                Refusal::Gap { expected, .. } => json!({ "expected_seq": expected }),
                _ => json!({}),
            };
            problem(StatusCode::CONFLICT, "refused", r.to_string(), extra)
        }
        BatchError::Ingest(IngestError::Store(e)) => {
            tracing::error!(error = %format!("{e:#}"), "store failure");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store could not answer; retry".into(),
                json!({}),
            )
        }
    }
}

fn not_run() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the request failed to run; retry".into(),
        json!({}),
    )
}

async fn batches(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return problem(
                e.status(),
                "unreadable-body",
                format!("{e}; a request body is at most {MAX_BODY_BYTES} bytes"),
                json!({}),
            );
        }
    };
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let enc = match encoding(&headers) {
        Ok(e) => e,
        Err(detail) => {
            return problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-encoding",
                detail,
                json!({}),
            );
        }
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        let region = authenticate(&state, &req, "POST", BATCHES, &body, now)?;
        let decoded = decode(enc, &body)?;
        let hospital = req.hospital.clone();
        let ingested = {
            let _one = state.ingest_lock.lock().unwrap_or_else(|p| p.into_inner());
            let open = state.open.clone();
            let mut open_fn = move |h: &HospitalId| open(h);
            ingest_body(&mut open_fn, &hospital, &decoded)?
        };
        if ingested.stored > 0 {
            if let Err(e) = state.with_meta(|c| crate::meta::record_ingest(c, &hospital, &region, now)) {
                tracing::warn!(%hospital, error = %format!("{e:#}"), "could not record the ingest time");
            }
            if let Some(r) = &state.replication {
                r.note_ingest(&hospital, ingested.acked.seq);
            }
            state.ingested.notify_one();
            state.empi_wake.notify_one();
        }
        tracing::debug!(%hospital, node = %req.node, acked = ingested.acked.seq, stored = ingested.stored, "batch");
        Ok::<_, BatchError>(ingested)
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
        Ok(Err(e)) => failure(e),
        Err(_) => not_run(),
    }
}

/// `GET /sync/v1/position` (signed, empty body): the hospital's stored position,
/// so an appliance (or a DR primary) knows where to resume.
async fn position(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        authenticate(&state, &req, "GET", POSITION, b"", now)?;
        (state.open)(&req.hospital)
            .and_then(|mut s| s.position())
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))
    })
    .await;
    match result {
        Ok(Ok(p)) => Json(json!({ "acked_seq": p.seq, "acked_hash": p.hash })).into_response(),
        Ok(Err(e)) => failure(e),
        Err(_) => not_run(),
    }
}

/// Keeps the longest prefix of `events` (at least one) whose JSON fits one batch.
pub fn trim_to_batch_bytes(events: &mut Vec<Envelope>) {
    let mut bytes = 0usize;
    let mut keep = 0usize;
    for e in events.iter() {
        bytes += serde_json::to_vec(e).map_or(0, |v| v.len()) + 1;
        if keep > 0 && bytes > MAX_BATCH_BYTES {
            break;
        }
        keep += 1;
    }
    events.truncate(keep);
}

fn bad_query(detail: String) -> Response {
    problem(StatusCode::BAD_REQUEST, "bad-query", detail, json!({}))
}

/// `GET /sync/v1/events?from=N&limit=M`: the appliance's hospital's events
/// from seq N (default 1), at most M (default and cap 1,000) and at most one
/// batch of JSON, ascending; gzip when the client accepts it.
async fn events(State(state): State<CloudState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let (mut from, mut limit) = (1u64, MAX_BATCH_EVENTS);
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("from", v)) => match v.parse() {
                Ok(n) => from = n,
                Err(_) => return bad_query(format!("from={v:?} is not a seq")),
            },
            Some(("limit", v)) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => limit = n.min(MAX_BATCH_EVENTS),
                _ => return bad_query(format!("limit={v:?} is not a count of 1 or more")),
            },
            _ => return bad_query(format!("unknown parameter {pair:?}; use from and limit")),
        }
    }
    let from = from.max(1);
    let signed_path = uri
        .path_and_query()
        .map_or(EVENTS.to_owned(), |p| p.as_str().to_owned());
    let gzip = headers
        .get(axum::http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with(codec::GZIP)));
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        if dr::is_primary(&req) {
            return Err(BatchError::Rejected(Rejection::WrongRole(
                "restore is for appliances",
            )));
        }
        authenticate(&state, &req, "GET", &signed_path, b"", now)?;
        let mut events = (state.open)(&req.hospital)
            .and_then(|mut s| s.events(from, limit))
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
        trim_to_batch_bytes(&mut events);
        tracing::debug!(hospital = %req.hospital, from, count = events.len(), "restore read");
        serde_json::to_vec(&json!({ "events": events }))
            .map_err(|e| BatchError::Ingest(IngestError::Store(e.into())))
    })
    .await;
    match result {
        Ok(Ok(body)) => {
            let compressed = if gzip { codec::gzip(&body).ok() } else { None };
            let mut resp = match compressed {
                Some(z) => {
                    let mut r = z.into_response();
                    if let Ok(v) = codec::GZIP.parse() {
                        r.headers_mut()
                            .insert(axum::http::header::CONTENT_ENCODING, v);
                    }
                    r
                }
                None => body.into_response(),
            };
            if let Ok(v) = "application/json".parse() {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, v);
            }
            resp
        }
        Ok(Err(e)) => failure(e),
        Err(_) => not_run(),
    }
}

/// `GET /sync/v1/downlink?after=N` (signed by the enrolled appliance): the
/// EIDs assigned to its hospital's patients after downlink position N.
async fn downlink(State(state): State<CloudState>, headers: HeaderMap, uri: Uri) -> Response {
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let mut after = 0u64;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("after", v)) => match v.parse() {
                Ok(n) => after = n,
                Err(_) => return bad_query(format!("after={v:?} is not a position")),
            },
            _ => return bad_query(format!("unknown parameter {pair:?}; use after")),
        }
    }
    let Some(store) = state.downlink.clone() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this cloud keeps no downlink".into(),
            json!({}),
        );
    };
    let signed_path = uri
        .path_and_query()
        .map_or(DOWNLINK.to_owned(), |p| p.as_str().to_owned());
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        if dr::is_primary(&req) {
            return Err(BatchError::Rejected(Rejection::WrongRole(
                "the downlink is for appliances",
            )));
        }
        authenticate(&state, &req, "GET", &signed_path, b"", now)?;
        store
            .after(&req.hospital, after, crate::downlink::MAX_ASSIGNMENTS)
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))
    })
    .await;
    match result {
        Ok(Ok(assignments)) => Json(json!({ "assignments": assignments })).into_response(),
        Ok(Err(e)) => failure(e),
        Err(_) => not_run(),
    }
}

/// `GET /health`: `ok`, or `degraded` while DR replication is failing.
async fn health(State(state): State<CloudState>) -> Response {
    let mode = match state.mode {
        Mode::Primary => "primary",
        Mode::Replica => "replica",
    };
    let replication = state.replication.as_ref().map(|r| {
        let lag = r.snapshot();
        let failing = lag.values().filter(|h| h.last_error.is_some()).count();
        json!({
            "peer": r.peer,
            "peer_region": r.peer_region,
            "hospitals": lag.len(),
            "hospitals_behind": lag.values().filter(|h| h.lag_events > 0).count(),
            "hospitals_failing": failing,
            "max_lag_events": lag.values().map(|h| h.lag_events).max().unwrap_or(0),
            "max_lag_seconds": lag.values().map(|h| h.lag_seconds).fold(0.0, f64::max),
        })
    });
    let empi_degraded = state.empi.as_ref().is_some_and(|e| e.degraded());
    let degraded = empi_degraded
        || replication
            .as_ref()
            .is_some_and(|r| r["hospitals_failing"].as_u64().unwrap_or(0) > 0);
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "region": state.registry.region(),
        "mode": mode,
        "replication": replication,
        "empi": state.empi.as_ref().map(|e| {
            let model = e.model();
            json!({
                "matching": if empi_degraded { "exact (degraded: matching was slow)" } else { "full" },
                "model": model.version,
                "model_trained": model.trained,
            })
        }),
    }))
    .into_response()
}
