# shellcheck shell=bash
# A private dockerd for berth's Docker tests and benchmarks, sourced by .ci/docker-test.sh and
# bench/docker-range.sh: Debian's dockerd 20.10 and containerd (docker.io, installed if missing,
# services kept from starting) inside a network namespace this creates (docker0, its iptables
# rules and the forwarding sysctls live there), every root, state directory, pidfile and socket
# in a temporary directory, a local busybox image (httpd on 80-82, a UDP echo on 53, with
# RANGE_FIRST and RANGE_LAST set a listener on each port of that range). Everything is removed on
# exit, failure or Ctrl-C (`cleanup`, trapped).
#
# The caller sets BERTH (the berth binary), PROXY (dockerd's userland-proxy-path), SHIM (non-empty:
# a berth daemon runs for berth-proxy shims, BERTH_PROXY_FALLBACK 3 s) and defines fail_early.
# It gets docker (the CLI on the private daemon), in_ns, run, ip_of, get, refused, udp_echo, binds,
# proxy_args, wait_started, start_berth_daemon (CONTROL, BERTH_DAEMON_PID), DOCKERD_PID, WORK.

# Debian's binaries by full path: another docker CLI (28.x) may be first in PATH.
DOCKERD=/usr/sbin/dockerd
CONTAINERD=/usr/bin/containerd
DOCKER=/usr/bin/docker
PYTHON=/usr/bin/python3
NS=berth-docker-$$
CGROUP=berth-docker-$$ # the containers' cgroup parent, in every v1 hierarchy (or the v2 one)
WORK=

# --- Packages: docker.io (dockerd, containerd, runc) and busybox-static for the image --------------
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_install_missing docker.io busybox-static || fail_early "the packages it needs could not be installed"
for b in "$DOCKERD" "$CONTAINERD" "$DOCKER" "$PYTHON" /bin/busybox; do
	[ -x "$b" ] || fail_early "missing $b"
done
command -v curl > /dev/null && command -v nsenter > /dev/null && command -v ps > /dev/null ||
	fail_early "needs curl, nsenter and ps (make deps)"

