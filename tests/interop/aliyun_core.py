#!/usr/bin/env python3
"""Drive akgate with Alibaba Cloud's legacy core SDK, aliyun-python-sdk-core (`AcsClient`), in the two
signature styles it has:

  rpc  RPC v1: HMAC-SHA1 `Signature=` query parameter (+ `SignatureNonce`), with a `CommonRequest` and with
       the generated `RpcRequest` subclasses of aliyun-python-sdk-ecs (DescribeRegions, DeleteInstance)
  roa  ROA v1: `Authorization: acs <id>:<sig>` over `Date`, `Content-MD5` and x-acs-* headers, with a
       `CommonRequest` that has a uri_pattern (Container Service paths). No nonce at all.

    python tests/interop/aliyun_core.py --endpoint 127.0.0.1:PORT

akgate must route Host 127.0.0.1 + /clusters or /api/v2/clusters to a ROA service listing DeleteCluster as
high-risk, the rest of Host 127.0.0.1 to ecs (DeleteInstance high-risk), to the JSON echo upstream
described in alibaba_tea.py. Keys: see common.py.

Prints `PASS name` / `FAIL name: detail` per check, then `N passed, M failed`; exit 1 if any failed.

Notes on the SDK (aliyun-python-sdk-core 2.16.1, aliyun-python-sdk-ecs 4.24.83), read from its source:
  * Any non-2xx -> aliyunsdkcore.acs_exception.exceptions.ServerException: get_error_code(),
    get_error_msg(), get_http_status(), get_request_id() from the JSON body's Code/Message/RequestId
    (a non-JSON body gives SDK.UnknownServerError). Transport errors -> ClientException (SDK.HttpError).
  * AcsClient(auto_retry=False) installs NO_RETRY_POLICY: one attempt per call.
  * 400 SignatureDoesNotMatch whose Message's text between the first and second ':' equals the request's
    own string_to_sign is rewritten to InvalidAccessKeySecret ("The AccessKeySecret is incorrect. …").
    Only RpcRequest/RoaRequest objects keep string_to_sign; a CommonRequest keeps '' (its inner request
    has it), so CommonRequest always reports SignatureDoesNotMatch. A Message without ':' crashes the SDK
    with IndexError.
  * Sends through its own vendored requests 2.18.3 / urllib3 1.22 (aliyunsdkcore.vendored), with
    Accept-Encoding: identity, x-sdk-client: python/2.0.0 and an x-acs-action header for both styles.
    RPC: CommonRequest defaults to GET, the generated ECS requests use POST; all parameters in the query
    unless added with add_body_params (then a form body, also signed). StsTokenCredential adds a
    SecurityToken parameter (RPC) or an x-acs-security-token header (ROA).
  * ROA signs the decoded path (`/clusters/c 2*é`) while the wire carries it percent-encoded, adds
    RegionId=<region> to the query and x-acs-region-id, and Content-MD5 when there is a body.
"""

import argparse
import json
import sys

import common  # noqa: F401  (first: removes the proxy variables the SDK would read)
from common import CheckFailed, Checks, LEAK_MESSAGE, WireTap, expect_alibaba_error, expect_equal
from common import expect_same_string_to_sign, keys_from_env, parse_endpoint, replay, ua_tag

from aliyunsdkcore.acs_exception.exceptions import ServerException  # noqa: E402
from aliyunsdkcore.auth.credentials import StsTokenCredential  # noqa: E402
from aliyunsdkcore.client import AcsClient  # noqa: E402
from aliyunsdkcore.request import CommonRequest  # noqa: E402
from aliyunsdkecs.request.v20140526.DeleteInstanceRequest import DeleteInstanceRequest  # noqa: E402
from aliyunsdkecs.request.v20140526.DescribeRegionsRequest import DescribeRegionsRequest  # noqa: E402

