#!/usr/bin/env bash
# Builds the release artifact: a Debian package of the worker, for the
# machine's architecture (Debian 12), and its SHA-256.
#
#   RDS_CA_BUNDLE=global-bundle.pem scripts/release.sh [--allow-dirty]
#
# writes dist/vidworker_<version>_<arch>.deb and .deb.sha256 (sha256sum
# format), then prints the package's path and its SHA-256. Runs from any
# directory; relative paths are taken from the caller's.
#
#   RDS_CA_BUNDLE   required: the Amazon RDS CA bundle, installed as
#                   /usr/share/vidworker/rds-ca.pem. The release procedure
#                   downloads it first:
#                   curl -fsSLo global-bundle.pem https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
#   VIDWORKER_BIN   an already built binary to package (the tests give the
#                   debug build); default: cargo build --release --locked
#   DIST_DIR        where the package goes (default: dist/ of the checkout)
#   --allow-dirty   package a tree with uncommitted changes (refused
#                   otherwise: a release is a commit)
#
# The package is built with Debian's own dpkg-deb from a staging directory
# (no cargo-deb to compile on every CI run). Needs dpkg-dev
# (dpkg-shlibdeps), binutils (strip), openssl, python3 and, without
# VIDWORKER_BIN, cargo. Checked by crates/vidworker/tests/it/package.rs.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGE=vidworker
MAINTAINER="vidworker developers <vidworker@example.invalid>"

die() {
    printf 'release.sh: %s\n' "$*" >&2
    exit 1
}
step() { printf '==> %s\n' "$*"; }
# A path as given by the caller, made absolute against the caller's directory.
absolute() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (Debian package $2)"
}

allow_dirty=false
for arg in "$@"; do
    case "$arg" in
        --allow-dirty) allow_dirty=true ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument $arg (see --help)" ;;
    esac
done

[ -n "${RDS_CA_BUNDLE:-}" ] ||
    die "RDS_CA_BUNDLE is not set: download https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem and pass its path"
ca_bundle="$(absolute "$RDS_CA_BUNDLE")"
dist="$(absolute "${DIST_DIR:-$ROOT/dist}")"
bin="${VIDWORKER_BIN:+$(absolute "$VIDWORKER_BIN")}"

# The bundle must be what sslrootcert= can use: PEM certificates and
# nothing else (a private key pasted in by mistake would ship to every
# machine), every one of them parsed by openssl. One line on failure.
check_ca_bundle() {
    local file="$1" blocks certs parsed
    [ -f "$file" ] || die "RDS_CA_BUNDLE $file: no such file"
    [ -s "$file" ] || die "RDS_CA_BUNDLE $file: empty, not a PEM bundle of certificates"
    blocks="$(grep -c -- '^-----BEGIN ' "$file" || true)"
    certs="$(grep -c -- '^-----BEGIN CERTIFICATE-----' "$file" || true)"
    [ "$certs" -gt 0 ] || die "RDS_CA_BUNDLE $file: holds no PEM certificate, not a PEM bundle of certificates"
    [ "$blocks" -eq "$certs" ] ||
        die "RDS_CA_BUNDLE $file: holds $((blocks - certs)) PEM block(s) that are not certificates"
    openssl x509 -in "$file" -noout 2>/dev/null ||
        die "RDS_CA_BUNDLE $file: openssl x509 cannot parse its first certificate"
    # crl2pkcs7 reads every certificate of the file; a file of none passes
    # it, hence the count.
    parsed="$(openssl crl2pkcs7 -nocrl -certfile "$file" 2>/dev/null |
        openssl pkcs7 -print_certs -noout 2>/dev/null | grep -c '^subject=' || true)"
    [ "$parsed" -eq "$certs" ] ||
        die "RDS_CA_BUNDLE $file: openssl cannot parse all of its $certs certificates (it read $parsed)"
}

need openssl openssl
check_ca_bundle "$ca_bundle"
need git git
need python3 python3
need dpkg-deb dpkg
need dpkg-shlibdeps dpkg-dev
need strip binutils
need gzip gzip
need sha256sum coreutils

