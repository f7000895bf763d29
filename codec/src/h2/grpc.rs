//! gRPC's message framing inside a stream's DATA (the gRPC over HTTP/2 protocol):
//! a compressed flag, a 4-byte big-endian length, then the message. Also the
//! `grpc-timeout` header's form.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

/// The size of a message's prefix.
pub const PREFIX_LEN: usize = 5;

/// What the start of a stream's data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A whole message: whether it is compressed, and its length (prefix excluded).
    Whole {
        /// The compressed flag.
        compressed: bool,
        /// The message's length.
        len: usize,
    },
    /// Not yet whole: at least this many bytes (prefix included) are needed.
    NeedMore(usize),
}

/// A message longer than the limit, or a prefix that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Longer than the maximum message size: its declared length.
    TooLarge(usize),
    /// The compressed flag is neither 0 nor 1.
    BadFlag(u8),
}

/// Reads the prefix at the start of `buf`.
pub fn message(buf: &[u8], max: usize) -> Result<Message, MessageError> {
    let Some(p) = buf.get(..PREFIX_LEN) else {
        return Ok(Message::NeedMore(PREFIX_LEN));
    };
    let compressed = match p[0] {
        0 => false,
        1 => true,
        f => return Err(MessageError::BadFlag(f)),
    };
    let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
    if len > max {
        return Err(MessageError::TooLarge(len));
    }
    Ok(if buf.len() >= PREFIX_LEN + len {
        Message::Whole { compressed, len }
    } else {
        Message::NeedMore(PREFIX_LEN + len)
    })
}

/// Appends a message's prefix for a message of `len` bytes.
pub fn write_prefix(out: &mut BytesMut, compressed: bool, len: usize) {
    out.put_u8(u8::from(compressed));
    out.put_u32(len as u32);
}

/// Why a compressed message could not be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzipError {
    /// It decompresses to more than the limit.
    TooLarge,
    /// It is not gzip.
    Corrupt,
}

/// Appends `msg` compressed with gzip (`grpc-encoding: gzip`), at a fast level.
pub fn gzip(msg: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(msg);
    let _ = enc.finish();
}

/// Decompresses a gzip message, refusing one that grows beyond `max` bytes before
/// decompressing more of it (a decompression bomb costs at most `max` bytes).
pub fn gunzip(msg: &[u8], max: usize) -> Result<Vec<u8>, GzipError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(msg.len().saturating_mul(4).min(max).min(1 << 20));
    let mut dec = flate2::read::GzDecoder::new(msg).take(max as u64 + 1);
    dec.read_to_end(&mut out).map_err(|_| GzipError::Corrupt)?;
    if out.len() > max {
        return Err(GzipError::TooLarge);
    }
    Ok(out)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes a `-bin` metadata value: base64 without padding, as gRPC implementations
/// should send it.
pub fn base64_encode(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len().div_ceil(3) * 4);
    for c in v.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes a `-bin` metadata value, padded or not (as gRPC implementations must accept
/// both); `None` when it is not base64.
pub fn base64_decode(v: &[u8]) -> Option<Vec<u8>> {
    let v = v
        .strip_suffix(b"==")
        .or_else(|| v.strip_suffix(b"="))
        .unwrap_or(v);
    if v.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    for c in v.chunks(4) {
        let mut n = 0u32;
        for (i, &b) in c.iter().enumerate() {
            let d = B64.iter().position(|&x| x == b)? as u32;
            n |= d << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if c.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if c.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Parses `grpc-timeout` (`1*8DIGIT` then a unit: H, M, S, m, u, n).
pub fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes `d` as a `grpc-timeout` value (at most 8 digits, rounding up).
pub fn format_timeout(d: Duration, out: &mut Vec<u8>) {
    let ns = d.as_nanos();
    for (unit, per) in [
        (b'n', 1u128),
        (b'u', 1_000),
        (b'm', 1_000_000),
        (b'S', 1_000_000_000),
    ] {
        let n = ns.div_ceil(per);
        if n < 100_000_000 {
            out.extend_from_slice(n.to_string().as_bytes());
            out.push(unit);
            return;
        }
    }
    let h = ns.div_ceil(3_600_000_000_000).min(99_999_999);
    out.extend_from_slice(h.to_string().as_bytes());
    out.push(b'H');
}

/// Percent-encodes a `grpc-message` value (RFC 3986 unreserved-ish: what the gRPC spec
/// leaves as is, printable ASCII except `%`).
pub fn encode_message(msg: &str, out: &mut Vec<u8>) {
    for &b in msg.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

/// Decodes a percent-encoded `grpc-message` (malformed escapes are kept as they are).
pub fn decode_message(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            let hex = std::str::from_utf8(&v[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_padded_or_not() {
        for v in [&b""[..], b"a", b"ab", b"abc", b"abcd", &[0, 255, 7, 128, 1]] {
            let e = base64_encode(v);
            assert!(!e.ends_with('='));
            assert_eq!(base64_decode(e.as_bytes()).as_deref(), Some(v), "{e}");
        }
        assert_eq!(base64_decode(b"AP8=").as_deref(), Some(&[0, 255][..]));
        assert_eq!(base64_decode(b"YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode(b"a!"), None);
        assert_eq!(base64_decode(b"abcde"), None);
    }

    #[test]
    fn gzip_round_trips_and_bounds_what_it_inflates() {
        let msg = vec![b'a'; 100_000];
        let mut z = Vec::new();
        gzip(&msg, &mut z);
        assert!(z.len() < 1_000, "{} bytes", z.len());
        assert_eq!(gunzip(&z, 100_000).unwrap(), msg);
        assert_eq!(gunzip(&z, 99_999), Err(GzipError::TooLarge));
        assert_eq!(gunzip(b"not gzip", 100), Err(GzipError::Corrupt));
        assert_eq!(gunzip(&z[..z.len() / 2], 1 << 20), Err(GzipError::Corrupt));
    }

    #[test]
    fn messages_split_and_refuse() {
        let mut b = BytesMut::new();
        write_prefix(&mut b, false, 3);
        b.extend_from_slice(b"abc");
        assert_eq!(
            message(&b, 10),
            Ok(Message::Whole {
                compressed: false,
                len: 3
            })
        );
        assert_eq!(message(&b[..6], 10), Ok(Message::NeedMore(8)));
        assert_eq!(message(&b[..2], 10), Ok(Message::NeedMore(5)));
        assert_eq!(message(&b, 2), Err(MessageError::TooLarge(3)));
        assert_eq!(message(&[7, 0, 0, 0, 0], 2), Err(MessageError::BadFlag(7)));
    }

    #[test]
    fn timeouts_round_trip() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"123456789S"), None);
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        for d in [
            Duration::from_millis(1500),
            Duration::from_nanos(7),
            Duration::from_secs(86_400 * 400),
        ] {
            let mut v = Vec::new();
            format_timeout(d, &mut v);
            assert!(
                parse_timeout(&v).unwrap() >= d,
                "{}",
                String::from_utf8_lossy(&v)
            );
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        let mut v = Vec::new();
        encode_message("100% sure\né", &mut v);
        assert_eq!(v, b"100%25 sure%0A%C3%A9");
        assert_eq!(decode_message(&v), "100% sure\né");
        assert_eq!(decode_message(b"50%"), "50%");
        assert_eq!(decode_message(b"%zz"), "%zz");
    }
}
