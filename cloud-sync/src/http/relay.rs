//! EMPI changes asked at an instance that does not run the EMPI (several
//! instances of a region on PostgreSQL, [`crate::empi::SlotState::Following`]):
//! relayed through the region's database to the instance that runs it,
//! which answers each through its own router as if it had been asked
//! there, in the name of the operator the asking instance authenticated;
//! the asking instance then answers with that answer (status, type and
//! body). Reads are answered where they are asked, from the engine kept in
//! step.
//!
//! A change is every request under `/api/v1/empi/` but `GET`s and
//! `POST /api/v1/empi/search`. The operator's name travels in
//! [`RELAYED_OPERATOR`], which the gate strips from every request that did
//! not come from this relay in-process ([`Relayed`]), so no client can
//! claim a name with it. A change not answered within [`RELAY_WAIT`] is
//! answered `503`, and the instance running the EMPI answers it no more.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hms_domain::Timestamp;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::operator::Scope;
use super::{MAX_BODY_BYTES, RELAYED_OPERATOR, Relayed, problem};
use crate::empi::SlotState;
use crate::state::CloudState;

/// How long the asking instance waits for the answer, and how old a change
/// the instance running the EMPI still answers.
pub const RELAY_WAIT: Duration = Duration::from_secs(20);

/// How often the instance running the EMPI looks for relayed changes, and
/// the asking one for their answers.
const POLL: Duration = Duration::from_millis(25);

/// Whether `method` on `path` changes the EMPI.
fn is_change(method: &Method, path: &str) -> bool {
    path.starts_with("/api/v1/empi/") && method != Method::GET && path != "/api/v1/empi/search"
}

fn unavailable(detail: String) -> Response {
    problem::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        problem::UNAVAILABLE,
        detail,
    )
    .into_response()
}

/// The middleware of an instance following the EMPI: relays each change
/// (see the module doc); everything else goes on.
pub(super) async fn relay_changes(
    State(state): State<CloudState>,
    req: Request,
    next: Next,
) -> Response {
    let SlotState::Following(empi) = state.empi.state() else {
        return next.run(req).await;
    };
    if !is_change(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let who = match super::operator::operator(&state, req.headers(), Scope::Empi).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return problem::problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            problem::TOO_LARGE,
            format!("a request body is at most {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let method = parts.method.to_string();
    let e = empi.clone();
    let asked = tokio::task::spawn_blocking(move || e.ask(&method, &path, &bytes, &who)).await;
    let id = match asked {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "could not relay an EMPI change");
            return unavailable(
                "the change could not be passed to the instance running the EMPI".into(),
            );
        }
        Err(_) => return unavailable("the change could not be passed on".into()),
    };
    let deadline = tokio::time::Instant::now() + RELAY_WAIT;
    loop {
        tokio::time::sleep(POLL).await;
        let e = empi.clone();
        if let Ok(Ok(Some((status, content_type, body)))) =
            tokio::task::spawn_blocking(move || e.answer_of(id)).await
        {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Ok(v) = content_type.parse() {
                resp.headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, v);
            }
            return resp;
        }
        if tokio::time::Instant::now() >= deadline {
            return unavailable(format!(
                "the instance running the regional EMPI did not answer within {} s; it will not \
                 apply the change now: ask again",
                RELAY_WAIT.as_secs()
            ));
        }
    }
}

/// At the instance running the EMPI: answers the changes relayed by the
/// others until `stop` (see the module doc).
pub async fn answer_relayed(state: CloudState, stop: CancellationToken) {
    let app = super::router(state.clone());
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let Some(empi) = state.empi.get() else {
            continue;
        };
        let e = empi.clone();
        let pending = match tokio::task::spawn_blocking(move || e.pending(50)).await {
            Ok(Ok(p)) => p,
            Ok(Err(err)) => {
                tracing::warn!(error = %format!("{err:#}"), "cannot read relayed EMPI changes; retrying");
                continue;
            }
            Err(_) => continue,
        };
        for r in pending {
            let age = Timestamp::now().as_millis().saturating_sub(r.asked_ms);
            let answer = if age > i64::try_from(RELAY_WAIT.as_millis()).unwrap_or(i64::MAX) {
                let p = problem::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    problem::UNAVAILABLE,
                    "the change came too late to the instance running the EMPI; not applied",
                );
                (
                    503,
                    "application/problem+json".to_owned(),
                    serde_json::to_vec(&p).unwrap_or_default(),
                )
            } else {
                let req = Request::builder()
                    .method(r.method.as_str())
                    .uri(r.path.as_str())
                    .header(RELAYED_OPERATOR, r.operator.as_str())
                    .header(axum::http::header::CONTENT_TYPE, "application/json")
                    .extension(Relayed)
                    .body(Body::from(r.body));
                let resp = match req {
                    Ok(req) => app.clone().oneshot(req).await.ok(),
                    Err(_) => None,
                };
                match resp {
                    Some(resp) => {
                        let status = resp.status().as_u16();
                        let ct = resp
                            .headers()
                            .get(axum::http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("application/json")
                            .to_owned();
                        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                            .await
                            .map(|b| b.to_vec())
                            .unwrap_or_default();
                        (status, ct, body)
                    }
                    None => (400, "text/plain".to_owned(), b"not a request".to_vec()),
                }
            };
            let e = empi.clone();
            let stored = tokio::task::spawn_blocking(move || e.answer(r.id, &answer)).await;
            if !matches!(stored, Ok(Ok(()))) {
                tracing::warn!(
                    request = r.id,
                    "could not store the answer to a relayed EMPI change"
                );
            }
        }
    }
}
