#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, measured in one run on this machine, as ratios against
# baselines measured in the same run. Loopback only; bounded in time (about 14 minutes;
# QUICK=1 for a 3-minute smoke run with fewer, shorter rounds).
#
#   bash benches/run.sh            # results in target/bench/, summary in target/bench/summary.md
#   bash benches/run.sh && cp target/bench/*.csv target/bench/chart.svg benches/results/
#
# Sections (each writes one CSV):
#   1. overhead.csv   hyper hello-world: plain (untracked) vs lameduck vs hyper-util's
#                     GracefulShutdown vs axum's with_graceful_shutdown; tokio multi-thread (2
#                     workers) and current-thread; wrk (keep-alive) and ab (no keep-alive);
#                     interleaved rounds, the order rotated each round.
#   2. drain.csv      SIGTERM with 10,000 idle keep-alive connections (lameduck with
#                     IdlePolicy::CloseImmediately, as the others do), and the time from the
#                     last in-flight response to the drain's end; vs hyper-util, axum, Go.
#   3. scale.csv      10k..100k tracked connections in one process: bytes per connection
#                     (core alone, whole handle) and the shutdown sweep.
#   4. core.csv       the core's criterion benchmarks (ns per event vs a HashMap tracker)
#                     and its allocation count per event.
#   5. restart.csv    start_server restarting the worker every second under wrk: throughput
#                     and p99 relative to no restarts; lameduck vs Go vs hyper-util.
#   7. fleet.csv      rolling updates of two instances behind HAProxy (tcp, retries 0, each
#                     taken out 300 ms after its SIGTERM) under wrk: failed requests per
#                     server (benches/fleet.py; needs haproxy).
#
# Needs: wrk, ab (apache2-utils), start_server (libserver-starter-perl), python3; Go
# (golang-go) for the Go rows (skipped with a warning when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/start_server.sh
source scripts/start_server.sh

quick="${QUICK:-0}"
if [ "$quick" = 1 ]; then
    rounds=1; secs=3; drain_rounds=1; drain_conns=2000; restart_secs=6
else
    rounds=5; secs=5; drain_rounds=3; drain_conns=10000; restart_secs=15
fi
out=target/bench
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)"
# Never leave a server behind, whatever fails.
trap 'pkill -f "target/release/bench_server" 2>/dev/null || true; pkill -f "target/release/go_server" 2>/dev/null || true' EXIT

echo "== building"
cargo build --quiet --release -p lameduck-benches --bins
bin="$(pwd)/target/release"
have_go=0
if command -v go >/dev/null 2>&1; then
    (cd benches/go && GOCACHE="$(pwd)/../../target/go-cache" GOFLAGS=-mod=mod GOTOOLCHAIN=local \
        go build -o "$bin/go_server" .) && have_go=1
else
    echo "warning: no Go toolchain (apt-get install golang-go): the Go rows are skipped" >&2
fi

server_cmd() { # variant flavor
    case "$1" in
        go) echo "$bin/go_server 127.0.0.1:0" ;;
        *) echo "$bin/bench_server $1 $2 127.0.0.1:0" ;;
    esac
}

# Starts a server; sets $server_pid and $url.
start() {
    local fifo="$out/stdout.fifo"
    rm -f "$fifo"; mkfifo "$fifo"
    # shellcheck disable=SC2046
    $(server_cmd "$1" "$2") > "$fifo" 2>/dev/null &
    server_pid=$!
    exec 7< "$fifo"
    local line
    read -r line <&7
    url="http://${line#listening on }/"
}

stop() {
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    exec 7<&-
}

# The server's CPU time so far (user + system), in clock ticks (USER_HZ = 100).
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# CPU microseconds per request: ticks used over requests served.
per_req() { awk -v t="$1" -v n="$2" 'BEGIN { printf "%.2f", (n > 0 ? t * 10000 / n : 0) }'; }

# wrk's "99%  1.23ms" -> milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n
    }'
}

echo "== 1. overhead: $rounds interleaved rounds x ${secs} s"
echo "round,flavor,variant,tool,rps,p99_ms,cpu_us_per_req" > "$out/overhead.csv"
variants=(plain lameduck hyper-util axum)
for round in $(seq "$rounds"); do
    for flavor in multi current; do
        # Rotate the order each round, so that no variant always runs first or last.
        for i in 0 1 2 3; do
            variant="${variants[$(( (i + round) % 4 ))]}"
            start "$variant" "$flavor"
            t0=$(ticks "$server_pid")
            wrk_out=$(wrk -t1 -c50 "-d${secs}s" --latency "$url")
            cpu=$(per_req $(( $(ticks "$server_pid") - t0 )) "$(awk '/requests in/ { print $1 }' <<< "$wrk_out")")
            rps=$(awk '/Requests\/sec/ { print $2 }' <<< "$wrk_out")
            p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<< "$wrk_out")")
            echo "$round,$flavor,$variant,wrk,$rps,$p99,$cpu" >> "$out/overhead.csv"
            t0=$(ticks "$server_pid")
            ab_out=$(ab -q -c50 -t "$secs" -n 10000000 "$url" 2>&1)
            cpu=$(per_req $(( $(ticks "$server_pid") - t0 )) "$(awk '/Complete requests/ { print $3 }' <<< "$ab_out")")
            rps=$(awk '/Requests per second/ { print $4 }' <<< "$ab_out")
            p99=$(awk '$1 == "99%" { print $2 }' <<< "$ab_out")
            echo "$round,$flavor,$variant,ab,$rps,$p99,$cpu" >> "$out/overhead.csv"
            stop
            echo "   round $round $flavor $variant: $(tail -2 "$out/overhead.csv" | cut -d, -f4- | tr '\n' ' ')"
        done
    done
