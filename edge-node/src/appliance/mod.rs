//! Wiring of one appliance: store, topology reconciliation, HTTP server, timers.
//!
//! [`Appliance::open`] opens the store and brings the board in line with the
//! configuration (commissioning new beds, reconfiguring changed ones,
//! decommissioning vacant removed ones) through the ordinary writer path, so
//! those changes are events too. [`Appliance::serve`] runs the HTTP server
//! until the cancellation token fires, then drains within the grace period and
//! closes the store cleanly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use firmware_config::Config;
use hms_domain::Actor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiSettings, AppState, UnitInfo};
use crate::auth::Tokens;
use crate::board::Command;
use crate::integration::hl7::time::HospitalTime;
use crate::metrics::Metrics;
use crate::store::{Store, StoreSettings, WriteError, WriteRequest};

/// Events committed since the last checkpoint that trigger one before the
/// interval is up (about 4 MiB of WAL at a few pages per event).
pub const CHECKPOINT_EVENTS: u64 = 512;

/// An opened appliance, ready to serve.
#[derive(Debug)]
pub struct Appliance {
    /// The store.
    pub store: Store,
    /// The token store.
    pub tokens: Tokens,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// What `/health` and the fleet status show of signed bundles (the
    /// supervisor of `hms-edge run` keeps one across in-process restarts).
    pub bundles: Arc<crate::bundles::Status>,
    settings: Arc<ApiSettings>,
    mllp: crate::feed::MllpSettings,
    /// HTTPS on the kiosk listener (`[http] tls_cert`, `tls_key`).
    https: Option<Https>,
    checkpoint_every: Duration,
    grace: Duration,
    uplink: Option<crate::sync::uplink::Settings>,
    inference: crate::inference::Settings,
    refresh: Duration,
    /// The hospital's clock (forecast hours and weekdays).
    clock: HospitalTime,
    retention: Option<firmware_config::Retention>,
    backup: Option<firmware_config::BackupSection>,
    coding: firmware_config::CodingSection,
    fleet: Option<crate::fleet::Settings>,
}

/// The TLS configuration of the kiosk listener.
#[derive(Clone)]
struct Https(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Https")
    }
}

/// What start-up reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Beds added.
    pub commissioned: usize,
    /// Beds whose unit or attributes changed.
    pub reconfigured: usize,
    /// Vacant beds removed.
    pub decommissioned: usize,
    /// Beds no longer configured but kept because a stay holds them.
    pub kept: Vec<String>,
}

