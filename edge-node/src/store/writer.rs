//! The writer: the only code that writes `edge.sqlite`.
//!
//! [`Writer::run`] takes requests off the bounded queue and commits them in
//! groups: everything queued (up to `max_batch`) in one `BEGIN IMMEDIATE …
//! COMMIT`. Each request is applied inside the transaction and leaves an
//! [`Answer`], sent only once the commit has returned (or with the error if
//! it failed). After a commit it publishes, in this order, the histories,
//! the board view and the committed seq, then the live notices and patient
//! events, and only then answers: a caller that gets its answer and reads
//! the board sees its own change.
//!
//! Retention's upkeep (writing the base, deleting pruned events) runs
//! between groups in transactions of its own.

use std::sync::Arc;
use std::time::Instant;

use hms_domain::{Actor, BedId, Draft, Envelope, EventBody, EventHash, HospitalId, Timestamp};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::history::HistoryItem;
use super::published::{Published, lock};
use super::{
    Committed, Hl7Reply, Hl7Request, Notice, Replayed, StoreSettings, WriteError, WriteRequest,
    load_beds, projection, retention,
};
use crate::board::{Bed, Board};
use crate::integration::adt::Locations;
use crate::integration::hl7::ParseConfig;
use crate::integration::hl7::time::HospitalTime;
use crate::integration::siu::OrLocations;
use crate::or_board::OrBoard;

/// Where a request's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

/// One request for the writer, with where its answer goes.
pub(super) enum Request {
    /// A board command (kiosk, API, reconciliation, downlink).
    Write(WriteRequest, Reply<Committed>),
    /// Board commands handed in together (the audit queue's groups): each
    /// answered on its own, all committed in the same group.
    Writes(Vec<(WriteRequest, Reply<Committed>)>),
    /// An inbound HL7 message.
    Hl7(Hl7Request, Reply<Hl7Reply>),
    /// Re-apply a parked message (`None`: no such parked message).
    Replay(u64, Reply<Option<Replayed>>),
    /// Record OR case predictions; each only while its case is scheduled
    /// at the version predicted. Answers how many were recorded.
    Predictions(Vec<hms_domain::CasePrediction>, Reply<usize>),
    /// Retention: delete pruned events.
    Prune(Prune, Reply<usize>),
    /// Retention: write a computed base.
    Base(retention::Delta, Reply<usize>),
    /// Finish a checkpoint the checkpointer began: copy the frames committed
    /// since, so the next commit restarts the WAL from its beginning.
    Checkpoint(Reply<Checkpointed>),
    /// Commit what came before, then stop.
    Close(oneshot::Sender<()>),
}

/// What a WAL checkpoint did: frames in the WAL, and how many of them are
/// now in the database file (equal: the next commit restarts the WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// Frames in the WAL.
    pub log: i64,
    /// Frames copied into the database file.
    pub copied: i64,
}

/// A retention deletion (see [`retention::DELETE_SQL`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Prune {
    pub(super) upto: u64,
    pub(super) cutoffs: retention::Cutoffs,
    pub(super) limit: usize,
}

/// An answer computed inside the transaction, sent once the commit's fate
/// is known: the outcome after a commit, the commit's error otherwise.
pub(super) struct Answer(Box<SendAnswer>);

/// Sends an answer, given the commit's failure if it failed.
type SendAnswer = dyn FnOnce(Option<&WriteError>) + Send;

impl Answer {
    pub(super) fn new<T: Send + 'static>(reply: Reply<T>, outcome: Result<T, WriteError>) -> Self {
        Answer(Box::new(move |failed| {
            let _ = reply.send(match failed {
                None => outcome,
                Some(e) => Err(e.clone()),
            });
        }))
    }

    fn send(self, failed: Option<&WriteError>) {
        (self.0)(failed)
    }
}

