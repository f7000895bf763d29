#!/usr/bin/env python3
"""Apache Thrift's Python library as a client and a server of the Interop and Echo services.

Usage:
  thrift_peer.py GEN_DIR client HOST PORT framed|buffered binary|compact [TLS]
  thrift_peer.py GEN_DIR server PORT framed|buffered binary|compact
  thrift_peer.py GEN_DIR tls-echo HOST PORT TLS

TLS is `CA CERT KEY NAME`: over TLS (Thrift's TSSLSocket on Python's `ssl`), trusting the
CA bundle CA, presenting the client certificate CERT with key KEY (`-` for none), and
verifying the server's certificate against NAME (`-`: HOST).

GEN_DIR holds what `thrift --gen py` made of idl/interop.thrift and idl/echo.thrift.

`client` opens one connection and calls every method of both services on it (methods are
unique across the two, so a server that routes by name serves both on one port): it
checks each result, an UNKNOWN_METHOD answer to an unknown method, and that the
connection still works afterwards. Exit status 0: every check passed.

`tls-echo` makes one Echo.echo call over Framed binary on TLS and prints `OK`, or `ERROR`
and why (a handshake or certificate failure); exit status 0 only for `OK`.

`server` serves both services on one port with the same routing, behaving as the IDL's
comments say, prints `LISTENING <port>`, and runs until killed.
"""

import struct
import sys
import threading
import time


def values(tt):
    Inner, AllTypes, Color = tt.Inner, tt.AllTypes, tt.Color
    full = AllTypes(
        b=True, i8v=-128, i16v=-32768, i32v=2147483647, i64v=-(2**63), dbl=-2.5e300,
        str="h\u00e9llo, \u4e16\u754c", bin=bytes(range(256)),
        ints=[0, -1, 1, 2**31 - 1, -(2**31)], tags={"a", "bb", ""}, counts={"x": 1, "y": -(2**40)},
        inner=Inner(id=7, label="seven"), inners=[Inner(id=1), Inner(id=2, label="")],
        nested={1: ["p", "q"], -3: []}, color=Color.BLUE, maybe="here",
        with_default="set", small=127,
    )
    edge = AllTypes(
        b=False, i8v=0, i16v=1, i32v=-1, i64v=2**63 - 1, dbl=0.0, str="", bin=b"\x00" * 65536,
        ints=list(range(-500, 500)), tags=set(), counts={}, inner=Inner(id=-2147483648),
        inners=[], nested={}, color=Color.RED, maybe=None, small=-128,
    )
    return [full, AllTypes(), edge]


DEFAULTS = {
    "b": False, "i8v": 0, "i16v": 0, "i32v": 0, "i64v": 0, "dbl": 0.0, "str": "", "bin": b"",
    "ints": [], "tags": set(), "counts": {}, "inner": None, "inners": [], "nested": {},
    "color": None, "with_default": "default", "small": 0,
}


def normalized(v):
    """Unset fields of default requiredness equal their type's default: writers differ in
    whether they omit them."""
    out = {}
    for k, d in DEFAULTS.items():
        x = getattr(v, k)
        out[k] = d if x is None else x
    out["maybe"] = v.maybe
    out["inner"] = (0, None) if out["inner"] is None else (out["inner"].id, out["inner"].label)
    out["inners"] = [(i.id, i.label) for i in out["inners"]]
    out["color"] = 0 if out["color"] is None else out["color"]
    return out


def factories(transport, protocol):
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.transport import TTransport
    tf = {"framed": TTransport.TFramedTransportFactory(),
          "buffered": TTransport.TBufferedTransportFactory()}[transport]
    pf = {"binary": TBinaryProtocol.TBinaryProtocolFactory(),
          "compact": TCompactProtocol.TCompactProtocolFactory()}[protocol]
    return tf, pf


def socket_to(host, port, tls):
    """A plain TSocket, or a TSSLSocket when `tls` is (CA, CERT, KEY, NAME)."""
    from thrift.transport import TSocket, TSSLSocket
    if not tls:
        return TSocket.TSocket(host, int(port))
    ca, cert, key, name = tls
    kw = {"ca_certs": ca}
    if cert != "-":
        kw.update(certfile=cert, keyfile=key)
    if name != "-":
        kw["server_hostname"] = name
    return TSSLSocket.TSSLSocket(host, int(port), **kw)


def tls_echo(host, port, *tls):
    import logging
    # TSocket logs why a connect failed (the `ssl` error of the handshake) and raises a
    # generic error: keep what it logs.
    causes = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.exc_info and record.exc_info[1]:
                causes.append(str(record.exc_info[1]))

    log = logging.getLogger("thrift")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    log.propagate = False
    from echo import Echo
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TTransport
    try:
        sock = socket_to(host, port, tls)
        sock.setTimeout(5000)
        trans = TTransport.TFramedTransport(sock)
        trans.open()
        got = Echo.Client(TBinaryProtocol.TBinaryProtocol(trans)).echo(b"over tls")
        trans.close()
    except Exception as e:  # the point is to report any failure, whatever its type
        inner = getattr(e, "inner", None)  # TSSLSocket wraps the `ssl` error
        causes.extend([str(inner)] if inner else [])
        print(f"ERROR {type(e).__name__}: {e} ({'; '.join(causes)})")
        return 1
    if got != b"over tls":
        print(f"ERROR wrong reply {got!r}")
        return 1
    print("OK")
    return 0


