//! The generated code against Apache Thrift's own generator and library
//! (Python): Apache's messages decode to the canonical values, and ours
//! survive a decode/re-encode by Apache unchanged. Skipped, saying so, when
//! the `thrift` compiler or the Python library is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;
use interop::InteropRoundtripArgs;

const PEER: &str = "../codec/tests/interop/thrift_peer.py";

/// Re-encodes each framed `roundtrip` CALL it reads, with Apache's code.
const ECHO: &str = r#"
import struct, sys
sys.path.insert(0, sys.argv[1])
from interop.Interop import roundtrip_args
from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.transport import TTransport
f = {"binary": TBinaryProtocol.TBinaryProtocolFactory(),
     "compact": TCompactProtocol.TCompactProtocolFactory()}[sys.argv[2]]
data, pos = sys.stdin.buffer.read(), 0
while pos < len(data):
    (n,) = struct.unpack(">I", data[pos:pos + 4])
    body, pos = data[pos + 4:pos + 4 + n], pos + 4 + n
    p = f.getProtocol(TTransport.TMemoryBuffer(body))
    name, mtype, seq = p.readMessageBegin()
    args = roundtrip_args()
    args.read(p)
    p.readMessageEnd()
    out = TTransport.TMemoryBuffer()
    q = f.getProtocol(out)
    q.writeMessageBegin(name, mtype, seq)
    args.write(q)
    q.writeMessageEnd()
    d = out.getvalue()
    sys.stdout.buffer.write(struct.pack(">I", len(d)) + d)
"#;

/// Generates Apache's Python code for interop.thrift, or says why not.
/// `test` names the output directory, so tests running at once do not share it.
fn apache_python(test: &str) -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("codec-build-pygen-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).ok()?;
    let generated = Command::new("thrift")
        .args(["--gen", "py", "-out"])
        .arg(&out)
        .arg(manifest.join("../idl/interop.thrift"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let has_library = Command::new("python3")
        .args(["-c", "import thrift"])
        .status()
        .is_ok_and(|s| s.success());
    if !generated.is_ok_and(|s| s.success()) || !has_library {
        // In CI the peer is installed by scripts/test.sh: its absence is a failure there.
        assert!(
            std::env::var_os("CI").is_none(),
            "Apache's `thrift` compiler or Python library is missing (scripts/test.sh installs them)"
        );
        eprintln!("skipped: needs Apache's `thrift` compiler and `pip install thrift`");
        return None;
    }
    Some(out)
}

fn python(args: &[&std::ffi::OsStr], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("write to python");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(output.status.success(), "python3 failed");
    output.stdout
}

pub(super) fn canonical() -> Vec<AllTypes> {
    let full = AllTypes {
        b: true,
        i8v: -128,
        i16v: -32768,
        i32v: i32::MAX,
        i64v: i64::MIN,
        dbl: -2.5e300,
        str: "h\u{e9}llo, \u{4e16}\u{754c} \u{1F600}".into(),
        bin: (0..=255u8).collect::<Vec<u8>>().into(),
        ints: vec![0, -1, 1, i32::MAX, i32::MIN],
        tags: ["a", "bb", ""].into_iter().map(ByteString::from).collect(),
        counts: [("x".into(), 1), ("y".into(), -(1 << 40))]
            .into_iter()
            .collect(),
        inner: Inner {
            id: 7,
            label: Some("seven".into()),
        },
        inners: vec![
            Inner { id: 1, label: None },
            Inner {
                id: 2,
                label: Some("".into()),
            },
        ],
        nested: [(1, vec!["p".into(), "q".into()]), (-3, vec![])]
            .into_iter()
            .collect(),
        color: Color::BLUE,
        maybe: Some("here".into()),
        with_default: "set".into(),
        small: 127,
    };
    let edge = AllTypes {
        i16v: 1,
        i32v: -1,
        i64v: i64::MAX,
        bin: vec![0u8; 65536].into(),
        ints: (-500..500).collect(),
        inner: Inner {
            id: i32::MIN,
            label: None,
        },
        color: Color::RED,
        small: -128,
        ..AllTypes::default()
    };
    vec![full, AllTypes::default(), edge]
}

#[derive(Clone, Copy)]
enum Proto {
    Binary,
    Compact,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Binary => "binary",
            Proto::Compact => "compact",
        }
    }
}

