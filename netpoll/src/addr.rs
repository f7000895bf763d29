//! [`Addr`]: where a connection goes, a TCP address or a Unix domain socket path.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A TCP address or the path of a Unix domain socket (written `unix:/path`).
///
/// Connections to both are served alike; a Unix socket suits a same-host sidecar or proxy
/// (no TCP stack, file permissions as access control).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Addr {
    /// An IP address and port.
    Tcp(SocketAddr),
    /// A Unix domain socket's path.
    Unix(Arc<Path>),
}

impl Addr {
    /// The path of a Unix domain socket (made absolute against the current directory
    /// now, so that a later change of directory does not move it).
    pub fn unix(path: impl AsRef<Path>) -> Addr {
        let path = path.as_ref();
        match std::path::absolute(path) {
            Ok(abs) => Addr::Unix(Arc::from(abs.as_path())),
            Err(_) => Addr::Unix(Arc::from(path)),
        }
    }

    /// The TCP address, if this is one.
    pub fn as_tcp(&self) -> Option<SocketAddr> {
        match self {
            Addr::Tcp(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The socket address the kernel takes.
    pub(crate) fn sockaddr(&self) -> std::io::Result<socket2::SockAddr> {
        match self {
            Addr::Tcp(a) => Ok(socket2::SockAddr::from(*a)),
            Addr::Unix(p) => socket2::SockAddr::unix(p),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr::Tcp(a)
    }
}

impl PartialEq<SocketAddr> for Addr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.as_tcp() == Some(*other)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => a.fmt(f),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Why a string is not an [`Addr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError(String);

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is neither IP:PORT nor unix:/path (host names are resolved elsewhere)",
            self.0
        )
    }
}

impl std::error::Error for AddrParseError {}

impl std::str::FromStr for Addr {
    type Err = AddrParseError;

    /// `unix:PATH` (an empty path is refused), or `IP:PORT` (no name resolution).
    fn from_str(s: &str) -> Result<Addr, AddrParseError> {
        match s.strip_prefix("unix:") {
            Some("") => Err(AddrParseError(s.to_owned())),
            Some(path) => Ok(Addr::unix(path)),
            None => s
                .parse::<SocketAddr>()
                .map(Addr::Tcp)
                .map_err(|_| AddrParseError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_kinds() {
        let u: Addr = "unix:/run/echo.sock".parse().unwrap();
        assert_eq!(u, Addr::unix("/run/echo.sock"));
        assert_eq!(u.to_string(), "unix:/run/echo.sock");
        let t: Addr = "127.0.0.1:8888".parse().unwrap();
        assert_eq!(t.as_tcp(), Some(SocketAddr::from(([127, 0, 0, 1], 8888))));
        assert_eq!(t.to_string(), "127.0.0.1:8888");
        assert!("unix:".parse::<Addr>().is_err());
        assert!("localhost:80".parse::<Addr>().is_err());
    }
}
