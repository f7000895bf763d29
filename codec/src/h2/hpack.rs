//! HPACK (RFC 7541): header block decoding with bounded memory and work, and a stateless
//! encoder.
//!
//! The decoder hands each header to a callback as byte slices (of the block, the static
//! or dynamic table, or its own scratch buffers for Huffman-coded strings), so decoding a
//! block allocates nothing except for entries added to the dynamic table. Its table never
//! grows past the size we advertised (`SETTINGS_HEADER_TABLE_SIZE`), and a block whose
//! headers add up to more than the list limit is refused once it has been read through
//! (so the table stays in step with the peer's encoder) without handing those headers on.
//!
//! The encoder never indexes: every header is a static-table index, or a literal "without
//! indexing" (with a static name index where there is one), so it keeps no state and the
//! peer's table is never touched.

use std::collections::VecDeque;

use super::huffman;

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// What an entry costs in a table: its octets plus 32 (RFC 7541 §4.1). The same measure
/// bounds a header list (RFC 9113 `SETTINGS_MAX_HEADER_LIST_SIZE`).
pub fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// Why a header block was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// The block ended inside a representation.
    Truncated,
    /// An integer did not fit.
    IntegerOverflow,
    /// Index 0, or past the end of the tables.
    BadIndex,
    /// A Huffman-coded string did not decode.
    Huffman(huffman::HuffmanError),
    /// A dynamic table size update above the size we allow, or after a header.
    BadTableSizeUpdate,
    /// The headers add up to more than the list limit (the block was still read through,
    /// so the table stays usable; the headers were not handed on past the limit).
    ListTooLarge,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HpackError::Truncated => f.write_str("header block truncated"),
            HpackError::IntegerOverflow => f.write_str("integer overflow in header block"),
            HpackError::BadIndex => f.write_str("header table index out of range"),
            HpackError::Huffman(e) => write!(f, "bad Huffman string: {e:?}"),
            HpackError::BadTableSizeUpdate => f.write_str("dynamic table size update refused"),
            HpackError::ListTooLarge => f.write_str("header list over the size limit"),
        }
    }
}

