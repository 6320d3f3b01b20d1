//! How the cloud reaches PostgreSQL, over TLS when the connection string
//! says so: libpq's `sslmode` and `sslrootcert`, put in force with rustls.
//!
//! The `postgres` crate knows `sslmode` `disable`, `prefer` and `require`
//! only, and nothing of certificates. [`PgTarget::parse`] takes both
//! settings out of the string, hands the rest to the crate and connects
//! through a rustls connector (ring) that checks what the mode asks for:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it, else plain | not checked (encryption only) |
//! | `require` | always: a server without TLS is refused, never used in plain | checked against `sslrootcert` when given, else not checked |
//! | `verify-ca` | always | chains to `sslrootcert` (required) |
//! | `verify-full` | always | chains to `sslrootcert` (required) and names the `host` connected to |
//!
//! As with libpq, only `verify-full` protects against a server that is not
//! the one named; production configurations use it. `allow`, client
//! certificates and the system's trust store are not supported: a string
//! that asks for them is refused when the configuration is loaded. The
//! string is libpq's `key=value` form (values without spaces) or a
//! `postgresql://` URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, Config};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// `sslmode`, as libpq names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it (certificate not checked), else plain.
    Prefer,
    /// TLS or nothing; the certificate is checked only against a given
    /// `sslrootcert`.
    Require,
    /// TLS; the certificate chains to `sslrootcert`.
    VerifyCa,
    /// TLS; the certificate chains to `sslrootcert` and names the host.
    VerifyFull,
}

impl TlsMode {
    fn parse(s: &str) -> Result<TlsMode, String> {
        Ok(match s {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not supported: use disable, prefer, require, \
                     verify-ca or verify-full"
                ));
            }
        })
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// A PostgreSQL server, the database to use on it and how to reach it.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    mode: TlsMode,
    tls: MakeRustlsConnect,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: only the mode is shown.
        f.debug_struct("PgTarget")
            .field("sslmode", &self.mode.as_str())
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses a connection string (see the module doc). A relative
    /// `sslrootcert` is read from the working directory; the cloud's
    /// configuration makes it absolute first ([`absolute_root_cert`]).
    pub fn parse(conn: &str) -> Result<PgTarget, String> {
        let split = Split::of(conn)?;
        let mut config: Config = split
            .rest
            .parse()
            .map_err(|e| format!("the PostgreSQL connection string does not parse: {e}"))?;
        config.ssl_mode(match split.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &split.root_cert {
            Some(file) => Some(roots(file)?),
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (split.mode, roots) {
            (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert=FILE, the PEM file of the CA that signed \
                     the server's certificate",
                    split.mode.as_str()
                ));
            }
            (TlsMode::Disable | TlsMode::Prefer, _) | (TlsMode::Require, None) => {
                Arc::new(EncryptionOnly(provider.clone()))
            }
            (TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull, Some(roots)) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("sslrootcert: {e}"))?;
                if split.mode == TlsMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("configuring TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(PgTarget {
            config,
            mode: split.mode,
            tls: MakeRustlsConnect::new(client),
        })
    }

    /// The TLS mode in force.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The same server, database `db`.
    pub fn with_dbname(&self, db: &str) -> PgTarget {
        let mut t = self.clone();
        t.config.dbname(db);
        t
    }

    /// Opens a session (blocking; not on a tokio runtime's thread).
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }
}

/// `conn` with a relative `sslrootcert` made absolute against `base` (the
/// directory of the configuration file that holds it); checked as
/// [`PgTarget::parse`] checks it.
pub fn absolute_root_cert(conn: &str, base: &Path) -> Result<String, String> {
    let split = Split::of(conn)?;
    let out = match split.root_cert {
        Some(file) if file.is_relative() => {
            let from = format!("sslrootcert={}", split.root_cert_raw);
            let to = format!("sslrootcert={}", base.join(&file).display());
            conn.replacen(&from, &to, 1)
        }
        _ => conn.to_owned(),
    };
    PgTarget::parse(&out)?;
    Ok(out)
}

/// A connection string with the TLS settings taken out.
struct Split {
    /// Everything else, for the `postgres` crate.
    rest: String,
    mode: TlsMode,
    root_cert: Option<PathBuf>,
    /// `sslrootcert`'s value as written.
    root_cert_raw: String,
}