fn varint(b: &mut Bytes) -> u64 {
    let mut v = 0;
    for shift in (0..64).step_by(7) {
        let byte = b.split_to(1)[0];
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

/// Splits framed messages and decodes each one's `roundtrip` arguments.
fn decode_all(proto: Proto, mut data: Bytes) -> Vec<(i32, InteropRoundtripArgs)> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let n = u32::from_be_bytes(data.split_to(4)[..].try_into().expect("4 bytes")) as usize;
        let mut body = data.split_to(n);
        let (name, seq) = match proto {
            Proto::Binary => {
                let version = body.split_to(4);
                assert_eq!(&version[..], &[0x80, 0x01, 0x00, 0x01], "strict CALL");
                let len = u32::from_be_bytes(body.split_to(4)[..].try_into().expect("4"));
                let name = body.split_to(len as usize);
                let seq = i32::from_be_bytes(body.split_to(4)[..].try_into().expect("4"));
                (name, seq)
            }
            Proto::Compact => {
                assert_eq!(&body.split_to(2)[..], &[0x82, 0x21], "compact CALL");
                let seq = varint(&mut body) as i32;
                let len = varint(&mut body) as usize;
                (body.split_to(len), seq)
            }
        };
        assert_eq!(&name[..], b"roundtrip");
        let args = match proto {
            Proto::Binary => from_binary(body),
            Proto::Compact => from_compact(body),
        };
        out.push((seq, args.expect("Apache's bytes decode")));
    }
    out
}

/// Frames `roundtrip` CALLs carrying `values`, sequence ids from 100.
fn encode_all(proto: Proto, values: &[AllTypes]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let args = InteropRoundtripArgs { v: v.clone() };
        let seq = 100 + i as i32;
        let mut msg = BytesMut::new();
        match proto {
            Proto::Binary => {
                msg.put_u32(0x8001_0001);
                msg.put_u32(9);
                msg.put_slice(b"roundtrip");
                msg.put_i32(seq);
                msg.put_slice(&binary(&args));
            }
            Proto::Compact => {
                msg.put_slice(&[0x82, 0x21, seq as u8, 9]);
                msg.put_slice(b"roundtrip");
                msg.put_slice(&compact(&args));
            }
        }
        out.put_u32(msg.len() as u32);
        out.put_slice(&msg);
    }
    out
}

#[test]
fn apache_messages_decode_to_the_canonical_values() {
    let Some(gen_dir) = apache_python("decode") else {
        return;
    };
    for proto in [Proto::Binary, Proto::Compact] {
        let encoded = python(
            &[
                PEER.as_ref(),
                gen_dir.as_os_str(),
                "encode".as_ref(),
                proto.name().as_ref(),
            ],
            b"",
        );
        let decoded = decode_all(proto, encoded.into());
        let want = canonical();
        assert_eq!(decoded.len(), want.len());
        for (i, ((seq, args), want)) in decoded.into_iter().zip(want).enumerate() {
            assert_eq!(seq, 100 + i as i32);
            assert_eq!(args.v, want, "{} message {i}", proto.name());
        }
    }
    let _ = std::fs::remove_dir_all(gen_dir);
}

#[test]
fn our_messages_survive_apache_unchanged() {
    let Some(gen_dir) = apache_python("echo") else {
        return;
    };
    for proto in [Proto::Binary, Proto::Compact] {
        let values = canonical();
        let ours = encode_all(proto, &values);
        let echoed = python(
            &[
                "-c".as_ref(),
                ECHO.as_ref(),
                gen_dir.as_os_str(),
                proto.name().as_ref(),
            ],
            &ours,
        );
        let decoded = decode_all(proto, echoed.into());
        assert_eq!(decoded.len(), values.len());
        for (i, ((_, args), want)) in decoded.into_iter().zip(values).enumerate() {
            assert_eq!(args.v, want, "{} message {i}", proto.name());
        }
    }
    let _ = std::fs::remove_dir_all(gen_dir);
}

#[test]
fn apache_reads_our_messages_as_the_canonical_values() {
    let Some(gen_dir) = apache_python("check") else {
        return;
    };
    for proto in [Proto::Binary, Proto::Compact] {
        let ours = encode_all(proto, &canonical());
        // The peer decodes each message with Apache's generated code and compares it with
        // its own canonical values; `python` asserts that it exits successfully.
        python(
            &[
                PEER.as_ref(),
                gen_dir.as_os_str(),
                "decode".as_ref(),
                proto.name().as_ref(),
            ],
            &ours,
        );
    }
    let _ = std::fs::remove_dir_all(gen_dir);
}
