"""Shared helpers for the SDK interop drivers (alibaba_tea.py, aliyun_core.py, aws_botocore.py).

Every driver:
  * imports this module FIRST (it removes HTTP(S)_PROXY & co. from the environment: darabonba and
    aliyunsdkcore read them themselves and ignore NO_PROXY, and every request of the suite goes to
    loopback);
  * registers its checks with `Checks.run(name, fn)`; a check passes when `fn` returns, fails when it
    raises (CheckFailed with a detail, or anything else the SDK raised, described with its class and
    the attributes that SDK puts on its errors);
  * prints `PASS <name>` / `FAIL <name>: <detail>` per check, then exactly `N passed, M failed`, and
    exits 1 when M > 0 (2 on a usage error).

Replays: `WireTap` records the exact bytes each HTTP/1.1 request put on the socket (it wraps
`http.client.HTTPConnection.putrequest` and `.send`, through which every SDK here sends: darabonba via
requests/urllib3 2, aliyunsdkcore via its vendored requests/urllib3 1.22, botocore via urllib3 2 and its
AWSConnection), and `replay()` writes those bytes again, unchanged, on a new connection and parses the
answer with `http.client.HTTPResponse`.

Environment read by `keys_from_env()` (one set per akgate instance, set by tests/interop.rs):
    AKGATE_IT_OK_ID / _SECRET                    active key, not leaked
    AKGATE_IT_LEAKED_ID / _SECRET                active key listed in [[leaked_key]]
    AKGATE_IT_STS_ID / _SECRET / _TOKEN          temporary key (temporary = true), expires far ahead
    AKGATE_IT_EXPIRED_ID / _SECRET / _TOKEN      temporary key whose `expires` is in the past
"""

import http.client
import json
import os
import socket
import sys
import threading
import traceback
from urllib.parse import urlsplit

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
for _var in PROXY_VARS:
    os.environ.pop(_var, None)

LEAK_MESSAGE = "There is a risk of leakage of this AccessKey."
STS_MARKER = "server string to sign is:"
# Every SDK client of the suite appends `akgate-interop/<driver>/<role>` to its User-Agent, so that the
# recording upstream in tests/interop.rs can tell which driver and which credential a forwarded request
# came from (and assert that refused ones never arrive).
UA_PRODUCT = "akgate-interop"


def ua_tag(driver, role):
    return f"{UA_PRODUCT}/{driver}/{role}"


