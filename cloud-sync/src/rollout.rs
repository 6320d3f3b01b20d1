//! Staged rollouts of a signed bundle across appliances (docs/fleet.md,
//! "Rollouts"): a canary first, then the rest in waves, each node judged by
//! what it reports on the fleet channel; the first failure stops it.
//!
//! [`Rollout`] is the plan and its progress, without IO: [`Rollout::step`]
//! takes the time and what the fleet registry shows of each node
//! ([`Observed`]) and says which nodes to send the bundle to now
//! ([`Rollout::sent`] records the command id); the driver
//! ([`crate::http::fleet`]) sends the signed `apply_bundle` commands and
//! calls it every second. A node is
//!
//! - **done** once it has reported the bundle's version in force (its
//!   status's `bundles.<kind>.in_force` equal to the version with state
//!   `in_force`) and stayed online and so for `wait_s`;
//! - **failed** when its command was refused or failed, when it reports the
//!   bundle refused or rolled back (with the appliance's reason), when it
//!   goes offline or leaves the version while being watched, or when it
//!   reports nothing healthy within [`Rollout::deadline_ms`].
//!
//! A wave starts when every node of the wave before is done. The first
//! failed node fails the rollout: nothing more is sent, and the nodes not
//! reached are `skipped`. With one instance (SQLite), rollouts live in its
//! memory, as the fleet registry does: a restart forgets them (the
//! appliances keep what they applied, and their audit says so). With
//! several instances on PostgreSQL ([`Rollouts::shared`]) they live in the
//! region's database: every instance shows them, and the instance holding
//! the region's rollout lease drives them, so one that dies mid-rollout is
//! taken over within seconds (a node whose command was sent but not yet
//! recorded may get it twice; applying a bundle already in force changes
//! nothing).

use std::collections::BTreeMap;

use hms_domain::{HospitalId, NodeId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::registry::RegistryDb;

/// A node of the fleet.
pub type Node = (HospitalId, NodeId);

/// What a rollout sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    /// The bundle file's SHA-256 (hex), as the cloud stores it.
    pub sha256: String,
    /// `config` or `model_set`.
    pub kind: String,
    /// Its version.
    pub version: u64,
}

/// Where one node stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeState {
    /// Its wave has not started.
    Waiting,
    /// The command was sent (its id), at `at_ms`.
    Sent {
        /// The command's id.
        id: u64,
        /// When.
        at_ms: i64,
    },
    /// It reported the version in force and healthy since `since_ms`.
    Healthy {
        /// The command's id.
        id: u64,
        /// Since when.
        since_ms: i64,
    },
    /// Healthy for `wait_s`.
    Done,
    /// Failed, and why.
    Failed(String),
    /// Not reached: the rollout failed before its wave.
    Skipped,
}

impl NodeState {
    /// Its name in the API.
    pub fn name(&self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting",
            NodeState::Sent { .. } => "sent",
            NodeState::Healthy { .. } => "healthy",
            NodeState::Done => "done",
            NodeState::Failed(_) => "failed",
            NodeState::Skipped => "skipped",
        }
    }
}

/// What the fleet registry shows of a node now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Its status says online.
    pub online: bool,
    /// Its status's `bundles.<kind>.in_force`.
    pub in_force: Option<u64>,
    /// Its status's `bundles.<kind>.state`.
    pub state: Option<String>,
    /// Its status's `bundles.last`: (kind, version, step, reason).
    pub last: Option<(String, u64, String, Option<String>)>,
    /// The command's answer, when it came: (status, reason).
    pub answer: Option<(String, Option<String>)>,
}

