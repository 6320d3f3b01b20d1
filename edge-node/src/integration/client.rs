//! The MLLP client behind `hms-edge hl7 send`: one connection, each message
//! sent after the ACKs it asked for, every ACK read back as an [`AckLine`].
//!
//! How many ACKs a message gets is read from its MSH-15 and MSH-16 the way
//! the appliance answers them ([`ack::acks`](super::hl7::ack::acks)):
//! original mode (both empty) one ACK; enhanced mode a commit ACK unless
//! MSH-15 is `NE` (an empty MSH-15 counts as `AL`), then an application ACK
//! when MSH-16 is valued and not `NE`. `ER` and `SU` are conditions the
//! sender cannot know in advance: the client waits for such an ACK up to
//! the timeout, and silence means the condition was not met.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::hl7::ack::Header;
use super::hl7::{Charset, Message, ParseConfig};
use super::mllp::{FrameEvent, Framer, FramerConfig};

/// One acknowledgement as a sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckLine {
    /// MSA-2: the control id acknowledged.
    pub control_id: String,
    /// MSA-1: AA, AE, AR, CA, CE or CR.
    pub code: String,
    /// ERR-8 (or ERR-3 text), when the ACK carries an error.
    pub error: Option<String>,
    /// ERR-2, the error location (`PV1^1^3`).
    pub location: Option<String>,
}

impl std::fmt::Display for AckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.control_id, self.code)?;
        if let Some(l) = &self.location {
            write!(f, " @{l}")?;
        }
        if let Some(e) = &self.error {
            write!(f, " {e}")?;
        }
        Ok(())
    }
}

fn ack_line(frame: &[u8]) -> AckLine {
    match Message::parse(frame, ParseConfig::default()) {
        Ok(m) => AckLine {
            control_id: m.get("MSA-2").unwrap_or_default(),
            code: m.get("MSA-1").unwrap_or_default(),
            error: m.get("ERR-8").or_else(|| m.get("ERR-3.2")),
            location: m
                .segment("ERR", 1)
                .and_then(|s| s.raw(2))
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        },
        Err(e) => AckLine {
            control_id: String::new(),
            code: "??".into(),
            error: Some(format!("unreadable ACK: {e}")),
            location: None,
        },
    }
}

/// Whether an acknowledgement is sent (HL7 table 0155 in MSH-15/MSH-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// `NE`, or an application ACK with MSH-16 empty: none is sent.
    Never,
    /// `AL` (and any other value, as the appliance reads it): always sent.
    Always,
    /// `ER` (on error only) or `SU` (on success only): sent or not
    /// depending on an outcome the sender learns only from the ACK.
    Conditional,
}

/// Which acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Original mode's one ACK (AA, AE, AR).
    Original,
    /// Enhanced mode's commit ACK (CA, CE, CR), asked for by MSH-15.
    Commit,
    /// Enhanced mode's application ACK (AA, AE, AR), asked for by MSH-16.
    Application,
}

impl std::fmt::Display for AckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AckKind::Original => "ACK",
            AckKind::Commit => "commit ACK",
            AckKind::Application => "application ACK",
        })
    }
}

/// The acknowledgements a message asks for, in the order they come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted(Vec<(AckKind, Due)>);

impl Wanted {
    /// What `h` asks for, exactly as [`ack::acks`](super::hl7::ack::acks) answers it.
    pub fn of(h: &Header) -> Wanted {
        let due = |when: Option<&str>| match when.unwrap_or("AL") {
            "NE" => Due::Never,
            "ER" | "SU" => Due::Conditional,
            _ => Due::Always,
        };
        if !h.enhanced() {
            return Wanted(vec![(AckKind::Original, Due::Always)]);
        }
        let application = match h.app_ack.as_deref() {
            None => Due::Never,
            some => due(some),
        };
        Wanted(
            [
                (AckKind::Commit, due(h.accept_ack.as_deref())),
                (AckKind::Application, application),
            ]
            .into_iter()
            .filter(|(_, d)| *d != Due::Never)
            .collect(),
        )
    }

    /// The ACKs that may come (none `Never`), in order.
    pub fn acks(&self) -> &[(AckKind, Due)] {
        &self.0
    }

    /// Whether no ACK at all will come (`NE` for everything asked).
    pub fn none(&self) -> bool {
        self.0.is_empty()
    }
}

