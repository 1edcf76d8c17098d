# berth: two commands on a fresh Debian machine, as root: `make demo` and `make test`.
# Both install what is missing with apt-get first.

SWIFT ?= swift
BUILD_FLAGS ?=
APT_PACKAGES = libnftnl-dev libmnl-dev pkg-config nftables iproute2 conntrack curl python3 libcap2-bin procps

.PHONY: all deps build release test demo bench bench-peers clean

all: build

# Installs only what is missing; `apt-get update` runs once, and only if something is.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make: missing Debian packages:$$missing (run as root, or install them)"; exit 1; fi; \
		echo "make: installing$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

release: deps
	$(SWIFT) build -c release $(BUILD_FLAGS)

# Every test: unit, relay, netfilter and end-to-end (root-only ones skip with a reason elsewhere).
test: deps
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)

demo: release
	bash .ci/demo.sh .build/release/berth

clean:
	rm -rf .build
