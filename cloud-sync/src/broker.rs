//! The embedded MQTT broker (`[fleet] embedded = true`, docs/fleet.md):
//! [`rumqttd`] in this process, so that a demo or a small region runs
//! the fleet channel with nothing else installed. Production uses
//! Mosquitto with TLS; this broker speaks plain MQTT 3.1.1 (no TLS, no
//! authentication: anyone who reaches `listen` may publish and
//! subscribe), on loopback unless `insecure_mqtt` says otherwise
//! ([`crate::config`]).
//!
//! [`EmbeddedBroker::start`] runs rumqttd's router (its own thread, as
//! rumqttd spawns it) and its MQTT 3.1.1 server on a thread of its own with
//! a single-threaded runtime, as rumqttd's `Broker::start` does; it returns
//! once the server listens, or with the error that kept it from listening
//! (a port already taken). rumqttd's `Broker` is not used: its `start`
//! blocks until every server ends, logs a listener's bind error and still
//! returns `Ok`, and cannot be stopped; the router and server it wires are
//! public, and are wired here the same way.
//!
//! The limits suit a region of up to about 1,000 appliances (each one
//! connection): [`MAX_CONNECTIONS`], a PUBLISH payload up to
//! [`MAX_PAYLOAD_BYTES`], each subscription filter's in-memory log bounded
//! to [`LOG_SEGMENTS`] × [`LOG_SEGMENT_BYTES`]. Retained messages and last
//! wills are MQTT 3.1.1's (rumqttd keeps them in memory: a restart of the
//! cloud forgets them, and the appliances publish their status again when
//! they reconnect). A subscription gets at most 100 retained messages at
//! QoS 1 or 2 (rumqttd's fixed in-flight window; the rest are dropped),
//! and at most [`MAX_RETAINED_QOS0`] at QoS 0. A PUBLISH to a topic
//! nobody subscribed to is acknowledged and dropped (retained if asked).
//!
//! [`EmbeddedBroker::stop`] (or dropping it) ends the server: its listener
//! and every connection close. rumqttd's router has no way to stop: its
//! thread stays parked, with what it held, until the process exits.
//!
//! rumqttd logs through `tracing` (info lines per connection accepted or
//! closed; an error line per connection reset or timed out, and, oddly,
//! after a clean DISCONNECT too: `router-drop`). On the
//! server's thread its lines below WARN are dropped (`Quiet`); whatever
//! else it says goes to the subscriber in force where the broker was
//! started, under `HMS_LOG` as everything else. The router's thread logs
//! through the global subscriber (its connection and subscription lines
//! are at info; `HMS_LOG=info,rumqttd=warn` quiets them).

use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, RouterConfig, Server, ServerSettings};
use tokio::sync::oneshot;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

/// Connections at once (appliances, the cloud's own client, tools): twice
/// the ~1,000 appliances of a region, for reconnections that overlap.
pub const MAX_CONNECTIONS: usize = 2_048;

/// The largest PUBLISH payload accepted (the fleet channel's own limit,
/// [`crate::fleet::MAX_MESSAGE_BYTES`], is the same).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The largest packet after its fixed header: a PUBLISH of
/// [`MAX_PAYLOAD_BYTES`] with the longest topic (2 + 65,535 bytes) and a
/// packet id (2).
const MAX_PACKET_BYTES: usize = MAX_PAYLOAD_BYTES + 2 + u16::MAX as usize + 2;

/// Retained messages a QoS 0 subscription gets (rumqttd reads at most this
/// many messages for it at once; QoS 1 and 2 are capped at 100).
pub const MAX_RETAINED_QOS0: u64 = 2_048;

/// The size at which a filter's in-memory log starts a new segment.
pub const LOG_SEGMENT_BYTES: usize = 1024 * 1024;

/// Segments kept per filter (the oldest is dropped for a new one).
pub const LOG_SEGMENTS: usize = 4;

/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT_MS: u16 = 10_000;

