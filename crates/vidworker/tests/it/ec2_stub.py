#!/usr/bin/env python3
"""A stand-in for an EC2 instance's metadata service (IMDSv2), the Auto
Scaling API and CloudFormation's SignalResource, for vidworker's termination
and rollout tests.

    ec2_stub.py PORT

IMDSv2: PUT /latest/api/token (with X-aws-ec2-metadata-token-ttl-seconds)
returns a token; every GET under /latest/ must carry it in
X-aws-ec2-metadata-token, or gets 401. Served: instance-id,
autoscaling/target-lifecycle-state (InService until told otherwise),
spot/instance-action (404 until told otherwise).

Auto Scaling and CloudFormation: POST / with a query-protocol form body.
The actions in NAMESPACES are answered like AWS does and recorded; anything
else is a 400.

Control, for the test: POST /__stub/lifecycle (body: the state),
POST /__stub/spot (body: the instance-action JSON), GET /__stub/calls
(recorded calls, one JSON object per line), GET /__stub/health.
"""

import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

INSTANCE_ID = "i-0123456789abcdef0"
AUTOSCALING = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
# The calls answered (and recorded), with their API's XML namespace.
NAMESPACES = {
    "CompleteLifecycleAction": AUTOSCALING,
    "SetInstanceProtection": AUTOSCALING,
    "SetInstanceHealth": AUTOSCALING,
    "SignalResource": "http://cloudformation.amazonaws.com/doc/2010-05-15/",
}
state = {"lifecycle": "InService", "spot": None, "tokens": set(), "calls": []}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("ec2-stub: " + fmt % args + "\n")

    def reply(self, status, body="", content_type="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode() if length else ""

    def do_PUT(self):
        body = self.body()
        if self.path == "/latest/api/token":
            if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self.reply(400, "missing X-aws-ec2-metadata-token-ttl-seconds")
            token = uuid.uuid4().hex
            with lock:
                state["tokens"].add(token)
            self.send_response(200)
            self.send_header("X-aws-ec2-metadata-token-ttl-seconds",
                             self.headers["X-aws-ec2-metadata-token-ttl-seconds"])
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(token)))
            self.end_headers()
            self.wfile.write(token.encode())
            return
        self.reply(404, f"no {self.path} ({len(body)} bytes)")

    def do_GET(self):
        if self.path == "/__stub/calls":
            with lock:
                return self.reply(200, "".join(json.dumps(c) + "\n" for c in state["calls"]))
        if self.path == "/__stub/health":
            return self.reply(200, "ok")
        if not self.path.startswith("/latest/"):
            return self.reply(404, "not found")
        with lock:
            if self.headers.get("X-aws-ec2-metadata-token") not in state["tokens"]:
                return self.reply(401, "IMDSv2 token required")
            lifecycle, spot = state["lifecycle"], state["spot"]
        if self.path == "/latest/meta-data/instance-id":
            return self.reply(200, INSTANCE_ID)
        if self.path == "/latest/meta-data/autoscaling/target-lifecycle-state":
            return self.reply(200, lifecycle)
        if self.path == "/latest/meta-data/spot/instance-action":
            return self.reply(200, spot, "application/json") if spot else self.reply(404, "Not Found")
        return self.reply(404, "Not Found")

    def do_POST(self):
        body = self.body()
        if self.path == "/__stub/lifecycle":
            with lock:
                state["lifecycle"] = body.strip()
            return self.reply(200, "ok")
        if self.path == "/__stub/spot":
            with lock:
                state["spot"] = body.strip()
            return self.reply(200, "ok")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        action = form.get("Action")
        if action in NAMESPACES:
            with lock:
                state["calls"].append(form)
            return self.reply(200, (
                f'<{action}Response xmlns="{NAMESPACES[action]}">'
                f"<{action}Result/>"
                f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
                f"</{action}Response>"), "text/xml")
        return self.reply(400, f"unexpected call {action!r}")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
