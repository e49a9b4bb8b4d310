//! Errors in the shapes AWS SDKs parse (SIGNATURES.md §6), with AWS's own codes and messages.
//!
//! Checked against botocore 1.44.5's parsers (`botocore/parsers.py`):
//!
//! * query protocol (STS, IAM, SNS…) and EC2: `<ErrorResponse><Error><Type/><Code/><Message/>
//!   </Error><RequestId/></ErrorResponse>`. `QueryParser` reads `Error` under the root; the EC2
//!   parser inherits that reading (its own `<Response><Errors><Error>` form is only needed for
//!   modelled EC2 exceptions, which these codes are not), so one body serves both;
//! * JSON protocols (`X-Amz-Target`): `{"__type": "<Code>", "message": …}`, codes in the JSON
//!   services' own spelling (`InvalidSignatureException`, `UnrecognizedClientException`…) and
//!   HTTP 400, which is what DynamoDB and the other JSON services answer for authentication and
//!   authorization failures;
//! * S3 (REST-XML): `<Error><Code/><Message/>…<RequestId/></Error>`, S3's codes
//!   (`InvalidAccessKeyId`, `AccessDenied` for an expired request).
//!
//! Every response also carries `x-amzn-ErrorType: <Code>`: REST-JSON clients (Lambda…), which
//! get the XML shape from the gateway, take their error code from that header. And
//! `x-amzn-RequestId` / `x-amz-request-id` so every parser finds the request id.
//!
//! Messages never contain a secret. The string to sign (which holds no secret) is returned on a
//! signature mismatch, as AWS does, so a client can compare it with its own.

use http::{HeaderValue, Response, StatusCode, header};
use std::borrow::Cow;

use super::Body;
use super::response::ErrorShape;
use crate::error::Rejection;

/// AWS code and status for a refusal, in the given protocol's spelling.
pub fn code_and_status(r: &Rejection, shape: ErrorShape) -> (&'static str, StatusCode) {
    match shape {
        ErrorShape::AwsJson => json_code_and_status(r),
        ErrorShape::AwsS3Xml => s3_code_and_status(r),
        _ => query_code_and_status(r),
    }
}

/// Query and EC2 protocols (STS's and IAM's codes).
fn query_code_and_status(r: &Rejection) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match r {
        Rejection::SignatureDoesNotMatch { .. } => ("SignatureDoesNotMatch", S::FORBIDDEN),
        Rejection::KeyNotFound
        | Rejection::KeyDisabled
        | Rejection::KeyIdle
        | Rejection::SecurityTokenMissing
        | Rejection::SecurityTokenMismatch => ("InvalidClientTokenId", S::FORBIDDEN),
        Rejection::MissingAccessKeyId => ("MissingAuthenticationToken", S::FORBIDDEN),
        Rejection::IncompleteSignature(_) | Rejection::TimestampMalformed => {
            ("IncompleteSignature", S::BAD_REQUEST)
        }
        Rejection::TimestampExpired => ("RequestExpired", S::BAD_REQUEST),
        Rejection::SecurityTokenExpired => ("ExpiredToken", S::FORBIDDEN),
        Rejection::ContentHashMismatch => ("XAmzContentSHA256Mismatch", S::BAD_REQUEST),
        Rejection::SourceIpNotAllowed(_)
        | Rejection::LeakedKeyHighRisk
        | Rejection::UnsignedBody
        | Rejection::MfaRequired
        | Rejection::MfaNotSetUp
        | Rejection::MfaInvalid(_) => ("AccessDenied", S::FORBIDDEN),
        Rejection::BodyTooLarge => ("RequestEntityTooLarge", S::PAYLOAD_TOO_LARGE),
        Rejection::InvalidRoute => ("InvalidAction", S::NOT_FOUND),
        Rejection::UpstreamUnavailable => ("ServiceUnavailable", S::BAD_GATEWAY),
        Rejection::UpstreamTimeout => ("ServiceUnavailable", S::GATEWAY_TIMEOUT),
        Rejection::SourceThrottled => ("Throttling", StatusCode::BAD_REQUEST),
        Rejection::Overloaded | Rejection::StateUnavailable => {
            ("ServiceUnavailable", S::SERVICE_UNAVAILABLE)
        }
        Rejection::RequestTimeout => ("RequestTimeout", S::BAD_REQUEST),
        Rejection::NonceUsed | Rejection::ContentMd5Mismatch | Rejection::BadRequest(_) => {
            ("InvalidRequest", S::BAD_REQUEST)
        }
    }
}

