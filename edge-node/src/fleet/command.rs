//! Signed fleet commands: what the appliance accepts from the regional
//! cloud over MQTT, and why it refuses the rest. Sans-IO.
//!
//! A command arrives on `hms/v1/{region}/{hospital}/{node}/cmd` as
//!
//! ```json
//! {"payload": "<the command, JSON text>", "signature": "<base64 Ed25519 signature of the payload's bytes>"}
//! ```
//!
//! signed with the cloud's fleet key (the appliance holds only its public
//! key, `[fleet] command_key`: the raw 32 bytes). The payload names its
//! target and carries an id that must increase per node and an expiry:
//!
//! ```json
//! {"id": 42, "region": "eu-west", "hospital": "h1", "node": "edge-1",
//!  "expires_at": "2026-12-05T15:00:00Z", "command": "ping"}
//! ```
//!
//! [`check`] verifies, in this order: the envelope and the signature (over
//! the payload exactly as sent, so no canonical form is needed), the payload
//! (a known command with its arguments: `apply_bundle`'s `sha256` is 64
//! lower-case hex digits and its `url` exactly `/sync/v1/bundles/{sha256}`,
//! a path on the cloud the appliance syncs with, so no other host or path
//! is ever fetched), the target, the expiry, and that the id is above the
//! last one accepted. Each refusal has a [`Refusal`] the appliance reports
//! on `cmd/result`.

use base64::Engine;
use hms_domain::Timestamp;
use serde::{Deserialize, Serialize};

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Action {
    /// Answer with the time and the appliance's version.
    Ping,
    /// Ship the log to the cloud now.
    SyncNow,
    /// Revoke the API token `name`.
    RevokeToken {
        /// The token's name.
        name: String,
    },
    /// Fetch a signed bundle (configuration or model set) from the cloud
    /// and queue it for applying.
    ApplyBundle {
        /// Where the bundle is, on the cloud: exactly
        /// `/sync/v1/bundles/{sha256}` ([`bundle_path`]).
        url: String,
        /// The bundle file's SHA-256, 64 lower-case hex digits.
        sha256: String,
    },
}

/// The commands this appliance carries out, by name.
const KNOWN: [&str; 4] = ["ping", "sync_now", "revoke_token", "apply_bundle"];

/// The one path an `apply_bundle` of bundle `sha256` may name: the bundle
/// on the cloud of `[uplink]`.
pub fn bundle_path(sha256: &str) -> String {
    format!("{}/{sha256}", cloud_sync_client::push::BUNDLES)
}

/// Whether `s` is 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Action {
    /// The command's name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ping => "ping",
            Action::SyncNow => "sync_now",
            Action::RevokeToken { .. } => "revoke_token",
            Action::ApplyBundle { .. } => "apply_bundle",
        }
    }
}

/// A command's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Increases per node: an id at or below the last accepted is a replay.
    pub id: u64,
    /// Target region.
    pub region: String,
    /// Target hospital.
    pub hospital: String,
    /// Target node.
    pub node: String,
    /// Refused from this instant on.
    pub expires_at: Timestamp,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// The envelope on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    /// The command as JSON text.
    pub payload: String,
    /// Base64 Ed25519 signature of `payload`'s bytes.
    pub signature: String,
}

/// Why a command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Not the envelope, or not a command (a known command without its
    /// arguments, or with bad ones, included).
    Malformed,
    /// The signature does not verify with the fleet key.
    BadSignature,
    /// Meant for another node.
    OtherTarget,
    /// Its id is not above the last accepted one.
    Replayed,
    /// Past its expiry.
    Expired,
    /// A command this appliance does not carry out (a name it does not know).
    Unsupported,
}

impl Refusal {
    /// The reason as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::OtherTarget => "other_target",
            Refusal::Replayed => "replayed",
            Refusal::Expired => "expired",
            Refusal::Unsupported => "unsupported",
        }
    }
}

/// Who this appliance is, as commands must name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Region.
    pub region: String,
    /// Hospital.
    pub hospital: String,
    /// Node.
    pub node: String,
}

/// The command id of a message whose signature verified, when the rest
/// fails (so the result can name it); `None` before that.
pub type SeenId = Option<u64>;

/// Checks a message from the `cmd` topic (see the module doc).
pub fn check(
    bytes: &[u8],
    key: &[u8; 32],
    target: &Target,
    last_id: u64,
    now: Timestamp,
) -> Result<Command, (Refusal, SeenId)> {
    let signed: Signed = serde_json::from_slice(bytes).map_err(|_| (Refusal::Malformed, None))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signed.signature.as_bytes())
        .map_err(|_| (Refusal::BadSignature, None))?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(signed.payload.as_bytes(), &signature)
        .map_err(|_| (Refusal::BadSignature, None))?;
    let value: serde_json::Value =
        serde_json::from_str(&signed.payload).map_err(|_| (Refusal::Malformed, None))?;
    let id = value.get("id").and_then(serde_json::Value::as_u64);
    let known = value
        .get("command")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|c| KNOWN.contains(&c));
    let cmd: Command = match serde_json::from_value(value) {
        Ok(c) => c,
        Err(_) => {
            return Err((
                if id.is_some() && !known {
                    Refusal::Unsupported
                } else {
                    Refusal::Malformed
                },
                id,
            ));
        }
    };
    if let Action::ApplyBundle { url, sha256 } = &cmd.action
        && (!is_sha256(sha256) || *url != bundle_path(sha256))
    {
        return Err((Refusal::Malformed, Some(cmd.id)));
    }
    if cmd.region != target.region || cmd.hospital != target.hospital || cmd.node != target.node {
        return Err((Refusal::OtherTarget, Some(cmd.id)));
    }
    if cmd.expires_at <= now {
        return Err((Refusal::Expired, Some(cmd.id)));
    }
    if cmd.id <= last_id {
        return Err((Refusal::Replayed, Some(cmd.id)));
    }
    Ok(cmd)
}
