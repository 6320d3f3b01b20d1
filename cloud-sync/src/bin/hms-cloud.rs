//! `hms-cloud`: the regional cloud. This binary only parses the command
//! line and calls the library: [`cloud_sync::cloud::Cloud`] for `run`,
//! [`cloud_sync::cli`] for the other commands.
//!
//! - `hms-cloud run --config FILE [--http ADDR]`: the service; prints
//!   `hms-cloud ready http=http://ADDR` (or `https=https://ADDR` with `[tls]`)
//!   when listening. A primary with `[dr]` replicates to its peer in the
//!   background.
//! - `hms-cloud enroll --config FILE --hospital ID --region R --node ID --public-key FILE
//!   [--replace]`: enrols a hospital's appliance (a hospital of another
//!   region is refused); re-keying an enrolled hospital (another node or
//!   key) needs `--replace` and is audited.
//! - `hms-cloud keygen --out FILE`: a primary's DR key pair (FILE, PKCS#8,
//!   mode 0600, never overwritten; FILE.pub, the raw 32-byte public key).
//! - `hms-cloud fleet keygen --out FILE`: the fleet's command-signing key
//!   pair (FILE, PKCS#8, mode 0600, never overwritten: the cloud's `[fleet]
//!   key_file`; FILE.pub, the raw 32-byte public key: the appliances'
//!   `[fleet] command_key`).
//! - `hms-cloud enroll-primary --config FILE --region R --public-key FILE`: on a
//!   replica, accepts replication from the primary of region R (which must be in
//!   `allowed_dr_regions`).
//! - `hms-cloud promote --config FILE [--hospital ID]… [--force]`: on a DR
//!   replica, serves the appliances of the named hospitals (default: every
//!   one whose enrolment its primary replicated), all or none; refused for
//!   a hospital the replica is behind on unless `--force`. A running
//!   replica serves them within a second; the old primary, once its
//!   replicator reaches the replica, fences itself from them.
//! - `hms-cloud unfence --config FILE --hospital ID`: on a fenced primary,
//!   after the region was re-paired, serves the hospital again.
//! - `hms-cloud token create --config FILE --name NAME [--scope S[,S…]]…
//!   [--expires 90d|12h|RFC3339]`: prints a new operator API token (stored
//!   hashed) as the only line of stdout. Scopes: `read`, `empi`, `fleet`,
//!   `enrol`, `admin` (all); none given is `admin`.
//! - `hms-cloud token list --config FILE [--all] [--json]`: the tokens'
//!   names, scopes, creation, expiry and status, never the tokens.
//! - `hms-cloud token revoke --config FILE NAME`: refused from the next
//!   request on.
//! - `hms-cloud empi train --config FILE [--sample N] [--seed S]`: trains the
//!   regional EMPI's model on its records and stores it as the active one;
//!   a running `hms-cloud run` on that data dir installs it within seconds,
//!   otherwise it is in force from the next start.
//!
//! Enrolments (appliances and primaries) are read at start-up: restart
//! `run` after enrolling. Tokens take effect at once.
//!
//! Exit codes: 0 success, 1 runtime failure or refusal, 64 usage or configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cloud_sync::cli::{self, Failure};
use cloud_sync::cloud::{Cloud, ConfigError};
use hms_domain::{HospitalId, NodeId, RegionId};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "hms-cloud", version, about = "HMS Edge regional cloud")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the sync service.
    Run {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Listen address (overrides the file); port 0 picks a free port.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Enrol a hospital's appliance and its public key.
    Enroll {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Hospital id.
        #[arg(long)]
        hospital: HospitalId,
        /// The hospital's region.
        #[arg(long)]
        region: RegionId,
        /// The appliance's node id.
        #[arg(long)]
        node: NodeId,
        /// File holding the appliance's raw 32-byte Ed25519 public key.
        #[arg(long)]
        public_key: PathBuf,
        /// Re-key a hospital enrolled already with another node or key
        /// (audited); without it that is refused.
        #[arg(long)]
        replace: bool,
    },
    /// Make a primary's DR key pair: FILE (private, 0600) and FILE.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// On a DR replica: serve the appliances of the hospitals it holds
    /// (region failover); the old primary is fenced from them.
    Promote {
        /// Configuration file (of the replica).
        #[arg(long)]
        config: PathBuf,
        /// A hospital to promote (repeat); without it, every hospital
        /// whose enrolment was replicated here.
        #[arg(long = "hospital", value_name = "ID")]
        hospitals: Vec<HospitalId>,
        /// Promote even where this replica holds less than the primary
        /// last reported (the appliances resend what they still hold).
        #[arg(long)]
        force: bool,
    },
    /// On a fenced primary, after re-pairing: serve a hospital again.
    Unfence {
        /// Configuration file (of the primary).
        #[arg(long)]
        config: PathBuf,
        /// The hospital.
        #[arg(long)]
        hospital: HospitalId,
    },
    /// On a replica: accept replication from the primary of a region.
    EnrollPrimary {
        /// Configuration file (of the replica).
        #[arg(long)]
        config: PathBuf,
        /// The primary's region (must be in allowed_dr_regions).
        #[arg(long)]
        region: RegionId,
        /// File holding the primary's raw 32-byte Ed25519 public key (FILE.pub of keygen).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Operator API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The regional EMPI.
    Empi {
        #[command(subcommand)]
        command: EmpiCmd,
    },
    /// The fleet channel (MQTT).
    Fleet {
        #[command(subcommand)]
        command: FleetCmd,
    },
}

#[derive(Debug, Subcommand)]
enum FleetCmd {
    /// Make the fleet's command-signing key pair: FILE (private, 0600; the
    /// cloud's `[fleet] key_file`) and FILE.pub (the appliances' command_key).
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EmpiCmd {
    /// Train the matching model on the EMPI's records and make it the active one.
    Train {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Most records sampled.
        #[arg(long, default_value_t = cloud_sync::empi::model::DEFAULT_SAMPLE)]
        sample: usize,
        /// Sampling and EM seed (the same records and seed give the same model).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token and print it (shown once; stored hashed).
    Create {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The token's name (the operator or system holding it); no two
        /// live tokens share one.
        #[arg(long)]
        name: String,
        /// What it may do: read, empi, fleet, enrol, admin (all); repeat
        /// or separate with commas. Without it: admin.
        #[arg(long = "scope", value_name = "SCOPE", value_delimiter = ',')]
        scopes: Vec<String>,
        /// When it expires: Nd, Nh, Nm or Ns from now (90d), or an RFC 3339
        /// time. Without it the token does not expire.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
    },
    /// List the tokens (never the tokens themselves).
    List {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name: refused from the next request on.
    Revoke {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The token's name.
        #[arg(value_name = "NAME", required_unless_present = "name_flag")]
        name: Option<String>,
        /// The token's name (as `token create` takes it).
        #[arg(long = "name", value_name = "NAME", conflicts_with = "name")]
        name_flag: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    // A panic is logged with its place and thread, never its message.
    hms_web::panic::install();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("hms-cloud: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Cmd::Enroll {
            config,
            hospital,
            region,
            node,
            public_key,
            replace,
        } => cli::enroll(&config, hospital, region, node, &public_key, replace),
        Cmd::Keygen { out } => cli::keygen(&out),
        Cmd::EnrollPrimary {
            config,
            region,
            public_key,
        } => cli::enroll_primary(&config, region, &public_key),
        Cmd::Promote {
            config,
            hospitals,
            force,
        } => cli::promote(&config, &hospitals, force),
        Cmd::Unfence { config, hospital } => cli::unfence(&config, &hospital),
        Cmd::Token {
            command:
                TokenCmd::Create {
                    config,
                    name,
                    scopes,
                    expires,
                },
        } => cli::create_token(&config, &name, &scopes, expires.as_deref()),
        Cmd::Token {
            command: TokenCmd::List { config, all, json },
        } => cli::list_tokens(&config, all, json),
        Cmd::Token {
            command:
                TokenCmd::Revoke {
                    config,
                    name,
                    name_flag,
                },
        } => match name.or(name_flag) {
            Some(name) => cli::revoke_token(&config, &name),
            None => Err(Failure::Usage("name the token to revoke".into())),
        },
        Cmd::Empi {
            command:
                EmpiCmd::Train {
                    config,
                    sample,
                    seed,
                },
        } => cli::empi_train(&config, sample, seed),
        Cmd::Fleet {
            command: FleetCmd::Keygen { out },
        } => cli::fleet_keygen(&out),
        Cmd::Run { config, http } => run(&config, http),
    }
}

/// `hms-cloud run`: opens the cloud (before binding anything), binds,
/// prints the ready line and serves until SIGTERM or SIGINT.
fn run(config: &Path, http: Option<SocketAddr>) -> Result<(), Failure> {
    let mut cfg = cli::load(config)?;
    if let Some(h) = http {
        cfg.listen = h;
    }
    let cloud = Cloud::open(cfg).map_err(|e| match e.downcast::<ConfigError>() {
        Ok(ConfigError(message)) => Failure::Usage(message),
        Err(e) => Failure::Runtime(e),
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let listen = cloud.listen_addr();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Failure::runtime(format!("binding {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        println!("{}", cloud.ready_line(addr));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                stop_signal().await;
                shutdown.cancel();
            }
        });
        cloud
            .serve(listener, shutdown)
            .await
            .map_err(Failure::Runtime)
    })
}

/// Resolves on SIGTERM (how service managers stop a daemon) or SIGINT.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
                _ = int.recv() => tracing::info!("SIGINT received; stopping"),
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
