//! The fleet channel: the appliance's status, telemetry and signed
//! commands over MQTT (`[fleet]`; docs/fleet.md). Never the durability
//! layer: with the broker gone the appliance works exactly as before,
//! `/health` shows the `fleet` component `disconnected` (the appliance's own
//! status does not change) and the client reconnects with jittered
//! back-off (0.5 s doubling to 30 s, each wait between half and one and a
//! half times that).
//!
//! Topics, under `hms/v1/{region}/{hospital}/{node}/`:
//! - `status` (retained, QoS 1): published on connect and whenever the
//!   status changes; the last will, retained too, is the same status with
//!   `online: false`, and a clean stop publishes it before leaving;
//! - `telemetry` (QoS 0) every `telemetry_s`;
//! - `cmd` (subscribed, QoS 1): signed commands ([`command`]); each answer
//!   goes to `cmd/result` (QoS 1). Every accepted command is an audit event
//!   (`audit.fleet_command`) before it is carried out, and its id is the
//!   last accepted from then on (kept in the store: replays stay refused
//!   across restarts).
//!
//! `apply_bundle` downloads the bundle off the event loop (a task of its
//! own, one download at a time; its answer is published when it is done):
//! a signed `GET /sync/v1/bundles/{sha256}` to the cloud of `[uplink]`, with
//! the uplink's endpoint and key, at most 64 MiB; the bytes must have the
//! command's SHA-256; then the bundle goes into the inbox
//! ([`crate::bundles::enqueue`]), where the appliance takes, checks and
//! applies it as any other. The answer says it was queued (`{"queued":
//! sha256}`), or why not (`no_uplink`, `fetch_failed` with a short detail,
//! `sha256_mismatch`, `queue_failed`); how applying it went shows later in
//! the status and the audit.
//!
//! The MQTT client id is the node id.

pub mod command;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hms_domain::Timestamp;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, Transport};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync::status::Status as SyncStatus;
use crate::sync::uplink::Settings as UplinkSettings;
use command::{Action, Refusal, Target};

/// Longest a bundle's download may take (or the uplink's request timeout,
/// when that is longer).
pub const BUNDLE_FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest detail of a failed download, in characters.
const MAX_DETAIL_CHARS: usize = 200;

/// What the fleet channel reads and drives: the store, the metrics, the
/// uplink (`sync_now`), and the `/health` report as a token holder sees it
/// (given by the appliance, which owns the HTTP side).
#[derive(Clone)]
pub struct Ctx {
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The uplink's state.
    pub sync: Arc<SyncStatus>,
    /// The API tokens (`revoke_token`).
    pub tokens: crate::auth::Tokens,
    /// The `/health` report.
    pub health: Arc<dyn Fn() -> Value + Send + Sync>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

/// The fleet channel's settings, from `[fleet]` (and `[uplink]`, the cloud
/// `apply_bundle` downloads from).
#[derive(Clone)]
pub struct Settings {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    keepalive: Duration,
    telemetry: Duration,
    key: [u8; 32],
    target: Target,
    uplink: Option<UplinkSettings>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("broker", &format!("{}:{}", self.host, self.port))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// From the configuration; `None` without `[fleet]`. The command key
    /// must be the raw 32 bytes of an Ed25519 public key; `[uplink]`, if
    /// any, is read as the uplink reads it (its endpoint and key).
    pub fn from_config(cfg: &firmware_config::Config) -> anyhow::Result<Option<Settings>> {
        let Some(f) = &cfg.fleet else {
            return Ok(None);
        };
        let raw = std::fs::read(&f.command_key)
            .with_context(|| format!("reading fleet.command_key {}", f.command_key.display()))?;
        let key: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "fleet.command_key {} is not an Ed25519 public key (the raw 32 bytes `hms-cloud fleet keygen` writes to FILE.pub); it has {} bytes",
                f.command_key.display(),
                raw.len()
            )
        })?;
        let tls = match (&f.broker.tls, &f.ca) {
            (true, Some(ca)) => {
                let client = f.client_cert.as_deref().zip(f.client_key.as_deref());
                Some(Arc::new(hms_web::tls::client_config(ca, client)?))
            }
            (true, None) => anyhow::bail!("fleet.broker is mqtts:// but fleet.ca is missing"),
            (false, _) => None,
        };
        let uplink = UplinkSettings::from_config(cfg)
            .context("reading [uplink] for the fleet's apply_bundle")?;
        Ok(Some(Settings {
            host: f.broker.host.clone(),
            port: f.broker.port,
            tls,
            keepalive: Duration::from_secs(f.keepalive_s),
            telemetry: Duration::from_secs(f.telemetry_s),
            key,
            target: Target {
                region: cfg.node.region.to_string(),
                hospital: cfg.node.hospital_id.to_string(),
                node: cfg.node.node_id.to_string(),
            },
            uplink,
        }))
    }

    fn topic(&self, leaf: &str) -> String {
        let t = &self.target;
        format!("hms/v1/{}/{}/{}/{leaf}", t.region, t.hospital, t.node)
    }
}

