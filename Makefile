# berth: two commands on a fresh Debian machine, as root: `make demo` and `make test`.
# Both install what is missing with apt-get first (services, HAProxy's among them, kept from
# starting: the tests run their own).

SWIFT ?= swift
BUILD_FLAGS ?=
APT_PACKAGES = libnftnl-dev libmnl-dev pkg-config nftables iproute2 conntrack curl python3 libcap2-bin procps haproxy libhttp-parser-dev libcjson-dev rootlesskit

.PHONY: test-run test-side all deps lint build release test test-docker test-cni test-asan test-tsan fuzz demo bench bench-peers bench-compare bench-smoke clean \
	install install-files uninstall install-cni uninstall-cni install-docker-config uninstall-docker-config \
	man deb deb-lint test-install

all: build

# Installs the Debian packages of $(1) that are missing; `apt-get update` runs once, and only if
# something is. Services the packages bring are kept from starting.
define apt_install
	@missing=""; for p in $(1); do \
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
endef

deps:
	$(call apt_install,$(APT_PACKAGES))

build: deps
	$(SWIFT) build $(BUILD_FLAGS)
	$(MAKE) .build/debug/berth-proxy

# The Swift runtime linked in: berth runs where Swift is not installed (dockerd's
# userland-proxy-path on any host), and starts touching fewer shared pages (RSS 11 MB, not 14).
# No $$ORIGIN run path either: nothing is linked from beside the binary.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib --disable-local-rpath $(BUILD_FLAGS)
	$(MAKE) .build/release/berth-proxy

# berth-proxy, the docker-proxy shim that hands its socket to a berth daemon (README, "Using berth
# as Docker's userland proxy"): one process per port, so it must cost almost nothing. Embedded
# Swift (no Swift runtime, no Glibc module: libc through Sources/BerthShim/CBerthShim), linked
# statically by cc: no ld.so, no shared-library relocations, ~48 KiB private memory a process.
# It sits beside berth, which it execs to serve alone.
SWIFTC ?= swiftc
SHIM_SOURCES = Sources/BerthShim/main.swift Sources/BerthShim/entry.c Sources/BerthShim/CBerthShim/shim.h Sources/BerthShim/CBerthShim/module.modulemap
.build/%/berth-proxy: $(SHIM_SOURCES)
	mkdir -p .build/shim-$*
	$(SWIFTC) -enable-experimental-feature Embedded -wmo -Osize -parse-as-library \
		-I Sources/BerthShim/CBerthShim -c Sources/BerthShim/main.swift -o .build/shim-$*/main.o
	cc -Os -static -o $@ Sources/BerthShim/entry.c .build/shim-$*/main.o

# Every test: unit, relay, netfilter and end-to-end (root-only ones skip with a reason elsewhere).
# swift-format ships with the toolchain; .swift-format holds the rules.
lint:
	$(SWIFT) format lint --strict --recursive Sources Tests Fuzz bench/Sources bench/Tests bench/Benchmarks
	@if grep -rn 'lending(' Sources --include='*.swift' | grep -v '^Sources/LinuxIO/'; then \
		echo "lint: only LinuxIO lends a raw descriptor number to its calls; product code passes owners"; exit 1; fi

# Two halves side by side: the tests, dockerd and the CNI chains (mostly waiting on processes and
# namespaces), and bench-smoke (the bench package's own build, swift-argument-parser and all,
# then two tiny runs: most of make test's CPU) followed by the install test. The second half's
# lines go to .build/test-side.log (they would cut up the tests'), shown if it fails. bench's
# ports are below the ephemeral range the tests' listeners take theirs from. The install test's
# packages come first: two apt-gets at once would fight over dpkg's lock (test-docker's and
# test-cni's run in the first half, one after the other).
test: deps lint
	$(call apt_install,$(DEB_PACKAGES))
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(MAKE) .build/debug/berth-proxy
	$(MAKE) -j2 --no-print-directory test-run test-side

# The tests of the built tree, then dockerd driving berth and the CNI chains (root only).
test-run:
	$(SWIFT) test --skip-build $(BUILD_FLAGS)
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) test-docker && $(MAKE) test-cni; \
	else echo "make: test-docker and test-cni skipped: they need root (network namespaces: one with its own dockerd and containerd, others for CNI plugin chains)"; fi

