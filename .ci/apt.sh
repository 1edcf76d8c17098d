# Sourced by the CI scripts: apt_install_missing PACKAGE... installs the Debian packages that are
# missing, with their services kept from starting on the host (policy-rc.d) and never removing a
# package to make room (--no-remove: docker-ce's containerd.io conflicts with containerd).
# Returns non-zero, with the reason on stderr, when apt-get fails.
apt_install_missing() {
	local missing="" p made_policy="" rc
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	[ -n "$missing" ] || return 0
	echo "installing$missing"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq || { echo "apt-get update failed" >&2; return 1; }
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
	fi
	# shellcheck disable=SC2086 # one word per package
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove $missing > /dev/null
	rc=$?
	[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
	[ $rc = 0 ] || echo "apt-get install$missing failed" >&2
	return $rc
}