if [ "$allow_dirty" = false ]; then
    dirty="$(git -C "$ROOT" status --porcelain 2>/dev/null)" ||
        die "$ROOT is not a git checkout; pass --allow-dirty to package it anyway"
    [ -z "$dirty" ] ||
        die "the working tree has uncommitted changes (git status --porcelain); commit them or pass --allow-dirty"
fi

# The version and repository from the workspace, as cargo sees them.
need cargo "rustup's toolchain"
metadata="$(cargo metadata --manifest-path "$ROOT/Cargo.toml" --no-deps --format-version 1)"
read_metadata() {
    python3 -c 'import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == sys.argv[1])
v = p[sys.argv[2]] if sys.argv[2] in p else m[sys.argv[2]]
print("" if v is None else v)' "$PACKAGE" "$1" <<<"$metadata"
}
cargo_version="$(read_metadata version)"
repository="$(read_metadata repository)"
# Set in [workspace.package], which the crate does not inherit (yet).
[ -n "$repository" ] || repository="$(python3 -c 'import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb")).get("workspace", {}).get("package", {}).get("repository", ""))' \
    "$ROOT/Cargo.toml" 2>/dev/null || true)"
target_dir="$(read_metadata target_directory)"
# Debian sorts `~` before everything: 1.0.0-rc.1 becomes 1.0.0~rc.1, older
# than 1.0.0, as in semver.
version="${cargo_version//-/\~}"
arch="$(dpkg --print-architecture)"
# Reproducible archives: dpkg-deb clamps file times to this and stamps the
# ar members with it.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

if [ -z "$bin" ]; then
    step "building the release binary (cargo build --release --locked -p $PACKAGE)"
    cargo build --manifest-path "$ROOT/Cargo.toml" --release --locked -p "$PACKAGE"
    bin="$target_dir/release/$PACKAGE"
fi
[ -x "$bin" ] || die "VIDWORKER_BIN $bin: not an executable file"
bin_version="$("$bin" --version)" || die "$bin --version failed (a missing FFmpeg library?)"
bin_version="${bin_version%%$'\n'*}"
case "$bin_version" in
    "$PACKAGE $cargo_version "*) ;;
    *) die "$bin says \"$bin_version\", not version $cargo_version of Cargo.toml: a stale VIDWORKER_BIN?" ;;
esac
# A release is the binary of the commit it is tagged at.
head="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
case "$bin_version" in
    *"(commit $head)") ;;
    *)
        [ "$allow_dirty" = true ] ||
            die "$bin says \"$bin_version\", not HEAD $head: rebuild it, or pass --allow-dirty"
        echo "warning: $bin was not built from HEAD $head" >&2
        ;;
esac

work="$(mktemp -d)"
trap 'rm -rf -- "$work"' EXIT
# debian/<package>/ as debhelper lays it out, which is where
# dpkg-shlibdeps expects the binaries it analyses.
stage="$work/debian/$PACKAGE"
doc="$stage/usr/share/doc/$PACKAGE"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/$PACKAGE" \
    "$stage/usr/share/$PACKAGE" "$doc" "$stage/usr/share/man/man1" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d"

step "staging $bin_version"
# As dh_strip does for executables (no separate -dbgsym package here).
strip --remove-section=.comment --remove-section=.note -o "$stage/usr/bin/$PACKAGE" "$bin"
chmod 0755 "$stage/usr/bin/$PACKAGE"
# Completions and man pages from the packaged binary itself: the same
# definitions as --help.
"$stage/usr/bin/$PACKAGE" completions bash >"$stage/usr/share/bash-completion/completions/$PACKAGE"
"$stage/usr/bin/$PACKAGE" completions zsh >"$stage/usr/share/zsh/vendor-completions/_$PACKAGE"
"$stage/usr/bin/$PACKAGE" completions fish >"$stage/usr/share/fish/vendor_completions.d/$PACKAGE.fish"
mkdir "$work/man"
"$stage/usr/bin/$PACKAGE" man --dir "$work/man"
for page in "$work/man"/*.1; do
    name="${page##*/}"
    gzip -9n <"$page" >"$stage/usr/share/man/man1/$name.gz"
