"""The instance set-up script's own code, run here on Debian 12's bash, curl
and python3 (what the AMI has): `s3_get` fetches the release package from S3
with the instance role's credentials, signing with curl's SigV4, against
moto with IAM enforcement on (signatures and the role's policy checked) and
a stand-in for the instance metadata service (IMDSv2).

Imported by deploy/check.py, which starts moto and passes its endpoint.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
USER_DATA = ROOT / "deploy" / "user-data.sh"
ROLE = "vidworker-instance"
BUCKET = "vidworker-artifacts"
KEY = "releases/vidworker_0.1.0_amd64.deb"
# moto serves this many calls before it enforces IAM (the set-up's).
FREE_CALLS = 6


class Failed(Exception):
    """What went wrong, and details."""

    def __init__(self, message: str, details: list[str] | None = None):
        super().__init__(message)
        self.details = details or []


def imds_stub(credentials: dict) -> http.server.ThreadingHTTPServer:
    """IMDSv2 with the role's temporary credentials, on a free port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self):
            ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            self.reply(200, "token-1") if ok else self.reply(400, "bad token request")

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                return self.reply(401, "IMDSv2 token required")
            base = "/latest/meta-data/iam/security-credentials/"
            if self.path == base:
                return self.reply(200, ROLE)
            if self.path == base + ROLE:
                return self.reply(200, json.dumps({
                    "Code": "Success", "Type": "AWS-HMAC",
                    "AccessKeyId": credentials["AccessKeyId"],
                    "SecretAccessKey": credentials["SecretAccessKey"],
                    "Token": credentials["SessionToken"],
                }))
            self.reply(404, "Not Found")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def s3_get(endpoint: str, imds: str, uri: str, out: Path) -> subprocess.CompletedProcess:
    """Runs the user data's s3_get (sourced, functions only)."""
    script = 'source "$1"; s3_get "$2" "$3"'
    env = {"PATH": "/usr/bin:/bin", "VIDWORKER_SETUP_LIBRARY": "1", "IMDS": imds,
           "S3_ENDPOINT": endpoint, "S3_REGION": "us-east-1"}
    return subprocess.run(["bash", "-c", script, "bash", str(USER_DATA), uri, str(out)],
                          env=env, capture_output=True, text=True, timeout=60)


def check_package_fetch(endpoint: str) -> str:
    import boto3

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
              aws_secret_access_key="test")
    iam = boto3.client("iam", **kw)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    # The template's UserDataArtifact statement: this one object.
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/{KEY}"}]}
    iam.put_role_policy(RoleName=ROLE, PolicyName="artifact", PolicyDocument=json.dumps(policy))
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket=BUCKET)
    package = b"!<arch>\ndebian-binary   " + bytes(range(256)) * 64
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=package)
    s3.put_object(Bucket=BUCKET, Key="releases/other.deb", Body=b"not granted")
    creds = boto3.client("sts", **kw).assume_role(
        RoleArn=f"arn:aws:iam::123456789012:role/{ROLE}", RoleSessionName="i-0123456789abcdef0")["Credentials"]

    stub = imds_stub(creds)
    imds = f"http://127.0.0.1:{stub.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "vidworker.deb"
            wrong = dict(creds, SecretAccessKey="not-the-secret")
            # Spend moto's free calls with a wrong signature until it checks.
            refused = None
            for _ in range(FREE_CALLS + 2):
                bad = imds_stub(wrong)
                try:
                    refused = s3_get(endpoint, f"http://127.0.0.1:{bad.server_address[1]}", f"s3://{BUCKET}/{KEY}", out)
                finally:
                    bad.shutdown()
                if refused.returncode != 0:
                    break
            if refused is None or refused.returncode == 0 or "403" not in refused.stderr:
                raise Failed("moto never refused a wrong signature: IAM enforcement is off, the check proves nothing")
            got = s3_get(endpoint, imds, f"s3://{BUCKET}/{KEY}", out)
            if got.returncode != 0 or out.read_bytes() != package:
                raise Failed("s3_get did not fetch the package with the role's credentials",
                             (got.stdout + got.stderr).splitlines()[-5:])
            other = s3_get(endpoint, imds, f"s3://{BUCKET}/releases/other.deb", out)
            if other.returncode == 0 or "403" not in other.stderr:
                raise Failed("s3_get fetched an object the role may not read", other.stderr.splitlines()[-3:])
    finally:
        stub.shutdown()
    return (f"s3_get fetched {len(package)} bytes signed with curl's SigV4 and the role's session token; "
            "moto refused (403) a wrong secret and an object outside the policy")
