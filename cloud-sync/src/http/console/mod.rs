//! The fleet console: the region's operators' pages, on the web stack of
//! the kiosk app (`hms_web`: the page frame, the embedded style sheet and
//! script, the session cookie, server-drawn charts), served by `hms-cloud`
//! under `/console` (docs/fleet.md, "Console").
//!
//! Sign-in takes an operator token (`hms-cloud token create`) and opens a
//! session held in the cookie `hms_console` (`HttpOnly`, `SameSite=Strict`,
//! `Secure` under HTTPS). The session lives in the registry (the SHA-256
//! of the cookie's value and of the token, never either in clear; with
//! PostgreSQL shared by the region's instances, so any instance serves a
//! signed-in operator and a restart signs nobody out), and every page
//! checks its token against the registry again, so a revoked or expired
//! token ends its sessions at the next page. A session ends at sign-out or
//! after [`IDLE_MS`] without a page (its last use is written at most every
//! [`TOUCH_MS`]). Each page needs the scope of the API it shows (`fleet`,
//! `read`, `empi`; `admin` holds all); the navigation offers only what the
//! token's scopes allow, and a page without its scope is a 403 page naming
//! it. Changes are posted forms, refused from another origin.
//!
//! - [`signin`]: `/console/login`, `/console/logout`;
//! - [`nodes`]: the fleet table (`/console`, and its rows alone at
//!   `/console/fleet-table`, which the page fetches every 5 s), a node's
//!   page (`/console/nodes/{hospital}/{node}`: status, sparklines of lag
//!   and ADT rate, commands with their results) and the command form;
//! - [`rollouts`]: staged rollouts of signed bundles, wave by wave
//!   (`/console/rollouts`, `/console/rollouts/{id}`);
//! - [`region`]: hospitals with their census and ADT volume charts, and DR
//!   replication;
//! - [`reviews`]: the EMPI review queue with each candidate's per-field
//!   explanation, and link / never link / close.

pub mod nodes;
pub mod region;
pub mod reviews;
pub mod rollouts;
pub mod signin;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hms_domain::Timestamp;
use hms_web::page::{self, Nav, Shell, User};
use maud::{Markup, html};
use ring::rand::SecureRandom;

use crate::state::CloudState;
use crate::store::registry::{RegistryDb, Scope, Scopes};

/// The session cookie's name.
pub const COOKIE: &str = "hms_console";

/// The product name in every page's header.
const APP: &str = "HMS Fleet";

/// A session ends after this long without a page, ms.
pub const IDLE_MS: i64 = 12 * 3_600_000;

/// Sessions held at most; the least recently used goes first.
pub const MAX_SESSIONS: usize = 10_000;

/// The console's routes.
pub fn routes() -> Router<CloudState> {
    Router::new()
        .route("/console", get(nodes::page))
        .route("/console/fleet-table", get(nodes::table))
        .route("/console/login", get(signin::form).post(signin::submit))
        .route("/console/logout", post(signin::logout))
        .route("/console/nodes/{hospital}/{node}", get(nodes::node))
        .route(
            "/console/nodes/{hospital}/{node}/commands",
            get(nodes::commands).post(nodes::send),
        )
        .route("/console/rollouts", get(rollouts::list))
        .route("/console/rollouts/{id}", get(rollouts::one))
        .route("/console/hospitals", get(region::hospitals))
        .route("/console/hospitals/{hospital}", get(region::hospital))
        .route("/console/replication", get(region::replication))
        .route("/console/empi", get(reviews::page))
        .route("/console/empi/reviews/{id}", post(reviews::act))
        .route("/assets/{file}", get(hms_web::assets::serve))
}

/// A session's last use is written at most this often, ms.
pub const TOUCH_MS: i64 = 60_000;

/// What the registry keeps of a session id (the cookie's value).
fn session_digest(id: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, id.as_bytes())
        .as_ref()
        .to_vec()
}

/// Opens a session for `token` at `now_ms` in `db` (blocking); its id,
/// the cookie's value.
pub(crate) fn open_session(db: &RegistryDb, token: &str, now_ms: i64) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random bytes for a session id"))?;
    let id = hms_domain::event::to_hex(&bytes);
    db.open_console_session(&session_digest(&id), token, now_ms, IDLE_MS, MAX_SESSIONS)?;
    Ok(id)
}

