//! The cloud's errors as RFC 9457 problem documents ([`hms_web::Problem`],
//! the type the appliance answers with too).
//!
//! Each problem type the cloud answers with is a [`Kind`] here: its slug
//! (`urn:hms:problem:<slug>`) and its title, the same for every problem of
//! that type. The typed errors of the domain modules ([`BatchError`],
//! [`DecisionError`], [`ModelError`], [`EnrolError`]) map to a problem by
//! their variant, never by their message. Details name ids and rules, never
//! PHI; a store failure is logged here and answered with a bare 503.

use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};
use hms_domain::sync::Refusal;
use hms_web::Problem;

use crate::empi::DecisionError;
use crate::empi::model::ModelError;
use crate::enrolment::{BatchError, EnrolError, Rejection};
use crate::store::IngestError;

/// A problem type of the cloud: slug and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `urn:hms:problem:<slug>`.
    pub slug: &'static str,
    /// The same for every problem of the type.
    pub title: &'static str,
}

/// A sync request without the signature headers (401).
pub const UNSIGNED: Kind = Kind {
    slug: "unsigned",
    title: "Unsigned request",
};
/// Authentication, enrolment or residency refused a sync request (401/403).
pub const REJECTED: Kind = Kind {
    slug: "rejected",
    title: "Request rejected",
};
/// This cloud does not take the hospital's sync requests from this sender
/// (421): a replica for a hospital not promoted here, a primary fenced
/// from it, a promoted replica to its old primary. An appliance's uplink
/// moves to its next address.
pub const MISDIRECTED: Kind = Kind {
    slug: "misdirected",
    title: "Not served here",
};
/// The body is not a sync batch (400).
pub const MALFORMED_BATCH: Kind = Kind {
    slug: "malformed-batch",
    title: "Malformed sync batch",
};
/// The body expands beyond the limit (413).
pub const TOO_LARGE: Kind = Kind {
    slug: "too-large",
    title: "Request body too large",
};
/// A rule refused the request (409): a sync rule, or the EMPI engine.
pub const REFUSED: Kind = Kind {
    slug: "refused",
    title: "Refused by a rule",
};
/// The store (or the task) could not answer (503).
pub const UNAVAILABLE: Kind = Kind {
    slug: "unavailable",
    title: "Temporarily unavailable",
};
/// The body could not be read (its status is the reader's).
pub const UNREADABLE_BODY: Kind = Kind {
    slug: "unreadable-body",
    title: "The request body could not be read",
};
/// A content encoding the cloud does not speak (415).
pub const UNSUPPORTED_ENCODING: Kind = Kind {
    slug: "unsupported-encoding",
    title: "Unsupported content encoding",
};
/// A bad query parameter or request body (400).
pub const BAD_QUERY: Kind = Kind {
    slug: "bad-query",
    title: "Bad request",
};
/// No such hospital, unit, record, review or model (404).
pub const NOT_FOUND: Kind = Kind {
    slug: "not-found",
    title: "Not found",
};
/// No valid operator token (401).
pub const UNAUTHORIZED: Kind = Kind {
    slug: "unauthorized",
    title: "Authentication required",
};
/// Not this cloud's role (409): a replica asked what a primary does.
pub const WRONG_ROLE: Kind = Kind {
    slug: "wrong-role",
    title: "Not this cloud's role",
};
/// A model training or installation is under way (409).
pub const BUSY: Kind = Kind {
    slug: "busy",
    title: "Busy",
};
/// Too few records to train a model on (409).
pub const TOO_FEW_RECORDS: Kind = Kind {
    slug: "too-few-records",
    title: "Too few records",
};
/// Training gave no usable model (422).
pub const UNUSABLE_MODEL: Kind = Kind {
    slug: "unusable-model",
    title: "Unusable model",
};
/// A hospital of another region (403).
pub const RESIDENCY: Kind = Kind {
    slug: "residency",
    title: "Not this region's data",
};
/// The operator token lacks the scope the route needs (403).
pub const MISSING_SCOPE: Kind = Kind {
    slug: "missing-scope",
    title: "The token lacks a scope",
};
/// Re-keying an enrolled hospital without `replace` (409).
pub const ALREADY_ENROLLED: Kind = Kind {
    slug: "already-enrolled",
    title: "Already enrolled",
};

