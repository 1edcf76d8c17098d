#!/bin/bash
# make install / uninstall, the man pages, the CNI and dockerd targets, and the Debian package
# installed and removed with dpkg --root: `make test-install` (BUILD=debug from `make test`).
# Nothing outside temporary folders is written; the package test checks that the host's users,
# groups and enabled units are as they were. Prints "N passed, N failed".
#   install-test.sh BUILD
set -uo pipefail
cd "$(dirname "$0")/.."

build=${1:-release}
passed=0 failed=0
scratch=$(mktemp -d /tmp/berth-install-XXXXXX)
trap 'rm -rf "$scratch"' EXIT

check() { # check NAME COMMAND...: one line per check
	if "${@:2}"; then
		passed=$((passed + 1))
		echo "ok: $1"
	else
		failed=$((failed + 1))
		echo "FAILED: $1"
	fi
}
same() { # same EXPECTED ACTUAL
	[ "$1" = "$2" ] && return 0
	diff <(echo "$1") <(echo "$2") | sed 's/^/    /'
	return 1
}
listing() { (cd "$1" && find . -mindepth 1 ! -type d -printf '%m %P\n' | sort); }
make_quiet() { make --no-print-directory "$@" >"$scratch/make.log" 2>&1 || { sed 's/^/    /' "$scratch/make.log"; return 1; }; }

