//! Where the regional cloud is: `http://HOST:PORT` or `https://HOST:PORT`.
//!
//! Plain HTTP is meant for loopback and tests. HTTPS uses rustls (ring
//! provider) and trusts exactly the certificates of the PEM file given at
//! parse time (the region's CA, or the cloud's own self-signed certificate);
//! the host of the URL is the name checked and sent as SNI. No system trust
//! store is consulted: an appliance trusts its cloud, not the web PKI.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to the cloud (TCP or TLS over TCP).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// The cloud's address and, for `https`, the trust to check it with.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<Tls>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// `"http://HOST:PORT"` (plain; meant for loopback and tests) or
    /// `"https://HOST:PORT"` (rustls; `ca_pem` is the PEM file of the CA or
    /// certificate to trust, required for https and refused for http). A
    /// trailing `/` is accepted; a path, query, user info or a missing port is
    /// an error naming the problem.
    pub fn parse(url: &str, ca_pem: Option<&Path>) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{url:?}: the cloud URL must start with http:// or https://"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{url:?}: the cloud URL is scheme://HOST:PORT, without path, query or user"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| format!("{url:?}: an IPv6 cloud URL is scheme://[ADDR]:PORT"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{url:?}: {h:?} is not an IPv6 address"));
            }
            (h, p)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| format!("{url:?}: the cloud URL needs a port (HOST:PORT)"))?
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{url:?}: {port:?} is not a port (1-65535)"))?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(format!("{url:?}: {host:?} is not a host name or address"));
        }
        let tls = match (https, ca_pem) {
            (true, Some(ca)) => Some(Tls {
                connector: connector(ca)?,
                name: ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{url:?}: {host:?} cannot be checked by TLS: {e}"))?,
            }),
            (true, None) => {
                return Err(format!(
                    "{url:?}: https needs the CA certificate (PEM) to trust the cloud with"
                ));
            }
            (false, Some(_)) => {
                return Err(format!(
                    "{url:?}: a CA certificate is only used with https://; use https or drop the CA"
                ));
            }
            (false, None) => None,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The URL, for display (`https://HOST:PORT`).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.authority()
        )
    }

    /// Whether the endpoint uses TLS.
    pub fn is_https(&self) -> bool {
        self.tls.is_some()
    }

    /// `HOST:PORT` (IPv6 in brackets), the HTTP `host` header.
    pub(crate) fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a connection (TCP, then the TLS handshake for https).
    pub(crate) async fn connect(&self) -> std::io::Result<Box<dyn Stream>> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let s = tls
                    .connector
                    .connect(tls.name.clone(), tcp)
                    .await
                    .map_err(|e| std::io::Error::other(format!("TLS: {e}")))?;
                Ok(Box::new(s))
            }
        }
    }
}

fn connector(ca: &Path) -> Result<tokio_rustls::TlsConnector, String> {
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("{}: unusable certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no certificate", ca.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("configuring TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown() {
        let ep = Endpoint::parse("http://127.0.0.1:9443/", None).unwrap();
        assert_eq!(ep.url(), "http://127.0.0.1:9443");
        assert!(!ep.is_https());
        let ep = Endpoint::parse("http://[::1]:80", None).unwrap();
        assert_eq!(ep.url(), "http://[::1]:80");
        for (bad, why) in [
            ("127.0.0.1:9443", "http:// or https://"),
            ("ftp://x:1", "http:// or https://"),
            ("http://cloud", "needs a port"),
            ("http://cloud:0", "is not a port"),
            ("http://cloud:99999", "is not a port"),
            ("http://cloud:80/sync", "without path"),
            ("http://u@cloud:80", "without path"),
            ("http://:80", "is not a host"),
            ("http://clo ud:80", "is not a host"),
            ("http://[zz]:80", "IPv6"),
            ("https://cloud:443", "needs the CA"),
        ] {
            let e = Endpoint::parse(bad, None).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        let dir = std::env::temp_dir();
        let e = Endpoint::parse("http://cloud:80", Some(&dir)).expect_err("ca with http");
        assert!(e.contains("only used with https"), "{e}");
        let missing = dir.join("hms-no-such-ca.pem");
        let e = Endpoint::parse("https://cloud:443", Some(&missing)).expect_err("no file");
        assert!(e.contains("hms-no-such-ca.pem"), "{e}");
    }
}
