//! Local inference: ONNX models first, rules second.
//!
//! - [`runtime`]: ONNX Runtime loaded at run time, one thread per model, the
//!   [`Guard`] (timeout and breaker) and the [`Reason`] a fallback answers.
//! - [`manifest`]: the model set's `manifest.toml` and its checks.
//! - [`models`]: model sets installed into the data dir (install, rollback).
//! - [`forecast`]: the bed-demand forecaster and OR case durations, with
//!   their fallback rules.
//! - [`check`]: `hms-edge models check`, the recorded test vectors run
//!   through a model set and timed.

pub mod check;
pub mod forecast;
pub mod manifest;
pub mod models;
pub mod runtime;

pub use runtime::{
    BED_DEMAND, Guard, MODELS, ModelReport, OR_DURATION, Reason, Runtime, Settings, Unanswered,
    breaker_config,
};
