#!/usr/bin/env python3
"""What a restart costs keep-alive clients: handover version 1 (every connection asked to
close) against version 2 (idle connections handed to the successor), the same server.

    cargo build --release --example hello
    BASELINE=/path/to/hello-v1 python3 benches/transfer.py

BASELINE is hello built from another commit, named by BASELINE_LABEL: before the connection
transfer (a738254, version 1, the default label) or before its acknowledgements (1b0fdb7,
`BASELINE_LABEL="version 2 (transfer, unacknowledged)"`); without it, only this tree's hello
(LABEL, version 3 by default) is measured. For each binary, in the same run:

1. Keep-alive load, restarts: wrk -t2 -c32 for SECS s steady, then SECS s with a SIGHUP every
   0.5 s (`--latency`: its p99). Reconnections: every generation's drain line says how many
   connections it accepted and adopted (`Totals`); accepted over all generations minus the
   32 first ones are the clients' reconnections. Also the successors' accepts per restart.
2. The handover itself: IDLE keep-alive connections (one request each, then idle), one
   SIGHUP; the old generation's drain (from its begin to its last connection gone — for
   version 2 the transfer of them all, for version 1 asks and the 1 s idle grace).

Prints a Markdown table.
"""
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from loopback import free_port, get, wrk_figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = os.path.join(ROOT, "target", "release", "examples", "hello")
SECS = int(os.environ.get("SECS", "8"))
IDLE = int(os.environ.get("IDLE", "10000"))

ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Hello:
    def __init__(self, binary, tmp):
        self.port = free_port()
        self.pid_file = os.path.join(tmp, "hello.pid")
        self.log = open(os.path.join(tmp, "log"), "w+")
        self.proc = subprocess.Popen(
            [binary, f"127.0.0.1:{self.port}", "--self-restart", "--pid-file", self.pid_file],
            stderr=self.log)
        for _ in range(1000):
            if get(self.port, "/"):
                return
            time.sleep(0.01)
        raise SystemExit("hello does not serve")

    def serving(self):
        with open(self.pid_file) as f:
            return int(f.read().strip())

    def hup(self):
        old = self.serving()
        os.kill(old, signal.SIGHUP)
        end = time.monotonic() + 10
        while self.serving() == old and time.monotonic() < end:
            time.sleep(0.001)
        reap()

    def stop(self):
        os.kill(self.serving(), signal.SIGTERM)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            reap()
            if subprocess.run(["pgrep", "-f", self.pid_file], capture_output=True).returncode:
                break
            time.sleep(0.05)
        reap()
        self.log.seek(0)
        return self.log.read()


def drains(log):
    """Every generation's (drain seconds, connections it accepted)."""
    out = []
    for line in log.splitlines():
        if ": drained: " not in line:
            continue
        began = float(re.search(r"began_at: Instant\(([\d.]+)(m?s)\)", line).group(1))
        unit = re.search(r"began_at: Instant\(([\d.]+)(\w+)\)", line).group(2)
        m = re.search(r"drained_at: Some\(Instant\(([\d.]+)(\w+)\)\)", line)
        scale = {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}
        drained = float(m.group(1)) * scale[m.group(2)]
        began *= scale[unit]
        if "accepted:" in line:
            accepted = int(re.search(r"accepted: (\d+)", line).group(1))
        else:
            # Version 1 prints no totals: every connection it had was its own accept, and
            # under wrk they are all open when its drain begins (or accepted during it).
            at_begin = re.search(r"at_begin: Counts \{ new: (\d+), active: (\d+), idle: (\d+), "
                                 r"upgraded: (\d+) \}", line)
            accepted = sum(int(n) for n in at_begin.groups())
            accepted += int(re.search(r"accepted_during: (\d+)", line).group(1))
        out.append((drained - began, accepted))
    return out


def p99_ms(out):
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]


def wrk(port, hello=None):
    cmd = ["wrk", "-t2", "-c32", f"-d{SECS}s", "--latency", f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    hups = 0
    if hello:
        end = time.monotonic() + SECS - 0.7
        while time.monotonic() < end:
            time.sleep(0.5)
            hello.hup()
            hups += 1
    out = proc.communicate()[0]
    requests, errors = wrk_figures(out)
    return requests, errors, p99_ms(out), hups


def keep_alive_load(binary):
    with tempfile.TemporaryDirectory() as tmp:
        hello = Hello(binary, tmp)
        steady = wrk(hello.port)
        hello.stop()
    # A fresh chain for the restarts, so its drain lines count only them.
    with tempfile.TemporaryDirectory() as tmp:
        hello = Hello(binary, tmp)
        upgrading = wrk(hello.port, hello)
        log = hello.stop()
    gens = drains(log)
    # The first generation's accepts are wrk's 32 connections (and the start-up probe's).
    accepted = sum(g[1] for g in gens)
    return steady, upgrading, accepted - gens[0][1], len(gens) - 1


def idle_handover(binary):
    with tempfile.TemporaryDirectory() as tmp:
        hello = Hello(binary, tmp)
        conns = []
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", hello.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(s)
        for s in conns:
            data = b""
            while not (b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].endswith(b"\n")):
                data += s.recv(4096)
        first = hello.serving()
        hello.hup()
        # The old generation's drain ends when it has handed over (or closed) them all.
        while True:
            reap()
            try:
                os.kill(first, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{first}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    break
            time.sleep(0.01)
        for s in conns:
            s.close()
        log = hello.stop()
    return drains(log)[0]


def main():
    binaries = [(os.environ.get("LABEL", "version 3 (acknowledged transfer)"), HELLO)]
    if os.environ.get("BASELINE"):
        label = os.environ.get("BASELINE_LABEL", "version 1 (asks to close)")
        binaries.insert(0, (label, os.environ["BASELINE"]))
    rows = []
    for name, binary in binaries:
        steady, upgrading, reconnections, restarts = keep_alive_load(binary)
        drain, _ = idle_handover(binary)
        rows.append((name, steady, upgrading, reconnections, restarts, drain))
        print(f"{name}: done", file=sys.stderr)
    print(f"wrk -t2 -c32 --latency, {SECS} s steady, then {SECS} s with SIGHUP every 0.5 s; "
          f"then {IDLE} idle keep-alive connections and one SIGHUP\n")
    print("| handover | restarts | failed | reconnections per restart | successor accepts per restart "
          "| p99 steady | p99 restarting | ratio | old generation's drain, "
          f"{IDLE} idle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, steady, upgrading, reconnections, restarts, drain) in rows:
        per = reconnections / max(restarts, 1)
        print(f"| {name} | {restarts} | {steady[1] + upgrading[1]} | {per:.1f} | {per:.1f} "
              f"| {steady[2]:.2f} ms | {upgrading[2]:.2f} ms | {upgrading[2] / steady[2]:.2f}× "
              f"| {drain * 1000:.1f} ms |")


if __name__ == "__main__":
    sys.exit(main())
