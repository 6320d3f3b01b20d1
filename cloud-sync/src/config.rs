//! `hms-cloud` configuration (TOML).
//!
//! ```toml
//! region = "eu-west"             # the region this cloud serves (residency)
//! listen = "127.0.0.1:9443"      # HTTP address of the sync service
//! data_dir = "cloud-data"        # registry and SQLite stores; relative to this file
//! backend = "sqlite"             # or "postgres"
//! postgres = "host=127.0.0.1 user=postgres dbname=postgres"   # with backend = "postgres";
//!                                # sslmode and sslrootcert (relative to this file) as
//!                                # libpq reads them, see [`crate::store::pg_tls`]
//! region_database = "hms+eu-west" # with backend = "postgres": the region's own
//!                                # database on that server, shared by the region's
//!                                # instances (the DR lease); default "hms+{region}"
//! mode = "primary"               # or "replica": accepts DR replication only
//! allowed_dr_regions = ["eu-central"]  # primary: where its DR peer may be;
//!                                # replica: whose primaries may replicate here
//! empi = true                    # run the regional EMPI (primary only)
//! empi_auto_train_records = 5000 # train the EMPI's model once it holds this
//!                                # many records (0: only on request)
//!
//! insecure_http = false          # true: plain HTTP on a non-loopback `listen`
//!                                # (behind a TLS-terminating proxy only)
//!
//! [tls]                          # serve HTTPS instead of HTTP
//! cert = "cloud.crt"             # PEM chain; relative to this file
//! key = "cloud.key"              # PEM private key
//!
//! [dr]                           # primary only: replicate to this peer
//! peer = "https://dr.example:9443"
//! peer_region = "eu-central"     # must be in allowed_dr_regions
//! key_file = "primary.pk8"       # this primary's Ed25519 key (hms-cloud keygen)
//! ca = "dr-ca.pem"               # PEM to trust the peer with (https)
//!
//! [fleet]                        # the MQTT fleet channel (docs/fleet.md)
//! broker = "mqtts://mqtt.region.example:8883"  # mqtt:// only to a loopback host
//! ca = "mqtt-ca.pem"             # required with mqtts://
//! # client_cert = "cloud-mqtt.pem"   # optional client certificate (both or neither)
//! # client_key = "cloud-mqtt.key"
//! key_file = "fleet.pk8"         # the fleet signing key (hms-cloud fleet keygen);
//!                                # without it commands are refused (409)
//! client_id = "hms-cloud-eu-west-1" # the default: hms-cloud-{region}-{8 random
//!                                # hex digits}, unique per process
//! keepalive_s = 30
//!
//! # Or, instead of broker (and ca, client_cert, client_key): an embedded
//! # broker (crate::broker) for a demo or a small region.
//! # embedded = true              # run it; the fleet channel connects to it
//! # listen = "127.0.0.1:1883"    # its address (plain MQTT, no TLS); the default
//! # insecure_mqtt = false        # true: plain MQTT on a non-loopback listen
//! #                              # (behind a TLS-terminating proxy only)
//! ```
//!
//! Unknown keys and missing or malformed values are errors naming the file,
//! line and column; a DR peer outside `allowed_dr_regions` stops start-up
//! (residency); so does a `listen` address off loopback without `[tls]`,
//! unless `insecure_http = true` says so explicitly ([`CloudConfig::check_listen`]);
//! so does a `[fleet] broker` that is not `mqtts://` with a `ca` (or
//! `mqtt://` to a loopback host), or a `key_file` that does not hold an
//! Ed25519 PKCS#8 key. With `embedded = true` there is no `broker` (nor
//! `ca`, `client_cert`, `client_key`): the fleet channel connects to
//! `mqtt://{listen}` (loopback for a wildcard `listen`, see
//! [`FleetConfig::embedded_listen`]); a `listen` off loopback needs
//! `insecure_mqtt = true`, port 0 is refused (the appliances must know the
//! port), and `listen` or `insecure_mqtt` without `embedded = true` is an
//! error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use hms_domain::RegionId;
use serde::Deserialize;

/// Store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// One SQLite file per hospital under the data dir.
    Sqlite,
    /// One PostgreSQL database per hospital.
    Postgres,
}

/// What this cloud is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Serves its region's appliances (and may replicate to a DR peer).
    #[default]
    Primary,
    /// Holds DR copies: accepts replication from enrolled primaries only.
    Replica,
}

