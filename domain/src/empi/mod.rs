//! Enterprise master patient index (EMPI): the sans-IO matching engine the
//! appliance and the regional cloud share.
//!
//! A record is standardised ([`standardise`]), blocked into candidate lists
//! ([`blocking`]), compared field by field at several agreement levels
//! ([`compare`]), scored by a Fellegi–Sunter model trained by EM ([`model`]),
//! and decided with two thresholds, a margin rule, trusted identifiers and
//! sticky human decisions ([`decision`]). [`engine::Engine`] ties these into
//! `match_or_create` with stable enterprise ids. [`synth`] generates labelled
//! noisy data for evaluation and benchmarks. Nothing here does IO, logs, or
//! shows PHI in `Debug`.

pub mod blocking;
pub mod compare;
pub mod decision;
pub mod engine;
pub mod model;
pub mod nickname;
pub mod standardise;
pub mod synth;

pub use blocking::{BlockIndex, CandidateStats, Rule};
pub use compare::{Comparison, Field};
pub use decision::{Decisions, Outcome, RecordKey, ReviewReason, Separation, Thresholds};
pub use engine::{
    Candidate, Change, Eid, Engine, EngineError, EngineStats, MatchResult, SearchHit,
};
pub use model::{
    Distinct, Explanation, FieldParams, FieldScore, Model, Params, TrainConfig, TrainReport, train,
    train_sourced,
};
pub use standardise::{PartialDate, Prepared, Record, prepare};
