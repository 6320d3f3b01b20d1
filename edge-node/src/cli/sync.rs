//! `hms-edge sync keygen`: the appliance's sync key pair.

use anyhow::Context;
use clap::Subcommand;

use super::{Failure, Location, Outcome, data_dir};

#[derive(Debug, Subcommand)]
pub(super) enum SyncCmd {
    /// Make this appliance's sync key pair: `sync-key.pk8` (private, mode 0600,
    /// never leaves the appliance) and `sync-key.pub` (raw 32 bytes, for
    /// `hms-cloud enroll --public-key`). Refuses to replace an existing key.
    Keygen(Location),
}

pub(super) fn sync(cmd: SyncCmd) -> Outcome {
    let SyncCmd::Keygen(location) = cmd;
    let dir = data_dir(&location)?;
    let (private, public) = (dir.join("sync-key.pk8"), dir.join("sync-key.pub"));
    if private.exists() {
        return Err(Failure::Failed(format!(
            "{} exists; a key is never replaced silently",
            private.display()
        )));
    }
    std::fs::create_dir_all(&dir).context("creating the data dir")?;
    let (pkcs8, pubkey) =
        cloud_sync_client::generate_key().map_err(|e| Failure::Failed(e.to_string()))?;
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&private).context("writing the private key")?;
        f.write_all(&pkcs8).context("writing the private key")?;
        f.sync_all().context("syncing the private key")?;
    }
    std::fs::write(&public, &pubkey).context("writing the public key")?;
    println!(
        "private key: {} (keep on this appliance)",
        private.display()
    );
    println!(
        "public key:  {} (enrol it: hms-cloud enroll --public-key FILE)",
        public.display()
    );
    println!("{}", hms_domain::event::to_hex(&pubkey));
    Ok(())
}
