#!/usr/bin/env bash
# Soak: the `hello` server is upgraded every 0.2 s for at least RESTARTS restarts while wrk
# (HTTP/1.1 keep-alive) and ab (no keep-alive) load it at once. Two modes:
#
#   start_server  (default) Perl's start_server restarts the worker (`--interval=0`);
#   self-restart  `hello --self-restart` upgrades itself on SIGHUP (lameduck's restart
#                 module: socket handover, the readiness handshake), no supervisor.
#
# Every SAMPLE seconds it records the long-lived process's RSS and open fds (start_server's
# own, or — self-restart — none: every generation is new), the number of live server
# processes (a generation that never finishes draining would pile up here), zombies left
# behind, and the serving process's RSS and fds. Prints the load tools' figures, the samples'
# first/last/max, and fails if any request failed, an upgrade failed, or anything grew.
#
#   scripts/soak.sh                         # start_server, 1,000 restarts (about 4 minutes)
#   MODE=self-restart scripts/soak.sh       # 1,000 self-upgrades
#   RESTARTS=200 scripts/soak.sh
#
# Needs: start_server (libserver-starter-perl), ab (apache2-utils), wrk. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/start_server.sh
source scripts/start_server.sh

mode="${MODE:-start_server}"
case "$mode" in
    start_server) ;;
    self-restart)
        # Each generation's parent is the one before it, which exits: be the child subreaper
        # (kept across exec), so that they are reparented to this shell, which reaps them,
        # and a zombie or orphan left behind shows up here rather than under pid 1.
        if [ -z "${SOAK_SUBREAPER:-}" ]; then
            SOAK_SUBREAPER=1 exec python3 -c 'import ctypes, os, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
os.execvp(sys.argv[1], sys.argv[1:])' bash "$0" "$@"
        fi ;;
    *) echo "soak.sh: MODE must be start_server or self-restart, not '$mode'" >&2; exit 2 ;;
esac

restarts="${RESTARTS:-1000}"
restart=0.2
sample="${SAMPLE:-5}"
# A restart takes a little over 0.2 s; leave room for the last ones.
seconds=$(awk "BEGIN { print int($restarts * $restart * 1.25) + 10 }")

cargo build --quiet --release --example hello
hello="$(pwd)/target/release/examples/hello"
work="$(mktemp -d)"
trap 'kill $(cat "$work/app.pid" 2>/dev/null) 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ "$mode" = start_server ]; then
    start_server --interval=0 --port="127.0.0.1:$port" --pid-file="$work/app.pid" \
        --log-file="$work/server.log" -- "$hello" &
    supervisor=$!
    serving() { pgrep -n -P "$supervisor" || echo "$supervisor"; }
    generations() { pgrep -P "$supervisor" | grep -c . || true; }
    restarts_so_far() { echo $(( $(grep -c 'starting new worker' "$work/server.log") - 1 )); }
    hup() { kill -HUP "$supervisor" 2>/dev/null || true; }
    alive() { kill -0 "$supervisor" 2>/dev/null; }
else
    "$hello" "127.0.0.1:$port" --self-restart --pid-file "$work/app.pid" 2> "$work/server.log" &
    supervisor=
    serving() { cat "$work/app.pid" 2>/dev/null || echo 0; }
    generations() { pgrep -f -x "$hello 127.0.0.1:$port --self-restart --pid-file $work/app.pid" | grep -c . || true; }
    restarts_so_far() { grep -c 'upgrade: successor .* serves after' "$work/server.log" || true; }
    hup() { kill -HUP "$(serving)" 2>/dev/null || true; }
    alive() { [ -s "$work/app.pid" ] && kill -0 "$(serving)" 2>/dev/null; }
fi
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do alive && break; sleep 0.1; done

( while alive; do
      sleep "$restart"
      hup
  done ) &
hupper=$!

url="http://127.0.0.1:$port/"
wrk -t1 -c50 "-d${seconds}s" --timeout 10s "$url" > "$work/wrk.txt" 2>&1 &
wrk_pid=$!
ab -r -q -s 10 -t "$seconds" -n 100000000 -c 50 "$url" > "$work/ab.txt" 2>&1 &
ab_pid=$!

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
zombies() { ps -o stat= --ppid $$ | grep -c '^Z' || true; }