# bench-smoke, then the install test, quiet unless they fail (beside test-run).
test-side:
	@mkdir -p .build
	@{ $(MAKE) --no-print-directory bench-smoke && $(MAKE) --no-print-directory test-install BUILD=debug; } \
	  > .build/test-side.log 2>&1 || { cat .build/test-side.log; echo "make: bench-smoke or test-install failed"; exit 1; }
	@grep -E '^make: [0-9]+ well-formed charts|^test-install: ' .build/test-side.log; \
	  echo "make: bench-smoke and test-install passed (their output: .build/test-side.log)"

# berth as dockerd's userland-proxy-path: Debian's dockerd 20.10 and containerd (docker.io,
# installed if missing, services kept from starting), private to a network namespace and a
# temporary directory, publishing ports of a local busybox image. Root only. Twice: berth as the
# proxy itself, then berth-proxy shims handing their sockets to a berth daemon.
test-docker: build
	bash .ci/docker-test.sh $(CURDIR)/.build/debug/berth
	bash .ci/docker-test.sh $(CURDIR)/.build/debug/berth --shim

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
# docker.io package (extracted, never installed: no daemon); and what bench/'s scripts run
# (iperf3 for fair-ping.py, strace and valgrind for the syscall and instruction counts).
# Services are kept from starting while the packages install. Does nothing when all are here.
BENCH_PEER_PACKAGES = socat haproxy nginx libnginx-mod-stream iperf3 strace valgrind
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

# Micro-benchmarks, then every end-to-end figure against every peer; writes bench/RESULTS.md,
# RESULTS.json and a chart per figure group in bench/charts/. The RESULTS.json it replaces is
# kept as bench/.build/baseline.json (unless that run was interrupted) for `make bench-compare`.
BENCH_FLAGS ?= --duration 2 --repeat 3
bench: release bench-peers
	mkdir -p bench/.build && $(SWIFT) package --package-path bench benchmark --no-progress > bench/.build/micro-benchmarks.txt 2>&1 || { cat bench/.build/micro-benchmarks.txt; exit 1; }
	cat bench/.build/micro-benchmarks.txt
	$(SWIFT) build -c release --package-path bench
	@if [ -f bench/RESULTS.json ] && ! grep -q '"notMeasured"' bench/RESULTS.json; then \
		cp bench/RESULTS.json bench/.build/baseline.json && echo "make: the previous run is bench/.build/baseline.json (make bench-compare)"; fi
	bench/.build/release/berth-bench $(BENCH_FLAGS) \
		--results bench/RESULTS.md --json bench/RESULTS.json --charts bench/charts --micro bench/.build/micro-benchmarks.txt

# What the last `make bench` changed against the run before it, as ratios to direct per repetition
# (a machine busier in one run moves every target alike); e.g.
# make bench-compare COMPARE_FLAGS="--relative --targets berth --fail-on-regression 10"
COMPARE_FLAGS ?= --relative
bench-compare:
	@[ -f bench/.build/baseline.json ] || { echo "make: no bench/.build/baseline.json: it is the run before the last make bench"; exit 1; }
	$(SWIFT) build -c release --package-path bench --product berth-bench
	bench/.build/release/berth-bench compare $(COMPARE_FLAGS) bench/.build/baseline.json bench/RESULTS.json