/// JSON protocols (DynamoDB's codes).
fn json_code_and_status(r: &Rejection) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match r {
        Rejection::SignatureDoesNotMatch { .. } | Rejection::TimestampExpired => {
            ("InvalidSignatureException", S::BAD_REQUEST)
        }
        Rejection::KeyNotFound
        | Rejection::KeyDisabled
        | Rejection::KeyIdle
        | Rejection::SecurityTokenMissing
        | Rejection::SecurityTokenMismatch => ("UnrecognizedClientException", S::BAD_REQUEST),
        Rejection::MissingAccessKeyId => ("MissingAuthenticationTokenException", S::BAD_REQUEST),
        Rejection::IncompleteSignature(_) | Rejection::TimestampMalformed => {
            ("IncompleteSignatureException", S::BAD_REQUEST)
        }
        Rejection::SecurityTokenExpired => ("ExpiredTokenException", S::BAD_REQUEST),
        Rejection::ContentHashMismatch => ("XAmzContentSHA256Mismatch", S::BAD_REQUEST),
        Rejection::SourceIpNotAllowed(_)
        | Rejection::LeakedKeyHighRisk
        | Rejection::UnsignedBody
        | Rejection::MfaRequired
        | Rejection::MfaNotSetUp
        | Rejection::MfaInvalid(_) => ("AccessDeniedException", S::BAD_REQUEST),
        Rejection::BodyTooLarge => ("RequestEntityTooLarge", S::PAYLOAD_TOO_LARGE),
        Rejection::InvalidRoute => ("UnknownOperationException", S::NOT_FOUND),
        Rejection::UpstreamUnavailable => ("ServiceUnavailable", S::BAD_GATEWAY),
        Rejection::UpstreamTimeout => ("ServiceUnavailable", S::GATEWAY_TIMEOUT),
        Rejection::SourceThrottled => ("Throttling", StatusCode::BAD_REQUEST),
        Rejection::Overloaded | Rejection::StateUnavailable => {
            ("ServiceUnavailable", S::SERVICE_UNAVAILABLE)
        }
        Rejection::RequestTimeout => ("RequestTimeout", S::BAD_REQUEST),
        Rejection::NonceUsed | Rejection::ContentMd5Mismatch | Rejection::BadRequest(_) => {
            ("ValidationException", S::BAD_REQUEST)
        }
    }
}

/// S3 (REST-XML) codes.
fn s3_code_and_status(r: &Rejection) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match r {
        Rejection::SignatureDoesNotMatch { .. } => ("SignatureDoesNotMatch", S::FORBIDDEN),
        Rejection::KeyNotFound | Rejection::KeyDisabled | Rejection::KeyIdle => {
            ("InvalidAccessKeyId", S::FORBIDDEN)
        }
        Rejection::SecurityTokenMissing | Rejection::SecurityTokenMismatch => {
            ("InvalidToken", S::BAD_REQUEST)
        }
        Rejection::SecurityTokenExpired => ("ExpiredToken", S::BAD_REQUEST),
        Rejection::MissingAccessKeyId
        | Rejection::TimestampExpired
        | Rejection::SourceIpNotAllowed(_)
        | Rejection::LeakedKeyHighRisk
        | Rejection::UnsignedBody
        | Rejection::MfaRequired
        | Rejection::MfaNotSetUp
        | Rejection::MfaInvalid(_) => ("AccessDenied", S::FORBIDDEN),
        // Not `AuthorizationHeaderMalformed`: botocore's S3 region redirector reacts to that code.
        Rejection::IncompleteSignature(_) | Rejection::TimestampMalformed => {
            ("IncompleteSignature", S::BAD_REQUEST)
        }
        Rejection::ContentHashMismatch => ("XAmzContentSHA256Mismatch", S::BAD_REQUEST),
        Rejection::ContentMd5Mismatch => ("BadDigest", S::BAD_REQUEST),
        Rejection::BodyTooLarge => ("EntityTooLarge", S::PAYLOAD_TOO_LARGE),
        Rejection::InvalidRoute => ("InvalidRequest", S::NOT_FOUND),
        Rejection::UpstreamUnavailable => ("ServiceUnavailable", S::BAD_GATEWAY),
        Rejection::UpstreamTimeout => ("ServiceUnavailable", S::GATEWAY_TIMEOUT),
        Rejection::SourceThrottled => ("Throttling", S::BAD_REQUEST),
        // S3's own answer when it is overloaded; botocore retries it.
        Rejection::Overloaded | Rejection::StateUnavailable => ("SlowDown", S::SERVICE_UNAVAILABLE),
        Rejection::RequestTimeout => ("RequestTimeout", S::BAD_REQUEST),
        Rejection::NonceUsed | Rejection::BadRequest(_) => ("InvalidRequest", S::BAD_REQUEST),
    }
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const S3_SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your key and signing method.";
const INVALID_TOKEN: &str = "The security token included in the request is invalid.";

