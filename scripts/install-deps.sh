#!/usr/bin/env bash
# Installs what vidworker needs to build, test and try locally on Debian 12:
# the FFmpeg development libraries, clang (for bindgen), PostgreSQL 15 server
# binaries (used without a system service, see scripts/local-stack.sh and
# crates/testkit), the moto S3/SQS emulator in <repo>/.venv, and Chromium with
# its WebDriver and Selenium, which play every rendition in the browser tests.
#
# Idempotent and fast when everything is already there: apt is only touched
# when dpkg-query reports a missing package, and pip only when the pinned moto
# stack is not what .venv holds. Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

# Pinned so every machine emulates the same S3/SQS behaviour. Bump together
# after running `cargo test -p vidworker-testkit` and the worker's tests.
MOTO_VERSION=5.2.5
FLASK_VERSION=3.1.3
FLASK_CORS_VERSION=6.0.5
# The reference OpenMetrics parser, to check what /metrics serves, and
# cfn-lint for deploy/cloudformation.yaml.
PROMETHEUS_CLIENT_VERSION=0.21.1
CFN_LINT_VERSION=1.58.0
# Drives Debian's chromium through chromium-driver (crates/testkit/browser.py).
SELENIUM_VERSION=4.51.0
# Parses the HLS playlists the renditions tests write, as a player would.
M3U8_VERSION=6.0.0
# Validates the CloudWatch agent's configuration against the agent's own
# schema (deploy/check.py, deploy/cloudwatch.py).
JSONSCHEMA_VERSION=4.26.0
PIP_REQUIREMENTS=(
    "moto[s3,sqs,sns,cloudformation]==$MOTO_VERSION"
    "flask==$FLASK_VERSION"
    "flask-cors==$FLASK_CORS_VERSION"
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
    "cfn-lint==$CFN_LINT_VERSION"
    "selenium==$SELENIUM_VERSION"
    "m3u8==$M3U8_VERSION"
    "jsonschema==$JSONSCHEMA_VERSION"
)
# hls.js, the player the HLS browser test drives: the npm registry's
# tarball, checked against the registry's integrity hash.
HLSJS_VERSION=1.6.19
HLSJS_INTEGRITY=sha512-A//aZeaAgM5rgUCbTURD4gkfyw5Uag2/4Jky7CfDOukL/DN+P5DjbgK2BYteyP3/KnCkPfkGVkbLxQG2T0AbUQ==

# What enters the build: licences, banned crates, sources (deny.toml).
CARGO_DENY_VERSION=0.20.2

APT_PACKAGES=(
    libavcodec-dev libavformat-dev libavfilter-dev
    libswscale-dev libswresample-dev libavutil-dev
    clang libclang-dev pkg-config
    postgresql-15
    ffmpeg
    python3-venv
    openssl
    shellcheck
    man-db
    dpkg-dev
    systemd
    chromium
    chromium-driver
    # benches/make-vmaf.sh: libvmaf's SIMD code and built-in models.
    nasm
    xxd
)

step() { printf '==> %s\n' "$*"; }

if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
else
    SUDO=(sudo)
fi

# --- apt packages ---------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    step "apt: all ${#APT_PACKAGES[@]} packages already installed"
else
    if [[ " ${missing[*]} " == *" postgresql-15 "* ]]; then
        # We run throwaway clusters on our own ports; stop the package from
        # creating (and starting) the default cluster on 5432. postgresql-common
        # reads this directory through `include_dir` in createcluster.conf.
        step "apt: disabling creation of the default PostgreSQL cluster"
        "${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" |
            "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/vidworker.conf >/dev/null
    fi
    step "apt: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- moto in .venv --------------------------------------------------------
# Prefer Debian's interpreter: python3-venv (installed above) belongs to it,
# while a python3 earlier on PATH (pyenv, conda) may lack the venv module.
if [[ -x /usr/bin/python3 ]]; then
    PYTHON=/usr/bin/python3
