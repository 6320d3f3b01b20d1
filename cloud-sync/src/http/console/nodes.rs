//! The fleet pages (`fleet` scope), from the same registry as
//! `GET /api/v1/fleet`:
//!
//! - `GET /console?state=&sort=&dir=`: every appliance with its state
//!   (online, offline, unknown: enrolled but never heard from on MQTT), sync
//!   lag, version, model set, configuration version, last seen and health;
//!   counts by state; filtered by `state` (`all`, `online`, `offline`,
//!   `unknown`) and sorted by `sort` (`node`, `state`, `lag`, `version`,
//!   `last_seen`) in `dir` (`asc`, `desc`), each a link in the column head.
//!   The table refreshes itself every 5 s from `GET /console/fleet-table`
//!   (the same query; the table alone);
//! - `GET /console/nodes/{hospital}/{node}`: the appliance's status,
//!   sparklines of its sync lag and ADT rate over the last hours (one point
//!   per telemetry message), its latest telemetry, and the commands sent to
//!   it since the cloud started, each with its result as it arrives (the
//!   list refreshes itself from `GET …/commands`);
//! - `POST /console/nodes/{hospital}/{node}/commands` (form: `command`
//!   `ping` | `sync_now` | `revoke_token`, `name` for `revoke_token`): sends
//!   a signed command exactly as `POST /api/v1/fleet/commands` does
//!   (audited as the operator), then shows the node page again.
//!
//! A bad query value is a 400 page; an appliance neither enrolled nor
//! heard from a 404 page; a cloud without `[fleet]` a 409 page.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hms_domain::{HospitalId, NodeId, Timestamp};
use hms_web::{chart, page};
use maud::{Markup, html};
use serde_json::Value;

use super::{Notice, Operator, frame, message, problem_page, see_other, text, when};
use crate::fleet::{Channel, Command, Outcome};
use crate::http::fleet::dispatch;
use crate::state::CloudState;
use crate::store::registry::Scope;

/// Commands listed on a node's page.
const COMMANDS_SHOWN: usize = 20;

/// An appliance's state as the console names it.
fn state_of(row: &Value) -> &'static str {
    match row["online"].as_bool() {
        Some(true) => "online",
        Some(false) => "offline",
        None => "unknown",
    }
}

/// The table's query: filter, sort key and direction.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    state: &'static str,
    sort: &'static str,
    desc: bool,
}

const STATES: [&str; 4] = ["all", "online", "offline", "unknown"];
const SORTS: [(&str, &str); 5] = [
    ("node", "Appliance"),
    ("state", "State"),
    ("lag", "Sync lag"),
    ("version", "Version"),
    ("last_seen", "Last seen"),
];

impl View {
    fn parse(q: &HashMap<String, String>) -> Result<View, String> {
        for k in q.keys() {
            if !["state", "sort", "dir"].contains(&k.as_str()) {
                return Err(format!("unknown query parameter {k:?}"));
            }
        }
        let pick = |key: &str, allowed: &[&'static str], default: &'static str| match q.get(key) {
            None => Ok(default),
            Some(v) => allowed
                .iter()
                .find(|a| **a == v.as_str())
                .copied()
                .ok_or_else(|| format!("{key} is one of {}", allowed.join(", "))),
        };
        let sorts: Vec<&'static str> = SORTS.iter().map(|s| s.0).collect();
        Ok(View {
            state: pick("state", &STATES, "all")?,
            sort: pick("sort", &sorts, "node")?,
            desc: pick("dir", &["asc", "desc"], "asc")? == "desc",
        })
    }

    fn query(&self, sort: &str, desc: bool) -> String {
        format!(
            "state={}&sort={sort}&dir={}",
            self.state,
            if desc { "desc" } else { "asc" }
        )
    }

    /// Orders `a` before `b` by this view's key (unknown lags last either way).
    fn cmp(&self, a: &Value, b: &Value) -> Ordering {
        let key = |r: &Value| format!("{}/{}", text(&r["hospital"]), text(&r["node"]));
        let by = match self.sort {
            "state" => state_of(a).cmp(state_of(b)),
            "lag" => {
                let (x, y) = (a["lag_seconds"].as_f64(), b["lag_seconds"].as_f64());
                match (x, y) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    (Some(_), None) => return Ordering::Less,
                    (None, Some(_)) => return Ordering::Greater,
                    (None, None) => Ordering::Equal,
                }
            }
            "version" => text(&a["version"]).cmp(&text(&b["version"])),
            "last_seen" => text(&a["last_seen"]).cmp(&text(&b["last_seen"])),
            _ => Ordering::Equal,
        };
        let by = if self.desc { by.reverse() } else { by };
        by.then_with(|| key(a).cmp(&key(b)))
    }
}