/// AWS-worded message. The Alibaba wording of [`Rejection::message`] (`x-acs-…`, "Aliyun
/// standards") would mislead an AWS client, except for the leaked-key message, kept verbatim.
pub fn message(r: &Rejection, shape: ErrorShape) -> Cow<'static, str> {
    let s3 = shape == ErrorShape::AwsS3Xml;
    match r {
        // S3 sends the string to sign in its own <StringToSign> element.
        Rejection::SignatureDoesNotMatch { .. } if s3 => S3_SIGNATURE_MISMATCH.into(),
        Rejection::SignatureDoesNotMatch { string_to_sign } => format!(
            "{SIGNATURE_MISMATCH}\n\nThe String-to-Sign should have been\n'{string_to_sign}'\n"
        )
        .into(),
        Rejection::KeyNotFound | Rejection::KeyDisabled | Rejection::KeyIdle if s3 => {
            "The AWS Access Key Id you provided does not exist in our records.".into()
        }
        Rejection::KeyNotFound | Rejection::KeyDisabled | Rejection::KeyIdle => INVALID_TOKEN.into(),
        Rejection::SecurityTokenMissing | Rejection::SecurityTokenMismatch if s3 => {
            "The provided token is malformed or otherwise invalid.".into()
        }
        Rejection::SecurityTokenMissing | Rejection::SecurityTokenMismatch => INVALID_TOKEN.into(),
        Rejection::SecurityTokenExpired if s3 => "The provided token has expired.".into(),
        Rejection::SecurityTokenExpired => {
            "The security token included in the request is expired".into()
        }
        Rejection::MissingAccessKeyId if s3 => "Access Denied: the request is not signed.".into(),
        Rejection::MissingAccessKeyId => "Request is missing Authentication Token".into(),
        Rejection::IncompleteSignature(why) => {
            format!("The request signature does not conform to AWS standards: {why}.").into()
        }
        Rejection::TimestampMalformed => {
            "X-Amz-Date must be in the ISO8601 basic format yyyyMMddTHHmmssZ.".into()
        }
        Rejection::TimestampExpired => "Request has expired".into(),
        Rejection::ContentHashMismatch => {
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into()
        }
        Rejection::SourceIpNotAllowed(_) => {
            "Access Denied: the source IP address of this request is not allowed for this access key.".into()
        }
        Rejection::UnsignedBody => {
            "Access Denied: this operation needs a signed payload (x-amz-content-sha256 must be the SHA-256 of the body, not UNSIGNED-PAYLOAD or STREAMING-*).".into()
        }
        Rejection::LeakedKeyHighRisk => r.message(),
        Rejection::ContentMd5Mismatch => {
            "The Content-MD5 you specified did not match what we received.".into()
        }
        Rejection::Overloaded | Rejection::StateUnavailable if s3 => {
            "Please reduce your request rate.".into()
        }
        Rejection::RequestTimeout if s3 => "Your socket connection to the server was not read from or written to within the timeout period.".into(),
        Rejection::InvalidRoute
        | Rejection::BodyTooLarge
        | Rejection::Overloaded
        | Rejection::RequestTimeout
        | Rejection::BadRequest(_)
        | Rejection::SourceThrottled
        | Rejection::NonceUsed
        | Rejection::UpstreamUnavailable
        | Rejection::UpstreamTimeout
        | Rejection::StateUnavailable
        | Rejection::MfaRequired
        | Rejection::MfaNotSetUp
        | Rejection::MfaInvalid(_) => r.message(),
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry other control characters, even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The body and content type for a refusal in this shape.
pub fn body(r: &Rejection, shape: ErrorShape, request_id: &str) -> (&'static str, String) {
    let (code, status) = code_and_status(r, shape);
    let message = message(r, shape);
    match shape {
        ErrorShape::AwsJson => (
            "application/x-amz-json-1.1",
            serde_json::json!({ "__type": code, "message": message }).to_string(),
        ),
        ErrorShape::AwsS3Xml => {
            let extra = match r {
                Rejection::SignatureDoesNotMatch { string_to_sign } => {
                    format!(
                        "<StringToSign>{}</StringToSign>",
                        xml_escape(string_to_sign)
                    )
                }
                _ => String::new(),
            };
            (
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>{extra}<RequestId>{}</RequestId></Error>",
                    xml_escape(&message),
                    xml_escape(request_id)
                ),
            )
        }
        _ => {
            let kind = if status.is_server_error() {
                "Receiver"
            } else {
                "Sender"
            };
            (
                "text/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                    xml_escape(&message),
                    xml_escape(request_id)
                ),
            )
        }
    }
}

