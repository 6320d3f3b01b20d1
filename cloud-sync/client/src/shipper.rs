//! Shipping a log to a remote that acknowledges positions: the sans-IO
//! state machine behind the appliance's uplink and the cloud's DR
//! replication.
//!
//! A [`Shipper`] knows the remote's acknowledged position (once asked), the
//! back-off and the circuit breaker ([`crate::resilience`]), and why it
//! stopped if it did. Its caller loops: [`Shipper::next`] says what to do
//! now, given the time and the local log's last seq ([`Action`]); the
//! caller does it (the network and the log are the caller's business, see
//! [`exchange`] for the shared part) and reports what came of it with
//! [`Shipper::record`] ([`Outcome`]). Time is passed in, so tests drive it
//! with paused tokio time.
//!
//! The rules, in the order they apply:
//! - until the remote's position is known, ask for it; a remote that holds
//!   more than the local log is refused (this log is not the one it knows);
//! - with the position known and the log ahead, send the events after it;
//!   an acknowledgement moves the position;
//! - no acknowledgement is trusted that cannot be checked (the appliance's
//!   retention prunes by it): every position and acknowledgement carries the
//!   hash the remote holds at its seq ([`Ack`]), and one is refused when its
//!   seq is beyond what was sent (a batch's last seq, or the local log's end
//!   for a position), when it carries no hash, or when its hash differs from
//!   the local log's at that seq. A refused acknowledgement is not kept: the
//!   position becomes unknown (nothing is pruned by it) and the refusal's
//!   wait and retry below apply. Only a seq the local log no longer holds
//!   (retention removed it, which happens only at or below a position
//!   checked before) is taken on its seq alone;
//! - a gap answer moves the position back to the seq the remote expects (the
//!   explicit resync path; one that would move it forward, past what was
//!   sent, is refused like an acknowledgement beyond it); a local log that no
//!   longer holds that seq (retention) is refused, never skipped;
//! - a transient failure waits a jittered, doubling delay and counts against
//!   the breaker; while the breaker is open nothing is sent;
//! - a refusal waits [`ShipperConfig::refused_retry`] and starts again from
//!   asking the position (an operator may have fixed the cause);
//! - caught up, it idles until a local commit or [`ShipperConfig::poll`].

use std::future::Future;
use std::time::Duration;

use hms_domain::sync::SyncBatch;
use hms_domain::{Envelope, EventHash};
use serde::Serialize;
use tokio::time::Instant;

use crate::resilience::{Backoff, Breaker, BreakerConfig, BreakerState};
use crate::{Client, PushError, Signer};

/// A shipper's settings.
#[derive(Debug, Clone, Copy)]
pub struct ShipperConfig {
    /// Retry timing after transient failures.
    pub backoff: Backoff,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// How long a refused shipper waits before asking the remote again.
    pub refused_retry: Duration,
    /// How long a caught-up shipper idles before looking again (a local
    /// commit wakes it sooner).
    pub poll: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            breaker: BreakerConfig::default(),
            refused_retry: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// Where a shipper stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The remote's position is not known yet.
    Connecting,
    /// The last exchange succeeded.
    Online,
    /// The last exchange failed for a transient reason, or the breaker is open.
    Offline,
    /// Stopped until an operator acts (see [`Refusal`]); asks again now and then.
    Refused,
}

