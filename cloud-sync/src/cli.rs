//! The `hms-cloud` subcommands that do more than wire things together:
//! `enroll`, `enroll-primary`, `promote`, `unfence`,
//! `token create | list | revoke`, `keygen`,
//! `fleet keygen` and `empi train` (`run` is [`crate::cloud::Cloud`]). Each prints what it did
//! on stdout and fails with a [`Failure`], which says the exit code: 64 for
//! bad usage or configuration, 1 for anything else. What they change in the
//! registry (tokens, enrolments) is audited there with the login of who ran
//! them (`cli:LOGIN`).

use std::path::{Path, PathBuf};

use hms_domain::{HospitalId, NodeId, RegionId};

use crate::config::{self, CloudConfig, Mode};
use crate::empi::model::{MAX_SAMPLE, MIN_TRAIN_RECORDS, ModelError, TrainSettings, train_stored};
use crate::enrolment::{EnrolError, Enrolled, Enrolment};
use crate::store::registry::{NewOperatorToken, OperatorTokenRow, Revoked, Scopes, TokenError};

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or configuration (exit code 64).
    Usage(String),
    /// A runtime failure or a refusal (exit code 1).
    Runtime(anyhow::Error),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 64,
            Failure::Runtime(_) => 1,
        }
    }

    /// A runtime failure described by `message`.
    pub fn runtime(message: String) -> Failure {
        Failure::Runtime(anyhow::Error::msg(message))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) => f.write_str(m),
            Failure::Runtime(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<EnrolError> for Failure {
    fn from(e: EnrolError) -> Self {
        match e {
            EnrolError::Rejected(r) => Failure::Runtime(r.into()),
            e @ EnrolError::AlreadyEnrolled { .. } => {
                Failure::runtime(format!("{e}: give --replace to re-key it (audited)"))
            }
            EnrolError::Store(e) => Failure::Runtime(e),
        }
    }
}

impl From<ModelError> for Failure {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Store(e) => Failure::Runtime(e),
            other => Failure::Runtime(other.into()),
        }
    }
}

/// Loads a configuration file (its errors are usage errors).
pub fn load(config: &Path) -> Result<CloudConfig, Failure> {
    config::load(config).map_err(Failure::Usage)
}

fn read_key(file: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))
}

/// Who runs this command, for the registry's audit: `cli:LOGIN`
/// (`SUDO_USER`, else `USER`, else `LOGNAME`).
pub fn operator_login() -> String {
    let login = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{login}")
}

