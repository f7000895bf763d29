//! What both ends of an HTTP/2 connection do alike, without I/O: read and check the
//! connection's control frames (SETTINGS, PING, WINDOW_UPDATE), and gather a header block
//! from HEADERS and its CONTINUATIONs, each failure a [`ConnError`] (GOAWAY with its code).

use std::borrow::Cow;

use bytes::BytesMut;

use super::frame::{self as h2f, code, flag, kind, setting, FrameHeader};

/// A connection error: GOAWAY with this code, then close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnError {
    /// The HTTP/2 error code.
    pub code: u32,
    /// Why, for the GOAWAY's debug data and logs.
    pub why: &'static str,
}

/// A [`ConnError`].
pub fn conn_err(code: u32, why: &'static str) -> ConnError {
    ConnError { code, why }
}

/// What a peer's SETTINGS frame changes, checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub initial_window: Option<u32>,
    /// `SETTINGS_MAX_FRAME_SIZE`.
    pub max_frame: Option<u32>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_streams: Option<u32>,
}

/// Reads a SETTINGS frame, checking it on stream 0 and its values in range (RFC 9113
/// §6.5.2); the last of each value counts. `None` for an ACK.
pub fn read_settings(h: &FrameHeader, payload: &[u8]) -> Result<Option<Settings>, ConnError> {
    if h.stream != 0 {
        return Err(conn_err(code::PROTOCOL_ERROR, "SETTINGS on a stream"));
    }
    if h.has(flag::ACK) {
        return Ok(None);
    }
    let values = h2f::settings(payload)
        .map_err(|_| conn_err(code::FRAME_SIZE_ERROR, "bad SETTINGS length"))?;
    let mut s = Settings::default();
    for (id, v) in values {
        match id {
            setting::INITIAL_WINDOW_SIZE if v > h2f::MAX_WINDOW => {
                return Err(conn_err(code::FLOW_CONTROL_ERROR, "window too large"));
            }
            setting::INITIAL_WINDOW_SIZE => s.initial_window = Some(v),
            setting::MAX_FRAME_SIZE if !(h2f::DEFAULT_MAX_FRAME..=(1 << 24) - 1).contains(&v) => {
                return Err(conn_err(code::PROTOCOL_ERROR, "bad MAX_FRAME_SIZE"));
            }
            setting::MAX_FRAME_SIZE => s.max_frame = Some(v),
            setting::MAX_CONCURRENT_STREAMS => s.max_streams = Some(v),
            _ => {}
        }
    }
    Ok(Some(s))
}

/// Answers a PING (its ACK carries the same 8 bytes); an ACK needs nothing.
pub fn answer_ping(h: &FrameHeader, payload: &[u8], out: &mut BytesMut) -> Result<(), ConnError> {
    let data: [u8; 8] = payload
        .try_into()
        .map_err(|_| conn_err(code::FRAME_SIZE_ERROR, "PING not 8 bytes"))?;
    if !h.has(flag::ACK) {
        h2f::write_ping(out, true, data);
    }
    Ok(())
}

/// Reads a WINDOW_UPDATE's increment; one for the connection (stream 0) is also added to
/// `conn_window`, which must stay within HTTP/2's largest window.
pub fn window_update(
    h: &FrameHeader,
    payload: &[u8],
    conn_window: &mut i64,
) -> Result<i64, ConnError> {
    let inc = i64::from(
        h2f::window_increment(payload)
            .map_err(|_| conn_err(code::FRAME_SIZE_ERROR, "bad WINDOW_UPDATE"))?,
    );
    if h.stream == 0 {
        if inc == 0 {
            return Err(conn_err(code::PROTOCOL_ERROR, "zero window increment"));
        }
        *conn_window += inc;
        if *conn_window > i64::from(h2f::MAX_WINDOW) {
            return Err(conn_err(code::FLOW_CONTROL_ERROR, "window overflow"));
        }
    }
    Ok(inc)
}

/// A header block being gathered from HEADERS and its CONTINUATIONs, bounded.
#[derive(Debug)]
pub struct HeaderBlocks {
    /// The stream, whether its HEADERS ended the stream, and the block so far.
    pending: Option<(u32, bool, Vec<u8>)>,
    max: usize,
}

/// A whole header block: its stream, whether it ends the stream, and the block (borrowed
/// from the frame when one frame carried it all, gathered when CONTINUATIONs did).
pub type HeaderBlock<'a> = (u32, bool, Cow<'a, [u8]>);

impl HeaderBlocks {
    /// Gathers blocks of at most `max` bytes (beyond: ENHANCE_YOUR_CALM).
    pub fn new(max: usize) -> HeaderBlocks {
        HeaderBlocks { pending: None, max }
    }

    /// Checks that frame `h` may come now: while a block is being gathered, only its
    /// CONTINUATION may (RFC 9113 §6.10).
    pub fn check(&self, h: &FrameHeader) -> Result<(), ConnError> {
        match &self.pending {
            Some((stream, _, _)) if h.kind != kind::CONTINUATION || h.stream != *stream => {
                Err(conn_err(code::PROTOCOL_ERROR, "header block interrupted"))
            }
            _ => Ok(()),
        }
    }

