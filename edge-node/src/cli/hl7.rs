//! `hms-edge hl7 send` (an MLLP client printing each ACK) and `hms-edge hl7
//! replay` (re-applies parked messages through a running appliance's API).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{Failure, Outcome, runtime};

#[derive(Debug, Subcommand)]
pub(super) enum Hl7Cmd {
    /// Send HL7 files (single messages, runs of messages or FHS/BHS batches)
    /// over MLLP, one message at a time; prints one line per ACK:
    /// control id, MSA-1 and the error text. Exit 1 if any ACK is not AA/CA.
    Send {
        /// Receiver address, HOST:PORT.
        #[arg(long)]
        to: String,
        /// Seconds to wait for each ACK.
        #[arg(long, default_value_t = 30)]
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
    let mut messages = vec![];
    for f in files {
        let bytes = std::fs::read(f)
            .map_err(|e| Failure::Usage(format!("reading {}: {e}", f.display())))?;
        messages.extend(crate::integration::hl7::split_messages(&bytes));
    }
    let acks = runtime(false)?.block_on(crate::integration::client::send(
        addr,
        &messages,
        std::time::Duration::from_secs(timeout),
    ))?;
    let mut ok = true;
    for a in &acks {
        println!("{a}");
        ok &= a.code == "AA" || a.code == "CA";
    }
    if ok {
        Ok(())
    } else {
        Err(Failure::Failed(String::new()))
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
