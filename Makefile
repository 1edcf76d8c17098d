# berth: two commands on a fresh Debian machine, as root: `make demo` and `make test`.
# Both install what is missing with apt-get first (services, HAProxy's among them, kept from
# starting: the tests run their own).

SWIFT ?= swift
BUILD_FLAGS ?=
APT_PACKAGES = libnftnl-dev libmnl-dev pkg-config nftables iproute2 conntrack curl python3 libcap2-bin procps haproxy libhttp-parser-dev libcjson-dev

.PHONY: all deps lint build release test test-docker test-cni test-asan test-tsan fuzz demo bench bench-peers bench-smoke clean

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
# swift-format ships with the toolchain; .swift-format holds the rules.
lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Fuzz

test: deps lint
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)
	$(MAKE) bench-smoke
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) test-docker && $(MAKE) test-cni; \
	else echo "make: test-docker and test-cni skipped: they need root (network namespaces: one with its own dockerd and containerd, others for CNI plugin chains)"; fi

# berth as dockerd's userland-proxy-path: Debian's dockerd 20.10 and containerd (docker.io,
# installed if missing, services kept from starting), private to a network namespace and a
# temporary directory, publishing ports of a local busybox image. Root only.
test-docker: build
	bash .ci/docker-test.sh $(CURDIR)/.build/debug/berth

# berth-cni in real CNI chains (bridge + host-local + berth-cni, with a berth daemon and without),
# run by .ci/cni-runtime.py as SPEC.md says a runtime does, next to Debian's portmap as the
# reference (containernetworking-plugins and iptables installed if missing). Every plugin runs in
# network namespaces of the script's own. Root only.
test-cni: build
	bash .ci/cni-test.sh $(CURDIR)/.build/debug/berth-cni $(CURDIR)/.build/debug/berth

# The whole suite under AddressSanitizer, in a build of its own; berth, run by the end-to-end tests,
# is the ASan build too. LeakSanitizer is off (ASAN_OPTIONS=detect_leaks=1 turns it on): the test
# process leaks at exit in Foundation's Process and XCTest, and berth in the cycle between a loop's
# RelayContext and its EventLoop, so every run would fail on those and hide the rest.
ASAN_FLAGS = --scratch-path .build-asan -Xswiftc -sanitize=address
ASAN_OPTIONS ?= detect_leaks=0
test-asan: deps
	$(SWIFT) build --build-tests $(ASAN_FLAGS) $(BUILD_FLAGS)
	ASAN_OPTIONS="$(ASAN_OPTIONS)" $(SWIFT) test --skip-build $(ASAN_FLAGS) $(BUILD_FLAGS)

# The event loop and the relay under ThreadSanitizer; any report fails the run (halt_on_error makes
# the test process exit non-zero at the first one).
TSAN_FLAGS = --scratch-path .build-tsan -Xswiftc -sanitize=thread
TSAN_TESTS = LinuxIOTests|RelayTests
test-tsan: deps
	$(SWIFT) build --build-tests $(TSAN_FLAGS) $(BUILD_FLAGS)
	TSAN_OPTIONS="halt_on_error=1 $(TSAN_OPTIONS)" $(SWIFT) test --skip-build $(TSAN_FLAGS) $(BUILD_FLAGS) --filter '$(TSAN_TESTS)'

# libFuzzer on the command-line parsers and the control socket's request path, FUZZ_SECONDS each, from the seeds in Fuzz/corpus/<fuzzer>,
# with the dictionary Fuzz/<fuzzer>.dict where there is one (numbers out of range, NUL, bad UTF-8, nesting, junk after the document).
# What they learn stays in .build-fuzz/corpus, a crash's input in .build-fuzz/artifacts (and the run fails).
# BERTH_FUZZ=1 is what makes Package.swift declare the fuzzers (see there).
FUZZ_SECONDS ?= 60
FUZZERS = PortSpecFuzzer RunArgumentsFuzzer ProxyFlagsFuzzer ControlRequestFuzzer CNIConfigFuzzer
FUZZ_BUILD = BERTH_FUZZ=1 $(SWIFT) build --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address $(BUILD_FLAGS)
fuzz:
	for f in $(FUZZERS); do $(FUZZ_BUILD) --product $$f || exit 1; done
	for f in $(FUZZERS); do \
		mkdir -p .build-fuzz/corpus/$$f .build-fuzz/artifacts && \
		dict=; [ -f Fuzz/$$f.dict ] && dict=-dict=Fuzz/$$f.dict; \
		.build-fuzz/debug/$$f -max_total_time=$(FUZZ_SECONDS) -max_len=512 -print_final_stats=1 $$dict \
			-artifact_prefix=.build-fuzz/artifacts/$$f- .build-fuzz/corpus/$$f Fuzz/corpus/$$f || exit 1; \
	done

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
	rm -rf .build .build-asan .build-tsan .build-fuzz
