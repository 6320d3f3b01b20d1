//! The validated appliance configuration.
//!
//! These types are what the appliance codes against. They are only ever built
//! by the loader after every check has passed, so their invariants hold: ids
//! are valid and unique per kind, every reference resolves, every bed has a
//! unit, a level of care and a unique HL7 location, and every operating room
//! has an HL7 location that no other operating room and no bed holds.

use std::net::SocketAddr;
use std::path::PathBuf;

use hms_domain::{
    BedAttributes, BedId, HospitalId, LevelOfCare, NodeId, OrRoomId, RegionId, RoomId, UnitId,
};

/// Default for `store.checkpoint_interval_s`.
pub const DEFAULT_CHECKPOINT_INTERVAL_S: u64 = 60;
/// Default for `store.journal_size_limit_mb`.
pub const DEFAULT_JOURNAL_SIZE_LIMIT_MB: u64 = 64;
/// Default for `store.writer_queue`.
pub const DEFAULT_WRITER_QUEUE: usize = 1024;
/// Default for `store.max_batch`.
pub const DEFAULT_MAX_BATCH: usize = 256;
/// Default for `http.max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 65536;
/// Default for `http.shutdown_grace_s`.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;
/// Default for `http.history_limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 20;
/// Default for `mllp.max_frame_bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
/// Default for `mllp.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Largest `mllp.max_frame_bytes`: a message's event carries its bytes
/// hex-encoded (twice the size) with its ACKs, and one event must fit one
/// sync request to the cloud (4 MiB of JSON), with 64 KiB to spare.
pub const MAX_SYNCABLE_FRAME_BYTES: usize = ((4 << 20) - (64 << 10)) / 2;
/// Default for `mllp.max_connections_per_peer`.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 8;
/// Default for `mllp.first_frame_timeout_s`.
pub const DEFAULT_FIRST_FRAME_TIMEOUT_S: u64 = 30;
/// Default for `mllp.idle_timeout_s`.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 600;
/// Default for `mllp.frame_timeout_s`.
pub const DEFAULT_FRAME_TIMEOUT_S: u64 = 30;
/// Default for `mllp.default_charset`.
pub const DEFAULT_CHARSET: &str = "UNICODE UTF-8";
/// The values `mllp.default_charset` may take (ASCII case ignored): the HL7
/// v2 names of MSH-18 (table 0211) the appliance decodes, the Windows code
/// pages 1250 and 1252, then the other spellings senders put in MSH-18
/// (`UTF-8`, `CP1250`, `CP1252`). The same names as MSH-18 itself.
pub const CHARSETS: &[&str] = &[
    "ASCII",
    "8859/1",
    "8859/2",
    "8859/3",
    "8859/4",
    "8859/5",
    "8859/6",
    "8859/7",
    "8859/8",
    "8859/9",
    "8859/15",
    DEFAULT_CHARSET,
    "WINDOWS-1250",
    "WINDOWS-1252",
    "UTF-8",
    "CP1250",
    "CP1252",
];

/// Default for `uplink.batch_events`.
pub const DEFAULT_UPLINK_BATCH_EVENTS: usize = 1_000;
/// Default for `uplink.timeout_s`.
pub const DEFAULT_UPLINK_TIMEOUT_S: u64 = 10;
/// Default for `uplink.failback_s`.
pub const DEFAULT_UPLINK_FAILBACK_S: u64 = 300;
/// Default for `uplink.poll_ms`.
pub const DEFAULT_UPLINK_POLL_MS: u64 = 1_000;
/// Default for `uplink.outbox_budget_mb`.
pub const DEFAULT_OUTBOX_BUDGET_MB: u64 = 4_096;
/// Default for `uplink.outbox_alarm_percent`.
pub const DEFAULT_OUTBOX_ALARM_PERCENT: u64 = 80;
/// Default for `backup.interval_h`.
pub const DEFAULT_BACKUP_INTERVAL_H: u64 = 24;
/// Default for `backup.keep`.
pub const DEFAULT_BACKUP_KEEP: usize = 7;
/// Default for `fleet.keepalive_s`.
pub const DEFAULT_FLEET_KEEPALIVE_S: u64 = 30;
/// Default for `fleet.telemetry_s`.
pub const DEFAULT_FLEET_TELEMETRY_S: u64 = 60;

/// Default for `bundles.probation_s`.
pub const DEFAULT_BUNDLE_PROBATION_S: u64 = 60;

