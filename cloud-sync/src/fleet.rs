//! The cloud's side of the MQTT fleet channel (docs/fleet.md): what the
//! region's appliances report, and the signed commands sent to them.
//!
//! - [`Fleet`]: the registry, in memory, fed by [`run`]. Per appliance
//!   (hospital, node): its last status (retained on the broker, so a
//!   restarted cloud has it again at once from an external broker; the
//!   embedded one starts empty and hears each again as it reconnects), whether it is online (the
//!   status's `online`; the broker publishes the appliance's last will,
//!   `online: false`, when it vanishes), when it was last heard from, and
//!   its last [`TELEMETRY_KEPT`] telemetry messages, a [`Sample`] per
//!   telemetry message over the last [`HISTORY_KEPT`] (sync lag and ADT
//!   rate, for the console's sparklines); and the results of commands by
//!   (hospital, node, id). An enrolled appliance never heard
//!   from on MQTT is listed with `online` `"unknown"` ([`Fleet::nodes`]).
//! - [`FleetKey`]: the fleet's Ed25519 signing key (`hms-cloud fleet
//!   keygen`); [`FleetKey::sign`] makes the envelope the appliance checks:
//!   `{"payload": "<the command as JSON text>", "signature": "<base64
//!   Ed25519 signature of the payload's bytes>"}`, the payload naming `id`,
//!   `region`, `hospital`, `node`, `expires_at` and `command` (and
//!   `name` for `revoke_token`; `sha256` and `url`, the bundle's path on
//!   this cloud, for `apply_bundle`).
//! - [`Link`]: the MQTT client the HTTP handlers publish commands with
//!   (QoS 1 on `hms/v1/{region}/{hospital}/{node}/cmd`) and whether it is
//!   connected; [`run`] drives its event loop: it subscribes to the
//!   region's `+/+/status`, `+/+/telemetry` and `+/+/cmd/result` on every
//!   connection, feeds the registry, reconnects with jittered back-off
//!   (0.5 s doubling to 30 s) and leaves cleanly when cancelled.
//!
//! Command ids come from the registry database
//! ([`crate::store::registry::RegistryDb::next_fleet_command_id`]): above
//! the last one given to the node, and at least the current time in
//! milliseconds, so they keep increasing across restarts.
//!
//! With one instance (SQLite) nothing here is durable but the ids: MQTT is
//! not the durability layer, and a command result that arrives while the
//! cloud is down is lost (the appliance's audit keeps every accepted
//! command). With several instances on PostgreSQL ([`Fleet::share`]),
//! every instance subscribes to the region's broker and so hears every
//! status and telemetry message itself (statuses are retained there);
//! commands and results are written to the region's database and read by
//! the others every second, so each instance shows every command,
//! whichever sent it and whichever heard its result.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use hms_domain::{HospitalId, NodeId, RegionId, Timestamp};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::FleetConfig;
use crate::enrolment::Enrolment;
use crate::store::registry::RegistryDb;

/// Telemetry messages kept per appliance (an hour at the default 60 s).
pub const TELEMETRY_KEPT: usize = 60;

/// History samples kept per appliance (six hours at the default 60 s).
pub const HISTORY_KEPT: usize = 360;

/// One point of an appliance's history, taken at each telemetry message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the telemetry arrived, ms.
    pub at_ms: i64,
    /// The sync lag its last status reported, seconds.
    pub lag_seconds: Option<f64>,
    /// HL7 messages per minute the telemetry reported.
    pub adt_per_min: Option<f64>,
}

/// Command results kept in all (the oldest go first).
pub const RESULTS_KEPT: usize = 10_000;

/// Largest MQTT message accepted (a status is about a kilobyte).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// One appliance, as the fleet channel knows it.
#[derive(Debug, Clone, Default)]
struct Node {
    status: Option<Value>,
    last_seen_ms: Option<i64>,
    telemetry: VecDeque<Value>,
    history: VecDeque<Sample>,
}

/// A command this cloud (or, shared, its region) sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The command's name.
    pub command: String,
    /// When it was sent, ms.
    pub sent_ms: i64,
    /// Its expiry, ms.
    pub expires_ms: i64,
    /// Who sent it (`operator:{token}`).
    pub by: String,
}

type Key = (HospitalId, NodeId);

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<Key, Node>,
    sent: HashMap<(Key, u64), Sent>,
    results: HashMap<(Key, u64), (i64, Value)>,
    order: VecDeque<(Key, u64)>,
}

/// What a message from the broker was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A status of the node (or its removal: an empty retained message).
    Status(HospitalId, NodeId),
    /// A telemetry message.
    Telemetry(HospitalId, NodeId),
    /// A command's result.
    Result(HospitalId, NodeId, u64),
    /// Not a topic or payload of this region's fleet channel (ignored).
    Ignored(&'static str),
}