/// `hms-cloud enroll`: enrols a hospital's appliance (a hospital of another
/// region is refused). The same enrolment again changes nothing; another
/// node or key for an enrolled hospital needs `replace` (audited).
pub fn enroll(
    config: &Path,
    hospital: HospitalId,
    region: RegionId,
    node: NodeId,
    public_key: &Path,
    replace: bool,
) -> Result<(), Failure> {
    let cfg = load(config)?;
    let key = read_key(public_key)?;
    let (reg, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    let done = crate::enrolment::enroll(
        &reg,
        &db,
        Enrolment {
            hospital: hospital.clone(),
            region,
            node,
            public_key: key,
        },
        replace,
        &operator_login(),
        hms_domain::Timestamp::now().as_millis(),
    )?;
    match done {
        Enrolled::Unchanged => println!("{hospital} is enrolled in {} already", cfg.region),
        Enrolled::Replaced { previous } => {
            println!(
                "re-keyed {hospital} in {} (node was {previous})",
                cfg.region
            );
        }
        _ => println!("enrolled {hospital} in {}", cfg.region),
    }
    Ok(())
}

/// `hms-cloud enroll-primary`: on a replica, accepts replication from the
/// primary of `region` (which must be in `allowed_dr_regions`).
pub fn enroll_primary(config: &Path, region: RegionId, public_key: &Path) -> Result<(), Failure> {
    let cfg = load(config)?;
    if cfg.mode != Mode::Replica {
        return Err(Failure::Usage(format!(
            "{}: primaries are enrolled on a replica (mode = \"replica\")",
            config.display()
        )));
    }
    let key = read_key(public_key)?;
    let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    crate::dr::enroll_primary(&db, &cfg.allowed_dr_regions, &region, &key)?;
    println!(
        "enrolled the primary of {region} on the replica in {}",
        cfg.region
    );
    Ok(())
}

/// `hms-cloud promote`: makes this DR replica serve the appliances of
/// `hospitals` (none: every hospital whose enrolment was replicated here),
/// all or none; one line per hospital on stdout. Refused (exit 1, nothing
/// promoted) for a hospital without a replicated enrolment, or one this
/// replica is behind on unless `force`. A running replica serves them
/// within a second. Audited as `promote`.
pub fn promote(config: &Path, hospitals: &[HospitalId], force: bool) -> Result<(), Failure> {
    let cfg = load(config)?;
    if cfg.mode != Mode::Replica {
        return Err(Failure::Usage(format!(
            "{}: only a DR replica (mode = \"replica\") is promoted; this is a primary",
            config.display()
        )));
    }
    let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    let open = cfg.open_stores().map_err(Failure::Runtime)?;
    let now = hms_domain::Timestamp::now();
    let promoted = crate::takeover::promote(
        &db,
        &open,
        hospitals,
        force,
        &operator_login(),
        now.as_millis(),
    )
    .map_err(|e| match e {
        crate::takeover::PromoteError::Store(e) => Failure::Runtime(e),
        refused => Failure::runtime(refused.to_string()),
    })?;
    if promoted.is_empty() {
        return Err(Failure::runtime(
            "nothing to promote: no hospital's enrolment was replicated here yet".into(),
        ));
    }
    for p in &promoted {
        let when = |ms: i64| hms_domain::Timestamp::from_millis(ms).to_rfc3339();
        match p.already_ms {
            Some(at) => println!("{}: promoted already, at {}", p.hospital, when(at)),
            None if p.behind() > 0 => println!(
                "{}: promoted (forced): holds seq {} of the {} its primary reported at {}; its \
                 appliance resends the {} missing events it still holds",
                p.hospital,
                p.held_seq,
                p.primary_head,
                when(p.reported_ms),
                p.behind()
            ),
            None => println!(
                "{}: promoted: holds seq {}, all its primary reported at {}",
                p.hospital,
                p.held_seq,
                when(p.reported_ms)
            ),
        }
    }
    Ok(())
}

/// `hms-cloud unfence`: lets this primary serve `hospital` again after its
/// region was re-paired (audited as `unfence`); refused when it is not
/// fenced.
pub fn unfence(config: &Path, hospital: &HospitalId) -> Result<(), Failure> {
    let cfg = load(config)?;
    let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    let now = hms_domain::Timestamp::now().as_millis();
    if !db
        .unfence(hospital, now, &operator_login())
        .map_err(Failure::Runtime)?
    {
        return Err(Failure::runtime(format!(
            "hospital {hospital} is not fenced here"
        )));
    }
    println!(
        "{hospital}: unfenced; this cloud serves its appliance again (a running instance within \
         a second)"
    );
    Ok(())
}

/// `hms-cloud token create`: prints a new operator API token (stored
/// hashed) as the only line of stdout; what it may do goes to stderr.
/// `scopes` are scope names (`read`, `empi`, `fleet`, `enrol`, `admin`);
/// none gives `admin`, as every token had before scopes. `expires` is
/// `Nd`, `Nh`, `Nm`, `Ns` or an RFC 3339 time.
pub fn create_token(
    config: &Path,
    name: &str,
    scopes: &[String],
    expires: Option<&str>,
) -> Result<(), Failure> {
    let now = hms_domain::Timestamp::now();
    let scopes = if scopes.is_empty() {
        Scopes::ADMIN
    } else {
        Scopes::parse(scopes.iter().map(String::as_str)).map_err(Failure::Usage)?
    };
    let expires = expires
        .map(|e| hms_domain::time::parse_expiry(e, now))
        .transpose()
        .map_err(Failure::Usage)?;
    let cfg = load(config)?;
    let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    let token = db
        .create_operator_token(
            &NewOperatorToken {
                name,
                scopes,
                expires_ms: expires.map(hms_domain::Timestamp::as_millis),
                by: &operator_login(),
            },
            now.as_millis(),
        )
        .map_err(|e| match e {
            TokenError::Store(e) => Failure::Runtime(e),
            // A refusal (exit 1), as before scopes.
            other => Failure::runtime(other.to_string()),
        })?;
    println!("{token}");
    eprintln!(
        "hms-cloud: created token {name:?} with scopes {scopes}{}, expires {}",
        if scopes == Scopes::ADMIN {
            " (every scope)"
        } else {
            ""
        },
        expires.map_or_else(|| "never".to_owned(), |t| seconds(t.as_millis()))
    );
    Ok(())
}

use hms_domain::time::rfc3339_seconds as seconds;

fn status(row: &OperatorTokenRow, now_ms: i64) -> &'static str {
    hms_domain::time::credential_status(row.revoked_ms, row.expires_ms, now_ms)
}

