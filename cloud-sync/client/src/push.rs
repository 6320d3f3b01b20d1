//! Shipping one batch to the regional cloud over HTTP, with typed answers.
//!
//! [`push`] signs the batch, posts it to `/sync/v1/batches`, and turns the
//! answer into a [`Pushed`] position or a [`PushError`] that tells the uplink
//! what to do: resend from a seq (gap), retry later (transport, 503), or stop
//! and raise an alarm (refused: enrolment, signature, conflict, tampering).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use hms_domain::sync::SyncBatch;

use crate::Signer;

/// The ingest path.
pub const BATCHES: &str = "/sync/v1/batches";

/// The position path.
pub const POSITION: &str = "/sync/v1/position";

/// The cloud's position after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Highest seq the cloud has stored.
    pub acked_seq: u64,
}

/// What went wrong, and so what the uplink does next.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The cloud expects an earlier seq: resend from it.
    #[error("the cloud expects seq {expected}")]
    Gap {
        /// The seq to resend from.
        expected: u64,
    },
    /// Not reachable, timed out, or 5xx: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Refused for good (401, 403, 409 other than a gap, 400): alarm, do not retry blindly.
    #[error("refused with HTTP {status}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The cloud's problem detail.
        detail: String,
    },
}

/// Sends one signed request and returns (status, JSON body).
async fn signed_call(
    addr: SocketAddr,
    signer: &Signer,
    method: Method,
    path: &str,
    body: Vec<u8>,
    now_ms: i64,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), PushError> {
    let s = signer.sign(method.as_str(), path, now_ms, &body);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-hms-hospital", s.hospital.as_str())
        .header("x-hms-node", s.node.as_str())
        .header("x-hms-timestamp", s.timestamp_ms.to_string())
        .header("x-hms-signature", s.signature)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| PushError::Transient(e.to_string()))?;
    let call = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = send
            .send_request(req)
            .await
            .map_err(std::io::Error::other)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok::<_, std::io::Error>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| PushError::Transient("timed out".into()))?
        .map_err(|e| PushError::Transient(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, v))
}

fn answer(status: u16, v: &serde_json::Value) -> Result<Pushed, PushError> {
    match status {
        200 => v["acked_seq"]
            .as_u64()
            .map(|acked_seq| Pushed { acked_seq })
            .ok_or_else(|| PushError::Transient("the cloud's answer has no acked_seq".into())),
        409 if v["expected_seq"].is_u64() => Err(PushError::Gap {
            expected: v["expected_seq"].as_u64().unwrap_or(0),
        }),
        s if s >= 500 => Err(PushError::Transient(format!("HTTP {s}"))),
        s => Err(PushError::Refused {
            status: s,
            detail: v["detail"].as_str().unwrap_or("").to_owned(),
        }),
    }
}

/// Signs and posts `batch` to the cloud at `addr` (plain HTTP; loopback and tests).
pub async fn push(
    addr: SocketAddr,
    signer: &Signer,
    batch: &SyncBatch,
    now_ms: i64,
    timeout: Duration,
) -> Result<Pushed, PushError> {
    let body = serde_json::to_vec(batch).map_err(|e| PushError::Transient(e.to_string()))?;
    let (status, v) =
        signed_call(addr, signer, Method::POST, BATCHES, body, now_ms, timeout).await?;
    answer(status, &v)
}

/// Asks the cloud where it is for this appliance's hospital (to resume after a restart).
pub async fn position(
    addr: SocketAddr,
    signer: &Signer,
    now_ms: i64,
    timeout: Duration,
) -> Result<Pushed, PushError> {
    let (status, v) =
        signed_call(addr, signer, Method::GET, POSITION, vec![], now_ms, timeout).await?;
    answer(status, &v)
}
