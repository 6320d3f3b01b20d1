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
//!   an acknowledgement moves the position, one beyond what was sent is
//!   refused (never trusted: retention prunes by it);
//! - a gap answer moves the position back to the seq the remote expects (the
//!   explicit resync path); a local log that no longer holds that seq
//!   (retention) is refused, never skipped;
//! - a transient failure waits a jittered, doubling delay and counts against
//!   the breaker; while the breaker is open nothing is sent;
//! - a refusal waits [`ShipperConfig::refused_retry`] and starts again from
//!   asking the position (an operator may have fixed the cause);
//! - caught up, it idles until a local commit or [`ShipperConfig::poll`].

use std::future::Future;
use std::time::Duration;

use hms_domain::Envelope;
use hms_domain::sync::SyncBatch;
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
    #[error("the remote acknowledged seq {acked} after a batch ending at seq {sent_upto}")]
    Overacknowledged {
        /// What it acknowledged.
        acked: u64,
        /// The last seq sent.
        sent_upto: u64,
    },
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
    Position(u64),
    /// The remote stored a batch ending at `sent_upto` and acknowledged up to `acked`.
    Acked {
        /// Its new position.
        acked: u64,
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
            Outcome::Position(remote) => {
                self.succeeded(now);
                if remote > local {
                    self.refuse(now, Refusal::RemoteAhead { remote, local });
                } else {
                    self.acked = Some(remote);
                }
            }
            Outcome::Acked { acked, sent_upto } => {
                self.succeeded(now);
                if acked > sent_upto {
                    self.refuse(now, Refusal::Overacknowledged { acked, sent_upto });
                } else {
                    self.acked = Some(acked);
                }
            }
            Outcome::NothingToSend => {
                self.acked = Some(self.acked.unwrap_or(0).max(local));
            }
            Outcome::Gap { expected } => {
                // The explicit resync path: an answer, not a failure.
                self.succeeded(now);
                self.acked = Some(expected.saturating_sub(1));
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
    let answer = |r: Result<u64, PushError>| match r {
        Ok(seq) => Outcome::Position(seq),
        Err(e) => failed(e),
    };
    match action {
        Action::AskPosition => Exchanged {
            outcome: answer(
                client
                    .position(signer, now_ms, timeout)
                    .await
                    .map(|p| p.acked_seq),
            ),
            sent: vec![],
        },
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
            let sent_upto = last.seq;
            let sent: Vec<(u64, i64)> = events
                .iter()
                .map(|e| (e.seq, e.recorded_at.as_millis()))
                .collect();
            let batch = SyncBatch {
                hospital: signer.hospital().clone(),
                node: signer.node().clone(),
                events,
            };
            let outcome = match client.push(signer, &batch, now_ms, timeout).await {
                Ok(p) => Outcome::Acked {
                    acked: p.acked_seq,
                    sent_upto,
                },
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

    /// Advances paused time to `until`.
    async fn sleep_until(until: Instant) {
        tokio::time::sleep_until(until).await;
    }

    #[tokio::test(start_paused = true)]
    async fn it_asks_the_position_sends_what_follows_and_idles_when_caught_up() {
        let mut s = shipper();
        assert_eq!(s.phase(), Phase::Connecting);
        assert_eq!(s.next(now(), 10), Action::AskPosition);
        s.record(now(), 10, Outcome::Position(4));
        assert_eq!((s.phase(), s.acked()), (Phase::Online, Some(4)));
        assert_eq!(s.next(now(), 10), Action::Send { after: 4 });
        s.record(
            now(),
            10,
            Outcome::Acked {
                acked: 10,
                sent_upto: 10,
            },
        );
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
        s.record(now(), 100, Outcome::Position(90));
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
        s.record(now(), 10, Outcome::Position(0));
        for _ in 0..2 {
            let Action::Send { after } = s.next(now(), 10) else {
                panic!("half-open probes are sent");
            };
            s.record(
                now(),
                10,
                Outcome::Acked {
                    acked: after + 1,
                    sent_upto: after + 1,
                },
            );
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
        s.record(now(), 10, Outcome::Position(2));
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
        s.record(now(), 10, Outcome::Position(2));
        assert_eq!((s.phase(), s.refusal()), (Phase::Online, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_that_wants_pruned_events_is_refused_not_skipped() {
        let mut s = shipper();
        s.record(now(), 500, Outcome::Position(0));
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
        s.record(now(), 5, Outcome::Position(9));
        assert_eq!(
            s.refusal(),
            Some(&Refusal::RemoteAhead {
                remote: 9,
                local: 5
            })
        );
        assert_eq!(s.acked(), None);

        let mut s = shipper();
        s.record(now(), 50, Outcome::Position(10));
        s.record(
            now(),
            50,
            Outcome::Acked {
                acked: 45,
                sent_upto: 20,
            },
        );
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
        s.record(now(), 30, Outcome::Position(12));
        assert_eq!((s.phase(), s.acked()), (Phase::Online, Some(12)));
        assert_eq!(s.next(now(), 30), Action::Send { after: 12 });
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_log_waits_a_poll_without_blaming_the_remote() {
        let mut s = shipper();
        s.record(now(), 9, Outcome::Position(1));
        s.record(now(), 9, Outcome::Unreadable("disk I/O error".into()));
        assert_eq!(s.breaker(now()), BreakerState::Closed);
        assert_eq!(s.phase(), Phase::Online);
        let Action::Wait { until } = s.next(now(), 9) else {
            panic!("wait a poll");
        };
        assert_eq!(until - now(), ShipperConfig::default().poll);
    }
}
