//! `hms-edge backup (--config FILE | --data-dir DIR) --out FILE`: a
//! consistent, fsynced, integrity-checked snapshot, safe while the
//! appliance runs.

use std::path::PathBuf;

use clap::Args;

use super::{Location, Outcome, data_dir};

#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    #[command(flatten)]
    location: Location,
    /// The snapshot file to write (must not exist).
    #[arg(long)]
    out: PathBuf,
}

pub(super) fn backup(args: BackupArgs) -> Outcome {
    let dir = data_dir(&args.location)?;
    let b = crate::store::backup::backup(&dir, &args.out)?;
    println!(
        "backup: {} ({} events, {} bytes, integrity ok)",
        b.file.display(),
        b.events,
        b.bytes
    );
    Ok(())
}
