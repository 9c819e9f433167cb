# Sourced by the scripts that run Perl's start_server (Debian libserver-starter-perl).

# stop_start_server PID: TERM, as a service manager would, then up to 40 s (a worker's drain
# is bounded by its 30 s deadline) for start_server and its workers to exit.
#
# start_server can lose a TERM it forwards to a worker it has just forked: the forked Perl
# child takes it with the handler it inherited, then execs, and the worker never hears of
# it — it serves on and start_server waits for it forever (seen with strace, when the stop
# follows a HUP by a few milliseconds). Whatever is left after the wait is killed, loudly.
stop_start_server() {
    local supervisor=$1
    kill -TERM "$supervisor" 2>/dev/null || return 0
    for _ in $(seq 400); do
        kill -0 "$supervisor" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$supervisor" 2>/dev/null; then
        echo "warning: start_server $supervisor still runs 40 s after TERM; killing it and its workers" >&2
        pkill -KILL -P "$supervisor" 2>/dev/null || true
        kill -KILL "$supervisor" 2>/dev/null || true
    fi
    wait "$supervisor" 2>/dev/null || true
}
