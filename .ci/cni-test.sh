#!/bin/bash
# berth-cni in a real CNI chain: bridge + host-local + berth-cni, run as a runtime would
# (.ci/cni-runtime.py, SPEC.md section 3), with a berth daemon answering on the plugin's control
# socket and without one; and the same chain with Debian's portmap instead, as the reference
# berth-cni is compared with. Root only. Every plugin runs inside a "host" network namespace this
# script creates (the bridge, the nftables/iptables rules and the forwarding sysctls live there;
# berth-cni's and portmap's each in their own), the containers and an outside client are namespaces
# of their own, host-local's dataDir and the plugins' CNI_PATH are in a temporary directory: the
# host's network, rules and sysctls are never touched. Everything is removed on exit, failure or
# Ctrl-C. One PASS/FAIL line per check, a table of what portmap and berth-cni publish, then
# "N passed, M failed".
#
#   bash .ci/cni-test.sh [path/to/berth-cni] [path/to/berth]   (default .build/debug/...)
#
# Topology, once for berth-cni (b) and once for portmap (p), bridge subnets 198.18.1.0/24 +
# fd00:b:0:1::/64 (b) and 198.18.2.0/24 + fd00:b:0:2::/64 (p):
#
#   client 198.19.0.2 ──veth── 198.19.0.1 host ── cnibr0 ──veth── ctrA, ctrB   (made by bridge)
#          fd00:b:0:9::2       fd00:b:0:9::1
#
# The containers get routes to the client's subnets from host-local ("routes"), no default route
# (with a "gw": bridge 1.1.1's CHECK looks for a route without one otherwise, and fails). The
# bridge's ports are in hairpin mode, as in containerd's default configuration: br_netfilter, when
# loaded, DNATs a container's packet to its own published port at the bridge, which must then
# send it back out of the port it came in on.
# ctrA and ctrB each run a TCP server on 80 and a UDP echo on 53 that answer with their name, so a
# probe tells who answered.
set -uo pipefail

