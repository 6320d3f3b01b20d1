//! `hms-edge token`: the appliance's API tokens, in `auth.sqlite` beside
//! the event store; every subcommand works while the appliance runs.
//!
//! - `token create --role ROLE --name NAME [--expires 90d|12h|RFC3339]`:
//!   prints a new bearer token on the last line of stdout (shown once;
//!   only its hash is kept). The name of a live token (neither revoked nor
//!   expired) is refused (exit 64).
//! - `token list [--all] [--json]`: name, role, created, expires, last used
//!   and status of each token, never the token itself; revoked tokens only
//!   with `--all`.
//! - `token revoke NAME`: a running appliance refuses the token within a
//!   second. An unknown name is exit 64; revoking again changes nothing
//!   and succeeds (scripts may repeat it).
//!
//! Creations and revocations are recorded as audit events by the appliance
//! (at once while it runs, otherwise when it next starts), with this
//! process's login as the actor.

use clap::{Args, Subcommand};
use serde_json::json;

use super::{Failure, Location, Outcome, data_dir};
use crate::auth::{CreateError, Role, TokenSpec, Tokens, operator_login};
use crate::store::credentials::{Revocation, TokenRow};

#[derive(Debug, Subcommand)]
pub(super) enum TokenCmd {
    /// Create a token; it is printed once, on the last line of stdout.
    Create {
        /// viewer, nurse, bed_manager or admin.
        #[arg(long)]
        role: String,
        /// Who or what holds it (user, kiosk); recorded as the actor of its
        /// changes. No two live tokens share a name.
        #[arg(long)]
        name: String,
        /// When it expires: Nd, Nh, Nm or Ns from now (90d), or an RFC 3339
        /// time (2026-12-31T23:59:59Z). Without it the token does not expire.
        #[arg(long, value_name = "WHEN")]
        expires: Option<String>,
        #[command(flatten)]
        location: Location,
    },
    /// List the tokens (never the tokens themselves).
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        location: Location,
    },
    /// Revoke a token by name; a running appliance refuses it within a second.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub(super) struct RevokeArgs {
    /// The token's name.
    #[arg(value_name = "NAME", required_unless_present = "name_flag")]
    name: Option<String>,
    /// The token's name (as `token create` takes it).
    #[arg(long = "name", value_name = "NAME", conflicts_with = "name")]
    name_flag: Option<String>,
    #[command(flatten)]
    location: Location,
}

pub(super) fn token(cmd: TokenCmd) -> Outcome {
    match cmd {
        TokenCmd::Create {
            role,
            name,
            expires,
            location,
        } => create(&role, &name, expires.as_deref(), &location),
        TokenCmd::List {
            all,
            json,
            location,
        } => list(all, json, &location),
        TokenCmd::Revoke(args) => revoke(args),
    }
}

fn create(role: &str, name: &str, expires: Option<&str>, location: &Location) -> Outcome {
    let role = Role::parse(role).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown role {role:?}; use viewer, nurse, bed_manager or admin"
        ))
    })?;
    let expires = expires
        .map(|e| hms_domain::time::parse_expiry(e, hms_domain::Timestamp::now()))
        .transpose()
        .map_err(Failure::Usage)?;
    let dir = data_dir(location)?;
    let tokens = Tokens::open(&dir)?;
    let token = tokens
        .create_with(&TokenSpec {
            name,
            role,
            expires,
            by: &operator_login(),
        })
        .map_err(|e| match e {
            CreateError::Invalid(m) => Failure::Usage(m),
            CreateError::Duplicate(_) => Failure::Usage(e.to_string()),
            CreateError::Store(e) => Failure::from(e),
        })?;
    let name = name.trim();
    match expires {
        Some(at) => println!(
            "created {} token for {name:?}, expires {}",
            role.as_str(),
            seconds(at.as_millis())
        ),
        None => println!("created {} token for {name:?}", role.as_str()),
    }
    println!("{token}");
    Ok(())
}

use hms_domain::time::rfc3339_seconds as seconds;

fn status(row: &TokenRow, now_ms: i64) -> &'static str {
    hms_domain::time::credential_status(row.revoked_ms, row.expires_ms, now_ms)
}

fn list(all: bool, as_json: bool, location: &Location) -> Outcome {
    let dir = data_dir(location)?;
    let rows = Tokens::open(&dir)?.list()?;
    let now = hms_domain::Timestamp::now().as_millis();
    let shown: Vec<&TokenRow> = rows
        .iter()
        .filter(|r| all || r.revoked_ms.is_none())
        .collect();
    let when = |ms: Option<i64>| ms.map(seconds);
    if as_json {
        for r in shown {
            println!(
                "{}",
                json!({
                    "name": r.name,
                    "role": r.role,
                    "created": seconds(r.created_ms),
                    "expires": when(r.expires_ms),
                    "last_used": when(r.last_used_ms),
                    "revoked": when(r.revoked_ms),
                    "status": status(r, now),
                })
            );
        }
        return Ok(());
    }
    let dash = |ms: Option<i64>| when(ms).unwrap_or_else(|| "-".to_owned());
    let table: Vec<[String; 6]> = shown
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.role.clone(),
                seconds(r.created_ms),
                r.expires_ms.map_or_else(|| "never".to_owned(), seconds),
                dash(r.last_used_ms),
                status(r, now).to_owned(),
            ]
        })
        .collect();
    let head = ["NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "STATUS"];
    let mut width = head.map(str::len);
    for row in &table {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out
    };
    println!("{}", line(&head.map(str::to_owned)));
    for row in &table {
        println!("{}", line(row));
    }
    Ok(())
}

fn revoke(args: RevokeArgs) -> Outcome {
    let Some(name) = args.name.or(args.name_flag) else {
        return Err(Failure::Usage("name the token to revoke".into()));
    };
    let dir = data_dir(&args.location)?;
    match Tokens::open(&dir)?.revoke(&name, &operator_login())? {
        Revocation::Revoked(1) => {
            println!("revoked token {name:?}");
            Ok(())
        }
        Revocation::Revoked(n) => {
            println!("revoked {n} tokens named {name:?}");
            Ok(())
        }
        Revocation::AlreadyRevoked => {
            println!("token {name:?} was revoked already");
            Ok(())
        }
        Revocation::Unknown => Err(Failure::Usage(format!(
            "no token is named {name:?}; `hms-edge token list` shows them"
        ))),
    }
}
