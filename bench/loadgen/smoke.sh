#!/bin/sh
# Smoke test of the bench tools: starts bare-fanout and bare-handshake on free loopback ports,
# drives them with loadgen for a few seconds each, and fails when loadgen reports a missing or
# unexpected receipt or a failed connect; with GATEWAY_BIN set, also a presence-gateway binary.
# Bounded: every step has a timeout.
set -eu
B="$1"
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
start() { # start BIN PORT
    "$1" --port "$2" >"$B/smoke-$2.log" 2>&1 &
    pids="$pids $!"
    i=0
    until grep -q READY "$B/smoke-$2.log"; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "server did not start"; exit 1; }
        sleep 0.05
    done
}
p1=$(free_port); start "$B/bare-fanout" "$p1"
timeout 30 "$B/loadgen" --target bare --port "$p1" --conns 500 --room-size 10 --rate 200 \
    --duration 2 --max-seconds 20
timeout 30 "$B/loadgen" --target bare --port "$p1" --conns 500 --room-size 10 --rate 5000 \
    --change msg --duration 2 --max-seconds 20
p2=$(free_port); start "$B/bare-handshake" "$p2"
timeout 30 "$B/loadgen" --target bare --mode connect --port "$p2" --conns 500 --duration 2 \
    --max-seconds 20
# The same against a presence-gateway binary, when GATEWAY_BIN names one.
if [ -n "${GATEWAY_BIN:-}" ]; then
    d=$(mktemp -d)
    s=smoke-secret-0123456789abcdef
    p3=$(free_port)
    "$GATEWAY_BIN" --host 127.0.0.1 --port "$p3" --jwt-secret "$s" \
        --database-url "sqlite:$d/smoke.db" --log-level warn >"$B/smoke-$p3.log" 2>&1 &
    pids="$pids $!"
    i=0
    until python3 -c "import socket; socket.create_connection(('127.0.0.1', $p3), 0.2)" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || { echo "gateway did not start"; exit 1; }
        sleep 0.05
    done
    timeout 60 "$B/loadgen" --secret "$s" --port "$p3" --conns 300 --room-size 10 --rate 100 \
        --duration 2 --max-seconds 40
    timeout 60 "$B/loadgen" --secret "$s" --port "$p3" --mode connect --no-provision --conns 300 \
        --concurrency 16 --duration 2 --max-seconds 40
    rm -rf "$d"
fi