BERTH_CNI=${1:-.build/debug/berth-cni}
BERTH=${2:-.build/debug/berth}
case $BERTH_CNI in /*) ;; *) BERTH_CNI=$PWD/$BERTH_CNI ;; esac
case $BERTH in /*) ;; *) BERTH=$PWD/$BERTH ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUNTIME=$HERE/cni-runtime.py
PYTHON=/usr/bin/python3 # Debian's, not a pyenv shim
PLUGIN_DIR=/usr/lib/cni
P=bcni$$ # every namespace's name starts with this
WORK=
DAEMON_PID=
BLOCKER_PID=
PASSED=0
FAILED=0
STARTED=$(date +%s)

fail_early() { printf 'cni-test: %s\n' "$*" >&2; exit 1; }
pass() { PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL  %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'; }
note() { printf '      %s\n' "$*"; }
check() { # label command...: PASS when the command succeeds
	local label=$1 out; shift
	if out=$("$@" 2>&1); then pass "$label"; else fail "$label" "$out"; fi
}

[ "$(id -u)" = 0 ] || fail_early "needs root (network namespaces, nftables and iptables inside them)"
[ -x "$BERTH_CNI" ] || fail_early "no berth-cni binary at $BERTH_CNI (run make build)"
[ -x "$BERTH" ] || fail_early "no berth binary at $BERTH (run make build)"
[ -f "$RUNTIME" ] || fail_early "no $RUNTIME"

# --- Packages: the reference plugins (bridge, host-local, portmap), iptables for portmap ------------
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_install_missing containernetworking-plugins iptables nftables iproute2 python3 || fail_early "the packages it needs could not be installed"
for b in "$PLUGIN_DIR/bridge" "$PLUGIN_DIR/host-local" "$PLUGIN_DIR/portmap" "$PYTHON"; do
	[ -x "$b" ] || fail_early "missing $b"
done
for c in ip nft iptables ip6tables; do command -v $c > /dev/null || fail_early "missing $c"; done

# --- Cleanup: every process in our namespaces, the namespaces, the temporary directory ------------
our_namespaces() { ip netns list 2>/dev/null | awk -v p="$P-" 'index($1, p) == 1 { print $1 }'; }
our_pids() { # in our namespaces, or naming our directory (the pattern on stdin: grep does not find itself)
	local ns
	for ns in $(our_namespaces); do ip netns pids "$ns" 2>/dev/null; done
	[ -n "$WORK" ] && grep -lsF -f /dev/stdin /proc/[0-9]*/cmdline <<< "$WORK" 2>/dev/null | cut -d/ -f3
}
# berth-cni takes a file lock, /run/berth-cni/<table>.lock, for every change: removed afterwards if
# neither it nor /run/berth-cni was there before.
LOCK_DIR_EXISTED=; [ -e /run/berth-cni ] && LOCK_DIR_EXISTED=1
LOCK_EXISTED=; [ -e /run/berth-cni/berth_cni.lock ] && LOCK_EXISTED=1
CLEANED=
cleanup() {
	[ -n "$CLEANED" ] && return
	CLEANED=1
	local pid ns
	[ -n "$DAEMON_PID" ] && kill -TERM "$DAEMON_PID" 2>/dev/null
	for _ in $(seq 30); do [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
	for pid in $(our_pids) $BLOCKER_PID; do kill -KILL "$pid" 2>/dev/null; done
	for _ in $(seq 50); do [ -z "$(our_pids)" ] && break; sleep 0.1; done
	wait 2>/dev/null # no zombies
	for ns in $(our_namespaces); do ip netns del "$ns"; done
	[ -z "$LOCK_EXISTED" ] && rm -f /run/berth-cni/berth_cni.lock
	[ -z "$LOCK_DIR_EXISTED" ] && rmdir /run/berth-cni 2>/dev/null
	[ -n "$WORK" ] && rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The host's own rules, links and CNI state directories, to compare at the end (read, never
# changed; /run/berth is left out, a daemon elsewhere may make its socket there meanwhile).
host_state() {
	nft list ruleset 2>/dev/null | grep -v '^#'
	for t in iptables-save ip6tables-save; do $t 2>/dev/null | grep -v '^#' | sed 's/ \[[0-9]*:[0-9]*\]$//'; done
	ip -o link show | awk -F': ' '{ print $2 }' | sort
	ls -A /var/lib /var/lib/cni /run/cni /etc/cni 2>/dev/null
}
HOST_BEFORE=$(host_state)

WORK=$(mktemp -d /tmp/berth-cni.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/bin" "$WORK/ipam-b" "$WORK/ipam-p" "$WORK/cache"
ln -s "$PLUGIN_DIR"/* "$WORK/bin/"
ln -sf "$BERTH_CNI" "$WORK/bin/berth-cni"
export CNI_PATH=$WORK/bin
SOCK=$WORK/berth.sock

# --- The containers' servers and the probe ---------------------------------------------------------
cat > "$WORK/server.py" << 'EOF'
import socket, sys, threading
name = sys.argv[1].encode()
def conn(c):
    try:
        c.settimeout(5)
        c.sendall(name + b"\n")
        c.shutdown(socket.SHUT_WR)
        while c.recv(4096):
            pass
    except OSError:
        pass
    finally:
        c.close()
def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 53))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(name + b" " + data, peer)
t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("::", 80))
t.listen(128)
threading.Thread(target=udp, daemon=True).start()
while True:
    c, _ = t.accept()
    threading.Thread(target=conn, args=(c,), daemon=True).start()
EOF
# probe.py tcp|udp HOST PORT [SOURCE_PORT]: prints who answered (a container's name), or refused,
# timeout, reset...
cat > "$WORK/probe.py" << 'EOF'
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
source = int(sys.argv[4]) if len(sys.argv) > 4 else 0
family = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if proto == "tcp":
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect((host, port))
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        print(data.decode(errors="replace").strip() or "empty")
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(0.7)
        if source:
            s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source))
        s.connect((host, port))  # only replies from the address the datagrams went to
        for i in range(3):
            msg = b"probe-%d" % i
            s.send(msg)
            try:
                data = s.recv(65535)
            except socket.timeout:
                continue
            who, _, echo = data.partition(b" ")
            print(who.decode(errors="replace") if echo == msg else "garbled %r" % data)
            break
        else:
            print("timeout")
except ConnectionRefusedError:
    print("refused")
except ConnectionResetError:
    print("reset")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error %s" % e.strerror)
EOF
# blocker.py PORT: holds 0.0.0.0:PORT (TCP) in the host namespace, as another program would
cat > "$WORK/blocker.py" << 'EOF'
import socket, sys, time
s = socket.socket()
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("bound", flush=True)
time.sleep(120)
EOF

# --- Topology ---------------------------------------------------------------------------------------
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
new_ns() {
	ip netns add "$1" || fail_early "cannot create network namespace $1"
	ip -n "$1" link set lo up
}
topology() { # tag: namespaces $P-tag-{host,client,ctrA,ctrB}, the client's veth, the servers
	local h=$P-$1-host c=$P-$1-client ns
	for ns in "$h" "$c" "$P-$1-ctrA" "$P-$1-ctrB"; do new_ns "$ns"; done
	# addresses that come up without duplicate address detection (no 2 s wait for a tentative
	# address), forwarding in the host namespace only
	for ns in "$h" "$c" "$P-$1-ctrA" "$P-$1-ctrB"; do
		in_ns "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 || fail_early "sysctl in $ns"
	done
	in_ns "$h" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 || fail_early "sysctl in $h"
	ip -n "$h" link add veth-client type veth peer name veth-host netns "$c" || fail_early "veth in $h"
	ip -n "$h" addr add 198.19.0.1/24 dev veth-client
	ip -n "$h" addr add fd00:b:0:9::1/64 dev veth-client nodad
	ip -n "$h" link set veth-client up
	ip -n "$c" addr add 198.19.0.2/24 dev veth-host
	ip -n "$c" addr add fd00:b:0:9::2/64 dev veth-host nodad
	ip -n "$c" link set veth-host up
	ip -n "$c" route add 198.18.0.0/15 via 198.19.0.1
	ip -n "$c" route add fd00:b::/48 via fd00:b:0:9::1
	for ns in ctrA ctrB; do
		ip netns exec "$P-$1-$ns" "$PYTHON" "$WORK/server.py" "$ns" > "$WORK/server-$1-$ns.log" 2>&1 &
		disown $! # cleanup kills it: no "Killed" line from bash then
	done
	for ns in ctrA ctrB; do
		for _ in $(seq 50); do [ "$(probe "$P-$1-$ns" tcp 127.0.0.1 80)" = "$ns" ] && break; sleep 0.1; done
		[ "$(probe "$P-$1-$ns" tcp 127.0.0.1 80)" = "$ns" ] || fail_early "the server in $P-$1-$ns does not answer: $(cat "$WORK/server-$1-$ns.log")"
	done
}
probe() { in_ns "$1" "$PYTHON" "$WORK/probe.py" "$2" "$3" "$4" ${5:+"$5"} 2>&1; }
answers() { # ns proto host port want [source port]: the probe says want
	local got; got=$(probe "$1" "$2" "$3" "$4" "${6:-}")
	[ "$got" = "$5" ] || { echo "$2 $3:$4 from $1: got '$got', want '$5'"; return 1; }
}
silent() { # ns proto host port: no container answers (refused, timeout, reset)
	local got; got=$(probe "$1" "$2" "$3" "$4")
	case $got in refused | timeout | reset) ;; *) echo "$2 $3:$4 from $1: got '$got', want refused or no answer"; return 1 ;; esac
}

topology b
topology p
B_HOST=$P-b-host B_CLIENT=$P-b-client B_A=$P-b-ctrA B_B=$P-b-ctrB
P_HOST=$P-p-host P_CLIENT=$P-p-client P_A=$P-p-ctrA P_B=$P-p-ctrB
CID_A=ctrA-$$ CID_B=ctrB-$$
OWNER_A=cni/berthnet/$CID_A/eth0 OWNER_B=cni/berthnet/$CID_B/eth0

cat > "$WORK/berth.conflist" << EOF
{"cniVersion":"1.0.0","name":"berthnet","plugins":[
 {"type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"$WORK/ipam-b","ranges":[[{"subnet":"198.18.1.0/24"}],[{"subnet":"fd00:b:0:1::/64"}]],
  "routes":[{"dst":"198.19.0.0/24","gw":"198.18.1.1"},{"dst":"fd00:b:0:9::/64","gw":"fd00:b:0:1::1"}]}},
 {"type":"berth-cni","capabilities":{"portMappings":true},"control":"$SOCK","table":"berth_cni"}]}
EOF
cat > "$WORK/portmap.conflist" << EOF
{"cniVersion":"1.0.0","name":"portmapnet","plugins":[
 {"type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"$WORK/ipam-p","ranges":[[{"subnet":"198.18.2.0/24"}],[{"subnet":"fd00:b:0:2::/64"}]],
  "routes":[{"dst":"198.19.0.0/24","gw":"198.18.2.1"},{"dst":"fd00:b:0:9::/64","gw":"fd00:b:0:2::1"}]}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}
EOF
MAP_A='[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]'
MAP_DUP='[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]'
MAP_B='[{"hostPort":8081,"containerPort":80,"protocol":"tcp"}]'
MAP_BUSY='[{"hostPort":8090,"containerPort":80,"protocol":"tcp"}]'
MAP_LO4='[{"hostPort":8082,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]'
MAP_LO6='[{"hostPort":8083,"containerPort":80,"protocol":"tcp","hostIP":"::1"}]'

# --- The runtime ---------------------------------------------------------------------------------
# cni HOSTNS OP CONFLIST CTRNS CID [runtime options]: sets RC, OUT (stdout: the result, or the
# plugin's error JSON), ERR (stderr: the plugins' and the runtime's)
cni() {
	local host=$1 op=$2 conflist=$3 ctr=$4 cid=$5; shift 5
	OUT=$(in_ns "$host" "$PYTHON" "$RUNTIME" chain "$op" "$WORK/$conflist" "$cid" "/var/run/netns/$ctr" eth0 \
		--cache "$WORK/cache" "$@" 2> "$WORK/stderr")
	RC=$?
	ERR=$(cat "$WORK/stderr")
}
# call HOSTNS TYPE COMMAND [runtime options]: one plugin, one command (GC, STATUS, VERSION)
call() {
	local host=$1; shift
	OUT=$(in_ns "$host" "$PYTHON" "$RUNTIME" call "$@" 2> "$WORK/stderr" < /dev/null)
	RC=$?
	ERR=$(cat "$WORK/stderr")
}
said() { printf 'exit %s\nstdout: %s\nstderr: %s' "$RC" "$OUT" "$ERR"; }
json_field() { "$PYTHON" -c 'import json, sys
try:
    v = json.loads(sys.stdin.read()).get(sys.argv[1], "")
except Exception:
    v = ""
print(v)' "$1" <<< "$OUT"; }
ok() { # label: the last cni/call succeeded
	if [ "$RC" = 0 ]; then pass "$1"; else fail "$1" "$(said)"; fi
}
refused_with() { # label code [text the msg must contain]: the last cni call failed with this CNI error
	local code msg
	code=$(json_field code) msg=$(json_field msg)
	if [ "$RC" != 0 ] && [ "$code" = "$2" ] && { [ -z "${3:-}" ] || grep -qF -- "$3" <<< "$msg"; }; then
		pass "$1"; note "msg: $msg"
	else
		fail "$1" "$(said)"
	fi
}
failed_with_error() { # label: the last call failed with a CNI error JSON (any code)
	if [ "$RC" != 0 ] && [ -n "$(json_field code)" ]; then pass "$1"; note "code $(json_field code): $(json_field msg)"; else fail "$1" "$(said)"; fi
}
passed_through() { # cid: berth-cni's ADD result is bridge's, unchanged
	"$PYTHON" - "$WORK/cache/berthnet-$1-eth0.json" << 'EOF'
import json, sys
steps = json.load(open(sys.argv[1]))["steps"]
if steps[0]["result"] != steps[1]["result"]:
    sys.exit("bridge: %s\nberth-cni: %s" % (json.dumps(steps[0]["result"]), json.dumps(steps[1]["result"])))
EOF
}

# what each plugin does, for the table at the end: OBS[column.row]
declare -A OBS
observe() { # column row ns proto host port: what a probe gets, as yes (ctrX) / no (refused)
	local got; got=$(probe "$3" "$4" "$5" "$6")
	case $got in ctrA | ctrB) OBS[$1.$2]="yes ($got)" ;; *) OBS[$1.$2]="no ($got)" ;; esac
	printf '      observed: %s %s:%s from %s: %s\n' "$4" "$5" "$6" "${3#"$P"-}" "$got"
}
start_blocker() { # hostns port
	ip netns exec "$1" "$PYTHON" "$WORK/blocker.py" "$2" > "$WORK/blocker" 2>&1 &
	BLOCKER_PID=$!
	for _ in $(seq 50); do grep -q bound "$WORK/blocker" && return 0; sleep 0.1; done
	fail_early "the blocker does not bind $2: $(cat "$WORK/blocker")"
}
stop_blocker() { kill "$BLOCKER_PID" 2>/dev/null; wait "$BLOCKER_PID" 2>/dev/null; BLOCKER_PID=; }

echo "cni-test: $("$PLUGIN_DIR/portmap" 2>&1 | head -1) from $(dpkg-query -W -f='${Package} ${Version}' containernetworking-plugins); berth-cni $BERTH_CNI; iptables $(iptables --version | awk '{print $2, $3}')"

# --- portmap, the reference --------------------------------------------------------------------
echo "== portmap (reference) in $P_HOST"
cni "$P_HOST" ADD portmap.conflist "$P_A" "$CID_A" --port-mappings "$MAP_A"
ok "portmap: ADD ctrA (8080/tcp, 5353/udp) succeeds"
check "portmap: client -> 198.19.0.1:8080 answers ctrA" answers "$P_CLIENT" tcp 198.19.0.1 8080 ctrA
observe portmap net4 "$P_CLIENT" tcp 198.19.0.1 8080
observe portmap net6 "$P_CLIENT" tcp fd00:b:0:9::1 8080
observe portmap udp "$P_CLIENT" udp 198.19.0.1 5353
observe portmap lo4 "$P_HOST" tcp 127.0.0.1 8080
observe portmap lo6 "$P_HOST" tcp ::1 8080
cni "$P_HOST" ADD portmap.conflist "$P_B" "$CID_B" --port-mappings "$MAP_B"
ok "portmap: ADD ctrB (8081) succeeds"
observe portmap other "$P_B" tcp 198.19.0.1 8080
observe portmap self "$P_A" tcp 198.19.0.1 8080
cni "$P_HOST" DEL portmap.conflist "$P_B" "$CID_B"
ok "portmap: DEL ctrB succeeds"
cni "$P_HOST" ADD portmap.conflist "$P_B" "$CID_B" --port-mappings "$MAP_DUP"
ok "portmap: ADD ctrB with host port 8080 again is accepted (exit 0)"
if [ "$RC" = 0 ]; then
	got=$(probe "$P_CLIENT" tcp 198.19.0.1 8080)
	note "observed: after both ADDs, 198.19.0.1:8080 from the client: $got"
	OBS[portmap.dup]="accepted, $got answers"
else
	OBS[portmap.dup]="refused (code $(json_field code))"
fi
cni "$P_HOST" DEL portmap.conflist "$P_B" "$CID_B"
ok "portmap: DEL ctrB (the duplicate) succeeds"
start_blocker "$P_HOST" 8090
cni "$P_HOST" ADD portmap.conflist "$P_B" "$CID_B" --port-mappings "$MAP_BUSY"
if [ "$RC" = 0 ]; then OBS[portmap.busy]="accepted"; else OBS[portmap.busy]="refused (code $(json_field code))"; fi
note "observed: ADD ctrB 8090 while a host process listens on 0.0.0.0:8090: exit $RC"
stop_blocker
cni "$P_HOST" DEL portmap.conflist "$P_B" "$CID_B"
# an observation only: portmap 1.1.1's CHECK of a dual-stack attachment looks for the IPv4 rules
# in ip6tables and fails (code 999 "could not check ipv6 dnat")
cni "$P_HOST" CHECK portmap.conflist "$P_A" "$CID_A"
if [ "$RC" = 0 ]; then OBS[portmap.check]="ok"; else OBS[portmap.check]="fails (code $(json_field code))"; fi
note "observed: CHECK ctrA: exit $RC $(json_field msg | cut -c1-100)"
cni "$P_HOST" DEL portmap.conflist "$P_A" "$CID_A"
ok "portmap: DEL ctrA succeeds"
check "portmap: after DEL ctrA, 198.19.0.1:8080 no longer answers" silent "$P_CLIENT" tcp 198.19.0.1 8080

# --- berth-cni with a berth daemon on its control socket ----------------------------------------
echo "== berth-cni with a berth daemon (--mode hybrid) in $B_HOST"
# (ip netns exec itself, not in_ns: $! is then the daemon, not a subshell around it)
ip netns exec "$B_HOST" "$BERTH" daemon --control "$SOCK" --mode hybrid > "$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do "$BERTH" port ls --control "$SOCK" > /dev/null 2>&1 && break; sleep 0.1; done
"$BERTH" port ls --control "$SOCK" > /dev/null 2>&1 || fail_early "berth daemon did not start: $(cat "$WORK/daemon.log")"
ports() { "$BERTH" port ls --control "$SOCK" 2>&1; }
lists() { # owner regex: berth port ls has a line of this owner matching regex
	local out; out=$(ports)
	grep -F -- "$1" <<< "$out" | grep -qE -- "$2" || { printf 'berth port ls:\n%s' "$out"; return 1; }
}
lists_none() { # owner: berth port ls has no line of this owner
	local out; out=$(ports)
	! grep -qF -- "$1" <<< "$out" || { printf 'berth port ls:\n%s' "$out"; return 1; }
}

cni "$B_HOST" ADD berth.conflist "$B_A" "$CID_A" --port-mappings "$MAP_A"
ok "daemon: ADD ctrA (8080/tcp, 5353/udp) succeeds"
[ "$RC" = 0 ] && check "daemon: berth-cni's ADD result is bridge's prevResult, unchanged" passed_through "$CID_A"
check "daemon: client -> 198.19.0.1:8080 answers ctrA" answers "$B_CLIENT" tcp 198.19.0.1 8080 ctrA
check "daemon: client -> 198.19.0.1:5353/udp answers ctrA" answers "$B_CLIENT" udp 198.19.0.1 5353 ctrA
check "daemon: host -> 127.0.0.1:8080 answers ctrA" answers "$B_HOST" tcp 127.0.0.1 8080 ctrA
check "daemon: host -> [::1]:8080 answers ctrA" answers "$B_HOST" tcp ::1 8080 ctrA
check "daemon: client -> [fd00:b:0:9::1]:8080 answers ctrA" answers "$B_CLIENT" tcp fd00:b:0:9::1 8080 ctrA
observe daemon net4 "$B_CLIENT" tcp 198.19.0.1 8080
observe daemon net6 "$B_CLIENT" tcp fd00:b:0:9::1 8080
observe daemon udp "$B_CLIENT" udp 198.19.0.1 5353
observe daemon lo4 "$B_HOST" tcp 127.0.0.1 8080
observe daemon lo6 "$B_HOST" tcp ::1 8080
echo "      berth port ls:"; ports | sed 's/^/        /'
check "daemon: berth port ls lists 80/tcp -> :8080 of $OWNER_A" lists "$OWNER_A" '80/tcp.*:8080'
check "daemon: berth port ls lists 53/udp -> :5353 of $OWNER_A" lists "$OWNER_A" '53/udp.*:5353'

cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_DUP"
refused_with "daemon: ADD ctrB with host port 8080 (ctrA's) fails with code 100 naming 8080" 100 8080
if [ "$RC" = 0 ]; then OBS[daemon.dup]="accepted"; else OBS[daemon.dup]="refused (code $(json_field code))"; fi
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_DUP"
ok "daemon: DEL ctrB after its failed ADD (no prevResult, the same portMappings) succeeds"
check "daemon: ctrA still answers on 198.19.0.1:8080" answers "$B_CLIENT" tcp 198.19.0.1 8080 ctrA
check "daemon: ctrA still answers on 127.0.0.1:8080" answers "$B_HOST" tcp 127.0.0.1 8080 ctrA
start_blocker "$B_HOST" 8090
cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_BUSY"
refused_with "daemon: ADD ctrB with host port 8090 held by a host listener fails with code 100 naming 8090" 100 8090
if [ "$RC" = 0 ]; then OBS[daemon.busy]="accepted"; else OBS[daemon.busy]="refused (code $(json_field code))"; fi
stop_blocker
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_BUSY"
ok "daemon: DEL ctrB after that failed ADD succeeds"

cni "$B_HOST" CHECK berth.conflist "$B_A" "$CID_A"
ok "daemon: CHECK ctrA succeeds"
if [ "$RC" = 0 ]; then OBS[daemon.check]="ok"; else OBS[daemon.check]="fails (code $(json_field code))"; fi
call "$B_HOST" berth-cni STATUS --conflist "$WORK/berth.conflist" --cni-version 1.1.0
ok "daemon: STATUS (1.1.0) exits 0"

cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A"
ok "daemon: DEL ctrA succeeds"
check "daemon: after DEL ctrA, 198.19.0.1:8080 no longer answers" silent "$B_CLIENT" tcp 198.19.0.1 8080
check "daemon: after DEL ctrA, 127.0.0.1:8080 no longer answers" silent "$B_HOST" tcp 127.0.0.1 8080
check "daemon: after DEL ctrA, berth port ls lists nothing of $OWNER_A" lists_none "$OWNER_A"
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A"
ok "daemon: a second DEL ctrA succeeds"
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A" --no-prev-result
ok "daemon: DEL ctrA without prevResult succeeds"
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A" --no-cache
ok "daemon: DEL ctrA with neither prevResult nor portMappings succeeds"

# CHECK after the ports were removed behind the plugin's back
cni "$B_HOST" ADD berth.conflist "$B_A" "$CID_A" --port-mappings "$MAP_A"
ok "daemon: ADD ctrA again succeeds"
rm_out=$("$BERTH" port rm --owner "$OWNER_A" --control "$SOCK" 2>&1) || note "berth port rm --owner $OWNER_A: $rm_out"
check "daemon: after berth port rm --owner, berth port ls lists nothing of $OWNER_A" lists_none "$OWNER_A"
cni "$B_HOST" CHECK berth.conflist "$B_A" "$CID_A"
failed_with_error "daemon: CHECK ctrA fails (error JSON) after berth port rm --owner $OWNER_A"
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A"
ok "daemon: DEL ctrA of the removed ports succeeds"

# GC: ctrA is not among the valid attachments, ctrB is
cni "$B_HOST" ADD berth.conflist "$B_A" "$CID_A" --port-mappings "$MAP_A"
ok "daemon: ADD ctrA (8080, 5353) for GC succeeds"
cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_B"
ok "daemon: ADD ctrB (8081) succeeds"
check "daemon: client -> 198.19.0.1:8081 answers ctrB" answers "$B_CLIENT" tcp 198.19.0.1 8081 ctrB
observe daemon other "$B_B" tcp 198.19.0.1 8080
observe daemon self "$B_A" tcp 198.19.0.1 8080
call "$B_HOST" berth-cni GC --conflist "$WORK/berth.conflist" --cni-version 1.1.0 --valid-attachments "$CID_B/eth0"
ok "daemon: GC (1.1.0) with valid-attachments [ctrB/eth0] exits 0"
check "daemon: after GC, berth port ls lists nothing of $OWNER_A" lists_none "$OWNER_A"
check "daemon: after GC, berth port ls still lists 80/tcp -> :8081 of $OWNER_B" lists "$OWNER_B" '80/tcp.*:8081'
check "daemon: after GC, 198.19.0.1:8080 no longer answers" silent "$B_CLIENT" tcp 198.19.0.1 8080
check "daemon: after GC, 198.19.0.1:8081 still answers ctrB" answers "$B_CLIENT" tcp 198.19.0.1 8081 ctrB
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A"
ok "daemon: DEL ctrA after GC succeeds"
# the first DEL of ctrB as from a runtime that lost its state: neither prevResult nor portMappings
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --no-cache
ok "daemon: DEL ctrB with neither prevResult nor portMappings succeeds"
check "daemon: after that DEL ctrB, berth port ls lists nothing of $OWNER_B" lists_none "$OWNER_B"
check "daemon: after that DEL ctrB, 198.19.0.1:8081 no longer answers" silent "$B_CLIENT" tcp 198.19.0.1 8081
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B"
ok "daemon: a second DEL ctrB (with prevResult) succeeds"

kill -TERM "$DAEMON_PID" 2>/dev/null
for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DAEMON_PID" 2>/dev/null; then
	fail "daemon: berth daemon exits on SIGTERM" "$(cat "$WORK/daemon.log")"
	kill -KILL "$DAEMON_PID"
else
	pass "daemon: berth daemon exits on SIGTERM"
fi
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=

# --- berth-cni alone: no daemon answers, it programs nftables itself ------------------------------
echo "== berth-cni without a daemon in $B_HOST (control $SOCK: $([ -e "$SOCK" ] && echo "a stale file" || echo "no such file"))"
table() { in_ns "$B_HOST" nft list table inet berth_cni 2>&1; }
has_element() { # owner: inet berth_cni has an element commented with it
	local out; out=$(table)
	grep -qF -- "comment \"$1\"" <<< "$out" || { printf 'nft list table inet berth_cni:\n%s' "$out"; return 1; }
}
no_element() { # owner: inet berth_cni has no element commented with it (or there is no table)
	local out; out=$(table)
	! grep -qF -- "\"$1\"" <<< "$out" || { printf 'nft list table inet berth_cni:\n%s' "$out"; return 1; }
}
cni "$B_HOST" ADD berth.conflist "$B_A" "$CID_A" --port-mappings "$MAP_A"
ok "alone: ADD ctrA (8080/tcp, 5353/udp) succeeds"
[ "$RC" = 0 ] && check "alone: berth-cni's ADD result is bridge's prevResult, unchanged" passed_through "$CID_A"
root_lock() { # the lock is root's: a 0755 directory and a 0600 regular file, both owned by root
	local d f; d=$(stat -c '%U %a %F' /run/berth-cni 2>&1); f=$(stat -c '%U %a %F' /run/berth-cni/berth_cni.lock 2>&1)
	[ "$d" = "root 755 directory" ] && [ "$f" = "root 600 regular empty file" ] || { printf '/run/berth-cni: %s\nlock: %s' "$d" "$f"; return 1; }
}
check "alone: the lock is /run/berth-cni/berth_cni.lock, root's (0755 directory, 0600 file)" root_lock
check "alone: client -> 198.19.0.1:8080 answers ctrA" answers "$B_CLIENT" tcp 198.19.0.1 8080 ctrA
check "alone: client -> 198.19.0.1:5353/udp answers ctrA" answers "$B_CLIENT" udp 198.19.0.1 5353 ctrA
check "alone: host -> 127.0.0.1:8080 does not answer (loopback is the daemon's; documented)" silent "$B_HOST" tcp 127.0.0.1 8080
observe alone net4 "$B_CLIENT" tcp 198.19.0.1 8080
observe alone net6 "$B_CLIENT" tcp fd00:b:0:9::1 8080
observe alone udp "$B_CLIENT" udp 198.19.0.1 5353
observe alone lo4 "$B_HOST" tcp 127.0.0.1 8080
observe alone lo6 "$B_HOST" tcp ::1 8080
echo "      nft list table inet berth_cni:"; table | sed 's/^/        /'
check "alone: table inet berth_cni has an element commented \"$OWNER_A\"" has_element "$OWNER_A"
n=$(table | grep -oF -- "comment \"$OWNER_A\"" | wc -l)
note "elements commented \"$OWNER_A\": $n (2 mappings)"

cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_LO4"
refused_with "alone: ADD ctrB with hostIP 127.0.0.1 fails with code 101" 101
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_LO4"
ok "alone: DEL ctrB after its failed ADD (no prevResult, the same portMappings) succeeds"
cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_LO6"
refused_with "alone: ADD ctrB with hostIP ::1 fails with code 101" 101
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_LO6"
ok "alone: DEL ctrB after that failed ADD succeeds"
cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_DUP"
refused_with "alone: ADD ctrB with host port 8080 (ctrA's) fails with code 100 naming 8080" 100 8080
if [ "$RC" = 0 ]; then OBS[alone.dup]="accepted"; else OBS[alone.dup]="refused (code $(json_field code))"; fi
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_DUP"
ok "alone: DEL ctrB after that failed ADD succeeds"
check "alone: ctrA still answers on 198.19.0.1:8080" answers "$B_CLIENT" tcp 198.19.0.1 8080 ctrA
check "alone: after ctrB's failed ADDs, the table has no element of $OWNER_B" no_element "$OWNER_B"
start_blocker "$B_HOST" 8090
cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_BUSY"
refused_with "alone: ADD ctrB with host port 8090 held by a host listener fails with code 100 naming 8090" 100 8090
if [ "$RC" = 0 ]; then OBS[alone.busy]="accepted"; else OBS[alone.busy]="refused (code $(json_field code))"; fi
stop_blocker
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_BUSY"
ok "alone: DEL ctrB after that failed ADD succeeds"

cni "$B_HOST" CHECK berth.conflist "$B_A" "$CID_A"
ok "alone: CHECK ctrA succeeds"
if [ "$RC" = 0 ]; then OBS[alone.check]="ok"; else OBS[alone.check]="fails (code $(json_field code))"; fi
# every map and set of the table flushed behind the plugin's back (only ctrA has elements now)
for m in $(table | awk '$1 == "map" || $1 == "set" { print $1 ":" $2 }'); do
	in_ns "$B_HOST" nft flush "${m%%:*}" inet berth_cni "${m#*:}" || note "nft flush ${m%%:*} inet berth_cni ${m#*:} failed"
done
check "alone: after flushing the table's maps, it has no element of $OWNER_A" no_element "$OWNER_A"
cni "$B_HOST" CHECK berth.conflist "$B_A" "$CID_A"
failed_with_error "alone: CHECK ctrA fails (error JSON) after its elements were flushed"
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A"
ok "alone: DEL ctrA of the flushed elements succeeds"

# A UDP client that sent to 5353 while nothing was published there has a conntrack entry to the
# host, NAT decided (the table's nat chains exist now): nat sees only a flow's first packet, so
# unless ADD deletes that entry the client keeps reaching the host for as long as it sends.
probe "$B_CLIENT" udp 198.19.0.1 5353 40053 > /dev/null
# GC: ctrA is not among the valid attachments, ctrB is
cni "$B_HOST" ADD berth.conflist "$B_A" "$CID_A" --port-mappings "$MAP_A"
ok "alone: ADD ctrA again succeeds"
check "alone: ctrA answers on 198.19.0.1:8080 again" answers "$B_CLIENT" tcp 198.19.0.1 8080 ctrA
check "alone: a UDP client that sent to 5353 before the ADD reaches ctrA from the same port" \
	answers "$B_CLIENT" udp 198.19.0.1 5353 ctrA 40053
cni "$B_HOST" ADD berth.conflist "$B_B" "$CID_B" --port-mappings "$MAP_B"
ok "alone: ADD ctrB (8081) succeeds"
check "alone: client -> 198.19.0.1:8081 answers ctrB" answers "$B_CLIENT" tcp 198.19.0.1 8081 ctrB
observe alone other "$B_B" tcp 198.19.0.1 8080
observe alone self "$B_A" tcp 198.19.0.1 8080
call "$B_HOST" berth-cni GC --conflist "$WORK/berth.conflist" --cni-version 1.1.0 --valid-attachments "$CID_B/eth0"
ok "alone: GC (1.1.0) with valid-attachments [ctrB/eth0] exits 0"
check "alone: after GC, the table has no element of $OWNER_A" no_element "$OWNER_A"
check "alone: after GC, the table still has ctrB's element" has_element "$OWNER_B"
check "alone: after GC, 198.19.0.1:8080 no longer answers" silent "$B_CLIENT" tcp 198.19.0.1 8080
check "alone: after GC, 198.19.0.1:8081 still answers ctrB" answers "$B_CLIENT" tcp 198.19.0.1 8081 ctrB
cni "$B_HOST" DEL berth.conflist "$B_A" "$CID_A"
ok "alone: DEL ctrA after GC succeeds"
# the first DEL of ctrB as from a runtime that lost its state: neither prevResult nor portMappings
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --no-cache
ok "alone: DEL ctrB with neither prevResult nor portMappings succeeds"
check "alone: after that DEL ctrB, the table has no element of $OWNER_B" no_element "$OWNER_B"
check "alone: after that DEL ctrB, 198.19.0.1:8081 no longer answers" silent "$B_CLIENT" tcp 198.19.0.1 8081
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B"
ok "alone: a second DEL ctrB (with prevResult) succeeds"
cni "$B_HOST" DEL berth.conflist "$B_B" "$CID_B" --no-prev-result
ok "alone: DEL ctrB without prevResult succeeds"

call "$B_HOST" berth-cni STATUS --conflist "$WORK/berth.conflist" --cni-version 1.1.0
ok "alone: STATUS (1.1.0) exits 0"
call "$B_HOST" berth-cni VERSION --config '{"cniVersion":"1.1.0"}'
versions=$(json_field supportedVersions)
if [ "$RC" = 0 ] && grep -qF "'1.1.0'" <<< "$versions" && grep -qF "'1.0.0'" <<< "$versions"; then
	pass "VERSION (1.1.0) lists 1.1.0 and 1.0.0: $versions"
else
	fail "VERSION (1.1.0) lists 1.1.0 and 1.0.0" "$(said)"
fi

# --- The comparison ---------------------------------------------------------------------------------
echo
echo "What a published 8080/tcp (and 5353/udp) does, same mappings, same chain but the last plugin:"
row() { printf '  %-38s %-24s %-24s %s\n' "$@"; }
row "" "portmap (snat)" "berth-cni + daemon" "berth-cni alone"
for r in "net4:from the network, 198.19.0.1:8080" "net6:from the network, [fd00:b:0:9::1]" \
	"udp:from the network, 198.19.0.1:5353/udp" "lo4:host 127.0.0.1:8080" "lo6:host [::1]:8080" \
	"other:ctrB -> 198.19.0.1:8080 (ctrA's)" "self:ctrA -> 198.19.0.1:8080 (its own)" \
	"dup:duplicate host port (ctrB 8080)" "busy:host port held by a host process" "check:CHECK after ADD"; do
	k=${r%%:*}
	row "${r#*:}" "${OBS[portmap.$k]:-n/a}" "${OBS[daemon.$k]:-n/a}" "${OBS[alone.$k]:-n/a}"
done
echo

# --- Cleanup, then check that nothing is left ----------------------------------------------------
KEPT_WORK=$WORK
cleanup
left=""
[ -n "$(our_namespaces)" ] && left="$left namespaces $(our_namespaces | tr '\n' ' ');"
[ -e "$KEPT_WORK" ] && left="$left directory $KEPT_WORK;"
WORK=$KEPT_WORK
[ -n "$(our_pids)" ] && left="$left processes $(our_pids | tr '\n' ' ');"
WORK=
if [ -z "$left" ]; then pass "cleanup: no namespace, process or directory left"; else fail "cleanup: left$left"; fi
HOST_AFTER=$(host_state)
if [ "$HOST_BEFORE" = "$HOST_AFTER" ]; then
	pass "the host's nftables ruleset, iptables rules, links and state directories are as they were"
else
	fail "the host's nftables ruleset, iptables rules, links and state directories are as they were" \
		"$(diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER"))"
fi

echo "$PASSED passed, $FAILED failed ($(($(date +%s) - STARTED)) s)"
[ "$FAILED" = 0 ]
