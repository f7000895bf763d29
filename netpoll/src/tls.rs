//! TLS on a connection's owning core (cargo feature `tls`): rustls with the `ring`
//! provider, TLS 1.3 and 1.2.
//!
//! TLS is a layer of the connection, below its [`Handler`](crate::Handler): handlers see
//! and write plain text exactly as on a plain connection, so every protocol on a port
//! works over TLS unchanged. On the owning core:
//!
//! * **Receive.** The ciphertext a receive brings (read in place from the pool buffer
//!   the kernel filled) goes through rustls, and the plain text it yields is appended to
//!   the connection's input buffer, from which the handler splits messages zero-copy.
//! * **Send.** At the end of the loop turn, the plain text the handler wrote this turn is
//!   encrypted, and the records go out in the connection's one send of the turn, from the
//!   connection's reused send buffer. Plain text written during the handshake waits (and
//!   can still be taken back) until the handshake completes.
//! * **Handshake.** It runs on the core, as records arrive; it never blocks. A handshake
//!   that does not complete within [`TlsAcceptor::handshake_timeout`] closes the
//!   connection.
//! * **Errors.** A TLS failure (a bad certificate, garbage instead of a record, ...) sends
//!   the peer its alert, closes the connection and reports
//!   [`CloseReason::Tls`](crate::CloseReason::Tls) with rustls's error; other connections
//!   are not disturbed.
//! * **Close.** A graceful close sends `close_notify` after the last output.
//!
//! rustls itself allocates per record (it decrypts into, and encrypts from, buffers of
//! its own); netpoll adds no allocation per call.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::TimerId;

pub use rustls;

/// How long a handshake may take by default before the connection is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this much plain text is encrypted for one send; the rest goes with the next.
const SEAL_MAX: usize = 256 * 1024;

/// The first byte of a TLS handshake record: how a port that also takes plain text tells
/// a TLS client from a plain one.
const HANDSHAKE_RECORD: u8 = 0x16;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| config_error(format!("reading certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        config_error(format!(
            "reading a private key from {}: {e}",
            path.display()
        ))
    })
}

