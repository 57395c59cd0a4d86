#!/usr/bin/env bash
# vidworker next to the ffmpeg command line on the reference job: a 60 s
# 1080p30 upload at 15 Mb/s (benches/make-reference.sh), untagged and
# tagged BT.709, made into the default rendition (30 s, 1280x720, logo,
# x264 medium CRF 23, a keyframe every 2 s, no audio, faststart).
#
#   benches/compare-ffmpeg.sh [RUNS] [--fixtures]
#
# RUNS (default 5) runs of each tool, alternating, so both see the same
# machine; medians are shown. For each: wall time, CPU time (user + system),
# peak RSS (of that process alone), output size, and PSNR and SSIM against
# the same scaled source (libavfilter's psnr and ssim, on the top 560 rows:
# the watermark corner is left out, so the scores measure scaling and
# encoding, not how two tools draw a logo). "vidworker --no-poster" shows
# what the poster costs. --fixtures adds the old table over the small
# fixtures (10-minute upload vs 40 s one included).
#
# Builds vidworker in release mode first. Needs the ffmpeg CLI (installed by
# scripts/install-deps.sh) and python3.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-5}"
FIXTURES="${2:-}"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
LOGO="$ROOT/crates/processor/assets/logo.png"
mapfile -t REFS < <(benches/make-reference.sh)
OUT="$(mktemp -d)"
trap 'rm -rf -- "$OUT"' EXIT

# shellcheck source=benches/cli-rendition.sh
source "$ROOT/benches/cli-rendition.sh"
export BIN LOGO OUT ROOT

python3 - "$RUNS" "$FIXTURES" "${REFS[@]}" <<'PY'
import os, statistics, subprocess, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "benches"))
from measure import quality, run  # noqa: E402

runs, fixtures, refs = int(sys.argv[1]), sys.argv[2] == "--fixtures", sys.argv[3:]
BIN, LOGO, FILTER, OUT = (os.environ[k] for k in ("BIN", "LOGO", "CLI_FILTER", "OUT"))

def cli(src, out, t=30, fps=None):
    chain = FILTER if fps is None else FILTER.replace("[0:v]", f"[0:v]fps={fps},", 1)
    return ["ffmpeg", "-nostdin", "-y", "-v", "error", "-i", src, "-i", LOGO, "-t", str(t),
            "-filter_complex", chain, "-map", "[v]", "-an", "-c:v", "libx264", "-preset", "medium",
            "-crf", "23", "-profile:v", "high", "-g", str(2 * (fps or 30)), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", out]

def table(title, jobs, with_quality):
    print(f"\n{title}")
    head = f"{'tool':<22} {'wall s':>7} {'cpu s':>7} {'RSS MiB':>8} {'out KiB':>8}"
    print(head + (f" {'PSNR dB':>8} {'SSIM':>7}" if with_quality else ""))
    results = {}
    for _ in range(runs):
        for name, cmd, out, src in jobs:   # alternating: vw, ff, vw, ff, …
            results.setdefault(name, []).append(run(cmd))
    med = {}
    for name, cmd, out, src in jobs:
        rs = results[name]
        wall, cpu, rss = (statistics.median(x[i] for x in rs) for i in range(3))
        size = os.path.getsize(out) / 1024
        line = f"{name:<22} {wall:7.2f} {cpu:7.2f} {rss:8.1f} {size:8.0f}"
        if with_quality:
            psnr, ssim = quality(out, src)
            line += f" {psnr:8.2f} {ssim:7.4f}"
        med[name] = (wall, cpu, rss, size)
        print(line, flush=True)
    return med

print(f"median of {runs} alternating runs; {os.cpu_count()} cores")
for src in refs:
    label = os.path.basename(src)
    vw, vwn, ff = (os.path.join(OUT, n) for n in ("vw.mp4", "vwn.mp4", "ff.mp4"))
    med = table(label, [
        ("vidworker", [BIN, "process", src, "-o", vw], vw, src),
        ("ffmpeg CLI", cli(src, ff), ff, src),
        ("vidworker --no-poster", [BIN, "process", "--no-poster", src, "-o", vwn], vwn, src),
    ], True)
    (w, c, r, s), (fw, fc, fr, fs), (nw, *_ ) = med["vidworker"], med["ffmpeg CLI"], med["vidworker --no-poster"]
    print(f"vidworker / CLI: wall {w / fw:.2f}x, cpu {c / fc:.2f}x, RSS {r / fr:.2f}x, size {s / fs:.3f}x; "
          f"poster cost {100 * (w - nw) / nw:+.1f} % of the job's wall time")

if fixtures:
    root = os.getcwd()
    for f, fps in [("landscape-1080p30.mp4", 30), ("uhd-4k60.mp4", 30), ("portrait-rotated.mp4", 30),
                   ("long-40s.mp4", 10), ("long-10min.mp4", 5)]:
        src = os.path.join(root, "fixtures", f)
        vw, ff = os.path.join(OUT, "fvw.mp4"), os.path.join(OUT, "fff.mp4")
        table(f, [("vidworker", [BIN, "process", src, "-o", vw], vw, src),
                  ("ffmpeg CLI", cli(src, ff, fps=fps), ff, src)], False)
PY