# BenchReport's tests; every figure once, tiny, berth and direct only, twice (fails if any figure
# is missing, never on speed); then compare on the two runs (exit 0 and a table) and the charts
# of the first read as XML.
bench-smoke: build
	$(SWIFT) build --package-path bench --product berth-bench
	$(SWIFT) build --package-path bench --product berth-benchPackageTests
	$(SWIFT) test --package-path bench --skip-build
	rm -rf bench/.build/smoke && mkdir -p bench/.build/smoke
	bin=$$($(SWIFT) build --package-path bench --show-bin-path) && \
	$$bin/berth-bench --smoke --berth $(CURDIR)/.build/debug/berth --json bench/.build/smoke/1.json --charts bench/.build/smoke/charts && \
	$$bin/berth-bench --smoke --berth $(CURDIR)/.build/debug/berth --json bench/.build/smoke/2.json > /dev/null && \
	$$bin/berth-bench compare bench/.build/smoke/1.json bench/.build/smoke/2.json > bench/.build/smoke/compare.md && \
	grep -q '^| berth ' bench/.build/smoke/compare.md || { echo "make: berth-bench compare failed"; cat bench/.build/smoke/compare.md; exit 1; }
	python3 -c 'import sys, xml.etree.ElementTree as E; [E.parse(f) for f in sys.argv[1:]]; print("make: %d well-formed charts" % (len(sys.argv) - 1))' bench/.build/smoke/charts/*.svg

# Installing like a system tool (README, "Install"). `make install` builds the release binaries
# (BUILD=debug takes the debug build instead, for the tests) and lays out under DESTDIR$(PREFIX):
# berth, berth-cni (where Debian's CNI plugins live: $(PREFIX)/lib/cni), the daemon's unit with
# the installed path in ExecStart, the berth user for systemd-sysusers, the man pages written from
# the binaries' --help, the socket-activation units as examples. Nothing outside those folders:
# the CNI bin directory and dockerd's daemon.json have targets of their own.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= release
BINDIR ?= $(PREFIX)/bin
CNIDIR ?= $(PREFIX)/lib/cni
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/berth
CNI_BIN_DIR ?= /opt/cni/bin
DOCKER_DAEMON_JSON ?= /etc/docker/daemon.json
BUILT = .build/$(BUILD)
MAN_PAGES = berth.1 berth-daemon.8 berth-cni.8 berth-proxy.8
# Every file install lays out; uninstall removes these and nothing else.
INSTALLED = $(BINDIR)/berth $(BINDIR)/berth-proxy $(CNIDIR)/berth-cni $(UNITDIR)/berth.service $(SYSUSERSDIR)/berth.conf \
	$(MANDIR)/man1/berth.1 $(MANDIR)/man8/berth-daemon.8 $(MANDIR)/man8/berth-cni.8 $(MANDIR)/man8/berth-proxy.8 \
	$(DOCDIR)/examples/berth-web.service $(DOCDIR)/examples/berth-web.socket
# The units name /usr/local/bin/berth (they work as they are, copied by hand); install writes $(BINDIR).
UNIT_PATHS = sed 's|/usr/local/bin/berth|$(BINDIR)/berth|g'
MAN_DATE = $(shell if [ -n "$$SOURCE_DATE_EPOCH" ]; then date -u -d "@$$SOURCE_DATE_EPOCH" +%F; \
	else git log -1 --format=%cs 2>/dev/null || date -u +%F; fi)

BUILD_TARGET = $(if $(filter debug,$(BUILD)),build,release)
install: $(BUILD_TARGET)
	@$(MAKE) --no-print-directory install-files

# The man pages, from the built binaries' --help and contrib/man's templates (render.py says how).
man:
	@[ -x $(BUILT)/berth ] && [ -x $(BUILT)/berth-cni ] && [ -x $(BUILT)/berth-proxy ] || \
		{ echo "make: no $(BUILT)/berth, berth-proxy or berth-cni: make $(BUILD_TARGET) first"; exit 1; }
	@mkdir -p .build/man
	@version=$$($(BUILT)/berth --version) && for page in $(MAN_PAGES); do \
		python3 contrib/man/render.py contrib/man/$$page.in $(BUILT) "$${version#berth }" "$(MAN_DATE)" \
			BINDIR=$(BINDIR) CNIDIR=$(CNIDIR) UNITDIR=$(UNITDIR) SYSUSERSDIR=$(SYSUSERSDIR) DOCDIR=$(DOCDIR) \
			> .build/man/$$page || exit 1; \
	done

install-files: man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(CNIDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR)/examples
	install -m 755 $(BUILT)/berth $(BUILT)/berth-proxy $(DESTDIR)$(BINDIR)/
	install -m 755 $(BUILT)/berth-cni $(DESTDIR)$(CNIDIR)/berth-cni
	$(UNIT_PATHS) contrib/systemd/berth.service > $(DESTDIR)$(UNITDIR)/berth.service
	for unit in berth-web.service berth-web.socket; do \
		$(UNIT_PATHS) contrib/systemd/$$unit > $(DESTDIR)$(DOCDIR)/examples/$$unit || exit 1; done
	chmod 644 $(DESTDIR)$(UNITDIR)/berth.service $(DESTDIR)$(DOCDIR)/examples/berth-web.*
	install -m 644 contrib/sysusers.d/berth.conf $(DESTDIR)$(SYSUSERSDIR)/berth.conf
	install -m 644 .build/man/berth.1 $(DESTDIR)$(MANDIR)/man1/berth.1
	install -m 644 .build/man/berth-daemon.8 .build/man/berth-cni.8 .build/man/berth-proxy.8 $(DESTDIR)$(MANDIR)/man8/
	@echo "make: installed under $(DESTDIR)$(PREFIX). The daemon's user: systemd-sysusers berth.conf;" \
		"its unit: systemctl daemon-reload && systemctl enable --now berth.service;" \
		"CNI: make install-cni; dockerd: make install-docker-config"

# Removes what install-files laid out, and berth's own folders if that left them empty.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	@for dir in $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) $(DESTDIR)$(CNIDIR); do \
		if [ -d $$dir ]; then rmdir --ignore-fail-on-non-empty $$dir || exit 1; fi; done

# berth-cni into the runtime's plugin folder: a link to the installed binary.
install-cni:
	@[ -x $(DESTDIR)$(CNIDIR)/berth-cni ] || { echo "make: no $(DESTDIR)$(CNIDIR)/berth-cni: make install first"; exit 1; }
	install -d $(DESTDIR)$(CNI_BIN_DIR)
	ln -sfn $(CNIDIR)/berth-cni $(DESTDIR)$(CNI_BIN_DIR)/berth-cni

uninstall-cni:
	@if [ "$$(readlink $(DESTDIR)$(CNI_BIN_DIR)/berth-cni)" = $(CNIDIR)/berth-cni ]; then \
		rm -f $(DESTDIR)$(CNI_BIN_DIR)/berth-cni; fi

# dockerd's userland-proxy-path, merged into daemon.json (its other keys kept; a file that is not
# a JSON object is refused and left as it is). dockerd reads it when it restarts. berth-proxy:
# with a berth daemon it hands each port to it, without one it is berth itself.
install-docker-config:
	python3 contrib/docker/daemon-json.py set $(DESTDIR)$(DOCKER_DAEMON_JSON) $(BINDIR)/berth-proxy

uninstall-docker-config:
	python3 contrib/docker/daemon-json.py unset $(DESTDIR)$(DOCKER_DAEMON_JSON) $(BINDIR)/berth-proxy

# A Debian package of the release build (BUILD=debug for tests), made with dpkg-deb alone:
# .build/deb/berth_<version>_<arch>.deb. contrib/debian holds its control, scripts and copyright.
DEB_PACKAGES = dpkg-dev binutils python3 man-db groff-base
deb: $(BUILD_TARGET)
	$(call apt_install,$(DEB_PACKAGES))
	rm -rf .build/deb/debian
	@$(MAKE) --no-print-directory install-files DESTDIR=$(CURDIR)/.build/deb/debian/berth PREFIX=/usr \
		UNITDIR=/lib/systemd/system > /dev/null
	bash contrib/debian/build-deb.sh .build/deb/debian/berth $(BUILD) .build/deb

# lintian on the release package: no error and no warning (README, "Install" says what it checks).
deb-lint: deb
	$(call apt_install,lintian)
	lintian --fail-on error,warning --info --display-info .build/deb/berth_*_$$(dpkg --print-architecture).deb

# make install into a temporary DESTDIR against the expected list, uninstall, the man pages
# (groff's warnings, every option of --help), the daemon.json merge, and as root the package
# installed and removed with dpkg --root. `make test` runs it on the debug build.
test-install:
	$(call apt_install,$(DEB_PACKAGES))
	bash .ci/install-test.sh $(BUILD)

clean:
	rm -rf .build .build-asan .build-tsan .build-fuzz
