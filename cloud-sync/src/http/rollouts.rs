//! Staged rollouts over the fleet (operator tokens with the `fleet` scope;
//! docs/fleet.md, "Rollouts"; the plan and its judgement are
//! [`crate::rollout`]):
//!
//! - `POST /api/v1/fleet/rollouts` `{"bundle": SHA256, "nodes":
//!   [{"hospital", "node"}], "canary"?: 1, "wave"?: 10, "wait_s"?: 60,
//!   "deadline_s"?: 600}`: the bundle must be held here (`POST
//!   /api/v1/fleet/bundles`), every node known; `202` with the rollout,
//!   which then runs by itself: `apply_bundle` to the canary, then, once
//!   every node of a wave reported the version in force and stayed so for
//!   `wait_s`, to the next wave. Audited in the registry
//!   (`rollout_started`), each command as any fleet command.
//! - `GET /api/v1/fleet/rollouts`: every rollout kept (since the cloud
//!   started; with several instances on PostgreSQL, the region's), newest
//!   first; `GET /api/v1/fleet/rollouts/{id}`: one, with each
//!   node's state (`waiting`, `sent`, `healthy`, `done`, `failed` with its
//!   reason, `skipped`) and, when it failed, which node and why.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hms_domain::Timestamp;
use serde_json::json;

use super::fleet::{Target, dispatch, fleet_call, unknown};
use super::problem;
use crate::fleet::{Channel, Command, Outcome};
use crate::rollout::{BundleRef, Observed, Rollout};
use crate::state::CloudState;
use crate::store::registry::AuditEntry;

/// How long each `apply_bundle` of a rollout stays valid, seconds.
const COMMAND_EXPIRES_S: u64 = 600;

/// The rollout routes.
pub fn routes() -> Router<CloudState> {
    Router::new()
        .route("/api/v1/fleet/rollouts", get(list).post(start))
        .route("/api/v1/fleet/rollouts/{id}", get(one))
}

/// `POST /api/v1/fleet/rollouts` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    bundle: String,
    nodes: Vec<Target>,
    #[serde(default = "one_node")]
    canary: usize,
    #[serde(default = "ten_nodes")]
    wave: usize,
    #[serde(default = "sixty")]
    wait_s: u64,
    #[serde(default = "ten_minutes")]
    deadline_s: u64,
}

fn one_node() -> usize {
    1
}
fn ten_nodes() -> usize {
    10
}
fn sixty() -> u64 {
    60
}
fn ten_minutes() -> u64 {
    600
}

async fn start(
    State(state): State<CloudState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (who, channel) = match fleet_call(&state, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let bad = |d: String| problem::bad(d).into_response();
    let b: StartBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("the body is not a rollout: {e}")),
    };
    if !(1..=86_400).contains(&b.wait_s) || !(10..=86_400).contains(&b.deadline_s) {
        return bad("wait_s is 1 to 86400 seconds and deadline_s 10 to 86400".into());
    }
    if b.nodes.len() > super::fleet::MAX_NODES {
        return bad(format!(
            "nodes lists at most {} appliances",
            super::fleet::MAX_NODES
        ));
    }
    let Some(bundles) = state.bundles.clone() else {
        return problem::not_found("this cloud holds no bundles").into_response();
    };
    let sha = b.bundle.clone();
    let held = tokio::task::spawn_blocking(move || bundles.get(&sha)).await;
    let summary = match held {
        Ok(Ok(Some(bytes))) => match crate::bundles::describe(&bytes) {
            Ok(s) => s,
            Err(e) => return bad(format!("the stored bundle does not read: {e}")),
        },
        Ok(Ok(None)) => {
            return problem::not_found(format!(
                "no bundle {:?} here: upload it first (POST /api/v1/fleet/bundles)",
                b.bundle
            ))
            .into_response();
        }
        _ => return problem::unavailable().into_response(),
    };
    let nodes = match Target::ids(&b.nodes) {
        Ok(n) => n,
        Err(d) => return bad(d),
    };
    if let Some((h, n)) = unknown(&state, &channel, &nodes) {
        return problem::not_found(format!(
            "no appliance {h}/{n}: neither enrolled here nor heard from on MQTT"
        ))
        .into_response();
    }
    let now = Timestamp::now().as_millis();
    let actor = format!("operator:{who}");
    let (rollouts, by, bundle) = (
        state.rollouts.clone(),
        actor.clone(),
        BundleRef {
            sha256: summary.sha256.clone(),
            kind: summary.kind.clone(),
            version: summary.version,
        },
    );
    let planned = tokio::task::spawn_blocking(move || {
        rollouts.add(|id| {
            Rollout::plan(
                id,
                bundle,
                nodes,
                b.canary,
                b.wave,
                b.wait_s,
                b.deadline_s,
                by,
                now,
            )
            .map_err(AddError::Plan)
        })
    })
    .await;
    let rollout = match planned {
        Ok(Ok(r)) => r,
        Ok(Err(AddError::Plan(e))) => return bad(e.to_string()),
        Ok(Err(AddError::Store(e))) => {
            tracing::error!(error = %format!("{e:#}"), "could not store a rollout");
            return problem::unavailable().into_response();
        }
        Err(_) => return problem::unavailable().into_response(),
    };
    let (db, detail, id) = (
        state.registry_db.clone(),
        format!(
            "rollout {} of {} version {} ({}) to {} appliance(s)",
            rollout.id,
            summary.kind,
            summary.version,
            summary.sha256,
            rollout.nodes.len()
        ),
        rollout.id.to_string(),
    );
    let a = actor.clone();
    let audited = tokio::task::spawn_blocking(move || {
        db.audit(&AuditEntry {
            at_ms: now,
            actor: &a,
            action: "rollout_started",
            subject: &id,
            detail: &detail,
        })
    })
    .await;
    if !matches!(audited, Ok(Ok(()))) {
        let (rollouts, id) = (state.rollouts.clone(), rollout.id);
        let _ = tokio::task::spawn_blocking(move || {
            rollouts.update(id, |r| {
                r.send_failed(
                    &r.waves[0][0].clone(),
                    "the rollout could not be audited".into(),
                    now,
                )
            })
        })
        .await;
        return problem::unavailable().into_response();
    }
    tracing::info!(operator = %who, rollout = rollout.id, kind = %summary.kind, version = summary.version, "rollout started");
    // The driver ([`drive`]) takes it up at its next second.
    drop(channel);
    (StatusCode::ACCEPTED, axum::Json(rollout.json())).into_response()
}

