//! etcd v3 as a registry and a resolver, with Kitex's key layout (kitex-contrib's
//! registry-etcd), so that Kitex clients find our servers and ours find Kitex's:
//!
//! - key `kitex/registry-etcd/{service}/{host:port}`;
//! - value `{"network":"tcp","address":"host:port","weight":N,"tags":{...}}`;
//! - the key is put with a lease that the server keeps alive, and deleted on
//!   deregistration (the lease is revoked too).
//!
//! # Why etcd's JSON gateway over blocking HTTP
//!
//! The `etcd-client` crate speaks gRPC: it needs `protoc` at build time and a tokio runtime
//! at run time, both foreign to this crate's default build (thread-per-core loops, no async
//! runtime). etcd serves the same v3 API as JSON over HTTP (its gRPC gateway, `/v3/...`,
//! in every release since 3.3): range, put, delete, lease grant / keep-alive / revoke, and
//! watch as a chunked stream of JSON lines. A registry does a few requests a minute, off
//! the data path, so one blocking HTTP/1.1 exchange per request on a thread of its own
//! costs nothing that matters, and the whole client is a few hundred lines with no new
//! build requirement.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Registration, Registry, RegistryError};
use crate::discovery::{Instance, OnChange, ResolveError, Resolver, WatchGuard};
use crate::http::{self, Response};

/// Kitex's key prefix.
pub const DEFAULT_PREFIX: &str = "kitex/registry-etcd";

/// How long a watch may stay silent before it is set up again.
const WATCH_IDLE: Duration = Duration::from_secs(30);

/// Where an etcd cluster answers, and how long a request may take.
#[derive(Debug, Clone)]
struct Etcd {
    /// `host:port` of each member to try, in order, and whether it was given as
    /// `https://`.
    endpoints: Vec<(String, bool)>,
    timeout: Duration,
    /// TLS to the members: each verified against its own host name.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConnector>,
}

impl Etcd {
    /// `endpoints`: comma-separated `host:port`, each optionally `etcd://`, `http://` or
    /// `https://` (TLS needs [`EtcdRegistry::tls`] or [`EtcdResolver::tls`]).
    fn new(endpoints: &str) -> Etcd {
        Etcd {
            endpoints: endpoints
                .split(',')
                .map(|e| {
                    let e = e.trim();
                    let https = e.starts_with("https://");
                    let hp = e
                        .trim_start_matches("etcd://")
                        .trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .trim_end_matches('/');
                    (hp.to_owned(), https)
                })
                .filter(|(e, _)| !e.is_empty())
                .collect(),
            timeout: Duration::from_secs(3),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    #[cfg(feature = "tls")]
    fn set_tls(&mut self, tls: crate::tls::TlsConnector) {
        self.tls = Some(tls);
    }

    /// TLS to member `host_port` (given as `https://` if `https`): verified against its
    /// own host; an `https://` member needs a connector.
    fn tls_for(&self, host_port: &str, https: bool) -> io::Result<Option<http::HttpTls>> {
        #[cfg(feature = "tls")]
        if let Some(c) = &self.tls {
            return http::HttpTls::to(c, host_port).map(Some);
        }
        let _ = host_port;
        if https {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an https:// etcd endpoint needs a TLS connector (EtcdRegistry::tls or EtcdResolver::tls, feature tls)",
            ));
        }
        Ok(None)
    }

