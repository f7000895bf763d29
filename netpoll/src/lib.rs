//! A thread-per-core io_uring event loop: the Rust counterpart of CloudWeGo's Netpoll.
//!
//! Each [`Core`] is one thread that owns one io_uring instance, its connections, its
//! timers and its receive buffer pool. Nothing on the hot path is shared between cores or
//! locked:
//!
//! * **Accept** on every core: one `SO_REUSEPORT` listener per core, multishot accept.
//! * **Receive** with multishot recv into a kernel-provided buffer ring. The consumer reads
//!   the kernel-filled buffer in place as [`bytes::Bytes`] views; a buffer returns to the
//!   ring when its last view is dropped, on whatever thread. A message split across two
//!   buffers is copied once, to make it contiguous; nothing else is copied.
//! * **Send**: everything written to a connection during one loop turn leaves with one send
//!   at the end of the turn; partial writes are resumed. Above a high-water mark of queued
//!   output the connection is not read until the peer drains it, so a peer that never
//!   reads cannot grow our memory without bound.
//! * **Timers** per core, **outbound connects** with timeouts, **tasks** handed to a core
//!   from any thread (a lock-free queue plus an eventfd wake-up only when the core sleeps),
//!   and **graceful shutdown** that waits for every kernel-owned buffer to come back.
//!
//! A connection's consumer implements [`Handler`]; it sees bytes ([`Input`]) and a writer
//! ([`Conn`]) and nothing of io_uring, so another backend can drive the same handlers.
//!
//! ```no_run
//! use netpoll::{Conn, Handler, Input, Runtime};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_data(&mut self, conn: &mut Conn<'_>, input: &mut Input<'_>) {
//!         let n = input.len();
//!         conn.write(&input.chunk()[..n]);
//!         input.advance(n);
//!     }
//! }
//!
//! let rt = Runtime::builder().cores(1).build()?;
//! let addr = rt.handle().listen("127.0.0.1:0", |_core| Box::new(Echo))?;
//! println!("echo on {addr}");
//! rt.shutdown(std::time::Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Requires Linux 6.1 or newer (multishot receive into provided buffer rings, and
//! `IORING_SETUP_DEFER_TASKRUN`); [`Builder::build`] says what is missing otherwise.
#![deny(missing_docs, missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod addr;
mod conn;
mod core;
mod error;
mod handler;
mod input;
mod runtime;
mod stats;
mod sys;
mod timer;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;
mod token;
mod wake;

pub use crate::addr::{Addr, AddrParseError};
pub use crate::conn::{Conn, ConnId};
pub use crate::core::{current_core, now, Core};
pub use crate::error::BuildError;
pub use crate::handler::{CloseReason, Handler, TlsError};
pub use crate::input::Input;
pub use crate::runtime::{Builder, CoreStopped, Runtime, RuntimeHandle, DEFAULT_WRITE_TIMEOUT};
pub use crate::stats::CloseCounts;
pub use crate::sys::pool::PoolStats;
pub use crate::sys::uring::ring::MIN_KERNEL;
pub use crate::sys::{block_termination_signals, open_fds, wait_for_termination, BackendKind};
pub use crate::timer::TimerId;
