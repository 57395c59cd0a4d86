#!/usr/bin/env python3
"""Soak test: many jobs, several workers, random kill -9 and restarts.

Runs against the local stack (scripts/local-stack.sh start) with the release
binary, in a fresh database, bucket and queue of its own. At the end it
reports what a platform owner cares about: videos submitted, processed,
failed, lost (never settled, or processed without its rendition in S3),
overwritten (the recorded rendition written more than once), orphans
(renditions left beside the recorded one), left stuck, and how much work was
repeated (renditions uploaded more than once per video, counted from the
versions of the versioned bucket: expected after a kill between the upload
and the record, harmless because only the recorded one is kept).

    scripts/local-stack.sh start
    .venv/bin/python scripts/soak.py --jobs 60 --workers 3 --kill-every 5

Needs the venv made by scripts/install-deps.sh (for boto3).
"""

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "vidworker")
GOOD = ["gray-720p.mp4", "portrait-rotated.mp4", "tiny-64x64.mp4", "short-0.4s.mp4",
        "prores.mov", "letterbox-21x9.webm", "anamorphic-pal.mkv", "long-40s.mp4",
        "landscape-1080p30.mp4", "rotated-180.mov"]
BAD = ["truncated.mp4", "audio-only.m4a"]


def stack_env():
    out = subprocess.run([os.path.join(ROOT, "scripts", "local-stack.sh"), "env"],
                         check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def psql(env, db, sql):
    url = env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db
    return subprocess.run(["psql", "-X", "-q", "-t", "-A", "-F", "\t", url, "-c", sql],
                          check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between kills")
    ap.add_argument("--visibility", type=int, default=6, help="VISIBILITY_TIMEOUT for the run")
    ap.add_argument("--limit", type=int, default=1800, help="give up after this many seconds")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    import boto3  # from the moto venv

    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "vidworker"], cwd=ROOT, check=True)
    base = stack_env()
    run_id = f"soak{int(time.time())}"
    workdir = os.path.join(ROOT, ".local", run_id)
    os.makedirs(workdir)
    psql(base, "postgres", f"CREATE DATABASE {run_id}")
    env = dict(os.environ, **base)
    env.update({
        "DATABASE_URL": base["DATABASE_URL"].rsplit("/", 1)[0] + "/" + run_id,
        "S3_BUCKET": run_id,
        "SQS_QUEUE_URL": base["SQS_QUEUE_URL"].rsplit("/", 1)[0] + "/" + run_id,
        "VISIBILITY_TIMEOUT": str(args.visibility),
        "RECEIVE_WAIT_SECONDS": "1",
        "RETRY_BACKOFF": "1",
        "SHUTDOWN_GRACE": "5",
        "WORKER_CONCURRENCY": "1",
        "RENDITION_PRESET": "veryfast",
        "WORKER_TEMP_DIR": workdir,
        "LOG_FORMAT": "json",
        "METRICS_ADDR": "off",
    })
    subprocess.run([BIN, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([BIN, "queue-init", "--visibility-timeout", str(args.visibility)], env=env, check=True,
                   capture_output=True)
    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"])
    s3 = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    sqs = session.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL"])
    # Versioned, as in production: every upload leaves a version to count.
    s3.put_bucket_versioning(Bucket=run_id, VersioningConfiguration={"Status": "Enabled"})

    files = [rng.choice(GOOD) if rng.random() > 0.1 else rng.choice(BAD) for _ in range(args.jobs)]
    out = subprocess.run([BIN, "submit", *[os.path.join(ROOT, "fixtures", f) for f in files]], env=env,
                         check=True, capture_output=True, text=True).stdout
    submitted = {line.split()[0]: os.path.basename(line.split()[1]) for line in out.splitlines()}
    print(f"soak {run_id}: seed {args.seed}, {len(submitted)} jobs, {args.workers} workers, "
          f"kill -9 every ~{args.kill_every} s, visibility {args.visibility} s", flush=True)

    logs = []
    def start_worker(slot):
        path = os.path.join(workdir, f"worker{slot}-{len(logs)}.log")
        logs.append(path)
        return subprocess.Popen([BIN, "run"], env=env, stdout=subprocess.DEVNULL, stderr=open(path, "w"))

    workers = [start_worker(i) for i in range(args.workers)]
    kills = terms = 0
    start = time.time()
    next_kill = start + rng.expovariate(1 / args.kill_every)
    while True:
        time.sleep(0.5)
        counts = dict(line.split("\t") for line in
                      psql(base, run_id, "SELECT status, count(*) FROM videos GROUP BY 1").splitlines() if line)
        settled = int(counts.get("processed", 0)) + int(counts.get("failed", 0))
        if settled == len(submitted):
            break
        if time.time() - start > args.limit:
            print("soak: time limit reached before every video settled", flush=True)
            break
        if time.time() >= next_kill:
            slot = rng.randrange(len(workers))
            if rng.random() < 0.8:
                workers[slot].send_signal(signal.SIGKILL)
                kills += 1
            else:
                workers[slot].send_signal(signal.SIGTERM)
                terms += 1
            workers[slot].wait()
            workers[slot] = start_worker(slot)
            next_kill = time.time() + rng.expovariate(1 / args.kill_every)
    elapsed = time.time() - start
    # Let duplicate messages drain, then stop everyone politely.
    time.sleep(args.visibility + 5)
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(timeout=60)

    rows = {r.split("\t")[0]: r.split("\t")[1:] for r in
            psql(base, run_id, "SELECT id, status, attempts, coalesce(processed_key, ''), "
                               "coalesce(processed_bytes, 0) FROM videos").splitlines()}
    status = collections.Counter(r[0] for r in rows.values())
    lost = [v for v in submitted if v not in rows or rows[v][0] not in ("processed", "failed")]
    missing_object, overwritten, orphans, repeated = [], [], [], []
    for vid, (st, _, key, size) in rows.items():
        if st != "processed":
            continue
        listing = s3.list_object_versions(Bucket=run_id, Prefix=f"processed/{vid}/")
        versions = listing.get("Versions", [])
        current = [v for v in versions if v["IsLatest"]]
        recorded = [v for v in versions if v["Key"] == key]
        if not any(v["Key"] == key and v["IsLatest"] and v["Size"] == int(size) for v in current):
            missing_object.append(vid)
        if len(recorded) > 1:
            overwritten.append(vid)
        if any(v["Key"] != key for v in current):
            orphans.append(vid)
        if len(versions) > 1:
            repeated.append(vid)
    wrongly_failed = [v for v, (st, *_rest) in rows.items() if st == "failed" and submitted.get(v) in GOOD]
    attempts = collections.Counter(int(r[1]) for r in rows.values())
    qattrs = sqs.get_queue_attributes(QueueUrl=env["SQS_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=env["SQS_QUEUE_URL"] + "-dlq", AttributeNames=["All"])["Attributes"]
    report = {
        "submitted": len(submitted),
        "bad_inputs_submitted": sum(1 for f in submitted.values() if f in BAD),
        "processed": status["processed"],
        "failed": status["failed"],
        "failed_good_inputs": len(wrongly_failed),
        "lost": len(lost) + len(missing_object),
        "overwritten": len(overwritten),
        "orphan_renditions": len(orphans),
        "work_repeated": len(repeated),
        "stuck_processing": status["processing"],
        "messages_left": int(qattrs["ApproximateNumberOfMessages"]) + int(qattrs["ApproximateNumberOfMessagesNotVisible"]),
        "dead_letters": int(dlq["ApproximateNumberOfMessages"]),
        "kill_9": kills,
        "sigterm": terms,
        "attempts_histogram": dict(sorted(attempts.items())),
        "seconds_to_settle": round(elapsed, 1),
    }
    print(json.dumps(report, indent=2))
    ok = (report["lost"] == 0 and report["overwritten"] == 0 and report["stuck_processing"] == 0
          and report["failed_good_inputs"] == 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
