//! The `hms-cloud` subcommands that do more than wire things together:
//! `enroll`, `enroll-primary`, `token create`, `keygen` and `empi train`
//! (`run` is [`crate::cloud::Cloud`]). Each prints what it did on stdout
//! and fails with a [`Failure`], which says the exit code: 64 for bad usage
//! or configuration, 1 for anything else.

use std::path::{Path, PathBuf};

use hms_domain::{HospitalId, NodeId, RegionId};

use crate::config::{self, CloudConfig, Mode};
use crate::empi::model::{MAX_SAMPLE, MIN_TRAIN_RECORDS, ModelError, TrainSettings, train_stored};
use crate::enrolment::{EnrolError, Enrolment, enroll_durably, open_registry};

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

/// `hms-cloud enroll`: enrols a hospital's appliance (a hospital of another
/// region is refused).
pub fn enroll(
    config: &Path,
    hospital: HospitalId,
    region: RegionId,
    node: NodeId,
    public_key: &Path,
) -> Result<(), Failure> {
    let cfg = load(config)?;
    let key = read_key(public_key)?;
    let (reg, db) = open_registry(&cfg.data_dir, cfg.region.clone()).map_err(Failure::Runtime)?;
    enroll_durably(
        &reg,
        &db,
        Enrolment {
            hospital: hospital.clone(),
            region,
            node,
            public_key: key,
        },
    )?;
    println!("enrolled {hospital} in {}", cfg.region);
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
    let (_, db) = open_registry(&cfg.data_dir, cfg.region.clone()).map_err(Failure::Runtime)?;
    crate::dr::enroll_primary(&db, &cfg.allowed_dr_regions, &region, &key)?;
    println!(
        "enrolled the primary of {region} on the replica in {}",
        cfg.region
    );
    Ok(())
}

/// `hms-cloud token create`: prints a new operator API token (stored hashed).
pub fn create_token(config: &Path, name: &str) -> Result<(), Failure> {
    let cfg = load(config)?;
    let (_, db) = open_registry(&cfg.data_dir, cfg.region.clone()).map_err(Failure::Runtime)?;
    let token = db
        .create_token(name, hms_domain::Timestamp::now().as_millis())
        .map_err(Failure::Runtime)?;
    println!("{token}");
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
    let info = train_stored(&cfg.data_dir, &settings, "cli")?;
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
    println!("private key: {} (keep on the primary)", out.display());
    println!(
        "public key:  {} (on the replica: hms-cloud enroll-primary --public-key FILE)",
        public.display()
    );
    println!("{}", hms_domain::event::to_hex(&pubkey));
    Ok(())
}
