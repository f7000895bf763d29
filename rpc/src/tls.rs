//! TLS for servers and clients (feature `tls`): rustls with the `ring` provider, TLS 1.3
//! and 1.2, certificates from PEM files, mTLS, SNI and ALPN.
//!
//! TLS runs in netpoll, on the core that owns the connection (see [`netpoll::tls`]):
//! every protocol a server speaks works over it unchanged.
//!
//! ```no_run
//! # use netpoll_rpc::tls::{TlsAcceptor, TlsConnector};
//! // Server: a certificate chain and key; clients must present a certificate of `ca.pem`.
//! let acceptor = TlsAcceptor::builder("server.pem", "server.key")?
//!     .client_ca("ca.pem")?
//!     .build()?;
//! // Client: trusts `ca.pem`, presents its own certificate.
//! let connector = TlsConnector::builder("ca.pem")?
//!     .identity("client.pem", "client.key")?
//!     .build()?;
//! # let _ = (acceptor, connector);
//! # Ok::<(), std::io::Error>(())
//! ```
//! Give them to [`ServerBuilder::tls`](crate::server::ServerBuilder::tls) and to a
//! client builder's `tls(connector, server_name)`.

use std::sync::Arc;

pub use netpoll::tls::{
    load_certs, load_key, load_roots, rustls, TlsAcceptor, TlsAcceptorBuilder, TlsConnector,
    TlsConnectorBuilder, TlsInfo, DEFAULT_HANDSHAKE_TIMEOUT,
};

/// A client's TLS settings: the connector, and the name every instance's certificate must
/// be valid for (a DNS name or an IP address).
#[derive(Clone, Debug)]
pub struct ClientTls {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: Arc<str>,
}

impl ClientTls {
    /// TLS with `connector`, verifying each server's certificate against `server_name`.
    pub fn new(connector: TlsConnector, server_name: &str) -> std::io::Result<ClientTls> {
        netpoll::tls::server_name(server_name)?;
        Ok(ClientTls {
            connector,
            server_name: Arc::from(server_name),
        })
    }
}
