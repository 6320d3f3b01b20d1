//! `hms-edge restore --from FILE | --from-cloud`: rebuilds an empty data dir
//! from a snapshot or from the events the regional cloud holds, verified
//! before it reports success.

use std::path::PathBuf;

use clap::Args;

use super::{Failure, Location, Outcome, data_dir, load_config, runtime};

#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    #[command(flatten)]
    location: Location,
    /// The snapshot file.
    #[arg(
        long,
        required_unless_present = "from_cloud",
        conflicts_with = "from_cloud"
    )]
    from: Option<PathBuf>,
    /// Rebuild the store from the events the cloud holds for this hospital.
    #[arg(long, requires = "config")]
    from_cloud: bool,
}

pub(super) fn restore(args: RestoreArgs) -> Outcome {
    match (args.from, args.from_cloud) {
        (None, true) => from_cloud(&args.location),
        (Some(from), _) => {
            let dir = data_dir(&args.location)?;
            let r = crate::store::backup::restore(&from, &dir)?;
            println!(
                "restore: ok ({} events, {} beds; hash chain intact, replay == projections)",
                r.events, r.beds
            );
            Ok(())
        }
        (None, false) => Err(Failure::Usage("give --from FILE or --from-cloud".into())),
    }
}

fn from_cloud(location: &Location) -> Outcome {
    let config = location
        .config
        .as_ref()
        .ok_or_else(|| Failure::Usage("--from-cloud needs --config".into()))?;
    let mut cfg = load_config(config)?;
    if let Some(d) = &location.data_dir {
        cfg.store.data_dir = d.clone();
    }
    let settings = crate::sync::uplink::Settings::from_config(&cfg)?.ok_or_else(|| {
        Failure::Usage(format!(
            "{}: --from-cloud needs an [uplink] section",
            config.display()
        ))
    })?;
    let rt = runtime(true)?;
    let client = cloud_sync_client::Client::new(settings.endpoint().clone());
    eprintln!(
        "restore: fetching {}'s events from {}",
        cfg.node.hospital_id,
        settings.endpoint().url()
    );
    let mut shown = 0u64;
    let r = rt.block_on(crate::store::cloud_restore::restore_from_cloud(
        &cfg.store.data_dir,
        &cfg.node.hospital_id,
        &client,
        &settings.signer,
        settings.timeout,
        |n| {
            if n >= shown + 100_000 {
                shown = n;
                eprintln!("restore: {n} events");
            }
        },
    ))?;
    println!(
        "restore: ok ({} events from the cloud in {:.1} s, {} beds; hash chain intact, \
         replay == projections)",
        r.events, r.seconds, r.report.beds
    );
    Ok(())
}
