//! The uplink: ships the event log to the regional cloud, continuously.
//!
//! One task per appliance. It asks the cloud where it stands (signed
//! `GET /sync/v1/position`), then sends the events after that position in
//! bounded batches (at most `uplink.batch_events` events and
//! [`cloud_sync_client::MAX_BATCH_BYTES`] of JSON), each signed with the
//! appliance's key, through `cloud-sync-client` only. The cloud's answer is
//! the new acknowledged position; a gap answer moves the cursor back to the
//! seq the cloud expects (the explicit resync path), transient failures
//! retry with jittered exponential backoff behind a circuit breaker, and a
//! refusal (enrolment, signature, conflicting history) raises an alarm and
//! retries slowly so an operator's fix is picked up.
//!
//! The uplink only reads the log: it never holds the writer, and WAN loss
//! changes nothing a kiosk or the ADT feed sees except the sync figures in
//! `/health` and `/metrics` (acknowledged seq, lag in events and seconds,
//! last success, breaker state, outbox size and its disk alarm).
//!
//! While caught up it also reads the downlink every few seconds: the EIDs
//! the regional EMPI assigned to this hospital's patients, each recorded as
//! an `empi.eid_assigned` event through the writer (so the patient index,
//! the projection and the resume position follow from the log).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use cloud_sync_client::resilience::{Backoff, Breaker, BreakerConfig, BreakerState};
use cloud_sync_client::{Client, Endpoint, PushError, Signer};
use hms_domain::sync::SyncBatch;
use hms_domain::{Envelope, HospitalId, NodeId, Timestamp};
use rusqlite::params;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{KindLabels, Metrics};
use crate::store::Store;
use crate::store::projection::{EVENT_COLUMNS, event_from_row};

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
    /// The cloud.
    pub endpoint: Endpoint,
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
        let endpoint = Endpoint::parse(&u.cloud, u.ca.as_deref())
            .map_err(|e| anyhow::anyhow!("uplink.cloud: {e}"))?;
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
            endpoint,
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

/// The uplink's state as `/health` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// `disabled`, `connecting`, `online`, `offline` or `refused`.
    pub state: &'static str,
    /// The cloud's URL.
    pub cloud: Option<String>,
    /// Highest seq the cloud acknowledged (none until it answered once).
    pub acked_seq: Option<u64>,
    /// Highest seq committed locally.
    pub local_seq: u64,
    /// Events not yet acknowledged.
    pub lag_events: u64,
    /// Age of the oldest unacknowledged event, seconds.
    pub lag_seconds: f64,
    /// Last acknowledged batch (RFC 3339).
    pub last_success: Option<String>,
    /// Last failure, without PHI (status and the cloud's problem detail).
    pub last_error: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Approximate bytes of unacknowledged events.
    pub outbox_bytes: u64,
    /// The disk budget for them.
    pub outbox_budget_bytes: u64,
    /// Whether the outbox passed its alarm share of the budget.
    pub outbox_alarm: bool,
}

impl Report {
    /// Whether the uplink is healthy (disabled counts as healthy: the appliance runs alone).
    pub fn ok(&self) -> bool {
        matches!(self.state, "disabled" | "online" | "connecting") && !self.outbox_alarm
    }
}

/// Shared, cheap-to-read sync state.
#[derive(Debug, Default)]
pub struct Status(Mutex<Report>);

impl Status {
    /// The state of an appliance without an uplink.
    pub fn disabled() -> Arc<Status> {
        Arc::new(Status(Mutex::new(Report {
            state: "disabled",
            breaker: "closed",
            ..Report::default()
        })))
    }

    /// A copy of the current report.
    pub fn report(&self) -> Report {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The report with the local figures brought up to `local_seq` (the
    /// uplink may be asleep in a back-off while commits go on).
    pub fn report_at(&self, local_seq: u64) -> Report {
        let mut r = self.report();
        if r.state != "disabled" {
            r.local_seq = r.local_seq.max(local_seq);
            r.lag_events = r.local_seq.saturating_sub(r.acked_seq.unwrap_or(0));
        }
        r
    }

    fn update(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn breaker_name(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::Open { .. } => "open",
        BreakerState::HalfOpen { .. } => "half_open",
    }
}

/// A jitter value in [0, 1) from the clock (retry spreading, not security).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000) / 1_000.0
}

/// Up to `max` events after `after`, cut at the batch byte bound.
async fn read_batch(store: &Store, after: u64, max: usize) -> anyhow::Result<Vec<Envelope>> {
    store
        .read(move |conn, hospital| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after as i64, max as i64], |r| {
                event_from_row(hospital, r)
            })?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for row in rows {
                let e = row?;
                bytes += e.body.len() + ROW_OVERHEAD as usize;
                if !out.is_empty() && bytes > cloud_sync_client::MAX_BATCH_BYTES {
                    break;
                }
                out.push(e);
            }
            Ok(out)
        })
        .await
}

