//! TLS for remote logging: TLS 1.3 with mutual certificate authentication
//! (rustls, `ring` provider), for audisp-remote ↔ audisp-receive.
//!
//! Both ends name a CA bundle (the only roots trusted for the peer), their
//! own certificate chain and private key. Private keys must be owned by root
//! and closed to group and others; anything else is refused at start with a
//! message saying so. A peer whose certificate does not chain to the CA is
//! refused during the handshake, and the receiver logs the reason.
//!
//! auditd 4.2's own TLS (`transport = tls`) is TLS 1.3 with an *external*
//! PSK and no certificates; see `docs/audisp-receive.8.md` for what
//! interoperating with it would take.

use std::io;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use super::server::{Transport, Wrap};

/// The files of one end's TLS setup; all three or none.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Own certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Own private key (PEM), root-only.
    pub key: Option<PathBuf>,
    /// CA certificates the peer must chain to (PEM).
    pub ca: Option<PathBuf>,
}

struct Loaded {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: rustls::RootCertStore,
}

impl TlsFiles {
    fn load(&self) -> Result<Option<Loaded>, String> {
        let (cert, key, ca) = match (&self.cert, &self.key, &self.ca) {
            (None, None, None) => return Ok(None),
            (Some(c), Some(k), Some(a)) => (c, k, a),
            _ => return Err("TLS needs all of a certificate, a private key and a CA file".into()),
        };
        check_key_file(key)?;
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: cannot read certificates: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in the file", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{}: cannot read the private key: {e}", key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: cannot read CA certificates: {e}", ca.display()))?;
        for c in cas {
            roots
                .add(c)
                .map_err(|e| format!("{}: bad CA certificate: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate in the file", ca.display()));
        }
        Ok(Some(Loaded { certs, key, roots }))
    }
}

/// Refuses a private key file that is not root's alone.
pub fn check_key_file(path: &Path) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !m.is_file() || m.uid() != 0 || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: private key files must be regular files owned by root with no access for group or \
             others (chown root {0}; chmod 600 {0}); found uid {} mode {:04o}",
            path.display(),
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct ServerStream {
    s: StreamOwned<ServerConnection, TcpStream>,
    /// The client certificate's fingerprint (the verifier requires one).
    cert: Option<String>,
}

impl io::Read for ServerStream {
    /// Waits for the first bytes, then also takes whatever further TLS
    /// records have already arrived (one record holds at most 16 KiB), so
    /// that the caller's group commit covers all of them.
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let mut n = self.s.read(b)?;
        if n == 0 {
            return Ok(0);
        }
        while n < b.len() {
            match self.s.conn.reader().read(&mut b[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Reported by the next call.
                Err(_) => break,
            }
            if !readable_now(&self.s.sock) {
                break;
            }
            match self.s.conn.read_tls(&mut self.s.sock) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if self.s.conn.process_new_packets().is_err() {
                        break;
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Whether a read on `sock` would return at once.
fn readable_now(sock: &TcpStream) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        sock.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}

impl io::Write for ServerStream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.s.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

impl Transport for ServerStream {
    fn identity(&self) -> Option<String> {
        Some(match &self.cert {
            Some(c) => format!("cert {c}"),
            None => "no certificate".into(),
        })
    }

    fn certificate(&self) -> Option<String> {
        self.cert.clone()
    }
}

/// The fingerprint a client certificate is recorded by (`sha256:HEX`).
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    format!("sha256:{}", crate::hex::encode(d.as_ref()))
}

/// The receiver's wrapper for accepted connections, when TLS is configured;
/// a handshake waits at most `handshake` for the client (None: as long as
/// it takes; the connection slots close a connection that takes too long
/// anyway).
pub fn server_wrap(
    files: &TlsFiles,
    handshake: Option<Duration>,
) -> Result<Option<Arc<Wrap>>, String> {
    let Some(l) = files.load()? else {
        return Ok(None);
    };
    let p = provider();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(l.roots), p.clone())
            .build()
            .map_err(|e| format!("TLS client verifier: {e}"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(p)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(l.certs, l.key)
        .map_err(|e| format!("TLS certificate/key: {e}"))?;
    let cfg = Arc::new(cfg);
    Ok(Some(Arc::new(move |mut sock: TcpStream| {
        let mut conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
        let keep = sock.read_timeout()?;
        sock.set_read_timeout(handshake)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed (peer not trusted?): {e}"),
                )
            })?;
        }
        sock.set_read_timeout(keep)?;
        let cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(fingerprint);
        Ok(Box::new(ServerStream {
            s: StreamOwned::new(conn, sock),
            cert,
        }) as Box<dyn Transport>)
    })))
}

/// A client-side TLS setup.
#[derive(Clone)]
pub struct Client {
    cfg: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// A client's TLS stream.
pub type ClientStream = StreamOwned<ClientConnection, TcpStream>;

impl Client {
    /// Loads the sender's TLS files; `server_name` is what the receiver's
    /// certificate must be issued for.
    pub fn new(files: &TlsFiles, server_name: &str) -> Result<Option<Client>, String> {
        let Some(l) = files.load()? else {
            return Ok(None);
        };
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(l.roots)
            .with_client_auth_cert(l.certs, l.key)
            .map_err(|e| format!("TLS certificate/key: {e}"))?;
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("TLS server name {server_name:?}: {e}"))?;
        Ok(Some(Client {
            cfg: Arc::new(cfg),
            name,
        }))
    }

    /// Runs the handshake on a connected socket.
    pub fn connect(&self, mut sock: TcpStream) -> io::Result<ClientStream> {
        let mut conn =
            ClientConnection::new(self.cfg.clone(), self.name.clone()).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
        }
        Ok(StreamOwned::new(conn, sock))
    }
}
