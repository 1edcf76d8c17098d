# berth: two commands on a fresh Debian machine, as root: `make demo` and `make test`.
# Both install what is missing with apt-get first (services, HAProxy's among them, kept from
# starting: the tests run their own).

SWIFT ?= swift
BUILD_FLAGS ?=
APT_PACKAGES = libnftnl-dev libmnl-dev pkg-config nftables iproute2 conntrack curl python3 libcap2-bin procps haproxy libhttp-parser-dev libcjson-dev

.PHONY: all deps build release test test-docker demo bench bench-peers bench-smoke clean

all: build

# Installs only what is missing; `apt-get update` runs once, and only if something is.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make: missing Debian packages:$$missing (run as root, or install them)"; exit 1; fi; \
		echo "make: installing$$missing"; \
		made_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
		[ -n "$$made_policy" ] && rm -f /usr/sbin/policy-rc.d; \
		exit $$rc; \
	fi

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# The Swift runtime linked in: berth runs where Swift is not installed (dockerd's
# userland-proxy-path on any host), and starts touching fewer shared pages (RSS 11 MB, not 14).
release: deps
	$(SWIFT) build -c release --static-swift-stdlib $(BUILD_FLAGS)

# Every test: unit, relay, netfilter and end-to-end (root-only ones skip with a reason elsewhere).
test: deps
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)
	$(MAKE) bench-smoke
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) test-docker; \
	else echo "make: test-docker skipped: it needs root (a network namespace with its own dockerd and containerd)"; fi

# berth as dockerd's userland-proxy-path: Debian's dockerd 20.10 and containerd (docker.io,
# installed if missing, services kept from starting), private to a network namespace and a
# temporary directory, publishing ports of a local busybox image. Root only.
test-docker: build
	bash .ci/docker-test.sh $(CURDIR)/.build/debug/berth

demo: release
	bash .ci/demo.sh .build/release/berth

# Benchmark peers from Debian's packages: socat, HAProxy, nginx with its stream module
# (libnginx-mod-stream ships ngx_stream_module.so), and docker-proxy alone out of the
# docker.io package (extracted, never installed: no daemon). Services are kept from
# starting while the packages install. Does nothing when all are here already.
BENCH_PEER_PACKAGES = socat haproxy nginx libnginx-mod-stream
bench-peers:
	@missing=""; for p in $(BENCH_PEER_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ] && [ -x /usr/local/bin/docker-proxy ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "make: bench peers missing:$$missing docker-proxy (run as root)"; exit 1; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get update -qq || exit 1; \
	if [ -n "$$missing" ]; then \
		echo "make: installing$$missing"; \
		made_policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; fi; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
		[ -n "$$made_policy" ] && rm -f /usr/sbin/policy-rc.d; \
		[ $$rc = 0 ] || exit $$rc; \
	fi; \
	if [ ! -x /usr/local/bin/docker-proxy ]; then \
		echo "make: extracting docker-proxy from the docker.io package"; \
		tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && apt-get download docker.io >/dev/null && \
		dpkg-deb -x docker.io_*.deb root && \
		for p in root/usr/sbin/docker-proxy root/usr/libexec/docker/docker-proxy root/usr/bin/docker-proxy; do \
			[ -x $$p ] && install -m 755 $$p /usr/local/bin/docker-proxy && break; \
		done; \
		mkdir -p /usr/local/share/berth-bench && dpkg-deb -f docker.io_*.deb Version > /usr/local/share/berth-bench/docker-proxy.version; \
		cd / && rm -rf $$tmp; \
		[ -x /usr/local/bin/docker-proxy ] || { echo "make: no docker-proxy in the docker.io package"; exit 1; }; \
	fi

# Micro-benchmarks, then every end-to-end figure against every peer; writes bench/RESULTS.md.
BENCH_FLAGS ?= --duration 2 --repeat 3
bench: release bench-peers
	mkdir -p bench/.build && $(SWIFT) package --package-path bench benchmark --no-progress > bench/.build/micro-benchmarks.txt 2>&1 || { cat bench/.build/micro-benchmarks.txt; exit 1; }
	cat bench/.build/micro-benchmarks.txt
	$(SWIFT) build -c release --package-path bench
	bench/.build/release/berth-bench $(BENCH_FLAGS) \
		--results bench/RESULTS.md --json bench/RESULTS.json --micro bench/.build/micro-benchmarks.txt

# Every figure once, tiny, berth and direct only: fails if any figure is missing, never on speed.
bench-smoke: build
	$(SWIFT) run --package-path bench berth-bench --smoke --berth $(CURDIR)/.build/debug/berth

clean:
	rm -rf .build
