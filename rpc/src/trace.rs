//! W3C trace context (<https://www.w3.org/TR/trace-context/>) carried in TTHeader string
//! headers `traceparent` and `tracestate`: read from a call being served
//! ([`CallContext::trace`](crate::server::CallContext::trace)), and passed on by calls
//! made while serving it (`Client::within`): as the parent of the span a tracing
//! middleware opens for each (`otel`), or passed on unchanged without one.

use std::fmt::Write as _;

use netpoll_codec::frame::TTHeader;

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";
/// `traceparent` as Kitex's OpenTelemetry middleware sends it over TTHeader (transient
/// metainfo); a client sends it this way too, for Kitex servers to join its traces.
pub const KITEX_TRACEPARENT: &str = "RPC_TRANSIT_traceparent";
/// `tracestate` as Kitex's OpenTelemetry middleware sends it.
pub const KITEX_TRACESTATE: &str = "RPC_TRANSIT_tracestate";

/// A span's place in a trace: its trace id, its own id, whether it is sampled, and the
/// vendors' state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace's id (never all zeros).
    pub trace_id: [u8; 16],
    /// The span's id (never all zeros).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0: sampled.
    pub flags: u8,
    /// The `tracestate` header, passed on unchanged.
    pub state: Option<String>,
}

/// A span's ids and flags without its `tracestate`: small and `Copy`, for what every call
/// carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanIds {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl SpanIds {
    /// The whole context, with `state`.
    pub(crate) fn with_state(self, state: Option<String>) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            flags: self.flags,
            state,
        }
    }
}

fn hex_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = d(pair[0])? << 4 | d(pair[1])?;
    }
    Some(out)
}

impl TraceContext {
    /// Parses a `traceparent` value (version 00, or a later version's first four fields).
    /// Invalid values (wrong lengths, upper-case hex, all-zero ids, version ff) give `None`.
    pub fn parse(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<TraceContext> {
        let mut parts = traceparent.split(|&b| b == b'-');
        let version = unhex::<1>(parts.next()?)?[0];
        let trace_id = unhex::<16>(parts.next()?)?;
        let span_id = unhex::<8>(parts.next()?)?;
        let flags = unhex::<1>(parts.next()?)?[0];
        if version == 0xff
            || (version == 0 && parts.next().is_some())
            || trace_id == [0; 16]
            || span_id == [0; 8]
        {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            state: tracestate.and_then(parse_state),
        })
    }

    /// The trace context in a TTHeader: string headers `traceparent` and `tracestate`, or
    /// else Kitex's form of them (obs-opentelemetry sends them as transient metainfo:
    /// `RPC_TRANSIT_traceparent`, or upper-case after a hop through HTTP headers).
    pub fn from_ttheader(tt: &TTHeader) -> Option<TraceContext> {
        let (mut t, state) = Self::from_ttheader_lazy(tt)?;
        t.state = state.and_then(parse_state);
        Some(t)
    }

    /// [`from_ttheader`](Self::from_ttheader) without copying `tracestate` out yet (an
    /// unsampled call need not): the context without it, and the header's bytes.
    pub(crate) fn from_ttheader_lazy(tt: &TTHeader) -> Option<(TraceContext, Option<&[u8]>)> {
        // Most calls carry none: the key lengths the frame holds say so without a walk
        // (the upper-case forms are as long as Kitex's).
        if !tt.may_have_str_header(TRACEPARENT) && !tt.may_have_str_header(KITEX_TRACEPARENT) {
            return None;
        }
        // One pass over the headers (this runs on every call a tracing server serves):
        // the first valid form wins, in the order of `FORMS`; of repeated keys, the first.
        const FORMS: [(&str, &str); 3] = [
            (TRACEPARENT, TRACESTATE),
            (KITEX_TRACEPARENT, KITEX_TRACESTATE),
            ("RPC_TRANSIT_TRACEPARENT", "RPC_TRANSIT_TRACESTATE"),
        ];
        let mut parents: [Option<&[u8]>; 3] = [None; 3];
        let mut states: [Option<&[u8]>; 3] = [None; 3];
        for (k, v) in tt.str_headers() {
            for (i, (parent, state)) in FORMS.iter().enumerate() {
                if k == parent.as_bytes() {
                    parents[i].get_or_insert(v);
                } else if k == state.as_bytes() {
                    states[i].get_or_insert(v);
                }
            }
        }
        (0..FORMS.len()).find_map(|i| {
            let t = TraceContext::parse(parents[i]?, None)?;
            Some((t, states[i]))
        })
    }

    /// A new trace's root span, sampled or not.
    pub fn new_root(sampled: bool) -> TraceContext {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&nonzero().to_be_bytes());
        trace_id[8..].copy_from_slice(&nonzero().to_be_bytes());
        TraceContext {
            trace_id,
            span_id: nonzero().to_be_bytes(),
            flags: sampled as u8,
            state: None,
        }
    }

    /// The ids and flags, without the state.
    pub(crate) fn ids(&self) -> SpanIds {
        SpanIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
            flags: self.flags,
        }
    }

    /// A child span in the same trace (the same trace id, flags and state; a new id).
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero().to_be_bytes(),
            ..self.clone()
        }
    }

    /// Whether the span is sampled.
    pub fn sampled(&self) -> bool {
        self.flags & 1 != 0
    }

    /// The `traceparent` value (version 00).
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        hex_into(&mut s, &self.trace_id);
        s.push('-');
        hex_into(&mut s, &self.span_id);
        let _ = write!(s, "-{:02x}", self.flags);
        s
    }

    /// The trace id in hex (for logs).
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        hex_into(&mut s, &self.trace_id);
        s
    }
}

/// A `tracestate` value worth passing on (UTF-8, not empty, at most 512 bytes).
pub(crate) fn parse_state(s: &[u8]) -> Option<String> {
    std::str::from_utf8(s)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .map(str::to_owned)
}

/// A random non-zero 64-bit value.
fn nonzero() -> u64 {
    loop {
        let r = crate::balance::random();
        if r != 0 {
            return r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let tp = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let t = TraceContext::parse(tp, Some(b"congo=t61rcWkgMzE")).unwrap();
        assert_eq!(t.traceparent().as_bytes(), tp);
        assert!(t.sampled());
        assert_eq!(t.state.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(t.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert_eq!(c.flags, t.flags);
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            &b"00-00000000000000000000000000000000-b7ad6b7169203331-01"[..],
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            b"00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            b"garbage",
        ] {
            assert!(
                TraceContext::parse(bad, None).is_none(),
                "{:?}",
                std::str::from_utf8(bad)
            );
        }
        // A later version may carry more fields.
        assert!(TraceContext::parse(
            b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-ever",
            None
        )
        .is_some());
        let root = TraceContext::new_root(false);
        assert!(!root.sampled());
        assert!(TraceContext::parse(root.traceparent().as_bytes(), None).is_some());
    }
}
