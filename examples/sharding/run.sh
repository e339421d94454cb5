#!/usr/bin/env bash
# Try sharding on one machine: three kvfast servers on 127.0.0.1:7001-7003 and
# nutcracker on 127.0.0.1:22121 in front of them (see README.md beside this).
# Runs in the foreground; Ctrl-C (or any of them exiting) stops them all.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PATH="$PATH:/usr/sbin:/sbin"                 # Debian/Ubuntu install nutcracker in /usr/sbin
PORTS=(7001 7002 7003)
PROXY_PORT=22121                             # as in nutcracker.yml
STATS_PORT=22222

for tool in kvfast-server nutcracker; do
    command -v "$tool" >/dev/null || {
        echo "$tool not found (kvfast: pip install . in the repository; nutcracker: apt-get install nutcracker)" >&2
        exit 1
    }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/kvfast-sharding.XXXXXX")"
pids=()

cleanup() {
    trap - EXIT INT TERM
    local pid tries
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for ((tries = 0; tries < 50; tries++)); do     # up to 5 s each, then SIGKILL
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "$1" >&2
    [[ -f "${2:-}" ]] && sed 's/^/    /' "$2" >&2
    exit 1
}

for port in "${PORTS[@]}"; do
    kvfast-server "$port" >"$work/kvfast-$port.log" 2>&1 &
    pids+=("$!")
done
for index in "${!PORTS[@]}"; do
    port="${PORTS[$index]}"
    for ((tries = 0; ; tries++)); do                   # up to 10 s for the ready line
        grep -q "kvfast listening on 127.0.0.1:$port" "$work/kvfast-$port.log" && break
        kill -0 "${pids[$index]}" 2>/dev/null || fail "kvfast-server $port did not start:" "$work/kvfast-$port.log"
        ((tries < 100)) || fail "kvfast-server $port did not report ready within 10 s" "$work/kvfast-$port.log"
        sleep 0.1
    done
done

nutcracker -c "$here/nutcracker.yml" -s "$STATS_PORT" -a 127.0.0.1 \
    -o "$work/nutcracker.log" -p "$work/nutcracker.pid" >"$work/nutcracker.out" 2>&1 &
pids+=("$!")
for ((tries = 0; ; tries++)); do                       # no ready line: wait until the port accepts
    (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break
    kill -0 "${pids[3]}" 2>/dev/null || fail "nutcracker did not start:" "$work/nutcracker.log"
    ((tries < 100)) || fail "nutcracker is not listening on $PROXY_PORT after 10 s" "$work/nutcracker.log"
    sleep 0.1
done

cat <<TEXT
kvfast servers on 127.0.0.1:7001, :7002, :7003; nutcracker on 127.0.0.1:$PROXY_PORT.
Try, in another terminal:
    redis-cli -p $PROXY_PORT set 1 10
    redis-cli -p $PROXY_PORT mget 1 2 3
    redis-cli -p 7001 dbsize        # ask one server directly
Logs: $work
Ctrl-C stops everything.
TEXT

set +e
wait -n                                               # returns when one of them exits
echo "a process exited; stopping the others" >&2
exit 1
