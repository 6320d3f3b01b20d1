//! Signed bundles: a configuration or a model set, signed with the fleet's
//! bundle key (Ed25519), to be carried to an appliance (docs/bundles.md).
//!
//! A bundle mirrors the fleet's signed-command envelope (docs/fleet.md), with
//! the signing key's id added:
//!
//! ```json
//! {"payload": "<JSON text>", "signature": "<base64 Ed25519 signature of the payload's bytes>", "key": "<key id>"}
//! ```
//!
//! The signature covers the payload's UTF-8 bytes exactly as written; the key
//! id ([`key_id`]: the first 16 hex digits of the SHA-256 of the raw public
//! key) only says which trusted key to try. The payload is
//!
//! ```json
//! {"kind": "config" | "model_set", "version": 3, "hospital": "<id>" | "*",
//!  "created_at": "<RFC 3339>",
//!  "files": [{"name": "hospital.toml", "sha256": "<hex>", "size": 1234, "content": "<base64>"}]}
//! ```
//!
//! [`sign`] makes a bundle and [`verify`] checks one: envelope, signature by a
//! trusted key, payload, version ≥ 1, hospital, plain file names, sizes and
//! digests, no duplicate names, one file in a `config`, `manifest.toml` in a
//! `model_set`. Nothing here lints a configuration or compares versions: that
//! is the caller's (the `hms-config sign` command lints, the appliance will
//! check the version and the hospital). No IO: bytes in, bytes out. Errors
//! never quote a file's contents.

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hms_domain::HospitalId;
use hms_domain::event::to_hex;
use ring::digest::{SHA256, digest};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The largest bundle [`verify`] reads (bytes of the whole file).
pub const MAX_BUNDLE_BYTES: usize = 512 << 20;

/// The file every model set holds.
pub const MANIFEST: &str = "manifest.toml";

/// The longest file name in a bundle (bytes).
pub const MAX_NAME_BYTES: usize = 255;

/// What a bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// One appliance configuration file (TOML).
    Config,
    /// A model set: `manifest.toml` and the files it names.
    ModelSet,
}

impl Kind {
    /// The name in the payload: `config` or `model_set`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::ModelSet => "model_set",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(Kind::Config),
            "model_set" => Some(Kind::ModelSet),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which hospitals a bundle is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Hospital {
    /// Every hospital (`*`).
    Any,
    /// One hospital.
    One(HospitalId),
}

impl Hospital {
    /// `*` or a hospital id (`[A-Za-z0-9._:-]`, at most 64 bytes).
    pub fn parse(s: &str) -> Result<Self, BundleError> {
        if s == "*" {
            Ok(Hospital::Any)
        } else {
            HospitalId::new(s)
                .map(Hospital::One)
                .map_err(|_| BundleError::BadHospital)
        }
    }

