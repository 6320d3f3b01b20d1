//! `hms-edge run --config FILE`: the appliance, until SIGTERM or SIGINT.
//!
//! The configuration is validated (exit 64 with `file:line:col`) and the
//! data dir locked (exit 75 when another process holds it) before any port
//! is bound; `hms-edge ready http=http://…` (or `https=https://…` with
//! `[http] tls_cert`) `[mllp=…]` is printed once both
//! listeners are bound.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Outcome, load_config, runtime};
use crate::appliance::{self, Appliance};

#[derive(Debug, Args)]
pub(super) struct RunArgs {
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
}

pub(super) fn run(args: RunArgs) -> Outcome {
    let mut cfg = load_config(&args.config)?;
    if let Some(d) = args.data_dir {
        cfg.store.data_dir = d;
    }
    if let Some(h) = args.http {
        cfg.listen.http = h;
    }
    if let Some(m) = args.mllp {
        cfg.listen.mllp = Some(m);
    }
    init_tracing();
    runtime(true)?.block_on(serve(cfg))?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn serve(cfg: firmware_config::Config) -> anyhow::Result<()> {
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
    let scheme = if cfg.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Handlers installed before the ready line: a SIGTERM that follows it
    // at once drains too.
    let shutdown = CancellationToken::new();
    let stop = signals(shutdown.clone());
    match &mllp {
        Some(l) => {
            let m = l.local_addr()?;
            tracing::info!(addr = %m, "mllp listening");
            println!("hms-edge ready {scheme}={scheme}://{addr} mllp={m}");
        }
        None => println!("hms-edge ready {scheme}={scheme}://{addr}"),
    }
    tokio::spawn(stop);
    app.serve(listener, mllp, shutdown).await
}

/// Cancels `token` on SIGTERM (how service managers stop a daemon) or
/// SIGINT. The handlers are installed when this is called, not when the
/// future is first polled.
fn signals(token: CancellationToken) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match handlers {
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
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        token.cancel();
    }
}