echo "time_s,restarts,supervisor_rss_kb,supervisor_fds,live_generations,zombies,serving_rss_kb,serving_fds" > "$work/samples.csv"
started=$SECONDS
while kill -0 "$wrk_pid" 2>/dev/null || kill -0 "$ab_pid" 2>/dev/null; do
    if [ -n "$supervisor" ]; then sup="$(rss_kb "$supervisor"),$(fds "$supervisor")"; else sup="0,0"; fi
    now=$(serving)
    echo "$((SECONDS - started)),$(restarts_so_far),$sup,$(generations),$(zombies),$(rss_kb "$now"),$(fds "$now")" >> "$work/samples.csv"
    if [ "$(restarts_so_far)" -ge "$restarts" ]; then
        kill -INT "$wrk_pid" "$ab_pid" 2>/dev/null || true
    fi
    sleep "$sample"
done
wait "$wrk_pid" "$ab_pid" 2>/dev/null || true
kill "$hupper" 2>/dev/null || true
wait "$hupper" 2>/dev/null || true
total_restarts=$(restarts_so_far)
if [ -n "$supervisor" ]; then
    stop_start_server "$supervisor"
else
    last=$(serving)
    kill -TERM "$last"
    for _ in $(seq 400); do [ "$(generations)" -eq 0 ] && break; sleep 0.1; done
    wait 2>/dev/null || true
fi
left=$(generations)
left_zombies=$(zombies)

echo "== wrk -c50 (keep-alive)"
grep -E "requests in|Socket errors|Non-2xx|Requests/sec" "$work/wrk.txt" || true
echo "== ab -c50 (no keep-alive)"
grep -E "Complete requests|Failed requests|Non-2xx|Requests per second" "$work/ab.txt" || true
echo "== $mode: $total_restarts restarts in $((SECONDS - started)) s"
echo "== generations that cut connections: $(grep -c 'deadline_hit: true' "$work/server.log" || true)"
upgrade_failures=0
if [ "$mode" = self-restart ]; then
    # A SIGHUP while the previous upgrade still runs is refused by design (one at a time);
    # any other "upgrade failed" is a failure.
    refused=$(grep -c 'upgrade failed: upgrade in progress' "$work/server.log" || true)
    upgrade_failures=$(grep 'upgrade failed' "$work/server.log" | grep -vc 'upgrade in progress' || true)
    echo "== SIGHUPs refused as \"upgrade in progress\": $refused; upgrades failed: $upgrade_failures"
    # No line left (every failure a refused SIGHUP) is the good case, not an error for
    # pipefail: the listing is for reading only.
    { grep 'upgrade failed' "$work/server.log" | grep -v 'upgrade in progress' || true; } |
        head -5 | sed 's/^/   /'
fi
echo "== after the stop: $left server processes, $left_zombies zombies"
echo "== samples ($work/samples.csv, copied to target/soak-samples.csv; the server's log and the load tools' output to target/soak-*.txt)"
cp "$work/samples.csv" target/soak-samples.csv
cp "$work/server.log" target/soak-server.txt
cp "$work/wrk.txt" target/soak-wrk.txt
cp "$work/ab.txt" target/soak-ab.txt
column -s, -t < "$work/samples.csv" | sed -n '1,3p;$p'
awk -F, 'NR > 1 {
    if (NR == 2) { s0 = $3; f0 = $4; r0 = $7; d0 = $8 }
    s1 = $3; f1 = $4
    # A sample can catch the serving process just as it exits (0 fds): skip it.
    if ($8 > 0) { r1 = $7; d1 = $8 }
    if ($5 > maxg) maxg = $5
    if ($6 > maxz) maxz = $6
    if ($7 > maxr) maxr = $7
    if ($8 > maxf) maxf = $8
} END {
    printf "supervisor RSS %d -> %d kB, fds %d -> %d; live generations max %d; zombies max %d; serving RSS %d -> %d kB (max %d), fds %d -> %d (max %d)\n", s0, s1, f0, f1, maxg, maxz, r0, r1, maxr, d0, d1, maxf
}' "$work/samples.csv"

failed=0
grep -qE "Socket errors|Non-2xx" "$work/wrk.txt" && failed=1
ab_failed=$(awk '/Failed requests/ { print $3 }' "$work/ab.txt")
[ "${ab_failed:-1}" = "0" ] || failed=1
[ "$total_restarts" -ge "$restarts" ] || { echo "only $total_restarts restarts"; failed=1; }
[ "$upgrade_failures" -eq 0 ] || failed=1
[ "$left" -eq 0 ] && [ "$left_zombies" -eq 0 ] || { echo "processes left behind"; failed=1; }
if [ "$failed" -ne 0 ]; then echo "SOAK FAILED"; exit 1; fi
echo "SOAK OK"
