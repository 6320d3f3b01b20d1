//! `hms-config`: check, generate and sign HMS Edge appliance configuration
//! files, and sign and verify bundles of them and of model sets.
//!
//! `main` only parses the command line and wires the commands of
//! [`firmware_config::cli`] to stdout and stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use firmware_config::bundle::Hospital;
use firmware_config::cli::{self, EXIT_USAGE};
use hms_domain::HospitalId;

/// Check, generate and sign HMS Edge appliance configuration files and model sets.
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
    /// Make a bundle key pair: KEY (PKCS#8 private key, mode 0600) and
    /// KEY.pub (the raw 32-byte public key). Never replaces a file.
    Keygen {
        /// Where to write the private key; the public key goes to KEY.pub.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Sign a bundle: a configuration FILE (which must pass `lint`) or a
    /// model set DIR (its regular files; subdirectories are not bundled).
    Sign {
        /// The private key (PKCS#8) from `hms-config keygen`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The bundle's version (1 or more); appliances will refuse one not
        /// above the installed.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        version: u64,
        /// The hospital the bundle is for, or `*` for every hospital.
        #[arg(long, value_name = "ID|*", default_value = "*", value_parser = parse_target)]
        hospital: Hospital,
        /// Where to write the bundle; never replaced.
        #[arg(long, value_name = "BUNDLE")]
        out: PathBuf,
        /// A configuration file (a `config` bundle) or a model set directory
        /// (a `model_set` bundle).
        #[arg(value_name = "FILE|DIR")]
        input: PathBuf,
    },
    /// Verify a bundle: print `ok: …` and exit 0, or `refused: <reason>` and
    /// exit 1.
    Verify {
        /// A trusted public key (KEY.pub, raw 32 bytes); may be repeated.
        #[arg(long = "key", value_name = "KEY.pub", required = true)]
        keys: Vec<PathBuf>,
        /// The bundle.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

fn parse_hospital(s: &str) -> Result<HospitalId, String> {
    HospitalId::new(s).map_err(|e| e.to_string())
}

fn parse_target(s: &str) -> Result<Hospital, String> {
    Hospital::parse(s).map_err(|e| e.to_string())
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
        Command::Keygen { out } => cli::keygen(&out, &mut stdout.lock(), &mut stderr.lock()),
        Command::Sign {
            key,
            version,
            hospital,
            out,
            input,
        } => cli::sign(
            &key,
            version,
            &hospital,
            &out,
            &input,
            jiff::Timestamp::now(),
            &mut stdout.lock(),
            &mut stderr.lock(),
        ),
        Command::Verify { keys, bundle } => {
            cli::verify(&keys, &bundle, &mut stdout.lock(), &mut stderr.lock())
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
