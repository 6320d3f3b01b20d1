//! `hms-edge verify (--config FILE | --data-dir DIR)`: the hash chain and
//! replay == projections; exit 1 when it does not verify.

use super::{Failure, Location, Outcome, data_dir};
use crate::store::verify;

pub(super) fn verify(loc: &Location) -> Outcome {
    let dir = data_dir(loc)?;
    let report = verify::verify(&dir)?;
    for p in &report.problems {
        println!("problem: {p}");
    }
    if !report.ok() {
        return Err(Failure::Failed(format!(
            "verify failed: {} problem(s)",
            report.problems.len()
        )));
    }
    let base = if report.base_seq > 0 {
        format!(", retention base at seq {}", report.base_seq)
    } else {
        String::new()
    };
    println!(
        "verify: ok ({} events, {} beds{base}; hash chain intact, replay == projections)",
        report.events, report.beds
    );
    Ok(())
}
