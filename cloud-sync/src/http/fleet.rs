//! The fleet API (operator tokens with the `fleet` scope; docs/cloud-api.md):
//!
//! - `GET /api/v1/fleet`: every appliance of the region heard from on MQTT,
//!   and every enrolled one that was not (`online: "unknown"`), with its
//!   last status's figures ([`crate::fleet::Fleet::nodes`]).
//! - `GET /api/v1/fleet/{hospital}/{node}`: one of them with its status
//!   and recent telemetry (404 when neither heard from nor enrolled).
//! - `POST /api/v1/fleet/commands` `{"nodes": [{"hospital", "node"}],
//!   "command": "ping" | "sync_now" | "revoke_token" | "apply_bundle",
//!   "name"?, "sha256"?, "expires_in_s"?}`: one signed command per node,
//!   each with the next id for that node, audited in the registry
//!   (`fleet_command`, actor `operator:{token}`) before it is published;
//!   `202 {"commands": [{"hospital", "node", "id"}]}`. An unknown node, or
//!   for `apply_bundle` a bundle this cloud does not hold, is a 404 and
//!   nothing is sent; without a fleet key a 409 `no-fleet-key`; with the
//!   broker not connected a 503 and nothing is sent.
//! - `POST /api/v1/fleet/bundles` (the bundle file's bytes, at most
//!   [`crate::bundles::MAX_BUNDLE_BYTES`]: this route's own body limit,
//!   which the gate lets through): checked to be a bundle
//!   ([`crate::bundles::describe`]; the signature is the appliances' to
//!   verify), audited (`bundle_uploaded`) and stored durably; `201
//!   {"sha256", "size", "kind", "version", "hospital", "files"}`, or `200`
//!   with the same when it was held already (nothing changes, nothing is
//!   audited). 400 when the body is not a bundle, 413 over the limit.
//! - `GET /api/v1/fleet/bundles`: `{"bundles": [...]}`, each as above.
//! - `GET /api/v1/fleet/{hospital}/{node}/commands/{id}`: the command's
//!   result once it arrived, `pending` until then (`no_answer` past its
//!   expiry); 404 for a command this cloud neither sent since it started
//!   nor saw answered.
//!
//! A cloud without `[fleet]` answers every route with a 409 `no-fleet`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hms_domain::{HospitalId, NodeId, Timestamp};
use serde_json::json;

use super::operator::{Scope, operator};
use super::problem;
use crate::bundles::{MAX_BUNDLE_BYTES, StoreError};
use crate::fleet::{Channel, Command, Outcome, Sent};
use crate::state::CloudState;
use crate::store::registry::AuditEntry;

/// Longest command expiry, seconds.
pub const MAX_EXPIRES_IN_S: u64 = 3_600;

/// Most nodes in one command request.
pub const MAX_NODES: usize = 1_000;

/// The bundles route: upload (`POST`) and list (`GET`).
pub const BUNDLES: &str = "/api/v1/fleet/bundles";

/// The fleet routes.
pub fn routes() -> Router<CloudState> {
    Router::new()
        .route("/api/v1/fleet", get(list))
        .route("/api/v1/fleet/commands", post(send))
        .route(
            BUNDLES,
            get(bundles)
                .post(upload)
                .layer(DefaultBodyLimit::max(MAX_BUNDLE_BYTES)),
        )
        .route("/api/v1/fleet/{hospital}/{node}", get(one))
        .route(
            "/api/v1/fleet/{hospital}/{node}/commands/{id}",
            get(outcome),
        )
}

/// The operator (with the `fleet` scope) and the fleet channel, or the
/// problem to answer.
pub(super) async fn fleet_call(
    state: &CloudState,
    headers: &HeaderMap,
) -> Result<(String, Channel), Response> {
    let who = operator(state, headers, Scope::Fleet).await?;
    match &state.fleet {
        Some(c) => Ok((who, c.clone())),
        None => Err(problem::problem(
            StatusCode::CONFLICT,
            problem::NO_FLEET,
            "this cloud has no [fleet] section: it is not connected to the fleet's MQTT broker",
        )
        .into_response()),
    }
}

