#!/usr/bin/env bash
# Runs every test: installs what is missing (FFmpeg libraries, clang,
# PostgreSQL, the moto venv), then the whole workspace's tests. The
# integration tests start their own PostgreSQL clusters and moto servers.
#
#   scripts/test.sh [extra cargo test arguments]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/install-deps.sh
echo "==> cargo test"
cargo test --workspace --locked "$@"
