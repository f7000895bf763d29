//! Helpers for end-to-end tests: a raw client that writes frames the way foreign clients
//! do and reads replies without any of our client code.
#![allow(dead_code)]

pub mod peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netpoll_codec::frame::{self, Protocol, Split};
use netpoll_codec::thrift::{Message, MessageType};
use netpoll_codec::ByteString;
use netpoll_rpc::wire::{self, Envelope, Headers, Parsed, Payload, Transport};

/// The test PKI (`tls_certs`: a CA, server and client certificates, an expired one, a
/// foreign CA's client certificate), written once per test binary.
pub fn pki() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("test-pki-{}", std::process::id()));
        let ok = Command::new(env!("CARGO_BIN_EXE_tls_certs"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tls_certs failed");
        dir
    })
}

/// The path of file `name` of the test PKI.
pub fn pem(name: &str) -> String {
    pki().join(name).to_str().unwrap().to_owned()
}

/// A blocking raw connection speaking one protocol.
pub struct Raw {
    pub stream: TcpStream,
    pub transport: Transport,
    pub payload: Payload,
    buf: BytesMut,
}

impl Raw {
    pub fn connect(addr: SocketAddr, transport: Transport, payload: Payload) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            transport,
            payload,
            buf: BytesMut::new(),
        }
    }

    /// Speaks `transport`/`payload` over an already connected stream.
    pub fn wrap(stream: TcpStream, transport: Transport, payload: Payload) -> Raw {
        Raw {
            stream,
            transport,
            payload,
            buf: BytesMut::new(),
        }
    }

    pub fn envelope(&self, method: &'static str, seq: i32, kind: MessageType) -> Envelope {
        Envelope {
            transport: self.transport,
            payload: self.payload,
            method: ByteString::from_static(method),
            seq_id: seq,
            header_seq: seq,
            kind,
        }
    }

    /// Writes a Thrift call.
    pub fn send_thrift<M: Message>(
        &mut self,
        method: &'static str,
        seq: i32,
        args: &M,
        flags: u16,
    ) {
        let kind = MessageType::Call;
        let env = self.envelope(method, seq, kind);
        let mut out = BytesMut::new();
        let h = Headers {
            flags,
            ..Headers::default()
        };
        wire::write_thrift(&env, &mut out, kind, args, &h).expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    /// Writes a Kitex Protobuf call.
    pub fn send_pb<M: prost::Message>(&mut self, method: &'static str, seq: i32, req: &M) {
        let env = self.envelope(method, seq, MessageType::Call);
        let mut out = BytesMut::new();
        wire::write_pb(&env, &mut out, MessageType::Call, req, &Headers::default())
            .expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    fn split_protocol(&self) -> Protocol {
        match (self.transport, self.payload) {
            (Transport::TTHeader { .. }, _) => Protocol::TTHeader,
            (Transport::KitexProtobuf, _) => Protocol::KitexProtobuf,
            (Transport::Framed, Payload::ThriftCompact) => Protocol::FramedCompact,
            (Transport::Framed, _) => Protocol::FramedBinary,
            (Transport::Buffered, Payload::ThriftCompact) => Protocol::BufferedCompact,
            (Transport::Buffered, _) => Protocol::BufferedBinary,
            (Transport::Custom(_), _) => panic!("a custom framing has no built-in protocol"),
        }
    }

    /// Reads one whole reply; `None` if the server closed the connection.
    pub fn read(&mut self) -> Option<Parsed> {
        loop {
            if !self.buf.is_empty() {
                match frame::split(self.split_protocol(), &self.buf, 64 << 20).expect("reply frame")
                {
                    Split::Frame(n) => {
                        let f: Bytes = self.buf.split_to(n).freeze();
                        return Some(
                            wire::parse(self.split_protocol(), f).expect("reply envelope"),
                        );
                    }
                    Split::NeedMore(_) => {}
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Decodes a Thrift REPLY body, panicking on an exception.
pub fn reply<M: Message>(p: Parsed) -> M {
    assert_eq!(p.envelope.kind, MessageType::Reply, "expected a REPLY");
    wire::decode_thrift(p.envelope.payload, p.body).expect("decode reply")
}

/// Decodes an EXCEPTION body.
pub fn exception(p: Parsed) -> netpoll_codec::thrift::ApplicationException {
    assert_eq!(
        p.envelope.kind,
        MessageType::Exception,
        "expected an EXCEPTION"
    );
    wire::decode_thrift(p.envelope.payload, p.body).expect("decode exception")
}

/// Every Thrift transport and payload combination a server must serve.
pub fn thrift_shapes() -> Vec<(Transport, Payload)> {
    let mut v = Vec::new();
    for t in [
        Transport::Framed,
        Transport::Buffered,
        Transport::TTHeader {
            framed_payload: false,
        },
        Transport::TTHeader {
            framed_payload: true,
        },
    ] {
        for p in [Payload::ThriftBinary, Payload::ThriftCompact] {
            v.push((t, p));
        }
    }
    v
}

/// A running `echo_server` process, killed on drop.
pub struct EchoServer {
    child: Child,
    pub addr: SocketAddr,
    /// The I/O backend it says it runs on (`io_uring` or `epoll`).
    pub backend: String,
    /// Where its metrics are served (`--metrics`; `HOST:0` picks the port).
    #[allow(dead_code)]
    pub metrics: Option<SocketAddr>,
    /// What it wrote to stderr so far (also passed on to ours).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Installs, in the calling process (a child between fork and exec), a seccomp filter
/// that makes `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with EPERM,
/// as Docker's default seccomp profile does. Only async-signal-safe calls: two `prctl`s
/// on a filter on the stack.
#[allow(dead_code)]
fn deny_io_uring() -> std::io::Result<()> {
    // Classic BPF over `struct seccomp_data`: the syscall number at offset 0, the audit
    // architecture at 4.
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let prog = [
        f(LD_W_ABS, 0, 0, 4),
        f(JEQ_K, 1, 0, ARCH),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW), // another architecture: not ours to judge
        f(LD_W_ABS, 0, 0, 0),
        f(JEQ_K, 3, 0, libc::SYS_io_uring_setup as u32),
        f(JEQ_K, 2, 0, libc::SYS_io_uring_enter as u32),
        f(JEQ_K, 1, 0, libc::SYS_io_uring_register as u32),
        f(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        f(RET_K, 0, 0, deny),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments, then with a pointer to `fprog`, which lives
    // until the call returns (the kernel copies the filter).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl EchoServer {
    pub fn start(flags: &[&str]) -> EchoServer {
        Self::start_cores(1, flags)
    }

    /// Starts the server on `cores` cores.
    pub fn start_cores(cores: usize, flags: &[&str]) -> EchoServer {
        let mut cmd = Command::new(Self::binary());
        cmd.args(["--addr", "127.0.0.1:0", "--cores", &cores.to_string()])
            .args(flags);
        Self::spawn(cmd)
    }

    /// Starts the server with the environment variables `env` set.
    #[allow(dead_code)]
    pub fn start_with_env(env: &[(&str, &str)], flags: &[&str]) -> EchoServer {
        let mut cmd = Command::new(Self::binary());
        cmd.args(["--addr", "127.0.0.1:0", "--cores", "1"])
            .args(flags)
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Starts the server where io_uring is blocked, as in a container under Docker's
    /// default seccomp profile (see `deny_io_uring`).
    #[allow(dead_code)]
    pub fn start_without_io_uring(flags: &[&str]) -> EchoServer {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(Self::binary());
        cmd.args(["--addr", "127.0.0.1:0", "--cores", "1"])
            .args(flags);
        // Auto, whatever the tests run on: the fallback is what is tested.
        cmd.env_remove("NETPOLL_BACKEND");
        // SAFETY: `deny_io_uring` makes only async-signal-safe calls (two prctls) and
        // allocates nothing, as code between fork and exec must.
        unsafe { cmd.pre_exec(deny_io_uring) };
        Self::spawn(cmd)
    }

    /// Starts the server (with the default number of cores) inside the cgroup whose
    /// `cgroup.procs` is at `procs`.
    pub fn start_in_cgroup(procs: &str, flags: &[&str]) -> EchoServer {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("echo $$ > {procs} && exec \"$0\" \"$@\""))
            .arg(Self::binary())
            .args(["--addr", "127.0.0.1:0"])
            .args(flags);
        Self::spawn(cmd)
    }

    /// This build's `echo_server`, or the one `ECHO_SERVER_BIN` names (to run these tests
    /// against another build, an older commit's say).
    fn binary() -> String {
        std::env::var("ECHO_SERVER_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_echo_server").to_owned())
    }

    /// What the server wrote to stderr so far.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn spawn(mut cmd: Command) -> EchoServer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start echo_server");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let mut metrics = None;
        // Lines until "echo_server: BACKEND listening on ADDR" (older builds say no
        // backend), which says it is ready; "echo_server: metrics on ADDR" comes before it.
        let line = loop {
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while out.read(&mut b).expect("read stdout") == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            let line = String::from_utf8(line).expect("utf-8");
            match line.strip_prefix("echo_server: metrics on ") {
                Some(a) => metrics = a.parse().ok(),
                None => break line,
            }
        };
        let words: Vec<&str> = line.split(' ').collect();
        let addr = words
            .last()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("echo_server said {line:?}"));
        let backend = match words[..] {
            ["echo_server:", backend, "listening", "on", _] => backend,
            _ => "",
        };
        EchoServer {
            child,
            addr,
            backend: backend.to_owned(),
            metrics,
            log,
        }
    }

    /// Starts the server on `addr` exactly.
    pub fn start_at(addr: SocketAddr, flags: &[&str]) -> EchoServer {
        let mut cmd = Command::new(Self::binary());
        cmd.args(["--addr", &addr.to_string(), "--cores", "1"])
            .args(flags);
        Self::spawn(cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful stop) and waits for the process to exit; its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill takes no pointers; the pid is our own child, not yet reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().expect("wait")
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A field of /proc/PID/status, in KiB.
    pub fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in status"))
    }

    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    pub fn vsize_mib(&self) -> f64 {
        self.status_kib("VmSize:") as f64 / 1024.0
    }

    /// CPU time (user + system) the process has used, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway etcd server (Debian's `etcd-server`), on free ports, with its data in a
/// temporary directory removed when it is dropped.
pub struct Etcd {
    child: Option<Child>,
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: std::path::PathBuf,
    /// Serves clients over TLS: certificate, key and the CA that signed them (PEM files).
    tls: Option<[String; 3]>,
}

/// A loopback address nothing listens on now (for a server that starts later).
pub fn free_addr() -> SocketAddr {
    let [a] = free_addrs();
    a
}

/// `N` distinct loopback addresses nothing listens on now. All `N` are held at once while
/// they are picked: picked one at a time, two may come out the same, and the second
/// server to bind it would fail (or, with `SO_REUSEPORT`, share it with the first).
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: [std::net::TcpListener; N] =
        std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap())
}

impl Etcd {
    pub fn start() -> Etcd {
        Self::start_with(None)
    }

    /// An etcd serving its clients over TLS (`https://`) with this certificate and key,
    /// which `ca` signed.
    pub fn start_tls(cert: &str, key: &str, ca: &str) -> Etcd {
        Self::start_with(Some([cert.to_owned(), key.to_owned(), ca.to_owned()]))
    }

    fn start_with(tls: Option<[String; 3]>) -> Etcd {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netpoll-etcd-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let [client, peer] = free_addrs();
        let mut e = Etcd {
            child: None,
            client,
            peer,
            dir,
            tls,
        };
        e.restart();
        e
    }

    /// `etcd://HOST:PORT` (`https://HOST:PORT` over TLS), as `echo_server --registry` and
    /// the etcd registry and resolver take it.
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("etcd://{}", self.client),
            Some(_) => format!("https://{}", self.client),
        }
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again, on the same ports and data) and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let (c, p) = (self.client, self.peer);
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut cmd = Command::new("etcd");
        if let Some([cert, key, _]) = &self.tls {
            cmd.args(["--cert-file", cert, "--key-file", key]);
        }
        let child = cmd
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &format!("{scheme}://{c}")])
            .args(["--advertise-client-urls", &format!("{scheme}://{c}")])
            .args(["--listen-peer-urls", &format!("http://{p}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{p}")])
            .args(["--initial-cluster", &format!("t=http://{p}")])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian's etcd-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ca = self.tls.as_ref().map(|[_, _, ca]| ca.as_str());
            if Self::answers(c, ca) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "etcd did not come up; see {}",
                self.dir.join("etcd.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether etcd answers a range request (over TLS, verified with `ca`, when given).
    fn answers(c: SocketAddr, ca: Option<&str>) -> bool {
        let Ok(tcp) = TcpStream::connect_timeout(&c, Duration::from_millis(200)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let body = r#"{"key":"AA=="}"#;
        let req = format!(
            "POST /v3/kv/range HTTP/1.1\r\nHost: {c}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        fn exchange(mut s: impl Read + Write, req: &str) -> bool {
            if s.write_all(req.as_bytes()).is_err() {
                return false;
            }
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            out.starts_with(b"HTTP/1.1 200")
        }
        let Some(ca) = ca else {
            return exchange(tcp, &req);
        };
        use netpoll_rpc::tls::{rustls, TlsConnector};
        let Ok(connector) = TlsConnector::builder(ca).and_then(|b| b.build()) else {
            return false;
        };
        let Ok(conn) = rustls::ClientConnection::new(
            connector.config().clone(),
            "localhost".try_into().unwrap(),
        ) else {
            return false;
        };
        exchange(rustls::StreamOwned::new(conn, tcp), &req)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP GET: status and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}
