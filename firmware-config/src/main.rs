//! `hms-config`: check and generate HMS Edge appliance configuration files.
//!
//! `main` only parses the command line and wires the commands of
//! [`firmware_config::cli`] to stdout and stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use firmware_config::cli::{self, EXIT_USAGE};
use hms_domain::HospitalId;

/// Check and generate HMS Edge appliance configuration files.
#[derive(Debug, Parser)]
#[command(name = "hms-config", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check configuration files strictly; print every problem as
    /// `file:line:col: error: message` and exit 1 if any file has an error.
    Lint {
        /// Configuration files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print a generated hospital configuration.
    Example {
        /// Number of beds.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        beds: u32,
        /// Hospital id written to `[node] hospital_id`.
        #[arg(long, default_value = "demo-general", value_parser = parse_hospital)]
        hospital: HospitalId,
    },
}

fn parse_hospital(s: &str) -> Result<HospitalId, String> {
    HospitalId::new(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    // A panic says where it happened, never its message: that could quote
    // the file being checked.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "unknown".to_owned());
        eprintln!("hms-config: internal error at {at} (message withheld); please report it");
    }));
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let result = match args.command {
        Command::Lint { files } => cli::lint_files(&files, &mut stdout.lock(), &mut stderr.lock()),
        Command::Example { beds, hospital } => {
            let beds = usize::try_from(beds).unwrap_or(usize::MAX);
            cli::write_example(beds, hospital.as_str(), &mut stdout.lock())
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(stderr.lock(), "hms-config: {e}");
            ExitCode::FAILURE
        }
    }
}
