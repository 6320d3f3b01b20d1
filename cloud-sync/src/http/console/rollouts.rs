//! The rollouts' pages (`fleet` scope), from the same registry as
//! `GET /api/v1/fleet/rollouts`:
//!
//! - `GET /console/rollouts`: every rollout since the cloud started, newest
//!   first: the bundle (kind, version), its state (canary, running,
//!   succeeded, failed and which node), who started it and when;
//! - `GET /console/rollouts/{id}`: one, wave by wave, each node with its
//!   state and, when it failed, why. Both refresh themselves every 5 s
//!   while a rollout runs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hms_web::page;
use maud::{Markup, html};
use serde_json::Value;

use super::{Operator, frame, message, text, when};
use crate::state::CloudState;
use crate::store::registry::Scope;

fn state_cell(r: &Value) -> Markup {
    let st = text(&r["state"]);
    html! {
        span class={ "state " (match st.as_str() { "succeeded" => "online", "failed" => "offline", _ => "unknown" }) }
            data-rollout-state=(st) { (st) }
        @if st == "failed" {
            " at " (text(&r["failed"]["hospital"])) " / " (text(&r["failed"]["node"]))
        }
    }
}

fn list_markup(rollouts: &[Value]) -> Markup {
    let running = rollouts
        .iter()
        .any(|r| r["state"] == "canary" || r["state"] == "running");
    html! {
        section id="rollouts" data-refresh=[running.then_some("/console/rollouts?part=list")] {
            @if rollouts.is_empty() {
                p { "No rollout since the cloud started. Start one with " code { "POST /api/v1/fleet/rollouts" } "." }
            } @else {
                table {
                    caption class="visually-hidden" { "Rollouts, newest first" }
                    thead { tr {
                        th scope="col" { "Rollout" } th scope="col" { "Bundle" } th scope="col" { "State" }
                        th scope="col" { "Nodes" } th scope="col" { "Started" } th scope="col" { "By" }
                    } }
                    tbody {
                        @for r in rollouts {
                            @let nodes: usize = r["waves"].as_array().map_or(0, |w| w.iter().filter_map(Value::as_array).map(Vec::len).sum());
                            tr data-rollout=(text(&r["id"])) {
                                td { a href={ "/console/rollouts/" (text(&r["id"])) } { "Rollout " (text(&r["id"])) } }
                                td { (text(&r["bundle"]["kind"]).replace('_', " ")) " version " (text(&r["bundle"]["version"])) }
                                td { (state_cell(r)) }
                                td class="num" { (nodes) }
                                td { @match r["created_at"].as_str() { Some(t) => (when(t)), None => "—" } }
                                td { (text(&r["by"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/rollouts` (`?part=list`: the table alone).
pub async fn list(
    State(state): State<CloudState>,
    who: Operator,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = who.require(Scope::Fleet) {
        return r.into_response();
    }
    let all: Vec<Value> = state
        .rollouts
        .list()
        .iter()
        .map(crate::rollout::Rollout::json)
        .collect();
    if q.get("part").map(String::as_str) == Some("list") {
        return page::respond(list_markup(&all));
    }
    let main = html! {
        h1 { "Rollouts" }
        p class="hint" {
            "A signed bundle goes to a canary first, then to the rest in waves; each appliance must report it in force and stay so for the rollout's wait before the next wave. The first failure stops the rollout."
        }
        (list_markup(&all))
    };
    page::respond(frame(
        &state,
        &who,
        "Rollouts",
        "/console/rollouts",
        "rollouts",
        main,
    ))
}

fn detail_markup(r: &Value) -> Markup {
    let running = r["state"] == "canary" || r["state"] == "running";
    let id = text(&r["id"]);
    html! {
        section id="rollout" data-refresh=[running.then(|| format!("/console/rollouts/{id}?part=detail"))] {
            dl class="details" {
                dt { "State" } dd { (state_cell(r)) }
                @if r["state"] == "failed" {
                    dt { "Why" } dd id="rollout-reason" { (text(&r["failed"]["reason"])) }
                }
                dt { "Bundle" } dd { (text(&r["bundle"]["kind"]).replace('_', " ")) " version " (text(&r["bundle"]["version"])) }
                dt { "SHA-256" } dd { code { (text(&r["bundle"]["sha256"])) } }
                dt { "Healthy for" } dd { (text(&r["wait_s"])) " s before the next wave" }
                dt { "Started" } dd { @match r["created_at"].as_str() { Some(t) => (when(t)), None => "—" } " by " (text(&r["by"])) }
                @if let Some(t) = r["ended_at"].as_str() { dt { "Ended" } dd { (when(t)) } }
            }
            @for (i, wave) in r["waves"].as_array().into_iter().flatten().enumerate() {
                h2 { @if i == 0 { "Canary" } @else { "Wave " (i) } }
                table {
                    caption class="visually-hidden" { @if i == 0 { "Canary" } @else { "Wave " (i) } }
                    thead { tr { th scope="col" { "Appliance" } th scope="col" { "State" } th scope="col" { "Command" } th scope="col" { "Why" } } }
                    tbody {
                        @for n in wave.as_array().into_iter().flatten() {
                            tr data-node={ (text(&n["hospital"])) "/" (text(&n["node"])) } data-state=(text(&n["state"])) {
                                td { a href={ "/console/nodes/" (text(&n["hospital"])) "/" (text(&n["node"])) } { (text(&n["hospital"])) " / " (text(&n["node"])) } }
                                td { (text(&n["state"])) }
                                td class="num" { (text(&n["command"])) }
                                td { (text(&n["reason"])) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/rollouts/{id}` (`?part=detail`: the detail alone).
pub async fn one(
    State(state): State<CloudState>,
    who: Operator,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(r) = who.require(Scope::Fleet) {
        return r.into_response();
    }
    let Some(r) = id.parse::<u64>().ok().and_then(|i| state.rollouts.get(i)) else {
        return message(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No rollout {id} on this cloud since it started."),
        );
    };
    let r = r.json();
    if q.get("part").map(String::as_str) == Some("detail") {
        return page::respond(detail_markup(&r));
    }
    let title = format!("Rollout {id}");
    let main = html! {
        p { a href="/console/rollouts" { "← Rollouts" } }
        h1 { (title) }
        (detail_markup(&r))
    };
    page::respond(frame(
        &state,
        &who,
        &title,
        "/console/rollouts",
        "rollout",
        main,
    ))
}