# --- Cleanup: everything this script started or created, also after a failure ---------------------
# dockerd makes /run/docker/plugins and containerd 1.6 /run/containerd/s (its shims' sockets)
# whatever their exec root and state say: removed afterwards if they were not there before.
RUN_DOCKER_EXISTED=; [ -e /run/docker ] && RUN_DOCKER_EXISTED=1
RUN_CONTAINERD_EXISTED=; [ -e /run/containerd ] && RUN_CONTAINERD_EXISTED=1
BLOCKER_PID=
# Processes started for this run: the namespace's own (containerd, dockerd, berth, shims) and
# those in the containers' cgroups (the containers live in namespaces of their own).
our_pids() {
	{
		[ -e "/run/netns/$NS" ] && ip netns pids "$NS" 2>/dev/null
		cat /sys/fs/cgroup/*/"$CGROUP"/*/cgroup.procs /sys/fs/cgroup/"$CGROUP"/*/cgroup.procs 2>/dev/null
		# (the pattern comes on stdin, so that this grep does not find itself)
		[ -n "$WORK" ] && grep -lsF -f /dev/stdin /proc/[0-9]*/cmdline <<< "$WORK" 2>/dev/null | cut -d/ -f3
	} | grep -v "^$$\$" | sort -un
}
our_mounts() { # deepest first
	[ -n "$WORK" ] && awk -v w="$WORK" 'index($5, w "/") == 1 || $5 == w { print $5 }' /proc/self/mountinfo | sort -r
}
stop_pid() { # pid seconds: SIGTERM, then SIGKILL after the grace period
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq $(($2 * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
}
CLEANED=
cleanup() {
	[ -n "$CLEANED" ] && return
	CLEANED=1
	[ -n "$BLOCKER_PID" ] && kill "$BLOCKER_PID" 2>/dev/null
	if [ -n "$WORK" ] && [ -S "$WORK/docker.sock" ]; then
		ids=$(timeout 10 "$DOCKER" -H "unix://$WORK/docker.sock" ps -aq 2>/dev/null)
		[ -n "$ids" ] && timeout 30 "$DOCKER" -H "unix://$WORK/docker.sock" rm -f $ids > /dev/null 2>&1
	fi
	[ -f "$WORK/dockerd.pid" ] && stop_pid "$(cat "$WORK/dockerd.pid")" 15
	[ -n "${CONTAINERD_PID:-}" ] && stop_pid "$CONTAINERD_PID" 10
	for pid in $(our_pids); do kill -KILL "$pid" 2>/dev/null; done
	for _ in $(seq 50); do [ -z "$(our_pids)" ] && break; sleep 0.1; done
	for pid in ${CONTAINERD_PID:-} ${DOCKERD_JOB:-}; do wait "$pid" 2> /dev/null; done # no zombies
	for m in $(our_mounts); do umount "$m" 2>/dev/null || umount -l "$m"; done
	[ -e "/run/netns/$NS" ] && ip netns del "$NS"
	for d in /sys/fs/cgroup/*/"$CGROUP" /sys/fs/cgroup/"$CGROUP"; do
		[ -d "$d" ] && { rmdir "$d"/*/ 2>/dev/null; rmdir "$d"; }
	done
	[ -z "$RUN_CONTAINERD_EXISTED" ] && rmdir /run/containerd/s /run/containerd 2> /dev/null
	[ -z "$RUN_DOCKER_EXISTED" ] && rmdir /run/docker/plugins /run/docker 2> /dev/null
	[ -n "$WORK" ] && [ -z "$(our_mounts)" ] && rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The host's own rules and links, to compare at the end (counters left out: they move).
host_state() {
	for t in iptables-save ip6tables-save; do
		command -v $t > /dev/null && $t 2> /dev/null | grep -v '^#' | sed 's/ \[[0-9]*:[0-9]*\]$//'
	done
	ip -o link show | awk -F': ' '{ print $2 }' | sort
}
HOST_BEFORE=$(host_state)

WORK=$(mktemp -d /tmp/berth-docker.XXXXXX)
chmod 755 "$WORK"

# --- The namespace, containerd, dockerd ---------------------------------------------------------
# nsenter --net rather than `ip netns exec`: the latter mounts a fresh /sys, which hides the
# cgroup hierarchies under /sys/fs/cgroup that runc needs. So the daemons share the host's mount
# namespace (their mounts are all under $WORK and are removed on exit) and only the network is
# private.
ip netns add "$NS" || fail_early "cannot create network namespace $NS"
ip -n "$NS" link set lo up
in_ns() { nsenter --net="/run/netns/$NS" -- "$@"; }

mkdir -p "$WORK/containerd" "$WORK/docker" "$WORK/exec" "$WORK/client"
cat > "$WORK/containerd.toml" << EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$WORK/containerd.sock"
[ttrpc]
  address = "$WORK/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd/opt"
EOF
in_ns "$CONTAINERD" --config "$WORK/containerd.toml" --log-level warn > "$WORK/containerd.log" 2>&1 &
CONTAINERD_PID=$!
for _ in $(seq 100); do [ -S "$WORK/containerd.sock" ] && break; sleep 0.1; done
[ -S "$WORK/containerd.sock" ] || { cat "$WORK/containerd.log" >&2; fail_early "containerd did not start"; }

cat > "$WORK/daemon.json" << EOF
{
  "userland-proxy": true,
  "userland-proxy-path": "$PROXY",
  "iptables": true,
  "ip-forward": true,
  "ipv6": true,
  "fixed-cidr-v6": "fd00:b0d:0:1::/64",
  "experimental": true,
  "ip6tables": true,
  "storage-driver": "overlay2",
  "cgroup-parent": "/$CGROUP",
  "log-level": "warn",
  "deprecated-key-path": "$WORK/key.json"
}
EOF
# With --shim: the daemon the shims hand their sockets to, and where dockerd's children find it
# (they inherit its environment; on a real host a systemd drop-in for docker.service sets it).
CONTROL=$WORK/berth.sock
start_berth_daemon() {
	# nsenter itself, not in_ns: nsenter execs berth, so $! is the daemon's own pid.
	nsenter --net="/run/netns/$NS" -- "$BERTH" daemon --mode userspace --control "$CONTROL" \
		>> "$WORK/berth-daemon.log" 2>&1 &
	BERTH_DAEMON_PID=$!
	for _ in $(seq 100); do "$BERTH" port ls --control "$CONTROL" > /dev/null 2>&1 && return 0; sleep 0.05; done
	cat "$WORK/berth-daemon.log" >&2
	return 1
}
if [ -n "$SHIM" ]; then
	start_berth_daemon || fail_early "berth daemon did not start"
	export BERTH_CONTROL=$CONTROL BERTH_PROXY_FALLBACK=3
fi
in_ns "$DOCKERD" --config-file "$WORK/daemon.json" --data-root "$WORK/docker" --exec-root "$WORK/exec" \
	--pidfile "$WORK/dockerd.pid" -H "unix://$WORK/docker.sock" --containerd "$WORK/containerd.sock" \
	> "$WORK/dockerd.log" 2>&1 &
DOCKERD_JOB=$!
export DOCKER_CONFIG="$WORK/client"
docker() { timeout 60 "$DOCKER" -H "unix://$WORK/docker.sock" "$@"; }
for _ in $(seq 150); do docker version > /dev/null 2>&1 && break; sleep 0.1; done
docker version > /dev/null 2>&1 || { cat "$WORK/dockerd.log" >&2; fail_early "dockerd did not start"; }
DOCKERD_PID=$(cat "$WORK/dockerd.pid")
echo "docker-test: $(docker version -f 'client {{.Client.Version}}, dockerd {{.Server.Version}}') ($DOCKER and $DOCKERD from $(dpkg -S "$DOCKER" 2> /dev/null | cut -d: -f1)), containerd $("$CONTAINERD" --version | awk '{print $3}'), in network namespace $NS"
echo "docker-test: userland-proxy-path $PROXY ($("$PROXY" -v 2> /dev/null))${SHIM:+, a berth daemon on $CONTROL}"

# --- The image: busybox-static, httpd on 80-82 with distinct pages, a UDP echo on 53 -------------
# busybox-static has no UDP server (its nc has no -u), so the echo is Debian's python3 from the
# host's /usr, mounted read-only into the container (-v /usr:/usr:ro).
ROOT=$WORK/rootfs
mkdir -p "$ROOT/bin" "$ROOT/usr" "$ROOT/etc" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp"
cp /bin/busybox "$ROOT/bin/busybox"
for a in sh httpd sleep cat; do ln -s busybox "$ROOT/bin/$a"; done
ln -s usr/lib "$ROOT/lib"
ln -s usr/lib64 "$ROOT/lib64"
for p in 80 81 82; do mkdir -p "$ROOT/www/$p" && echo "berth-docker-test port $p" > "$ROOT/www/$p/index.html"; done
cat > "$ROOT/udp-echo.py" << 'EOF'
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 and IPv6
s.bind(("::", 53))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
EOF
cat > "$ROOT/start" << 'EOF'
#!/bin/sh
# PID 1: exit on SIGTERM (the kernel gives PID 1 no default action), which ends the container.
trap 'exit 0' TERM INT
for p in 80 81 82; do /bin/httpd -f -p $p -h /www/$p & done
[ -x /usr/bin/python3 ] && /usr/bin/python3 /udp-echo.py &
[ -n "$RANGE_FIRST" ] && /usr/bin/python3 /range.py &
wait
EOF
chmod +x "$ROOT/start"
cp "$(dirname "${BASH_SOURCE[0]}")/docker-range.py" "$ROOT/range.py"
tar -C "$ROOT" -c . | docker import -c 'CMD ["/start"]' - berth-test:local > /dev/null ||
	fail_early "docker import failed"

run() { # name docker-run-arguments...: a detached container from the image
	local name=$1; shift
	docker run -d --name "$name" -v /usr:/usr:ro "$@" berth-test:local
}
ip_of() { docker inspect -f '{{.NetworkSettings.IPAddress}}' "$1"; }
get() { # url expected-body
	local body
	body=$(in_ns curl -sS --noproxy '*' --max-time 5 "$1" 2>&1) || { echo "curl $1: $body"; return 1; }
	[ "$body" = "$2" ] || { echo "curl $1: got '$body', want '$2'"; return 1; }
}
refused() { # url: nothing answers
	! in_ns curl -sS --noproxy '*' --max-time 3 -o /dev/null "$1" 2> /dev/null || { echo "$1 answered"; return 1; }
}
udp_echo() { # host port
	in_ns "$PYTHON" - "$1" "$2" << 'EOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.connect((host, port))  # only replies from the address the datagrams went to
for i in range(5):
    msg = b"berth-udp-%d" % i
    s.send(msg)
    try:
        data, _ = s.recvfrom(65535)
    except socket.timeout:
        continue
    if data == msg:
        sys.exit(0)
    sys.exit("echo: got %r, want %r" % (data, msg))
sys.exit("no echo from %s:%d" % (host, port))
EOF
}
binds() { # proto host port: the port can be bound by another process (nothing holds it)
	in_ns "$PYTHON" -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as berth and docker-proxy: TIME_WAIT is no owner
s.bind((sys.argv[2], int(sys.argv[3])))' "$@"
}
proxy_args() { # the command lines of dockerd's children
	ps -o args= --ppid "$DOCKERD_PID"
}
# A container is ready when its httpd answers and no IPv6 address on docker0 or in the container
# is still tentative (duplicate address detection, about 2 s after docker0 gets its first port):
# until then the kernel picks ::1 as the source for connections to the container's IPv6 address,
# and a proxy's connect to it hangs (seen here on the first [::1]:8080 request, with berth and with
# docker-proxy alike).
wait_started() { # container
	local ip pid; ip=$(ip_of "$1"); pid=$(docker inspect -f '{{.State.Pid}}' "$1")
	for _ in $(seq 100); do
		in_ns curl -s --noproxy '*' --max-time 1 -o /dev/null "http://$ip:80/" &&
			[ -z "$(in_ns ip -6 addr show dev docker0 tentative)" ] &&
			[ -z "$(nsenter --net="/proc/$pid/ns/net" ip -6 addr show tentative)" ] && return 0
		sleep 0.1
	done
	echo "container $1 ($ip) is not ready"; return 1
}