/// HTTPS certificate and key (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (resolved against the file's directory).
    pub cert: PathBuf,
    /// Private key (resolved against the file's directory).
    pub key: PathBuf,
}

/// The DR peer a primary replicates to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrConfig {
    /// `https://HOST:PORT` (or `http://` on a trusted network or in tests).
    pub peer: String,
    /// The peer's region; must be in `allowed_dr_regions`.
    pub peer_region: RegionId,
    /// This primary's PKCS#8 Ed25519 key (resolved against the file's directory).
    pub key_file: PathBuf,
    /// PEM file to trust the peer with (required for https).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// The embedded broker's address when `[fleet] listen` is not given.
pub const DEFAULT_EMBEDDED_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883);

/// The fleet channel: the region's MQTT broker (or the embedded one) and
/// the fleet signing key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `mqtts://HOST[:PORT]` (8883 by default), or `mqtt://HOST[:PORT]`
    /// (1883) with a loopback host; checked into [`FleetConfig::endpoint`].
    /// Not given with `embedded = true`: [`load`] sets it to the embedded
    /// broker, `mqtt://{listen}` ([`FleetConfig::embedded_listen`]).
    #[serde(default)]
    pub broker: String,
    /// Run the embedded MQTT broker ([`crate::broker`]) on `listen`, and
    /// connect the fleet channel to it.
    #[serde(default)]
    pub embedded: bool,
    /// The embedded broker's address (plain MQTT); only with `embedded =
    /// true`, [`DEFAULT_EMBEDDED_LISTEN`] by default ([`load`] fills it in).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Let the embedded broker speak plain MQTT on a `listen` address that
    /// is not loopback (only behind a TLS-terminating proxy on a trusted
    /// network); without it such an address is a configuration error.
    #[serde(default)]
    pub insecure_mqtt: bool,
    /// PEM file to trust the broker with (required for `mqtts://`).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for the broker; with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM); with `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The fleet's PKCS#8 Ed25519 signing key (`hms-cloud fleet keygen`);
    /// without it the cloud shows the fleet but sends no command.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The MQTT client id; `hms-cloud-{region}-{8 random hex digits}`, new
    /// at each start, by default.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT keep-alive, seconds (5 to 3600).
    #[serde(default = "default_keepalive")]
    pub keepalive_s: u64,
    /// The broker, once checked ([`load`] fills it in).
    #[serde(skip)]
    pub endpoint: Option<Broker>,
}

impl FleetConfig {
    /// Where the embedded broker listens: `Some` with `embedded = true`.
    pub fn embedded_listen(&self) -> Option<SocketAddr> {
        self.embedded
            .then(|| self.listen.unwrap_or(DEFAULT_EMBEDDED_LISTEN))
    }
}