done

echo "== 1b. instructions per request (callgrind: deterministic, whatever the noise)"
echo "variant,instructions_per_request" > "$out/instructions.csv"
if command -v valgrind >/dev/null 2>&1 && command -v hey >/dev/null 2>&1; then
    # Two runs with different request counts; the difference excludes start-up and exit.
    for variant in plain lameduck hyper-util axum; do
        totals=()
        for n in 2000 6000; do
            cg="$out/callgrind.$variant.$n"
            fifo="$out/cg.fifo"; rm -f "$fifo"; mkfifo "$fifo"
            valgrind --tool=callgrind --callgrind-out-file="$cg" \
                "$bin/bench_server" "$variant" current 127.0.0.1:0 > "$fifo" 2>/dev/null &
            vg=$!
            exec 8< "$fifo"
            read -r line <&8
            hey -n "$n" -c 10 "http://${line#listening on }/" > /dev/null
            kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
            exec 8<&-
            totals+=("$(awk '/^summary:/ { print $2 }' "$cg")")
        done
        echo "$variant,$(( (totals[1] - totals[0]) / 4000 ))" >> "$out/instructions.csv"
        echo "   $variant: $(tail -1 "$out/instructions.csv")"
    done
else
    echo "warning: valgrind or hey missing: no instruction counts" >&2
fi

echo "== 2. drain speed: $drain_rounds rounds"
echo "round,variant,case,conns,heap_per_conn,rss_per_conn,sigterm_to_exit_ms,sigterm_to_drained_ms,last_response_to_drained_ms" > "$out/drain.csv"
drain_variants=(lameduck hyper-util axum)
[ "$have_go" = 1 ] && drain_variants+=(go)
for round in $(seq "$drain_rounds"); do
    for variant in "${drain_variants[@]}"; do
        # shellcheck disable=SC2046
        line=$(LAMEDUCK_IDLE_GRACE=close "$bin/drain_timer" "$drain_conns" 0 -- $(server_cmd "$variant" multi))
        echo "$round,$variant,idle,$line" >> "$out/drain.csv"
        # shellcheck disable=SC2046
        line=$(LAMEDUCK_IDLE_GRACE=close "$bin/drain_timer" 100 1 -- $(server_cmd "$variant" multi))
        echo "$round,$variant,in-flight,$line" >> "$out/drain.csv"
        echo "   round $round $variant done"
    done
done

echo "== 3. scale"
echo "conns,core_bytes_per_conn,handle_bytes_per_conn,core_sweep_ms,handle_sweep_ms" > "$out/scale.csv"
"$bin/scale" 10000 25000 50000 100000 >> "$out/scale.csv"

echo "== 4. core micro-benchmarks"
echo "name,ns_per_iter" > "$out/core.csv"
cargo bench --quiet -p lameduck-core --bench lifecycle -- --output-format bencher \
    --warm-up-time 1 --measurement-time "$secs" 2>/dev/null \
    | awk '/^test / { gsub(",", "", $5); print $2 "," $5 }' >> "$out/core.csv"
cargo test --quiet -p lameduck-core --release --test alloc 2>/dev/null \
    | grep -E "allocations" | sed 's/^/# /' >> "$out/core.csv" || true

echo "== 5. restart cost: start_server, HUP every 1 s, ${restart_secs} s of wrk"
echo "variant,mode,requests,rps,p99_ms,socket_errors,non_2xx,restarts" > "$out/restart.csv"
restart_variants=(lameduck hyper-util)
[ "$have_go" = 1 ] && restart_variants+=(go)
for variant in "${restart_variants[@]}"; do
    for mode in steady restarting; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        log="$out/start_server.log"; : > "$log"
        # shellcheck disable=SC2046
        start_server --port="127.0.0.1:$port" --log-file="$log" -- $(server_cmd "$variant" multi) &
        supervisor=$!
        for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
        hupper=""
        if [ "$mode" = restarting ]; then
            ( while kill -0 "$supervisor" 2>/dev/null; do sleep 1; kill -HUP "$supervisor" 2>/dev/null || true; done ) &
            hupper=$!
        fi
        wrk_out=$(wrk -t1 -c50 "-d${restart_secs}s" --latency "http://127.0.0.1:$port/")
        [ -n "$hupper" ] && kill "$hupper" 2>/dev/null || true
        stop_start_server "$supervisor"
        requests=$(awk '/requests in/ { print $1 }' <<< "$wrk_out")
        rps=$(awk '/Requests\/sec/ { print $2 }' <<< "$wrk_out")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<< "$wrk_out")")
        errors=$(awk '/Socket errors/ { n = 0; for (i = 4; i <= NF; i += 2) n += $i; print n }' <<< "$wrk_out")
        non2xx=$(awk '/Non-2xx/ { print $5 }' <<< "$wrk_out")
        restarts=$(( $(grep -c 'starting new worker' "$log" || true) - 1 ))
        echo "$variant,$mode,$requests,$rps,$p99,${errors:-0},${non2xx:-0},$restarts" >> "$out/restart.csv"
        echo "   $variant $mode: $(tail -1 "$out/restart.csv")"
    done
done

echo "== 7. rolling updates behind HAProxy (benches/fleet.py)"
if command -v haproxy >/dev/null 2>&1; then
    cargo build --quiet --release --example hello
    SECS="$restart_secs" python3 benches/fleet.py lost
else
    echo "warning: no haproxy (Debian: haproxy); skipping the rolling updates" >&2
fi

echo "== report"
python3 benches/report.py "$out"
echo "summary: $out/summary.md, chart: $out/chart.svg"
