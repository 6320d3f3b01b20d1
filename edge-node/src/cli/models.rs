//! `hms-edge models install | rollback | check`: model sets for local
//! inference.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Failure, Location, Outcome, data_dir};

#[derive(Debug, Subcommand)]
pub(super) enum ModelsCmd {
    /// Verify the model set in DIR (manifest, every file's sha256) and make it
    /// the current set, keeping the one it replaces for rollback. A running
    /// appliance swaps it in at its next forecast refresh. A manifest that
    /// names anything but plain files inside DIR is refused (exit 64).
    Install {
        #[command(flatten)]
        location: Location,
        /// Directory holding manifest.toml and the models.
        dir: PathBuf,
    },
    /// Switch back to the previous model set.
    Rollback(Location),
    /// Load a model set, run its recorded test vectors through each model,
    /// compare with the recorded outputs, and time calls (in process).
    /// Exit 1 if a model is not ready or an output differs.
    Check {
        /// Directory holding manifest.toml, the models and testvectors.json.
        #[arg(long, default_value = "models")]
        dir: PathBuf,
        /// The ONNX Runtime library (default: ORT_DYLIB_PATH).
        #[arg(long)]
        library: Option<PathBuf>,
        /// Use the CUDA execution provider (fails if it is not offered).
        #[arg(long)]
        cuda: bool,
        /// Let CUDA use TensorFloat-32 for matrix products (as
        /// inference.cuda_tf32 = true); default: full float32.
        #[arg(long, requires = "cuda")]
        tf32: bool,
        /// Timed calls per model (one row each).
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        /// Also time calls of these batch sizes (rows per call, comma
        /// separated) on each provider; with --cuda, the batch size from
        /// which CUDA is faster is printed as the recommended
        /// inference.cuda_min_rows.
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
        batches: Vec<u32>,
    },
}

pub(super) fn models(cmd: ModelsCmd) -> Outcome {
    match cmd {
        ModelsCmd::Install { location, dir } => {
            let data = data_dir(&location)?;
            // With [bundles], model sets come signed unless allowed.
            let signed_only = match &location.config {
                Some(c) => super::load_config(c)?
                    .bundles
                    .is_some_and(|b| !b.allow_unsigned_models),
                None => data
                    .join(crate::bundles::DIR)
                    .join(crate::bundles::SIGNED_MODELS_ONLY)
                    .exists(),
            };
            if signed_only {
                return Err(Failure::Failed(
                    "refused: this appliance takes model sets only as signed bundles ([bundles] \
                     without allow_unsigned_models = true): sign the set with hms-config sign and \
                     apply it with hms-edge bundle apply"
                        .into(),
                ));
            }
            let i = crate::inference::models::install(&data, &dir).map_err(|e| {
                // A manifest naming files outside its set is a bad input: 64.
                if e.chain().any(|c| {
                    c.downcast_ref::<crate::inference::manifest::UnsafeFile>()
                        .is_some()
                }) {
                    Failure::Usage(format!("{e:#}"))
                } else {
                    Failure::from(e)
                }
            })?;
            println!(
                "models: installed set {} into {}{}",
                i.version,
                i.dir.display(),
                i.previous
                    .map(|p| format!(" (previous: {p}, kept for rollback)"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        ModelsCmd::Rollback(location) => {
            let data = data_dir(&location)?;
            let dir = crate::inference::models::rollback(&data)?;
            println!("models: rolled back to {}", dir.display());
            Ok(())
        }
        ModelsCmd::Check {
            dir,
            library,
            cuda,
            tf32,
            runs,
            batches,
        } => {
            let plan = crate::inference::check::Plan {
                dir,
                library,
                cuda,
                tf32,
                runs,
                batches: batches.into_iter().map(|b| b as usize).collect(),
            };
            let rows = crate::inference::check::check(&plan);
            // Sessions are closed (check shut its runtime down); then the
            // environment, before the process exits and the library's
            // destructors run.
            crate::inference::runtime::release_environment();
            let rows = rows?;
            for row in &rows {
                println!("{}", row.json);
            }
            if rows.iter().all(|r| r.ok) {
                Ok(())
            } else {
                Err(Failure::Failed("models check failed".into()))
            }
        }
    }
}
