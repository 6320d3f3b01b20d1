//! Prometheus metrics of the appliance (`GET /metrics`).
//!
//! One [`Metrics`] registry is shared by the store writer, the HTTP layer and
//! the live stream. Board gauges (beds per unit and state) are computed from
//! the current board view at scrape time, so they can never drift.

use std::fmt::Write as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::board::BoardView;

/// Upper bounds of [`AckWindow`]'s buckets: 50 µs doubling, 16 of them,
/// as `hl7_ack_duration_seconds`.
const ACK_BOUNDS: [f64; 16] = {
    let mut b = [0.0; 16];
    let mut i = 0;
    let mut x = 0.000_05;
    while i < 16 {
        b[i] = x;
        x *= 2.0;
        i += 1;
    }
    b
};

/// HL7 ACK times counted in buckets the appliance can read: a quantile
/// between two snapshots is the upper bound of the bucket that holds it.
#[derive(Debug, Default)]
pub struct AckWindow {
    counts: [std::sync::atomic::AtomicU64; 17],
}

impl AckWindow {
    /// Counts one ACK time.
    pub fn observe(&self, seconds: f64) {
        let i = ACK_BOUNDS.iter().position(|b| seconds <= *b).unwrap_or(16);
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> [u64; 17] {
        std::array::from_fn(|i| self.counts[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The `q` quantile, milliseconds, of the ACKs counted between `before`
    /// and `after` (the bucket's upper bound; the last bucket has none: its
    /// lower bound); `None` without ACKs.
    pub fn quantile_ms(before: &[u64; 17], after: &[u64; 17], q: f64) -> Option<f64> {
        let d: Vec<u64> = (0..17)
            .map(|i| after[i].saturating_sub(before[i]))
            .collect();
        let total: u64 = d.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in d.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(ACK_BOUNDS[i.min(15)] * 1000.0);
            }
        }
        Some(ACK_BOUNDS[15] * 1000.0)
    }
}

/// The HL7 messages counted so far (every outcome).
pub fn hl7_total(m: &Metrics) -> u64 {
    ["applied", "parked", "rejected", "duplicate"]
        .into_iter()
        .map(|kind| m.hl7_messages.get_or_create(&KindLabels { kind }).get())
        .sum()
}

/// This process's resident memory (bytes) and CPU time (user + system,
/// seconds), from `/proc/self`; zeros where it cannot be read.
pub fn process_usage() -> (u64, f64) {
    let page = rustix::param::page_size() as u64;
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th.
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn disk_free(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Labels of an HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: String,
    /// Matched route template (never the raw path or query).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a per-route histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Matched route template.
    pub route: String,
}

/// Labels of the auth failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// Labels of a counter by kind or status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kind or status.
    pub kind: &'static str,
}

/// Labels of a model call counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
    /// `model`, or the reason the fallback answered.
    pub outcome: &'static str,
}

/// All metrics of one appliance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency by route.
    pub http_seconds: Family<RouteLabels, Histogram>,
    /// Group commits.
    pub commits: Counter,
    /// Failed group commits (batch refused).
    pub commit_failures: Counter,
    /// Events appended.
    pub events: Counter,
    /// Commands per group commit.
    pub batch_size: Histogram,
    /// Group commit duration (including fsync).
    pub commit_seconds: Histogram,
    /// WAL file size.
    pub wal_bytes: Gauge,
    /// WAL checkpoints run.
    pub checkpoints: Counter,
    /// Writes refused because the writer queue stayed full.
    pub store_busy: Counter,
    /// Live-stream notices dropped for slow subscribers.
    pub stream_dropped: Counter,
    /// Audit events (patient searches) queued but not committed.
    pub audit_failures: Counter,
    /// Authentication and authorisation failures by reason.
    pub auth_failures: Family<ReasonLabels, Counter>,
    /// HTTP connections refused for want of a slot (`full`, `peer`).
    pub http_refused: Family<ReasonLabels, Counter>,
    /// HTTP requests answered 503 after the request timeout.
    pub http_timeouts: Counter,
    /// HL7 messages by outcome (applied, parked, rejected, duplicate).
    pub hl7_messages: Family<KindLabels, Counter>,
    /// HL7 ACKs sent, by MSA-1 code.
    pub hl7_acks: Family<KindLabels, Counter>,
    /// HL7 messages whose sender keys (MSH-3, MSH-4, MSH-10) were seen before
    /// with other content: processed as new messages.
    pub hl7_control_id_reused: Counter,
    /// MLLP connections closed unread, by reason (`not_allowed`, `peer`).
    pub mllp_refused: Family<ReasonLabels, Counter>,
    /// MLLP frames received.
    pub mllp_frames: Counter,
    /// Bytes skipped while resynchronising on VT.
    pub mllp_skipped_bytes: Counter,
    /// Resynchronisations (runs of skipped bytes).
    pub mllp_resyncs: Counter,
    /// Frames over the size limit.
    pub mllp_oversize: Counter,
    /// Open MLLP connections.
    pub mllp_connections: Gauge,
    /// Time from a frame's arrival to its last ACK written.
    pub hl7_ack_seconds: Histogram,
    /// The same ACK times in counters the appliance reads back (the fleet
    /// channel's telemetry: p99 since the last report).
    pub hl7_ack_window: AckWindow,
    /// Sync batches by outcome (acked, gap, transient, refused).
    pub uplink_batches: Family<KindLabels, Counter>,
    /// Events the cloud acknowledged.
    pub uplink_events: Counter,
    /// Cloud acknowledgements refused because they did not check out, by
    /// the refusal's code (`ack_beyond_sent`, `ack_hash_mismatch`, …).
    pub uplink_acks_refused: Family<ReasonLabels, Counter>,
    /// Moves of the uplink from one cloud address to another.
    pub uplink_failovers: Counter,
    /// Time from an event's commit to the cloud's acknowledgement of it.
    pub uplink_lag_seconds: Histogram,
    /// Events not yet acknowledged by the cloud.
    pub uplink_outbox_events: Gauge,
    /// Model calls by outcome (`model` or the fallback's reason).
    pub model_calls: Family<ModelLabels, Counter>,
    /// Latency of answered model calls.
    pub model_seconds: Family<ModelLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hms");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_seconds.clone(),
        );
        let commits = Counter::default();
        registry.register("store_commits", "Group commits", commits.clone());
        let commit_failures = Counter::default();
        registry.register(
            "store_commit_failures",
            "Group commits that failed and were refused",
            commit_failures.clone(),
        );
        let events = Counter::default();
        registry.register("store_events", "Events appended to the log", events.clone());
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_batch_size",
            "Commands per group commit",
            batch_size.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 14));
        registry.register(
            "store_commit_duration_seconds",
            "Group commit duration including fsync",
            commit_seconds.clone(),
        );
        let wal_bytes = Gauge::default();
        registry.register(
            "store_wal_bytes",
            "Size of the SQLite WAL file",
            wal_bytes.clone(),
        );
        let checkpoints = Counter::default();
        registry.register(
            "store_checkpoints",
            "WAL checkpoints run",
            checkpoints.clone(),
        );
        let store_busy = Counter::default();
        registry.register(
            "store_busy",
            "Writes refused because the writer queue stayed full",
            store_busy.clone(),
        );
        let stream_dropped = Counter::default();
        registry.register(
            "stream_dropped",
            "Live-stream notices dropped for slow subscribers",
            stream_dropped.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit events (patient searches) queued to the writer whose commit failed",
            audit_failures.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Authentication and authorisation failures",
            auth_failures.clone(),
        );
        let mllp_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "mllp_connections_refused",
            "MLLP connections closed unread, by reason (not_allowed, peer)",
            mllp_refused.clone(),
        );
        let http_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections refused for want of a slot, by reason (full, peer)",
            http_refused.clone(),
        );
        let http_timeouts = Counter::default();
        registry.register(
            "http_request_timeouts",
            "HTTP requests answered 503 after the request timeout",
            http_timeouts.clone(),
        );
        let hl7_messages = Family::<KindLabels, Counter>::default();
        registry.register(
            "hl7_messages",
            "HL7 messages by outcome",
            hl7_messages.clone(),
        );
        let hl7_acks = Family::<KindLabels, Counter>::default();
        registry.register("hl7_acks", "HL7 ACKs sent by MSA-1 code", hl7_acks.clone());
        let hl7_control_id_reused = Counter::default();
        registry.register(
            "hl7_control_id_reused",
            "HL7 messages reusing a stored message's MSH-3/MSH-4/MSH-10 with other content",
            hl7_control_id_reused.clone(),
        );
        let mllp_frames = Counter::default();
        registry.register("mllp_frames", "MLLP frames received", mllp_frames.clone());
        let mllp_skipped_bytes = Counter::default();
        registry.register(
            "mllp_skipped_bytes",
            "Bytes skipped while resynchronising on VT",
            mllp_skipped_bytes.clone(),
        );
        let mllp_resyncs = Counter::default();
        registry.register(
            "mllp_resyncs",
            "Resynchronisations on VT (runs of skipped bytes)",
            mllp_resyncs.clone(),
        );
        let mllp_oversize = Counter::default();
        registry.register(
            "mllp_oversize",
            "MLLP frames over the size limit",
            mllp_oversize.clone(),
        );
        let mllp_connections = Gauge::default();
        registry.register(
            "mllp_connections",
            "Open MLLP connections",
            mllp_connections.clone(),
        );
        let hl7_ack_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "hl7_ack_duration_seconds",
            "Time from a frame's arrival to its ACK written",
            hl7_ack_seconds.clone(),
        );
        let uplink_batches = Family::<KindLabels, Counter>::default();
        registry.register(
            "uplink_batches",
            "Sync batches sent to the cloud, by outcome",
            uplink_batches.clone(),
        );
        let uplink_events = Counter::default();
        registry.register(
            "uplink_events",
            "Events the cloud acknowledged",
            uplink_events.clone(),
        );
        let uplink_acks_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "uplink_acks_refused",
            "Cloud acknowledgements refused as untrusted (nothing pruned by them), by reason",
            uplink_acks_refused.clone(),
        );
        let uplink_failovers = Counter::default();
        registry.register(
            "uplink_failovers",
            "Moves of the uplink from one cloud address to another (failovers and failbacks)",
            uplink_failovers.clone(),
        );
        let uplink_lag_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register(
            "uplink_lag_seconds",
            "Time from an event's commit to the cloud's acknowledgement",
            uplink_lag_seconds.clone(),
        );
        let uplink_outbox_events = Gauge::default();
        registry.register(
            "uplink_outbox_events",
            "Events not yet acknowledged by the cloud",
            uplink_outbox_events.clone(),
        );
        let model_calls = Family::<ModelLabels, Counter>::default();
        registry.register(
            "model_calls",
            "Model calls by outcome: model, or the reason the fallback answered",
            model_calls.clone(),
        );
        let model_seconds = Family::<ModelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
        });
        registry.register(
            "model_duration_seconds",
            "Latency of answered model calls",
            model_seconds.clone(),
        );
        Self {
            model_calls,
            model_seconds,
            uplink_batches,
            uplink_events,
            uplink_acks_refused,
            uplink_failovers,
            uplink_lag_seconds,
            uplink_outbox_events,
            hl7_acks,
            hl7_control_id_reused,
            http_refused,
            http_timeouts,
            mllp_refused,
            hl7_messages,
            mllp_frames,
            mllp_skipped_bytes,
            mllp_resyncs,
            mllp_oversize,
            mllp_connections,
            hl7_ack_seconds,
            hl7_ack_window: AckWindow::default(),
            registry,
            http_requests,
            http_seconds,
            commits,
            commit_failures,
            events,
            batch_size,
            commit_seconds,
            wal_bytes,
            checkpoints,
            store_busy,
            stream_dropped,
            audit_failures,
            auth_failures,
        }
    }

    /// Renders the Prometheus text exposition, with board gauges from `view`.
    pub fn render(&self, view: &BoardView) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out.push_str("# HELP hms_beds Beds by unit and state.\n# TYPE hms_beds gauge\n");
        for unit in view.unit_ids() {
            if let Some(c) = view.census(unit.as_str()) {
                for (state, n) in [
                    ("occupied", c.occupied),
                    ("vacant_clean", c.available),
                    ("vacant_dirty", c.dirty),
                    ("cleaning", c.cleaning),
                    ("blocked", c.blocked),
                    ("reserved", c.reserved),
                ] {
                    let _ = writeln!(out, "hms_beds{{unit=\"{unit}\",state=\"{state}\"}} {n}");
                }
            }
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

impl hms_web::server::Observe for Metrics {
    fn refused(&self, peer: bool) {
        let reason = if peer { "peer" } else { "full" };
        self.http_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    fn timed_out(&self) {
        self.http_timeouts.inc();
    }
}