class CheckFailed(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# Command line and environment


class Key:
    def __init__(self, role, key_id, secret, token=None):
        self.role, self.id, self.secret, self.token = role, key_id, secret, token

    def __repr__(self):
        return f"Key({self.role}, {self.id})"


def parse_endpoint(value):
    """`host:port` from `host:port`, `http://host:port` or `http://host:port/`."""
    for scheme in ("http://", "https://"):
        if value.startswith(scheme):
            value = value[len(scheme):]
    value = value.rstrip("/")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--endpoint must be host:port, got {value!r}")
    return host, int(port)


def keys_from_env(prog):
    """The four credentials, or exit 2 naming the missing variables."""
    names = {
        "ok": ("AKGATE_IT_OK_ID", "AKGATE_IT_OK_SECRET", None),
        "leaked": ("AKGATE_IT_LEAKED_ID", "AKGATE_IT_LEAKED_SECRET", None),
        "sts": ("AKGATE_IT_STS_ID", "AKGATE_IT_STS_SECRET", "AKGATE_IT_STS_TOKEN"),
        "expired": ("AKGATE_IT_EXPIRED_ID", "AKGATE_IT_EXPIRED_SECRET", "AKGATE_IT_EXPIRED_TOKEN"),
    }
    keys, missing = {}, []
    for role, (id_var, secret_var, token_var) in names.items():
        values = []
        for var in (id_var, secret_var, token_var):
            if var is None:
                values.append(None)
                continue
            v = os.environ.get(var, "")
            if not v:
                missing.append(var)
            values.append(v)
        keys[role] = Key(role, *values)
    if missing:
        print(f"{prog}: missing environment variables: {', '.join(missing)}", file=sys.stderr)
        sys.exit(2)
    return keys


# ------------------------------------------------------------------------------------------------
# Checks


def describe_exception(e):
    """One line naming the exception's class and the fields each SDK puts on its errors."""
    cls = f"{type(e).__module__}.{type(e).__qualname__}"
    fields = []
    # botocore ClientError
    resp = getattr(e, "response", None)
    if isinstance(resp, dict) and "Error" in resp:
        err = resp.get("Error", {})
        meta = resp.get("ResponseMetadata", {})
        fields.append(f"Code={err.get('Code')!r} HTTPStatusCode={meta.get('HTTPStatusCode')!r} "
                      f"Message={err.get('Message')!r}")
    # aliyunsdkcore ServerException / ClientException
    for getter in ("get_error_code", "get_http_status", "get_error_msg"):
        if hasattr(e, getter):
            try:
                fields.append(f"{getter}()={getattr(e, getter)()!r}")
            except Exception:  # noqa: BLE001 - only describing
                pass
    # tea-openapi ClientException / ServerException
    for attr in ("code", "status_code", "message"):
        if not any(attr in f for f in fields) and hasattr(e, attr) and not callable(getattr(e, attr)):
            fields.append(f"{attr}={getattr(e, attr)!r}")
    # darabonba UnretryableException wraps the cause
    inner = getattr(e, "inner_exception", None)
    if inner is not None:
        fields.append(f"inner={inner!r}")
    if not fields:
        fields.append(repr(e))
    return f"{cls}: {' '.join(fields)}"


class Checks:
    def __init__(self, driver):
        self.driver = driver
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            fn()
        except CheckFailed as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # anything the SDK raised that no check expected
            self.failed += 1
            print(f"FAIL {name}: unexpected {describe_exception(e)}", flush=True)
            if os.environ.get("AKGATE_IT_TRACEBACK"):
                traceback.print_exc()
        else:
            self.passed += 1
            print(f"PASS {name}", flush=True)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0


def expect_equal(what, got, want):
    if got != want:
        raise CheckFailed(f"{what}: expected {want!r}, got {got!r}")


# ------------------------------------------------------------------------------------------------
# Wire capture and replay


class WireRequest:
    """The bytes of one HTTP/1.1 request as the SDK wrote them, and where they went."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.chunks = []

    @property
    def raw(self):
        return b"".join(self.chunks)

    @property
    def head(self):
        raw = self.raw
        end = raw.find(b"\r\n\r\n")
        return raw if end < 0 else raw[:end]

    @property
    def request_line(self):
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, name):
        """Value of the first header called `name` (case-insensitive), or None."""
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            if k.strip().lower() == name.lower():
                return v.strip()
        return None

    def __repr__(self):
        return f"WireRequest({self.request_line!r} -> {self.host}:{self.port}, {len(self.raw)} bytes)"


class WireTap:
    """Records every request sent through http.client.HTTPConnection in this process."""

    def __init__(self):
        self.requests = []
        self._lock = threading.Lock()
        self._current = {}
        tap = self
        real_putrequest = http.client.HTTPConnection.putrequest
        real_send = http.client.HTTPConnection.send

        def putrequest(conn, *args, **kwargs):
            req = WireRequest(conn.host, conn.port)
            with tap._lock:
                tap.requests.append(req)
                tap._current[id(conn)] = req
            return real_putrequest(conn, *args, **kwargs)

        def send(conn, data):
            req = tap._current.get(id(conn))
            if req is not None:
                if isinstance(data, str):
                    data = data.encode("iso-8859-1")
                elif hasattr(data, "read"):
                    # A file-like body: read it once, record it, send the bytes.
                    data = data.read()
                    data = data.encode("iso-8859-1") if isinstance(data, str) else data
                elif not isinstance(data, (bytes, bytearray, memoryview)):
                    data = b"".join(bytes(d) for d in data)  # an iterable of chunks
                req.chunks.append(bytes(data))
            return real_send(conn, data)

        http.client.HTTPConnection.putrequest = putrequest
        http.client.HTTPConnection.send = send

    def mark(self):
        return len(self.requests)

    def since(self, mark):
        return self.requests[mark:]

    def one_since(self, mark, what):
        """The single request sent since `mark` (the SDKs are configured not to retry)."""
        sent = self.since(mark)
        if len(sent) != 1:
            raise CheckFailed(f"{what}: expected the SDK to send exactly one request, it sent {len(sent)}: "
                              f"{[r.request_line for r in sent]}")
        return sent[0]


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise CheckFailed(f"HTTP {self.status}, body is not JSON: {self.body[:300]!r}")

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:300]!r}"


def replay(wire, connect=None, timeout=10.0):
    """Sends `wire.raw` unchanged on a new TCP connection (to `connect` = (host, port), default where the
    SDK sent it) and returns the parsed answer."""
    host, port = connect or (wire.host, wire.port)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(wire.raw)
        method = wire.request_line.split(" ", 1)[0]
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        sock.close()


def http_get(url, connect=None, timeout=10.0):
    """A plain GET of `url` (e.g. a presigned URL), optionally connecting elsewhere than its host."""
    u = urlsplit(url)
    host, port = connect or (u.hostname, u.port or 80)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        conn.putrequest("GET", target, skip_host=True)
        conn.putheader("Host", u.netloc)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def expect_alibaba_error(reply, code, status, message=None):
    """An Alibaba-shaped JSON error (what akgate answers Alibaba SDK traffic with)."""
    if reply.status != status:
        raise CheckFailed(f"expected HTTP {status} {code}, got {reply!r}")
    body = reply.json()
    if body.get("Code") != code:
        raise CheckFailed(f"expected Code {code!r}, got {body.get('Code')!r}: {reply!r}")
    if message is not None and body.get("Message") != message:
        raise CheckFailed(f"expected Message {message!r}, got {body.get('Message')!r}")
    return body


def server_string_to_sign(message):
    """The string to sign akgate appends to a SignatureDoesNotMatch message."""
    if not message or STS_MARKER not in message:
        raise CheckFailed(f"Message does not end with {STS_MARKER!r}<string to sign>: {message!r}")
    return message.rsplit(STS_MARKER, 1)[1]


def expect_same_string_to_sign(message, client_sts):
    server = server_string_to_sign(message)
    if client_sts is None:
        raise CheckFailed("the SDK's own string to sign was not captured")
    if server != client_sts:
        raise CheckFailed(f"akgate's string to sign {server!r} differs from the SDK's {client_sts!r}")