/// (events, approximate bytes, recorded_at of the oldest) after `after`.
async fn outbox(store: &Store, after: u64) -> anyhow::Result<(u64, u64, Option<i64>)> {
    store
        .read(move |conn, _| {
            let (n, bytes): (i64, i64) = conn.query_row(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM events WHERE seq > ?1",
                [after as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let oldest: Option<i64> = conn
                .query_row(
                    "SELECT recorded_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1",
                    [after as i64],
                    |r| r.get(0),
                )
                .ok();
            let n = n.max(0) as u64;
            Ok((n, bytes.max(0) as u64 + n * ROW_OVERHEAD, oldest))
        })
        .await
}

/// Records a refusal: `/health` shows it and the log says it once per try.
fn refuse(status: &Status, msg: String) {
    tracing::error!("{msg}");
    status.update(|r| {
        r.state = "refused";
        r.last_error = Some(msg);
    });
}

/// Sleeps `d`; false when shutdown came first.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The downlink position the store has applied (meta `downlink_seq`).
async fn downlink_position(store: &Store) -> u64 {
    store
        .read(|conn, _| {
            Ok(conn
                .query_row(
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'downlink_seq'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0))
        })
        .await
        .map_or(0, |v| v.max(0) as u64)
}

/// Reads the downlink after the store's position and records each EID
/// assignment as an event (through the writer). Returns how many.
async fn pull_downlink(store: &Store, client: &Client, settings: &Settings) -> usize {
    let after = downlink_position(store).await;
    let now_ms = Timestamp::now().as_millis();
    let list = match client
        .downlink(&settings.signer, after, now_ms, settings.timeout)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "downlink not read");
            return 0;
        }
    };
    let mut applied = 0;
    for a in list {
        let req = crate::store::WriteRequest {
            cmd: crate::board::Command::AssignEid {
                mrn: a.mrn,
                eid: a.eid,
                downlink_seq: a.seq,
            },
            actor: hms_domain::Actor::system(),
            correlation: Some(format!("downlink:{}", a.seq)),
            occurred_at: None,
        };
        if let Err(e) = store.write(req).await {
            tracing::warn!(error = %e, seq = a.seq, "an EID assignment was not recorded; retried later");
            break;
        }
        applied += 1;
    }
    applied
}

