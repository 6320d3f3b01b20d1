//! `GET /login`, `POST /login`, `POST /logout`.
//!
//! `POST /login` takes a form with `token` (a bearer token) or `code` (a
//! kiosk's one-time sign-in code from `hms-edge kiosk pair`), opens a
//! session and answers `303 /` with the session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` under HTTPS). A refused sign-in shows the
//! form again with `401`. `POST /logout` ends the session and clears the
//! cookie. Both refuse posts from other origins (no sign-in or sign-out
//! forced on a kiosk by another site).

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hms_web::page::{self, Shell};
use maud::{Markup, html};
use serde::Deserialize;

use super::{APP, COOKIE, Refusal, see_other, session_principal};
use crate::api::AppState;
use crate::metrics::ReasonLabels;

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

fn login_page(state: &AppState, error: Option<&str>) -> Markup {
    let shell = Shell {
        app: APP,
        site: &state.settings.hospital_name,
        title: "Sign in",
        nav: &[],
        user: None,
        page: "login",
        logout: "/logout",
    };
    page::document(
        &shell,
        html! {
            div class="signin" {
                h1 { "Sign in" }
                @if let Some(e) = error {
                    p class="notice error" role="alert" id="login-error" { (e) }
                }
                section aria-labelledby="with-code" {
                    h2 id="with-code" { "Kiosk sign-in code" }
                    p class="hint" id="code-hint" {
                        "A code from your IT team (" code { "hms-edge kiosk pair" } "), valid 10 minutes, used once."
                    }
                    form method="post" action="/login" {
                        label for="code" { "Sign-in code" }
                        input id="code" name="code" type="text" autocomplete="off"
                            autocapitalize="characters" spellcheck="false"
                            aria-describedby="code-hint" required;
                        p { button class="primary" type="submit" { "Sign in with code" } }
                    }
                }
                section aria-labelledby="with-token" {
                    h2 id="with-token" { "Access token" }
                    form method="post" action="/login" {
                        label for="token" { "Token" }
                        input id="token" name="token" type="password" autocomplete="off"
                            spellcheck="false" required;
                        p { button class="primary" type="submit" { "Sign in with token" } }
                    }
                }
            }
        },
    )
}

/// `GET /login`: the form; a signed-in browser goes to `/`.
pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = hms_web::cookie::get(&headers, COOKIE)
        && let Ok(Some(_)) = session_principal(&state, id).await
    {
        return see_other("/");
    }
    page::respond(login_page(&state, None))
}

/// `POST /login`.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !hms_web::cookie::same_origin(&headers) {
        return Refusal::CrossOrigin.into_response();
    }
    let token = form.token.filter(|t| !t.trim().is_empty());
    let code = form.code.filter(|c| !c.trim().is_empty());
    let tokens = state.tokens.clone();
    let outcome = tokio::task::spawn_blocking(move || match (token, code) {
        (Some(t), _) => tokens.sign_in(&t),
        (None, Some(c)) => tokens.sign_in_with_code(&c),
        (None, None) => Ok(None),
    })
    .await;
    match outcome {
        Ok(Ok(Some((session, principal)))) => {
            tracing::info!(token = %principal.name, role = principal.role.as_str(), "signed in to the pages");
            let mut resp = see_other("/");
            resp.headers_mut().insert(
                header::SET_COOKIE,
                hms_web::cookie::set(COOKIE, &session, state.settings.https),
            );
            resp
        }
        Ok(Ok(None)) => {
            state
                .metrics
                .auth_failures
                .get_or_create(&ReasonLabels { reason: "invalid" })
                .inc();
            page::respond_with(
                StatusCode::UNAUTHORIZED,
                login_page(
                    &state,
                    Some(
                        "Not signed in: the token or code is not valid, has expired, or was already used.",
                    ),
                ),
            )
        }
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "sign-in failed");
            Refusal::Unavailable.into_response()
        }
        Err(_) => Refusal::Unavailable.into_response(),
    }
}

/// `POST /logout`: ends the session (if any) and clears the cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !hms_web::cookie::same_origin(&headers) {
        return Refusal::CrossOrigin.into_response();
    }
    if let Some(id) = hms_web::cookie::get(&headers, COOKIE) {
        let (tokens, id) = (state.tokens.clone(), id.to_owned());
        let ended = tokio::task::spawn_blocking(move || tokens.sign_out(&id)).await;
        if !matches!(ended, Ok(Ok(()))) {
            return Refusal::Unavailable.into_response();
        }
    }
    let mut resp = see_other("/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        hms_web::cookie::clear(COOKIE, state.settings.https),
    );
    resp
}
