//! The uplink: ships the event log to the regional cloud, continuously.
//!
//! One task per appliance, driving a [`Shipper`] (the sans-IO state machine
//! it shares with the cloud's DR replication): ask the cloud where it stands
//! (signed `GET /sync/v1/position`), send the events after that position in
//! bounded batches (at most `uplink.batch_events` events and
//! [`cloud_sync_client::MAX_BATCH_BYTES`] of JSON), each signed with the
//! appliance's key, through `cloud-sync-client` only. A gap answer moves the
//! cursor back to the seq the cloud expects; transient failures retry with
//! jittered exponential back-off behind a circuit breaker; a refusal
//! (enrolment, signature, conflicting history, events retention already
//! removed, a cloud ahead of this log) raises an alarm and asks again now
//! and then so an operator's fix is picked up.
//!
//! No acknowledgement is trusted that cannot be checked, since retention
//! prunes by it: the cloud's position and each acknowledgement carry the
//! hash it holds at that seq, which must be this log's, and the seq must
//! not pass what was sent (the shipper decides; this module looks the hash
//! up in the log). One that does not check out is refused like the rest:
//! the acknowledged position becomes unknown, so retention prunes nothing,
//! `/health` shows `refused` with the refusal's code, an error is logged and
//! `hms_uplink_acks_refused_total` counts it.
//!
//! The uplink only reads the log: it never holds the writer, and WAN loss
//! changes nothing a kiosk or the ADT feed sees except the sync figures in
//! `/health` and `/metrics` (acknowledged seq, lag in events and seconds,
//! last success, breaker state, outbox size and its disk alarm).
//!
//! While caught up it also reads the downlink every few seconds
//! ([`super::downlink`]).
//!
//! With several cloud addresses (`uplink.cloud` as a list) it talks to one
//! at a time, chosen by [`super::failover`] (a 421 answer, from a DR
//! replica not promoted for this hospital or a primary fenced from it,
//! moves it on at once); on a move it starts over with
//! the new address's position (a fresh shipper), so nothing is trusted
//! that this address did not acknowledge itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cloud_sync_client::resilience::{Backoff, BreakerConfig};
use cloud_sync_client::shipper::{self, Action, Outcome, Shipper, ShipperConfig};
use cloud_sync_client::{Client, Endpoint, Signer};
use hms_domain::{Envelope, HospitalId, NodeId, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::failover::{Answer, Failover, Move};
use super::status::SyncState;
pub use super::status::{Report, Status};
use crate::metrics::{KindLabels, Metrics, ReasonLabels};
use crate::store::Store;

/// The private key file `hms-edge sync keygen` writes into the data dir.
pub const KEY_FILE: &str = "sync-key.pk8";

/// How long a refused uplink waits before asking the cloud again.
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// How often the downlink (EIDs from the regional EMPI) is read while online.
const DOWNLINK_EVERY: Duration = Duration::from_secs(5);

/// How often the outbox size is measured.
const OUTBOX_EVERY: Duration = Duration::from_secs(2);

/// Per-row overhead added to the body length when sizing the outbox.
const ROW_OVERHEAD: u64 = 200;

/// Everything the uplink needs, resolved from `[uplink]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The cloud's addresses in order of preference (at least one).
    pub endpoints: Vec<Endpoint>,
    /// How long the uplink stays on another address before it tries the
    /// first again.
    pub failback: Duration,
    /// The appliance's signing key.
    pub signer: Arc<Signer>,
    /// This appliance.
    pub node: NodeId,
    /// Its hospital.
    pub hospital: HospitalId,
    /// Most events per batch.
    pub batch_events: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Idle poll interval (commits wake the uplink sooner).
    pub poll: Duration,
    /// Outbox disk budget, bytes.
    pub outbox_budget_bytes: u64,
    /// Alarm threshold, percent of the budget.
    pub outbox_alarm_percent: u64,
    /// Retry timing.
    pub backoff: Backoff,
    /// Breaker settings.
    pub breaker: BreakerConfig,
}

