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
PIP_REQUIREMENTS=(
    "moto[s3,sqs,sns]==$MOTO_VERSION"
    "flask==$FLASK_VERSION"
    "flask-cors==$FLASK_CORS_VERSION"
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
    "cfn-lint==$CFN_LINT_VERSION"
    "selenium==$SELENIUM_VERSION"
)

APT_PACKAGES=(
    libavcodec-dev libavformat-dev libavfilter-dev libavdevice-dev
    libswscale-dev libswresample-dev libavutil-dev
    clang libclang-dev pkg-config
    postgresql-15
    ffmpeg
    python3-venv
    openssl
    shellcheck
    systemd
    chromium
    chromium-driver
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

want="moto=$MOTO_VERSION flask=$FLASK_VERSION flask-cors=$FLASK_CORS_VERSION prometheus-client=$PROMETHEUS_CLIENT_VERSION cfn-lint=$CFN_LINT_VERSION selenium=$SELENIUM_VERSION"
have=""
if [[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/python" ]]; then
    have="$("$VENV/bin/python" - <<'EOF' 2>/dev/null || true
from importlib.metadata import version
print(f"moto={version('moto')} flask={version('flask')} flask-cors={version('flask-cors')} prometheus-client={version('prometheus-client')} cfn-lint={version('cfn-lint')} selenium={version('selenium')}")
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

# --- Rust -----------------------------------------------------------------
if command -v cargo >/dev/null 2>&1; then
    step "rust: $(cargo --version)"
else
    step "rust: cargo not found on PATH; install Rust (rustup) 1.94.1 or newer"
fi

step "done"