    /// `ask`s the members in turn: the first answer, or the last failure.
    fn first_member<T>(
        &self,
        ask: impl Fn(&str, Option<&http::HttpTls>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut last = io::Error::other("no etcd endpoint given");
        for (e, https) in &self.endpoints {
            match self.tls_for(e, *https).and_then(|tls| ask(e, tls.as_ref())) {
                Ok(v) => return Ok(v),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// POSTs `body` to `path` on the first member that answers.
    fn call(&self, path: &str, body: &Value) -> io::Result<Value> {
        let body = body.to_string();
        let text = self.first_member(|e, tls| http::post(e, path, &body, self.timeout, tls))?;
        serde_json::from_str(&text).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }

    /// Opens a watch stream on the first member that answers.
    fn watch(&self, body: &Value) -> io::Result<(Response, TcpStream)> {
        let body = body.to_string();
        let r = self.first_member(|e, tls| {
            let r = Response::open(
                e,
                "/v3/watch",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
                self.timeout,
                tls,
            )?;
            if r.status != 200 {
                return Err(io::Error::other(format!(
                    "watch answered HTTP {}",
                    r.status
                )));
            }
            Ok(r)
        })?;
        // A silent watch is taken down and set up again (listing first) after a while,
        // so that a connection that died without a word cannot freeze the instance list.
        r.into_stream(WATCH_IDLE)
    }

    /// Every key under `prefix`, with the store's revision.
    fn range_prefix(&self, prefix: &str) -> io::Result<(Vec<KeyValue>, i64)> {
        let r = self.call(
            "/v3/kv/range",
            &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))}),
        )?;
        let revision = int(&r["header"]["revision"]);
        let mut kvs = Vec::new();
        for kv in r["kvs"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (unb64(&kv["key"]), unb64(&kv["value"])) {
                kvs.push((String::from_utf8_lossy(&k).into_owned(), v));
            }
        }
        Ok((kvs, revision))
    }
}

/// A key (as text) and its value.
type KeyValue = (String, Vec<u8>);

/// An int64 of the gateway's JSON: a string, or (rarely) a number; absent is 0.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (how the gateway carries bytes).
fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for ch in s.bytes() {
        let d = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = acc << 6 | d as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The end of the range of keys starting with `prefix` (etcd's `WithPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{prefix}/{service}/")
}

/// The instance a registry value describes; `None` for a value that is not one.
fn parse_instance(value: &[u8]) -> Option<Instance> {
    let v: Value = serde_json::from_slice(value).ok()?;
    let addr = v["address"].as_str()?;
    let addr: SocketAddr = addr
        .parse()
        .ok()
        .or_else(|| addr.to_socket_addrs().ok()?.next())?;
    let weight = v["weight"].as_i64().filter(|w| *w > 0).unwrap_or(10);
    let mut tags: Vec<(String, String)> = v["tags"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    tags.sort();
    Some(Instance {
        addr: crate::discovery::Addr::Tcp(addr),
        weight: weight.min(u32::MAX as i64) as u32,
        tags,
    })
}

/// Registers servers in etcd, each under a lease kept alive by a thread of its own.
#[derive(Debug)]
pub struct EtcdRegistry {
    etcd: Etcd,
    prefix: String,
    ttl: Duration,
    registered: Mutex<HashMap<String, Keeper>>,
}

#[derive(Debug)]
struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    lease: Arc<Mutex<i64>>,
}

impl EtcdRegistry {
    /// A registry in the etcd cluster at `endpoints` (`host:port`, comma-separated,
    /// optionally `etcd://`), with Kitex's key prefix and a 60 s lease.
    pub fn new(endpoints: &str) -> EtcdRegistry {
        EtcdRegistry {
            etcd: Etcd::new(endpoints),
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: Duration::from_secs(60),
            registered: Mutex::new(HashMap::new()),
        }
    }

    /// Speaks TLS to etcd (its `https://` client URLs), verifying each member's
    /// certificate against the member's own host name with `tls` (and presenting its
    /// identity, for etcd's `--client-cert-auth`). An `https://` endpoint without it is an
    /// error, not plain text.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConnector) -> Self {
        self.etcd.set_tls(tls);
        self
    }

    /// The lease's time to live: how long a server that died without deregistering stays
    /// listed. Renewed every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Another key prefix than Kitex's.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    fn key(&self, r: &Registration) -> String {
        format!("{}{}", service_prefix(&self.prefix, &r.service), r.addr)
    }

    fn value(r: &Registration) -> String {
        let tags: serde_json::Map<String, Value> = r
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({"network": "tcp", "address": r.addr.to_string(), "weight": r.weight, "tags": tags})
            .to_string()
    }
}

