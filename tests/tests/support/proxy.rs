//! An HTTP/1.1 relay between an appliance's uplink and its cloud, for the
//! tests that must know what was on the wire when a process died.
//!
//! It relays one exchange at a time per connection (the uplink never
//! pipelines), keeps a log of the exchanges it relayed, and can trap one
//! batch: the first `POST /sync/v1/batches` read after a given number of
//! batches were acknowledged (answered 200) is held until the test lets it
//! go, then sent to the cloud whole, and the cloud's answer, if any, is
//! withheld from the appliance. While the cloud is down, a new connection
//! waits for it (up to [`PATIENCE`]) rather than failing at once, so a
//! restarted cloud picks up where the appliance is without the appliance
//! backing off first.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// How long a connection waits for the cloud to accept, and a test for the
/// trap to report (a guard against a hang, not a timing).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One relayed exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request's method.
    pub method: String,
    /// Its path.
    pub path: String,
    /// The answer's status.
    pub status: u16,
    /// The answer's body as text (`<gzip>` when compressed).
    pub body: String,
}

/// What happened to the trapped batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trapped {
    /// Read whole from the appliance; held until [`Trap::forward`].
    Held,
    /// Sent whole to the cloud.
    Forwarded,
    /// The cloud answered (withheld from the appliance).
    Answered {
        /// The answer's status.
        status: u16,
        /// Its body.
        body: String,
    },
    /// The cloud's end closed without an answer.
    HungUp,
}

/// An armed trap.
pub struct Trap {
    events: mpsc::UnboundedReceiver<Trapped>,
    go: Arc<Notify>,
}

impl Trap {
    /// The next thing that happened to the trapped batch.
    pub async fn next(&mut self) -> Trapped {
        tokio::time::timeout(PATIENCE, self.events.recv())
            .await
            .expect("the trapped batch moved on in time")
            .expect("the relay reports")
    }

    /// Lets the held batch go to the cloud.
    pub fn forward(&self) {
        self.go.notify_one();
    }
}

struct Arming {
    after_acked: usize,
    events: mpsc::UnboundedSender<Trapped>,
    go: Arc<Notify>,
}

#[derive(Default)]
struct State {
    acked_batches: usize,
    trap: Option<Arming>,
    log: Vec<Exchange>,
}

/// A relay listening on loopback.
pub struct Proxy {
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Relays connections to `listen` to the cloud at `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).await.expect("bind the proxy");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(shared.clone(), client, upstream));
            }
        });
        Proxy { state }
    }

    /// Traps the first batch read once `after_acked` more batches were
    /// acknowledged through the relay.
    pub fn trap_batch(&self, after_acked: usize) -> Trap {
        let (tx, events) = mpsc::unbounded_channel();
        let go = Arc::new(Notify::new());
        let mut s = self.state.lock().expect("lock");
        s.trap = Some(Arming {
            after_acked: s.acked_batches + after_acked,
            events: tx,
            go: go.clone(),
        });
        Trap { events, go }
    }

    /// The exchanges relayed so far (the trapped one is not among them).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.lock().expect("lock").log.clone()
    }
}

/// A whole HTTP/1.1 message: its bytes, first line and body.
struct Message {
    raw: Vec<u8>,
    first_line: String,
    gzip: bool,
    body: Vec<u8>,
}

/// Reads one message from `io`, `buf` holding what was read beyond the last.
async fn read_message(io: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Message> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
    };
    let first_line = String::from_utf8_lossy(&buf[..head_end])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let gzip = header("content-encoding").is_some_and(|v| v == "gzip");
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let total = loop {
        let body = &buf[head_end..];
        if chunked {
            if body.starts_with(b"0\r\n\r\n") {
                break head_end + 5;
            }
            if let Some(i) = body.windows(7).position(|w| w == b"\r\n0\r\n\r\n") {
                break head_end + i + 7;
            }
        } else if body.len() >= length.unwrap_or(0) {
            break head_end + length.unwrap_or(0);
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let raw: Vec<u8> = buf.drain(..total).collect();
    let body = raw[head_end..].to_vec();
    Some(Message {
        raw,
        first_line,
        gzip,
        body,
    })
}

/// Connects to the cloud, waiting for it while it is down.
async fn connect(upstream: SocketAddr) -> Option<TcpStream> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match TcpStream::connect(upstream).await {
            Ok(s) => return Some(s),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return None,
        }
    }
}

async fn relay(state: Arc<Mutex<State>>, mut client: TcpStream, upstream: SocketAddr) {
    let mut from_client = vec![];
    let mut cloud: Option<(TcpStream, Vec<u8>)> = None;
    loop {
        let Some(request) = read_message(&mut client, &mut from_client).await else {
            return;
        };
        let mut words = request.first_line.split_whitespace();
        let (method, path) = (
            words.next().unwrap_or("").to_owned(),
            words.next().unwrap_or("").to_owned(),
        );
        let batch = method == "POST" && path == "/sync/v1/batches";
        let trap = {
            let mut s = state.lock().expect("lock");
            match &s.trap {
                Some(a) if batch && s.acked_batches >= a.after_acked => s.trap.take(),
                _ => None,
            }
        };
        if let Some(t) = &trap {
            let _ = t.events.send(Trapped::Held);
            t.go.notified().await;
        }
        if cloud.is_none() {
            cloud = connect(upstream).await.map(|s| (s, vec![]));
        }
        let Some((up, from_cloud)) = cloud.as_mut() else {
            return;
        };
        let report = |what: Trapped| {
            if let Some(t) = &trap {
                let _ = t.events.send(what);
            }
        };
        if up.write_all(&request.raw).await.is_err() {
            report(Trapped::HungUp);
            return;
        }
        report(Trapped::Forwarded);
        let Some(answer) = read_message(up, from_cloud).await else {
            report(Trapped::HungUp);
            return;
        };
        let status: u16 = answer
            .first_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = if answer.gzip {
            "<gzip>".to_owned()
        } else {
            String::from_utf8_lossy(&answer.body).into_owned()
        };
        if trap.is_some() {
            report(Trapped::Answered { status, body });
            // Withheld: the appliance waits until it gives up or dies.
            let mut sink = [0u8; 1024];
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
            return;
        }
        {
            let mut s = state.lock().expect("lock");
            if batch && status == 200 {
                s.acked_batches += 1;
            }
            s.log.push(Exchange {
                method,
                path,
                status,
                body,
            });
        }
        if client.write_all(&answer.raw).await.is_err() {
            return;
        }
    }
}