pub fn error(r: &Rejection, shape: ErrorShape, request_id: &str) -> Response<Body> {
    let (code, status) = code_and_status(r, shape);
    let (content_type, body) = body(r, shape, request_id);
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-amzn-errortype", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v.clone());
        h.insert("x-amz-request-id", v.clone());
        h.insert("x-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AllowlistLevel;

    fn all() -> Vec<Rejection> {
        vec![
            Rejection::InvalidRoute,
            Rejection::MissingAccessKeyId,
            Rejection::IncompleteSignature("why".into()),
            Rejection::KeyNotFound,
            Rejection::KeyDisabled,
            Rejection::SourceIpNotAllowed(AllowlistLevel::User),
            Rejection::TimestampMalformed,
            Rejection::TimestampExpired,
            Rejection::ContentHashMismatch,
            Rejection::ContentMd5Mismatch,
            Rejection::UnsignedBody,
            Rejection::SecurityTokenMissing,
            Rejection::SecurityTokenMismatch,
            Rejection::SecurityTokenExpired,
            Rejection::SignatureDoesNotMatch {
                string_to_sign:
                    "AWS4-HMAC-SHA256\n20261122T144840Z\n20261122/us-east-1/sts/aws4_request\n<&>"
                        .into(),
            },
            Rejection::NonceUsed,
            Rejection::LeakedKeyHighRisk,
            Rejection::BodyTooLarge,
            Rejection::BadRequest("x".into()),
            Rejection::UpstreamUnavailable,
            Rejection::UpstreamTimeout,
        ]
    }

    #[test]
    fn bodies_are_well_formed_and_never_name_the_allowlist_level() {
        for shape in [
            ErrorShape::AwsQueryXml,
            ErrorShape::AwsJson,
            ErrorShape::AwsS3Xml,
        ] {
            for r in all() {
                let (code, _) = code_and_status(&r, shape);
                let (_, body) = body(&r, shape, "REQ-1");
                assert!(body.contains(code), "{shape:?} {r:?}: {body}");
                if shape != ErrorShape::AwsJson {
                    assert!(!body.contains("<&>"), "{body}");
                }
                assert!(!body.to_lowercase().contains("user allowlist"), "{body}");
                if shape == ErrorShape::AwsJson {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    assert_eq!(v["__type"], code);
                    assert!(!code.contains(':'));
                }
            }
        }
    }

    #[test]
    fn signature_mismatch_carries_the_string_to_sign() {
        let r = Rejection::SignatureDoesNotMatch {
            string_to_sign: "AWS4-HMAC-SHA256\nX".into(),
        };
        let (_, q) = body(&r, ErrorShape::AwsQueryXml, "id");
        assert!(q.contains("The String-to-Sign should have been\n&apos;AWS4-HMAC-SHA256\nX&apos;"));
        let (_, s3) = body(&r, ErrorShape::AwsS3Xml, "id");
        assert!(s3.contains("<StringToSign>AWS4-HMAC-SHA256\nX</StringToSign>"));
        assert_eq!(
            code_and_status(&r, ErrorShape::AwsJson),
            ("InvalidSignatureException", StatusCode::BAD_REQUEST)
        );
    }
}
