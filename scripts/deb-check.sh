#!/usr/bin/env bash
# Installs the release package into a fresh Debian 12 container and checks
# it as an operator meets it: apt resolves its Depends from Debian's
# archive, the maintainer scripts make the user and enable the unit
# without starting it, both units pass `systemd-analyze verify`, the
# settings file is root-only, `vidworker check` names each missing
# setting on its own line, `vidworker process` makes a 1280x720
# rendition, and a purge leaves no settings or work directory behind.
#
#   scripts/deb-check.sh [PACKAGE.deb]
#
# Without an argument it builds one with scripts/release.sh from the host's
# release binary and a throwaway CA bundle. Needs a running Docker engine,
# the debian:bookworm-slim image (scripts/docker-check.sh makes it with
# mmdebstrap) and Debian's archive in reach (host network). Run by
# scripts/docker-check.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}
pass() { printf 'ok: %s\n' "$*"; }

docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info)"
docker image inspect debian:bookworm-slim >/dev/null 2>&1 ||
    fail "no debian:bookworm-slim image (scripts/docker-check.sh makes it)"

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
if [ $# -ge 1 ]; then
    deb="$(realpath "$1")"
else
    cargo build --release --locked -q -p vidworker
    openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -subj /CN=deb-check -days 2 \
        -out "$work/ca.pem" 2>/dev/null
    RDS_CA_BUNDLE="$work/ca.pem" VIDWORKER_BIN="$ROOT/target/release/vidworker" DIST_DIR="$work" \
        scripts/release.sh --allow-dirty >/dev/null
    deb="$(ls "$work"/vidworker_*.deb)"
fi
[ -f "$deb" ] || fail "$deb: no such package"
cp "$deb" "$work/pkg.deb"
mkdir -m 0777 "$work/out"

# Everything below runs in the container; its stdout is the report, one
# "ok:" line per check, and it stops at the first failure.
cat >"$work/inside.sh" <<'EOF'
set -eu
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
pass() { printf 'ok: %s\n' "$*"; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || fail "apt-get update (is Debian's archive in reach?)"
# systemd only for systemd-analyze: the container runs no init.
apt-get install -y -qq --no-install-recommends systemd /pkg/pkg.deb >/tmp/apt.log 2>&1 ||
    { tail -5 /tmp/apt.log; fail "apt-get install of the package"; }
grep -q "is installed and enabled but not started" /tmp/apt.log || fail "postinst did not say how to start it"
pass "apt installs the package and its Depends ($(dpkg-query -W -f '${Version}' vidworker))"
id -u vidworker >/dev/null || fail "postinst made no vidworker user"
[ "$(getent passwd vidworker | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the vidworker user has a login shell"
pass "a system user vidworker with no login shell"
[ -L /etc/systemd/system/multi-user.target.wants/vidworker.service ] || fail "the unit is not enabled"
pass "vidworker.service enabled (not started: no init here)"
systemd-analyze verify /lib/systemd/system/vidworker.service /lib/systemd/system/vidworker-unhealthy.service \
    >/tmp/verify.log 2>&1 || { cat /tmp/verify.log; fail "systemd-analyze verify"; }
[ ! -s /tmp/verify.log ] || { cat /tmp/verify.log; fail "systemd-analyze verify warns"; }
pass "systemd-analyze verify: both units clean"
[ "$(stat -c %a:%U:%G /etc/vidworker/env)" = 600:root:root ] || fail "/etc/vidworker/env is $(stat -c %a:%U:%G /etc/vidworker/env)"
pass "/etc/vidworker/env is 0600 root:root"
set +e
vidworker check --env-file /etc/vidworker/env >/tmp/check.out 2>&1
code=$?
set -e
[ "$code" -ne 0 ] || fail "vidworker check passed an empty settings file"
grep -q '^FAIL ' /tmp/check.out || { cat /tmp/check.out; fail "vidworker check named no problem"; }
grep -q 'DATABASE_URL' /tmp/check.out || { cat /tmp/check.out; fail "vidworker check did not name DATABASE_URL"; }
pass "vidworker check exits $code: $(grep -c '^FAIL ' /tmp/check.out) FAIL line(s), DATABASE_URL among them"
su -s /bin/sh vidworker -c 'vidworker process /fixtures/portrait-rotated.mp4 -o /out/portrait.mp4' >/dev/null 2>&1 ||
    fail "vidworker process as the vidworker user"
# No python3 in the container: the two numbers from the pretty JSON.
vidworker probe --json /out/portrait.mp4 >/tmp/probe.json || fail "vidworker probe of the rendition"
dim() { sed -n "s/^ *\"display_$1\": *\([0-9]*\),\$/\1/p" /tmp/probe.json; }
dims="$(dim width)x$(dim height)"
[ "$dims" = 1280x720 ] || fail "the rendition is '$dims', not 1280x720"
pass "vidworker process as the vidworker user: a 1280x720 rendition"
apt-get purge -y -qq vidworker >/dev/null 2>&1 || fail "apt-get purge"
[ ! -e /etc/vidworker ] && [ ! -e /usr/bin/vidworker ] && [ ! -e /etc/systemd/system/multi-user.target.wants/vidworker.service ] ||
    fail "purge left the settings, the binary or the enablement behind"
pass "purge removes the binary, /etc/vidworker and the enablement"
EOF

echo "==> $(basename "$deb") in a fresh debian:bookworm-slim container"
docker run --rm --network host -v "$work:/pkg:ro" -v "$work/out:/out" -v "$ROOT/fixtures:/fixtures:ro" \
    debian:bookworm-slim sh /pkg/inside.sh || fail "the package in a Debian 12 container (above)"
echo "package check passed"
