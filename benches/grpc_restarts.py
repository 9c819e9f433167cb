#!/usr/bin/env python3
"""gRPC unary calls against the `grpc` example under start_server, SIGHUP every 0.2 s.

    cargo build --release --example grpc --example grpc_client
    python3 benches/grpc_restarts.py --client grpcio --rounds 10     # or --client tonic

Each round starts start_server (`--interval=0`) with a fresh port, runs the load for
--seconds (4 channels, every call with a 10 s deadline) while sending one SIGHUP at a
time (the next once start_server logged the last), then stops start_server. A round whose
load outlives its time by 20 s is reported HUNG, and the socket table of its port is
printed before it is stopped. Prints one line a round and the totals:

    round K: calls N failed M stuck S restarts R
    total: rounds K calls N failed M stuck S restarts R

`grpcio` needs `pip install grpcio grpcio-tools` (scripts/test installs them).
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "target", "release", "examples")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_command(client, url, seconds):
    if client == "tonic":
        return [os.path.join(EXAMPLES, "grpc_client"), "load", url, str(seconds), "4"]
    script = os.path.join(ROOT, "tests", "clients", "grpc_load.py")
    return [sys.executable, script, url, str(seconds), "4"]


def round_(client, seconds, every):
    port = free_port()
    work = tempfile.mkdtemp(prefix="lameduck-grpc-restarts-")
    log = os.path.join(work, "server.log")
    server = subprocess.Popen(
        ["start_server", "--interval=0", f"--port=127.0.0.1:{port}",
         f"--pid-file={work}/app.pid", f"--log-file={log}", "--",
         os.path.join(EXAMPLES, "grpc")],
        env=dict(os.environ, HELLO_RUNTIME="tokio"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        load = subprocess.Popen(
            load_command(client, f"http://127.0.0.1:{port}", seconds),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        sent, start = 0, time.monotonic()
        while load.poll() is None:
            time.sleep(every)
            elapsed = time.monotonic() - start
            if elapsed < seconds:
                text = open(log).read() if os.path.exists(log) else ""
                if text.count("received HUP") == sent:
                    os.kill(server.pid, signal.SIGHUP)
                    sent += 1
            elif elapsed > seconds + 20:
                print(f"HUNG: port {port}", flush=True)
                print(subprocess.run(
                    ["ss", "-tnpi", f"( sport = :{port} or dport = :{port} )"],
                    capture_output=True, text=True).stdout, flush=True)
                load.kill()
                load.wait()
                return None
        output = load.stdout.read()
        found = re.search(r"calls (\d+) failed (\d+) stuck (\d+)", output)
        if not found:
            sys.exit(f"grpc_restarts: no result from the load:\n{output}")
        calls, failed, stuck = map(int, found.groups())
        if failed:
            print(output.strip(), flush=True)
        return calls, failed, stuck, sent
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["tonic", "grpcio"], default="grpcio")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--every", type=float, default=0.2, help="seconds between HUPs")
    args = parser.parse_args()
    totals = [0, 0, 0, 0]
    rounds = 0
    for k in range(args.rounds):
        result = round_(args.client, args.seconds, args.every)
        if result is None:
            print(f"round {k}: HUNG", flush=True)
            sys.exit(1)
        calls, failed, stuck, restarts = result
        print(f"round {k}: calls {calls} failed {failed} stuck {stuck} restarts {restarts}",
              flush=True)
        totals = [a + b for a, b in zip(totals, result)]
        rounds += 1
    calls, failed, stuck, restarts = totals
    print(f"total: rounds {rounds} calls {calls} failed {failed} stuck {stuck} "
          f"restarts {restarts}")


if __name__ == "__main__":
    main()