/// Why a shipper stopped shipping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The remote refused for good (enrolment, signature, conflicting history).
    #[error("the remote refused (HTTP {status}): {detail}")]
    Remote {
        /// HTTP status.
        status: u16,
        /// The remote's problem detail.
        detail: String,
    },
    /// The remote wants events the local log no longer holds.
    #[error(
        "the remote asks for events from seq {wanted} but this log keeps them only from seq \
         {oldest} (retention): restore the remote's copy from its DR peer or a backup"
    )]
    LocalGap {
        /// The seq the remote needs next.
        wanted: u64,
        /// The oldest seq the local log holds after the position.
        oldest: u64,
    },
    /// The remote holds more events than the local log.
    #[error(
        "the remote holds {remote} events but this log only {local}: this data dir is not the \
         one the remote knows (restore it with `hms-edge restore --from-cloud`)"
    )]
    RemoteAhead {
        /// The remote's position.
        remote: u64,
        /// The local log's last seq.
        local: u64,
    },
    /// The remote acknowledged events it was never sent.
    #[error(
        "the remote acknowledged seq {acked} beyond what was sent (the batch ended at seq \
         {sent_upto}); the acknowledgement is not trusted and nothing is pruned by it"
    )]
    Overacknowledged {
        /// What it acknowledged.
        acked: u64,
        /// The last seq sent.
        sent_upto: u64,
    },
    /// The remote's hash at the seq it acknowledged is not the local log's.
    #[error(
        "the remote acknowledged seq {seq} with hash {} but this log's event {seq} has \
         hash {}: it does not hold this log; the acknowledgement is not trusted and \
         nothing is pruned by it",
        remote.to_hex(),
        local.to_hex()
    )]
    AckHashMismatch {
        /// The acknowledged seq.
        seq: u64,
        /// The hash the remote sent.
        remote: EventHash,
        /// The local log's hash at `seq`.
        local: EventHash,
    },
    /// The remote acknowledged a seq without the hash it holds there.
    #[error(
        "the remote acknowledged seq {seq} without that event's hash: an acknowledgement that \
         cannot be checked is not trusted and nothing is pruned by it"
    )]
    AckWithoutHash {
        /// The acknowledged seq.
        seq: u64,
    },
    /// A gap answer that would move the position forward, past what was sent.
    #[error(
        "the remote asked to resume at seq {expected} after a batch that followed seq {after}: \
         a resync never moves forward, so it is not trusted and nothing is pruned by it"
    )]
    GapAhead {
        /// The seq it asked for.
        expected: u64,
        /// The position the batch followed.
        after: u64,
    },
}

impl Refusal {
    /// A stable code for alarms and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Remote { .. } => "remote",
            Refusal::LocalGap { .. } => "local_gap",
            Refusal::RemoteAhead { .. } => "remote_ahead",
            Refusal::Overacknowledged { .. } => "ack_beyond_sent",
            Refusal::AckHashMismatch { .. } => "ack_hash_mismatch",
            Refusal::AckWithoutHash { .. } => "ack_without_hash",
            Refusal::GapAhead { .. } => "gap_ahead",
        }
    }

    /// Whether the remote's answer was an acknowledgement (or resync) that
    /// did not check out, rather than a refusal of its own or a local gap.
    pub fn is_untrusted_ack(&self) -> bool {
        matches!(
            self,
            Refusal::Overacknowledged { .. }
                | Refusal::AckHashMismatch { .. }
                | Refusal::AckWithoutHash { .. }
                | Refusal::GapAhead { .. }
        )
    }
}

/// A position the remote stated (asked for, or after a batch), beside what
/// the local log holds at that seq: what [`Shipper::record`] checks before
/// it trusts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The seq the remote says it holds up to.
    pub seq: u64,
    /// The hash the remote says it holds at `seq`; none when its answer
    /// carried none.
    pub hash: Option<EventHash>,
    /// The local log's hash at `seq` ([`EventHash::GENESIS`] at 0); none when
    /// the local log does not hold that seq (beyond its end, or removed by
    /// retention).
    pub local: Option<EventHash>,
}

