//! HPACK's static Huffman code (RFC 7541 Appendix B): decoding into a caller's buffer and
//! encoding.
//!
//! Decoding reads four bits at a time through a table built once from the code's tree
//! (as HPACK decoders commonly do): two lookups per input byte.

/// `(bit length, code)` for each octet value, then the end-of-string symbol (256). Codes
/// are right-aligned. RFC 7541 Appendix B.
#[rustfmt::skip]
const CODES: [(u8, u32); 257] = [
    (13, 0x1ff8), (23, 0x7fffd8), (28, 0xfffffe2), (28, 0xfffffe3), (28, 0xfffffe4), (28, 0xfffffe5),
    (28, 0xfffffe6), (28, 0xfffffe7), (28, 0xfffffe8), (24, 0xffffea), (30, 0x3ffffffc), (28, 0xfffffe9),
    (28, 0xfffffea), (30, 0x3ffffffd), (28, 0xfffffeb), (28, 0xfffffec), (28, 0xfffffed), (28, 0xfffffee),
    (28, 0xfffffef), (28, 0xffffff0), (28, 0xffffff1), (28, 0xffffff2), (30, 0x3ffffffe), (28, 0xffffff3),
    (28, 0xffffff4), (28, 0xffffff5), (28, 0xffffff6), (28, 0xffffff7), (28, 0xffffff8), (28, 0xffffff9),
    (28, 0xffffffa), (28, 0xffffffb), (6, 0x14), (10, 0x3f8), (10, 0x3f9), (12, 0xffa),
    (13, 0x1ff9), (6, 0x15), (8, 0xf8), (11, 0x7fa), (10, 0x3fa), (10, 0x3fb),
    (8, 0xf9), (11, 0x7fb), (8, 0xfa), (6, 0x16), (6, 0x17), (6, 0x18),
    (5, 0x0), (5, 0x1), (5, 0x2), (6, 0x19), (6, 0x1a), (6, 0x1b),
    (6, 0x1c), (6, 0x1d), (6, 0x1e), (6, 0x1f), (7, 0x5c), (8, 0xfb),
    (15, 0x7ffc), (6, 0x20), (12, 0xffb), (10, 0x3fc), (13, 0x1ffa), (6, 0x21),
    (7, 0x5d), (7, 0x5e), (7, 0x5f), (7, 0x60), (7, 0x61), (7, 0x62),
    (7, 0x63), (7, 0x64), (7, 0x65), (7, 0x66), (7, 0x67), (7, 0x68),
    (7, 0x69), (7, 0x6a), (7, 0x6b), (7, 0x6c), (7, 0x6d), (7, 0x6e),
    (7, 0x6f), (7, 0x70), (7, 0x71), (7, 0x72), (8, 0xfc), (7, 0x73),
    (8, 0xfd), (13, 0x1ffb), (19, 0x7fff0), (13, 0x1ffc), (14, 0x3ffc), (6, 0x22),
    (15, 0x7ffd), (5, 0x3), (6, 0x23), (5, 0x4), (6, 0x24), (5, 0x5),
    (6, 0x25), (6, 0x26), (6, 0x27), (5, 0x6), (7, 0x74), (7, 0x75),
    (6, 0x28), (6, 0x29), (6, 0x2a), (5, 0x7), (6, 0x2b), (7, 0x76),
    (6, 0x2c), (5, 0x8), (5, 0x9), (6, 0x2d), (7, 0x77), (7, 0x78),
    (7, 0x79), (7, 0x7a), (7, 0x7b), (15, 0x7ffe), (11, 0x7fc), (14, 0x3ffd),
    (13, 0x1ffd), (28, 0xffffffc), (20, 0xfffe6), (22, 0x3fffd2), (20, 0xfffe7), (20, 0xfffe8),
    (22, 0x3fffd3), (22, 0x3fffd4), (22, 0x3fffd5), (23, 0x7fffd9), (22, 0x3fffd6), (23, 0x7fffda),
    (23, 0x7fffdb), (23, 0x7fffdc), (23, 0x7fffdd), (23, 0x7fffde), (24, 0xffffeb), (23, 0x7fffdf),
    (24, 0xffffec), (24, 0xffffed), (22, 0x3fffd7), (23, 0x7fffe0), (24, 0xffffee), (23, 0x7fffe1),
    (23, 0x7fffe2), (23, 0x7fffe3), (23, 0x7fffe4), (21, 0x1fffdc), (22, 0x3fffd8), (23, 0x7fffe5),
    (22, 0x3fffd9), (23, 0x7fffe6), (23, 0x7fffe7), (24, 0xffffef), (22, 0x3fffda), (21, 0x1fffdd),
    (20, 0xfffe9), (22, 0x3fffdb), (22, 0x3fffdc), (23, 0x7fffe8), (23, 0x7fffe9), (21, 0x1fffde),
    (23, 0x7fffea), (22, 0x3fffdd), (22, 0x3fffde), (24, 0xfffff0), (21, 0x1fffdf), (22, 0x3fffdf),
    (23, 0x7fffeb), (23, 0x7fffec), (21, 0x1fffe0), (21, 0x1fffe1), (22, 0x3fffe0), (21, 0x1fffe2),
    (23, 0x7fffed), (22, 0x3fffe1), (23, 0x7fffee), (23, 0x7fffef), (20, 0xfffea), (22, 0x3fffe2),
    (22, 0x3fffe3), (22, 0x3fffe4), (23, 0x7ffff0), (22, 0x3fffe5), (22, 0x3fffe6), (23, 0x7ffff1),
    (26, 0x3ffffe0), (26, 0x3ffffe1), (20, 0xfffeb), (19, 0x7fff1), (22, 0x3fffe7), (23, 0x7ffff2),
    (22, 0x3fffe8), (25, 0x1ffffec), (26, 0x3ffffe2), (26, 0x3ffffe3), (26, 0x3ffffe4), (27, 0x7ffffde),
    (27, 0x7ffffdf), (26, 0x3ffffe5), (24, 0xfffff1), (25, 0x1ffffed), (19, 0x7fff2), (21, 0x1fffe3),
    (26, 0x3ffffe6), (27, 0x7ffffe0), (27, 0x7ffffe1), (26, 0x3ffffe7), (27, 0x7ffffe2), (24, 0xfffff2),
    (21, 0x1fffe4), (21, 0x1fffe5), (26, 0x3ffffe8), (26, 0x3ffffe9), (28, 0xffffffd), (27, 0x7ffffe3),
    (27, 0x7ffffe4), (27, 0x7ffffe5), (20, 0xfffec), (24, 0xfffff3), (20, 0xfffed), (21, 0x1fffe6),
    (22, 0x3fffe9), (21, 0x1fffe7), (21, 0x1fffe8), (23, 0x7ffff3), (22, 0x3fffea), (22, 0x3fffeb),
    (25, 0x1ffffee), (25, 0x1ffffef), (24, 0xfffff4), (24, 0xfffff5), (26, 0x3ffffea), (23, 0x7ffff4),
    (26, 0x3ffffeb), (27, 0x7ffffe6), (26, 0x3ffffec), (26, 0x3ffffed), (27, 0x7ffffe7), (27, 0x7ffffe8),
    (27, 0x7ffffe9), (27, 0x7ffffea), (27, 0x7ffffeb), (28, 0xffffffe), (27, 0x7ffffec), (27, 0x7ffffed),
    (27, 0x7ffffee), (27, 0x7ffffef), (27, 0x7fffff0), (26, 0x3ffffee), (30, 0x3fffffff),
];

