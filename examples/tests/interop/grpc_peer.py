#!/usr/bin/env python3
"""gRPC's own Python library (PyPI `grpcio`, stubs made by `grpcio-tools` from
idl/echo.proto at run time) as a client of our server.

Usage:
  grpc_peer.py IDL_DIR client HOST:PORT [CA_PEM]
  grpc_peer.py IDL_DIR streams HOST:PORT [CA_PEM]
  grpc_peer.py IDL_DIR reflect HOST:PORT
  grpc_peer.py IDL_DIR watch HOST:PORT
  grpc_peer.py IDL_DIR serve
  grpc_peer.py IDL_DIR deadline HOST:PORT
  grpc_peer.py IDL_DIR trace HOST:PORT TRACEPARENT

`client` checks unary echo from 0 bytes to 4 MiB, 200 calls in flight at once on one
connection, UNIMPLEMENTED for unknown methods and services, gzip-compressed echo (and
deflate refused as UNIMPLEMENTED), and the health service
(`grpc.health.v1.Health/Check`: SERVING, NOT_FOUND; `Watch`); over TLS when CA_PEM is
given.
`streams` checks every streaming shape of idl/stream.proto: thousands of messages, messages
larger than the flow-control windows, empty streams, an error status, a deadline passing
mid-stream, a cancelled stream, 64 streams at once.
`deadline` (against a server whose echo replies after 500 ms) checks that a 100 ms
deadline ends the call DEADLINE_EXCEEDED and that the connection serves the next call.
`trace` makes one call with `traceparent` (and a custom header) in its metadata, then one
server stream with `traceparent`.
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
    for n in (0, 300, 1 << 20):
        msg = b"zip" * (n // 3)
        r = stub.Echo(pb.EchoRequest(msg=msg), timeout=5, compression=grpc.Compression.Gzip)
        check(f"gzip echo of {n} B", r.msg == msg)
    try:
        stub.Echo(pb.EchoRequest(msg=b"x"), timeout=5, compression=grpc.Compression.Deflate)
        check("deflate refused", False, "answered")
    except grpc.RpcError as e:
        check("deflate refused as UNIMPLEMENTED", e.code() == grpc.StatusCode.UNIMPLEMENTED,
              f"{e.code()} {e.details()}")
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
    watch = ch.unary_stream("/grpc.health.v1.Health/Watch")(b"\x0a\x09echo.Echo", timeout=5)
    check("health Watch sends SERVING first", next(iter(watch)) == b"\x08\x01")
    watch.cancel()
    unknown = next(iter(ch.unary_stream("/grpc.health.v1.Health/Watch")(b"\x0a\x04nope", timeout=5)))
    check("health Watch of an unknown service says SERVICE_UNKNOWN", unknown == b"\x08\x03", repr(unknown))
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
    got = [c.msg for c in st.Repeat(stream_pb2.RepeatRequest(msg=b"r", count=3), timeout=5)]
    check("Repeat (server streaming)", got == [b"r"] * 3, repr(got))
    # Metadata both ways: text and binary (-bin) values come back as reply metadata.
    r, call = st.Sleep.with_call(stream_pb2.SleepRequest(ms=0, msg=b"meta"), timeout=5,
                                 metadata=(("x-echo-back", "text value"),
                                           ("x-echo-back-bin", b"\x00\x01\xff")))
    got = dict(call.initial_metadata())
    check("reply metadata, text and binary",
          r.msg == b"meta" and got.get("x-echo-back") == "text value"
          and got.get("x-echo-back-bin") == b"\x00\x01\xff", repr(got))
    # Status details (grpc-status-details-bin): a google.rpc.Status with the same code.
    try:
        st.Sleep(stream_pb2.SleepRequest(ms=-1), timeout=5)
        check("status details", False, "answered")
    except grpc.RpcError as e:
        details = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
        want = b"\x08\x03\x12\x17ms must not be negative"
        check("status details", e.code() == grpc.StatusCode.INVALID_ARGUMENT and details == want,
              f"{e.code()} {details!r}")
    r = stub.Echo(pb.EchoRequest(msg=b"after"), timeout=5)
    check("the connection still serves", r.msg == b"after")


def streams(target, ca=None):
    """Every streaming shape of idl/stream.proto, with thousands of messages."""
    import grpc
    import queue
    import stream_pb2 as spb
    import stream_pb2_grpc
    ch = channel(target, ca)
    st = stream_pb2_grpc.StreamerStub(ch)
    # Server streaming: small and many, none, and large (more than every window).
    for count, size in ((5000, 100), (0, 10), (200, 64 << 10), (3, 4 << 20)):
        msg = bytes((i * 13) % 251 for i in range(size)) if size < 100_000 else b"m" * size
        got = list(st.Repeat(spb.RepeatRequest(msg=msg, count=count), timeout=60))
        check(f"Repeat {count} x {size} B", len(got) == count and all(c.msg == msg for c in got),
              f"{len(got)} replies")
    try:
        list(st.Repeat(spb.RepeatRequest(msg=b"x", count=-1), timeout=5))
        check("Repeat with a negative count", False, "answered")
    except grpc.RpcError as e:
        check("Repeat with a negative count is INVALID_ARGUMENT",
              e.code() == grpc.StatusCode.INVALID_ARGUMENT and "negative" in (e.details() or ""),
              f"{e.code()} {e.details()}")
    # Client streaming.
    parts = [b"%05d," % i for i in range(3000)]
    r = st.Concat(iter(spb.Chunk(msg=p) for p in parts), timeout=30)
    check("Concat of 3000 messages", r.msg == b"".join(parts), f"{len(r.msg)} bytes")
    r = st.Concat(iter([]), timeout=5)
    check("Concat of none", r.msg == b"")
    big = [bytes([i]) * (256 << 10) for i in range(40)]
    r = st.Concat(iter(spb.Chunk(msg=p) for p in big), timeout=30)
    check("Concat of 40 x 256 KiB", r.msg == b"".join(big), f"{len(r.msg)} bytes")
    # Bidirectional: all at once, then in lock step (each reply before the next message).
    msgs = [b"chat %d" % i for i in range(3000)]
    got = [c.msg for c in st.Chat(iter(spb.Chunk(msg=m) for m in msgs), timeout=30)]
    check("Chat of 3000 messages", got == msgs, f"{len(got)} back")
    q = queue.Queue()

    def requests():
        while True:
            m = q.get()
            if m is None:
                return
            yield spb.Chunk(msg=m)

    replies = st.Chat(requests(), timeout=30)
    ok = True
    for i in range(200):
        q.put(b"step %d" % i)
        ok &= next(replies).msg == b"step %d" % i
    q.put(None)
    check("Chat in lock step, 200 rounds", ok and list(replies) == [])
    # A deadline that passes mid-stream: the messages before it arrive, then
    # DEADLINE_EXCEEDED.
    q2 = queue.Queue()

    def slow():
        while True:
            m = q2.get()
            if m is None:
                return
            yield spb.Chunk(msg=m)

    call = st.Chat(slow(), timeout=0.5)
    q2.put(b"before")
    first = next(call).msg
    try:
        next(call)
        check("a stream's deadline", False, "answered")
    except grpc.RpcError as e:
        check("a stream's deadline ends it DEADLINE_EXCEEDED after its messages",
              first == b"before" and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{e.code()}")
    q2.put(None)
    # A client that cancels a large stream mid-way; the connection goes on.
    it = st.Repeat(spb.RepeatRequest(msg=b"c" * 1000, count=1_000_000), timeout=30)
    first = [next(it).msg for _ in range(10)]
    it.cancel()
    r = st.Sleep(spb.SleepRequest(ms=0, msg=b"after cancel"), timeout=5)
    check("a cancelled stream spares the connection", r.msg == b"after cancel" and len(first) == 10)
    # gzip, both ways, on every shape.
    gz = grpc.Compression.Gzip
    got = [c.msg for c in st.Repeat(spb.RepeatRequest(msg=b"g" * 5000, count=300), timeout=30,
                                    compression=gz)]
    check("gzip Repeat", got == [b"g" * 5000] * 300, f"{len(got)} replies")
    r = st.Concat(iter(spb.Chunk(msg=p) for p in parts), timeout=30, compression=gz)
    check("gzip Concat", r.msg == b"".join(parts))
    got = [c.msg for c in st.Chat(iter(spb.Chunk(msg=m) for m in msgs), timeout=30, compression=gz)]
    check("gzip Chat", got == msgs)
    # A streaming handler's response metadata: in its headers (text and binary), and with
    # the status when it fails at once (trailers only).
    md_out = (("x-echo-back", "py"), ("x-echo-back-bin", b"\x00\x01\xff"))
    call = st.Chat(iter([spb.Chunk(msg=b"m")]), timeout=5, metadata=md_out)
    got = [c.msg for c in call]
    md = dict(call.initial_metadata())
    check("a stream's response metadata", got == [b"m"] and md.get("x-echo-back") == "py"
          and md.get("x-echo-back-bin") == b"\x00\x01\xff", repr(md))
    try:
        list(st.Repeat(spb.RepeatRequest(msg=b"x", count=-1), timeout=5, metadata=md_out))
        check("a refused stream's metadata", False, "answered")
    except grpc.RpcError as e:
        md = dict(tuple(e.initial_metadata() or ()) + tuple(e.trailing_metadata() or ()))
        check("a refused stream's metadata comes with its status",
              e.code() == grpc.StatusCode.INVALID_ARGUMENT and md.get("x-echo-back") == "py",
              repr(md))
    # Many streams at once on one connection.
    futs = []
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        for i in range(64):
            futs.append(ex.submit(lambda i=i: [c.msg for c in st.Repeat(
                spb.RepeatRequest(msg=b"%d" % i, count=500), timeout=30)]))
        got = [f.result() for f in futs]
    check("64 concurrent Repeat streams", all(g == [b"%d" % i] * 500 for i, g in enumerate(got)))


def watch(target):
    """grpc.health.v1.Health/Watch of echo.Echo: SERVING first; then, once this prints
    "watching", the test sets NOT_SERVING and then SERVING again, and each arrives; once
    this prints "changed", the test shuts the server down, and the watch ends."""
    import grpc
    ch = channel(target)
    call = ch.unary_stream("/grpc.health.v1.Health/Watch")(b"\x0a\x09echo.Echo", timeout=20)
    it = iter(call)
    check("Watch sends SERVING first", next(it) == b"\x08\x01")
    print("watching", flush=True)
    check("Watch sends the change to NOT_SERVING", next(it) == b"\x08\x02")
    check("Watch sends the change back to SERVING", next(it) == b"\x08\x01")
    print("changed", flush=True)
    # The test now shuts the server down: NOT_SERVING, then the stream ends UNAVAILABLE.
    check("Watch hears NOT_SERVING when the server shuts down", next(it) == b"\x08\x02")
    try:
        next(it)
        check("the watch ends when the server shuts down", False, "went on")
    except grpc.RpcError as e:
        check("the watch ends UNAVAILABLE when the server shuts down",
              e.code() == grpc.StatusCode.UNAVAILABLE, f"{e.code()}")


def serve(pb, pbg):
    """A grpcio server of echo.proto's Echo and stream.proto's Streamer (for our client).
    Echo echoes, except that a
    message `status:N` is answered with status N, `sleep` replies after 500 ms, and the
    request's `rpc-transit-tenant` metadata comes back as header `x-tenant` and trailer
    `x-tenant-trailer`; replies to a gzip request are gzip. Prints the port, then serves
    until its standard input closes."""
    import grpc
    from concurrent import futures

    class Echo(pbg.EchoServicer):
        def Echo(self, request, context):
            meta = dict(context.invocation_metadata())
            tenant = meta.get("rpc-transit-tenant")
            if tenant is not None:
                context.send_initial_metadata((("x-tenant", tenant),))
                context.set_trailing_metadata((("x-tenant-trailer", tenant),))
            m = request.msg
            if m.startswith(b"status:"):
                code = int(m[7:])
                status = next(c for c in grpc.StatusCode if c.value[0] == code)
                context.abort(status, f"status {code} on purpose")
            if m == b"sleep":
                time.sleep(0.5)
            return pb.EchoReply(msg=m)

    import stream_pb2 as spb
    import stream_pb2_grpc

    class Streamer(stream_pb2_grpc.StreamerServicer):
        def Repeat(self, request, context):
            if request.count < 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"count must not be negative, not {request.count}")
            for _ in range(request.count):
                yield spb.Chunk(msg=request.msg)

        def Concat(self, request_iterator, context):
            return spb.Chunk(msg=b"".join(c.msg for c in request_iterator))

        def Chat(self, request_iterator, context):
            for c in request_iterator:
                yield c

        def Sleep(self, request, context):
            time.sleep(request.ms / 1000)
            return spb.Chunk(msg=request.msg)

    server = grpc.server(futures.ThreadPoolExecutor(32),
                         options=[("grpc.max_receive_message_length", 16 << 20),
                                  ("grpc.max_send_message_length", 16 << 20)])
    pbg.add_EchoServicer_to_server(Echo(), server)
    stream_pb2_grpc.add_StreamerServicer_to_server(Streamer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    sys.stdin.read()
    server.stop(0)


def reflect(target):
    """gRPC server reflection, through grpcio's own reflection client (grpcio-reflection):
    the services listed, each one's file fetched by symbol and by name, its methods found
    in the descriptor pool it builds, an unknown symbol refused."""
    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase)
    ch = channel(target)
    db = ProtoReflectionDescriptorDatabase(ch)
    services = set(db.get_services())
    want = {"echo.Echo", "streamer.Streamer", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"}
    check("reflection lists the services", want <= services, repr(sorted(services)))
    pool = DescriptorPool(db)
    echo = pool.FindServiceByName("echo.Echo")
    check("echo.Echo's descriptor, with its method", [m.name for m in echo.methods] == ["Echo"],
          repr([m.name for m in echo.methods]))
    st = pool.FindServiceByName("streamer.Streamer")
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in st.methods}
    check("streamer.Streamer's streaming shapes",
          shapes == {"Repeat": (False, True), "Concat": (True, False), "Chat": (True, True),
                     "Sleep": (False, False)}, repr(shapes))
    health = pool.FindServiceByName("grpc.health.v1.Health")
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in health.methods}
    check("grpc.health.v1.Health's descriptor",
          shapes == {"Check": (False, False), "Watch": (False, True)}, repr(shapes))
    status = pool.FindEnumTypeByName("grpc.health.v1.HealthCheckResponse.ServingStatus")
    check("health's ServingStatus", [v.name for v in status.values] ==
          ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"])
    req = pool.FindMessageTypeByName("echo.EchoRequest")
    check("a message type by name", [f.name for f in req.fields] == ["msg"])
    check("a file by name", db.FindFileByName("stream.proto").package == "streamer")
    try:
        db.FindFileContainingSymbol("nope.Nope")
        check("an unknown symbol is refused", False, "found")
    except KeyError:
        check("an unknown symbol is refused", True)


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
    import stream_pb2
    import stream_pb2_grpc
    st = stream_pb2_grpc.StreamerStub(channel(target))
    got = list(st.Repeat(stream_pb2.RepeatRequest(msg=b"t", count=3), timeout=5,
                         metadata=(("traceparent", traceparent),)))
    check("a stream with trace context", len(got) == 3)


def main():
    pb, pbg = stubs(sys.argv[1])
    if sys.argv[2] == "serve":
        serve(pb, pbg)
        return 0
    mode, target = sys.argv[2], sys.argv[3]
    if mode == "client":
        client(pb, pbg, target, sys.argv[4] if len(sys.argv) > 4 else None)
    elif mode == "streams":
        streams(target, sys.argv[4] if len(sys.argv) > 4 else None)
    elif mode == "reflect":
        reflect(target)
    elif mode == "watch":
        watch(target)
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