/// The header of a message as the appliance reads it: parsed when it parses
/// (as 8859/1 when MSH-18 is empty, so that only its structure matters),
/// else salvaged from its first line, as for a reject ACK.
pub fn header_of(message: &[u8]) -> Header {
    let cfg = ParseConfig {
        default_charset: Charset::Latin1,
    };
    match Message::parse(message, cfg) {
        Ok(m) => Header::of(&m),
        Err(_) => Header::salvage(message),
    }
}

/// An acknowledgement that did not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absent {
    /// Which one.
    pub kind: AckKind,
    /// [`Due::Always`]: a failure of the receiver; [`Due::Conditional`]:
    /// the condition (`ER`, `SU`) was not met.
    pub due: Due,
    /// True when the wait for it timed out; false when a later ACK came first.
    pub timed_out: bool,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The message's header (MSH-10 control id, MSH-15, MSH-16).
    pub header: Header,
    /// What it asked for.
    pub wanted: Wanted,
    /// The ACKs that came, in order.
    pub acks: Vec<AckLine>,
    /// The ACKs that might have come and did not.
    pub absent: Vec<Absent>,
}

impl Exchange {
    /// Whether an ACK that was due did not come.
    pub fn missing(&self) -> bool {
        self.absent.iter().any(|a| a.due == Due::Always)
    }

    /// Whether every ACK that came is AA or CA and none that was due is missing.
    pub fn ok(&self) -> bool {
        !self.missing() && self.acks.iter().all(|a| a.code == "AA" || a.code == "CA")
    }
}