async fn list(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    let (_, channel) = match fleet_call(&state, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let nodes = channel.fleet.nodes(&state.registry.hospitals());
    axum::Json(json!({
        "region": channel.fleet.region(),
        "broker": if channel.link.connected() { "connected" } else { "disconnected" },
        "nodes": nodes,
    }))
    .into_response()
}

/// A hospital and node from the path (none when they are no ids).
fn ids(hospital: &str, node: &str) -> Option<(HospitalId, NodeId)> {
    Some((hospital.parse().ok()?, node.parse().ok()?))
}

/// The 404 of an appliance that is no ids.
fn no_such(hospital: &str, node: &str) -> Response {
    problem::not_found(format!("no appliance {hospital:?}/{node:?} in the fleet")).into_response()
}

async fn one(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path((hospital, node)): Path<(String, String)>,
) -> Response {
    let (_, channel) = match fleet_call(&state, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((h, n)) = ids(&hospital, &node) else {
        return no_such(&hospital, &node);
    };
    match channel.fleet.node(&h, &n, &state.registry.hospitals()) {
        Some(v) => axum::Json(v).into_response(),
        None => problem::not_found(format!(
            "no appliance {h}/{n}: neither enrolled here nor heard from on MQTT"
        ))
        .into_response(),
    }
}

/// One appliance named in a request (commands, rollouts).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Target {
    hospital: String,
    node: String,
}

impl Target {
    /// Each target's ids; a 400 detail for the first that is not ids.
    pub(super) fn ids(targets: &[Target]) -> Result<Vec<(HospitalId, NodeId)>, String> {
        targets
            .iter()
            .map(|t| match (t.hospital.parse(), t.node.parse()) {
                (Ok(h), Ok(n)) => Ok((h, n)),
                _ => Err(format!(
                    "{:?}/{:?} is not a hospital and node id",
                    t.hospital, t.node
                )),
            })
            .collect()
    }
}

/// The first of `targets` neither heard from on MQTT nor enrolled here.
pub(super) fn unknown<'a>(
    state: &CloudState,
    channel: &Channel,
    targets: &'a [(HospitalId, NodeId)],
) -> Option<&'a (HospitalId, NodeId)> {
    let enrolled = state.registry.hospitals();
    targets.iter().find(|(h, n)| {
        !channel.fleet.knows(h, n) && !enrolled.iter().any(|e| &e.hospital == h && &e.node == n)
    })
}

/// `POST /api/v1/fleet/commands` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    nodes: Vec<Target>,
    command: String,
    /// The token's name, for `revoke_token`.
    #[serde(default)]
    name: Option<String>,
    /// The bundle's SHA-256, for `apply_bundle`.
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default = "default_expires_in")]
    expires_in_s: u64,
}

fn default_expires_in() -> u64 {
    60
}

async fn send(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, channel) = match fleet_call(&state, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let bad = |d: String| problem::bad(d).into_response();
    let b: CommandBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("the body is not a fleet command: {e}")),
    };
    let command = match Command::parse_with(&b.command, b.name.as_deref(), b.sha256.as_deref()) {
        Ok(c) => c,
        Err(d) => return bad(d),
    };
    if b.nodes.is_empty() || b.nodes.len() > MAX_NODES {
        return bad(format!("nodes lists 1 to {MAX_NODES} appliances"));
    }
    if !(1..=MAX_EXPIRES_IN_S).contains(&b.expires_in_s) {
        return bad(format!(
            "expires_in_s is from 1 to {MAX_EXPIRES_IN_S} seconds"
        ));
    }
    let targets = match Target::ids(&b.nodes) {
        Ok(t) => t,
        Err(d) => return bad(d),
    };
    let out = match dispatch(&state, &channel, &who, &command, targets, b.expires_in_s).await {
        Ok(sent) => sent
            .into_iter()
            .map(|(h, n, id)| json!({ "hospital": h, "node": n, "id": id }))
            .collect::<Vec<_>>(),
        Err(p) => return p.into_response(),
    };
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "command": command.name(), "commands": out })),
    )
        .into_response()
}