/// A cloud without `[fleet]` asked about the fleet (409).
pub const NO_FLEET: Kind = Kind {
    slug: "no-fleet",
    title: "No fleet channel",
};
/// A fleet command asked of a cloud without a fleet key (409).
pub const NO_FLEET_KEY: Kind = Kind {
    slug: "no-fleet-key",
    title: "No fleet signing key",
};

/// A problem of `kind` with `status` and `detail`.
pub fn problem(status: StatusCode, kind: Kind, detail: impl Into<String>) -> Problem {
    Problem::new(status, kind.slug, kind.title, detail)
}

/// 400 `bad-query`.
pub fn bad(detail: impl Into<String>) -> Problem {
    problem(StatusCode::BAD_REQUEST, BAD_QUERY, detail)
}

/// 404 `not-found`.
pub fn not_found(detail: impl Into<String>) -> Problem {
    problem(StatusCode::NOT_FOUND, NOT_FOUND, detail)
}

/// 503 `unavailable`: the store could not answer.
pub fn unavailable() -> Problem {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        UNAVAILABLE,
        "the store could not answer; retry",
    )
}

/// 503 `unavailable`: the request's task failed to run.
pub fn not_run() -> Problem {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        UNAVAILABLE,
        "the request failed to run; retry",
    )
}

/// 401 `unauthorized` of the operator API (with `WWW-Authenticate: Bearer`).
pub fn unauthorized(detail: impl Into<String>) -> Problem {
    problem(StatusCode::UNAUTHORIZED, UNAUTHORIZED, detail)
}

/// 403 `missing-scope`: the operator token `name` lacks `scope` (named
/// in the `scope` member too).
pub fn missing_scope(name: &str, scope: &str, held: &str) -> Problem {
    problem(
        StatusCode::FORBIDDEN,
        MISSING_SCOPE,
        format!(
            "the token {name:?} lacks the scope {scope} (it holds {held}); use a token made \
             with --scope {scope}"
        ),
    )
    .with("scope", scope)
}

/// 409 `wrong-role`.
pub fn wrong_role(detail: impl Into<String>) -> Problem {
    problem(StatusCode::CONFLICT, WRONG_ROLE, detail)
}

/// A problem of the sync API as a response: sync requests are signed, not
/// bearer-authenticated, so a 401 there carries no `WWW-Authenticate`
/// challenge.
pub fn unchallenged(p: Problem) -> Response {
    let mut r = p.into_response();
    r.headers_mut().remove(WWW_AUTHENTICATE);
    r
}

