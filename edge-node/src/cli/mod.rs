//! The `hms-edge` command line: one module per subcommand, each a thin
//! layer that parses, calls the library and prints; `main.rs` only calls
//! [`main`].
//!
//! Exit codes: 0 success; 1 the command ran and failed (or a verification
//! failed); 64 bad usage or bad configuration (with `file:line:col`);
//! 75 another `hms-edge` process holds the data dir ([`EX_LOCKED`]).

mod backup;
mod bundle;
mod hl7;
mod kiosk;
mod models;
mod restore;
mod run;
mod sync;
mod token;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::store::lock::DataDirLocked;

/// Bad usage or a bad configuration.
pub const EX_USAGE: u8 = 64;

/// The data dir is held by another `hms-edge` process (sysexits' EX_TEMPFAIL:
/// try again once the other process has stopped).
pub const EX_LOCKED: u8 = 75;

#[derive(Debug, Parser)]
#[command(name = "hms-edge", version, about = "HMS Edge hospital appliance")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the appliance.
    Run(run::RunArgs),
    /// Check the hash chain and that replaying the log gives the projections.
    Verify(Location),
    /// Write a consistent snapshot of the store (safe while the appliance runs).
    Backup(backup::BackupArgs),
    /// Restore into an empty data dir, from a snapshot file or from the
    /// regional cloud (`--from-cloud`, with `--config` naming `[uplink]` and
    /// the sync key), then verify it.
    Restore(restore::RestoreArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCmd,
    },
    /// Kiosks: one-time sign-in codes for wall displays.
    Kiosk {
        #[command(subcommand)]
        command: kiosk::KioskCmd,
    },
    /// Cloud sync tools.
    Sync {
        #[command(subcommand)]
        command: sync::SyncCmd,
    },
    /// HL7 tools.
    Hl7 {
        #[command(subcommand)]
        command: hl7::Hl7Cmd,
    },
    /// Signed configuration and model-set bundles.
    Bundle {
        #[command(subcommand)]
        command: bundle::BundleCmd,
    },
    /// Model sets for local inference.
    Models {
        #[command(subcommand)]
        command: models::ModelsCmd,
    },
}

/// Where the data dir is: from a config file, or given directly.
#[derive(Debug, Args)]
struct Location {
    /// Configuration file whose store.data_dir to use.
    #[arg(long, required_unless_present = "data_dir")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad usage or configuration: [`EX_USAGE`].
    Usage(String),
    /// Another process holds the data dir: [`EX_LOCKED`].
    Locked(String),
    /// The command ran and failed: 1. Empty when the output already said why.
    Failed(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        if e.chain()
            .any(|c| c.downcast_ref::<DataDirLocked>().is_some())
        {
            Failure::Locked(format!("{e:#}"))
        } else {
            Failure::Failed(format!("{e:#}"))
        }
    }
}

impl From<DataDirLocked> for Failure {
    fn from(e: DataDirLocked) -> Self {
        Failure::Locked(e.to_string())
    }
}

type Outcome = Result<(), Failure>;

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    // A panic is logged with its place and thread, never its message (which
    // may quote input): through tracing once `run` set it up, else stderr.
    hms_web::panic::install();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let (code, msg) = match dispatch(cli) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => (EX_USAGE, m),
        Err(Failure::Locked(m)) => (EX_LOCKED, m),
        Err(Failure::Failed(m)) => (1, m),
    };
    if !msg.is_empty() {
        eprintln!("hms-edge: {msg}");
    }
    ExitCode::from(code)
}

fn dispatch(cli: Cli) -> Outcome {
    match cli.command {
        Cmd::Run(args) => {
            let outcome = run::run(args);
            // The appliance's model runtimes went with its async runtime
            // (their sessions closed); the ONNX Runtime environment goes
            // next, before the process exits and the library's destructors run.
            crate::inference::runtime::release_environment();
            outcome
        }
        Cmd::Verify(location) => verify::verify(&location),
        Cmd::Backup(args) => backup::backup(args),
        Cmd::Restore(args) => restore::restore(args),
        Cmd::Token { command } => token::token(command),
        Cmd::Kiosk { command } => kiosk::kiosk(command),
        Cmd::Sync { command } => sync::sync(command),
        Cmd::Hl7 { command } => hl7::hl7(command),
        Cmd::Bundle { command } => bundle::bundle(command),
        Cmd::Models { command } => models::models(command),
    }
}

/// Loads and validates a configuration, printing its warnings.
fn load_config(path: &Path) -> Result<firmware_config::Config, Failure> {
    match firmware_config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded.config)
        }
        Err(e) => Err(Failure::Usage(format!("invalid configuration:\n{e}"))),
    }
}

/// The data dir a [`Location`] names.
fn data_dir(loc: &Location) -> Result<PathBuf, Failure> {
    match (&loc.data_dir, &loc.config) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(c)) => Ok(load_config(c)?.store.data_dir),
        (None, None) => Err(Failure::Usage("give --config or --data-dir".into())),
    }
}

/// A tokio runtime for one command.
fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, Failure> {
    let mut b = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("starting the runtime: {e}")))
}
