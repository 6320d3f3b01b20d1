//! `hms-cloud`: the regional cloud. `main` only wires things together.
//!
//! - `hms-cloud run --config FILE [--http ADDR]`: the service; prints
//!   `hms-cloud ready http=http://ADDR` (or `https=https://ADDR` with `[tls]`)
//!   when listening. A primary with `[dr]` replicates to its peer in the
//!   background.
//! - `hms-cloud enroll --config FILE --hospital ID --region R --node ID --public-key FILE`:
//!   enrols a hospital's appliance (a hospital of another region is refused).
//! - `hms-cloud keygen --out FILE`: a primary's DR key pair (FILE, PKCS#8,
//!   mode 0600, never overwritten; FILE.pub, the raw 32-byte public key).
//! - `hms-cloud enroll-primary --config FILE --region R --public-key FILE`: on a
//!   replica, accepts replication from the primary of region R (which must be in
//!   `allowed_dr_regions`).
//! - `hms-cloud token create --config FILE --name NAME`: prints a new operator
//!   API token (stored hashed).
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
use std::sync::Arc;

use clap::{Parser, Subcommand};
use cloud_sync::config::{self, Backend, Mode};
use cloud_sync::dr::{Primaries, ReplicationStatus, Replicator};
use cloud_sync::enrolment::{Enrolment, enroll_durably, open_registry};
use cloud_sync::service::{CloudState, OpenStore, router};
use cloud_sync::store::HospitalStore;
use cloud_sync::store::SqliteRouter;
use cloud_sync::store::postgres::PgRouter;
use hms_domain::{HospitalId, NodeId, RegionId};

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
    },
    /// Make a primary's DR key pair: FILE (private, 0600) and FILE.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
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
        /// The token's name (the operator or system holding it).
        #[arg(long)]
        name: String,
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("hms-cloud: {msg}");
            ExitCode::from(code)
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), (u8, String)> {
    match cli.command {
        Cmd::Enroll {
            config,
            hospital,
            region,
            node,
            public_key,
        } => {
            let cfg = config::load(&config).map_err(|e| (64, e))?;
            let key = std::fs::read(&public_key)
                .map_err(|e| (64, format!("{}: {e}", public_key.display())))?;
            let (reg, conn) = open_registry(&cfg.data_dir, cfg.region.clone())
                .map_err(|e| (1, format!("{e:#}")))?;
            enroll_durably(
                &reg,
                &conn,
                Enrolment {
                    hospital: hospital.clone(),
                    region,
                    node,
                    public_key: key,
                },
            )
            .map_err(|e| (1, format!("{e:#}")))?;
            println!("enrolled {hospital} in {}", cfg.region);
            Ok(())
        }
        Cmd::Keygen { out } => keygen(&out),
        Cmd::EnrollPrimary {
            config,
            region,
            public_key,
        } => {
            let cfg = config::load(&config).map_err(|e| (64, e))?;
            if cfg.mode != Mode::Replica {
                return Err((
                    64,
                    format!(
                        "{}: primaries are enrolled on a replica (mode = \"replica\")",
                        config.display()
                    ),
                ));
            }
            let key = std::fs::read(&public_key)
                .map_err(|e| (64, format!("{}: {e}", public_key.display())))?;
            let (_, conn) = open_registry(&cfg.data_dir, cfg.region.clone())
                .map_err(|e| (1, format!("{e:#}")))?;
            cloud_sync::meta::enroll_primary(&conn, &cfg.allowed_dr_regions, &region, &key)
                .map_err(|e| (1, format!("{e:#}")))?;
            println!(
                "enrolled the primary of {region} on the replica in {}",
                cfg.region
            );
            Ok(())
        }
        Cmd::Token {
            command: TokenCmd::Create { config, name },
        } => {
            let cfg = config::load(&config).map_err(|e| (64, e))?;
            let (_, conn) = open_registry(&cfg.data_dir, cfg.region.clone())
                .map_err(|e| (1, format!("{e:#}")))?;
            let token = cloud_sync::meta::create_token(
                &conn,
                &name,
                hms_domain::Timestamp::now().as_millis(),
            )
            .map_err(|e| (1, format!("{e:#}")))?;
            println!("{token}");
            Ok(())
        }
        Cmd::Empi {
            command:
                EmpiCmd::Train {
                    config,
                    sample,
                    seed,
                },
        } => empi_train(&config, sample, seed),
        Cmd::Run { config, http } => {
            let mut cfg = config::load(&config).map_err(|e| (64, e))?;
            if let Some(h) = http {
                cfg.listen = h;
            }
            run(cfg)
        }
    }
}

fn empi_train(config: &Path, sample: usize, seed: u64) -> Result<(), (u8, String)> {
    use cloud_sync::empi::model::{MAX_SAMPLE, MIN_TRAIN_RECORDS, TrainSettings, train_stored};
    let cfg = config::load(config).map_err(|e| (64, e))?;
    if cfg.mode != Mode::Primary || !cfg.empi {
        return Err((
            64,
            format!(
                "{}: this cloud runs no regional EMPI (it runs on a primary with empi = true)",
                config.display()
            ),
        ));
    }
    if !(MIN_TRAIN_RECORDS..=MAX_SAMPLE).contains(&sample) {
        return Err((
            64,
            format!("--sample is a number of records from {MIN_TRAIN_RECORDS} to {MAX_SAMPLE}"),
        ));
    }
    let mut settings = TrainSettings {
        sample,
        ..TrainSettings::default()
    };
    settings.config.seed = seed;
    let info = train_stored(&cfg.data_dir, &settings, "cli").map_err(|e| (1, format!("{e:#}")))?;
    let report = info.report.as_ref();
    println!(
        "trained EMPI model {} on {} of {} records (EM: {} iterations, {}); active: a running \
         hms-cloud installs it within seconds, otherwise it is in force from the next start",
        info.version,
        info.sampled.unwrap_or(0),
        info.records.unwrap_or(0),
        report.map_or(0, |r| r.iterations),
        if report.is_some_and(|r| r.converged) {
            "converged"
        } else {
            "not converged"
        },
    );
    Ok(())
}