/// The fleet channel for `who` (with the `fleet` scope), or the 403 page,
/// or the 409 page of a cloud without one.
fn channel(state: &CloudState, who: &Operator) -> Result<Channel, Notice> {
    who.require(Scope::Fleet)?;
    state.fleet.clone().ok_or_else(|| {
        Notice::new(
            StatusCode::CONFLICT,
            "No fleet channel",
            "This cloud has no [fleet] section: it is not connected to the fleet's MQTT broker.",
        )
    })
}

fn lag(row: &Value) -> String {
    match row["lag_seconds"].as_f64() {
        Some(s) => format!("{s:.0} s"),
        None => "—".to_owned(),
    }
}

fn health(row: &Value) -> String {
    text(&row["health"]["status"])
}

fn node_href(row: &Value) -> String {
    format!(
        "/console/nodes/{}/{}",
        text(&row["hospital"]),
        text(&row["node"])
    )
}

/// The table (with the counts): the part the page refreshes.
fn fleet_table(channel: &Channel, state: &CloudState, view: &View) -> Markup {
    let all = channel.fleet.nodes(&state.registry.hospitals());
    let count = |s: &str| all.iter().filter(|r| state_of(r) == s).count();
    let mut rows: Vec<&Value> = all
        .iter()
        .filter(|r| view.state == "all" || state_of(r) == view.state)
        .collect();
    rows.sort_by(|a, b| view.cmp(a, b));
    let refresh = format!("/console/fleet-table?{}", view.query(view.sort, view.desc));
    html! {
        section id="fleet-table" data-refresh=(refresh) aria-labelledby="fleet-caption" {
            ul class="summary" {
                li { strong { (count("online")) } span class="state online" { "online" } }
                li { strong { (count("offline")) } span class="state offline" { "offline" } }
                li { strong { (count("unknown")) } span class="state unknown" { "unknown" } }
                li { "Broker: "
                    @if channel.link.connected() { strong class="broker" { "connected" } }
                    @else { strong class="broker risk" { "disconnected" } }
                }
            }
            table {
                caption id="fleet-caption" class="visually-hidden" {
                    "Appliances, " (rows.len()) " shown"
                }
                thead { tr {
                    @for (key, label) in SORTS {
                        @let current = view.sort == key;
                        @let next_desc = current && !view.desc;
                        @let href = format!("/console?{}", view.query(key, next_desc));
                        @if current {
                            th scope="col" aria-sort=(if view.desc { "descending" } else { "ascending" }) {
                                a href=(href) data-key={ "sort-" (key) } { (label) " " span aria-hidden="true" { (if view.desc { "▼" } else { "▲" }) } }
                            }
                        } @else {
                            th scope="col" { a href=(href) data-key={ "sort-" (key) } { (label) } }
                        }
                    }
                    th scope="col" { "Model set" }
                    th scope="col" { "Config" }
                    th scope="col" { "Health" }
                } }
                tbody {
                    @if rows.is_empty() {
                        tr { td colspan="8" { "No appliance in this view." } }
                    }
                    @for r in &rows {
                        @let st = state_of(r);
                        tr data-node={ (text(&r["hospital"])) "/" (text(&r["node"])) } data-state=(st) {
                            td { a href=(node_href(r)) data-key={ "node-" (text(&r["hospital"])) "/" (text(&r["node"])) } {
                                (text(&r["hospital"])) " / " (text(&r["node"])) } }
                            td { span class={ "state " (st) } { (st) } }
                            td class="num" { (lag(r)) }
                            td { (text(&r["version"])) }
                            td { @match r["last_seen"].as_str() { Some(t) => (when(t)), None => "never" } }
                            td { (text(&r["model_set"])) }
                            td { (text(&r["config_version"])) }
                            td { (health(r)) }
                        }
                    }
                }
            }
        }
    }
}

fn bad_query(detail: &str) -> Response {
    message(StatusCode::BAD_REQUEST, "Bad request", detail)
}