/// The fleet registry (see the module doc).
#[derive(Debug)]
pub struct Fleet {
    region: RegionId,
    inner: Mutex<Inner>,
    /// With several instances (PostgreSQL): where commands and results
    /// are shared ([`Fleet::share`]), and the last revision read.
    shared: std::sync::OnceLock<Arc<RegistryDb>>,
    read_rev: std::sync::atomic::AtomicI64,
}

/// Where a command stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its result: `{"id", "status": "done" | "refused" | "failed", …}`.
    Answered {
        /// When it arrived, ms.
        at_ms: i64,
        /// The appliance's answer.
        result: Value,
    },
    /// Sent, not answered yet.
    Pending(Sent),
}

impl Fleet {
    /// An empty registry of `region`'s appliances.
    pub fn new(region: RegionId) -> Fleet {
        Fleet {
            region,
            inner: Mutex::new(Inner::default()),
            shared: std::sync::OnceLock::new(),
            read_rev: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Shares commands and results with the region's other instances
    /// through `db` (PostgreSQL): each sent command and each result
    /// received is written there ([`Fleet::persist_sent`],
    /// [`Fleet::persist_result`]) and what the others wrote is read every
    /// second ([`Fleet::refresh`]).
    pub fn share(&self, db: Arc<RegistryDb>) {
        let _ = self.shared.set(db);
    }

    /// Whether commands and results are shared.
    pub fn is_shared(&self) -> bool {
        self.shared.get().is_some()
    }

    /// Writes a sent command to the region's database (nothing when not
    /// shared). Blocking.
    pub fn persist_sent(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        id: u64,
        sent: &Sent,
    ) -> anyhow::Result<()> {
        match self.shared.get() {
            Some(db) => db.put_fleet_sent(
                hospital,
                node,
                id,
                &sent.command,
                sent.sent_ms,
                sent.expires_ms,
                &sent.by,
            ),
            None => Ok(()),
        }
    }

    /// Writes the result of command `id`, as [`Fleet::record`] kept it, to
    /// the region's database (nothing when not shared or not held).
    /// Blocking.
    pub fn persist_result(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        id: u64,
    ) -> anyhow::Result<()> {
        let Some(db) = self.shared.get() else {
            return Ok(());
        };
        let k = ((hospital.clone(), node.clone()), id);
        let Some((at_ms, result)) = self.lock().results.get(&k).cloned() else {
            return Ok(());
        };
        db.put_fleet_result(hospital, node, id, &result.to_string(), at_ms)
    }

    /// Reads the commands and results the region's instances wrote since
    /// the last read (nothing when not shared). Blocking.
    pub fn refresh(&self) -> anyhow::Result<()> {
        let Some(db) = self.shared.get() else {
            return Ok(());
        };
        loop {
            let after = self.read_rev.load(Ordering::Relaxed);
            let rows = db.fleet_commands_since(after, 1_000)?;
            let Some(last) = rows.last().map(|r| r.rev) else {
                return Ok(());
            };
            let more = rows.len() == 1_000;
            let mut inner = self.lock();
            for r in rows {
                let k = ((r.hospital, r.node), r.id);
                let mut new = false;
                if let Some((command, sent_ms, expires_ms, by)) = r.sent {
                    new |= inner
                        .sent
                        .insert(
                            k.clone(),
                            Sent {
                                command,
                                sent_ms,
                                expires_ms,
                                by,
                            },
                        )
                        .is_none();
                }
                if let Some((json, at_ms)) = r.result
                    && let Ok(v) = serde_json::from_str::<Value>(&json)
                {
                    new |= inner.results.insert(k.clone(), (at_ms, v)).is_none();
                }
                if new && !inner.order.contains(&k) {
                    inner.order.push_back(k);
                }
            }
            inner.trim();
            drop(inner);
            self.read_rev.store(last, Ordering::Relaxed);
            if !more {
                return Ok(());
            }
        }
    }

    /// The region.
    pub fn region(&self) -> &RegionId {
        &self.region
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic `leaf` of `node` of `hospital`.
    pub fn topic(&self, hospital: &HospitalId, node: &NodeId, leaf: &str) -> String {
        format!("hms/v1/{}/{hospital}/{node}/{leaf}", self.region)
    }

    /// The topic filters to subscribe to: every appliance of the region.
    pub fn filters(&self) -> [String; 3] {
        ["status", "telemetry", "cmd/result"].map(|l| format!("hms/v1/{}/+/+/{l}", self.region))
    }

    /// Records a message from the broker on `topic`, received at `now_ms`.
    pub fn record(&self, topic: &str, payload: &[u8], now_ms: i64) -> Seen {
        let mut parts = topic.splitn(6, '/');
        let (Some("hms"), Some("v1"), Some(region), Some(h), Some(n), Some(leaf)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Seen::Ignored("not a fleet topic");
        };
        if region != self.region.as_str() {
            return Seen::Ignored("another region");
        }
        let (Ok(hospital), Ok(node)) = (h.parse::<HospitalId>(), n.parse::<NodeId>()) else {
            return Seen::Ignored("not a hospital and node id");
        };
        let key = (hospital.clone(), node.clone());
        if leaf == "status" && payload.is_empty() {
            // A retained status cleared: the appliance is gone from the fleet.
            self.lock().nodes.remove(&key);
            return Seen::Status(hospital, node);
        }
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            return Seen::Ignored("not JSON");
        };
        if !value.is_object() {
            return Seen::Ignored("not a JSON object");
        }
        let mut inner = self.lock();
        match leaf {
            "status" => {
                let n = inner.nodes.entry(key).or_default();
                n.status = Some(value);
                n.last_seen_ms = Some(now_ms);
                Seen::Status(hospital, node)
            }
            "telemetry" => {
                let n = inner.nodes.entry(key).or_default();
                n.last_seen_ms = Some(now_ms);
                if n.telemetry.len() == TELEMETRY_KEPT {
                    n.telemetry.pop_front();
                }
                let sample = Sample {
                    at_ms: now_ms,
                    lag_seconds: n
                        .status
                        .as_ref()
                        .and_then(|s| s.get("lag_seconds"))
                        .and_then(Value::as_f64),
                    adt_per_min: value.get("adt_messages_per_min").and_then(Value::as_f64),
                };
                n.telemetry.push_back(value);
                if n.history.len() == HISTORY_KEPT {
                    n.history.pop_front();
                }
                n.history.push_back(sample);
                Seen::Telemetry(hospital, node)
            }
            "cmd/result" => {
                let Some(id) = value.get("id").and_then(Value::as_u64) else {
                    // A refusal before the signature verified names no id.
                    return Seen::Ignored("a result without an id");
                };
                if let Some(n) = inner.nodes.get_mut(&key) {
                    n.last_seen_ms = Some(now_ms);
                }
                let k = (key, id);
                if inner.results.insert(k.clone(), (now_ms, value)).is_none() {
                    inner.order.push_back(k);
                }
                inner.trim();
                Seen::Result(hospital, node, id)
            }
            _ => Seen::Ignored("another topic"),
        }
    }

    /// Notes a command sent (so it reads `pending` until its result comes).
    pub fn sent(&self, hospital: &HospitalId, node: &NodeId, id: u64, sent: Sent) {
        let mut inner = self.lock();
        let k = ((hospital.clone(), node.clone()), id);
        if inner.sent.insert(k.clone(), sent).is_none() {
            inner.order.push_back(k);
        }
        inner.trim();
    }

    /// Where command `id` of `node` of `hospital` stands; `None` when this
    /// cloud neither sent it (since it started) nor saw its result.
    pub fn outcome(&self, hospital: &HospitalId, node: &NodeId, id: u64) -> Option<Outcome> {
        let inner = self.lock();
        let k = ((hospital.clone(), node.clone()), id);
        if let Some((at_ms, result)) = inner.results.get(&k) {
            return Some(Outcome::Answered {
                at_ms: *at_ms,
                result: result.clone(),
            });
        }
        inner.sent.get(&k).cloned().map(Outcome::Pending)
    }

    /// The history of `node` of `hospital`, oldest first (empty when never
    /// heard from).
    pub fn history(&self, hospital: &HospitalId, node: &NodeId) -> Vec<Sample> {
        self.lock()
            .nodes
            .get(&(hospital.clone(), node.clone()))
            .map(|n| n.history.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The commands of `node` of `hospital` this cloud sent or saw
    /// answered since it started, newest first, at most `limit`.
    pub fn commands(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        limit: usize,
    ) -> Vec<(u64, Outcome)> {
        let inner = self.lock();
        let key = (hospital.clone(), node.clone());
        let mut ids: Vec<u64> = inner
            .order
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.into_iter()
            .take(limit)
            .filter_map(|id| {
                let k = (key.clone(), id);
                let outcome = match inner.results.get(&k) {
                    Some((at_ms, result)) => Outcome::Answered {
                        at_ms: *at_ms,
                        result: result.clone(),
                    },
                    None => Outcome::Pending(inner.sent.get(&k)?.clone()),
                };
                Some((id, outcome))
            })
            .collect()
    }

    /// Whether `node` of `hospital` was heard from on MQTT.
    pub fn knows(&self, hospital: &HospitalId, node: &NodeId) -> bool {
        self.lock()
            .nodes
            .contains_key(&(hospital.clone(), node.clone()))
    }

    /// Every appliance heard from, and every `enrolled` one that was not
    /// (`online: "unknown"`), sorted by hospital and node: the rows of
    /// `GET /api/v1/fleet`.
    pub fn nodes(&self, enrolled: &[Enrolment]) -> Vec<Value> {
        let inner = self.lock();
        let mut keys: Vec<Key> = inner.nodes.keys().cloned().collect();
        for e in enrolled {
            let k = (e.hospital.clone(), e.node.clone());
            if !inner.nodes.contains_key(&k) {
                keys.push(k);
            }
        }
        keys.sort();
        keys.iter()
            .map(|(h, n)| self.row(h, n, inner.nodes.get(&(h.clone(), n.clone()))))
            .collect()
    }

    /// One appliance with its recent telemetry (oldest first), if it was
    /// heard from or is among `enrolled`.
    pub fn node(
        &self,
        hospital: &HospitalId,
        node: &NodeId,
        enrolled: &[Enrolment],
    ) -> Option<Value> {
        let inner = self.lock();
        let seen = inner.nodes.get(&(hospital.clone(), node.clone()));
        if seen.is_none()
            && !enrolled
                .iter()
                .any(|e| &e.hospital == hospital && &e.node == node)
        {
            return None;
        }
        let mut row = self.row(hospital, node, seen);
        row["status"] = seen.and_then(|s| s.status.clone()).unwrap_or(Value::Null);
        row["telemetry"] = json!(seen.map(|s| s.telemetry.iter().collect::<Vec<_>>()));
        if row["telemetry"].is_null() {
            row["telemetry"] = json!([]);
        }
        Some(row)
    }

    fn row(&self, hospital: &HospitalId, node: &NodeId, seen: Option<&Node>) -> Value {
        let status = seen.and_then(|s| s.status.as_ref());
        let field = |k: &str| {
            status
                .and_then(|s| s.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let online = match status
            .and_then(|s| s.get("online"))
            .and_then(Value::as_bool)
        {
            Some(b) => json!(b),
            None => json!("unknown"),
        };
        json!({
            "region": self.region,
            "hospital": hospital,
            "node": node,
            "online": online,
            "last_seen": seen
                .and_then(|s| s.last_seen_ms)
                .map(|ms| Timestamp::from_millis(ms).to_rfc3339()),
            "version": field("version"),
            "acked_seq": field("acked_seq"),
            "local_seq": field("local_seq"),
            "lag_seconds": field("lag_seconds"),
            "model_set": field("model_set"),
            "config_version": field("config_version"),
            "health": field("health"),
        })
    }
}

impl Inner {
    /// Forgets the oldest commands and results past [`RESULTS_KEPT`].
    fn trim(&mut self) {
        while self.order.len() > RESULTS_KEPT {
            if let Some(k) = self.order.pop_front() {
                self.sent.remove(&k);
                self.results.remove(&k);
            }
        }
    }
}

/// What a command asks of an appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Answer with the time and the appliance's version.
    Ping,
    /// Ship the log to the cloud now.
    SyncNow,
    /// Revoke the appliance's API token `name`.
    RevokeToken {
        /// The token's name.
        name: String,
    },
    /// Fetch the signed bundle `sha256` from this cloud and queue it for
    /// applying.
    ApplyBundle {
        /// The bundle file's SHA-256, 64 lower-case hex digits.
        sha256: String,
    },
}

impl Command {
    /// The command's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::SyncNow => "sync_now",
            Command::RevokeToken { .. } => "revoke_token",
            Command::ApplyBundle { .. } => "apply_bundle",
        }
    }

    /// From a name and the token name `revoke_token` needs (`apply_bundle`
    /// needs a SHA-256: [`Command::parse_with`]).
    pub fn parse(name: &str, token: Option<&str>) -> Result<Command, String> {
        Command::parse_with(name, token, None)
    }

    /// From a name, the token name `revoke_token` needs and the bundle's
    /// SHA-256 `apply_bundle` needs (64 lower-case hex digits).
    pub fn parse_with(
        name: &str,
        token: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Command, String> {
        if name != "apply_bundle" && sha256.is_some() {
            return Err(format!("{name} takes no \"sha256\""));
        }
        match (name, token) {
            ("ping", None) => Ok(Command::Ping),
            ("sync_now", None) => Ok(Command::SyncNow),
            ("revoke_token", Some(t)) if !t.trim().is_empty() && t.len() <= 64 => {
                Ok(Command::RevokeToken { name: t.to_owned() })
            }
            ("revoke_token", _) => Err("revoke_token needs \"name\": the token's name".into()),
            ("ping" | "sync_now" | "apply_bundle", Some(_)) => {
                Err(format!("{name} takes no \"name\""))
            }
            ("apply_bundle", None) => match sha256 {
                Some(s) if crate::bundles::is_sha256(s) => Ok(Command::ApplyBundle {
                    sha256: s.to_owned(),
                }),
                Some(_) => Err(
                    "apply_bundle's \"sha256\" is not a SHA-256 (64 lower-case hex digits)".into(),
                ),
                None => Err(
                    "apply_bundle needs \"sha256\": the SHA-256 of a bundle uploaded to \
                     POST /api/v1/fleet/bundles"
                        .into(),
                ),
            },
            _ => Err(format!(
                "unknown command {name:?}; use ping, sync_now, revoke_token or apply_bundle"
            )),
        }
    }
}

/// The path on this cloud an appliance fetches bundle `sha256` from
/// (`GET /sync/v1/bundles/{sha256}`, signed as its other sync reads).
pub fn bundle_url(sha256: &str) -> String {
    format!("{}/{sha256}", cloud_sync_client::push::BUNDLES)
}

/// The fleet's Ed25519 signing key.
pub struct FleetKey(ring::signature::Ed25519KeyPair);

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(..)")
    }
}

impl FleetKey {
    /// From a PKCS#8 document (as `hms-cloud fleet keygen` writes it).
    pub fn from_pkcs8(pkcs8: &[u8]) -> anyhow::Result<FleetKey> {
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map(FleetKey)
            .map_err(|_| anyhow::anyhow!("not a PKCS#8 Ed25519 private key"))
    }

    /// The raw 32-byte public key (what appliances hold as `command_key`).
    pub fn public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.0.public_key().as_ref().to_vec()
    }

    /// The signed envelope of command `id` for `node` of `hospital` in
    /// `region`, refused by the appliance from `expires_at` on.
    pub fn sign(
        &self,
        id: u64,
        region: &RegionId,
        hospital: &HospitalId,
        node: &NodeId,
        expires_at: Timestamp,
        command: &Command,
    ) -> String {
        let mut payload = json!({
            "id": id,
            "region": region,
            "hospital": hospital,
            "node": node,
            "expires_at": expires_at,
            "command": command.name(),
        });
        match command {
            Command::RevokeToken { name } => payload["name"] = json!(name),
            Command::ApplyBundle { sha256 } => {
                payload["sha256"] = json!(sha256);
                payload["url"] = json!(bundle_url(sha256));
            }
            Command::Ping | Command::SyncNow => {}
        }
        let payload = payload.to_string();
        let signature = self.0.sign(payload.as_bytes());
        json!({
            "payload": payload,
            "signature": base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        })
        .to_string()
    }
}

/// The MQTT client commands are published with, and whether it is
/// connected (set by [`run`]).
#[derive(Debug)]
pub struct Link {
    client: AsyncClient,
    connected: AtomicBool,
    broker: String,
}

impl Link {
    /// Whether the broker is connected now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The broker, as `host:port` (for messages).
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Queues `message` for `topic`, QoS 1, not retained; fails when the
    /// client's queue is full or the event loop is gone.
    pub fn publish(&self, topic: String, message: String) -> anyhow::Result<()> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, message)
            .context("queueing the MQTT message")
    }
}

