#!/usr/bin/env python3
"""Drive a running akgate with the official Alibaba Cloud Python SDK (V3 signature, ACS3-HMAC-SHA256).

    python tests/interop/alibaba_v3.py --endpoint 127.0.0.1:PORT

Environment:
    AKGATE_IT_OK_ID / AKGATE_IT_OK_SECRET          an active key that is not flagged as leaked
    AKGATE_IT_LEAKED_ID / AKGATE_IT_LEAKED_SECRET  an active key listed in leaked.toml

akgate must route the ECS API (any path, any Host) to an upstream that answers 200 with a JSON object for
every forwarded request, and must list DeleteInstance as a high-risk ECS action.

Prints one line per check, `PASS name` or `FAIL name: detail`, then `N passed, M failed`.
Exit status: 0 when every check passed, 1 when any failed, 2 on a usage error.

Installed with tests/interop/setup-venv.sh (alibabacloud-tea-openapi 0.4.6, alibabacloud-ecs20140526 7.11.8).
Notes on that SDK version, read from its source:
  * 4xx -> alibabacloud_tea_openapi.exceptions.ClientException, 5xx -> ServerException, any error carrying an
    `x-acs-retry-after` header -> ThrottlingException (all subclasses of AlibabaCloudException). Attributes:
    `code` (body Code, as str), `status_code` (int), `request_id`, `data` (the parsed JSON body plus
    `statusCode`), and `message` = "code: <status>, <body Message> request id: <RequestId>".
  * Retries are governed only by Config.retry_options (darabonba RetryOptions); RuntimeOptions.autoretry and
    max_attempts are not read at all. With retry_options unset or retryable=False a call is sent once.
  * darabonba reads HTTP_PROXY/HTTPS_PROXY itself and ignores NO_PROXY, so they are removed below: every
    request of this script goes to loopback.
"""

import argparse
import os
import sys

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
for _var in PROXY_VARS:
    os.environ.pop(_var, None)

from alibabacloud_ecs20140526 import models as ecs_models  # noqa: E402
from alibabacloud_ecs20140526.client import Client as EcsClient  # noqa: E402
from alibabacloud_tea_openapi import utils as openapi_utils  # noqa: E402
from alibabacloud_tea_openapi.exceptions import ClientException  # noqa: E402
from alibabacloud_tea_openapi.models import Config  # noqa: E402
from darabonba.policy.retry import RetryOptions  # noqa: E402
from darabonba.runtime import RuntimeOptions  # noqa: E402

LEAK_MESSAGE = "There is a risk of leakage of this AccessKey."
UNKNOWN_KEY_ID = "LTAI5tNoSuchKeyInteropXX"
INSTANCE_ID = "i-bp1interoptest"
STS_MARKER = "server string to sign is:"

# Remember the string to sign of the last request the SDK signed, so that a SignatureDoesNotMatch answer can
# be compared with it (the SDK computes it inside Utils.get_authorization and keeps it nowhere).
_last_string_to_sign = [None]
_real_signature_method = openapi_utils.signature_method


def _recording_signature_method(secret, source, sign_type):
    _last_string_to_sign[0] = source
    return _real_signature_method(secret, source, sign_type)


openapi_utils.signature_method = _recording_signature_method


class CheckFailed(Exception):
    pass


def client(endpoint, key_id, secret, timeout_ms):
    cfg = Config(
        access_key_id=key_id,
        access_key_secret=secret,
        endpoint=endpoint,
        protocol="HTTP",
        region_id="cn-hangzhou",
        connect_timeout=timeout_ms,
        read_timeout=timeout_ms,
        # The switch that actually disables retries in tea-openapi 0.4.x (see the module docstring).
        retry_options=RetryOptions({"retryable": False}),
    )
    return EcsClient(cfg)


def runtime(timeout_ms):
    # autoretry/max_attempts are ignored by tea-openapi 0.4.x but state the intent for older/newer versions.
    return RuntimeOptions(autoretry=False, max_attempts=0, connect_timeout=timeout_ms, read_timeout=timeout_ms)


def describe_regions(c, timeout_ms):
    return c.describe_regions_with_options(ecs_models.DescribeRegionsRequest(), runtime(timeout_ms))


def delete_instance(c, timeout_ms):
    req = ecs_models.DeleteInstanceRequest(instance_id=INSTANCE_ID, force=True)
    return c.delete_instance_with_options(req, runtime(timeout_ms))