impl Settings {
    /// Reads `[uplink]` of `config` and the key it names (by default
    /// `sync-key.pk8` in the data dir).
    pub fn from_config(config: &firmware_config::Config) -> anyhow::Result<Option<Settings>> {
        let Some(u) = &config.uplink else {
            return Ok(None);
        };
        let endpoints = u
            .cloud
            .iter()
            .map(|url| {
                Endpoint::parse(url, u.ca.as_deref())
                    .map_err(|e| anyhow::anyhow!("uplink.cloud: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            anyhow::bail!("uplink.cloud names no address");
        }
        let key_path: PathBuf = u
            .key_file
            .clone()
            .unwrap_or_else(|| config.store.data_dir.join(KEY_FILE));
        let pkcs8 = std::fs::read(&key_path).with_context(|| {
            format!(
                "reading the sync key {} (make it with `hms-edge sync keygen` and enrol its \
                 public key with `hms-cloud enroll`)",
                key_path.display()
            )
        })?;
        let signer = Signer::new(
            &pkcs8,
            config.node.hospital_id.clone(),
            config.node.node_id.clone(),
        )
        .map_err(|e| anyhow::anyhow!("the sync key {}: {e}", key_path.display()))?;
        Ok(Some(Settings {
            endpoints,
            failback: Duration::from_secs(u.failback_s),
            signer: Arc::new(signer),
            node: config.node.node_id.clone(),
            hospital: config.node.hospital_id.clone(),
            batch_events: u.batch_events.clamp(1, cloud_sync_client::MAX_BATCH_EVENTS),
            timeout: Duration::from_secs(u.timeout_s),
            poll: Duration::from_millis(u.poll_ms),
            outbox_budget_bytes: u.outbox_budget_mb.saturating_mul(1 << 20),
            outbox_alarm_percent: u.outbox_alarm_percent,
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
        }))
    }
}

impl Settings {
    /// The first (preferred) address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoints[0]
    }
}

/// The log as the shipper's source: batches cut at the sync bounds.
struct Log<'a> {
    store: &'a Store,
    batch_events: usize,
}

impl shipper::Source for Log<'_> {
    async fn events_after(&self, after: u64) -> anyhow::Result<Vec<Envelope>> {
        self.store
            .events_after(
                after,
                self.batch_events,
                cloud_sync_client::MAX_BATCH_BYTES,
                ROW_OVERHEAD as usize,
            )
            .await
    }

    async fn hash_at(&self, seq: u64) -> anyhow::Result<Option<hms_domain::EventHash>> {
        self.store.event_hash(seq).await
    }
}

/// Measures the outbox (size, age of the oldest event) and raises or clears
/// the disk alarm.
async fn measure_outbox(
    store: &Store,
    settings: &Settings,
    acked: u64,
    status: &Status,
    metrics: &Metrics,
    alarmed: &mut bool,
) {
    let Ok(o) = store.outbox(acked, ROW_OVERHEAD).await else {
        return;
    };
    let alarm = o.bytes.saturating_mul(100)
        >= settings
            .outbox_budget_bytes
            .saturating_mul(settings.outbox_alarm_percent);
    if alarm && !*alarmed {
        tracing::error!(
            outbox_bytes = o.bytes,
            budget_bytes = settings.outbox_budget_bytes,
            "sync outbox passed its alarm share of the disk budget; events are kept, never dropped"
        );
    }
    *alarmed = alarm;
    metrics.uplink_outbox_events.set(o.events as i64);
    let age = o.oldest_ms.map_or(0.0, |t| {
        (Timestamp::now().as_millis() - t).max(0) as f64 / 1000.0
    });
    status.update(|r| {
        r.outbox_bytes = o.bytes;
        r.outbox_alarm = alarm;
        r.lag_seconds = age;
    });
}

/// Counts a finished exchange in `/metrics`; `refusal`: the shipper's
/// after recording it.
fn count(
    metrics: &Metrics,
    outcome: &Outcome,
    sent: &[(u64, i64)],
    refusal: Option<&shipper::Refusal>,
) {
    if let Some(r) = refusal.filter(|r| r.is_untrusted_ack()) {
        metrics
            .uplink_acks_refused
            .get_or_create(&ReasonLabels { reason: r.code() })
            .inc();
        return;
    }
    let kind = match outcome {
        Outcome::Acked { .. } => "acked",
        Outcome::Gap { .. } => "gap",
        Outcome::Transient(_) => "transient",
        Outcome::Refused { .. } => "refused",
        _ => return,
    };
    metrics
        .uplink_batches
        .get_or_create(&KindLabels { kind })
        .inc();
    if let Outcome::Acked { ack, .. } = outcome {
        let done = Timestamp::now().as_millis();
        let covered: Vec<_> = sent.iter().filter(|(seq, _)| *seq <= ack.seq).collect();
        for (_, t) in &covered {
            metrics
                .uplink_lag_seconds
                .observe((done - t).max(0) as f64 / 1000.0);
        }
        metrics.uplink_events.inc_by(covered.len() as u64);
    }
}