/// Runs the uplink until `shutdown` fires.
pub async fn run(
    store: Store,
    settings: Settings,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let client = Client::new(settings.endpoint.clone());
    let mut commits = store.watch_commits();
    let mut breaker = Breaker::new(settings.breaker);
    let mut attempt: u32 = 0;
    let mut acked: Option<u64> = None;
    let mut last_outbox: Option<Instant> = None;
    let mut last_downlink: Option<Instant> = None;
    let mut alarmed = false;
    status.update(|r| {
        *r = Report {
            state: "connecting",
            cloud: Some(settings.endpoint.url()),
            breaker: "closed",
            outbox_budget_bytes: settings.outbox_budget_bytes,
            ..Report::default()
        }
    });
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let local = store.last_seq();
        let now = Instant::now();
        // Outbox size, lag and the disk alarm, measured every few seconds.
        if last_outbox.is_none_or(|t| now.duration_since(t) >= OUTBOX_EVERY) {
            last_outbox = Some(now);
            if let Ok((n, bytes, oldest)) = outbox(&store, acked.unwrap_or(0)).await {
                let alarm = bytes.saturating_mul(100)
                    >= settings
                        .outbox_budget_bytes
                        .saturating_mul(settings.outbox_alarm_percent);
                if alarm && !alarmed {
                    tracing::error!(
                        outbox_bytes = bytes,
                        budget_bytes = settings.outbox_budget_bytes,
                        "sync outbox passed its alarm share of the disk budget; \
                         events are kept, never dropped"
                    );
                }
                alarmed = alarm;
                metrics.uplink_outbox_events.set(n as i64);
                let age = oldest.map_or(0.0, |t| {
                    (Timestamp::now().as_millis() - t).max(0) as f64 / 1000.0
                });
                status.update(|r| {
                    r.outbox_bytes = bytes;
                    r.outbox_alarm = alarm;
                    r.lag_seconds = age;
                });
            }
        }
        status.update(|r| {
            r.local_seq = local;
            r.lag_events = local.saturating_sub(acked.unwrap_or(0));
            r.breaker = breaker_name(breaker.state(now));
        });

        // Caught up: read the downlink now and then; wait for a commit, the
        // poll interval or shutdown.
        if acked.is_some_and(|a| a >= local) {
            if last_downlink.is_none_or(|t| now.duration_since(t) >= DOWNLINK_EVERY) {
                last_downlink = Some(now);
                if pull_downlink(&store, &client, &settings).await > 0 {
                    continue;
                }
            }
            status.update(|r| r.lag_seconds = 0.0);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = commits.changed() => {}
                _ = tokio::time::sleep(settings.poll) => {}
            }
            continue;
        }
        if !breaker.allow(now) {
            let wait = match breaker.state(now) {
                BreakerState::Open { until } => until.saturating_duration_since(now),
                _ => settings.poll,
            };
            status.update(|r| {
                r.state = "offline";
                r.breaker = "open";
            });
            if !pause(&shutdown, wait.max(Duration::from_millis(10))).await {
                break;
            }
            continue;
        }
        let now_ms = Timestamp::now().as_millis();
        let outcome = match acked {
            None => client
                .position(&settings.signer, now_ms, settings.timeout)
                .await
                .map(|p| (p.acked_seq, 0usize, None)),
            Some(after) => match read_batch(&store, after, settings.batch_events).await {
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "uplink could not read the log");
                    if !pause(&shutdown, settings.poll).await {
                        break;
                    }
                    continue;
                }
                Ok(events) if events.is_empty() => {
                    // Nothing to send after all (the cursor is ahead of the log).
                    acked = Some(local.max(after));
                    continue;
                }
                Ok(events) if events[0].seq != after + 1 => {
                    // The cloud wants events retention already removed here
                    // (it lost what it had acknowledged): only an operator can
                    // settle that, from the cloud's DR peer or a backup.
                    let msg = format!(
                        "the cloud asks for events from seq {} but this appliance keeps them \
                         only from seq {} (retention): restore the cloud's copy from its DR \
                         peer or a backup",
                        after + 1,
                        events[0].seq
                    );
                    refuse(&status, msg);
                    acked = None;
                    if !pause(&shutdown, REFUSED_RETRY).await {
                        break;
                    }
                    continue;
                }
                Ok(events) => {
                    let n = events.len();
                    let stamps: Vec<i64> =
                        events.iter().map(|e| e.recorded_at.as_millis()).collect();
                    let first = events[0].seq;
                    let batch = SyncBatch {
                        hospital: settings.hospital.clone(),
                        node: settings.node.clone(),
                        events,
                    };
                    client
                        .push(&settings.signer, &batch, now_ms, settings.timeout)
                        .await
                        .map(|p| (p.acked_seq, n, Some((first, stamps))))
                }
            },
        };
        let now = Instant::now();
        match outcome {
            Ok((seq, sent, stamps)) => {
                breaker.record(true, now);
                attempt = 0;
                if let Some((first, stamps)) = stamps {
                    metrics
                        .uplink_batches
                        .get_or_create(&KindLabels { kind: "acked" })
                        .inc();
                    let done = Timestamp::now().as_millis();
                    let covered = seq.saturating_sub(first - 1).min(sent as u64) as usize;
                    for t in &stamps[..covered] {
                        metrics
                            .uplink_lag_seconds
                            .observe((done - t).max(0) as f64 / 1000.0);
                    }
                    metrics.uplink_events.inc_by(covered as u64);
                }
                if acked.is_none() && seq > local {
                    let msg = format!(
                        "the cloud holds {seq} events but this appliance only {local}: \
                         this data dir is not the one the cloud knows (restore it with \
                         `hms-edge restore --from-cloud`)"
                    );
                    refuse(&status, msg);
                    if !pause(&shutdown, REFUSED_RETRY).await {
                        break;
                    }
                    continue;
                }
                acked = Some(seq);
                status.update(|r| {
                    r.state = "online";
                    r.acked_seq = Some(seq);
                    r.lag_events = local.saturating_sub(seq);
                    r.last_success = Some(Timestamp::now().to_rfc3339());
                    r.last_error = None;
                });
            }
            Err(PushError::Gap { expected }) => {
                // The explicit resync path: the cloud names the seq it needs next.
                breaker.record(true, now);
                metrics
                    .uplink_batches
                    .get_or_create(&KindLabels { kind: "gap" })
                    .inc();
                tracing::warn!(expected, "the cloud asked to resend from an earlier seq");
                acked = Some(expected.saturating_sub(1));
            }
            Err(PushError::Transient(why)) => {
                breaker.record(false, now);
                metrics
                    .uplink_batches
                    .get_or_create(&KindLabels { kind: "transient" })
                    .inc();
                let delay = settings.backoff.delay(attempt, jitter());
                attempt = attempt.saturating_add(1);
                tracing::debug!(error = %why, delay_ms = delay.as_millis() as u64, "cloud unreachable; retrying");
                status.update(|r| {
                    r.state = "offline";
                    r.last_error = Some(why);
                    r.breaker = breaker_name(breaker.state(now));
                });
                if !pause(&shutdown, delay).await {
                    break;
                }
            }
            Err(PushError::Refused {
                status: code,
                detail,
            }) => {
                breaker.record(true, now);
                metrics
                    .uplink_batches
                    .get_or_create(&KindLabels { kind: "refused" })
                    .inc();
                refuse(
                    &status,
                    format!("the cloud refused the uplink (HTTP {code}): {detail}"),
                );
                // Ask again later: an operator may fix the enrolment.
                acked = None;
                if !pause(&shutdown, REFUSED_RETRY).await {
                    break;
                }
            }
        }
    }
}