done
install -m 0644 "$ca_bundle" "$stage/usr/share/$PACKAGE/rds-ca.pem"

# The unit of the AWS deployment, with the binary where the package puts it.
# The units as deploy/ has them (deploy/check.py verifies them); the
# second is the first's OnFailure=, marking the instance unhealthy.
for unit in vidworker.service vidworker-unhealthy.service; do
    install -m 0644 "$ROOT/deploy/$unit" "$stage/lib/systemd/system/$unit"
    grep -q '^ExecStart=/usr/bin/vidworker ' "$stage/lib/systemd/system/$unit" ||
        die "deploy/$unit: its ExecStart does not run /usr/bin/vidworker"
done

# The settings the unit reads (EnvironmentFile=). systemd reads it as root
# before dropping privileges; it holds the database password: 0600 root.
cat >"$stage/etc/$PACKAGE/env" <<'EOF'
# /etc/vidworker/env: the settings of vidworker.service, read by systemd
# (EnvironmentFile=: KEY=VALUE lines, no shell expansion; '#' starts a
# comment). It holds the database password: keep it 0600 root:root.
#
# Fill in the required settings, then check them and everything they
# point at, and start the worker:
#     vidworker check --env-file /etc/vidworker/env
#     systemctl start vidworker
# Every setting, with its default: README.md "Configuration", or
# `vidworker run --help`.

# --- Required -----------------------------------------------------------
# The database, one of two ways. DATABASE_URL alone: a PostgreSQL URL with
# its password. Across a network it must verify the server: on RDS with
# the Amazon RDS CA bundle this package installs.
#DATABASE_URL='postgres://vidworker:PASSWORD@mydb.abc123.eu-west-1.rds.amazonaws.com:5432/videos?sslmode=verify-full&sslrootcert=/usr/share/vidworker/rds-ca.pem'
# Or DATABASE_SECRET_ARN: a Secrets Manager secret holding the credentials
# (a whole URL, or RDS's JSON), read again when a rotated password is
# refused. DATABASE_URL then carries the rest without credentials (host,
# database, TLS), or is left out when the secret names the host.
#DATABASE_SECRET_ARN=arn:aws:secretsmanager:eu-west-1:111122223333:secret:vidworker/database-AbCdEf
#DATABASE_URL='postgres://mydb.abc123.eu-west-1.rds.amazonaws.com:5432/videos?sslmode=verify-full&sslrootcert=/usr/share/vidworker/rds-ca.pem'
# The job queue.
#SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/111122223333/vidworker-jobs
# Bucket of originals and renditions.
#S3_BUCKET=my-video-bucket

# --- Usual ----------------------------------------------------------------
# Region; default: the AWS configuration (on EC2, the instance's region).
#AWS_REGION=eu-west-1
# An SNS topic that gets one completion event per final outcome; default: none.
#EVENTS_TOPIC_ARN=arn:aws:sns:eu-west-1:111122223333:vidworker-events
# Apply the database migrations at start; default: false.
#RUN_MIGRATIONS=true
# Jobs transcoding at once; default: one per core, at most one per 512 MiB.
#WORKER_CONCURRENCY=2
# The jobs' private directories: the unit's StateDirectory, the one
# writable place the unit leaves besides PrivateTmp.
WORKER_TEMP_DIR=/var/lib/vidworker
# /metrics, /healthz and /readyz; 0.0.0.0:9464 lets a scraper in, `off`
# serves nothing.
METRICS_ADDR=127.0.0.1:9464
EOF
chmod 0600 "$stage/etc/$PACKAGE/env"