/// Whether the fleet channel is up, for `/health`.
#[derive(Debug, Default)]
pub struct Link {
    enabled: AtomicBool,
    connected: AtomicBool,
}

impl Link {
    /// A link for a configured channel.
    pub fn enabled() -> Arc<Link> {
        let l = Link::default();
        l.enabled.store(true, Ordering::Relaxed);
        Arc::new(l)
    }

    /// `/health`'s `fleet` component: `disabled`, `connected` or `disconnected`.
    pub fn state(&self) -> &'static str {
        match (
            self.enabled.load(Ordering::Relaxed),
            self.connected.load(Ordering::Relaxed),
        ) {
            (false, _) => "disabled",
            (true, true) => "connected",
            (true, false) => "disconnected",
        }
    }
}

/// The retained status (see the module doc); `online` and the uptime are
/// set by the caller.
fn status(state: &Ctx, settings: &Settings) -> Value {
    let report = (state.health)();
    let components: serde_json::Map<String, Value> = report["components"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v["status"].clone()))
        .collect();
    let sync = &report["components"]["uplink"]["sync"];
    json!({
        "online": true,
        "region": settings.target.region,
        "hospital": settings.target.hospital,
        "node": settings.target.node,
        "version": env!("CARGO_PKG_VERSION"),
        "build": option_env!("HMS_BUILD").unwrap_or("unknown"),
        "health": { "status": report["status"], "components": components },
        "acked_seq": sync["acked_seq"],
        "local_seq": state.store.last_seq(),
        "lag_seconds": sync["lag_seconds"],
        "outbox_bytes": sync["outbox_bytes"],
        "model_set": report["components"]["models"]["set"],
        "config_version": report["components"]["bundles"]["config"]["in_force"],
        // Signed bundles: versions in force, highest, state, and the last
        // step (the cloud's rollouts judge each node by it).
        "bundles": {
            "config": report["components"]["bundles"]["config"],
            "model_set": report["components"]["bundles"]["model_set"],
            "last": report["components"]["bundles"]["last"],
        },
    })
}

/// The telemetry message: the census by bed state, ADT messages a minute
/// and the ACK p99 since the last report, parked messages, disk free,
/// memory and CPU time.
async fn telemetry(state: &Ctx, adt_per_min: f64, ack_p99_ms: Option<f64>) -> Value {
    let view = state.store.view();
    let mut census = serde_json::Map::new();
    for b in view.beds() {
        let k = b.state.name();
        let n = census.get(k).and_then(Value::as_u64).unwrap_or(0);
        census.insert(k.to_owned(), json!(n + 1));
    }
    let (rss, cpu) = crate::metrics::process_usage();
    let parked = state.store.parked().await.map(|p| p.len()).ok();
    json!({
        "at": Timestamp::now(),
        "census": census,
        "adt_messages_per_min": (adt_per_min * 10.0).round() / 10.0,
        "ack_p99_ms": ack_p99_ms,
        "parked": parked,
        "disk_free_bytes": crate::metrics::disk_free(state.store.data_dir()),
        "rss_bytes": rss,
        "cpu_seconds": (cpu * 100.0).round() / 100.0,
    })
}

