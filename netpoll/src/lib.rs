//! Thread-per-core io_uring event loop (under construction).
#![deny(missing_docs, missing_debug_implementations)]
