//! `hms-cloud`: the regional cloud. `main` only wires things together.
//!
//! - `hms-cloud run --config FILE [--http ADDR]`: the sync service; prints
//!   `hms-cloud ready http=http://ADDR` when listening.
//! - `hms-cloud enroll --config FILE --hospital ID --region R --node ID --public-key FILE`:
//!   enrols a hospital's appliance (a hospital of another region is refused).
//!
//! Exit codes: 0 success, 1 runtime failure or refusal, 64 usage or configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use cloud_sync::config::{self, Backend};
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
            let (mut reg, conn) = open_registry(&cfg.data_dir, cfg.region.clone())
                .map_err(|e| (1, format!("{e:#}")))?;
            enroll_durably(
                &mut reg,
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
        Cmd::Run { config, http } => {
            let mut cfg = config::load(&config).map_err(|e| (64, e))?;
            if let Some(h) = http {
                cfg.listen = h;
            }
            let (registry, _conn) = open_registry(&cfg.data_dir, cfg.region.clone())
                .map_err(|e| (1, format!("{e:#}")))?;
            let open: OpenStore = match cfg.backend {
                Backend::Sqlite => {
                    let r = SqliteRouter::new(&cfg.data_dir);
                    Arc::new(move |h: &HospitalId| {
                        Ok(Box::new(r.open(h)?) as Box<dyn HospitalStore>)
                    })
                }
                Backend::Postgres => {
                    let r = PgRouter::new(cfg.postgres.clone().unwrap_or_default());
                    Arc::new(move |h: &HospitalId| {
                        Ok(Box::new(r.open(h)?) as Box<dyn HospitalStore>)
                    })
                }
            };
            let state = CloudState {
                registry: Arc::new(registry),
                open,
                ingest_lock: Arc::new(Mutex::new(())),
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
                println!("hms-cloud ready http=http://{addr}");
                axum::serve(listener, router(state))
                    .with_graceful_shutdown(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
                    .map_err(|e| (1, format!("serving: {e}")))
            })
        }
    }
}
