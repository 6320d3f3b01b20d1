//! The sync API (`hms-cloud run`): ingest, position, restore reads and the
//! downlink for appliances (and ingest and position for DR primaries on a
//! replica), and health.
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
//!   An appliance's request to a cloud that does not serve its hospital
//!   (a replica where it was not promoted, a primary fenced from it) is
//!   421 Misdirected Request, whatever the route; so is a DR primary's
//!   replication of a hospital promoted on its replica
//!   ([`crate::takeover`]).
//! - `PUT /sync/v1/standby` (on a replica, signed by an enrolled DR
//!   primary): JSON [`Standby`], the hospital's appliance enrolment and the
//!   primary's head; 200 `{"hospital", "head_seq"}`.
//! - `GET /sync/v1/position` (signed): the signer's hospital's position.
//! - `GET /sync/v1/events?from=N&limit=M` (signed by the appliance, over the
//!   path with its query): the hospital's own events for restore.
//! - `GET /sync/v1/downlink?after=N` (signed by the appliance): its
//!   hospital's EID assignments after N.
//! - `GET /sync/v1/bundles/{sha256}` (signed by an enrolled appliance,
//!   over the path): the signed bundle hosted here with that SHA-256, as
//!   stored (`application/octet-stream`), for the fleet's `apply_bundle`;
//!   404 for one not held (or a path that is no SHA-256).
//! - `GET /health`: `ok` or `degraded` (replication failing, fenced from a
//!   hospital, EMPI matching degraded). Without a token, `{"status"}` only (up/down for outside
//!   monitoring); with an operator token, also the region, the mode, the
//!   hospitals promoted here (`promoted`, a replica) and those this primary
//!   is fenced from (`fenced`), the DR lag in figures only and the EMPI's
//!   model version (and whether it was trained or is the hand-set one). A token sent but not valid is a 401.
//!
//! Errors are `application/problem+json` ([`super::problem`]); sync
//! requests are signed, so a 401 here carries no bearer challenge. Logs
//! carry hospital ids and seqs, never event content.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cloud_sync_client::push::Standby;
use cloud_sync_client::{MAX_BATCH_EVENTS, SignedRequest, codec};
use serde_json::json;

use super::problem::{self, unchallenged};
use super::{BATCHES, BUNDLES, DOWNLINK, EVENTS, MAX_BODY_BYTES, POSITION, STANDBY};
use crate::config::Mode;
use crate::dr;
use crate::enrolment::{BatchError, Rejection};
use crate::state::CloudState;
use crate::store::IngestError;
use crate::store::registry::EnrolmentRow;

pub(super) fn signed(headers: &HeaderMap) -> Option<SignedRequest> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    Some(SignedRequest {
        hospital: h("x-hms-hospital")?.parse().ok()?,
        node: h("x-hms-node")?.parse().ok()?,
        timestamp_ms: h("x-hms-timestamp")?.parse().ok()?,
        signature: h("x-hms-signature")?.to_owned(),
    })
}

pub(super) fn unsigned() -> Response {
    unchallenged(problem::problem(
        StatusCode::UNAUTHORIZED,
        problem::UNSIGNED,
        "sign the request: x-hms-hospital, x-hms-node, x-hms-timestamp, x-hms-signature",
    ))
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

pub(super) fn failure(e: BatchError) -> Response {
    unchallenged(problem::batch(e))
}

fn not_run() -> Response {
    unchallenged(problem::not_run())
}

/// The problem of a request body that could not be read.
fn unreadable(e: axum::extract::rejection::BytesRejection) -> Response {
    unchallenged(problem::problem(
        e.status(),
        problem::UNREADABLE_BODY,
        format!("{e}; a request body is at most {MAX_BODY_BYTES} bytes"),
    ))
}

/// `POST /sync/v1/batches`.
pub(super) async fn batches(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return unreadable(e),
    };
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let enc = match encoding(&headers) {
        Ok(e) => e,
        Err(detail) => {
            return unchallenged(problem::problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                problem::UNSUPPORTED_ENCODING,
                detail,
            ));
        }
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        let region = state.authenticate(&req, "POST", BATCHES, &body, now)?;
        let decoded = decode(enc, &body)?;
        let hospital = req.hospital.clone();
        let ingested = state.ingest(&hospital, &region, &decoded, now)?;
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

/// `PUT /sync/v1/standby` (on a replica, signed by an enrolled DR primary
/// for the hospital): the hospital's appliance enrolment and the primary's
/// head ([`crate::takeover`]). 421 once the hospital was promoted here.
pub(super) async fn standby(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => return unreadable(e),
    };
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        if !dr::is_primary(&req) {
            return Err(BatchError::Rejected(Rejection::WrongRole(
                "standby reports come from a DR primary",
            )));
        }
        let region = state.authenticate(&req, "PUT", STANDBY, &body, now)?;
        let s: Standby = serde_json::from_slice(&body)
            .map_err(|e| BatchError::Malformed(format!("not a standby report: {e}")))?;
        if s.hospital != req.hospital {
            return Err(BatchError::Rejected(Rejection::HospitalMismatch {
                signed: req.hospital.clone(),
                batch: s.hospital,
            }));
        }
        if s.region != region {
            return Err(BatchError::Malformed(format!(
                "the report names region {}; its primary is {region}'s",
                s.region
            )));
        }
        if dr::is_primary_node(&s.node) {
            return Err(BatchError::Malformed(format!(
                "node {} is a DR primary's, not an appliance's",
                s.node
            )));
        }
        let public_key = base64::engine::general_purpose::STANDARD
            .decode(s.public_key.as_bytes())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                BatchError::Malformed(
                    "public_key is not an Ed25519 public key of 32 bytes in standard base64".into(),
                )
            })?;
        let row = EnrolmentRow {
            hospital: s.hospital,
            region: s.region,
            node: s.node,
            public_key,
        };
        state
            .registry_db
            .put_standby(&row, s.head_seq, now)
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
        tracing::debug!(hospital = %row.hospital, head = s.head_seq, "standby report");
        Ok((row.hospital, s.head_seq))
    })
    .await;
    match result {
        Ok(Ok((hospital, head))) => {
            Json(json!({ "hospital": hospital, "head_seq": head })).into_response()
        }
        Ok(Err(e)) => failure(e),
        Err(_) => not_run(),
    }
}

