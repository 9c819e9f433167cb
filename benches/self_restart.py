#!/usr/bin/env python3
"""Self-restart (`hello --self-restart`) against Perl's start_server, the same hello server under both.

    cargo build --release --example hello && python3 benches/self_restart.py

1. Handover, idle, UPGRADES upgrades each (median / max):
   - HUP -> new serves: the first response on a fresh connection that comes from a new pid
     (hello answers "from pid N"), polled every ~1 ms;
   - HUP -> old gone: the process that answered before the HUP has exited (a zombie counts).
2. Throughput while upgrading: wrk -t1 -c50 for SECS s steady, then SECS s with a SIGHUP every
   0.5 s; the ratio upgrading/steady, with wrk's socket errors and non-2xx responses.

start_server runs with --interval=1: it retires the old worker 1 s after starting the new one,
ready or not (its own clock, not a readiness signal; --interval takes whole seconds only).
The self-restarting server retires the old process when the successor says READY, and that one
stays PROBATION (250 ms) so it can replace a successor that dies at once. Prints a Markdown table.
"""
import ctypes
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from loopback import free_port, get, wrk_figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = os.path.join(ROOT, "target", "release", "examples", "hello")
SECS = int(os.environ.get("SECS", "8"))
UPGRADES = int(os.environ.get("UPGRADES", "20"))

# Be a subreaper (PR_SET_CHILD_SUBREAPER): each generation of the self-restarting server
# becomes our child once its parent exits, and we reap it, so "gone" is observable.
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def answering_pid(port):
    """The pid in hello's answer on a fresh connection, or 0 if nobody answered."""
    m = re.search(rb"from pid +(\d+)", get(port, "/") or b"")
    return int(m.group(1)) if m else 0


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_serving(port):
    for _ in range(1000):
        if answering_pid(port):
            return
        time.sleep(0.01)
    raise SystemExit(f"nothing serves on port {port}")


class SelfRestart:
    name = "lameduck `hello --self-restart`"

    def __init__(self, port, tmp):
        self.pid_file = os.path.join(tmp, "hello.pid")
        self.proc = subprocess.Popen(
            [HELLO, f"127.0.0.1:{port}", "--self-restart", "--pid-file", self.pid_file],
            stderr=subprocess.DEVNULL)
        wait_serving(port)

    def serving(self):
        with open(self.pid_file) as f:
            return int(f.read().strip())

    def hup(self):
        os.kill(self.serving(), signal.SIGHUP)

    def stop(self):
        pid = self.serving()
        os.kill(pid, signal.SIGTERM)
        while not gone(pid):
            time.sleep(0.01)
            reap()


class StartServer:
    name = "`start_server --interval=1`"

    def __init__(self, port, tmp):
        self.proc = subprocess.Popen(
            ["start_server", f"--port=127.0.0.1:{port}", "--interval=1", "--", HELLO],
            stderr=subprocess.DEVNULL)
        wait_serving(port)

    def hup(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self):
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            # start_server can lose a TERM forwarded to a worker it has just forked
            # (scripts/start_server.sh); never leave it behind.
            subprocess.run(["pkill", "-KILL", "-P", str(self.proc.pid)])
            self.proc.kill()
            self.proc.wait()


def handover(server, port):
    serve, whole = [], []
    for _ in range(UPGRADES):
        old = answering_pid(port)
        t0 = time.monotonic()
        server.hup()
        while answering_pid(port) in (0, old):
            time.sleep(0.001)
        t1 = time.monotonic()
        while not gone(old):
            time.sleep(0.001)
        t2 = time.monotonic()
        serve.append((t1 - t0) * 1000)
        whole.append((t2 - t0) * 1000)
        reap()
        # Let start_server's interval pass too, so each upgrade starts from one worker.
        time.sleep(1.3)
    return serve, whole


def wrk(port, server=None):
    cmd = ["wrk", "-t1", "-c50", f"-d{SECS}s", f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    hups = 0
    if server:
        end = time.monotonic() + SECS - 0.5
        while time.monotonic() < end:
            time.sleep(0.5)
            server.hup()
            hups += 1
            reap()
    out = proc.communicate()[0]
    requests, errors = wrk_figures(out)
    return requests / SECS, errors, hups


def main():
    rows = []
    for kind in (SelfRestart, StartServer):
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            server = kind(port, tmp)
            try:
                serve, whole = handover(server, port)
                steady, e0, _ = wrk(port)
                time.sleep(1.3)
                upgrading, e1, hups = wrk(port, server)
                time.sleep(1.3)
            finally:
                server.stop()
                reap()
        rows.append((kind.name, statistics.median(serve), max(serve), statistics.median(whole),
                     max(whole), steady, upgrading, upgrading / steady, e0 + e1, hups))
        print(f"{kind.name}: done", file=sys.stderr)
    print(f"{UPGRADES} idle upgrades each; wrk -t1 -c50 {SECS} s steady, then {SECS} s with SIGHUP every 0.5 s\n")
    print("| server | HUP → new serves (median / max) | HUP → old gone (median / max) "
          "| req/s steady | req/s upgrading | upgrading / steady | failed | upgrades under load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.1f} / {r[2]:.1f} ms | {r[3]:.1f} / {r[4]:.1f} ms | {r[5]:,.0f} "
              f"| {r[6]:,.0f} | {r[7]:.3f}× | {r[8]} | {r[9]} |")


if __name__ == "__main__":
    sys.exit(main())
