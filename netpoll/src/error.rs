//! Errors from setting up the runtime.

use std::fmt;
use std::io;

/// Why a [`Runtime`](crate::Runtime) could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The kernel refused or lacks io_uring. `hint` says what to do.
    IoUringUnavailable {
        /// The error `io_uring_setup` returned.
        source: io::Error,
        /// What most likely refused it and how to fix that.
        hint: &'static str,
    },
    /// io_uring works but lacks an operation or feature netpoll needs.
    Unsupported {
        /// The missing operation or feature.
        what: &'static str,
        /// The kernel version that provides it.
        needs: &'static str,
    },
    /// A configuration value is out of range.
    InvalidConfig(&'static str),
    /// Another setup step failed (eventfd, mmap, spawning a thread, pinning).
    Io(io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::IoUringUnavailable { source, hint } => {
                write!(f, "io_uring is unavailable ({source}): {hint}")
            }
            BuildError::Unsupported { what, needs } => {
                write!(f, "the kernel's io_uring lacks {what} (needs {needs})")
            }
            BuildError::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            BuildError::Io(e) => write!(f, "runtime setup failed: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::IoUringUnavailable { source, .. } => Some(source),
            BuildError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for BuildError {
    fn from(e: io::Error) -> Self {
        BuildError::Io(e)
    }
}
