//! The feed: the MLLP listener that takes the hospital's HL7 feed into the
//! store (the IO half of the integration hub; the sans-IO half, framing,
//! parsing and ADT semantics, is [`crate::integration`], which the store's
//! writer uses too, so the listener lives outside it).
//!
//! Each connection runs a [`Framer`] over its reads and handles its frames in
//! order: every frame goes through the store's writer (stored, applied or
//! parked, ACK recorded, committed) and only then are its ACKs written back.
//! A connection slot is taken before `accept`, so the limit holds under a
//! connection storm. A connection from an address off `[mllp] allow`, or
//! beyond its address's share of the slots (`max_connections_per_peer`), is
//! closed before anything is read (counted). A connection must complete its
//! first frame within `first_frame_timeout_s`; idle connections and
//! half-sent frames time out; TCP
//! keepalive finds dead peers; shutdown stops accepting and lets each
//! connection finish the frame in hand.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::integration::hl7::ErrorCode;
use crate::integration::hl7::ack::{self, Header, Outcome};
use crate::integration::hl7::time::HospitalTime;
use crate::integration::mllp::{FrameEvent, Framer, FramerConfig};
use crate::metrics::Metrics;
use crate::store::{Hl7Request, Store};

/// Listener settings.
#[derive(Clone)]
pub struct MllpSettings {
    /// TLS, when configured (certificate and key from PEM files).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Framing.
    pub framer: FramerConfig,
    /// Most connections at once.
    pub max_connections: usize,
    /// Close a connection with no traffic for this long.
    pub idle_timeout: Duration,
    /// Close a connection whose frame stays incomplete for this long.
    pub frame_timeout: Duration,
    /// The hospital's clock, for the time of the ACKs sent here (frames
    /// that never reach the writer).
    pub clock: HospitalTime,
    /// Addresses that may connect (`[mllp] allow`); none: every address.
    pub allow: Option<Vec<firmware_config::Cidr>>,
    /// Most connections at once from one address.
    pub max_per_peer: usize,
    /// Time a new connection has to complete its first frame.
    pub first_frame_timeout: Duration,
}

impl std::fmt::Debug for MllpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpSettings")
            .field("tls", &self.tls.is_some())
            .field("framer", &self.framer)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("frame_timeout", &self.frame_timeout)
            .field("clock", &self.clock.name())
            .field("allow", &self.allow)
            .field("max_per_peer", &self.max_per_peer)
            .field("first_frame_timeout", &self.first_frame_timeout)
            .finish()
    }
}

impl Default for MllpSettings {
    fn default() -> Self {
        Self {
            tls: None,
            framer: FramerConfig::default(),
            max_connections: 64,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(30),
            clock: HospitalTime::utc(),
            allow: None,
            max_per_peer: firmware_config::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            first_frame_timeout: Duration::from_secs(
                firmware_config::DEFAULT_FIRST_FRAME_TIMEOUT_S,
            ),
        }
    }
}

/// Accepts MLLP connections on `listener` until `shutdown` fires, then waits
/// for open connections to finish the frame they are handling.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    metrics: Arc<Metrics>,
    settings: MllpSettings,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let peers: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let tracker = TaskTracker::new();
    loop {
        // Take a slot first: beyond the limit, connections wait in the backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "mllp accept failed");
                    continue;
                }
            },
        };
        // Refused before a byte is read: not on the allow-list, or the
        // address already holds its share of the slots.
        let ip = peer.ip().to_canonical();
        if let Some(allow) = &settings.allow
            && !allow.iter().any(|c| c.contains(ip))
        {
            refuse(&metrics, peer, "not_allowed");
            continue;
        }
        let Some(share) = PeerShare::take(&peers, ip, settings.max_per_peer) else {
            refuse(&metrics, peer, "peer");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let sock = socket2::SockRef::from(&stream);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(10));
        let _ = sock.set_tcp_keepalive(&keepalive);
        let (store, metrics, token) = (store.clone(), metrics.clone(), shutdown.clone());
        let settings = settings.clone();
        tracker.spawn(async move {
            metrics.mllp_connections.inc();
            tracing::info!(%peer, tls = settings.tls.is_some(), "mllp connection opened");
            let r = match settings.tls.clone() {
                None => connection(stream, peer, &store, &metrics, &settings, token).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            connection(tls, peer, &store, &metrics, &settings, token).await
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        )),
                    }
                }
            };
            if let Err(e) = r {
                tracing::info!(%peer, error = %e, "mllp connection ended");
            }
            metrics.mllp_connections.dec();
            drop(share);
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Counts and logs a connection closed unread.
fn refuse(metrics: &Metrics, peer: SocketAddr, reason: &'static str) {
    metrics
        .mllp_refused
        .get_or_create(&crate::metrics::ReasonLabels { reason })
        .inc();
    tracing::warn!(%peer, reason, "mllp connection refused");
}

