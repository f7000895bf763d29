//! Foreign peers the tests start: Apache Thrift's Python library and Volo.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/thrift_peer.py")
}

/// Generates the Python code for the IDL; `None` (with the reason) when the tools are
/// missing outside CI.
pub fn generated() -> Option<PathBuf> {
    let idl = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("idl");
    let dir = std::env::temp_dir().join(format!("py-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["interop.thrift", "echo.thrift"] {
        let ok = Command::new("thrift")
            .args(["--gen", "py", "-out"])
            .arg(&dir)
            .arg(idl.join(f))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let has_lib = Command::new("python3")
            .args(["-c", "import thrift"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !has_lib {
            let why = "the Python Thrift peer needs `thrift` (apt thrift-compiler) and \
                       `python3 -m pip install thrift` (scripts/test.sh installs both)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        }
    }
    Some(dir)
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Builds the Volo peer; `None` (with the reason printed) when it cannot be built outside CI.
pub fn volo_peer() -> Option<PathBuf> {
    let root = workspace();
    let target = root.join("target").join("volo-peer");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(root.join("interop/volo-peer/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status();
    match out {
        Ok(s) if s.success() => Some(target.join("release").join("volo-peer")),
        other => {
            let why = format!("cannot build interop/volo-peer: {other:?}");
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

pub struct Peer(pub Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_listening(addr: SocketAddr) {
    let t0 = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "volo-peer did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
