#!/usr/bin/env bash
# Picture quality per CPU-second: each encode configuration over the content
# set (the reference upload of benches/make-reference.sh and the
# high-motion, dark-indoor and talking-head clips of benches/make-content.sh),
# as the worker runs it: `vidworker process --threads 1 --no-poster`, one
# job per core, two at a time on this machine (CPU seconds are each
# process's own, from wait4).
#
#   benches/quality.sh                       # the configurations below
#   benches/quality.sh 'fast-22=--preset fast --crf 22' …   # others
#   QUALITY_REPEATS=3 benches/quality.sh …   # CPU, wall, RSS: medians of 3
#
# A configuration is NAME=FLAGS; NAME's part before the last '-' is its
# family (`medium-23` is in `medium`). The first configuration of the
# default list, `medium-23` (x264 medium, CRF 23), is the reference.
#
# Uncapped (`--maxrate 0`, or QUALITY_FLAGS): the cap pins the rate of hard
# clips and would hide the encoders' differences in efficiency.
#
# For each configuration and clip: CPU seconds, wall, peak RSS, size, and
# PSNR (average, dB), SSIM (All) and VMAF (v0.6.1, pooled mean) against the
# source scaled to 1280x720 by libavfilter (top 560 rows, away from the
# watermark). PSNR and SSIM come from libavfilter, as
# benches/compare-ffmpeg.sh measures them; VMAF from libvmaf's own tool,
# built by benches/make-vmaf.sh (Debian 12 has no libvmaf; without nasm,
# xxd or the venv the harness says so and goes on without VMAF).
# With QUALITY_REPEATS=N every encode runs N times, the configurations
# alternating clip by clip, and the costs are medians (the encodes are
# deterministic, so quality is measured once). Then, against the reference:
# the CPU and size ratios, the quality differences, the bits needed at
# equal PSNR and at equal VMAF (interpolated on the reference family's
# curve, CRF 21, 23, 25), BD-rates for every family with three points or
# more, and whether the configuration meets issue 22's bar on every clip:
# VMAF within 0.5, PSNR within 0.1 dB, SSIM within 0.0005, size at most
# +3 %, CPU at most 0.7x.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
mapfile -t REFS < <(benches/make-reference.sh)
mapfile -t CONTENT < <(benches/make-content.sh)
if ! VMAF="$(benches/make-vmaf.sh)"; then
    echo "quality.sh: VMAF NOT MEASURED: benches/make-vmaf.sh failed (above)" >&2
    VMAF=""
fi
export VMAF
OUT="$(mktemp -d)"
trap 'rm -rf -- "$OUT"' EXIT
export BIN OUT ROOT

python3 - "${REFS[0]}" "${CONTENT[@]}" -- "$@" <<'PY'
import math, os, subprocess, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "benches"))
from measure import quality, run, vmaf  # noqa: E402
import statistics
from concurrent.futures import ThreadPoolExecutor

args = sys.argv[1:]
split = args.index("--")
clips, wanted = args[:split], args[split + 1:]
BIN, OUT = os.environ["BIN"], os.environ["OUT"]

DEFAULT = [
    ("medium-23", "--preset medium --crf 23"),
    ("medium-21", "--preset medium --crf 21"),
    ("medium-25", "--preset medium --crf 25"),
    ("faster-21", "--preset faster --crf 21"),
    ("faster-22", "--preset faster --crf 22"),
    ("faster-23", "--preset faster --crf 23"),
    ("veryfast-21", "--preset veryfast --crf 21"),
    ("fast-22", "--preset fast --crf 22"),
    ("fasterplus-22", "--preset faster --crf 22 --x264-params ref=3:mixed-refs=1:weightp=2:rc-lookahead=30"),
]
BASE = os.environ.get("QUALITY_FLAGS", "--maxrate 0").split()
configs = [tuple(c.split("=", 1)) for c in wanted] or DEFAULT
reference = configs[0][0]

VMAF = os.environ.get("VMAF") or None
REPEATS = int(os.environ.get("QUALITY_REPEATS", "1"))
METRICS = ["psnr", "ssim"] + (["vmaf"] if VMAF else [])

def encode(config, clip, rep):
    """One run; quality (deterministic encodes) on the first only."""
    name, flags = config
    out = os.path.join(OUT, f"{name}-{rep}-{os.path.basename(clip)}")
    cmd = [BIN, "process", clip, "-o", out, "--threads", "1", "--no-poster", *BASE, *flags.split()]
    wall, cpu, rss = run(cmd)
    r = dict(cpu=cpu, wall=wall, rss=rss, kib=os.path.getsize(out) / 1024)
    if rep == 0:
        r["psnr"], r["ssim"] = quality(out, clip, threads=1)
        if VMAF:
            r["vmaf"] = vmaf(out, clip, VMAF)
    os.remove(out)
    return r

def label(clip):
    return os.path.basename(clip).split("-1080p")[0]

# Clip by clip, the configurations side by side (and the repeats after
# each other): this machine's speed drifts over minutes, and neighbours see
# the same drift.
jobs = [(c, clip, rep) for clip in clips for rep in range(REPEATS) for c in configs]
with ThreadPoolExecutor(max_workers=2) as pool:
    runs = list(pool.map(lambda j: encode(*j), jobs))
results = {}
for (c, clip, rep), r in zip(jobs, runs):
    results.setdefault((c[0], label(clip)), []).append(r)
