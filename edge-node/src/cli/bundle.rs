//! `hms-edge bundle apply FILE --config CFG`: hands a signed bundle to the
//! appliance (docs/bundles.md).
//!
//! It checks what it can without the store first (the signature against
//! `[bundles] trusted_keys`, the bundle's integrity, the hospital) and
//! refuses at once, exit 1, with the reason; then it puts the bundle into
//! `data_dir/bundles/inbox/`, where the running appliance takes it, and
//! waits for its outcome (the version check, lint, occupied beds, the
//! switch and the probation are the appliance's): `in force` exits 0,
//! `refused` and `rolled back` exit 1 with the reason. With no appliance
//! running it says the bundle is queued for the next start, exit 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::{Failure, Outcome, load_config};
use crate::bundles;

#[derive(Debug, Subcommand)]
pub(super) enum BundleCmd {
    /// Apply a signed configuration or model-set bundle (hms-config sign):
    /// checked, queued for the running appliance, and its outcome awaited.
    Apply {
        /// The bundle file.
        file: PathBuf,
        /// The appliance's configuration file (its [bundles] and data dir).
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides store.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seconds to wait for the outcome (default: the probation + 60).
        #[arg(long)]
        wait_s: Option<u64>,
    },
}

pub(super) fn bundle(cmd: BundleCmd) -> Outcome {
    let BundleCmd::Apply {
        file,
        config,
        data_dir,
        wait_s,
    } = cmd;
    let cfg = load_config(&config)?;
    let data_dir = data_dir.unwrap_or_else(|| cfg.store.data_dir.clone());
    let settings = bundles::Settings::from_config(&cfg)?.ok_or_else(|| {
        Failure::Failed(format!(
            "{} has no [bundles] section: this appliance takes no bundles",
            config.display()
        ))
    })?;
    let bytes = std::fs::read(&file)
        .map_err(|e| Failure::Failed(format!("reading {}: {e}", file.display())))?;
    let b = firmware_config::bundle::verify(&bytes, &settings.trusted)
        .map_err(|e| Failure::Failed(format!("refused: {e}")))?;
    if let firmware_config::bundle::Hospital::One(h) = &b.hospital
        && *h != cfg.node.hospital_id
    {
        return Err(Failure::Failed(format!(
            "refused: the bundle is for hospital {h}, this appliance is hospital {}",
            cfg.node.hospital_id
        )));
    }
    let sha = bundles::enqueue(&data_dir, &bytes)?;
    let what = format!("{} version {}", bundles::kind_name(b.kind), b.version);
    // No appliance holds the data dir: it takes the bundle when it starts.
    if let Ok(lock) = crate::store::lock::DataDirLock::acquire(&data_dir) {
        lock.release();
        println!(
            "queued: {what}; the appliance applies it when it starts (outcome: {})",
            bundles::outcome_file(&data_dir, &sha).display()
        );
        return Ok(());
    }
    let wait = Duration::from_secs(wait_s.unwrap_or(settings.probation.as_secs() + 60));
    println!(
        "queued: {what}; waiting up to {} s for its outcome",
        wait.as_secs()
    );
    let path = bundles::outcome_file(&data_dir, &sha);
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let reason = v["reason"].as_str().unwrap_or("");
            return match v["step"].as_str() {
                Some("in_force") => {
                    println!("in force: {what}");
                    Ok(())
                }
                Some("rolled_back") => {
                    Err(Failure::Failed(format!("rolled back: {what}: {reason}")))
                }
                _ => Err(Failure::Failed(format!("refused: {reason}"))),
            };
        }
        if Instant::now() >= deadline {
            return Err(Failure::Failed(format!(
                "no outcome for {what} within {} s: it is still queued or on probation (see \
                 /health, component bundles)",
                wait.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
