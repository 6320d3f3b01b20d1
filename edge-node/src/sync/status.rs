//! The sync state `/health` reports, and the acknowledged position the rest
//! of the appliance follows.
//!
//! The uplink writes; `/health` reads a copy ([`Status::report_at`], with the
//! local figures brought up to the latest commit) and retention follows
//! [`Status::acknowledged`], a `watch` of the cloud's acknowledged seq, so
//! that persistence never depends on the network task.

use std::sync::{Arc, Mutex};

use cloud_sync_client::resilience::BreakerState;
use cloud_sync_client::shipper::Phase;
use serde::Serialize;
use tokio::sync::watch;

/// The uplink's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// No `[uplink]`: the appliance runs alone.
    #[default]
    Disabled,
    /// The cloud's position is not known yet.
    Connecting,
    /// The last exchange succeeded.
    Online,
    /// The cloud cannot be reached (or the breaker is open).
    Offline,
    /// The cloud refused, the log cannot give what it asks, or the cloud's
    /// acknowledgement did not check out (see [`Report::refusal`]): an
    /// operator must act. The uplink asks the cloud again now and then.
    Refused,
}

impl From<Phase> for SyncState {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Connecting => SyncState::Connecting,
            Phase::Online => SyncState::Online,
            Phase::Offline => SyncState::Offline,
            Phase::Refused => SyncState::Refused,
        }
    }
}

/// The breaker as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerReport {
    /// Calls flow.
    #[default]
    Closed,
    /// Calls are held back.
    Open,
    /// A few probes are let through.
    HalfOpen,
}

impl From<BreakerState> for BreakerReport {
    fn from(s: BreakerState) -> Self {
        match s {
            BreakerState::Closed => BreakerReport::Closed,
            BreakerState::Open { .. } => BreakerReport::Open,
            BreakerState::HalfOpen { .. } => BreakerReport::HalfOpen,
        }
    }
}

/// The uplink's state as `/health` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// Where the uplink stands.
    pub state: SyncState,
    /// The cloud's address in use.
    pub cloud: Option<String>,
    /// Every address of `uplink.cloud`, in order, when it lists more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clouds: Vec<String>,
    /// Moves from one address to another (failovers and failbacks) since start.
    pub failovers: u64,
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
    /// While refused, why, as a stable code
    /// ([`cloud_sync_client::shipper::Refusal::code`]): `remote`,
    /// `local_gap`, `remote_ahead`, or an acknowledgement that did not check
    /// out and was not trusted (`ack_beyond_sent`, `ack_hash_mismatch`,
    /// `ack_without_hash`, `gap_ahead`: nothing is pruned by it).
    pub refusal: Option<&'static str>,
    /// The breaker.
    pub breaker: BreakerReport,
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
        matches!(
            self.state,
            SyncState::Disabled | SyncState::Online | SyncState::Connecting
        ) && !self.outbox_alarm
    }
}

/// Shared, cheap-to-read sync state.
#[derive(Debug)]
pub struct Status {
    report: Mutex<Report>,
    acknowledged: watch::Sender<Option<u64>>,
    /// Asks the uplink to try at once (a fleet `sync_now`).
    wake: tokio::sync::Notify,
}

impl Status {
    /// The state of an appliance without an uplink.
    pub fn disabled() -> Arc<Status> {
        Arc::new(Status {
            report: Mutex::new(Report::default()),
            acknowledged: watch::Sender::new(None),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Asks the uplink to ship and pull now rather than at its next poll
    /// (the shipper still decides: an open breaker keeps it waiting).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Status::wake`] was called (once per call).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A copy of the current report.
    pub fn report(&self) -> Report {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The report with the local figures brought up to `local_seq` (the
    /// uplink may be asleep in a back-off while commits go on).
    pub fn report_at(&self, local_seq: u64) -> Report {
        let mut r = self.report();
        if r.state != SyncState::Disabled {
            r.local_seq = r.local_seq.max(local_seq);
            r.lag_events = r.local_seq.saturating_sub(r.acked_seq.unwrap_or(0));
        }
        r
    }

    /// Follows the cloud's acknowledged seq (none until it answered).
    pub fn acknowledged(&self) -> watch::Receiver<Option<u64>> {
        self.acknowledged.subscribe()
    }

    /// Changes the report; the acknowledged position follows `acked_seq`.
    pub(super) fn update(&self, f: impl FnOnce(&mut Report)) {
        let acked = {
            let mut r = self.report.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut r);
            r.acked_seq
        };
        // Backwards too: a cloud that lost events (a gap answer) holds less
        // than before, and retention must not prune what it no longer has;
        // an unknown position (connecting, refused) prunes nothing.
        self.acknowledged.send_if_modified(|a| {
            let changed = *a != acked;
            *a = acked;
            changed
        });
    }
}
