//! Wiring of one regional cloud (`hms-cloud run`), as the appliance's
//! `Appliance` wires one appliance.
//!
//! [`Cloud::open`] does everything that can fail before the HTTP port is
//! bound: the registry and its database, the store router (SQLite or
//! PostgreSQL), the downlink, the bundles hosted for the fleet
//! (`data_dir/bundles/`, and the region's database on PostgreSQL), the regional EMPI (primary with `empi =
//! true`), the DR primaries a replica accepts, the DR replicator (primary
//! with `[dr]`), the fleet channel (`[fleet]`: its key, CA and client
//! certificate) and the TLS acceptor; last, with `[fleet] embedded = true`,
//! it starts the embedded MQTT broker ([`crate::broker`]), the one port it
//! binds (taken: an error, not a [`ConfigError`]; `hms-cloud run` exits 1
//! as when the HTTP port is taken). A configuration the files cannot
//! satisfy (a DR peer address, key or TLS certificate, a fleet key or
//! broker certificate, plain HTTP on a
//! non-loopback address without `insecure_http`) is a [`ConfigError`]
//! inside the returned error. [`Cloud::serve`] then starts every background
//! task (the EMPI runner, the replicator, the fleet channel's MQTT client
//! and the rollout driver, the reader of promotions and fences)
//! on one tracker, serves HTTP or
//! HTTPS until the cancellation token fires, stops accepting, lets the
//! requests in flight finish, cancels the background tasks and waits for
//! each of them before it returns, stopping the embedded broker after
//! them (the fleet channel leaves it cleanly first). A cloud dropped
//! without serving stops its embedded broker too.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::EmbeddedBroker;
use crate::config::{Backend, CloudConfig, Mode};
use crate::downlink::Downlink;
use crate::dr::{Primaries, ReplicationStatus, Replicator};
use crate::empi::RegionalEmpi;
use crate::state::{CloudState, OpenStore};

/// How often an instance tries to take the region's DR lease, and checks
/// its session while it holds it: another instance takes over within about
/// this long after the holder dies.
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the region's EMPI from its database (on taking the EMPI lease).
type EmpiOpener = Box<dyn Fn() -> anyhow::Result<RegionalEmpi> + Send + Sync>;

/// A configuration that cannot be put in force (the command line's exit
/// code 64): the DR peer, the DR key, the TLS certificate and key, or
/// plain HTTP on a non-loopback address ([`CloudConfig::check_listen`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// An opened cloud, ready to serve.
pub struct Cloud {
    state: CloudState,
    listen: SocketAddr,
    replicator: Option<Replicator>,
    /// With PostgreSQL: the region's DR lease (one instance replicates).
    dr_lease: Option<crate::store::lease::Lease>,
    /// With PostgreSQL and `[fleet]`: the region's rollout lease (one
    /// instance drives the rollouts).
    rollout_lease: Option<crate::store::lease::Lease>,
    /// With PostgreSQL and the EMPI: the region's EMPI lease, and how to
    /// open the EMPI from the region's database when this instance takes it.
    empi_elected: Option<(crate::store::lease::Lease, EmpiOpener)>,
    fleet_events: Option<rumqttc::EventLoop>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    broker: Option<EmbeddedBroker>,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud")
            .field("state", &self.state)
            .field("listen", &self.listen)
            .field("replicator", &self.replicator)
            .field("tls", &self.tls.is_some())
            .field("broker", &self.broker)
            .finish()
    }
}

