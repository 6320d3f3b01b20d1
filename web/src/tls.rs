//! TLS for both servers: the rustls configuration from PEM files
//! ([`acceptor`], used by the cloud's HTTPS and the appliance's MLLP over
//! TLS) and [`TlsListener`], the listener an axum server runs on for HTTPS;
//! and [`client_config`], a client's configuration trusting one CA (with
//! a client certificate when one is given), for the fleet channel.
//!
//! TLS handshakes run in tasks of their own, each bounded by
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up the
//! others; a failed handshake is logged (peer address only) and dropped.
//! rustls with the ring provider, TLS 1.2 and 1.3.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client TLS configuration that trusts only the CA certificates of
/// `ca` (PEM) and, with `client`, presents that certificate chain and key.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the CA {}", ca.display()))?
    {
        roots
            .add(c.with_context(|| format!("parsing the CA {}", ca.display()))?)
            .with_context(|| format!("an unusable certificate in {}", ca.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", ca.display());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("configuring TLS")?
    .with_root_certificates(roots);
    Ok(match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading the certificate {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing the certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate and key do not match")?
        }
    })
}

/// The server TLS configuration from PEM files (certificate chain, private key).
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    acceptor_for_clients(cert, key, None)
}

/// [`acceptor`] that, with `client_ca`, requires every client to present a
/// certificate signed by that CA (mutual TLS).
pub fn acceptor_for_clients(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading the client CA {}", ca.display()))?
            {
                let c = c.with_context(|| format!("parsing the client CA {}", ca.display()))?;
                roots
                    .add(c)
                    .with_context(|| format!("the client CA {} is not usable", ca.display()))?;
            }
            if roots.is_empty() {
                anyhow::bail!("{} holds no certificate", ca.display());
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("configuring client certificate checks")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A listener yielding TLS streams whose handshake has completed.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and completes handshakes with `acceptor`, in the
    /// background, until the listener is dropped.
    pub fn new(tcp: TcpListener, acceptor: tokio_rustls::TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = tx.closed() => break,
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of descriptors and the like: pause before accepting again.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (it never does while the listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, certified.cert.pem()).expect("write cert");
        std::fs::write(&k, certified.signing_key.serialize_pem()).expect("write key");
        (c, k)
    }

    #[test]
    fn an_acceptor_comes_from_a_matching_pair_and_says_what_is_wrong_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed(dir.path());
        let err = |r: anyhow::Result<tokio_rustls::TlsAcceptor>| match r {
            Ok(_) => panic!("accepted a bad certificate/key pair"),
            Err(e) => format!("{e:#}"),
        };
        assert!(acceptor(&cert, &key).is_ok());
        let missing = err(acceptor(&dir.path().join("nope.pem"), &key));
        assert!(missing.contains("reading the certificate"), "{missing}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let none = err(acceptor(&empty, &key));
        assert!(none.contains("holds no certificate"), "{none}");
        let other = tempfile::tempdir().expect("tempdir");
        let (_, other_key) = self_signed(other.path());
        let mismatch = err(acceptor(&cert, &other_key));
        assert!(mismatch.contains("do not match"), "{mismatch}");
    }
}