impl Split {
    fn of(conn: &str) -> Result<Split, String> {
        let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
        let mut mode = None;
        let mut root = None;
        let mut take = |kv: &str| -> Result<bool, String> {
            let Some((key, value)) = kv.split_once('=') else {
                return Ok(false);
            };
            let value = value.trim_matches('\'');
            match key {
                "sslmode" => mode = Some(TlsMode::parse(value)?),
                "sslrootcert" => root = Some(value.to_owned()),
                "sslcert" | "sslkey" => {
                    return Err(format!(
                        "{key} (client certificates) is not supported; authenticate with a \
                         password or trust"
                    ));
                }
                _ => return Ok(false),
            }
            Ok(true)
        };
        let rest = if url {
            match conn.split_once('?') {
                None => conn.to_owned(),
                Some((base, query)) => {
                    let mut kept = Vec::new();
                    for kv in query.split('&') {
                        if !take(kv)? {
                            kept.push(kv);
                        }
                    }
                    if kept.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", kept.join("&"))
                    }
                }
            }
        } else {
            let mut kept = Vec::new();
            for kv in conn.split_whitespace() {
                if !take(kv)? {
                    kept.push(kv);
                }
            }
            kept.join(" ")
        };
        let root_cert_raw = root.clone().unwrap_or_default();
        Ok(Split {
            rest,
            mode: mode.unwrap_or(TlsMode::Prefer),
            root_cert: root.map(PathBuf::from),
            root_cert_raw,
        })
    }
}

/// The CA certificates of a PEM file.
fn roots(file: &Path) -> Result<rustls::RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "sslrootcert {}: not a PEM certificate file: {e}",
                file.display()
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("sslrootcert {}: unusable certificate: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "sslrootcert {}: holds no certificate",
            file.display()
        ));
    }
    Ok(roots)
}

