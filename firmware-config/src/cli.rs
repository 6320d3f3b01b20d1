//! What the `hms-config` commands do, apart from parsing their arguments.
//!
//! Output goes to the writers given, so that the commands can be tested
//! without a process; the binary passes stdout and stderr.
//!
//! `keygen`, `sign` and `verify` make and check signed bundles
//! ([`crate::bundle`], docs/bundles.md); they are the only commands that
//! write files, and they never replace one.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::bundle::{self, Hospital, Kind, MANIFEST, MAX_BUNDLE_BYTES};
use crate::{example, lint_config, read};

/// Exit status: success (no error; warnings allowed).
pub const EXIT_OK: u8 = 0;
/// Exit status: some file has an error.
pub const EXIT_INVALID: u8 = 1;
/// Exit status: bad command line (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit status: an output file exists or cannot be created (`EX_CANTCREAT`).
pub const EXIT_CANT_CREATE: u8 = 73;

/// `hms-config lint FILE...`: prints every diagnostic to `err`, one per line,
/// and one summary line per file to `out`:
/// `FILE: ok (N beds, M units)` (with `, W warnings` when there are some) or
/// `FILE: N errors, M warnings`.
///
/// Returns [`EXIT_OK`] when no file has an error, [`EXIT_INVALID`] otherwise.
pub fn lint_files(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let mut status = EXIT_OK;
    for path in files {
        let (config, diagnostics) = match read(path) {
            Ok(text) => lint_config(&text, path),
            Err(d) => (None, vec![d]),
        };
        for d in &diagnostics {
            writeln!(err, "{d}")?;
        }
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = diagnostics.len() - errors;
        let name = path.display();
        match config {
            Some(config) if errors == 0 => {
                let beds = config.beds.len();
                let units = config.units.len();
                if warnings == 0 {
                    writeln!(out, "{name}: ok ({beds} beds, {units} units)")?;
                } else {
                    writeln!(
                        out,
                        "{name}: ok ({beds} beds, {units} units), {}",
                        count(warnings, "warning")
                    )?;
                }
            }
            _ => {
                status = EXIT_INVALID;
                writeln!(
                    out,
                    "{name}: {}, {}",
                    count(errors, "error"),
                    count(warnings, "warning")
                )?;
            }
        }
    }
    Ok(status)
}