impl Ack {
    /// Checks the hash: the remote must state one, and it must be the local
    /// log's where the log still holds the seq.
    fn check(&self) -> Result<(), Refusal> {
        let Some(remote) = self.hash else {
            return Err(Refusal::AckWithoutHash { seq: self.seq });
        };
        match self.local {
            Some(local) if local != remote => Err(Refusal::AckHashMismatch {
                seq: self.seq,
                remote,
                local,
            }),
            _ => Ok(()),
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask the remote for its position; record [`Outcome::Position`].
    AskPosition,
    /// Send the events after seq `after` (one batch); record the answer.
    Send {
        /// The remote's acknowledged position.
        after: u64,
    },
    /// Caught up: wait for a new local commit or until `until`.
    Idle {
        /// When to look again anyway.
        until: Instant,
    },
    /// Wait until `until` (back-off, open breaker, refusal), then ask again.
    Wait {
        /// When to ask again.
        until: Instant,
    },
}

/// What came of an [`Action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote's position (after [`Action::AskPosition`]).
    Position(Ack),
    /// The remote stored a batch ending at `sent_upto` and acknowledged up to `ack.seq`.
    Acked {
        /// Its new position.
        ack: Ack,
        /// The last seq of the batch.
        sent_upto: u64,
    },
    /// The local log holds nothing after the position after all.
    NothingToSend,
    /// The remote expects seq `expected` next.
    Gap {
        /// The seq to resend from.
        expected: u64,
    },
    /// The local log's first event after the position is `oldest`, not `wanted`.
    LocalGap {
        /// The seq the remote needs next.
        wanted: u64,
        /// The oldest seq the local log holds after the position.
        oldest: u64,
    },
    /// The local log could not be read (retried after [`ShipperConfig::poll`];
    /// the remote is not to blame).
    Unreadable(String),
    /// Not reachable, TLS, timeout, 5xx.
    Transient(String),
    /// Refused for good.
    Refused {
        /// HTTP status.
        status: u16,
        /// The remote's detail.
        detail: String,
    },
}

/// The state machine (see the module doc).
pub struct Shipper {
    cfg: ShipperConfig,
    breaker: Breaker,
    jitter: Box<dyn FnMut() -> f64 + Send>,
    attempt: u32,
    acked: Option<u64>,
    phase: Phase,
    wait_until: Option<Instant>,
    last_error: Option<String>,
    refusal: Option<Refusal>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("phase", &self.phase)
            .field("acked", &self.acked)
            .field("attempt", &self.attempt)
            .field("wait_until", &self.wait_until)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// A shipper that has not asked the remote yet; `jitter` in [0, 1)
    /// spreads its retries ([`crate::resilience::jitter`] in production).
    pub fn new(cfg: ShipperConfig, jitter: impl FnMut() -> f64 + Send + 'static) -> Self {
        Self {
            cfg,
            breaker: Breaker::new(cfg.breaker),
            jitter: Box::new(jitter),
            attempt: 0,
            acked: None,
            phase: Phase::Connecting,
            wait_until: None,
            last_error: None,
            refusal: None,
        }
    }

    /// What to do now, with the local log's last seq at `local`.
    pub fn next(&mut self, now: Instant, local: u64) -> Action {
        if let Some(until) = self.wait_until {
            if now < until {
                return Action::Wait { until };
            }
            self.wait_until = None;
        }
        if let Some(a) = self.acked
            && a >= local
        {
            return Action::Idle {
                until: now + self.cfg.poll,
            };
        }
        if !self.breaker.allow(now) {
            let until = match self.breaker.state(now) {
                BreakerState::Open { until } => until,
                _ => now + self.cfg.poll,
            };
            if self.phase != Phase::Refused {
                self.phase = Phase::Offline;
            }
            return Action::Wait { until };
        }
        match self.acked {
            None => Action::AskPosition,
            Some(after) => Action::Send { after },
        }
    }