/// `hms-cloud token list`: name, scopes, created, expires and status of
/// each operator token (revoked ones with `all`), as a table or one JSON
/// object per line; never the token.
pub fn list_tokens(config: &Path, all: bool, as_json: bool) -> Result<(), Failure> {
    let cfg = load(config)?;
    let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    let now = hms_domain::Timestamp::now().as_millis();
    let rows: Vec<OperatorTokenRow> = db
        .tokens()
        .map_err(Failure::Runtime)?
        .into_iter()
        .filter(|r| all || r.revoked_ms.is_none())
        .collect();
    if as_json {
        for r in &rows {
            println!(
                "{}",
                serde_json::json!({
                    "name": r.name,
                    "scopes": r.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "created": seconds(r.created_ms),
                    "expires": r.expires_ms.map(seconds),
                    "revoked": r.revoked_ms.map(seconds),
                    "status": status(r, now),
                })
            );
        }
        return Ok(());
    }
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.scopes.to_string(),
                seconds(r.created_ms),
                r.expires_ms.map_or_else(|| "never".to_owned(), seconds),
                status(r, now).to_owned(),
            ]
        })
        .collect();
    let head = ["NAME", "SCOPES", "CREATED", "EXPIRES", "STATUS"].map(str::to_owned);
    let mut width = [0usize; 5];
    for row in std::iter::once(&head).chain(&table) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&table) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(width).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{line}");
    }
    Ok(())
}

/// `hms-cloud token revoke NAME`: refused from the next request on.
/// Revoking a revoked token again succeeds and changes nothing; an unknown
/// name is refused (exit 1).
pub fn revoke_token(config: &Path, name: &str) -> Result<(), Failure> {
    let cfg = load(config)?;
    let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
    let now = hms_domain::Timestamp::now().as_millis();
    match db
        .revoke_token(name, now, &operator_login())
        .map_err(Failure::Runtime)?
    {
        Revoked::Revoked(_) => println!("revoked token {name:?}"),
        Revoked::Already => println!("token {name:?} was revoked already"),
        Revoked::Unknown => {
            return Err(Failure::runtime(format!(
                "no operator token is named {name:?}; `hms-cloud token list` shows them"
            )));
        }
    }
    Ok(())
}

