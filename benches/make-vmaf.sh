#!/usr/bin/env bash
# Builds Netflix's `vmaf` tool (libvmaf 2.3.1, BSD-2-Clause-Patent, with its
# models compiled in) for the quality harness, and prints its path. Debian
# 12 packages no libvmaf and its FFmpeg has no libvmaf filter; the source
# comes from the `libvmaf-sys` crate, which vendors it, fetched by cargo
# from crates.io (checksummed by the registry), and is built with meson and
# ninja from PyPI in the project's venv. It is a measuring tool only: no
# crate of the workspace links it.
#
#   benches/make-vmaf.sh     # prints target/vmaf/bin/vmaf
#
# Made once (about 15 s on 2 cores); later calls reuse it. Needs nasm and
# xxd (Debian packages, installed by scripts/install-deps.sh) for the SIMD
# code and the built-in models.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/target/vmaf"
BIN="$DIR/bin/vmaf"
CRATE=libvmaf-sys
VERSION=0.4.4
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi
for tool in nasm xxd; do
    command -v "$tool" >/dev/null || {
        echo "make-vmaf.sh: $tool is missing (apt-get install $tool)" >&2
        exit 1
    }
done
VENV="$ROOT/.venv"
[[ -x "$VENV/bin/python" ]] || {
    echo "make-vmaf.sh: no venv at $VENV (scripts/install-deps.sh makes it)" >&2
    exit 1
}
# Pinned like the venv's other tools (scripts/install-deps.sh).
"$VENV/bin/pip" install -q meson==1.12.1 ninja==1.13.2 >&2

# A throwaway manifest whose only dependency is the crate: cargo fetches
# and verifies it like any other. Its source lands in cargo's registry.
mkdir -p "$DIR/fetch/src"
cat >"$DIR/fetch/Cargo.toml" <<EOF
[package]
name = "vmaf-source"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = { version = "=$VERSION", default-features = false }

[workspace]
EOF
: >"$DIR/fetch/src/lib.rs"
cargo metadata -q --manifest-path "$DIR/fetch/Cargo.toml" --format-version 1 >"$DIR/fetch/metadata.json"
manifest="$(python3 -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == sys.argv[2]))' \
    "$DIR/fetch/metadata.json" "$CRATE")"
src="$(dirname "$manifest")/vmaf/libvmaf"
[[ -f "$src/meson.build" ]] || {
    echo "make-vmaf.sh: $src has no meson.build" >&2
    exit 1
}

rm -rf "$DIR/build"
PATH="$VENV/bin:$PATH" meson setup "$DIR/build" "$src" --prefix "$DIR" -Dbuildtype=release \
    -Ddefault_library=static -Denable_tests=false -Denable_docs=false -Dbuilt_in_models=true >&2
PATH="$VENV/bin:$PATH" ninja -C "$DIR/build" tools/vmaf >&2
install -D -m 0755 "$DIR/build/tools/vmaf" "$BIN"
echo "$BIN"