    /// Takes in what came of the last action.
    pub fn record(&mut self, now: Instant, local: u64, outcome: Outcome) {
        match outcome {
            Outcome::Position(ack) => {
                self.succeeded(now);
                let remote = ack.seq;
                if remote > local {
                    self.refuse(now, Refusal::RemoteAhead { remote, local });
                } else if let Err(why) = ack.check() {
                    self.refuse(now, why);
                } else {
                    self.acked = Some(remote);
                }
            }
            Outcome::Acked { ack, sent_upto } => {
                self.succeeded(now);
                let acked = ack.seq;
                if acked > sent_upto {
                    self.refuse(now, Refusal::Overacknowledged { acked, sent_upto });
                } else if let Err(why) = ack.check() {
                    self.refuse(now, why);
                } else {
                    self.acked = Some(acked);
                }
            }
            Outcome::NothingToSend => {
                self.acked = Some(self.acked.unwrap_or(0).max(local));
            }
            Outcome::Gap { expected } => {
                // The explicit resync path: an answer, not a failure. It
                // only ever moves the position back: the remote holds less
                // than the batch followed.
                self.succeeded(now);
                let after = self.acked.unwrap_or(0);
                if expected > after.saturating_add(1) {
                    self.refuse(now, Refusal::GapAhead { expected, after });
                } else {
                    self.acked = Some(expected.saturating_sub(1));
                }
            }
            Outcome::LocalGap { wanted, oldest } => {
                self.refuse(now, Refusal::LocalGap { wanted, oldest });
            }
            Outcome::Unreadable(why) => {
                self.last_error = Some(why);
                self.wait_until = Some(now + self.cfg.poll);
            }
            Outcome::Transient(why) => {
                self.breaker.record(false, now);
                let delay = self.cfg.backoff.delay(self.attempt, (self.jitter)());
                self.attempt = self.attempt.saturating_add(1);
                self.wait_until = Some(now + delay);
                if self.phase != Phase::Refused {
                    self.phase = Phase::Offline;
                }
                self.last_error = Some(why);
            }
            Outcome::Refused { status, detail } => {
                // The remote answered: the link works.
                self.breaker.record(true, now);
                self.attempt = 0;
                self.refuse(now, Refusal::Remote { status, detail });
            }
        }
    }

    fn succeeded(&mut self, now: Instant) {
        self.breaker.record(true, now);
        self.attempt = 0;
        self.phase = Phase::Online;
        self.last_error = None;
        self.refusal = None;
    }

    fn refuse(&mut self, now: Instant, why: Refusal) {
        self.phase = Phase::Refused;
        self.last_error = Some(why.to_string());
        self.refusal = Some(why);
        self.acked = None;
        self.wait_until = Some(now + self.cfg.refused_retry);
    }

    /// The remote's acknowledged position, when known.
    pub fn acked(&self) -> Option<u64> {
        self.acked
    }

    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The breaker's state at `now`.
    pub fn breaker(&mut self, now: Instant) -> BreakerState {
        self.breaker.state(now)
    }

    /// The last failure (no PHI: transport errors and the remote's details).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Why it stopped, while it is refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }
}

/// Where a shipper's events come from.
pub trait Source: Sync {
    /// Up to one batch of events after seq `after`, in order (empty when
    /// there are none).
    fn events_after(
        &self,
        after: u64,
    ) -> impl Future<Output = anyhow::Result<Vec<Envelope>>> + Send;

    /// The hash of event `seq` (at least 1) in the local log; none when the
    /// log does not hold it (beyond its end, or removed by retention).
    fn hash_at(&self, seq: u64) -> impl Future<Output = anyhow::Result<Option<EventHash>>> + Send;
}

/// The local log's hash at `seq` ([`EventHash::GENESIS`] at 0).
async fn local_hash(source: &impl Source, seq: u64) -> anyhow::Result<Option<EventHash>> {
    if seq == 0 {
        Ok(Some(EventHash::GENESIS))
    } else {
        source.hash_at(seq).await
    }
}

/// What an exchange with the remote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    /// What to record.
    pub outcome: Outcome,
    /// `(seq, recorded_at ms)` of the events sent, for lag figures.
    pub sent: Vec<(u64, i64)>,
}

