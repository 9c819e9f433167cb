#!/usr/bin/env python3
"""Reproduces Server::Starter losing a TERM forwarded to a worker that has not reached
`exec` (docs/upstream/start-server-term-before-exec.md). Needs start_server
(libserver-starter-perl). Exits 1 with REPRODUCED when start_server hangs on such a worker.

Each try starts start_server with a worker that ends on TERM (`sleep`), sends it HUP, then
TERM after a delay swept across the moment it forks the new worker, and waits up to 3 s for
it to exit.
"""
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

TRIES = int(os.environ.get("TRIES", "300"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main():
    work = tempfile.mkdtemp()
    log_path = os.path.join(work, "log")
    for attempt in range(1, TRIES + 1):
        log = open(log_path, "w+")
        starter = subprocess.Popen(
            ["start_server", f"--port=127.0.0.1:{free_port()}", "--", "sleep", "1000"],
            stdout=log, stderr=log)
        deadline = time.time() + 5
        while "starting new worker" not in open(log_path).read():
            if time.time() > deadline:
                sys.exit("start_server did not start its worker")
            time.sleep(0.005)
        # start_server sleeps --interval (1 s) after each fork; let the first one pass.
        time.sleep(1.1)
        delay = random.uniform(0, 0.004)
        starter.send_signal(signal.SIGHUP)
        spin(delay)
        starter.send_signal(signal.SIGTERM)
        try:
            starter.wait(timeout=3)
        except subprocess.TimeoutExpired:
            workers = subprocess.run(["pgrep", "-a", "-P", str(starter.pid)],
                                     capture_output=True, text=True).stdout
            print(f"REPRODUCED on try {attempt} (TERM {delay * 1e6:.0f} us after HUP): "
                  f"start_server still waits 3 s after TERM for:\n{workers}")
            print(open(log_path).read())
            subprocess.run(["pkill", "-KILL", "-P", str(starter.pid)])
            starter.kill()
            starter.wait()
            sys.exit(1)
        log.close()
    print(f"not reproduced in {TRIES} tries")


if __name__ == "__main__":
    main()
