#!/bin/bash
# berth's main job end to end: a "container" in its own network namespace behind a bridge,
# an HTTP server in it, and `berth run -p 8080:80 -p 80 -p 127.0.0.1:8081:80 <container-ip>`.
# Without root: the same on loopback, userspace only. Cleans up on exit, failure or Ctrl-C.
set -uo pipefail

BERTH=${1:-.build/release/berth}
SUBNET=${BERTH_DEMO_SUBNET:-198.18.0}      # the container gets .2, the host's bridge .1
NS=berth-demo-$$
BRIDGE=${BERTH_DEMO_BRIDGE:-berth0}
WORK=$(mktemp -d /tmp/berth-demo.XXXXXX)
BERTH_PID=
SERVER_PID=
CREATED_BRIDGE=
CREATED_NS=

say() { printf '  %s\n' "$*"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

cleanup() {
	[ -n "$BERTH_PID" ] && kill -TERM "$BERTH_PID" 2>/dev/null && wait "$BERTH_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	[ -n "$CREATED_NS" ] && ip netns del "$NS" 2>/dev/null
	[ -n "$CREATED_BRIDGE" ] && ip link del "$BRIDGE" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -x "$BERTH" ] || fail "no berth binary at $BERTH (run make demo)"

# Waits until berth has printed `count` listener lines.
wait_lines() {
	local count=$1
	for _ in $(seq 100); do
		[ "$(wc -l < "$WORK/ports")" -ge "$count" ] && return 0
		kill -0 "$BERTH_PID" 2>/dev/null || { cat "$WORK/err" >&2; fail "berth exited early"; }
		sleep 0.05
	done
	fail "berth did not report its listeners"
}

fetch() { # url label
	local body
	if body=$(curl -sS --max-time 5 "$1" 2>&1); then
		say "$(printf '%-34s' "$2") -> $(echo "$body" | head -1)"
	else
		say "$(printf '%-34s' "$2") -> FAILED: $body"
		FAILED=1
	fi
}

FAILED=0
mkdir -p "$WORK/www"
echo "hello from the container" > "$WORK/www/index.html"

if [ "$(id -u)" != 0 ]; then
	echo "berth demo (not root: no network namespaces, so the userspace relay on loopback only)"
	python3 -m http.server 0 --bind 127.0.0.1 --directory "$WORK/www" > "$WORK/server" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 100); do grep -q "port" "$WORK/server" && break; sleep 0.05; done
	PORT=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$WORK/server" | head -1)
	[ -n "$PORT" ] || fail "the HTTP server did not start"
	say "server: python3 http.server on 127.0.0.1:$PORT"
	"$BERTH" run -p 127.0.0.1:18080:$PORT -p 127.0.0.1::$PORT 127.0.0.1 > "$WORK/ports" 2> "$WORK/err" &
	BERTH_PID=$!
	wait_lines 2
	echo "berth reported:"; sed 's/^/  /' "$WORK/ports"
	EPHEMERAL=$(sed -n 2p "$WORK/ports" | sed 's/.*:\([0-9]*\)$/\1/')
	echo "fetched:"
	fetch "http://127.0.0.1:18080/" "127.0.0.1:18080"
	fetch "http://127.0.0.1:$EPHEMERAL/" "127.0.0.1:$EPHEMERAL (ephemeral)"
	[ "$FAILED" = 0 ] && echo "demo: ok" || fail "some fetches failed"
	exit 0
fi

echo "berth demo: a container namespace $NS at $SUBNET.2 behind bridge $BRIDGE"
ip link show "$BRIDGE" > /dev/null 2>&1 && fail "bridge $BRIDGE exists already (another demo running?); set BERTH_DEMO_BRIDGE"
ip netns add "$NS" || fail "cannot create a network namespace"
CREATED_NS=1
ip link add "$BRIDGE" type bridge || fail "cannot create bridge $BRIDGE"
CREATED_BRIDGE=1
ip addr add "$SUBNET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
ip link add "veth-$$" type veth peer name eth0 netns "$NS" || fail "cannot create the veth pair"
ip link set "veth-$$" master "$BRIDGE" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$SUBNET.2/24" dev eth0
ip -n "$NS" link set eth0 up

ip netns exec "$NS" python3 -m http.server 80 --bind "$SUBNET.2" --directory "$WORK/www" > "$WORK/server" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -s --max-time 1 "http://$SUBNET.2/" > /dev/null && break; sleep 0.05; done
say "container: python3 http.server on $SUBNET.2:80"

echo "running: berth run -p 8080:80 -p 80 -p 127.0.0.1:8081:80 $SUBNET.2"
"$BERTH" run -p 8080:80 -p 80 -p 127.0.0.1:8081:80 "$SUBNET.2" > "$WORK/ports" 2> "$WORK/err" &
BERTH_PID=$!
wait_lines 5
echo "berth reported:"; sed 's/^/  /' "$WORK/ports"
EPHEMERAL=$(grep -m1 '^80/tcp -> 0.0.0.0:' "$WORK/ports" | grep -v ':8080$' | sed 's/.*:\([0-9]*\)$/\1/')
[ -n "$EPHEMERAL" ] || EPHEMERAL=$(sed -n 3p "$WORK/ports" | sed 's/.*:\([0-9]*\)$/\1/')
echo "fetched through berth:"
fetch "http://127.0.0.1:8080/" "127.0.0.1:8080"
fetch "http://[::1]:8080/" "[::1]:8080 (IPv6 to IPv4)"
fetch "http://$SUBNET.1:8080/" "$SUBNET.1:8080 (bridge address)"
fetch "http://127.0.0.1:$EPHEMERAL/" "127.0.0.1:$EPHEMERAL (ephemeral)"
fetch "http://127.0.0.1:8081/" "127.0.0.1:8081"
kill -TERM "$BERTH_PID"; wait "$BERTH_PID"; rc=$?; BERTH_PID=
say "berth stopped on SIGTERM with exit code $rc"
[ "$FAILED" = 0 ] && [ "$rc" = 0 ] && echo "demo: ok, cleaning up" || fail "something failed (see above)"