DRIVER = "aliyun_core"
INSTANCE_ID = "i-bp1interoptest"
CLUSTER_ID = "c-interop0001"
ECS_VERSION = "2014-05-26"
CS_VERSION = "2015-12-15"
UNKNOWN_KEY_ID = "LTAI5tNoSuchKeyInteropXX"
INVALID_SECRET_MESSAGE = "The AccessKeySecret is incorrect. Please check your AccessKeyId and AccessKeySecret."


class Core:
    def __init__(self, endpoint, timeout_s):
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def client(self, style, key, secret=None, key_id=None, token=None, role=None):
        if token is not None:
            c = AcsClient(region_id="cn-hangzhou", auto_retry=False, timeout=self.timeout_s,
                          connect_timeout=self.timeout_s,
                          credential=StsTokenCredential(key_id or key.id, secret or key.secret, token))
        else:
            c = AcsClient(key_id or key.id, secret or key.secret, "cn-hangzhou", auto_retry=False,
                          timeout=self.timeout_s, connect_timeout=self.timeout_s)
        product, _, rest = ua_tag(f"{DRIVER}.{style}", role or key.role).partition("/")
        c.append_user_agent(product, rest)
        return c

    # --- RPC
    def common_rpc(self, action, query=None, method="GET"):
        req = CommonRequest(domain=self.endpoint, version=ECS_VERSION, action_name=action)
        req.set_protocol_type("http")
        req.set_method(method)
        for k, v in (query or {}).items():
            req.add_query_param(k, v)
        return req

    def describe_regions(self):
        req = DescribeRegionsRequest()
        req.set_endpoint(self.endpoint)
        req.set_protocol_type("http")
        return req

    def delete_instance(self):
        req = DeleteInstanceRequest()
        req.set_endpoint(self.endpoint)
        req.set_protocol_type("http")
        req.set_InstanceId(INSTANCE_ID)
        req.set_Force(True)
        return req

    # --- ROA
    def common_roa(self, action, method, uri_pattern, path_params=None, body=None):
        req = CommonRequest(domain=self.endpoint, version=CS_VERSION, action_name=action, uri_pattern=uri_pattern,
                            product="CS")
        req.set_protocol_type("http")
        req.set_method(method)
        req.set_accept_format("JSON")
        if path_params:
            req.set_path_params(dict(path_params))
        if body is not None:
            req.set_content(json.dumps(body, separators=(",", ":")).encode("utf-8"))
            req.set_content_type("application/json")
        return req


def inner_string_to_sign(req):
    """What the SDK signed: RpcRequest/RoaRequest keep it; a CommonRequest's inner request does."""
    inner = getattr(req, "request", None)
    return (inner.string_to_sign if inner is not None else None) or req.string_to_sign or None


def expect_ok(client, req, key_id, action):
    try:
        body = client.do_action_with_exception(req)
    except ServerException as e:
        raise CheckFailed(f"expected success, got ServerException code={e.get_error_code()!r} "
                          f"status={e.get_http_status()!r} message={e.get_error_msg()!r}")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise CheckFailed(f"expected the upstream's JSON echo, got {body[:300]!r}")
    echo = parsed.get("Echo")
    if not isinstance(echo, dict):
        raise CheckFailed(f"expected the upstream's JSON echo, got {parsed!r}")
    expect_equal("upstream saw X-Akgate-Key", echo.get("Key"), key_id)
    expect_equal("upstream saw action", echo.get("Action"), action)
    return echo


def expect_server_error(client, req, code, status, message=None):
    try:
        body = client.do_action_with_exception(req)
    except ServerException as e:
        if e.get_error_code() != code or e.get_http_status() != status:
            raise CheckFailed(f"expected code={code!r} status={status}, got code={e.get_error_code()!r} "
                              f"status={e.get_http_status()!r} message={e.get_error_msg()!r}")
        if message is not None and e.get_error_msg() != message:
            raise CheckFailed(f"expected message {message!r}, got {e.get_error_msg()!r}")
        return e
    raise CheckFailed(f"expected ServerException {code}/{status}, the call succeeded: {body[:300]!r}")


