#!/bin/bash
# berth's main job end to end: a "container" in its own network namespace behind a bridge on a
# "host" namespace, an HTTP server in it, `berth run -p 8080:80 -p 80 -p 127.0.0.1:8081:80
# <container-ip>` in the host, and fetches from the host and from an outside "client" namespace.
# Everything lives in namespaces the demo creates: nothing in the machine's own network changes.
# Without root: the same on loopback, userspace only. Cleans up on exit, failure or Ctrl-C.
set -uo pipefail

BERTH=${1:-.build/release/berth}
SUBNET=${BERTH_DEMO_SUBNET:-198.18.0}      # the container gets .2, the host's bridge .1
BRIDGE=${BERTH_DEMO_BRIDGE:-berth0}
WORK=$(mktemp -d /tmp/berth-demo.XXXXXX)
BERTH_PID=
SERVER_PID=
CREATED_NS=

say() { printf '  %s\n' "$*"; }
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

cleanup() {
	[ -n "$BERTH_PID" ] && kill -TERM "$BERTH_PID" 2>/dev/null && wait "$BERTH_PID" 2>/dev/null
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	for ns in $CREATED_NS; do ip netns del "$ns" 2>/dev/null; done
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
	echo "berth reported:"; sed 's/^/  /' "$WORK/ports"; sed 's/^/  /' "$WORK/err"
	EPHEMERAL=$(sed -n 2p "$WORK/ports" | sed 's/.*:\([0-9]*\)$/\1/')
	echo "fetched:"
	fetch "http://127.0.0.1:18080/" "127.0.0.1:18080"
	fetch "http://127.0.0.1:$EPHEMERAL/" "127.0.0.1:$EPHEMERAL (ephemeral)"
	[ "$FAILED" = 0 ] && echo "demo: ok" || fail "some fetches failed"
	exit 0
fi

HOST=berth-demo-host-$$
CTR=berth-demo-ctr-$$
CLIENT=berth-demo-client-$$
echo "berth demo: a host, a container and an outside client, each its own network namespace"
for ns in "$HOST" "$CTR" "$CLIENT"; do ip netns add "$ns" || fail "cannot create network namespace $ns"; CREATED_NS="$CREATED_NS $ns"; ip -n "$ns" link set lo up; done
# host ── bridge berth0 ── veth ── container eth0, as Docker wires docker0
ip -n "$HOST" link add "$BRIDGE" type bridge
ip -n "$HOST" addr add "$SUBNET.1/24" dev "$BRIDGE"
ip -n "$HOST" link set "$BRIDGE" up
ip -n "$HOST" link add veth-ctr type veth peer name eth0 netns "$CTR"
ip -n "$HOST" link set veth-ctr master "$BRIDGE" up
ip -n "$HOST" link set veth-ctr type bridge_slave hairpin on
ip -n "$CTR" addr add "$SUBNET.2/24" dev eth0
ip -n "$CTR" link set eth0 up
# No default route: a route back to the outside network only (python's reverse lookup would hang).
ip -n "$CTR" route add 198.18.1.0/24 via "$SUBNET.1"
# the outside network: client ── veth ── host
ip -n "$HOST" link add veth-out type veth peer name eth0 netns "$CLIENT"
ip -n "$HOST" addr add 198.18.1.1/24 dev veth-out
ip -n "$HOST" link set veth-out up
ip -n "$CLIENT" addr add 198.18.1.2/24 dev eth0
ip -n "$CLIENT" link set eth0 up
ip netns exec "$HOST" sysctl -q -w net.ipv4.ip_forward=1
say "host:      bridge $BRIDGE $SUBNET.1, outside address 198.18.1.1"
say "container: eth0 $SUBNET.2, python3 http.server on port 80"
say "client:    198.18.1.2, outside the host"

ip netns exec "$CTR" python3 -m http.server 80 --bind "$SUBNET.2" --directory "$WORK/www" > "$WORK/server" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do ip netns exec "$HOST" curl -s --max-time 1 "http://$SUBNET.2/" > /dev/null && break; sleep 0.05; done

echo "running in the host: berth run -p 8080:80 -p 80 -p 127.0.0.1:8081:80 $SUBNET.2"
ip netns exec "$HOST" "$BERTH" run -p 8080:80 -p 80 -p 127.0.0.1:8081:80 "$SUBNET.2" > "$WORK/ports" 2> "$WORK/err" &
BERTH_PID=$!
wait_lines 5
echo "berth reported:"; sed 's/^/  /' "$WORK/ports"
[ -s "$WORK/err" ] && sed 's/^/  /' "$WORK/err"
EPHEMERAL=$(grep '^80/tcp -> 0.0.0.0:' "$WORK/ports" | grep -v ':8080$' | head -1 | sed 's/.*:\([0-9]*\)$/\1/')

# Fetches a page from namespace $1 and says which client address the container saw.
fetch_in() { # ns url label path
	local body seen
	if body=$(ip netns exec "$1" curl -sS --max-time 5 "$2" 2>&1); then
		sleep 0.1
		seen=$(grep '"GET' "$WORK/server" | tail -1 | cut -d' ' -f1)
		say "$(printf '%-36s' "$3") -> $(echo "$body" | head -1)   (the container saw $seen: $4)"
	else
		say "$(printf '%-36s' "$3") -> FAILED: $body"
		FAILED=1
	fi
}
echo "fetched:"
fetch_in "$CLIENT" "http://198.18.1.1:8080/" "client -> 198.18.1.1:8080" "kernel DNAT keeps the real address"
fetch_in "$HOST" "http://127.0.0.1:8080/" "host -> 127.0.0.1:8080" "userspace relay"
fetch_in "$HOST" "http://[::1]:8080/" "host -> [::1]:8080 (IPv6 to IPv4)" "userspace relay"
fetch_in "$HOST" "http://127.0.0.1:$EPHEMERAL/" "host -> 127.0.0.1:$EPHEMERAL (ephemeral)" "userspace relay"
fetch_in "$HOST" "http://127.0.0.1:8081/" "host -> 127.0.0.1:8081" "userspace relay"
fetch_in "$CLIENT" "http://198.18.1.1:$EPHEMERAL/" "client -> 198.18.1.1:$EPHEMERAL" "kernel DNAT"
if ip netns exec "$CLIENT" curl -s --max-time 2 "http://198.18.1.1:8081/" > /dev/null 2>&1; then
	say "client -> 198.18.1.1:8081 -> reachable, but 8081 is published on 127.0.0.1 only!"; FAILED=1
else
	say "$(printf '%-36s' "client -> 198.18.1.1:8081") -> refused, as it should be (published on 127.0.0.1 only)"
fi
echo "berth's nftables table in the host (kernel fast path):"
ip netns exec "$HOST" nft list ruleset 2>/dev/null | grep -E "^table|counter packets" | sed 's/^[[:space:]]*/  /'
kill -TERM "$BERTH_PID"; wait "$BERTH_PID"; rc=$?; BERTH_PID=
say "berth stopped on SIGTERM with exit code $rc; tables left in the host: $(ip netns exec "$HOST" nft list tables | wc -l)"
[ "$FAILED" = 0 ] && [ "$rc" = 0 ] && echo "demo: ok, cleaning up" || fail "something failed (see above)"
