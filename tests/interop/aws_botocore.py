#!/usr/bin/env python3
"""Drive akgate with botocore (AWS SigV4), one client per protocol:

  sts       query protocol     (form body, Action=…)         endpoint http://127.0.0.1:PORT/sts
  ec2       ec2 protocol       (form body, Action=…)         endpoint http://127.0.0.1:PORT/ec2
  iam       query protocol                                   endpoint http://127.0.0.1:PORT/iam
  dynamodb  JSON protocol      (X-Amz-Target)                endpoint http://127.0.0.1:PORT/dynamodb
  s3        REST-XML protocol  (path-style, s3v4)            endpoint http://localhost:PORT

    python tests/interop/aws_botocore.py --endpoint 127.0.0.1:PORT

botocore keeps the path of endpoint_url and puts the operation's own path after it (POST /sts for the query
protocol, whose operations use `/`), so one akgate port serves every service: akgate routes Host localhost
to s3 and, on Host 127.0.0.1, the path prefixes /sts, /ec2, /iam, /dynamodb to those services (signatures
are unaffected: SigV4 signs the path as sent). The upstream must answer with bodies botocore parses:
GetCallerIdentity XML, DescribeRegions XML, {"TableNames": []}, ListObjectsV2 XML, object bytes for GET and
an empty 200 otherwise, each with headers x-echo-key (X-Akgate-Key as received) and x-echo-action.
Keys: see common.py. The secret of every key is used as aws_secret_access_key, the token of the temporary
ones as aws_session_token.

Prints `PASS name` / `FAIL name: detail` per check, then `N passed, M failed`; exit 1 if any failed.

Notes on botocore 1.44.5, read from its source and checked on the wire:
  * Errors -> botocore.exceptions.ClientError with e.response["Error"]["Code"/"Message"] (plus every
    other child of S3's <Error>, e.g. "StringToSign") and e.response["ResponseMetadata"]["HTTPStatusCode"].
    Query/EC2/S3 clients expect XML error bodies, JSON-protocol clients {"__type", "message"}; the JSON
    protocol has its own codes, all HTTP 400 (DynamoDB: AccessDeniedException, InvalidSignatureException),
    so those are what the DynamoDB checks expect instead of AccessDenied / SignatureDoesNotMatch (403).
  * Retries: Config(retries={"total_max_attempts": 1}) = one attempt (botocore's legacy `max_attempts`
    counts retries, not attempts).
  * The `before-send` event hands out the AWSPreparedRequest after signing (handlers returning None let
    botocore send it); its signed header values are bytes. amz-sdk-invocation-id / amz-sdk-request are
    added before that but are not signed; the User-Agent (with Config.user_agent_extra) is not signed.
  * endpoint_url's path is kept: STS GetCallerIdentity is `POST /sts` (no trailing slash), form body
    Action=GetCallerIdentity&Version=2011-06-15. ListObjectsV2 adds encoding-type=url to the query.
  * S3 with Config(s3={"payload_signing_enabled": False}) sends X-Amz-Content-SHA256: UNSIGNED-PAYLOAD even
    over plain http (the explicit setting wins over the "always sign over http" rule), plus a signed
    x-amz-checksum-crc32 and an unsigned `Expect: 100-continue` on PutObject. Without it, over http, the
    body's SHA-256 is sent and signed.
  * Presigned URLs need Config(signature_version="s3v4"); otherwise botocore presigns S3 with SigV2.
"""

import argparse
import hashlib
import os
import re
import sys
from xml.etree import ElementTree

import common  # noqa: F401  (first: removes the proxy variables)
from common import CheckFailed, Checks, WireTap, expect_equal, http_get, keys_from_env, parse_endpoint
from common import replay, ua_tag