/// Default for `inference.models`, relative to the configuration file.
pub const DEFAULT_MODELS_DIR: &str = "models";
/// Default for `inference.timeout_ms`.
pub const DEFAULT_INFERENCE_TIMEOUT_MS: u64 = 250;
/// Default for `inference.cuda_min_rows`.
pub const DEFAULT_CUDA_MIN_ROWS: u64 = 4_096;
/// Default for `coding.max_text_chars`.
pub const DEFAULT_CODING_MAX_TEXT_CHARS: u64 = 4_000;
/// Default for `coding.history_days`.
pub const DEFAULT_CODING_HISTORY_DAYS: u64 = 365;
/// Default for `inference.refresh_s`.
pub const DEFAULT_FORECAST_REFRESH_S: u64 = 300;

/// A validated appliance configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Who this appliance is.
    pub node: NodeSection,
    /// Where it listens.
    pub listen: Listen,
    /// Durable storage settings.
    pub store: StoreSection,
    /// HTTP server settings.
    pub http: HttpSection,
    /// MLLP (HL7 v2 feed) settings.
    pub mllp: MllpSection,
    /// HL7 semantics: what the appliance manages.
    pub hl7: Hl7Section,
    /// Shipping the event log to the regional cloud; none: the appliance runs alone.
    pub uplink: Option<UplinkSection>,
    /// Scheduled local snapshots; none: only on demand (`hms-edge backup`).
    pub backup: Option<BackupSection>,
    /// The fleet channel (telemetry out, signed commands in, over MQTT);
    /// none: no fleet channel.
    pub fleet: Option<FleetSection>,
    /// Signed bundles (`[bundles]`); none: the appliance takes no bundles.
    pub bundles: Option<BundlesSection>,
    /// Local models (bed demand, OR duration) and their runtime.
    pub inference: InferenceSection,
    /// Coding suggestions (`POST /api/v1/coding/suggest`).
    pub coding: CodingSection,
    /// Facilities (sites), in file order.
    pub facilities: Vec<Facility>,
    /// Buildings, in file order.
    pub buildings: Vec<Building>,
    /// Floors or wings, in file order.
    pub floors: Vec<Floor>,
    /// Nursing units, in file order.
    pub units: Vec<Unit>,
    /// Rooms, in file order.
    pub rooms: Vec<Room>,
    /// Beds, in file order.
    pub beds: Vec<Bed>,
    /// Operating rooms, in file order; empty when there is none.
    pub or_rooms: Vec<OrRoom>,
    /// The file the configuration was loaded from.
    pub source: PathBuf,
}

impl Config {
    /// The unit with id `id`.
    pub fn unit(&self, id: &UnitId) -> Option<&Unit> {
        self.units.iter().find(|u| &u.id == id)
    }

    /// The bed with id `id`.
    pub fn bed(&self, id: &BedId) -> Option<&Bed> {
        self.beds.iter().find(|b| &b.id == id)
    }

    /// The room with id `id`.
    pub fn room(&self, id: &RoomId) -> Option<&Room> {
        self.rooms.iter().find(|r| &r.id == id)
    }

    /// The operating room with id `id`.
    pub fn or_room(&self, id: &OrRoomId) -> Option<&OrRoom> {
        self.or_rooms.iter().find(|r| &r.id == id)
    }

    /// The beds of unit `id`, in file order.
    pub fn beds_of<'a>(&'a self, id: &'a UnitId) -> impl Iterator<Item = &'a Bed> + 'a {
        self.beds.iter().filter(move |b| &b.unit == id)
    }
}

/// `[node]`: the identity of this appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    /// The hospital, unique within its region.
    pub hospital_id: HospitalId,
    /// The region whose cloud holds this hospital's data.
    pub region: RegionId,
    /// This appliance.
    pub node_id: NodeId,
    /// Display name; defaults to the hospital id.
    pub name: String,
    /// The hospital's time zone (`timezone`, an IANA name such as
    /// `Europe/Warsaw`): HL7 times without an offset are local times in it,
    /// ACKs carry its offset, forecasts use its hours and weekdays. UTC when
    /// the key is absent (with a warning).
    pub timezone: jiff::tz::TimeZone,
}

/// `[listen]`: addresses the appliance binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// HTTP API and kiosks.
    pub http: SocketAddr,
    /// HL7 v2 over MLLP; none means no MLLP listener.
    pub mllp: Option<SocketAddr>,
}