/// Reads every certificate of a PEM file as a trust anchor.
pub fn load_roots(path: impl AsRef<Path>) -> io::Result<RootCertStore> {
    let path = path.as_ref();
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| config_error(format!("a CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// TLS settings of a listener: what [`RuntimeHandle::listen_tls`](crate::RuntimeHandle::listen_tls)
/// takes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsAcceptor {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) allow_plaintext: bool,
}

impl TlsAcceptor {
    /// Serves with a rustls configuration built by the caller.
    pub fn new(config: Arc<ServerConfig>) -> Self {
        TlsAcceptor {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            allow_plaintext: false,
        }
    }

    /// Serves the certificate chain and private key of two PEM files, to clients that
    /// present no certificate. Add [`client_ca`](TlsAcceptorBuilder::client_ca) for mTLS.
    pub fn builder(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<TlsAcceptorBuilder> {
        Ok(TlsAcceptorBuilder {
            chain: load_certs(cert_chain)?,
            key: load_key(key)?,
            by_name: Vec::new(),
            client_roots: None,
            client_optional: false,
            alpn: Vec::new(),
        })
    }

    /// How long a handshake may take before the connection is closed (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Also takes plain-text clients on the same port, told apart by their first byte
    /// (0x16 starts a TLS handshake). Off by default: plain text on a TLS port is refused.
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// Builds a [`TlsAcceptor`] from PEM files: see [`TlsAcceptor::builder`].
#[derive(Debug)]
pub struct TlsAcceptorBuilder {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Certificates served to clients that ask for these names (SNI).
    by_name: Vec<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    client_roots: Option<RootCertStore>,
    client_optional: bool,
    alpn: Vec<Vec<u8>>,
}

impl TlsAcceptorBuilder {
    /// Requires clients to present a certificate that chains to a CA of this PEM file
    /// (mTLS).
    pub fn client_ca(mut self, path: impl AsRef<Path>) -> io::Result<Self> {
        self.client_roots = Some(load_roots(path)?);
        Ok(self)
    }

    /// Serves this certificate chain and key (PEM files) to clients that ask for
    /// `server_name` in SNI; the builder's own certificate goes to every other client,
    /// including those that send no name (clients that dial an IP address). Names are
    /// matched case-insensitively.
    pub fn sni(
        mut self,
        server_name: &str,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<Self> {
        self.by_name.push((
            server_name.to_ascii_lowercase(),
            load_certs(cert_chain)?,
            load_key(key)?,
        ));
        Ok(self)
    }

    /// With [`client_ca`](Self::client_ca): clients may also present no certificate
    /// (one they present must still verify).
    pub fn client_cert_optional(mut self, optional: bool) -> Self {
        self.client_optional = optional;
        self
    }

    /// The application protocols offered in ALPN, most preferred first (`h2` for gRPC).
    /// A client that offers ALPN with none of these is refused; one that offers none
    /// goes on.
    pub fn alpn<P: AsRef<[u8]>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Checks the key against the chain and builds the acceptor.
    pub fn build(self) -> io::Result<TlsAcceptor> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(config_error)?;
        let builder = match self.client_roots {
            Some(roots) => {
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if self.client_optional {
                    verifier = verifier.allow_unauthenticated();
                }
                builder.with_client_cert_verifier(verifier.build().map_err(config_error)?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = if self.by_name.is_empty() {
            builder
                .with_single_cert(self.chain, self.key)
                .map_err(|e| config_error(format!("the certificate and key: {e}")))?
        } else {
            let p = rustls::crypto::ring::default_provider();
            let certified = |chain, key, what: &str| {
                rustls::sign::CertifiedKey::from_der(chain, key, &p)
                    .map(Arc::new)
                    .map_err(|e| config_error(format!("{what}: {e}")))
            };
            let mut by_name = std::collections::HashMap::new();
            for (name, chain, key) in self.by_name {
                let k = certified(chain, key, &format!("the certificate for {name}"))?;
                by_name.insert(name, k);
            }
            let default = certified(self.chain, self.key, "the certificate and key")?;
            builder.with_cert_resolver(Arc::new(BySni { by_name, default }))
        };
        config.alpn_protocols = self.alpn;
        // Resumption by ticket: a reconnecting client skips the certificate crypto.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(config_error)?;
        Ok(TlsAcceptor::new(Arc::new(config)))
    }
}

/// Chooses the certificate by the name the client asked for (SNI), with a default for
/// the rest.
#[derive(Debug)]
struct BySni {
    by_name: std::collections::HashMap<String, Arc<rustls::sign::CertifiedKey>>,
    default: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for BySni {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(named.unwrap_or(&self.default).clone())
    }
}

/// TLS settings of outbound connections: what [`Core::connect_tls`](crate::Core::connect_tls)
/// takes. Cheap to clone; keep one per client so that sessions resume.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) handshake_timeout: Duration,
}

impl TlsConnector {
    /// Connects with a rustls configuration built by the caller.
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnector {
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Trusts the CA certificates of a PEM file (a private CA, or the system bundle such
    /// as `/etc/ssl/certs/ca-certificates.crt`).
    pub fn builder(ca: impl AsRef<Path>) -> io::Result<TlsConnectorBuilder> {
        Ok(TlsConnectorBuilder {
            roots: load_roots(ca)?,
            identity: None,
            alpn: Vec::new(),
        })
    }

    /// How long a handshake may take before the connection is closed (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

/// Builds a [`TlsConnector`] from PEM files: see [`TlsConnector::builder`].
#[derive(Debug)]
pub struct TlsConnectorBuilder {
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
}

impl TlsConnectorBuilder {
    /// Presents this certificate chain and key to servers that ask for one (mTLS).
    pub fn identity(
        mut self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<Self> {
        self.identity = Some((load_certs(cert_chain)?, load_key(key)?));
        Ok(self)
    }

    /// The application protocols to offer in ALPN, most preferred first.
    pub fn alpn<P: AsRef<[u8]>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Builds the connector.
    pub fn build(self) -> io::Result<TlsConnector> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(config_error)?
            .with_root_certificates(self.roots);
        let mut config = match self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(format!("the client certificate and key: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        Ok(TlsConnector::new(Arc::new(config)))
    }
}

/// Parses the name a client verifies the server's certificate against: a DNS name or an
/// IP address.
pub fn server_name(name: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| config_error(format!("TLS server name {name:?}: {e}")))
}

/// An error of the TLS layer, as [`CloseReason::Tls`](crate::CloseReason::Tls) carries it.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Whether a received error is a peer refusing the handshake (an alert about
/// certificates, versions, ciphers or protocols), rather than one about records.
fn refuses_handshake(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e,
        rustls::Error::AlertReceived(
            A::HandshakeFailure
                | A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::ProtocolVersion
                | A::InsufficientSecurity
                | A::CertificateRequired
                | A::NoApplicationProtocol
                | A::UnrecognisedName
        )
    )
}

/// What a connection knows of its TLS session, for handlers.
#[derive(Debug, Clone, Copy)]
pub struct TlsInfo<'a> {
    conn: &'a rustls::Connection,
}

impl<'a> TlsInfo<'a> {
    /// The protocol version, once the handshake has completed.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The application protocol agreed in ALPN.
    pub fn alpn_protocol(&self) -> Option<&'a [u8]> {
        self.conn.alpn_protocol()
    }

    /// The certificate chain the peer presented (a client's only under mTLS).
    pub fn peer_certificates(&self) -> Option<&'a [CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The server name the client asked for (SNI), on a server connection.
    pub fn server_name(&self) -> Option<&'a str> {
        match self.conn {
            rustls::Connection::Server(s) => s.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Whether the handshake is still in progress.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}

/// One connection's TLS session.
pub(crate) struct Session {
    conn: rustls::Connection,
    /// The listener also takes plain text: the first byte received decides.
    sniff: bool,
    /// `close_notify` is queued.
    notified: bool,
    /// A fatal error happened: only its alert is still sent, no more plain text.
    failed: bool,
    /// It failed in the handshake, as either side saw it: nothing sent was processed.
    failed_in_handshake: bool,
    /// Plain text arrived from the peer.
    received_data: bool,
    /// The handshake deadline.
    timer: Option<TimerId>,
    /// Ciphertext received during the handshake beyond the core's per-turn budget (a copy:
    /// the pool's buffers are not held).
    backlog: BytesMut,
    /// The peer's `close_notify` was taken as its end of input.
    eof_seen: bool,
    /// The connection was closed during the handshake with output queued: it closes
    /// once the handshake completes and the output is sent.
    close_after_handshake: bool,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("failed", &self.failed)
            .finish()
    }
}

/// What a receive did to the session.
pub(crate) struct Opened {
    /// The handshake completed with these bytes.
    pub(crate) handshake_done: bool,
    /// The peer sent `close_notify`: nothing more will come.
    pub(crate) peer_closed: bool,
}

impl Session {
    pub(crate) fn server(acceptor: &TlsAcceptor) -> io::Result<Box<Session>> {
        let conn = ServerConnection::new(acceptor.config.clone()).map_err(tls_error)?;
        Ok(Box::new(Session {
            conn: conn.into(),
            sniff: acceptor.allow_plaintext,
            notified: false,
            failed: false,
            failed_in_handshake: false,
            received_data: false,
            timer: None,
            backlog: BytesMut::new(),
            eof_seen: false,
            close_after_handshake: false,
            handshake_timeout: acceptor.handshake_timeout,
        }))
    }

    pub(crate) fn client(
        connector: &TlsConnector,
        name: ServerName<'static>,
    ) -> io::Result<Box<Session>> {
        let conn = ClientConnection::new(connector.config.clone(), name).map_err(tls_error)?;
        Ok(Box::new(Session {
            conn: conn.into(),
            sniff: false,
            notified: false,
            failed: false,
            failed_in_handshake: false,
            received_data: false,
            timer: None,
            backlog: BytesMut::new(),
            eof_seen: false,
            close_after_handshake: false,
            handshake_timeout: connector.handshake_timeout,
        }))
    }

    /// On a port that also takes plain text, before the first byte: whether `first` (the
    /// first bytes received) start plain text. Afterwards `false`.
    pub(crate) fn sniff_plaintext(&mut self, first: &[u8]) -> bool {
        if !self.sniff || first.is_empty() {
            return false;
        }
        self.sniff = false;
        first[0] != HANDSHAKE_RECORD
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    pub(crate) fn set_timer(&mut self, timer: TimerId) {
        self.timer = Some(timer);
    }

    pub(crate) fn take_timer(&mut self) -> Option<TimerId> {
        self.timer.take()
    }

    pub(crate) fn eof_seen(&self) -> bool {
        self.eof_seen
    }

    pub(crate) fn set_eof_seen(&mut self) {
        self.eof_seen = true;
    }

    pub(crate) fn close_after_handshake(&self) -> bool {
        self.close_after_handshake
    }

    pub(crate) fn set_close_after_handshake(&mut self) {
        self.close_after_handshake = true;
    }

    pub(crate) fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Keeps a copy of `cipher` for a later turn; `false` (and nothing kept) if the
    /// backlog would pass `max` bytes.
    pub(crate) fn push_backlog(&mut self, cipher: &[u8], max: usize) -> bool {
        if self.backlog.len() + cipher.len() > max {
            return false;
        }
        self.backlog.extend_from_slice(cipher);
        true
    }

    /// What waited, if anything.
    pub(crate) fn take_backlog(&mut self) -> Option<bytes::Bytes> {
        (!self.backlog.is_empty()).then(|| std::mem::take(&mut self.backlog).freeze())
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// Whether the failure (if any) came in the handshake, as either side saw it.
    pub(crate) fn failed_in_handshake(&self) -> bool {
        self.failed_in_handshake
    }

    pub(crate) fn info(&self) -> TlsInfo<'_> {
        TlsInfo { conn: &self.conn }
    }

    /// Whether the session has records to send, or owes the peer a `close_notify`
    /// (`draining`: the connection is being closed).
    pub(crate) fn owes_output(&self, draining: bool) -> bool {
        self.conn.wants_write() || (draining && !self.notified && !self.failed)
    }

    /// Takes the records in `cipher` and appends the plain text they carry to `plain`.
    pub(crate) fn open(&mut self, mut cipher: &[u8], plain: &mut BytesMut) -> io::Result<Opened> {
        let was_handshaking = self.conn.is_handshaking();
        let mut peer_closed = false;
        while !cipher.is_empty() && !peer_closed {
            match self.conn.read_tls(&mut cipher) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    self.failed_in_handshake = was_handshaking;
                    return Err(e);
                }
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // rustls queued the alert that tells the peer why.
                    self.failed = true;
                    // Under TLS 1.3 a client's handshake completes before the server has
                    // checked its certificate: a server's refusal still arrives as an
                    // alert, before any reply.
                    self.failed_in_handshake =
                        was_handshaking || (!self.received_data && refuses_handshake(&e));
                    return Err(tls_error(e));
                }
            };
            peer_closed = state.peer_has_closed();
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                self.received_data = true;
                plain.reserve(n);
                let mut reader = self.conn.reader();
                while let Ok(chunk) = io::BufRead::fill_buf(&mut reader) {
                    if chunk.is_empty() {
                        break;
                    }
                    let len = chunk.len();
                    plain.extend_from_slice(chunk);
                    io::BufRead::consume(&mut reader, len);
                }
            }
        }
        Ok(Opened {
            handshake_done: was_handshaking && !self.conn.is_handshaking(),
            peer_closed,
        })
    }

    /// Encrypts plain text from the front of `plain` (not during the handshake, when it
    /// waits) and appends every pending record to `cipher`. `draining`: the connection is
    /// closing, so `close_notify` follows the last plain text.
    pub(crate) fn seal(
        &mut self,
        plain: &mut BytesMut,
        cipher: &mut BytesMut,
        draining: bool,
    ) -> io::Result<()> {
        if self.failed {
            plain.clear();
        } else if !self.conn.is_handshaking() {
            let mut budget = SEAL_MAX;
            while !plain.is_empty() && budget > 0 {
                let take = plain.len().min(budget);
                let n = io::Write::write(&mut self.conn.writer(), &plain[..take])?;
                if n == 0 {
                    break;
                }
                plain.advance(n);
                budget -= n;
                self.write_records(cipher)?;
            }
            if draining && plain.is_empty() && !self.notified {
                self.conn.send_close_notify();
                self.notified = true;
            }
        }
        self.write_records(cipher)
    }

    fn write_records(&mut self, cipher: &mut BytesMut) -> io::Result<()> {
        let mut w = cipher.writer();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut w)?;
        }
        Ok(())
    }
}
