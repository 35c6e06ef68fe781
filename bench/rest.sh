#!/bin/sh
# bench/rest.sh - SPEC §5 "REST": authenticated GET /api/users/me with keep-alive against a
# constant /healthz on the same daemon, as a ratio of requests/s (target >= 0.70).
#
# Starts the gateway on a free loopback port with a temporary SQLite database, provisions one
# user through POST /api/admin/users with an ADMIN service token, mints that user's token, then
# alternates RUNS wrk runs of each URL and prints the medians and the ratio. Stops the gateway
# and removes the temporary directory on exit.
#
# On a shared, noisy machine requests/s swing with the neighbours' load; the gateway's own CPU
# time per request (from /proc/PID/stat around each run) does much less, so it is printed too,
# with its ratio healthz/me: what the requests/s ratio would be if the gateway were the only
# thing competing for the cores.
#
# Usage: bench/rest.sh [path/to/presence-gateway]
#   GATEWAY_BIN  the binary (default: the argument, else build-release/gateway/presence-gateway)
#   RUNS         runs of each URL (default 5)     DURATION  seconds per run (default 5)
#   CONNS        wrk connections (default 32)     THREADS   wrk threads (default 1)
#   HTTP_THREADS gateway HTTP threads (default: the gateway's own, one per core)
# Build without sanitizers: meson setup build-release --buildtype=release -Dtests=false
set -eu

BIN=${GATEWAY_BIN:-${1:-build-release/gateway/presence-gateway}}
RUNS=${RUNS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}

command -v wrk >/dev/null 2>&1 || { echo "rest.sh: wrk is not installed" >&2; exit 2; }
command -v curl >/dev/null 2>&1 || { echo "rest.sh: curl is not installed" >&2; exit 2; }
[ -x "$BIN" ] || { echo "rest.sh: no gateway binary at $BIN (set GATEWAY_BIN)" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gwrest.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# A free port: bind 0 and read it back.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
JWT_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWT_SECRET
BASE="http://127.0.0.1:$PORT"

HOST=127.0.0.1 PORT=$PORT DATABASE_URL="sqlite:$TMP/presence.db" LOG_LEVEL=warn \
    "$BIN" >"$TMP/gateway.log" 2>&1 &
PID=$!

i=0
until curl -fs "$BASE/healthz" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$PID" 2>/dev/null; then
        echo "rest.sh: the gateway did not start:" >&2
        cat "$TMP/gateway.log" >&2
        exit 1
    fi
    sleep 0.1
done

ADMIN=$("$BIN" token --user 000000000000000000000001 --role ADMIN)
USER_ID=$(curl -fs -X POST "$BASE/api/admin/users" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' \
    -d '{"username":"bench-rest","displayName":"Bench Rest","email":"bench@example.org"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
TOKEN=$("$BIN" token --user "$USER_ID")
# The route must answer 200 before it is measured: a 401 would be cheaper than the real thing.
CODE=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$BASE/api/users/me")
[ "$CODE" = 200 ] || { echo "rest.sh: /api/users/me answered $CODE" >&2; exit 1; }

# The gateway's user+system CPU time so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)

# "requests/s  gateway-CPU-us-per-request" of one wrk run; fails the script on socket errors
# or non-2xx answers.
rps() {
    c0=$(cpu_ticks)
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "$@")
    c1=$(cpu_ticks)
    if printf '%s\n' "$out" | grep -q -e 'Non-2xx' -e 'Socket errors'; then
        printf '%s\n' "$out" >&2
        echo "rest.sh: errors during the run" >&2
        exit 1
    fi
    printf '%s\n' "$out" | awk -v t="$((c1 - c0))" -v hz="$HZ" '
        /requests in/ { n = $1 }
        /^Requests\/sec:/ { r = $2 }
        END { printf "%d %.2f\n", r, (n > 0 ? t * 1e6 / hz / n : 0) }'
}

: >"$TMP/health"
: >"$TMP/me"
: >"$TMP/health.cpu"
: >"$TMP/me.cpu"
n=0
while [ "$n" -lt "$RUNS" ]; do
    n=$((n + 1))
    set -- $(rps "$BASE/healthz")
    h=$1 hc=$2
    set -- $(rps -H "Authorization: Bearer $TOKEN" "$BASE/api/users/me")
    m=$1 mc=$2
    echo "run $n: /healthz $h req/s ($hc us CPU/req), /api/users/me $m req/s ($mc us CPU/req)"
    echo "$h" >>"$TMP/health"
    echo "$m" >>"$TMP/me"
    echo "$hc" >>"$TMP/health.cpu"
    echo "$mc" >>"$TMP/me.cpu"
done

median() { sort -g "$1" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
MH=$(median "$TMP/health")
MM=$(median "$TMP/me")
CH=$(median "$TMP/health.cpu")
CM=$(median "$TMP/me.cpu")
echo "median /healthz: $MH req/s, $CH us gateway CPU per request"
echo "median /api/users/me: $MM req/s, $CM us gateway CPU per request"
awk -v m="$MM" -v h="$MH" 'BEGIN { printf "ratio me/healthz: %.3f (target >= 0.70)\n", m / h }'
awk -v m="$CM" -v h="$CH" 'BEGIN { if (m > 0) printf "CPU ratio healthz/me: %.3f\n", h / m }'