    /// As written in the payload: `*` or the id.
    pub fn as_str(&self) -> &str {
        match self {
            Hospital::Any => "*",
            Hospital::One(id) => id.as_str(),
        }
    }
}

impl fmt::Display for Hospital {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of a bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// A plain file name (see [`check_name`]).
    pub name: String,
    /// Its contents.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for BundleFile {
    // The contents are never printed, only their size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleFile")
            .field("name", &self.name)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// A bundle that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// What it carries.
    pub kind: Kind,
    /// Its version (≥ 1); the appliance will refuse one not above the installed.
    pub version: u64,
    /// The hospitals it is for; the appliance will refuse another hospital's.
    pub hospital: Hospital,
    /// When it was signed.
    pub created_at: jiff::Timestamp,
    /// Its files, in the payload's order (sorted by name when [`sign`] made it).
    pub files: Vec<BundleFile>,
    /// The id ([`key_id`]) of the trusted key whose signature verified.
    pub key_id: String,
}

/// Why a bundle cannot be made or is refused. The messages name fields and
/// file names, never a file's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The file is larger than [`MAX_BUNDLE_BYTES`].
    #[error("the bundle is {size} bytes, more than the {max} a bundle may have")]
    TooLarge {
        /// Its size.
        size: usize,
        /// [`MAX_BUNDLE_BYTES`].
        max: usize,
    },
    /// The file ends before its JSON does (an interrupted copy or download).
    #[error(
        "the bundle is truncated: its JSON ends early after {size} bytes (an incomplete copy?)"
    )]
    Truncated {
        /// How many bytes there are.
        size: usize,
    },
    /// The file is not a bundle envelope.
    #[error("the bundle is malformed: {why}")]
    Malformed {
        /// What is wrong, without the contents.
        why: String,
    },
    /// The envelope names a key that is not among the trusted keys.
    #[error("the bundle is signed by key {key}, which is not a trusted key")]
    UntrustedKey {
        /// The key id the envelope names.
        key: String,
    },
    /// The signature does not verify with the trusted key the envelope names:
    /// the payload was changed after signing, or the signature is not one.
    #[error("the signature does not verify with trusted key {key} (the bundle was altered?)")]
    BadSignature {
        /// The key id tried.
        key: String,
    },
    /// The signed payload is not a bundle payload.
    #[error("the signed payload is malformed: {why}")]
    BadPayload {
        /// What is wrong, without the contents.
        why: String,
    },
    /// The version is 0.
    #[error("the version must be at least 1")]
    BadVersion,
    /// The hospital is neither `*` nor a valid hospital id.
    #[error("the hospital must be `*` or a hospital id ([A-Za-z0-9._:-], at most 64 bytes)")]
    BadHospital,
    /// A file name that is not a plain file name.
    #[error("file name {name} {why}; a bundle holds only plain file names")]
    UnsafeName {
        /// The name, escaped and shortened.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two files with one name.
    #[error("file {name} appears twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A file's `content` is not base64 or its `sha256` is not 64 lower-case hex digits.
    #[error("file {name}: {why}")]
    BadFileEntry {
        /// The name.
        name: String,
        /// Which field is wrong.
        why: &'static str,
    },
    /// A file's contents are not as long as its `size` says.
    #[error(
        "file {name} is {actual} bytes, but its size says {declared} (the bundle was altered?)"
    )]
    SizeMismatch {
        /// The name.
        name: String,
        /// The signed size.
        declared: u64,
        /// The contents' size.
        actual: u64,
    },
    /// A file's contents do not have its `sha256`.
    #[error("file {name} does not match its SHA-256 (the bundle was altered?)")]
    DigestMismatch {
        /// The name.
        name: String,
    },
    /// A `config` bundle with other than one file.
    #[error("a config bundle holds exactly one file, this one holds {count}")]
    ConfigFileCount {
        /// How many it holds.
        count: usize,
    },
    /// A `model_set` bundle without `manifest.toml`.
    #[error("a model set bundle must hold manifest.toml")]
    NoManifest,
    /// The signing key is not an Ed25519 PKCS#8 private key.
    #[error("the signing key is not an Ed25519 private key in PKCS#8")]
    BadKey,
}

/// The id of a public key: the first 16 hex digits of the SHA-256 of its raw
/// 32 bytes.
pub fn key_id(public: &[u8; 32]) -> String {
    let mut hex = to_hex(digest(&SHA256, public).as_ref());
    hex.truncate(16);
    hex
}

/// A new bundle key pair: (PKCS#8 private key, raw 32-byte public key).
pub fn generate_key() -> Result<(Vec<u8>, [u8; 32]), BundleError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| BundleError::BadKey)?;
    let public = public_key(pkcs8.as_ref())?;
    Ok((pkcs8.as_ref().to_vec(), public))
}

/// The raw public key of a PKCS#8 private key.
pub fn public_key(key_pkcs8: &[u8]) -> Result<[u8; 32], BundleError> {
    let pair = Ed25519KeyPair::from_pkcs8(key_pkcs8).map_err(|_| BundleError::BadKey)?;
    pair.public_key()
        .as_ref()
        .try_into()
        .map_err(|_| BundleError::BadKey)
}

