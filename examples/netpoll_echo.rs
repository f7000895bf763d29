//! Echo server and pipelined load client on netpoll, in one process.
//!
//! Messages are length-prefixed (4-byte big-endian length, then the payload). The server
//! core splits frames and writes each one back; the client keeps `--inflight` messages in
//! flight on each of `--conns` connections, checks every reply (length, and the sequence
//! number carried in the payload) and reports messages per second.
//!
//! ```text
//! cargo run --release --example netpoll_echo -- --conns 16 --inflight 32 --size 128
//! ```
//!
//! By default the server runs on CPU 0 and the client on CPU 1. `--server-only ADDR` and
//! `--client-only ADDR` split them into two processes.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netpoll::{CloseReason, Conn, Core, Handler, Input, Runtime};

struct Args {
    conns: usize,
    inflight: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    server_cpu: usize,
    client_cpu: usize,
    server_only: Option<String>,
    client_only: Option<SocketAddr>,
    busy_poll: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        conns: 16,
        inflight: 32,
        size: 128,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs(5),
        server_cpu: 0,
        client_cpu: 1,
        server_only: None,
        client_only: None,
        busy_poll: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--conns" => a.conns = num(val()?)? as usize,
            "--inflight" => a.inflight = num(val()?)? as usize,
            "--size" => a.size = num(val()?)? as usize,
            "--warmup" => {
                a.warmup = Duration::from_secs_f64(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--duration" => {
                a.duration = Duration::from_secs_f64(val()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--server-cpu" => a.server_cpu = num(val()?)? as usize,
            "--client-cpu" => a.client_cpu = num(val()?)? as usize,
            "--server-only" => a.server_only = Some(val()?),
            "--busy-poll-us" => a.busy_poll = Duration::from_micros(num(val()?)?),
            "--client-only" => a.client_only = Some(val()?.parse().map_err(|e| format!("{e}"))?),
            "-h" | "--help" => {
                println!(
                    "netpoll_echo [--conns N] [--inflight N] [--size BYTES] [--warmup S] [--duration S]\n\
                     \x20            [--server-cpu C] [--client-cpu C] [--server-only ADDR | --client-only ADDR]\n\
                     \x20            [--busy-poll-us US]  (spin before sleeping, both sides)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if a.size < 8 {
        return Err("--size must be at least 8 (the payload carries a sequence number)".into());
    }
    if a.conns == 0 || a.inflight == 0 {
        return Err("--conns and --inflight must be positive".into());
    }
    Ok(a)
}

/// Server side: echo every length-prefixed frame.
struct EchoServer;

impl Handler for EchoServer {
    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        loop {
            let buf = input.chunk();
            if buf.len() < 4 {
                input.need(4);
                return;
            }
            let total = 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < total {
                input.need(total);
                return;
            }
            conn.write(&buf[..total]);
            input.advance(total);
        }
    }
}

/// Client side: keeps `inflight` messages outstanding and checks each reply.
struct Client {
    size: usize,
    inflight: usize,
    next_send: u64,
    next_recv: u64,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    open: Rc<Cell<usize>>,
}

impl Client {
    fn send(&mut self, conn: &mut Conn<'_>) {
        let out = conn.output();
        out.extend_from_slice(&(self.size as u32).to_be_bytes());
        out.extend_from_slice(&self.next_send.to_le_bytes());
        out.resize(out.len() + self.size - 8, 0xAB);
        self.next_send += 1;
    }
}

impl Handler for Client {
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        self.open.set(self.open.get() + 1);
        for _ in 0..self.inflight {
            self.send(conn);
        }
    }

    fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
        let total = 4 + self.size;
        let mut n = 0;
        while input.len() >= total {
            let buf = input.chunk();
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            let seq = u64::from_le_bytes(buf[4..12].try_into().unwrap_or_default());
            if len != self.size || seq != self.next_recv {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            self.next_recv += 1;
            input.advance(total);
            n += 1;
            self.send(conn);
        }
        if !input.is_empty() {
            input.need(total);
        }
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn on_close(&mut self, _core: &mut Core, reason: CloseReason) {
        self.open.set(self.open.get().saturating_sub(1));
        if !matches!(reason, CloseReason::Shutdown | CloseReason::Local) {
            eprintln!("client connection closed: {reason}");
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills a live, correctly sized struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD reports the calling thread.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn core_cpu(rt: &Runtime, core: usize) -> Duration {
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = rt.handle().spawn(core, move |_| {
        let _ = tx.send(thread_cpu());
    });
    rx.recv().unwrap_or_default()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("netpoll_echo: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("netpoll_echo: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let server = match (&args.server_only, args.client_only) {
        (_, Some(_)) => None,
        (addr, None) => {
            let rt = Runtime::builder()
                .cores(1)
                .cpus(vec![args.server_cpu])
                .thread_name("server")
                .build()?;
            let addr = rt
                .handle()
                .listen(addr.as_deref().unwrap_or("127.0.0.1:0"), |_| {
                    Box::new(EchoServer)
                })?;
            Some((rt, addr))
        }
    };
    if let (Some((rt, addr)), Some(_)) = (&server, &args.server_only) {
        println!("echo server on {addr}; Ctrl-C to stop");
        let _ = rt;
        loop {
            std::thread::park();
        }
    }
    let addr = args
        .client_only
        .or(server.as_ref().map(|s| s.1))
        .ok_or("no server address")?;
    let client = Runtime::builder()
        .cores(1)
        .cpus(vec![args.client_cpu])
        .thread_name("client")
        .build()?;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (d, e) = (done.clone(), errors.clone());
    let (conns, inflight, size) = (args.conns, args.inflight, args.size);
    client.handle().spawn(0, move |core| {
        let open = Rc::new(Cell::new(0));
        for _ in 0..conns {
            let h = Client {
                size,
                inflight,
                next_send: 0,
                next_recv: 0,
                done: d.clone(),
                errors: e.clone(),
                open: open.clone(),
            };
            if let Err(err) = core.connect(addr, Some(Duration::from_secs(3)), Box::new(h)) {
                eprintln!("connect: {err}");
                e.fetch_add(1, Ordering::Relaxed);
            }
        }
    })?;
    std::thread::sleep(args.warmup);
    let cpu0 = server.as_ref().map(|(rt, _)| core_cpu(rt, 0));
    let (n0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(args.duration);
    let (n1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    let cpu1 = server.as_ref().map(|(rt, _)| core_cpu(rt, 0));
    let msgs = n1 - n0;
    let rate = msgs as f64 / (t1 - t0).as_secs_f64();
    println!(
        "{} conns x {} in flight, {} B payload: {:.0} msgs/s over {:.1}s, {} errors",
        args.conns,
        args.inflight,
        args.size,
        rate,
        (t1 - t0).as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        if msgs > 0 {
            let busy = (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64();
            println!(
                "server core: {:.3} us CPU per message, {:.0}% busy",
                (c1 - c0).as_secs_f64() * 1e6 / msgs as f64,
                busy * 100.0
            );
        }
    }
    client.shutdown(Duration::from_millis(200));
    if let Some((rt, _)) = server {
        rt.shutdown(Duration::from_millis(200));
    }
    if errors.load(Ordering::Relaxed) > 0 {
        return Err("some replies were wrong or connections failed".into());
    }
    Ok(())
}