impl Observed {
    /// What the status JSON of a node (`Fleet::node`'s `status`) and the
    /// command's answer (if any) show, for bundles of `kind`.
    pub fn from_status(status: &Value, kind: &str, answer: Option<&Value>) -> Observed {
        let b = &status["bundles"];
        let last = &b["last"];
        Observed {
            online: status["online"] == true,
            in_force: b[kind]["in_force"].as_u64(),
            state: b[kind]["state"].as_str().map(str::to_owned),
            last: match (
                last["kind"].as_str(),
                last["version"].as_u64(),
                last["step"].as_str(),
            ) {
                (Some(k), Some(v), Some(s)) => Some((
                    k.to_owned(),
                    v,
                    s.to_owned(),
                    last["reason"].as_str().map(str::to_owned),
                )),
                _ => None,
            },
            answer: answer.map(|a| {
                (
                    a["status"].as_str().unwrap_or("unknown").to_owned(),
                    a["reason"].as_str().map(str::to_owned),
                )
            }),
        }
    }
}

/// Where the whole rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Wave `n` (0: the canary) is under way.
    Running(usize),
    /// Every node is done.
    Succeeded,
    /// A node failed: which, and why.
    Failed(Node, String),
}

/// A staged rollout (see the module doc).
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Its id.
    pub id: u64,
    /// What it sends.
    pub bundle: BundleRef,
    /// The waves, the canary first.
    pub waves: Vec<Vec<Node>>,
    /// How long a node must stay healthy, ms.
    pub wait_ms: i64,
    /// How long a node may take to report healthy after its command, ms.
    pub deadline_ms: i64,
    /// Who started it (`operator:{token}`).
    pub by: String,
    /// When, ms.
    pub created_ms: i64,
    /// Each node's state.
    pub nodes: BTreeMap<Node, NodeState>,
    /// The `apply_bundle` command sent to each node reached.
    pub commands: BTreeMap<Node, u64>,
    /// The rollout's state.
    pub state: State,
    /// When it ended, ms.
    pub ended_ms: Option<i64>,
}

/// A rollout that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No node.
    #[error("nodes lists no appliance")]
    NoNodes,
    /// A node twice.
    #[error("{0}/{1} is listed twice")]
    Twice(HospitalId, NodeId),
    /// Canary or wave size 0, or a canary larger than the list.
    #[error("canary is 1 to the number of nodes ({0}), and wave at least 1")]
    Sizes(usize),
}