else
    PYTHON="$(command -v python3)"
fi

# moto's CloudFormation needs its extra's packages (the stack deploy test).
want="moto=$MOTO_VERSION moto-cloudformation=yes flask=$FLASK_VERSION flask-cors=$FLASK_CORS_VERSION prometheus-client=$PROMETHEUS_CLIENT_VERSION cfn-lint=$CFN_LINT_VERSION selenium=$SELENIUM_VERSION m3u8=$M3U8_VERSION jsonschema=$JSONSCHEMA_VERSION"
have=""
if [[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/python" ]]; then
    have="$("$VENV/bin/python" - <<'EOF' 2>/dev/null || true
from importlib.metadata import version, PackageNotFoundError
try:
    version('openapi-spec-validator')
    cfn = 'yes'
except PackageNotFoundError:
    cfn = 'no'
print(f"moto={version('moto')} moto-cloudformation={cfn} flask={version('flask')} flask-cors={version('flask-cors')} prometheus-client={version('prometheus-client')} cfn-lint={version('cfn-lint')} selenium={version('selenium')} m3u8={version('m3u8')} jsonschema={version('jsonschema')}")
EOF
)"
fi

if [[ "$have" == "$want" ]]; then
    step "venv: $VENV already has $want"
else
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        step "venv: creating $VENV with $PYTHON"
        "$PYTHON" -m venv --clear "$VENV"
    fi
    step "venv: installing ${PIP_REQUIREMENTS[*]}${have:+ (had: $have)}"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_REQUIREMENTS[@]}"
    if [[ ! -x "$VENV/bin/moto_server" ]]; then
        echo "error: $VENV/bin/moto_server is still missing after pip install" >&2
        exit 1
    fi
fi

# --- hls.js -----------------------------------------------------------------
HLSJS="$VENV/share/hls.js/hls.min.js"
if [[ -f "$HLSJS" && "$(cat "$HLSJS.version" 2>/dev/null)" == "$HLSJS_VERSION" ]]; then
    step "hls.js: $HLSJS_VERSION in $HLSJS"
else
    step "hls.js: fetching $HLSJS_VERSION from the npm registry"
    "$VENV/bin/python" - "$HLSJS_VERSION" "$HLSJS_INTEGRITY" "$HLSJS" <<'PY'
import base64, hashlib, io, os, sys, tarfile, urllib.request
version, integrity, dest = sys.argv[1:]
url = f"https://registry.npmjs.org/hls.js/-/hls.js-{version}.tgz"
data = urllib.request.urlopen(url, timeout=120).read()
algo, digest = integrity.split("-", 1)
if base64.b64encode(hashlib.new(algo, data).digest()).decode() != digest:
    sys.exit(f"error: {url} does not match its integrity {integrity}")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    js = tar.extractfile("package/dist/hls.min.js").read()
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".part", "wb") as f:
    f.write(js)
os.replace(dest + ".part", dest)
with open(dest + ".version", "w") as f:
    f.write(version)
PY
fi

# --- Rust -----------------------------------------------------------------
if command -v cargo >/dev/null 2>&1; then
    step "rust: $(cargo --version)"
    # cargo-deny checks what enters the build (deny.toml). Built from
    # crates.io once per machine (about 3 minutes on 2 cores): PyPI's
    # prebuilt 0.14 panics on this lockfile, and nothing else ships it.
    if [[ "$(cargo deny --version 2>/dev/null)" == "cargo-deny $CARGO_DENY_VERSION" ]]; then
        step "cargo-deny: $CARGO_DENY_VERSION"
    else
        step "cargo-deny: building $CARGO_DENY_VERSION from crates.io"
        cargo install --locked --quiet --no-default-features cargo-deny --version "$CARGO_DENY_VERSION"
    fi
else
    step "rust: cargo not found on PATH; install Rust (rustup) 1.94.1 or newer"
fi

step "done"
