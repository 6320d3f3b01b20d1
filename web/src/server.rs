//! The HTTP/1.1 server loop both servers run, with the limits a shared
//! hospital LAN needs (axum's own `serve` has none of them):
//!
//! - a **header-read timeout** ([`Limits::header_timeout`], 10 s): a client
//!   that sends part of its request head and waits, or a kept-alive
//!   connection that sends nothing, is closed. It is kept by one watchdog
//!   per connection that looks at the connection's activity (requests in
//!   flight, when it last became idle), not by a timer armed per request:
//!   hyper's own header timeout re-arms a timer and reads the socket once
//!   more after every response, which cost the kiosk benchmark about a
//!   fifth of its throughput;
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

/// What one connection is doing, for its header-timeout watchdog.
#[derive(Debug)]
struct Activity {
    /// Requests whose response (body included) has not finished.
    in_flight: AtomicUsize,
    /// When the connection last became idle (opened, or a response
    /// finished), in ms after `epoch`.
    idle_since_ms: AtomicU64,
    epoch: tokio::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// A request's share of its connection's activity: ends (the connection
/// may become idle) when the response body is done, or the request dropped.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .idle_since_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Completes when the connection has been idle (no request in flight) for
/// `limit` since it opened or its last response finished: a request head
/// must arrive within `limit`, bytes or no bytes.
async fn header_watchdog(activity: Arc<Activity>, limit: Duration) {
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    loop {
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            // Busy (a stream may stay so for hours): look again later.
            tokio::time::sleep(limit).await;
            continue;
        }
        let since = activity.idle_since_ms.load(Ordering::Acquire);
        if activity.now_ms() >= since.saturating_add(limit_ms) {
            return;
        }
        let deadline = activity.epoch + Duration::from_millis(since.saturating_add(limit_ms));
        tokio::time::sleep_until(deadline).await;
    }
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
        let activity = Arc::new(Activity::new());
        let watched = activity.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (app, observe) = (app.clone(), observe.clone());
            let in_flight = InFlight::start(activity.clone());
            async move {
                let req = req.map(Body::new);
                let resp = match tokio::time::timeout(timeout, app.oneshot(req)).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        observe.timed_out();
                        Problem::unavailable(format!(
                            "the request took longer than {} s",
                            timeout.as_secs()
                        ))
                        .into_response()
                    }
                };
                Ok::<_, std::convert::Infallible>(resp.map(|inner| {
                    Body::new(Tracked {
                        inner,
                        _in_flight: in_flight,
                    })
                }))
            }
        });
        // No timer: hyper's own header timeout stays off (the watchdog keeps it).
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                () = header_watchdog(watched, header_timeout) => {
                    tracing::debug!(%peer, "connection closed: no request head within the header timeout");
                }
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
    async fn a_head_sent_a_byte_at_a_time_is_closed_after_the_header_timeout() {
        let (addr, _, _stop) = start(Limits::default()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let began = tokio::time::Instant::now();
        // A byte every 3 s: activity, but never a whole head.
        let mut closed_after = None;
        for b in b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaa" {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if s.write_all(&[*b]).await.is_err() {
                closed_after = Some(began.elapsed());
                break;
            }
        }
        let got = read_to_close(&mut s).await;
        let waited = closed_after.unwrap_or_else(|| began.elapsed());
        assert!(!got.contains("200 OK"), "{got}");
        assert!(waited < DEFAULT_HEADER_TIMEOUT * 2, "open for {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_response_is_not_cut_and_the_connection_then_serves_the_next_request() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A body that takes 25 s to finish, like a live stream's.
        let app = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    let chunks = futures_util::stream::unfold(0u8, |i| async move {
                        if i == 5 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Some((Ok::<_, std::convert::Infallible>(format!("{i}")), i + 1))
                    });
                    Body::from_stream(chunks)
                }),
            )
            .route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(
            listener,
            app,
            Limits::default(),
            Arc::new(Counters::default()),
            std::future::pending(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // The chunked body ends with the zero-length chunk.
        while !got.ends_with(b"0\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            assert!(
                n > 0,
                "closed during the response: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        // Kept alive: the next request on it is answered.
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let next = read_to_close(&mut s).await;
        assert!(
            next.starts_with("HTTP/1.1 200 OK") && next.ends_with("ok"),
            "{next}"
        );
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

    #[tokio::test(start_paused = true)]
    async fn the_request_timeout_is_per_request_and_an_idle_connection_still_closes_on_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    "done"
                }),
            )
            .route(
                "/quick",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "done"
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
        // Two 20 s requests on one connection (40 s in all, each within its
        // 30 s), then, 8 s later, a 5 s one that the watchdog sees in flight.
        for (pause, path) in [(0, "/slow"), (0, "/slow"), (8, "/quick")] {
            tokio::time::sleep(Duration::from_secs(pause)).await;
            s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"done") {
                let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                    .await
                    .unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200 OK"));
        }
        assert_eq!(counters.timed_out.load(Ordering::Relaxed), 0);
        // Then idle: closed within the header timeout of the last answer.
        let idle = tokio::time::Instant::now();
        let rest = read_to_close(&mut s).await;
        assert!(rest.is_empty(), "{rest}");
        let waited = idle.elapsed();
        assert!(
            waited >= DEFAULT_HEADER_TIMEOUT
                && waited < DEFAULT_HEADER_TIMEOUT + Duration::from_secs(1),
            "closed after {waited:?}"
        );
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
