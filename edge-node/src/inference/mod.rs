//! Local inference: ONNX models first, rules second.
//!
//! - [`runtime`]: ONNX Runtime loaded at run time, one thread per model, the
//!   [`Guard`] (timeout and breaker) and the [`Reason`] a fallback answers.
//! - [`manifest`]: the model set's `manifest.toml` and its checks.
//! - [`models`]: model sets installed into the data dir (install, rollback).
//! - [`forecast`]: the bed-demand forecaster and OR case durations, with
//!   their fallback rules.
//! - [`or_cases`]: the OR board's cases as model features, and the task
//!   that records each scheduled case's predicted duration.
//! - [`check`]: `hms-edge models check`, the recorded test vectors run
//!   through a model set and timed.

pub mod check;
pub mod forecast;
pub mod manifest;
pub mod models;
pub mod or_cases;
pub mod runtime;

pub use runtime::{
    BED_DEMAND, Guard, MODELS, ModelReport, OR_DURATION, Reason, Runtime, Settings, Unanswered,
    breaker_config,
};
