#!/usr/bin/env bash
# The seed experiment, long version: Perl's start_server restarts the `hello` worker every
# RESTART seconds while a load tool runs; prints each tool's figures. Loopback only, bounded.
#
#   scripts/seed-experiment.sh            # lameduck's hello
#   HELLO_NAIVE=1 scripts/seed-experiment.sh   # the naive server, for contrast
#
# Needs: start_server (libserver-starter-perl), ab (apache2-utils), wrk, hey.
# Tunables: RESTART (s, default 1), REQUESTS (ab -n, default 100000), CONCURRENCY (ab -c,
# default 1000), SECONDS_PER_TOOL (wrk/hey duration, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/start_server.sh
source scripts/start_server.sh

restart="${RESTART:-1}"
requests="${REQUESTS:-100000}"
concurrency="${CONCURRENCY:-1000}"
seconds="${SECONDS_PER_TOOL:-60}"

cargo build --quiet --release --example hello
hello="$(pwd)/target/release/examples/hello"
work="$(mktemp -d)"
trap 'kill $(cat "$work/app.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true

run() {
    local name="$1"; shift
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    local interval=()
    # start_server retires the old worker `--interval` (1 s) after starting the new one.
    if awk "BEGIN { exit !($restart < 1) }"; then interval=(--interval=0); fi
    start_server "${interval[@]}" --port="127.0.0.1:$port" --pid-file="$work/app.pid" \
        --log-file="$work/server.log" -- "$hello" &
    local supervisor=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    ( while kill -0 "$supervisor" 2>/dev/null; do sleep "$restart"; kill -HUP "$supervisor" 2>/dev/null; done ) &
    local hupper=$!
    local url="http://127.0.0.1:$port/"
    local started=$SECONDS
    echo "== $name"
    "$@" "$url" 2>&1 | grep -E "Complete requests|Failed requests|Non-2xx|Requests per second|requests in|Socket errors|Requests/sec|\[[0-9]{3}\]|Error distribution" -A0 || true
    kill "$hupper" 2>/dev/null || true
    stop_start_server "$supervisor"
    echo "   restarts: $(( $(grep -c 'starting new worker' "$work/server.log") - 1 )) in $((SECONDS - started)) s"
    echo "   workers that cut connections: $(grep -c 'deadline_hit: true' "$work/server.log" || true)"
    : > "$work/server.log"
}

run "ab -r -n $requests -c $concurrency (no keep-alive)" ab -r -q -n "$requests" -c "$concurrency"
run "ab -k -r -n $((requests * 5)) -c 100 (HTTP/1.0 keep-alive)" ab -k -r -q -n "$((requests * 5))" -c 100
run "wrk -c 100 -d ${seconds}s (HTTP/1.1 keep-alive)" wrk -t2 -c100 "-d${seconds}s"
run "hey -c 100 -z ${seconds}s" hey -c 100 -z "${seconds}s"
