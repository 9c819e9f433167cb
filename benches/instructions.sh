#!/usr/bin/env bash
# Instructions per keep-alive request (callgrind), lameduck against a plain hyper server on
# the same runtime, in one run: tokio (bench_server, current-thread), smol and async-std
# (async_io_server), and over TLS on tokio. Two runs per server, `hey -c 10` with 2,000 and
# 6,000 requests, counted from the server's `listening on`; the difference over 4,000
# excludes what is left of start-up, and exit. Nearly deterministic: a pair repeats within
# ±15 instructions, but how hey's requests batch into wake-ups moved the plain baseline by
# ~1 % between sessions (8,864 and 8,767 on 2026-12-03): compare only within one run.
#
#   bash benches/instructions.sh            # prints runtime,variant,instructions_per_request
#   TLS_RUNS=8 bash benches/instructions.sh # the TLS pair 8 times
#   CGU1=1 bash benches/instructions.sh     # every crate in one codegen unit (target/cgu1)
#
# Why CGU1: with the release profile's 16 codegen units, which of hyper's generic functions
# inline into which depends on how the whole binary happens to be partitioned, and a change
# anywhere moves a keep-alive request by ±100 instructions (measured 2026-12-03: a change
# that made lameduck's task smaller "cost" +110 with 16 units and +21 with one). One unit
# leaves inlining to the code alone; compare changes with it, report both.
#
# Last, the metrics feature's cost: `lameduck` built without it, against the build with
# `--features metrics` running `lameduck` (the feature compiled in) and `lameduck-metrics`
# (a Prometheus recorder installed and recorded into, as at a scrape; recording happens at
# scrape time, never per request).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${CGU1:-0}" = 1 ]; then
    export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_TARGET_DIR=target/cgu1
fi
cargo build --release -q -p lameduck-benches --bin bench_server --bin async_io_server
cargo build --release -q -p examples --example hello
bin="${CARGO_TARGET_DIR:-target}/release"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# One server under callgrind: prints its total instruction count after `hey -n N`.
total() {
    local n="$1"; shift
    local cg="$out/cg.$RANDOM" fifo="$out/fifo"
    rm -f "$fifo"; mkfifo "$fifo"
    # Instructions are counted from the server's `listening on` line: start-up (a metrics
    # recorder's clock calibration, say, which spins for a wall-clock time) is left out.
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg" "$@" > "$fifo" 2>/dev/null &
    local vg=$!
    exec 8< "$fifo"
    local line; read -r line <&8
    callgrind_control --instr=on "$vg" > /dev/null 2>&1
    # hey sends its Host header, port included, as the TLS server name, which rustls
    # refuses: -host makes it `localhost`.
    hey -n "$n" -c 10 -host localhost "${scheme:-http}://${line#listening on }/" > /dev/null
    kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
    exec 8<&-
    awk '/^summary:/ { print $2 }' "$cg"
}

per_request() {
    local small large
    small=$(total 2000 "$@")
    large=$(total 6000 "$@")
    echo $(( (large - small) / 4000 ))
}

# `hello` (the README's server: lameduck-hyper) against `HELLO_NAIVE=1` (the same service on
# hyper-util's auto builder, as axum::serve does it), multi-thread tokio. hello prints no
# address: it gets a fixed port, and instructions are counted from the moment it accepts
# (its metrics recorder calibrates a clock by spinning for a wall-clock time at start-up:
# counted, that alone moved a request by ±250). Multi-thread counts vary with how the two
# workers share the work: run it a few times.
hello_total() {
    local n="$1"; shift
    local cg="$out/cg.$RANDOM" port=18087
    env "$@" LAMEDUCK_IDLE_GRACE=close valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg" \
        "$bin/examples/hello" "127.0.0.1:$port" > /dev/null 2>&1 &
    local vg=$!
    until (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
    callgrind_control --instr=on "$vg" > /dev/null 2>&1
    hey -n "$n" -c 10 "http://127.0.0.1:$port/" > /dev/null
    kill -TERM "$vg"; wait "$vg" 2>/dev/null || true
    awk '/^summary:/ { print $2 }' "$cg"
}

hello_per_request() {
    local small large
    small=$(hello_total 2000 "$@")
    large=$(hello_total 6000 "$@")
    echo $(( (large - small) / 4000 ))
}

echo "runtime,variant,instructions_per_request"
echo "tokio multi-thread,hello HELLO_NAIVE=1,$(hello_per_request HELLO_NAIVE=1)"
echo "tokio multi-thread,hello,$(hello_per_request HELLO_RUNTIME=tokio)"
# hyper-util's GracefulShutdown: the competitor that tracks no request, only the connection.
for variant in plain lameduck hyper-util; do
    echo "tokio,$variant,$(LAMEDUCK_IDLE_GRACE=close per_request "$bin/bench_server" "$variant" current 127.0.0.1:0)"
done
# TLS keep-alive: tokio-rustls + hyper against lameduck's serve_tls, same rustls config.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
export BENCH_TLS_CERT="$out/cert.pem" BENCH_TLS_KEY="$out/key.pem"
# TLS counts are bimodal (about one read poll a request more or less, as hey's timing
# falls): TLS_RUNS=8 repeats the pair for a median.
for _ in $(seq "${TLS_RUNS:-1}"); do
    for variant in plain-tls lameduck-tls; do
        echo "tokio,$variant,$(scheme=https LAMEDUCK_IDLE_GRACE=close per_request "$bin/bench_server" "$variant" current 127.0.0.1:0)"
    done
done
for runtime in smol async-std; do
    for variant in plain lameduck; do
        echo "$runtime,$variant,$(per_request "$bin/async_io_server" "$variant" "$runtime" 127.0.0.1:0)"
    done
done
# The metrics feature: the same server without it (the build above) and with it.
cp "$bin/bench_server" "$out/bench_server.no-metrics"
cargo build --release -q -p lameduck-benches --bin bench_server --features metrics
echo "tokio,lameduck (metrics off),$(LAMEDUCK_IDLE_GRACE=close per_request "$out/bench_server.no-metrics" lameduck current 127.0.0.1:0)"
echo "tokio,lameduck (metrics compiled in),$(LAMEDUCK_IDLE_GRACE=close per_request "$bin/bench_server" lameduck current 127.0.0.1:0)"
echo "tokio,lameduck-metrics (metrics on: recorder installed),$(LAMEDUCK_IDLE_GRACE=close per_request "$bin/bench_server" lameduck-metrics current 127.0.0.1:0)"
# Leave the default build in place for benches/run.sh.
cargo build --release -q -p lameduck-benches --bin bench_server
