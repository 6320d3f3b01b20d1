//! Retries with exponential backoff and jitter, and a circuit breaker, for the
//! uplink, DR replication and local inference. Sans-IO: callers pass the current time (`Instant`), so tests drive
//! them with paused tokio time.
//!
//! Default breaker: a sliding window of 10 calls, judged from 5 calls, opens
//! at a 50 % failure rate, stays open 30 s, then lets 3 probes through
//! half-open; every figure is a setting ([`BreakerConfig`]).

use std::collections::VecDeque;
use std::time::Duration;

use ring::rand::SecureRandom;
use tokio::time::Instant;

/// A jitter value in [0, 1) from the system's random generator: the one
/// source every retry of the project spreads its delays with.
pub fn jitter() -> f64 {
    let mut b = [0u8; 2];
    match ring::rand::SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u16::from_le_bytes(b)) / 65_536.0,
        // A generator that fails still gets a delay in the window.
        Err(_) => 0.5,
    }
}

/// Backoff: `base * 2^attempt`, capped, with full jitter from `jitter` in [0, 1).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based); `jitter` in [0, 1)
    /// picks a point in the upper half of the window, so delays never collapse to 0.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .min(self.max);
        exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Calls kept in the sliding window.
    pub window: usize,
    /// Calls needed before the failure rate is judged.
    pub min_calls: usize,
    /// Failure rate (0..1) that opens the breaker.
    pub failure_rate: f64,
    /// How long it stays open.
    pub open_for: Duration,
    /// Probes allowed while half-open; all must succeed to close.
    pub half_open_probes: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 10,
            min_calls: 5,
            failure_rate: 0.5,
            open_for: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

/// Breaker state, for health reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the given instant.
    Open {
        /// When half-open begins.
        until: Instant,
    },
    /// A few probes are allowed.
    HalfOpen {
        /// Probes still allowed.
        left: usize,
        /// Probes that succeeded.
        passed: usize,
    },
}

/// A circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    window: VecDeque<bool>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: BreakerState::Closed,
            window: VecDeque::new(),
        }
    }

    /// The state at `now` (an open breaker whose time is up is half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen {
                left: self.cfg.half_open_probes,
                passed: 0,
            };
        }
        self.state
    }

    /// Whether a call may be made now; a half-open breaker hands out its probes.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { left, passed } => {
                if left == 0 {
                    return false;
                }
                self.state = BreakerState::HalfOpen {
                    left: left - 1,
                    passed,
                };
                true
            }
        }
    }

    /// Records the outcome of an allowed call.
    pub fn record(&mut self, ok: bool, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen { left, passed } => {
                if !ok {
                    self.trip(now);
                } else if passed + 1 >= self.cfg.half_open_probes {
                    self.state = BreakerState::Closed;
                    self.window.clear();
                } else {
                    self.state = BreakerState::HalfOpen {
                        left,
                        passed: passed + 1,
                    };
                }
            }
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.window.push_back(ok);
                while self.window.len() > self.cfg.window {
                    self.window.pop_front();
                }
                let failures = self.window.iter().filter(|o| !**o).count();
                if self.window.len() >= self.cfg.min_calls
                    && failures as f64 / self.window.len() as f64 >= self.cfg.failure_rate
                {
                    self.trip(now);
                }
            }
        }
    }

    fn trip(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.cfg.open_for,
        };
        self.window.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(1600));
        assert_eq!(b.delay(20, 1.0), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_waits_probes_and_closes() {
        let mut br = Breaker::new(BreakerConfig::default());
        // Four failures out of four: not judged yet (min 5 calls).
        for _ in 0..4 {
            assert!(br.allow(Instant::now()));
            br.record(false, Instant::now());
        }
        assert_eq!(br.state(Instant::now()), BreakerState::Closed);
        br.record(false, Instant::now());
        assert!(matches!(
            br.state(Instant::now()),
            BreakerState::Open { .. }
        ));
        assert!(!br.allow(Instant::now()), "open: calls refused");
        // 29 s later still open; at 30 s half-open with 3 probes.
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!br.allow(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(br.allow(Instant::now()) && br.allow(Instant::now()) && br.allow(Instant::now()));
        assert!(!br.allow(Instant::now()), "only three probes");
        br.record(true, Instant::now());
        br.record(true, Instant::now());
        assert!(matches!(
            br.state(Instant::now()),
            BreakerState::HalfOpen { .. }
        ));
        br.record(true, Instant::now());
        assert_eq!(br.state(Instant::now()), BreakerState::Closed);
        // A failed probe opens it again for another 30 s.
        for _ in 0..5 {
            br.allow(Instant::now());
            br.record(false, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(br.allow(Instant::now()));
        br.record(false, Instant::now());
        assert!(matches!(
            br.state(Instant::now()),
            BreakerState::Open { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_mostly_healthy_link_stays_closed() {
        let mut br = Breaker::new(BreakerConfig::default());
        for i in 0..100 {
            assert!(br.allow(Instant::now()));
            // One failure in three: below the 50 % threshold.
            br.record(i % 3 != 0, Instant::now());
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(br.state(Instant::now()), BreakerState::Closed);
    }
}
