//! The signed bundles this cloud hosts for its appliances (docs/bundles.md,
//! docs/fleet.md): configuration and model-set bundles an operator uploads
//! (`POST /api/v1/fleet/bundles`) and the fleet's `apply_bundle` command
//! names by their SHA-256, for the appliance to fetch (`GET
//! /sync/v1/bundles/{sha256}`).
//!
//! [`describe`] checks that bytes are a bundle: the envelope (`payload`,
//! `signature`, `key`, strings, nothing else) and, of its payload, only
//! `kind`, `version`, `hospital` and the files' `name` and `size`. The
//! cloud holds no bundle key and verifies no signature: the appliances do.
//!
//! [`Bundles`] keeps each one under the data dir as
//! `bundles/<sha256>.bundle`, written durably (a temporary file, synced,
//! renamed, the directory synced), beside `bundles/<sha256>.json`, what
//! [`describe`] said of it (for the list; read again from the bundle when
//! missing). A bundle is held once its `.bundle` file is there; storing the
//! same bytes again changes nothing. With several instances of a region
//! (`backend = "postgres"`, [`Bundles::shared`]) the region's database
//! holds every bundle, whichever instance took the upload, and the files
//! are each instance's cache of it (bundles never change). Nothing here
//! logs or returns a bundle's contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use hms_domain::HospitalId;
use serde::{Deserialize, Serialize};

use crate::store::registry::RegistryDb;

/// The largest bundle the cloud stores and serves.
pub const MAX_BUNDLE_BYTES: usize = cloud_sync_client::push::MAX_BUNDLE_BYTES;

/// The directory under the data dir.
pub const DIR: &str = "bundles";

/// What a bundle is, as the cloud reads it (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The SHA-256 of the bundle file, 64 lower-case hex digits.
    pub sha256: String,
    /// The bundle file's size, bytes.
    pub size: u64,
    /// `config` or `model_set`.
    pub kind: String,
    /// Its version (1 or more).
    pub version: u64,
    /// `*` or a hospital id.
    pub hospital: String,
    /// Its files' names and sizes, as the payload lists them.
    pub files: Vec<FileSummary>,
}

/// One file of a bundle: its name and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// Its name.
    pub name: String,
    /// Its size, bytes.
    pub size: u64,
}

/// The bundle file: the signed payload, its signature and the key's id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    payload: String,
    // Required strings, not read here: the appliances verify them.
    #[serde(rename = "signature")]
    _signature: String,
    #[serde(rename = "key")]
    _key: String,
}

/// The payload's members the cloud reads (the rest are the appliance's).
#[derive(Deserialize)]
struct Payload {
    kind: String,
    version: u64,
    hospital: String,
    files: Vec<FileSummary>,
}

/// Whether `s` is a SHA-256 as this module names bundles: 64 lower-case
/// hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hms_domain::event::to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// Where a JSON error is, without the text it may quote.
fn at(e: &serde_json::Error) -> String {
    format!("line {} column {}", e.line(), e.column())
}

/// What `bytes` are, if they are a bundle; otherwise why not (naming
/// members, never quoting a value).
pub fn describe(bytes: &[u8]) -> Result<Summary, String> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(format!(
            "it is {} bytes, more than the {MAX_BUNDLE_BYTES} a bundle may have here",
            bytes.len()
        ));
    }
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            format!(
                "its JSON ends early after {} bytes (an incomplete upload?)",
                bytes.len()
            )
        } else {
            format!(
                "it is not the JSON envelope of a bundle, exactly {{\"payload\", \"signature\", \
                 \"key\"}} as strings ({})",
                at(&e)
            )
        }
    })?;
    let payload: Payload = serde_json::from_str(&envelope.payload).map_err(|e| {
        format!(
            "its payload is not a bundle's: it needs \"kind\", \"version\", \"hospital\" and \
             \"files\" with each file's \"name\" and \"size\" ({} of the payload)",
            at(&e)
        )
    })?;
    if !matches!(payload.kind.as_str(), "config" | "model_set") {
        return Err("its payload's \"kind\" must be \"config\" or \"model_set\"".to_owned());
    }
    if payload.version == 0 {
        return Err("its payload's \"version\" must be at least 1".to_owned());
    }
    if payload.hospital != "*" && HospitalId::new(&payload.hospital).is_err() {
        return Err("its payload's \"hospital\" must be `*` or a hospital id".to_owned());
    }
    if payload.files.is_empty() {
        return Err("its payload lists no files".to_owned());
    }
    Ok(Summary {
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        kind: payload.kind,
        version: payload.version,
        hospital: payload.hospital,
        files: payload.files,
    })
}

