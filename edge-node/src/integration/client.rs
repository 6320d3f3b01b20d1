//! The MLLP client behind `hms-edge hl7 send`: one connection, each message
//! sent after the previous one's ACK, every ACK read back as an [`AckLine`].

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hl7::ack::Header;
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
    match super::hl7::Message::parse(frame, super::hl7::ParseConfig::default()) {
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

/// Sends `messages` over one MLLP connection, each after the previous one's
/// ACK, and returns the ACKs (an application ACK after a commit ACK too, when
/// the message asked for one).
pub async fn send(
    addr: SocketAddr,
    messages: &[Vec<u8>],
    timeout: Duration,
) -> anyhow::Result<Vec<AckLine>> {
    use anyhow::Context;
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .context("connecting timed out")?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut framer = Framer::new(FramerConfig {
        max_frame: 16 << 20,
        tolerate_missing_cr: true,
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = vec![];
    for msg in messages {
        stream.write_all(&Framer::encode(msg)).await?;
        let h = Header::salvage(msg);
        let wants_app = h.app_ack.as_deref().is_some_and(|a| a != "NE");
        let mut got = 0;
        loop {
            let wait = if got == 0 {
                timeout
            } else {
                Duration::from_millis(500)
            };
            let mut frame = None;
            while frame.is_none() {
                if let Some(ev) = framer.next_event() {
                    if let FrameEvent::Frame(f) = ev {
                        frame = Some(f);
                    }
                    continue;
                }
                let n = match tokio::time::timeout(wait, stream.read(&mut buf)).await {
                    Ok(r) => r?,
                    Err(_) if got > 0 => break,
                    Err(_) => anyhow::bail!("no ACK within {timeout:?}"),
                };
                if n == 0 {
                    if got > 0 {
                        break;
                    }
                    anyhow::bail!("the receiver closed the connection without an ACK");
                }
                framer.push(&buf[..n]);
            }
            let Some(frame) = frame else { break };
            let line = ack_line(&frame);
            let commit = line.code.starts_with('C');
            out.push(line);
            got += 1;
            if !(commit && wants_app) {
                break;
            }
        }
    }
    Ok(out)
}