impl Cloud {
    /// Opens everything `config` names, binding no port but the embedded
    /// MQTT broker's (`[fleet] embedded = true`), which it starts last.
    pub fn open(config: CloudConfig) -> anyhow::Result<Cloud> {
        config.check_listen().map_err(ConfigError)?;
        let (registry, db) = config.open_registry()?;
        let open: OpenStore = config
            .open_stores()
            .map_err(|e| ConfigError(format!("postgres: {e:#}")))?;
        let primaries = db.primaries()?;
        let state = CloudState::new(registry, open, db);
        // The downlink and the bundles: shared by the region's instances
        // on PostgreSQL (the region's database), files otherwise.
        let shared = state.registry_db.is_shared();
        let downlink = Arc::new(if shared {
            Downlink::shared(state.registry_db.clone())
        } else {
            Downlink::open(&config.data_dir).context("opening the downlink")?
        });
        let bundles = if shared {
            crate::bundles::Bundles::shared(&config.data_dir, state.registry_db.clone())
        } else {
            crate::bundles::Bundles::open(&config.data_dir)
        }
        .context("opening the bundles hosted for the fleet")?;
        let mut state = state.with_bundles(bundles);
        state.downlink = Some(downlink.clone());
        let mut empi_elected = None;
        if config.mode == Mode::Primary && config.empi && shared {
            // Several instances: the EMPI's tables are the region's, and
            // the holder of the region's EMPI lease runs it.
            let (_, db) = config.open_registry()?;
            crate::store::empi::EmpiDb::shared(Arc::new(db))
                .context("opening the regional EMPI in the region's database")?;
            let target =
                crate::store::pg_tls::PgTarget::parse(config.postgres.as_deref().unwrap_or(""))
                    .map_err(|e| ConfigError(format!("postgres: {e}")))?;
            let lease = crate::store::lease::Lease::keep(
                target,
                &config.region_database(),
                &format!("hms-cloud/empi/{}", config.region),
                LEASE_RETRY,
            )
            .map_err(|e| ConfigError(format!("starting the EMPI lease: {e}")))?;
            let (cfg, downlink, records) = (
                config.clone(),
                downlink.clone(),
                config.empi_auto_train_records,
            );
            let opener: EmpiOpener = Box::new(move || {
                // A session of its own: the registry's serves the requests.
                let (_, db) = cfg.open_registry()?;
                let db = crate::store::empi::EmpiDb::shared(Arc::new(db))?;
                let empi = RegionalEmpi::open_shared(db, downlink.clone())?;
                empi.set_auto_train_records(records);
                Ok(empi)
            });
            empi_elected = Some((lease, opener));
        } else if config.mode == Mode::Primary && config.empi {
            let empi = RegionalEmpi::open(&config.data_dir, downlink)
                .context("opening the regional EMPI")?;
            empi.set_auto_train_records(config.empi_auto_train_records);
            state = state.with_empi(Arc::new(empi));
        }
        if config.mode == Mode::Replica {
            state = state.replica(Primaries::new(config.allowed_dr_regions.clone(), primaries));
        }
        state
            .takeover
            .refresh()
            .context("reading promotions and fences")?;
        let mut replicator = None;
        let mut dr_lease = None;
        if let Some(dr) = &config.dr {
            let ep = cloud_sync_client::Endpoint::parse(&dr.peer, dr.ca.as_deref())
                .map_err(|e| ConfigError(format!("[dr] peer: {e}")))?;
            let key = std::fs::read(&dr.key_file).map_err(|e| {
                ConfigError(format!("[dr] key_file {}: {e}", dr.key_file.display()))
            })?;
            let status = Arc::new(ReplicationStatus::new(ep.url(), dr.peer_region.clone()));
            state = state.with_replication(status.clone());
            if let (Backend::Postgres, Some(pg)) = (&config.backend, &config.postgres) {
                let target = crate::store::pg_tls::PgTarget::parse(pg)
                    .map_err(|e| ConfigError(format!("postgres: {e}")))?;
                let name = format!("hms-cloud/dr/{}", config.region);
                dr_lease = Some(
                    crate::store::lease::Lease::keep(
                        target,
                        &config.region_database(),
                        &name,
                        LEASE_RETRY,
                    )
                    .map_err(|e| ConfigError(format!("starting the DR lease: {e}")))?,
                );
            }
            replicator = Some(
                Replicator::new(
                    cloud_sync_client::Client::new(ep),
                    key,
                    state.registry.clone(),
                    state.open.clone(),
                    status,
                    state.ingested.clone(),
                )
                .map_err(|e| ConfigError(e.to_string()))?
                .with_takeover(state.takeover.clone()),
            );
        }
        let mut fleet_events = None;
        let mut rollout_lease = None;
        if let Some(f) = &config.fleet {
            state
                .rollouts
                .refresh()
                .context("reading the region's rollouts")?;
            if let (Backend::Postgres, Some(pg)) = (&config.backend, &config.postgres) {
                let target = crate::store::pg_tls::PgTarget::parse(pg)
                    .map_err(|e| ConfigError(format!("postgres: {e}")))?;
                let name = format!("hms-cloud/rollouts/{}", config.region);
                rollout_lease = Some(
                    crate::store::lease::Lease::keep(
                        target,
                        &config.region_database(),
                        &name,
                        LEASE_RETRY,
                    )
                    .map_err(|e| ConfigError(format!("starting the rollout lease: {e}")))?,
                );
            }
            let (channel, events) = crate::fleet::Channel::open(f, &config.region)
                .map_err(|e| ConfigError(format!("[fleet] {e:#}")))?;
            if state.registry_db.is_shared() {
                channel.fleet.share(state.registry_db.clone());
                channel
                    .fleet
                    .refresh()
                    .context("reading the region's fleet commands")?;
            }
            state = state.with_fleet(channel);
            fleet_events = Some(events);
        }
        let tls = match &config.tls {
            Some(t) => Some(
                hms_web::tls::acceptor(&t.cert, &t.key)
                    .map_err(|e| ConfigError(format!("[tls] {e:#}")))?,
            ),
            None => None,
        };
        state.https = tls.is_some();
        // Last: nothing after it can fail and leave it running.
        let broker = match config.fleet.as_ref().and_then(|f| f.embedded_listen()) {
            Some(listen) => Some(EmbeddedBroker::start(listen)?),
            None => None,
        };
        Ok(Cloud {
            state,
            listen: config.listen,
            replicator,
            dr_lease,
            rollout_lease,
            empi_elected,
            fleet_events,
            tls,
            broker,
        })
    }

