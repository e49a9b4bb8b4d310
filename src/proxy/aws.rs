//! Errors in the shapes AWS SDKs parse (SIGNATURES.md §6): XML for the query, EC2 and REST-XML
//! protocols, JSON with `__type` for the JSON protocols, and AWS's own codes.

use http::{HeaderValue, Response, StatusCode, header};

use super::Body;
use super::response::{ErrorShape, full};
use crate::error::Rejection;

/// AWS code and status for a refusal.
pub fn code_and_status(r: &Rejection, shape: ErrorShape) -> (&'static str, StatusCode) {
    let s3 = shape == ErrorShape::AwsS3Xml;
    match r {
        Rejection::SignatureDoesNotMatch { .. } => ("SignatureDoesNotMatch", StatusCode::FORBIDDEN),
        Rejection::KeyNotFound | Rejection::KeyDisabled if s3 => {
            ("InvalidAccessKeyId", StatusCode::FORBIDDEN)
        }
        Rejection::KeyNotFound | Rejection::KeyDisabled => {
            ("InvalidClientTokenId", StatusCode::FORBIDDEN)
        }
        Rejection::MissingAccessKeyId => ("MissingAuthenticationToken", StatusCode::FORBIDDEN),
        Rejection::IncompleteSignature(_) => ("IncompleteSignature", StatusCode::BAD_REQUEST),
        Rejection::TimestampExpired | Rejection::TimestampMalformed if s3 => {
            ("AccessDenied", StatusCode::FORBIDDEN)
        }
        Rejection::TimestampExpired | Rejection::TimestampMalformed => {
            ("RequestExpired", StatusCode::BAD_REQUEST)
        }
        Rejection::ContentHashMismatch => ("XAmzContentSHA256Mismatch", StatusCode::BAD_REQUEST),
        Rejection::SecurityTokenExpired => ("ExpiredToken", StatusCode::FORBIDDEN),
        Rejection::SecurityTokenMissing | Rejection::SecurityTokenMismatch => {
            ("InvalidClientTokenId", StatusCode::FORBIDDEN)
        }
        Rejection::SourceIpNotAllowed(_)
        | Rejection::LeakedKeyHighRisk
        | Rejection::UnsignedBody => ("AccessDenied", StatusCode::FORBIDDEN),
        Rejection::BodyTooLarge => ("RequestEntityTooLarge", StatusCode::PAYLOAD_TOO_LARGE),
        Rejection::InvalidRoute => ("InvalidAction", StatusCode::NOT_FOUND),
        Rejection::UpstreamUnavailable => ("ServiceUnavailable", StatusCode::BAD_GATEWAY),
        Rejection::UpstreamTimeout => ("ServiceUnavailable", StatusCode::GATEWAY_TIMEOUT),
        Rejection::NonceUsed | Rejection::ContentMd5Mismatch | Rejection::BadRequest(_) => {
            ("InvalidRequest", StatusCode::BAD_REQUEST)
        }
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
            c => out.push(c),
        }
    }
    out
}

pub fn error(r: &Rejection, shape: ErrorShape, request_id: &str) -> Response<Body> {
    let (code, status) = code_and_status(r, shape);
    let message = r.message();
    let (content_type, body) = match shape {
        ErrorShape::AwsJson => (
            "application/x-amz-json-1.1",
            serde_json::json!({ "__type": code, "message": message }).to_string(),
        ),
        ErrorShape::AwsS3Xml => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><RequestId>{}</RequestId></Error>",
                xml_escape(&message),
                xml_escape(request_id)
            ),
        ),
        _ => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
                xml_escape(&message),
                xml_escape(request_id)
            ),
        ),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v.clone());
        h.insert("x-request-id", v);
    }
    resp
}