impl std::error::Error for HpackError {}

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1) at `*pos`.
fn read_int(block: &[u8], pos: &mut usize, n: u8) -> Result<usize, HpackError> {
    let first = *block.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let max = (1usize << n) - 1;
    let mut v = usize::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let b = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        if shift > 21 {
            return Err(HpackError::IntegerOverflow); // nothing here needs more than 2^28
        }
        v += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// Appends an integer with an `n`-bit prefix, the prefix's other bits set from `flags`.
pub fn write_int(out: &mut Vec<u8>, flags: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Where a decoded string lives.
#[derive(Clone, Copy)]
enum Str {
    /// In the block, at this range.
    Block(usize, usize),
    /// In scratch buffer 0 (names) or 1 (values).
    Scratch(usize),
}

/// A header name: a table index or a string.
#[derive(Clone, Copy)]
enum Name {
    Index(usize),
    Str(Str),
}

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// Decodes header blocks of one direction of a connection.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: dynamic index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    /// The size the peer's encoder may use now (its last size update).
    max_size: usize,
    /// The most it may choose: what we advertised.
    allowed: usize,
    max_list: usize,
    scratch: [Vec<u8>; 2],
    /// Short Huffman strings decoded lately, as (encoded, decoded): clients send some
    /// literals again on every request (nghttp2 never indexes `:path`), and comparing
    /// a few bytes costs less than decoding them.
    recent: [(Vec<u8>, Vec<u8>); RECENT],
    /// Which of `recent` the next new string replaces.
    next_recent: usize,
}

/// How many decoded Huffman strings a decoder remembers.
const RECENT: usize = 4;
/// The longest encoded string it remembers (longer ones are decoded each time).
const RECENT_MAX: usize = 64;

impl Decoder {
    /// A decoder whose table may hold `max_table` bytes (our
    /// `SETTINGS_HEADER_TABLE_SIZE`; 4096 is the protocol default) and which refuses
    /// header lists over `max_list` bytes (our `SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub fn new(max_table: usize, max_list: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: max_table,
            allowed: max_table,
            max_list,
            scratch: [Vec::new(), Vec::new()],
            recent: Default::default(),
            next_recent: 0,
        }
    }

    /// The dynamic table's current size, in the RFC's measure.
    pub fn table_size(&self) -> usize {
        self.size
    }

    fn evict_to(&mut self, max: usize) {
        while self.size > max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => break,
            }
        }
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = entry_size(name, value);
        if size > self.max_size {
            // An entry larger than the table empties it and is not added (§4.4).
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.table.push_front((name.into(), value.into()));
        self.size += size;
    }

    /// The entry at table index `i` (1-based: static, then dynamic).
    fn entry(&self, i: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match i {
            0 => Err(HpackError::BadIndex),
            1..=61 => {
                let (n, v) = STATIC_TABLE[i - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => self
                .table
                .get(i - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(HpackError::BadIndex),
        }
    }

    /// Reads a string literal at `*pos`: where its octets are (Huffman-coded ones are
    /// decoded into scratch buffer `which`).
    fn read_str(&mut self, block: &[u8], pos: &mut usize, which: usize) -> Result<Str, HpackError> {
        let huffman = *block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = read_int(block, pos, 7)?;
        let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
        if end > block.len() {
            return Err(HpackError::Truncated);
        }
        let start = *pos;
        *pos = end;
        if !huffman {
            return Ok(Str::Block(start, end));
        }
        let encoded = &block[start..end];
        let buf = &mut self.scratch[which];
        buf.clear();
        if encoded.len() > RECENT_MAX {
            huffman::decode(encoded, buf).map_err(HpackError::Huffman)?;
            return Ok(Str::Scratch(which));
        }
        if let Some((_, decoded)) = self.recent.iter().find(|(e, _)| e[..] == *encoded) {
            buf.extend_from_slice(decoded);
            return Ok(Str::Scratch(which));
        }
        huffman::decode(encoded, buf).map_err(HpackError::Huffman)?;
        // Only strings that decoded are remembered.
        let (e, d) = &mut self.recent[self.next_recent];
        self.next_recent = (self.next_recent + 1) % RECENT;
        e.clear();
        e.extend_from_slice(encoded);
        d.clear();
        d.extend_from_slice(buf);
        Ok(Str::Scratch(which))
    }

    fn bytes<'a>(&'a self, block: &'a [u8], s: Str) -> &'a [u8] {
        match s {
            Str::Block(a, b) => &block[a..b],
            Str::Scratch(i) => &self.scratch[i],
        }
    }

    /// Decodes one whole header block (HEADERS and its CONTINUATIONs joined), calling
    /// `header(name, value)` for each header in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut header: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut pos = 0;
        let mut list = 0usize;
        let mut over = false;
        let mut seen_header = false;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed header field.
                let i = read_int(block, &mut pos, 7)?;
                let (n, v) = self.entry(i)?;
                list += entry_size(n, v);
                over |= list > self.max_list;
                if !over {
                    header(n, v);
                }
                seen_header = true;
                continue;
            }
            if b & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first header.
                let size = read_int(block, &mut pos, 5)?;
                if seen_header || size > self.allowed {
                    return Err(HpackError::BadTableSizeUpdate);
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            }
            // A literal: with incremental indexing (01), or without / never indexed (0000,
            // 0001).
            let (indexing, prefix) = if b & 0xc0 == 0x40 {
                (true, 6)
            } else {
                (false, 4)
            };
            let ni = read_int(block, &mut pos, prefix)?;
            let name = if ni == 0 {
                Name::Str(self.read_str(block, &mut pos, 0)?)
            } else {
                self.entry(ni)?; // checked now, read below
                Name::Index(ni)
            };
            let value = self.read_str(block, &mut pos, 1)?;
            let v = self.bytes(block, value);
            let n = match name {
                Name::Index(i) => self.entry(i)?.0,
                Name::Str(s) => self.bytes(block, s),
            };
            list += entry_size(n, v);
            over |= list > self.max_list;
            if !over {
                header(n, v);
            }
            seen_header = true;
            if indexing {
                let (n, v) = (n.to_vec(), v.to_vec());
                self.insert(&n, &v);
            }
        }
        if over {
            return Err(HpackError::ListTooLarge);
        }
        Ok(())
    }
}