/// Packets read from a connection in one go.
const READ_BATCH: usize = 100;

/// The running embedded broker; stops when [`EmbeddedBroker::stop`]ped or
/// dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    listen: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts the broker on `listen` and returns once it listens; an error
    /// (the port taken, say) names the address and why.
    pub fn start(listen: SocketAddr) -> anyhow::Result<EmbeddedBroker> {
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        // rumqttd's lines on the server's thread go where ours go here.
        let log = Dispatch::new(Quiet {
            inner: tracing::dispatcher::get_default(Dispatch::clone),
        });
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&log);
                serve(listen, &ready_tx, stop_rx);
            })
            .context("starting the embedded MQTT broker's thread")?;
        let started = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("its thread ended before it listened".into()));
        match started {
            Ok(()) => {
                tracing::info!(%listen, "embedded MQTT broker listening");
                Ok(EmbeddedBroker {
                    listen,
                    stop: Some(stop_tx),
                    thread: Some(thread),
                })
            }
            Err(why) => {
                let _ = thread.join();
                Err(anyhow!(
                    "the embedded MQTT broker cannot listen on {listen}: {why} (another MQTT \
                     broker there? choose another [fleet] listen)"
                ))
            }
        }
    }

    /// The address it listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Stops the server and waits for its thread: once this returns, the
    /// listener and every connection are closed.
    pub async fn stop(mut self) {
        self.signal();
        if let Some(thread) = self.thread.take() {
            let listen = self.listen;
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!(%listen, "the embedded MQTT broker's thread failed");
            }
        }
        tracing::info!(listen = %self.listen, "embedded MQTT broker stopped");
    }

    fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for EmbeddedBroker {
    /// Tells the server to stop, without waiting for it.
    fn drop(&mut self) {
        self.signal();
    }
}

/// The broker's thread: the router, then the server until `stop` (or until
/// it fails); `ready` says whether it listens. Leaving drops the runtime,
/// which closes the listener and every connection.
fn serve(
    listen: SocketAddr,
    ready: &std::sync::mpsc::SyncSender<Result<(), String>>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("starting its runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let router = rumqttd::Router::new(0, router_config()).spawn();
        let mut server = Server::new(server_settings(listen), router, V4);
        let serving = server.start(LinkType::Remote);
        tokio::pin!(serving);
        // rumqttd binds the listener before its first wait (for a
        // connection), so the first poll of `serving` either fails to bind
        // or leaves it listening. (Were that to change, a bind error would
        // still end `serving`, and be logged below.)
        tokio::select! {
            biased;
            failed = &mut serving => {
                let why = match failed {
                    Err(e) => std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
                    Ok(()) => "it stopped at once".into(),
                };
                let _ = ready.send(Err(why));
                return;
            }
            () = std::future::ready(()) => {}
        }
        let _ = ready.send(Ok(()));
        tokio::select! {
            ended = &mut serving => {
                let why = match ended {
                    Err(e) => format!("{e:#}"),
                    Ok(()) => "it ended".into(),
                };
                tracing::error!(%listen, error = why, "the embedded MQTT broker stopped on its own");
            }
            _ = stop => {}
        }
    });
}

fn router_config() -> RouterConfig {
    RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: MAX_RETAINED_QOS0,
        max_segment_size: LOG_SEGMENT_BYTES,
        max_segment_count: LOG_SEGMENTS,
        ..RouterConfig::default()
    }
}

fn server_settings(listen: SocketAddr) -> ServerSettings {
    ServerSettings {
        name: "fleet-mqtt".into(),
        listen,
        tls: None,
        // A millisecond between accepts: a reconnecting region (1,000
        // appliances) is in within a second or so.
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: CONNECT_TIMEOUT_MS,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: READ_BATCH,
            auth: None,
            external_auth: None,
            // No log for a topic nobody subscribed to (it would keep one
            // per topic published, per appliance).
            dynamic_filters: false,
        },
    }
}

