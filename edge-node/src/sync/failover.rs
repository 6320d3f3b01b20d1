//! Which of the cloud's addresses the uplink talks to (sans-IO).
//!
//! `uplink.cloud` may list several addresses in order of preference: the
//! region's instances, then its DR peer. The uplink starts on the first.
//! After [`FAILOVER_AFTER`] transient failures in a row on the address in
//! use (no answer, a timeout, a 5xx), it moves to the next one, round the
//! list. While on any address but the first, it goes back to the first
//! every `failback` (and moves on again if the first still does not
//! answer). A refusal never moves it: a refusal needs an operator, and
//! another address would refuse alike. The one exception is 421
//! Misdirected Request, the answer of a cloud that does not serve this
//! hospital (a DR replica not promoted for it, a primary fenced from it
//! after its replica was): the uplink moves to the next address at once,
//! unless every address said so since the last real answer, when 421
//! counts as a transient failure (back-off, then the next address). Every
//! move is counted; `/health` shows the count and the address in use.

use std::time::Duration;

use tokio::time::Instant;

/// Transient failures in a row on one address before the next is tried.
pub const FAILOVER_AFTER: u32 = 3;

/// Why the uplink moved to another address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The address in use stopped answering.
    Failover,
    /// Back to the first address after `failback` elsewhere.
    Failback,
    /// The address in use does not serve this hospital (421).
    Misdirected,
}

/// What came of one exchange with the address in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An answer (success, gap or refusal).
    Answered,
    /// No answer: unreachable, a timeout, a 5xx.
    Unanswered,
    /// 421: this address does not serve the hospital.
    Misdirected,
}

/// The address in use and the count of moves.
#[derive(Debug, Clone)]
pub struct Failover {
    addresses: usize,
    current: usize,
    failures: u32,
    /// 421 answers since the last real answer, on any address.
    misdirected: usize,
    since: Instant,
    failback: Duration,
    moves: u64,
}

impl Failover {
    /// On the first of `addresses` (at least one) from `now`.
    pub fn new(addresses: usize, failback: Duration, now: Instant) -> Failover {
        Failover {
            addresses: addresses.max(1),
            current: 0,
            failures: 0,
            misdirected: 0,
            since: now,
            failback,
            moves: 0,
        }
    }

    /// The index of the address in use.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Moves so far (failovers and failbacks).
    pub fn moves(&self) -> u64 {
        self.moves
    }

    fn go(&mut self, to: usize, now: Instant) {
        self.current = to;
        self.failures = 0;
        self.since = now;
        self.moves += 1;
    }

    /// Records what came of an exchange with the address in use. The move
    /// it causes, if any; a 421 that causes none is to be treated as a
    /// transient failure (every address said it since the last answer).
    pub fn record(&mut self, answer: Answer, now: Instant) -> Option<Move> {
        match answer {
            Answer::Answered => {
                self.failures = 0;
                self.misdirected = 0;
                return None;
            }
            Answer::Misdirected => {
                self.misdirected += 1;
                if self.addresses > 1 && self.misdirected < self.addresses {
                    self.go((self.current + 1) % self.addresses, now);
                    return Some(Move::Misdirected);
                }
            }
            Answer::Unanswered => {}
        }
        self.failures += 1;
        if self.addresses > 1 && self.failures >= FAILOVER_AFTER {
            self.go((self.current + 1) % self.addresses, now);
            return Some(Move::Failover);
        }
        None
    }

    /// Goes back to the first address when the one in use is another and
    /// has been for `failback`.
    pub fn poll(&mut self, now: Instant) -> Option<Move> {
        if self.current != 0 && now.duration_since(self.since) >= self.failback {
            self.go(0, now);
            return Some(Move::Failback);
        }
        None
    }

