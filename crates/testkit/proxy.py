#!/usr/bin/env python3
"""Fault-injection proxies for vidworker's reliability tests (crates/testkit).

One program, two proxies; the Rust handles in crates/testkit/src/proxy/
start one process per proxy and drive it through a small JSON control server
on a second port. Standard library only.

    proxy.py --mode tcp  --listen PORT --control PORT --upstream 127.0.0.1:PORT
    proxy.py --mode http --listen PORT --control PORT --upstream http://127.0.0.1:PORT

Both ports are bound before the control server answers, so a 200 from
`GET /health` means the proxy is ready.

TCP proxy (PostgreSQL): forwards bytes; `POST /mode` switches the behaviour
for new and existing connections at once:

    {"mode": "pass"}                   forward both ways
    {"mode": "refuse"}                 reset existing connections; close new ones at once
    {"mode": "blackhole"}              read and drop everything both ways, answer nothing
    {"mode": "delay", "delay_ms": 300} hold every chunk, in each direction, that long

Leaving blackhole mode closes every connection that was open while the proxy
was blackholed: bytes were dropped, so their protocol streams are broken.
`GET /state` answers {"mode", "delay_ms", "connections"}.

HTTP proxy (moto: S3 and SQS): an HTTP/1.1 reverse proxy, keep-alive with
clients and a fresh upstream connection per request. Each request is named
(see `operation`) and checked against an ordered list of rules (first match
wins; a rule matches when the name starts with its `match` prefix):

    POST   /rules              {"match", "action", "times"?, "status"?, "code"?} -> {"id"}
    GET    /rules              every rule, in order
    GET    /rules/ID           {"id", "match", "action", "times_left", "matched", "held", "active"}
    POST   /rules/ID/release   release what the rule holds; the rule stops matching
    DELETE /rules/ID           release, then remove
    DELETE /rules              release and remove every rule
    GET    /requests           ["<operation> <action>", ...] in arrival order
    DELETE /requests           empty that log

Actions: fail (an error response in the service's format, 503
ServiceUnavailable unless status/code say otherwise), hang (never answer;
close the connection on release), hold_request (forward only on release),
hold_response (forward at once, relay the response only on release).
"""

import argparse
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_LINE = 64 * 1024
MAX_HEADERS = 200
CHUNK = 64 * 1024
# Connecting to the upstream is local and fast; reading its answer is not
# timed at all (SQS long polls wait up to 20 s).
CONNECT_TIMEOUT = 10
# Hop-by-hop headers (RFC 9110 7.6.1) are never relayed: each side of the
# proxy gets its own framing and connection management.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
ACTIONS = {"fail", "hang", "hold_request", "hold_response"}
TCP_MODES = {"pass", "refuse", "blackhole", "delay"}


def log(message):
    stamp = time.strftime("%H:%M:%S", time.localtime())
    sys.stderr.write(f"{stamp} {message}\n")
    sys.stderr.flush()