# No shared config, credentials file or instance metadata: every credential is passed explicitly.
for _var in [v for v in os.environ if v.startswith("AWS_")]:
    os.environ.pop(_var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

import botocore.auth  # noqa: E402
import botocore.session  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

DRIVER = "aws_botocore"
REGION = "us-east-1"
BUCKET = "interop-bucket"
OBJECT_KEY = "dir/hello world.txt"
OBJECT_BODY = b"interop object body\n"
POLICY = '{"Version":"2012-10-17","Statement":[]}'
UNKNOWN_KEY_ID = "AKIAINTEROPNOSUCHKEY"


# botocore computes the SigV4 string to sign in SigV4Auth.string_to_sign (inherited by the S3 and
# query/presign signers): remember the last one, to compare with the one akgate reports on a mismatch.
_last_string_to_sign = [None]
_real_string_to_sign = botocore.auth.SigV4Auth.string_to_sign


def _recording_string_to_sign(self, request, canonical_request):
    sts = _real_string_to_sign(self, request, canonical_request)
    _last_string_to_sign[0] = sts
    return sts


botocore.auth.SigV4Auth.string_to_sign = _recording_string_to_sign


class Aws:
    def __init__(self, port, timeout_s):
        self.port = port
        self.timeout_s = timeout_s
        self.session = botocore.session.get_session()
        self.prepared = []  # every AWSPreparedRequest botocore sent, from the before-send event

    def endpoint(self, service):
        if service == "s3":
            return f"http://localhost:{self.port}"
        return f"http://127.0.0.1:{self.port}/{service}"

    def client(self, service, key, secret=None, key_id=None, token=None, role=None, unsigned_payload=False):
        s3 = {"addressing_style": "path"}
        if unsigned_payload:
            s3["payload_signing_enabled"] = False
        cfg = Config(
            retries={"total_max_attempts": 1},
            user_agent_extra=ua_tag(DRIVER, role or key.role),
            connect_timeout=self.timeout_s,
            read_timeout=self.timeout_s,
            s3=s3,
            signature_version="s3v4" if service == "s3" else None,
        )
        client = self.session.create_client(
            service, region_name=REGION, endpoint_url=self.endpoint(service),
            aws_access_key_id=key_id or key.id, aws_secret_access_key=secret or key.secret,
            aws_session_token=token, config=cfg)
        client.meta.events.register("before-send", self._record)
        return client

    def _record(self, request, **kwargs):
        self.prepared.append(request)
        return None  # let botocore send it


def sent_header(prepared, name):
    """A header of an AWSPreparedRequest as str (botocore stores signed values as bytes)."""
    v = prepared.headers.get(name)
    return v.decode("latin-1") if isinstance(v, bytes) else v


def echo_headers(resp):
    return resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})


def expect_ok(call, key_id, action):
    try:
        resp = call()
    except ClientError as e:
        err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
        raise CheckFailed(f"expected success, got ClientError Code={err.get('Code')!r} "
                          f"HTTPStatusCode={meta.get('HTTPStatusCode')!r} Message={err.get('Message')!r}")
    meta = resp.get("ResponseMetadata", {})
    if meta.get("HTTPStatusCode") != 200:
        raise CheckFailed(f"expected HTTP 200, got {meta!r}")
    headers = echo_headers(resp)
    if "x-echo-key" not in headers:
        raise CheckFailed(f"the answer did not come from the echo upstream (headers {headers!r})")
    expect_equal("upstream saw X-Akgate-Key", headers.get("x-echo-key"), key_id)
    expect_equal("upstream saw action", headers.get("x-echo-action"), action)
    return resp


def expect_client_error(call, code, statuses):
    statuses = (statuses,) if isinstance(statuses, int) else statuses
    try:
        resp = call()
    except ClientError as e:
        err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
        if err.get("Code") != code or meta.get("HTTPStatusCode") not in statuses:
            raise CheckFailed(f"expected Code={code!r} HTTP {'/'.join(map(str, statuses))}, got "
                              f"Code={err.get('Code')!r} HTTPStatusCode={meta.get('HTTPStatusCode')!r} "
                              f"Message={err.get('Message')!r}")
        return e
    raise CheckFailed(f"expected ClientError {code}, the call succeeded: {str(resp)[:300]}")


def s3_error_field(body, name):
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    return root.findtext(name)


