#!/usr/bin/env python3
"""Send second-factor codes to akgate's critical operations with the official SDKs.

    python tests/interop/mfa_sdk.py --endpoint 127.0.0.1:PORT

akgate must route Host 127.0.0.1 to `ecs` (DeleteInstance critical) and Host localhost to `s3`
(SigV4, DeleteBucket critical), in front of an upstream that answers 200 with a JSON object.

Environment (all fake test credentials):
    AKGATE_IT_MFA_SEED                          the keys' base32 TOTP seed
    AKGATE_IT_MFA_V3_ID / _SECRET               a key for tea-openapi, V3 signature
    AKGATE_IT_MFA_RPC_ID / _SECRET              a key for tea-openapi, RPC v1 (signature_algorithm v2)
    AKGATE_IT_MFA_AWS_ID / _SECRET              a key for botocore (S3)
Each key must be untrusted when the script starts (no code redeemed yet).

How each SDK sends the code signed:
  * tea-openapi V3 (ACS3) signs `x-acs-*`, host and content-type only: the code goes in the
    `x-acs-akgate-mfa-code` header of an OpenApiRequest (call_api).
  * tea-openapi v2 (RPC v1) signs parameters, not headers: the code is the `AkgateMfaCode` query
    parameter.
  * botocore signs every header it sends (but a few like User-Agent): a `before-sign` handler adds
    `X-Akgate-MFA-Code`.

Prints `PASS name` / `FAIL name: detail` per check, then `N passed, M failed`; exit 1 if any failed.
"""

import argparse
import base64
import hashlib
import hmac
import os
import struct
import sys
import time

import common  # noqa: F401  (first: removes the proxy variables)
from common import ua_tag

from alibabacloud_tea_openapi import models as openapi_models  # noqa: E402
from alibabacloud_tea_openapi.client import Client as OpenApiClient  # noqa: E402
from alibabacloud_tea_openapi.exceptions import ClientException  # noqa: E402
from darabonba.policy.retry import RetryOptions  # noqa: E402
from darabonba.runtime import RuntimeOptions  # noqa: E402

for _var in [v for v in os.environ if v.startswith("AWS_")]:
    os.environ.pop(_var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import botocore.session  # noqa: E402
from botocore.config import Config as BotoConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

DRIVER = "mfa_sdk"
TIMEOUT_MS = 10000


def totp_now(seed_b32):
    """RFC 6238: HMAC-SHA1, 30 s steps, 6 digits."""
    text = seed_b32.replace(" ", "").upper()
    seed = base64.b32decode(text + "=" * (-len(text) % 8))
    digest = hmac.new(seed, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    o = digest[19] & 0x0F
    n = (struct.unpack(">I", digest[o:o + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{n:06d}"


class Failed(Exception):
    pass


def tea_client(endpoint, key_id, secret, v2):
    cfg = openapi_models.Config(
        access_key_id=key_id,
        access_key_secret=secret,
        endpoint=endpoint,
        protocol="HTTP",
        region_id="cn-hangzhou",
        signature_algorithm="v2" if v2 else None,
        user_agent=ua_tag(DRIVER, "v2" if v2 else "v3"),
        connect_timeout=TIMEOUT_MS,
        read_timeout=TIMEOUT_MS,
        retry_options=RetryOptions({"retryable": False}),
    )
    return OpenApiClient(cfg)


def delete_instance(client, headers=None, query=None):
    params = openapi_models.Params(action="DeleteInstance", version="2014-05-26", protocol="HTTP",
                                   pathname="/", method="POST", auth_type="AK", style="RPC",
                                   req_body_type="formData", body_type="json")
    q = {"InstanceId": "i-mfa-interop"}
    q.update(query or {})
    req = openapi_models.OpenApiRequest(query=q, headers=headers or {})
    rt = RuntimeOptions(autoretry=False, max_attempts=0, connect_timeout=TIMEOUT_MS, read_timeout=TIMEOUT_MS)
    return client.call_api(params, req, rt)


def expect_tea_ok(call):
    try:
        resp = call()
    except ClientException as e:
        raise Failed(f"expected success, got {e.code!r} {e.status_code!r}: {e.message!r}")
    status = resp.get("statusCode") if isinstance(resp, dict) else None
    if status != 200:
        raise Failed(f"expected HTTP 200, got {status!r}")


def expect_tea_error(call, code):
    try:
        call()
    except ClientException as e:
        if e.code != code or e.status_code != 403:
            raise Failed(f"expected {code}/403, got {e.code!r}/{e.status_code!r}: {e.message!r}")
        return
    raise Failed(f"expected {code}, the call succeeded")


def s3_client(endpoint, key_id, secret, code=None):
    session = botocore.session.get_session()
    client = session.create_client(
        "s3", region_name="us-east-1", endpoint_url=f"http://localhost:{endpoint.split(':')[1]}",
        aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=BotoConfig(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"},
                          user_agent_extra=ua_tag(DRIVER, "aws")))
    if code is not None:
        def add_code(request, **_):
            request.headers["X-Akgate-MFA-Code"] = code
        client.meta.events.register("before-sign.s3.DeleteBucket", add_code)
    return client


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    args = ap.parse_args()
    env = lambda n: os.environ[n]  # noqa: E731
    seed = env("AKGATE_IT_MFA_SEED")
    v3 = tea_client(args.endpoint, env("AKGATE_IT_MFA_V3_ID"), env("AKGATE_IT_MFA_V3_SECRET"), False)
    v2 = tea_client(args.endpoint, env("AKGATE_IT_MFA_RPC_ID"), env("AKGATE_IT_MFA_RPC_SECRET"), True)
    aws = (args.endpoint, env("AKGATE_IT_MFA_AWS_ID"), env("AKGATE_IT_MFA_AWS_SECRET"))

    def s3_refused():
        try:
            s3_client(*aws).delete_bucket(Bucket="mfa-interop")
        except ClientError as e:
            got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
            if got != ("AccessDenied", 403):
                raise Failed(f"expected AccessDenied/403, got {got!r}")
            return
        raise Failed("expected AccessDenied, the call succeeded")

    def s3_ok():
        s3_client(*aws, code=totp_now(seed)).delete_bucket(Bucket="mfa-interop")

    checks = [
        ("tea_v3_without_code_is_refused", lambda: expect_tea_error(lambda: delete_instance(v3),
                                                                    "Forbidden.MFARequired")),
        ("tea_v3_x_acs_code_header_passes", lambda: expect_tea_ok(
            lambda: delete_instance(v3, headers={"x-acs-akgate-mfa-code": totp_now(seed)}))),
        ("tea_v3_trusted_afterwards", lambda: expect_tea_ok(lambda: delete_instance(v3))),
        ("tea_rpc_without_code_is_refused", lambda: expect_tea_error(lambda: delete_instance(v2),
                                                                     "Forbidden.MFARequired")),
        ("tea_rpc_code_parameter_passes", lambda: expect_tea_ok(
            lambda: delete_instance(v2, query={"AkgateMfaCode": totp_now(seed)}))),
        ("botocore_without_code_is_refused", s3_refused),
        ("botocore_before_sign_header_passes", s3_ok),
    ]
    failed = 0
    for name, fn in checks:
        try:
            fn()
            print(f"PASS {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