def client(host, port, transport, protocol, *tls):
    from echo import Echo
    from interop import Interop, ttypes
    from thrift.Thrift import TApplicationException, TMessageType

    tf, pf = factories(transport, protocol)
    sock = socket_to(host, port, tls)
    sock.setTimeout(5000)
    trans = tf.getTransport(sock)
    proto = pf.getProtocol(trans)
    trans.open()
    interop, echo = Interop.Client(proto), Echo.Client(proto)
    failures = []

    def check(name, ok, detail=""):
        print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
        if not ok:
            failures.append(name)

    for size in (0, 128, 100 * 1024):
        msg = bytes((i * 7) % 251 for i in range(size))
        got = echo.echo(msg)
        check(f"echo {size}B", got == msg, f"{len(got)} bytes back")
    for i, v in enumerate(values(ttypes)):
        got = interop.roundtrip(v)
        check(f"roundtrip value {i}", normalized(got) == normalized(v),
              f"\n got  {normalized(got)}\n want {normalized(v)}")
    check("fail_with(0)", interop.fail_with(0, "fine") == 0)
    try:
        interop.fail_with(7, "boom")
        check("fail_with(7) throws", False, "returned normally")
    except ttypes.InteropError as e:
        check("fail_with(7) throws", (e.code, e.message) == (7, "boom"), repr(e))
    t0 = time.monotonic()
    got = interop.delayed_echo(b"late", 50)
    elapsed = time.monotonic() - t0
    check("delayed_echo", got == b"late" and elapsed >= 0.045, f"{got!r} after {elapsed:.3f}s")
    check("ping", interop.ping() is None)
    before = interop.fired_total()
    interop.fire(5)
    interop.fire(7)
    total, deadline = before, time.monotonic() + 2
    while time.monotonic() < deadline:
        total = interop.fired_total()
        if total == before + 12:
            break
        time.sleep(0.01)
    check("fire + fired_total", total == before + 12, f"{total} != {before + 12}")

    # An unknown method: UNKNOWN_METHOD, and the connection goes on working.
    proto.writeMessageBegin("no_such_method", TMessageType.CALL, 4242)
    proto.writeStructBegin("args")
    proto.writeFieldStop()
    proto.writeStructEnd()
    proto.writeMessageEnd()
    trans.flush()
    name, mtype, seq = proto.readMessageBegin()
    ok = mtype == TMessageType.EXCEPTION and seq == 4242
    if ok:
        x = TApplicationException()
        x.read(proto)
        proto.readMessageEnd()
        ok = x.type == TApplicationException.UNKNOWN_METHOD
    check("unknown method -> UNKNOWN_METHOD", ok, f"{(name, mtype, seq)}")
    check("ping after the unknown method", interop.ping() is None)
    trans.close()
    print(f"{'FAILED: ' + ', '.join(failures) if failures else 'all checks passed'}")
    return 1 if failures else 0


class InteropHandler:
    def __init__(self):
        self.total = 0
        self.lock = threading.Lock()

    def roundtrip(self, v):
        return v

    def fail_with(self, code, message):
        from interop import ttypes
        if code != 0:
            raise ttypes.InteropError(code=code, message=message)
        return code

    def delayed_echo(self, msg, delay_ms):
        time.sleep(delay_ms / 1000.0)
        return msg

    def ping(self):
        return None

    def fire(self, x):
        with self.lock:
            self.total += x

    def fired_total(self):
        with self.lock:
            return self.total


class EchoHandler:
    def echo(self, msg):
        return msg


class ByName:
    """Routes each call to the processor that has its method, as our server does."""

    def __init__(self, processors):
        self.processors = processors

    def process(self, iprot, oprot):
        from thrift.Thrift import TApplicationException, TMessageType, TType
        name, mtype, seq = iprot.readMessageBegin()
        for p in self.processors:
            if name in p._processMap:
                p._processMap[name](p, seq, iprot, oprot)
                return True
        iprot.skip(TType.STRUCT)
        iprot.readMessageEnd()
        x = TApplicationException(TApplicationException.UNKNOWN_METHOD, f"Unknown function {name}")
        oprot.writeMessageBegin(name, TMessageType.EXCEPTION, seq)
        x.write(oprot)
        oprot.writeMessageEnd()
        oprot.trans.flush()
        return True


def server(port, transport, protocol):
    from echo import Echo
    from interop import Interop
    from thrift.transport import TSocket, TTransport

    tf, pf = factories(transport, protocol)
    sock = TSocket.TServerSocket(host="127.0.0.1", port=int(port))
    sock.listen()
    actual = sock.handle.getsockname()[1]
    processor = ByName([Interop.Processor(InteropHandler()), Echo.Processor(EchoHandler())])

    def serve_connection(conn):
        # What TThreadedServer does, on a socket bound before the port is announced.
        trans = tf.getTransport(conn)
        prot = pf.getProtocol(trans)
        try:
            while True:
                processor.process(prot, prot)
        except TTransport.TTransportException:
            pass
        finally:
            trans.close()

    print(f"LISTENING {actual}", flush=True)
    while True:
        conn = sock.accept()
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


def main():
    sys.path.insert(0, sys.argv[1])
    mode = sys.argv[2]
    if mode == "client":
        return client(*sys.argv[3:])
    if mode == "tls-echo":
        return tls_echo(*sys.argv[3:])
    if mode == "server":
        return server(*sys.argv[3:6])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
