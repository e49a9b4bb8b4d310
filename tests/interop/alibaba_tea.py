#!/usr/bin/env python3
"""Drive akgate with Alibaba Cloud's tea-openapi SDK family, in both signature styles it offers:

  v3  the default, ACS3-HMAC-SHA256 (`Authorization: ACS3-HMAC-SHA256 …`, x-acs-* headers)
  v2  Config(signature_algorithm='v2'): RPC v1 (HMAC-SHA1 `Signature=` query parameter) for RPC APIs and
      ROA v1 (`Authorization: acs <id>:<sig>`) for ROA APIs

with the generated ECS client (alibabacloud-ecs20140526), the generated RAM client
(alibabacloud-ram20150501) and the generic `call_api` for a ROA-style API (Container Service paths).

    python tests/interop/alibaba_tea.py --endpoint 127.0.0.1:PORT

akgate must route, on that port:
  Host 127.0.0.1 + path /clusters or /api/v2/clusters -> a ROA service listing DeleteCluster as high-risk
  Host 127.0.0.1 (other paths)                        -> ecs (DeleteInstance high-risk)
  Host localhost                                      -> ram ("*": every action is high-risk)
to an upstream that answers every forwarded request 200 with JSON {"RequestId": …, "Echo": {…}} and the
headers x-echo-key (the X-Akgate-Key it received) and x-echo-action (the action it saw).
Keys: see common.py (AKGATE_IT_OK_*, _LEAKED_*, _STS_*, _EXPIRED_*).

Prints `PASS name` / `FAIL name: detail` per check, then `N passed, M failed`; exit 1 if any failed.

Notes on the SDK (alibabacloud-tea-openapi 0.4.6, darabonba-core 1.0.9), read from its source:
  * 4xx -> alibabacloud_tea_openapi.exceptions.ClientException (5xx ServerException; any error carrying
    x-acs-retry-after -> ThrottlingException). Attributes: code, status_code, request_id, data (the parsed
    error body + statusCode), message = "code: <status>, <Message> request id: <RequestId>".
  * Retries follow Config.retry_options only (RetryOptions({"retryable": False}) = one attempt);
    RuntimeOptions.autoretry/max_attempts are not read.
  * The endpoint is a bare host:port: it becomes the Host header (and the signed `host`) as is.
  * v2 RPC puts everything (Action, Timestamp, SignatureNonce, SecurityToken, parameters) in the query of
    a POST with an empty body; v2 ROA sends x-acs-signature-nonce but no Content-MD5 (the JSON body is not
    covered by the signature).
  * A security_token makes V3 add signed x-acs-security-token + x-acs-accesskey-id headers, v2 RPC a
    SecurityToken query parameter, v2 ROA an x-acs-security-token header.
"""

import argparse
import hmac as _hmac
import sys

import common  # noqa: F401  (first: removes the proxy variables darabonba would read)
from common import CheckFailed, Checks, LEAK_MESSAGE, WireTap, expect_alibaba_error, expect_equal
from common import expect_same_string_to_sign, keys_from_env, parse_endpoint, replay, ua_tag

from alibabacloud_ecs20140526 import models as ecs_models  # noqa: E402
from alibabacloud_ecs20140526.client import Client as EcsClient  # noqa: E402
from alibabacloud_ram20150501 import models as ram_models  # noqa: E402
from alibabacloud_ram20150501.client import Client as RamClient  # noqa: E402
from alibabacloud_tea_openapi import utils as openapi_utils  # noqa: E402
from alibabacloud_tea_openapi import utils_models as openapi_models  # noqa: E402
from alibabacloud_tea_openapi.client import Client as OpenApiClient  # noqa: E402
from alibabacloud_tea_openapi.exceptions import ClientException  # noqa: E402
from alibabacloud_tea_openapi.models import Config  # noqa: E402
from darabonba.policy.retry import RetryOptions  # noqa: E402
from darabonba.runtime import RuntimeOptions  # noqa: E402

DRIVER = "alibaba_tea"
INSTANCE_ID = "i-bp1interoptest"
CLUSTER_ID = "c-interop0001"
CS_VERSION = "2015-12-15"
UNKNOWN_KEY_ID = "LTAI5tNoSuchKeyInteropXX"