/// Ends session `id` (a sign-out).
pub(crate) async fn close_session(state: &CloudState, id: &str) {
    let (db, key) = (state.registry_db.clone(), session_digest(id));
    let closed = tokio::task::spawn_blocking(move || db.close_console_session(&key)).await;
    if !matches!(closed, Ok(Ok(()))) {
        tracing::error!("console session not closed");
    }
}

/// A signed-in operator: the token's name and scopes, and the session id.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The token's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Scopes,
    /// The session id.
    pub session: String,
}

impl Operator {
    /// Ok when the token holds `scope`; else the 403 page that names it.
    pub fn require(&self, scope: Scope) -> Result<(), Notice> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(Notice::new(
                StatusCode::FORBIDDEN,
                "Not allowed",
                format!(
                    "This page needs the {} scope; the token {} holds {}.",
                    scope.as_str(),
                    self.name,
                    self.scopes
                ),
            ))
        }
    }

    /// The actor of what this operator does (`operator:{token}`), as the
    /// API records it.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// Why a console request is not served.
#[derive(Debug)]
pub enum Refusal {
    /// Sign in first.
    SignIn,
    /// A change from another origin.
    CrossOrigin,
    /// The registry could not be read.
    Unavailable,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => Redirect::to("/console/login").into_response(),
            Refusal::CrossOrigin => message(
                StatusCode::FORBIDDEN,
                "Refused",
                "This change was not sent from a page of this console.",
            ),
            Refusal::Unavailable => unavailable(),
        }
    }
}

/// The operator behind session `id`, checked against the registry now.
pub(crate) async fn operator_of(state: &CloudState, id: &str) -> Result<Option<Operator>, Refusal> {
    let now = Timestamp::now().as_millis();
    let (db, key) = (state.registry_db.clone(), session_digest(id));
    let found =
        tokio::task::spawn_blocking(move || db.console_operator(&key, now, IDLE_MS, TOUCH_MS))
            .await
            .map_err(|_| Refusal::Unavailable)?
            .map_err(|e| {
                tracing::error!(error = %format!("{e:#}"), "console session look-up failed");
                Refusal::Unavailable
            })?;
    Ok(found.map(|op| Operator {
        name: op.name,
        scopes: op.scopes,
        session: id.to_owned(),
    }))
}

impl FromRequestParts<CloudState> for Operator {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &CloudState) -> Result<Self, Refusal> {
        let safe = parts.method == Method::GET || parts.method == Method::HEAD;
        if !safe && !hms_web::cookie::same_origin(&parts.headers) {
            return Err(Refusal::CrossOrigin);
        }
        let Some(id) = hms_web::cookie::get(&parts.headers, COOKIE) else {
            return Err(Refusal::SignIn);
        };
        let id = id.to_owned();
        operator_of(state, &id).await?.ok_or(Refusal::SignIn)
    }
}

/// The frame of a signed-in page.
pub(crate) fn frame(
    state: &CloudState,
    who: &Operator,
    title: &str,
    current: &str,
    page_kind: &str,
    main: Markup,
) -> Markup {
    let nav: Vec<Nav<'_>> = [
        ("Fleet", "/console", Scope::Fleet),
        ("Rollouts", "/console/rollouts", Scope::Fleet),
        ("Hospitals", "/console/hospitals", Scope::Read),
        ("Replication", "/console/replication", Scope::Read),
        ("EMPI reviews", "/console/empi", Scope::Empi),
    ]
    .into_iter()
    .filter(|(_, _, scope)| who.scopes.allows(*scope))
    .map(|(label, href, _)| Nav {
        label,
        href,
        current: current == href,
    })
    .collect();
    let scopes = who.scopes.to_string();
    let shell = Shell {
        app: APP,
        site: state.registry.region().as_str(),
        title,
        nav: &nav,
        user: Some(User {
            name: &who.name,
            role: &scopes,
        }),
        page: page_kind,
        logout: "/console/logout",
    };
    page::document(&shell, main)
}

/// A page of one message, not rendered yet (what a check returns).
#[derive(Debug)]
pub struct Notice {
    status: StatusCode,
    title: &'static str,
    text: String,
}

