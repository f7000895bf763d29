//! The little HTTP/1.1 the registry and the trace exporter need: a POST, answered whole or
//! as a stream of newline-separated JSON objects (chunked), over a blocking `TcpStream`,
//! in plain text or (feature `tls`) over TLS. They run on threads of their own, off the
//! event loops.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[cfg(feature = "tls")]
use netpoll::tls::rustls;

/// Largest response (or streamed line) accepted: the answers are small.
const MAX_BODY: usize = 16 << 20;

/// Longest status, header or chunk-size line accepted.
const MAX_LINE: u64 = 8 << 10;
/// Most response headers accepted.
const MAX_HEADERS: usize = 100;

/// TLS to an HTTP server: the rustls configuration and the name its certificate must be
/// valid for.
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub(crate) struct HttpTls {
    pub(crate) config: std::sync::Arc<rustls::ClientConfig>,
    pub(crate) server_name: rustls::pki_types::ServerName<'static>,
}

#[cfg(feature = "tls")]
impl HttpTls {
    /// TLS with `connector` to the server at `authority` (`host[:port]`, `[v6]:port`),
    /// whose certificate must be valid for its host.
    pub(crate) fn to(connector: &crate::tls::TlsConnector, authority: &str) -> io::Result<HttpTls> {
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(HttpTls {
            config: connector.config().clone(),
            server_name: netpoll::tls::server_name(host)?,
        })
    }
}

/// Without the `tls` feature there is no TLS to speak.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub(crate) enum HttpTls {}

/// A connection to an HTTP server.
enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Reads one line of at most [`MAX_LINE`] bytes (0 at the end of the stream).
fn read_line(r: &mut BufReader<Stream>, line: &mut String) -> io::Result<usize> {
    let n = r.by_ref().take(MAX_LINE).read_line(line)?;
    if n as u64 == MAX_LINE && !line.ends_with('\n') {
        return Err(invalid("line too long"));
    }
    Ok(n)
}

/// Sends `POST path` with a JSON `body` to `host` (`host:port`) and returns the response
/// body. A status other than 2xx is an error carrying the body.
pub(crate) fn post(
    host: &str,
    path: &str,
    body: &str,
    timeout: Duration,
    tls: Option<&HttpTls>,
) -> io::Result<String> {
    let json = [("Content-Type", "application/json")];
    let (status, out) = post_bytes(host, path, &json, body.as_bytes(), timeout, tls)?;
    let text = String::from_utf8(out).map_err(|_| invalid("response is not UTF-8"))?;
    if !(200..300).contains(&status) {
        return Err(io::Error::other(format!("HTTP {status}: {}", text.trim())));
    }
    Ok(text)
}

/// Sends `POST path` with `body` and `headers` (its content type among them) to `host`
/// (`host:port`) and returns the response's status and body, whatever the status.
pub(crate) fn post_bytes(
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    tls: Option<&HttpTls>,
) -> io::Result<(u16, Vec<u8>)> {
    let mut r = Response::open(host, path, headers, body, timeout, tls)?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk()? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_BODY {
            return Err(invalid("response too large"));
        }
    }
    Ok((r.status, out))
}

/// A response being read: its status, then its body piece by piece.
pub(crate) struct Response {
    reader: BufReader<Stream>,
    pub(crate) status: u16,
    chunked: bool,
    /// Body bytes left (not chunked), or of the current chunk (chunked).
    left: Option<usize>,
    done: bool,
    /// Bytes of the current (unfinished) line, for [`Response::next_line`].
    line: Vec<u8>,
}

