//! Client side of the edge-to-cloud sync protocol.
//!
//! The appliance (`edge-node`) and the regional cloud (`cloud-sync`) never depend
//! on each other; they meet here and in `hms-domain`. This crate holds the batch
//! bounds both sides agree on and the request signature: every sync request is
//! signed with the appliance's Ed25519 key (made at enrolment; the private key
//! never leaves the appliance) over a canonical string that binds the method,
//! path, hospital, node, time and body. The cloud checks it with
//! [`verify`] against the public key it enrolled.
//!
//! Transport: an [`Endpoint`] (`http://` for loopback and tests, `https://`
//! with rustls and an explicit CA), batches sent gzip-compressed
//! ([`codec`]), and [`push`](fn@push), [`position`] and [`fetch`] (restore) with typed
//! answers; a [`Client`] keeps its connection open between calls.
//!
//! Shipping a log: [`shipper`] is the sans-IO state machine that decides
//! what to do next from the time and the last answer (ask the position,
//! send a batch, wait), with the [`resilience`] back-off and breaker; both
//! the appliance's uplink and the regional cloud's DR replication (signed
//! with the primary's key) drive one. See `docs/sync-protocol.md`.

pub mod codec;
pub mod endpoint;
pub mod push;
pub mod resilience;
pub mod shipper;

pub use endpoint::Endpoint;
pub use push::{Client, PushError, Pushed, fetch, position, push};

use base64::Engine;
use hms_domain::{HospitalId, NodeId};
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// Most events in one sync batch.
pub const MAX_BATCH_EVENTS: usize = 1_000;

/// Most bytes (uncompressed JSON) in one sync batch.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Largest accepted difference between the signing time and the cloud's clock.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// A new appliance key pair: (PKCS#8 private key, raw 32-byte public key).
pub fn generate_key() -> Result<(Vec<u8>, Vec<u8>), SignatureError> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SignatureError::KeyGeneration)?;
    let pair =
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| SignatureError::KeyGeneration)?;
    Ok((pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec()))
}

/// The signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The hospital the appliance speaks for.
    pub hospital: HospitalId,
    /// The appliance.
    pub node: NodeId,
    /// Signing time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Base64 (standard) Ed25519 signature of the canonical string.
    pub signature: String,
}

/// Why a signature does not verify (the cloud answers 401 and stores nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The key pair could not be made or read.
    #[error("the appliance key could not be generated or read")]
    KeyGeneration,
    /// The signature is not valid base64 or not a valid signature of the request.
    #[error("the request signature does not verify")]
    BadSignature,
    /// The signing time is too far from the cloud's clock (replay protection).
    #[error("the request was signed {skew_ms} ms away from the cloud's clock")]
    ClockSkew {
        /// The difference.
        skew_ms: i64,
    },
}

/// The string that is signed.
fn canonical(
    method: &str,
    path: &str,
    h: &HospitalId,
    n: &NodeId,
    ts: i64,
    body: &[u8],
) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    format!(
        "hms-sync-v1\n{method}\n{path}\n{h}\n{n}\n{ts}\n{}",
        hms_domain::event::to_hex(digest.as_ref())
    )
    .into_bytes()
}

/// Signs requests for one appliance.
pub struct Signer {
    key: Ed25519KeyPair,
    hospital: HospitalId,
    node: NodeId,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("hospital", &self.hospital)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From the appliance's PKCS#8 private key.
    pub fn new(pkcs8: &[u8], hospital: HospitalId, node: NodeId) -> Result<Self, SignatureError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| SignatureError::KeyGeneration)?;
        Ok(Self {
            key,
            hospital,
            node,
        })
    }

    /// The hospital it signs for.
    pub fn hospital(&self) -> &HospitalId {
        &self.hospital
    }

    /// The node it signs as.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The public key to enrol.
    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    /// Signs `method path` with `body` at `timestamp_ms`.
    pub fn sign(&self, method: &str, path: &str, timestamp_ms: i64, body: &[u8]) -> SignedRequest {
        let msg = canonical(method, path, &self.hospital, &self.node, timestamp_ms, body);
        let sig = self.key.sign(&msg);
        SignedRequest {
            hospital: self.hospital.clone(),
            node: self.node.clone(),
            timestamp_ms,
            signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        }
    }
}

/// Checks a request's signature with the enrolled `public_key`, at cloud time `now_ms`.
pub fn verify(
    public_key: &[u8],
    req: &SignedRequest,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    let skew = now_ms.saturating_sub(req.timestamp_ms);
    if skew.abs() > MAX_CLOCK_SKEW_MS {
        return Err(SignatureError::ClockSkew { skew_ms: skew });
    }
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&req.signature)
        .map_err(|_| SignatureError::BadSignature)?;
    let msg = canonical(
        method,
        path,
        &req.hospital,
        &req.node,
        req.timestamp_ms,
        body,
    );
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&msg, &sig)
        .map_err(|_| SignatureError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(h: &str) -> (HospitalId, NodeId) {
        (HospitalId::new(h).unwrap(), NodeId::new("edge-1").unwrap())
    }

    #[test]
    fn signatures_bind_key_hospital_time_and_body() {
        let (pkcs8, public) = generate_key().unwrap();
        let (h, n) = ids("h1");
        let signer = Signer::new(&pkcs8, h.clone(), n.clone()).unwrap();
        assert_eq!(signer.public_key(), public);
        let body = br#"{"events":[]}"#;
        let now = 1_767_000_000_000;
        let req = signer.sign("POST", "/sync/v1/batches", now, body);
        assert_eq!(
            verify(&public, &req, "POST", "/sync/v1/batches", body, now + 1000),
            Ok(())
        );
        // A tampered body, another path, another hospital claimed: refused.
        let bad = SignatureError::BadSignature;
        assert_eq!(
            verify(&public, &req, "POST", "/sync/v1/batches", b"{}", now),
            Err(bad.clone())
        );
        assert_eq!(
            verify(&public, &req, "POST", "/sync/v1/other", body, now),
            Err(bad.clone())
        );
        let mut as_other = req.clone();
        as_other.hospital = HospitalId::new("h2").unwrap();
        assert_eq!(
            verify(&public, &as_other, "POST", "/sync/v1/batches", body, now),
            Err(bad.clone())
        );
        // Another appliance's key (a second appliance signing as the first hospital).
        let (other_pkcs8, _) = generate_key().unwrap();
        let impostor = Signer::new(&other_pkcs8, h, n).unwrap();
        let forged = impostor.sign("POST", "/sync/v1/batches", now, body);
        assert_eq!(
            verify(&public, &forged, "POST", "/sync/v1/batches", body, now),
            Err(bad.clone())
        );
        // Replayed long after: refused on time.
        assert!(matches!(
            verify(
                &public,
                &req,
                "POST",
                "/sync/v1/batches",
                body,
                now + MAX_CLOCK_SKEW_MS + 1
            ),
            Err(SignatureError::ClockSkew { .. })
        ));
        // Garbage signature text.
        let mut junk = req;
        junk.signature = "not base64!".into();
        assert_eq!(
            verify(&public, &junk, "POST", "/sync/v1/batches", body, now),
            Err(bad)
        );
    }
}