    /// When [`Failover::poll`] would next move (none while on the first).
    pub fn next_poll(&self) -> Option<Instant> {
        (self.current != 0).then(|| self.since + self.failback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACK: Duration = Duration::from_secs(300);

    #[tokio::test(start_paused = true)]
    async fn three_failures_in_a_row_move_on_and_the_first_is_tried_again_later() {
        let t0 = Instant::now();
        let mut f = Failover::new(3, BACK, t0);
        assert_eq!((f.current(), f.next_poll()), (0, None));
        // Two failures, then an answer: the count starts again.
        assert_eq!(f.record(Answer::Unanswered, t0), None);
        assert_eq!(f.record(Answer::Unanswered, t0), None);
        assert_eq!(f.record(Answer::Answered, t0), None);
        assert_eq!(f.record(Answer::Unanswered, t0), None);
        assert_eq!(f.record(Answer::Unanswered, t0), None);
        assert_eq!(f.record(Answer::Unanswered, t0), Some(Move::Failover));
        assert_eq!((f.current(), f.moves()), (1, 1));
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..2 {
            assert_eq!(f.record(Answer::Unanswered, t1), None);
        }
        assert_eq!(f.record(Answer::Unanswered, t1), Some(Move::Failover));
        assert_eq!(f.current(), 2);
        // Round the list.
        for _ in 0..2 {
            f.record(Answer::Unanswered, t1);
        }
        assert_eq!(f.record(Answer::Unanswered, t1), Some(Move::Failover));
        assert_eq!(f.current(), 0);
        for _ in 0..3 {
            f.record(Answer::Unanswered, t1);
        }
        assert_eq!(f.current(), 1);
        // On an alternate: back to the first after `failback`, not sooner.
        assert_eq!(f.next_poll(), Some(t1 + BACK));
        assert_eq!(
            f.record(Answer::Answered, t1 + Duration::from_secs(5)),
            None
        );
        assert_eq!(f.poll(t1 + BACK - Duration::from_secs(1)), None);
        assert_eq!(f.poll(t1 + BACK), Some(Move::Failback));
        assert_eq!((f.current(), f.moves(), f.next_poll()), (0, 5, None));
        assert_eq!(f.poll(t1 + BACK * 2), None, "already on the first");
    }

    #[tokio::test(start_paused = true)]
    async fn a_misdirecting_address_is_left_at_once_until_every_address_misdirected() {
        let t0 = Instant::now();
        // The region's instance, then its DR replica (not promoted yet).
        let mut f = Failover::new(2, BACK, t0);
        for _ in 0..2 {
            f.record(Answer::Unanswered, t0);
        }
        assert_eq!(f.record(Answer::Unanswered, t0), Some(Move::Failover));
        // The replica answers 421: straight back to the first.
        assert_eq!(f.record(Answer::Misdirected, t0), Some(Move::Misdirected));
        assert_eq!((f.current(), f.moves()), (0, 2));
        for _ in 0..2 {
            f.record(Answer::Unanswered, t0);
        }
        assert_eq!(f.record(Answer::Unanswered, t0), Some(Move::Failover));
        // 421 again with no answer anywhere since: a transient failure now,
        // so the uplink backs off rather than bouncing between the two.
        assert_eq!(f.record(Answer::Misdirected, t0), None);
        assert_eq!(f.record(Answer::Misdirected, t0), None);
        assert_eq!(f.record(Answer::Misdirected, t0), Some(Move::Failover));
        assert_eq!(f.current(), 0);
        // The replica was promoted: it answers, and 421 moves at once again.
        for _ in 0..3 {
            f.record(Answer::Unanswered, t0);
        }
        assert_eq!(f.current(), 1);
        assert_eq!(f.record(Answer::Answered, t0), None);
        assert_eq!(f.record(Answer::Misdirected, t0), Some(Move::Misdirected));
        assert_eq!(f.current(), 0);
        // One address: 421 never moves it.
        let mut one = Failover::new(1, BACK, t0);
        for _ in 0..5 {
            assert_eq!(one.record(Answer::Misdirected, t0), None);
        }
        assert_eq!(one.moves(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_never_moves() {
        let t0 = Instant::now();
        let mut f = Failover::new(1, BACK, t0);
        for _ in 0..10 {
            assert_eq!(f.record(Answer::Unanswered, t0), None);
        }
        assert_eq!(f.poll(t0 + BACK * 3), None);
        assert_eq!((f.current(), f.moves()), (0, 0));
    }
}
