//! Each bed's recent history, kept in memory for the kiosk's bed view.
//!
//! Loaded from the log at start (the last `history_limit` events of each
//! bed) and extended by the writer after each commit, so reading a bed's
//! history never touches SQLite.

use std::collections::{HashMap, VecDeque};

use anyhow::Context;
use hms_domain::{BedId, Envelope, EventBody, HospitalId, Timestamp};
use rusqlite::Connection;

use super::projection;
use crate::board::Board;

/// One entry of a bed's recent history (no patient details).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryItem {
    /// Event seq.
    pub seq: u64,
    /// Event kind.
    pub kind: String,
    /// When the appliance recorded it.
    pub recorded_at: Timestamp,
    /// `kind:id` of the actor.
    pub actor: String,
    /// State of the bed after the event, for state changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Version of the bed after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl HistoryItem {
    /// The history entry of an event.
    pub fn of(env: &Envelope, body: &EventBody) -> Self {
        let (state, version) = match body {
            EventBody::BedStateChanged { state, version, .. } => {
                (Some(state.name()), Some(*version))
            }
            EventBody::BedIsolationChanged { version, .. }
            | EventBody::BedPendingDischargeChanged { version, .. } => (None, Some(*version)),
            EventBody::BedCommissioned { .. } => (Some("vacant_clean"), Some(1)),
            _ => (None, None),
        };
        let kind = match env.actor.kind {
            hms_domain::ActorKind::User => "user",
            hms_domain::ActorKind::Device => "device",
            hms_domain::ActorKind::Interface => "interface",
            hms_domain::ActorKind::System => "system",
        };
        HistoryItem {
            seq: env.seq,
            kind: env.kind.clone(),
            recorded_at: env.recorded_at,
            actor: format!("{kind}:{}", env.actor.id),
            state,
            version,
        }
    }
}

/// Recent history per bed, newest last.
pub(super) type Histories = HashMap<BedId, VecDeque<HistoryItem>>;

/// Loads the last `limit` events of every bed on the board.
pub(super) fn load_history(
    conn: &Connection,
    board: &Board,
    hospital: &HospitalId,
    limit: usize,
) -> anyhow::Result<Histories> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {} FROM events WHERE subject = ?1 ORDER BY seq DESC LIMIT ?2",
        projection::EVENT_COLUMNS
    ))?;
    let mut out = Histories::new();
    for bed in board.view().beds() {
        let mut rows = stmt.query(rusqlite::params![bed.id.as_str(), limit as i64])?;
        let mut items = VecDeque::new();
        while let Some(r) = rows.next()? {
            let env = projection::event_from_row(hospital, r)?;
            let body = env
                .decode_body()
                .with_context(|| format!("event {} has an undecodable body", env.seq))?;
            items.push_front(HistoryItem::of(&env, &body));
        }
        out.insert(bed.id.clone(), items);
    }
    Ok(out)
}
