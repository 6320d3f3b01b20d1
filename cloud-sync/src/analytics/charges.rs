//! Charges per UTC day, the part of [`super::Projection`] that the
//! `billing.*` events feed.
//!
//! Each transaction is kept by its transaction id with what the day figures
//! need of it: its UTC day (of `charge.date`, the transaction date, not
//! when it was recorded), what it counts ([`Charge::counted_cents`]; 0 once
//! reversed), whether it is a credit and whether it is reversed. The events
//! carry the whole transaction, so the latest event of an id replaces what
//! was kept for it: `billing.charge_posted` adds a transaction (the same one
//! again changes nothing), `billing.charge_reversed` marks it reversed, and
//! its day's figures are moved accordingly. The id is kept as the first 16
//! bytes of its SHA-256 (16 bytes a transaction instead of up to 64, no
//! allocation; two ids of one hospital share a key with a probability of
//! about 2⁻¹²⁸ per pair).
//!
//! Memory is bounded by a floor: days before it are dropped, with their
//! transactions, and events of such days are ignored afterwards. The
//! projection raises the floor as its clock moves
//! ([`super::RETAIN_DAYS`]); past [`MAX_TRANSACTIONS`] kept transactions the
//! oldest days go too, until at most nine tenths of the cap remain.

use std::collections::{BTreeMap, HashMap};

use hms_domain::charge::{Charge, ChargeKind, ChargeStatus};

use super::DAY_MS;

/// Most transactions one hospital's projection keeps: 5,000 a day over
/// [`super::RETAIN_DAYS`]. 40 bytes each in a hash table, which with its
/// slack makes at most about 170 MB at the cap.
pub const MAX_TRANSACTIONS: usize = 2_000_000;

/// The charges of one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChargeDay {
    /// Sum of what the day's transactions count, in cents (credits
    /// negative, reversed transactions 0).
    pub total_cents: i128,
    /// Transactions of the day, reversed ones included.
    pub transactions: u64,
    /// Of them, credits.
    pub credits: u64,
    /// Of them, reversed.
    pub reversed: u64,
}

impl ChargeDay {
    fn add(&mut self, t: &Tx) {
        self.total_cents += i128::from(t.cents);
        self.transactions += 1;
        self.credits += u64::from(t.credit);
        self.reversed += u64::from(t.reversed);
    }

    fn remove(&mut self, t: &Tx) {
        self.total_cents -= i128::from(t.cents);
        self.transactions = self.transactions.saturating_sub(1);
        self.credits = self.credits.saturating_sub(u64::from(t.credit));
        self.reversed = self.reversed.saturating_sub(u64::from(t.reversed));
    }

    /// The total in cents, clamped to `i64` (only a sum of absurd amounts
    /// reaches the clamp).
    pub fn total_cents_i64(&self) -> i64 {
        i64::try_from(self.total_cents).unwrap_or(if self.total_cents < 0 {
            i64::MIN
        } else {
            i64::MAX
        })
    }
}

/// What one transaction adds to its day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tx {
    day: i64,
    cents: i64,
    credit: bool,
    reversed: bool,
}

/// The charges of one hospital, per day.
#[derive(Debug)]
pub struct Charges {
    floor: i64,
    cap: usize,
    txs: HashMap<u128, Tx>,
    days: BTreeMap<i64, ChargeDay>,
}

impl Default for Charges {
    fn default() -> Self {
        Self::with_cap(MAX_TRANSACTIONS)
    }
}

/// The key of a transaction id.
fn key(transaction_id: &str) -> u128 {
    let d = ring::digest::digest(&ring::digest::SHA256, transaction_id.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&d.as_ref()[..16]);
    u128::from_be_bytes(first)
}

impl Charges {
    /// Empty, keeping at most `cap` transactions.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            floor: i64::MIN,
            cap: cap.max(1),
            txs: HashMap::new(),
            days: BTreeMap::new(),
        }
    }

    /// Records the transaction as an event carries it; `reversal` for
    /// `billing.charge_reversed`.
    pub fn apply(&mut self, charge: &Charge, reversal: bool) {
        let reversed = reversal || charge.status == ChargeStatus::Reversed;
        let tx = Tx {
            day: charge.date.as_millis().div_euclid(DAY_MS),
            cents: if reversed { 0 } else { charge.counted_cents() },
            credit: charge.kind == ChargeKind::Credit,
            reversed,
        };
        let k = key(&charge.transaction_id);
        if let Some(old) = self.txs.remove(&k) {
            self.unfigure(&old);
        }
        if tx.day < self.floor {
            return;
        }
        self.days.entry(tx.day).or_default().add(&tx);
        self.txs.insert(k, tx);
        if self.txs.len() > self.cap {
            self.shed();
        }
    }

    fn unfigure(&mut self, t: &Tx) {
        if let Some(d) = self.days.get_mut(&t.day) {
            d.remove(t);
            if d.transactions == 0 {
                self.days.remove(&t.day);
            }
        }
    }

    /// Drops the oldest days until at most nine tenths of the cap remain.
    fn shed(&mut self) {
        let keep = self.cap - self.cap / 10;
        let mut left = self.txs.len();
        let mut floor = self.floor;
        for (day, d) in &self.days {
            if left <= keep {
                break;
            }
            left = left.saturating_sub(usize::try_from(d.transactions).unwrap_or(usize::MAX));
            floor = day + 1;
        }
        tracing::warn!(
            kept = self.txs.len(),
            cap = self.cap,
            "analytics keeps too many transactions; dropping the oldest days"
        );
        self.prune(floor);
    }

    /// Drops the days before `floor` (a floor never goes down).
    pub fn prune(&mut self, floor: i64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        self.txs.retain(|_, t| t.day >= floor);
        self.days = self.days.split_off(&floor);
    }

    /// The floor: days before it are not held (`None`: no floor yet).
    pub fn floor(&self) -> Option<i64> {
        (self.floor != i64::MIN).then_some(self.floor)
    }

    /// The figures of day number `day` (days since the epoch, UTC).
    pub fn day(&self, day: i64) -> ChargeDay {
        self.days.get(&day).copied().unwrap_or_default()
    }

    /// Transactions kept.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }
}