class _HmacRecorder:
    """Stands in for the `hmac` module inside alibabacloud_tea_openapi.utils, which computes every
    signature of this SDK (V3 signature_method, v2 get_rpcsignature, get_roasignature) with hmac.new:
    records the string it signed, so a SignatureDoesNotMatch answer can be compared with it."""

    last = None

    def __getattr__(self, name):
        return getattr(_hmac, name)

    def new(self, key, msg=None, digestmod=""):
        _HmacRecorder.last = msg.decode("utf-8") if isinstance(msg, (bytes, bytearray)) else msg
        return _hmac.new(key, msg, digestmod)


openapi_utils.hmac = _HmacRecorder()


class Tea:
    def __init__(self, port, timeout_ms):
        self.ecs_endpoint = f"127.0.0.1:{port}"
        self.ram_endpoint = f"localhost:{port}"
        self.timeout_ms = timeout_ms

    def config(self, endpoint, style, key, secret=None, key_id=None, token=None, role=None):
        return Config(
            access_key_id=key_id or key.id,
            access_key_secret=secret or key.secret,
            security_token=token,
            endpoint=endpoint,
            protocol="HTTP",
            region_id="cn-hangzhou",
            signature_algorithm="v2" if style == "v2" else None,
            user_agent=ua_tag(f"{DRIVER}.{style}", role or key.role),
            connect_timeout=self.timeout_ms,
            read_timeout=self.timeout_ms,
            retry_options=RetryOptions({"retryable": False}),
        )

    def runtime(self):
        return RuntimeOptions(autoretry=False, max_attempts=0, connect_timeout=self.timeout_ms,
                              read_timeout=self.timeout_ms)

    def ecs(self, style, key, **kw):
        return EcsClient(self.config(self.ecs_endpoint, style, key, **kw))

    def ram(self, style, key, **kw):
        return RamClient(self.config(self.ram_endpoint, style, key, **kw))

    def generic(self, style, key, **kw):
        return OpenApiClient(self.config(self.ecs_endpoint, style, key, **kw))


def roa_params(action, method, pathname):
    return openapi_models.Params(action=action, version=CS_VERSION, protocol="HTTP", pathname=pathname,
                                 method=method, auth_type="AK", style="ROA", req_body_type="json",
                                 body_type="json")


def check_echo(headers, key_id, action):
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if "x-echo-key" not in headers:
        raise CheckFailed(f"the answer did not come from the echo upstream (headers {headers!r})")
    expect_equal("upstream saw X-Akgate-Key", headers.get("x-echo-key"), key_id)
    expect_equal("upstream saw action", headers.get("x-echo-action"), action)


def expect_model_ok(call, key_id, action):
    """A generated client's call: HTTP 200, a parsed body, and the echo upstream saw `key_id`/`action`."""
    try:
        resp = call()
    except ClientException as e:
        raise CheckFailed(f"expected success, got ClientException code={e.code!r} status={e.status_code!r} "
                          f"message={e.message!r}")
    if resp is None or resp.status_code != 200:
        raise CheckFailed(f"expected HTTP 200, got {getattr(resp, 'status_code', None)!r}")
    if resp.body is None or not resp.body.request_id:
        raise CheckFailed("HTTP 200 but the SDK parsed no RequestId from the body")
    check_echo(resp.headers, key_id, action)


def expect_generic_ok(call, key_id, action):
    """call_api: a dict with statusCode, headers and the JSON body."""
    try:
        resp = call()
    except ClientException as e:
        raise CheckFailed(f"expected success, got ClientException code={e.code!r} status={e.status_code!r} "
                          f"message={e.message!r}")
    if resp.get("statusCode") != 200:
        raise CheckFailed(f"expected HTTP 200, got {resp!r}")
    body = resp.get("body")
    if not isinstance(body, dict) or "Echo" not in body:
        raise CheckFailed(f"expected the upstream's JSON echo, got body {body!r}")
    check_echo(resp.get("headers"), key_id, action)
    return body["Echo"]