def add_rpc_checks(checks, core, tap, keys):
    ok, leaked, sts, expired = keys["ok"], keys["leaked"], keys["sts"], keys["expired"]
    c = lambda key, **kw: core.client("rpc", key, **kw)  # noqa: E731

    checks.run("rpc_common_describe_regions_ok",
               lambda: expect_ok(c(ok), core.common_rpc("DescribeRegions"), ok.id, "DescribeRegions"))
    checks.run("rpc_generated_describe_regions_ok",
               lambda: expect_ok(c(ok), core.describe_regions(), ok.id, "DescribeRegions"))

    def form_body():
        # Parameters in a form-encoded POST body are signed like query parameters (SIGNATURES.md §2).
        req = core.common_rpc("DescribeRegions", method="POST")
        req.add_body_params("AcceptLanguage", "en-US")
        req.add_body_params("InstanceChargeType", "PostPaid")
        expect_ok(c(ok), req, ok.id, "DescribeRegions")

    checks.run("rpc_common_form_body_ok", form_body)
    checks.run("rpc_describe_regions_leaked_key_allowed",
               lambda: expect_ok(c(leaked), core.describe_regions(), leaked.id, "DescribeRegions"))
    checks.run("rpc_generated_delete_instance_ok",
               lambda: expect_ok(c(ok), core.delete_instance(), ok.id, "DeleteInstance"))
    checks.run("rpc_generated_delete_instance_leaked_refused",
               lambda: expect_server_error(c(leaked), core.delete_instance(), "Forbidden", 403, LEAK_MESSAGE))
    checks.run("rpc_common_delete_instance_leaked_refused",
               lambda: expect_server_error(
                   c(leaked), core.common_rpc("DeleteInstance", {"InstanceId": INSTANCE_ID, "Force": "true"}),
                   "Forbidden", 403, LEAK_MESSAGE))

    def generated_wrong_secret():
        # akgate's Message ends with `server string to sign is:<STS>`; the SDK compares it with the
        # RpcRequest's own string_to_sign and, when equal, reports InvalidAccessKeySecret.
        expect_server_error(c(ok, secret=ok.secret + "x", role="wrong"), core.describe_regions(),
                            "InvalidAccessKeySecret", 400, INVALID_SECRET_MESSAGE)

    def common_wrong_secret():
        req = core.common_rpc("DescribeRegions")
        e = expect_server_error(c(ok, secret=ok.secret + "x", role="wrong"), req, "SignatureDoesNotMatch", 400)
        expect_same_string_to_sign(e.get_error_msg(), inner_string_to_sign(req))

    checks.run("rpc_generated_wrong_secret_rewritten_to_invalid_secret", generated_wrong_secret)
    checks.run("rpc_common_wrong_secret", common_wrong_secret)
    checks.run("rpc_unknown_key",
               lambda: expect_server_error(c(ok, key_id=UNKNOWN_KEY_ID, role="unknown"), core.describe_regions(),
                                           "InvalidAccessKeyId.NotFound", 404))

    def replay_nonce_used():
        mark = tap.mark()
        expect_ok(c(ok), core.describe_regions(), ok.id, "DescribeRegions")
        sent = tap.one_since(mark, "the original request")
        expect_alibaba_error(replay(sent), "SignatureNonceUsed", 400)

    checks.run("rpc_replay_nonce_used", replay_nonce_used)
    checks.run("rpc_sts_token_ok",
               lambda: expect_ok(c(sts, token=sts.token), core.describe_regions(), sts.id, "DescribeRegions"))
    checks.run("rpc_sts_token_mismatch_refused",
               lambda: expect_server_error(c(sts, token=expired.token, role="wrong"), core.describe_regions(),
                                           "InvalidSecurityToken.MismatchWithAccessKey", 400))
    checks.run("rpc_sts_token_expired_refused",
               lambda: expect_server_error(c(expired, token=expired.token), core.describe_regions(),
                                           "InvalidSecurityToken.Expired", 400))