def expect_ok(call):
    try:
        resp = call()
    except ClientException as e:
        raise CheckFailed(f"expected success, got ClientException code={e.code!r} status={e.status_code!r} "
                          f"message={e.message!r}")
    if resp is None or resp.status_code != 200:
        raise CheckFailed(f"expected HTTP 200, got {getattr(resp, 'status_code', None)!r}")
    if resp.body is None:
        raise CheckFailed("HTTP 200 but the SDK parsed no response body")


def expect_client_error(call, code, status):
    try:
        resp = call()
    except ClientException as e:
        if e.code != code or e.status_code != status:
            raise CheckFailed(f"expected code={code!r} status={status}, got code={e.code!r} "
                              f"status={e.status_code!r} message={e.message!r}")
        return e
    raise CheckFailed(f"expected ClientException {code}/{status}, call succeeded with HTTP "
                      f"{getattr(resp, 'status_code', None)!r}")


def body_message(e):
    data = e.data if isinstance(e.data, dict) else {}
    return data.get("Message") or data.get("message") or ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="akgate listener as bare host:port, e.g. 127.0.0.1:8080")
    ap.add_argument("--timeout-ms", type=int, default=10000, help="connect and read timeout per call")
    args = ap.parse_args(argv)

    endpoint = args.endpoint
    for scheme in ("http://", "https://"):
        if endpoint.startswith(scheme):  # tea-openapi would put the scheme into the Host header
            endpoint = endpoint[len(scheme):]
    endpoint = endpoint.rstrip("/")

    env = {}
    missing = []
    for name in ("AKGATE_IT_OK_ID", "AKGATE_IT_OK_SECRET", "AKGATE_IT_LEAKED_ID", "AKGATE_IT_LEAKED_SECRET"):
        env[name] = os.environ.get(name, "")
        if not env[name]:
            missing.append(name)
    if missing:
        print(f"alibaba_v3.py: missing environment variables: {', '.join(missing)}", file=sys.stderr)
        return 2

    t = args.timeout_ms
    ok = client(endpoint, env["AKGATE_IT_OK_ID"], env["AKGATE_IT_OK_SECRET"], t)
    leaked = client(endpoint, env["AKGATE_IT_LEAKED_ID"], env["AKGATE_IT_LEAKED_SECRET"], t)
    wrong = client(endpoint, env["AKGATE_IT_OK_ID"], env["AKGATE_IT_OK_SECRET"] + "x", t)
    unknown = client(endpoint, UNKNOWN_KEY_ID, env["AKGATE_IT_OK_SECRET"], t)

    def check_leaked_delete():
        e = expect_client_error(lambda: delete_instance(leaked, t), "Forbidden", 403)
        if body_message(e) != LEAK_MESSAGE or LEAK_MESSAGE not in (e.message or ""):
            raise CheckFailed(f"expected Message {LEAK_MESSAGE!r}, got {body_message(e)!r} "
                              f"(SDK message {e.message!r})")

    def check_wrong_secret():
        _last_string_to_sign[0] = None
        e = expect_client_error(lambda: describe_regions(wrong, t), "SignatureDoesNotMatch", 400)
        msg = body_message(e)
        if STS_MARKER not in msg:
            raise CheckFailed(f"Message does not end with {STS_MARKER!r}<string to sign>: {msg!r}")
        server_sts = msg.rsplit(STS_MARKER, 1)[1]
        client_sts = _last_string_to_sign[0]
        if client_sts is not None and server_sts != client_sts:
            raise CheckFailed(f"server string to sign {server_sts!r} differs from the SDK's {client_sts!r}")

    checks = [
        ("describe_regions_ok_key", lambda: expect_ok(lambda: describe_regions(ok, t))),
        ("describe_regions_leaked_key", lambda: expect_ok(lambda: describe_regions(leaked, t))),
        ("delete_instance_leaked_key", check_leaked_delete),
        ("delete_instance_ok_key", lambda: expect_ok(lambda: delete_instance(ok, t))),
        ("wrong_secret", check_wrong_secret),
        ("unknown_key", lambda: expect_client_error(lambda: describe_regions(unknown, t),
                                                    "InvalidAccessKeyId.NotFound", 404)),
    ]

    passed = failed = 0
    for name, check in checks:
        try:
            check()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # anything the SDK raised that no check expected
            failed += 1
            cls = f"{type(e).__module__}.{type(e).__qualname__}"
            inner = getattr(e, "inner_exception", None)  # darabonba's UnretryableException wraps the cause
            detail = f"{e!r}" if inner is None else f"{inner!r}"
            print(f"FAIL {name}: unexpected {cls}: {detail}", flush=True)
        else:
            passed += 1
            print(f"PASS {name}", flush=True)

    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
