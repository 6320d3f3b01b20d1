//! Replaying the log: every event, in order, through the live writer's
//! board and projection code, with the hash chain checked on the way. What
//! `verify` (into memory), `restore --from-cloud` (into a new store) and
//! retention (advancing the base) have in common.

use hms_domain::{ChainVerifier, Envelope, EventHash};
use rusqlite::Connection;

use super::projection;
use crate::board::Board;

/// Replays events, in order, through the live writer's board and projection
/// code into a database: used by verification (into memory) and by restore
/// from the cloud (into a new store). The hash chain is checked on the way.
#[derive(Debug)]
pub struct Replayer {
    /// The board rebuilt so far.
    pub board: Board,
    chain: ChainVerifier,
    store_events: bool,
}

impl Default for Replayer {
    fn default() -> Self {
        Self::new()
    }
}

impl Replayer {
    /// A replay from the start of the log.
    pub fn new() -> Self {
        Self {
            board: Board::new(),
            chain: ChainVerifier::new(),
            store_events: true,
        }
    }

    /// A replay that continues from `board`, the state after event
    /// `next_seq - 1` whose hash is `prev`. With `store_events` false only
    /// the projections are written (advancing a retention base).
    pub fn resume(board: Board, next_seq: u64, prev: EventHash, store_events: bool) -> Self {
        Self {
            board,
            chain: ChainVerifier::resume(next_seq, prev),
            store_events,
        }
    }

    /// Checks `env` against the chain, applies it to the board and writes
    /// it and its projections to `conn`. `Ok(Some(problem))` when the event
    /// does not fit (broken chain, undecodable body, refused by the board):
    /// nothing of it was written and the replay must stop.
    pub fn apply(&mut self, conn: &Connection, env: &Envelope) -> anyhow::Result<Option<String>> {
        if let Err(e) = self.chain.check(env) {
            return Ok(Some(format!("hash chain: {e}")));
        }
        let body = match env.decode_body() {
            Ok(b) => b,
            Err(e) => return Ok(Some(format!("seq {}: undecodable body: {e}", env.seq))),
        };
        if let Err(e) = self.board.apply_change(&body, env.recorded_at) {
            return Ok(Some(format!("seq {}: replay failed: {e}", env.seq)));
        }
        if self.store_events {
            projection::insert_event(conn, env)?;
        }
        projection::project(conn, env, &body, &self.board)?;
        Ok(None)
    }
}