/// Runs the uplink until `shutdown` fires.
pub async fn run(
    store: Store,
    settings: Settings,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let clients: Vec<Client> = settings
        .endpoints
        .iter()
        .cloned()
        .map(Client::new)
        .collect();
    let urls: Vec<String> = settings.endpoints.iter().map(Endpoint::url).collect();
    let mut failover = Failover::new(clients.len(), settings.failback, Instant::now());
    let log = Log {
        store: &store,
        batch_events: settings.batch_events,
    };
    let mut commits = store.watch_commits();
    let new_shipper = || {
        Shipper::new(
            ShipperConfig {
                backoff: settings.backoff,
                breaker: settings.breaker,
                refused_retry: REFUSED_RETRY,
                poll: settings.poll,
            },
            cloud_sync_client::resilience::jitter,
        )
    };
    let mut shipper = new_shipper();
    let mut last_outbox: Option<Instant> = None;
    let mut last_downlink: Option<Instant> = None;
    let mut alarmed = false;
    status.update(|r| {
        *r = Report {
            state: SyncState::Connecting,
            cloud: Some(urls[0].clone()),
            clouds: if urls.len() > 1 { urls.clone() } else { vec![] },
            outbox_budget_bytes: settings.outbox_budget_bytes,
            ..Report::default()
        }
    });
    // After a move: a fresh shipper for the new address, which reports
    // its own position before anything is sent or pruned by it.
    let moved = |mv: Move, failover: &Failover, shipper: &mut Shipper| {
        let to = &urls[failover.current()];
        match mv {
            Move::Failover => {
                tracing::warn!(cloud = %to, "the cloud address in use stopped answering; failing over")
            }
            Move::Failback => tracing::info!(cloud = %to, "back to the first cloud address"),
            Move::Misdirected => tracing::warn!(cloud = %to, "moving to the next cloud address"),
        }
        metrics.uplink_failovers.inc();
        *shipper = new_shipper();
        status.update(|r| {
            r.cloud = Some(to.clone());
            r.failovers = failover.moves();
            r.acked_seq = None;
        });
    };
    while !shutdown.is_cancelled() {
        let local = store.last_seq();
        let now = Instant::now();
        if let Some(mv) = failover.poll(now) {
            moved(mv, &failover, &mut shipper);
        }
        let client = &clients[failover.current()];
        // Also wake for a failback.
        let wake_by = |until: Instant| failover.next_poll().map_or(until, |p| until.min(p));
        if last_outbox.is_none_or(|t| now.duration_since(t) >= OUTBOX_EVERY) {
            last_outbox = Some(now);
            let acked = shipper.acked().unwrap_or(0);
            measure_outbox(&store, &settings, acked, &status, &metrics, &mut alarmed).await;
        }
        let action = shipper.next(now, local);
        status.update(|r| {
            r.state = shipper.phase().into();
            r.local_seq = local;
            r.lag_events = local.saturating_sub(shipper.acked().unwrap_or(0));
            r.breaker = shipper.breaker(now).into();
        });
        match action {
            Action::Idle { until } => {
                if last_downlink.is_none_or(|t| now.duration_since(t) >= DOWNLINK_EVERY) {
                    last_downlink = Some(now);
                    if super::downlink::pull(&store, client, &settings.signer, settings.timeout)
                        .await
                        > 0
                    {
                        continue;
                    }
                }
                status.update(|r| r.lag_seconds = 0.0);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = commits.changed() => {}
                    _ = status.woken() => last_downlink = None,
                    _ = tokio::time::sleep_until(wake_by(until)) => {}
                }
            }
            Action::Wait { until } => {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = status.woken() => {}
                    _ = tokio::time::sleep_until(wake_by(until).max(now + Duration::from_millis(10))) => {}
                }
            }
            Action::AskPosition | Action::Send { .. } => {
                let ex = shipper::exchange(
                    client,
                    &settings.signer,
                    &log,
                    action,
                    Timestamp::now().as_millis(),
                    settings.timeout,
                )
                .await;
                let succeeded = matches!(ex.outcome, Outcome::Acked { .. } | Outcome::Position(_));
                let answer = match &ex.outcome {
                    Outcome::Transient(_) => Answer::Unanswered,
                    Outcome::Refused { status: 421, .. } => Answer::Misdirected,
                    _ => Answer::Answered,
                };
                let at = failover.current();
                let mv = failover.record(answer, Instant::now());
                let mut outcome = ex.outcome;
                if let Outcome::Refused {
                    status: 421,
                    detail,
                } = &outcome
                {
                    tracing::warn!(cloud = %urls[at], "the cloud address does not serve this hospital (421): {detail}");
                    // Not a refusal: another address serves the hospital.
                    outcome = Outcome::Transient(format!("HTTP 421: {detail}"));
                }
                shipper.record(Instant::now(), local, outcome.clone());
                count(&metrics, &outcome, &ex.sent, shipper.refusal());
                if let Outcome::Gap { expected } = outcome
                    && shipper.refusal().is_none()
                {
                    tracing::warn!(expected, "the cloud asked to resend from an earlier seq");
                }
                if let Some(why) = shipper.refusal() {
                    tracing::error!(refusal = why.code(), "uplink refused: {why}");
                } else if let Some(e) = shipper.last_error() {
                    tracing::debug!(error = %e, "uplink exchange failed; retrying");
                }
                status.update(|r| {
                    r.state = shipper.phase().into();
                    // Unknown while connecting or refused: retention then
                    // prunes nothing (see `Status::acknowledged`).
                    r.acked_seq = shipper.acked();
                    r.lag_events = local.saturating_sub(r.acked_seq.unwrap_or(0));
                    r.last_error = shipper.last_error().map(str::to_owned);
                    r.refusal = shipper.refusal().map(shipper::Refusal::code);
                    if succeeded && shipper.refusal().is_none() {
                        r.last_success = Some(Timestamp::now().to_rfc3339());
                    }
                });
                if let Some(mv) = mv {
                    moved(mv, &failover, &mut shipper);
                }
            }
        }
    }
}