/// Appends `name: value` to a header block, never indexed in the peer's table: a static
/// index when the whole header is in the static table, else a literal (with the static
/// name's index when there is one). Values of `huffman` headers are Huffman-coded when
/// that is shorter.
pub fn encode(out: &mut Vec<u8>, name: &[u8], value: &[u8], huffman: bool) {
    let mut name_index = 0;
    for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
        if n.as_bytes() == name {
            if v.as_bytes() == value {
                write_int(out, 0x80, 7, i + 1);
                return;
            }
            if name_index == 0 {
                name_index = i + 1;
            }
        }
    }
    // Literal without indexing (0000).
    write_int(out, 0x00, 4, name_index);
    if name_index == 0 {
        write_str(out, name, false);
    }
    write_str(out, value, huffman);
}

/// Appends `name: value` as a literal with incremental indexing (the peer's decoder adds
/// it to its table, as index 62, moving older entries up): what a client does with the
/// headers it sends on every request, so that later requests name them by index.
pub fn encode_with_indexing(out: &mut Vec<u8>, name: &[u8], value: &[u8], huffman: bool) {
    let index = STATIC_TABLE
        .iter()
        .position(|(n, _)| n.as_bytes() == name)
        .map_or(0, |i| i + 1);
    write_int(out, 0x40, 6, index);
    if index == 0 {
        write_str(out, name, false);
    }
    write_str(out, value, huffman);
}

