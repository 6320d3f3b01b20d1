//! The kiosk HTTP API (axum): health, metrics, board reads, mutations, live stream.
//!
//! Reads are answered from the in-memory [`crate::board::BoardView`] and never
//! touch SQLite (except a bed's history). Mutations go through the store's
//! single writer and are answered only after their transaction has committed.
//! Every error is a problem document ([`hms_web::Problem`]).

pub mod beds;
pub mod charges;
pub mod forecast;
pub mod integration;
pub mod or;
pub mod pages;
pub mod patients;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hms_domain::{LevelOfCare, UnitId};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::{Principal, Role, Tokens};
use crate::metrics::{HttpLabels, Metrics, ReasonLabels, RouteLabels};
use crate::store::Store;
use hms_web::Problem;

/// Display information about a unit, from the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct UnitInfo {
    /// Unit id.
    pub id: UnitId,
    /// Display name.
    pub name: String,
    /// Floor or wing.
    pub floor: String,
    /// Default level of care.
    pub level_of_care: LevelOfCare,
}

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Events shown in a bed's history.
    pub history_limit: usize,
    /// Units from the configuration, by id.
    pub units: BTreeMap<UnitId, UnitInfo>,
    /// Hospital display name.
    pub hospital_name: String,
    /// Node id.
    pub node: String,
    /// The hospital's clock (`node.timezone`): times on the pages.
    pub clock: crate::integration::hl7::time::HospitalTime,
    /// Whether the listener speaks HTTPS (the session cookie is `Secure`).
    pub https: bool,
    /// Operating rooms from the configuration, in file order.
    pub or_rooms: Vec<or::OrRoomInfo>,
}

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Token store.
    pub tokens: Tokens,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: Arc<ApiSettings>,
    /// Cancelled at shutdown: live streams end.
    pub shutdown: CancellationToken,
    /// The uplink's state (disabled when the appliance runs alone).
    pub sync: Arc<crate::sync::uplink::Status>,
    /// Forecasts and OR predictions.
    pub forecaster: Arc<crate::inference::forecast::Forecaster>,
    /// The local patient index.
    pub patients: Arc<crate::patients::PatientIndex>,
    /// Where look-ups queue their audit events.
    pub audit: crate::audit::AuditQueue,
    /// The coding suggestions' statistics.
    pub coding: Arc<charges::CodingCache>,
    /// The fleet channel's link (disabled without `[fleet]`).
    pub fleet: Arc<crate::fleet::Link>,
    /// Signed bundles' versions and last step.
    pub bundles: Arc<crate::bundles::Status>,
}

/// The request id, set by the middleware; used as the correlation id of events.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/units", get(beds::list_units))
        .route("/api/v1/units/{unit}", get(beds::get_unit))
        .route("/api/v1/units/{unit}/beds", get(beds::unit_beds))
        .route("/api/v1/units/{unit}/placements", post(beds::place))
        .route("/api/v1/beds/{bed}", get(beds::get_bed))
        .route("/api/v1/beds/{bed}/status", post(beds::set_status))
        .route("/api/v1/beds/{bed}/assign", post(beds::assign))
        .route("/api/v1/beds/{bed}/release", post(beds::release))
        .route("/api/v1/beds/{bed}/reserve", post(beds::reserve))
        .route("/api/v1/beds/{bed}/unreserve", post(beds::unreserve))
        .route("/api/v1/beds/{bed}/isolation", post(beds::set_isolation))
        .route(
            "/api/v1/beds/{bed}/pending-discharge",
            post(beds::set_pending_discharge),
        )
        .route("/api/v1/patients", get(patients::search))
        .route("/api/v1/forecast", get(forecast::hospital))
        .route("/api/v1/forecast/units/{unit}", get(forecast::unit))
        .route("/api/v1/charges", get(charges::of_visit))
        .route("/api/v1/coding/suggest", post(charges::suggest))
        .route("/api/v1/or/rooms", get(or::rooms))
        .route("/api/v1/or/cases", get(or::cases))
        .route("/api/v1/or/cases/predict", post(forecast::predict_or))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/integration/parked", get(integration::list))
        .route(
            "/api/v1/integration/parked/replay",
            post(integration::replay_all),
        )
        .route(
            "/api/v1/integration/parked/{seq}/replay",
            post(integration::replay_one),
        )
        .merge(pages::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            max_body,
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(hms_web::headers::security_headers))
        .with_state(state)
}

/// Request id, span, latency and count for every request. Logs carry the
/// route template, never the raw path or query (which could hold PHI).
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = format!("req-{}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only standard methods become label values: arbitrary extension methods
    // from unauthenticated clients must not grow the metric families.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => m,
        _ => "other",
    }
    .to_owned();
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| tracing::debug!(status, micros = elapsed.as_micros() as u64, "request done"));
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .http_seconds
        .get_or_create(&RouteLabels { route })
        .observe(elapsed.as_secs_f64());
    resp
}

/// Answers 413 at once when the declared `Content-Length` is over the limit,
/// before reading any of the body. (Bodies without a length are cut off by
/// `DefaultBodyLimit` while they are read.)
async fn refuse_declared_oversize(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
            format!("the request body exceeds the limit of {max} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        "Not found",
        "no such endpoint; see docs/api.md",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not accept that method",
    )
}

/// `GET /health`: without a token only `{"status"}` (up/down for outside
/// monitoring, nothing about the hospital); with a valid token of any role,
/// the components too. A token that is sent but not valid is a 401.
async fn health(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    let detailed = parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION);
    if detailed && let Err(p) = Caller::from_request_parts(&mut parts, &state).await {
        return p.into_response();
    }
    if !detailed {
        let (status, code) = health_status(&state, &state.sync.report_at(state.store.last_seq()));
        return (code, Json(json!({ "status": status }))).into_response();
    }
    let (code, body) = health_report(&state);
    (code, Json(body)).into_response()
}

