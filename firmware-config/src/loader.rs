//! Reading a configuration text into a [`Config`], with every problem located.
//!
//! The text is parsed once into TOML's span-preserving tree
//! ([`toml::de::DeTable`]) and walked by hand rather than through `serde`: a
//! derive stops at the first wrong field, while an operator fixing a file wants
//! every problem at once, each with its line and column. The walk checks, in
//! this order of concern:
//!
//! 1. TOML syntax (nothing else is checked when the syntax is broken);
//! 2. shapes, types, required keys, ids, socket addresses, service URLs
//!    (`uplink.cloud`, `fleet.broker`), enum values, number ranges and files
//!    that must exist, plus unknown keys (an error when strict, a warning when
//!    tolerant, so that a newer file still loads on an older appliance);
//! 3. duplicate ids per kind, dangling references, the bed's room and unit,
//!    the HL7 location of every bed (present, complete and unique) and of
//!    every operating room (present, complete, unique among operating rooms
//!    and no bed's).
//!
//! [`check`] takes the text and the file name; its only IO is asking whether
//! the files the configuration names exist (the TLS files and CAs of `[http]`,
//! `[mllp]`, `[uplink]` and `[fleet]`, and `fleet.command_key`); it reads none
//! of them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hms_domain::ids::validate_id;
use hms_domain::{
    BedAttributes, BedId, GenderRestriction, HospitalId, IdError, LevelOfCare, NodeId, OrRoomId,
    RegionId, RoomId, UnitId,
};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Sink};
use crate::schema::{
    BackupSection, Bed, Building, BundlesSection, CHARSETS, Cidr, CodingSection, Config,
    DEFAULT_BACKUP_INTERVAL_H, DEFAULT_BACKUP_KEEP, DEFAULT_BUNDLE_PROBATION_S, DEFAULT_CHARSET,
    DEFAULT_CHECKPOINT_INTERVAL_S, DEFAULT_CODING_HISTORY_DAYS, DEFAULT_CODING_MAX_TEXT_CHARS,
    DEFAULT_CUDA_MIN_ROWS, DEFAULT_FIRST_FRAME_TIMEOUT_S, DEFAULT_FLEET_KEEPALIVE_S,
    DEFAULT_FLEET_TELEMETRY_S, DEFAULT_FORECAST_REFRESH_S, DEFAULT_FRAME_TIMEOUT_S,
    DEFAULT_HISTORY_LIMIT, DEFAULT_IDLE_TIMEOUT_S, DEFAULT_INFERENCE_TIMEOUT_MS,
    DEFAULT_JOURNAL_SIZE_LIMIT_MB, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MODELS_DIR, DEFAULT_OUTBOX_ALARM_PERCENT, DEFAULT_OUTBOX_BUDGET_MB,
    DEFAULT_SHUTDOWN_GRACE_S, DEFAULT_UPLINK_BATCH_EVENTS, DEFAULT_UPLINK_FAILBACK_S,
    DEFAULT_UPLINK_POLL_MS, DEFAULT_UPLINK_TIMEOUT_S, DEFAULT_WRITER_QUEUE, Facility, FleetBroker,
    FleetSection, Floor, Hl7Location, Hl7Section, HttpSection, InferenceSection, Listen,
    MAX_SYNCABLE_FRAME_BYTES, MllpSection, MllpTls, NodeSection, OrRoom, Retention, Room,
    StoreSection, TlsFiles, Unit, UplinkSection,
};

type Span = Range<usize>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Keys allowed at the top level.
const TOP_KEYS: &[&str] = &[
    "node",
    "listen",
    "store",
    "http",
    "mllp",
    "hl7",
    "uplink",
    "backup",
    "fleet",
    "bundles",
    "inference",
    "coding",
    "facility",
    "building",
    "floor",
    "unit",
    "room",
    "bed",
    "or_room",
];
const CODING_KEYS: &[&str] = &["max_text_chars", "history_days"];
const INFERENCE_KEYS: &[&str] = &[
    "models",
    "library",
    "cuda",
    "cuda_tf32",
    "cuda_min_rows",
    "timeout_ms",
    "refresh_s",
];
const NODE_KEYS: &[&str] = &["hospital_id", "region", "node_id", "name", "timezone"];
const LISTEN_KEYS: &[&str] = &["http", "mllp"];
const STORE_KEYS: &[&str] = &[
    "data_dir",
    "checkpoint_interval_s",
    "journal_size_limit_mb",
    "writer_queue",
    "max_batch",
];
const HTTP_KEYS: &[&str] = &[
    "max_body_bytes",
    "shutdown_grace_s",
    "history_limit",
    "tls_cert",
    "tls_key",
];
const MLLP_KEYS: &[&str] = &[
    "max_frame_bytes",
    "tolerate_missing_cr",
    "max_connections",
    "idle_timeout_s",
    "frame_timeout_s",
    "default_charset",
    "tls_cert",
    "tls_key",
    "client_ca",
    "allow",
    "max_connections_per_peer",
    "first_frame_timeout_s",
];
const HL7_SECTION_KEYS: &[&str] = &["managed_points_of_care"];
const UPLINK_KEYS: &[&str] = &[
    "cloud",
    "failback_s",
    "ca",
    "key_file",
    "batch_events",
    "timeout_s",
    "poll_ms",
    "outbox_budget_mb",
    "outbox_alarm_percent",
    "retention_adt_h",
    "retention_bed_h",
    "retention_or_h",
    "retention_billing_h",
    "retention_audit_h",
    "retention_integration_h",
    "retention_empi_h",
];
const BACKUP_KEYS: &[&str] = &["dir", "interval_h", "keep"];
const FLEET_KEYS: &[&str] = &[
    "broker",
    "ca",
    "client_cert",
    "client_key",
    "keepalive_s",
    "telemetry_s",
    "command_key",
];
const BUNDLES_KEYS: &[&str] = &["trusted_keys", "probation_s", "allow_unsigned_models"];
const FACILITY_KEYS: &[&str] = &["id", "name"];
const BUILDING_KEYS: &[&str] = &["id", "facility", "name"];
const FLOOR_KEYS: &[&str] = &["id", "building", "name"];
const UNIT_KEYS: &[&str] = &["id", "floor", "name", "level_of_care"];
const ROOM_KEYS: &[&str] = &["id", "unit", "name"];
const BED_KEYS: &[&str] = &[
    "id",
    "room",
    "unit",
    "gender",
    "isolation_capable",
    "telemetry",
    "bariatric",
    "level_of_care",
    "tags",
    "hl7",
];
const OR_ROOM_KEYS: &[&str] = &["id", "name", "suite", "hl7"];
const HL7_KEYS: &[&str] = &["facility", "point_of_care", "room", "bed"];
const GENDERS: &[&str] = &["any", "female", "male"];

/// Characters that may not appear in an HL7 location component: the v2
/// delimiters (field, component, repetition, escape, sub-component, truncation).
const HL7_DELIMITERS: &[char] = &['|', '^', '~', '\\', '&', '#'];

/// Longest value quoted verbatim in a message.
const MAX_SHOWN: usize = 60;

/// Checks `text` (the contents of `file`) and builds the configuration when
/// there is no error. `strict` turns unknown keys from warnings into errors.
///
/// Diagnostics come back in source order, warnings included.
pub(crate) fn check(text: &str, file: &Path, strict: bool) -> (Option<Config>, Vec<Diagnostic>) {
    let mut sink = Sink::new(file.display().to_string(), text, strict);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for err in &syntax {
            let span = err.span().unwrap_or(0..0);
            sink.error(&span, syntax_message(err.message()));
        }
        return (None, sink.finish());
    }
    let root = Scope {
        table: root.get_ref(),
        span: 0..0,
        label: "the top level".to_owned(),
        path: String::new(),
    };
    let config = Walk::new(&mut sink, file).run(&root);
    let config = if sink.has_errors() { None } else { config };
    (config, sink.finish())
}

/// The parser's message on one line.
fn syntax_message(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    format!("TOML syntax: {joined}")
}

/// A user-supplied string, quoted, escaped and cut short for a message.
fn shown(s: &str) -> String {
    if s.chars().count() <= MAX_SHOWN {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX_SHOWN).collect();
        format!("{cut:?}…")
    }
}