/// A decoding step: from a state (a node of the code's tree), four more input bits lead
/// to another state, having emitted at most one symbol (no code is shorter than five
/// bits).
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    /// The symbol emitted, if `EMIT`.
    symbol: u8,
    flags: u8,
}

const EMIT: u8 = 1;
/// The bits spelled the end-of-string symbol.
const FAIL: u8 = 2;

/// The nibble-at-a-time decoder, built from [`CODES`] once: 256 states (the internal nodes
/// of the code's tree; state 0 is the root) times 16 nibbles.
struct Table {
    steps: Vec<[Step; 16]>,
    /// Whether input may end in a state: the bits since the last symbol are a prefix of
    /// EOS (all ones) of at most 7 bits.
    may_end: Vec<bool>,
}

fn table() -> &'static Table {
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // The tree: children of internal nodes; leaves are `LEAF | symbol`.
        const LEAF: u16 = 0x8000;
        let mut children: Vec<[u16; 2]> = vec![[0, 0]];
        for (symbol, &(len, code)) in CODES.iter().enumerate() {
            let mut node = 0usize;
            for i in (0..len).rev() {
                let bit = ((code >> i) & 1) as usize;
                if i == 0 {
                    children[node][bit] = LEAF | symbol as u16;
                } else {
                    if children[node][bit] == 0 {
                        children.push([0, 0]);
                        children[node][bit] = (children.len() - 1) as u16;
                    }
                    node = children[node][bit] as usize;
                }
            }
        }
        debug_assert_eq!(children.len(), 256);
        // Depth along the all-ones path, for the end check.
        let mut ones = vec![None; children.len()];
        let (mut node, mut depth) = (0usize, 0u8);
        loop {
            ones[node] = Some(depth);
            let c = children[node][1];
            if c & LEAF != 0 {
                break;
            }
            node = c as usize;
            depth += 1;
        }
        let may_end = ones.iter().map(|d| d.is_some_and(|d| d <= 7)).collect();
        let steps = (0..children.len())
            .map(|state| {
                let mut row = [Step::default(); 16];
                for (nibble, step) in row.iter_mut().enumerate() {
                    let mut node = state;
                    for i in (0..4).rev() {
                        let c = children[node][(nibble >> i) & 1];
                        if c & LEAF != 0 {
                            let symbol = c & !LEAF;
                            if symbol == 256 {
                                step.flags |= FAIL;
                            } else {
                                step.flags |= EMIT;
                                step.symbol = symbol as u8;
                            }
                            node = 0;
                        } else {
                            node = c as usize;
                        }
                    }
                    step.next = node as u8;
                }
                row
            })
            .collect();
        Table { steps, may_end }
    })
}