/// What one group's transaction produced, published after its commit.
#[derive(Default)]
struct Group {
    /// History entries.
    history: Vec<(BedId, HistoryItem)>,
    /// Live-stream notices.
    notices: Vec<Notice>,
    /// Patient record events.
    patients: Vec<Arc<EventBody>>,
    /// Events appended.
    events: u64,
    /// The board changed in a way that sends no notice (topology, patients).
    board_changed: bool,
    /// The OR board changed.
    or_changed: bool,
}

impl Group {
    fn clear(&mut self) {
        self.history.clear();
        self.notices.clear();
        self.patients.clear();
        self.events = 0;
        self.board_changed = false;
        self.or_changed = false;
    }
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) board: Board,
    /// The OR board (SIU).
    pub(super) or_board: OrBoard,
    pub(super) next_seq: u64,
    pub(super) last_hash: EventHash,
    hospital: HospitalId,
    max_batch: usize,
    pub(super) locations: Locations,
    pub(super) or_locations: OrLocations,
    pub(super) parse: ParseConfig,
    /// The hospital's clock, for HL7 times.
    pub(super) clock: HospitalTime,
    pub(super) published: Arc<Published>,
    /// The board must be rebuilt from the projections before the next group.
    board_stale: bool,
    group: Group,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        board: Board,
        or_board: OrBoard,
        next_seq: u64,
        last_hash: EventHash,
        settings: &StoreSettings,
        published: Arc<Published>,
    ) -> Self {
        Writer {
            conn,
            board,
            or_board,
            next_seq,
            last_hash,
            hospital: settings.hospital.clone(),
            max_batch: settings.max_batch.max(1),
            locations: settings.locations.clone(),
            or_locations: settings.or_locations.clone(),
            parse: settings.parse,
            clock: settings.clock.clone(),
            published,
            board_stale: false,
            group: Group::default(),
        }
    }

    /// Commits groups of requests until [`Request::Close`] (or until every
    /// handle is gone).
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch: Vec<Request> = Vec::with_capacity(self.max_batch);
        while let Some(first) = rx.recv().await {
            if rx.is_empty() {
                // Connections on this thread whose messages have arrived get
                // to hand them in before the group closes (group commit
                // without a change of thread).
                tokio::task::yield_now().await;
            }
            let mut upkeep = None;
            let mut close = None;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Prune(..) | Request::Base(..) | Request::Checkpoint(..) => {
                        upkeep = Some(req);
                        break;
                    }
                    Request::Close(done) => {
                        close = Some(done);
                        break;
                    }
                    Request::Writes(ws) => {
                        batch.extend(ws.into_iter().map(|(w, r)| Request::Write(w, r)));
                    }
                    other => batch.push(other),
                }
                if batch.len() >= self.max_batch {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if !batch.is_empty() {
                self.commit_group(std::mem::take(&mut batch));
            }
            match upkeep {
                Some(Request::Prune(p, reply)) => {
                    let _ = reply.send(self.prune(p));
                }
                Some(Request::Base(d, reply)) => {
                    let r = retention::write_base(&self.conn, &d).map_err(|e| {
                        tracing::error!(error = %format!("{e:#}"), "writing the retention base failed");
                        WriteError::Unavailable(format!("{e:#}"))
                    });
                    let _ = reply.send(r);
                }
                Some(Request::Checkpoint(reply)) => {
                    let _ = reply.send(self.checkpoint("PASSIVE"));
                }
                _ => {}
            }
            if let Some(done) = close {
                self.checkpoint_truncate();
                rx.close();
                // Anything still queued after Close is answered, never dropped silently.
                while let Ok(req) = rx.try_recv() {
                    refuse(req, WriteError::Closed);
                }
                let _ = done.send(());
                tracing::info!("store writer closed");
                return;
            }
        }
    }

    /// Deletes acknowledged, expired events covered by the base, in one transaction.
    fn prune(&mut self, p: Prune) -> Result<usize, WriteError> {
        let c = &p.cutoffs.0;
        let run = |conn: &Connection| -> rusqlite::Result<usize> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let n = conn.execute(
                retention::DELETE_SQL,
                rusqlite::params![
                    p.upto as i64,
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    c[4],
                    c[5],
                    c[6],
                    0,
                    p.limit as i64
                ],
            )?;
            conn.execute_batch("COMMIT")?;
            Ok(n)
        };
        run(&self.conn).map_err(|e| {
            let _ = self.conn.execute_batch("ROLLBACK");
            tracing::error!(error = %e, "retention delete failed; nothing deleted");
            WriteError::Unavailable(e.to_string())
        })
    }

    /// Checkpoints the WAL at close (TRUNCATE: copy everything, empty the file).
    fn checkpoint_truncate(&mut self) {
        let _ = self.checkpoint("TRUNCATE");
    }

    /// Checkpoints the WAL on the write connection. Between groups nothing
    /// else writes, so every committed frame is copied (the checkpointer
    /// copied most of them before, off the commit path) and the next commit
    /// restarts the WAL at its beginning, overwriting the file in place
    /// rather than growing it.
    fn checkpoint(&mut self, mode: &str) -> Result<Checkpointed, WriteError> {
        let r = self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        self.published.refresh_wal_size();
        match r {
            Ok((busy, log, copied)) => {
                tracing::debug!(busy, log, copied, mode, "wal checkpoint by the writer");
                self.published.metrics.checkpoints.inc();
                Ok(Checkpointed { log, copied })
            }
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed");
                Err(WriteError::Unavailable(e.to_string()))
            }
        }
    }

    /// Rebuilds the board and the OR board from the committed projections.
    /// Returns success.
    fn reload_board(&mut self) -> bool {
        match load_beds(&self.conn)
            .map_err(anyhow::Error::from)
            .and_then(|beds| Board::from_beds(beds).map_err(anyhow::Error::from))
            .and_then(|board| {
                let cases = super::load_or_cases(&self.conn)?;
                Ok((board, OrBoard::from_cases(cases)))
            }) {
            Ok((board, or_board)) => {
                self.board = board;
                self.or_board = or_board;
                self.board_stale = false;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the board after a failed commit failed");
                false
            }
        }
    }

    /// Applies a group of requests in one transaction and answers them.
    fn commit_group(&mut self, batch: Vec<Request>) {
        let started = Instant::now();
        let n = batch.len();
        if self.board_stale && !self.reload_board() {
            // The board could not be rebuilt after a failed commit: refuse
            // the group (nothing changes) until the database is readable.
            let err =
                WriteError::Unavailable("the store is recovering from a failed commit".into());
            for req in batch {
                refuse(req, err.clone());
            }
            return;
        }
        let saved = (self.next_seq, self.last_hash);
        self.group.clear();
        match self.transaction(batch) {
            Ok(answers) => {
                self.publish();
                let m = &self.published.metrics;
                m.commits.inc();
                m.batch_size.observe(n as f64);
                m.commit_seconds.observe(started.elapsed().as_secs_f64());
                m.events.inc_by(self.group.events);
                for a in answers {
                    a.send(None);
                }
            }
            Err((e, answers)) => {
                // The transaction rolled back, so the projections hold the
                // last committed state: the board is rebuilt from them (no
                // copy of the board is kept per group for this rare case).
                (self.next_seq, self.last_hash) = saved;
                self.board_stale = true;
                self.reload_board();
                self.group.clear();
                let msg = e.to_string();
                tracing::error!(error = %msg, items = n, "store commit failed; batch refused");
                self.published.metrics.commit_failures.inc();
                *lock(&self.published.last_error) = Some(msg.clone());
                let err = WriteError::Unavailable(msg);
                for a in answers {
                    a.send(Some(&err));
                }
            }
        }
    }

    /// Publishes what a committed group changed (see the module doc).
    fn publish(&mut self) {
        let p = self.published.clone();
        // A new view only when the group changed a bed.
        if !self.group.notices.is_empty() || self.group.board_changed {
            p.view.store(Arc::new(self.board.view()));
        }
        if self.group.or_changed {
            p.or_view.store(Arc::new(self.or_board.view()));
        }
        if !self.group.history.is_empty() {
            let mut h = p.history.write().unwrap_or_else(|e| e.into_inner());
            for (bed, item) in self.group.history.drain(..) {
                let list = h.entry(bed).or_default();
                list.push_back(item);
                while list.len() > p.history_limit {
                    list.pop_front();
                }
            }
        }
        lock(&p.last_error).take();
        let last = self.next_seq - 1;
        p.committed.send_if_modified(|seq| {
            let changed = *seq != last;
            *seq = last;
            changed
        });
        for change in self.group.patients.drain(..) {
            let _ = p.patients.send(change);
        }
        for notice in self.group.notices.drain(..) {
            let _ = p.notices.send(Arc::new(notice));
        }
    }

    /// Applies every request in one transaction. A refused command is an
    /// answer; an SQLite failure aborts the whole group (its answers then
    /// carry the failure).
    fn transaction(
        &mut self,
        batch: Vec<Request>,
    ) -> Result<Vec<Answer>, (rusqlite::Error, Vec<Answer>)> {
        let mut answers = Vec::with_capacity(batch.len());
        // A raw BEGIN keeps `self` borrowable while the requests are applied.
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            for req in batch {
                answers.push(unanswered(req));
            }
            return Err((e, answers));
        }
        let mut failed = None;
        for req in batch {
            if failed.is_some() {
                answers.push(unanswered(req));
                continue;
            }
            match self.apply(req) {
                Ok(a) => answers.push(a),
                Err((e, a)) => {
                    answers.push(a);
                    failed = Some(e);
                }
            }
        }
        let result = match failed {
            None => self.conn.execute_batch("COMMIT"),
            Some(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(answers),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err((e, answers))
            }
        }
    }

    /// Applies one request inside the open transaction.
    fn apply(&mut self, req: Request) -> Result<Answer, (rusqlite::Error, Answer)> {
        match req {
            Request::Write(w, reply) => match self.apply_write(w) {
                Ok(outcome) => Ok(Answer::new(reply, outcome)),
                Err(e) => Err((e, Answer::new(reply, Err(WriteError::Closed)))),
            },
            Request::Hl7(h, reply) => match self.apply_hl7(h) {
                Ok(outcome) => Ok(Answer::new(reply, Ok(outcome))),
                Err(e) => Err((e, Answer::new(reply, Err(WriteError::Closed)))),
            },
            Request::Replay(seq, reply) => match self.apply_replay(seq) {
                Ok(outcome) => Ok(Answer::new(reply, Ok(outcome))),
                Err(e) => Err((e, Answer::new(reply, Err(WriteError::Closed)))),
            },
            Request::Predictions(p, reply) => match self.apply_predictions(p) {
                Ok(n) => Ok(Answer::new(reply, Ok(n))),
                Err(e) => Err((e, Answer::new(reply, Err(WriteError::Closed)))),
            },
            other => Ok(unanswered(other)),
        }
    }

    /// Appends the predictions whose case is still scheduled at the
    /// version predicted (a case changed meanwhile gets a new one later).
    fn apply_predictions(
        &mut self,
        predictions: Vec<hms_domain::CasePrediction>,
    ) -> rusqlite::Result<usize> {
        let at = Timestamp::now();
        let actor = Actor::system();
        let mut n = 0;
        for p in predictions {
            let current = self
                .or_board
                .case(&p.case_id)
                .is_some_and(|c| c.version == p.version && c.is_active());
            if current {
                self.append(
                    at,
                    at,
                    &actor,
                    None,
                    EventBody::OrCasePredicted { prediction: p },
                )?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn apply_write(
        &mut self,
        req: WriteRequest,
    ) -> rusqlite::Result<Result<Committed, WriteError>> {
        let at = Timestamp::now();
        let changes = match self.board.apply(req.cmd, at) {
            Ok(c) => c,
            Err(e) => return Ok(Err(WriteError::Rejected(e))),
        };
        let mut committed = Committed {
            events: Vec::with_capacity(changes.len()),
            beds: Vec::with_capacity(changes.len()),
        };
        for body in changes {
            let kind = body.kind();
            let (seq, bed) = self.append(
                at,
                req.occurred_at.unwrap_or(at),
                &req.actor,
                req.correlation.as_ref(),
                body,
            )?;
            if let Some(bed) = bed {
                committed.events.push((seq, kind));
                committed.beds.push(bed);
            }
        }
        Ok(Ok(committed))
    }

    /// Seals one event, appends it and updates the projections; records the
    /// history entry and live notice to publish after commit.
    pub(super) fn append(
        &mut self,
        at: Timestamp,
        occurred_at: Timestamp,
        actor: &Actor,
        correlation: Option<&String>,
        body: EventBody,
    ) -> rusqlite::Result<(u64, Option<Arc<Bed>>)> {
        let env = Envelope::seal(
            &self.hospital,
            self.next_seq,
            self.last_hash,
            at,
            Draft {
                occurred_at,
                actor: actor.clone(),
                correlation: correlation.cloned(),
                body: body.clone(),
            },
        );
        projection::insert_event(&self.conn, &env)?;
        projection::project(&self.conn, &env, &body, &self.board)?;
        if matches!(
            body,
            EventBody::PatientRecorded { .. }
                | EventBody::PatientsMerged { .. }
                | EventBody::EidAssigned { .. }
        ) {
            self.group.patients.push(Arc::new(body.clone()));
        }
        if !matches!(
            body,
            EventBody::Hl7Message { .. }
                | EventBody::Hl7Replayed { .. }
                | EventBody::PatientRecorded { .. }
                | EventBody::EidAssigned { .. }
                | EventBody::PatientsSearched { .. }
                | EventBody::TokenCreated { .. }
                | EventBody::TokenRevoked { .. }
                | EventBody::OrCaseChanged { .. }
                | EventBody::OrCasePredicted { .. }
                | EventBody::FleetCommand { .. }
                | EventBody::Bundle { .. }
                | EventBody::ChargePosted { .. }
                | EventBody::ChargeReversed { .. }
        ) {
            self.group.board_changed = true;
        }
        if matches!(body, EventBody::OrCaseChanged { .. }) {
            self.group.or_changed = true;
        }
        self.next_seq += 1;
        self.last_hash = env.hash;
        self.group.events += 1;
        let bed = body.subject().and_then(|b| self.board.shared(b.as_str()));
        // A swap changes two beds: both get the history entry and the notice.
        let other = match &body {
            EventBody::BedsSwapped { other, .. } => Some(other),
            _ => None,
        };
        for id in body.subject().into_iter().chain(other) {
            if let Some(b) = self.board.shared(id.as_str()) {
                self.group
                    .history
                    .push((id.clone(), HistoryItem::of(&env, &body)));
                self.group.notices.push(Notice {
                    seq: env.seq,
                    kind: body.kind(),
                    bed: b,
                });
            }
        }
        Ok((env.seq, bed))
    }
}

/// The answer of a request that never got to apply (its group failed first).
fn unanswered(req: Request) -> Answer {
    match req {
        Request::Write(_, r) => Answer::new(r, Err(WriteError::Closed)),
        Request::Writes(ws) => {
            let each: Vec<Answer> = ws
                .into_iter()
                .map(|(_, r)| Answer::new(r, Err(WriteError::Closed)))
                .collect();
            Answer(Box::new(move |failed| {
                for a in each {
                    a.send(failed);
                }
            }))
        }
        Request::Hl7(_, r) => Answer::new(r, Err(WriteError::Closed)),
        Request::Replay(_, r) => Answer::new(r, Err(WriteError::Closed)),
        Request::Predictions(_, r) => Answer::new(r, Err(WriteError::Closed)),
        Request::Prune(_, r) | Request::Base(_, r) => Answer::new(r, Err(WriteError::Closed)),
        Request::Checkpoint(r) => Answer::new(r, Err(WriteError::Closed)),
        Request::Close(done) => Answer(Box::new(move |_| {
            let _ = done.send(());
        })),
    }
}

/// Answers a request that will not run with `err`.
fn refuse(req: Request, err: WriteError) {
    unanswered(req).send(Some(&err));
}