/// `prefer`, and `require` without a CA: the session is encrypted and the
/// handshake's signatures checked, but the certificate is not (libpq's
/// meaning of these modes).
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a CA): the chain is checked, the name
/// is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name only once the chain is good: a name error
        // means the chain is.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! Each mode against stand-in servers on loopback that speak just
    //! enough of PostgreSQL's start-up: one agrees to TLS, completes the
    //! handshake with its own certificate and then refuses the login with a
    //! marker (the marker in a client's error proves the session got that
    //! far, over TLS); the other declines TLS and refuses the login in
    //! plain with another marker. (The real server is in `store::tests`.)

    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    const REACHED: &str = "stand-in server reached over TLS";

    /// A certificate for `localhost` and its PEM file.
    fn certificate(dir: &Path, name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        std::fs::write(dir.join(name), c.cert.pem()).expect("write");
        c
    }

    /// Serves TLS start-ups on 127.0.0.1 for the life of the test; returns the port.
    fn stand_in(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> u16 {
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key.into())
            .expect("server config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || serve(tcp, config));
            }
        });
        port
    }

    fn serve(mut tcp: std::net::TcpStream, config: Arc<rustls::ServerConfig>) -> Option<()> {
        let mut ssl_request = [0u8; 8];
        tcp.read_exact(&mut ssl_request).ok()?;
        (ssl_request == [0, 0, 0, 8, 4, 210, 22, 47]).then_some(())?;
        tcp.write_all(b"S").ok()?;
        let conn = rustls::ServerConnection::new(config).ok()?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut len = [0u8; 4];
        tls.read_exact(&mut len).ok()?;
        let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        tls.read_exact(&mut startup).ok()?;
        tls.write_all(&refusal(REACHED)).ok()?;
        tls.flush().ok()
    }

    /// A stand-in without TLS: it declines the SSL request and refuses the
    /// login, in plain, with `PLAIN`; returns the port.
    fn plain_stand_in() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut tcp in listener.incoming().flatten() {
                std::thread::spawn(move || -> Option<()> {
                    loop {
                        let mut len = [0u8; 4];
                        tcp.read_exact(&mut len).ok()?;
                        let mut body =
                            vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                        tcp.read_exact(&mut body).ok()?;
                        if body == [4, 210, 22, 47] {
                            tcp.write_all(b"N").ok()?;
                            continue;
                        }
                        tcp.write_all(&refusal(PLAIN)).ok()?;
                        return tcp.flush().ok();
                    }
                });
            }
        });
        port
    }

    const PLAIN: &str = "stand-in server reached in plain";

    /// An ErrorResponse carrying `marker`.
    fn refusal(marker: &str) -> Vec<u8> {
        let mut fields = Vec::new();
        for (code, text) in [(b'S', "FATAL"), (b'C', "28000"), (b'M', marker)] {
            fields.push(code);
            fields.extend_from_slice(text.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut msg = vec![b'E'];
        msg.extend_from_slice(&((fields.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(&fields);
        msg
    }

    #[test]
    fn a_server_without_tls_is_refused_where_tls_is_required() {
        let port = plain_stand_in();
        let dir = tempfile::tempdir().expect("tempdir");
        certificate(dir.path(), "ca.pem");
        let ca = dir.path().join("ca.pem");
        let at = |rest: &str| {
            format!(
                "host=localhost port={port} user=postgres dbname=postgres connect_timeout=10 {rest}"
            )
        };
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = attempt(&at(&format!("sslmode={mode} sslrootcert={}", ca.display())));
            assert!(
                !e.contains(PLAIN) && e.contains("server does not support TLS"),
                "{mode}: {e}"
            );
        }
        let e = attempt(&at("sslmode=require"));
        assert!(
            !e.contains(PLAIN) && e.contains("server does not support TLS"),
            "{e}"
        );
        for mode in ["prefer", "disable"] {
            let e = attempt(&at(&format!("sslmode={mode}")));
            assert!(e.contains(PLAIN), "{mode}: {e}");
        }
    }

    fn attempt(conn: &str) -> String {
        let target = PgTarget::parse(conn).unwrap_or_else(|e| panic!("{conn}: {e}"));
        match target.connect() {
            Ok(_) => panic!("{conn}: the stand-in never lets anyone in"),
            Err(e) => format!("{:#}", anyhow::Error::new(e)),
        }
    }

    #[test]
    fn each_sslmode_checks_what_it_says_over_real_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = certificate(dir.path(), "server.pem");
        let _stranger = certificate(dir.path(), "stranger.pem");
        let port = stand_in(&server);
        let ca = dir.path().join("server.pem");
        let stranger = dir.path().join("stranger.pem");
        let at = |host: &str, rest: &str| {
            format!(
                "host={host} port={port} user=postgres dbname=postgres connect_timeout=10 {rest}"
            )
        };
        let ca = ca.display();
        let stranger = stranger.display();
        // verify-full: the right CA and the name on the certificate.
        let e = attempt(&at(
            "localhost",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ));
        assert!(e.contains(REACHED), "{e}");
        // ... as a URL too.
        let e = attempt(&format!(
            "postgresql://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}&connect_timeout=10"
        ));
        assert!(e.contains(REACHED), "{e}");
        // verify-full: a name the certificate does not carry is refused.
        let e = attempt(&at(
            "127.0.0.1",
            &format!("sslmode=verify-full sslrootcert={ca}"),
        ));
        assert!(!e.contains(REACHED) && e.contains("TLS"), "{e}");
        assert!(e.contains("not valid for name"), "{e}");
        // verify-ca: the chain only.
        let e = attempt(&at(
            "127.0.0.1",
            &format!("sslmode=verify-ca sslrootcert={ca}"),
        ));
        assert!(e.contains(REACHED), "{e}");
        // Another CA: refused in every mode that checks.
        for mode in ["verify-full", "verify-ca", "require"] {
            let e = attempt(&at(
                "localhost",
                &format!("sslmode={mode} sslrootcert={stranger}"),
            ));
            assert!(
                !e.contains(REACHED) && e.contains("invalid peer certificate"),
                "{mode}: {e}"
            );
        }
        // require and prefer without a CA: encrypted, certificate not checked.
        for mode in ["require", "prefer"] {
            let e = attempt(&at("127.0.0.1", &format!("sslmode={mode}")));
            assert!(e.contains(REACHED), "{mode}: {e}");
        }
    }

    #[test]
    fn connection_strings_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        certificate(dir.path(), "ca.pem");
        let refused = |conn: &str| PgTarget::parse(conn).expect_err(conn);
        assert!(refused("host=db sslmode=verify-full").contains("needs sslrootcert=FILE"));
        assert!(refused("host=db sslmode=verify-ca").contains("needs sslrootcert=FILE"));
        assert!(refused("host=db sslmode=allow").contains("not supported"));
        assert!(refused("host=db sslmode=require sslcert=c.pem").contains("client certificates"));
        assert!(
            refused("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem")
                .contains("/nonexistent/ca.pem")
        );
        assert!(refused("host=db colour=blue").contains("does not parse"));
        for (conn, mode) in [
            ("host=db", TlsMode::Prefer),
            ("host=db sslmode=disable", TlsMode::Disable),
            ("host=db sslmode='require'", TlsMode::Require),
            ("postgresql://u@db/x?sslmode=require", TlsMode::Require),
        ] {
            assert_eq!(PgTarget::parse(conn).expect(conn).mode(), mode, "{conn}");
        }
        // A relative CA is the configuration file's.
        let conn = absolute_root_cert("host=db sslmode=verify-full sslrootcert=ca.pem", dir.path())
            .expect("resolves");
        assert_eq!(
            conn,
            format!(
                "host=db sslmode=verify-full sslrootcert={}",
                dir.path().join("ca.pem").display()
            )
        );
        assert_eq!(
            PgTarget::parse(&conn).expect("parses").mode(),
            TlsMode::VerifyFull
        );
        let e = absolute_root_cert(
            "host=db sslmode=verify-full sslrootcert=gone.pem",
            dir.path(),
        )
        .expect_err("missing");
        assert!(
            e.contains(&dir.path().join("gone.pem").display().to_string()),
            "{e}"
        );
    }
}
