//! The kiosk web app: pages rendered on the server, on the same origin as
//! the API, for the hospital's staff (docs/kiosk.md).
//!
//! Sign-in opens a session (`POST /login` with a token or a kiosk's
//! one-time code) held in an `HttpOnly`, `SameSite=Strict` cookie; tokens
//! never travel in URLs. Every page checks the role its API endpoints
//! need, and every change goes through the same commands and writer as the
//! API. A page that is not signed in redirects to `/login`; a change posted
//! from another origin is refused.
//!
//! - `signin`: `/login`, `/logout`;
//! - `board`: the unit list (`/`), the unit board (`/units/{unit}`), its
//!   live stream of rendered tiles, and the one-tap housekeeping and
//!   isolation changes;
//! - `forecast`: each unit's 24/48/72 h forecast as a chart with its band
//!   and its source;
//! - `or`: the OR board of a day, rooms as rows on a timeline, overrun
//!   risk marked (nurse and up);
//! - `manage`: a bed's own page with its changes, placement proposals
//!   (bed managers);
//! - `patients`: patient look-up (nurse and up), posted, never in a URL;
//! - `admin`: health by component, parked HL7 messages with replay, tokens
//!   with revocation (admin).

pub mod admin;
pub mod board;
pub mod forecast;
pub mod manage;
pub mod or;
pub mod patients;
pub mod signin;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hms_web::page::{self, Nav, Shell, User};
use maud::{Markup, html};

use super::{AppState, Caller};
use crate::auth::{Principal, Role};

/// The session cookie's name.
pub const COOKIE: &str = "hms_session";

/// The product name in every page's header.
const APP: &str = "HMS Edge";

/// The page routes (merged into the API's router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(board::units))
        .route("/login", get(signin::form).post(signin::submit))
        .route("/logout", post(signin::logout))
        .route("/units/{unit}", get(board::page))
        .route("/units/{unit}/live", get(board::live))
        .route("/beds/{bed}/status", post(board::set_status))
        .route("/beds/{bed}/isolation", post(board::set_isolation))
        .route("/beds/{bed}", get(manage::bed_page))
        .route("/beds/{bed}/assign", post(manage::assign))
        .route("/beds/{bed}/reserve", post(manage::reserve))
        .route("/beds/{bed}/release", post(manage::release))
        .route("/beds/{bed}/unreserve", post(manage::unreserve))
        .route("/beds/{bed}/block", post(manage::block))
        .route("/beds/{bed}/in-service", post(manage::in_service))
        .route(
            "/beds/{bed}/pending-discharge",
            post(manage::pending_discharge),
        )
        .route("/units/{unit}/propose", post(manage::propose))
        .route("/forecast", get(forecast::page))
        .route("/or", get(or::page))
        .route("/patients", get(patients::page).post(patients::search))
        .route("/admin", get(admin::page))
        .route("/admin/parked/replay", post(admin::replay_all))
        .route("/admin/parked/{seq}/replay", post(admin::replay_one))
        .route("/admin/tokens/revoke", post(admin::revoke))
        .route("/assets/{file}", get(hms_web::assets::serve))
}

/// A signed-in user of the pages: the session's principal and its id.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who.
    pub principal: Principal,
    /// The session id (the cookie's value).
    pub session: String,
}

impl Signed {
    /// As the API's caller (role checks, actor of events).
    pub fn caller(&self) -> Caller {
        Caller(self.principal.clone())
    }
}

/// Why a page request is not served: not signed in (→ `/login`), posted
/// from another origin, or the session could not be checked.
#[derive(Debug)]
pub enum Refusal {
    /// Sign in first.
    SignIn,
    /// A change from another origin.
    CrossOrigin,
    /// The credential store failed.
    Unavailable,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => Redirect::to("/login").into_response(),
            Refusal::CrossOrigin => message(
                StatusCode::FORBIDDEN,
                "Refused",
                "This change was not sent from a page of this appliance.",
            ),
            Refusal::Unavailable => message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "The appliance could not check the sign-in. Try again shortly.",
            ),
        }
    }
}

/// The principal of a session cookie, if it holds. Blocking look-up off the
/// runtime's threads on a cache miss.
pub(crate) async fn session_principal(
    state: &AppState,
    id: &str,
) -> Result<Option<Principal>, Refusal> {
    if let Some(p) = state.tokens.session_cached(id) {
        return Ok(Some(p));
    }
    let (tokens, id) = (state.tokens.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || tokens.session(&id))
        .await
        .map_err(|_| Refusal::Unavailable)?
        .map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "session look-up failed");
            Refusal::Unavailable
        })
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        let safe =
            parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
        if !safe && !hms_web::cookie::same_origin(&parts.headers) {
            return Err(Refusal::CrossOrigin);
        }
        let Some(id) = hms_web::cookie::get(&parts.headers, COOKIE) else {
            return Err(Refusal::SignIn);
        };
        let id = id.to_owned();
        match session_principal(state, &id).await? {
            Some(principal) => Ok(Signed {
                principal,
                session: id,
            }),
            None => Err(Refusal::SignIn),
        }
    }
}

/// The frame of a signed-in page.
pub(crate) fn frame(
    state: &AppState,
    who: &Signed,
    title: &str,
    current: &str,
    page_kind: &str,
    main: Markup,
) -> Markup {
    let role = who.principal.role;
    let nav: Vec<Nav<'_>> = [
        ("Units", "/", Role::Viewer),
        ("Forecast", "/forecast", Role::Viewer),
        ("Operating rooms", "/or", Role::Nurse),
        ("Patients", "/patients", Role::Nurse),
        ("Administration", "/admin", Role::Admin),
    ]
    .into_iter()
    .filter(|(_, _, min)| role >= *min)
    .map(|(label, href, _)| Nav {
        label,
        href,
        current: current == href,
    })
    .collect();
    let shell = Shell {
        app: APP,
        site: &state.settings.hospital_name,
        title,
        nav: &nav,
        user: Some(User {
            name: &who.principal.name,
            role: who.principal.role.as_str(),
        }),
        page: page_kind,
        logout: "/logout",
    };
    page::document(&shell, main)
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
        logout: "/logout",
    };
    let body = html! {
        h1 { (title) }
        p { (text) }
        p { a href="/" { "Back to the start page" } }
    };
    page::respond_with(status, page::document(&shell, body))
}

/// A 303 to `to` (after a change: the browser shows the page again).
pub(crate) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// Whether `role` may do what needs `min`.
pub(crate) fn may(p: &Principal, min: Role) -> bool {
    p.role >= min
}