/// Why a rollout was not added.
enum AddError {
    Plan(crate::rollout::PlanError),
    Store(anyhow::Error),
}

impl From<anyhow::Error> for AddError {
    fn from(e: anyhow::Error) -> Self {
        AddError::Store(e)
    }
}

/// What the registry shows of `node` for rollout `r`.
fn observe(
    channel: &Channel,
    state: &CloudState,
    r: &Rollout,
    node: &crate::rollout::Node,
) -> Observed {
    let row = channel
        .fleet
        .node(&node.0, &node.1, &state.registry.hospitals())
        .unwrap_or_default();
    let answer =
        r.command_of(node)
            .and_then(|id| match channel.fleet.outcome(&node.0, &node.1, id) {
                Some(Outcome::Answered { result, .. }) => Some(result),
                _ => None,
            });
    Observed::from_status(&row["status"], &r.bundle.kind, answer.as_ref())
}

/// Drives every rollout under way, every second, until `stop`: judges its
/// nodes and sends the bundle to those whose wave began. With shared
/// rollouts (several instances) it reads them again first, on every
/// instance, and drives them only while `lead` says this instance holds
/// the region's rollout lease; without `lead`, always.
pub async fn drive(
    state: CloudState,
    channel: Channel,
    lead: Option<tokio::sync::watch::Receiver<bool>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if state.rollouts.is_shared() {
            let rollouts = state.rollouts.clone();
            match tokio::task::spawn_blocking(move || rollouts.refresh()).await {
                Ok(Ok(())) => failing = false,
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read the rollouts; retrying");
                    }
                    failing = true;
                    continue;
                }
                Err(_) => continue,
            }
        }
        if lead.as_ref().is_some_and(|l| !*l.borrow()) {
            continue;
        }
        for id in state.rollouts.running() {
            step(&state, &channel, id).await;
        }
    }
}

/// One step of rollout `id` (see [`drive`]).
async fn step(state: &CloudState, channel: &Channel, id: u64) {
    let now = Timestamp::now().as_millis();
    let (rollouts, st, ch) = (state.rollouts.clone(), state.clone(), channel.clone());
    let stepped = tokio::task::spawn_blocking(move || {
        rollouts.update(id, |r| {
            let snapshot = r.clone();
            r.step(now, |n| observe(&ch, &st, &snapshot, n))
        })
    })
    .await;
    let send = match stepped {
        Ok(Ok(Some(send))) => send,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(e)) => {
            tracing::warn!(rollout = id, error = %format!("{e:#}"), "could not store the rollout's step; retrying");
            return;
        }
    };
    let Some(r) = state.rollouts.get(id) else {
        return;
    };
    // Commands go out in the name of who started it.
    let who = r.by.strip_prefix("operator:").unwrap_or(&r.by).to_owned();
    for node in send {
        let command = Command::ApplyBundle {
            sha256: r.bundle.sha256.clone(),
        };
        let sent = dispatch(
            state,
            channel,
            &who,
            &command,
            vec![node.clone()],
            COMMAND_EXPIRES_S,
        )
        .await;
        let now = Timestamp::now().as_millis();
        let rollouts = state.rollouts.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            rollouts.update(id, |r| match sent {
                Ok(ids) => {
                    if let Some((_, _, cmd)) = ids.first() {
                        r.sent(&node, *cmd, now);
                    }
                }
                Err(p) => r.send_failed(
                    &node,
                    format!("the command was not sent: {}", p.detail),
                    now,
                ),
            })
        })
        .await;
        if !matches!(recorded, Ok(Ok(_))) {
            tracing::warn!(rollout = id, "could not record a command of the rollout");
        }
    }
    if let Some(r) = state.rollouts.get(id)
        && r.ended()
    {
        tracing::info!(rollout = id, state = %r.json()["state"], "rollout ended");
    }
}

async fn list(State(state): State<CloudState>, headers: HeaderMap) -> Response {
    if let Err(r) = fleet_call(&state, &headers).await {
        return r;
    }
    let all: Vec<serde_json::Value> = state.rollouts.list().iter().map(Rollout::json).collect();
    axum::Json(json!({ "rollouts": all })).into_response()
}

async fn one(
    State(state): State<CloudState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = fleet_call(&state, &headers).await {
        return r;
    }
    match id.parse::<u64>().ok().and_then(|id| state.rollouts.get(id)) {
        Some(r) => axum::Json(r.json()).into_response(),
        None => problem::not_found(format!("no rollout {id:?} on this cloud since it started"))
            .into_response(),
    }
}
