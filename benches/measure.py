"""What the benchmark scripts measure alike (imported by their embedded
Python): a run's cost and a rendition's quality against its source.

    run(cmd) -> (wall s, CPU s, peak RSS MiB)
    quality(out, src) -> (PSNR average dB, SSIM All)

Against the source scaled to 1280x720 by libavfilter (letterboxed like the
rendition), top 560 rows only, away from the watermark; the first 30 s.
"""

import os
import re
import subprocess
import sys

GRAPH = ("[0:v]crop=1280:560:0:0,split[d1][d2];"
         "[1:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
         "crop=1280:560:0:0,split[r1][r2];[d1][r1]psnr[p];[d2][r2]ssim[q]")


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