expected_files() { # expected_files PREFIX: "mode path" of every file install lays out
	local p=${1#/}
	sort <<EOF
755 $p/bin/berth
755 $p/bin/berth-proxy
755 $p/lib/cni/berth-cni
644 $p/lib/systemd/system/berth.service
644 $p/lib/sysusers.d/berth.conf
644 $p/share/man/man1/berth.1
644 $p/share/man/man8/berth-daemon.8
644 $p/share/man/man8/berth-cni.8
644 $p/share/man/man8/berth-proxy.8
644 $p/share/doc/berth/examples/berth-web.service
644 $p/share/doc/berth/examples/berth-web.socket
EOF
}

# --- make install, uninstall ---
dest=$scratch/dest
check "make install BUILD=$build DESTDIR=... lays out the expected files" make_quiet install BUILD="$build" DESTDIR="$dest"
check "exactly the expected files and modes under DESTDIR/usr/local" same "$(expected_files /usr/local)" "$(listing "$dest")"
check "the installed berth runs and prints the build's version" \
	same "$(.build/"$build"/berth --version)" "$("$dest/usr/local/bin/berth" --version)"
check "berth.service starts the installed binary" \
	grep -qx 'ExecStart=/usr/local/bin/berth daemon --control /run/berth/berth.sock --control-group berth' \
	"$dest/usr/local/lib/systemd/system/berth.service"

usr=$scratch/usr
check "make install PREFIX=/usr" make_quiet install BUILD="$build" DESTDIR="$usr" PREFIX=/usr
check "exactly the expected files under DESTDIR/usr" same "$(expected_files /usr)" "$(listing "$usr")"
check "with PREFIX=/usr the units and the pages name /usr/bin/berth, and nothing names /usr/local" \
	bash -c "grep -q '^ExecStart=/usr/bin/berth daemon' '$usr/usr/lib/systemd/system/berth.service' &&
		grep -q '^ExecStart=/usr/bin/berth run' '$usr/usr/share/doc/berth/examples/berth-web.service' &&
		! grep -rl /usr/local '$usr/usr/lib/systemd' '$usr/usr/share'"

check "make uninstall" make_quiet uninstall DESTDIR="$dest"
check "uninstall leaves no file, and no folder of berth's own" \
	same "" "$(cd "$dest" && find . ! -type d; find . -path '*/doc/berth' -o -path '*/lib/cni')"

# --- the man pages: groff's warnings, and every option --help lists ---
pages=$usr/usr/share/man
for page in man1/berth.1 man8/berth-daemon.8 man8/berth-cni.8 man8/berth-proxy.8; do
	check "$page: groff -man -ww has no warning" same "" "$(groff -z -man -ww "$pages/$page" 2>&1)"
	check "$page: man --warnings renders it without a warning" \
		same "" "$(MANWIDTH=100 man --warnings -l "$pages/$page" 2>&1 >"$scratch/page.txt")"
done
# The options (and CNI configuration keys) of a help text: its entries, the lines indented two spaces.
options() { grep -E '^  [-"]' | grep -oE '(^|[ ,])(--?[a-z][a-z0-9-]*|"[a-z]+")' | tr -d ' ,' | sort -u; }
mentions() { # mentions PAGE HELP: every option of HELP in the rendered PAGE
	local text missing=""
	text=$(MANWIDTH=200 man -l "$pages/$1" 2>/dev/null | col -b)
	for option in $(options <<<"$2"); do
		grep -qE -- "(^|[^a-z0-9-])$option([^a-z0-9-]|\$)" <<<"$text" || missing="$missing $option"
	done
	[ -z "$missing" ] || echo "    not in $1:$missing"
	[ -z "$missing" ] && [ -n "$(options <<<"$2")" ]
}
bin=.build/$build
check "berth(1) has every option of berth --help" mentions man1/berth.1 "$("$bin/berth" --help)"
check "berth(1) has every option of berth run --help" mentions man1/berth.1 "$("$bin/berth" run --help)"
check "berth(1) has every option of berth port --help" mentions man1/berth.1 "$("$bin/berth" port --help)"
check "berth(1) has every flag of the docker-proxy mode" mentions man1/berth.1 "$("$bin/berth" -help 2>&1)"
check "berth-daemon(8) has every option of berth daemon --help" \
	mentions man8/berth-daemon.8 "$("$bin/berth" daemon --help)"
check "berth-daemon(8) has every option of berth run --help" mentions man8/berth-daemon.8 "$("$bin/berth" run --help)"
check "berth-cni(8) has every option and key of berth-cni --help" \
	mentions man8/berth-cni.8 "$("$bin/berth-cni" --help)"

# --- install-cni, the dockerd setting ---
check "install-cni before install is refused" bash -c "! make --no-print-directory install-cni DESTDIR='$scratch/none' >/dev/null 2>&1"
check "make install-cni CNI_BIN_DIR=/opt/cni/bin" make_quiet install-cni DESTDIR="$usr" PREFIX=/usr CNI_BIN_DIR=/opt/cni/bin
check "the CNI bin folder has a link to the installed plugin" \
	same /usr/lib/cni/berth-cni "$(readlink "$usr/opt/cni/bin/berth-cni")"
check "make uninstall-cni removes the link" \
	bash -c "make --no-print-directory uninstall-cni DESTDIR='$usr' PREFIX=/usr >/dev/null && [ ! -e '$usr/opt/cni/bin/berth-cni' ]"

docker=$scratch/docker
mkdir -p "$docker/etc/docker"
printf '{\n  "log-driver": "journald",\n  "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}]\n}\n' \
	>"$docker/etc/docker/daemon.json"
check "make install-docker-config merges into an existing daemon.json" make_quiet install-docker-config DESTDIR="$docker" PREFIX=/usr
keys() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$1"; }
check "the other keys are kept, in their order, and userland-proxy-path is the installed berth-proxy" \
	same '{"log-driver": "journald", "default-address-pools": [{"base": "10.10.0.0/16", "size": 24}], "userland-proxy-path": "/usr/bin/berth-proxy"}' \
	"$(keys "$docker/etc/docker/daemon.json")"
check "make uninstall-docker-config removes only that key" \
	bash -c "make --no-print-directory uninstall-docker-config DESTDIR='$docker' PREFIX=/usr >/dev/null &&
		[ \"\$(python3 -c 'import json; print(sorted(json.load(open(\"$docker/etc/docker/daemon.json\"))))')\" = \"['default-address-pools', 'log-driver']\" ]"
printf '{"log-driver": "journald",\n' >"$docker/etc/docker/daemon.json"
check "a daemon.json that is not valid JSON is refused with the reason, and left as it was" \
	bash -c "! make --no-print-directory install-docker-config DESTDIR='$docker' >'$scratch/json.log' 2>&1 &&
		grep -q 'is not valid JSON (line 2 column 1' '$scratch/json.log' &&
		[ \"\$(cat '$docker/etc/docker/daemon.json')\" = '{\"log-driver\": \"journald\",' ]" || sed 's/^/    /' "$scratch/json.log"
check "a missing daemon.json is made" \
	bash -c "make --no-print-directory install-docker-config DESTDIR='$scratch/fresh' >/dev/null &&
		[ \"\$(cat '$scratch/fresh/etc/docker/daemon.json')\" = \"\$(printf '{\n  \"userland-proxy-path\": \"/usr/local/bin/berth-proxy\"\n}')\" ]"

# --- the Debian package, installed and removed with dpkg --root ---
if [ "$(id -u)" != 0 ]; then
	echo "skipped: the package test needs root (dpkg --root with maintainer scripts run chrootless)"
else
	check "make deb BUILD=$build" make_quiet deb BUILD="$build"
	deb=$(ls .build/deb/berth_*_"$(dpkg --print-architecture)".deb)
	depends=$(dpkg-deb -f "$deb" Depends)
	check "Depends names the libraries the binaries link: libnftnl11 libmnl0 libcjson1 libhttp-parser2.9 libc6" \
		bash -c "for p in libnftnl11 libmnl0 libcjson1 libhttp-parser2.9 libc6 adduser; do
			grep -qE \"(^|, )\$p( |,|\$)\" <<<'$depends' || { echo \"    no \$p in: $depends\"; exit 1; }; done"
	check "no conffiles: the package puts nothing under /etc" \
		bash -c "! dpkg-deb --ctrl-tarfile '$deb' | tar -t | grep -q conffiles && ! dpkg-deb -c '$deb' | grep -q ' ./etc/'"

	root=$scratch/root
	mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
	touch "$root/var/lib/dpkg/status"
	host() { # what the package must not touch on the running system
		sha256sum /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null
		ls -la /etc/systemd/system/multi-user.target.wants /var/lib/systemd/deb-systemd-helper-enabled 2>/dev/null
	}
	before=$(host)
	dpkg_root() { dpkg --root="$root" --force-script-chrootless --force-depends "$@" >"$scratch/dpkg.log" 2>&1 ||
		{ sed 's/^/    /' "$scratch/dpkg.log"; return 1; }; }
	check "dpkg --root installs it (maintainer scripts chrootless, under DPKG_ROOT)" dpkg_root -i "$deb"
	check "berth --version runs from the root" same "$(.build/"$build"/berth --version)" "$("$root/usr/bin/berth" --version)"
	check "postinst made the berth system user and group in the root" \
		bash -c "grep -q '^berth:x:[0-9]*:[0-9]*:.*:/nonexistent:/usr/sbin/nologin\$' '$root/etc/passwd' && grep -q '^berth:' '$root/etc/group'"
	check "berth.service is enabled in the root" \
		same /lib/systemd/system/berth.service "$(readlink "$root/etc/systemd/system/multi-user.target.wants/berth.service")"
	check "the host's users, groups and enabled units are untouched" same "$before" "$(host)"
	check "dpkg --root -r removes it" dpkg_root -r berth
	check "no file of the package is left" \
		same "" "$(cd "$root" && find usr lib -type f 2>/dev/null)"
	check "dpkg --root --purge forgets the unit; the berth user stays (Debian policy)" \
		bash -c "dpkg --root='$root' --force-script-chrootless --purge berth >/dev/null 2>&1 &&
			[ ! -e '$root/etc/systemd/system/multi-user.target.wants/berth.service' ] &&
			[ ! -e '$root/etc/systemd/system/berth.service' ] && grep -q '^berth:' '$root/etc/passwd'"
	check "the host is still untouched" same "$before" "$(host)"
fi

echo "test-install: $passed passed, $failed failed"
[ "$failed" = 0 ]