/// The fleet channel as `[fleet]` configures it, as the handlers share it:
/// the registry, the link and the signing key (if any).
#[derive(Debug, Clone)]
pub struct Channel {
    /// The registry.
    pub fleet: Arc<Fleet>,
    /// The client.
    pub link: Arc<Link>,
    /// The signing key; none: commands are refused.
    pub key: Option<Arc<FleetKey>>,
}

impl Channel {
    /// Opens what `cfg` names (the key file, the CA and client certificate),
    /// connecting nothing yet; `cfg` as [`crate::config::load`] checked it.
    /// The event loop returned is for [`run`].
    pub fn open(cfg: &FleetConfig, region: &RegionId) -> anyhow::Result<(Channel, EventLoop)> {
        let broker = cfg
            .endpoint
            .clone()
            .map_or_else(|| crate::config::Broker::parse(&cfg.broker), Ok)
            .map_err(anyhow::Error::msg)?;
        let key = match &cfg.key_file {
            Some(p) => {
                let raw = std::fs::read(p).with_context(|| format!("key_file {}", p.display()))?;
                Some(Arc::new(
                    FleetKey::from_pkcs8(&raw)
                        .with_context(|| format!("key_file {}", p.display()))?,
                ))
            }
            None => None,
        };
        // Unique per process by default: several instances of a region
        // share its broker, and two clients with one id push each other off.
        let client_id = cfg.client_id.clone().unwrap_or_else(|| {
            let mut suffix = [0u8; 4];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut suffix);
            format!(
                "hms-cloud-{region}-{}",
                suffix
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        });
        let mut opts = MqttOptions::new(client_id, &broker.host, broker.port);
        opts.set_keep_alive(Duration::from_secs(cfg.keepalive_s));
        opts.set_clean_session(true);
        opts.set_max_packet_size(MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES);
        if broker.tls {
            let ca = cfg.ca.as_deref().context("mqtts:// needs ca")?;
            let client = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
            let tls = hms_web::tls::client_config(ca, client)?;
            opts.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
            ));
        }
        let (client, events) = AsyncClient::new(opts, 256);
        let channel = Channel {
            fleet: Arc::new(Fleet::new(region.clone())),
            link: Arc::new(Link {
                client,
                connected: AtomicBool::new(false),
                broker: format!("{}:{}", broker.host, broker.port),
            }),
            key,
        };
        Ok((channel, events))
    }
}

