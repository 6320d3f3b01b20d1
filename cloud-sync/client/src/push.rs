//! Talking to the regional cloud over HTTP(S), with typed answers.
//!
//! [`push`] signs a batch, sends it gzip-compressed to `/sync/v1/batches`
//! (the signature covers the bytes as sent), and turns the answer into a
//! [`Pushed`] position or a [`PushError`] that tells the caller what to do:
//! resend from a seq (gap), retry later (transport, TLS, timeout, 5xx), or
//! stop and raise an alarm (refused: enrolment, signature, conflict,
//! tampering). [`position`] asks where the cloud is; [`fetch`] reads the
//! hospital's own events back (restore), checking every hash and that the
//! run is consecutive; [`Client::downlink`] reads the EIDs the regional
//! EMPI assigned; [`Client::bundle`] reads a signed bundle the cloud hosts
//! (the fleet's `apply_bundle`), at most [`MAX_BUNDLE_BYTES`];
//! [`Client::standby`] is a DR primary's report to its replica.
//!
//! The free functions open one connection per call. A [`Client`] keeps its
//! connection open between calls (HTTP/1.1 keep-alive) and reconnects when
//! it breaks; an uplink catching up should hold one.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use hms_domain::sync::SyncBatch;
use hms_domain::{Envelope, EventHash};

use crate::{Endpoint, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, Signer, codec};

/// The ingest path.
pub const BATCHES: &str = "/sync/v1/batches";

/// The position path.
pub const POSITION: &str = "/sync/v1/position";

/// The restore path (`?from=N&limit=M`).
pub const EVENTS: &str = "/sync/v1/events";

/// The downlink path (EIDs for the signing hospital's patients).
pub const DOWNLINK: &str = "/sync/v1/downlink";

/// The bundles path (`/sync/v1/bundles/{sha256}`: one signed bundle the
/// cloud hosts).
pub const BUNDLES: &str = "/sync/v1/bundles";

/// The standby path: a DR primary reports a hospital's appliance
/// enrolment and its head to its replica ([`Client::standby`]).
pub const STANDBY: &str = "/sync/v1/standby";

/// What a DR primary reports of one hospital to its replica, so that the
/// replica can serve the hospital's appliance once promoted and knows how
/// far behind it is (`PUT /sync/v1/standby`, signed by the primary for the
/// hospital).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Standby {
    /// The hospital (the one the request is signed for).
    pub hospital: hms_domain::HospitalId,
    /// Its region (the primary's).
    pub region: hms_domain::RegionId,
    /// Its enrolled appliance.
    pub node: hms_domain::NodeId,
    /// The appliance's Ed25519 public key, standard base64 (32 bytes).
    pub public_key: String,
    /// The primary's last seq of the hospital.
    pub head_seq: u64,
}

/// Largest answer body read, after decompression.
pub const MAX_RESPONSE_BYTES: usize = 4 * MAX_BATCH_BYTES;

/// Largest bundle read ([`Client::bundle`]), and stored by the cloud.
pub const MAX_BUNDLE_BYTES: usize = 64 << 20;

/// The cloud's position (after a batch, or asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Highest seq the cloud has stored.
    pub acked_seq: u64,
    /// The hash of the event the cloud stored at `acked_seq`
    /// ([`EventHash::GENESIS`] at 0); none when its answer carried no
    /// well-formed `acked_hash`. The shipper checks it against the local log
    /// and trusts no acknowledgement without it.
    pub acked_hash: Option<EventHash>,
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
    /// Not reachable, TLS failure (including an untrusted certificate),
    /// timed out, or 5xx: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Refused for good (401, 403, 409 other than a gap, 400, 413), or an
    /// answer that does not check out (a fetched event whose hash or order is
    /// wrong): alarm, do not retry blindly.
    #[error("refused with HTTP {status}: {detail}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The cloud's problem detail, or what did not check out.
        detail: String,
    },
}

fn transient(e: impl std::fmt::Display) -> PushError {
    PushError::Transient(e.to_string())
}

/// One request to make.
struct Call {
    method: Method,
    path: String,
    body: Bytes,
    gzip: bool,
    now_ms: i64,
    /// Largest answer body read (after decompression).
    max_answer: usize,
}

