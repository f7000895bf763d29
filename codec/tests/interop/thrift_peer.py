#!/usr/bin/env python3
"""Apache Thrift's Python library as an interop peer for the codec tests.

Usage:
  thrift_peer.py GEN_DIR encode binary|compact   > messages
  thrift_peer.py GEN_DIR decode binary|compact   < messages

GEN_DIR holds the code `thrift --gen py` produced from idl/interop.thrift.
Messages are framed as a 4-byte big-endian length followed by one Thrift message
(`roundtrip` CALL carrying an AllTypes value, strict, as Apache writes it). `encode`
writes the canonical values below; `decode` reads messages, checks the method name,
type and sequence id, and compares each value with the canonical one (unset fields of
default requiredness compare equal to their type's default, since writers differ in
whether they omit them). Exit status 0 means every message matched.
"""

import struct
import sys


def canonical(tt):
    Inner, AllTypes, Color = tt.Inner, tt.AllTypes, tt.Color
    full = AllTypes(
        b=True, i8v=-128, i16v=-32768, i32v=2147483647, i64v=-(2**63), dbl=-2.5e300,
        str="h\u00e9llo, \u4e16\u754c \U0001F600", bin=bytes(range(256)),
        ints=[0, -1, 1, 2**31 - 1, -(2**31)], tags={"a", "bb", ""}, counts={"x": 1, "y": -(2**40)},
        inner=Inner(id=7, label="seven"), inners=[Inner(id=1), Inner(id=2, label="")],
        nested={1: ["p", "q"], -3: []}, color=Color.BLUE, maybe="here",
        with_default="set", small=127,
    )
    # Every field unset: readers must supply defaults (with_default = "default").
    empty = AllTypes()
    edge = AllTypes(
        b=False, i8v=0, i16v=1, i32v=-1, i64v=2**63 - 1, dbl=0.0, str="", bin=b"\x00" * 65536,
        ints=list(range(-500, 500)), tags=set(), counts={}, inner=Inner(id=-2147483648),
        inners=[], nested={}, color=Color.RED, maybe=None, small=-128,
    )
    return [full, empty, edge]


DEFAULTS = {
    "b": False, "i8v": 0, "i16v": 0, "i32v": 0, "i64v": 0, "dbl": 0.0, "str": "", "bin": b"",
    "ints": [], "tags": set(), "counts": {}, "inner": None, "inners": [], "nested": {},
    "color": None, "with_default": "default", "small": 0,
}


def normalized(v):
    out = {}
    for k, d in DEFAULTS.items():
        x = getattr(v, k)
        if isinstance(x, bytes) and k == "str":
            x = x.decode("utf-8")
        out[k] = d if x is None else x
    out["maybe"] = v.maybe
    # A struct field of default requiredness that is unset equals an empty struct: some
    # writers (Apache C++, ours) always write it, others (Python) omit it.
    out["inner"] = (0, None) if out["inner"] is None else (out["inner"].id, out["inner"].label)
    out["inners"] = [(i.id, i.label) for i in out["inners"]]
    out["color"] = 0 if out["color"] is None else out["color"]
    return out


def main():
    gen_dir, mode, proto = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, gen_dir)
    from interop import ttypes
    from interop.Interop import roundtrip_args
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.Thrift import TMessageType
    from thrift.transport import TTransport

    factory = {"binary": TBinaryProtocol.TBinaryProtocolFactory(),
               "compact": TCompactProtocol.TCompactProtocolFactory()}[proto]
    values = canonical(ttypes)
    if mode == "encode":
        for seq, v in enumerate(values):
            buf = TTransport.TMemoryBuffer()
            p = factory.getProtocol(buf)
            p.writeMessageBegin("roundtrip", TMessageType.CALL, seq + 100)
            roundtrip_args(v=v).write(p)
            p.writeMessageEnd()
            data = buf.getvalue()
            sys.stdout.buffer.write(struct.pack(">I", len(data)) + data)
        return 0
    data = sys.stdin.buffer.read()
    pos, seen, failures = 0, 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        body = data[pos + 4:pos + 4 + n]
        pos += 4 + n
        p = factory.getProtocol(TTransport.TMemoryBuffer(body))
        name, mtype, seq = p.readMessageBegin()
        args = roundtrip_args()
        args.read(p)
        p.readMessageEnd()
        want = values[seen] if seen < len(values) else None
        if (name, mtype, seq) != ("roundtrip", TMessageType.CALL, seen + 100):
            print(f"message {seen}: header {(name, mtype, seq)}", file=sys.stderr)
            failures += 1
        elif want is None or normalized(args.v) != normalized(want):
            print(f"message {seen}: value differs:\n got  {normalized(args.v)}\n want {want and normalized(want)}",
                  file=sys.stderr)
            failures += 1
        seen += 1
    if seen != len(values):
        print(f"expected {len(values)} messages, got {seen}", file=sys.stderr)
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
