#!/usr/bin/env python3
"""Draws reconnections per 100 ms over one restart, spread off and on, as an SVG on stdout,
from the `histogram 0 ...` lines of two tests/clients/ws_clients.py outputs."""

import sys


def histogram(path):
    for line in open(path):
        if line.startswith("histogram 0 "):
            return [int(n) for n in line.split()[2:]]
    raise SystemExit(f"{path}: no histogram")


off, on = histogram(sys.argv[1]), histogram(sys.argv[2])
total = max(sum(off), 1)
bins = max(len(off), len(on), 35)
W, H, left, top, gap = 760, 430, 60, 40, 50
plot_h = (H - top - 2 * gap - 40) / 2
bw = (W - left - 20) / bins
peak = max(max(off), max(on), 1)
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{left}" y="20" font-size="14">WebSocket reconnections per 100 ms after the HUP, {total} clients (start_server retires the old worker at 1 s)</text>',
]
for i, (name, data, color) in enumerate(
    [("spread off: every ask at SIGTERM", off, "#c0392b"), ("LAMEDUCK_SPREAD=2s", on, "#2471a3")]
):
    y0 = top + gap + i * (plot_h + gap)
    share = max(data) / max(sum(data), 1)
    out.append(f'<text x="{left}" y="{y0 - 8:.0f}">{name}: peak {max(data)} in one 100 ms bin ({share:.0%} of the restart)</text>')
    out.append(f'<line x1="{left}" y1="{y0 + plot_h:.1f}" x2="{W - 20}" y2="{y0 + plot_h:.1f}" stroke="black"/>')
    for b, n in enumerate(data):
        h = plot_h * n / peak
        out.append(f'<rect x="{left + b * bw:.1f}" y="{y0 + plot_h - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" fill="{color}"/>')
    out.append(f'<text x="{left - 8}" y="{y0 + 4:.0f}" text-anchor="end">{peak}</text>')
    out.append(f'<text x="{left - 8}" y="{y0 + plot_h + 4:.0f}" text-anchor="end">0</text>')
for s in range(0, int(bins / 10) + 1):
    x = left + s * 10 * bw
    out.append(f'<text x="{x:.0f}" y="{H - 20}" text-anchor="middle">{s} s</text>')
out.append("</svg>")
print("\n".join(out))