step "writing the copyright file and changelog"
{
    cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: $PACKAGE
Upstream-Contact: $MAINTAINER${repository:+
Source: $repository}

Files: *
Copyright: $(grep -m1 '^Copyright' "$ROOT/LICENSE-MIT" | sed 's/^Copyright (c) //')
License: MIT or Apache-2.0
Comment: Cargo.toml's license expression: MIT OR Apache-2.0, at the
 user's choice.

License: Apache-2.0
 On Debian systems, the complete text of the Apache License, Version 2.0,
 can be found in "/usr/share/common-licenses/Apache-2.0".

License: MIT
EOF
    # The licence text as a continuation: one space in front, blank lines
    # as " .".
    sed -e 's/^$/./' -e 's/^/ /' "$ROOT/LICENSE-MIT"
} >"$doc/copyright"
cat <<EOF | gzip -9n >"$doc/changelog.gz"
$PACKAGE ($version) stable; urgency=medium

  * Release $version, commit $head.

 -- $MAINTAINER  $(date -R -u -d "@$SOURCE_DATE_EPOCH")
EOF

step "writing the maintainer scripts"
cat >"$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# postinst of vidworker (written by scripts/release.sh): the service's user,
# the unit enabled, and on an upgrade the worker restarted if it was
# running. A fresh install does not start it: /etc/vidworker/env must be
# filled in first.
set -e

UNIT=vidworker.service

add_user() {
    # The unit runs as vidworker:vidworker; systemd makes its
    # StateDirectory, /var/lib/vidworker, owned by them.
    if getent passwd vidworker >/dev/null; then
        return 0
    fi
    if getent group vidworker >/dev/null; then
        adduser --system --quiet --ingroup vidworker --no-create-home --home /var/lib/vidworker vidworker
    else
        adduser --system --quiet --group --no-create-home --home /var/lib/vidworker vidworker
    fi
}

# $1: the version upgraded from, empty on a fresh install.
enable_unit() {
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        # As dh_installsystemd: keeps an administrator's `systemctl
        # disable` across upgrades; needs no running systemd.
        deb-systemd-helper unmask "$UNIT" >/dev/null || true
        if deb-systemd-helper --quiet was-enabled "$UNIT"; then
            deb-systemd-helper enable "$UNIT" >/dev/null || true
        else
            deb-systemd-helper update-state "$UNIT" >/dev/null || true
        fi
    elif [ -z "$1" ] && command -v systemctl >/dev/null 2>&1; then
        systemctl enable "$UNIT" >/dev/null 2>&1 || true
    fi
}

case "$1" in
    configure)
        add_user
        enable_unit "$2"
        if [ -d /run/systemd/system ]; then
            systemctl --system daemon-reload >/dev/null || true
        fi
        if [ -z "$2" ]; then
            echo "vidworker is installed and enabled but not started: fill in /etc/vidworker/env,"
            echo "check it with 'vidworker check --env-file /etc/vidworker/env', then 'systemctl start vidworker'."
        elif [ -d /run/systemd/system ]; then
            # The new binary takes over only where the worker was running;
            # the old one drains first (TimeoutStopSec).
            if command -v deb-systemd-invoke >/dev/null 2>&1; then
                deb-systemd-invoke try-restart "$UNIT" >/dev/null || true
            else
                systemctl try-restart "$UNIT" >/dev/null || true
            fi
        fi
        ;;
    abort-upgrade | abort-remove | abort-deconfigure)
        # prerm stops the worker only on remove, and whether it should run
        # again is the administrator's call: nothing to undo.
        ;;
    *)
        echo "postinst called with unknown argument '$1'" >&2
        exit 1
        ;;
esac

exit 0
EOF
cat >"$stage/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# prerm of vidworker (written by scripts/release.sh): the worker stops
# (draining its jobs, up to the unit's TimeoutStopSec) before its binary is
# removed. An upgrade leaves it running; postinst restarts it.
set -e

case "$1" in
    remove)
        if [ -d /run/systemd/system ]; then
            if command -v deb-systemd-invoke >/dev/null 2>&1; then
                deb-systemd-invoke stop vidworker.service >/dev/null || true
            else
                systemctl stop vidworker.service >/dev/null || true
            fi
        fi
        ;;
    upgrade | deconfigure | failed-upgrade) ;;
    *)
        echo "prerm called with unknown argument '$1'" >&2
        exit 1
        ;;
