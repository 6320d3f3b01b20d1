//! `hms-edge hl7 send` (an MLLP client printing each ACK) and `hms-edge hl7
//! replay` (re-applies parked messages through a running appliance's API).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{Failure, Outcome, runtime};
use crate::integration::client::{AckKind, Client, Due, Exchange};

#[derive(Debug, Subcommand)]
pub(super) enum Hl7Cmd {
    /// Send HL7 files (single messages, runs of messages or FHS/BHS batches)
    /// over MLLP, one message at a time, each after the ACKs its MSH-15 and
    /// MSH-16 ask for. Prints one line per ACK (control id, MSA-1, @ERR-2,
    /// error text), `CONTROL_ID no ACK requested` for a message that asks
    /// for none, and after each file `FILE: N messages, N AA, N AE, N AR,
    /// N CA, N CE, N CR, N no ACK, N timed out`. Exit 1 if any ACK is not
    /// AA/CA or an ACK that was due did not come (sending stops there);
    /// 64 for an unreadable file or a bad address.
    Send {
        /// Receiver address, HOST:PORT.
        #[arg(long)]
        to: String,
        /// Seconds to wait for the connection and for each ACK; also how
        /// long a conditional ACK (MSH-15/16 `ER` or `SU`) is waited for
        /// before its silence counts as "condition not met".
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Files to send.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay parked messages through a running appliance's API (admin token).
    /// Prints one line per message: seq, status and, if still parked, why.
    Replay {
        /// The appliance's HTTP address, HOST:PORT.
        #[arg(long)]
        http: String,
        /// An admin token.
        #[arg(long, env = "HMS_TOKEN")]
        token: String,
        /// Replay every parked message.
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        /// Seqs of the parked messages to replay.
        seqs: Vec<u64>,
    },
}

pub(super) fn hl7(cmd: Hl7Cmd) -> Outcome {
    match cmd {
        Hl7Cmd::Send { to, timeout, files } => send(&to, timeout, &files),
        Hl7Cmd::Replay {
            http,
            token,
            all,
            seqs,
        } => replay(&http, &token, all, &seqs),
    }
}

fn send(to: &str, timeout: u64, files: &[PathBuf]) -> Outcome {
    use std::net::ToSocketAddrs;
    let addr = to
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure::Usage(format!("cannot resolve {to:?}")))?;
    // Every file is read before anything is sent.
    let mut batches = vec![];
    for f in files {
        let bytes = std::fs::read(f)
            .map_err(|e| Failure::Usage(format!("reading {}: {e}", f.display())))?;
        batches.push((f, crate::integration::hl7::split_messages(&bytes)));
    }
    let timeout = std::time::Duration::from_secs(timeout);
    runtime(false)?.block_on(async {
        let mut client = Client::connect(addr, timeout).await?;
        let mut left: usize = batches.iter().map(|(_, m)| m.len()).sum();
        let mut ok = true;
        for (file, messages) in &batches {
            let mut tally = Tally::default();
            for msg in messages {
                let exchanged = client.exchange(msg).await;
                left -= 1;
                let ex = match exchanged {
                    Ok(ex) => ex,
                    Err(e) => {
                        println!("{}: {tally}", file.display());
                        return Err(Failure::Failed(format!("{e:#}{}", not_sent(left))));
                    }
                };
                for line in lines(&ex, timeout) {
                    println!("{line}");
                }
                tally.add(&ex);
                ok &= ex.ok();
                if ex.missing() {
                    // A late ACK could no longer be told from the next message's.
                    println!("{}: {tally}", file.display());
                    let why = format!("stopped after a missing ACK{}", not_sent(left));
                    return Err(Failure::Failed(why));
                }
            }
            println!("{}: {tally}", file.display());
        }
        if ok {
            Ok(())
        } else {
            Err(Failure::Failed(String::new()))
        }
    })
}

fn not_sent(left: usize) -> String {
    match left {
        0 => String::new(),
        1 => "; 1 message not sent".into(),
        n => format!("; {n} messages not sent"),
    }
}

