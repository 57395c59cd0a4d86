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
#
# A configuration is NAME=FLAGS; NAME's part before the last '-' is its
# family (`medium-23` is in `medium`). The first configuration of the
# default list, `medium-23` (x264 medium, CRF 23), is the reference.
#
# Uncapped (`--maxrate 0`, or QUALITY_FLAGS): the cap pins the rate of hard
# clips and would hide the encoders' differences in efficiency.
#
# For each configuration and clip: CPU seconds, wall, peak RSS, size, and
# PSNR (average, dB) and SSIM (All) against the source scaled to 1280x720
# by libavfilter (top 560 rows, away from the watermark), as
# benches/compare-ffmpeg.sh measures them. Then, against the reference:
# the CPU and size ratios, the PSNR and SSIM differences, the bits needed
# at equal PSNR (interpolated on the reference family's curve, CRF 21, 23,
# 25), a BD-rate for every family with three points or more, and whether
# the configuration meets issue 22's bar on every clip: PSNR within 0.1 dB,
# SSIM within 0.0005, size at most +3 %, CPU at most 0.7x. VMAF is not
# measured: Debian 12's FFmpeg has no libvmaf and Debian 12 packages none.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build --release -q -p vidworker
BIN="$ROOT/target/release/vidworker"
mapfile -t REFS < <(benches/make-reference.sh)
mapfile -t CONTENT < <(benches/make-content.sh)
OUT="$(mktemp -d)"
trap 'rm -rf -- "$OUT"' EXIT
export BIN OUT ROOT

python3 - "${REFS[0]}" "${CONTENT[@]}" -- "$@" <<'PY'
import math, os, subprocess, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "benches"))
from measure import quality, run  # noqa: E402
from concurrent.futures import ThreadPoolExecutor

args = sys.argv[1:]
split = args.index("--")
clips, wanted = args[:split], args[split + 1:]
BIN, OUT = os.environ["BIN"], os.environ["OUT"]

DEFAULT = [
    ("medium-23", "--preset medium --crf 23"),
    ("medium-21", "--preset medium --crf 21"),
    ("medium-25", "--preset medium --crf 25"),
    ("fast-23", "--preset fast --crf 23"),
    ("fast-22", "--preset fast --crf 22"),
    ("fast-21", "--preset fast --crf 21"),
    ("faster-23", "--preset faster --crf 23"),
    ("faster-22", "--preset faster --crf 22"),
    ("faster-21", "--preset faster --crf 21"),
    ("lite-23", "--preset medium --crf 23 --x264-params subme=6:ref=2:rc-lookahead=20"),
]
BASE = os.environ.get("QUALITY_FLAGS", "--maxrate 0").split()
configs = [tuple(c.split("=", 1)) for c in wanted] or DEFAULT
reference = configs[0][0]

def encode(config, clip):
    name, flags = config
    out = os.path.join(OUT, f"{name}-{os.path.basename(clip)}")
    cmd = [BIN, "process", clip, "-o", out, "--threads", "1", "--no-poster", *BASE, *flags.split()]
    wall, cpu, rss = run(cmd)
    psnr, ssim = quality(out, clip, threads=1)
    size = os.path.getsize(out)
    os.remove(out)
    return dict(cpu=cpu, wall=wall, rss=rss,
                kib=size / 1024, psnr=psnr, ssim=ssim)

def label(clip):
    return os.path.basename(clip).split("-1080p")[0]

# Clip by clip, the configurations side by side: this machine's speed
# drifts over minutes, and neighbours see the same drift.
jobs = [(c, clip) for clip in clips for c in configs]
with ThreadPoolExecutor(max_workers=2) as pool:
    results = dict(zip([(c[0], label(clip)) for c, clip in jobs], pool.map(lambda j: encode(*j), jobs)))

names = [label(c) for c in clips]
print(f"{'config':<14} {'clip':<14} {'CPU s':>7} {'wall s':>7} {'RSS MiB':>8} {'KiB':>7} {'PSNR dB':>8} {'SSIM':>7}")
for c, _ in configs:
    for n in names:
        r = results[(c, n)]
        print(f"{c:<14} {n:<14} {r['cpu']:7.1f} {r['wall']:7.1f} {r['rss']:8.0f} {r['kib']:7.0f} "
              f"{r['psnr']:8.3f} {r['ssim']:7.5f}")

def curve(family, n):
    """(log rate, PSNR) points of a family on clip n, by PSNR."""
    pts = sorted((results[(c, n)]["psnr"], math.log(results[(c, n)]["kib"]))
                 for c, _ in configs if c.rsplit("-", 1)[0] == family)
    return pts

def rate_at(points, psnr):
    """log rate at psnr, linear between the family's points (extrapolated
    from the nearest two outside them)."""
    if len(points) < 2:
        return None
    for (q0, r0), (q1, r1) in zip(points, points[1:]):
        if psnr <= q1 or (q1, r1) == points[-1]:
            return r0 + (r1 - r0) * (psnr - q0) / (q1 - q0) if q1 != q0 else r0
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
    """Bjøntegaard: average bit-rate difference at equal PSNR, in %."""
    order = min(3, len(ref) - 1, len(test) - 1)
    lo, hi = max(ref[0][0], test[0][0]), min(ref[-1][0], test[-1][0])
    if order < 2 or hi <= lo:
        return None
    d = (integral(fit(test, order), lo, hi) - integral(fit(ref, order), lo, hi)) / (hi - lo)
    return (math.exp(d) - 1) * 100

ref_family = reference.rsplit("-", 1)[0]
print(f"\nagainst {reference}: CPU ratio, size ratio, ΔPSNR dB, ΔSSIM, bits at equal PSNR "
      f"(on the {ref_family} curve); 'meets' = PSNR ≥ -0.1, SSIM ≥ -0.0005, size ≤ 1.03, CPU ≤ 0.7 on every clip")
print(f"{'config':<14} " + " ".join(f"{n:>32}" for n in names) + "   meets")
for c, _ in configs:
    cells, ok = [], True
    for n in names:
        r, base = results[(c, n)], results[(reference, n)]
        cpu, size = r["cpu"] / base["cpu"], r["kib"] / base["kib"]
        dq, ds = r["psnr"] - base["psnr"], r["ssim"] - base["ssim"]
        at = rate_at(curve(ref_family, n), r["psnr"])
        eq = f"{(math.exp(math.log(r['kib']) - at) - 1) * 100:+5.1f}%" if at is not None else "    -"
        cells.append(f"{cpu:4.2f}x {size:4.2f}x {dq:+6.3f} {ds:+8.5f} {eq}")
        ok &= dq >= -0.1 and ds >= -0.0005 and size <= 1.03 and cpu <= 0.7
    print(f"{c:<14} " + " ".join(f"{x:>32}" for x in cells) + f"   {'yes' if ok else 'no'}")

families = sorted({c.rsplit('-', 1)[0] for c, _ in configs} - {ref_family})
for fam in families:
    rates = [bd_rate(curve(ref_family, n), curve(fam, n)) for n in names]
    if all(r is not None for r in rates):
        print(f"BD-rate {fam} vs {ref_family}: " + ", ".join(f"{n} {r:+.1f}%" for n, r in zip(names, rates)))
PY