/// Forwards to `inner` all but rumqttd's events and spans below WARN. It
/// gives no level hint: `inner`, registered on its own, gives tracing's.
struct Quiet {
    inner: Dispatch,
}

fn chatty(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    (target == "rumqttd" || target.starts_with("rumqttd::")) && *meta.level() > Level::WARN
}

impl Subscriber for Quiet {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if chatty(meta) {
            Interest::never()
        } else {
            self.inner.register_callsite(meta)
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        !chatty(meta) && self.inner.enabled(meta)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        self.inner.event(event)
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }

    fn current_span(&self) -> tracing_core::span::Current {
        self.inner.current_span()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rumqttc::{AsyncClient, EventLoop, MqttOptions, Packet, QoS};

    use super::*;

    /// How long anything may take to arrive (a guard, not a timing).
    const PATIENCE: Duration = Duration::from_secs(15);

    /// An address on loopback no one listens on (bound, then released).
    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
    }

    fn client(addr: SocketAddr, id: &str) -> (AsyncClient, EventLoop) {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(2 * MAX_PACKET_BYTES, 2 * MAX_PACKET_BYTES);
        AsyncClient::new(opts, 16)
    }

    /// Polls `events` until `want` picks a packet; panics on a connection
    /// error, or after [`PATIENCE`].
    async fn next<T>(events: &mut EventLoop, want: impl Fn(&Packet) -> Option<T>) -> T {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(p)) => {
                        if let Some(t) = want(&p) {
                            return t;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("connection lost: {e}"),
                }
            }
        })
        .await
        .expect("in time")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_no_one_subscribed_to_keeps_its_publisher_and_is_retained_for_later() {
        let broker = EmbeddedBroker::start(free_addr()).expect("start");
        let addr = broker.listen_addr();
        let topic = "hms/v1/eu-west/h1/edge-1/status";
        let (publisher, mut events) = client(addr, "publisher");
        publisher
            .publish(topic, QoS::AtLeastOnce, true, "online")
            .await
            .expect("publish");
        publisher
            .publish(
                "hms/v1/eu-west/h1/edge-1/telemetry",
                QoS::AtLeastOnce,
                false,
                "t",
            )
            .await
            .expect("publish");
        // Both acknowledged on its first connection: no subscriber, yet no
        // disconnect (which `next` would meet as an error).
        for _ in 0..2 {
            next(&mut events, |p| {
                matches!(p, Packet::PubAck(_)).then_some(())
            })
            .await;
        }
        // A subscriber that comes later gets the retained message, marked so.
        let (late, mut late_events) = client(addr, "late");
        late.subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let (payload, retain) = next(&mut late_events, |p| match p {
            Packet::Publish(p) if p.topic == topic => Some((p.payload.clone(), p.retain)),
            _ => None,
        })
        .await;
        assert_eq!((&payload[..], retain), (&b"online"[..], true));
        // A payload of the largest size passes, live and not retained.
        let big = vec![b'x'; MAX_PAYLOAD_BYTES];
        publisher
            .publish(topic, QoS::AtLeastOnce, false, big.clone())
            .await
            .expect("publish");
        let publisher_task = tokio::spawn(async move {
            loop {
                if events.poll().await.is_err() {
                    return;
                }
            }
        });
        let (payload, retain) = next(&mut late_events, |p| match p {
            Packet::Publish(p) if p.topic == topic => Some((p.payload.clone(), p.retain)),
            _ => None,
        })
        .await;
        assert_eq!((payload.len(), retain), (MAX_PAYLOAD_BYTES, false));
        publisher_task.abort();
        broker.stop().await;
    }

    /// How many retained messages a subscription to `filter` at `qos` gets:
    /// those that come before a live message published once it was
    /// acknowledged (it comes after them).
    async fn retained_count(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> usize {
        let (c, mut events) = client(addr, id);
        c.subscribe(filter, qos).await.expect("subscribe");
        next(&mut events, |p| {
            matches!(p, Packet::SubAck(_)).then_some(())
        })
        .await;
        let marker = "hms/v1/eu-west/marker/edge-1/status";
        let (m, mut marker_events) = client(addr, &format!("{id}-marker"));
        m.publish(marker, QoS::AtLeastOnce, false, "live")
            .await
            .expect("publish");
        next(&mut marker_events, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
        let mut got = 0;
        loop {
            let (topic, retain) = next(&mut events, |p| match p {
                Packet::Publish(p) => Some((p.topic.clone(), p.retain)),
                _ => None,
            })
            .await;
            if topic == marker {
                assert!(!retain, "the marker is live");
                return got;
            }
            assert!(retain, "{topic}");
            got += 1;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_qos_0_subscriber_gets_a_whole_regions_retained_statuses_and_qos_1_the_first_100() {
        let broker = EmbeddedBroker::start(free_addr()).expect("start");
        let addr = broker.listen_addr();
        let (publisher, mut events) = client(addr, "region");
        let nodes = 1_000;
        let acked = tokio::spawn(async move {
            let mut acks = 0;
            while acks < nodes {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) => acks += 1,
                    Ok(_) => {}
                    Err(e) => panic!("connection lost: {e}"),
                }
            }
            events
        });
        for n in 0..nodes {
            publisher
                .publish(
                    format!("hms/v1/eu-west/h{n}/edge-1/status"),
                    QoS::AtLeastOnce,
                    true,
                    format!("{{\"online\":true,\"n\":{n}}}"),
                )
                .await
                .expect("publish");
        }
        let _events = tokio::time::timeout(PATIENCE, acked)
            .await
            .expect("all acknowledged")
            .expect("join");
        let filter = "hms/v1/eu-west/+/+/status";
        assert_eq!(
            retained_count(addr, "qos0", filter, QoS::AtMostOnce).await,
            nodes
        );
        // rumqttd's fixed in-flight window (docs/fleet.md says so).
        assert_eq!(
            retained_count(addr, "qos1", filter, QoS::AtLeastOnce).await,
            100
        );
        broker.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_taken_port_is_an_error_naming_it_and_a_stopped_broker_frees_its_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let e = format!("{:#}", EmbeddedBroker::start(addr).expect_err("taken"));
        assert!(
            e.contains(&format!("cannot listen on {addr}")) && e.contains("in use"),
            "{e}"
        );
        drop(taken);
        let broker = EmbeddedBroker::start(addr).expect("free now");
        let (c, mut events) = client(addr, "probe");
        next(&mut events, |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await;
        broker.stop().await;
        // Once stopped, its listener is closed: the port can be bound again,
        // and the client's connection is gone.
        std::net::TcpListener::bind(addr).expect("the port is free");
        let lost = tokio::time::timeout(PATIENCE, async {
            loop {
                if events.poll().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(lost.is_ok(), "the connection closed");
        drop(c);
    }

    /// Records each event's target and level.
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let m = event.metadata();
            self.0
                .lock()
                .expect("lock")
                .push(format!("{} {}", m.target(), m.level()));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn rumqttd_below_warn_is_dropped_and_everything_else_passes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let quiet = Dispatch::new(Quiet {
            inner: Dispatch::new(Capture(seen.clone())),
        });
        tracing::dispatcher::with_default(&quiet, || {
            tracing::info!(target: "rumqttd::server::broker", "accept");
            tracing::debug!(target: "rumqttd", "chatter");
            tracing::trace!(target: "rumqttd::router::routing", "more chatter");
            tracing::warn!(target: "rumqttd::router::routing", "a warning");
            tracing::error!(target: "rumqttd::server::broker", "an error");
            tracing::info!("ours");
            tracing::debug!(target: "rumqttdx", "not rumqttd's");
        });
        assert_eq!(
            *seen.lock().expect("lock"),
            [
                "rumqttd::router::routing WARN",
                "rumqttd::server::broker ERROR",
                "cloud_sync::broker::tests INFO",
                "rumqttdx DEBUG",
            ]
        );
    }
}