def parse_host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def start_thread(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------
# TCP proxy
# --------------------------------------------------------------------------


class TcpConnection:
    """A client connection and, unless it was accepted while blackholed, its
    upstream connection."""

    def __init__(self, client, upstream, blackholed):
        self.client = client
        self.upstream = upstream
        self.blackholed = blackholed
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.pumps_left = 2 if upstream is not None else 1

    def kill(self, reset):
        """Ends both directions at once. With `reset`, the client gets a RST
        (like a server that crashed) instead of a FIN."""
        self.closed.set()
        if reset:
            try:
                self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        # shutdown() wakes the pump threads blocked in recv(); they close the
        # sockets themselves, so no thread ever uses a closed descriptor.
        for sock in (self.client, self.upstream):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class TcpProxy:
    def __init__(self, listener, upstream):
        self.listener = listener
        self.upstream = upstream
        self.lock = threading.Lock()
        self.connections = set()
        # Read without the lock by the pumps: one tuple, replaced atomically.
        self.state = ("pass", 0.0)

    def serve(self):
        while True:
            client, _ = self.listener.accept()
            start_thread(self.open_connection, client)

    def set_mode(self, mode, delay_ms):
        with self.lock:
            old_mode, _ = self.state
            self.state = (mode, delay_ms / 1000.0)
            connections = list(self.connections)
            if mode == "blackhole":
                for conn in connections:
                    conn.blackholed = True
        if old_mode == "blackhole" and mode != "blackhole":
            for conn in connections:
                if conn.blackholed:
                    conn.kill(reset=False)
        if mode == "refuse":
            for conn in connections:
                conn.kill(reset=True)
        log(f"tcp mode {mode}" + (f" {delay_ms} ms" if mode == "delay" else ""))

    def describe(self):
        mode, delay = self.state
        with self.lock:
            count = len(self.connections)
        return {"mode": mode, "delay_ms": round(delay * 1000), "connections": count}

    def open_connection(self, client):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode, _ = self.state
        if mode == "refuse":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        upstream = None
        if mode != "blackhole":
            try:
                upstream = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT)
                upstream.settimeout(None)
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as err:
                log(f"tcp upstream {self.upstream[0]}:{self.upstream[1]} unreachable: {err}")
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                return
        conn = TcpConnection(client, upstream, blackholed=upstream is None)
        with self.lock:
            self.connections.add(conn)
            # The mode may have changed while connecting upstream.
            mode, _ = self.state
            if mode == "blackhole":
                conn.blackholed = True
        if mode == "refuse":
            conn.kill(reset=True)
        if upstream is not None:
            start_thread(self.pump, conn, upstream, client, False)
        self.pump(conn, client, upstream, True)

    def pump(self, conn, src, dst, from_client):
        try:
            while not conn.closed.is_set():
                data = src.recv(CHUNK)
                if not data:
                    if conn.blackholed:
                        # A client that gives up on a blackholed connection
                        # ends it; an upstream that closes it changes
                        # nothing the client may see.
                        if from_client:
                            conn.kill(reset=False)
                        break
                    if dst is not None:
                        dst.shutdown(socket.SHUT_WR)  # relay the half-close
                    break
                mode, delay = self.state
                if mode == "delay" and delay > 0:
                    if conn.closed.wait(delay):
                        break
                    mode, _ = self.state
                if conn.blackholed or mode in ("blackhole", "refuse") or dst is None:
                    continue
                dst.sendall(data)
        except OSError:
            conn.kill(reset=False)
        finally:
            self.pump_done(conn)

    def pump_done(self, conn):
        with conn.lock:
            conn.pumps_left -= 1
            last = conn.pumps_left == 0
        if not last:
            return
        with self.lock:
            self.connections.discard(conn)
        for sock in (conn.client, conn.upstream):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------
# HTTP proxy
# --------------------------------------------------------------------------


class BadRequest(Exception):
    pass


def read_line(rfile):
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadRequest("line too long")
    return line


def is_blank(line):
    return line in (b"\r\n", b"\n")


def read_headers(rfile):
    """Header fields in order, names as sent."""
    headers = []
    while True:
        line = read_line(rfile)
        if not line:
            raise ConnectionError("connection closed inside a header block")
        if is_blank(line):
            return headers
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {text.strip()}")
            continue
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"malformed header line {text!r}")
        headers.append((name, value.strip()))
        if len(headers) > MAX_HEADERS:
            raise BadRequest("too many header fields")


def header(headers, name):
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def tokens(value):
    return {token.strip().lower() for token in (value or "").split(",") if token.strip()}


def read_exact(rfile, size):
    data = rfile.read(size)
    if len(data) != size:
        raise ConnectionError("connection closed inside a body")
    return data


