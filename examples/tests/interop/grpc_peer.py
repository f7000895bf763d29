#!/usr/bin/env python3
"""gRPC's own Python library (PyPI `grpcio`, stubs made by `grpcio-tools` from
idl/echo.proto at run time) as a client of our server.

Usage:
  grpc_peer.py IDL_DIR client HOST:PORT [CA_PEM]
  grpc_peer.py IDL_DIR deadline HOST:PORT
  grpc_peer.py IDL_DIR trace HOST:PORT TRACEPARENT

`client` checks unary echo from 0 bytes to 4 MiB, 200 calls in flight at once on one
connection, UNIMPLEMENTED for unknown methods and services, a gzip-compressed request
refused as UNIMPLEMENTED (the server speaks identity only), and the health service
(`grpc.health.v1.Health/Check`: SERVING, NOT_FOUND; `Watch` not served yet); over TLS when
CA_PEM is given.
`deadline` (against a server whose echo replies after 500 ms) checks that a 100 ms
deadline ends the call DEADLINE_EXCEEDED and that the connection serves the next call.
`trace` makes one call with `traceparent` (and a custom header) in its metadata.
Prints each check; exit status 0 and "all checks passed" when every one passed.
"""

import concurrent.futures
import os
import sys
import tempfile
import time


def stubs(idl_dir):
    from grpc_tools import protoc
    out = tempfile.mkdtemp(prefix="grpc-peer-")
    rc = protoc.main(["protoc", f"-I{idl_dir}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(idl_dir, "echo.proto"),
                      os.path.join(idl_dir, "stream.proto")])
    if rc != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    import echo_pb2
    import echo_pb2_grpc
    return echo_pb2, echo_pb2_grpc


def channel(target, ca=None):
    import grpc
    opts = [("grpc.max_receive_message_length", 16 << 20),
            ("grpc.max_send_message_length", 16 << 20)]
    if ca is None:
        return grpc.insecure_channel(target, options=opts)
    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    opts.append(("grpc.ssl_target_name_override", "localhost"))
    return grpc.secure_channel(target, creds, options=opts)


failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def client(pb, pbg, target, ca=None):
    import grpc
    ch = channel(target, ca)
    stub = pbg.EchoStub(ch)
    for n in (0, 10, 100_000, 4 << 20):
        msg = bytes((i * 7) % 251 for i in range(n)) if n < 200_000 else b"z" * n
        r = stub.Echo(pb.EchoRequest(msg=msg), timeout=10)
        check(f"echo {n} B", r.msg == msg, f"{len(r.msg)} bytes back")
    with concurrent.futures.ThreadPoolExecutor(8) as _:
        futs = [stub.Echo.future(pb.EchoRequest(msg=b"%d" % i), timeout=10) for i in range(200)]
        got = [f.result().msg for f in futs]
    check("200 calls in flight", got == [b"%d" % i for i in range(200)])
    for path in ("/echo.Echo/Nope", "/nope.Nope/Echo", "/other.Echo/Echo"):
        try:
            ch.unary_unary(path)(b"", timeout=5)
            check(f"UNIMPLEMENTED for {path}", False, "answered")
        except grpc.RpcError as e:
            check(f"UNIMPLEMENTED for {path}", e.code() == grpc.StatusCode.UNIMPLEMENTED,
                  f"{e.code()} {e.details()}")
    try:
        stub.Echo(pb.EchoRequest(msg=b"zip" * 100), timeout=5, compression=grpc.Compression.Gzip)
        check("gzip refused", False, "answered")
    except grpc.RpcError as e:
        check("gzip refused", e.code() == grpc.StatusCode.UNIMPLEMENTED, f"{e.code()} {e.details()}")
    # grpc.health.v1.Health, by hand: HealthCheckRequest { service = 1 } in, and
    # HealthCheckResponse { status = 1 } out (SERVING is 1).
    check_health = ch.unary_unary("/grpc.health.v1.Health/Check")
    for svc in (b"", b"echo.Echo"):
        req = (b"\x0a" + bytes([len(svc)]) + svc) if svc else b""
        got = check_health(req, timeout=5)
        check(f"health of {svc!r} is SERVING", got == b"\x08\x01", repr(got))
    try:
        check_health(b"\x0a\x04nope", timeout=5)
        check("health of an unknown service", False, "answered")
    except grpc.RpcError as e:
        check("health of an unknown service", e.code() == grpc.StatusCode.NOT_FOUND, f"{e.code()}")
    try:
        next(iter(ch.unary_stream("/grpc.health.v1.Health/Watch")(b"", timeout=5)))
        check("health Watch", False, "answered")
    except grpc.RpcError as e:
        check("health Watch is not served yet", e.code() == grpc.StatusCode.UNIMPLEMENTED, f"{e.code()}")
    # idl/stream.proto: its unary Sleep is served (without blocking the core: 20 calls of
    # 200 ms at once take about 200 ms), its streaming methods are not yet.
    import stream_pb2
    import stream_pb2_grpc
    st = stream_pb2_grpc.StreamerStub(ch)
    t0 = time.monotonic()
    futs = [st.Sleep.future(stream_pb2.SleepRequest(ms=200, msg=b"z%d" % i), timeout=5) for i in range(20)]
    got = [f.result().msg for f in futs]
    took = time.monotonic() - t0
    check("Sleep x20 concurrently", got == [b"z%d" % i for i in range(20)] and took < 1.5, f"{took:.2f}s")
    try:
        st.Sleep(stream_pb2.SleepRequest(ms=1000, msg=b"late"), timeout=0.1)
        check("Sleep past its deadline", False, "answered")
    except grpc.RpcError as e:
        check("Sleep past its deadline", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{e.code()}")
    try:
        next(iter(st.Repeat(stream_pb2.RepeatRequest(msg=b"r", count=3), timeout=5)))
        check("Repeat", False, "answered")
    except grpc.RpcError as e:
        check("Repeat (server streaming) is not served yet", e.code() == grpc.StatusCode.UNIMPLEMENTED,
              f"{e.code()}")
    r = stub.Echo(pb.EchoRequest(msg=b"after"), timeout=5)
    check("the connection still serves", r.msg == b"after")


def deadline(pb, pbg, target):
    import grpc
    ch = channel(target)
    stub = pbg.EchoStub(ch)
    try:
        stub.Echo(pb.EchoRequest(msg=b"late"), timeout=0.1)
        check("deadline exceeded", False, "answered")
    except grpc.RpcError as e:
        check("deadline exceeded", e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{e.code()}")
    r = stub.Echo(pb.EchoRequest(msg=b"in time"), timeout=5)
    check("the next call is served", r.msg == b"in time")


def trace(pb, pbg, target, traceparent):
    stub = pbg.EchoStub(channel(target))
    r = stub.Echo(pb.EchoRequest(msg=b"traced"), timeout=5,
                  metadata=(("traceparent", traceparent), ("x-custom", "kept")))
    check("a call with trace context", r.msg == b"traced")


def main():
    pb, pbg = stubs(sys.argv[1])
    mode, target = sys.argv[2], sys.argv[3]
    if mode == "client":
        client(pb, pbg, target, sys.argv[4] if len(sys.argv) > 4 else None)
    elif mode == "deadline":
        deadline(pb, pbg, target)
    elif mode == "trace":
        trace(pb, pbg, target, sys.argv[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if failures:
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