/// `GET /console`.
pub async fn page(
    State(state): State<CloudState>,
    who: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let channel = match channel(&state, &who) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let view = match View::parse(&q) {
        Ok(v) => v,
        Err(d) => return bad_query(&d),
    };
    let main = html! {
        h1 { "Fleet of " (channel.fleet.region()) }
        form class="filter" method="get" action="/console" {
            div {
                label for="state" { "Show" }
                select id="state" name="state" {
                    @for s in STATES {
                        option value=(s) selected[view.state == s] {
                            (if s == "all" { "every appliance" } else { s })
                        }
                    }
                }
            }
            input type="hidden" name="sort" value=(view.sort);
            input type="hidden" name="dir" value=(if view.desc { "desc" } else { "asc" });
            button type="submit" { "Apply" }
        }
        (fleet_table(&channel, &state, &view))
        p class="hint" { "The table refreshes itself every 5 seconds. Unknown: enrolled for sync but never heard from on MQTT." }
    };
    page::respond(frame(&state, &who, "Fleet", "/console", "fleet", main))
}

/// `GET /console/fleet-table`: the table alone.
pub async fn table(
    State(state): State<CloudState>,
    who: Operator,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let channel = match channel(&state, &who) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match View::parse(&q) {
        Ok(view) => page::respond(fleet_table(&channel, &state, &view)),
        Err(d) => bad_query(&d),
    }
}

/// The fleet channel and the appliance of the path for `who`, or the
/// page that refuses (403, 409, 404).
fn appliance(
    state: &CloudState,
    who: &Operator,
    hospital: &str,
    node: &str,
) -> Result<(Channel, HospitalId, NodeId), Notice> {
    let channel = channel(state, who)?;
    let (h, n) = target(hospital, node)?;
    Ok((channel, h, n))
}

/// The appliance of the path, or the 404 page.
fn target(hospital: &str, node: &str) -> Result<(HospitalId, NodeId), Notice> {
    match (hospital.parse::<HospitalId>(), node.parse::<NodeId>()) {
        (Ok(h), Ok(n)) => Ok((h, n)),
        _ => Err(not_found(hospital, node)),
    }
}

fn not_found(hospital: &str, node: &str) -> Notice {
    Notice::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!(
            "No appliance {hospital}/{node} in the fleet: neither enrolled here nor heard from on MQTT."
        ),
    )
}

fn outcome_cells(outcome: &Outcome, now_ms: i64) -> Markup {
    match outcome {
        Outcome::Pending(s) => {
            let status = if now_ms >= s.expires_ms {
                "no_answer"
            } else {
                "pending"
            };
            html! {
                td { (s.command) }
                td { (when(&Timestamp::from_millis(s.sent_ms).to_rfc3339())) }
                td data-status=(status) { (status.replace('_', " ")) }
                td { "by " (s.by) }
            }
        }
        Outcome::Answered { at_ms, result } => {
            let status = text(&result["status"]);
            let detail = if result["status"] == "done" {
                text(&result["result"])
            } else {
                text(&result["reason"])
            };
            html! {
                td { (text(&result["command"])) }
                td { "answered " (when(&Timestamp::from_millis(*at_ms).to_rfc3339())) }
                td data-status=(status) { (status) }
                td { code { (detail) } }
            }
        }
    }
}

