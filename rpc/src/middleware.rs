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

use crate::trace::TraceContext;
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
    /// reply or failure arrived). Called exactly once for every call `start` accepted,
    /// unless its state [`is_idle`](Self::is_idle).
    fn end(&self, state: Self::State, call: &CallInfo<'_>, outcome: &Outcome);

    /// Whether `state` says there is nothing to do at the call's end (a call a sampler
    /// left out, say). Such a state is dropped at once instead of being kept with the
    /// call, and `end` is not called for it: a middleware that follows some calls only
    /// costs the others no allocation. By default, every call is followed.
    fn is_idle(_state: &Self::State) -> bool {
        false
    }

    /// On a server, what the middleware keeps entered while the handler runs: a tracing
    /// middleware enters the call's span, so that what the handler logs is inside it.
    /// Dropped when the handler returns (innermost first). Nothing by default.
    fn enter(&self, _state: &Self::State) -> Option<Box<dyn Any>> {
        None
    }
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

    fn is_idle(state: &Self::State) -> bool {
        M::is_idle(state)
    }

    fn enter(&self, state: &Self::State) -> Option<Box<dyn Any>> {
        (**self).enter(state)
    }
}

/// Headers a middleware adds to a request (client) or to its reply (server), and the span
/// it opened for the call.
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    pub(crate) entries: Vec<(String, Bytes)>,
    pub(crate) trace: Option<TraceContext>,
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

    /// Whether no header was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Says which span the middleware opened for the call (a tracing middleware does), or
    /// the trace context the call passes on without a span (its sampling decision). On a
    /// client, the request carries it as `traceparent` (and `tracestate`), in place of the
    /// parent the client would pass on by itself; on a server, calls made
    /// [`within`](crate::client::Client::within) the call become its children.
    pub fn set_trace(&mut self, span: TraceContext) {
        self.trace = Some(span);
    }

    /// The span set with [`set_trace`](Self::set_trace).
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
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

/// A middleware's state with its type erased; `None` for a call the middleware does not
/// follow ([`Middleware::is_idle`]).
pub(crate) type Erased = Option<Box<dyn Any + Send>>;

/// A middleware with its state type erased, so that a server or client can hold several.
pub(crate) trait DynMiddleware: Send + Sync {
    fn start(&self, call: &CallInfo<'_>, meta: &mut Metadata) -> Result<Erased, Status>;
    /// Ends a call; `state` is what this middleware's `start` kept for it.
    fn end(&self, state: Box<dyn Any + Send>, call: &CallInfo<'_>, outcome: &Outcome);
    /// What to keep entered while the handler runs ([`Middleware::enter`]).
    fn enter(&self, state: &(dyn Any + Send)) -> Option<Box<dyn Any>>;
}

impl<M: Middleware> DynMiddleware for M {
    fn start(&self, call: &CallInfo<'_>, meta: &mut Metadata) -> Result<Erased, Status> {
        let state = Middleware::start(self, call, meta)?;
        if M::is_idle(&state) {
            return Ok(None);
        }
        // A zero-sized state (as most are) is boxed without allocating.
        Ok(Some(Box::new(state)))
    }

    fn end(&self, state: Box<dyn Any + Send>, call: &CallInfo<'_>, outcome: &Outcome) {
        if let Ok(state) = state.downcast::<M::State>() {
            Middleware::end(self, *state, call, outcome);
        }
    }

    fn enter(&self, state: &(dyn Any + Send)) -> Option<Box<dyn Any>> {
        Middleware::enter(self, state.downcast_ref::<M::State>()?)
    }
}

/// The middlewares of a server or client.
pub(crate) type Stack = Arc<[Arc<dyn DynMiddleware>]>;

/// The middlewares that follow one call, with their states, until it ends.
pub(crate) struct Running {
    stack: Stack,
    /// The states of the middlewares that follow the call (not idle), by their place in
    /// the stack, in order: the first inline (a zero-sized state, as most have, makes a
    /// call through one middleware allocate nothing), the rest after it.
    first: Option<(usize, Box<dyn Any + Send>)>,
    rest: Vec<(usize, Box<dyn Any + Send>)>,
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

/// Starts `stack` on a call: `None` when no middleware follows it (every state idle) and
/// none added a header, so that such a call keeps nothing. On a rejection, the
/// middlewares already started are ended with the rejection as the outcome, and the
/// status is returned.
pub(crate) fn start(
    stack: &Stack,
    call: &CallInfo<'_>,
    meta: &mut Metadata,
) -> Result<Option<Running>, Status> {
    let mut first = None;
    let mut rest = Vec::new();
    for (i, m) in stack.iter().enumerate() {
        match m.start(call, meta) {
            Ok(None) => {}
            Ok(Some(s)) if first.is_none() => first = Some((i, s)),
            Ok(Some(s)) => rest.push((i, s)),
            Err(status) => {
                let outcome = Outcome {
                    error: Some(status.kind()),
                    response_bytes: 0,
                };
                Running {
                    stack: stack.clone(),
                    first,
                    rest,
                    reply: Metadata::default(),
                }
                .end(call, &outcome);
                return Err(status);
            }
        }
    }
    if first.is_none() && meta.is_empty() {
        return Ok(None);
    }
    Ok(Some(Running {
        stack: stack.clone(),
        first,
        rest,
        reply: Metadata::default(),
    }))
}

/// What the middlewares keep entered while a handler runs; left in reverse order.
#[derive(Default)]
pub(crate) struct Entered(Vec<Box<dyn Any>>);

impl Drop for Entered {
    fn drop(&mut self) {
        while let Some(guard) = self.0.pop() {
            drop(guard);
        }
    }
}

impl Running {
    /// Enters, for the handler, what each middleware that follows the call keeps entered
    /// ([`Middleware::enter`]), in order.
    pub(crate) fn enter(&self) -> Entered {
        let mut entered = Entered::default();
        for (i, state) in self.first.iter().chain(self.rest.iter()) {
            if let Some(guard) = self.stack[*i].enter(&**state) {
                entered.0.push(guard);
            }
        }
        entered
    }

    /// Ends the call for every middleware that follows it, in reverse order.
    pub(crate) fn end(mut self, call: &CallInfo<'_>, outcome: &Outcome) {
        while let Some((i, state)) = self.rest.pop() {
            self.stack[i].end(state, call, outcome);
        }
        if let Some((i, state)) = self.first.take() {
            self.stack[i].end(state, call, outcome);
        }
    }
}
