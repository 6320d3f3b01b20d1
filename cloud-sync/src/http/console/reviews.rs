//! The EMPI review queue (`empi` scope):
//!
//! - `GET /console/empi`: the open review tasks, oldest first: the record
//!   (source and local id), the identity it was given, why it needs a
//!   review (`threshold`: its best candidate scored between the review and
//!   link thresholds; `margin`: two identities scored too close) and each
//!   candidate identity with its per-field explanation under the model in
//!   force (level and weight in bits per field, the total). Audited as an
//!   EMPI read (`reviews`, how many) before it is shown, as the API's list.
//! - `POST /console/empi/reviews/{id}` (form: `action` = `link` |
//!   `never_link` with the candidate's `source` and `local_id`, or `close`):
//!   `link` joins the record to the candidate's identity, `never_link`
//!   keeps them apart for good (both as `POST /api/v1/empi/decisions`);
//!   each then closes the task with that resolution; `close` closes it and
//!   leaves the identities as they are. Every step is in the EMPI's audit
//!   with the operator's name. Then the queue again, with a notice.
//!
//! A task that is no longer open is a 404 page; a candidate that is not
//! one of the task's a 400 page; a cloud without the EMPI a 409 page.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hms_domain::Timestamp;
use hms_domain::empi::RecordKey;
use hms_web::page;
use maud::{Markup, html};
use serde_json::Value;

use super::{Operator, blocking, frame, message, problem_page, see_other, text, when};
use crate::empi::RegionalEmpi;
use crate::http::problem;
use crate::state::CloudState;
use crate::store::registry::Scope;

/// Open tasks shown at once (the oldest).
const SHOWN: usize = 50;

/// The page of a cloud that cannot answer: no EMPI here (409), or another
/// instance of the region runs it (503: decisions are taken there, or
/// through the API here, which passes them on).
fn no_empi(state: &CloudState) -> Response {
    match state.empi.state() {
        crate::empi::SlotState::Standby | crate::empi::SlotState::Following(_) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "EMPI on another instance",
            "The regional EMPI runs on another instance of this region. Take the decision in \
             that instance's console, or through the API here (POST /api/v1/empi/decisions), \
             which passes it on.",
        ),
        _ => message(
            StatusCode::CONFLICT,
            "No EMPI",
            "The regional EMPI does not run on this cloud (empi = false, or a DR replica).",
        ),
    }
}

fn key_of(v: &Value) -> RecordKey {
    RecordKey::new(text(&v["source"]), text(&v["local_id"]))
}

/// A comparison level as a reviewer reads it.
fn level(name: &str) -> String {
    match name {
        "null" => "missing on one side".to_owned(),
        "else" => "disagrees".to_owned(),
        other => other.replace('_', " "),
    }
}

fn explanation(e: &hms_domain::empi::model::Explanation) -> Markup {
    html! {
        table class="figures explanation" {
            caption class="visually-hidden" { "Per-field agreement and weight" }
            thead { tr {
                th scope="col" { "Field" } th scope="col" { "Agreement" } th scope="col" class="num" { "Weight (bits)" }
            } }
            tbody {
                @for f in &e.fields {
                    @let field = serde_json::to_value(f.field).ok().map(|v| text(&v)).unwrap_or_default();
                    @let class = if f.weight > 0.0 { "num weight plus" } else if f.weight < 0.0 { "num weight minus" } else { "num weight" };
                    tr {
                        td { (field.replace('_', " ")) }
                        td { (level(&f.level)) @if f.tf_adjusted { " (by frequency)" } }
                        td class=(class) { (format!("{:+.1}", f.weight)) }
                    }
                }
            }
            tfoot {
                @if e.household_cap < 0.0 {
                    tr { td colspan="2" { "household fields capped" } td class="num" { (format!("{:+.1}", e.household_cap)) } }
                }
                tr { th scope="row" colspan="2" { "Total" @if e.swapped_names { " (names swapped)" } } td class="num" { (format!("{:+.1}", e.total)) } }
            }
        }
    }
}

fn review(empi: &RegionalEmpi, r: &Value) -> Markup {
    let id = text(&r["id"]);
    let record = key_of(r);
    let candidates = r["candidates"].as_array().cloned().unwrap_or_default();
    let opened = r["opened_at"]
        .as_i64()
        .map(|ms| Timestamp::from_millis(ms).to_rfc3339());
    let action = format!("/console/empi/reviews/{id}");
    html! {
        article class="review" aria-labelledby={ "review-" (id) } data-review=(id) {
            h2 id={ "review-" (id) } {
                "Review " (id) ": " (text(&r["source"])) " record " (text(&r["local_id"]))
            }
            p {
                "Given identity " strong { (text(&r["eid"])) } ". "
                @match r["reason"].as_str() {
                    Some("margin") => "Two identities scored too close to tell apart",
                    Some("threshold") => "Its best candidate scored between the review and link thresholds",
                    Some("cannot_link") => "It resembles an identity it may not join (one holding another record of its own source, or another trusted identifier)",
                    _ => (text(&r["reason"])),
                }
                @if let Some(s) = r["score"].as_f64() { " (best score " (format!("{s:.1}")) " bits)" }
                "."
                @if let Some(t) = &opened { " Opened " (when(t)) "." }
            }
            @for c in &candidates {
                @let ck = key_of(&c["key"]);
                @let eid = c["eid"].as_u64().map(|e| crate::empi::eid_text(hms_domain::empi::Eid(e))).unwrap_or_else(|| text(&c["eid"]));
                section aria-label={ "Candidate " (eid) } {
                    h3 { "Candidate " (eid) ": " (ck.source) " record " (ck.local_id.expose()) }
                    @match empi.explain(&record, &ck) {
                        Some(e) => (explanation(&e)),
                        None => p { "No explanation: one of the two records is no longer held." },
                    }
                    div class="actions" {
                        @for (act, label) in [("link", "Same person: link"), ("never_link", "Not the same: never link")] {
                            form method="post" action=(action) {
                                input type="hidden" name="action" value=(act);
                                input type="hidden" name="source" value=(ck.source);
                                input type="hidden" name="local_id" value=(ck.local_id.expose());
                                button type="submit" class=(if act == "link" { "primary" } else { "" }) { (label) " " (eid) }
                            }
                        }
                    }
                }
            }
            div class="actions" {
                form method="post" action=(action) {
                    input type="hidden" name="action" value="close";
                    button type="submit" { "Close: keep as they are" }
                }
            }
        }
    }
}