for key, rs in results.items():
    merged = dict(rs[0])
    for cost in ("cpu", "wall", "rss"):
        merged[cost] = statistics.median(r[cost] for r in rs)
    if len({round(r["kib"], 3) for r in rs}) > 1:
        print(f"warning: {key} made different files on different runs", file=sys.stderr)
    results[key] = merged

names = [label(c) for c in clips]
print(f"{'config':<14} {'clip':<14} {'CPU s':>7} {'wall s':>7} {'RSS MiB':>8} {'KiB':>7} {'PSNR dB':>8} "
      f"{'SSIM':>7} {'VMAF':>6}")
for c, _ in configs:
    for n in names:
        r = results[(c, n)]
        vm = f"{r['vmaf']:6.2f}" if VMAF else "     -"
        print(f"{c:<14} {n:<14} {r['cpu']:7.1f} {r['wall']:7.1f} {r['rss']:8.0f} {r['kib']:7.0f} "
              f"{r['psnr']:8.3f} {r['ssim']:7.5f} {vm}")
if REPEATS > 1:
    print(f"(CPU, wall and RSS: medians of {REPEATS} runs)")

def curve(family, n, metric):
    """(quality, log rate) points of a family on clip n, by quality."""
    pts = sorted((results[(c, n)][metric], math.log(results[(c, n)]["kib"]))
                 for c, _ in configs if c.rsplit("-", 1)[0] == family)
    return pts

def rate_at(points, q):
    """log rate at quality q, linear between the family's points
    (extrapolated from the nearest two outside them)."""
    if len(points) < 2:
        return None
    for (q0, r0), (q1, r1) in zip(points, points[1:]):
        if q <= q1 or (q1, r1) == points[-1]:
            return r0 + (r1 - r0) * (q - q0) / (q1 - q0) if q1 != q0 else r0
    return None

def fit(points, order):
    """Least-squares polynomial log rate = f(PSNR)."""
    n = order + 1
    a = [[sum(q ** (i + j) for q, _ in points) for j in range(n)] for i in range(n)]
    b = [sum(r * q ** i for q, r in points) for i in range(n)]
    for i in range(n):  # Gaussian elimination
        p = max(range(i, n), key=lambda k: abs(a[k][i]))
        a[i], a[p], b[i], b[p] = a[p], a[i], b[p], b[i]
        for k in range(i + 1, n):
            f = a[k][i] / a[i][i]
            a[k] = [x - f * y for x, y in zip(a[k], a[i])]
            b[k] -= f * b[i]
    c = [0.0] * n
    for i in reversed(range(n)):
        c[i] = (b[i] - sum(a[i][j] * c[j] for j in range(i + 1, n))) / a[i][i]
    return c

def integral(c, lo, hi):
    return sum(ci * (hi ** (i + 1) - lo ** (i + 1)) / (i + 1) for i, ci in enumerate(c))

def bd_rate(ref, test):
    """Bjøntegaard: average bit-rate difference at equal quality, in %."""
    order = min(3, len(ref) - 1, len(test) - 1)
    lo, hi = max(ref[0][0], test[0][0]), min(ref[-1][0], test[-1][0])
    if order < 2 or hi <= lo:
        return None
    d = (integral(fit(test, order), lo, hi) - integral(fit(ref, order), lo, hi)) / (hi - lo)
    return (math.exp(d) - 1) * 100

ref_family = reference.rsplit("-", 1)[0]

def bits_at_equal(r, n, metric):
    at = rate_at(curve(ref_family, n, metric), r[metric])
    return f"{(math.exp(math.log(r['kib']) - at) - 1) * 100:+5.1f}%" if at is not None else "    -"

print(f"\nagainst {reference}: CPU ratio, size ratio, ΔPSNR dB, ΔSSIM, ΔVMAF, bits at equal PSNR and at "
      f"equal VMAF (on the {ref_family} curve); 'meets' = VMAF ≥ -0.5, PSNR ≥ -0.1, SSIM ≥ -0.0005, "
      "size ≤ 1.03, CPU ≤ 0.7 on every clip")
print(f"{'config':<14} " + " ".join(f"{n:>48}" for n in names) + "   meets")
for c, _ in configs:
    cells, ok = [], True
    for n in names:
        r, base = results[(c, n)], results[(reference, n)]
        cpu, size = r["cpu"] / base["cpu"], r["kib"] / base["kib"]
        dq, ds = r["psnr"] - base["psnr"], r["ssim"] - base["ssim"]
        dv = r["vmaf"] - base["vmaf"] if VMAF else 0.0
        cells.append(f"{cpu:4.2f}x {size:4.2f}x {dq:+6.3f} {ds:+8.5f} {dv:+5.2f} "
                     f"{bits_at_equal(r, n, 'psnr')} {bits_at_equal(r, n, 'vmaf') if VMAF else '    -'}")
        ok &= dq >= -0.1 and ds >= -0.0005 and dv >= -0.5 and size <= 1.03 and cpu <= 0.7
    print(f"{c:<14} " + " ".join(f"{x:>48}" for x in cells) + f"   {'yes' if ok else 'no'}")

families = sorted({c.rsplit('-', 1)[0] for c, _ in configs} - {ref_family})
for fam in families:
    for metric in METRICS:
        if metric == "ssim":
            continue
        rates = [bd_rate(curve(ref_family, n, metric), curve(fam, n, metric)) for n in names]
        if all(r is not None for r in rates):
            print(f"BD-rate ({metric.upper()}) {fam} vs {ref_family}: "
                  + ", ".join(f"{n} {r:+.1f}%" for n, r in zip(names, rates)))
PY