impl Rollout {
    /// Plans a rollout of `bundle` to `nodes`, in their order: the first
    /// `canary` form the canary wave, the rest waves of `wave` nodes.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        id: u64,
        bundle: BundleRef,
        nodes: Vec<Node>,
        canary: usize,
        wave: usize,
        wait_s: u64,
        deadline_s: u64,
        by: String,
        now_ms: i64,
    ) -> Result<Rollout, PlanError> {
        if nodes.is_empty() {
            return Err(PlanError::NoNodes);
        }
        if canary == 0 || canary > nodes.len() || wave == 0 {
            return Err(PlanError::Sizes(nodes.len()));
        }
        let mut states = BTreeMap::new();
        for n in &nodes {
            if states.insert(n.clone(), NodeState::Waiting).is_some() {
                return Err(PlanError::Twice(n.0.clone(), n.1.clone()));
            }
        }
        let mut waves = vec![nodes[..canary].to_vec()];
        waves.extend(nodes[canary..].chunks(wave).map(<[Node]>::to_vec));
        Ok(Rollout {
            id,
            bundle,
            waves,
            wait_ms: i64::try_from(wait_s).unwrap_or(i64::MAX / 4) * 1_000,
            deadline_ms: i64::try_from(deadline_s).unwrap_or(i64::MAX / 4) * 1_000,
            by,
            created_ms: now_ms,
            nodes: states,
            commands: BTreeMap::new(),
            state: State::Running(0),
            ended_ms: None,
        })
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        !matches!(self.state, State::Running(_))
    }

    /// Records that the command to `node` was sent with `id`.
    pub fn sent(&mut self, node: &Node, id: u64, now_ms: i64) {
        if let Some(s) = self.nodes.get_mut(node) {
            *s = NodeState::Sent { id, at_ms: now_ms };
            self.commands.insert(node.clone(), id);
        }
    }

    /// Sending to `node` failed (the command could not be sent).
    pub fn send_failed(&mut self, node: &Node, why: String, now_ms: i64) {
        self.fail(node, why, now_ms);
    }

    fn fail(&mut self, node: &Node, why: String, now_ms: i64) {
        if let Some(s) = self.nodes.get_mut(node) {
            *s = NodeState::Failed(why.clone());
        }
        for s in self.nodes.values_mut() {
            if *s == NodeState::Waiting {
                *s = NodeState::Skipped;
            }
        }
        self.state = State::Failed(node.clone(), why);
        self.ended_ms = Some(now_ms);
    }

    /// The command id of `node`, once sent.
    pub fn command_of(&self, node: &Node) -> Option<u64> {
        match self.nodes.get(node) {
            Some(NodeState::Sent { id, .. } | NodeState::Healthy { id, .. }) => Some(*id),
            _ => None,
        }
    }

    /// Advances the rollout at `now_ms` by what `observe` shows of each
    /// node of the current wave; the nodes to send the bundle to now.
    pub fn step(&mut self, now_ms: i64, observe: impl Fn(&Node) -> Observed) -> Vec<Node> {
        let State::Running(w) = self.state else {
            return vec![];
        };
        let version = self.bundle.version;
        let kind = self.bundle.kind.clone();
        let mut send = vec![];
        for node in self.waves[w].clone() {
            let Some(current) = self.nodes.get(&node).cloned() else {
                continue;
            };
            let next = match current {
                NodeState::Waiting => {
                    send.push(node.clone());
                    continue;
                }
                NodeState::Sent { id, at_ms } => {
                    let o = observe(&node);
                    if let Some(why) = failure(&o, &kind, version, false) {
                        NodeState::Failed(why)
                    } else if o.in_force == Some(version)
                        && o.state.as_deref() == Some("in_force")
                        && o.online
                    {
                        NodeState::Healthy {
                            id,
                            since_ms: now_ms,
                        }
                    } else if now_ms - at_ms > self.deadline_ms {
                        NodeState::Failed(format!(
                            "no report of version {version} in force within {} s",
                            self.deadline_ms / 1_000
                        ))
                    } else {
                        continue;
                    }
                }
                NodeState::Healthy { since_ms, .. } => {
                    let o = observe(&node);
                    if let Some(why) = failure(&o, &kind, version, true) {
                        NodeState::Failed(why)
                    } else if now_ms - since_ms >= self.wait_ms {
                        NodeState::Done
                    } else {
                        continue;
                    }
                }
                NodeState::Done | NodeState::Failed(_) | NodeState::Skipped => continue,
            };
            if let NodeState::Failed(why) = next {
                self.fail(&node, why, now_ms);
                return vec![];
            }
            self.nodes.insert(node, next);
        }
        let wave_done = self.waves[w]
            .iter()
            .all(|n| self.nodes.get(n) == Some(&NodeState::Done));
        if wave_done {
            if w + 1 < self.waves.len() {
                self.state = State::Running(w + 1);
                return self.step(now_ms, observe);
            }
            self.state = State::Succeeded;
            self.ended_ms = Some(now_ms);
        }
        send
    }

    /// The rollout as the API shows it.
    pub fn json(&self) -> Value {
        let (state, failed) = match &self.state {
            State::Running(w) => (if *w == 0 { "canary" } else { "running" }, Value::Null),
            State::Succeeded => ("succeeded", Value::Null),
            State::Failed((h, n), why) => {
                ("failed", json!({ "hospital": h, "node": n, "reason": why }))
            }
        };
        let waves: Vec<Value> = self
            .waves
            .iter()
            .map(|wave| {
                json!(
                    wave.iter()
                        .map(|n| {
                            let s = self.nodes.get(n).unwrap_or(&NodeState::Waiting);
                            let mut v = json!({
                                "hospital": n.0,
                                "node": n.1,
                                "state": s.name(),
                            });
                            if let Some(id) = self.commands.get(n) {
                                v["command"] = json!(id);
                            }
                            if let NodeState::Failed(why) = s {
                                v["reason"] = json!(why);
                            }
                            v
                        })
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        json!({
            "id": self.id,
            "bundle": {
                "sha256": self.bundle.sha256,
                "kind": self.bundle.kind,
                "version": self.bundle.version,
            },
            "state": state,
            "wave": match self.state { State::Running(w) => json!(w), _ => Value::Null },
            "failed": failed,
            "wait_s": self.wait_ms / 1_000,
            "by": self.by,
            "created_at": Timestamp::from_millis(self.created_ms).to_rfc3339(),
            "ended_at": self.ended_ms.map(|ms| Timestamp::from_millis(ms).to_rfc3339()),
            "waves": waves,
        })
    }
}

/// Why a node watched for `version` of `kind` failed, if it did.
fn failure(o: &Observed, kind: &str, version: u64, healthy: bool) -> Option<String> {
    if let Some((status, reason)) = &o.answer
        && status != "done"
    {
        return Some(format!(
            "its apply_bundle command was {status}: {}",
            reason.as_deref().unwrap_or("no reason given")
        ));
    }
    if let Some((k, v, step, reason)) = &o.last
        && k == kind
        && *v == version
        && (step == "refused" || step == "rolled_back")
    {
        let step = step.replace('_', " ");
        return Some(format!(
            "it {step} version {version}: {}",
            reason.as_deref().unwrap_or("no reason given")
        ));
    }
    if healthy {
        if !o.online {
            return Some("it went offline while being watched".into());
        }
        if o.in_force != Some(version) {
            return Some(format!(
                "it left version {version} while being watched (now {})",
                o.in_force.map_or("its own".to_owned(), |v| v.to_string())
            ));
        }
    }
    None
}

/// A rollout as stored in the region's database: its fields, the maps
/// keyed by node as lists (JSON keys are strings).
#[derive(Serialize, Deserialize)]
struct Stored {
    id: u64,
    bundle: BundleRef,
    waves: Vec<Vec<Node>>,
    wait_ms: i64,
    deadline_ms: i64,
    by: String,
    created_ms: i64,
    nodes: Vec<(Node, NodeState)>,
    commands: Vec<(Node, u64)>,
    state: State,
    ended_ms: Option<i64>,
}

impl Rollout {
    /// The JSON it is stored as.
    fn to_stored(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(&Stored {
            id: self.id,
            bundle: self.bundle.clone(),
            waves: self.waves.clone(),
            wait_ms: self.wait_ms,
            deadline_ms: self.deadline_ms,
            by: self.by.clone(),
            created_ms: self.created_ms,
            nodes: self.nodes.clone().into_iter().collect(),
            commands: self.commands.clone().into_iter().collect(),
            state: self.state.clone(),
            ended_ms: self.ended_ms,
        })?)
    }

    /// A rollout from the JSON it was stored as.
    fn from_stored(json: &str) -> anyhow::Result<Rollout> {
        let s: Stored = serde_json::from_str(json)?;
        Ok(Rollout {
            id: s.id,
            bundle: s.bundle,
            waves: s.waves,
            wait_ms: s.wait_ms,
            deadline_ms: s.deadline_ms,
            by: s.by,
            created_ms: s.created_ms,
            nodes: s.nodes.into_iter().collect(),
            commands: s.commands.into_iter().collect(),
            state: s.state,
            ended_ms: s.ended_ms,
        })
    }
}

/// Rollouts kept, at most.
pub const ROLLOUTS_KEPT: usize = 1_000;

/// The fleet's rollouts (the oldest ended ones go first past
/// [`ROLLOUTS_KEPT`]): in this cloud's memory since it started, or, with
/// several instances on PostgreSQL ([`Rollouts::shared`]), in the region's
/// database, of which each instance keeps a copy read again every second
/// ([`Rollouts::refresh`]) so reads never wait for the database.
#[derive(Debug, Default)]
pub struct Rollouts {
    inner: std::sync::Mutex<(u64, BTreeMap<u64, Rollout>)>,
    shared: Option<std::sync::Arc<RegistryDb>>,
}

impl Rollouts {
    /// The rollouts of the region whose shared registry is `db`.
    pub fn shared(db: std::sync::Arc<RegistryDb>) -> Rollouts {
        Rollouts {
            inner: std::sync::Mutex::default(),
            shared: Some(db),
        }
    }

    /// Whether they are the region's, shared by its instances.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Rollout>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans a rollout with the next id (`plan` gets it) and keeps it;
    /// shared, it is stored first. Blocking when shared.
    pub fn add<E: From<anyhow::Error>>(
        &self,
        plan: impl FnOnce(u64) -> Result<Rollout, E>,
    ) -> Result<Rollout, E> {
        if let Some(db) = &self.shared {
            let r = plan(db.next_rollout_id()?)?;
            let now = Timestamp::now().as_millis();
            db.put_rollout(r.id, &r.to_stored()?, r.ended(), now)?;
            self.lock().1.insert(r.id, r.clone());
            return Ok(r);
        }
        let mut inner = self.lock();
        let id = inner.0 + 1;
        let r = plan(id)?;
        inner.0 = id;
        inner.1.insert(id, r.clone());
        while inner.1.len() > ROLLOUTS_KEPT {
            let Some(oldest) = inner.1.iter().find(|(_, r)| r.ended()).map(|(k, _)| *k) else {
                break;
            };
            inner.1.remove(&oldest);
        }
        Ok(r)
    }

    /// Reads the region's rollouts again (shared; nothing to do otherwise).
    /// Blocking.
    pub fn refresh(&self) -> anyhow::Result<()> {
        let Some(db) = &self.shared else {
            return Ok(());
        };
        let mut all = BTreeMap::new();
        for (id, body) in db.rollouts(ROLLOUTS_KEPT)? {
            all.insert(id, Rollout::from_stored(&body)?);
        }
        self.lock().1 = all;
        Ok(())
    }

    /// Rollout `id`, as it stands.
    pub fn get(&self, id: u64) -> Option<Rollout> {
        self.lock().1.get(&id).cloned()
    }

    /// Every rollout kept, newest first.
    pub fn list(&self) -> Vec<Rollout> {
        self.lock().1.values().rev().cloned().collect()
    }

    /// The ids of the rollouts under way.
    pub fn running(&self) -> Vec<u64> {
        self.lock()
            .1
            .values()
            .filter(|r| !r.ended())
            .map(|r| r.id)
            .collect()
    }

    /// Changes rollout `id` with `f`; what `f` returned (none: no such
    /// rollout). Shared, the changed rollout is stored (blocking); when
    /// that fails the copy here is left as it was and the error returned.
    pub fn update<T>(
        &self,
        id: u64,
        f: impl FnOnce(&mut Rollout) -> T,
    ) -> anyhow::Result<Option<T>> {
        let Some(db) = &self.shared else {
            return Ok(self.lock().1.get_mut(&id).map(f));
        };
        let Some(mut r) = self.get(id) else {
            return Ok(None);
        };
        let out = f(&mut r);
        db.put_rollout(id, &r.to_stored()?, r.ended(), Timestamp::now().as_millis())?;
        self.lock().1.insert(id, r);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> Node {
        (
            HospitalId::new(format!("h{i}")).unwrap(),
            NodeId::new(format!("edge-{i}")).unwrap(),
        )
    }

    fn plan(nodes: usize, canary: usize, wave: usize) -> Rollout {
        Rollout::plan(
            1,
            BundleRef {
                sha256: "ab".into(),
                kind: "model_set".into(),
                version: 7,
            },
            (1..=nodes as u32).map(n).collect(),
            canary,
            wave,
            10,
            60,
            "operator:ops".into(),
            0,
        )
        .unwrap()
    }

    fn healthy(_: &Node) -> Observed {
        Observed {
            online: true,
            in_force: Some(7),
            state: Some("in_force".into()),
            last: Some(("model_set".into(), 7, "in_force".into(), None)),
            answer: Some(("done".into(), None)),
        }
    }

    #[test]
    fn plans_a_canary_then_waves_and_refuses_bad_plans() {
        let r = plan(5, 1, 2);
        let sizes: Vec<usize> = r.waves.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 2, 2]);
        let bundle = r.bundle.clone();
        let p = |nodes: Vec<Node>, c, w| {
            Rollout::plan(1, bundle.clone(), nodes, c, w, 1, 1, String::new(), 0).map(|_| ())
        };
        assert_eq!(p(vec![], 1, 1), Err(PlanError::NoNodes));
        assert_eq!(p(vec![n(1)], 2, 1), Err(PlanError::Sizes(1)));
        assert_eq!(p(vec![n(1)], 0, 1), Err(PlanError::Sizes(1)));
        assert!(matches!(
            p(vec![n(1), n(1)], 1, 1),
            Err(PlanError::Twice(..))
        ));
    }

    #[test]
    fn the_canary_goes_first_and_the_next_wave_waits_until_it_was_healthy_for_wait_s() {
        let mut r = plan(3, 1, 2);
        assert_eq!(r.step(0, healthy), vec![n(1)], "the canary alone");
        r.sent(&n(1), 100, 0);
        assert!(
            r.step(1_000, |_| Observed::default()).is_empty(),
            "nothing yet"
        );
        assert_eq!(r.nodes[&n(1)].name(), "sent");
        assert!(r.step(2_000, healthy).is_empty());
        assert_eq!(r.nodes[&n(1)].name(), "healthy");
        assert!(r.step(11_999, healthy).is_empty(), "not yet 10 s healthy");
        assert_eq!(r.step(12_000, healthy), vec![n(2), n(3)], "then the wave");
        assert_eq!(r.state, State::Running(1));
        r.sent(&n(2), 101, 12_000);
        r.sent(&n(3), 102, 12_000);
        r.step(13_000, healthy);
        r.step(23_000, healthy);
        assert_eq!(r.state, State::Succeeded);
        assert_eq!(r.json()["state"], "succeeded");
        assert_eq!(r.json()["waves"][0][0]["command"], 100, "kept once done");
        assert_eq!(r.ended_ms, Some(23_000));
    }

    #[test]
    fn a_rollback_stops_the_rollout_naming_the_node_and_why_and_skips_the_rest() {
        let mut r = plan(3, 1, 1);
        r.step(0, healthy);
        r.sent(&n(1), 100, 0);
        r.step(1_000, healthy);
        assert_eq!(r.step(11_000, healthy), vec![n(2)]);
        r.sent(&n(2), 101, 11_000);
        let rolled_back = |_: &Node| Observed {
            online: true,
            in_force: None,
            state: Some("rolled_back".into()),
            last: Some((
                "model_set".into(),
                7,
                "rolled_back".into(),
                Some("no HL7 message arrived".into()),
            )),
            answer: Some(("done".into(), None)),
        };
        assert!(r.step(12_000, rolled_back).is_empty());
        let State::Failed(node, why) = &r.state else {
            panic!("{:?}", r.state)
        };
        assert_eq!(node, &n(2));
        assert!(
            why.contains("rolled back version 7: no HL7 message arrived"),
            "{why}"
        );
        assert_eq!(r.nodes[&n(3)], NodeState::Skipped);
        assert_eq!(r.nodes[&n(1)], NodeState::Done);
        let j = r.json();
        assert_eq!(j["failed"]["node"], "edge-2");
        assert_eq!(j["waves"][2][0]["state"], "skipped");
        assert!(r.step(20_000, healthy).is_empty(), "nothing more is sent");
    }

    #[test]
    fn a_failed_command_silence_and_going_offline_fail_a_node() {
        let mut r = plan(1, 1, 1);
        r.step(0, healthy);
        r.sent(&n(1), 100, 0);
        r.step(1_000, |_| Observed {
            answer: Some(("failed".into(), Some("sha256_mismatch".into()))),
            ..Observed::default()
        });
        assert!(matches!(&r.state, State::Failed(_, w) if w.contains("failed: sha256_mismatch")));

        let mut r = plan(1, 1, 1);
        r.step(0, healthy);
        r.sent(&n(1), 100, 0);
        r.step(61_000, |_| Observed::default());
        assert!(matches!(&r.state, State::Failed(_, w) if w.contains("within 60 s")));

        let mut r = plan(1, 1, 1);
        r.step(0, healthy);
        r.sent(&n(1), 100, 0);
        r.step(1_000, healthy);
        r.step(2_000, |o| Observed {
            online: false,
            ..healthy(o)
        });
        assert!(matches!(&r.state, State::Failed(_, w) if w.contains("offline")));
    }

    #[test]
    fn rollouts_are_numbered_kept_and_changed_in_place() {
        let rs = Rollouts::default();
        let a = rs
            .add(|id| {
                Ok::<_, anyhow::Error>(Rollout {
                    id,
                    ..plan(1, 1, 1)
                })
            })
            .unwrap();
        let b = rs
            .add(|id| {
                Ok::<_, anyhow::Error>(Rollout {
                    id,
                    ..plan(2, 1, 1)
                })
            })
            .unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert!(
            rs.add(|_| Err(anyhow::Error::from(PlanError::NoNodes)))
                .is_err()
        );
        let ids: Vec<u64> = rs.list().iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 1], "newest first; a refused plan takes no id");
        rs.update(1, |r| r.sent(&n(1), 9, 5)).unwrap().unwrap();
        assert_eq!(rs.get(1).unwrap().command_of(&n(1)), Some(9));
        assert!(rs.update(3, |_| ()).unwrap().is_none());
    }

    #[test]
    fn observations_come_from_the_status_and_the_answer() {
        let status = json!({
            "online": true,
            "bundles": {
                "model_set": { "in_force": 7, "state": "in_force" },
                "last": { "kind": "model_set", "version": 7, "step": "in_force", "reason": null },
            },
        });
        let o = Observed::from_status(&status, "model_set", Some(&json!({"status": "done"})));
        assert_eq!(o, healthy(&n(1)));
        let none = Observed::from_status(&Value::Null, "config", None);
        assert_eq!(none, Observed::default());
    }

    #[test]
    fn a_rollout_stored_reads_back_the_same() {
        let mut r = plan(5, 1, 2);
        r.sent(&n(1), 41, 1_000);
        let _ = r.step(2_000, |_| Observed {
            online: true,
            in_force: Some(7),
            state: Some("in_force".into()),
            ..Observed::default()
        });
        r.send_failed(&n(2), "the command was not sent: gone".into(), 3_000);
        let back = Rollout::from_stored(&r.to_stored().expect("json")).expect("read");
        assert_eq!(back.json(), r.json());
        assert_eq!(
            (back.nodes, back.commands),
            (r.nodes.clone(), r.commands.clone())
        );
        assert_eq!(back.state, r.state);
    }

    /// Two instances of a region on one PostgreSQL: a rollout added
    /// through one is seen by the other once it reads again, with a region-
    /// wide id; an update through the other is seen by the first.
    #[test]
    fn shared_rollouts_are_the_regions() {
        let Some(region) = crate::testkit::RegionDb::fresh("rollouts") else {
            return;
        };
        let open = || region.open();
        let (a, b) = (Rollouts::shared(open()), Rollouts::shared(open()));
        let first = a
            .add(|id| {
                Ok::<_, anyhow::Error>(Rollout {
                    id,
                    ..plan(3, 1, 1)
                })
            })
            .expect("add");
        let second = b
            .add(|id| {
                Ok::<_, anyhow::Error>(Rollout {
                    id,
                    ..plan(2, 1, 1)
                })
            })
            .expect("add");
        assert!(second.id > first.id, "ids are the region's");
        assert!(b.get(first.id).is_none(), "not read yet");
        b.refresh().expect("refresh");
        assert_eq!(b.get(first.id).map(|r| r.json()), Some(first.json()));
        assert_eq!(b.running(), vec![first.id, second.id]);
        b.update(first.id, |r| r.send_failed(&n(1), "gone".into(), 9))
            .expect("update")
            .expect("known");
        a.refresh().expect("refresh");
        let seen = a.get(first.id).expect("kept");
        assert!(seen.ended(), "{}", seen.json());
        assert_eq!(a.running(), vec![second.id]);
        assert_eq!(
            a.list().iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![second.id, first.id],
            "newest first"
        );
    }
}