/// Drives the fleet channel's event loop until `shutdown` (see the module
/// doc), then disconnects (waiting at most 2 s for the broker).
pub async fn run(
    fleet: Arc<Fleet>,
    link: Arc<Link>,
    mut events: EventLoop,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = refresh.tick(), if fleet.is_shared() => {
                // What the region's other instances sent and received.
                let f = fleet.clone();
                match tokio::task::spawn_blocking(move || f.refresh()).await {
                    Ok(Ok(())) => failing = false,
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::warn!(error = %format!("{e:#}"), "cannot read the region's fleet commands; retrying");
                    }
                    _ => {}
                }
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    link.connected.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(500);
                    tracing::info!(broker = %link.broker, "fleet channel connected");
                    // Statuses and telemetry at QoS 0: a status is retained
                    // (the broker hands every one over again on each
                    // subscription, and rumqttd hands a QoS 1 subscription
                    // only its first 100 retained messages); results at QoS 1.
                    let [status, telemetry, results] = fleet.filters();
                    for (f, qos) in [
                        (status, QoS::AtMostOnce),
                        (telemetry, QoS::AtMostOnce),
                        (results, QoS::AtLeastOnce),
                    ] {
                        let _ = link.client.try_subscribe(f, qos);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let seen = fleet.record(&p.topic, &p.payload, Timestamp::now().as_millis());
                    match seen {
                        Seen::Ignored(why) => tracing::debug!(why, "fleet message ignored"),
                        Seen::Result(h, n, id) if fleet.is_shared() => {
                            // Shared with the region's other instances.
                            let fleet = fleet.clone();
                            tokio::task::spawn_blocking(move || {
                                if let Err(e) = fleet.persist_result(&h, &n, id) {
                                    tracing::warn!(error = %format!("{e:#}"), "could not share a command result");
                                }
                            });
                        }
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if link.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "fleet channel lost; reconnecting");
                    } else {
                        tracing::debug!(error = %e, "fleet broker unreachable");
                    }
                    let wait = backoff.mul_f64(0.5 + rand_fraction());
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            },
        }
    }
    if link.connected.swap(false, Ordering::Relaxed) {
        let _ = link.client.try_disconnect();
        let drain = async {
            while let Ok(ev) = events.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    tracing::info!("fleet channel stopped");
}

fn rand_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::id;

    fn fleet() -> Fleet {
        Fleet::new(id("eu-west"))
    }

    fn enrolled(h: &str, n: &str) -> Enrolment {
        Enrolment {
            hospital: id(h),
            region: id("eu-west"),
            node: id(n),
            public_key: vec![0; 32],
        }
    }

    fn status(online: bool) -> Vec<u8> {
        json!({
            "online": online, "region": "eu-west", "hospital": "h1", "node": "edge-1",
            "version": "0.1.0", "acked_seq": 40, "local_seq": 42, "lag_seconds": 1.5,
            "model_set": "2026.1", "config_version": null,
            "health": { "status": "ok", "components": { "uplink": "ok" } },
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn statuses_show_online_then_offline_and_enrolled_unseen_nodes_are_unknown() {
        let f = fleet();
        let e = [enrolled("h1", "edge-1"), enrolled("h2", "edge-9")];
        assert_eq!(
            f.record("hms/v1/eu-west/h1/edge-1/status", &status(true), 1_000),
            Seen::Status(id("h1"), id("edge-1"))
        );
        let rows = f.nodes(&e);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let r = &rows[0];
        assert_eq!(
            (&r["hospital"], &r["node"]),
            (&json!("h1"), &json!("edge-1"))
        );
        assert_eq!(r["online"], true);
        assert_eq!(r["last_seen"], "1970-01-01T00:00:01.000Z");
        assert_eq!(
            (
                &r["version"],
                &r["acked_seq"],
                &r["local_seq"],
                &r["lag_seconds"]
            ),
            (&json!("0.1.0"), &json!(40), &json!(42), &json!(1.5))
        );
        assert_eq!(
            (&r["model_set"], &r["region"]),
            (&json!("2026.1"), &json!("eu-west"))
        );
        assert_eq!(r["health"]["status"], "ok");
        assert_eq!(rows[1]["online"], "unknown");
        assert_eq!(rows[1]["last_seen"], Value::Null);
        assert_eq!(rows[1]["version"], Value::Null);
        // The last will: offline.
        f.record("hms/v1/eu-west/h1/edge-1/status", &status(false), 2_000);
        assert_eq!(f.nodes(&e)[0]["online"], false);
        // An appliance not enrolled (yet) but heard from is listed too.
        f.record("hms/v1/eu-west/h3/edge-3/status", &status(true), 3_000);
        let rows = f.nodes(&e);
        let ids: Vec<_> = rows.iter().map(|r| r["hospital"].clone()).collect();
        assert_eq!(ids, [json!("h1"), json!("h2"), json!("h3")]);
        // A cleared retained status forgets it.
        f.record("hms/v1/eu-west/h3/edge-3/status", b"", 4_000);
        assert_eq!(f.nodes(&e).len(), 2);
        assert!(!f.knows(&id("h3"), &id("edge-3")));
    }

    #[test]
    fn telemetry_keeps_the_last_sixty_messages_in_order() {
        let f = fleet();
        for i in 0..75 {
            let t = json!({ "at": i, "parked": 0 }).to_string();
            assert_eq!(
                f.record("hms/v1/eu-west/h1/edge-1/telemetry", t.as_bytes(), i),
                Seen::Telemetry(id("h1"), id("edge-1"))
            );
        }
        let n = f.node(&id("h1"), &id("edge-1"), &[]).expect("seen");
        let t = n["telemetry"].as_array().expect("array");
        assert_eq!(t.len(), TELEMETRY_KEPT);
        assert_eq!((&t[0]["at"], &t[59]["at"]), (&json!(15), &json!(74)));
        // Telemetry alone says nothing about being online.
        assert_eq!(n["online"], "unknown");
        assert_eq!(n["last_seen"], "1970-01-01T00:00:00.074Z");
        assert_eq!(n["status"], Value::Null);
        // Enrolled but never heard from: no telemetry; unknown: none.
        let e = [enrolled("h2", "edge-2")];
        let n = f.node(&id("h2"), &id("edge-2"), &e).expect("enrolled");
        assert_eq!(
            (&n["online"], &n["telemetry"]),
            (&json!("unknown"), &json!([]))
        );
        assert!(f.node(&id("h2"), &id("edge-3"), &e).is_none());
    }

    #[test]
    fn results_are_kept_by_node_and_id_and_pending_until_they_come() {
        let f = fleet();
        let (h, n) = (id::<HospitalId>("h1"), id::<NodeId>("edge-1"));
        assert_eq!(f.outcome(&h, &n, 7), None);
        let sent = |by: &str| Sent {
            command: "ping".into(),
            sent_ms: 10,
            expires_ms: 70,
            by: by.into(),
        };
        f.sent(&h, &n, 7, sent("operator:ops"));
        assert_eq!(
            f.outcome(&h, &n, 7),
            Some(Outcome::Pending(sent("operator:ops")))
        );
        let answer = json!({ "id": 7, "status": "done", "command": "ping", "result": {} });
        assert_eq!(
            f.record(
                "hms/v1/eu-west/h1/edge-1/cmd/result",
                answer.to_string().as_bytes(),
                20
            ),
            Seen::Result(h.clone(), n.clone(), 7)
        );
        assert_eq!(
            f.outcome(&h, &n, 7),
            Some(Outcome::Answered {
                at_ms: 20,
                result: answer
            })
        );
        // Another node's id 7 is another command.
        assert_eq!(f.outcome(&h, &id("edge-2"), 7), None);
        // A refusal without an id, another region, garbage: ignored.
        let refused = json!({ "id": null, "status": "refused", "reason": "bad_signature" });
        for (topic, payload) in [
            ("hms/v1/eu-west/h1/edge-1/cmd/result", refused.to_string()),
            ("hms/v1/us-east/h1/edge-1/status", "{}".to_owned()),
            ("hms/v1/eu-west/h1/edge-1/status", "not json".to_owned()),
            ("hms/v1/eu-west/h 1/edge-1/status", "{}".to_owned()),
            ("hms/v1/eu-west/h1/edge-1/cmd", "{}".to_owned()),
            ("other/topic", "{}".to_owned()),
        ] {
            assert!(
                matches!(f.record(topic, payload.as_bytes(), 30), Seen::Ignored(_)),
                "{topic}"
            );
        }
        // Bounded: the oldest go first.
        for i in 0..RESULTS_KEPT as u64 {
            f.sent(&h, &n, 100 + i, sent("x"));
        }
        assert_eq!(f.outcome(&h, &n, 7), None);
        assert!(f.outcome(&h, &n, 100).is_some());
    }

    /// Two instances of a region on one PostgreSQL: a command sent by one
    /// reads pending at the other; its result, heard by the other, reads
    /// answered at the first; a result twice keeps the first.
    #[test]
    fn commands_and_results_are_shared_by_the_regions_instances() {
        let Some(region) = crate::testkit::RegionDb::fresh("fleet") else {
            return;
        };
        let open = || {
            let f = fleet();
            f.share(region.open());
            f
        };
        let (a, b) = (open(), open());
        let (h, n): (HospitalId, NodeId) = (id("h1"), id("edge-1"));
        let sent = Sent {
            command: "ping".into(),
            sent_ms: 10,
            expires_ms: 70_010,
            by: "operator:ops".into(),
        };
        a.sent(&h, &n, 7, sent.clone());
        a.persist_sent(&h, &n, 7, &sent).expect("share");
        assert_eq!(b.outcome(&h, &n, 7), None, "not read yet");
        b.refresh().expect("refresh");
        assert_eq!(b.outcome(&h, &n, 7), Some(Outcome::Pending(sent.clone())));
        let topic = "hms/v1/eu-west/h1/edge-1/cmd/result";
        let done = json!({ "id": 7, "status": "done" }).to_string();
        assert_eq!(
            b.record(topic, done.as_bytes(), 20),
            Seen::Result(h.clone(), n.clone(), 7)
        );
        b.persist_result(&h, &n, 7).expect("share");
        // Another instance heard it too, later: the first result stays.
        let late = Fleet::new(id("eu-west"));
        late.share(b.shared.get().expect("shared").clone());
        late.record(
            topic,
            json!({ "id": 7, "status": "failed" })
                .to_string()
                .as_bytes(),
            30,
        );
        late.persist_result(&h, &n, 7).expect("share");
        a.refresh().expect("refresh");
        match a.outcome(&h, &n, 7) {
            Some(Outcome::Answered { at_ms, result }) => {
                assert_eq!((at_ms, result["status"].as_str()), (20, Some("done")));
            }
            other => panic!("not answered at the first instance: {other:?}"),
        }
        assert_eq!(a.commands(&h, &n, 10).len(), 1);
        assert_eq!(b.commands(&h, &n, 10).len(), 1);
    }

    #[test]
    fn signed_commands_verify_with_the_public_key_and_name_their_target() {
        let (pkcs8, public) = cloud_sync_client::generate_key().expect("key");
        let key = FleetKey::from_pkcs8(&pkcs8).expect("key");
        assert_eq!(key.public_key(), public);
        let envelope = key.sign(
            42,
            &id("eu-west"),
            &id("h1"),
            &id("edge-1"),
            Timestamp::from_millis(1_000),
            &Command::RevokeToken {
                name: "kiosk-3".into(),
            },
        );
        let v: Value = serde_json::from_str(&envelope).expect("json");
        let payload = v["payload"].as_str().expect("payload");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(v["signature"].as_str().expect("signature"))
            .expect("base64");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(payload.as_bytes(), &sig)
            .expect("verifies");
        let p: Value = serde_json::from_str(payload).expect("payload json");
        assert_eq!(
            p,
            json!({ "id": 42, "region": "eu-west", "hospital": "h1", "node": "edge-1",
                    "expires_at": "1970-01-01T00:00:01.000Z", "command": "revoke_token",
                    "name": "kiosk-3" })
        );
        assert!(FleetKey::from_pkcs8(b"not a key").is_err());
        assert_eq!(Command::parse("ping", None), Ok(Command::Ping));
        assert_eq!(Command::parse("sync_now", None), Ok(Command::SyncNow));
        assert!(Command::parse("revoke_token", None).is_err());
        assert!(Command::parse("ping", Some("x")).is_err());
        assert!(
            Command::parse("reboot", None)
                .expect_err("unknown")
                .contains("unknown command")
        );
        assert!(
            Command::parse("apply_bundle", None)
                .expect_err("no sha256")
                .contains("needs \"sha256\"")
        );
    }

    #[test]
    fn apply_bundle_carries_the_sha256_and_the_path_to_fetch_and_other_commands_stay_as_they_were()
    {
        let (pkcs8, _) = cloud_sync_client::generate_key().expect("key");
        let key = FleetKey::from_pkcs8(&pkcs8).expect("key");
        let payload = |command: &Command| -> Value {
            let v: Value = serde_json::from_str(&key.sign(
                7,
                &id("eu-west"),
                &id("h1"),
                &id("edge-1"),
                Timestamp::from_millis(1_000),
                command,
            ))
            .expect("json");
            serde_json::from_str(v["payload"].as_str().expect("payload")).expect("payload json")
        };
        let sha = "ab".repeat(32);
        let apply = Command::parse_with("apply_bundle", None, Some(&sha)).expect("apply_bundle");
        assert_eq!(
            apply,
            Command::ApplyBundle {
                sha256: sha.clone()
            }
        );
        assert_eq!(apply.name(), "apply_bundle");
        assert_eq!(
            payload(&apply),
            json!({ "id": 7, "region": "eu-west", "hospital": "h1", "node": "edge-1",
                    "expires_at": "1970-01-01T00:00:01.000Z", "command": "apply_bundle",
                    "sha256": sha, "url": format!("/sync/v1/bundles/{sha}") })
        );
        // The commands before it: exactly their members, nothing added.
        assert_eq!(
            payload(&Command::Ping),
            json!({ "id": 7, "region": "eu-west", "hospital": "h1", "node": "edge-1",
                    "expires_at": "1970-01-01T00:00:01.000Z", "command": "ping" })
        );
        for (name, token, sha256, why) in [
            ("apply_bundle", None, Some("AB".repeat(32)), "not a SHA-256"),
            ("apply_bundle", None, Some("ab".repeat(31)), "not a SHA-256"),
            (
                "apply_bundle",
                None,
                Some("../../etc/passwd".to_owned()),
                "not a SHA-256",
            ),
            (
                "apply_bundle",
                Some("x"),
                Some(sha.clone()),
                "takes no \"name\"",
            ),
            ("ping", None, Some(sha.clone()), "takes no \"sha256\""),
            (
                "revoke_token",
                Some("x"),
                Some(sha.clone()),
                "takes no \"sha256\"",
            ),
        ] {
            let e = Command::parse_with(name, token, sha256.as_deref()).expect_err(why);
            assert!(e.contains(why), "{name}: {e}");
        }
    }
}
