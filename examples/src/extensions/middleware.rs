//! Two small middlewares: [`CallStats`] counts and times calls by method and outcome, and
//! passes a call id from client to server in a header, as a tracer passes its context;
//! [`Deny`] rejects the calls of one method before they run (or before they are sent).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use netpoll_rpc::{CallInfo, ErrorKind, Metadata, Middleware, Outcome, Side, Status};

/// The header [`CallStats`] carries its call id in.
pub const CALL_ID: &str = "x-call-id";

/// What [`CallStats`] saw of one method.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodStats {
    /// Calls that ended.
    pub calls: u64,
    /// Those that failed, by kind.
    pub errors: HashMap<&'static str, u64>,
    /// Time from start to end, summed.
    pub total_time: Duration,
    /// Call ids seen in requests (server side): what the client's `CallStats` sent.
    pub ids_seen: Vec<String>,
    /// Sequence ids of the calls, in the order they ended.
    pub seq_ids: Vec<i32>,
    /// Bytes of request frames, summed.
    pub request_bytes: u64,
    /// Bytes of reply frames, summed.
    pub response_bytes: u64,
}

/// Counts and times calls per method; on a client, sends a call id with each call; on a
/// server, records the call ids it receives and returns each in its reply's headers.
#[derive(Debug, Default)]
pub struct CallStats {
    next_id: AtomicU64,
    by_method: Mutex<HashMap<String, MethodStats>>,
}

impl CallStats {
    /// What was seen of `method` so far.
    pub fn method(&self, method: &str) -> MethodStats {
        self.by_method
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
            .cloned()
            .unwrap_or_default()
    }
}

impl Middleware for CallStats {
    type State = Instant;

    fn start(&self, call: &CallInfo<'_>, meta: &mut Metadata) -> Result<Instant, Status> {
        match call.side {
            Side::Client => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                meta.insert(CALL_ID, format!("{}-{id}", call.method));
            }
            Side::Server => {
                let id = call.headers.and_then(|h| h.str_header(CALL_ID));
                if let Some(id) = id {
                    meta.insert(CALL_ID, id.clone());
                    let id = String::from_utf8_lossy(&id).into_owned();
                    let mut m = self.by_method.lock().unwrap_or_else(|p| p.into_inner());
                    m.entry(call.method.to_owned())
                        .or_default()
                        .ids_seen
                        .push(id);
                }
            }
        }
        Ok(Instant::now())
    }

    fn end(&self, started: Instant, call: &CallInfo<'_>, outcome: &Outcome) {
        let mut m = self.by_method.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(call.method.to_owned()).or_default();
        s.calls += 1;
        s.total_time += started.elapsed();
        s.seq_ids.push(call.seq_id);
        s.request_bytes += call.request_bytes as u64;
        s.response_bytes += outcome.response_bytes as u64;
        if let Some(kind) = outcome.error {
            *s.errors.entry(kind.name()).or_default() += 1;
        }
    }
}

/// Rejects every call of one method, with `RESOURCE_EXHAUSTED` as a rate limiter would.
#[derive(Debug)]
pub struct Deny(pub &'static str);

impl Middleware for Deny {
    type State = ();

    fn start(&self, call: &CallInfo<'_>, _meta: &mut Metadata) -> Result<(), Status> {
        if call.method == self.0 {
            Err(Status::new(
                ErrorKind::ResourceExhausted,
                format!("{} is not allowed here", self.0),
            ))
        } else {
            Ok(())
        }
    }

    fn end(&self, _state: (), _call: &CallInfo<'_>, _outcome: &Outcome) {}
}
