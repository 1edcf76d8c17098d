#!/bin/bash
# A range of published ports under a real dockerd (Debian's 20.10, private: .ci/dockerd-env.sh),
# as moby#11185 complains of: `docker run -p 127.0.0.1:F-L:F-L` with a container listening on
# each port, through docker-proxy (a process per port) and through berth-proxy shims handing
# their sockets to one berth daemon. For each: the time of docker run (until every port answers)
# and of docker rm -f, the proxy processes, their total PSS (the daemon's growth counted for
# berth), RSS, and that every port answered. Root only; run by hand, as `make bench` is.
#
#   bash bench/docker-range.sh [N ...]      (default: 100 1000; berth from .build/release)
#
# Each N runs docker-proxy and berth alternately, REPEAT times (2), one private dockerd each.
set -uo pipefail
cd "$(dirname "$0")/.."
COUNTS=${*:-100 1000}
REPEAT=${REPEAT:-2}
RELEASE=$PWD/.build/release
DOCKER_PROXY=${DOCKER_PROXY:-/usr/local/bin/docker-proxy}
[ "$(id -u)" = 0 ] || { echo "docker-range: needs root" >&2; exit 1; }
[ -x "$RELEASE/berth" ] && [ -x "$RELEASE/berth-proxy" ] || { echo "docker-range: make release first" >&2; exit 1; }
[ -x "$DOCKER_PROXY" ] || { echo "docker-range: no $DOCKER_PROXY (make bench-peers)" >&2; exit 1; }

# One measurement, in a process of its own (its own dockerd, namespace and cleanup trap).
measure() { # proxy N: prints "proxy N run_s rm_s processes pss_kib rss_kib answered"
	PROXY_KIND=$1 N=$2 BERTH=$RELEASE/berth bash -c '
		set -uo pipefail
		fail_early() { echo "docker-range: $*" >&2; exit 1; }
		if [ "$PROXY_KIND" = berth ]; then PROXY=$(dirname "$BERTH")/berth-proxy SHIM=1; else PROXY='"$DOCKER_PROXY"' SHIM=; fi
		. .ci/dockerd-env.sh > /dev/null
		first=20000 last=$((20000 + N - 1))
		pss_of() { awk "/^Pss:/ { s += \$2 } END { print s + 0 }" "/proc/$1/smaps_rollup" 2>/dev/null; }
		rss_of() { awk "/^VmRSS:/ { print \$2 }" "/proc/$1/status" 2>/dev/null; }
		daemon_before=0; [ -n "$SHIM" ] && daemon_before=$(pss_of "$BERTH_DAEMON_PID")
		start=$(date +%s%N)
		# The CLI itself, not the 60 s wrapper: docker-proxy takes minutes for a thousand ports.
		dock() { "$DOCKER" -H "unix://$WORK/docker.sock" "$@"; }
		dock run -d --name range -v /usr:/usr:ro -e RANGE_FIRST=$first -e RANGE_LAST=$last \
			-p 127.0.0.1:$first-$last:$first-$last berth-test:local > /dev/null || fail_early "docker run failed"
		answered=0
		for _ in $(seq 600); do
			answered=$(in_ns "$PYTHON" - $first $last << "EOF"
import socket, sys
ok = 0
for p in range(int(sys.argv[1]), int(sys.argv[2]) + 1):
    try:
        s = socket.create_connection(("127.0.0.1", p), timeout=2)
        ok += s.makefile().readline().strip() == "port %d" % p
    except OSError:
        pass
print(ok)
EOF
)
			[ "$answered" = "$N" ] && break
			sleep 0.1
		done
		run_ms=$((($(date +%s%N) - start) / 1000000))
		pids=$(ps -o pid= --ppid "$DOCKERD_PID")
		processes=0 pss=0 rss=0
		for p in $pids; do
			processes=$((processes + 1)); pss=$((pss + $(pss_of $p))); rss=$((rss + $(rss_of $p)))
		done
		if [ -n "$SHIM" ]; then
			grown=$(($(pss_of "$BERTH_DAEMON_PID") - daemon_before))
			pss=$((pss + grown)); rss=$((rss + $(rss_of "$BERTH_DAEMON_PID")))
		fi
		start=$(date +%s%N)
		dock rm -f range > /dev/null
		rm_ms=$((($(date +%s%N) - start) / 1000000))
		left=$(ps -o pid= --ppid "$DOCKERD_PID" | wc -l)
		echo "$PROXY_KIND $N $run_ms $rm_ms $processes $pss $rss $answered $left"
	'
}

echo "docker-range: $(uname -r), $(nproc) CPUs, load $(cut -d" " -f1-3 /proc/loadavg), berth $("$RELEASE/berth" --version), docker-proxy $(cat /usr/local/share/berth-bench/docker-proxy.version 2>/dev/null || echo '?')"
printf '| proxy | N | docker run (every port answers) | docker rm -f | processes | PSS total | PSS per port | RSS total | answered | left after rm |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for n in $COUNTS; do
	for r in $(seq "$REPEAT"); do
		for kind in docker-proxy berth; do
			read -r k count run rm processes pss rss answered left <<< "$(measure "$kind" "$n")"
			[ -n "${pss:-}" ] || { echo "| $kind | $n | failed |"; continue; }
			awk -v k="$k" -v n="$count" -v run="$run" -v rm="$rm" -v p="$processes" -v pss="$pss" -v rss="$rss" \
				-v a="$answered" -v left="$left" 'BEGIN {
				printf "| %s | %d | %.1f s | %.1f s | %d | %.1f MB | %d KiB | %.1f MB | %d/%d | %d |\n",
					k, n, run / 1000, rm / 1000, p, pss / 1024, pss / n, rss / 1024, a, n, left }'
		done
	done
done
