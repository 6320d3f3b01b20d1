//! `GET /console/login`, `POST /console/login`, `POST /console/logout`.
//!
//! `POST /console/login` takes a form with `token` (an operator token),
//! opens a session, records `console_sign_in` in the registry's audit (who,
//! never the token) and answers `303` to the first page the token's scopes
//! open, with the session cookie. A refused sign-in shows the form again
//! with `401`. `POST /console/logout` ends the session and clears the
//! cookie. Both refuse posts from other origins.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hms_domain::Timestamp;
use hms_web::page::{self, Shell};
use maud::{Markup, html};
use serde::Deserialize;

use super::{APP, COOKIE, Refusal, operator_of, see_other};
use crate::state::CloudState;
use crate::store::registry::{AuditEntry, Scope, Scopes};

/// The sign-in form's field.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

fn login_page(state: &CloudState, error: Option<&str>) -> Markup {
    let shell = Shell {
        app: APP,
        site: state.registry.region().as_str(),
        title: "Sign in",
        nav: &[],
        user: None,
        page: "login",
        logout: "/console/logout",
    };
    page::document(
        &shell,
        html! {
            div class="signin" {
                h1 { "Sign in to the fleet console" }
                @if let Some(e) = error {
                    p class="notice error" role="alert" id="login-error" { (e) }
                }
                section aria-labelledby="with-token" {
                    h2 id="with-token" { "Operator token" }
                    p class="hint" id="token-hint" {
                        "A token from " code { "hms-cloud token create" } "; what you may see and do follows its scopes."
                    }
                    form method="post" action="/console/login" {
                        label for="token" { "Token" }
                        input id="token" name="token" type="password" autocomplete="off"
                            spellcheck="false" aria-describedby="token-hint" required;
                        p { button class="primary" type="submit" { "Sign in" } }
                    }
                }
            }
        },
    )
}

/// The first page `scopes` open.
pub(super) fn home(scopes: Scopes) -> &'static str {
    if scopes.allows(Scope::Fleet) {
        "/console"
    } else if scopes.allows(Scope::Read) {
        "/console/hospitals"
    } else if scopes.allows(Scope::Empi) {
        "/console/empi"
    } else {
        "/console/hospitals"
    }
}

/// `GET /console/login`: the form; a signed-in browser goes on.
pub async fn form(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    if let Some(id) = hms_web::cookie::get(&headers, COOKIE)
        && let Ok(Some(op)) = operator_of(&state, id).await
    {
        return see_other(home(op.scopes));
    }
    page::respond(login_page(&state, None))
}

/// `POST /console/login`.
pub async fn submit(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !hms_web::cookie::same_origin(&headers) {
        return Refusal::CrossOrigin.into_response();
    }
    let token = form.token.trim().to_owned();
    let now = Timestamp::now().as_millis();
    let (db, t) = (state.registry_db.clone(), token.clone());
    let found = tokio::task::spawn_blocking(move || {
        let op = if t.is_empty() {
            None
        } else {
            db.operator(&t, now)?
        };
        let Some(op) = op else {
            return anyhow::Ok(None);
        };
        db.audit(&AuditEntry {
            at_ms: now,
            actor: &format!("operator:{}", op.name),
            action: "console_sign_in",
            subject: &op.name,
            detail: "",
        })?;
        let id = super::open_session(&db, &t, now)?;
        anyhow::Ok(Some((op, id)))
    })
    .await;
    match found {
        Ok(Ok(Some((op, id)))) => {
            tracing::info!(operator = %op.name, "signed in to the console");
            let mut resp = see_other(home(op.scopes));
            resp.headers_mut().insert(
                header::SET_COOKIE,
                hms_web::cookie::set(COOKIE, &id, state.https),
            );
            resp
        }
        Ok(Ok(None)) => {
            tracing::warn!("console sign-in refused: not a live operator token");
            page::respond_with(
                StatusCode::UNAUTHORIZED,
                login_page(
                    &state,
                    Some(
                        "Not signed in: the token is not valid here, was revoked, or has expired.",
                    ),
                ),
            )
        }
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "console sign-in failed");
            Refusal::Unavailable.into_response()
        }
        Err(_) => Refusal::Unavailable.into_response(),
    }
}

/// `POST /console/logout`: ends the session (if any) and clears the cookie.
pub async fn logout(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    if !hms_web::cookie::same_origin(&headers) {
        return Refusal::CrossOrigin.into_response();
    }
    if let Some(id) = hms_web::cookie::get(&headers, COOKIE) {
        super::close_session(&state, id).await;
    }
    let mut resp = see_other("/console/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        hms_web::cookie::clear(COOKIE, state.https),
    );
    resp
}