/// A refused or failed sync request.
pub fn batch(e: BatchError) -> Problem {
    match e {
        BatchError::Rejected(r @ Rejection::NotServedHere(_)) => {
            problem(StatusCode::MISDIRECTED_REQUEST, MISDIRECTED, r.to_string())
        }
        BatchError::Rejected(r) => {
            let status = match r {
                Rejection::Signature(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            problem(status, REJECTED, r.to_string())
        }
        BatchError::Malformed(m) => problem(StatusCode::BAD_REQUEST, MALFORMED_BATCH, m),
        BatchError::TooLarge { max } => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            TOO_LARGE,
            format!("the body expands beyond {max} bytes; send smaller batches"),
        ),
        BatchError::Ingest(IngestError::Refused(r)) => {
            let p = problem(StatusCode::CONFLICT, REFUSED, r.to_string());
            match r {
                Refusal::Gap { expected, .. } => p.with("expected_seq", expected),
                _ => p,
            }
        }
        BatchError::Ingest(IngestError::Store(e)) => {
            tracing::error!(error = %format!("{e:#}"), "store failure");
            unavailable()
        }
    }
}

/// A human EMPI decision or merge that was not applied.
pub fn decision(e: DecisionError) -> Problem {
    match e {
        DecisionError::Refused(err) => problem(StatusCode::CONFLICT, REFUSED, err.to_string()),
        DecisionError::UnknownAction(_) => bad(e.to_string()),
        DecisionError::Store(err) => {
            tracing::error!(error = %format!("{err:#}"), "EMPI decision failed to store");
            unavailable()
        }
    }
}

/// An EMPI model that was not trained or installed.
pub fn model(e: ModelError) -> Problem {
    match e {
        ModelError::Busy => problem(StatusCode::CONFLICT, BUSY, e.to_string()),
        ModelError::TooFewRecords { held, needed } => {
            problem(StatusCode::CONFLICT, TOO_FEW_RECORDS, e.to_string())
                .with("held", held)
                .with("needed", needed)
        }
        ModelError::Unusable(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            UNUSABLE_MODEL,
            e.to_string(),
        ),
        ModelError::UnknownVersion(_) => not_found(e.to_string()),
        ModelError::Store(err) => {
            tracing::error!(error = %format!("{err:#}"), "EMPI model not installed");
            unavailable()
        }
    }
}

/// An enrolment over the operator API that was not recorded.
pub fn enrol(e: EnrolError) -> Problem {
    match e {
        EnrolError::Rejected(r @ Rejection::OtherRegion { .. }) => {
            problem(StatusCode::FORBIDDEN, RESIDENCY, r.to_string())
        }
        EnrolError::Rejected(r) => bad(r.to_string()),
        EnrolError::AlreadyEnrolled { hospital, node } => problem(
            StatusCode::CONFLICT,
            ALREADY_ENROLLED,
            format!(
                "hospital {hospital} is enrolled already (node {node}) with another node or key; \
                 send \"replace\": true to re-key it (audited)"
            ),
        )
        .with("hospital", hospital.as_str()),
        EnrolError::Store(err) => {
            tracing::error!(error = %format!("{err:#}"), "enrolment failed to store");
            unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn a_gap_is_a_conflict_naming_the_seq_to_resend_from_with_a_title() {
        let r = unchallenged(batch(BatchError::Ingest(IngestError::Refused(
            Refusal::Gap {
                expected: 7,
                found: 9,
            },
        ))));
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let b = body(r).await;
        assert_eq!(b["type"], "urn:hms:problem:refused");
        assert_eq!(b["title"], REFUSED.title);
        assert_eq!(b["status"], 409);
        assert_eq!(b["expected_seq"], 7);
        assert!(b["detail"].as_str().is_some_and(|d| !d.is_empty()), "{b}");
    }

    #[tokio::test]
    async fn only_the_operator_api_challenges_a_401_with_bearer() {
        let operator = unauthorized("send a token").into_response();
        assert_eq!(operator.headers()[WWW_AUTHENTICATE], "Bearer");
        let sync = unchallenged(problem(StatusCode::UNAUTHORIZED, UNSIGNED, "sign it"));
        assert_eq!(sync.status(), StatusCode::UNAUTHORIZED);
        assert!(sync.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(body(sync).await["title"], UNSIGNED.title);
    }

    #[test]
    fn errors_map_by_type_not_by_message() {
        let p = decision(DecisionError::UnknownAction("merge".into()));
        assert_eq!((p.status, p.slug()), (400, "bad-query"));
        assert!(
            p.detail.contains("link, unlink or never_link"),
            "{}",
            p.detail
        );
        let p = decision(DecisionError::Store(anyhow::anyhow!("unknown decision")));
        assert_eq!((p.status, p.slug()), (503, "unavailable"));
        let p = model(ModelError::TooFewRecords {
            held: 3,
            needed: 1000,
        });
        assert_eq!((p.status, p.slug()), (409, "too-few-records"));
        assert_eq!(
            (p.extra["held"].clone(), p.extra["needed"].clone()),
            (3.into(), 1000.into())
        );
        let other = Rejection::OtherRegion {
            hospital: "h9".parse().expect("id"),
            enrolled: "us-east".parse().expect("id"),
            here: "eu-west".parse().expect("id"),
        };
        let p = enrol(EnrolError::Rejected(other));
        assert_eq!((p.status, p.slug()), (403, "residency"));
        let p = enrol(EnrolError::Rejected(Rejection::BadKey));
        assert_eq!((p.status, p.slug()), (400, "bad-query"));
        let p = enrol(EnrolError::AlreadyEnrolled {
            hospital: "h9".parse().expect("id"),
            node: "edge-1".parse().expect("id"),
        });
        assert_eq!((p.status, p.slug()), (409, "already-enrolled"));
        assert_eq!(p.extra["hospital"], "h9");
        let p = batch(BatchError::Rejected(Rejection::NotServedHere(
            crate::enrolment::NotServed::Replica("h9".parse().expect("id")),
        )));
        assert_eq!((p.status, p.slug()), (421, "misdirected"));
        assert!(p.detail.contains("hms-cloud promote"), "{}", p.detail);
        let p = missing_scope("ops", "empi", "read");
        assert_eq!((p.status, p.slug()), (403, "missing-scope"));
        assert_eq!(p.extra["scope"], "empi");
    }
}