/// Sends `command` to each of `targets` (duplicates once) for the operator
/// `who`: each appliance must be known (heard from or enrolled), the bundle
/// of an `apply_bundle` held here, the cloud must hold the fleet key and be
/// connected to the broker; each command
/// gets the next id for its node, is audited in the registry, then signed
/// and published. The ids sent, or the problem that stopped it (the
/// commands before a failed publish were sent). The API and the console
/// both send through here.
pub(super) async fn dispatch(
    state: &CloudState,
    channel: &Channel,
    who: &str,
    command: &Command,
    targets: Vec<(HospitalId, NodeId)>,
    expires_in_s: u64,
) -> Result<Vec<(HospitalId, NodeId, u64)>, hms_web::Problem> {
    if let Some((h, n)) = unknown(state, channel, &targets) {
        return Err(problem::not_found(format!(
            "no appliance {h}/{n}: neither enrolled here nor heard from on MQTT; \
             nothing was sent"
        )));
    }
    let mut unique: Vec<(HospitalId, NodeId)> = vec![];
    for t in targets {
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    if let Command::ApplyBundle { sha256 } = command {
        let held = match state.bundles.clone() {
            Some(b) => {
                let sha = sha256.clone();
                tokio::task::spawn_blocking(move || b.holds(&sha))
                    .await
                    .map_err(|_| problem::not_run())?
            }
            None => false,
        };
        if !held {
            return Err(problem::not_found(format!(
                "no bundle {sha256} on this cloud (upload it with POST {BUNDLES}); nothing was \
                 sent"
            )));
        }
    }
    let Some(key) = channel.key.clone() else {
        return Err(problem::problem(
            StatusCode::CONFLICT,
            problem::NO_FLEET_KEY,
            "this cloud has no fleet key ([fleet] key_file; hms-cloud fleet keygen): it \
             sends no commands",
        ));
    };
    if !channel.link.connected() {
        return Err(problem::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            problem::UNAVAILABLE,
            format!(
                "the fleet's MQTT broker ({}) is not connected; nothing was sent",
                channel.link.broker()
            ),
        ));
    }
    let actor = format!("operator:{who}");
    let region = channel.fleet.region().clone();
    let mut out = vec![];
    for (h, n) in unique {
        let now = Timestamp::now().as_millis();
        let expires = now + i64::try_from(expires_in_s).unwrap_or(60) * 1_000;
        let mut detail = format!(
            "command {}; expires {}",
            command.name(),
            Timestamp::from_millis(expires).to_rfc3339()
        );
        if let Command::ApplyBundle { sha256 } = command {
            detail.push_str(&format!("; sha256 {sha256}"));
        }
        let (st, hh, nn, a) = (state.clone(), h.clone(), n.clone(), actor.clone());
        let id = match tokio::task::spawn_blocking(move || {
            st.registry_db
                .next_fleet_command_id(&hh, &nn, &a, &detail, now)
        })
        .await
        {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "recording a fleet command failed");
                return Err(problem::unavailable());
            }
            Err(_) => return Err(problem::unavailable()),
        };
        let envelope = key.sign(
            id,
            &region,
            &h,
            &n,
            Timestamp::from_millis(expires),
            command,
        );
        let sent = Sent {
            command: command.name().to_owned(),
            sent_ms: now,
            expires_ms: expires,
            by: actor.clone(),
        };
        if channel.fleet.is_shared() {
            // The region's other instances show it too.
            let (fleet, hh, nn, s) = (channel.fleet.clone(), h.clone(), n.clone(), sent.clone());
            let shared =
                tokio::task::spawn_blocking(move || fleet.persist_sent(&hh, &nn, id, &s)).await;
            if !matches!(shared, Ok(Ok(()))) {
                tracing::warn!(hospital = %h, node = %n, id, "could not share a sent command with the region's other instances");
            }
        }
        channel.fleet.sent(&h, &n, id, sent);
        if let Err(e) = channel
            .link
            .publish(channel.fleet.topic(&h, &n, "cmd"), envelope)
        {
            tracing::error!(error = %format!("{e:#}"), "publishing a fleet command failed");
            return Err(problem::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                problem::UNAVAILABLE,
                format!(
                    "the fleet's MQTT client could not take the command for {h}/{n}; the \
                     commands before it were sent: {}",
                    out.len()
                ),
            ));
        }
        tracing::info!(operator = %who, hospital = %h, node = %n, id, command = command.name(), "fleet command sent");
        out.push((h, n, id));
    }
    Ok(out)
}