impl Appliance {
    /// Opens the store of `config` and reconciles the board with its topology.
    pub async fn open(config: &Config) -> anyhow::Result<(Appliance, Reconciled)> {
        let metrics = Arc::new(Metrics::new());
        let data_dir: PathBuf = config.store.data_dir.clone();
        let clock = HospitalTime::new(config.node.timezone.clone());
        let store = Store::open(
            StoreSettings {
                data_dir: data_dir.clone(),
                hospital: config.node.hospital_id.clone(),
                writer_queue: config.store.writer_queue,
                max_batch: config.store.max_batch,
                journal_size_limit: config.store.journal_size_limit_mb * 1024 * 1024,
                history_limit: config.http.history_limit,
                locations: crate::integration::adt::Locations::from_config(config),
                or_locations: crate::integration::siu::OrLocations::from_config(config),
                parse: crate::integration::hl7::ParseConfig {
                    default_charset: crate::integration::hl7::Charset::from_msh18(
                        &config.mllp.default_charset,
                    )
                    .unwrap_or(crate::integration::hl7::Charset::Utf8),
                },
                clock: clock.clone(),
            },
            metrics.clone(),
        )?;
        let uplink = crate::sync::uplink::Settings::from_config(config)?;
        let tokens = Tokens::open(&data_dir)?;
        let reconciled = reconcile(&store, config).await?;
        let units = config
            .units
            .iter()
            .map(|u| {
                (
                    u.id.clone(),
                    UnitInfo {
                        id: u.id.clone(),
                        name: u.name.clone(),
                        floor: u.floor.clone(),
                        level_of_care: u.level_of_care,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        let settings = Arc::new(ApiSettings {
            max_body_bytes: config.http.max_body_bytes,
            history_limit: config.http.history_limit,
            units,
            hospital_name: config.node.name.clone(),
            node: config.node.node_id.to_string(),
            clock: clock.clone(),
            https: config.http.tls.is_some(),
            or_rooms: config
                .or_rooms
                .iter()
                .map(|r| crate::api::or::OrRoomInfo {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    suite: r.suite.clone(),
                })
                .collect(),
        });
        let bundles = Arc::new(crate::bundles::Status::default());
        if config.bundles.is_some() {
            bundles.enable();
        }
        Ok((
            Appliance {
                store,
                tokens,
                metrics,
                bundles,
                settings,
                mllp: crate::feed::MllpSettings {
                    tls: match &config.mllp.tls {
                        Some(t) => Some(hms_web::tls::acceptor_for_clients(
                            &t.cert,
                            &t.key,
                            config.mllp.client_ca.as_deref(),
                        )?),
                        None => None,
                    },
                    allow: config.mllp.allow.clone(),
                    max_per_peer: config.mllp.max_connections_per_peer,
                    first_frame_timeout: Duration::from_secs(config.mllp.first_frame_timeout_s),
                    framer: crate::integration::mllp::FramerConfig {
                        max_frame: config.mllp.max_frame_bytes,
                        tolerate_missing_cr: config.mllp.tolerate_missing_cr,
                    },
                    max_connections: config.mllp.max_connections,
                    idle_timeout: Duration::from_secs(config.mllp.idle_timeout_s),
                    frame_timeout: Duration::from_secs(config.mllp.frame_timeout_s),
                    clock: clock.clone(),
                },
                https: match &config.http.tls {
                    Some(t) => Some(Https(hms_web::tls::acceptor(&t.cert, &t.key)?)),
                    None => None,
                },
                checkpoint_every: Duration::from_secs(config.store.checkpoint_interval_s.max(1)),
                grace: Duration::from_secs(config.http.shutdown_grace_s),
                uplink,
                inference: crate::inference::Settings::from_config(config),
                refresh: Duration::from_secs(config.inference.refresh_s),
                clock,
                retention: config.uplink.as_ref().map(|u| u.retention),
                backup: config.backup.clone(),
                coding: config.coding,
                fleet: crate::fleet::Settings::from_config(config)?,
            },
            reconciled,
        ))
    }

    /// Serves HTTP on `listener` (and MLLP on `mllp`) until `shutdown`
    /// fires; then stops accepting, lets requests and frames in flight
    /// finish within the grace period, stops every background task and
    /// closes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        mllp: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        let data_dir = self.store.data_dir().to_owned();
        // Token changes made while the appliance was stopped are recorded
        // first, before anything is served.
        let mut follower = crate::auth::Follower::new(self.tokens.clone(), self.store.clone());
        follower.catch_up().await;
        // The MLLP listener runs on the writer's thread: a message goes from
        // its socket to the commit and its ACK back without a thread change.
        let mllp = mllp.map(|l| {
            self.store.spawn_on_writer(crate::feed::serve(
                l,
                self.store.clone(),
                self.metrics.clone(),
                self.mllp.clone(),
                shutdown.clone(),
            ))
        });
        let sync = crate::sync::status::Status::disabled();
        if let Some(u) = self.uplink.clone() {
            tasks.spawn(crate::sync::uplink::run(
                self.store.clone(),
                u,
                sync.clone(),
                self.metrics.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(r) = self.retention {
            tasks.spawn(crate::store::pruning::run(
                self.store.clone(),
                r,
                sync.acknowledged(),
                shutdown.clone(),
            ));
        }
        if let Some(b) = self.backup.clone() {
            tasks.spawn(crate::store::backup::scheduled(
                data_dir.clone(),
                b,
                shutdown.clone(),
            ));
        }
        let runtime = {
            let (s, m) = (self.inference.clone(), self.metrics.clone());
            tokio::task::spawn_blocking(move || crate::inference::Runtime::start(&s, m))
                .await
                .context("starting the model runtime")?
        };
        let forecaster = crate::inference::forecast::Forecaster::new(
            self.store.clone(),
            runtime,
            self.refresh,
            self.clock.clone(),
        );
        tasks.spawn(forecaster.clone().run(
            self.inference.clone(),
            data_dir,
            self.metrics.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::inference::or_cases::run(
            self.store.clone(),
            forecaster.clone(),
            self.clock.clone(),
            shutdown.clone(),
        ));
        let patients = Arc::new(crate::patients::PatientIndex::default());
        tasks.spawn(
            patients
                .clone()
                .follow(self.store.clone(), shutdown.clone()),
        );
        tasks.spawn(checkpoints(
            self.store.clone(),
            self.checkpoint_every,
            shutdown.clone(),
        ));
        // Token revocations by `hms-edge token` take effect within a second;
        // creations and revocations become audit events.
        tasks.spawn(follower.run(shutdown.clone()));
        // Ends once the HTTP server's state is gone, after the last look-up.
        let (audit, audit_task) = crate::audit::AuditQueue::new(
            self.store.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        );
        tasks.spawn(audit_task);
        let state = AppState {
            store: self.store.clone(),
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
            settings: self.settings.clone(),
            shutdown: shutdown.clone(),
            sync,
            forecaster,
            patients,
            audit,
            coding: Arc::new(crate::api::charges::CodingCache::new(&self.coding)),
            bundles: self.bundles.clone(),
            fleet: match &self.fleet {
                Some(_) => crate::fleet::Link::enabled(),
                None => Arc::new(crate::fleet::Link::default()),
            },
        };
        if let Some(fleet) = self.fleet.clone() {
            let for_health = state.clone();
            let ctx = crate::fleet::Ctx {
                store: state.store.clone(),
                metrics: state.metrics.clone(),
                sync: state.sync.clone(),
                tokens: state.tokens.clone(),
                health: Arc::new(move || api::health_report(&for_health).1),
            };
            tasks.spawn(crate::fleet::run(
                fleet,
                ctx,
                state.fleet.clone(),
                shutdown.clone(),
            ));
        }
        let mut app = api::router(state);
        let token = shutdown.clone();
        let observe: Arc<dyn hms_web::server::Observe> = self.metrics.clone();
        let limits = hms_web::server::Limits::default();
        let until = async move { token.cancelled().await };
        let mut server = match self.https.clone() {
            Some(Https(acceptor)) => {
                // HTTPS only: browsers that saw this once never try plain HTTP again.
                app = app.layer(axum::middleware::map_response(
                    |mut r: axum::response::Response| async move {
                        r.headers_mut().insert(
                            axum::http::header::STRICT_TRANSPORT_SECURITY,
                            axum::http::HeaderValue::from_static("max-age=31536000"),
                        );
                        r
                    },
                ));
                let tls =
                    hms_web::tls::TlsListener::new(listener, acceptor).context("HTTPS listener")?;
                tokio::spawn(hms_web::server::serve(tls, app, limits, observe, until))
            }
            None => tokio::spawn(hms_web::server::serve(
                listener, app, limits, observe, until,
            )),
        };
        shutdown.cancelled().await;
        tracing::info!(
            grace_s = self.grace.as_secs(),
            "shutting down: draining requests"
        );
        match tokio::time::timeout(self.grace, &mut server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "http server task failed"),
            Err(_) => {
                tracing::warn!("grace period over; closing remaining connections");
                server.abort();
            }
        }
        if let Some(m) = mllp {
            // Connections finish the frame in hand (bounded by the store's queue wait).
            if tokio::time::timeout(self.grace, m).await.is_err() {
                tracing::warn!("grace period over; closing MLLP connections");
            }
        }
        tasks.close();
        if tokio::time::timeout(self.grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; background tasks still running");
        }
        self.store.close().await;
        tracing::info!("appliance stopped");
        Ok(())
    }
}

/// WAL hygiene: four times a second, once [`CHECKPOINT_EVENTS`] events
/// were committed since the last checkpoint or `every` has passed with any,
/// the checkpointer copies the committed pages into the database file off
/// the commit path, and the writer then finishes the few frames committed
/// meanwhile so that the WAL restarts from its beginning (see
/// [`Store::restart_wal`]).
async fn checkpoints(store: Store, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = tokio::time::Instant::now();
    let mut seen = store.last_seq();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                store.refresh_wal_size();
                let seq = store.last_seq();
                let due = seq.saturating_sub(seen) >= CHECKPOINT_EVENTS
                    || (seq != seen && last.elapsed() >= every);
                if !due {
                    continue;
                }
                if store.checkpoint().await.is_some_and(|c| c.log > 0)
                    && let Err(e) = store.restart_wal().await
                {
                    tracing::debug!(error = %e, "the writer did not finish the checkpoint");
                }
                seen = seq;
                last = tokio::time::Instant::now();
            }
        }
    }
}

/// Brings the board in line with the configured topology.
pub async fn reconcile(store: &Store, config: &Config) -> anyhow::Result<Reconciled> {
    let view = store.view();
    let mut out = Reconciled::default();
    let mut cmds = vec![];
    for b in &config.beds {
        match view.bed(b.id.as_str()) {
            None => {
                out.commissioned += 1;
                cmds.push(Command::Commission {
                    bed: b.id.clone(),
                    unit: b.unit.clone(),
                    attributes: b.attributes.clone(),
                });
            }
            Some(cur) if cur.unit != b.unit || cur.attributes != b.attributes => {
                out.reconfigured += 1;
                cmds.push(Command::Reconfigure {
                    bed: b.id.clone(),
                    unit: b.unit.clone(),
                    attributes: b.attributes.clone(),
                });
            }
            Some(_) => {}
        }
    }
    let configured: std::collections::HashSet<&str> =
        config.beds.iter().map(|b| b.id.as_str()).collect();
    for cur in view.beds() {
        if !configured.contains(cur.id.as_str()) {
            if cur.state.encounter().is_some() {
                tracing::warn!(bed = %cur.id, "bed left the configuration but a stay holds it; kept");
                out.kept.push(cur.id.to_string());
            } else {
                out.decommissioned += 1;
                cmds.push(Command::Decommission {
                    bed: cur.id.clone(),
                });
            }
        }
    }
    let writes = cmds.into_iter().map(|cmd| {
        store.write(WriteRequest {
            cmd,
            actor: Actor::system(),
            correlation: Some("config-reconcile".into()),
            occurred_at: None,
        })
    });
    for r in futures_util::future::join_all(writes).await {
        match r {
            Ok(_) => {}
            Err(WriteError::Rejected(e)) => anyhow::bail!("reconciling the configuration: {e}"),
            Err(e) => return Err(e).context("reconciling the configuration"),
        }
    }
    Ok(out)
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {addr}"))
}