def read_chunked(rfile):
    """Yields the pieces of a chunked body; trailer fields are dropped."""
    while True:
        line = read_line(rfile)
        if not line:
            raise ConnectionError("connection closed inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(f"bad chunk size line {line!r}") from None
        if size == 0:
            break
        yield read_exact(rfile, size)
        if not is_blank(read_line(rfile)):
            raise BadRequest("chunk data not followed by CRLF")
    while True:
        line = read_line(rfile)
        if not line or is_blank(line):
            return


class Request:
    def __init__(self, method, target, version, headers, body):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        connection = tokens(header(headers, "connection"))
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        self.op, self.protocol = operation(method, target, headers, body)


def read_request(rfile, client):
    """The next request on a client connection, or None at a clean EOF."""
    line = read_line(rfile)
    while line and is_blank(line):  # tolerated between requests (RFC 9112 2.2)
        line = read_line(rfile)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"malformed request line {line!r}")
    method, target, version = parts
    headers = read_headers(rfile)
    if "100-continue" in tokens(header(headers, "expect")) and version == "HTTP/1.1":
        # The body is read here, whatever happens to the request later.
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in tokens(header(headers, "transfer-encoding")):
        body = b"".join(read_chunked(rfile))
    elif header(headers, "content-length") is not None:
        try:
            length = int(header(headers, "content-length"))
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        body = read_exact(rfile, length)
    else:
        body = None
    return Request(method, target, version, headers, body)


# "Credential=AKID/20240101/us-east-1/sqs/aws4_request" names the service.
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/,\s]+/([^/,\s]+)/aws4_request")


def operation(method, target, headers, body):
    """Names a request: `sqs:ReceiveMessage`, `s3:PUT /bucket/key?x-id=PutObject`.

    Returns (name, protocol), protocol being the error format to answer in:
    "json" (X-Amz-Target), "query" (form body with Action=) or "rest-xml".
    The service comes from the SigV4 credential scope when the request is
    signed, else it is guessed: sqs for X-Amz-Target/Action, s3 otherwise.
    """
    scope = CREDENTIAL_SCOPE.search(header(headers, "authorization") or "")
    service = scope.group(1) if scope else None
    amz_target = header(headers, "x-amz-target")
    if amz_target:
        prefix, _, op = amz_target.rpartition(".")
        if service is None:
            service = "sqs" if prefix == "AmazonSQS" else prefix or "json"
        return f"{service}:{op}", "json"
    action = None
    content_type = (header(headers, "content-type") or "").lower()
    if body and content_type.startswith("application/x-www-form-urlencoded"):
        action = urllib.parse.parse_qs(body.decode("latin-1")).get("Action")
    if not action and method == "GET" and "?" in target:
        action = urllib.parse.parse_qs(target.partition("?")[2]).get("Action")
    if action:
        return f"{service or 'sqs'}:{action[0]}", "query"
    return f"{service or 's3'}:{method} {target}", "rest-xml"


class Response:
    """A response's head, read from the upstream, plus how its body is framed."""

    def __init__(self, status, reason, headers, framing, length):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.framing = framing  # "none", "length", "chunked" or "eof"
        self.length = length


