"""What the benchmark scripts measure alike (imported by their embedded
Python): a run's cost and a rendition's quality against its source.

    run(cmd) -> (wall s, CPU s, peak RSS MiB)
    quality(out, src) -> (PSNR average dB, SSIM All)
    vmaf(out, src, tool) -> VMAF (v0.6.1, pooled mean)

Against the source scaled to 1280x720 by libavfilter (letterboxed like the
rendition), top 560 rows only, away from the watermark; the first 30 s.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

# The rendition's picture, and the source as the rendition should show it.
DISTORTED = "crop=1280:560:0:0"
REFERENCE = ("scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
             "crop=1280:560:0:0")
GRAPH = (f"[0:v]{DISTORTED},split[d1][d2];[1:v]{REFERENCE},split[r1][r2];"
         "[d1][r1]psnr[p];[d2][r2]ssim[q]")


def quality(out, src, threads=None):
    """PSNR (average, dB) and SSIM (All) of out against src."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats"]
    if threads:
        cmd += ["-threads", str(threads)]
    cmd += ["-i", out, "-t", "30", "-i", src, "-filter_complex", GRAPH,
            "-map", "[p]", "-f", "null", "-", "-map", "[q]", "-f", "null", "-"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    psnr = float(re.search(r"PSNR .*average:([\d.]+|inf)", r.stderr).group(1))
    ssim = float(re.search(r"SSIM .*All:([\d.]+)", r.stderr).group(1))
    return psnr, ssim


def vmaf(out, src, tool):
    """VMAF (model v0.6.1 built into libvmaf, pooled mean over the frames)
    of out against src, both as quality() crops them, computed at the
    rendition's size by libvmaf's own `vmaf` tool (benches/make-vmaf.sh)
    reading both pictures from ffmpeg through pipes."""
    with tempfile.TemporaryDirectory() as d:
        ref, dis, log = (os.path.join(d, n) for n in ("ref.y4m", "dis.y4m", "vmaf.json"))
        os.mkfifo(ref)
        os.mkfifo(dis)
        y4m = ["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "-strict", "-1", "-y"]
        ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1"]
        feeds = [subprocess.Popen([*ffmpeg, "-i", out, "-vf", DISTORTED, *y4m, dis]),
                 subprocess.Popen([*ffmpeg, "-t", "30", "-i", src, "-vf", REFERENCE, *y4m, ref])]
        r = subprocess.run([tool, "-r", ref, "-d", dis, "--threads", "1", "-q", "--json", "-o", log],
                           capture_output=True, text=True)
        for feed in feeds:
            if r.returncode != 0:
                feed.kill()  # else blocked for ever on a pipe nobody reads
            feed.wait()
        if r.returncode != 0:
            sys.exit(f"vmaf {out} against {src} failed: {r.stderr.strip()}")
        with open(log) as f:
            return json.load(f)["pooled_metrics"]["vmaf"]["mean"]


def run(cmd):
    """(wall s, CPU s, peak RSS MiB) of one run of cmd (its own rusage, from
    wait4); exits the script with cmd's stderr if it fails."""
    start = os.times().elapsed
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = os.times().elapsed - start
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed: {err}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024