    /// A HEADERS frame: its block when whole, `None` while CONTINUATIONs are owed.
    pub fn headers<'a>(
        &mut self,
        h: &FrameHeader,
        payload: &'a [u8],
    ) -> Result<Option<HeaderBlock<'a>>, ConnError> {
        let block = h2f::content(h, payload)
            .map_err(|_| conn_err(code::PROTOCOL_ERROR, "bad HEADERS padding"))?;
        let end_stream = h.has(flag::END_STREAM);
        if h.has(flag::END_HEADERS) {
            return Ok(Some((h.stream, end_stream, Cow::Borrowed(block))));
        }
        if block.len() > self.max {
            return Err(conn_err(code::ENHANCE_YOUR_CALM, "header block too large"));
        }
        self.pending = Some((h.stream, end_stream, block.to_vec()));
        Ok(None)
    }

    /// A CONTINUATION frame: the block when whole, `None` while more are owed.
    pub fn continuation(
        &mut self,
        h: &FrameHeader,
        payload: &[u8],
    ) -> Result<Option<HeaderBlock<'static>>, ConnError> {
        let Some((stream, end_stream, mut block)) = self.pending.take() else {
            return Err(conn_err(
                code::PROTOCOL_ERROR,
                "CONTINUATION without HEADERS",
            ));
        };
        if block.len() + payload.len() > self.max {
            return Err(conn_err(code::ENHANCE_YOUR_CALM, "header block too large"));
        }
        block.extend_from_slice(payload);
        if h.has(flag::END_HEADERS) {
            return Ok(Some((stream, end_stream, Cow::Owned(block))));
        }
        self.pending = Some((stream, end_stream, block));
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, flags: u8, stream: u32, len: u32) -> FrameHeader {
        let mut b = BytesMut::new();
        h2f::write_header(&mut b, len as usize, kind, flags, stream);
        FrameHeader::parse(&b).unwrap()
    }

    #[test]
    fn settings_are_checked() {
        let mut b = BytesMut::new();
        h2f::write_settings(
            &mut b,
            &[
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
                (setting::MAX_CONCURRENT_STREAMS, 7),
            ],
        );
        let h = FrameHeader::parse(&b).unwrap();
        let s = read_settings(&h, &b[h2f::HEADER_LEN..]).unwrap().unwrap();
        assert_eq!(s.initial_window, Some(1 << 20));
        assert_eq!(s.max_streams, Some(7));
        assert_eq!(
            read_settings(&header(kind::SETTINGS, flag::ACK, 0, 0), &[]),
            Ok(None)
        );
        let on_stream = header(kind::SETTINGS, 0, 1, 0);
        assert_eq!(
            read_settings(&on_stream, &[]).unwrap_err().code,
            code::PROTOCOL_ERROR
        );
        let mut b = BytesMut::new();
        h2f::write_settings(&mut b, &[(setting::MAX_FRAME_SIZE, 100)]);
        let h = FrameHeader::parse(&b).unwrap();
        assert_eq!(
            read_settings(&h, &b[h2f::HEADER_LEN..]).unwrap_err().code,
            code::PROTOCOL_ERROR
        );
    }

    #[test]
    fn connection_windows_refuse_zero_and_overflow() {
        let h = header(kind::WINDOW_UPDATE, 0, 0, 4);
        let mut w = i64::from(h2f::MAX_WINDOW) - 10;
        assert_eq!(window_update(&h, &10u32.to_be_bytes(), &mut w), Ok(10));
        assert!(window_update(&h, &1u32.to_be_bytes(), &mut w).is_err());
        assert!(window_update(&h, &0u32.to_be_bytes(), &mut 0).is_err());
        let on_stream = header(kind::WINDOW_UPDATE, 0, 3, 4);
        let mut untouched = 5;
        assert_eq!(
            window_update(&on_stream, &0u32.to_be_bytes(), &mut untouched),
            Ok(0)
        );
        assert_eq!(untouched, 5);
    }

    #[test]
    fn header_blocks_gather_and_are_bounded() {
        let mut hb = HeaderBlocks::new(8);
        let h = header(kind::HEADERS, flag::END_STREAM, 1, 3);
        assert_eq!(hb.headers(&h, b"abc").unwrap(), None);
        assert!(hb.check(&header(kind::DATA, 0, 1, 0)).is_err());
        let c = header(kind::CONTINUATION, flag::END_HEADERS, 1, 3);
        hb.check(&c).unwrap();
        let (stream, end, block) = hb.continuation(&c, b"def").unwrap().unwrap();
        assert_eq!((stream, end, &block[..]), (1, true, &b"abcdef"[..]));
        assert!(hb.continuation(&c, b"x").is_err(), "no HEADERS before it");
        let h = header(kind::HEADERS, 0, 3, 6);
        hb.headers(&h, b"123456").unwrap();
        let c = header(kind::CONTINUATION, 0, 3, 0);
        hb.continuation(&c, b"").unwrap();
        let c = header(kind::CONTINUATION, 0, 3, 3);
        assert_eq!(
            hb.continuation(&c, b"789").unwrap_err().code,
            code::ENHANCE_YOUR_CALM
        );
    }
}