impl Notice {
    /// A page with `status`, `title` and `text`.
    pub fn new(status: StatusCode, title: &'static str, text: impl Into<String>) -> Self {
        Self {
            status,
            title,
            text: text.into(),
        }
    }
}

impl IntoResponse for Notice {
    fn into_response(self) -> Response {
        message(self.status, self.title, &self.text)
    }
}

/// A page with one message (refusals, errors), for anyone.
pub(crate) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let shell = Shell {
        app: APP,
        site: "",
        title,
        nav: &[],
        user: None,
        page: "message",
        logout: "/console/logout",
    };
    let body = html! {
        h1 { (title) }
        p { (text) }
        p { a href="/console" { "Back to the console" } }
    };
    page::respond_with(status, page::document(&shell, body))
}

/// The page of a store or registry failure.
pub(crate) fn unavailable() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The cloud could not read what this page shows. Try again shortly.",
    )
}

/// A problem the API would answer, as a page.
pub(crate) fn problem_page(p: &hms_web::Problem) -> Response {
    message(
        StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        p.title,
        &p.detail,
    )
}

/// Runs `f` on a blocking thread; a failure is the unavailable page (logged).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "console store failure");
            Err(unavailable())
        }
        Err(_) => Err(unavailable()),
    }
}

/// A 303 to `to` (after a change: the browser shows the page again).
pub(crate) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// An RFC 3339 instant as the pages show it: `YYYY-MM-DD HH:MM:SS UTC`,
/// in a `<time>` element.
pub(crate) fn when(rfc3339: &str) -> Markup {
    let shown = rfc3339
        .get(..19)
        .map(|s| format!("{} UTC", s.replace('T', " ")))
        .unwrap_or_else(|| rfc3339.to_owned());
    html! { time datetime=(rfc3339) { (shown) } }
}

/// A JSON value as a page shows it: text as is, numbers and booleans as
/// written, null as a dash.
pub(crate) fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_their_token_until_idle_closed_or_revoked() {
        use crate::store::registry::NewOperatorToken;
        let db = RegistryDb::in_memory().unwrap();
        let token = |name| {
            db.create_operator_token(
                &NewOperatorToken {
                    name,
                    scopes: Scopes::ADMIN,
                    expires_ms: None,
                    by: "cli:test",
                },
                1,
            )
            .unwrap()
        };
        let (ta, tb, tc) = (token("a"), token("b"), token("c"));
        let op = |id: &str, now| {
            db.console_operator(&session_digest(id), now, IDLE_MS, TOUCH_MS)
                .unwrap()
                .map(|o| o.name)
        };
        let a = open_session(&db, &ta, 1_000).unwrap();
        let b = open_session(&db, &tb, 1_000).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(op(&a, 1_000 + TOUCH_MS).as_deref(), Some("a"));
        // Used then: still there just before that + IDLE_MS.
        assert!(op(&a, 1_000 + TOUCH_MS + IDLE_MS - 1).is_some());
        assert!(op(&b, 1_000 + IDLE_MS).is_none(), "idle too long");
        db.close_console_session(&session_digest(&a)).unwrap();
        assert!(op(&a, 3_000).is_none());
        let c = open_session(&db, &tc, 5_000).unwrap();
        let d = open_session(&db, &tc, 5_000).unwrap();
        db.revoke_token("c", 5_000, "cli:test").unwrap();
        assert!(op(&c, 5_001).is_none() && op(&d, 5_001).is_none());
        assert!(op("not-a-session", 5_001).is_none());
        // Only digests are kept: neither the id nor the token in clear.
        let e = open_session(&db, &ta, 6_000).unwrap();
        assert_eq!(op(&e, 6_001).as_deref(), Some("a"));
    }

    #[test]
    fn instants_show_as_utc_text_in_a_time_element() {
        let m = when("2026-12-05T17:04:05.123Z").into_string();
        assert_eq!(
            m,
            "<time datetime=\"2026-12-05T17:04:05.123Z\">2026-12-05 17:04:05 UTC</time>"
        );
        assert_eq!(text(&serde_json::Value::Null), "—");
        assert_eq!(text(&serde_json::json!(3)), "3");
        assert_eq!(text(&serde_json::json!("a")), "a");
    }
}