/// `GET /sync/v1/position` (signed, empty body): the hospital's stored position,
/// so an appliance (or a DR primary) knows where to resume.
pub(super) async fn position(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        state.authenticate(&req, "GET", POSITION, b"", now)?;
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

fn bad_query(detail: String) -> Response {
    unchallenged(problem::bad(detail))
}

/// `GET /sync/v1/events?from=N&limit=M`: the appliance's hospital's events
/// from seq N (default 1), at most M (default and cap 1,000) and at most one
/// batch of JSON, ascending; gzip when the client accepts it.
pub(super) async fn events(
    State(state): State<CloudState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
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
        state.authenticate(&req, "GET", &signed_path, b"", now)?;
        let events = (state.open)(&req.hospital)
            .and_then(|mut s| crate::store::batch_from(s.as_mut(), from, limit))
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
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
pub(super) async fn downlink(
    State(state): State<CloudState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
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
        return unchallenged(problem::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            problem::UNAVAILABLE,
            "this cloud keeps no downlink",
        ));
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
        state.authenticate(&req, "GET", &signed_path, b"", now)?;
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

/// `GET /sync/v1/bundles/{sha256}` (signed by the enrolled appliance, over
/// the path, empty body): the bundle's bytes as stored.
pub(super) async fn bundle(
    State(state): State<CloudState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(req) = signed(&headers) else {
        return unsigned();
    };
    let Some(store) = state.bundles.clone() else {
        return unchallenged(problem::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            problem::UNAVAILABLE,
            "this cloud keeps no bundles",
        ));
    };
    let signed_path = uri
        .path_and_query()
        .map_or(uri.path().to_owned(), |p| p.as_str().to_owned());
    let sha256 = uri
        .path()
        .strip_prefix(BUNDLES)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("")
        .to_owned();
    let now = hms_domain::Timestamp::now().as_millis();
    let result = tokio::task::spawn_blocking(move || {
        if dr::is_primary(&req) {
            return Err(BatchError::Rejected(Rejection::WrongRole(
                "bundles are for appliances",
            )));
        }
        state.authenticate(&req, "GET", &signed_path, b"", now)?;
        let bytes = store
            .get(&sha256)
            .map_err(|e| BatchError::Ingest(IngestError::Store(e)))?;
        tracing::debug!(hospital = %req.hospital, node = %req.node, found = bytes.is_some(), "bundle read");
        Ok(bytes)
    })
    .await;
    match result {
        Ok(Ok(Some(bytes))) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Ok(Ok(None)) => unchallenged(problem::not_found(
            "no such bundle on this cloud (bundles are named by the SHA-256 of their file, 64 \
             lower-case hex digits)",
        )),
        Ok(Err(e)) => failure(e),
        Err(_) => not_run(),
    }
}

/// `GET /health`: `ok`, or `degraded` while DR replication is failing or
/// this primary is fenced from a hospital; the
/// details only to an operator token.
pub(super) async fn health(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    let detailed = headers.contains_key(axum::http::header::AUTHORIZATION);
    if detailed
        && let Err(refused) =
            super::operator::operator(&state, &headers, super::operator::Scope::Read).await
    {
        return refused;
    }
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
    let empi_here = state.empi.get();
    let empi_degraded = empi_here.as_ref().is_some_and(|e| e.degraded());
    let takeover = state.takeover.snapshot();
    // Fenced from a hospital: the region runs on its DR peer for it.
    let degraded = empi_degraded
        || !takeover.fenced.is_empty()
        || replication
            .as_ref()
            .is_some_and(|r| r["hospitals_failing"].as_u64().unwrap_or(0) > 0);
    if !detailed {
        return Json(json!({ "status": if degraded { "degraded" } else { "ok" } })).into_response();
    }
    let mut promoted: Vec<&str> = takeover.promoted.keys().map(|h| h.as_str()).collect();
    let mut fenced: Vec<&str> = takeover.fenced.keys().map(|h| h.as_str()).collect();
    promoted.sort_unstable();
    fenced.sort_unstable();
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "region": state.registry.region(),
        "mode": mode,
        "promoted": promoted,
        "fenced": fenced,
        "empi_role": match state.empi.state() {
            crate::empi::SlotState::Off => "off",
            crate::empi::SlotState::Standby => "standby",
            crate::empi::SlotState::Following(_) => "following",
            crate::empi::SlotState::On(_) => "running",
        },
        "replication": replication,
        "empi": empi_here.as_ref().map(|e| {
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