def add_roa_checks(checks, core, tap, keys):
    ok, leaked, sts, expired = keys["ok"], keys["leaked"], keys["sts"], keys["expired"]
    c = lambda key, **kw: core.client("roa", key, **kw)  # noqa: E731

    def describe_cluster(cluster_id=CLUSTER_ID):
        return core.common_roa("DescribeClusterDetail", "GET", "/clusters/[ClusterId]", {"ClusterId": cluster_id})

    checks.run("roa_describe_cluster_ok",
               lambda: expect_ok(c(ok), describe_cluster(), ok.id, "DescribeClusterDetail"))
    checks.run("roa_modify_cluster_json_body_ok",
               lambda: expect_ok(c(ok), core.common_roa("ModifyCluster", "PUT", "/api/v2/clusters/[ClusterId]",
                                                        {"ClusterId": CLUSTER_ID},
                                                        {"cluster_name": "interop", "deletion_protection": True}),
                                 ok.id, "ModifyCluster"))

    def path_encoding():
        # The SDK signs the decoded path parameter and sends it percent-encoded (SIGNATURES.md §3).
        echo = expect_ok(c(ok), describe_cluster("c 2*é"), ok.id, "DescribeClusterDetail")
        expect_equal("path the upstream received", echo.get("Path"), "/clusters/c%202*%C3%A9")

    checks.run("roa_path_encoding_ok", path_encoding)
    checks.run("roa_delete_cluster_leaked_refused",
               lambda: expect_server_error(
                   c(leaked), core.common_roa("DeleteCluster", "DELETE", "/clusters/[ClusterId]",
                                              {"ClusterId": CLUSTER_ID}),
                   "Forbidden", 403, LEAK_MESSAGE))

    def wrong_secret():
        req = describe_cluster()
        e = expect_server_error(c(ok, secret=ok.secret + "x", role="wrong"), req, "SignatureDoesNotMatch", 400)
        expect_same_string_to_sign(e.get_error_msg(), inner_string_to_sign(req))

    checks.run("roa_wrong_secret", wrong_secret)

    def replay_accepted():
        # aliyun-python-sdk-core's ROA requests carry no nonce, only Date: within the clock-skew window a
        # byte-for-byte replay verifies again. That is the scheme, not a gateway bug: assert it is forwarded.
        mark = tap.mark()
        expect_ok(c(ok), describe_cluster(), ok.id, "DescribeClusterDetail")
        sent = tap.one_since(mark, "the original request")
        if sent.header("x-acs-signature-nonce") is not None:
            raise CheckFailed(f"this SDK version now sends a nonce on ROA requests: {sent!r}")
        reply = replay(sent)
        if reply.status != 200 or reply.headers.get("x-echo-key") != ok.id:
            raise CheckFailed(f"expected the replay to be forwarded (200 from the echo upstream), got {reply!r}")

    checks.run("replay_accepted_no_nonce_aliyun_core_roa", replay_accepted)
    checks.run("roa_sts_token_ok",
               lambda: expect_ok(c(sts, token=sts.token), describe_cluster(), sts.id, "DescribeClusterDetail"))
    checks.run("roa_sts_token_expired_refused",
               lambda: expect_server_error(c(expired, token=expired.token), describe_cluster(),
                                           "InvalidSecurityToken.Expired", 400))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="akgate listener, 127.0.0.1:PORT")
    ap.add_argument("--timeout-s", type=int, default=10, help="connect and read timeout per call")
    ap.add_argument("--style", choices=["rpc", "roa", "all"], default="all")
    args = ap.parse_args(argv)
    host, port = parse_endpoint(args.endpoint)
    keys = keys_from_env("aliyun_core.py")

    tap = WireTap()
    core = Core(f"{host}:{port}", args.timeout_s)
    checks = Checks(DRIVER)
    if args.style in ("rpc", "all"):
        add_rpc_checks(checks, core, tap, keys)
    if args.style in ("roa", "all"):
        add_roa_checks(checks, core, tap, keys)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