/// Checks a file name as a bundle holds it: not empty, at most
/// [`MAX_NAME_BYTES`], no `/` or `\`, no leading `.` (so neither `.` nor `..`
/// nor hidden files), no control character.
pub fn check_name(name: &str) -> Result<(), BundleError> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "is too long"
    } else if name.split(['/', '\\']).any(|part| part == "..") {
        "leads out of the set with `..`"
    } else if name.contains(['/', '\\']) {
        "is a path, not a file name"
    } else if name.starts_with('.') {
        "starts with `.`"
    } else if name.chars().any(char::is_control) {
        "holds a control character"
    } else {
        return Ok(());
    };
    Err(BundleError::UnsafeName {
        name: shown(name),
        why,
    })
}

/// Makes a signed bundle of `files` (name, contents), sorted by name.
///
/// Refuses what [`verify`] would refuse: version 0, names that are not plain,
/// duplicate names, a `config` without exactly one file, a `model_set`
/// without `manifest.toml`. Does not lint the configuration.
pub fn sign(
    kind: Kind,
    version: u64,
    hospital: &Hospital,
    mut files: Vec<(String, Vec<u8>)>,
    created_at: jiff::Timestamp,
    key_pkcs8: &[u8],
) -> Result<Vec<u8>, BundleError> {
    let pair = Ed25519KeyPair::from_pkcs8(key_pkcs8).map_err(|_| BundleError::BadKey)?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| BundleError::BadKey)?;
    if version == 0 {
        return Err(BundleError::BadVersion);
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names = HashSet::new();
    for (name, _) in &files {
        check_name(name)?;
        if !names.insert(name.as_str()) {
            return Err(BundleError::DuplicateName { name: shown(name) });
        }
    }
    check_kind(kind, files.len(), names.contains(MANIFEST))?;
    let payload = Payload {
        kind: kind.as_str().to_owned(),
        version,
        hospital: hospital.as_str().to_owned(),
        created_at: created_at.to_string(),
        files: files
            .into_iter()
            .map(|(name, bytes)| FileEntry {
                sha256: to_hex(digest(&SHA256, &bytes).as_ref()),
                size: bytes.len() as u64,
                content: STANDARD.encode(&bytes),
                name,
            })
            .collect(),
    };
    let payload = serde_json::to_string(&payload).map_err(|_| BundleError::Malformed {
        why: "the payload could not be written".to_owned(),
    })?;
    Ok(envelope(payload, &pair, &public))
}

