//! `hms-edge run --config FILE`: the appliance, until SIGTERM or SIGINT.
//!
//! The configuration is validated (exit 64 with `file:line:col`) and the
//! data dir locked (exit 75 when another process holds it) before any port
//! is bound; `hms-edge ready http=http://…` (or `https=https://…` with
//! `[http] tls_cert`) `[mllp=…]` is printed once both
//! listeners are bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{Outcome, load_config, runtime};
use crate::appliance::{self, Appliance};
use crate::bundles;

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
    let base = load_config(&args.config)?;
    let overrides = Overrides {
        data_dir: args.data_dir,
        http: args.http,
        mllp: args.mllp,
    };
    init_tracing();
    runtime(true)?.block_on(supervise(base, args.config, overrides))?;
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

/// What the command line sets over any configuration, the appliance's own
/// or a bundle's.
#[derive(Debug, Clone)]
struct Overrides {
    data_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
    mllp: Option<SocketAddr>,
}

impl Overrides {
    fn apply(&self, cfg: &mut firmware_config::Config) {
        if let Some(d) = &self.data_dir {
            cfg.store.data_dir = d.clone();
        }
        if let Some(h) = self.http {
            cfg.listen.http = h;
        }
        if let Some(m) = self.mllp {
            cfg.listen.mllp = Some(m);
        }
    }
}

/// A bundle on probation, and what it is judged by.
#[derive(Debug)]
struct OnProbation {
    step: bundles::Step,
    started: tokio::time::Instant,
    /// HL7 was arriving before the switch: it must arrive during probation.
    adt_before: bool,
    /// The instance's HL7 count when the probation began (a configuration
    /// starts a new instance: 0).
    hl7_at_start: u64,
}

/// The supervisor's memory across in-process restarts.
struct Supervisor {
    base: firmware_config::Config,
    base_path: PathBuf,
    overrides: Overrides,
    data_dir: PathBuf,
    status: Arc<bundles::Status>,
    /// The boot pointer, as on disk.
    active: Option<bundles::Active>,
    /// Steps to record once a store is open (a rollback decided while none was).
    pending: Vec<bundles::Step>,
    /// The configuration bundle on probation in the next or current instance.
    config_probation: Option<OnProbation>,
    /// The model set bundle on probation in the current instance.
    models_probation: Option<OnProbation>,
    /// When an HL7 message last arrived (any instance).
    last_hl7: Option<tokio::time::Instant>,
}

/// How one instance of the appliance ended.
enum Ended {
    /// SIGTERM or SIGINT: the appliance stops.
    Stop,
    /// Switch configuration (a bundle applied or rolled back): open again.
    Switch,
}

impl Supervisor {
    /// The configuration of boot pointer `active` (the appliance's own
    /// without one), with the command line's overrides.
    fn config(&self, version: Option<u64>) -> anyhow::Result<firmware_config::Config> {
        let mut cfg = match version {
            None => self.base.clone(),
            Some(v) => {
                let path = bundles::config_file(&self.data_dir, v);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                // Relative paths resolve as for the appliance's own file.
                firmware_config::load_str(&text, &self.base_path)
                    .map_err(|e| anyhow::anyhow!("config bundle version {v} does not load: {e}"))?
                    .config
            }
        };
        self.overrides.apply(&mut cfg);
        Ok(cfg)
    }

    /// The configuration bundle on probation failed: back to the one before
    /// it (the step is recorded once a store is open).
    fn config_failed(&mut self, reason: String) -> anyhow::Result<()> {
        let Some(p) = self.config_probation.take() else {
            return Ok(());
        };
        tracing::error!(version = p.step.version, reason = %reason, "config bundle failed its probation; rolling back");
        let previous = p.step.previous;
        self.active = previous.map(|v| bundles::Active {
            version: v,
            previous: None,
            state: "in_force".into(),
            sha256: String::new(),
        });
        bundles::write_active(&self.data_dir, self.active.as_ref())?;
        self.pending.push(bundles::Step {
            step: "rolled_back",
            reason: Some(reason),
            ..p.step
        });
        Ok(())
    }

