#!/usr/bin/env python3
"""Unary gRPC calls over persistent channels, on PyPI's `grpcio` (gRPC's C core).

    grpc_load.py URL SECONDS CHANNELS

One thread per channel calls `helloworld.Greeter/SayHello` in a loop for SECONDS, each call
with a deadline, as production gRPC clients set one. The stubs are generated at start from
`examples/proto/helloworld.proto` with `grpcio-tools`, so the client speaks exactly the
example's protocol. gRPC's own transparent retry re-sends a call that never left the client
(refused by the server's GOAWAY, or queued for a connection that closed first); every other
error, a missed deadline included, counts as failed.

Prints `calls N failed M stuck S` (`stuck`: failed by the deadline, also counted in
`failed`) and the first errors; exits 1 if any call failed.
"""

import os
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

# A call the server answers at once; a healthy restart delays one by milliseconds.
DEADLINE_S = 10.0


def stubs():
    """The generated `helloworld_pb2` and `helloworld_pb2_grpc` modules."""
    proto_dir = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "proto")
    # Imported, the modules need their files no more: nothing is left behind.
    with tempfile.TemporaryDirectory(prefix="lameduck-grpc-stubs-") as out:
        code = protoc.main(
            [
                "protoc",
                f"-I{proto_dir}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                os.path.join(proto_dir, "helloworld.proto"),
            ]
        )
        if code != 0:
            sys.exit(f"grpc_load: protoc failed ({code})")
        sys.path.insert(0, out)
        import helloworld_pb2
        import helloworld_pb2_grpc

        sys.path.remove(out)
    return helloworld_pb2, helloworld_pb2_grpc


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: grpc_load.py URL SECONDS CHANNELS")
    url, seconds, channels = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    target = url.removeprefix("http://")
    pb2, pb2_grpc = stubs()
    until = time.monotonic() + seconds
    lock = threading.Lock()
    totals = {"calls": 0, "failed": 0, "stuck": 0}
    errors = []

    def run(index):
        calls = failed = stuck = 0
        with grpc.insecure_channel(target) as channel:
            greeter = pb2_grpc.GreeterStub(channel)
            while time.monotonic() < until:
                calls += 1
                try:
                    reply = greeter.SayHello(
                        pb2.HelloRequest(name=f"load {index}"), timeout=DEADLINE_S
                    )
                    if not reply.message.startswith(f"hello load {index} from pid "):
                        raise RuntimeError(f"unexpected reply {reply.message!r}")
                except Exception as e:  # noqa: BLE001 — every failure counts
                    failed += 1
                    if isinstance(e, grpc.RpcError) and (
                        e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    ):
                        stuck += 1
                    with lock:
                        if len(errors) < 5:
                            errors.append(f"channel {index}: {e!r}")
        with lock:
            totals["calls"] += calls
            totals["failed"] += failed
            totals["stuck"] += stuck

    threads = [threading.Thread(target=run, args=(i,)) for i in range(channels)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(f"grpc_load: call failed: {e}", file=sys.stderr)
    print(f"calls {totals['calls']} failed {totals['failed']} stuck {totals['stuck']}")
    sys.exit(1 if totals["failed"] else 0)


if __name__ == "__main__":
    main()
