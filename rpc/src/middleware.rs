//! [`Middleware`]: code that runs around every call of a server or a client, as Kitex's
//! middleware does: to trace, measure, log, limit or reject calls.
//!
//! Handlers are synchronous and replies may come later (a deferred reply, a client's
//! callback), so a middleware is not a wrapper around a `next` function: it is told when
//! a call starts, may reject it there, and is told how it ended, with whatever state it
//! kept in between. Both sides describe the call the same way ([`CallInfo`]) and its end
//! the same way ([`Outcome`]).
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use netpoll_rpc::{CallInfo, Metadata, Middleware, Outcome, Status};
//!
//! /// Counts calls that failed.
//! #[derive(Default)]
//! struct Failures(AtomicU64);
//!
//! impl Middleware for Failures {
//!     type State = ();
//!     fn start(&self, _call: &CallInfo<'_>, _meta: &mut Metadata) -> Result<(), Status> {
//!         Ok(())
//!     }
//!     fn end(&self, _: (), _call: &CallInfo<'_>, outcome: &Outcome) {
//!         if outcome.error.is_some() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//! ```

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

use crate::wire::Headers;
use crate::{CallInfo, Outcome, Status};

/// Code run around every call; register it with `ServerBuilder::middleware` or
/// `ClientBuilder::middleware`. Several run in registration order at the start of a call
/// and in reverse order at its end.
pub trait Middleware: Send + Sync + 'static {
    /// What the middleware keeps from the start of a call to its end (a start time, a
    /// span).
    type State: Send + 'static;

    /// A call starts: on a server, before its handler runs; on a client, before it is
    /// sent. An `Err` rejects the call with that status: the server answers it without
    /// running the handler; the client fails it with `CallError::Application` without
    /// sending it. Headers put in `meta` travel as TTHeader string headers (other
    /// transports have nowhere to put them): on a client with the request, as a trace
    /// context does; on a server with the reply (or with the rejection).
    fn start(&self, call: &CallInfo<'_>, meta: &mut Metadata) -> Result<Self::State, Status>;

    /// The call ended (on a server, when its reply was written; on a client, when its
    /// reply or failure arrived). Called exactly once for every call `start` accepted.
    fn end(&self, state: Self::State, call: &CallInfo<'_>, outcome: &Outcome);
}

/// A shared middleware (to read what it gathered while it runs) is a middleware.
impl<M: Middleware> Middleware for Arc<M> {
    type State = M::State;

    fn start(&self, call: &CallInfo<'_>, meta: &mut Metadata) -> Result<Self::State, Status> {
        (**self).start(call, meta)
    }

    fn end(&self, state: Self::State, call: &CallInfo<'_>, outcome: &Outcome) {
        (**self).end(state, call, outcome)
    }
}

/// Headers a middleware adds to a request (client) or to its reply (server).
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    pub(crate) entries: Vec<(String, Bytes)>,
}

impl Metadata {
    /// Sets a string-keyed header (replacing one of the same key).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Bytes>) {
        let (key, value) = (key.into(), value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// The headers added so far.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(k, v)| (k.as_str(), &v[..]))
    }

    /// Whether none was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Runs `f` with `h` plus these headers (after `h`'s own string headers).
    pub(crate) fn with_headers<R>(&self, h: &Headers<'_>, f: impl FnOnce(&Headers<'_>) -> R) -> R {
        if self.is_empty() {
            return f(h);
        }
        let strs: Vec<(&str, &[u8])> = h.strs.iter().copied().chain(self.iter()).collect();
        f(&Headers {
            flags: h.flags,
            ints: h.ints,
            strs: &strs,
        })
    }
}

/// A middleware with its state type erased, so that a server or client can hold several.
pub(crate) trait DynMiddleware: Send + Sync {
    fn start(
        &self,
        call: &CallInfo<'_>,
        meta: &mut Metadata,
    ) -> Result<Box<dyn Any + Send>, Status>;
    fn end(&self, state: Box<dyn Any + Send>, call: &CallInfo<'_>, outcome: &Outcome);
}

impl<M: Middleware> DynMiddleware for M {
    fn start(
        &self,
        call: &CallInfo<'_>,
        meta: &mut Metadata,
    ) -> Result<Box<dyn Any + Send>, Status> {
        Middleware::start(self, call, meta).map(|s| Box::new(s) as Box<dyn Any + Send>)
    }

    fn end(&self, state: Box<dyn Any + Send>, call: &CallInfo<'_>, outcome: &Outcome) {
        if let Ok(state) = state.downcast::<M::State>() {
            Middleware::end(self, *state, call, outcome);
        }
    }
}

/// The middlewares of a server or client.
pub(crate) type Stack = Arc<[Arc<dyn DynMiddleware>]>;

/// The middlewares that accepted one call, with their states, until it ends.
pub(crate) struct Running {
    stack: Stack,
    /// The states of the middlewares that started, in order: the first inline (a
    /// zero-sized state, as most have, makes a call through one middleware allocate
    /// nothing), the rest after it.
    first: Option<Box<dyn Any + Send>>,
    rest: Vec<Box<dyn Any + Send>>,
    /// On a server: the headers the middlewares add to the reply.
    pub(crate) reply: Metadata,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field(
                "middlewares",
                &(self.first.is_some() as usize + self.rest.len()),
            )
            .finish()
    }
}

/// Starts `stack` on a call. On a rejection, the middlewares already started are ended
/// with the rejection as the outcome, and the status is returned.
pub(crate) fn start(
    stack: &Stack,
    call: &CallInfo<'_>,
    meta: &mut Metadata,
) -> Result<Option<Running>, Status> {
    if stack.is_empty() {
        return Ok(None);
    }
    let mut running = Running {
        stack: stack.clone(),
        first: None,
        rest: Vec::new(),
        reply: Metadata::default(),
    };
    for m in stack.iter() {
        match m.start(call, meta) {
            Ok(s) if running.first.is_none() => running.first = Some(s),
            Ok(s) => running.rest.push(s),
            Err(status) => {
                let outcome = Outcome {
                    error: Some(status.kind()),
                    response_bytes: 0,
                };
                running.end(call, &outcome);
                return Err(status);
            }
        }
    }
    Ok(Some(running))
}

impl Running {
    /// Ends the call for every middleware that started it, in reverse order.
    pub(crate) fn end(mut self, call: &CallInfo<'_>, outcome: &Outcome) {
        while let Some(state) = self.rest.pop() {
            let m = &self.stack[self.rest.len() + 1];
            m.end(state, call, outcome);
        }
        if let Some(state) = self.first.take() {
            self.stack[0].end(state, call, outcome);
        }
    }
}
