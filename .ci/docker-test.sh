#!/bin/bash
# berth as Docker's userland proxy, end to end: Debian's dockerd 20.10 with
# "userland-proxy-path" set to berth, publishing ports of a local busybox image, checked with curl
# and a UDP client. Root only. containerd and dockerd are private: they run inside a network
# namespace this script creates (docker0, its iptables rules and the forwarding sysctls live
# there), and every root, state directory, pidfile and socket is in a temporary directory, so the
# host's network, iptables and any Docker installed on it are never touched. Everything is removed
# on exit, failure or Ctrl-C. One PASS/FAIL line per check, then "N passed, M failed".
#
#   bash .ci/docker-test.sh [path/to/berth] [--shim]      (default .build/debug/berth)
#
# With --shim, dockerd's userland proxy is berth-proxy (beside berth) and a berth daemon runs in the
# namespace: every check passes through the shims and the daemon, and more follow: a range of 100
# ports, docker rm -f, a shim killed, the daemon killed and started again (no client refused
# meanwhile), the daemon killed for good (the shims serve alone).
set -uo pipefail

BERTH=${1:-.build/debug/berth}
case $BERTH in /*) ;; *) BERTH=$PWD/$BERTH ;; esac # dockerd wants an absolute path
SHIM=
[ "${2:-}" = --shim ] && SHIM=1
PROXY=$BERTH # what dockerd runs
[ -n "$SHIM" ] && PROXY=$(dirname "$BERTH")/berth-proxy
PASSED=0
FAILED=0
STARTED=$(date +%s)

fail_early() { printf 'docker-test: %s\n' "$*" >&2; exit 1; }
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'; }
check() { # label command...: PASS when the command succeeds
	local label=$1 out; shift
	if out=$("$@" 2>&1); then pass "$label"; else fail "$label" "$out"; fi
}

[ "$(id -u)" = 0 ] || fail_early "needs root (network namespaces, dockerd)"
[ -x "$BERTH" ] || fail_early "no berth binary at $BERTH (run make build)"
[ -x "$PROXY" ] || fail_early "no $PROXY (run make build)"

. "$(dirname "${BASH_SOURCE[0]}")/dockerd-env.sh"

# --- With --shim: a range, the shims' lifetimes, the daemon's -------------------------------------
range_answers() { # first last: every port of the range answers through its proxy, with its number
	in_ns "$PYTHON" - "$1" "$2" << 'EOF'
import socket, sys
first, last = int(sys.argv[1]), int(sys.argv[2])
bad = []
for p in range(first, last + 1):
    try:
        s = socket.create_connection(("127.0.0.1", p), timeout=5)
        got = s.makefile().readline().strip()
        if got != "port %d" % p:
            bad.append("%d: %r" % (p, got))
    except OSError as e:
        bad.append("%d: %s" % (p, e))
if bad:
    sys.exit("; ".join(bad[:5]) + " (%d in all)" % len(bad))
EOF
}
shim_entries() { "$BERTH" port ls --control "$CONTROL" 2> /dev/null | grep -c 'docker-proxy/'; }
eventually() { # seconds command...: the command succeeds within that long
	local i; local limit=$(($1 * 10)); shift
	for i in $(seq "$limit"); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done
	"$@"
}
range_pids() { # 200 or 201: dockerd's proxies for host ports 20000-20099 or 20100-20199, by their flags
	ps -o pid=,args= --ppid "$DOCKERD_PID" | awk -v r=" -host-port $1[0-9][0-9] " '$0 ~ r { print $1 }'
}
all_are() { # program 200|201: each of those 100 proxies runs it (berth-proxy waiting, or berth serving alone)
	local p n=0
	for p in $(range_pids "$2"); do
		[ "$(basename "$(readlink "/proc/$p/exe")")" = "$1" ] || return 1
		n=$((n + 1))
	done
	[ "$n" = 100 ]
}
neighbours_answer() { range_answers 20041 20041 && range_answers 20043 20043; }
range_entries() { "$BERTH" port ls --control "$CONTROL" 2> /dev/null | grep -c " -> 127.0.0.1:$1"; }
shim_checks() {
	local pid before started elapsed refused answered
	run range100 -e RANGE_FIRST=20000 -e RANGE_LAST=20099 -p 127.0.0.1:20000-20099:20000-20099 > /dev/null &&
		wait_started range100 > /dev/null
	check "shims: -p 127.0.0.1:20000-20099:20000-20099: all 100 ports answer through the daemon" eventually 10 range_answers 20000 20099
	check "shims: the daemon holds their ports ($(range_entries 200) of the range in berth port ls)" test "$(range_entries 200)" = 100
	check "shims: the range's 100 proxies are berth-proxy, waiting" all_are berth-proxy 200
	before=$(shim_entries)
	pid=$(ps -o pid=,args= --ppid "$DOCKERD_PID" | awk -v p="$PROXY" '$2 == p && / -host-port 20042 / { print $1 }')
	kill -KILL "$pid"
	check "shims: kill -9 of the shim for 20042 removes its port at the daemon" eventually 5 test "$(shim_entries)" = $((before - 1))
	check "shims: ... and only that one: 20041 and 20043 still answer" neighbours_answer
	docker rm -f range100 > /dev/null
	check "shims: docker rm -f: the daemon holds none of the range's ports" eventually 5 test "$(range_entries 200)" = 0
	check "shims: docker rm -f: no shim of the range left" test -z "$(range_pids 200)"

	# The daemon killed and started again, a client connecting all along.
	run range2 -e RANGE_FIRST=20100 -e RANGE_LAST=20199 -p 127.0.0.1:20100-20199:20100-20199 > /dev/null &&
		wait_started range2 > /dev/null
	eventually 10 range_answers 20100 20199 > /dev/null
	in_ns "$PYTHON" - > "$WORK/during-restart" << 'EOF' &
import socket, time
refused = answered = 0
end = time.time() + 4
while time.time() < end:
    try:
        s = socket.create_connection(("127.0.0.1", 20150), timeout=10)
        if s.makefile().readline().strip() == "port 20150":
            answered += 1
    except ConnectionRefusedError:
        refused += 1
    except OSError:
        pass
    time.sleep(0.02)
print(refused, answered)
EOF
	local client=$! old=$BERTH_DAEMON_PID
	sleep 0.5
	kill -KILL "$old"; wait "$old" 2> /dev/null
	sleep 0.5
	started=$(date +%s%N)
	start_berth_daemon
	check "shims: a new daemon runs (pid $BERTH_DAEMON_PID, the killed one was $old)" bash -c "! kill -0 $old 2> /dev/null && kill -0 $BERTH_DAEMON_PID"
	eventually 5 range_answers 20100 20199 > /dev/null
	elapsed=$((($(date +%s%N) - started) / 1000000))
	check "shims: the daemon killed and started again: all 100 ports answer within 2 s (took $elapsed ms)" test "$elapsed" -le 2000
	wait "$client"
	read -r refused answered < "$WORK/during-restart"
	check "shims: no connection refused while no daemon ran ($refused refused, $answered answered)" test "$refused" = 0 -a "$answered" -gt 0

	# The daemon killed for good: after BERTH_PROXY_FALLBACK (3 s here) each shim serves alone.
	kill -KILL "$BERTH_DAEMON_PID"; wait "$BERTH_DAEMON_PID" 2> /dev/null
	check "shims: the daemon gone for good: each of the range's shims becomes berth, serving alone" eventually 15 all_are berth 201
	check "shims: ... and all 100 ports answer" range_answers 20100 20199
	docker rm -f range2 > /dev/null
	check "shims: docker rm -f after the fallback: no proxy of the range left" test -z "$(range_pids 201)"
	start_berth_daemon
}

echo "docker-test: checks"
# -p 8080:80
run web -p 8080:80 > /dev/null && wait_started web > /dev/null
WEB_IP=$(ip_of web)
check "-p 8080:80: 127.0.0.1:8080 answers with port 80's page" get http://127.0.0.1:8080/ "berth-docker-test port 80"
check "-p 8080:80: [::1]:8080 answers too" get "http://[::1]:8080/" "berth-docker-test port 80"

# -p 80: an ephemeral host port, found through docker port
run ephemeral -p 80 > /dev/null && wait_started ephemeral > /dev/null
EPHEMERAL=$(docker port ephemeral 80/tcp | sed -n 's/^0\.0\.0\.0:\([0-9]*\)$/\1/p' | head -1)
if [ -n "$EPHEMERAL" ]; then
	check "-p 80: docker port's 0.0.0.0:$EPHEMERAL answers" get "http://127.0.0.1:$EPHEMERAL/" "berth-docker-test port 80"
else
	fail "-p 80: docker port names an IPv4 host port" "$(docker port ephemeral 2>&1)"
fi

# -p 127.0.0.1:8081:80: loopback only
run local -p 127.0.0.1:8081:80 > /dev/null && wait_started local > /dev/null
check "-p 127.0.0.1:8081:80: 127.0.0.1:8081 answers" get http://127.0.0.1:8081/ "berth-docker-test port 80"
check "-p 127.0.0.1:8081:80: the bridge address 172.17.0.1:8081 does not" refused http://172.17.0.1:8081/

# a range
run range -p 9000-9002:80-82 > /dev/null && wait_started range > /dev/null
for i in 0 1 2; do
	check "-p 9000-9002:80-82: 127.0.0.1:900$i answers with port 8$i's page" get "http://127.0.0.1:900$i/" "berth-docker-test port 8$i"
done

# UDP
run udp -p 5353:53/udp > /dev/null && wait_started udp > /dev/null
check "-p 5353:53/udp: 127.0.0.1:5353 echoes" udp_echo 127.0.0.1 5353
check "-p 5353:53/udp: [::1]:5353 echoes" udp_echo ::1 5353

# [::1]
if out=$(run v6 -p '[::1]:8082:80' 2>&1) && wait_started v6 > /dev/null; then
	check "-p [::1]:8082:80: [::1]:8082 answers" get "http://[::1]:8082/" "berth-docker-test port 80"
	check "-p [::1]:8082:80: 127.0.0.1:8082 does not" refused http://127.0.0.1:8082/
else
	fail "-p [::1]:8082:80: docker run starts the container" "$out"
fi

# the command lines dockerd gave berth
ARGS=$(proxy_args)
want="$PROXY -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip $WEB_IP -container-port 80"
check "dockerd runs $(basename "$PROXY"): $want" grep -qxF -- "$want" <<< "$ARGS"
ip6_of() { docker inspect -f '{{.NetworkSettings.GlobalIPv6Address}}' "$1"; }
want="$PROXY -proto tcp -host-ip :: -host-port 8080 -container-ip $(ip6_of web) -container-port 80"
check "dockerd runs $(basename "$PROXY"): $want" grep -qxF -- "$want" <<< "$ARGS"
want="$PROXY -proto udp -host-ip 0.0.0.0 -host-port 5353 -container-ip $(ip_of udp) -container-port 53"
check "dockerd runs $(basename "$PROXY"): $want" grep -qxF -- "$want" <<< "$ARGS"
want="$PROXY -proto tcp -host-ip ::1 -host-port 8082 -container-ip $(ip6_of v6) -container-port 80"
check "dockerd runs $(basename "$PROXY"): $want" grep -qxF -- "$want" <<< "$ARGS"
echo "  dockerd's children:"; sed 's/^/    /' <<< "$ARGS"

# a host port already in use: berth's error on fd 3 reaches docker run's stderr
in_ns "$PYTHON" -c '
import socket, time
s = socket.socket(); s.bind(("0.0.0.0", 8090)); s.listen(); print("bound", flush=True); time.sleep(120)' > "$WORK/blocker" &
BLOCKER_PID=$!
for _ in $(seq 50); do grep -q bound "$WORK/blocker" && break; sleep 0.1; done
err=$(run busy -p 8090:80 2>&1 > /dev/null)
rc=$?
echo "  docker run -p 8090:80 (8090 taken) said: $err"
if [ $rc != 0 ] && grep -qF "bind 0.0.0.0:8090: address already in use" <<< "$err"; then
	pass "-p 8090:80 with 8090 taken: docker run fails with berth's 'bind 0.0.0.0:8090: address already in use'"
else
	fail "-p 8090:80 with 8090 taken: docker run fails with berth's 'bind 0.0.0.0:8090: address already in use'" "exit $rc: $err"
fi
kill "$BLOCKER_PID" 2>/dev/null; wait "$BLOCKER_PID" 2>/dev/null; BLOCKER_PID=
docker rm -f busy > /dev/null 2>&1

# docker stop frees the port, docker start publishes it again
docker stop -t 3 web > /dev/null
check "docker stop web: no proxy left for port 8080" bash -c "! ps -o args= --ppid $DOCKERD_PID | grep -q -- '-host-port 8080 '"
check "docker stop web: 0.0.0.0:8080 binds again" binds tcp 0.0.0.0 8080
docker start web > /dev/null && wait_started web > /dev/null
check "docker start web: 127.0.0.1:8080 answers again" get http://127.0.0.1:8080/ "berth-docker-test port 80"

[ -n "$SHIM" ] && shim_checks

# --- Cleanup, then check that nothing is left ---------------------------------------------------
docker rm -f $(docker ps -aq) > /dev/null 2>&1
check "docker rm -f: every proxy exited" bash -c "! ps -o args= --ppid $DOCKERD_PID | grep -qF -- '$PROXY'"
KEPT_WORK=$WORK
cleanup
left=""
[ -e "/run/netns/$NS" ] && left="$left namespace $NS;"
WORK=$KEPT_WORK
[ -n "$(our_pids)" ] && left="$left processes $(our_pids | tr '\n' ' ');"
[ -n "$(our_mounts)" ] && left="$left mounts $(our_mounts | tr '\n' ' ');"
[ -e "$WORK" ] && left="$left directory $WORK;"
ls -d /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP" > /dev/null 2>&1 && left="$left cgroups $CGROUP;"
WORK=
if [ -z "$left" ]; then pass "cleanup: no namespace, process, mount, cgroup or directory left"; else fail "cleanup: left$left"; fi
HOST_AFTER=$(host_state)
if [ "$HOST_BEFORE" = "$HOST_AFTER" ]; then
	pass "the host's iptables, ip6tables rules and links are as they were"
else
	fail "the host's iptables, ip6tables rules and links are as they were" "$(diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER"))"
fi

echo "$PASSED passed, $FAILED failed ($(($(date +%s) - STARTED)) s)"
[ "$FAILED" = 0 ]