/// The lines printed for one message: its ACKs, then what did not come.
fn lines(ex: &Exchange, timeout: std::time::Duration) -> Vec<String> {
    let id = &ex.header.control_id;
    if ex.wanted.none() {
        return vec![format!("{id} no ACK requested")];
    }
    let mut out: Vec<String> = ex.acks.iter().map(ToString::to_string).collect();
    for a in &ex.absent {
        let (field, value) = match a.kind {
            AckKind::Commit => ("MSH-15", ex.header.accept_ack.as_deref()),
            _ => ("MSH-16", ex.header.app_ack.as_deref()),
        };
        out.push(match (a.due, a.timed_out) {
            (Due::Always, true) => format!("{id} no {} within {} s", a.kind, timeout.as_secs()),
            (Due::Always, false) => format!("{id} no {} before the next ACK", a.kind),
            _ => format!(
                "{id} no {} sent ({field} {}: condition not met)",
                a.kind,
                value.unwrap_or("")
            ),
        });
    }
    out
}

/// Per file: each message counted once, by the last ACK it got (the
/// application ACK when one came), as `no ACK` when none came and none was
/// due, as `timed out` when a due ACK did not come; an ACK with another
/// MSA-1, or one that cannot be read, as `other` (shown only when there is one).
#[derive(Debug, Default)]
struct Tally {
    messages: usize,
    codes: [usize; 6],
    no_ack: usize,
    timed_out: usize,
    other: usize,
}

const CODES: [&str; 6] = ["AA", "AE", "AR", "CA", "CE", "CR"];

impl Tally {
    fn add(&mut self, ex: &Exchange) {
        self.messages += 1;
        if ex.missing() {
            self.timed_out += 1;
        } else if let Some(last) = ex.acks.last() {
            match CODES.iter().position(|c| *c == last.code) {
                Some(i) => self.codes[i] += 1,
                None => self.other += 1,
            }
        } else {
            self.no_ack += 1;
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.messages == 1 { "" } else { "s" };
        write!(f, "{} message{s}", self.messages)?;
        for (code, n) in CODES.iter().zip(self.codes) {
            write!(f, ", {n} {code}")?;
        }
        write!(f, ", {} no ACK, {} timed out", self.no_ack, self.timed_out)?;
        if self.other > 0 {
            write!(f, ", {} other", self.other)?;
        }
        Ok(())
    }
}

fn replay(http: &str, token: &str, all: bool, seqs: &[u64]) -> Outcome {
    if !all && seqs.is_empty() {
        return Err(Failure::Usage("give --all or the seqs to replay".into()));
    }
    let paths: Vec<String> = if all {
        vec!["/api/v1/integration/parked/replay".into()]
    } else {
        seqs.iter()
            .map(|s| format!("/api/v1/integration/parked/{s}/replay"))
            .collect()
    };
    let rt = runtime(false)?;
    let mut still_parked = false;
    for path in paths {
        let (status, v) = rt.block_on(post(http, &path, token))?;
        if status != 200 {
            return Err(Failure::Failed(format!(
                "{path}: HTTP {status}: {}",
                v["detail"].as_str().unwrap_or("")
            )));
        }
        let items = match v.get("replayed") {
            Some(list) => list.as_array().cloned().unwrap_or_default(),
            None => vec![v],
        };
        for r in items {
            let st = r["status"].as_str().unwrap_or("?");
            still_parked |= st != "applied";
            match r["reason"].as_str() {
                Some(why) => println!("{} {st} {why}", r["seq"]),
                None => println!("{} {st}", r["seq"]),
            }
        }
    }
    if still_parked {
        Err(Failure::Failed(String::new()))
    } else {
        Ok(())
    }
}

/// `POST path` with an empty body to the appliance's own API (plain HTTP on
/// the LAN or loopback); the status and the JSON body (null when not JSON).
async fn post(http: &str, path: &str, token: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let stream = tokio::net::TcpStream::connect(http)
        .await
        .with_context(|| format!("connecting to {http}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("talking HTTP to {http}"))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, http)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("POST {path}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), 16 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer to POST {path}: {e}"))?
        .to_bytes();
    drop(sender);
    driver.abort();
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}
