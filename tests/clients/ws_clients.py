#!/usr/bin/env python3
"""N WebSocket clients (PyPI's `websockets`) against an echo server under restarts.

Each client sends a numbered text message every --every seconds and waits for its echo;
when the server closes the connection the client records the close code (1006 when no
close frame came) and reconnects at once, then resends every message not echoed yet. The
harness sends --restarts SIGHUPs to --hup-pid (start_server), one at a time, each once every
client is connected, and waits until every client has reconnected.

It prints one `key value...` line per figure:

    clients N
    server_closes CODE COUNT          (one line per code)
    lost N                            (messages never echoed)
    restart K reconnections N peak_share S first_ms A last_ms B
    histogram K N0 N1 ...             (reconnections per 100 ms from the HUP)
    rtt_p99_ms steady A restart B

`peak_share` is the largest share of one restart's reconnections inside any 100 ms window.
"""

import argparse
import asyncio
import os
import signal
import sys
import time

import websockets
from websockets.exceptions import ConnectionClosed


class Client:
    def __init__(self, index):
        self.index = index
        self.seq = 0
        self.unacked = {}  # seq -> send time
        self.reconnects = []  # monotonic times of connections after the first
        self.server_closes = []  # (time, code)
        self.rtts = []  # (send time, rtt seconds)
        self.connected = False
        self.errors = 0

    async def session(self, url, every, stopping):
        async with websockets.connect(
            url, open_timeout=20, close_timeout=10, ping_interval=None, max_queue=None
        ) as ws:
            self.connected = True
            for seq in sorted(self.unacked):
                self.unacked[seq] = time.monotonic()
                await ws.send(f"{self.index}:{seq}")

            async def send():
                while not stopping.is_set():
                    self.seq += 1
                    self.unacked[self.seq] = time.monotonic()
                    await ws.send(f"{self.index}:{self.seq}")
                    await asyncio.sleep(every)
                # Done: wait for the last echoes (bounded), then leave.
                for _ in range(500):
                    if not self.unacked:
                        break
                    await asyncio.sleep(0.01)
                await ws.close()

            sender = asyncio.create_task(send())
            try:
                async for message in ws:
                    now = time.monotonic()
                    seq = int(message.split(":")[1])
                    sent = self.unacked.pop(seq, None)
                    if sent is not None:
                        self.rtts.append((sent, now - sent))
                    if stopping.is_set() and not self.unacked:
                        break
            except ConnectionClosed:
                pass
            finally:
                sender.cancel()
                self.connected = False
            if stopping.is_set() and not self.unacked:
                return True
            # The code of the server's close frame; 1006 when none came.
            self.server_closes.append((time.monotonic(), ws.close_code or 1006))
            return False

    async def run(self, url, every, stopping):
        first = True
        while True:
            if not first:
                self.reconnects.append(time.monotonic())
            first = False
            try:
                if await self.session(url, every, stopping):
                    return
            except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as e:
                self.errors += 1
                if self.errors > 100:
                    print(f"client {self.index}: giving up: {e!r}", file=sys.stderr)
                    return
                await asyncio.sleep(0.05)
            if stopping.is_set() and not self.unacked:
                return


def p99(values):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def peak_share(times, total, window=0.1):
    times = sorted(times)
    best, lo = 0, 0
    for hi in range(len(times)):
        while times[hi] - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best / total if total else 0.0


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--hup-pid", type=int, required=True)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--limit", type=float, default=60.0)
    args = parser.parse_args()

    stopping = asyncio.Event()
    clients = [Client(i) for i in range(args.clients)]
    tasks = []
    for client in clients:
        tasks.append(asyncio.create_task(client.run(args.url, args.every, stopping)))
        if len(tasks) % 50 == 0:
            await asyncio.sleep(0.05)  # within the listen backlog

    async def until(condition, what):
        deadline = time.monotonic() + args.limit
        while not condition():
            if time.monotonic() > deadline:
                print(f"timed out waiting for {what}", file=sys.stderr)
                sys.exit(3)
            await asyncio.sleep(0.01)

    await until(lambda: all(c.connected for c in clients), "every client to connect")
    steady_from = time.monotonic()
    await asyncio.sleep(args.settle)
    steady_to = time.monotonic()
    restarts = []
    for k in range(args.restarts):
        before = [len(c.reconnects) for c in clients]
        t0 = time.monotonic()
        os.kill(args.hup_pid, signal.SIGHUP)
        await until(
            lambda: all(len(c.reconnects) > b and c.connected for c, b in zip(clients, before)),
            f"every client to reconnect after restart {k}",
        )
        times = [c.reconnects[b] for c, b in zip(clients, before)]
        restarts.append((t0, times))
        await asyncio.sleep(args.settle)
    stopping.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.limit)

    print(f"clients {len(clients)}")
    codes = {}
    for c in clients:
        for _, code in c.server_closes:
            codes[code] = codes.get(code, 0) + 1
    for code, n in sorted(codes.items()):
        print(f"server_closes {code} {n}")
    print(f"lost {sum(len(c.unacked) for c in clients)}")
    print(f"errors {sum(c.errors for c in clients)}")
    restart_rtts = []
    for k, (t0, times) in enumerate(restarts):
        share = peak_share(times, len(times))
        first, last = (min(times) - t0) * 1000, (max(times) - t0) * 1000
        print(
            f"restart {k} reconnections {len(times)} peak_share {share:.3f} "
            f"first_ms {first:.0f} last_ms {last:.0f}"
        )
        bins = [0] * (int((max(times) - t0) / 0.1) + 1)
        for t in times:
            bins[int((t - t0) / 0.1)] += 1
        print(f"histogram {k} " + " ".join(map(str, bins)))
        end = max(times) + 0.5
        restart_rtts += [r for c in clients for s, r in c.rtts if t0 <= s <= end]
    steady = [r for c in clients for s, r in c.rtts if steady_from <= s <= steady_to]
    print(f"rtt_p99_ms steady {p99(steady) * 1000:.2f} restart {p99(restart_rtts) * 1000:.2f}")


asyncio.run(main())
