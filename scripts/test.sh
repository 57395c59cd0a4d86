#!/usr/bin/env bash
# Runs every test: installs what is missing (FFmpeg libraries, clang,
# PostgreSQL, the moto venv), checks formatting and lints (rustc warnings and
# clippy's correctness/suspicious groups are errors, see scripts/lint.py),
# then the whole workspace's tests. The integration tests start their own
# PostgreSQL clusters and moto servers.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/install-deps.sh
echo "==> scripts/code-map.py (no import cycles, small files and functions, unsafe in one place)"
python3 scripts/code-map.py
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> scripts/lint.py (clippy: rustc warnings, correctness and suspicious fail)"
python3 scripts/lint.py
echo "==> cargo deny (deny.toml: licences, bans, sources)"
cargo deny --offline check licenses bans sources
# Advisories need RustSec's database, cloned from github.com: where that is
# unreachable (these CI machines reach only the package registries), say so.
if advisories="$(cargo deny check advisories 2>&1)"; then
    echo "==> cargo deny check advisories: ok"
elif grep -q "failed to fetch advisory database" <<<"$advisories"; then
    echo "==> cargo deny check advisories: SKIPPED, the RustSec database cannot be fetched here:"
    grep -m1 "fatal:\|Could not resolve" <<<"$advisories" || true
else
    echo "$advisories"
    exit 1
fi
echo "==> cargo test"
cargo test --workspace --locked "$@"
echo "==> deploy/check.py (the AWS template and unit against the code)"
.venv/bin/python deploy/check.py
# The container image, wherever a Docker engine runs (it needs one started
# with the storage and network settings of README "The container"; CI
# machines without one say so here rather than pass silently).
if docker info >/dev/null 2>&1; then
    echo "==> scripts/docker-check.sh (the image built and run for real)"
    scripts/docker-check.sh
else
    echo "==> scripts/docker-check.sh: SKIPPED, no Docker engine is running here"
fi
