//! `hms-edge kiosk pair --name NAME`: a one-time sign-in code for a wall
//! display or shared kiosk, so that no token has to be typed on it.
//!
//! The code signs in as the live token named NAME; when there is none, a
//! viewer token of that name is created (its secret is never shown: the
//! kiosk only ever uses its session). The code is valid 10 minutes and
//! works once; it is printed on the last line of stdout (`ABCD-EFGH`).
//! Revoking the token (`hms-edge token revoke NAME`) signs the kiosk out.
//! Works while the appliance runs.

use clap::Subcommand;

use super::{Failure, Location, Outcome, data_dir};
use crate::auth::{CreateError, Tokens, operator_login};

#[derive(Debug, Subcommand)]
pub(super) enum KioskCmd {
    /// Issue a one-time sign-in code (valid 10 minutes) for a kiosk.
    Pair {
        /// The token the kiosk signs in as; a viewer token of that name is
        /// created when there is no live one.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        location: Location,
    },
}

pub(super) fn kiosk(cmd: KioskCmd) -> Outcome {
    match cmd {
        KioskCmd::Pair { name, location } => {
            let dir = data_dir(&location)?;
            let tokens = Tokens::open(&dir)?;
            let code = tokens.pair(&name, &operator_login()).map_err(|e| match e {
                CreateError::Invalid(m) => Failure::Usage(m),
                CreateError::Duplicate(_) => Failure::Usage(e.to_string()),
                CreateError::Store(e) => Failure::from(e),
            })?;
            let name = name.trim();
            if code.created_token {
                println!("created viewer token for {name:?} (its secret is not shown)");
            }
            println!(
                "sign-in code for {name:?}, valid until {}, works once; type it at /login:",
                hms_domain::time::rfc3339_seconds(code.expires.as_millis())
            );
            println!("{}", code.code);
            Ok(())
        }
    }
}