/// Grants a lease and puts `key` under it; returns the lease.
fn put_with_lease(etcd: &Etcd, key: &str, value: &str, ttl: Duration) -> io::Result<i64> {
    let g = etcd.call("/v3/lease/grant", &json!({"TTL": ttl.as_secs()}))?;
    let lease = int(&g["ID"]);
    if lease == 0 {
        return Err(io::Error::other(format!("lease grant refused: {g}")));
    }
    let put = etcd.call(
        "/v3/kv/put",
        &json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes()), "lease": lease.to_string()}),
    );
    if let Err(e) = put {
        // Do not leave the lease behind until its TTL.
        let _ = etcd.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}));
        return Err(e);
    }
    Ok(lease)
}

impl Registry for EtcdRegistry {
    fn register(&self, r: &Registration) -> Result<(), RegistryError> {
        if r.service.contains('/') {
            return Err(RegistryError::new(
                &r.service,
                crate::reason("a service name may not contain '/'"),
            ));
        }
        let key = self.key(r);
        let value = Self::value(r);
        // A registration of the same key replaces the old one: its keeper stops first,
        // so that it cannot put the key back under its own lease.
        let old = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        if let Some(old) = old {
            stop_keeper(old);
        }
        let lease = put_with_lease(&self.etcd, &key, &value, self.ttl)
            .map_err(|e| RegistryError::new(&r.service, crate::cause(e)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let lease = Arc::new(Mutex::new(lease));
        let (etcd, ttl, k, st, l) = (
            self.etcd.clone(),
            self.ttl,
            key.clone(),
            stop.clone(),
            lease.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("rpc-etcd-lease".into())
            .spawn(move || keep_alive(etcd, k, value, ttl, st, l))
            .map_err(|e| RegistryError::new(&r.service, crate::cause(e)))?;
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                Keeper {
                    stop,
                    thread: Some(thread),
                    lease,
                },
            );
        tracing::info!(service = %r.service, addr = %r.addr, "registered in etcd");
        Ok(())
    }

    fn deregister(&self, r: &Registration) -> Result<(), RegistryError> {
        let key = self.key(r);
        let keeper = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        // The lease is read once its keeper has stopped (it may have just granted a new
        // one). Revoking it deletes the key only if it is still ours: a new process that
        // registered the same address meanwhile (a rolling restart) keeps its entry.
        let Some(lease) = keeper.map(stop_keeper) else {
            return Ok(());
        };
        self.etcd
            .call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .map_err(|e| RegistryError::new(&r.service, crate::cause(e)))?;
        tracing::info!(service = %r.service, addr = %r.addr, "deregistered from etcd");
        Ok(())
    }
}

/// Stops a keeper; returns its lease (read after it stopped).
fn stop_keeper(mut k: Keeper) -> i64 {
    k.stop.store(true, Ordering::Relaxed);
    if let Some(t) = k.thread.take() {
        t.thread().unpark();
        let _ = t.join();
    }
    let lease = *k.lease.lock().unwrap_or_else(|p| p.into_inner());
    lease
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        for (_, k) in self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            stop_keeper(k);
        }
    }
}

