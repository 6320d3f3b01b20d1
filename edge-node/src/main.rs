//! `hms-edge`: the appliance binary. `main` only parses the command line and
//! wires the library together.
//!
//! Exit codes: 0 success, 1 runtime failure (or a failed verification),
//! 64 bad usage or bad configuration (with file:line:col).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use edge_node::appliance::{self, Appliance};
use edge_node::auth::{Role, Tokens};
use edge_node::store::verify;
use tokio_util::sync::CancellationToken;

const EX_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "hms-edge", version, about = "HMS Edge hospital appliance")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the appliance.
    Run {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Data directory (overrides store.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP listen address (overrides listen.http); port 0 picks a free port.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// MLLP listen address for the HL7 feed (overrides listen.mllp).
        #[arg(long)]
        mllp: Option<SocketAddr>,
    },
    /// Check the hash chain and that replaying the log gives the projections.
    Verify(Location),
    /// Write a consistent snapshot of the store (safe while the appliance runs).
    Backup {
        #[command(flatten)]
        location: Location,
        /// The snapshot file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore into an empty data dir, from a snapshot file or from the
    /// regional cloud (`--from-cloud`, with `--config` naming `[uplink]` and
    /// the sync key), then verify it.
    Restore {
        #[command(flatten)]
        location: Location,
        /// The snapshot file.
        #[arg(
            long,
            required_unless_present = "from_cloud",
            conflicts_with = "from_cloud"
        )]
        from: Option<PathBuf>,
        /// Rebuild the store from the events the cloud holds for this hospital.
        #[arg(long, requires = "config")]
        from_cloud: bool,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Cloud sync tools.
    Sync {
        #[command(subcommand)]
        command: SyncCmd,
    },
    /// HL7 tools.
    Hl7 {
        #[command(subcommand)]
        command: Hl7Cmd,
    },
    /// Model sets for local inference.
    Models {
        #[command(subcommand)]
        command: ModelsCmd,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCmd {
    /// Verify the model set in DIR (manifest, every file's sha256) and make it
    /// the current set, keeping the one it replaces for rollback. A running
    /// appliance swaps it in at its next forecast refresh.
    Install {
        #[command(flatten)]
        location: Location,
        /// Directory holding manifest.toml and the models.
        dir: PathBuf,
    },
    /// Switch back to the previous model set.
    Rollback(Location),
    /// Load a model set, run its recorded test vectors through each model,
    /// compare with the recorded outputs, and time calls (in process).
    /// Exit 1 if a model is not ready or an output differs.
    Check {
        /// Directory holding manifest.toml, the models and testvectors.json.
        #[arg(long, default_value = "models")]
        dir: PathBuf,
        /// The ONNX Runtime library (default: ORT_DYLIB_PATH).
        #[arg(long)]
        library: Option<PathBuf>,
        /// Use the CUDA execution provider (fails if it is not offered).
        #[arg(long)]
        cuda: bool,
        /// Timed calls per model (one row each).
        #[arg(long, default_value_t = 2000)]
        runs: usize,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCmd {
    /// Make this appliance's sync key pair: `sync-key.pk8` (private, mode 0600,
    /// never leaves the appliance) and `sync-key.pub` (raw 32 bytes, for
    /// `hms-cloud enroll --public-key`). Refuses to replace an existing key.
    Keygen(Location),
}

#[derive(Debug, Subcommand)]
enum Hl7Cmd {
    /// Send HL7 files (single messages, runs of messages or FHS/BHS batches)
    /// over MLLP, one message at a time; prints one line per ACK:
    /// control id, MSA-1 and the error text. Exit 1 if any ACK is not AA/CA.
    Send {
        /// Receiver address, HOST:PORT.
        #[arg(long)]
        to: String,
        /// Seconds to wait for each ACK.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Files to send.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay parked messages through a running appliance's API (admin token).
    /// Prints one line per message: seq, status and, if still parked, why.
    Replay {
        /// The appliance's HTTP address, HOST:PORT.
        #[arg(long)]
        http: String,
        /// An admin token.
        #[arg(long, env = "HMS_TOKEN")]
        token: String,
        /// Replay every parked message.
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        /// Seqs of the parked messages to replay.
        seqs: Vec<u64>,
    },
}

/// A minimal HTTP/1.1 POST for the CLI (the appliance's own API, plain HTTP).
async fn post(http: &str, path: &str, token: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(http)
        .await
        .with_context(|| format!("connecting to {http}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {http}\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    ))
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once, on the last line of stdout.
    Create {
        /// viewer, nurse, bed_manager or admin.
        #[arg(long)]
        role: String,
        /// Who or what holds it (user, kiosk); recorded as the actor of its changes.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        location: Location,
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

/// A failure with its exit code.
struct Exit(u8, String);

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Self {
        Exit(1, format!("{e:#}"))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("hms-edge: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_config(path: &Path) -> Result<firmware_config::Config, Exit> {
    match firmware_config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded.config)
        }
        Err(e) => Err(Exit(EX_USAGE, format!("invalid configuration:\n{e}"))),
    }
}

fn data_dir(loc: &Location) -> Result<PathBuf, Exit> {
    match (&loc.data_dir, &loc.config) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(c)) => Ok(load_config(c)?.store.data_dir),
        (None, None) => Err(Exit(EX_USAGE, "give --config or --data-dir".into())),
    }
}

fn dispatch(cli: Cli) -> Result<(), Exit> {
    match cli.command {
        Cmd::Run {
            config,
            data_dir,
            http,
            mllp,
        } => {
            let mut cfg = load_config(&config)?;
            if let Some(d) = data_dir {
                cfg.store.data_dir = d;
            }
            if let Some(h) = http {
                cfg.listen.http = h;
            }
            if let Some(m) = mllp {
                cfg.listen.mllp = Some(m);
            }
            init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            rt.block_on(run(cfg))?;
            Ok(())
        }
        Cmd::Sync {
            command: SyncCmd::Keygen(location),
        } => {
            let dir = data_dir(&location)?;
            let (private, public) = (dir.join("sync-key.pk8"), dir.join("sync-key.pub"));
            if private.exists() {
                return Err(Exit(
                    1,
                    format!(
                        "{} exists; a key is never replaced silently",
                        private.display()
                    ),
                ));
            }
            std::fs::create_dir_all(&dir).context("creating the data dir")?;
            let (pkcs8, pubkey) =
                cloud_sync_client::generate_key().map_err(|e| Exit(1, e.to_string()))?;
            {
                use std::io::Write;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&private).context("writing the private key")?;
                f.write_all(&pkcs8).context("writing the private key")?;
                f.sync_all().context("syncing the private key")?;
            }
            std::fs::write(&public, &pubkey).context("writing the public key")?;
            println!(
                "private key: {} (keep on this appliance)",
                private.display()
            );
            println!(
                "public key:  {} (enrol it: hms-cloud enroll --public-key FILE)",
                public.display()
            );
            println!("{}", hms_domain::event::to_hex(&pubkey));
            Ok(())
        }
        Cmd::Backup { location, out } => {
            let dir = data_dir(&location)?;
            let b = edge_node::store::backup::backup(&dir, &out)?;
            println!(
                "backup: {} ({} events, {} bytes, integrity ok)",
                b.file.display(),
                b.events,
                b.bytes
            );
            Ok(())
        }
        Cmd::Restore {
            location,
            from: None,
            from_cloud: true,
        } => {
            let config = location
                .config
                .as_ref()
                .ok_or_else(|| Exit(EX_USAGE, "--from-cloud needs --config".into()))?;
            let mut cfg = load_config(config)?;
            if let Some(d) = &location.data_dir {
                cfg.store.data_dir = d.clone();
            }
            let settings = edge_node::uplink::Settings::from_config(&cfg)?.ok_or_else(|| {
                Exit(
                    EX_USAGE,
                    format!(
                        "{}: --from-cloud needs an [uplink] section",
                        config.display()
                    ),
                )
            })?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let client = cloud_sync_client::Client::new(settings.endpoint.clone());
            eprintln!(
                "restore: fetching {}'s events from {}",
                cfg.node.hospital_id,
                settings.endpoint.url()
            );
            let mut shown = 0u64;
            let r = rt.block_on(edge_node::store::cloud_restore::restore_from_cloud(
                &cfg.store.data_dir,
                &cfg.node.hospital_id,
                &client,
                &settings.signer,
                settings.timeout,
                |n| {
                    if n >= shown + 100_000 {
                        shown = n;
                        eprintln!("restore: {n} events");
                    }
                },
            ))?;
            println!(
                "restore: ok ({} events from the cloud in {:.1} s, {} beds; hash chain intact, \
                 replay == projections)",
                r.events, r.seconds, r.report.beds
            );
            Ok(())
        }
        Cmd::Restore { location, from, .. } => {
            let dir = data_dir(&location)?;
            let from =
                from.ok_or_else(|| Exit(EX_USAGE, "give --from FILE or --from-cloud".into()))?;
            let r = edge_node::store::backup::restore(&from, &dir)?;
            println!(
                "restore: ok ({} events, {} beds; hash chain intact, replay == projections)",
                r.events, r.beds
            );
            Ok(())
        }
        Cmd::Models {
            command: ModelsCmd::Install { location, dir },
        } => {
            let data = data_dir(&location)?;
            let i = edge_node::models::install(&data, &dir)?;
            println!(
                "models: installed set {} into {}{}",
                i.version,
                i.dir.display(),
                i.previous
                    .map(|p| format!(" (previous: {p}, kept for rollback)"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Models {
            command: ModelsCmd::Rollback(location),
        } => {
            let data = data_dir(&location)?;
            let dir = edge_node::models::rollback(&data)?;
            println!("models: rolled back to {}", dir.display());
            Ok(())
        }
        Cmd::Models {
            command:
                ModelsCmd::Check {
                    dir,
                    library,
                    cuda,
                    runs,
                },
        } => models_check(&dir, library, cuda, runs),
        Cmd::Verify(loc) => {
            let dir = data_dir(&loc)?;
            let report = verify::verify(&dir)?;
            for p in &report.problems {
                println!("problem: {p}");
            }
            if report.ok() {
                let base = if report.base_seq > 0 {
                    format!(", retention base at seq {}", report.base_seq)
                } else {
                    String::new()
                };
                println!(
                    "verify: ok ({} events, {} beds{base}; hash chain intact, replay == projections)",
                    report.events, report.beds
                );
                Ok(())
            } else {
                Err(Exit(
                    1,
                    format!("verify failed: {} problem(s)", report.problems.len()),
                ))
            }
        }
        Cmd::Hl7 {
            command: Hl7Cmd::Send { to, timeout, files },
        } => {
            use std::net::ToSocketAddrs;
            let addr = to
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| Exit(EX_USAGE, format!("cannot resolve {to:?}")))?;
            let mut messages = vec![];
            for f in &files {
                let bytes = std::fs::read(f)
                    .map_err(|e| Exit(EX_USAGE, format!("reading {}: {e}", f.display())))?;
                messages.extend(edge_node::hl7::split_messages(&bytes));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let acks = rt.block_on(edge_node::integration::send(
                addr,
                &messages,
                std::time::Duration::from_secs(timeout),
            ))?;
            let mut ok = true;
            for a in &acks {
                println!("{a}");
                ok &= a.code == "AA" || a.code == "CA";
            }
            if ok {
                Ok(())
            } else {
                Err(Exit(1, String::new()))
            }
        }
        Cmd::Hl7 {
            command:
                Hl7Cmd::Replay {
                    http,
                    token,
                    all,
                    seqs,
                },
        } => {
            if !all && seqs.is_empty() {
                return Err(Exit(EX_USAGE, "give --all or the seqs to replay".into()));
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let paths: Vec<String> = if all {
                vec!["/api/v1/integration/parked/replay".into()]
            } else {
                seqs.iter()
                    .map(|s| format!("/api/v1/integration/parked/{s}/replay"))
                    .collect()
            };
            let mut still_parked = false;
            for path in paths {
                let (status, v) = rt.block_on(post(&http, &path, &token))?;
                if status != 200 {
                    return Err(Exit(
                        1,
                        format!(
                            "{path}: HTTP {status}: {}",
                            v["detail"].as_str().unwrap_or("")
                        ),
                    ));
                }
                let items = match v.get("replayed") {
                    Some(list) => list.as_array().cloned().unwrap_or_default(),
                    None => vec![v],
                };
                for r in items {
                    let st = r["status"].as_str().unwrap_or("?");
                    still_parked |= st != "applied";
                    match r["reason"].as_str() {
                        Some(why) => println!("{} {st} {why}", r["seq"]),
                        None => println!("{} {st}", r["seq"]),
                    }
                }
            }
            if still_parked {
                Err(Exit(1, String::new()))
            } else {
                Ok(())
            }
        }
        Cmd::Token {
            command:
                TokenCmd::Create {
                    role,
                    name,
                    location,
                },
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                Exit(
                    EX_USAGE,
                    format!("unknown role {role:?}; use viewer, nurse, bed_manager or admin"),
                )
            })?;
            let dir = data_dir(&location)?;
            let tokens = Tokens::open(&dir)?;
            let token = tokens
                .create(&name, role)
                .map_err(|e| Exit(EX_USAGE, format!("{e:#}")))?;
            println!("created {} token for {name:?}", role.as_str());
            println!("{token}");
            Ok(())
        }
    }
}

async fn run(cfg: firmware_config::Config) -> anyhow::Result<()> {
    let (app, reconciled) = Appliance::open(&cfg).await?;
    tracing::info!(
        hospital = %cfg.node.hospital_id,
        beds = app.store.view().len(),
        commissioned = reconciled.commissioned,
        reconfigured = reconciled.reconfigured,
        decommissioned = reconciled.decommissioned,
        "store open"
    );
    let listener = appliance::bind(cfg.listen.http).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "http listening");
    let mllp = match cfg.listen.mllp {
        Some(a) => Some(appliance::bind(a).await?),
        None => None,
    };
    match &mllp {
        Some(l) => {
            let m = l.local_addr()?;
            tracing::info!(addr = %m, "mllp listening");
            println!("hms-edge ready http=http://{addr} mllp={m}");
        }
        None => println!("hms-edge ready http=http://{addr}"),
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    app.serve(listener, mllp, shutdown).await
}

/// `hms-edge models check`: prints one JSON line per model.
fn models_check(dir: &Path, library: Option<PathBuf>, cuda: bool, runs: usize) -> Result<(), Exit> {
    use edge_node::inference::{Runtime, Settings};
    let settings = Settings {
        models_dir: dir.to_owned(),
        library,
        cuda,
        timeout: std::time::Duration::from_secs(30),
    };
    let rt = Runtime::start(
        &settings,
        std::sync::Arc::new(edge_node::metrics::Metrics::new()),
    );
    let vectors: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("testvectors.json")).map_err(|e| {
            Exit(
                1,
                format!("{}: {e}", dir.join("testvectors.json").display()),
            )
        })?,
    )
    .map_err(|e| Exit(1, format!("testvectors.json: {e}")))?;
    let tolerance = vectors["tolerance"].as_f64().unwrap_or(1e-4);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut failed = false;
    for report in rt.reports() {
        let name = report.name.clone();
        if report.state != "ready" || (cuda && report.provider != Some("cuda")) {
            println!(
                "{}",
                serde_json::json!({ "model": name, "ok": false, "state": report })
            );
            failed = true;
            continue;
        }
        let rows: Vec<Vec<f32>> = vectors[&name]["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|r| {
                                r.iter()
                                    .filter_map(|v| v.as_f64())
                                    .map(|v| v as f32)
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<f64> = vectors[&name]["outputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                    .filter_map(|v| v.as_f64())
                    .collect()
            })
            .unwrap_or_default();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let got = runtime.block_on(rt.infer(&name, rows.len(), flat));
        let max_diff = match &got {
            Ok(g) if g.len() == want.len() && !want.is_empty() => g
                .iter()
                .zip(&want)
                .map(|(g, w)| (f64::from(*g) - w).abs())
                .fold(0.0, f64::max),
            _ => f64::INFINITY,
        };
        let mut lat = Vec::with_capacity(runs);
        for i in 0..runs {
            let row = rows[i % rows.len().max(1)].clone();
            let t = std::time::Instant::now();
            let _ = runtime.block_on(rt.infer(&name, 1, row));
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let ok = max_diff <= tolerance;
        failed |= !ok;
        println!(
            "{}",
            serde_json::json!({
                "model": name,
                "ok": ok,
                "provider": report.provider,
                "max_abs_diff": max_diff,
                "tolerance": tolerance,
                "p50_ms": q(0.5),
                "p99_ms": q(0.99),
                "calls_per_s": if lat.is_empty() { 0.0 } else { lat.len() as f64 / (lat.iter().sum::<f64>() / 1000.0) },
            })
        );
    }
    if failed {
        Err(Exit(1, "models check failed".into()))
    } else {
        Ok(())
    }
}

async fn signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}
