//! What the store keeps of signed bundles ([`crate::bundles`]): each step
//! as an `audit.bundle` event, and from those (projected into `meta`) the
//! anti-rollback record of each kind.

use serde::Serialize;
use serde_json::{Value, json};

/// The anti-rollback record of one kind of signed bundle ([`crate::bundles`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BundleVersions {
    /// The version in force (none: the appliance's own file or set).
    pub in_force: Option<u64>,
    /// The highest version ever applied here.
    pub highest: Option<u64>,
    /// The last applied one's state: `probation`, `in_force`, `rolled_back`.
    pub state: Option<String>,
}

/// One step of a signed bundle, as recorded (`audit.bundle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleStep {
    /// `config` or `model_set`.
    pub kind: &'static str,
    /// The bundle's version.
    pub version: u64,
    /// `applied`, `in_force`, `rolled_back` or `refused`.
    pub step: &'static str,
    /// The version in force before it.
    pub previous: Option<u64>,
    /// The bundle file's SHA-256 (hex).
    pub sha256: String,
    /// Why (a refusal, a rollback).
    pub reason: Option<String>,
}

impl BundleStep {
    /// The outcome file's body.
    pub fn outcome(&self) -> Value {
        json!({
            "kind": self.kind,
            "version": self.version,
            "step": self.step,
            "previous": self.previous,
            "sha256": self.sha256,
            "reason": self.reason,
        })
    }
}