/// The commands list: the part of a node's page that refreshes.
fn commands_list(channel: &Channel, h: &HospitalId, n: &NodeId) -> Markup {
    let list = channel.fleet.commands(h, n, COMMANDS_SHOWN);
    let now = Timestamp::now().as_millis();
    html! {
        div id="commands" data-refresh={ "/console/nodes/" (h) "/" (n) "/commands" } {
            @if list.is_empty() {
                p { "No command sent to this appliance since the cloud started." }
            } @else {
                table class="commands-sent" {
                    caption class="visually-hidden" { "Commands sent, newest first" }
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Command" } th scope="col" { "When" }
                        th scope="col" { "Status" } th scope="col" { "Result" }
                    } }
                    tbody {
                        @for (id, outcome) in &list {
                            tr data-command=(id) {
                                td class="num" { (id) }
                                (outcome_cells(outcome, now))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn status_panel(row: &Value) -> Markup {
    let status = &row["status"];
    let st = state_of(row);
    let uptime = status["uptime_s"]
        .as_u64()
        .map(|s| format!("{} h {} min", s / 3600, (s % 3600) / 60))
        .unwrap_or_else(|| "—".to_owned());
    let components: Vec<(String, String)> = status["health"]["components"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    html! {
        section class="panel" aria-labelledby="status-h" {
            h2 id="status-h" { "Status" }
            dl class="details" {
                dt { "State" } dd { span class={ "state " (st) } id="node-state" { (st) } }
                dt { "Last seen" } dd { @match row["last_seen"].as_str() { Some(t) => (when(t)), None => "never" } }
                dt { "Version" } dd { (text(&row["version"])) " (build " (text(&status["build"])) ")" }
                dt { "Uptime" } dd { (uptime) }
                dt { "Acknowledged seq" } dd { (text(&row["acked_seq"])) }
                dt { "Local seq" } dd { (text(&row["local_seq"])) }
                dt { "Sync lag" } dd { (lag(row)) }
                dt { "Outbox" } dd { (text(&status["outbox_bytes"])) " bytes" }
                dt { "Model set" } dd { (text(&row["model_set"])) }
                dt { "Configuration" } dd { (text(&row["config_version"])) }
                dt { "Health" } dd { (health(row)) }
            }
            @if !components.is_empty() {
                table class="figures" {
                    caption class="visually-hidden" { "Health by component" }
                    thead { tr { th scope="col" { "Component" } th scope="col" { "Health" } } }
                    tbody { @for (k, v) in &components { tr { td { (k) } td { (v) } } } }
                }
            }
        }
    }
}

fn telemetry_panel(row: &Value, samples: &[crate::fleet::Sample]) -> Markup {
    let lags: Vec<f64> = samples.iter().filter_map(|s| s.lag_seconds).collect();
    let rates: Vec<f64> = samples.iter().filter_map(|s| s.adt_per_min).collect();
    let since = samples
        .first()
        .map(|s| Timestamp::from_millis(s.at_ms).to_rfc3339());
    let last = row["telemetry"]
        .as_array()
        .and_then(|t| t.last())
        .cloned()
        .unwrap_or(Value::Null);
    let census: Vec<(String, String)> = last["census"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.replace('_', " "), text(v)))
                .collect()
        })
        .unwrap_or_default();
    let mb = |v: &Value| {
        v.as_f64()
            .map(|b| format!("{:.0} MB", b / 1e6))
            .unwrap_or_else(|| "—".to_owned())
    };
    html! {
        section class="panel" aria-labelledby="trend-h" {
            h2 id="trend-h" { "Over the last hours" }
            p class="hint" {
                (samples.len()) (if samples.len() == 1 { " telemetry report" } else { " telemetry reports" })
                @if let Some(t) = &since { " since " (when(t)) }
                "."
            }
            h3 { "Sync lag" }
            div class="spark-row" {
                (chart::sparkline("Sync lag", &lags, "s"))
                span class="last" { @match lags.last() { Some(v) => { "now " (format!("{v:.0}")) " s" }, None => "—" } }
            }
            h3 { "HL7 messages per minute" }
            div class="spark-row" {
                (chart::sparkline("HL7 messages per minute", &rates, "a minute"))
                span class="last" { @match rates.last() { Some(v) => { "now " (format!("{v:.1}")) } , None => "—" } }
            }
            h3 { "Latest telemetry" }
            @if last.is_null() {
                p { "No telemetry yet." }
            } @else {
                dl class="details" {
                    dt { "At" } dd { @match last["at"].as_str() { Some(t) => (when(t)), None => "—" } }
                    dt { "HL7 messages a minute" } dd { (text(&last["adt_messages_per_min"])) }
                    dt { "ACK p99" } dd { (text(&last["ack_p99_ms"])) " ms" }
                    dt { "Parked messages" } dd { (text(&last["parked"])) }
                    dt { "Disk free" } dd { (mb(&last["disk_free_bytes"])) }
                    dt { "Memory (RSS)" } dd { (mb(&last["rss_bytes"])) }
                    @for (k, v) in &census { dt { "Beds " (k) } dd { (v) } }
                }
            }
        }
    }
}

/// `GET /console/nodes/{hospital}/{node}`.
pub async fn node(
    State(state): State<CloudState>,
    who: Operator,
    Path((hospital, node)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (channel, h, n) = match appliance(&state, &who, &hospital, &node) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let Some(row) = channel.fleet.node(&h, &n, &state.registry.hospitals()) else {
        return not_found(&hospital, &node).into_response();
    };
    let samples = channel.fleet.history(&h, &n);
    let sent = q.get("sent").and_then(|s| s.parse::<u64>().ok());
    let title = format!("{h} / {n}");
    let main = html! {
        p { a href="/console" { "← Fleet" } }
        h1 { (title) }
        @if let Some(id) = sent {
            p class="notice" role="status" id="sent-notice" {
                "Command " (id) " sent. Its result shows in the list below when the appliance answers."
            }
        }
        div class="panels" {
            (status_panel(&row))
            (telemetry_panel(&row, &samples))
        }
        section class="commands" aria-labelledby="commands-h" {
            h2 id="commands-h" { "Commands" }
            form method="post" action={ "/console/nodes/" (h) "/" (n) "/commands" } {
                div {
                    label for="command" { "Command" }
                    select id="command" name="command" {
                        option value="ping" { "ping" }
                        option value="sync_now" { "sync now" }
                        option value="revoke_token" { "revoke a token" }
                    }
                }
                div {
                    label for="name" { "Token name (revoke only)" }
                    input id="name" name="name" type="text" autocomplete="off" spellcheck="false";
                }
                button class="primary" type="submit" { "Send signed command" }
            }
            h3 { "Sent since the cloud started" }
            (commands_list(&channel, &h, &n))
        }
    };
    page::respond(frame(&state, &who, &title, "/console", "node", main))
}

/// `GET /console/nodes/{hospital}/{node}/commands`: the list alone.
pub async fn commands(
    State(state): State<CloudState>,
    who: Operator,
    Path((hospital, node)): Path<(String, String)>,
) -> Response {
    let (channel, h, n) = match appliance(&state, &who, &hospital, &node) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    page::respond(commands_list(&channel, &h, &n))
}

/// The command form's fields.
#[derive(Debug, serde::Deserialize)]
pub struct CommandForm {
    command: String,
    #[serde(default)]
    name: String,
}

/// `POST /console/nodes/{hospital}/{node}/commands`.
pub async fn send(
    State(state): State<CloudState>,
    who: Operator,
    Path((hospital, node)): Path<(String, String)>,
    Form(form): Form<CommandForm>,
) -> Response {
    let (channel, h, n) = match appliance(&state, &who, &hospital, &node) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let name = Some(form.name.trim()).filter(|s| !s.is_empty());
    let command = match Command::parse(&form.command, name) {
        Ok(c) => c,
        Err(d) => return bad_query(&d),
    };
    match dispatch(
        &state,
        &channel,
        &who.name,
        &command,
        vec![(h.clone(), n.clone())],
        60,
    )
    .await
    {
        Ok(sent) => {
            let id = sent.first().map_or(0, |s| s.2);
            see_other(&format!("/console/nodes/{h}/{n}?sent={id}"))
        }
        Err(p) => problem_page(&p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_view_takes_known_values_only() {
        let v = View::parse(&q(&[])).unwrap();
        assert_eq!((v.state, v.sort, v.desc), ("all", "node", false));
        let v = View::parse(&q(&[
            ("state", "offline"),
            ("sort", "lag"),
            ("dir", "desc"),
        ]))
        .unwrap();
        assert_eq!((v.state, v.sort, v.desc), ("offline", "lag", true));
        assert!(
            View::parse(&q(&[("state", "dead")]))
                .unwrap_err()
                .contains("state is one of")
        );
        assert!(View::parse(&q(&[("sort", "x")])).is_err());
        assert!(View::parse(&q(&[("dir", "up")])).is_err());
        assert!(
            View::parse(&q(&[("page", "2")]))
                .unwrap_err()
                .contains("\"page\"")
        );
    }

    #[test]
    fn rows_sort_by_the_key_with_unknown_lags_last_and_ties_by_node() {
        let rows = [
            json!({"hospital": "h1", "node": "b", "online": true, "lag_seconds": 30.0}),
            json!({"hospital": "h1", "node": "a", "online": false, "lag_seconds": null}),
            json!({"hospital": "h0", "node": "z", "online": "unknown", "lag_seconds": 2.0}),
        ];
        let order = |v: &View| {
            let mut r: Vec<&Value> = rows.iter().collect();
            r.sort_by(|a, b| v.cmp(a, b));
            r.iter().map(|r| text(&r["node"])).collect::<Vec<_>>()
        };
        let view = |sort, desc| View {
            state: "all",
            sort,
            desc,
        };
        assert_eq!(order(&view("node", false)), ["z", "a", "b"]);
        assert_eq!(order(&view("lag", false)), ["z", "b", "a"]);
        assert_eq!(order(&view("lag", true)), ["b", "z", "a"]);
        assert_eq!(order(&view("state", false)), ["a", "b", "z"]);
    }
}