/// `hms-cloud empi train`: trains the regional EMPI's model on its records
/// and stores it as the active one.
pub fn empi_train(config: &Path, sample: usize, seed: u64) -> Result<(), Failure> {
    let cfg = load(config)?;
    if cfg.mode != Mode::Primary || !cfg.empi {
        return Err(Failure::Usage(format!(
            "{}: this cloud runs no regional EMPI (it runs on a primary with empi = true)",
            config.display()
        )));
    }
    if !(MIN_TRAIN_RECORDS..=MAX_SAMPLE).contains(&sample) {
        return Err(Failure::Usage(format!(
            "--sample is a number of records from {MIN_TRAIN_RECORDS} to {MAX_SAMPLE}"
        )));
    }
    let mut settings = TrainSettings {
        sample,
        ..TrainSettings::default()
    };
    settings.config.seed = seed;
    let info = if cfg.backend == crate::config::Backend::Postgres {
        // The region's EMPI, wherever it runs.
        let (_, db) = cfg.open_registry().map_err(Failure::Runtime)?;
        let db = crate::store::empi::EmpiDb::shared(std::sync::Arc::new(db))
            .map_err(Failure::Runtime)?;
        crate::empi::model::train_stored_in(db, &settings, "cli")?
    } else {
        train_stored(&cfg.data_dir, &settings, "cli")?
    };
    let report = info.report.as_ref();
    println!(
        "trained EMPI model {} on {} of {} records (EM: {} iterations, {}); active: a running \
         hms-cloud installs it within seconds, otherwise it is in force from the next start",
        info.version,
        info.sampled.unwrap_or(0),
        info.records.unwrap_or(0),
        report.map_or(0, |r| r.iterations),
        if report.is_some_and(|r| r.converged) {
            "converged"
        } else {
            "not converged"
        },
    );
    Ok(())
}

/// `hms-cloud keygen`: a primary's DR key pair: `out` (PKCS#8, mode 0600,
/// never overwritten) and `out.pub` (the raw 32-byte public key).
pub fn keygen(out: &Path) -> Result<(), Failure> {
    let (public, pubkey) = write_key_pair(out)?;
    println!("private key: {} (keep on the primary)", out.display());
    println!(
        "public key:  {} (on the replica: hms-cloud enroll-primary --public-key FILE)",
        public.display()
    );
    println!("{}", hms_domain::event::to_hex(&pubkey));
    Ok(())
}

/// `hms-cloud fleet keygen`: the fleet's command-signing key pair: `out`
/// (PKCS#8, mode 0600, never overwritten; the cloud's `[fleet] key_file`)
/// and `out.pub` (the raw 32-byte public key, the appliances' `[fleet]
/// command_key`).
pub fn fleet_keygen(out: &Path) -> Result<(), Failure> {
    let (public, pubkey) = write_key_pair(out)?;
    println!(
        "private key: {} (keep on the cloud: [fleet] key_file)",
        out.display()
    );
    println!(
        "public key:  {} (on every appliance: [fleet] command_key)",
        public.display()
    );
    println!("{}", hms_domain::event::to_hex(&pubkey));
    Ok(())
}

/// Writes a new Ed25519 key pair: `out` (PKCS#8, mode 0600, created new:
/// an existing file is a refusal, exit 1) and `out.pub` (raw 32 bytes).
/// Returns the public key's path and bytes.
fn write_key_pair(out: &Path) -> Result<(PathBuf, Vec<u8>), Failure> {
    use std::io::Write;
    let public = PathBuf::from(format!("{}.pub", out.display()));
    if out.exists() {
        return Err(Failure::runtime(format!(
            "{} exists; a key is never replaced silently",
            out.display()
        )));
    }
    let (pkcs8, pubkey) =
        cloud_sync_client::generate_key().map_err(|e| Failure::runtime(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let write_private = || -> std::io::Result<()> {
        let mut f = opts.open(out)?;
        f.write_all(&pkcs8)?;
        f.sync_all()
    };
    write_private().map_err(|e| Failure::runtime(format!("{}: {e}", out.display())))?;
    std::fs::write(&public, &pubkey)
        .map_err(|e| Failure::runtime(format!("{}: {e}", public.display())))?;
    Ok((public, pubkey))
}
