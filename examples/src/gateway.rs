//! A two-tier service: a gateway whose `Hello.SayHello` handler calls the hello service
//! behind it, without blocking its core. The handler takes the reply over
//! (`ctx.defer()`), calls the backend with a client scoped to the call being served
//! (`within(ctx)`: the caller's remaining time, its persistent metadata), and completes
//! the reply from the backend's answer; the reply is written on the core that owns the
//! caller's connection.

use netpoll_rpc::{CallContext, Reply, Status};

use crate::gen::pb::hello::{Hello, HelloClient, Request, Response};

/// The gateway's handler: relays each call to the hello service.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The hello service behind the gateway (any resolver, any balancer).
    pub backend: HelloClient,
}

impl Hello for Gateway {
    fn say_hello(&self, ctx: &CallContext<'_>, req: Request) -> Reply<Response> {
        let (later, reply) = ctx.defer();
        self.backend
            .within(ctx)
            .say_hello_with(req, move |r| later.complete(r.map_err(Status::from)));
        reply
    }
}