/// Carries out [`Action::AskPosition`] or [`Action::Send`] with `client`,
/// signing as `signer` (whose hospital and node the batch carries) and
/// reading from `source`. Other actions are the caller's to wait out;
/// they come back as [`Outcome::NothingToSend`].
pub async fn exchange(
    client: &Client,
    signer: &Signer,
    source: &impl Source,
    action: Action,
    now_ms: i64,
    timeout: Duration,
) -> Exchanged {
    match action {
        Action::AskPosition => {
            let outcome = match client.position(signer, now_ms, timeout).await {
                Ok(p) => match local_hash(source, p.acked_seq).await {
                    Ok(local) => Outcome::Position(Ack {
                        seq: p.acked_seq,
                        hash: p.acked_hash,
                        local,
                    }),
                    Err(e) => Outcome::Unreadable(format!("{e:#}")),
                },
                Err(e) => failed(e),
            };
            Exchanged {
                outcome,
                sent: vec![],
            }
        }
        Action::Send { after } => {
            let events = match source.events_after(after).await {
                Ok(e) => e,
                Err(e) => {
                    return Exchanged {
                        outcome: Outcome::Unreadable(format!("{e:#}")),
                        sent: vec![],
                    };
                }
            };
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                return Exchanged {
                    outcome: Outcome::NothingToSend,
                    sent: vec![],
                };
            };
            if first.seq != after + 1 {
                return Exchanged {
                    outcome: Outcome::LocalGap {
                        wanted: after + 1,
                        oldest: first.seq,
                    },
                    sent: vec![],
                };
            }
            let (sent_from, sent_upto) = (first.seq, last.seq);
            let sent: Vec<(u64, i64)> = events
                .iter()
                .map(|e| (e.seq, e.recorded_at.as_millis()))
                .collect();
            let hashes: Vec<EventHash> = events.iter().map(|e| e.hash).collect();
            let batch = SyncBatch {
                hospital: signer.hospital().clone(),
                node: signer.node().clone(),
                events,
            };
            let outcome = match client.push(signer, &batch, now_ms, timeout).await {
                Ok(p) => {
                    // The batch's own hashes where the acknowledgement falls
                    // in it; the log's before it; none beyond what was sent.
                    let local = if (sent_from..=sent_upto).contains(&p.acked_seq) {
                        Ok(hashes.get((p.acked_seq - sent_from) as usize).copied())
                    } else if p.acked_seq < sent_from {
                        local_hash(source, p.acked_seq).await
                    } else {
                        Ok(None)
                    };
                    match local {
                        Ok(local) => Outcome::Acked {
                            ack: Ack {
                                seq: p.acked_seq,
                                hash: p.acked_hash,
                                local,
                            },
                            sent_upto,
                        },
                        Err(e) => Outcome::Unreadable(format!("{e:#}")),
                    }
                }
                Err(e) => failed(e),
            };
            Exchanged { outcome, sent }
        }
        Action::Idle { .. } | Action::Wait { .. } => Exchanged {
            outcome: Outcome::NothingToSend,
            sent: vec![],
        },
    }
}

