//! Metrics end to end: `echo_server --metrics` scraped by a real Prometheus (Debian's
//! `prometheus`, scrape interval 1 s); after a load run, Prometheus' HTTP API returns the
//! call count the client counted.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_addr, http_get, EchoServer};
use examples::gen::echo::EchoClient;
use netpoll_rpc::client::ClientBuilder;
use netpoll_rpc::metrics::Metrics;

/// A throwaway Prometheus scraping `target` every second.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("netpoll-prom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: echo\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian's prometheus; scripts/test.sh installs it)");
        let p = Prometheus { child, addr, dir };
        let t0 = Instant::now();
        while http_get(p.addr, "/-/ready").is_none_or(|(s, _)| s != 200) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "prometheus did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// The value of an instant query with one result, if there is one.
    fn query(&self, q: &str) -> Option<f64> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={enc}"))?;
        assert_eq!(status, 200, "{body}");
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[t,"N"]}]}}
        let at = body.find("\"value\":[")?;
        let rest = &body[at..];
        let q1 = rest.find(",\"")? + 2;
        let q2 = rest[q1..].find('"')? + q1;
        rest[q1..q2].parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn prometheus_counts_what_the_client_counted() {
    let server = EchoServer::start(&["--metrics", "127.0.0.1:0"]);
    let metrics_addr = server.metrics.expect("metrics address");
    let prom = Prometheus::start(metrics_addr);
    let client_metrics = Metrics::new();
    let client = EchoClient::new(
        "echo",
        ClientBuilder::default()
            .host_ports([server.addr])
            .middleware(client_metrics.clone()),
    )
    .unwrap();
    // Load from 4 threads; count what succeeded.
    let ok: u64 = (0..4)
        .map(|_| {
            let c = client.clone();
            std::thread::spawn(move || {
                (0..2500)
                    .filter(|_| c.echo(Bytes::from_static(b"counted")).is_ok())
                    .count() as u64
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(ok, 10_000);
    // The client's own metrics agree.
    let text = client_metrics.render();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("rpc_client_call_duration_seconds_count{")
                && l.contains("rpc_method=\"echo\"")
                && l.contains("status=\"ok\"")
        })
        .expect("a client count");
    assert!(line.ends_with(" 10000"), "{line}");
    // Prometheus scrapes the server every second.
    let q = "sum(rpc_server_call_duration_seconds_count{rpc_method=\"echo\",status=\"ok\"})";
    let t0 = Instant::now();
    loop {
        let v = prom.query(q);
        if v == Some(ok as f64) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "Prometheus says {v:?}, the client counted {ok}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Labels as the conventions say, and the server's own counters.
    let by_labels = prom.query(
        "sum(rpc_server_call_duration_seconds_count{rpc_system=\"apache_thrift\",rpc_service=\"Echo\",rpc_method=\"echo\",status=\"ok\"})",
    );
    assert_eq!(by_labels, Some(ok as f64));
    assert!(prom
        .query("sum(rpc_server_connections_closed_total)")
        .is_some());
    assert!(prom.query("sum(rpc_server_connections)").is_some());
    assert!(
        prom.query("sum(netpoll_buffer_pool_buffers{state=\"total\"})")
            .is_some_and(|n| n > 0.0),
        "the receive pool is reported"
    );
}