/// Why a bundle was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes are not a bundle ([`describe`]'s reason).
    #[error("the body is not a bundle: {0}")]
    NotABundle(String),
    /// Writing it failed.
    #[error(transparent)]
    Io(#[from] anyhow::Error),
}

/// A bundle stored, or found already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// What it is.
    pub summary: Summary,
    /// Whether this call stored it (false: it was held already).
    pub created: bool,
}

/// The bundles under a data dir (see the module doc), and in the region's
/// database when it is shared.
#[derive(Debug)]
pub struct Bundles {
    dir: PathBuf,
    /// With several instances (PostgreSQL): where every instance's
    /// uploads are; the files are then a cache of it.
    shared: Option<Arc<RegistryDb>>,
}

/// Makes temporary file names unique within the process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

impl Bundles {
    /// The bundles of `data_dir` (its `bundles/`, made if missing);
    /// temporary files an interrupted upload left are removed.
    pub fn open(data_dir: &Path) -> anyhow::Result<Bundles> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Bundles { dir, shared: None })
    }

    /// The bundles of the region whose shared registry is `db` (with
    /// `backend = "postgres"`), cached under `data_dir` as [`Bundles::open`]
    /// keeps them: an upload through any instance is served by every one.
    pub fn shared(data_dir: &Path, db: Arc<RegistryDb>) -> anyhow::Result<Bundles> {
        let mut b = Bundles::open(data_dir)?;
        b.shared = Some(db);
        Ok(b)
    }

    /// Whether the bundle's file is in this instance's data dir.
    fn cached(&self, sha256: &str) -> bool {
        self.file(sha256, "bundle").is_file()
    }

    fn file(&self, sha256: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.{ext}"))
    }

    /// Whether the bundle `sha256` is held here (false for a string that is
    /// no SHA-256).
    pub fn holds(&self, sha256: &str) -> bool {
        if !is_sha256(sha256) {
            return false;
        }
        self.cached(sha256)
            || self
                .shared
                .as_ref()
                .is_some_and(|db| db.holds_bundle(sha256).unwrap_or(false))
    }

    /// Checks `bytes` ([`describe`]) and stores them, unless held already;
    /// `before` is called with what they are just before a bundle not held
    /// is written (its error stops the store: nothing is written). Blocking.
    pub fn store(
        &self,
        bytes: &[u8],
        before: impl FnOnce(&Summary) -> anyhow::Result<()>,
    ) -> Result<Stored, StoreError> {
        let summary = describe(bytes).map_err(StoreError::NotABundle)?;
        if self.holds(&summary.sha256) {
            return Ok(Stored {
                summary,
                created: false,
            });
        }
        before(&summary)?;
        let json = serde_json::to_vec(&summary).context("writing the bundle's summary")?;
        let mut created = true;
        if let Some(db) = &self.shared {
            let text = String::from_utf8_lossy(&json);
            let now = hms_domain::Timestamp::now().as_millis();
            // Another instance may have stored the same bytes meanwhile.
            created = db.put_bundle(&summary.sha256, &text, bytes, now)?;
        }
        self.cache(&summary.sha256, &json, bytes)?;
        Ok(Stored { summary, created })
    }

    /// Writes a bundle's files under the data dir: its summary, then the
    /// bundle (held once that file is there).
    fn cache(&self, sha256: &str, summary_json: &[u8], bytes: &[u8]) -> anyhow::Result<()> {
        self.write_durably(&self.file(sha256, "json"), summary_json)?;
        self.write_durably(&self.file(sha256, "bundle"), bytes)
    }

    /// Writes `path` whole or not at all: a temporary file of its own,
    /// synced, renamed over `path`, the directory synced.
    fn write_durably(&self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        use std::io::Write;
        let tmp = self.dir.join(format!(
            ".{}.{}.tmp",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.dir.display()))
    }

    /// The bytes of bundle `sha256`; none when it is not held (or the
    /// string is no SHA-256). Blocking.
    pub fn get(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if !is_sha256(sha256) {
            return Ok(None);
        }
        let path = self.file(sha256, "bundle");
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some(db) = &self.shared else {
                    return Ok(None);
                };
                // Uploaded through another instance: kept here from now on.
                let Some(bytes) = db.bundle_bytes(sha256)? else {
                    return Ok(None);
                };
                let summary = describe(&bytes).map_err(|why| {
                    anyhow::anyhow!("the stored bundle {sha256} does not read: {why}")
                })?;
                let json = serde_json::to_vec(&summary).context("the bundle's summary")?;
                if let Err(e) = self.cache(sha256, &json, &bytes) {
                    tracing::warn!(bundle = sha256, error = %format!("{e:#}"), "could not keep a copy of the bundle under the data dir");
                }
                Ok(Some(bytes))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Every bundle held, by kind, version and SHA-256. Blocking.
    pub fn list(&self) -> anyhow::Result<Vec<Summary>> {
        if let Some(db) = &self.shared {
            let mut out = db
                .bundle_summaries()?
                .iter()
                .map(|j| serde_json::from_str::<Summary>(j).context("a stored bundle summary"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            sort(&mut out);
            return Ok(out);
        }
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?;
        let mut out = vec![];
        for e in entries {
            let e = e.with_context(|| format!("reading {}", self.dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(sha) = name.strip_suffix(".bundle").filter(|s| is_sha256(s)) else {
                continue;
            };
            let summary = std::fs::read(self.file(sha, "json"))
                .ok()
                .and_then(|j| serde_json::from_slice::<Summary>(&j).ok())
                .filter(|s| s.sha256 == sha);
            let summary = match summary {
                Some(s) => s,
                None => {
                    let Some(bytes) = self.get(sha)? else {
                        continue;
                    };
                    describe(&bytes).map_err(|why| {
                        anyhow::anyhow!("the stored bundle {sha} does not read: {why}")
                    })?
                }
            };
            out.push(summary);
        }
        sort(&mut out);
        Ok(out)
    }
}

/// By kind, version and SHA-256.
fn sort(list: &mut [Summary]) {
    list.sort_by(|a, b| {
        (a.kind.as_str(), a.version, a.sha256.as_str()).cmp(&(
            b.kind.as_str(),
            b.version,
            b.sha256.as_str(),
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(
        kind: firmware_config::bundle::Kind,
        version: u64,
        files: &[(&str, &[u8])],
    ) -> Vec<u8> {
        let (key, _) = firmware_config::bundle::generate_key().expect("key");
        firmware_config::bundle::sign(
            kind,
            version,
            &firmware_config::bundle::Hospital::Any,
            files
                .iter()
                .map(|(n, b)| ((*n).to_owned(), b.to_vec()))
                .collect(),
            jiff::Timestamp::UNIX_EPOCH,
            &key,
        )
        .expect("sign")
    }

    #[test]
    fn a_bundle_is_described_by_its_payload_without_its_signature_checked() {
        use firmware_config::bundle::Kind;
        let b = bundle(
            Kind::ModelSet,
            7,
            &[("manifest.toml", b"x = 1\n"), ("m.onnx", &[0u8; 100])],
        );
        let s = describe(&b).expect("a bundle");
        assert_eq!(s.sha256, sha256_hex(&b));
        assert_eq!((s.size, s.version), (b.len() as u64, 7));
        assert_eq!((s.kind.as_str(), s.hospital.as_str()), ("model_set", "*"));
        assert_eq!(
            s.files,
            [
                FileSummary {
                    name: "m.onnx".into(),
                    size: 100
                },
                FileSummary {
                    name: "manifest.toml".into(),
                    size: 6
                },
            ]
        );
        // Not a bundle: each says why, never quoting what was sent.
        let mut env: serde_json::Value = serde_json::from_slice(&b).expect("json");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"secret-looking garbage".to_vec(), "not the JSON envelope"),
            (b[..b.len() / 2].to_vec(), "ends early"),
            (
                {
                    let mut e = env.clone();
                    e["extra"] = "secret-looking".into();
                    e.to_string().into_bytes()
                },
                "not the JSON envelope",
            ),
            (
                {
                    env["payload"] = r#"{"kind":"secret-looking","version":1,"hospital":"*","files":[{"name":"a","size":1}]}"#.into();
                    env.to_string().into_bytes()
                },
                "\"kind\" must be",
            ),
            (
                {
                    env["payload"] = r#"{"kind":"config","version":0,"hospital":"*","files":[{"name":"a","size":1}]}"#.into();
                    env.to_string().into_bytes()
                },
                "at least 1",
            ),
            (
                {
                    env["payload"] = r#"{"kind":"config","version":1,"hospital":"secret looking","files":[{"name":"a","size":1}]}"#.into();
                    env.to_string().into_bytes()
                },
                "\"hospital\" must be",
            ),
            (
                {
                    env["payload"] = r#"{"kind":"config","version":1,"hospital":"*"}"#.into();
                    env.to_string().into_bytes()
                },
                "payload is not a bundle's",
            ),
        ];
        for (bytes, want) in cases {
            let why = describe(&bytes).expect_err(want);
            assert!(why.contains(want), "{why}");
            assert!(!why.contains("secret"), "{why}");
        }
    }

    #[test]
    fn bundles_are_stored_once_listed_and_read_back() {
        use firmware_config::bundle::Kind;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Bundles::open(dir.path()).expect("open");
        let a = bundle(Kind::Config, 3, &[("h.toml", b"[node]\n")]);
        let b = bundle(Kind::Config, 2, &[("h.toml", b"[node]\n# two\n")]);
        let mut told = vec![];
        let stored = store
            .store(&a, |s| {
                told.push(s.version);
                Ok(())
            })
            .expect("store");
        assert!(stored.created);
        assert!(store.holds(&stored.summary.sha256));
        let again = store
            .store(&a, |s| {
                told.push(s.version);
                Ok(())
            })
            .expect("again");
        assert!(!again.created, "held already");
        assert_eq!(again.summary, stored.summary);
        assert_eq!(told, [3], "told once, before the first write");
        // What `before` refuses is not written.
        let refused = store.store(&b, |_| anyhow::bail!("audit down"));
        assert!(matches!(refused, Err(StoreError::Io(_))), "{refused:?}");
        assert!(!store.holds(&sha256_hex(&b)));
        store.store(&b, |_| Ok(())).expect("store");
        assert!(matches!(
            store.store(b"nope", |_| Ok(())),
            Err(StoreError::NotABundle(_))
        ));
        let listed = store.list().expect("list");
        assert_eq!(listed.iter().map(|s| s.version).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(
            store.get(&stored.summary.sha256).expect("get"),
            Some(a.clone())
        );
        assert_eq!(store.get(&"0".repeat(64)).expect("get"), None);
        assert_eq!(store.get("../registry.sqlite").expect("get"), None);
        assert!(!store.holds("../x"));
        // A summary lost is read again from the bundle; a temporary file
        // left behind is removed on open.
        std::fs::remove_file(
            dir.path()
                .join(DIR)
                .join(format!("{}.json", stored.summary.sha256)),
        )
        .expect("remove");
        std::fs::write(dir.path().join(DIR).join(".1.1.tmp"), b"half").expect("write");
        let store = Bundles::open(dir.path()).expect("open");
        assert_eq!(store.list().expect("list"), listed);
        assert!(!dir.path().join(DIR).join(".1.1.tmp").exists());
    }

    /// Two instances of a region on one PostgreSQL: a bundle uploaded
    /// through one is held, listed and served by the other, which keeps a
    /// copy under its own data dir; the same bytes again store nothing.
    #[test]
    fn a_bundle_uploaded_through_one_instance_is_served_by_another() {
        let Some(region) = crate::testkit::RegionDb::fresh("bundles") else {
            return;
        };
        let open = || region.open();
        let (dir_a, dir_b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let a = Bundles::shared(dir_a.path(), open()).expect("a");
        let b = Bundles::shared(dir_b.path(), open()).expect("b");
        let bytes = bundle(
            firmware_config::bundle::Kind::Config,
            3,
            &[("hospital.toml", b"x = 1\n")],
        );
        let sha = sha256_hex(&bytes);
        assert!(!b.holds(&sha));
        let stored = a.store(&bytes, |_| Ok(())).expect("store");
        assert!(stored.created);
        assert!(b.holds(&sha), "held by the other instance");
        assert_eq!(b.list().expect("list"), vec![stored.summary.clone()]);
        let cached = dir_b.path().join(DIR).join(format!("{sha}.bundle"));
        assert!(!cached.exists());
        assert_eq!(b.get(&sha).expect("get").as_deref(), Some(&bytes[..]));
        assert!(cached.exists(), "kept under the second data dir");
        assert_eq!(b.get(&sha).expect("again").as_deref(), Some(&bytes[..]));
        let again = b
            .store(&bytes, |_| panic!("not written twice"))
            .expect("again");
        assert!(!again.created);
        assert_eq!(b.get(&"0".repeat(64)).expect("absent"), None);
    }
}