/// The address a client on this machine reaches a listener on `listen`
/// at: `listen` itself, or the loopback address of its family for a
/// wildcard (`0.0.0.0`, `[::]`).
pub fn local_connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// A checked broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `mqtts://` rather than plain `mqtt://` (loopback only).
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Broker {
    /// Parses `mqtts://HOST[:PORT]` or `mqtt://HOST[:PORT]` (loopback host
    /// only: `localhost`, 127.0.0.0/8, `[::1]`), nothing more.
    pub fn parse(url: &str) -> Result<Broker, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "must start with mqtts:// (or mqtt:// on loopback), found {url:?}"
            ));
        };
        let malformed =
            || format!("must be a URL of the form mqtts://HOST[:PORT] with no path, found {url:?}");
        let (host, port) = hms_domain::net::authority(rest).ok_or_else(malformed)?;
        let port = port.unwrap_or(if tls { 8883 } else { 1883 });
        let loopback = hms_domain::net::is_loopback_host(host);
        if !tls && !loopback {
            return Err(format!(
                "must be mqtts:// to reach another machine (fleet status and commands cross \
                 networks only inside TLS); plain mqtt:// is only for loopback (127.0.0.0/8, \
                 [::1], localhost), found {url:?}"
            ));
        }
        Ok(Broker {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// The cloud's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The region served.
    pub region: RegionId,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory (resolved against the file's directory).
    pub data_dir: PathBuf,
    /// Store backend.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// PostgreSQL maintenance connection string, for `backend = "postgres"`
    /// (`sslrootcert` made absolute against the file's directory).
    #[serde(default)]
    pub postgres: Option<String>,
    /// With `backend = "postgres"`: the region's own database on that
    /// server, which every instance of the region names alike (leases are
    /// taken there, [`crate::store::lease`]); default `hms+{region}`.
    #[serde(default)]
    pub region_database: Option<String>,
    /// Primary or replica.
    #[serde(default)]
    pub mode: Mode,
    /// Regions allowed as DR partners (see the module doc).
    #[serde(default)]
    pub allowed_dr_regions: Vec<RegionId>,
    /// Run the regional EMPI over ingested patient records (primary only).
    #[serde(default = "default_empi")]
    pub empi: bool,
    /// Records at which an EMPI still on the hand-set model trains one on
    /// its own records (once); 0: only on request. 0 or at least
    /// [`crate::empi::model::MIN_TRAIN_RECORDS`].
    #[serde(default = "default_auto_train")]
    pub empi_auto_train_records: usize,
    /// HTTPS, when set.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP on a `listen` address that is not loopback (only
    /// behind a TLS-terminating proxy on a trusted network); without it and
    /// without `[tls]`, such an address stops start-up.
    #[serde(default)]
    pub insecure_http: bool,
    /// The DR peer (primary only).
    #[serde(default)]
    pub dr: Option<DrConfig>,
    /// The MQTT fleet channel; none: no fleet.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

impl CloudConfig {
    /// Refuses plain HTTP on an address other machines can reach: a
    /// `listen` (after any `--http` override) that is not loopback needs
    /// `[tls]`, or `insecure_http = true`.
    pub fn check_listen(&self) -> Result<(), String> {
        if self.tls.is_some() || self.insecure_http || self.listen.ip().is_loopback() {
            return Ok(());
        }
        Err(format!(
            "listen address {} is not loopback and [tls] is not configured: PHI crosses \
             networks only inside TLS. Configure [tls] (cert, key) to serve HTTPS, or set \
             insecure_http = true to serve plain HTTP there (only behind a TLS-terminating \
             proxy on a trusted network)",
            self.listen
        ))
    }
}

fn default_empi() -> bool {
    true
}

fn default_auto_train() -> usize {
    crate::empi::model::DEFAULT_AUTO_TRAIN_RECORDS
}

fn default_keepalive() -> u64 {
    30
}

fn default_backend() -> Backend {
    Backend::Sqlite
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<CloudConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut cfg: CloudConfig = toml::from_str(&text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                (line, col)
            })
            .unwrap_or((0, 0));
        format!("{}:{line}:{col}: error: {}", path.display(), e.message())
    })?;
    if cfg.backend == Backend::Postgres && cfg.postgres.is_none() {
        return Err(format!(
            "{}: error: backend = \"postgres\" needs `postgres`",
            path.display()
        ));
    }
    if let Some(db) = &cfg.region_database {
        let ok = !db.is_empty()
            && db.len() <= 63
            && db
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
        if !ok {
            return Err(format!(
                "{}: error: region_database {db:?} must be 1 to 63 characters of A-Z, a-z, 0-9,                  _, +, . and -",
                path.display()
            ));
        }
    }
    let min = crate::empi::model::MIN_TRAIN_RECORDS;
    if cfg.empi_auto_train_records != 0 && cfg.empi_auto_train_records < min {
        return Err(format!(
            "{}: error: empi_auto_train_records is 0 (train only on request) or at least {min} \
             (fewer records do not train a model)",
            path.display()
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    resolve(&mut cfg.data_dir);
    if let Some(conn) = &mut cfg.postgres {
        *conn = crate::store::pg_tls::absolute_root_cert(conn, base)
            .map_err(|e| format!("{}: error: postgres: {e}", path.display()))?;
    }
    if let Some(tls) = &mut cfg.tls {
        resolve(&mut tls.cert);
        resolve(&mut tls.key);
    }
    if let Some(dr) = &mut cfg.dr {
        if cfg.mode == Mode::Replica {
            return Err(format!(
                "{}: error: a replica has no [dr] peer (replication is not chained)",
                path.display()
            ));
        }
        if !cfg.allowed_dr_regions.contains(&dr.peer_region) {
            return Err(format!(
                "{}: error: residency: [dr] peer_region {} is not in allowed_dr_regions {:?}",
                path.display(),
                dr.peer_region,
                cfg.allowed_dr_regions
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
            ));
        }
        resolve(&mut dr.key_file);
        if let Some(ca) = &mut dr.ca {
            resolve(ca);
        }
        cloud_sync_client::Endpoint::parse(&dr.peer, dr.ca.as_deref())
            .map_err(|e| format!("{}: error: [dr] peer: {e}", path.display()))?;
    }
    if let Some(f) = &mut cfg.fleet {
        let err = |m: String| format!("{}: error: [fleet] {m}", path.display());
        let broker = if f.embedded {
            embedded_broker(f).map_err(err)?
        } else {
            if let Some(listen) = f.listen {
                return Err(err(format!(
                    "listen = \"{listen}\" is the embedded broker's address, but embedded = true \
                     is not set: set embedded = true to run the broker in this cloud, or remove \
                     listen"
                )));
            }
            if f.insecure_mqtt {
                return Err(err(
                    "insecure_mqtt is only for the embedded broker (embedded = true); an \
                     external broker is mqtts://, or plain mqtt:// on a loopback host"
                        .into(),
                ));
            }
            if f.broker.is_empty() {
                return Err(err(
                    "broker is missing: name the region's MQTT broker (broker = \
                     \"mqtts://HOST[:PORT]\"), or set embedded = true to run one in this cloud"
                        .into(),
                ));
            }
            Broker::parse(&f.broker).map_err(|e| err(format!("broker {e}")))?
        };
        if broker.tls && f.ca.is_none() {
            return Err(err(
                "broker is mqtts:// but ca is not given: name the PEM file of the CA that \
                 signed the broker's certificate"
                    .into(),
            ));
        }
        if !broker.tls && (f.ca.is_some() || f.client_cert.is_some() || f.client_key.is_some()) {
            return Err(err(
                "ca, client_cert and client_key are only for an mqtts:// broker, but broker is \
                 plain mqtt://: remove them, or use mqtts://"
                    .into(),
            ));
        }
        if f.client_cert.is_some() != f.client_key.is_some() {
            return Err(err(
                "client_cert and client_key go together: give both or neither".into(),
            ));
        }
        if !(5..=3600).contains(&f.keepalive_s) {
            return Err(err(format!(
                "keepalive_s is {}, not between 5 and 3600 seconds",
                f.keepalive_s
            )));
        }
        if let Some(id) = &f.client_id
            && (id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(err(format!(
                "client_id {id:?} is not 1 to 64 printable characters without spaces"
            )));
        }
        for p in [
            &mut f.ca,
            &mut f.client_cert,
            &mut f.client_key,
            &mut f.key_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        f.endpoint = Some(broker);
    }
    Ok(cfg)
}

/// Checks `[fleet]` with `embedded = true` (see the module doc) and fills
/// in `listen` and `broker`; the broker the fleet channel connects to.
fn embedded_broker(f: &mut FleetConfig) -> Result<Broker, String> {
    if !f.broker.is_empty() {
        return Err(format!(
            "broker = {:?} and embedded = true exclude each other: with embedded = true the \
             cloud connects to its own broker on listen; remove broker, or embedded",
            f.broker
        ));
    }
    if f.ca.is_some() || f.client_cert.is_some() || f.client_key.is_some() {
        return Err(
            "ca, client_cert and client_key are for an external mqtts:// broker, but the \
             embedded broker (embedded = true) speaks plain MQTT: remove them"
                .into(),
        );
    }
    let listen = *f.listen.get_or_insert(DEFAULT_EMBEDDED_LISTEN);
    if listen.port() == 0 {
        return Err(format!(
            "listen = \"{listen}\" has port 0: the embedded broker needs a fixed port, which \
             the appliances are configured with"
        ));
    }
    if !listen.ip().is_loopback() && !f.insecure_mqtt {
        return Err(format!(
            "listen address {listen} is not loopback, and the embedded broker speaks plain MQTT \
             (no TLS): fleet status and commands cross networks only inside TLS. Keep it on \
             loopback, use an external broker with TLS (broker = \"mqtts://HOST[:PORT]\"), or set \
             insecure_mqtt = true to listen there anyway (only behind a TLS-terminating proxy on \
             a trusted network)"
        ));
    }
    let to = local_connect_addr(listen);
    f.broker = format!("mqtt://{to}");
    Ok(Broker {
        tls: false,
        host: to.ip().to_string(),
        port: to.port(),
    })
}

impl CloudConfig {
    /// The registry of this cloud and its database: `registry.sqlite`
    /// under the data dir, or with `backend = "postgres"` the region's
    /// database, shared by the region's instances.
    pub fn open_registry(
        &self,
    ) -> anyhow::Result<(
        crate::enrolment::Registry,
        crate::store::registry::RegistryDb,
    )> {
        use anyhow::Context;
        match (&self.backend, &self.postgres) {
            (Backend::Postgres, Some(pg)) => {
                let admin =
                    crate::store::pg_tls::PgTarget::parse(pg).map_err(anyhow::Error::msg)?;
                let db = crate::store::registry::RegistryDb::open_postgres(
                    admin,
                    &self.region_database(),
                )
                .context("opening the registry in the region's PostgreSQL database")?;
                crate::enrolment::registry_from(db, self.region.clone())
            }
            _ => crate::enrolment::open_registry(&self.data_dir, self.region.clone()),
        }
    }

    /// The store router of this cloud's hospitals: SQLite files under the
    /// data dir, or a database per hospital on PostgreSQL.
    pub fn open_stores(&self) -> anyhow::Result<crate::store::OpenStore> {
        Ok(match self.backend {
            Backend::Sqlite => crate::store::SqliteRouter::new(&self.data_dir).opener(),
            Backend::Postgres => {
                crate::store::postgres::PgRouter::new(self.postgres.clone().unwrap_or_default())?
                    .opener()
            }
        })
    }

    /// The region's own database name on PostgreSQL (`region_database`,
    /// else `hms+{region}`: the `+` keeps it apart from every hospital's
    /// `hms_{id}`).
    pub fn region_database(&self) -> String {
        self.region_database
            .clone()
            .unwrap_or_else(|| format!("hms+{}", self.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cloud.toml");
        std::fs::write(&p, text).expect("write");
        (dir, p)
    }

    #[test]
    fn loads_and_reports_errors_with_line_and_column() {
        let (dir, p) = write("region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n");
        let c = load(&p).expect("valid");
        assert_eq!(c.backend, Backend::Sqlite);
        assert_eq!(c.data_dir, dir.path().join("d"));
        let (_d, p) =
            write("region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\ncolour = 1\n");
        let e = load(&p).expect_err("unknown key");
        assert!(
            e.contains("cloud.toml:4:1: error:") && e.contains("colour"),
            "{e}"
        );
        let (_d, p) = write("region = \"eu west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n");
        let e = load(&p).expect_err("bad region");
        assert!(e.contains("cloud.toml:1:10: error:"), "{e}");
        let (_d, p) = write("region = \"eu-west\"\nlisten = \"x\"\ndata_dir = \"d\"\n");
        let e = load(&p).expect_err("bad address");
        assert!(e.contains("cloud.toml:2:10: error:"), "{e}");
        let (_d, p) = write(
            "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbackend = \"postgres\"\n",
        );
        assert!(load(&p).expect_err("no url").contains("needs `postgres`"));
    }

    #[test]
    fn plain_http_off_loopback_needs_tls_or_an_explicit_insecure_http() {
        let at = |listen: &str, extra: &str| {
            let (_d, p) = write(&format!(
                "region = \"eu-west\"\nlisten = \"{listen}\"\ndata_dir = \"d\"\n{extra}"
            ));
            load(&p).expect("loads").check_listen()
        };
        for loopback in ["127.0.0.1:9443", "127.0.0.2:0", "[::1]:9443"] {
            assert_eq!(at(loopback, ""), Ok(()), "{loopback}");
        }
        for open in ["0.0.0.0:9443", "10.0.0.5:9443", "[::]:9443"] {
            let e = at(open, "").expect_err(open);
            assert!(
                e.contains(&format!("listen address {open} is not loopback"))
                    && e.contains("Configure [tls]")
                    && e.contains("insecure_http = true"),
                "{e}"
            );
            assert_eq!(at(open, "insecure_http = true\n"), Ok(()), "{open}");
            assert!(at(open, "insecure_http = false\n").is_err(), "{open}");
            assert_eq!(
                at(open, "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"),
                Ok(()),
                "{open}"
            );
        }
        let (_d, p) = write(
            "region = \"eu-west\"\nlisten = \"0.0.0.0:1\"\ndata_dir = \"d\"\ninsecure_http = \"yes\"\n",
        );
        assert!(load(&p).expect_err("not a bool").contains("cloud.toml:4:"));
    }

    #[test]
    fn the_region_database_defaults_to_the_region_and_takes_only_plain_names() {
        let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
        let (_d, p) = write(base);
        assert_eq!(load(&p).expect("valid").region_database(), "hms+eu-west");
        let (_d, p) = write(&format!("{base}region_database = \"hms+r1.a_b-c\"\n"));
        assert_eq!(load(&p).expect("valid").region_database(), "hms+r1.a_b-c");
        let long = "x".repeat(64);
        for bad in ["", "a\\\"b", "semi;colon", "with space", long.as_str()] {
            let (_d, p) = write(&format!("{base}region_database = \"{bad}\"\n"));
            let e = load(&p).expect_err(bad);
            assert!(
                e.contains("region_database") && e.contains("1 to 63 characters"),
                "{bad:?}: {e}"
            );
        }
        let (_d, p) = write(&format!("{base}region_database = 7\n"));
        let e = load(&p).expect_err("a number");
        assert!(
            e.contains("cloud.toml:4:") && e.contains("expected a string"),
            "{e}"
        );
    }

    #[test]
    fn the_postgres_string_is_checked_and_its_ca_is_relative_to_the_file() {
        let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n\
                    backend = \"postgres\"\n";
        let (_d, p) = write(&format!(
            "{base}postgres = \"host=db user=hms sslmode=verify-full\"\n"
        ));
        let e = load(&p).expect_err("no CA");
        assert!(
            e.contains("cloud.toml: error: postgres: sslmode=verify-full needs sslrootcert=FILE"),
            "{e}"
        );
        let (_d, p) = write(&format!(
            "{base}postgres = \"host=db user=hms sslmode=verify-full sslrootcert=pg-ca.pem\"\n"
        ));
        let e = load(&p).expect_err("missing CA");
        assert!(e.contains("pg-ca.pem"), "{e}");
        let dir = p.parent().expect("dir");
        let ca = rcgen::generate_simple_self_signed(vec!["db".to_owned()]).expect("cert");
        std::fs::write(dir.join("pg-ca.pem"), ca.cert.pem()).expect("write");
        let c = load(&p).expect("valid");
        assert_eq!(
            c.postgres.expect("postgres"),
            format!(
                "host=db user=hms sslmode=verify-full sslrootcert={}",
                dir.join("pg-ca.pem").display()
            )
        );
    }

    #[test]
    fn automatic_empi_training_is_off_or_needs_enough_records() {
        let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
        let (_d, p) = write(base);
        assert_eq!(load(&p).expect("valid").empi_auto_train_records, 5_000);
        for (value, ok) in [("0", true), ("1000", true), ("20000", true), ("999", false)] {
            let (_d, p) = write(&format!("{base}empi_auto_train_records = {value}\n"));
            match load(&p) {
                Ok(c) => {
                    assert!(ok, "{value} accepted");
                    assert_eq!(c.empi_auto_train_records.to_string(), value);
                }
                Err(e) => {
                    assert!(!ok, "{value} refused: {e}");
                    assert!(
                        e.contains("cloud.toml: error: empi_auto_train_records")
                            && e.contains("1000"),
                        "{e}"
                    );
                }
            }
        }
        let (_d, p) = write(&format!("{base}empi_auto_train_records = -1\n"));
        assert!(load(&p).expect_err("negative").contains("cloud.toml:4:"));
    }

    #[test]
    fn dr_peers_obey_residency_and_paths_are_relative_to_the_file() {
        let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
        let (dir, p) = write(&format!(
            "{base}allowed_dr_regions = [\"eu-central\"]\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             [dr]\npeer = \"http://127.0.0.1:9\"\npeer_region = \"eu-central\"\nkey_file = \"dr.pk8\"\n"
        ));
        let c = load(&p).expect("valid");
        assert_eq!(c.mode, Mode::Primary);
        let tls = c.tls.expect("tls");
        assert_eq!(tls.cert, dir.path().join("c.pem"));
        assert_eq!(tls.key, dir.path().join("k.pem"));
        let dr = c.dr.expect("dr");
        assert_eq!(dr.key_file, dir.path().join("dr.pk8"));
        // A peer in a region not allowed: start-up is refused.
        let (_d, p) = write(&format!(
            "{base}allowed_dr_regions = [\"eu-central\"]\n\
             [dr]\npeer = \"http://127.0.0.1:9\"\npeer_region = \"us-east\"\nkey_file = \"k\"\n"
        ));
        let e = load(&p).expect_err("residency");
        assert!(e.contains("residency") && e.contains("us-east"), "{e}");
        // No allowed list at all: no peer is allowed.
        let (_d, p) = write(&format!(
            "{base}[dr]\npeer = \"http://127.0.0.1:9\"\npeer_region = \"eu-central\"\nkey_file = \"k\"\n"
        ));
        assert!(load(&p).expect_err("residency").contains("residency"));
        // https without a CA, a replica with a peer, an unknown mode.
        let (_d, p) = write(&format!(
            "{base}allowed_dr_regions = [\"eu-central\"]\n\
             [dr]\npeer = \"https://dr:9443\"\npeer_region = \"eu-central\"\nkey_file = \"k\"\n"
        ));
        assert!(load(&p).expect_err("ca").contains("CA"));
        let (_d, p) = write(&format!(
            "{base}mode = \"replica\"\nallowed_dr_regions = [\"eu-central\"]\n\
             [dr]\npeer = \"http://127.0.0.1:9\"\npeer_region = \"eu-central\"\nkey_file = \"k\"\n"
        ));
        assert!(load(&p).expect_err("chained").contains("replica"));
        let (_d, p) = write(&format!("{base}mode = \"mirror\"\n"));
        assert!(load(&p).expect_err("mode").contains("cloud.toml:4:"));
    }

    #[test]
    fn the_fleet_broker_is_mqtts_with_a_ca_or_plain_mqtt_on_loopback() {
        let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
        let (_d, p) = write(base);
        assert!(load(&p).expect("valid").fleet.is_none(), "absent: no fleet");
        let (dir, p) = write(&format!(
            "{base}[fleet]\nbroker = \"mqtt://127.0.0.1\"\nkey_file = \"fleet.pk8\"\n"
        ));
        let f = load(&p).expect("valid").fleet.expect("fleet");
        assert_eq!(
            f.endpoint,
            Some(Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            })
        );
        assert_eq!(f.key_file, Some(dir.path().join("fleet.pk8")));
        assert_eq!((f.keepalive_s, f.client_id), (30, None));
        let (dir, p) = write(&format!(
            "{base}[fleet]\nbroker = \"mqtts://mqtt.example\"\nca = \"ca.pem\"\n\
             client_cert = \"c.pem\"\nclient_key = \"c.key\"\nclient_id = \"cloud-1\"\n"
        ));
        let f = load(&p).expect("valid").fleet.expect("fleet");
        assert_eq!(
            f.endpoint.as_ref().map(|b| (b.tls, b.port)),
            Some((true, 8883))
        );
        assert_eq!(f.ca, Some(dir.path().join("ca.pem")));
        assert_eq!(f.client_key, Some(dir.path().join("c.key")));
        for ok in [
            "mqtt://localhost:1884",
            "mqtt://[::1]",
            "mqtts://10.0.0.5:8884/",
        ] {
            assert!(Broker::parse(ok).is_ok(), "{ok}");
        }
        for (fleet, says) in [
            (
                "broker = \"mqtt://mqtt.example\"",
                "must be mqtts:// to reach another machine",
            ),
            ("broker = \"mqtts://mqtt.example\"", "ca is not given"),
            (
                "broker = \"https://mqtt.example\"",
                "must start with mqtts://",
            ),
            (
                "broker = \"mqtts://h:0\"\nca = \"c\"",
                "of the form mqtts://HOST[:PORT]",
            ),
            (
                "broker = \"mqtts://h/x\"\nca = \"c\"",
                "of the form mqtts://HOST[:PORT]",
            ),
            (
                "broker = \"mqtt://127.0.0.1\"\nca = \"c\"",
                "only for an mqtts:// broker",
            ),
            (
                "broker = \"mqtts://h\"\nca = \"c\"\nclient_cert = \"c\"",
                "give both or neither",
            ),
            (
                "broker = \"mqtt://127.0.0.1\"\nkeepalive_s = 1",
                "between 5 and 3600",
            ),
            (
                "broker = \"mqtt://127.0.0.1\"\nclient_id = \"a b\"",
                "client_id",
            ),
        ] {
            let (_d, p) = write(&format!("{base}[fleet]\n{fleet}\n"));
            let e = load(&p).expect_err(fleet);
            assert!(
                e.contains("cloud.toml: error: [fleet] ") && e.contains(says),
                "{fleet}: {e}"
            );
        }
        let (_d, p) = write(&format!("{base}[fleet]\nkey_file = \"k\"\n"));
        let e = load(&p).expect_err("no broker");
        assert!(
            e.contains("cloud.toml: error: [fleet] broker is missing")
                && e.contains("embedded = true"),
            "{e}"
        );
    }

    #[test]
    fn an_embedded_broker_takes_the_place_of_broker_on_loopback_unless_told_otherwise() {
        let base = "region = \"eu-west\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
        let fleet = |keys: &str| {
            let (_d, p) = write(&format!("{base}[fleet]\n{keys}\n"));
            load(&p).map(|c| c.fleet.expect("fleet"))
        };
        let plain = |host: &str, port| {
            Some(Broker {
                tls: false,
                host: host.into(),
                port,
            })
        };
        // The defaults: 127.0.0.1:1883, and the fleet channel connects there.
        let f = fleet("embedded = true\nkey_file = \"fleet.pk8\"").expect("valid");
        assert_eq!(f.embedded_listen(), Some(DEFAULT_EMBEDDED_LISTEN));
        assert_eq!(DEFAULT_EMBEDDED_LISTEN.to_string(), "127.0.0.1:1883");
        assert_eq!(f.listen, Some(DEFAULT_EMBEDDED_LISTEN));
        assert_eq!(f.broker, "mqtt://127.0.0.1:1883");
        assert_eq!(f.endpoint, plain("127.0.0.1", 1883));
        assert_eq!((f.keepalive_s, f.insecure_mqtt), (30, false));
        // Without embedded = true there is no embedded broker.
        let f = fleet("broker = \"mqtt://127.0.0.1\"").expect("valid");
        assert_eq!((f.embedded_listen(), f.listen), (None, None));
        // A loopback listen of either family; a wildcard is reached on loopback.
        for (keys, listen, host, port) in [
            (
                "listen = \"127.0.0.2:1884\"",
                "127.0.0.2:1884",
                "127.0.0.2",
                1884,
            ),
            ("listen = \"[::1]:1885\"", "[::1]:1885", "::1", 1885),
            (
                "listen = \"0.0.0.0:1883\"\ninsecure_mqtt = true",
                "0.0.0.0:1883",
                "127.0.0.1",
                1883,
            ),
            (
                "listen = \"[::]:1886\"\ninsecure_mqtt = true",
                "[::]:1886",
                "::1",
                1886,
            ),
            (
                "listen = \"10.0.0.5:1883\"\ninsecure_mqtt = true",
                "10.0.0.5:1883",
                "10.0.0.5",
                1883,
            ),
        ] {
            let f = fleet(&format!("embedded = true\n{keys}")).expect(keys);
            assert_eq!(
                f.embedded_listen().map(|a| a.to_string()).as_deref(),
                Some(listen),
                "{keys}"
            );
            assert_eq!(f.endpoint, plain(host, port), "{keys}");
        }
        assert_eq!(
            local_connect_addr("[::]:7".parse().expect("addr")).to_string(),
            "[::1]:7"
        );
        // Errors name the file and say what to do.
        for (keys, says) in [
            (
                "embedded = true\nlisten = \"0.0.0.0:1883\"",
                "listen address 0.0.0.0:1883 is not loopback",
            ),
            (
                "embedded = true\nlisten = \"10.0.0.5:1883\"\ninsecure_mqtt = false",
                "set insecure_mqtt = true",
            ),
            ("embedded = true\nlisten = \"127.0.0.1:0\"", "has port 0"),
            (
                "embedded = true\nbroker = \"mqtt://127.0.0.1\"",
                "exclude each other",
            ),
            (
                "embedded = true\nca = \"ca.pem\"",
                "the embedded broker (embedded = true) speaks plain MQTT",
            ),
            (
                "broker = \"mqtt://127.0.0.1\"\nlisten = \"127.0.0.1:1883\"",
                "but embedded = true is not set",
            ),
            (
                "listen = \"127.0.0.1:1883\"",
                "but embedded = true is not set",
            ),
            (
                "embedded = false\nlisten = \"127.0.0.1:1883\"",
                "but embedded = true is not set",
            ),
            (
                "broker = \"mqtt://127.0.0.1\"\ninsecure_mqtt = true",
                "insecure_mqtt is only for the embedded broker",
            ),
            ("embedded = true\nkeepalive_s = 1", "between 5 and 3600"),
        ] {
            let e = fleet(keys).expect_err(keys);
            assert!(
                e.contains("cloud.toml: error: [fleet] ") && e.contains(says),
                "{keys}: {e}"
            );
        }
        // Malformed values are located.
        for (keys, at) in [
            ("embedded = \"yes\"", "cloud.toml:5:"),
            (
                "embedded = true\nlisten = \"localhost:1883\"",
                "cloud.toml:6:",
            ),
            ("embedded = true\ninsecure_mqtt = 1", "cloud.toml:6:"),
        ] {
            let e = fleet(keys).expect_err(keys);
            assert!(e.contains(at), "{keys}: {e}");
        }
    }
}
