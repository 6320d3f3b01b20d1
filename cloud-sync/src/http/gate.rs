//! What the cloud checks before it reads a request body, so that nobody
//! makes it read (and hold) megabytes it will refuse anyway:
//!
//! - a declared `Content-Length` above [`super::MAX_BODY_BYTES`]: `413` at
//!   once; for a bundle upload (`POST` [`super::fleet::BUNDLES`], whose own
//!   body limit is larger), above [`crate::bundles::MAX_BUNDLE_BYTES`];
//! - a sync batch (`POST` [`super::BATCHES`]): the signature headers must be
//!   there, the hospital served here (not fenced on a primary, promoted on
//!   a replica: a 421 otherwise) and enrolled from that node, the signing
//!   time within the clock skew (a DR primary's batch: this cloud must be a
//!   replica); the signature itself, which covers the body, is checked after;
//! - an operator request with a body (`POST`, `PUT`, `DELETE` under
//!   `/api/`): the bearer token must be valid; the handler checks the rest.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{BATCHES, MAX_BODY_BYTES, problem, sync};
use crate::enrolment::BatchError;
use crate::state::CloudState;

/// The middleware; see the module doc.
pub(super) async fn before_body(
    State(state): State<CloudState>,
    req: Request,
    next: Next,
) -> Response {
    let mut req = req;
    if req.extensions().get::<super::Relayed>().is_none() {
        // Only the relay in this process may name a relayed operator.
        req.headers_mut().remove(super::RELAYED_OPERATOR);
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let path = req.uri().path();
    let max = if req.method() == Method::POST && path == super::fleet::BUNDLES {
        crate::bundles::MAX_BUNDLE_BYTES
    } else {
        MAX_BODY_BYTES
    };
    if declared.is_some_and(|n| n > max as u64) {
        return hms_web::Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Request body too large",
            format!("a request body is at most {max} bytes"),
        )
        .into_response();
    }
    if req.method() == Method::POST && path == BATCHES {
        let Some(signed) = sync::signed(req.headers()) else {
            return sync::unsigned();
        };
        let now = hms_domain::Timestamp::now().as_millis();
        if let Err(r) = state.precheck(&signed, now) {
            return sync::failure(BatchError::Rejected(r));
        }
    } else if path.starts_with("/api/")
        && req.method() != Method::GET
        && req.extensions().get::<super::Relayed>().is_none()
    {
        let token = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let Some(token) = token else {
            return problem::unauthorized("send an operator token: Authorization: Bearer TOKEN")
                .into_response();
        };
        let db = state.registry_db.clone();
        match tokio::task::spawn_blocking(move || db.token_name(&token)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                return problem::unauthorized("the token is not valid here").into_response();
            }
            _ => return problem::unavailable().into_response(),
        }
    }
    next.run(req).await
}
