#!/usr/bin/env bash
# Long-lived connections over a restart: 1,000 WebSocket clients (tokio-tungstenite,
# benches/src/bin/ws_clients.rs: the test's Python clients in Rust, so that a thousand
# handshakes cost the measuring side little CPU) on the websocket example under Perl's start_server, one
# restart with the asks at once (LAMEDUCK_SPREAD unset) and one with LAMEDUCK_SPREAD=2s,
# each in its own start_server. Loopback only; about a minute.
#
#   bash benches/long_lived.sh        # figures on stdout, raw output in target/bench/
#
# Per restart: the peak share of its asks (each client's Close frame, when it starts to
# reconnect) and of its completed reconnections in any 100 ms window, when the first and
# last ask came (from the HUP; start_server waits its --interval, 1 s, before it TERMs the old
# worker), every server close code, messages lost, and the message round-trip p99 during the
# restart against steady state (the same run). `histogram` lines are reconnections per 100
# ms, which benches/plot_reconnections.py draws into docs/reconnections.svg.
#
# Needs: start_server (libserver-starter-perl), python3 (for the picture).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS="${CLIENTS:-1000}"
out=target/bench
mkdir -p "$out"
cargo build --release --quiet -p examples --example websocket
cargo build --release --quiet -p lameduck-benches --bin ws_clients
ulimit -n 65536 2>/dev/null || true

run() { # name, spread ("" for none)
    local name="$1" spread="$2" port pid dir
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    dir="$(mktemp -d)"
    env ${spread:+LAMEDUCK_SPREAD=$spread} setsid start_server --port="127.0.0.1:$port" \
        --log-file="$dir/server.log" -- target/release/examples/websocket </dev/null &
    pid=$!
    sleep 0.5
    timeout 150 target/release/ws_clients "127.0.0.1:$port" "$CLIENTS" 500 1 "$pid" \
        | tee "$out/long_lived_$name.txt"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    wait "$pid" || true
    grep -h "drained" "$dir/server.log" | sed 's/^/  /' | cut -c1-200 >> "$out/long_lived_$name.txt"
    rm -rf "$dir"
}

echo "== spread off (every ask at SIGTERM), $CLIENTS clients"
run off ""
echo "== LAMEDUCK_SPREAD=2s, $CLIENTS clients"
run spread2s 2s
python3 benches/plot_reconnections.py "$out/long_lived_off.txt" "$out/long_lived_spread2s.txt" \
    > "$out/reconnections.svg"
echo "picture: $out/reconnections.svg (cp to docs/reconnections.svg)"