/// The envelope of a payload, signed with `pair` (whose public key is `public`).
fn envelope(payload: String, pair: &Ed25519KeyPair, public: &[u8; 32]) -> Vec<u8> {
    let signature = STANDARD.encode(pair.sign(payload.as_bytes()).as_ref());
    let envelope = Envelope {
        payload,
        signature,
        key: key_id(public),
    };
    // A struct of three strings always serializes.
    let mut out = serde_json::to_vec(&envelope).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Checks a bundle and returns what it carries.
///
/// In order: size, envelope (a file cut short is [`BundleError::Truncated`]),
/// the key it names among `trusted` (raw public keys), the signature over the
/// payload, then the payload: kind, version ≥ 1, hospital (`*` or a valid
/// id), `created_at` (RFC 3339), each file's plain name, base64 content, size
/// and SHA-256, no duplicate name, one file in a `config`, `manifest.toml` in
/// a `model_set`. The payload is not read before its signature verifies.
pub fn verify(bytes: &[u8], trusted: &[[u8; 32]]) -> Result<Bundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            max: MAX_BUNDLE_BYTES,
        });
    }
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            BundleError::Truncated { size: bytes.len() }
        } else {
            BundleError::Malformed { why: json_why(&e) }
        }
    })?;
    let Some(public) = trusted.iter().find(|k| key_id(k) == envelope.key) else {
        return Err(BundleError::UntrustedKey {
            key: shown(&envelope.key),
        });
    };
    let key = key_id(public);
    let signature = STANDARD
        .decode(envelope.signature.as_bytes())
        .map_err(|_| BundleError::BadSignature { key: key.clone() })?;
    UnparsedPublicKey::new(&ED25519, public)
        .verify(envelope.payload.as_bytes(), &signature)
        .map_err(|_| BundleError::BadSignature { key: key.clone() })?;

    let payload: Payload = serde_json::from_str(&envelope.payload)
        .map_err(|e| BundleError::BadPayload { why: json_why(&e) })?;
    let kind = Kind::parse(&payload.kind).ok_or_else(|| BundleError::BadPayload {
        why: "`kind` must be \"config\" or \"model_set\"".to_owned(),
    })?;
    if payload.version == 0 {
        return Err(BundleError::BadVersion);
    }
    let hospital = Hospital::parse(&payload.hospital)?;
    let created_at: jiff::Timestamp =
        payload
            .created_at
            .parse()
            .map_err(|_| BundleError::BadPayload {
                why: "`created_at` is not an RFC 3339 time".to_owned(),
            })?;
    let mut names = HashSet::new();
    let mut files = Vec::with_capacity(payload.files.len());
    for entry in payload.files {
        check_name(&entry.name)?;
        if !names.insert(entry.name.clone()) {
            return Err(BundleError::DuplicateName {
                name: shown(&entry.name),
            });
        }
        let bad = |why| BundleError::BadFileEntry {
            name: shown(&entry.name),
            why,
        };
        if entry.sha256.len() != 64
            || !entry
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("`sha256` is not 64 lower-case hex digits"));
        }
        let bytes = STANDARD
            .decode(entry.content.as_bytes())
            .map_err(|_| bad("`content` is not base64"))?;
        if bytes.len() as u64 != entry.size {
            return Err(BundleError::SizeMismatch {
                name: shown(&entry.name),
                declared: entry.size,
                actual: bytes.len() as u64,
            });
        }
        if to_hex(digest(&SHA256, &bytes).as_ref()) != entry.sha256 {
            return Err(BundleError::DigestMismatch {
                name: shown(&entry.name),
            });
        }
        files.push(BundleFile {
            name: entry.name,
            bytes,
        });
    }
    check_kind(kind, files.len(), names.contains(MANIFEST))?;
    Ok(Bundle {
        kind,
        version: payload.version,
        hospital,
        created_at,
        files,
        key_id: key,
    })
}

fn check_kind(kind: Kind, count: usize, has_manifest: bool) -> Result<(), BundleError> {
    match kind {
        Kind::Config if count != 1 => Err(BundleError::ConfigFileCount { count }),
        Kind::ModelSet if !has_manifest => Err(BundleError::NoManifest),
        _ => Ok(()),
    }
}

/// A name for a message: escaped, at most 80 characters.
fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(80).collect();
    if s.len() < name.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// A JSON error without the values it may quote: serde quotes strings in
/// double quotes (`invalid type: string "…"`) and variants in backticks; the
/// quoted text is dropped, field names stay, and the message is capped.
fn json_why(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = match (message.find('"'), message.rfind('"')) {
        (Some(first), Some(last)) if last > first => {
            format!("{}\"…\"{}", &message[..first], &message[last + 1..])
        }
        _ => message,
    };
    let mut short: String = message.chars().take(200).collect();
    if short.len() < message.len() {
        short.push('…');
    }
    short
}

/// The file format.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    payload: String,
    signature: String,
    key: String,
}