def expect_wrong_secret(call, code="SignatureDoesNotMatch", status=403):
    """Refused as a signature mismatch, and akgate's string to sign is botocore's own: S3 puts it in
    <StringToSign>, the other protocols at the end of the message ("…The String-to-Sign should have
    been", a newline, then the string in single quotes), as AWS does."""
    _last_string_to_sign[0] = None
    e = expect_client_error(call, code, status)
    client = _last_string_to_sign[0]
    if client is None:
        raise CheckFailed("botocore's string to sign was not captured")
    err = e.response.get("Error", {})
    server = err.get("StringToSign")
    if server is None:
        m = re.search(r"The String-to-Sign should have been\n'(.*)'\n?$", err.get("Message") or "", re.S)
        server = m.group(1) if m else None
    if server is None:
        raise CheckFailed(f"akgate's answer carries no string to sign: {err!r}")
    if server != client:
        raise CheckFailed(f"akgate's string to sign {server!r} differs from botocore's {client!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", required=True, help="akgate listener, 127.0.0.1:PORT")
    ap.add_argument("--timeout-s", type=int, default=10, help="connect and read timeout per call")
    args = ap.parse_args(argv)
    _, port = parse_endpoint(args.endpoint)
    keys = keys_from_env("aws_botocore.py")
    ok, leaked, sts, expired = keys["ok"], keys["leaked"], keys["sts"], keys["expired"]

    tap = WireTap()
    aws = Aws(port, args.timeout_s)
    checks = Checks(DRIVER)
    c = aws.client
    connect = ("127.0.0.1", port)  # replays and presigned GETs go to akgate's IPv4 listener

    # --- STS (query protocol)
    checks.run("sts_get_caller_identity_ok",
               lambda: expect_ok(lambda: c("sts", ok).get_caller_identity(), ok.id, "GetCallerIdentity"))
    checks.run("sts_get_caller_identity_leaked_key_allowed",
               lambda: expect_ok(lambda: c("sts", leaked).get_caller_identity(), leaked.id, "GetCallerIdentity"))
    checks.run("sts_assume_role_leaked_refused",
               lambda: expect_client_error(
                   lambda: c("sts", leaked).assume_role(RoleArn="arn:aws:iam::000000000000:role/interop",
                                                        RoleSessionName="interop"),
                   "AccessDenied", 403))
    checks.run("sts_wrong_secret",
               lambda: expect_wrong_secret(
                   lambda: c("sts", ok, secret=ok.secret + "x", role="wrong").get_caller_identity()))
    checks.run("sts_unknown_key",
               lambda: expect_client_error(
                   lambda: c("sts", ok, key_id=UNKNOWN_KEY_ID, role="unknown").get_caller_identity(),
                   "InvalidClientTokenId", 403))

    # --- EC2 (ec2 protocol)
    checks.run("ec2_describe_regions_ok",
               lambda: expect_ok(lambda: c("ec2", ok).describe_regions(), ok.id, "DescribeRegions"))
    checks.run("ec2_run_instances_leaked_refused",
               lambda: expect_client_error(
                   lambda: c("ec2", leaked).run_instances(ImageId="ami-00000000", MinCount=1, MaxCount=1),
                   "AccessDenied", 403))
    checks.run("ec2_wrong_secret",
               lambda: expect_wrong_secret(
                   lambda: c("ec2", ok, secret=ok.secret + "x", role="wrong").describe_regions()))

    # --- IAM (query protocol)
    checks.run("iam_create_access_key_leaked_refused",
               lambda: expect_client_error(lambda: c("iam", leaked).create_access_key(), "AccessDenied", 403))

    # --- DynamoDB (JSON protocol)
    checks.run("dynamodb_list_tables_ok",
               lambda: expect_ok(lambda: c("dynamodb", ok).list_tables(), ok.id, "ListTables"))
    # JSON protocols have their own error codes, all HTTP 400 (SIGNATURES.md §6; DynamoDB's own
    # AccessDeniedException / InvalidSignatureException).
    checks.run("dynamodb_delete_table_leaked_refused",
               lambda: expect_client_error(lambda: c("dynamodb", leaked).delete_table(TableName="interop"),
                                           "AccessDeniedException", 400))
    checks.run("dynamodb_wrong_secret",
               lambda: expect_wrong_secret(
                   lambda: c("dynamodb", ok, secret=ok.secret + "x", role="wrong").list_tables(),
                   "InvalidSignatureException", 400))

    # --- S3 (REST-XML, path-style on Host localhost)
    checks.run("s3_list_objects_v2_ok",
               lambda: expect_ok(lambda: c("s3", ok).list_objects_v2(Bucket=BUCKET), ok.id, "ListObjectsV2"))

    def put_object(unsigned):
        n = len(aws.prepared)
        expect_ok(lambda: c("s3", ok, unsigned_payload=unsigned).put_object(Bucket=BUCKET, Key=OBJECT_KEY,
                                                                            Body=OBJECT_BODY),
                  ok.id, "PutObject")
        sent = aws.prepared[n:]
        if len(sent) != 1:
            raise CheckFailed(f"expected one request, botocore sent {len(sent)}")
        want = "UNSIGNED-PAYLOAD" if unsigned else hashlib.sha256(OBJECT_BODY).hexdigest()
        expect_equal("X-Amz-Content-SHA256 botocore signed", sent_header(sent[0], "X-Amz-Content-SHA256"), want)

    checks.run("s3_put_object_ok", lambda: put_object(False))
    checks.run("s3_put_object_unsigned_payload_ok", lambda: put_object(True))

    def get_object():
        resp = expect_ok(lambda: c("s3", ok).get_object(Bucket=BUCKET, Key=OBJECT_KEY), ok.id, "GetObject")
        expect_equal("object body", resp["Body"].read(), OBJECT_BODY)

    checks.run("s3_get_object_ok", get_object)

    def presigned_get(key, token=None, secret=None, role=None, expect_code=None):
        _last_string_to_sign[0] = None
        url = c("s3", key, token=token, secret=secret, role=role).generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": OBJECT_KEY}, ExpiresIn=300)
        if "X-Amz-Signature=" not in url or "X-Amz-Algorithm=AWS4-HMAC-SHA256" not in url:
            raise CheckFailed(f"botocore did not presign with SigV4: {url}")
        if token and "X-Amz-Security-Token=" not in url:
            raise CheckFailed(f"the presigned URL carries no X-Amz-Security-Token: {url}")
        client_sts = _last_string_to_sign[0]
        reply = http_get(url, connect=connect)
        if expect_code is not None:
            if reply.status != 403 or s3_error_field(reply.body, "Code") != expect_code:
                raise CheckFailed(f"expected 403 {expect_code}, got {reply!r}")
            expect_equal("akgate's string to sign (botocore's presign is the reference)",
                         s3_error_field(reply.body, "StringToSign"), client_sts)
            return
        if reply.status != 200 or reply.body != OBJECT_BODY:
            raise CheckFailed(f"expected 200 with the object, got {reply!r}")
        expect_equal("upstream saw X-Akgate-Key", reply.headers.get("x-echo-key"), key.id)

    checks.run("s3_presigned_get_ok", lambda: presigned_get(ok))
    checks.run("s3_presigned_get_wrong_secret",
               lambda: presigned_get(ok, secret=ok.secret + "x", role="wrong", expect_code="SignatureDoesNotMatch"))
    checks.run("s3_delete_bucket_leaked_refused",
               lambda: expect_client_error(lambda: c("s3", leaked).delete_bucket(Bucket=BUCKET), "AccessDenied", 403))
    checks.run("s3_put_bucket_policy_leaked_refused",
               lambda: expect_client_error(lambda: c("s3", leaked).put_bucket_policy(Bucket=BUCKET, Policy=POLICY),
                                           "AccessDenied", 403))

    def unsigned_high_risk():
        # settings.unsigned_body = "refuse_high_risk": an UNSIGNED-PAYLOAD body is refused for a high-risk
        # action even to a key that is not leaked (the body could have been swapped).
        n = len(aws.prepared)
        expect_client_error(lambda: c("s3", ok, unsigned_payload=True).put_bucket_policy(Bucket=BUCKET,
                                                                                          Policy=POLICY),
                            "AccessDenied", 403)
        sent = aws.prepared[n:]
        if not sent or sent_header(sent[0], "X-Amz-Content-SHA256") != "UNSIGNED-PAYLOAD":
            raise CheckFailed("botocore did not send UNSIGNED-PAYLOAD for PutBucketPolicy")

    checks.run("s3_unsigned_payload_high_risk_refused", unsigned_high_risk)
    checks.run("s3_wrong_secret",
               lambda: expect_wrong_secret(
                   lambda: c("s3", ok, secret=ok.secret + "x", role="wrong").list_objects_v2(Bucket=BUCKET)))
    checks.run("s3_unknown_key",
               lambda: expect_client_error(
                   lambda: c("s3", ok, key_id=UNKNOWN_KEY_ID, role="unknown").list_objects_v2(Bucket=BUCKET),
                   "InvalidAccessKeyId", 403))

    # --- replays: SigV4 has no nonce, so within the 15-minute window a byte-for-byte replay verifies
    # again. Assert it is forwarded (the honest behaviour of the scheme). A replay of a request signed
    # 16+ minutes ago (which must be refused) is not made here.
    def replay_accepted(call, action):
        mark = tap.mark()
        expect_ok(call, ok.id, action)
        sent = tap.one_since(mark, "the original request")
        reply = replay(sent, connect=connect)
        if reply.status != 200 or reply.headers.get("x-echo-key") != ok.id:
            raise CheckFailed(f"expected the replay to be forwarded (200 from the echo upstream), got {reply!r}")

    checks.run("replay_accepted_no_nonce_botocore_sts",
               lambda: replay_accepted(lambda: c("sts", ok).get_caller_identity(), "GetCallerIdentity"))
    checks.run("replay_accepted_no_nonce_botocore_s3",
               lambda: replay_accepted(lambda: c("s3", ok).list_objects_v2(Bucket=BUCKET), "ListObjectsV2"))

    # --- temporary credentials (aws_session_token -> signed X-Amz-Security-Token)
    checks.run("sts_session_token_ok",
               lambda: expect_ok(lambda: c("sts", sts, token=sts.token).get_caller_identity(), sts.id,
                                 "GetCallerIdentity"))
    checks.run("s3_session_token_ok",
               lambda: expect_ok(lambda: c("s3", sts, token=sts.token).list_objects_v2(Bucket=BUCKET), sts.id,
                                 "ListObjectsV2"))
    checks.run("s3_presigned_get_session_token_ok", lambda: presigned_get(sts, token=sts.token))
    # AWS answers a token that is not the key's, or none for a temporary key, with InvalidClientTokenId.
    checks.run("sts_session_token_mismatch_refused",
               lambda: expect_client_error(
                   lambda: c("sts", sts, token=expired.token, role="wrong").get_caller_identity(),
                   "InvalidClientTokenId", 403))
    checks.run("sts_session_token_missing_refused",
               lambda: expect_client_error(lambda: c("sts", sts, role="wrong").get_caller_identity(),
                                           "InvalidClientTokenId", 403))
    # S3's own code for a token that does not belong to the key.
    checks.run("s3_session_token_mismatch_refused",
               lambda: expect_client_error(
                   lambda: c("s3", sts, token=expired.token, role="wrong").list_objects_v2(Bucket=BUCKET),
                   "InvalidToken", 400))
    checks.run("sts_session_token_expired_refused",
               lambda: expect_client_error(lambda: c("sts", expired, token=expired.token).get_caller_identity(),
                                           "ExpiredToken", (400, 403)))
    checks.run("s3_session_token_expired_refused",
               lambda: expect_client_error(
                   lambda: c("s3", expired, token=expired.token).list_objects_v2(Bucket=BUCKET),
                   "ExpiredToken", (400, 403)))

    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