/// `hms-config example --beds N --hospital ID`: writes the generated file.
pub fn write_example(beds: usize, hospital: &str, out: &mut dyn Write) -> io::Result<u8> {
    out.write_all(example(beds, hospital).as_bytes())?;
    Ok(EXIT_OK)
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The public key's path for a private key's: `KEY.pub`.
pub fn public_key_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// `hms-config keygen --out KEY`: a new bundle key pair, `KEY` (PKCS#8, mode
/// 0600) and `KEY.pub` (the raw 32-byte public key the appliances trust).
///
/// Refuses, with [`EXIT_CANT_CREATE`], when either file exists: a key is
/// never replaced.
pub fn keygen(key: &Path, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<u8> {
    let public = public_key_path(key);
    for path in [key, public.as_path()] {
        if path.symlink_metadata().is_ok() {
            writeln!(
                err,
                "hms-config: {} exists; a key is never replaced",
                path.display()
            )?;
            return Ok(EXIT_CANT_CREATE);
        }
    }
    let (pkcs8, pubkey) = match bundle::generate_key() {
        Ok(pair) => pair,
        Err(e) => {
            writeln!(err, "hms-config: {e}")?;
            return Ok(EXIT_INVALID);
        }
    };
    if let Err(e) = create_new(key, &pkcs8, true) {
        writeln!(err, "hms-config: cannot create {}: {e}", key.display())?;
        return Ok(EXIT_CANT_CREATE);
    }
    if let Err(e) = create_new(&public, &pubkey, false) {
        writeln!(err, "hms-config: cannot create {}: {e}", public.display())?;
        return Ok(EXIT_CANT_CREATE);
    }
    writeln!(
        out,
        "private key: {} (keep it off the appliances; it signs bundles)",
        key.display()
    )?;
    writeln!(
        out,
        "public key:  {} (the appliances trust it)",
        public.display()
    )?;
    writeln!(out, "key id:      {}", bundle::key_id(&pubkey))?;
    Ok(EXIT_OK)
}

/// `hms-config sign --key KEY --version N [--hospital ID|*] --out BUNDLE
/// FILE|DIR`: a FILE is a `config` bundle and must lint clean (strict; its
/// diagnostics are printed and nothing is written otherwise), a DIR is a
/// `model_set` bundle of its regular files (subdirectories are ignored;
/// symlinks, other non-regular files and names that are not plain are
/// refused; `manifest.toml` is required).
///
/// Returns [`EXIT_INVALID`] when the input or the key is refused,
/// [`EXIT_CANT_CREATE`] when `bundle_path` exists or cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    key: &Path,
    version: u64,
    hospital: &Hospital,
    bundle_path: &Path,
    input: &Path,
    now: jiff::Timestamp,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u8> {
    if bundle_path.symlink_metadata().is_ok() {
        writeln!(
            err,
            "hms-config: {} exists; a bundle is never replaced",
            bundle_path.display()
        )?;
        return Ok(EXIT_CANT_CREATE);
    }
    let pkcs8 = match std::fs::read(key) {
        Ok(bytes) => bytes,
        Err(e) => {
            writeln!(err, "hms-config: cannot read {}: {e}", key.display())?;
            return Ok(EXIT_INVALID);
        }
    };
    let meta = match std::fs::metadata(input) {
        Ok(meta) => meta,
        Err(e) => {
            writeln!(err, "hms-config: cannot read {}: {e}", input.display())?;
            return Ok(EXIT_INVALID);
        }
    };
    let (kind, files) = if meta.is_dir() {
        match model_set_files(input, err)? {
            Some(files) => (Kind::ModelSet, files),
            None => return Ok(EXIT_INVALID),
        }
    } else {
        match config_file(input, out, err)? {
            Some(file) => (Kind::Config, vec![file]),
            None => return Ok(EXIT_INVALID),
        }
    };
    let count = files.len();
    let bytes = match bundle::sign(kind, version, hospital, files, now, &pkcs8) {
        Ok(bytes) => bytes,
        Err(e) => {
            writeln!(err, "hms-config: refused to sign {}: {e}", input.display())?;
            return Ok(EXIT_INVALID);
        }
    };
    if let Err(e) = create_new(bundle_path, &bytes, false) {
        writeln!(
            err,
            "hms-config: cannot create {}: {e}",
            bundle_path.display()
        )?;
        return Ok(EXIT_CANT_CREATE);
    }
    let key_id = bundle::public_key(&pkcs8)
        .map(|k| bundle::key_id(&k))
        .unwrap_or_default();
    writeln!(
        out,
        "{}: {kind} version {version} for {hospital}, {}, signed by {key_id}",
        bundle_path.display(),
        count_files(count)
    )?;
    Ok(EXIT_OK)
}

/// `hms-config verify --key KEY.pub... BUNDLE`: prints `ok: <kind> version
/// <N> for <hospital>, <n> file(s), signed by <key id>` and returns
/// [`EXIT_OK`], or prints `refused: <reason>` and returns [`EXIT_INVALID`].
/// Both lines go to `out`; a key file that cannot be read or is not a raw
/// 32-byte public key is an error on `err` ([`EXIT_INVALID`]).
pub fn verify(
    keys: &[PathBuf],
    bundle_path: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<u8> {
    let mut trusted = Vec::with_capacity(keys.len());
    for path in keys {
        match std::fs::read(path) {
            Ok(bytes) => match <[u8; 32]>::try_from(bytes.as_slice()) {
                Ok(key) => trusted.push(key),
                Err(_) => {
                    writeln!(
                        err,
                        "hms-config: {} is not a public key (expected the raw 32 bytes of KEY.pub, found {} bytes)",
                        path.display(),
                        bytes.len()
                    )?;
                    return Ok(EXIT_INVALID);
                }
            },
            Err(e) => {
                writeln!(err, "hms-config: cannot read {}: {e}", path.display())?;
                return Ok(EXIT_INVALID);
            }
        }
    }
    let bytes = match read_bounded(bundle_path) {
        Ok(bytes) => bytes,
        Err(e) => {
            writeln!(out, "refused: cannot read {}: {e}", bundle_path.display())?;
            return Ok(EXIT_INVALID);
        }
    };
    match bundle::verify(&bytes, &trusted) {
        Ok(b) => {
            writeln!(
                out,
                "ok: {} version {} for {}, {}, signed by {}",
                b.kind,
                b.version,
                b.hospital,
                count_files(b.files.len()),
                b.key_id
            )?;
            Ok(EXIT_OK)
        }
        Err(e) => {
            writeln!(out, "refused: {e}")?;
            Ok(EXIT_INVALID)
        }
    }
}

/// The configuration FILE as a bundle file, if it lints clean (warnings are
/// printed and allowed).
fn config_file(
    path: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<Option<(String, Vec<u8>)>> {
    let Some(name) = file_name(path, err)? else {
        return Ok(None);
    };
    let (config, diagnostics) = match read(path) {
        Ok(text) => lint_config(&text, path),
        Err(d) => (None, vec![d]),
    };
    for d in &diagnostics {
        writeln!(err, "{d}")?;
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    if config.is_none() || errors > 0 {
        writeln!(
            out,
            "{}: {}, {}",
            path.display(),
            count(errors, "error"),
            count(diagnostics.len() - errors, "warning")
        )?;
        writeln!(
            err,
            "hms-config: refused to sign {}: it does not pass `hms-config lint`",
            path.display()
        )?;
        return Ok(None);
    }
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some((name, bytes))),
        Err(e) => {
            writeln!(err, "hms-config: cannot read {}: {e}", path.display())?;
            Ok(None)
        }
    }
}

/// The regular files of a model set's directory, sorted by name;
/// subdirectories are skipped (with a note on `err`).
/// Files to bundle: (name, contents).
type Files = Vec<(String, Vec<u8>)>;

fn model_set_files(dir: &Path, err: &mut dyn Write) -> io::Result<Option<Files>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            writeln!(err, "hms-config: cannot read {}: {e}", dir.display())?;
            return Ok(None);
        }
    };
    let mut files = vec![];
    let mut skipped = vec![];
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                writeln!(err, "hms-config: cannot read {}: {e}", dir.display())?;
                return Ok(None);
            }
        };
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) => {
                writeln!(err, "hms-config: cannot read {}: {e}", path.display())?;
                return Ok(None);
            }
        };
        if file_type.is_dir() {
            skipped.push(entry.file_name().to_string_lossy().into_owned());
            continue;
        }
        if file_type.is_symlink() {
            writeln!(
                err,
                "hms-config: refused to sign {}: {} is a symbolic link; a model set holds only regular files",
                dir.display(),
                path.display()
            )?;
            return Ok(None);
        }
        if !file_type.is_file() {
            writeln!(
                err,
                "hms-config: refused to sign {}: {} is not a regular file",
                dir.display(),
                path.display()
            )?;
            return Ok(None);
        }
        let Some(name) = file_name(&path, err)? else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(bytes) => files.push((name, bytes)),
            Err(e) => {
                writeln!(err, "hms-config: cannot read {}: {e}", path.display())?;
                return Ok(None);
            }
        }
    }
    if !files.iter().any(|(name, _)| name == MANIFEST) {
        writeln!(
            err,
            "hms-config: refused to sign {}: a model set needs {MANIFEST}",
            dir.display()
        )?;
        return Ok(None);
    }
    skipped.sort();
    for name in skipped {
        writeln!(
            err,
            "hms-config: note: {name}/ is a subdirectory of {}; it is not bundled",
            dir.display()
        )?;
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Some(files))
}

/// A file's name as a bundle holds it (UTF-8, plain), or why not on `err`.
fn file_name(path: &Path, err: &mut dyn Write) -> io::Result<Option<String>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        writeln!(
            err,
            "hms-config: refused to sign {}: its file name is not UTF-8",
            path.display()
        )?;
        return Ok(None);
    };
    if let Err(e) = bundle::check_name(name) {
        writeln!(err, "hms-config: refused to sign {}: {e}", path.display())?;
        return Ok(None);
    }
    Ok(Some(name.to_owned()))
}

/// Reads a bundle file, refusing one larger than [`MAX_BUNDLE_BYTES`] before
/// reading it.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_BUNDLE_BYTES as u64 {
        return Err(io::Error::other(format!(
            "it is {len} bytes, more than the {MAX_BUNDLE_BYTES} a bundle may have"
        )));
    }
    std::fs::read(path)
}

/// Writes a new file (never replacing one), mode 0600 when `private`, and
/// syncs it; a file left half-written is removed.
fn create_new(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if written.is_err() {
        drop(f);
        let _ = std::fs::remove_file(path);
    }
    written
}

fn count_files(n: usize) -> String {
    count(n, "file")
}