/// `GET /console/empi`.
pub async fn page(
    State(state): State<CloudState>,
    who: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = who.require(Scope::Empi) {
        return r.into_response();
    }
    let Some(empi) = state.empi.reader() else {
        return no_empi(&state);
    };
    let (e, actor) = (empi.clone(), who.actor());
    let open = match blocking(move || {
        let list = e.reviews("open")?;
        e.audit_read(&actor, "reviews", list.len())?;
        Ok(list)
    })
    .await
    {
        Ok(l) => l,
        Err(r) => return r,
    };
    let done = q.get("done").and_then(|d| d.parse::<i64>().ok());
    let main = html! {
        h1 { "EMPI reviews" }
        @if let Some(id) = done {
            p class="notice" role="status" id="done-notice" { "Review " (id) " closed." }
        }
        p { strong id="open-count" { (open.len()) } " open review tasks"
            @if open.len() > SHOWN { ", the oldest " (SHOWN) " shown" } "." }
        @for r in open.iter().take(SHOWN) { (review(&empi, r)) }
    };
    page::respond(frame(
        &state,
        &who,
        "EMPI reviews",
        "/console/empi",
        "empi",
        main,
    ))
}

/// The review form's fields.
#[derive(Debug, serde::Deserialize)]
pub struct ActForm {
    action: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    local_id: String,
}

/// `POST /console/empi/reviews/{id}`.
pub async fn act(
    State(state): State<CloudState>,
    who: Operator,
    Path(id): Path<i64>,
    Form(form): Form<ActForm>,
) -> Response {
    if let Err(r) = who.require(Scope::Empi) {
        return r.into_response();
    }
    let Some(empi) = state.empi.get() else {
        return no_empi(&state);
    };
    if !["link", "never_link", "close"].contains(&form.action.as_str()) {
        return message(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "action is link, never_link or close",
        );
    }
    let e = empi.clone();
    let task = match blocking(move || {
        Ok(e.reviews("open")?
            .into_iter()
            .find(|r| r["id"].as_i64() == Some(id)))
    })
    .await
    {
        Ok(Some(t)) => t,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("No open review {id}: it may have been closed already."),
            );
        }
        Err(r) => return r,
    };
    let actor = who.actor();
    let resolution = if form.action == "close" {
        "closed: kept as they are".to_owned()
    } else {
        let candidate = task["candidates"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| {
                    text(&c["key"]["source"]) == form.source
                        && text(&c["key"]["local_id"]) == form.local_id
                })
                .cloned()
        });
        let Some(c) = candidate else {
            return message(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The record named is not a candidate of this review.",
            );
        };
        let (e, a, b, act, who_) = (
            empi.clone(),
            key_of(&task),
            key_of(&c["key"]),
            form.action.clone(),
            actor.clone(),
        );
        match tokio::task::spawn_blocking(move || e.decide(&a, &b, &act, &who_)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return problem_page(&problem::decision(err)),
            Err(_) => return super::unavailable(),
        }
        let eid = c["eid"]
            .as_u64()
            .map(|e| crate::empi::eid_text(hms_domain::empi::Eid(e)))
            .unwrap_or_default();
        format!("{} {eid}", form.action)
    };
    let e = empi.clone();
    match blocking(move || e.close_review(id, &actor, &resolution)).await {
        Ok(_) => {
            tracing::info!(operator = %who.name, review = id, action = %form.action, "EMPI review acted on from the console");
            see_other(&format!("/console/empi?done={id}"))
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Where no EMPI runs, the page says so (409); where another instance
    /// of the region runs it, it says where decisions are taken (503).
    #[tokio::test]
    async fn a_cloud_without_the_empi_says_why_and_where_it_is() {
        let mut state = crate::testkit::Cloud::primary("eu-west", &[]).state;
        let (status, page) = text(no_empi(&state)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(page.contains("does not run on this cloud"), "{page}");
        state.empi = std::sync::Arc::new(crate::empi::Slot::standing_by());
        let (status, page) = text(no_empi(&state)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            page.contains("runs on another instance of this region"),
            "{page}"
        );
        assert!(page.contains("/api/v1/empi/decisions"), "{page}");
    }
}