/// Renews the lease every third of its TTL. A lease etcd no longer knows (it expired while
/// etcd was unreachable, or etcd lost its data) is granted anew and the key put again.
fn keep_alive(
    etcd: Etcd,
    key: String,
    value: String,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    lease: Arc<Mutex<i64>>,
) {
    let every = ttl / 3;
    loop {
        std::thread::park_timeout(every);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let id = *lease.lock().unwrap_or_else(|p| p.into_inner());
        match etcd.call("/v3/lease/keepalive", &json!({"ID": id.to_string()})) {
            // An error of etcd's (no leader, a timeout) says nothing of the lease.
            Ok(r) if r.get("error").is_some() => {
                tracing::warn!(key, error = %r["error"], "cannot renew the lease; retrying");
            }
            // A known lease answers with its TTL. The key must still be there: it is put
            // back if someone deleted it (one under another lease is left to its owner).
            Ok(r) if int(&r["result"]["TTL"]) > 0 => {
                let got = etcd.call("/v3/kv/range", &json!({"key": b64(key.as_bytes())}));
                if got.is_ok_and(|g| g["kvs"].as_array().is_none_or(|k| k.is_empty())) {
                    tracing::warn!(key, "the key is gone; putting it back");
                    let put = json!({
                        "key": b64(key.as_bytes()),
                        "value": b64(value.as_bytes()),
                        "lease": id.to_string(),
                    });
                    if let Err(e) = etcd.call("/v3/kv/put", &put) {
                        tracing::warn!(key, error = %e, "cannot put the key back; retrying");
                    }
                }
            }
            // An unknown lease answers without a TTL.
            Ok(_) => {
                tracing::warn!(key, "the lease is gone; registering again");
                match put_with_lease(&etcd, &key, &value, ttl) {
                    Ok(new) => *lease.lock().unwrap_or_else(|p| p.into_inner()) = new,
                    Err(e) => tracing::warn!(key, error = %e, "cannot register again; retrying"),
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "cannot renew the lease; retrying"),
        }
    }
}

/// Finds a service's instances in etcd and watches them: a registration reaches the client
/// as soon as etcd has it, a deregistration (or an expired lease) too. Losing etcd keeps
/// the last known instances; the watch resumes when etcd is back.
#[derive(Debug, Clone)]
pub struct EtcdResolver {
    etcd: Etcd,
    prefix: String,
}

impl EtcdResolver {
    /// A resolver over the etcd cluster at `endpoints` (as for [`EtcdRegistry::new`]).
    pub fn new(endpoints: &str) -> EtcdResolver {
        EtcdResolver {
            etcd: Etcd::new(endpoints),
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Speaks TLS to etcd, as [`EtcdRegistry::tls`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsConnector) -> Self {
        self.etcd.set_tls(tls);
        self
    }

    /// Another key prefix than Kitex's.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    fn list(&self, service: &str) -> io::Result<(HashMap<String, Instance>, i64)> {
        let (kvs, rev) = self
            .etcd
            .range_prefix(&service_prefix(&self.prefix, service))?;
        Ok((
            kvs.into_iter()
                .filter_map(|(k, v)| Some((k, parse_instance(&v)?)))
                .collect(),
            rev,
        ))
    }
}

fn sorted(map: &HashMap<String, Instance>) -> Vec<Instance> {
    let mut v: Vec<Instance> = map.values().cloned().collect();
    v.sort_by(|a, b| a.addr.cmp(&b.addr));
    v
}

impl Resolver for EtcdResolver {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn resolve(&self, service: &str) -> Result<Vec<Instance>, ResolveError> {
        self.list(service)
            .map(|(m, _)| sorted(&m))
            .map_err(|e| ResolveError {
                service: service.to_owned(),
                cause: crate::cause(e),
            })
    }

    fn watch(
        &self,
        service: &str,
        on_change: OnChange,
    ) -> Result<Option<WatchGuard>, ResolveError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stream: Arc<Mutex<Option<TcpStream>>> = Arc::new(Mutex::new(None));
        let (me, svc, st, sm) = (
            self.clone(),
            service.to_owned(),
            stop.clone(),
            stream.clone(),
        );
        std::thread::Builder::new()
            .name("rpc-etcd-watch".into())
            .spawn(move || me.watch_loop(&svc, on_change, st, sm))
            .map_err(|e| ResolveError {
                service: service.to_owned(),
                cause: crate::cause(e),
            })?;
        Ok(Some(Box::new(WatchStop { stop, stream })))
    }
}

/// Ends a watch when dropped: its stream is shut down, which wakes its thread.
struct WatchStop {
    stop: Arc<AtomicBool>,
    stream: Arc<Mutex<Option<TcpStream>>>,
}

impl Drop for WatchStop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl EtcdResolver {
    /// Lists, then watches from the next revision; on any failure keeps the last list and
    /// starts over after a short pause.
    fn watch_loop(
        &self,
        service: &str,
        on_change: OnChange,
        stop: Arc<AtomicBool>,
        stream: Arc<Mutex<Option<TcpStream>>>,
    ) {
        let prefix = service_prefix(&self.prefix, service);
        let mut last: Option<Vec<Instance>> = None;
        let mut publish = |map: &HashMap<String, Instance>| {
            let list = sorted(map);
            if last.as_ref() != Some(&list) {
                last = Some(list.clone());
                on_change(list);
            }
        };
        let mut pause = Duration::from_millis(100);
        while !stop.load(Ordering::Relaxed) {
            let result = (|| -> io::Result<()> {
                let (mut map, rev) = self.list(service)?;
                publish(&map);
                let req = json!({"create_request": {
                    "key": b64(prefix.as_bytes()),
                    "range_end": b64(&prefix_end(prefix.as_bytes())),
                    "start_revision": (rev + 1).to_string(),
                }});
                let (mut resp, handle) = self.etcd.watch(&req)?;
                *stream.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                pause = Duration::from_millis(100);
                while let Some(line) = resp.next_line()? {
                    if line.is_empty() {
                        continue;
                    }
                    let v: Value = serde_json::from_str(&line)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if v.get("error").is_some() {
                        return Err(io::Error::other(format!("watch error: {}", v["error"])));
                    }
                    let r = &v["result"];
                    if r["canceled"].as_bool() == Some(true) || int(&r["compact_revision"]) > 0 {
                        return Err(io::Error::other("watch canceled by etcd; listing again"));
                    }
                    for ev in r["events"].as_array().into_iter().flatten() {
                        let kv = &ev["kv"];
                        let Some(key) = unb64(&kv["key"]) else {
                            continue;
                        };
                        let key = String::from_utf8_lossy(&key).into_owned();
                        if ev["type"].as_str() == Some("DELETE") {
                            map.remove(&key);
                        } else if let Some(inst) =
                            unb64(&kv["value"]).and_then(|v| parse_instance(&v))
                        {
                            map.insert(key, inst);
                        }
                    }
                    publish(&map);
                }
                Err(io::Error::other("the watch stream ended"))
            })();
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match result {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    tracing::debug!(
                        service,
                        "etcd watch silent for a while; setting it up again"
                    );
                    pause = Duration::ZERO;
                }
                Err(e) => {
                    tracing::warn!(service, error = %e, "etcd watch interrupted; keeping the last instances")
                }
                Ok(()) => {}
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_prefix_ends() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = b64(s.as_bytes());
            assert_eq!(unb64(&Value::String(e)).unwrap(), s.as_bytes());
        }
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(prefix_end(b"foo"), b"fop");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\x00");
    }

    #[test]
    fn kitex_values_parse() {
        let v = br#"{"network":"tcp","address":"127.0.0.1:8888","weight":0,"tags":{"zone":"a"}}"#;
        let i = parse_instance(v).unwrap();
        assert_eq!(
            i.addr,
            "127.0.0.1:8888".parse::<crate::discovery::Addr>().unwrap()
        );
        assert_eq!(i.weight, 10, "a weight of 0 reads as the default");
        assert_eq!(i.tag("zone"), Some("a"));
        assert!(parse_instance(b"not json").is_none());
        let r = Registration {
            service: "s".into(),
            addr: "10.0.0.1:1".parse().unwrap(),
            weight: 7,
            tags: vec![("k".into(), "v".into())],
        };
        let back = parse_instance(EtcdRegistry::value(&r).as_bytes()).unwrap();
        assert_eq!(
            (back.addr, back.weight),
            (crate::discovery::Addr::Tcp(r.addr), 7)
        );
    }
}