/// An MLLP connection that sends one message at a time and reads its ACKs.
#[derive(Debug)]
pub struct Client<S = TcpStream> {
    stream: S,
    framer: Framer,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Client<TcpStream> {
    /// Connects to `addr`; `timeout` bounds the connect and each ACK wait.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .context("connecting timed out")?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Client::new(stream, timeout))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over an established stream; `timeout` bounds each ACK wait.
    pub fn new(stream: S, timeout: Duration) -> Self {
        Client {
            stream,
            framer: Framer::new(FramerConfig {
                max_frame: 16 << 20,
                tolerate_missing_cr: true,
            }),
            buf: vec![0u8; 64 * 1024],
            timeout,
        }
    }

    /// Sends `message` and reads the ACKs it asked for, waiting up to the
    /// timeout for each. Once a wait times out, no later ACK of the message
    /// is waited for (ACKs come in order). An error: the connection failed
    /// or the receiver closed it while an ACK could still come.
    pub async fn exchange(&mut self, message: &[u8]) -> anyhow::Result<Exchange> {
        let header = header_of(message);
        let wanted = Wanted::of(&header);
        self.stream
            .write_all(&Framer::encode(message))
            .await
            .context("sending a message")?;
        let mut pending: VecDeque<(AckKind, Due)> = wanted.acks().iter().copied().collect();
        let mut acks = vec![];
        let mut absent = vec![];
        while !pending.is_empty() {
            let deadline = Instant::now() + self.timeout;
            let Some(line) = self.next_ack(deadline).await? else {
                absent.extend(pending.drain(..).map(|(kind, due)| Absent {
                    kind,
                    due,
                    timed_out: true,
                }));
                break;
            };
            let kind = match pending.front() {
                Some((AckKind::Original, _)) => AckKind::Original,
                _ if line.code.starts_with('C') => AckKind::Commit,
                _ => AckKind::Application,
            };
            // An ACK fills its slot; the conditional ones before it were not sent.
            if let Some(i) = pending.iter().position(|(k, _)| *k == kind) {
                absent.extend(pending.drain(..i).map(|(kind, due)| Absent {
                    kind,
                    due,
                    timed_out: false,
                }));
                pending.pop_front();
            }
            acks.push(line);
        }
        Ok(Exchange {
            header,
            wanted,
            acks,
            absent,
        })
    }

    /// The next ACK, or `None` when none came by `deadline`.
    async fn next_ack(&mut self, deadline: Instant) -> anyhow::Result<Option<AckLine>> {
        loop {
            while let Some(ev) = self.framer.next_event() {
                if let FrameEvent::Frame(f) = ev {
                    return Ok(Some(ack_line(&f)));
                }
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => r.context("reading an ACK")?,
            };
            if n == 0 {
                anyhow::bail!("the receiver closed the connection without an ACK");
            }
            self.framer.push(&self.buf[..n]);
        }
    }
}

/// Sends `messages` over one MLLP connection, each after the ACKs it asked
/// for, and returns the ACKs (commit and application ACKs in enhanced mode;
/// none for a message that asked for none). An error when an ACK that was
/// due did not come within `timeout`.
pub async fn send(
    addr: SocketAddr,
    messages: &[Vec<u8>],
    timeout: Duration,
) -> anyhow::Result<Vec<AckLine>> {
    let mut client = Client::connect(addr, timeout).await?;
    let mut out = vec![];
    for msg in messages {
        let ex = client.exchange(msg).await?;
        if ex.missing() {
            anyhow::bail!("no ACK for {:?} within {timeout:?}", ex.header.control_id);
        }
        out.extend(ex.acks);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integration::hl7::ErrorCode;
    use crate::integration::hl7::ack::{self, Outcome};

    fn msg(control: &str, msh15: &str, msh16: &str) -> Vec<u8> {
        let mut s =
            format!("MSH|^~\\&|EPIC|TH|HMS|EDGE|20261127||ADT^A28^ADT_A05|{control}|P|2.5.1");
        if !(msh15.is_empty() && msh16.is_empty()) {
            s.push_str(&format!("|||{msh15}|{msh16}"));
        }
        s.push_str("\rPID|1||M1^^^TH^MR||Roe^Rick\r");
        s.into_bytes()
    }

    fn outcomes() -> [Outcome; 3] {
        let (code, location) = (ErrorCode::DataType, None);
        [
            Outcome::Accepted,
            Outcome::Error {
                code,
                location: location.clone(),
                reason: "x".into(),
            },
            Outcome::Reject {
                code,
                location,
                reason: "x".into(),
            },
        ]
    }

    const VALUES: [&str; 6] = ["", "AL", "NE", "ER", "SU", "XX"];

    /// The client's reading of MSH-15/16 agrees with the ACKs the appliance
    /// builds, for every combination and outcome.
    #[test]
    fn wanted_agrees_with_the_acks_the_appliance_sends() {
        for msh15 in VALUES {
            for msh16 in VALUES {
                let h = header_of(&msg("C1", msh15, msh16));
                let wanted = Wanted::of(&h);
                for outcome in outcomes() {
                    let sent = ack::acks(&h, &outcome, "A", "1");
                    let kinds: Vec<AckKind> = sent
                        .iter()
                        .map(|a| {
                            let code = ack_line(a).code;
                            if !h.enhanced() {
                                AckKind::Original
                            } else if code.starts_with('C') {
                                AckKind::Commit
                            } else {
                                AckKind::Application
                            }
                        })
                        .collect();
                    let always: Vec<AckKind> = wanted
                        .acks()
                        .iter()
                        .filter(|(_, d)| *d == Due::Always)
                        .map(|(k, _)| *k)
                        .collect();
                    let possible: Vec<AckKind> = wanted.acks().iter().map(|(k, _)| *k).collect();
                    let case = format!("MSH-15 {msh15:?} MSH-16 {msh16:?} {outcome:?}");
                    // Every ACK sent is one the client waits for, in order…
                    assert!(
                        possible
                            .iter()
                            .filter(|k| kinds.contains(k))
                            .eq(kinds.iter()),
                        "{case}: sent {kinds:?}, wanted {wanted:?}"
                    );
                    // …and every ACK the client counts on is sent.
                    assert!(
                        always.iter().all(|k| kinds.contains(k)),
                        "{case}: sent {kinds:?}, wanted {wanted:?}"
                    );
                }
                // No ACK is waited for exactly when none is ever sent.
                assert_eq!(
                    wanted.none(),
                    outcomes()
                        .iter()
                        .all(|o| ack::acks(&h, o, "A", "1").is_empty()),
                    "MSH-15 {msh15:?} MSH-16 {msh16:?}"
                );
            }
        }
        // Unparseable messages: the appliance salvages the header; so does the client.
        let broken = b"MSH|^~|EPIC|TH|HMS|EDGE|2026||ADT^A01|B1|P|2.5|||NE|NE\r";
        let h = header_of(broken);
        assert_eq!(h.control_id, "B1");
        assert!(Wanted::of(&h).none());
        assert!(ack::acks(&h, &outcomes()[2], "A", "1").is_empty());
    }

    /// A receiver that answers each message as the appliance would for
    /// `outcome`, over an in-memory stream.
    fn receiver(
        outcome: Outcome,
    ) -> (Client<tokio::io::DuplexStream>, tokio::task::JoinHandle<()>) {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            let mut framer = Framer::new(FramerConfig::default());
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok(n) = far.read(&mut buf).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                framer.push(&buf[..n]);
                while let Some(ev) = framer.next_event() {
                    if let FrameEvent::Frame(m) = ev {
                        let h = header_of(&m);
                        for a in ack::acks(&h, &outcome, "A", "1") {
                            far.write_all(&Framer::encode(&a)).await.unwrap();
                        }
                    }
                }
            }
        });
        (Client::new(near, Duration::from_secs(30)), task)
    }

    #[tokio::test(start_paused = true)]
    async fn acks_are_read_as_msh15_and_msh16_ask() {
        let (mut c, _task) = receiver(Outcome::Accepted);
        let started = Instant::now();
        // NE|NE: nothing to wait for, not even the timeout.
        let ex = c.exchange(&msg("N1", "NE", "NE")).await.unwrap();
        assert!(ex.wanted.none() && ex.acks.is_empty() && ex.absent.is_empty());
        assert!(ex.ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Original mode, then AL|AL: one ACK, then two.
        let ex = c.exchange(&msg("O1", "", "")).await.unwrap();
        assert_eq!(ex.acks.len(), 1);
        assert_eq!(ex.acks[0].to_string(), "O1 AA");
        let ex = c.exchange(&msg("E1", "AL", "AL")).await.unwrap();
        let codes: Vec<&str> = ex.acks.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["CA", "AA"]);
        assert!(ex.ok() && ex.absent.is_empty());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // AL|ER on success: the commit ACK, then silence for the timeout,
        // which is the condition not met, not a failure.
        let ex = c.exchange(&msg("E2", "AL", "ER")).await.unwrap();
        assert_eq!(ex.acks.len(), 1);
        assert_eq!(
            ex.absent,
            [Absent {
                kind: AckKind::Application,
                due: Due::Conditional,
                timed_out: true
            }]
        );
        assert!(ex.ok() && !ex.missing());
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // SU|SU on success: both come.
        let ex = c.exchange(&msg("E3", "SU", "SU")).await.unwrap();
        assert_eq!(ex.acks.len(), 2);
        assert!(ex.absent.is_empty());
        // ER|SU on success: no commit ACK, but the application ACK: the
        // commit condition is settled by it, without a wait.
        let before = Instant::now();
        let ex = c.exchange(&msg("E4", "ER", "SU")).await.unwrap();
        assert_eq!(ex.acks[0].code, "AA");
        assert_eq!(ex.absent.len(), 1);
        assert_eq!(ex.absent[0].kind, AckKind::Commit);
        assert!(!ex.absent[0].timed_out);
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_missing_acks() {
        let (mut c, _task) = receiver(Outcome::Error {
            code: ErrorCode::UnsupportedEvent,
            location: None,
            reason: "parked".into(),
        });
        // AL|ER on an error: CA, then AE.
        let ex = c.exchange(&msg("E1", "AL", "ER")).await.unwrap();
        let codes: Vec<&str> = ex.acks.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["CA", "AE"]);
        assert!(!ex.ok() && !ex.missing());
        // A receiver that never answers: the due ACK is missing after the timeout.
        let (near, _far) = tokio::io::duplex(1 << 16);
        let mut silent = Client::new(near, Duration::from_secs(5));
        let started = Instant::now();
        let ex = silent.exchange(&msg("S1", "", "")).await.unwrap();
        assert!(ex.missing() && !ex.ok());
        assert_eq!(
            ex.absent,
            [Absent {
                kind: AckKind::Original,
                due: Due::Always,
                timed_out: true
            }]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // A receiver that hangs up: an error.
        let (near, far) = tokio::io::duplex(1 << 16);
        drop(far);
        let mut gone = Client::new(near, Duration::from_secs(5));
        assert!(gone.exchange(&msg("G1", "", "")).await.is_err());
    }
}
