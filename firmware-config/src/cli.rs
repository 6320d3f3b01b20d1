//! What the `hms-config` commands do, apart from parsing their arguments.
//!
//! Output goes to the writers given, so that the commands can be tested
//! without a process; the binary passes stdout and stderr.

use std::io::{self, Write};
use std::path::PathBuf;

use crate::{example, lint_config, read};

/// Exit status: success (no error; warnings allowed).
pub const EXIT_OK: u8 = 0;
/// Exit status: some file has an error.
pub const EXIT_INVALID: u8 = 1;
/// Exit status: bad command line (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

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