fn keygen(out: &Path) -> Result<(), (u8, String)> {
    use std::io::Write;
    let public = PathBuf::from(format!("{}.pub", out.display()));
    if out.exists() {
        return Err((
            1,
            format!("{} exists; a key is never replaced silently", out.display()),
        ));
    }
    let (pkcs8, pubkey) = cloud_sync_client::generate_key().map_err(|e| (1, e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write_private = || -> std::io::Result<()> {
        let mut f = opts.open(out)?;
        f.write_all(&pkcs8)?;
        f.sync_all()
    };
    write_private().map_err(|e| (1, format!("{}: {e}", out.display())))?;
    std::fs::write(&public, &pubkey).map_err(|e| (1, format!("{}: {e}", public.display())))?;
    println!("private key: {} (keep on the primary)", out.display());
    println!(
        "public key:  {} (on the replica: hms-cloud enroll-primary --public-key FILE)",
        public.display()
    );
    println!("{}", hms_domain::event::to_hex(&pubkey));
    Ok(())
}

fn run(cfg: config::CloudConfig) -> Result<(), (u8, String)> {
    let (registry, conn) =
        open_registry(&cfg.data_dir, cfg.region.clone()).map_err(|e| (1, format!("{e:#}")))?;
    let open: OpenStore = match cfg.backend {
        Backend::Sqlite => {
            let r = SqliteRouter::new(&cfg.data_dir);
            Arc::new(move |h: &HospitalId| Ok(Box::new(r.open(h)?) as Box<dyn HospitalStore>))
        }
        Backend::Postgres => {
            let r = PgRouter::new(cfg.postgres.clone().unwrap_or_default());
            Arc::new(move |h: &HospitalId| Ok(Box::new(r.open(h)?) as Box<dyn HospitalStore>))
        }
    };
    let primaries = cloud_sync::meta::primaries(&conn).map_err(|e| (1, format!("{e:#}")))?;
    let downlink = std::sync::Arc::new(
        cloud_sync::downlink::Downlink::open(&cfg.data_dir)
            .map_err(|e| (1, format!("opening the downlink: {e:#}")))?,
    );
    let mut state = CloudState::new(registry, open, conn);
    state.downlink = Some(downlink.clone());
    if cfg.mode == Mode::Primary && cfg.empi {
        let empi = cloud_sync::empi::RegionalEmpi::open(&cfg.data_dir, downlink)
            .map_err(|e| (1, format!("opening the regional EMPI: {e:#}")))?;
        empi.set_auto_train_records(cfg.empi_auto_train_records);
        state = state.with_empi(std::sync::Arc::new(empi));
    }
    if cfg.mode == Mode::Replica {
        state = state.replica(Primaries::new(cfg.allowed_dr_regions.clone(), primaries));
    }
    let mut replicator = None;
    if let Some(dr) = &cfg.dr {
        let ep = cloud_sync_client::Endpoint::parse(&dr.peer, dr.ca.as_deref())
            .map_err(|e| (64, format!("[dr] peer: {e}")))?;
        let key = std::fs::read(&dr.key_file)
            .map_err(|e| (64, format!("[dr] key_file {}: {e}", dr.key_file.display())))?;
        let status = Arc::new(ReplicationStatus::new(ep.url(), dr.peer_region.clone()));
        state = state.with_replication(status.clone());
        replicator = Some(
            Replicator::new(
                cloud_sync_client::Client::new(ep),
                key,
                state.registry.clone(),
                state.open.clone(),
                status,
                state.ingested.clone(),
            )
            .map_err(|e| (64, e))?,
        );
    }
    let tls = match &cfg.tls {
        Some(t) => Some(
            hms_web::tls::acceptor(&t.cert, &t.key).map_err(|e| (64, format!("[tls] {e:#}")))?,
        ),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| (1, format!("binding {}: {e}", cfg.listen)))?;
        let addr = listener.local_addr().map_err(|e| (1, e.to_string()))?;
        if let Some(r) = replicator {
            tracing::info!(peer = ?r, "DR replication on");
            tokio::spawn(r.run());
        }
        tokio::spawn(cloud_sync::empi::run(state.clone()));
        let app = router(state);
        let shutdown = stop_signal();
        match tls {
            Some(acceptor) => {
                let listener = hms_web::tls::TlsListener::new(listener, acceptor)
                    .map_err(|e| (1, format!("TLS listener: {e}")))?;
                println!("hms-cloud ready https=https://{addr}");
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|e| (1, format!("serving: {e}")))
            }
            None => {
                println!("hms-cloud ready http=http://{addr}");
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(|e| (1, format!("serving: {e}")))
            }
        }
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