    /// The shared state (tests, and whoever embeds the cloud).
    pub fn state(&self) -> &CloudState {
        &self.state
    }

    /// The configured listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The line `hms-cloud run` prints once it listens on `addr`:
    /// `hms-cloud ready http=http://ADDR`, or `https=https://ADDR` with TLS.
    pub fn ready_line(&self, addr: SocketAddr) -> String {
        match self.tls {
            Some(_) => format!("hms-cloud ready https=https://{addr}"),
            None => format!("hms-cloud ready http=http://{addr}"),
        }
    }

    /// Serves on `listener` (HTTPS when TLS is configured) until `shutdown`
    /// is cancelled, with the background tasks running beside it; then
    /// stops accepting, lets the requests in flight finish, cancels the
    /// background tasks and returns once every one has ended. A server
    /// failure stops the background tasks too.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let listener = match self.tls {
            Some(acceptor) => Listener::Tls(
                hms_web::tls::TlsListener::new(listener, acceptor).context("TLS listener")?,
            ),
            None => Listener::Plain(listener),
        };
        let tasks = TaskTracker::new();
        // The background tasks stop with the server, whether it was told
        // to or failed.
        let stop = shutdown.child_token();
        if let Some(r) = self.replicator {
            tracing::info!(peer = ?r, "DR replication on");
            match self.dr_lease {
                // Several instances may share this region's logs: the
                // holder of the lease replicates.
                Some(lease) => {
                    let held = lease.held();
                    let stop = stop.clone();
                    tasks.spawn(async move {
                        r.run_elected(held, stop).await;
                        // Dropping it ends its session (a thread join).
                        let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
                    });
                }
                None => {
                    tasks.spawn(r.run(stop.clone()));
                }
            }
        }
        match self.empi_elected {
            // Several instances: the holder of the EMPI lease runs it.
            Some((lease, opener)) => {
                let held = lease.held();
                let s = &self.state;
                let run = crate::empi::run_elected(
                    s.empi.clone(),
                    opener,
                    held,
                    s.registry.clone(),
                    s.open.clone(),
                    s.empi_wake.clone(),
                    stop.clone(),
                );
                tasks.spawn(async move {
                    run.await;
                    let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
                });
                // Changes asked at the other instances, while it runs here.
                tasks.spawn(crate::http::relay::answer_relayed(
                    self.state.clone(),
                    stop.clone(),
                ));
            }
            None => {
                tasks.spawn(self.state.run_empi(stop.clone()));
            }
        }
        tasks.spawn(self.state.takeover.clone().run(stop.clone()));
        if let (Some(events), Some(f)) = (self.fleet_events, &self.state.fleet) {
            tracing::info!(broker = f.link.broker(), "fleet channel on");
            tasks.spawn(crate::fleet::run(
                f.fleet.clone(),
                f.link.clone(),
                events,
                stop.clone(),
            ));
            // Several instances: the holder of the rollout lease drives.
            let lead = self.rollout_lease.as_ref().map(|l| l.held());
            let (state, channel, stop, lease) = (
                self.state.clone(),
                f.clone(),
                stop.clone(),
                self.rollout_lease,
            );
            tasks.spawn(async move {
                crate::http::rollouts::drive(state, channel, lead, stop).await;
                if let Some(lease) = lease {
                    let _ = tokio::task::spawn_blocking(move || drop(lease)).await;
                }
            });
        }
        tasks.close();
        let app = crate::http::router(self.state);
        let until = stop.clone().cancelled_owned();
        let limits = hms_web::server::Limits::default();
        let observe: Arc<dyn hms_web::server::Observe> =
            Arc::new(hms_web::server::Counters::default());
        match listener {
            Listener::Tls(l) => hms_web::server::serve(l, app, limits, observe, until).await,
            Listener::Plain(l) => hms_web::server::serve(l, app, limits, observe, until).await,
        }
        stop.cancel();
        tasks.wait().await;
        if let Some(broker) = self.broker {
            broker.stop().await;
        }
        tracing::info!("cloud stopped");
        Ok(())
    }
}

/// Where [`Cloud::serve`] accepts.
enum Listener {
    Plain(TcpListener),
    Tls(hms_web::tls::TlsListener),
}
