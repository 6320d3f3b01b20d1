//! `hms-edge token create --role ROLE --name NAME`: prints a new bearer
//! token on the last line of stdout; works while the appliance runs.

use clap::Subcommand;

use super::{Failure, Location, Outcome, data_dir};
use crate::auth::{Role, Tokens};

#[derive(Debug, Subcommand)]
pub(super) enum TokenCmd {
    /// Create a token; it is printed once, on the last line of stdout.
    Create {
        /// viewer, nurse, bed_manager or admin.
        #[arg(long)]
        role: String,
        /// Who or what holds it (user, kiosk); recorded as the actor of its changes.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        location: Location,
    },
}

pub(super) fn token(cmd: TokenCmd) -> Outcome {
    let TokenCmd::Create {
        role,
        name,
        location,
    } = cmd;
    let role = Role::parse(&role).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown role {role:?}; use viewer, nurse, bed_manager or admin"
        ))
    })?;
    let dir = data_dir(&location)?;
    let tokens = Tokens::open(&dir)?;
    let token = tokens
        .create(&name, role)
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    println!("created {} token for {name:?}", role.as_str());
    println!("{token}");
    Ok(())
}