/// `[store]`: durable storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSection {
    /// Data directory, already resolved against the config file's directory.
    pub data_dir: PathBuf,
    /// Seconds between WAL checkpoints (at least 1).
    pub checkpoint_interval_s: u64,
    /// SQLite `journal_size_limit`, in MiB.
    pub journal_size_limit_mb: u64,
    /// Capacity of the writer's bounded command channel (at least 1).
    pub writer_queue: usize,
    /// Most commands committed in one group commit (at least 1).
    pub max_batch: usize,
}

impl StoreSection {
    /// A store section with defaults and the given (already resolved) directory.
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            checkpoint_interval_s: DEFAULT_CHECKPOINT_INTERVAL_S,
            journal_size_limit_mb: DEFAULT_JOURNAL_SIZE_LIMIT_MB,
            writer_queue: DEFAULT_WRITER_QUEUE,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// `[http]`: HTTP server limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSection {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_grace_s: u64,
    /// Events shown in a bed's recent history.
    pub history_limit: usize,
    /// HTTPS on `listen.http`; none means plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
            history_limit: DEFAULT_HISTORY_LIMIT,
            tls: None,
        }
    }
}

/// `[mllp]`: limits and defaults of the HL7 v2 feed over MLLP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MllpSection {
    /// Largest MLLP frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Whether a frame may end with FS alone, without the trailing CR.
    pub tolerate_missing_cr: bool,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Seconds without traffic after which a connection is closed.
    pub idle_timeout_s: u64,
    /// Seconds a frame may stay incomplete before its connection is closed.
    pub frame_timeout_s: u64,
    /// Character set assumed when MSH-18 is empty: one of [`CHARSETS`], as
    /// spelled there.
    pub default_charset: String,
    /// TLS on the MLLP listener; none means plain TCP.
    pub tls: Option<MllpTls>,
    /// PEM file of the CA whose client certificates the TLS listener
    /// requires (mutual TLS); none: no client certificate asked for.
    pub client_ca: Option<PathBuf>,
    /// Addresses that may connect; none: every address.
    pub allow: Option<Vec<Cidr>>,
    /// Most connections at once from one address.
    pub max_connections_per_peer: usize,
    /// Seconds a new connection has to complete its first frame.
    pub first_frame_timeout_s: u64,
}

/// An address block, `10.1.2.0/24`, `fd00::/8`, or one address (`127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address is
    /// taken as its IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `ADDRESS[/PREFIX]`; host bits set under the prefix are an error (a
    /// likely typo for another block).
    fn from_str(s: &str) -> Result<Self, String> {
        use std::net::IpAddr;
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => bits,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= bits)
                .ok_or_else(|| format!("the prefix length must be 0 to {bits}"))?,
        };
        let cidr = Cidr { addr, prefix };
        let cleared = match addr {
            IpAddr::V4(v) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v) & mask).into())
            }
            IpAddr::V6(v) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v) & mask).into())
            }
        };
        if cleared != addr {
            return Err(format!(
                "{s} has host bits set; the block is {cleared}/{prefix}"
            ));
        }
        Ok(cidr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Default for MllpSection {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            tolerate_missing_cr: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            frame_timeout_s: DEFAULT_FRAME_TIMEOUT_S,
            default_charset: DEFAULT_CHARSET.to_owned(),
            tls: None,
            client_ca: None,
            allow: None,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            first_frame_timeout_s: DEFAULT_FIRST_FRAME_TIMEOUT_S,
        }
    }
}

/// `[hl7]`: which places of the feed the appliance manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hl7Section {
    /// Points of care (PL-1) managed in any facility, beyond those of the
    /// configured beds. A message for a location in a managed point of care
    /// whose room/bed is not configured is parked; a location outside every
    /// managed point of care is recorded off the board and answered AA.
    pub managed_points_of_care: Vec<String>,
}