/// Runs the fleet channel until `shutdown`.
pub async fn run(settings: Settings, state: Ctx, link: Arc<Link>, shutdown: CancellationToken) {
    let started = Instant::now();
    let status_topic = settings.topic("status");
    let mut will = status(&state, &settings);
    will["online"] = json!(false);
    // Node ids repeat between hospitals (`edge-1`), and two clients with
    // one id push each other off the region's broker. `@` is in no id, and
    // brokers take it (rumqttd refuses `/`, `+`, `#` and `$`).
    let client_id = format!("{}@{}", settings.target.node, settings.target.hospital);
    let mut opts = MqttOptions::new(client_id, &settings.host, settings.port);
    opts.set_keep_alive(settings.keepalive);
    opts.set_clean_session(true);
    opts.set_last_will(LastWill::new(
        &status_topic,
        will.to_string(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(tls) = &settings.tls {
        opts.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut events) = AsyncClient::new(opts, 64);
    let mut last_status: Option<Value> = None;
    let mut last_id = state.store.fleet_command_id().await.unwrap_or(0);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut telemetry_tick = tokio::time::interval(settings.telemetry);
    telemetry_tick.tick().await;
    let mut adt_seen = crate::metrics::hl7_total(&state.metrics);
    let mut acks_seen = state.metrics.hl7_ack_window.snapshot();
    let mut adt_at = Instant::now();
    let mut backoff = Duration::from_millis(500);
    // Commands whose answer waits for slow work (a bundle's download).
    let mut slow = tokio::task::JoinSet::new();
    let downloads = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = slow.join_next(), if !slow.is_empty() => {}
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    link.connected.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(500);
                    tracing::info!(broker = %settings.host, "fleet channel connected");
                    let _ = client.try_subscribe(settings.topic("cmd"), QoS::AtLeastOnce);
                    last_status = None;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == settings.topic("cmd") => {
                    match handle(&settings, &state, &p.payload, &mut last_id, &downloads).await {
                        Answer::Now(result) => {
                            let _ = client.try_publish(
                                settings.topic("cmd/result"),
                                QoS::AtLeastOnce,
                                false,
                                result.to_string(),
                            );
                        }
                        Answer::Later(work) => {
                            let (client, topic) = (client.clone(), settings.topic("cmd/result"));
                            slow.spawn(async move {
                                let result = work.await;
                                let _ = client
                                    .publish(topic, QoS::AtLeastOnce, false, result.to_string())
                                    .await;
                            });
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if link.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "fleet channel lost; reconnecting");
                    }
                    // Jittered back-off, up to 30 s, before the next attempt.
                    let jitter = rand_fraction();
                    let wait = backoff.mul_f64(0.5 + jitter);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            },
            _ = status_tick.tick() => {
                if link.connected.load(Ordering::Relaxed) {
                    let now = status(&state, &settings);
                    if last_status.as_ref() != Some(&now) {
                        let mut out = now.clone();
                        out["uptime_s"] = json!(started.elapsed().as_secs());
                        if client
                            .try_publish(&status_topic, QoS::AtLeastOnce, true, out.to_string())
                            .is_ok()
                        {
                            last_status = Some(now);
                        }
                    }
                }
            }
            _ = telemetry_tick.tick() => {
                let total = crate::metrics::hl7_total(&state.metrics);
                let acks = state.metrics.hl7_ack_window.snapshot();
                let minutes = adt_at.elapsed().as_secs_f64() / 60.0;
                let rate = if minutes > 0.0 {
                    total.saturating_sub(adt_seen) as f64 / minutes
                } else {
                    0.0
                };
                let p99 = crate::metrics::AckWindow::quantile_ms(&acks_seen, &acks, 0.99);
                (adt_seen, acks_seen, adt_at) = (total, acks, Instant::now());
                if link.connected.load(Ordering::Relaxed) {
                    let t = telemetry(&state, rate, p99).await;
                    let _ = client.try_publish(
                        settings.topic("telemetry"),
                        QoS::AtMostOnce,
                        false,
                        t.to_string(),
                    );
                }
            }
        }
    }
    // Downloads in flight stop with the channel, unanswered (a bundle they
    // queued stays queued).
    slow.shutdown().await;
    // A clean stop says so before leaving (the will is for the unclean ones).
    if link.connected.load(Ordering::Relaxed) {
        let mut last = status(&state, &settings);
        last["online"] = json!(false);
        last["uptime_s"] = json!(started.elapsed().as_secs());
        let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, last.to_string());
        let _ = client.try_disconnect();
        let drain = async {
            while let Ok(ev) = events.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
    link.connected.store(false, Ordering::Relaxed);
}

/// A fraction in [0, 1) for the back-off's jitter.
fn rand_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A command's answer: at once, or once slow work is done (off the event
/// loop).
enum Answer {
    /// The result to publish now.
    Now(Value),
    /// The work whose output is the result to publish.
    Later(Pin<Box<dyn Future<Output = Value> + Send>>),
}

/// Checks and carries out one command; the result to publish (or the work
/// that makes it).
async fn handle(
    settings: &Settings,
    state: &Ctx,
    bytes: &[u8],
    last_id: &mut u64,
    downloads: &Arc<tokio::sync::Semaphore>,
) -> Answer {
    let refused = |reason: Refusal, id: Option<u64>| {
        tracing::warn!(reason = reason.as_str(), id, "fleet command refused");
        Answer::Now(json!({ "id": id, "status": "refused", "reason": reason.as_str() }))
    };
    let cmd = match command::check(
        bytes,
        &settings.key,
        &settings.target,
        *last_id,
        Timestamp::now(),
    ) {
        Ok(c) => c,
        Err((reason, id)) => return refused(reason, id),
    };
    // Recorded (and the id kept) before it is carried out.
    if let Err(e) = state
        .store
        .record_fleet_command(cmd.id, cmd.action.name())
        .await
    {
        tracing::warn!(error = %e, "recording a fleet command failed; not carried out");
        return Answer::Now(
            json!({ "id": cmd.id, "status": "failed", "reason": "store_unavailable" }),
        );
    }
    *last_id = cmd.id;
    let name = cmd.action.name();
    let failed =
        |reason: &str| Answer::Now(json!({ "id": cmd.id, "status": "failed", "reason": reason }));
    let result = match cmd.action {
        Action::Ping => json!({ "pong": Timestamp::now(), "version": env!("CARGO_PKG_VERSION") }),
        Action::SyncNow => {
            state.sync.wake();
            json!({ "sync": "started" })
        }
        Action::RevokeToken { name: token } => {
            // The revocation itself is recorded as `audit.token_revoked`
            // (actor `fleet:{id}`) by the token follower, like any other.
            let (tokens, by) = (state.tokens.clone(), format!("fleet:{}", cmd.id));
            let done = tokio::task::spawn_blocking(move || {
                let r = tokens.revoke(&token, &by);
                // Take effect at once, not at the next poll.
                let _ = tokens.refresh();
                r
            })
            .await;
            match done {
                Ok(Ok(crate::store::credentials::Revocation::Revoked(n))) => {
                    json!({ "revoked": n })
                }
                Ok(Ok(crate::store::credentials::Revocation::AlreadyRevoked)) => {
                    json!({ "revoked": 0, "already_revoked": true })
                }
                Ok(Ok(crate::store::credentials::Revocation::Unknown)) => {
                    return failed("unknown_token");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "revoking a token for the fleet failed");
                    return failed("store_unavailable");
                }
                Err(_) => return failed("store_unavailable"),
            }
        }
        Action::ApplyBundle { sha256, .. } => {
            let Some(uplink) = settings.uplink.clone() else {
                tracing::warn!(
                    id = cmd.id,
                    "apply_bundle: no [uplink] to fetch the bundle from"
                );
                return failed("no_uplink");
            };
            return Answer::Later(Box::pin(apply_bundle(
                uplink,
                state.store.data_dir().to_path_buf(),
                cmd.id,
                sha256,
                downloads.clone(),
            )));
        }
    };
    tracing::info!(id = cmd.id, command = name, "fleet command carried out");
    Answer::Now(json!({ "id": cmd.id, "status": "done", "command": name, "result": result }))
}

/// Carries out `apply_bundle` `id` (see the module doc): downloads bundle
/// `sha256` from the cloud of `uplink` (its addresses in order; one download at a time, as
/// `downloads` allows), checks its SHA-256 and queues it in `data_dir`'s
/// inbox; the result to publish.
async fn apply_bundle(
    uplink: UplinkSettings,
    data_dir: PathBuf,
    id: u64,
    sha256: String,
    downloads: Arc<tokio::sync::Semaphore>,
) -> Value {
    let failed = |reason: &str| json!({ "id": id, "status": "failed", "reason": reason });
    // Closed only if the channel is gone; then nobody waits for the answer.
    let _one = downloads.acquire_owned().await;
    // From the cloud's addresses in order: the first that has it.
    let mut fetched = Err(anyhow::anyhow!("no cloud address"));
    for endpoint in &uplink.endpoints {
        let client = cloud_sync_client::Client::new(endpoint.clone());
        fetched = client
            .bundle(
                &uplink.signer,
                &sha256,
                Timestamp::now().as_millis(),
                BUNDLE_FETCH_TIMEOUT.max(uplink.timeout),
            )
            .await
            .map_err(anyhow::Error::from);
        if fetched.is_ok() {
            break;
        }
    }
    let bytes = match fetched {
        Ok(b) => b,
        Err(e) => {
            let detail: String = e.to_string().chars().take(MAX_DETAIL_CHARS).collect();
            tracing::warn!(id, sha256 = %sha256, error = %detail, "apply_bundle: the download failed");
            let mut answer = failed("fetch_failed");
            answer["detail"] = json!(detail);
            return answer;
        }
    };
    if crate::bundles::sha256_hex(&bytes) != sha256 {
        tracing::warn!(id, sha256 = %sha256, size = bytes.len(), "apply_bundle: the bundle downloaded has another SHA-256; not queued");
        return failed("sha256_mismatch");
    }
    let queued =
        tokio::task::spawn_blocking(move || crate::bundles::enqueue(&data_dir, &bytes)).await;
    match queued {
        Ok(Ok(sha)) => {
            tracing::info!(id, sha256 = %sha, "apply_bundle: the bundle was downloaded and queued");
            json!({ "id": id, "status": "done", "command": "apply_bundle", "result": { "queued": sha } })
        }
        Ok(Err(e)) => {
            tracing::warn!(id, error = %format!("{e:#}"), "apply_bundle: queueing the bundle failed");
            failed("queue_failed")
        }
        Err(_) => failed("queue_failed"),
    }
}