/// The appliance's status: `failed` without its writer, `degraded` after a
/// store error or with the uplink not ok (the edge does its job without the
/// cloud: an offline uplink degrades it, never fails it), else `ok`.
fn health_status(
    state: &AppState,
    sync: &crate::sync::status::Report,
) -> (&'static str, StatusCode) {
    match (
        state.store.writer_alive(),
        state.store.last_error().is_some(),
        sync.ok(),
    ) {
        (false, _, _) => ("failed", StatusCode::SERVICE_UNAVAILABLE),
        (true, true, _) | (true, false, false) => ("degraded", StatusCode::OK),
        (true, false, true) => ("ok", StatusCode::OK),
    }
}

/// The whole `/health` report (status code and body) as a token holder sees it.
pub(crate) fn health_report(state: &AppState) -> (StatusCode, serde_json::Value) {
    let view = state.store.view();
    let last_error = state.store.last_error();
    let writer_alive = state.store.writer_alive();
    let sync = state.sync.report_at(state.store.last_seq());
    let (status, code) = health_status(state, &sync);
    let body = json!({
        "status": status,
        "hospital": state.store.hospital().as_str(),
        "name": state.settings.hospital_name,
        "node": state.settings.node,
        "version": env!("CARGO_PKG_VERSION"),
        "components": {
            "store": {
                "status": if !writer_alive { "failed" } else if last_error.is_some() { "degraded" } else { "ok" },
                "last_error": last_error,
            },
            "board": { "status": "ok", "beds": view.len(), "units": view.unit_ids().count() },
            "uplink": {
                "status": if sync.ok() { "ok" } else { "degraded" },
                "sync": sync,
            },
            "models": models_health(state),
            "fleet": { "status": state.fleet.state() },
            "bundles": state.bundles.report(),
        }
    });
    (code, body)
}

/// The models' part of `/health`: `ok` when every model answers, else
/// `degraded` (the fallbacks answer; the appliance's status is unaffected).
fn models_health(state: &AppState) -> serde_json::Value {
    let runtime = state.forecaster.runtime();
    let models = runtime.reports();
    let all_ready = models.iter().all(|m| m.state == "ready");
    json!({
        "status": if all_ready { "ok" } else { "degraded" },
        "set": runtime.set_version(),
        "models": models,
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.store.view());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// One path segment (a bed or unit id). A segment that does not decode is a
/// 400 problem rather than axum's plain-text rejection.
#[derive(Debug, Clone)]
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(s)) => Ok(Segment(s)),
            Err(_) => Err(Problem::bad_request("the path segment is not valid UTF-8")),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// Fails with 403 unless the caller's role is at least `min`.
    pub fn require(&self, min: Role, metrics: &Metrics, action: &str) -> Result<(), Problem> {
        if self.0.role >= min {
            Ok(())
        } else {
            metrics
                .auth_failures
                .get_or_create(&ReasonLabels {
                    reason: "forbidden",
                })
                .inc();
            Err(Problem::forbidden(format!(
                "role {} may not {action}; it needs {} or above",
                self.0.role.as_str(),
                min.as_str()
            )))
        }
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    presented_token(&parts.headers, &parts.uri)
}

/// The bearer token a request presents (the live stream may give it as
/// `?access_token=`).
pub(crate) fn presented_token(
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
) -> Option<String> {
    if let Some(h) = headers.get(axum::http::header::AUTHORIZATION) {
        let h = h.to_str().ok()?;
        let (scheme, token) = h.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    // EventSource cannot set headers: the live stream (only) also takes ?access_token=.
    if uri.path() != "/api/v1/stream" {
        return None;
    }
    uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(str::to_owned)
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let fail = |reason: &'static str, detail: &str| {
            state
                .metrics
                .auth_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
            Problem::unauthorized(detail.to_owned()).realm("hms-edge")
        };
        let Some(token) = bearer(parts) else {
            // The pages' session cookie, for the pages' own requests: a
            // change it authenticates must come from this origin.
            if let Some(id) = hms_web::cookie::get(&parts.headers, pages::COOKIE) {
                let safe = parts.method == axum::http::Method::GET
                    || parts.method == axum::http::Method::HEAD;
                if !safe && !hms_web::cookie::same_origin(&parts.headers) {
                    state
                        .metrics
                        .auth_failures
                        .get_or_create(&ReasonLabels {
                            reason: "cross_origin",
                        })
                        .inc();
                    return Err(Problem::forbidden(
                        "a change authenticated by the session cookie must come from this origin",
                    ));
                }
                let id = id.to_owned();
                return match pages::session_principal(state, &id).await {
                    Ok(Some(p)) => Ok(Caller(p)),
                    Ok(None) => Err(fail("invalid", "the session has ended; sign in again")),
                    Err(_) => Err(Problem::unavailable("the credential store is unavailable")),
                };
            }
            return Err(fail(
                "missing",
                "send a bearer token: Authorization: Bearer <token>",
            ));
        };
        if let Some(p) = state.tokens.cached(&token) {
            return Ok(Caller(p));
        }
        let tokens = state.tokens.clone();
        let found = tokio::task::spawn_blocking(move || tokens.authenticate(&token))
            .await
            .map_err(|_| Problem::unavailable("authentication failed to run"))?
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed");
                Problem::unavailable("the credential store is unavailable")
            })?;
        found
            .map(Caller)
            .ok_or_else(|| fail("invalid", "the bearer token is not valid"))
    }
}