/// Why a Huffman string did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The end-of-string symbol appeared in the data.
    EndOfString,
    /// The padding was longer than 7 bits or not all ones.
    BadPadding,
}

/// Decodes `input`, appending the octets to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let t = table();
    out.reserve(input.len() + input.len() / 2);
    let mut state = 0u8;
    for &byte in input {
        for nibble in [byte >> 4, byte & 0xf] {
            let step = t.steps[state as usize][nibble as usize];
            if step.flags & FAIL != 0 {
                return Err(HuffmanError::EndOfString);
            }
            if step.flags & EMIT != 0 {
                out.push(step.symbol);
            }
            state = step.next;
        }
    }
    if !t.may_end[state as usize] {
        return Err(HuffmanError::BadPadding);
    }
    Ok(())
}

/// How many bytes `input` takes Huffman-coded.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input.iter().map(|&b| CODES[b as usize].0 as usize).sum();
    bits.div_ceil(8)
}

/// Appends `input` Huffman-coded, padded with ones.
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in input {
        let (len, code) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u64 << bits) - 1;
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1u64 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    #[test]
    fn the_code_is_complete_and_canonical() {
        // Kraft's sum is exactly one: every bit string decodes to something.
        let sum: f64 = CODES.iter().map(|&(l, _)| 0.5f64.powi(l as i32)).sum();
        assert!((sum - 1.0).abs() < 1e-12);
        assert_eq!(table().steps.len(), 256, "a complete code of 257 leaves");
    }

    #[test]
    fn decodes_the_rfc_examples() {
        // RFC 7541 C.4.1 and C.6.1.
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(dec(&www).unwrap(), b"www.example.com");
        assert_eq!(dec(&[0x64, 0x02]).unwrap(), b"302");
        assert_eq!(
            dec(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]).unwrap(),
            b"no-cache"
        );
    }

    #[test]
    fn every_octet_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        encode(&all, &mut coded);
        assert_eq!(coded.len(), encoded_len(&all));
        assert_eq!(dec(&coded).unwrap(), all);
        for s in [
            &b""[..],
            b"a",
            b"grpc-status",
            b"application/grpc",
            b"\xff\x00",
        ] {
            let mut c = Vec::new();
            encode(s, &mut c);
            assert_eq!(dec(&c).unwrap(), s);
        }
    }

    #[test]
    fn refuses_bad_padding_and_the_end_symbol() {
        assert_eq!(dec(&[0x07]).unwrap(), b"0"); // '0' (00000) then three ones
        assert_eq!(dec(&[0x00]), Err(HuffmanError::BadPadding));
        assert_eq!(dec(&[0x07, 0xff]), Err(HuffmanError::BadPadding));
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff]),
            Err(HuffmanError::EndOfString)
        );
    }
}