    /// Records `step` in `store`, shows it, and writes its outcome file
    /// (for all but `applied`).
    async fn record(&self, store: &crate::store::Store, step: bundles::Step) {
        if let Err(e) = store.record_bundle(step.clone()).await {
            tracing::error!(error = %e, "a bundle step could not be recorded");
        }
        // The versions first, then the step: whoever sees the step sees
        // the versions it left.
        self.refresh_status(store).await;
        self.status.step(&step);
        if step.step != "applied" {
            bundles::write_outcome(&self.data_dir, &step);
        }
        match step.step {
            "refused" => {
                tracing::warn!(kind = step.kind, version = step.version, reason = ?step.reason, "bundle refused")
            }
            "rolled_back" => {
                tracing::error!(kind = step.kind, version = step.version, reason = ?step.reason, "bundle rolled back")
            }
            s => tracing::info!(kind = step.kind, version = step.version, step = s, "bundle"),
        }
    }

    async fn refresh_status(&self, store: &crate::store::Store) {
        for kind in ["config", "model_set"] {
            if let Ok(v) = store.bundle_versions(kind).await {
                self.status.set(kind, v);
            }
        }
    }
}

/// Runs the appliance, and runs it again in-process when a configuration
/// bundle is applied or rolled back (crate::bundles).
async fn supervise(
    base: firmware_config::Config,
    base_path: PathBuf,
    overrides: Overrides,
) -> anyhow::Result<()> {
    let mut own = base.clone();
    overrides.apply(&mut own);
    let data_dir = own.store.data_dir.clone();
    // Handlers installed before the ready line: a SIGTERM that follows it
    // at once drains too.
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let mut sup = Supervisor {
        base,
        base_path,
        overrides,
        data_dir: data_dir.clone(),
        status: Arc::new(bundles::Status::default()),
        active: bundles::read_active(&data_dir),
        pending: vec![],
        config_probation: None,
        models_probation: None,
        last_hl7: None,
    };
    // Stopped during a probation: start on the configuration before it.
    if let Some(a) = sup.active.clone()
        && a.state == "probation"
    {
        sup.config_probation = Some(OnProbation {
            step: bundles::Step {
                kind: "config",
                version: a.version,
                step: "applied",
                previous: a.previous,
                sha256: a.sha256.clone(),
                reason: None,
            },
            started: tokio::time::Instant::now(),
            adt_before: false,
            hl7_at_start: 0,
        });
        sup.config_failed("the appliance stopped during the probation".into())?;
    }
    let mut first = true;
    loop {
        let version = sup.active.as_ref().map(|a| a.version);
        let cfg = match sup.config(version) {
            Ok(c) => c,
            Err(e) if sup.config_probation.is_some() => {
                sup.config_failed(format!("{e:#}"))?;
                continue;
            }
            Err(e) => return Err(e),
        };
        match instance(&mut sup, &cfg, &shutdown, &mut first).await {
            Ok(Ended::Stop) => return Ok(()),
            Ok(Ended::Switch) => continue,
            Err(e) if sup.config_probation.is_some() => {
                sup.config_failed(format!("{e:#}"))?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One instance of the appliance on `cfg`: open, bind, serve, watch the
/// inbox and the probations, until a stop or a switch.
async fn instance(
    sup: &mut Supervisor,
    cfg: &firmware_config::Config,
    shutdown: &CancellationToken,
    first: &mut bool,
) -> anyhow::Result<Ended> {
    let (mut app, reconciled) = Appliance::open(cfg).await?;
    let bound = async {
        let listener = appliance::bind(cfg.listen.http).await?;
        let mllp = match cfg.listen.mllp {
            Some(a) => Some(
                appliance::bind(a)
                    .await
                    .with_context(|| format!("binding the MLLP listener on {a}"))?,
            ),
            None => None,
        };
        anyhow::Ok((listener, mllp))
    }
    .await;
    let store = app.store.clone();
    let metrics = app.metrics.clone();
    let (listener, mllp) = match bound {
        Ok(b) => b,
        Err(e) => {
            // Record why in this store before giving it back.
            if sup.config_probation.is_some() {
                sup.config_failed(format!("{e:#}"))?;
                for step in std::mem::take(&mut sup.pending) {
                    sup.record(&store, step).await;
                }
                store.close().await;
                return Ok(Ended::Switch);
            }
            store.close().await;
            return Err(e);
        }
    };
    if cfg.bundles.is_some() {
        sup.status.enable();
    }
    app.bundles = sup.status.clone();
    for step in std::mem::take(&mut sup.pending) {
        sup.record(&store, step).await;
    }
    sup.refresh_status(&store).await;
    policy(&sup.data_dir, cfg);
    tracing::info!(
        hospital = %cfg.node.hospital_id,
        beds = store.view().len(),
        commissioned = reconciled.commissioned,
        reconfigured = reconciled.reconfigured,
        decommissioned = reconciled.decommissioned,
        config_bundle = ?sup.active.as_ref().map(|a| a.version),
        "store open"
    );
    let addr = listener.local_addr()?;
    // Later instances listen where this one did (port 0 resolved once).
    sup.overrides.http = Some(addr);
    let scheme = if cfg.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    match &mllp {
        Some(l) => {
            let m = l.local_addr()?;
            if sup.overrides.mllp.is_some() {
                sup.overrides.mllp = Some(m);
            }
            tracing::info!(%addr, mllp = %m, "listening");
            if *first {
                println!("hms-edge ready {scheme}={scheme}://{addr} mllp={m}");
            }
        }
        None => {
            tracing::info!(%addr, "listening");
            if *first {
                println!("hms-edge ready {scheme}={scheme}://{addr}");
            }
        }
    }
    *first = false;
    if let Some(p) = &mut sup.config_probation {
        p.started = tokio::time::Instant::now();
    }
    let settings = bundles::Settings::from_config(cfg)?;
    let probation = settings.as_ref().map_or(
        Duration::from_secs(firmware_config::DEFAULT_BUNDLE_PROBATION_S),
        |s| s.probation,
    );
    let this = shutdown.child_token();
    let mut serving = tokio::spawn(app.serve(listener, mllp, this.clone()));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut hl7_seen = 0;
    let ended = loop {
        tokio::select! {
            r = &mut serving => {
                // Ended by itself: a failure.
                let e = match r {
                    Ok(Ok(())) if shutdown.is_cancelled() => return Ok(Ended::Stop),
                    Ok(Ok(())) => anyhow::anyhow!("the appliance stopped by itself"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("the appliance's task failed: {e}"),
                };
                return Err(e);
            }
            () = shutdown.cancelled() => break Ended::Stop,
            _ = tick.tick() => {}
        }
        let hl7 = crate::metrics::hl7_total(&metrics);
        if hl7 > hl7_seen {
            hl7_seen = hl7;
            sup.last_hl7 = Some(tokio::time::Instant::now());
        }
        // The configuration on probation.
        if let Some(p) = &sup.config_probation {
            let verdict = judge(p, &store, hl7_seen, probation);
            match verdict {
                Verdict::Wait => {}
                Verdict::Pass => {
                    let Some(p) = sup.config_probation.take() else {
                        continue;
                    };
                    let version = p.step.version;
                    sup.active = Some(bundles::Active {
                        version,
                        previous: p.step.previous,
                        state: "in_force".into(),
                        sha256: p.step.sha256.clone(),
                    });
                    bundles::write_active(&sup.data_dir, sup.active.as_ref())?;
                    let keep: Vec<u64> = std::iter::once(version).chain(p.step.previous).collect();
                    bundles::prune_configs(&sup.data_dir, &keep);
                    sup.record(
                        &store,
                        bundles::Step {
                            step: "in_force",
                            reason: None,
                            ..p.step
                        },
                    )
                    .await;
                    sup.refresh_status(&store).await;
                }
                Verdict::Fail(reason) => {
                    sup.config_failed(reason)?;
                    for step in std::mem::take(&mut sup.pending) {
                        sup.record(&store, step).await;
                    }
                    break Ended::Switch;
                }
            }
        }
        // The model set on probation.
        if let Some(p) = &sup.models_probation {
            let mut verdict = judge(p, &store, hl7_seen, probation);
            if matches!(verdict, Verdict::Pass)
                && let Err(e) = installed_set_verifies(&sup.data_dir)
            {
                verdict = Verdict::Fail(e);
            }
            match verdict {
                Verdict::Wait => {}
                Verdict::Pass => {
                    if let Some(p) = sup.models_probation.take() {
                        sup.record(
                            &store,
                            bundles::Step {
                                step: "in_force",
                                reason: None,
                                ..p.step
                            },
                        )
                        .await;
                        sup.refresh_status(&store).await;
                    }
                }
                Verdict::Fail(reason) => {
                    if let Some(p) = sup.models_probation.take() {
                        // Back to the set installed before it, or to the
                        // configuration's own when none was.
                        let restored = if had_previous_set(&sup.data_dir) {
                            crate::inference::models::rollback(&sup.data_dir).map(|_| ())
                        } else {
                            crate::inference::models::uninstall(&sup.data_dir)
                        };
                        let reason = match restored {
                            Ok(()) => reason,
                            Err(e) => {
                                format!("{reason}; the previous set could not be restored: {e:#}")
                            }
                        };
                        sup.record(
                            &store,
                            bundles::Step {
                                step: "rolled_back",
                                reason: Some(reason),
                                ..p.step
                            },
                        )
                        .await;
                        sup.refresh_status(&store).await;
                    }
                }
            }
        }
        // The inbox, while nothing is on probation.
        if sup.config_probation.is_none() && sup.models_probation.is_none() {
            match take_one(sup, &store, cfg, settings.as_ref(), hl7_seen).await? {
                Taken::Nothing => {}
                Taken::Switch => break Ended::Switch,
            }
        }
    };
    this.cancel();
    match serving.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %format!("{e:#}"), "the appliance stopped with an error")
        }
        Err(e) => tracing::error!(error = %e, "the appliance's task failed"),
    }
    Ok(ended)
}

/// A probation's verdict now.
enum Verdict {
    Wait,
    Pass,
    Fail(String),
}

fn judge(
    p: &OnProbation,
    store: &crate::store::Store,
    hl7_seen: u64,
    probation: Duration,
) -> Verdict {
    if !store.writer_alive() {
        return Verdict::Fail("the store's writer stopped".into());
    }
    if p.started.elapsed() < probation {
        return Verdict::Wait;
    }
    if let Some(e) = store.last_error() {
        return Verdict::Fail(format!("the store reported an error: {e}"));
    }
    if p.adt_before && hl7_seen <= p.hl7_at_start {
        return Verdict::Fail(format!(
            "no HL7 message arrived in the {} s of probation, though the feed was flowing before \
             the switch",
            probation.as_secs()
        ));
    }
    Verdict::Pass
}

/// The installed model set's manifest and files verify.
fn installed_set_verifies(data_dir: &std::path::Path) -> Result<(), String> {
    let dir = crate::inference::models::current(data_dir)
        .ok_or_else(|| "no installed model set".to_owned())?;
    crate::inference::manifest::verify_set(&dir)
        .map(|_| ())
        .map_err(|e| format!("the installed set does not verify: {e}"))
}

/// Whether a model set was installed before the current one (`models
/// rollback` has somewhere to go).
fn had_previous_set(data_dir: &std::path::Path) -> bool {
    data_dir.join("models").join("PREVIOUS").is_file()
}

/// Whether `models install` may install unsigned sets in this data dir:
/// the marker file `bundles/SIGNED_MODELS_ONLY` says it may not.
fn policy(data_dir: &std::path::Path, cfg: &firmware_config::Config) {
    let marker = data_dir
        .join(bundles::DIR)
        .join(bundles::SIGNED_MODELS_ONLY);
    let signed_only = cfg
        .bundles
        .as_ref()
        .is_some_and(|b| !b.allow_unsigned_models);
    let r = if signed_only {
        bundles::write_durably(
            &marker,
            b"model sets only as signed bundles ([bundles] allow_unsigned_models = false)\n",
        )
    } else {
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    };
    if let Err(e) = r {
        tracing::warn!(error = %format!("{e:#}"), "the unsigned model set policy file was not written");
    }
}

/// What taking from the inbox did.
enum Taken {
    Nothing,
    Switch,
}

/// Takes the bundles waiting in the inbox: each refused or applied; a
/// configuration applied switches the appliance (the rest wait).
async fn take_one(
    sup: &mut Supervisor,
    store: &crate::store::Store,
    cfg: &firmware_config::Config,
    settings: Option<&bundles::Settings>,
    hl7_seen: u64,
) -> anyhow::Result<Taken> {
    for bytes in bundles::take_inbox(&sup.data_dir) {
        let sha256 = bundles::sha256_hex(&bytes);
        let refuse = |kind: &'static str, version: u64, reason: String| bundles::Step {
            kind,
            version,
            step: "refused",
            previous: None,
            sha256: sha256.clone(),
            reason: Some(reason),
        };
        let Some(settings) = settings else {
            let step = refuse(
                "unknown",
                0,
                "this appliance takes no bundles: its configuration has no [bundles] section"
                    .into(),
            );
            sup.record(store, step).await;
            continue;
        };
        let checked = match bundles::check(&bytes, settings, store, cfg, &sup.base_path).await {
            Ok(c) => c,
            Err(r) => {
                // The kind and version, where the bundle got that far.
                let (kind, version) = firmware_config::bundle::verify(&bytes, &settings.trusted)
                    .map(|b| (bundles::kind_name(b.kind), b.version))
                    .unwrap_or(("unknown", 0));
                sup.record(store, refuse(kind, version, r.to_string()))
                    .await;
                continue;
            }
        };
        let b = &checked.bundle;
        let step = bundles::Step {
            kind: bundles::kind_name(b.kind),
            version: b.version,
            step: "applied",
            previous: checked.previous,
            sha256: checked.sha256.clone(),
            reason: None,
        };
        let adt_before = sup
            .last_hl7
            .is_some_and(|t| t.elapsed() <= bundles::FLOWING_WINDOW);
        match b.kind {
            firmware_config::bundle::Kind::Config => {
                let text = b
                    .files
                    .first()
                    .map(|f| f.bytes.as_slice())
                    .unwrap_or_default();
                bundles::write_durably(&bundles::config_file(&sup.data_dir, b.version), text)?;
                sup.active = Some(bundles::Active {
                    version: b.version,
                    previous: checked.previous,
                    state: "probation".into(),
                    sha256: checked.sha256.clone(),
                });
                bundles::write_active(&sup.data_dir, sup.active.as_ref())?;
                sup.record(store, step.clone()).await;
                sup.config_probation = Some(OnProbation {
                    step,
                    started: tokio::time::Instant::now(),
                    adt_before,
                    hl7_at_start: 0,
                });
                sup.refresh_status(store).await;
                return Ok(Taken::Switch);
            }
            firmware_config::bundle::Kind::ModelSet => {
                let staging = sup
                    .data_dir
                    .join(bundles::DIR)
                    .join(format!("staging-{}", &checked.sha256[..16]));
                let installed = bundles::stage_model_set(b, &staging)
                    .map_err(|r| r.to_string())
                    .and_then(|()| {
                        crate::inference::models::install(&sup.data_dir, &staging)
                            .map_err(|e| format!("the model set could not be installed: {e:#}"))
                    });
                let _ = std::fs::remove_dir_all(&staging);
                match installed {
                    Ok(_) => {
                        sup.record(store, step.clone()).await;
                        sup.models_probation = Some(OnProbation {
                            step,
                            started: tokio::time::Instant::now(),
                            adt_before,
                            hl7_at_start: hl7_seen,
                        });
                        sup.refresh_status(store).await;
                        // The rest wait for this one's probation.
                        return Ok(Taken::Nothing);
                    }
                    Err(reason) => {
                        sup.record(store, refuse("model_set", b.version, reason))
                            .await;
                    }
                }
            }
        }
    }
    Ok(Taken::Nothing)
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