/// The signed payload.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    kind: String,
    version: u64,
    hospital: String,
    created_at: String,
    files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    sha256: String,
    size: u64,
    content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (Vec<u8>, [u8; 32]) {
        generate_key().unwrap()
    }

    fn at() -> jiff::Timestamp {
        "2026-12-05T15:00:00Z".parse().unwrap()
    }

    fn config(key: &[u8]) -> Vec<u8> {
        sign(
            Kind::Config,
            3,
            &Hospital::Any,
            vec![("hospital.toml".to_owned(), b"[node]\n".to_vec())],
            at(),
            key,
        )
        .unwrap()
    }

    /// A bundle of a hand-written payload, signed with `pair`.
    fn signed(payload: &str, pkcs8: &[u8]) -> Vec<u8> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
        let public = public_key(pkcs8).unwrap();
        envelope(payload.to_owned(), &pair, &public)
    }

    fn payload_with_file(name: &str, content: &[u8]) -> String {
        serde_json::json!({
            "kind": "config", "version": 1, "hospital": "*",
            "created_at": "2026-12-05T15:00:00Z",
            "files": [{
                "name": name,
                "sha256": to_hex(digest(&SHA256, content).as_ref()),
                "size": content.len(),
                "content": STANDARD.encode(content),
            }],
        })
        .to_string()
    }

    #[test]
    fn a_signed_config_verifies_with_its_key() {
        let (pkcs8, public) = key();
        let bundle = verify(&config(&pkcs8), &[public]).unwrap();
        assert_eq!(bundle.kind, Kind::Config);
        assert_eq!(bundle.version, 3);
        assert_eq!(bundle.hospital, Hospital::Any);
        assert_eq!(bundle.created_at, at());
        assert_eq!(bundle.key_id, key_id(&public));
        assert_eq!(bundle.key_id.len(), 16);
        assert_eq!(
            bundle.files,
            vec![BundleFile {
                name: "hospital.toml".to_owned(),
                bytes: b"[node]\n".to_vec()
            }]
        );
    }

    #[test]
    fn the_envelope_has_payload_signature_and_key() {
        let (pkcs8, public) = key();
        let bytes = config(&pkcs8);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(v["key"], key_id(&public));
        let payload: serde_json::Value =
            serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["kind"], "config");
        assert_eq!(payload["files"][0]["size"], 7);
    }

    #[test]
    fn another_key_is_untrusted_and_a_forged_key_id_does_not_verify() {
        let (pkcs8, _) = key();
        let (_, other) = key();
        let bytes = config(&pkcs8);
        assert!(matches!(
            verify(&bytes, &[other]),
            Err(BundleError::UntrustedKey { .. })
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["key"] = key_id(&other).into();
        let forged = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            verify(&forged, &[other]),
            Err(BundleError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_changed_payload_does_not_verify() {
        let (pkcs8, public) = key();
        let bytes = config(&pkcs8);
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let payload = v["payload"]
            .as_str()
            .unwrap()
            .replace("\"version\":3", "\"version\":4");
        v["payload"] = payload.into();
        let changed = serde_json::to_vec(&v).unwrap();
        assert_eq!(
            verify(&changed, &[public]),
            Err(BundleError::BadSignature {
                key: key_id(&public)
            })
        );
    }

    #[test]
    fn every_prefix_is_truncated_or_malformed() {
        let (pkcs8, public) = key();
        let bytes = config(&pkcs8);
        let body = bytes.len() - 1; // without the final newline
        for cut in 0..body {
            match verify(&bytes[..cut], &[public]) {
                Err(BundleError::Truncated { size }) => assert_eq!(size, cut),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        assert!(verify(&bytes[..body], &[public]).is_ok());
    }

    #[test]
    fn unsafe_names_are_refused_by_verify_even_when_signed() {
        let (pkcs8, public) = key();
        for (name, why) in [
            ("../etc/passwd", "leads out of the set with `..`"),
            ("..", "leads out of the set with `..`"),
            ("a/b.toml", "is a path, not a file name"),
            ("a\\b.toml", "is a path, not a file name"),
            (".hidden", "starts with `.`"),
            ("", "is empty"),
            ("a\nb", "holds a control character"),
        ] {
            let bytes = signed(&payload_with_file(name, b"x"), &pkcs8);
            assert_eq!(
                verify(&bytes, &[public]),
                Err(BundleError::UnsafeName {
                    name: format!("{name:?}"),
                    why
                }),
                "{name:?}"
            );
        }
        let bytes = signed(&payload_with_file("ok.toml", b"x"), &pkcs8);
        assert!(verify(&bytes, &[public]).is_ok());
    }

    #[test]
    fn sign_refuses_what_verify_would_refuse() {
        let (pkcs8, _) = key();
        let file = |n: &str| (n.to_owned(), vec![1u8]);
        let sign = |kind, version, files| sign(kind, version, &Hospital::Any, files, at(), &pkcs8);
        assert_eq!(
            sign(Kind::Config, 0, vec![file("a.toml")]),
            Err(BundleError::BadVersion)
        );
        assert_eq!(
            sign(Kind::Config, 1, vec![file("a.toml"), file("b.toml")]),
            Err(BundleError::ConfigFileCount { count: 2 })
        );
        assert_eq!(
            sign(Kind::ModelSet, 1, vec![file("a.onnx")]),
            Err(BundleError::NoManifest)
        );
        assert_eq!(
            sign(Kind::ModelSet, 1, vec![file(MANIFEST), file(MANIFEST)]),
            Err(BundleError::DuplicateName {
                name: "\"manifest.toml\"".to_owned()
            })
        );
        assert!(matches!(
            sign(Kind::ModelSet, 1, vec![file(MANIFEST), file("../x")]),
            Err(BundleError::UnsafeName { .. })
        ));
        assert_eq!(
            super::sign(
                Kind::Config,
                1,
                &Hospital::Any,
                vec![file("a")],
                at(),
                b"nope"
            ),
            Err(BundleError::BadKey)
        );
    }

    #[test]
    fn a_tampered_file_is_named_not_quoted() {
        let (pkcs8, public) = key();
        let mut payload: serde_json::Value =
            serde_json::from_str(&payload_with_file("h.toml", b"secret-ward")).unwrap();
        payload["files"][0]["content"] = STANDARD.encode(b"secret-warx").into();
        let bytes = signed(&payload.to_string(), &pkcs8);
        let e = verify(&bytes, &[public]).unwrap_err();
        assert_eq!(
            e,
            BundleError::DigestMismatch {
                name: "\"h.toml\"".to_owned()
            }
        );
        payload["files"][0]["content"] = STANDARD.encode(b"secret-wardX").into();
        let e = verify(&signed(&payload.to_string(), &pkcs8), &[public]).unwrap_err();
        assert!(matches!(
            e,
            BundleError::SizeMismatch {
                declared: 11,
                actual: 12,
                ..
            }
        ));
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn malformed_payloads_and_envelopes_do_not_quote_values() {
        let (pkcs8, public) = key();
        let e = verify(
            &signed(r#"{"kind":"config","version":"secret"}"#, &pkcs8),
            &[public],
        )
        .unwrap_err();
        assert!(matches!(e, BundleError::BadPayload { .. }), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = verify(br#"{"payload": 1, "signature": "", "key": ""}"#, &[public]).unwrap_err();
        assert!(matches!(e, BundleError::Malformed { .. }), "{e}");
        let e = verify(br#""secret""#, &[public]).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = verify(
            br#"{"payload": "", "signature": "", "key": "", "extra": 1}"#,
            &[public],
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn payload_fields_are_checked() {
        let (pkcs8, public) = key();
        let base = payload_with_file("h.toml", b"x");
        let with = |from: &str, to: &str| {
            let p = base.replace(from, to);
            assert_ne!(p, base);
            verify(&signed(&p, &pkcs8), &[public]).unwrap_err()
        };
        assert_eq!(
            with("\"version\":1", "\"version\":0"),
            BundleError::BadVersion
        );
        assert_eq!(
            with("\"hospital\":\"*\"", "\"hospital\":\"a b\""),
            BundleError::BadHospital
        );
        assert!(matches!(
            with("\"kind\":\"config\"", "\"kind\":\"firmware\""),
            BundleError::BadPayload { .. }
        ));
        assert!(matches!(
            with("2026-12-05T15:00:00Z", "yesterday"),
            BundleError::BadPayload { .. }
        ));
        let hospital = base.replace("\"hospital\":\"*\"", "\"hospital\":\"other-hospital\"");
        let bundle = verify(&signed(&hospital, &pkcs8), &[public]).unwrap();
        assert_eq!(bundle.hospital.as_str(), "other-hospital");
    }

    #[test]
    fn file_contents_are_not_in_debug_output() {
        let f = BundleFile {
            name: "a".to_owned(),
            bytes: b"secret".to_vec(),
        };
        assert_eq!(format!("{f:?}"), "BundleFile { name: \"a\", size: 6 }");
    }
}