/// `[uplink]`: the appliance's link to its regional cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSection {
    /// The cloud's sync service, `https://HOST:PORT` (or `http://` on
    /// loopback): one address or several (instances of the region, then its
    /// DR peer), in order of preference; the uplink fails over down the list
    /// and comes back to the first. Never empty.
    pub cloud: Vec<String>,
    /// PEM file of the CA that signed the cloud's certificate (required for https).
    pub ca: Option<PathBuf>,
    /// The appliance's sync private key (PKCS#8); none: `sync-key.pk8` in the data dir.
    pub key_file: Option<PathBuf>,
    /// Most events in one batch (at most 1,000).
    pub batch_events: usize,
    /// Seconds one request may take.
    pub timeout_s: u64,
    /// How often the uplink looks for new events when no commit woke it.
    pub poll_ms: u64,
    /// Seconds on another address before the uplink tries the first again.
    pub failback_s: u64,
    /// Disk budget for events the cloud has not acknowledged, in MiB.
    pub outbox_budget_mb: u64,
    /// Share of the budget, in percent, at which the outbox alarm fires.
    pub outbox_alarm_percent: u64,
    /// How long each stream's events stay on the appliance after the cloud acknowledged them.
    pub retention: Retention,
}

/// Hours each stream's events are kept after acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `adt`.
    pub adt_h: u64,
    /// `bed`.
    pub bed_h: u64,
    /// `or`.
    pub or_h: u64,
    /// `billing`.
    pub billing_h: u64,
    /// `audit`.
    pub audit_h: u64,
    /// `integration`.
    pub integration_h: u64,
    /// `empi`.
    pub empi_h: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            adt_h: 7 * 24,
            bed_h: 24,
            or_h: 7 * 24,
            billing_h: 30 * 24,
            audit_h: 365 * 24,
            integration_h: 48,
            empi_h: 7 * 24,
        }
    }
}

/// `[inference]`: the local ONNX models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferenceSection {
    /// Directory holding `manifest.toml` and the models (resolved against
    /// the config file's directory; a set installed with `hms-edge models
    /// install` takes precedence).
    pub models: PathBuf,
    /// The ONNX Runtime shared library; none: `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Use the CUDA execution provider when the library and a GPU offer it.
    pub cuda: bool,
    /// Let the CUDA execution provider use TensorFloat-32 for matrix
    /// products and convolutions (faster on Ampere and later, about three
    /// decimal digits less precise); off: full float32.
    pub cuda_tf32: bool,
    /// With CUDA, calls of at least this many rows run on the GPU and
    /// smaller ones on the CPU (one row costs less there than a trip to
    /// the GPU); measured by `cargo xtask gpu-check`.
    pub cuda_min_rows: u64,
    /// Longest a model call may take before the fallback answers.
    pub timeout_ms: u64,
    /// Seconds between forecast refreshes (a significant census change refreshes sooner).
    pub refresh_s: u64,
}

/// `[coding]`: coding suggestions from the appliance's own charge history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodingSection {
    /// A request whose `text` is longer than this (characters) gets the
    /// fallback (the unit's most frequent codes).
    pub max_text_chars: u64,
    /// Days of posted charges the suggestions learn from.
    pub history_days: u64,
}

impl Default for CodingSection {
    fn default() -> Self {
        Self {
            max_text_chars: DEFAULT_CODING_MAX_TEXT_CHARS,
            history_days: DEFAULT_CODING_HISTORY_DAYS,
        }
    }
}

impl Default for InferenceSection {
    fn default() -> Self {
        Self {
            models: PathBuf::from(DEFAULT_MODELS_DIR),
            library: None,
            cuda: false,
            cuda_tf32: false,
            cuda_min_rows: DEFAULT_CUDA_MIN_ROWS,
            timeout_ms: DEFAULT_INFERENCE_TIMEOUT_MS,
            refresh_s: DEFAULT_FORECAST_REFRESH_S,
        }
    }
}

/// `[backup]`: snapshots taken on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSection {
    /// Directory the snapshots go to (resolved against the config file's directory).
    pub dir: PathBuf,
    /// Hours between snapshots.
    pub interval_h: u64,
    /// Snapshots kept; older ones are removed after a new one verified.
    pub keep: usize,
}

/// `[fleet]`: the appliance's channel to the regional fleet console, an MQTT
/// broker (topics in `docs/fleet.md`).
///
/// Every path is already resolved against the config file's directory and
/// named an existing file when the configuration was checked. The TLS files
/// are given exactly when the broker is `mqtts://`: `ca` always,
/// `client_cert` and `client_key` both or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSection {
    /// The broker (`mqtts://HOST:PORT`, or `mqtt://` on loopback).
    pub broker: FleetBroker,
    /// PEM file of the CA that signed the broker's certificate; some exactly
    /// when the broker is `mqtts://`.
    pub ca: Option<PathBuf>,
    /// PEM file of the appliance's client certificate (mutual TLS); some
    /// exactly when `client_key` is.
    pub client_cert: Option<PathBuf>,
    /// PEM file of the private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// MQTT keep-alive interval, in seconds.
    pub keepalive_s: u64,
    /// Seconds between telemetry reports.
    pub telemetry_s: u64,
    /// The cloud's fleet public key file, which signs the commands the
    /// appliance accepts (checked to exist, not read, by the loader).
    pub command_key: PathBuf,
}