/// One connection of a peer address; dropping it gives the share back.
struct PeerShare {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerShare {
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        let mut map = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Whether a frame holds a batch: FHS/BHS envelope, or more than one MSH.
fn is_batch(content: &[u8]) -> bool {
    let body = content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content);
    body.starts_with(b"FHS")
        || body.starts_with(b"BHS")
        || body
            .split(|&b| b == b'\r' || b == b'\n')
            .filter(|l| l.starts_with(b"MSH"))
            .nth(1)
            .is_some()
}

/// Stores and applies one message; its ACKs, or a reject ACK when it could
/// not be stored (so the sender keeps it and resends).
async fn handle(store: &Store, raw: &[u8], peer: SocketAddr, clock: &HospitalTime) -> Vec<Vec<u8>> {
    match store.hl7(Hl7Request { raw: raw.to_vec() }).await {
        Ok(reply) => reply.acks,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "hl7 message not stored");
            let outcome = Outcome::Reject {
                code: ErrorCode::InternalError,
                location: None,
                reason: "the appliance could not store the message; resend it".into(),
            };
            let ts = clock.format(hms_domain::Timestamp::now());
            ack::acks(&Header::salvage(raw), &outcome, "UNSTORED", &ts)
        }
    }
}

/// Counts an ACK by its MSA-1 code.
fn count_ack(metrics: &Metrics, ack: &[u8]) {
    let code = ack
        .windows(5)
        .position(|w| w == b"\rMSA|")
        .and_then(|i| ack.get(i + 5..i + 7));
    let kind = match code {
        Some(b"AA") => "AA",
        Some(b"AE") => "AE",
        Some(b"AR") => "AR",
        Some(b"CA") => "CA",
        Some(b"CE") => "CE",
        Some(b"CR") => "CR",
        _ => "other",
    };
    metrics
        .hl7_acks
        .get_or_create(&crate::metrics::KindLabels { kind })
        .inc();
}

async fn connection<S>(
    mut stream: S,
    peer: SocketAddr,
    store: &Store,
    metrics: &Metrics,
    settings: &MllpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut framer = Framer::new(settings.framer);
    let mut buf = vec![0u8; 64 * 1024];
    let mut frame_started: Option<Instant> = None;
    // Until its first frame is complete, a connection has `first_frame_timeout`.
    let mut first_frame_by = Some(Instant::now() + settings.first_frame_timeout);
    loop {
        let wait = match frame_started {
            Some(t) => settings.frame_timeout.saturating_sub(t.elapsed()),
            None => settings.idle_timeout,
        };
        let wait = match first_frame_by {
            Some(by) => wait.min(by.saturating_duration_since(Instant::now())),
            None => wait,
        };
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(wait, stream.read(&mut buf)) => match r {
                Err(_) => {
                    let what = if first_frame_by.is_some_and(|by| Instant::now() >= by) {
                        "no complete frame within first_frame_timeout"
                    } else if frame_started.is_some() {
                        "incomplete frame"
                    } else {
                        "idle"
                    };
                    if let Some(n) = framer.finish() {
                        metrics.mllp_skipped_bytes.inc_by(n as u64);
                    }
                    tracing::info!(%peer, what, "mllp connection timed out");
                    return Ok(());
                }
                Ok(r) => r?,
            },
        };
        if n == 0 {
            if let Some(partial) = framer.finish() {
                metrics.mllp_skipped_bytes.inc_by(partial as u64);
                tracing::info!(%peer, bytes = partial, "mllp peer closed mid-frame");
            }
            return Ok(());
        }
        let arrived = Instant::now();
        framer.push(&buf[..n]);
        while let Some(ev) = framer.next_event() {
            match ev {
                FrameEvent::Frame(content) => {
                    first_frame_by = None;
                    metrics.mllp_frames.inc();
                    // A batch (FHS/BHS, or several MSH) in one frame: each
                    // message is handled and acknowledged on its own, in order.
                    let messages = if is_batch(&content) {
                        crate::integration::hl7::split_messages(&content)
                    } else {
                        vec![content]
                    };
                    let mut out = Vec::new();
                    for raw in messages {
                        for a in handle(store, &raw, peer, &settings.clock).await {
                            count_ack(metrics, &a);
                            out.extend_from_slice(&Framer::encode(&a));
                        }
                    }
                    // Counted before the ACKs leave: a sender that has them
                    // finds them in /metrics.
                    let took = arrived.elapsed().as_secs_f64();
                    metrics.hl7_ack_seconds.observe(took);
                    metrics.hl7_ack_window.observe(took);
                    stream.write_all(&out).await?;
                }
                FrameEvent::Oversize { head } => {
                    first_frame_by = None;
                    metrics.mllp_oversize.inc();
                    let h = Header::salvage(&head);
                    let outcome = Outcome::Reject {
                        code: ErrorCode::ApplicationError,
                        location: None,
                        reason: format!(
                            "frame exceeds the {} byte limit; not stored",
                            settings.framer.max_frame
                        ),
                    };
                    let ts = settings.clock.format(hms_domain::Timestamp::now());
                    for a in ack::acks(&h, &outcome, "REJECT", &ts) {
                        count_ack(metrics, &a);
                        stream.write_all(&Framer::encode(&a)).await?;
                    }
                }
                FrameEvent::Skipped(n) => {
                    metrics.mllp_resyncs.inc();
                    metrics.mllp_skipped_bytes.inc_by(n as u64);
                    tracing::debug!(%peer, bytes = n, "mllp resynchronised");
                }
            }
        }
        frame_started = if framer.in_frame() {
            frame_started.or(Some(arrived))
        } else {
            None
        };
    }
}
