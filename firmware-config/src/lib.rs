//! HMS Edge appliance configuration.
//!
//! One TOML file describes an appliance: who it is (`[node]`), where it
//! listens (`[listen]`), where it stores (`[store]`), its HTTP limits
//! (`[http]`), its MLLP limits (`[mllp]`) and the hospital's beds as flat
//! lists with references (`[[facility]]` → `[[building]]` → `[[floor]]` →
//! `[[unit]]` → `[[room]]` → `[[bed]]`), each bed mapped to the HL7 location
//! the ADT feed uses for it, and the operating rooms (`[[or_room]]`, optional),
//! each mapped to the HL7 location the SIU scheduling feed uses for it.
//! Optional sections: `[uplink]` ships the event log to the regional cloud,
//! `[fleet]` opens the channel to the fleet console (MQTT), `[backup]`
//! schedules local snapshots, `[inference]` and `[coding]` tune the local
//! models and the coding suggestions.
//!
//! Two ways in, one set of checks:
//!
//! - [`load`] / [`load_str`] are tolerant: unknown keys are warnings, so a file
//!   written for a newer appliance still loads on an older one.
//! - [`lint`] / [`lint_str`] are strict: unknown keys are errors, and every
//!   diagnostic is returned.
//!
//! Every diagnostic carries the file, line and column of the offending key or
//! value. [`example`] generates a realistic hospital of any size.
//! [`bundle`] signs and verifies bundles: a configuration or a model set,
//! signed with the fleet's bundle key (docs/bundles.md).
//!
//! The library does no IO beyond reading the file in [`load`] and [`lint`] and
//! asking whether the files the configuration names (TLS certificates, keys
//! and CAs, `fleet.command_key`) exist; [`cli`] (the `hms-config` commands)
//! also reads keys, bundles and a model set's directory and writes keys and
//! bundles. It knows nothing of tokio, SQLite, TLS, HTTP or MQTT.

pub mod bundle;
pub mod cli;
mod diagnostic;
mod example;
mod loader;
mod schema;

use std::path::Path;

pub use diagnostic::{ConfigError, Diagnostic, LineIndex, Severity};
pub use example::example;
pub use schema::{
    BackupSection, Bed, Building, BundlesSection, CHARSETS, Cidr, CodingSection, Config,
    DEFAULT_BACKUP_INTERVAL_H, DEFAULT_BACKUP_KEEP, DEFAULT_BUNDLE_PROBATION_S, DEFAULT_CHARSET,
    DEFAULT_CHECKPOINT_INTERVAL_S, DEFAULT_CODING_HISTORY_DAYS, DEFAULT_CODING_MAX_TEXT_CHARS,
    DEFAULT_CUDA_MIN_ROWS, DEFAULT_FIRST_FRAME_TIMEOUT_S, DEFAULT_FLEET_KEEPALIVE_S,
    DEFAULT_FLEET_TELEMETRY_S, DEFAULT_FORECAST_REFRESH_S, DEFAULT_FRAME_TIMEOUT_S,
    DEFAULT_HISTORY_LIMIT, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_INFERENCE_TIMEOUT_MS,
    DEFAULT_JOURNAL_SIZE_LIMIT_MB, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MODELS_DIR, DEFAULT_OUTBOX_ALARM_PERCENT, DEFAULT_OUTBOX_BUDGET_MB,
    DEFAULT_SHUTDOWN_GRACE_S, DEFAULT_UPLINK_BATCH_EVENTS, DEFAULT_UPLINK_FAILBACK_S,
    DEFAULT_UPLINK_POLL_MS, DEFAULT_UPLINK_TIMEOUT_S, DEFAULT_WRITER_QUEUE, Facility, FleetBroker,
    FleetSection, Floor, Hl7Location, Hl7Section, HttpSection, InferenceSection, Listen,
    MAX_SYNCABLE_FRAME_BYTES, MllpSection, MllpTls, NodeSection, OrRoom, Retention, Room,
    StoreSection, TlsFiles, Unit, UplinkSection,
};

/// A configuration that loaded, with the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Warnings (unknown keys, units without beds…), in source order.
    pub warnings: Vec<Diagnostic>,
}

/// Loads and validates the configuration file at `path`, tolerantly: unknown
/// keys are warnings.
///
/// An unreadable file is an error at line 0, column 0.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = read(path).map_err(|d| ConfigError {
        diagnostics: vec![d],
    })?;
    load_str(&text, path)
}

/// Validates `text` as the contents of `file`, tolerantly: unknown keys are
/// warnings. Relative paths (`store.data_dir`, the TLS files, `uplink.ca`,
/// `fleet.command_key`…) are resolved against `file`'s directory; the files
/// named (all but directories and `uplink.key_file`) must exist.
pub fn load_str(text: &str, file: &Path) -> Result<Loaded, ConfigError> {
    match loader::check(text, file, false) {
        (Some(config), diagnostics) => Ok(Loaded {
            config,
            warnings: diagnostics,
        }),
        (None, diagnostics) => Err(ConfigError { diagnostics }),
    }
}

/// Checks the configuration file at `path` strictly (unknown keys are
/// errors) and returns every diagnostic, in source order. Empty means clean.
pub fn lint(path: &Path) -> Vec<Diagnostic> {
    match read(path) {
        Ok(text) => lint_str(&text, path),
        Err(d) => vec![d],
    }
}

/// Checks `text` as the contents of `file` strictly (unknown keys are errors)
/// and returns every diagnostic, in source order. Relative paths resolve as in
/// [`load_str`].
pub fn lint_str(text: &str, file: &Path) -> Vec<Diagnostic> {
    loader::check(text, file, true).1
}

/// Checks `text` strictly and also returns the configuration when it has no
/// error, for callers that want both (the `lint` command's summary).
pub fn lint_config(text: &str, file: &Path) -> (Option<Config>, Vec<Diagnostic>) {
    loader::check(text, file, true)
}

/// Reads `path` as UTF-8 text, or says why not as a diagnostic.
pub fn read(path: &Path) -> Result<String, Diagnostic> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Diagnostic {
        file: file.clone(),
        line: 0,
        col: 0,
        severity: Severity::Error,
        message: format!("cannot read the file: {e}"),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let prefix = String::from_utf8_lossy(&bytes[..valid]);
        let (line, col) = LineIndex::new(&prefix).position(valid);
        Diagnostic {
            file,
            line,
            col,
            severity: Severity::Error,
            message: format!(
                "the file is not valid UTF-8 (invalid byte 0x{:02x} at offset {valid})",
                bytes.get(valid).copied().unwrap_or_default()
            ),
        }
    })
}