/// A user-supplied key, in backquotes, escaped and cut short.
fn key_shown(s: &str) -> String {
    let escaped: String = s
        .chars()
        .take(MAX_SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if s.chars().count() > MAX_SHOWN {
        format!("`{escaped}…`")
    } else {
        format!("`{escaped}`")
    }
}

/// A value with the span it came from.
#[derive(Debug, Clone)]
struct At<T> {
    value: T,
    span: Span,
}

/// Whether a missing key is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// A table being read, with what to call it in messages.
#[derive(Debug)]
struct Scope<'t, 'i> {
    table: &'t DeTable<'i>,
    /// Where the table starts (its header), for missing keys.
    span: Span,
    /// How messages name the table: `[node]`, `[[bed]]`, `bed.hl7`.
    label: String,
    /// Prefix of its keys in messages: `node`, `bed`, `bed.hl7`.
    path: String,
}

impl<'t, 'i> Scope<'t, 'i> {
    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            format!("`{key}`")
        } else {
            format!("`{}.{key}`", self.path)
        }
    }

    /// Reports every key not in `known`.
    fn unknown_keys(&self, sink: &mut Sink<'_>, known: &[&str]) {
        for key in self.table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                sink.unknown(
                    &key.span(),
                    format!(
                        "unknown key {} in {}; expected one of: {}",
                        key_shown(key.get_ref()),
                        self.label,
                        known.join(", ")
                    ),
                );
            }
        }
    }

    fn raw(&self, sink: &mut Sink<'_>, key: &str, need: Need) -> Option<&'t Value<'i>> {
        let value = self.table.get(key);
        if value.is_none() && need == Need::Required {
            sink.error(
                &self.span,
                format!("missing required key `{key}` in {}", self.label),
            );
        }
        value
    }

    fn wrong_type(&self, sink: &mut Sink<'_>, key: &str, value: &Value<'_>, expected: &str) {
        sink.error(
            &value.span(),
            format!(
                "{} must be {expected}, found {}",
                self.key_path(key),
                value.get_ref().type_str()
            ),
        );
    }

    fn string(&self, sink: &mut Sink<'_>, key: &str, need: Need) -> Option<At<String>> {
        let value = self.raw(sink, key, need)?;
        match value.get_ref() {
            DeValue::String(s) => Some(At {
                value: s.to_string(),
                span: value.span(),
            }),
            _ => {
                self.wrong_type(sink, key, value, "a string");
                None
            }
        }
    }

    /// A string that must not be empty.
    fn text(&self, sink: &mut Sink<'_>, key: &str, need: Need) -> Option<At<String>> {
        let s = self.string(sink, key, need)?;
        if s.value.trim().is_empty() {
            sink.error(&s.span, format!("{} must not be empty", self.key_path(key)));
            return None;
        }
        Some(s)
    }

    fn bool(&self, sink: &mut Sink<'_>, key: &str) -> Option<bool> {
        let value = self.raw(sink, key, Need::Optional)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(sink, key, value, "true or false");
                None
            }
        }
    }

    /// An optional integer in `min..=max`; `Err(())` when present but wrong.
    fn int(&self, sink: &mut Sink<'_>, key: &str, min: u64, max: u64) -> Result<Option<u64>, ()> {
        let Some(value) = self.raw(sink, key, Need::Optional) else {
            return Ok(None);
        };
        let DeValue::Integer(int) = value.get_ref() else {
            self.wrong_type(sink, key, value, "an integer");
            return Err(());
        };
        let parsed = i128::from_str_radix(int.as_str(), int.radix()).ok();
        match parsed.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => {
                sink.error(
                    &value.span(),
                    format!(
                        "{} must be between {min} and {max}, found {int}",
                        self.key_path(key)
                    ),
                );
                Err(())
            }
        }
    }

    fn socket(&self, sink: &mut Sink<'_>, key: &str, need: Need) -> Option<SocketAddr> {
        let s = self.string(sink, key, need)?;
        match s.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                sink.error(
                    &s.span,
                    format!(
                        "{} is not a socket address: {}; expected IP:PORT, e.g. \"127.0.0.1:8080\"",
                        self.key_path(key),
                        shown(&s.value)
                    ),
                );
                None
            }
        }
    }

    fn level_of_care(&self, sink: &mut Sink<'_>, key: &str, need: Need) -> Option<LevelOfCare> {
        let s = self.string(sink, key, need)?;
        match LevelOfCare::ALL.iter().find(|l| l.as_str() == s.value) {
            Some(level) => Some(*level),
            None => {
                let allowed: Vec<&str> = LevelOfCare::ALL.iter().map(|l| l.as_str()).collect();
                sink.error(
                    &s.span,
                    format!(
                        "{} has an unknown value {}; expected one of: {}",
                        self.key_path(key),
                        shown(&s.value),
                        allowed.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// An optional string that must be one of `allowed`.
    fn one_of(&self, sink: &mut Sink<'_>, key: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(sink, key, Need::Optional)?;
        if allowed.contains(&s.value.as_str()) {
            return Some(s.value);
        }
        sink.error(
            &s.span,
            format!(
                "{} has an unknown value {}; expected one of: {}",
                self.key_path(key),
                shown(&s.value),
                allowed.join(", ")
            ),
        );
        None
    }

    /// Like [`Self::one_of`], ASCII case ignored; the value as `allowed` spells it.
    fn one_of_any_case(&self, sink: &mut Sink<'_>, key: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(sink, key, Need::Optional)?;
        if let Some(a) = allowed.iter().find(|a| a.eq_ignore_ascii_case(&s.value)) {
            return Some((*a).to_owned());
        }
        sink.error(
            &s.span,
            format!(
                "{} has an unknown value {}; expected one of (case ignored): {}",
                self.key_path(key),
                shown(&s.value),
                allowed.join(", ")
            ),
        );
        None
    }

    fn gender(&self, sink: &mut Sink<'_>, key: &str) -> Option<GenderRestriction> {
        match self.one_of(sink, key, GENDERS)?.as_str() {
            "female" => Some(GenderRestriction::Female),
            "male" => Some(GenderRestriction::Male),
            _ => Some(GenderRestriction::Any),
        }
    }

    /// An optional array of non-empty strings; `Err(())` when present but wrong.
    fn strings(&self, sink: &mut Sink<'_>, key: &str) -> Result<Vec<String>, ()> {
        let Some(value) = self.raw(sink, key, Need::Optional) else {
            return Ok(Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(sink, key, value, "an array of strings");
            return Err(());
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) if !s.trim().is_empty() => out.push(s.to_string()),
                DeValue::String(_) => {
                    sink.error(
                        &item.span(),
                        format!("{} must not hold an empty string", self.key_path(key)),
                    );
                    ok = false;
                }
                other => {
                    sink.error(
                        &item.span(),
                        format!(
                            "{} must hold only strings, found {}",
                            self.key_path(key),
                            other.type_str()
                        ),
                    );
                    ok = false;
                }
            }
        }
        if ok { Ok(out) } else { Err(()) }
    }

    /// A sub-table, as a scope of its own.
    fn table(&self, sink: &mut Sink<'_>, key: &str) -> Option<Scope<'t, 'i>> {
        let value = self.table.get(key)?;
        match value.get_ref() {
            DeValue::Table(table) => Some(Scope {
                table,
                span: value.span(),
                label: self.key_path(key),
                path: if self.path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{}.{key}", self.path)
                },
            }),
            _ => {
                self.wrong_type(sink, key, value, "a table");
                None
            }
        }
    }
}

/// Validates `raw` as an id of `kind` (`unit`, `bed`…) with `parse`.
fn parse_id<T>(
    sink: &mut Sink<'_>,
    raw: &At<String>,
    kind: &str,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Option<T> {
    match parse(raw.value.clone()) {
        Ok(id) => Some(id),
        Err(err) => {
            sink.error(
                &raw.span,
                format!("invalid {kind} id {}: {err}", shown(&raw.value)),
            );
            None
        }
    }
}

/// `node.timezone`: a time zone of the bundled IANA database (`UTC` included).
fn time_zone(sink: &mut Sink<'_>, raw: &At<String>) -> Option<jiff::tz::TimeZone> {
    if let Ok(tz) = jiff::tz::TimeZone::get(&raw.value) {
        return Some(tz);
    }
    // A typo ("Europe/Warsw"), or a city alone ("Warsaw", "new york").
    let wanted = raw.value.trim().replace(' ', "_").to_ascii_lowercase();
    let near = jiff::tz::db()
        .available()
        .filter_map(|name| {
            let lower = name.as_str().to_ascii_lowercase();
            let city = lower.rsplit('/').next().unwrap_or_default();
            let distance = if city == wanted {
                0
            } else {
                strsim::levenshtein(&lower, &wanted)
            };
            (distance <= 2).then_some((distance, name))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name);
    let hint = match near {
        Some(name) => format!("; did you mean {}?", shown(name.as_str())),
        None => String::new(),
    };
    sink.error(
        &raw.span,
        format!(
            "`node.timezone` is not a time zone: {}; expected an IANA time zone name, \
             e.g. \"Europe/Warsaw\", \"America/New_York\" or \"UTC\"{hint}",
            shown(&raw.value)
        ),
    );
    None
}

/// Ids seen for one kind: where each was first defined.
#[derive(Debug, Default)]
struct Registry {
    first: HashMap<String, usize>,
}

impl Registry {
    /// Records `id` of `kind`; reports it when already defined. Returns whether
    /// it was new.
    fn define(&mut self, sink: &mut Sink<'_>, kind: &str, id: &At<String>) -> bool {
        match self.first.entry(id.value.clone()) {
            Entry::Occupied(first) => {
                sink.error(
                    &id.span,
                    format!(
                        "duplicate {kind} id {} (first defined at line {})",
                        shown(&id.value),
                        first.get()
                    ),
                );
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(sink.line(id.span.start));
                true
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.first.contains_key(id)
    }
}

/// A valid `[[facility]]`, `[[building]]` or `[[floor]]`.
#[derive(Debug)]
struct Place {
    id: String,
    name: String,
    /// The facility of a building, the building of a floor; empty for a
    /// facility.
    parent: String,
}

/// A `[[unit]]` as read.
#[derive(Debug)]
struct UnitItem {
    /// The `id` as written, when it is a string.
    id: Option<At<String>>,
    floor: Option<At<String>>,
    level_of_care: Option<LevelOfCare>,
    /// The unit, when every field is valid.
    unit: Option<Unit>,
}

/// A `[[room]]` as read.
#[derive(Debug)]
struct RoomItem {
    id: Option<At<String>>,
    unit: Option<At<String>>,
    /// The room, when every field is valid (the unit id checked, not resolved).
    room: Option<Room>,
}

/// A `[[bed]]` as read.
#[derive(Debug)]
struct BedItem {
    id: Option<At<String>>,
    /// Where the table starts.
    span: Span,
    valid_id: Option<BedId>,
    room: Option<At<RoomId>>,
    unit: Option<At<UnitId>>,
    /// Whether `room` or `unit` was written at all (valid or not).
    has_place: bool,
    hl7: Option<At<Hl7Location>>,
    /// Whether `hl7` was written at all (valid or not).
    has_hl7: bool,
    /// The attributes; `None` when one of them is invalid.
    attributes: Option<BedAttrs>,
}

/// An `[[or_room]]` as read.
#[derive(Debug)]
struct OrRoomItem {
    id: Option<At<String>>,
    hl7: Option<At<Hl7Location>>,
    /// The operating room, when every field is valid.
    or_room: Option<OrRoom>,
}

/// A bed's attributes as written, before the unit's level of care is known.
#[derive(Debug)]
struct BedAttrs {
    gender: GenderRestriction,
    isolation_capable: bool,
    telemetry: bool,
    bariatric: bool,
    level_of_care: Option<LevelOfCare>,
    tags: Vec<String>,
}

/// One pass over the document.
struct Walk<'s, 'a> {
    sink: &'s mut Sink<'a>,
    file: &'s Path,
    /// Lists (`unit`…) that are not arrays of tables: references to their
    /// kind are not checked, to report the cause rather than its echoes.
    broken: Vec<String>,
}

impl<'s, 'a> Walk<'s, 'a> {
    fn new(sink: &'s mut Sink<'a>, file: &'s Path) -> Self {
        Self {
            sink,
            file,
            broken: Vec::new(),
        }
    }

    fn run(&mut self, root: &Scope<'_, '_>) -> Option<Config> {
        root.unknown_keys(self.sink, TOP_KEYS);
        let node = self.node(root);
        let listen = self.listen(root);
        let store = self.store(root);
        let http = self.http(root);
        let mllp = self.mllp(root);
        let hl7 = self.hl7(root);
        let uplink = self.uplink(root);
        let backup = self.backup(root);
        let fleet = self.fleet(root);
        let bundles = self.bundles(root);
        let inference = self.inference(root);
        let coding = self.coding(root);

        let (facilities, facility_ids) = self.places(root, "facility", FACILITY_KEYS, None);
        let (buildings, building_ids) = self.places(
            root,
            "building",
            BUILDING_KEYS,
            Some(("facility", &facility_ids)),
        );
        let (floors, floor_ids) =
            self.places(root, "floor", FLOOR_KEYS, Some(("building", &building_ids)));

        let units = self.units(root);
        let rooms = self.rooms(root);
        let beds = self.beds(root);
        let or_rooms = self.or_rooms(root);

        let unit_levels = self.register_units(&units, &floor_ids);
        let room_units = self.register_rooms(&rooms, &unit_levels);
        let mut bed_locations = HashMap::new();
        let beds = self.resolve_beds(beds, &unit_levels, &room_units, &mut bed_locations);
        self.empty_units(&units, beds.as_deref());
        let or_rooms = self.resolve_or_rooms(or_rooms, &bed_locations);

        let facilities = facilities
            .into_iter()
            .map(|p| Facility {
                id: p.id,
                name: p.name,
            })
            .collect();
        let buildings = buildings
            .into_iter()
            .map(|p| Building {
                id: p.id,
                facility: p.parent,
                name: p.name,
            })
            .collect();
        let floors = floors
            .into_iter()
            .map(|p| Floor {
                id: p.id,
                building: p.parent,
                name: p.name,
            })
            .collect();
        let units = units.into_iter().map(|u| u.unit).collect::<Option<_>>()?;
        let rooms = rooms.into_iter().map(|r| r.room).collect::<Option<_>>()?;

        Some(Config {
            node: node?,
            listen: listen?,
            store: store?,
            http: http?,
            mllp: mllp?,
            hl7: hl7?,
            uplink: uplink?,
            backup: backup?,
            fleet: fleet?,
            bundles: bundles?,
            inference: inference?,
            coding: coding?,
            facilities,
            buildings,
            floors,
            units,
            rooms,
            beds: beds?,
            or_rooms: or_rooms?,
            source: self.file.to_path_buf(),
        })
    }

    /// A top-level section that must be a table.
    fn section<'t, 'i>(
        &mut self,
        root: &Scope<'t, 'i>,
        key: &str,
        need: Need,
    ) -> Option<Scope<'t, 'i>> {
        let Some(value) = root.table.get(key) else {
            if need == Need::Required {
                self.sink
                    .error(&(0..0), format!("missing required section [{key}]"));
            }
            return None;
        };
        match value.get_ref() {
            DeValue::Table(table) => Some(Scope {
                table,
                span: value.span(),
                label: format!("[{key}]"),
                path: key.to_owned(),
            }),
            other => {
                self.sink.error(
                    &value.span(),
                    format!(
                        "`{key}` must be a table ([{key}]), found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// The tables of a top-level array of tables (`[[bed]]`…).
    /// Whether the list `kind` is malformed (see [`Walk::broken`]).
    fn is_broken(&self, kind: &str) -> bool {
        self.broken.iter().any(|b| b == kind)
    }

    fn list<'t, 'i>(&mut self, root: &Scope<'t, 'i>, key: &str) -> Vec<Scope<'t, 'i>> {
        let Some(value) = root.table.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.broken.push(key.to_owned());
            self.sink.error(
                &value.span(),
                format!(
                    "`{key}` must be an array of tables ([[{key}]]), found {}",
                    value.get_ref().type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(table) => out.push(Scope {
                    table,
                    span: item.span(),
                    label: format!("[[{key}]]"),
                    path: key.to_owned(),
                }),
                other => {
                    self.broken.push(key.to_owned());
                    self.sink.error(
                        &item.span(),
                        format!(
                            "each `{key}` entry must be a table ([[{key}]]), found {}",
                            other.type_str()
                        ),
                    );
                }
            }
        }
        out
    }

    fn node(&mut self, root: &Scope<'_, '_>) -> Option<NodeSection> {
        let s = self.section(root, "node", Need::Required)?;
        s.unknown_keys(self.sink, NODE_KEYS);
        let sink = &mut *self.sink;
        let hospital_id = s
            .string(sink, "hospital_id", Need::Required)
            .and_then(|raw| parse_id(sink, &raw, "hospital", HospitalId::new));
        let region = s
            .string(sink, "region", Need::Required)
            .and_then(|raw| parse_id(sink, &raw, "region", RegionId::new));
        let node_id = s
            .string(sink, "node_id", Need::Required)
            .and_then(|raw| parse_id(sink, &raw, "node", NodeId::new));
        let name = match s.table.get("name") {
            Some(_) => Some(s.text(sink, "name", Need::Optional)?.value),
            None => None,
        };
        let timezone = match s.string(sink, "timezone", Need::Optional) {
            Some(raw) => time_zone(sink, &raw),
            None if s.table.contains_key("timezone") => None,
            None => {
                // Files written before the key existed still load.
                sink.warning(
                    &s.span,
                    "missing key `timezone` in [node]; HL7 times without an offset are read \
                     as UTC. Set the hospital's IANA time zone, e.g. timezone = \"Europe/Warsaw\"",
                );
                Some(jiff::tz::TimeZone::UTC)
            }
        };
        let hospital_id = hospital_id?;
        Some(NodeSection {
            name: name.unwrap_or_else(|| hospital_id.to_string()),
            hospital_id,
            region: region?,
            node_id: node_id?,
            timezone: timezone?,
        })
    }

    fn listen(&mut self, root: &Scope<'_, '_>) -> Option<Listen> {
        let s = self.section(root, "listen", Need::Required)?;
        s.unknown_keys(self.sink, LISTEN_KEYS);
        let http = s.socket(self.sink, "http", Need::Required);
        let mllp = match s.table.get("mllp") {
            Some(_) => Some(s.socket(self.sink, "mllp", Need::Optional)?),
            None => None,
        };
        Some(Listen { http: http?, mllp })
    }

    fn store(&mut self, root: &Scope<'_, '_>) -> Option<StoreSection> {
        let s = self.section(root, "store", Need::Required)?;
        s.unknown_keys(self.sink, STORE_KEYS);
        let sink = &mut *self.sink;
        let data_dir = s.text(sink, "data_dir", Need::Required);
        let checkpoint = s.int(sink, "checkpoint_interval_s", 1, 86_400);
        let journal = s.int(sink, "journal_size_limit_mb", 0, 1 << 20);
        let queue = s.int(sink, "writer_queue", 1, 1_000_000);
        let batch = s.int(sink, "max_batch", 1, 100_000);
        Some(StoreSection {
            data_dir: self.dir().join(PathBuf::from(data_dir?.value)),
            checkpoint_interval_s: checkpoint.ok()?.unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_S),
            journal_size_limit_mb: journal.ok()?.unwrap_or(DEFAULT_JOURNAL_SIZE_LIMIT_MB),
            writer_queue: to_usize(queue.ok()?, DEFAULT_WRITER_QUEUE)?,
            max_batch: to_usize(batch.ok()?, DEFAULT_MAX_BATCH)?,
        })
    }

    fn http(&mut self, root: &Scope<'_, '_>) -> Option<HttpSection> {
        if !root.table.contains_key("http") {
            return Some(HttpSection::default());
        }
        let s = self.section(root, "http", Need::Optional)?;
        s.unknown_keys(self.sink, HTTP_KEYS);
        let sink = &mut *self.sink;
        let body = s.int(sink, "max_body_bytes", 1, 1 << 30);
        let grace = s.int(sink, "shutdown_grace_s", 0, 3_600);
        let history = s.int(sink, "history_limit", 0, 10_000);
        let tls = tls_files(
            sink,
            &s,
            self.file.parent().unwrap_or(Path::new("")),
            "HTTPS on the kiosk listener needs both, or neither for plain HTTP",
        );
        Some(HttpSection {
            max_body_bytes: to_usize(body.ok()?, DEFAULT_MAX_BODY_BYTES)?,
            shutdown_grace_s: grace.ok()?.unwrap_or(DEFAULT_SHUTDOWN_GRACE_S),
            history_limit: to_usize(history.ok()?, DEFAULT_HISTORY_LIMIT)?,
            tls: tls.ok()?,
        })
    }

    /// The directory relative paths in the file resolve against.
    fn dir(&self) -> &'s Path {
        self.file.parent().unwrap_or(Path::new(""))
    }

    fn mllp(&mut self, root: &Scope<'_, '_>) -> Option<MllpSection> {
        if !root.table.contains_key("mllp") {
            return Some(MllpSection::default());
        }
        let s = self.section(root, "mllp", Need::Optional)?;
        s.unknown_keys(self.sink, MLLP_KEYS);
        let dir = self.dir();
        let sink = &mut *self.sink;
        let has = |key: &str| s.table.contains_key(key);
        let frame = s.int(
            sink,
            "max_frame_bytes",
            1 << 10,
            MAX_SYNCABLE_FRAME_BYTES as u64,
        );
        let tolerate = s.bool(sink, "tolerate_missing_cr");
        let connections = s.int(sink, "max_connections", 1, 10_000);
        let idle = s.int(sink, "idle_timeout_s", 1, 86_400);
        let frame_timeout = s.int(sink, "frame_timeout_s", 1, 3_600);
        let charset = s.one_of_any_case(sink, "default_charset", CHARSETS);
        let tls = mllp_tls(sink, &s, dir);
        let per_peer = s.int(sink, "max_connections_per_peer", 1, 10_000);
        let first_frame = s.int(sink, "first_frame_timeout_s", 1, 3_600);
        let client_ca = existing_file(sink, &s, "client_ca", dir);
        if let Some((k, _)) = s.table.get_key_value("client_ca")
            && !has("tls_cert")
        {
            sink.error(
                &k.span(),
                format!(
                    "{} needs TLS on the listener: set {} and {} too",
                    s.key_path("client_ca"),
                    s.key_path("tls_cert"),
                    s.key_path("tls_key")
                ),
            );
            return None;
        }
        let allow = cidrs(sink, &s, "allow");
        if (tolerate.is_none() && has("tolerate_missing_cr"))
            || (charset.is_none() && has("default_charset"))
        {
            return None;
        }
        Some(MllpSection {
            max_frame_bytes: to_usize(frame.ok()?, DEFAULT_MAX_FRAME_BYTES)?,
            tolerate_missing_cr: tolerate.unwrap_or(false),
            max_connections: to_usize(connections.ok()?, DEFAULT_MAX_CONNECTIONS)?,
            idle_timeout_s: idle.ok()?.unwrap_or(DEFAULT_IDLE_TIMEOUT_S),
            frame_timeout_s: frame_timeout.ok()?.unwrap_or(DEFAULT_FRAME_TIMEOUT_S),
            default_charset: charset.unwrap_or_else(|| DEFAULT_CHARSET.to_owned()),
            tls: tls.ok()?,
            client_ca: client_ca.ok()?,
            allow: allow.ok()?,
            max_connections_per_peer: to_usize(per_peer.ok()?, DEFAULT_MAX_CONNECTIONS_PER_PEER)?,
            first_frame_timeout_s: first_frame.ok()?.unwrap_or(DEFAULT_FIRST_FRAME_TIMEOUT_S),
        })
    }

    /// `[hl7]`: the points of care managed beyond those of the beds.
    fn hl7(&mut self, root: &Scope<'_, '_>) -> Option<Hl7Section> {
        if !root.table.contains_key("hl7") {
            return Some(Hl7Section::default());
        }
        let s = self.section(root, "hl7", Need::Optional)?;
        s.unknown_keys(self.sink, HL7_SECTION_KEYS);
        let managed = s.strings(self.sink, "managed_points_of_care").ok()?;
        Some(Hl7Section {
            managed_points_of_care: managed,
        })
    }

    /// `[uplink]`: where and how the appliance ships its log to the cloud.
    fn uplink(&mut self, root: &Scope<'_, '_>) -> Option<Option<UplinkSection>> {
        if !root.table.contains_key("uplink") {
            return Some(None);
        }
        let s = self.section(root, "uplink", Need::Optional)?;
        s.unknown_keys(self.sink, UPLINK_KEYS);
        let dir = self.dir();
        let sink = &mut *self.sink;
        let cloud = cloud_addresses(sink, &s);
        let ca = existing_file(sink, &s, "ca", dir);
        let key_file = match s.table.get("key_file") {
            Some(_) => s
                .text(sink, "key_file", Need::Optional)
                .map(|k| Some(dir.join(PathBuf::from(k.value)))),
            None => Some(None),
        };
        let batch = s.int(sink, "batch_events", 1, 1_000);
        let timeout = s.int(sink, "timeout_s", 1, 600);
        let poll = s.int(sink, "poll_ms", 10, 60_000);
        let failback = s.int(sink, "failback_s", 1, 86_400);
        let budget = s.int(sink, "outbox_budget_mb", 1, 1 << 24);
        let alarm = s.int(sink, "outbox_alarm_percent", 1, 100);
        let mut retention = Retention::default();
        let mut bad = false;
        for (key, slot) in [
            ("retention_adt_h", &mut retention.adt_h),
            ("retention_bed_h", &mut retention.bed_h),
            ("retention_or_h", &mut retention.or_h),
            ("retention_billing_h", &mut retention.billing_h),
            ("retention_audit_h", &mut retention.audit_h),
            ("retention_integration_h", &mut retention.integration_h),
            ("retention_empi_h", &mut retention.empi_h),
        ] {
            match s.int(sink, key, 1, 10 * 8_760) {
                Ok(Some(h)) => *slot = h,
                Ok(None) => {}
                Err(()) => bad = true,
            }
        }
        let cloud = cloud?;
        let ca = ca.ok()?;
        if let Some((_, _, span)) = cloud.iter().find(|(_, https, _)| *https)
            && ca.is_none()
        {
            sink.error(
                span,
                format!(
                    "{} is https but {} is not given: name the PEM file of the CA that \
                     signed the cloud's certificate",
                    s.key_path("cloud"),
                    s.key_path("ca")
                ),
            );
            return None;
        }
        if bad {
            return None;
        }
        Some(Some(UplinkSection {
            cloud: cloud.into_iter().map(|(url, _, _)| url).collect(),
            ca,
            key_file: key_file?,
            batch_events: to_usize(batch.ok()?, DEFAULT_UPLINK_BATCH_EVENTS)?,
            timeout_s: timeout.ok()?.unwrap_or(DEFAULT_UPLINK_TIMEOUT_S),
            poll_ms: poll.ok()?.unwrap_or(DEFAULT_UPLINK_POLL_MS),
            failback_s: failback.ok()?.unwrap_or(DEFAULT_UPLINK_FAILBACK_S),
            outbox_budget_mb: budget.ok()?.unwrap_or(DEFAULT_OUTBOX_BUDGET_MB),
            outbox_alarm_percent: alarm.ok()?.unwrap_or(DEFAULT_OUTBOX_ALARM_PERCENT),
            retention,
        }))
    }

    /// `[inference]`: the local models; every key has a default.
    fn inference(&mut self, root: &Scope<'_, '_>) -> Option<InferenceSection> {
        let dir = self.dir().to_path_buf();
        if !root.table.contains_key("inference") {
            return Some(InferenceSection {
                models: dir.join(DEFAULT_MODELS_DIR),
                ..InferenceSection::default()
            });
        }
        let s = self.section(root, "inference", Need::Optional)?;
        s.unknown_keys(self.sink, INFERENCE_KEYS);
        let sink = &mut *self.sink;
        let models = match s.table.get("models") {
            Some(_) => Some(s.text(sink, "models", Need::Optional)?.value),
            None => None,
        };
        let library = match s.table.get("library") {
            Some(_) => Some(s.text(sink, "library", Need::Optional)?.value),
            None => None,
        };
        let cuda = s.bool(sink, "cuda");
        let cuda_tf32 = s.bool(sink, "cuda_tf32");
        let min_rows = s.int(sink, "cuda_min_rows", 1, 16_777_216);
        let timeout = s.int(sink, "timeout_ms", 1, 60_000);
        let refresh = s.int(sink, "refresh_s", 10, 86_400);
        if cuda.is_none() && s.table.contains_key("cuda")
            || cuda_tf32.is_none() && s.table.contains_key("cuda_tf32")
        {
            return None;
        }
        Some(InferenceSection {
            models: dir.join(models.as_deref().unwrap_or(DEFAULT_MODELS_DIR)),
            library: library.map(|l| dir.join(l)),
            cuda: cuda.unwrap_or(false),
            cuda_tf32: cuda_tf32.unwrap_or(false),
            cuda_min_rows: min_rows.ok()?.unwrap_or(DEFAULT_CUDA_MIN_ROWS),
            timeout_ms: timeout.ok()?.unwrap_or(DEFAULT_INFERENCE_TIMEOUT_MS),
            refresh_s: refresh.ok()?.unwrap_or(DEFAULT_FORECAST_REFRESH_S),
        })
    }

    /// `[coding]`: coding suggestions; every key has a default.
    fn coding(&mut self, root: &Scope<'_, '_>) -> Option<CodingSection> {
        if !root.table.contains_key("coding") {
            return Some(CodingSection::default());
        }
        let s = self.section(root, "coding", Need::Optional)?;
        s.unknown_keys(self.sink, CODING_KEYS);
        let sink = &mut *self.sink;
        let max_text = s.int(sink, "max_text_chars", 1, 1_000_000);
        let days = s.int(sink, "history_days", 1, 3_650);
        Some(CodingSection {
            max_text_chars: max_text.ok()?.unwrap_or(DEFAULT_CODING_MAX_TEXT_CHARS),
            history_days: days.ok()?.unwrap_or(DEFAULT_CODING_HISTORY_DAYS),
        })
    }

    /// `[backup]`: scheduled local snapshots.
    fn backup(&mut self, root: &Scope<'_, '_>) -> Option<Option<BackupSection>> {
        if !root.table.contains_key("backup") {
            return Some(None);
        }
        let s = self.section(root, "backup", Need::Optional)?;
        s.unknown_keys(self.sink, BACKUP_KEYS);
        let sink = &mut *self.sink;
        let dir = s.text(sink, "dir", Need::Required);
        let interval = s.int(sink, "interval_h", 1, 8_760);
        let keep = s.int(sink, "keep", 1, 1_000);
        Some(Some(BackupSection {
            dir: self.dir().join(PathBuf::from(dir?.value)),
            interval_h: interval.ok()?.unwrap_or(DEFAULT_BACKUP_INTERVAL_H),
            keep: to_usize(keep.ok()?, DEFAULT_BACKUP_KEEP)?,
        }))
    }

    /// `[fleet]`: the MQTT channel to the fleet console.
    fn fleet(&mut self, root: &Scope<'_, '_>) -> Option<Option<FleetSection>> {
        if !root.table.contains_key("fleet") {
            return Some(None);
        }
        let s = self.section(root, "fleet", Need::Optional)?;
        s.unknown_keys(self.sink, FLEET_KEYS);
        let dir = self.dir();
        let sink = &mut *self.sink;
        let broker = s.text(sink, "broker", Need::Required).and_then(|raw| {
            match service_url(&raw.value, &MQTT_URL) {
                Ok(url) => Some((
                    FleetBroker {
                        tls: url.tls,
                        host: url.host,
                        port: url.port,
                    },
                    raw.span,
                )),
                Err(why) => {
                    sink.error(&raw.span, format!("{} {why}", s.key_path("broker")));
                    None
                }
            }
        });
        let ca = existing_file(sink, &s, "ca", dir);
        let client = file_pair(
            sink,
            &s,
            dir,
            ["client_cert", "client_key"],
            "a client certificate needs its key: give both, or neither for no client certificate",
        );
        let keepalive = s.int(sink, "keepalive_s", 5, 3_600);
        let telemetry = s.int(sink, "telemetry_s", 5, 86_400);
        let command_key = required_file(sink, &s, "command_key", dir);
        let (broker, span) = broker?;
        if broker.tls && !s.table.contains_key("ca") {
            sink.error(
                &span,
                format!(
                    "{} is mqtts but {} is not given: name the PEM file of the CA that \
                     signed the broker's certificate",
                    s.key_path("broker"),
                    s.key_path("ca")
                ),
            );
            return None;
        }
        if !broker.tls {
            let mut refused = false;
            for key in ["ca", "client_cert", "client_key"] {
                if let Some((k, _)) = s.table.get_key_value(key) {
                    sink.error(
                        &k.span(),
                        format!(
                            "{} is only for an mqtts:// broker, but {} is plain mqtt://: \
                             remove it, or use mqtts://",
                            s.key_path(key),
                            s.key_path("broker")
                        ),
                    );
                    refused = true;
                }
            }
            if refused {
                return None;
            }
        }
        let (client_cert, client_key) = client.ok()?.unzip();
        Some(Some(FleetSection {
            broker,
            ca: ca.ok()?,
            client_cert,
            client_key,
            keepalive_s: keepalive.ok()?.unwrap_or(DEFAULT_FLEET_KEEPALIVE_S),
            telemetry_s: telemetry.ok()?.unwrap_or(DEFAULT_FLEET_TELEMETRY_S),
            command_key: command_key?,
        }))
    }

    /// `[bundles]`: the keys that sign the bundles this appliance applies.
    fn bundles(&mut self, root: &Scope<'_, '_>) -> Option<Option<BundlesSection>> {
        if !root.table.contains_key("bundles") {
            return Some(None);
        }
        let s = self.section(root, "bundles", Need::Optional)?;
        s.unknown_keys(self.sink, BUNDLES_KEYS);
        let dir = self.dir();
        let sink = &mut *self.sink;
        let probation = s.int(sink, "probation_s", 5, 3_600);
        let unsigned = if s.table.contains_key("allow_unsigned_models") {
            s.bool(sink, "allow_unsigned_models")
        } else {
            Some(false)
        };
        let value = s.raw(sink, "trusted_keys", Need::Required)?;
        let DeValue::Array(items) = value.get_ref() else {
            s.wrong_type(
                sink,
                "trusted_keys",
                value,
                "an array of public key files (\"keys/bundle.pub\")",
            );
            return None;
        };
        if items.is_empty() {
            sink.error(
                &value.span(),
                format!(
                    "{} is empty: name at least one public key file (hms-config keygen writes KEY.pub)",
                    s.key_path("trusted_keys")
                ),
            );
            return None;
        }
        let mut keys = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            let DeValue::String(raw) = item.get_ref() else {
                sink.error(
                    &item.span(),
                    format!("{} must hold only file names", s.key_path("trusted_keys")),
                );
                ok = false;
                continue;
            };
            let path = dir.join(PathBuf::from(raw.as_ref()));
            let problem = match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => Some("is a directory, not a file".to_owned()),
                Ok(m) if m.len() != 32 => Some(format!(
                    "is {} bytes; a bundle public key file holds the raw 32 bytes (hms-config \
                     keygen writes it as KEY.pub)",
                    m.len()
                )),
                Ok(_) => None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some("does not exist".to_owned())
                }
                Err(e) => Some(format!("cannot be accessed: {e}")),
            };
            match problem {
                None => keys.push(path),
                Some(p) => {
                    sink.error(
                        &item.span(),
                        format!(
                            "{} file {} {p} (looked for {})",
                            s.key_path("trusted_keys"),
                            shown(raw),
                            path.display()
                        ),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        Some(Some(BundlesSection {
            trusted_keys: keys,
            probation_s: probation.ok()?.unwrap_or(DEFAULT_BUNDLE_PROBATION_S),
            allow_unsigned_models: unsigned?,
        }))
    }

    /// Facilities, buildings and floors: an id, a name and (but for
    /// facilities) a reference to the level above.
    ///
    /// Returns every valid entry and the registry of ids seen.
    fn places(
        &mut self,
        root: &Scope<'_, '_>,
        kind: &str,
        keys: &[&str],
        parent: Option<(&str, &Registry)>,
    ) -> (Vec<Place>, Registry) {
        let mut ids = Registry::default();
        let mut out = Vec::new();
        let mut refs = Vec::new();
        for s in self.list(root, kind) {
            s.unknown_keys(self.sink, keys);
            let sink = &mut *self.sink;
            let raw = s.string(sink, "id", Need::Required);
            let valid = raw.as_ref().and_then(|raw| {
                let ok = parse_id(sink, raw, kind, |v| validate_id(&v).map(|()| v));
                ids.define(sink, kind, raw);
                ok
            });
            let name = s.text(sink, "name", Need::Required);
            let up = parent.map(|(key, _)| s.string(sink, key, Need::Required));
            if let Some(Some(up)) = &up {
                refs.push((raw.clone(), up.clone()));
            }
            if let (Some(id), Some(name)) = (valid, name) {
                let name = name.value;
                match up {
                    None => out.push(Place {
                        id,
                        name,
                        parent: String::new(),
                    }),
                    Some(Some(up)) => out.push(Place {
                        id,
                        name,
                        parent: up.value,
                    }),
                    Some(None) => {}
                }
            }
        }
        if let Some((key, known)) = parent {
            for (id, up) in refs {
                if !known.contains(&up.value) && !self.is_broken(key) {
                    self.sink.error(
                        &up.span,
                        format!(
                            "{}refers to unknown {key} {}",
                            owner(kind, id.as_ref()),
                            shown(&up.value)
                        ),
                    );
                }
            }
        }
        (out, ids)
    }

    fn units(&mut self, root: &Scope<'_, '_>) -> Vec<UnitItem> {
        let mut out = Vec::new();
        for s in self.list(root, "unit") {
            s.unknown_keys(self.sink, UNIT_KEYS);
            let sink = &mut *self.sink;
            let raw = s.string(sink, "id", Need::Required);
            let id = raw
                .as_ref()
                .and_then(|raw| parse_id(sink, raw, "unit", UnitId::new));
            let floor = s.string(sink, "floor", Need::Required);
            let name = s.text(sink, "name", Need::Required);
            let level_of_care = s.level_of_care(sink, "level_of_care", Need::Required);
            let unit = match (id, &floor, name, level_of_care) {
                (Some(id), Some(floor), Some(name), Some(level_of_care)) => Some(Unit {
                    id,
                    floor: floor.value.clone(),
                    name: name.value,
                    level_of_care,
                }),
                _ => None,
            };
            out.push(UnitItem {
                id: raw,
                floor,
                level_of_care,
                unit,
            });
        }
        out
    }

    fn rooms(&mut self, root: &Scope<'_, '_>) -> Vec<RoomItem> {
        let mut out = Vec::new();
        for s in self.list(root, "room") {
            s.unknown_keys(self.sink, ROOM_KEYS);
            let sink = &mut *self.sink;
            let raw = s.string(sink, "id", Need::Required);
            let id = raw
                .as_ref()
                .and_then(|raw| parse_id(sink, raw, "room", RoomId::new));
            let unit = s.string(sink, "unit", Need::Required);
            let unit_id = unit
                .as_ref()
                .and_then(|raw| parse_id(sink, raw, "unit", UnitId::new));
            let name = match s.table.get("name") {
                Some(_) => s.text(sink, "name", Need::Optional).map(|n| Some(n.value)),
                None => Some(None),
            };
            let room = match (id, unit_id, name) {
                (Some(id), Some(unit), Some(name)) => Some(Room {
                    name: name.unwrap_or_else(|| id.to_string()),
                    id,
                    unit,
                }),
                _ => None,
            };
            out.push(RoomItem {
                id: raw,
                unit,
                room,
            });
        }
        out
    }

    fn beds(&mut self, root: &Scope<'_, '_>) -> Vec<BedItem> {
        let none = match root.table.get("bed") {
            None => Some(0..0),
            Some(value) => match value.get_ref() {
                DeValue::Array(items) if items.is_empty() => Some(value.span()),
                _ => None,
            },
        };
        if let Some(span) = none {
            self.sink.error(
                &span,
                "no beds configured: at least one [[bed]] is required",
            );
        }
        self.list(root, "bed").iter().map(|s| self.bed(s)).collect()
    }

    fn bed(&mut self, s: &Scope<'_, '_>) -> BedItem {
        s.unknown_keys(self.sink, BED_KEYS);
        let sink = &mut *self.sink;
        let raw = s.string(sink, "id", Need::Required);
        let valid_id = raw
            .as_ref()
            .and_then(|raw| parse_id(sink, raw, "bed", BedId::new));
        let room = s.string(sink, "room", Need::Optional).and_then(|raw| {
            parse_id(sink, &raw, "room", RoomId::new).map(|value| At {
                value,
                span: raw.span,
            })
        });
        let unit = s.string(sink, "unit", Need::Optional).and_then(|raw| {
            parse_id(sink, &raw, "unit", UnitId::new).map(|value| At {
                value,
                span: raw.span,
            })
        });
        let has = |key: &str| s.table.contains_key(key);
        let mut ok = true;
        let gender = s.gender(sink, "gender");
        ok &= gender.is_some() || !has("gender");
        let mut flag = |key: &str| {
            let value = s.bool(sink, key);
            ok &= value.is_some() || !has(key);
            value.unwrap_or(false)
        };
        let isolation_capable = flag("isolation_capable");
        let telemetry = flag("telemetry");
        let bariatric = flag("bariatric");
        let level_of_care = s.level_of_care(sink, "level_of_care", Need::Optional);
        ok &= level_of_care.is_some() || !has("level_of_care");
        let tags = s.strings(sink, "tags");
        ok &= tags.is_ok();
        let hl7 = if has("hl7") {
            hl7_location(sink, s, Hl7Of::Bed)
        } else {
            None
        };
        BedItem {
            id: raw,
            span: s.span.clone(),
            valid_id,
            room,
            unit,
            has_place: has("room") || has("unit"),
            hl7,
            has_hl7: has("hl7"),
            attributes: ok.then(|| BedAttrs {
                gender: gender.unwrap_or_default(),
                isolation_capable,
                telemetry,
                bariatric,
                level_of_care,
                tags: tags.unwrap_or_default(),
            }),
        }
    }

    /// The `[[or_room]]` tables, each checked on its own.
    fn or_rooms(&mut self, root: &Scope<'_, '_>) -> Vec<OrRoomItem> {
        let mut out = Vec::new();
        for s in self.list(root, "or_room") {
            s.unknown_keys(self.sink, OR_ROOM_KEYS);
            let sink = &mut *self.sink;
            let raw = s.string(sink, "id", Need::Required);
            let id = raw
                .as_ref()
                .and_then(|raw| parse_id(sink, raw, "or_room", OrRoomId::new));
            let name = match s.table.get("name") {
                Some(_) => s.text(sink, "name", Need::Optional).map(|n| Some(n.value)),
                None => Some(None),
            };
            let suite = s
                .string(sink, "suite", Need::Required)
                .and_then(|raw| parse_id(sink, &raw, "suite", |v| validate_id(&v).map(|()| v)));
            let hl7 = match s.raw(sink, "hl7", Need::Required) {
                Some(_) => hl7_location(sink, &s, Hl7Of::OrRoom),
                None => None,
            };
            let or_room = match (id, name, suite, &hl7) {
                (Some(id), Some(name), Some(suite), Some(hl7)) => Some(OrRoom {
                    name: name.unwrap_or_else(|| id.to_string()),
                    id,
                    suite,
                    hl7: hl7.value.clone(),
                }),
                _ => None,
            };
            out.push(OrRoomItem {
                id: raw,
                hl7,
                or_room,
            });
        }
        out
    }

    /// Checks operating-room ids and HL7 locations: unique among operating
    /// rooms (their ids are a namespace of their own) and no bed's location
    /// (`beds`: each bed location with its bed id and line). `None` when
    /// some operating room is invalid.
    fn resolve_or_rooms(
        &mut self,
        or_rooms: Vec<OrRoomItem>,
        beds: &HashMap<Hl7Location, (String, usize)>,
    ) -> Option<Vec<OrRoom>> {
        let mut ids = Registry::default();
        let mut hl7_seen: HashMap<Hl7Location, (String, usize)> = HashMap::new();
        let mut out = Vec::with_capacity(or_rooms.len());
        let mut complete = true;
        for r in or_rooms {
            if let Some(raw) = &r.id {
                ids.define(self.sink, "or_room", raw);
            }
            if let Some(hl7) = &r.hl7 {
                let line = self.sink.line(hl7.span.start);
                if let Some((bed, bed_line)) = beds.get(&hl7.value) {
                    self.sink.error(
                        &hl7.span,
                        format!(
                            "HL7 location {} is already mapped to bed {} at line {bed_line}",
                            hl7.value,
                            shown(bed)
                        ),
                    );
                } else {
                    match hl7_seen.entry(hl7.value.clone()) {
                        Entry::Occupied(first) => {
                            let (room, first_line) = first.get();
                            self.sink.error(
                                &hl7.span,
                                format!(
                                    "HL7 location {} is already mapped to or_room {} at line {first_line}",
                                    hl7.value,
                                    shown(room)
                                ),
                            );
                        }
                        Entry::Vacant(slot) => {
                            let room = r.id.as_ref().map(|id| id.value.clone());
                            slot.insert((room.unwrap_or_default(), line));
                        }
                    }
                }
            }
            match r.or_room {
                Some(room) => out.push(room),
                None => complete = false,
            }
        }
        complete.then_some(out)
    }

    /// Registers unit ids and checks their floors. Returns, per unit id, its
    /// level of care when valid.
    fn register_units(
        &mut self,
        units: &[UnitItem],
        floors: &Registry,
    ) -> HashMap<String, Option<LevelOfCare>> {
        let mut ids = Registry::default();
        let mut out = HashMap::new();
        for u in units {
            if let Some(raw) = &u.id
                && ids.define(self.sink, "unit", raw)
            {
                out.insert(raw.value.clone(), u.level_of_care);
            }
            if let Some(floor) = &u.floor
                && !floors.contains(&floor.value)
                && !self.is_broken("floor")
            {
                self.sink.error(
                    &floor.span,
                    format!(
                        "{}refers to unknown floor {}",
                        owner("unit", u.id.as_ref()),
                        shown(&floor.value)
                    ),
                );
            }
        }
        out
    }

    /// Registers room ids and checks their units. Returns, per room id, the
    /// id of its unit when that unit exists.
    fn register_rooms(
        &mut self,
        rooms: &[RoomItem],
        units: &HashMap<String, Option<LevelOfCare>>,
    ) -> HashMap<String, Option<String>> {
        let mut ids = Registry::default();
        let mut out = HashMap::new();
        for r in rooms {
            if let Some(unit) = &r.unit
                && !units.contains_key(&unit.value)
                && !self.is_broken("unit")
            {
                self.sink.error(
                    &unit.span,
                    format!(
                        "{}refers to unknown unit {}",
                        owner("room", r.id.as_ref()),
                        shown(&unit.value)
                    ),
                );
            }
            if let Some(raw) = &r.id
                && ids.define(self.sink, "room", raw)
            {
                let unit = r
                    .unit
                    .as_ref()
                    .filter(|u| units.contains_key(&u.value))
                    .map(|u| u.value.clone());
                out.insert(raw.value.clone(), unit);
            }
        }
        out
    }

    /// Checks bed ids, references and HL7 locations, and resolves each bed's
    /// unit and level of care. `None` when some bed could not be resolved.
    /// `hl7_seen` receives each bed location, with the id and line of the
    /// first bed mapped to it.
    fn resolve_beds(
        &mut self,
        beds: Vec<BedItem>,
        units: &HashMap<String, Option<LevelOfCare>>,
        rooms: &HashMap<String, Option<String>>,
        hl7_seen: &mut HashMap<Hl7Location, (String, usize)>,
    ) -> Option<Vec<Bed>> {
        let mut ids = Registry::default();
        let mut out = Vec::with_capacity(beds.len());
        let mut complete = true;
        for b in beds {
            if let Some(raw) = &b.id {
                ids.define(self.sink, "bed", raw);
            }
            let who = owner("bed", b.id.as_ref());
            let mut unit: Option<UnitId> = None;
            if let Some(u) = &b.unit {
                if units.contains_key(u.value.as_str()) {
                    unit = Some(u.value.clone());
                } else if !self.is_broken("unit") {
                    self.sink.error(
                        &u.span,
                        format!("{who}refers to unknown unit {}", shown(u.value.as_str())),
                    );
                }
            }
            if let Some(r) = &b.room {
                match rooms.get(r.value.as_str()) {
                    None if self.is_broken("room") => {}
                    None => self.sink.error(
                        &r.span,
                        format!("{who}refers to unknown room {}", shown(r.value.as_str())),
                    ),
                    Some(None) => {}
                    Some(Some(room_unit)) => match &b.unit {
                        Some(u) if u.value.as_str() != room_unit => {
                            if unit.is_some() {
                                self.sink.error(
                                    &u.span,
                                    format!(
                                        "{who}is in unit {} but its room {} belongs to unit {}",
                                        shown(u.value.as_str()),
                                        shown(r.value.as_str()),
                                        shown(room_unit)
                                    ),
                                );
                            }
                        }
                        Some(_) => {}
                        None => unit = UnitId::new(room_unit.as_str()).ok(),
                    },
                }
            }
            if !b.has_place {
                self.sink
                    .error(&b.span, format!("{who}has neither a room nor a unit"));
            }
            match &b.hl7 {
                None if !b.has_hl7 => self
                    .sink
                    .error(&b.span, format!("{who}has no HL7 location mapping")),
                None => {}
                Some(hl7) => {
                    let line = self.sink.line(hl7.span.start);
                    match hl7_seen.entry(hl7.value.clone()) {
                        Entry::Occupied(first) => {
                            let (bed, first_line) = first.get();
                            self.sink.error(
                                &hl7.span,
                                format!(
                                    "HL7 location {} is already mapped to bed {} at line {first_line}",
                                    hl7.value,
                                    shown(bed)
                                ),
                            );
                        }
                        Entry::Vacant(slot) => {
                            let bed = b.id.as_ref().map(|id| id.value.clone());
                            slot.insert((bed.unwrap_or_default(), line));
                        }
                    }
                }
            }
            let resolved = (|| {
                let attrs = b.attributes?;
                let unit = unit?;
                let level_of_care = match attrs.level_of_care {
                    Some(level) => level,
                    None => units.get(unit.as_str()).copied().flatten()?,
                };
                Some(Bed {
                    id: b.valid_id?,
                    unit,
                    attributes: BedAttributes {
                        gender: attrs.gender,
                        isolation_capable: attrs.isolation_capable,
                        telemetry: attrs.telemetry,
                        bariatric: attrs.bariatric,
                        level_of_care,
                        room: b.room.map(|r| r.value),
                        tags: attrs.tags,
                    },
                    hl7: b.hl7?.value,
                })
            })();
            match resolved {
                Some(bed) => out.push(bed),
                None => complete = false,
            }
        }
        complete.then_some(out)
    }

    /// Warns about units that no bed belongs to.
    fn empty_units(&mut self, units: &[UnitItem], beds: Option<&[Bed]>) {
        let Some(beds) = beds.filter(|b| !b.is_empty()) else {
            return;
        };
        let used: std::collections::HashSet<&UnitId> = beds.iter().map(|b| &b.unit).collect();
        for u in units {
            if let (Some(unit), Some(raw)) = (&u.unit, &u.id)
                && !used.contains(&unit.id)
            {
                self.sink
                    .warning(&raw.span, format!("unit {} has no beds", shown(&raw.value)));
            }
        }
    }
}

/// `kind "id" ` for messages, or `kind ` when the id is unknown.
fn owner(kind: &str, id: Option<&At<String>>) -> String {
    match id {
        Some(id) => format!("{kind} {} ", shown(&id.value)),
        None => format!("{kind} "),
    }
}

fn to_usize(value: Option<u64>, default: usize) -> Option<usize> {
    match value {
        None => Some(default),
        Some(n) => usize::try_from(n).ok(),
    }
}

/// A kind of service URL: a scheme with TLS, one without that may only
/// reach this machine, and the ports used when the URL names none.
#[derive(Debug, Clone, Copy)]
struct Schemes {
    /// With TLS: `https`, `mqtts`.
    tls: &'static str,
    /// Without TLS, only to a loopback host: `http`, `mqtt`.
    plain: &'static str,
    /// The ports of a URL without one (with TLS, without); none: the port
    /// is required.
    default_ports: Option<(u16, u16)>,
    /// Why other hosts need TLS, for the message.
    why_tls: &'static str,
}

/// Most addresses `uplink.cloud` may list.
const MAX_CLOUD_ADDRESSES: usize = 8;

/// `uplink.cloud`: one address or an array of them, in order of preference
/// (each checked as [`service_url`]; no repeats): each address with whether
/// it is https and where it is written. `None` after reporting what is wrong.
fn cloud_addresses(sink: &mut Sink<'_>, s: &Scope<'_, '_>) -> Option<Vec<(String, bool, Span)>> {
    let value = s.raw(sink, "cloud", Need::Required)?;
    let items: Vec<&Value<'_>> = match value.get_ref() {
        DeValue::String(_) => vec![value],
        DeValue::Array(items) if items.is_empty() => {
            sink.error(
                &value.span(),
                format!("{} is empty: name the cloud's address", s.key_path("cloud")),
            );
            return None;
        }
        DeValue::Array(items) if items.len() > MAX_CLOUD_ADDRESSES => {
            sink.error(
                &value.span(),
                format!(
                    "{} lists {} addresses; at most {MAX_CLOUD_ADDRESSES}",
                    s.key_path("cloud"),
                    items.len()
                ),
            );
            return None;
        }
        DeValue::Array(items) => items.iter().collect(),
        _ => {
            s.wrong_type(sink, "cloud", value, "a URL or an array of URLs");
            return None;
        }
    };
    let mut out: Vec<(String, bool, Span)> = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let DeValue::String(raw) = item.get_ref() else {
            sink.error(
                &item.span(),
                format!(
                    "{} must hold only URLs, found {}",
                    s.key_path("cloud"),
                    item.get_ref().type_str()
                ),
            );
            ok = false;
            continue;
        };
        let raw = raw.to_string();
        if raw.trim().is_empty() {
            sink.error(
                &item.span(),
                format!("{} must not be empty", s.key_path("cloud")),
            );
            ok = false;
            continue;
        }
        match service_url(&raw, &HTTP_URL) {
            Ok(_) if out.iter().any(|(u, _, _)| *u == raw) => {
                sink.error(
                    &item.span(),
                    format!("{} lists {raw:?} twice", s.key_path("cloud")),
                );
                ok = false;
            }
            Ok(url) => out.push((raw, url.tls, item.span())),
            Err(why) => {
                sink.error(&item.span(), format!("{} {why}", s.key_path("cloud")));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `uplink.cloud`: `https://HOST:PORT`, the port required.
const HTTP_URL: Schemes = Schemes {
    tls: "https",
    plain: "http",
    default_ports: None,
    why_tls: "PHI crosses networks only inside TLS",
};

/// `fleet.broker`: `mqtts://HOST[:PORT]`, MQTT's ports by default.
const MQTT_URL: Schemes = Schemes {
    tls: "mqtts",
    plain: "mqtt",
    default_ports: Some((8883, 1883)),
    why_tls: "fleet telemetry and commands cross networks only inside TLS",
};

/// A URL [`service_url`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceUrl {
    /// The TLS scheme rather than the plain one.
    tls: bool,
    /// A host name or an IP address (an IPv6 address without its brackets).
    host: String,
    /// As written, or the scheme's default.
    port: u16,
}

/// Checks a service URL of the kind `schemes`: `TLS://HOST:PORT`, or
/// `PLAIN://HOST:PORT` with a loopback host, nothing more (one trailing `/`
/// aside: no user, path, query or fragment). The port may be left out where
/// the kind has default ports.
fn service_url(url: &str, schemes: &Schemes) -> Result<ServiceUrl, String> {
    let Schemes {
        tls: secure,
        plain,
        default_ports,
        why_tls,
    } = *schemes;
    let (tls, rest) = if let Some(r) = url.strip_prefix(&format!("{secure}://")) {
        (true, r)
    } else if let Some(r) = url.strip_prefix(&format!("{plain}://")) {
        (false, r)
    } else {
        return Err(format!(
            "must start with {secure}:// (or {plain}:// on loopback), found {}",
            shown(url)
        ));
    };
    let form = if default_ports.is_some() {
        "HOST[:PORT]"
    } else {
        "HOST:PORT"
    };
    let malformed = || {
        format!(
            "must be a URL of the form {secure}://{form} with no path, found {}",
            shown(url)
        )
    };
    let (host, port) = hms_domain::net::authority(rest).ok_or_else(malformed)?;
    let port = match (port, default_ports) {
        (Some(n), _) => n,
        (None, Some((with_tls, without))) => {
            if tls {
                with_tls
            } else {
                without
            }
        }
        (None, None) => {
            return Err(format!(
                "must name a port (HOST:PORT), found {}",
                shown(url)
            ));
        }
    };
    if !tls && !hms_domain::net::is_loopback_host(host) {
        return Err(format!(
            "must be {secure}:// to reach another machine ({why_tls}); plain {plain}:// is only \
             for loopback (127.0.0.0/8, [::1], localhost), found {}",
            shown(url)
        ));
    }
    Ok(ServiceUrl {
        tls,
        host: host.to_owned(),
        port,
    })
}

/// `mllp.tls_cert` and `mllp.tls_key`: both or neither, each an existing
/// file; `Err(())` when something is wrong (and reported).
fn mllp_tls(sink: &mut Sink<'_>, s: &Scope<'_, '_>, dir: &Path) -> Result<Option<MllpTls>, ()> {
    tls_files(
        sink,
        s,
        dir,
        "TLS on the MLLP listener needs both, or neither for plain TCP",
    )
}

/// The optional list `key` of `s` as address blocks; `Ok(None)` when
/// absent, `Err(())` when wrong (each bad entry reported at its value).
fn cidrs(sink: &mut Sink<'_>, s: &Scope<'_, '_>, key: &str) -> Result<Option<Vec<Cidr>>, ()> {
    let Some(value) = s.raw(sink, key, Need::Optional) else {
        return Ok(None);
    };
    let DeValue::Array(items) = value.get_ref() else {
        s.wrong_type(
            sink,
            key,
            value,
            "an array of addresses or blocks (\"10.1.2.0/24\")",
        );
        return Err(());
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items.iter() {
        let parsed = match item.get_ref() {
            DeValue::String(text) => text.parse::<Cidr>(),
            _ => Err("each entry must be a string".to_owned()),
        };
        match parsed {
            Ok(c) => out.push(c),
            Err(why) => {
                sink.error(&item.span(), format!("{}: {why}", s.key_path(key)));
                ok = false;
            }
        }
    }
    ok.then_some(Some(out)).ok_or(())
}

/// `tls_cert` and `tls_key` of `s`: both or neither, each an existing file.
fn tls_files(
    sink: &mut Sink<'_>,
    s: &Scope<'_, '_>,
    dir: &Path,
    both_or_neither: &str,
) -> Result<Option<TlsFiles>, ()> {
    let pair = file_pair(sink, s, dir, ["tls_cert", "tls_key"], both_or_neither)?;
    Ok(pair.map(|(cert, key)| TlsFiles { cert, key }))
}

/// The files `[cert, key]` of `s` (a certificate and its private key): both
/// or neither, each an existing file; `Err(())` when something is wrong (and
/// reported, a lone one with `both_or_neither`).
fn file_pair(
    sink: &mut Sink<'_>,
    s: &Scope<'_, '_>,
    dir: &Path,
    [cert_key, key_key]: [&str; 2],
    both_or_neither: &str,
) -> Result<Option<(PathBuf, PathBuf)>, ()> {
    let cert = existing_file(sink, s, cert_key, dir);
    let key = existing_file(sink, s, key_key, dir);
    let mut paired = true;
    for (given, missing) in [(cert_key, key_key), (key_key, cert_key)] {
        if let Some((k, _)) = s.table.get_key_value(given)
            && !s.table.contains_key(missing)
        {
            sink.error(
                &k.span(),
                format!(
                    "{} is given without {}: {both_or_neither}",
                    s.key_path(given),
                    s.key_path(missing)
                ),
            );
            paired = false;
        }
    }
    match (cert?, key?) {
        (Some(cert), Some(key)) if paired => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(()),
    }
}

/// The optional string `key` of `s` as a path resolved against `dir`, which
/// must name an existing file; `Ok(None)` when absent, `Err(())` when wrong
/// (and reported at the value).
fn existing_file(
    sink: &mut Sink<'_>,
    s: &Scope<'_, '_>,
    key: &str,
    dir: &Path,
) -> Result<Option<PathBuf>, ()> {
    if !s.table.contains_key(key) {
        return Ok(None);
    }
    let raw = s.text(sink, key, Need::Optional).ok_or(())?;
    let path = dir.join(PathBuf::from(&raw.value));
    let problem = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => "is a directory, not a file".to_owned(),
        Ok(_) => return Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("cannot be accessed: {e}"),
    };
    let resolved = if path == Path::new(&raw.value) {
        String::new()
    } else {
        format!(" (looked for {})", path.display())
    };
    sink.error(
        &raw.span,
        format!(
            "{} file {} {problem}{resolved}",
            s.key_path(key),
            shown(&raw.value)
        ),
    );
    Err(())
}

/// The required string `key` of `s` as a path resolved against `dir`, which
/// must name an existing file; `None` when absent or wrong (and reported).
fn required_file(sink: &mut Sink<'_>, s: &Scope<'_, '_>, key: &str, dir: &Path) -> Option<PathBuf> {
    s.raw(sink, key, Need::Required)?;
    existing_file(sink, s, key, dir).ok().flatten()
}

/// Whose HL7 location is read: a bed's names its bed (PL-3); an operating
/// room's may leave PL-3 empty, but not PL-2 as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hl7Of {
    Bed,
    OrRoom,
}

/// The `hl7` table of a bed or an operating room (`owner`).
fn hl7_location(sink: &mut Sink<'_>, owner: &Scope<'_, '_>, of: Hl7Of) -> Option<At<Hl7Location>> {
    let s = owner.table(sink, "hl7")?;
    s.unknown_keys(sink, HL7_KEYS);
    let mut component = |key: &str, may_be_empty: bool| {
        let value = s.string(sink, key, Need::Required)?;
        if !may_be_empty && value.value.is_empty() {
            sink.error(
                &value.span,
                format!("{} must not be empty", s.key_path(key)),
            );
            return None;
        }
        if let Some(c) = value
            .value
            .chars()
            .find(|c| HL7_DELIMITERS.contains(c) || c.is_control())
        {
            sink.error(
                &value.span,
                format!(
                    "{} must not contain {c:?}: it is an HL7 delimiter or a control character",
                    s.key_path(key)
                ),
            );
            return None;
        }
        Some(value.value)
    };
    let facility = component("facility", false);
    let point_of_care = component("point_of_care", false);
    let room = component("room", true);
    let bed_part = component("bed", of == Hl7Of::OrRoom);
    if let (Some(room), Some(bed_part)) = (&room, &bed_part)
        && room.is_empty()
        && bed_part.is_empty()
    {
        sink.error(
            &s.span,
            format!(
                "{} and {} must not both be empty: an operating room's location needs a room \
                 or a bed",
                s.key_path("room"),
                s.key_path("bed")
            ),
        );
        return None;
    }
    Some(At {
        value: Hl7Location {
            facility: facility?,
            point_of_care: point_of_care?,
            room: room?,
            bed: bed_part?,
        },
        span: s.span,
    })
}