esac

exit 0
EOF
cat >"$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# postrm of vidworker (written by scripts/release.sh). Purge removes the
# settings (/etc/vidworker, the database password included), the work
# directory and the unit's enablement. The system user stays, as Debian
# advises: files it owned may remain elsewhere.
set -e

UNIT=vidworker.service

case "$1" in
    remove)
        if [ -d /run/systemd/system ]; then
            systemctl --system daemon-reload >/dev/null || true
        fi
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            deb-systemd-helper mask "$UNIT" >/dev/null || true
        fi
        ;;
    purge)
        if command -v deb-systemd-helper >/dev/null 2>&1; then
            deb-systemd-helper purge "$UNIT" >/dev/null || true
            deb-systemd-helper unmask "$UNIT" >/dev/null || true
        else
            # What `systemctl enable` made (WantedBy=multi-user.target);
            # the unit file itself is already gone.
            rm -f "/etc/systemd/system/multi-user.target.wants/$UNIT"
        fi
        rm -rf /etc/vidworker /var/lib/vidworker
        ;;
    upgrade | failed-upgrade | abort-install | abort-upgrade | disappear) ;;
    *)
        echo "postrm called with unknown argument '$1'" >&2
        exit 1
        ;;
esac

exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"

step "computing Depends (dpkg-shlibdeps)"
# dpkg-shlibdeps maps every library the binary links to the package that
# provides it, with the minimum version its symbols need (the shlibs and
# symbols files of the installed libraries). It reads debian/control, so
# it gets a minimal one in the scratch directory.
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PACKAGE" "$PACKAGE" >"$work/debian/control"
shlibs="$(cd "$work" && dpkg-shlibdeps -O -e"debian/$PACKAGE/usr/bin/$PACKAGE" | sed -n 's/^shlibs:Depends=//p')"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies for $bin"
depends="adduser, $shlibs"

# Every file under /etc is a conffile (as dh_installdeb decides); dpkg keeps
# their sums itself, so md5sums lists the others.
(cd "$stage" && find etc -type f -printf '/%p\n' | LC_ALL=C sort) >"$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\n' |
    LC_ALL=C sort | xargs -d '\n' md5sum) >"$stage/DEBIAN/md5sums"
installed_size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
cat >"$stage/DEBIAN/control" <<EOF
Package: $PACKAGE
Version: $version
Architecture: $arch
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: $depends
Section: video
Priority: optional${repository:+
Homepage: $repository}
Description: video worker: upload queue to web-ready H.264 renditions
 vidworker takes video jobs from an Amazon SQS queue: it downloads each
 original from S3, transcodes it with the system's FFmpeg libraries into a
 watermarked 1280x720 H.264 MP4 with a poster (optionally a ladder of
 renditions, HLS and a storyboard), uploads the results, and records them
 in PostgreSQL.
 .
 The package installs the binary, a hardened systemd unit (enabled, not
 started: fill in /etc/vidworker/env first), the Amazon RDS CA bundle for
 verified TLS to the database, shell completions and man pages.
EOF
find "$stage" -type d -exec chmod 0755 {} +

deb_name="${PACKAGE}_${version}_${arch}.deb"
step "building $deb_name (dpkg-deb)"
mkdir -p "$dist"
dpkg-deb --root-owner-group --build "$stage" "$work/$deb_name" >/dev/null
mv -f "$work/$deb_name" "$dist/$deb_name"
(cd "$dist" && sha256sum "$deb_name" >"$deb_name.sha256")
if [ "$allow_dirty" = true ] && [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then
    echo "warning: packaged from a tree with uncommitted changes (--allow-dirty): not a release" >&2
fi
printf 'deb:    %s\n' "$dist/$deb_name"
printf 'sha256: %s\n' "$(cut -d' ' -f1 "$dist/$deb_name.sha256")"
