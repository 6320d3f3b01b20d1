//! RFC 9457 problem documents (`application/problem+json`) for every error
//! of both servers.
//!
//! A problem has a type (`urn:hms:problem:<slug>`), a title (the same for
//! every problem of that type), the HTTP status, a detail for this occurrence
//! and extra members (a conflict's current state, the seq a gap expects).
//! Problem bodies name ids (beds, units, hospitals, request ids) but never
//! PHI: [`safe_detail`] rewrites deserialiser messages so that no sent value
//! is echoed.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// A problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// Problem type URI (`urn:hms:problem:<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Extra members (e.g. `current` bed on a conflict).
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, Value>,
    /// The `realm` of the `WWW-Authenticate` challenge a 401 carries.
    #[serde(skip)]
    pub realm: Option<&'static str>,
}

impl Problem {
    /// A problem of type `slug`.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:hms:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            extra: serde_json::Map::new(),
            realm: None,
        }
    }

    /// Names the realm of the `WWW-Authenticate: Bearer` challenge (401 only).
    pub fn realm(mut self, realm: &'static str) -> Self {
        self.realm = Some(realm);
        self
    }

    /// The slug of the type (`urn:hms:problem:<slug>`).
    pub fn slug(&self) -> &str {
        self.kind
            .strip_prefix("urn:hms:problem:")
            .unwrap_or(&self.kind)
    }

    /// Adds an extra member.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.extra.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }

    /// 400 with a reason.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 422 with a reason.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "The request is well-formed but not valid",
            detail,
        )
    }

    /// 404 for an unknown thing. The id is named only when it is a valid id
    /// (ids are not PHI); anything else sent is not echoed.
    pub fn not_found(what: &str, id: &str) -> Self {
        let detail = if hms_domain::ids::validate_id(id).is_ok() {
            format!("there is no {what} {id:?}")
        } else {
            format!("there is no such {what}")
        };
        Self::new(
            StatusCode::NOT_FOUND,
            &format!("unknown-{what}"),
            "Not found",
            detail,
        )
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not allowed for this role",
            detail,
        )
    }

    /// 503.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let challenge = (status == StatusCode::UNAUTHORIZED).then(|| match self.realm {
            Some(realm) => HeaderValue::from_str(&format!("Bearer realm=\"{realm}\""))
                .unwrap_or(HeaderValue::from_static("Bearer")),
            None => HeaderValue::from_static("Bearer"),
        });
        let mut resp = (status, Json(self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(c) = challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let detail = safe_detail(&r.body_text());
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                status,
                "payload-too-large",
                "Request body too large",
                "the request body exceeds the configured limit",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                status,
                "unsupported-media-type",
                "Expected JSON",
                "send the body as application/json",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Problem::invalid(detail),
            _ if matches!(r, JsonRejection::BytesRejection(_)) => Problem::new(
                status,
                "unreadable-body",
                "The request body could not be read",
                detail,
            ),
            _ => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                detail,
            ),
        }
    }
}

/// Rewrites a JSON rejection message so that it never echoes a value sent
/// (values may be PHI): it keeps the field path, the kind of error and what was
/// expected (our own type and field names), and drops the offending value.
pub fn safe_detail(raw: &str) -> String {
    let msg = raw
        .split_once("target type: ")
        .map_or(raw, |(_, rest)| rest);
    let msg = msg.rfind(" at line ").map_or(msg, |i| &msg[..i]);
    let (path, what) = match msg.split_once(": ") {
        Some((p, w)) if !p.is_empty() && !p.contains([' ', '`', '"']) => (Some(p), w),
        _ => (None, msg),
    };
    let kept = if ["missing field", "unknown field", "duplicate field"]
        .iter()
        .any(|k| what.starts_with(k))
    {
        // Field names, not values.
        what.to_owned()
    } else {
        let kind = what
            .split([':', '`', '"'])
            .next()
            .unwrap_or("invalid value")
            .trim();
        let kind = if kind.is_empty() {
            "invalid value"
        } else {
            kind
        };
        match what.rfind(", expected ") {
            Some(i) => format!("{kind}{}", &what[i..]),
            None => kind.to_owned(),
        }
    };
    match path {
        Some(p) => format!("{p}: {kept}"),
        None => kept,
    }
}

#[cfg(test)]
mod tests {
    use super::safe_detail;

    #[test]
    fn sent_values_are_never_echoed() {
        let p = "Failed to deserialize the JSON body into the target type: ";
        for (raw, want) in [
            (
                "patient.mrn: invalid type: integer `1234567`, expected a string at line 1 column 28",
                "patient.mrn: invalid type, expected a string",
            ),
            (
                "patient.sex: unknown variant `DOE, JANE`, expected one of `female`, `male`, `other` at line 1 column 9",
                "patient.sex: unknown variant, expected one of `female`, `male`, `other`",
            ),
            (
                "version: invalid type: string \"x\\\" DOE \\\"y\", expected u64 at line 1 column 3",
                "version: invalid type, expected u64",
            ),
            (
                "missing field `version` at line 1 column 20",
                "missing field `version`",
            ),
            (
                "unknown field `extra`, expected one of `encounter`, `version` at line 1 column 9",
                "unknown field `extra`, expected one of `encounter`, `version`",
            ),
            (
                "encounter: id contains '!'; only letters, digits, dot, underscore, colon and hyphen are allowed at line 1 column 5",
                "encounter: id contains '!'; only letters, digits, dot, underscore, colon and hyphen are allowed",
            ),
        ] {
            assert_eq!(safe_detail(&format!("{p}{raw}")), want);
        }
    }
}

#[cfg(test)]
mod response_tests {
    use super::*;

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn a_problem_is_problem_json_with_type_title_status_detail_and_extras() {
        let resp = Problem::new(
            StatusCode::CONFLICT,
            "stale-version",
            "Stale version",
            "bed B1 moved on",
        )
        .with("current", serde_json::json!({ "version": 7 }))
        .into_response();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(
            body(resp).await,
            serde_json::json!({
                "type": "urn:hms:problem:stale-version",
                "title": "Stale version",
                "status": 409,
                "detail": "bed B1 moved on",
                "current": { "version": 7 },
            })
        );
    }

    #[tokio::test]
    async fn a_401_carries_a_bearer_challenge_with_the_realm_when_named() {
        let plain = Problem::unauthorized("no token").into_response();
        assert_eq!(plain.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let named = Problem::unauthorized("no token").realm("hms-edge");
        assert_eq!(named.slug(), "unauthorized");
        let resp = named.into_response();
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"hms-edge\""
        );
        let b = body(resp).await;
        assert_eq!(b["title"], "Authentication required");
        assert!(
            b.get("realm").is_none(),
            "the realm is a header, not a member"
        );
    }
}
