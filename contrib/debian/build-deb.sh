#!/bin/bash
# Turns a staged install into berth's .deb with dpkg-deb alone (make deb): no debhelper, no network.
#   build-deb.sh PACKAGE_DIR BUILD OUT_DIR
# PACKAGE_DIR is `debian/berth` of a scratch folder, filled by `make install-files DESTDIR=...
# PREFIX=/usr UNITDIR=/lib/systemd/system`; BUILD is release or debug (the binaries it holds).
# Prints the package's path.
set -euo pipefail

pkg=$1 build=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(cd "$pkg/../.." && pwd)
binaries=(usr/bin/berth usr/lib/cni/berth-cni)

line=$("$pkg/usr/bin/berth" --version) # berth 0.1.0 (git 0123456789ab)
version=${line#berth }
version=${version%% *}
commit=$(sed -n 's/.*(git \([0-9a-f]*\)).*/\1/p' <<<"$line")
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-berth developers <berth@example.org>}
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
else
	date=$(git -C "$here" log -1 --format=%cD 2>/dev/null || date -u -R)
fi

# As dh_strip does for executables; the symbols stay in the build folder. berth-proxy is static:
# stripped too, but no shared library to depend on (and lintian told why it is static).
for f in "${binaries[@]}" usr/bin/berth-proxy; do
	strip --remove-section=.comment --remove-section=.note "$pkg/$f"
done
overrides=$pkg/usr/share/lintian/overrides
install -d -m 755 "$overrides"
install -m 644 "$here/lintian-overrides" "$overrides/berth"
find "$pkg/usr/share/man" -type f ! -name '*.gz' -exec gzip -9n {} +

doc=$pkg/usr/share/doc/berth
install -d -m 755 "$doc"
# The years of the first and the last commit (the build's year outside a checkout).
years=$(git -C "$here" log --format=%cd --date=format:%Y 2>/dev/null | sed -n '1h;$p;${x;p}' | sort -u | paste -sd-)
sed "s|@YEARS@|${years:-$(date -u +%Y)}|" "$here/copyright" >"$doc/copyright"
chmod 644 "$doc/copyright"
{
	echo "berth ($version) unstable; urgency=medium"
	echo
	echo "  * Built from ${commit:+git commit $commit of }berth's sources (make deb)."
	echo
	echo " -- $maintainer  $date"
} | gzip -9n >"$doc/changelog.gz"
chmod 644 "$doc/changelog.gz"

control=$pkg/DEBIAN
rm -rf "$control"
install -d -m 755 "$control"
for script in postinst prerm postrm; do
	install -m 755 "$here/$script" "$control/$script"
done

# Depends: what the binaries link, as dpkg-shlibdeps reads the libraries' shlibs and symbols files
# (it wants debian/control beside the package folder). A debug build links the Swift runtime of
# the toolchain, which no Debian package has: that package is for tests only.
printf 'Source: berth\n\nPackage: berth\nArchitecture: any\n' >"$work/debian/control"
shlibdeps=(dpkg-shlibdeps -O)
if [ "$build" = debug ]; then
	echo "build-deb: a debug build: its Swift runtime is the toolchain's, in no Debian package (for tests only)" >&2
	shlibdeps+=(--ignore-missing-info)
fi
depends=$(cd "$work" && "${shlibdeps[@]}" "${binaries[@]/#/debian/berth/}" 2>"$work/shlibdeps.log" |
	sed -n 's/^shlibs:Depends=//p') || { cat "$work/shlibdeps.log" >&2; exit 1; }
[ "$build" = debug ] || cat "$work/shlibdeps.log" >&2
depends="$depends, adduser"

if [ -d "$pkg/etc" ]; then
	(cd "$pkg" && find etc -type f | sort | sed 's|^|/|') >"$control/conffiles"
	[ -s "$control/conffiles" ] || rm "$control/conffiles"
fi
(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$control/md5sums"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@SIZE@|$size|" -e "s|@DEPENDS@|$depends|" "$here/control.in" >"$control/control"
chmod 644 "$control/control" "$control/md5sums"

find "$pkg" -type d -exec chmod 755 {} +
mkdir -p "$out"
rm -f "$out"/berth_*.deb
deb=$out/berth_${version}_$arch.deb
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