def expect_client_error(call, code, status, message=None):
    try:
        resp = call()
    except ClientException as e:
        if e.code != code or e.status_code != status:
            raise CheckFailed(f"expected code={code!r} status={status}, got code={e.code!r} "
                              f"status={e.status_code!r} message={e.message!r}")
        if message is not None:
            got = body_message(e)
            if got != message or message not in (e.message or ""):
                raise CheckFailed(f"expected Message {message!r}, got {got!r} (SDK message {e.message!r})")
        return e
    raise CheckFailed(f"expected ClientException {code}/{status}, the call succeeded: {resp!r}"[:400])


def body_message(e):
    data = e.data if isinstance(e.data, dict) else {}
    return data.get("Message") or data.get("message") or ""


def add_style_checks(checks, tea, tap, style, keys):
    ok, leaked, sts, expired = keys["ok"], keys["leaked"], keys["sts"], keys["expired"]
    rt = tea.runtime
    p = f"{style}_"

    def describe_regions(client):
        return client.describe_regions_with_options(ecs_models.DescribeRegionsRequest(), rt())

    def delete_instance(client):
        req = ecs_models.DeleteInstanceRequest(instance_id=INSTANCE_ID, force=True)
        return client.delete_instance_with_options(req, rt())

    def get_user(client):
        return client.get_user_with_options(ram_models.GetUserRequest(user_name="interop"), rt())

    def create_user(client):
        req = ram_models.CreateUserRequest(user_name="interop-new", display_name="interop new")
        return client.create_user_with_options(req, rt())

    def describe_cluster(client):
        params = roa_params("DescribeClusterDetail", "GET", f"/clusters/{CLUSTER_ID}")
        return client.call_api(params, openapi_models.OpenApiRequest(), rt())

    def delete_cluster(client):
        params = roa_params("DeleteCluster", "DELETE", f"/clusters/{CLUSTER_ID}")
        return client.call_api(params, openapi_models.OpenApiRequest(), rt())

    def modify_cluster(client, query=None):
        params = roa_params("ModifyCluster", "PUT", f"/api/v2/clusters/{CLUSTER_ID}")
        req = openapi_models.OpenApiRequest(body={"cluster_name": "interop", "deletion_protection": True},
                                            query=query)
        return client.call_api(params, req, rt())

    # --- RPC-style API through the generated ECS client (Host 127.0.0.1 -> ecs)
    checks.run(p + "ecs_describe_regions_ok",
               lambda: expect_model_ok(lambda: describe_regions(tea.ecs(style, ok)), ok.id, "DescribeRegions"))
    checks.run(p + "ecs_describe_regions_leaked_key_allowed",
               lambda: expect_model_ok(lambda: describe_regions(tea.ecs(style, leaked)), leaked.id,
                                       "DescribeRegions"))
    checks.run(p + "ecs_delete_instance_ok",
               lambda: expect_model_ok(lambda: delete_instance(tea.ecs(style, ok)), ok.id, "DeleteInstance"))
    checks.run(p + "ecs_delete_instance_leaked_refused",
               lambda: expect_client_error(lambda: delete_instance(tea.ecs(style, leaked)), "Forbidden", 403,
                                           LEAK_MESSAGE))

    # --- RAM (Host localhost -> ram, every action high-risk)
    checks.run(p + "ram_get_user_ok",
               lambda: expect_model_ok(lambda: get_user(tea.ram(style, ok)), ok.id, "GetUser"))
    checks.run(p + "ram_get_user_leaked_refused",
               lambda: expect_client_error(lambda: get_user(tea.ram(style, leaked)), "Forbidden", 403,
                                           LEAK_MESSAGE))
    checks.run(p + "ram_create_user_leaked_refused",
               lambda: expect_client_error(lambda: create_user(tea.ram(style, leaked)), "Forbidden", 403,
                                           LEAK_MESSAGE))

    # --- signature and key checks
    def wrong_secret(call_with_client, client):
        _HmacRecorder.last = None
        e = expect_client_error(lambda: call_with_client(client), "SignatureDoesNotMatch", 400)
        expect_same_string_to_sign(body_message(e), _HmacRecorder.last)

    checks.run(p + "wrong_secret",
               lambda: wrong_secret(describe_regions, tea.ecs(style, ok, secret=ok.secret + "x", role="wrong")))
    checks.run(p + "unknown_key",
               lambda: expect_client_error(
                   lambda: describe_regions(tea.ecs(style, ok, key_id=UNKNOWN_KEY_ID, role="unknown")),
                   "InvalidAccessKeyId.NotFound", 404))

    def replay_nonce_used(call):
        mark = tap.mark()
        call()
        sent = tap.one_since(mark, "the original request")
        expect_alibaba_error(replay(sent), "SignatureNonceUsed", 400)

    checks.run(p + "replay_nonce_used",
               lambda: replay_nonce_used(
                   lambda: expect_model_ok(lambda: describe_regions(tea.ecs(style, ok)), ok.id,
                                           "DescribeRegions")))

    # --- temporary (STS) credentials
    checks.run(p + "sts_token_ok",
               lambda: expect_model_ok(lambda: describe_regions(tea.ecs(style, sts, token=sts.token)), sts.id,
                                       "DescribeRegions"))
    checks.run(p + "sts_token_mismatch_refused",
               lambda: expect_client_error(
                   lambda: describe_regions(tea.ecs(style, sts, token=expired.token, role="wrong")),
                   "InvalidSecurityToken.MismatchWithAccessKey", 400))
    checks.run(p + "sts_token_expired_refused",
               lambda: expect_client_error(lambda: describe_regions(tea.ecs(style, expired, token=expired.token)),
                                           "InvalidSecurityToken.Expired", 400))

    # --- ROA-style API through call_api (v3: ACS3 with x-acs-action; v2: ROA v1 `acs id:sig`)
    checks.run(p + "roa_describe_cluster_ok",
               lambda: expect_generic_ok(lambda: describe_cluster(tea.generic(style, ok)), ok.id,
                                         "DescribeClusterDetail"))
    checks.run(p + "roa_modify_cluster_json_body_ok",
               lambda: expect_generic_ok(lambda: modify_cluster(tea.generic(style, ok)), ok.id, "ModifyCluster"))

    def query_encoding():
        # A space, reserved and non-ASCII characters and an empty value in the query (v2 ROA signs the raw
        # values and renders the empty one as `Empty`, without `=`; SIGNATURES.md §3).
        query = {"Name": "a b*~é/+", "Empty": ""}
        echo = expect_generic_ok(lambda: modify_cluster(tea.generic(style, ok), query), ok.id, "ModifyCluster")
        if "Empty" not in (echo.get("Query") or ""):
            raise CheckFailed(f"the upstream did not receive the query as sent: {echo!r}")

    checks.run(p + "roa_query_encoding_ok", query_encoding)
    checks.run(p + "roa_delete_cluster_leaked_refused",
               lambda: expect_client_error(lambda: delete_cluster(tea.generic(style, leaked)), "Forbidden", 403,
                                           LEAK_MESSAGE))
    checks.run(p + "roa_wrong_secret",
               lambda: wrong_secret(describe_cluster, tea.generic(style, ok, secret=ok.secret + "x", role="wrong")))
    checks.run(p + "roa_replay_nonce_used",
               lambda: replay_nonce_used(
                   lambda: expect_generic_ok(lambda: describe_cluster(tea.generic(style, ok)), ok.id,
                                             "DescribeClusterDetail")))
    checks.run(p + "roa_sts_token_ok",
               lambda: expect_generic_ok(lambda: describe_cluster(tea.generic(style, sts, token=sts.token)), sts.id,
                                         "DescribeClusterDetail"))
    checks.run(p + "roa_sts_token_expired_refused",
               lambda: expect_client_error(
                   lambda: describe_cluster(tea.generic(style, expired, token=expired.token)),
                   "InvalidSecurityToken.Expired", 400))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="akgate listener, 127.0.0.1:PORT")
    ap.add_argument("--timeout-ms", type=int, default=10000, help="connect and read timeout per call")
    ap.add_argument("--style", choices=["v3", "v2", "all"], default="all")
    args = ap.parse_args(argv)
    _, port = parse_endpoint(args.endpoint)
    keys = keys_from_env("alibaba_tea.py")

    tap = WireTap()
    tea = Tea(port, args.timeout_ms)
    checks = Checks(DRIVER)
    for style in ("v3", "v2"):
        if args.style in (style, "all"):
            add_style_checks(checks, tea, tap, style, keys)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
