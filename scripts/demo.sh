#!/usr/bin/env bash
# The first command of a new user on a fresh Debian 12 machine with Rust:
# installs what is missing, builds vidworker, and processes a fixture into
# processed/. Pass another video to process that instead.
#
#   scripts/demo.sh [VIDEO]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INPUT="${1:-$ROOT/fixtures/landscape-1080p30.mp4}"

"$ROOT/scripts/install-deps.sh"
echo "==> building vidworker (release)"
cargo build --release --locked -p vidworker --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release/vidworker"

echo "==> the input"
"$BIN" probe "$INPUT"
echo "==> processing it into processed/"
"$BIN" process "$INPUT"
OUT="processed/$(basename "${INPUT%.*}").mp4"
echo "==> the rendition"
"$BIN" probe "$OUT"
