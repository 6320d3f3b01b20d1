//! A minimal keep-alive HTTP/1.1 client over hyper, one connection per client.
//!
//! The load generator opens thousands of these; tests use them to talk to real
//! appliance processes. Each [`Conn`] is one TCP connection; requests on it are
//! sequential, as a kiosk's would be.

use std::net::SocketAddr;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Content type, if any.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }
}

/// A TCP connection to `addr`. As client number `n` of a load generator
/// against a loopback IPv4 address, it comes from a loopback source address
/// of its own (`127.1.x.y`, 250 clients per `x`), as each kiosk or sending
/// system is a host of its own: the servers cap connections per source
/// address, and thousands of clients from 127.0.0.1 would meet that cap.
pub async fn connect_tcp(addr: SocketAddr, n: Option<usize>) -> std::io::Result<TcpStream> {
    match (n, addr) {
        (Some(n), SocketAddr::V4(v4)) if v4.ip().is_loopback() => {
            let source =
                std::net::Ipv4Addr::new(127, 1, (n / 250 % 250) as u8, (n % 250 + 1) as u8);
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

/// One keep-alive connection, opened again when the server closed it while idle.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    client: Option<usize>,
    token: Option<String>,
    send: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`, sending `token` as a bearer token on every request.
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Conn> {
        Self::connect_as(addr, token, None).await
    }

    /// [`Conn::connect`] as client number `client` of a load generator:
    /// from a source address of its own on loopback ([`connect_tcp`]).
    pub async fn connect_as(
        addr: SocketAddr,
        token: Option<&str>,
        client: Option<usize>,
    ) -> anyhow::Result<Conn> {
        let stream = connect_tcp(addr, client)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            addr,
            client,
            token: token.map(str::to_owned),
            send,
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        self.request_with(method, path, &[], body).await
    }

    /// Sends one request with extra headers and reads the whole response.
    pub async fn request_with(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        // A server closes a kept-alive connection that stays idle (the
        // servers here after 10 s): like any HTTP client, open a new one.
        if self.send.is_closed() || self.send.ready().await.is_err() {
            let token = self.token.clone();
            *self = Conn::connect_as(self.addr, token.as_deref(), self.client).await?;
            self.send.ready().await?;
        }
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&mut self, path: &str, body: &serde_json::Value) -> anyhow::Result<Reply> {
        self.request(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }
}
