#!/usr/bin/env bash
# Soak: Perl's start_server restarts the `hello` worker every 0.2 s (`--interval=0`) for at
# least RESTARTS restarts while wrk (HTTP/1.1 keep-alive) and ab (no keep-alive) load it at
# once. Every SAMPLE seconds it records the supervisor's RSS and open fds, the number of
# live workers (a worker that never finishes draining would pile up here) and the newest
# worker's RSS and fds. Prints the load tools' figures, the samples' first/last/max, and
# fails if any request failed or anything grew.
#
#   scripts/soak.sh                 # 1,000 restarts (about 4 minutes)
#   RESTARTS=200 scripts/soak.sh
#
# Needs: start_server (libserver-starter-perl), ab (apache2-utils), wrk. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/start_server.sh
source scripts/start_server.sh

restarts="${RESTARTS:-1000}"
restart=0.2
sample="${SAMPLE:-5}"
# start_server needs a little over 0.2 s per restart; leave room for the last ones.
seconds=$(awk "BEGIN { print int($restarts * $restart * 1.25) + 10 }")

cargo build --quiet --release --example hello
hello="$(pwd)/target/release/examples/hello"
work="$(mktemp -d)"
trap 'kill $(cat "$work/app.pid" 2>/dev/null) 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_server --interval=0 --port="127.0.0.1:$port" --pid-file="$work/app.pid" \
    --log-file="$work/server.log" -- "$hello" &
supervisor=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

restarts_so_far() { echo $(( $(grep -c 'starting new worker' "$work/server.log") - 1 )); }

( while kill -0 "$supervisor" 2>/dev/null; do
      sleep "$restart"
      kill -HUP "$supervisor" 2>/dev/null || true
  done ) &
hupper=$!

url="http://127.0.0.1:$port/"
wrk -t1 -c50 "-d${seconds}s" --timeout 10s "$url" > "$work/wrk.txt" 2>&1 &
wrk_pid=$!
ab -r -q -s 10 -t "$seconds" -n 100000000 -c 50 "$url" > "$work/ab.txt" 2>&1 &
ab_pid=$!

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

echo "time_s,restarts,supervisor_rss_kb,supervisor_fds,live_workers,newest_worker_rss_kb,newest_worker_fds" > "$work/samples.csv"
started=$SECONDS
while kill -0 "$wrk_pid" 2>/dev/null || kill -0 "$ab_pid" 2>/dev/null; do
    workers=$(pgrep -P "$supervisor" || true)
    newest=$(pgrep -n -P "$supervisor" || echo "$supervisor")
    echo "$((SECONDS - started)),$(restarts_so_far),$(rss_kb "$supervisor"),$(fds "$supervisor"),$(echo "$workers" | grep -c . || true),$(rss_kb "$newest"),$(fds "$newest")" >> "$work/samples.csv"
    if [ "$(restarts_so_far)" -ge "$restarts" ]; then
        kill -INT "$wrk_pid" "$ab_pid" 2>/dev/null || true
    fi
    sleep "$sample"
done
wait "$wrk_pid" "$ab_pid" 2>/dev/null || true
kill "$hupper" 2>/dev/null || true
total_restarts=$(restarts_so_far)
stop_start_server "$supervisor"

echo "== wrk -c50 (keep-alive)"
grep -E "requests in|Socket errors|Non-2xx|Requests/sec" "$work/wrk.txt" || true
echo "== ab -c50 (no keep-alive)"
grep -E "Complete requests|Failed requests|Non-2xx|Requests per second" "$work/ab.txt" || true
echo "== restarts: $total_restarts in $((SECONDS - started)) s"
echo "== workers that cut connections: $(grep -c 'deadline_hit: true' "$work/server.log" || true)"
echo "== samples ($work/samples.csv, copied to target/soak-samples.csv)"
cp "$work/samples.csv" target/soak-samples.csv
column -s, -t < "$work/samples.csv" | sed -n '1,3p;$p'
awk -F, 'NR > 1 {
    if (NR == 2) { s0 = $3; f0 = $4 }
    s1 = $3; f1 = $4
    if ($5 > maxw) maxw = $5
    if ($6 > maxwr) maxwr = $6
    if ($7 > maxwf) maxwf = $7
} END {
    printf "supervisor RSS %d -> %d kB, fds %d -> %d; live workers max %d; worker RSS max %d kB, fds max %d\n", s0, s1, f0, f1, maxw, maxwr, maxwf
}' "$work/samples.csv"

failed=0
grep -qE "Socket errors|Non-2xx" "$work/wrk.txt" && failed=1
ab_failed=$(awk '/Failed requests/ { print $3 }' "$work/ab.txt")
[ "${ab_failed:-1}" = "0" ] || failed=1
[ "$total_restarts" -ge "$restarts" ] || { echo "only $total_restarts restarts"; failed=1; }
if [ "$failed" -ne 0 ]; then echo "SOAK FAILED"; exit 1; fi
echo "SOAK OK"
