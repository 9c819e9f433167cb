#!/usr/bin/env python3
"""Rolling updates of a small fleet behind Debian's HAProxy, every server side by side, and
one rolling update of lameduck drawn from its own metrics (issue 12).

    cargo build --release -p lameduck-benches --bins && cargo build --release --example hello
    python3 benches/fleet.py            # writes target/bench/fleet.csv, target/bench/timeline.csv
                                        # and target/bench/rolling-update.svg

1. **Lost requests**, per server: two instances, each on its own socket, behind HAProxy in TCP
   mode with `retries 0`; every second the oldest is replaced: the new one starts and is put
   in (`enable server`), the old one gets SIGTERM and is taken out (`disable server`) 300 ms
   later — as kube-proxy removes an endpoint, late. `wrk -t2 -c50` through the balancer for
   SECS s counts socket errors and non-2xx. Servers: bench_server's `plain` (exits at
   SIGTERM), `hyper-util`, `axum`, `lameduck` without and with a 1 s lame duck
   (LAMEDUCK_LAME_DUCK), and Go's net/http when benches/go was built (target/release/go_server).
2. **Timeline**: the same update of `hello` with a 1 s lame duck, HAProxy in HTTP mode checking
   `GET /ready` every 100 ms (nobody removes anything by hand). Every 100 ms: each live
   instance's `GET /metrics` (connections per state, the phase; the scrape's own connection
   is one of the Active ones) and HAProxy's `show stat` (each server's 2xx count, so requests
   per second per instance). Drawn as an SVG.

Loopback only; about 1 minute.
"""
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from loopback import free_port, get, wrk_figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
OUT = os.path.join(ROOT, "target", "bench")
SECS = int(os.environ.get("SECS", "8"))
FLEET, SLOTS = 2, 10


def wait_listening(port, what):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit(f"{what} never listened on {port}")