impl Response {
    /// Connects, sends the request and reads the status line and headers.
    pub(crate) fn open(
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
        tls: Option<&HttpTls>,
    ) -> io::Result<Self> {
        // Every address the name has, in turn (`localhost` is often ::1 first while etcd
        // listens on 127.0.0.1 only).
        let mut last = invalid(format!("{host} resolves to no address"));
        let mut connected = None;
        for addr in host.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    connected = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = connected.ok_or(last)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)?;
        let mut stream = match tls {
            None => Stream::Plain(tcp),
            #[cfg(feature = "tls")]
            Some(t) => {
                let conn = rustls::ClientConnection::new(t.config.clone(), t.server_name.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
            #[cfg(not(feature = "tls"))]
            Some(t) => match *t {},
        };
        let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                return Err(invalid(format!("bad request header {k:?}")));
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        stream.write_all(&req)?;
        stream.flush()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        read_line(&mut reader, &mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
        let (mut chunked, mut length) = (false, None);
        for n in 0.. {
            if n == MAX_HEADERS {
                return Err(invalid("too many response headers"));
            }
            line.clear();
            if read_line(&mut reader, &mut line)? == 0 {
                return Err(invalid("connection closed in the headers"));
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "transfer-encoding"
                    && v.rsplit(',')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
                {
                    chunked = true;
                } else if k == "content-length" {
                    length = v.parse().ok();
                }
            }
        }
        Ok(Response {
            reader,
            status,
            chunked,
            left: if chunked { Some(0) } else { length },
            done: false,
            line: Vec::new(),
        })
    }

    /// Makes the response a stream whose reads wait up to `idle` (a stream silent that
    /// long fails with a timeout: the connection may be dead without a word, its peer's
    /// host gone), and returns a handle to its connection: shutting the handle down ends
    /// a read blocked on it.
    pub(crate) fn into_stream(self, idle: Duration) -> io::Result<(Response, TcpStream)> {
        self.reader.get_ref().tcp().set_read_timeout(Some(idle))?;
        let handle = self.reader.get_ref().tcp().try_clone()?;
        Ok((self, handle))
    }

    /// The next piece of the body, or `None` at its end.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if self.chunked {
            if self.left == Some(0) {
                let mut size = String::new();
                if read_line(&mut self.reader, &mut size)? == 0 {
                    return Err(invalid("connection closed inside a chunked body"));
                }
                let hex = size.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(hex, 16)
                    .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
                if n == 0 {
                    self.done = true;
                    return Ok(None);
                }
                if n > MAX_BODY {
                    return Err(invalid("chunk too large"));
                }
                self.left = Some(n);
            }
            let n = self.left.unwrap_or(0);
            let mut buf = vec![0; n];
            self.reader.read_exact(&mut buf)?;
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
            self.left = Some(0);
            return Ok(Some(buf));
        }
        match self.left {
            Some(0) => {
                self.done = true;
                Ok(None)
            }
            Some(n) => {
                let mut buf = vec![0; n.min(64 << 10)];
                let got = self.reader.read(&mut buf)?;
                if got == 0 {
                    return Err(invalid("connection closed inside the body"));
                }
                buf.truncate(got);
                self.left = Some(n - got);
                Ok(Some(buf))
            }
            None => {
                // No length: the body runs to the end of the connection.
                let mut buf = vec![0; 64 << 10];
                let got = self.reader.read(&mut buf)?;
                if got == 0 {
                    self.done = true;
                    return Ok(None);
                }
                buf.truncate(got);
                Ok(Some(buf))
            }
        }
    }

    /// The next newline-terminated line of the body (a streamed JSON object), or `None` at
    /// the end of the body.
    pub(crate) fn next_line(&mut self) -> io::Result<Option<String>> {
        loop {
            if let Some(i) = self.line.iter().position(|&b| b == b'\n') {
                let rest = self.line.split_off(i + 1);
                let line = std::mem::replace(&mut self.line, rest);
                return String::from_utf8(line)
                    .map(|s| Some(s.trim().to_owned()))
                    .map_err(|_| invalid("a line is not UTF-8"));
            }
            match self.next_chunk()? {
                Some(c) => {
                    self.line.extend_from_slice(&c);
                    if self.line.len() > MAX_BODY {
                        return Err(invalid("line too long"));
                    }
                }
                None if self.line.is_empty() => return Ok(None),
                None => {
                    let line = std::mem::take(&mut self.line);
                    return String::from_utf8(line)
                        .map(|s| Some(s.trim().to_owned()))
                        .map_err(|_| invalid("a line is not UTF-8"));
                }
            }
        }
    }
}
