//! The HTTP/1.1 server loop both servers run, with the limits a shared
//! hospital LAN needs (axum's own `serve` has none of them):
//!
//! - a **header-read timeout** ([`Limits::header_timeout`], 10 s): a client
//!   that sends part of its request head and waits, or a kept-alive
//!   connection that sends nothing, is closed;
//! - a **request timeout** ([`Limits::request_timeout`], 30 s) from the
//!   complete head to the response head, reading the body included: a 503
//!   problem after it. A response that streams (server-sent events) is
//!   timed only until its head;
//! - a **connection cap** in all ([`Limits::max_connections`]) and per peer
//!   address ([`Limits::max_per_peer`]): a connection beyond either gets a
//!   503 problem (`Connection: close`) at once and is closed, so idle
//!   sockets from one address never take every slot;
//! - graceful shutdown: once `shutdown` completes no connection is accepted,
//!   requests in flight finish, idle connections close; [`serve`] returns
//!   when the last connection has ended (callers bound that with their
//!   grace period).
//!
//! Refusals and timeouts are reported to an [`Observe`] (metrics).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

use crate::Problem;

/// Default [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default [`Limits::max_per_peer`].
pub const DEFAULT_MAX_PER_PEER: usize = 256;

/// What one server allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a request head may take to arrive (idle kept-alive connections too).
    pub header_timeout: Duration,
    /// Longest from a request head to its response head.
    pub request_timeout: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_peer: DEFAULT_MAX_PER_PEER,
        }
    }
}

/// Told of what a server refused (its metrics).
pub trait Observe: Send + Sync + 'static {
    /// A connection got no slot: every slot was taken (`peer` false) or its
    /// peer address held its share (`peer` true).
    fn refused(&self, peer: bool);
    /// A request was answered 503 after [`Limits::request_timeout`].
    fn timed_out(&self);
}

/// An [`Observe`] that counts.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections refused because every slot was taken.
    pub refused_full: AtomicU64,
    /// Connections refused because their peer held its share of slots.
    pub refused_peer: AtomicU64,
    /// Requests answered 503 after [`Limits::request_timeout`].
    pub timed_out: AtomicU64,
}

impl Observe for Counters {
    fn refused(&self, peer: bool) {
        let c = if peer {
            &self.refused_peer
        } else {
            &self.refused_full
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// Open connections, in all and per peer address.
#[derive(Debug, Default)]
struct Slots {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One taken slot; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    slots: Arc<Mutex<Slots>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_peer.remove(&self.ip);
            }
        }
    }
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    Server,
    Peer,
}

fn take(slots: &Arc<Mutex<Slots>>, ip: IpAddr, limits: &Limits) -> Result<Slot, Full> {
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    if s.total >= limits.max_connections {
        return Err(Full::Server);
    }
    let mine = s.per_peer.entry(ip).or_insert(0);
    if *mine >= limits.max_per_peer {
        return Err(Full::Peer);
    }
    *mine += 1;
    s.total += 1;
    Ok(Slot {
        slots: slots.clone(),
        ip,
    })
}

/// The bytes of a 503 problem response that closes the connection.
fn refusal(detail: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&Problem::unavailable(detail)).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes;
/// see the module doc.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    observe: Arc<dyn Observe>,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Mutex::new(Slots::default()));
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            c = listener.accept() => c,
        };
        let slot = match take(&slots, peer.ip(), &limits) {
            Ok(s) => s,
            Err(full) => {
                let detail = match full {
                    Full::Server => {
                        "every connection slot of this server is taken; try again shortly"
                    }
                    Full::Peer => {
                        "this address holds its share of connection slots; close idle connections"
                    }
                };
                observe.refused(full == Full::Peer);
                tracing::warn!(%peer, reason = ?full, "connection refused: no slot");
                let bytes = refusal(detail);
                tokio::spawn(async move {
                    let mut io = io;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        io.write_all(&bytes).await?;
                        io.shutdown().await
                    })
                    .await;
                });
                continue;
            }
        };
        let (app, observe) = (app.clone(), observe.clone());
        let timeout = limits.request_timeout;
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (app, observe) = (app.clone(), observe.clone());
            async move {
                let req = req.map(Body::new);
                match tokio::time::timeout(timeout, app.oneshot(req)).await {
                    Ok(resp) => resp,
                    Err(_) => {
                        observe.timed_out();
                        Ok(Problem::unavailable(format!(
                            "the request took longer than {} s",
                            timeout.as_secs()
                        ))
                        .into_response())
                    }
                }
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_in_all_and_per_peer_and_given_back() {
        let limits = Limits {
            max_connections: 3,
            max_per_peer: 2,
            ..Limits::default()
        };
        let slots = Arc::new(Mutex::new(Slots::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = take(&slots, a, &limits).unwrap();
        let _a2 = take(&slots, a, &limits).unwrap();
        assert_eq!(take(&slots, a, &limits).unwrap_err(), Full::Peer);
        let _b1 = take(&slots, b, &limits).unwrap();
        assert_eq!(take(&slots, b, &limits).unwrap_err(), Full::Server);
        drop(a1);
        let _b2 = take(&slots, b, &limits).unwrap();
        assert_eq!(slots.lock().unwrap().total, 3);
    }

    use tokio::io::AsyncReadExt;

    async fn start(
        limits: Limits,
    ) -> (SocketAddr, Arc<Counters>, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, limits, counters.clone(), async move {
            let _ = stopped.await;
        }));
        (addr, counters, stop)
    }

    /// Reads until the peer closes; what it sent.
    async fn read_to_close(s: &mut tokio::net::TcpStream) -> String {
        let mut out = vec![];
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn half_a_request_head_is_closed_after_the_header_timeout() {
        let (addr, _, _stop) = start(Limits::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let began = tokio::time::Instant::now();
        // Paused time moves on whenever the runtime is idle: the read ends
        // when the server closes the connection.
        let got = read_to_close(&mut s).await;
        let waited = began.elapsed();
        assert!(!got.contains("200 OK"), "{got}");
        assert!(
            waited >= DEFAULT_HEADER_TIMEOUT && waited < DEFAULT_HEADER_TIMEOUT * 2,
            "closed after {waited:?}"
        );
        // An idle kept-alive connection is closed the same way.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s).await;
        assert!(
            got.starts_with("HTTP/1.1 200 OK") && got.ends_with("ok"),
            "{got}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_thousand_idle_sockets_from_one_address_leave_room_for_others() {
        let (addr, counters, stop) = start(Limits::default()).await;
        let mut idle = Vec::with_capacity(2000);
        for _ in 0..2000 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Beyond its share, the same address is answered 503 at once.
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let refused = read_to_close(&mut extra).await;
        assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
        assert!(refused.contains("application/problem+json"), "{refused}");
        // Another address of the LAN is served normally.
        let other = tokio::net::TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = other.connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s).await;
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert_eq!(
            counters.refused_peer.load(Ordering::Relaxed),
            2000 - DEFAULT_MAX_PER_PEER as u64 + 1
        );
        drop(idle);
        let _ = stop.send(());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_is_answered_503_after_the_request_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        );
        let counters = Arc::new(Counters::default());
        tokio::spawn(serve(
            listener,
            app,
            Limits::default(),
            counters.clone(),
            std::future::pending(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s).await;
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
        assert!(got.contains("longer than 30 s"), "{got}");
        assert_eq!(counters.timed_out.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_refusal_is_a_complete_problem_response() {
        let r = String::from_utf8(refusal("full")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["detail"], "full");
    }
}