fn failed(e: PushError) -> Outcome {
    match e {
        PushError::Gap { expected } => Outcome::Gap { expected },
        PushError::Transient(why) => Outcome::Transient(why),
        PushError::Refused { status, detail } => Outcome::Refused { status, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipper() -> Shipper {
        Shipper::new(ShipperConfig::default(), || 1.0)
    }

    fn now() -> Instant {
        Instant::now()
    }

    /// A stand-in for the hash of event `seq` of the local log.
    fn hash(seq: u64) -> EventHash {
        let mut h = [0; 32];
        h[..8].copy_from_slice(&seq.to_be_bytes());
        h[31] = 1;
        EventHash(h)
    }

    /// A position or acknowledgement at `seq` that checks out.
    fn ok(seq: u64) -> Ack {
        Ack {
            seq,
            hash: Some(hash(seq)),
            local: Some(hash(seq)),
        }
    }

    fn pos(seq: u64) -> Outcome {
        Outcome::Position(ok(seq))
    }

    fn acked(seq: u64, sent_upto: u64) -> Outcome {
        Outcome::Acked {
            ack: ok(seq),
            sent_upto,
        }
    }

    /// Advances paused time to `until`.
    async fn sleep_until(until: Instant) {
        tokio::time::sleep_until(until).await;
    }

    #[tokio::test(start_paused = true)]
    async fn it_asks_the_position_sends_what_follows_and_idles_when_caught_up() {
        let mut s = shipper();
        assert_eq!(s.phase(), Phase::Connecting);
        assert_eq!(s.next(now(), 10), Action::AskPosition);
        s.record(now(), 10, pos(4));
        assert_eq!((s.phase(), s.acked()), (Phase::Online, Some(4)));
        assert_eq!(s.next(now(), 10), Action::Send { after: 4 });
        s.record(now(), 10, acked(10, 10));
        assert_eq!(s.acked(), Some(10));
        let Action::Idle { until } = s.next(now(), 10) else {
            panic!("caught up: idle");
        };
        assert_eq!(until - now(), ShipperConfig::default().poll);
        // A commit moves the log on: send again.
        assert_eq!(s.next(now(), 11), Action::Send { after: 10 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_answer_resends_from_the_seq_the_remote_expects() {
        let mut s = shipper();
        s.record(now(), 100, pos(90));
        s.record(now(), 100, Outcome::Gap { expected: 41 });
        assert_eq!(
            s.phase(),
            Phase::Online,
            "a gap is an answer, not a failure"
        );
        assert_eq!(s.next(now(), 100), Action::Send { after: 40 });
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_doubling_and_open_the_breaker() {
        let mut s = shipper();
        let mut delays = vec![];
        for _ in 0..4 {
            assert_eq!(s.next(now(), 10), Action::AskPosition);
            s.record(now(), 10, Outcome::Transient("connection refused".into()));
            assert_eq!(s.phase(), Phase::Offline);
            assert_eq!(s.last_error(), Some("connection refused"));
            let Action::Wait { until } = s.next(now(), 10) else {
                panic!("expected a wait");
            };
            delays.push(until - now());
            sleep_until(until).await;
        }
        // Jitter 1.0: the full window, 200 ms doubling.
        assert_eq!(
            delays,
            [200, 400, 800, 1600].map(Duration::from_millis).to_vec()
        );
        assert_eq!(
            s.breaker(now()),
            BreakerState::Closed,
            "not judged before 5 calls"
        );
        // The fifth failure in a row opens the breaker (5 calls, 100 %).
        assert_eq!(s.next(now(), 10), Action::AskPosition);
        s.record(now(), 10, Outcome::Transient("timeout".into()));
        assert!(matches!(s.breaker(now()), BreakerState::Open { .. }));
        let Action::Wait { until } = s.next(now(), 10) else {
            panic!("back-off first");
        };
        assert_eq!(until - now(), Duration::from_millis(3200));
        sleep_until(until).await;
        // Back-off over but the breaker still open: wait for it, send nothing.
        let Action::Wait { until } = s.next(now(), 10) else {
            panic!("breaker open: nothing is sent");
        };
        assert_eq!(
            until - now(),
            Duration::from_secs(30) - Duration::from_millis(3200)
        );
        sleep_until(until).await;
        // Half-open: probes go out; three successes close it and reset the back-off.
        assert_eq!(s.next(now(), 10), Action::AskPosition);
        s.record(now(), 10, pos(0));
        for _ in 0..2 {
            let Action::Send { after } = s.next(now(), 10) else {
                panic!("half-open probes are sent");
            };
            s.record(now(), 10, acked(after + 1, after + 1));
        }
        assert_eq!(s.breaker(now()), BreakerState::Closed);
        assert_eq!((s.phase(), s.last_error()), (Phase::Online, None));
        assert_eq!(s.next(now(), 10), Action::Send { after: 2 });
        s.record(now(), 10, Outcome::Transient("again".into()));
        let Action::Wait { until } = s.next(now(), 10) else {
            panic!("expected a wait");
        };
        assert_eq!(until - now(), Duration::from_millis(200), "back-off reset");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_stops_shipping_and_asks_again_a_minute_later() {
        let mut s = shipper();
        s.record(now(), 10, pos(2));
        assert!(matches!(s.next(now(), 10), Action::Send { after: 2 }));
        s.record(
            now(),
            10,
            Outcome::Refused {
                status: 403,
                detail: "not enrolled here".into(),
            },
        );
        assert_eq!(s.phase(), Phase::Refused);
        assert!(matches!(
            s.refusal(),
            Some(Refusal::Remote { status: 403, .. })
        ));
        assert_eq!(s.acked(), None, "the position is asked again afterwards");
        let Action::Wait { until } = s.next(now(), 10) else {
            panic!("refused: wait");
        };
        assert_eq!(until - now(), Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(s.next(now(), 10), Action::Wait { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.next(now(), 10), Action::AskPosition);
        assert_eq!(
            s.phase(),
            Phase::Refused,
            "refused until an answer says otherwise"
        );
        s.record(now(), 10, pos(2));
        assert_eq!((s.phase(), s.refusal()), (Phase::Online, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_that_wants_pruned_events_is_refused_not_skipped() {
        let mut s = shipper();
        s.record(now(), 500, pos(0));
        assert_eq!(s.next(now(), 500), Action::Send { after: 0 });
        s.record(
            now(),
            500,
            Outcome::LocalGap {
                wanted: 1,
                oldest: 300,
            },
        );
        assert_eq!(s.phase(), Phase::Refused);
        assert_eq!(
            s.refusal(),
            Some(&Refusal::LocalGap {
                wanted: 1,
                oldest: 300
            })
        );
        assert!(
            s.last_error()
                .is_some_and(|e| e.contains("from seq 1") && e.contains("from seq 300")),
            "{:?}",
            s.last_error()
        );
        // Nothing is sent until the refusal's wait is over, and then the
        // position is asked again rather than the gap skipped.
        assert!(matches!(s.next(now(), 500), Action::Wait { .. }));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(s.next(now(), 500), Action::AskPosition);
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_ahead_of_the_log_or_acknowledging_too_much_is_refused() {
        let mut s = shipper();
        s.record(now(), 5, pos(9));
        assert_eq!(
            s.refusal(),
            Some(&Refusal::RemoteAhead {
                remote: 9,
                local: 5
            })
        );
        assert_eq!(s.acked(), None);

        let mut s = shipper();
        s.record(now(), 50, pos(10));
        s.record(now(), 50, acked(45, 20));
        assert_eq!(
            s.refusal(),
            Some(&Refusal::Overacknowledged {
                acked: 45,
                sent_upto: 20
            })
        );
        assert_eq!(
            s.acked(),
            None,
            "an acknowledgement beyond what was sent is never kept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_acknowledgement_that_does_not_check_out_is_never_kept_and_the_remote_is_asked_again()
     {
        // The log holds 50 events; the remote stood at 10 and was sent 11..=20.
        let wrong = Some(EventHash([0xee; 32]));
        let cases: [(&str, Outcome, Refusal); 6] = [
            (
                "beyond what was sent, within the log",
                acked(30, 20),
                Refusal::Overacknowledged {
                    acked: 30,
                    sent_upto: 20,
                },
            ),
            (
                "beyond what was sent, with the right hash of an unsent event",
                Outcome::Acked {
                    ack: ok(21),
                    sent_upto: 20,
                },
                Refusal::Overacknowledged {
                    acked: 21,
                    sent_upto: 20,
                },
            ),
            (
                "another hash at a seq that was sent",
                Outcome::Acked {
                    ack: Ack {
                        hash: wrong,
                        ..ok(20)
                    },
                    sent_upto: 20,
                },
                Refusal::AckHashMismatch {
                    seq: 20,
                    remote: EventHash([0xee; 32]),
                    local: hash(20),
                },
            ),
            (
                "no hash",
                Outcome::Acked {
                    ack: Ack {
                        hash: None,
                        ..ok(20)
                    },
                    sent_upto: 20,
                },
                Refusal::AckWithoutHash { seq: 20 },
            ),
            (
                "a position with another hash",
                Outcome::Position(Ack {
                    hash: wrong,
                    ..ok(15)
                }),
                Refusal::AckHashMismatch {
                    seq: 15,
                    remote: EventHash([0xee; 32]),
                    local: hash(15),
                },
            ),
            (
                "a gap answer that moves forward",
                Outcome::Gap { expected: 31 },
                Refusal::GapAhead {
                    expected: 31,
                    after: 10,
                },
            ),
        ];
        for (case, outcome, refusal) in cases {
            let mut s = shipper();
            s.record(now(), 50, pos(10));
            assert_eq!(s.next(now(), 50), Action::Send { after: 10 }, "{case}");
            s.record(now(), 50, outcome);
            assert_eq!(s.refusal(), Some(&refusal), "{case}");
            assert!(refusal.is_untrusted_ack(), "{case}");
            assert_eq!(s.phase(), Phase::Refused, "{case}");
            assert_eq!(
                s.acked(),
                None,
                "{case}: not kept, not even the position trusted before (retention prunes nothing)"
            );
            assert!(
                s.last_error()
                    .is_some_and(|e| e.contains("not trusted") && e.contains("nothing is pruned")),
                "{case}: {:?}",
                s.last_error()
            );
            // It keeps trying: after the refusal's wait it asks the position
            // again, and a remote that answers truthfully is trusted again.
            let Action::Wait { until } = s.next(now(), 50) else {
                panic!("{case}: refused, wait");
            };
            assert_eq!(until - now(), ShipperConfig::default().refused_retry);
            sleep_until(until).await;
            assert_eq!(s.next(now(), 50), Action::AskPosition, "{case}");
            s.record(now(), 50, pos(20));
            assert_eq!((s.phase(), s.acked()), (Phase::Online, Some(20)), "{case}");
            assert_eq!(s.refusal(), None, "{case}");
        }
        let codes = [
            acked(30, 20),
            Outcome::Acked {
                ack: Ack {
                    hash: None,
                    ..ok(20)
                },
                sent_upto: 20,
            },
        ]
        .map(|o| {
            let mut s = shipper();
            s.record(now(), 50, pos(10));
            s.record(now(), 50, o);
            s.refusal().map(Refusal::code)
        });
        assert_eq!(codes, [Some("ack_beyond_sent"), Some("ack_without_hash")]);
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledgements_that_check_out_are_kept() {
        let mut s = shipper();
        // At 0 the hash is the genesis hash on both sides.
        s.record(
            now(),
            50,
            Outcome::Position(Ack {
                seq: 0,
                hash: Some(EventHash::GENESIS),
                local: Some(EventHash::GENESIS),
            }),
        );
        assert_eq!(s.acked(), Some(0));
        // Less than was sent, with the hash of that event: kept.
        s.record(now(), 50, acked(7, 20));
        assert_eq!((s.phase(), s.acked()), (Phase::Online, Some(7)));
        // A gap back (or to the same place) is the resync path.
        s.record(now(), 50, Outcome::Gap { expected: 8 });
        assert_eq!(s.acked(), Some(7));
        s.record(now(), 50, Outcome::Gap { expected: 3 });
        assert_eq!(s.acked(), Some(2));
        // A position the local log no longer holds (retention removed it,
        // only ever at or below a checked position): taken on its seq.
        let mut s = shipper();
        s.record(
            now(),
            50,
            Outcome::Position(Ack {
                local: None,
                ..ok(12)
            }),
        );
        assert_eq!((s.refusal(), s.acked()), (None, Some(12)));
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_it_recovers_and_ships_from_where_the_remote_is() {
        let mut s = shipper();
        // The remote is down from the start: asking the position fails.
        for _ in 0..3 {
            assert_eq!(s.next(now(), 30), Action::AskPosition);
            s.record(now(), 30, Outcome::Transient("refused".into()));
            let Action::Wait { until } = s.next(now(), 30) else {
                panic!("wait");
            };
            sleep_until(until).await;
        }
        assert_eq!(s.phase(), Phase::Offline);
        assert_eq!(s.next(now(), 30), Action::AskPosition);
        s.record(now(), 30, pos(12));
        assert_eq!((s.phase(), s.acked()), (Phase::Online, Some(12)));
        assert_eq!(s.next(now(), 30), Action::Send { after: 12 });
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_log_waits_a_poll_without_blaming_the_remote() {
        let mut s = shipper();
        s.record(now(), 9, pos(1));
        s.record(now(), 9, Outcome::Unreadable("disk I/O error".into()));
        assert_eq!(s.breaker(now()), BreakerState::Closed);
        assert_eq!(s.phase(), Phase::Online);
        let Action::Wait { until } = s.next(now(), 9) else {
            panic!("wait a poll");
        };
        assert_eq!(until - now(), ShipperConfig::default().poll);
    }
}