async fn outcome(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path((hospital, node, id)): Path<(String, String, String)>,
) -> Response {
    let (_, channel) = match fleet_call(&state, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some((h, n)) = ids(&hospital, &node) else {
        return no_such(&hospital, &node);
    };
    let Ok(id) = id.parse::<u64>() else {
        return problem::bad(format!("the command id {id:?} is not a number")).into_response();
    };
    let answer = match channel.fleet.outcome(&h, &n, id) {
        None => {
            return problem::not_found(format!(
                "no command {id} for {h}/{n}: not sent by this cloud since it started, nor \
                 answered"
            ))
            .into_response();
        }
        Some(Outcome::Answered { at_ms, result }) => json!({
            "hospital": h, "node": n, "id": id,
            "status": result.get("status").cloned().unwrap_or(json!("unknown")),
            "answered_at": Timestamp::from_millis(at_ms).to_rfc3339(),
            "result": result,
        }),
        Some(Outcome::Pending(s)) => {
            let now = Timestamp::now().as_millis();
            json!({
                "hospital": h, "node": n, "id": id,
                "status": if now >= s.expires_ms { "no_answer" } else { "pending" },
                "command": s.command,
                "sent_at": Timestamp::from_millis(s.sent_ms).to_rfc3339(),
                "expires_at": Timestamp::from_millis(s.expires_ms).to_rfc3339(),
                "by": s.by,
            })
        }
    };
    axum::Json(answer).into_response()
}

/// The 503 of a cloud that keeps no bundles.
fn no_bundles() -> Response {
    problem::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        problem::UNAVAILABLE,
        "this cloud keeps no bundles",
    )
    .into_response()
}

/// `POST /api/v1/fleet/bundles`: the operator and scope are checked before
/// the body is read (at most [`MAX_BUNDLE_BYTES`], this route's limit).
async fn upload(State(state): State<CloudState>, req: Request) -> Response {
    let (who, _) = match fleet_call(&state, req.headers()).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(store) = state.bundles.clone() else {
        return no_bundles();
    };
    let body = match Bytes::from_request(req, &state).await {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                problem::TOO_LARGE
            } else {
                problem::UNREADABLE_BODY
            };
            return problem::problem(
                status,
                kind,
                format!(
                    "a bundle is at most {MAX_BUNDLE_BYTES} bytes; the body was not read whole"
                ),
            )
            .into_response();
        }
    };
    let (db, actor) = (state.registry_db.clone(), format!("operator:{who}"));
    let stored = tokio::task::spawn_blocking(move || {
        store.store(&body, |s| {
            db.audit(&AuditEntry {
                at_ms: Timestamp::now().as_millis(),
                actor: &actor,
                action: "bundle_uploaded",
                subject: &s.hospital,
                detail: &format!(
                    "sha256 {}; kind {}; version {}; size {}",
                    s.sha256, s.kind, s.version, s.size
                ),
            })
        })
    })
    .await;
    match stored {
        Ok(Ok(stored)) => {
            let s = &stored.summary;
            if stored.created {
                tracing::info!(operator = %who, sha256 = %s.sha256, kind = %s.kind, version = s.version, "bundle uploaded");
            }
            let status = if stored.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(&stored.summary)).into_response()
        }
        Ok(Err(StoreError::NotABundle(why))) => {
            problem::bad(format!("the body is not a bundle: {why}")).into_response()
        }
        Ok(Err(StoreError::Io(e))) => {
            tracing::error!(error = %format!("{e:#}"), "storing a bundle failed");
            problem::unavailable().into_response()
        }
        Err(_) => problem::not_run().into_response(),
    }
}

/// `GET /api/v1/fleet/bundles`.
async fn bundles(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    if let Err(r) = fleet_call(&state, &headers).await {
        return r;
    }
    let Some(store) = state.bundles.clone() else {
        return no_bundles();
    };
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(Ok(list)) => axum::Json(json!({ "bundles": list })).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "listing the bundles failed");
            problem::unavailable().into_response()
        }
        Err(_) => problem::not_run().into_response(),
    }
}
