//! `/admin` (admin role): the appliance's health by component, the parked
//! HL7 messages with replay, and the API tokens with revocation.
//!
//! Every action is a form posted to this page's own paths, through the same
//! store and token operations as the API and the CLI: replaying goes
//! through the writer (`POST /admin/parked/{seq}/replay`,
//! `POST /admin/parked/replay`), revoking through `auth.sqlite`
//! (`POST /admin/tokens/revoke`, recorded as `audit.token_revoked` with the
//! actor `web:NAME`). The answer is the page again with what happened.

use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hms_web::page;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{Signed, frame, may, message};
use crate::api::{AppState, Segment, health_report};
use crate::auth::Role;
use crate::store::credentials::{Revocation, TokenRow};

fn refuse(who: &Signed) -> Option<Response> {
    (!may(&who.principal, Role::Admin)).then(|| {
        message(
            StatusCode::FORBIDDEN,
            "Not allowed",
            "The administration page needs the admin role.",
        )
    })
}

/// A JSON value as text for the health table (objects and arrays compact).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        // A list of named parts (the models): `name: state (reason)` each.
        Value::Array(items) => items
            .iter()
            .map(|i| match (i.get("name"), i.get("state")) {
                (Some(n), Some(s)) => {
                    let why = i
                        .get("reason")
                        .filter(|r| !r.is_null())
                        .map(|r| format!(" ({})", text(r).replace('_', " ")))
                        .unwrap_or_default();
                    format!("{}: {}{why}", text(n), text(s))
                }
                _ => text(i),
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

fn health(state: &AppState) -> Markup {
    let (_, report) = health_report(state);
    let empty = serde_json::Map::new();
    let components = report["components"].as_object().unwrap_or(&empty);
    html! {
        section aria-labelledby="health" {
            h2 id="health" { "Health: " span data-health=(text(&report["status"])) { (text(&report["status"])) } }
            table {
                thead { tr { th scope="col" { "Component" } th scope="col" { "Status" } th scope="col" { "Details" } } }
                tbody {
                    @for (name, c) in components {
                        tr data-component=(name) {
                            th scope="row" { (name) }
                            td { (text(&c["status"])) }
                            td {
                                @if let Some(fields) = c.as_object() {
                                    dl class="details" {
                                        @for (k, v) in fields.iter().filter(|(k, _)| *k != "status") {
                                            @if let Some(inner) = v.as_object() {
                                                @for (k2, v2) in inner {
                                                    dt { (k) "." (k2) } dd { (text(v2)) }
                                                }
                                            } @else {
                                                dt { (k) } dd { (text(v)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn parked(state: &AppState) -> Markup {
    let rows = state.store.parked().await;
    html! {
        section aria-labelledby="parked" {
            h2 id="parked" { "Parked HL7 messages" }
            @match rows {
                Err(_) => { p class="notice error" { "The parked queue could not be read." } },
                Ok(rows) if rows.is_empty() => { p { "None: every message received was applied." } },
                Ok(rows) => {
                    p class="hint" { "Messages answered AE and kept. Fix the cause (usually the configuration), then replay." }
                    form method="post" action="/admin/parked/replay" {
                        button type="submit" { "Replay all " (rows.len()) }
                    }
                    table {
                        thead {
                            tr {
                                th scope="col" { "Seq" } th scope="col" { "Type" } th scope="col" { "Sender" }
                                th scope="col" { "Control id" } th scope="col" { "Why" } th scope="col" { "Parked" }
                                th scope="col" { span class="visually-hidden" { "Action" } }
                            }
                        }
                        tbody {
                            @for r in &rows {
                                tr data-parked=(r.seq) {
                                    td { (r.seq) }
                                    td { (r.message_type) }
                                    td { (r.sending_app) " / " (r.sending_facility) }
                                    td { (r.control_id) }
                                    td { (r.reason) }
                                    td { (hms_domain::time::rfc3339_seconds(r.parked_at.as_millis())) }
                                    td {
                                        form method="post" action={ "/admin/parked/" (r.seq) "/replay" } {
                                            button type="submit" aria-label={ "Replay message " (r.seq) } { "Replay" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

fn tokens(state: &AppState) -> Markup {
    let rows: Result<Vec<TokenRow>, _> = state.tokens.list();
    let now = hms_domain::Timestamp::now().as_millis();
    let when =
        |ms: Option<i64>| ms.map_or_else(|| "—".to_owned(), hms_domain::time::rfc3339_seconds);
    html! {
        section aria-labelledby="tokens" {
            h2 id="tokens" { "Tokens" }
            p class="hint" { "Create tokens and kiosk codes on the appliance: " code { "hms-edge token create" } ", " code { "hms-edge kiosk pair" } "." }
            @match rows {
                Err(_) => { p class="notice error" { "The tokens could not be read." } },
                Ok(rows) => {
                    table {
                        thead {
                            tr {
                                th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" }
                                th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Status" }
                                th scope="col" { span class="visually-hidden" { "Action" } }
                            }
                        }
                        tbody {
                            @for r in rows.iter().filter(|r| r.revoked_ms.is_none()) {
                                @let status = hms_domain::time::credential_status(r.revoked_ms, r.expires_ms, now);
                                tr data-token=(r.name) {
                                    th scope="row" { (r.name) }
                                    td { (r.role.replace('_', " ")) }
                                    td { (hms_domain::time::rfc3339_seconds(r.created_ms)) }
                                    td { (r.expires_ms.map_or_else(|| "never".to_owned(), hms_domain::time::rfc3339_seconds)) }
                                    td { (when(r.last_used_ms)) }
                                    td { (status) }
                                    td {
                                        form method="post" action="/admin/tokens/revoke" {
                                            input type="hidden" name="name" value=(r.name);
                                            button type="submit" aria-label={ "Revoke token " (r.name) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

async fn render(state: &AppState, who: &Signed, notice: Option<(bool, String)>) -> Response {
    let body = html! {
        h1 { "Administration" }
        @if let Some((ok, text)) = notice {
            p.notice.error[!ok] role="status" id="admin-notice" { (text) }
        }
        (health(state))
        (parked(state).await)
        (tokens(state))
    };
    page::respond(frame(state, who, "Administration", "/admin", "admin", body))
}

/// `GET /admin`.
pub async fn page(State(state): State<AppState>, who: Signed) -> Response {
    if let Some(r) = refuse(&who) {
        return r;
    }
    render(&state, &who, None).await
}

fn replayed(r: &crate::store::Replayed) -> String {
    match &r.reason {
        Some(why) => format!("Message {}: still parked ({why}).", r.seq),
        None => format!("Message {}: {}.", r.seq, r.status),
    }
}

/// `POST /admin/parked/{seq}/replay`.
pub async fn replay_one(
    State(state): State<AppState>,
    who: Signed,
    Segment(seq): Segment,
) -> Response {
    if let Some(r) = refuse(&who) {
        return r;
    }
    let notice = match seq.parse::<u64>() {
        Err(_) => (false, "No such parked message.".to_owned()),
        Ok(n) => match state.store.replay(n).await {
            Ok(Some(r)) => (r.reason.is_none(), replayed(&r)),
            Ok(None) => (false, format!("Message {n} is not parked (any more).")),
            Err(_) => (
                false,
                "The store could not replay it; nothing was changed.".to_owned(),
            ),
        },
    };
    render(&state, &who, Some(notice)).await
}

/// `POST /admin/parked/replay`: every parked message, oldest first.
pub async fn replay_all(State(state): State<AppState>, who: Signed) -> Response {
    if let Some(r) = refuse(&who) {
        return r;
    }
    let notice = match state.store.parked().await {
        Err(_) => (false, "The parked queue could not be read.".to_owned()),
        Ok(rows) => {
            let (mut applied, mut still, mut failed) = (0, 0, 0);
            for row in rows {
                match state.store.replay(row.seq).await {
                    Ok(Some(r)) if r.reason.is_none() => applied += 1,
                    Ok(Some(_)) => still += 1,
                    Ok(None) => {}
                    Err(_) => failed += 1,
                }
            }
            (
                still == 0 && failed == 0,
                format!(
                    "Replayed: {applied} applied, {still} still parked, {failed} not replayed."
                ),
            )
        }
    };
    render(&state, &who, Some(notice)).await
}

/// The revocation form.
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    name: String,
}

/// `POST /admin/tokens/revoke` (form: `name`).
pub async fn revoke(
    State(state): State<AppState>,
    who: Signed,
    Form(f): Form<RevokeForm>,
) -> Response {
    if let Some(r) = refuse(&who) {
        return r;
    }
    let (tokens, name, by) = (
        state.tokens.clone(),
        f.name.clone(),
        format!("web:{}", who.principal.name),
    );
    let done = tokio::task::spawn_blocking(move || {
        let r = tokens.revoke(&name, &by);
        // Take effect here at once, not at the next poll.
        let _ = tokens.refresh();
        r
    })
    .await;
    let notice = match done {
        Ok(Ok(Revocation::Revoked(_))) => (
            true,
            format!(
                "Token {:?} revoked: its sessions and streams end now.",
                f.name
            ),
        ),
        Ok(Ok(Revocation::AlreadyRevoked)) => {
            (true, format!("Token {:?} was already revoked.", f.name))
        }
        Ok(Ok(Revocation::Unknown)) => (false, format!("No token is named {:?}.", f.name)),
        _ => (false, "The token store could not be changed.".to_owned()),
    };
    if f.name == who.principal.name {
        // Revoked one's own token: this session has ended.
        return super::see_other("/login");
    }
    render(&state, &who, Some(notice)).await
}