def read_response_head(rfile, method):
    while True:
        line = read_line(rfile)
        if not line:
            raise ConnectionError("upstream closed the connection without answering")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise BadRequest(f"malformed upstream status line {line!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = read_headers(rfile)
        if 100 <= status < 200 and status != 101:
            continue  # interim response: we never sent Expect, but be lenient
        break
    length = None
    if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
        framing = "none"
    elif "chunked" in tokens(header(headers, "transfer-encoding")):
        framing = "chunked"
    elif header(headers, "content-length") is not None:
        framing, length = "length", int(header(headers, "content-length"))
    else:
        framing = "eof"
    return Response(status, reason, headers, framing, length)


def response_body(rfile, response):
    """Yields the pieces of a response body, as the upstream framed it."""
    if response.framing == "length":
        left = response.length
        while left > 0:
            data = rfile.read1(min(CHUNK, left))
            if not data:
                raise ConnectionError("upstream closed the connection inside a body")
            left -= len(data)
            yield data
    elif response.framing == "chunked":
        yield from read_chunked(rfile)
    elif response.framing == "eof":
        while True:
            data = rfile.read1(CHUNK)
            if not data:
                return
            yield data


def response_head(status, reason, headers, framing, keep_alive):
    """Serialises a response head for the client. `framing` is "none"
    (headers kept as they are: a HEAD answer keeps its Content-Length),
    ("length", n) or "chunked"."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or (lower == "content-length" and framing != "none"):
            continue
        lines.append(f"{name}: {value}")
    if framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
    elif framing != "none":
        lines.append(f"Content-Length: {framing[1]}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(request, status, code, message):
    """(headers, body) of an error the AWS SDK parses for the request's protocol."""
    request_id = str(uuid.uuid4())
    fault = "Sender" if status < 500 else "Receiver"
    if request.protocol == "json":
        service = request.op.partition(":")[0]
        error_type = f"com.amazonaws.{service}#{code}" if service == "sqs" else code
        body = json.dumps({"__type": error_type, "message": message}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-query-error", f"{code};{fault}"),
            ("x-amzn-RequestId", request_id),
        ]
    elif request.protocol == "query":
        body = (
            '<?xml version="1.0"?><ErrorResponse><Error>'
            f"<Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    else:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    return headers, body


def reason_phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Injected"


class Rule:
    def __init__(self, rule_id, spec):
        match = spec.get("match")
        action = spec.get("action")
        times = spec.get("times")
        if not isinstance(match, str):
            raise ValueError("rule needs a string `match`")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {sorted(ACTIONS)}")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("`times` must be a positive integer or null")
        self.id = rule_id
        self.match = match
        self.action = action
        self.times_left = times
        self.status = int(spec.get("status") or 503)
        self.code = str(spec.get("code") or "ServiceUnavailable")
        self.matched = 0
        self.held = 0
        self.released = threading.Event()

    def active(self):
        return not self.released.is_set() and (self.times_left is None or self.times_left > 0)

    def describe(self):
        return {
            "id": self.id,
            "match": self.match,
            "action": self.action,
            "status": self.status,
            "code": self.code,
            "times_left": self.times_left,
            "matched": self.matched,
            "held": self.held,
            "active": self.active(),
        }


class HttpProxy:
    def __init__(self, listener, upstream):
        self.listener = listener
        self.upstream = upstream
        self.lock = threading.Lock()
        self.rules = []
        self.next_id = 1
        self.requests = []

    def serve(self):
        while True:
            client, _ = self.listener.accept()
            start_thread(self.serve_client, client)

    # -- control ----------------------------------------------------------

    def add_rule(self, spec):
        with self.lock:
            rule = Rule(self.next_id, spec)
            self.next_id += 1
            self.rules.append(rule)
        log(f"rule {rule.id}: {rule.match!r} -> {rule.action} (times {rule.times_left})")
        return rule

    def find_rule(self, rule_id):
        with self.lock:
            for rule in self.rules:
                if rule.id == rule_id:
                    return rule
        return None

    def release(self, rule):
        rule.released.set()
        log(f"rule {rule.id} released")

    def remove_rule(self, rule):
        self.release(rule)
        with self.lock:
            self.rules = [other for other in self.rules if other is not rule]

    def clear_rules(self):
        with self.lock:
            rules, self.rules = self.rules, []
        for rule in rules:
            self.release(rule)

    def decide(self, op):
        """The rule that applies to a request (counted against its `times`),
        or None; logs the decision."""
        with self.lock:
            for rule in self.rules:
                if rule.active() and op.startswith(rule.match):
                    rule.matched += 1
                    if rule.times_left is not None:
                        rule.times_left -= 1
                    self.requests.append(f"{op} {rule.action}")
                    return rule
            self.requests.append(f"{op} pass")
            return None

    def hold(self, rule):
        with self.lock:
            rule.held += 1
        try:
            rule.released.wait()
        finally:
            with self.lock:
                rule.held -= 1

    # -- proxying ---------------------------------------------------------

    def serve_client(self, client):
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = client.makefile("rb", buffering=CHUNK)
        try:
            while True:
                request = read_request(rfile, client)
                if request is None or not self.handle(client, request):
                    return
        except BadRequest as err:
            log(f"bad request: {err}")
            try:
                client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
        except OSError:
            pass  # the client went away
        finally:
            rfile.close()
            client.close()

    def handle(self, client, request):
        """Applies the matching rule; returns whether to keep the client
        connection for another request."""
        rule = self.decide(request.op)
        action = rule.action if rule else "pass"
        log(f"{request.op} {action}")
        if action == "fail":
            message = "injected by testkit proxy"
            self.send_error(client, request, rule.status, rule.code, message)
            return request.keep_alive
        if action == "hang":
            self.hold(rule)
            return False
        if action == "hold_request":
            self.hold(rule)

        try:
            upstream = socket.create_connection(self.upstream, timeout=CONNECT_TIMEOUT)
        except OSError as err:
            log(f"{request.op}: upstream unreachable: {err}")
            self.send_error(client, request, 502, "BadGateway", f"testkit proxy: upstream unreachable: {err}")
            return request.keep_alive
        upstream_rfile = upstream.makefile("rb", buffering=CHUNK)
        try:
            upstream.settimeout(None)
            try:
                upstream.sendall(self.upstream_request(request))
                response = read_response_head(upstream_rfile, request.method)
            except (OSError, BadRequest) as err:
                log(f"{request.op}: upstream failed: {err}")
                self.send_error(client, request, 502, "BadGateway", f"testkit proxy: upstream failed: {err}")
                return request.keep_alive

            if action == "hold_response":
                try:
                    body = b"".join(response_body(upstream_rfile, response))
                except (OSError, BadRequest) as err:
                    log(f"{request.op}: upstream failed: {err}")
                    self.send_error(client, request, 502, "BadGateway", f"testkit proxy: upstream failed: {err}")
                    return request.keep_alive
                framing = "none" if response.framing == "none" else ("length", len(body))
                self.hold(rule)
                try:
                    head = response_head(response.status, response.reason, response.headers, framing, request.keep_alive)
                    client.sendall(head + body)
                except OSError:
                    return False  # the client gave up meanwhile
                return request.keep_alive

            if response.framing in ("none", "length"):
                framing = "none" if response.framing == "none" else ("length", response.length)
            else:
                framing = "chunked"
            client.sendall(response_head(response.status, response.reason, response.headers, framing, request.keep_alive))
            try:
                for piece in response_body(upstream_rfile, response):
                    client.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
            except BadRequest as err:
                # The head is out: all the client can be told is a cut-off body.
                raise ConnectionError(f"bad upstream body: {err}") from None
            if framing == "chunked":
                client.sendall(b"0\r\n\r\n")
            return request.keep_alive
        finally:
            upstream_rfile.close()
            upstream.close()

    def upstream_request(self, request):
        """The request as sent upstream: same target and headers (Host too, so
        moto builds SQS queue URLs that point at the proxy), a Content-Length
        body and `Connection: close`."""
        named = tokens(header(request.headers, "connection"))
        lines = [f"{request.method} {request.target} HTTP/1.1"]
        for name, value in request.headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in named or lower in ("content-length", "expect"):
                continue
            lines.append(f"{name}: {value}")
        if request.body is not None:
            lines.append(f"Content-Length: {len(request.body)}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + (request.body or b"")

    def send_error(self, client, request, status, code, message):
        headers, body = error_response(request, status, code, message)
        if request.method == "HEAD":
            headers.append(("Content-Length", "0"))
            body, framing = b"", "none"
        else:
            framing = ("length", len(body))
        client.sendall(response_head(status, reason_phrase(status), headers, framing, request.keep_alive) + body)


# --------------------------------------------------------------------------
# Control server
# --------------------------------------------------------------------------


class ControlHandler(BaseHTTPRequestHandler):
    server_version = "testkit-proxy"
    proxy = None  # set in main()

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass  # polled often; rule and mode changes are logged by the proxy

    def reply(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def fail(self, status, message):
        self.reply(status, {"error": message})

    def json_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if method == "GET" and path == "/health":
                return self.reply(200, {"ok": True})
            if isinstance(self.proxy, TcpProxy):
                return self.tcp(method, path)
            return self.http(method, path)
        except (ValueError, TypeError) as err:
            return self.fail(400, str(err))

    def tcp(self, method, path):
        proxy = self.proxy
        if method == "GET" and path == "/state":
            return self.reply(200, proxy.describe())
        if method == "POST" and path == "/mode":
            spec = self.json_body()
            mode = spec.get("mode")
            if mode not in TCP_MODES:
                raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(TCP_MODES)}")
            delay_ms = int(spec.get("delay_ms") or 0)
            if delay_ms < 0:
                raise ValueError("delay_ms must not be negative")
            proxy.set_mode(mode, delay_ms)
            return self.reply(200, proxy.describe())
        return self.fail(404, f"no route {method} {path} on a TCP proxy")

    def http(self, method, path):
        proxy = self.proxy
        if path == "/requests":
            if method == "GET":
                with proxy.lock:
                    requests = list(proxy.requests)
                return self.reply(200, requests)
            if method == "DELETE":
                with proxy.lock:
                    proxy.requests.clear()
                return self.reply(200, {})
        if path == "/rules":
            if method == "GET":
                with proxy.lock:
                    rules = [rule.describe() for rule in proxy.rules]
                return self.reply(200, rules)
            if method == "POST":
                rule = proxy.add_rule(self.json_body())
                return self.reply(200, {"id": rule.id})
            if method == "DELETE":
                proxy.clear_rules()
                return self.reply(200, {})
        found = re.fullmatch(r"/rules/(\d+)(/release)?", path)
        if found:
            rule = proxy.find_rule(int(found.group(1)))
            if rule is None:
                return self.fail(404, f"no rule {found.group(1)}")
            if method == "GET" and not found.group(2):
                with proxy.lock:
                    described = rule.describe()
                return self.reply(200, described)
            if method == "POST" and found.group(2):
                proxy.release(rule)
                return self.reply(200, {})
            if method == "DELETE" and not found.group(2):
                proxy.remove_rule(rule)
                return self.reply(200, {})
        return self.fail(404, f"no route {method} {path} on an HTTP proxy")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=["tcp", "http"], required=True)
    parser.add_argument("--listen", type=int, required=True, help="proxy port on 127.0.0.1")
    parser.add_argument("--control", type=int, required=True, help="control API port on 127.0.0.1")
    parser.add_argument("--upstream", required=True, help="HOST:PORT (tcp) or http://HOST:PORT (http)")
    args = parser.parse_args()

    try:
        if args.mode == "tcp":
            upstream = parse_host_port(args.upstream)
        else:
            url = urllib.parse.urlsplit(args.upstream)
            if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
                raise ValueError(f"expected http://HOST:PORT, got {args.upstream!r}")
            upstream = (url.hostname, url.port or 80)
    except ValueError as err:
        log(f"bad --upstream: {err}")
        return 2

    # Bind both ports before answering /health; errors name the port, and
    # "Address already in use" tells the Rust side to retry on another one.
    try:
        listener = socket.create_server(("127.0.0.1", args.listen), backlog=128)
    except OSError as err:
        log(f"cannot listen on 127.0.0.1:{args.listen}: {err}")
        return 1
    proxy = TcpProxy(listener, upstream) if args.mode == "tcp" else HttpProxy(listener, upstream)
    ControlHandler.proxy = proxy
    try:
        control = ThreadingHTTPServer(("127.0.0.1", args.control), ControlHandler)
    except OSError as err:
        log(f"cannot listen on 127.0.0.1:{args.control} (control): {err}")
        return 1
    control.daemon_threads = True
    start_thread(proxy.serve)
    log(f"{args.mode} proxy on 127.0.0.1:{args.listen} -> {args.upstream}, control on 127.0.0.1:{args.control}")
    control.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