/// One answer: status and (decoded) body.
struct Reply {
    status: u16,
    body: Bytes,
    /// The answer's body was (or said it would be) larger than the call's
    /// `max_answer`: `body` is empty, and the connection is not kept.
    over_limit: bool,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A connection to the cloud kept open between calls.
///
/// Calls are serialised (one request at a time on the connection). When the
/// kept connection turns out to be closed or broken, the request is sent
/// once more on a fresh connection: every request of the protocol is
/// idempotent (a batch is applied by (hospital, seq)), so a resend is safe.
pub struct Client {
    ep: Endpoint,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.ep)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the cloud at `ep`; it connects on first use.
    pub fn new(ep: Endpoint) -> Self {
        Self {
            ep,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The cloud it talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    fn request(&self, signer: &Signer, call: &Call) -> Result<Request<Full<Bytes>>, PushError> {
        let s = signer.sign(call.method.as_str(), &call.path, call.now_ms, &call.body);
        let mut b = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header("host", self.ep.authority())
            .header("accept", "application/json")
            .header("accept-encoding", codec::GZIP)
            .header("x-hms-hospital", s.hospital.as_str())
            .header("x-hms-node", s.node.as_str())
            .header("x-hms-timestamp", s.timestamp_ms.to_string())
            .header("x-hms-signature", s.signature);
        if !call.body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        if call.gzip {
            b = b.header("content-encoding", codec::GZIP);
        }
        b.body(Full::new(call.body.clone())).map_err(transient)
    }

    /// Sends `call` and reads its answer; an answer larger than the call
    /// allows is a transient failure, as any answer that cannot be read.
    async fn exchange(
        &self,
        signer: &Signer,
        call: Call,
        timeout: Duration,
    ) -> Result<Reply, PushError> {
        let max = call.max_answer;
        let reply = self.send(signer, call, timeout).await?;
        if reply.over_limit {
            return Err(PushError::Transient(format!(
                "reading the answer: it is larger than {max} bytes"
            )));
        }
        Ok(reply)
    }

    /// Sends `call` and reads its answer, on the kept connection or a
    /// fresh one (see [`Client`]); an answer over the call's limit comes
    /// back marked, unread.
    async fn send(
        &self,
        signer: &Signer,
        call: Call,
        timeout: Duration,
    ) -> Result<Reply, PushError> {
        let work = async {
            let mut slot = self.conn.lock().await;
            if let Some(mut sender) = slot.take()
                && sender.ready().await.is_ok()
                && let Ok(reply) =
                    roundtrip(&mut sender, self.request(signer, &call)?, call.max_answer).await
            {
                if !reply.over_limit {
                    *slot = Some(sender);
                }
                return Ok(reply);
            }
            // No kept connection, or it was stale: a fresh one.
            let io = self.ep.connect().await.map_err(transient)?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(transient)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let reply = roundtrip(&mut sender, self.request(signer, &call)?, call.max_answer)
                .await
                .map_err(transient)?;
            if !reply.over_limit {
                *slot = Some(sender);
            }
            Ok(reply)
        };
        // On a timeout the connection (taken out of the slot) is dropped.
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| PushError::Transient("timed out".into()))?
    }

    /// Signs and sends `batch`, gzip-compressed.
    pub async fn push(
        &self,
        signer: &Signer,
        batch: &SyncBatch,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Pushed, PushError> {
        let json = serde_json::to_vec(batch).map_err(transient)?;
        let body = codec::gzip(&json).map_err(transient)?;
        let call = Call {
            method: Method::POST,
            path: BATCHES.to_owned(),
            body: Bytes::from(body),
            gzip: true,
            now_ms,
            max_answer: MAX_RESPONSE_BYTES,
        };
        let r = self.exchange(signer, call, timeout).await?;
        answer(r.status, &r.json())
    }

    /// Asks the cloud where it is for the signer's hospital.
    pub async fn position(
        &self,
        signer: &Signer,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Pushed, PushError> {
        let call = Call {
            method: Method::GET,
            path: POSITION.to_owned(),
            body: Bytes::new(),
            gzip: false,
            now_ms,
            max_answer: MAX_RESPONSE_BYTES,
        };
        let r = self.exchange(signer, call, timeout).await?;
        answer(r.status, &r.json())
    }

    /// The signer's hospital's events with seq >= `from` (0 reads as 1),
    /// ascending, at most `limit` (1 to [`MAX_BATCH_EVENTS`]); an empty Vec
    /// means there is nothing more. Every event must name the hospital,
    /// verify its own hash, link to the one before it and follow it by one
    /// seq, starting at `from`; otherwise [`PushError::Refused`].
    pub async fn fetch(
        &self,
        signer: &Signer,
        from: u64,
        limit: usize,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Vec<Envelope>, PushError> {
        let from = from.max(1);
        let limit = limit.clamp(1, MAX_BATCH_EVENTS);
        let call = Call {
            method: Method::GET,
            path: format!("{EVENTS}?from={from}&limit={limit}"),
            body: Bytes::new(),
            gzip: false,
            now_ms,
            max_answer: MAX_RESPONSE_BYTES,
        };
        let r = self.exchange(signer, call, timeout).await?;
        let mut v = r.json();
        if r.status != 200 {
            return Err(refusal(r.status, &v));
        }
        let events: Vec<Envelope> =
            serde_json::from_value(v["events"].take()).map_err(|e| PushError::Refused {
                status: r.status,
                detail: format!("the cloud's answer is not a list of events: {e}"),
            })?;
        check_run(signer.hospital(), from, limit, &events).map_err(|detail| {
            PushError::Refused {
                status: r.status,
                detail,
            }
        })?;
        Ok(events)
    }
}

impl Client {
    /// The EIDs assigned to the signer's hospital's patients after downlink
    /// position `after`, in order (at most 1,000; empty: nothing new). The
    /// run must start after `after` and be dense; otherwise `Refused`.
    pub async fn downlink(
        &self,
        signer: &Signer,
        after: u64,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Vec<hms_domain::sync::EidAssignment>, PushError> {
        let call = Call {
            method: Method::GET,
            path: format!("{DOWNLINK}?after={after}"),
            body: Bytes::new(),
            gzip: false,
            now_ms,
            max_answer: MAX_RESPONSE_BYTES,
        };
        let r = self.exchange(signer, call, timeout).await?;
        let mut v = r.json();
        if r.status != 200 {
            return Err(refusal(r.status, &v));
        }
        let list: Vec<hms_domain::sync::EidAssignment> =
            serde_json::from_value(v["assignments"].take()).map_err(|e| PushError::Refused {
                status: r.status,
                detail: format!("the cloud's answer is not a list of assignments: {e}"),
            })?;
        for (i, a) in list.iter().enumerate() {
            if a.seq != after + 1 + i as u64 {
                return Err(PushError::Refused {
                    status: r.status,
                    detail: format!(
                        "downlink position {} where {} was due",
                        a.seq,
                        after + 1 + i as u64
                    ),
                });
            }
        }
        Ok(list)
    }
}

impl Client {
    /// Reports `standby` to a DR replica (`PUT` [`STANDBY`], signed by the
    /// primary for its hospital). 200 is success; 421 says the replica was
    /// promoted for the hospital (a [`PushError::Refused`] with that status).
    pub async fn standby(
        &self,
        signer: &Signer,
        standby: &Standby,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<(), PushError> {
        let body = serde_json::to_vec(standby).map_err(transient)?;
        let call = Call {
            method: Method::PUT,
            path: STANDBY.to_owned(),
            body: Bytes::from(body),
            gzip: false,
            now_ms,
            max_answer: MAX_RESPONSE_BYTES,
        };
        let r = self.exchange(signer, call, timeout).await?;
        match r.status {
            200 => Ok(()),
            s => Err(refusal(s, &r.json())),
        }
    }
}

impl Client {
    /// The signed bundle `sha256` (64 lower-case hex digits) this cloud
    /// hosts, as stored: a signed `GET /sync/v1/bundles/{sha256}`, on the
    /// kept connection as the other reads. Its bytes are not checked here
    /// (the caller compares their SHA-256 and verifies the bundle). An
    /// answer of more than [`MAX_BUNDLE_BYTES`] is refused without being
    /// read; a `sha256` that is not one is refused with status 0, nothing
    /// sent; 404 (the cloud does not hold it), 401 and 403 are refusals,
    /// transport failures and 5xx transient.
    pub async fn bundle(
        &self,
        signer: &Signer,
        sha256: &str,
        now_ms: i64,
        timeout: Duration,
    ) -> Result<Vec<u8>, PushError> {
        let hex = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(PushError::Refused {
                status: 0,
                detail: "not a SHA-256 (64 lower-case hex digits); nothing was asked".into(),
            });
        }
        let call = Call {
            method: Method::GET,
            path: format!("{BUNDLES}/{sha256}"),
            body: Bytes::new(),
            gzip: false,
            now_ms,
            max_answer: MAX_BUNDLE_BYTES,
        };
        let r = self.send(signer, call, timeout).await?;
        if r.over_limit {
            return Err(PushError::Refused {
                status: r.status,
                detail: format!("the bundle is more than {MAX_BUNDLE_BYTES} bytes"),
            });
        }
        if r.status != 200 {
            return Err(refusal(r.status, &r.json()));
        }
        Ok(r.body.to_vec())
    }
}

async fn roundtrip(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
    max: usize,
) -> Result<Reply, std::io::Error> {
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let over = Reply {
        status,
        body: Bytes::new(),
        over_limit: true,
    };
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        // Not read at all: the connection is dropped with it.
        return Ok(over);
    }
    let gzip = resp
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(codec::GZIP.as_bytes()));
    let body = match Limited::new(resp.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Ok(over),
        Err(e) => return Err(std::io::Error::other(format!("reading the answer: {e}"))),
    };
    let body = if gzip {
        match codec::gunzip_bounded(&body, max) {
            Ok(b) => Bytes::from(b),
            Err(codec::DecodeError::TooLarge { .. }) => return Ok(over),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    } else {
        body
    };
    Ok(Reply {
        status,
        body,
        over_limit: false,
    })
}

/// Checks a fetched run: the hospital's, starting at `from`, consecutive,
/// linked, each hash matching its content, at most `limit` long.
fn check_run(
    hospital: &hms_domain::HospitalId,
    from: u64,
    limit: usize,
    events: &[Envelope],
) -> Result<(), String> {
    if events.len() > limit {
        return Err(format!(
            "the cloud sent {} events, {limit} were asked for",
            events.len()
        ));
    }
    let mut prev: Option<hms_domain::EventHash> = None;
    for (expected, e) in (from..).zip(events) {
        if &e.hospital != hospital {
            return Err(format!(
                "event {} belongs to hospital {}, not {hospital}",
                e.seq, e.hospital
            ));
        }
        if e.seq != expected {
            return Err(format!(
                "expected event {expected}, the cloud sent {}",
                e.seq
            ));
        }
        if prev.is_some_and(|p| p != e.prev_hash) {
            return Err(format!(
                "event {} does not link to the event before it",
                e.seq
            ));
        }
        if e.compute_hash() != e.hash {
            return Err(format!(
                "event {} does not match its hash (tampered or corrupt)",
                e.seq
            ));
        }
        prev = Some(e.hash);
    }
    Ok(())
}

fn refusal(status: u16, v: &serde_json::Value) -> PushError {
    match status {
        409 if v["expected_seq"].is_u64() => PushError::Gap {
            expected: v["expected_seq"].as_u64().unwrap_or(0),
        },
        s if s >= 500 => PushError::Transient(format!("HTTP {s}")),
        s => PushError::Refused {
            status: s,
            detail: v["detail"].as_str().unwrap_or("").to_owned(),
        },
    }
}

fn answer(status: u16, v: &serde_json::Value) -> Result<Pushed, PushError> {
    match status {
        200 => v["acked_seq"]
            .as_u64()
            .map(|acked_seq| Pushed {
                acked_seq,
                acked_hash: v["acked_hash"].as_str().and_then(EventHash::from_hex),
            })
            .ok_or_else(|| PushError::Transient("the cloud's answer has no acked_seq".into())),
        s => Err(refusal(s, v)),
    }
}

/// Signs and sends `batch` to the cloud at `ep` (gzip-compressed), on a
/// connection of its own.
pub async fn push(
    ep: &Endpoint,
    signer: &Signer,
    batch: &SyncBatch,
    now_ms: i64,
    timeout: Duration,
) -> Result<Pushed, PushError> {
    Client::new(ep.clone())
        .push(signer, batch, now_ms, timeout)
        .await
}

/// Asks the cloud where it is for this appliance's hospital (to resume after a restart).
pub async fn position(
    ep: &Endpoint,
    signer: &Signer,
    now_ms: i64,
    timeout: Duration,
) -> Result<Pushed, PushError> {
    Client::new(ep.clone())
        .position(signer, now_ms, timeout)
        .await
}

/// Events with seq >= `from`, ascending, at most `limit` (capped at
/// [`MAX_BATCH_EVENTS`]); empty = nothing more. See [`Client::fetch`].
pub async fn fetch(
    ep: &Endpoint,
    signer: &Signer,
    from: u64,
    limit: usize,
    now_ms: i64,
    timeout: Duration,
) -> Result<Vec<Envelope>, PushError> {
    Client::new(ep.clone())
        .fetch(signer, from, limit, now_ms, timeout)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hms_domain::HospitalId;

    fn log(n: u64) -> Vec<Envelope> {
        hms_domain::event::sample_log(&HospitalId::new("h1").unwrap(), n)
    }

    #[test]
    fn fetched_runs_are_checked() {
        let h = HospitalId::new("h1").unwrap();
        let all = log(6);
        assert_eq!(check_run(&h, 3, 10, &all[2..]), Ok(()));
        assert_eq!(check_run(&h, 3, 10, &[]), Ok(()));
        let e = check_run(&h, 3, 2, &all[2..]).unwrap_err();
        assert!(e.contains("2 were asked"), "{e}");
        let e = check_run(&h, 2, 10, &all[2..]).unwrap_err();
        assert!(e.contains("expected event 2"), "{e}");
        let holes = [all[2].clone(), all[4].clone()];
        assert!(check_run(&h, 3, 10, &holes).is_err());
        let mut tampered = all[2..].to_vec();
        tampered[1].body = tampered[1].body.replace("B4", "B9");
        let e = check_run(&h, 3, 10, &tampered).unwrap_err();
        assert!(e.contains("event 4 does not match its hash"), "{e}");
        // Re-sealed after an edit: its own hash matches, the next link breaks.
        let mut resealed = all[2..].to_vec();
        resealed[1].correlation = Some("x".into());
        resealed[1].hash = resealed[1].compute_hash();
        let e = check_run(&h, 3, 10, &resealed).unwrap_err();
        assert!(e.contains("event 5 does not link"), "{e}");
        let other = HospitalId::new("h2").unwrap();
        assert!(check_run(&other, 1, 10, &all).is_err());
    }

    /// A server on a real socket answering each request head with what
    /// `answer` says for it (head only: the body, if any, is the answer's
    /// business), keeping the connection open; each head goes to the
    /// returned channel.
    async fn server(
        answer: fn(&str) -> Vec<u8>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut b).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&b[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            let out = answer(&head);
                            let _ = tx.send(head);
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, heads)
    }

    fn header<'a>(head: &'a str, name: &str) -> &'a str {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .unwrap_or("")
    }

    #[tokio::test]
    async fn a_bundle_is_read_with_a_signed_get_and_one_over_the_limit_is_refused_unread() {
        let (small, big) = ("aa".repeat(32), "bb".repeat(32));
        let (addr, mut heads) = server(|head| {
            if head.contains(&"aa".repeat(32)) {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 5\r\n\r\nhello".to_vec()
            } else if head.contains(&"bb".repeat(32)) {
                // Declared over the limit, and never sent: read, it would hang.
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    MAX_BUNDLE_BYTES + 1
                )
                .into_bytes()
            } else if head.starts_with("GET /chunked ") {
                // 100 bytes, chunked: no length declared.
                let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for _ in 0..10 {
                    out.extend_from_slice(b"a\r\n0123456789\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            } else {
                let body = r#"{"type":"urn:hms:problem:not-found","status":404,"detail":"no such bundle"}"#;
                format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
        })
        .await;
        let (pkcs8, public) = crate::generate_key().unwrap();
        let h = HospitalId::new("h1").unwrap();
        let signer = Signer::new(&pkcs8, h.clone(), "edge-1".parse().unwrap()).unwrap();
        let client = Client::new(Endpoint::parse(&format!("http://{addr}"), None).unwrap());
        let now = hms_domain::Timestamp::now().as_millis();
        let t = Duration::from_secs(20);

        assert_eq!(
            client.bundle(&signer, &small, now, t).await.unwrap(),
            b"hello"
        );
        let head = heads.recv().await.unwrap();
        let path = format!("{BUNDLES}/{small}");
        assert!(head.starts_with(&format!("GET {path} HTTP/1.1")), "{head}");
        let signed = crate::SignedRequest {
            hospital: header(&head, "x-hms-hospital").parse().unwrap(),
            node: header(&head, "x-hms-node").parse().unwrap(),
            timestamp_ms: header(&head, "x-hms-timestamp").parse().unwrap(),
            signature: header(&head, "x-hms-signature").to_owned(),
        };
        assert_eq!(signed.hospital, h);
        crate::verify(&public, &signed, "GET", &path, b"", now).expect("signed over the path");

        // Declared over 64 MiB: refused at once, the body never waited for.
        let started = std::time::Instant::now();
        match client.bundle(&signer, &big, now, t).await {
            Err(PushError::Refused {
                status: 200,
                detail,
            }) => {
                assert!(detail.contains("more than 67108864 bytes"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "not read");
        heads.recv().await.unwrap();
        // Unknown: the cloud's refusal. The connection dropped with the
        // unread answer is replaced.
        match client.bundle(&signer, &"cc".repeat(32), now, t).await {
            Err(PushError::Refused {
                status: 404,
                detail,
            }) => {
                assert_eq!(detail, "no such bundle");
            }
            other => panic!("{other:?}"),
        }
        heads.recv().await.unwrap();
        // Not a SHA-256: nothing asked.
        for bad in ["../../etc/passwd", &"AA".repeat(32), "aa"] {
            assert!(matches!(
                client.bundle(&signer, bad, now, t).await,
                Err(PushError::Refused { status: 0, .. })
            ));
        }
        assert!(heads.try_recv().is_err(), "nothing was asked");
        // A body that grows past the limit without declaring its length is
        // cut off and marked, not read whole.
        let call = Call {
            method: Method::GET,
            path: "/chunked".into(),
            body: Bytes::new(),
            gzip: false,
            now_ms: now,
            max_answer: 50,
        };
        let r = client.send(&signer, call, t).await.unwrap();
        assert!(r.over_limit && r.body.is_empty());
        let call = Call {
            method: Method::GET,
            path: "/chunked".into(),
            body: Bytes::new(),
            gzip: false,
            now_ms: now,
            max_answer: 100,
        };
        let r = client.send(&signer, call, t).await.unwrap();
        assert_eq!((r.over_limit, r.body.len()), (false, 100));
    }

    #[test]
    fn answers_map_to_what_the_uplink_does() {
        let h = EventHash([7; 32]);
        let v = serde_json::json!({"acked_seq": 7, "acked_hash": h});
        assert_eq!(
            answer(200, &v).unwrap(),
            Pushed {
                acked_seq: 7,
                acked_hash: Some(h)
            }
        );
        // An answer without a (well-formed) hash still parses: whether to
        // trust it is the shipper's decision, which refuses it.
        for v in [
            serde_json::json!({"acked_seq": 7}),
            serde_json::json!({"acked_seq": 7, "acked_hash": "zz"}),
        ] {
            assert_eq!(answer(200, &v).unwrap().acked_hash, None, "{v}");
        }
        let gap = serde_json::json!({"expected_seq": 4, "detail": "gap"});
        assert!(matches!(
            answer(409, &gap),
            Err(PushError::Gap { expected: 4 })
        ));
        let other = serde_json::json!({"detail": "conflict"});
        assert!(matches!(
            answer(409, &other),
            Err(PushError::Refused { status: 409, .. })
        ));
        assert!(matches!(
            answer(413, &other),
            Err(PushError::Refused { status: 413, .. })
        ));
        assert!(matches!(answer(503, &other), Err(PushError::Transient(_))));
    }
}