/// `[bundles]`: which signed configuration and model-set bundles the
/// appliance applies (docs/bundles.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlesSection {
    /// The public keys (raw 32-byte files, `hms-config keygen`'s `KEY.pub`)
    /// whose signatures the appliance trusts; at least one. Checked to
    /// exist and hold 32 bytes, not read, by the loader.
    pub trusted_keys: Vec<PathBuf>,
    /// Seconds a newly applied bundle must stay healthy before it is in
    /// force; a failed check rolls it back.
    pub probation_s: u64,
    /// Whether `hms-edge models install DIR` may install an unsigned model
    /// set.
    pub allow_unsigned_models: bool,
}

/// `fleet.broker`: where the fleet's MQTT broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetBroker {
    /// `mqtts://` (TLS) rather than `mqtt://` (plain TCP, loopback only).
    pub tls: bool,
    /// A host name or an IP address, as written in the URL but without the
    /// brackets of an IPv6 address (`::1`, not `[::1]`).
    pub host: String,
    /// The port; 8883 (`mqtts://`) or 1883 (`mqtt://`) when the URL names none.
    pub port: u16,
}

impl std::fmt::Display for FleetBroker {
    /// `mqtts://host:port` or `mqtt://host:port`, an IPv6 address in brackets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `mllp.tls_cert` and `mllp.tls_key`: the listener's certificate and key.
///
/// Both paths are already resolved against the config file's directory, and
/// both named an existing file when the configuration was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, the listener's own certificate
    /// first.
    pub cert: PathBuf,
    /// PEM file with the private key of that certificate.
    pub key: PathBuf,
}

/// The TLS files of the MLLP listener (the name it had first).
pub type MllpTls = TlsFiles;

/// `[[facility]]`: a site, as HL7 names it in PL-4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facility {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// `[[building]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Building {
    /// Id.
    pub id: String,
    /// The facility it belongs to.
    pub facility: String,
    /// Display name.
    pub name: String,
}

/// `[[floor]]`: a floor or wing of a building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    /// Id.
    pub id: String,
    /// The building it belongs to.
    pub building: String,
    /// Display name.
    pub name: String,
}

/// `[[unit]]`: a nursing unit (ward).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Id.
    pub id: UnitId,
    /// The floor it is on.
    pub floor: String,
    /// Display name.
    pub name: String,
    /// Default level of care of its beds.
    pub level_of_care: LevelOfCare,
}

/// `[[room]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Id.
    pub id: RoomId,
    /// The unit it belongs to.
    pub unit: UnitId,
    /// Display name; defaults to the id.
    pub name: String,
}

/// `[[bed]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bed {
    /// Id.
    pub id: BedId,
    /// The unit, resolved from the room when only the room is given.
    pub unit: UnitId,
    /// Static attributes; `level_of_care` is resolved (the unit's by default)
    /// and `room` is the bed's room, if any.
    pub attributes: BedAttributes,
    /// Where the ADT feed puts this bed.
    pub hl7: Hl7Location,
}

/// `[[or_room]]`: an operating room, where the scheduling system's SIU
/// messages (AIL-3) book cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrRoom {
    /// Id (its own namespace: it may equal a bed's).
    pub id: OrRoomId,
    /// Display name; defaults to the id.
    pub name: String,
    /// The OR suite it belongs to, an id-like token (`MAIN-OR`).
    pub suite: String,
    /// Where SIU messages put this room; `bed` may be empty, but not both
    /// `room` and `bed`.
    pub hl7: Hl7Location,
}

/// An HL7 v2 patient location (PL): facility (PL-4), point of care (PL-1),
/// room (PL-2) and bed (PL-3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hl7Location {
    /// PL-4.
    pub facility: String,
    /// PL-1.
    pub point_of_care: String,
    /// PL-2; may be empty.
    pub room: String,
    /// PL-3; may be empty for an operating room (not for a bed).
    pub bed: String,
}

impl std::fmt::Display for Hl7Location {
    /// `facility^point_of_care^room^bed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}^{}^{}^{}",
            self.facility, self.point_of_care, self.room, self.bed
        )
    }
}