fn write_str(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let n = huffman::encoded_len(s);
        if n < s.len() {
            write_int(out, 0x80, 7, n);
            huffman::encode(s, out);
            return;
        }
    }
    write_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            out.push((
                String::from_utf8(n.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ))
        })?;
        Ok(out)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// RFC 7541 C.3 (requests without Huffman coding) and C.4 (the same with it): three
    /// requests on one connection, sharing the dynamic table.
    #[test]
    fn decodes_the_rfc_request_examples() {
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::new(4096, 1 << 20);
            let first = decode(&mut d, &hex(blocks[0])).unwrap();
            assert_eq!(
                first,
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "www.example.com")
                ])
            );
            assert_eq!(d.table_size(), 57);
            let second = decode(&mut d, &hex(blocks[1])).unwrap();
            assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
            assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
            assert_eq!(d.table_size(), 110);
            let third = decode(&mut d, &hex(blocks[2])).unwrap();
            assert_eq!(
                third,
                pairs(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/index.html"),
                    (":authority", "www.example.com"),
                    ("custom-key", "custom-value")
                ])
            );
            assert_eq!(d.table_size(), 164);
        }
    }

    #[test]
    fn the_table_evicts_and_size_updates_are_bounded() {
        let mut d = Decoder::new(100, 1 << 20);
        // Two literals with indexing of 32+10 bytes each fit; a third evicts the first.
        let mut block = Vec::new();
        for v in ["aaaaa", "bbbbb", "ccccc"] {
            write_int(&mut block, 0x40, 6, 0);
            write_str(&mut block, b"kkkkk", false);
            write_str(&mut block, v.as_bytes(), false);
        }
        decode(&mut d, &block).unwrap();
        assert_eq!(d.table_size(), 84);
        // Index 62 is the newest ("ccccc"); 64 is gone.
        assert_eq!(decode(&mut d, &[0x80 | 62]).unwrap()[0].1, "ccccc");
        assert_eq!(decode(&mut d, &[0x80 | 63]).unwrap()[0].1, "bbbbb");
        assert_eq!(decode(&mut d, &[0x80 | 64]), Err(HpackError::BadIndex));
        // A size update over what we allow, or after a header, is refused.
        let mut up = Vec::new();
        write_int(&mut up, 0x20, 5, 101);
        assert_eq!(decode(&mut d, &up), Err(HpackError::BadTableSizeUpdate));
        assert_eq!(
            decode(&mut d, &[0x82, 0x20]),
            Err(HpackError::BadTableSizeUpdate)
        );
        // Shrinking to zero empties the table.
        decode(&mut d, &[0x20]).unwrap();
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn a_header_list_bomb_is_refused_after_the_limit() {
        // One 4000-byte entry in the table, then a block that names it 1000 times: 4 MB of
        // headers from 1 KB of block.
        let mut d = Decoder::new(4096, 16 << 10);
        let mut block = Vec::new();
        write_int(&mut block, 0x40, 6, 0);
        write_str(&mut block, b"x", false);
        write_str(&mut block, &[b'v'; 4000], false);
        decode(&mut d, &block).unwrap();
        let bomb = vec![0x80 | 62; 1000];
        let mut handed = 0usize;
        let r = d.decode(&bomb, |n, v| handed += n.len() + v.len());
        assert_eq!(r, Err(HpackError::ListTooLarge));
        assert!(handed <= 16 << 10, "{handed} bytes handed on");
        // The table is still usable.
        assert_eq!(decode(&mut d, &[0x82]).unwrap()[0].1, "GET");
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut d = Decoder::new(4096, 1 << 20);
        for bad in [
            &[0x80][..],                                 // index 0
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // overflowing integer
            &[0x40, 0x85, 0x01],                         // string longer than the block
            &[0x00, 0x81, 0x00, 0x00],                   // Huffman string with bad padding
            &[0xbf], // index 62 of an empty table... truncated int
            &[0x0f], // truncated name index
        ] {
            assert!(decode(&mut d, bad).is_err(), "{bad:x?}");
        }
    }

    #[test]
    fn repeated_huffman_literals_decode_the_same_from_memory() {
        // Literals without indexing, Huffman-coded, as nghttp2 sends `:path` each time:
        // more distinct strings than the decoder remembers, in turn, twice over.
        let values: Vec<String> = (0..RECENT + 2).map(|i| format!("/pkg.Svc/M{i}")).collect();
        let mut d = Decoder::new(4096, 1 << 20);
        for _ in 0..2 {
            for v in values.iter().chain(values.iter().rev()) {
                let mut block = Vec::new();
                encode(&mut block, b":path", v.as_bytes(), true);
                encode(&mut block, b"x-long", "v".repeat(200).as_bytes(), true);
                let got = decode(&mut d, &block).unwrap();
                assert_eq!(got[0], (":path".into(), v.clone()));
                assert_eq!(got[1].1, "v".repeat(200));
            }
        }
        // A string that does not decode is not remembered: it fails every time.
        for _ in 0..2 {
            assert!(decode(&mut d, &[0x00, 0x81, 0x00, 0x00]).is_err());
        }
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn the_encoder_round_trips_through_the_decoder() {
        let headers: &[(&[u8], &[u8])] = &[
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", b"0"),
            (b"grpc-message", b"a message with spaces and \xc3\xa9"),
            (b"x-bin", &[0, 1, 2, 255]),
            (b":status", b"418"),
        ];
        let mut block = Vec::new();
        for (n, v) in headers {
            encode(&mut block, n, v, true);
        }
        assert_eq!(block[0], 0x88, ":status 200 is static index 8");
        let mut d = Decoder::new(4096, 1 << 20);
        let mut got = Vec::new();
        d.decode(&block, |n, v| got.push((n.to_vec(), v.to_vec())))
            .unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(d.table_size(), 0, "the encoder never indexes");
    }
}