class Balancer:
    def __init__(self, ports, http, tmp):
        self.port = free_port()
        self.sock = os.path.join(tmp, "admin.sock")
        lines = [
            "global", f"  stats socket {self.sock} mode 600 level admin",
            "defaults", f"  mode {'http' if http else 'tcp'}", "  retries 0", "  timeout connect 1s",
            "  timeout client 30s", "  timeout server 30s",
            "frontend fe", f"  bind 127.0.0.1:{self.port}", "  default_backend be",
            "backend be", "  balance roundrobin",
        ]
        if http:
            lines += ["  option httpchk GET /ready", "  http-check expect status 200"]
        for i, p in enumerate(ports):
            check = " check inter 100 fall 1 rise 1" if http else ""
            lines.append(f"  server s{i} 127.0.0.1:{p}{check}{' disabled' if i >= FLEET else ''}")
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(500):
            if os.path.exists(self.sock):
                break
            time.sleep(0.01)

    def command(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def stat(self):
        """{server: (status, 2xx responses)} for the backend's servers."""
        rows = {}
        text = self.command("show stat")
        header = text.splitlines()[0].lstrip("# ").split(",")
        i_status, i_2xx = header.index("status"), header.index("hrsp_2xx")
        for line in text.splitlines()[1:]:
            f = line.split(",")
            if len(f) > i_2xx and f[0] == "be" and f[1].startswith("s"):
                rows[f[1]] = (f[i_status], int(f[i_2xx] or 0))
        return rows

    def wait_up(self, slot):
        for _ in range(500):
            if self.stat().get(f"s{slot}", ("",))[0] == "UP":
                return
            time.sleep(0.02)
        raise SystemExit(f"s{slot} never UP")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def wrk(port):
    out = subprocess.run(["wrk", "-t2", "-c50", f"-d{SECS}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=SECS + 60).stdout
    return wrk_figures(out)


def rolling_update(command, env, http, on_start=None, on_term=None, on_balancer=None):
    """command(port) -> argv. Returns (requests, failed, updates)."""
    ports = [free_port() for _ in range(SLOTS)]
    with tempfile.TemporaryDirectory() as tmp:
        def start(slot):
            p = subprocess.Popen(command(ports[slot]), env={**os.environ, **env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_listening(ports[slot], command(ports[slot])[0])
            if on_start:
                on_start(slot, ports[slot])
            return p

        serving = [(slot, start(slot)) for slot in range(FLEET)]
        balancer = Balancer(ports, http, tmp)
        if on_balancer:
            on_balancer(balancer)
        try:
            if http:
                for slot, _ in serving:
                    balancer.wait_up(slot)
            result = {}
            load = threading.Thread(target=lambda: result.update(zip(("requests", "failed"), wrk(balancer.port))))
            load.start()
            started, retired, updates = time.monotonic(), [], 0
            for slot in range(FLEET, SLOTS):
                time.sleep(1)
                if time.monotonic() - started > SECS - 2:
                    break
                new = start(slot)
                balancer.command(f"enable server be/s{slot}")
                if http:
                    balancer.wait_up(slot)
                old_slot, old = serving.pop(0)
                old.send_signal(signal.SIGTERM)
                if on_term:
                    on_term(old_slot)
                if not http:
                    time.sleep(0.3)
                    balancer.command(f"disable server be/s{old_slot}")
                serving.append((slot, new))
                retired.append(old)
                updates += 1
            load.join()
        finally:
            for _, p in serving:
                p.send_signal(signal.SIGTERM)
            for p in [p for _, p in serving] + retired:
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
            balancer.stop()
    return result["requests"], result["failed"], updates


def lost_requests():
    bench = os.path.join(BIN, "bench_server")
    servers = [
        ("plain hyper (exits at SIGTERM)", lambda p: [bench, "plain", "multi", f"127.0.0.1:{p}"], {}),
        ("hyper-util GracefulShutdown", lambda p: [bench, "hyper-util", "multi", f"127.0.0.1:{p}"], {}),
        ("axum with_graceful_shutdown", lambda p: [bench, "axum", "multi", f"127.0.0.1:{p}"], {}),
    ]
    go = os.path.join(BIN, "go_server")
    if os.path.exists(go):
        servers.append(("Go net/http Shutdown", lambda p: [go, f"127.0.0.1:{p}"], {}))
    else:
        print("fleet: no target/release/go_server (benches/run.sh builds it with Go): no Go row",
              file=sys.stderr)
    servers += [
        ("lameduck, no lame duck", lambda p: [bench, "lameduck", "multi", f"127.0.0.1:{p}"],
         {"LAMEDUCK_LAME_DUCK": "0s"}),
        ("lameduck, 1 s lame duck", lambda p: [bench, "lameduck", "multi", f"127.0.0.1:{p}"],
         {"LAMEDUCK_LAME_DUCK": "1s"}),
    ]
    rows = []
    for name, command, env in servers:
        requests, failed, updates = rolling_update(command, env, http=False)
        print(f"fleet: {name}: {failed} failed of {requests} across {updates} updates", file=sys.stderr)
        rows.append({"server": name, "requests": requests, "failed": failed, "updates": updates})
    with open(os.path.join(OUT, "fleet.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["server", "requests", "failed", "updates"])
        w.writeheader()
        w.writerows(rows)
    return rows


def scrape(port):
    """{'new': n, ..., 'phase': name} from hello's /metrics, or None if it is gone."""
    data = get(port, "/metrics", timeout=0.5)
    if data is None:
        return None
    text = data.decode(errors="replace")
    out = {m.group(1): int(float(m.group(2)))
           for m in re.finditer(r'lameduck_connections\{state="(\w+)"\} (\S+)', text)}
    phases = [m.group(1) for m in re.finditer(r'lameduck_phase\{phase="(\w+)"\} 1', text)]
    out["phase"] = phases[0] if phases else "?"
    return out


def timeline():
    hello = os.path.join(ROOT, "target", "release", "examples", "hello")
    live, terms, samples = {}, {}, []
    stop = threading.Event()
    balancer_box = {}
    t0 = time.monotonic()

    def on_start(slot, port):
        live[slot] = port

    def on_term(slot):
        terms[slot] = time.monotonic() - t0

    def sampler():
        last = {}
        while not stop.is_set():
            now = time.monotonic() - t0
            stat = {}
            if "b" in balancer_box:
                try:
                    stat = balancer_box["b"].stat()
                except OSError:
                    pass
            for slot, port in list(live.items()):
                m = scrape(port)
                if m is None:
                    del live[slot]
                    continue
                ok = stat.get(f"s{slot}", ("", None))[1]
                rate = ""
                if ok is not None and slot in last:
                    rate = (ok - last[slot][1]) / (now - last[slot][0])
                if ok is not None:
                    last[slot] = (now, ok)
                samples.append({"t": round(now, 3), "instance": slot, "phase": m["phase"],
                                "new": m.get("new", 0), "active": m.get("active", 0),
                                "idle": m.get("idle", 0), "upgraded": m.get("upgraded", 0),
                                "rps": "" if rate == "" else round(rate)})
            time.sleep(0.1)

    thread = threading.Thread(target=sampler)
    thread.start()
    try:
        requests, failed, updates = rolling_update(
            lambda p: [hello, f"127.0.0.1:{p}"], {"LAMEDUCK_LAME_DUCK": "1s"}, http=True,
            on_start=on_start, on_term=on_term, on_balancer=lambda b: balancer_box.update(b=b))
    finally:
        stop.set()
        thread.join()
    with open(os.path.join(OUT, "timeline.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", "instance", "phase", "new", "active", "idle", "upgraded", "rps"])
        w.writeheader()
        w.writerows(samples)
    print(f"fleet: timeline: hello, 1 s lame duck, HAProxy http /ready: {failed} failed of {requests} "
          f"across {updates} updates", file=sys.stderr)
    return samples, terms, (requests, failed, updates)


PHASE_COLOUR = {"serving": "#2e8b57", "lame_duck": "#e69f00", "draining": "#c0392b", "drained": "#777"}
STATE_COLOUR = {"new": "#9ecae1", "active": "#2b7bb9", "idle": "#f4a582", "upgraded": "#8e44ad"}
INSTANCE_COLOUR = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#1f78b4", "#a6761d", "#666666",
                   "#b15928", "#e6ab02"]


def svg(samples, terms, figures):
    """Three panels on one time axis: requests/s per instance, connections per state (fleet
    total, stacked), each instance's phase."""
    width, left, right = 820, 60, 20
    t_max = max(s["t"] for s in samples)
    x = lambda t: left + (width - left - right) * t / t_max
    els = []
    y = 10
    requests, failed, updates = figures
    els.append(f'<text x="{left}" y="{y + 14}" font-size="15" font-weight="bold">A rolling update behind '
               f'HAProxy: {failed} failed of {requests:,} requests, {updates} instances replaced</text>')
    y += 24
    els.append(f'<text x="{left}" y="{y + 12}" font-size="12">two hello instances, one replaced a second; '
               f'LAMEDUCK_LAME_DUCK=1s; HAProxy checks GET /ready every 100 ms; wrk -c50</text>')
    y += 16
    els.append(f'<text x="{left}" y="{y + 12}" font-size="12">sampled every 100 ms from each instance\'s '
               f'/metrics (reachable until it stops accepting) and HAProxy\'s show stat</text>')
    y += 26

    def panel(title, height, y0, series_max):
        els.append(f'<text x="{left}" y="{y0 + 12}" font-size="13" font-weight="bold">{title}</text>')
        top, bottom = y0 + 20, y0 + 20 + height
        els.append(f'<line x1="{left}" y1="{bottom}" x2="{width - right}" y2="{bottom}" stroke="#999"/>')
        els.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#999"/>')
        els.append(f'<text x="{left - 4}" y="{top + 10}" font-size="10" text-anchor="end">{series_max:,.0f}</text>')
        els.append(f'<text x="{left - 4}" y="{bottom}" font-size="10" text-anchor="end">0</text>')
        for t, slot in sorted((t, s) for s, t in terms.items()):
            els.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{bottom}" stroke="#c0392b" '
                       f'stroke-dasharray="3 3" stroke-width="0.8"/>')
        yv = lambda v: bottom - height * v / (series_max or 1)
        return top, bottom, yv

    # A: requests per second per instance.
    rates = [s for s in samples if s["rps"] != ""]
    rmax = max((s["rps"] for s in rates), default=1)
    top, bottom, yv = panel("Requests per second, per instance (HAProxy's 2xx count; dashed: SIGTERM)", 150, y, rmax)
    for slot in sorted({s["instance"] for s in rates}):
        pts = " ".join(f"{x(s['t']):.1f},{yv(s['rps']):.1f}" for s in rates if s["instance"] == slot)
        els.append(f'<polyline points="{pts}" fill="none" stroke="{INSTANCE_COLOUR[slot % 10]}" stroke-width="1.5"/>')
    y = bottom + 16

    # B: the fleet's connections per state, stacked.
    by_t = {}
    for s in samples:
        b = by_t.setdefault(round(s["t"], 1), {k: 0 for k in STATE_COLOUR})
        for k in STATE_COLOUR:
            b[k] += s[k]
    ts = sorted(by_t)
    cmax = max(sum(by_t[t].values()) for t in ts) or 1
    top, bottom, yv = panel("Connections per state, whole fleet (stacked)", 150, y, cmax)
    base = {t: 0 for t in ts}
    for state, colour in STATE_COLOUR.items():
        upper = [(t, base[t] + by_t[t][state]) for t in ts]
        pts = [f"{x(t):.1f},{yv(v):.1f}" for t, v in upper] + \
              [f"{x(t):.1f},{yv(base[t]):.1f}" for t in reversed(ts)]
        els.append(f'<polygon points="{" ".join(pts)}" fill="{colour}" stroke="none"/>')
        for t, v in upper:
            base[t] = v
    lx = width - right - 4 * 75
    for state, colour in STATE_COLOUR.items():
        els.append(f'<rect x="{lx}" y="{top - 18}" width="10" height="10" fill="{colour}"/>')
        els.append(f'<text x="{lx + 14}" y="{top - 9}" font-size="11">{state}</text>')
        lx += 75
    y = bottom + 16

    # C: each instance's phase.
    slots = sorted({s["instance"] for s in samples})
    els.append(f'<text x="{left}" y="{y + 12}" font-size="13" font-weight="bold">Each instance\'s phase '
               f'(from its lameduck_phase gauge)</text>')
    y += 20
    for slot in slots:
        mine = [s for s in samples if s["instance"] == slot]
        for a, b in zip(mine, mine[1:] + [None]):
            end = b["t"] if b else a["t"] + 0.1
            els.append(f'<rect x="{x(a["t"]):.1f}" y="{y}" width="{max(x(end) - x(a["t"]), 0.5):.1f}" height="10" '
                       f'fill="{PHASE_COLOUR.get(a["phase"], "#ccc")}"/>')
        els.append(f'<text x="{left - 4}" y="{y + 9}" font-size="10" text-anchor="end" '
                   f'fill="{INSTANCE_COLOUR[slot % 10]}">#{slot}</text>')
        y += 13
    lx = left + 10
    y += 4
    for phase, colour in PHASE_COLOUR.items():
        els.append(f'<rect x="{lx}" y="{y}" width="10" height="10" fill="{colour}"/>')
        els.append(f'<text x="{lx + 14}" y="{y + 9}" font-size="11">{phase}</text>')
        lx += 90
    y += 18
    for sec in range(int(t_max) + 1):
        els.append(f'<text x="{x(sec):.1f}" y="{y + 10}" font-size="10" text-anchor="middle">{sec} s</text>')
    y += 20
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="sans-serif">',
                      '<rect width="100%" height="100%" fill="white"/>', *els, "</svg>"]) + "\n"


def main():
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["lost", "timeline"]
    if "lost" in which:
        rows = lost_requests()
        print("| server | failed | requests | updates |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['server']} | {r['failed']:,} | {r['requests']:,} | {r['updates']} |")
    if "timeline" in which:
        samples, terms, figures = timeline()
        with open(os.path.join(OUT, "rolling-update.svg"), "w") as f:
            f.write(svg(samples, terms, figures))
        print(f"timeline: {figures[1]} failed of {figures[0]:,} across {figures[2]} updates; "
              f"{len(samples)} samples -> target/bench/rolling-update.svg")


if __name__ == "__main__":
    sys.exit(main())
