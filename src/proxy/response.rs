//! Turning a [`Rejection`] into the response an official SDK can parse: Alibaba's JSON error shape
//! (SIGNATURES.md §5–6).

use http::{HeaderValue, Response, header};
use serde::Serialize;

use super::Body;
use crate::error::Rejection;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AlibabaError<'a> {
    request_id: &'a str,
    host_id: &'a str,
    code: &'a str,
    message: &'a str,
    recommend: &'a str,
}

/// The error format a client expects, from the signature family it uses and, for AWS, the wire
/// protocol of the service it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// Alibaba Cloud's JSON error (`RequestId`, `HostId`, `Code`, `Message`, `Recommend`).
    Alibaba,
    /// AWS query / EC2 protocols: `<ErrorResponse><Error>…</Error><RequestId/></ErrorResponse>`.
    AwsQueryXml,
    /// AWS JSON protocols (`X-Amz-Target`): `{"__type": …, "message": …}`.
    AwsJson,
    /// S3 (REST-XML): `<Error><Code/><Message/><RequestId/></Error>`.
    AwsS3Xml,
}

impl ErrorShape {
    /// `route` is the route the request's host and path select, if any: an AWS route's clients
    /// are AWS SDKs, whatever their request looks like, so even a garbled `Authorization` gets an
    /// answer they can parse.
    pub fn of(parts: &http::request::Parts, route: Option<&crate::rules::Route>) -> ErrorShape {
        let query = parts.uri.query().unwrap_or("");
        let headers = &parts.headers;
        let service = route.map(|r| r.service.as_str());
        let aws = route.is_some_and(|r| r.family == crate::auth::Family::Aws)
            || headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("AWS4-"))
            || query.contains("X-Amz-Algorithm=")
            || query.contains("X-Amz-Signature=");
        if !aws {
            return ErrorShape::Alibaba;
        }
        let json = headers.contains_key("x-amz-target")
            || headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/x-amz-json"));
        if json {
            ErrorShape::AwsJson
        } else if service == Some("s3") {
            ErrorShape::AwsS3Xml
        } else {
            ErrorShape::AwsQueryXml
        }
    }
}

pub fn error(
    rejection: &Rejection,
    shape: ErrorShape,
    request_id: &str,
    host: Option<&str>,
) -> Response<Body> {
    match shape {
        ErrorShape::Alibaba => alibaba_error(rejection, request_id, host),
        aws => super::aws::error(rejection, aws, request_id),
    }
}

pub fn alibaba_error(
    rejection: &Rejection,
    request_id: &str,
    host: Option<&str>,
) -> Response<Body> {
    let message = rejection.message();
    let recommend = recommendation(rejection);
    let body = AlibabaError {
        request_id,
        host_id: host.unwrap_or(""),
        code: rejection.code(),
        message: &message,
        recommend,
    };
    // Serialising plain strings cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(Body::full(json));
    *resp.status_mut() = rejection.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-acs-request-id", v.clone());
        h.insert("x-request-id", v);
    }
    resp
}

fn recommendation(r: &Rejection) -> &'static str {
    match r {
        Rejection::InvalidRoute => {
            "Check the endpoint: no route in routes.toml serves this host and path."
        }
        Rejection::MissingAccessKeyId | Rejection::IncompleteSignature(_) => {
            "Sign the request with an official SDK (ACS3-HMAC-SHA256)."
        }
        Rejection::KeyNotFound | Rejection::KeyDisabled => {
            "Use an active AccessKey; ask your administrator."
        }
        Rejection::KeyIdle => {
            "This AccessKey was disabled for being idle: ask your administrator to re-enable or replace it."
        }
        Rejection::MfaNotSetUp => {
            "Ask your administrator to set up an MFA device (a TOTP seed) for this AccessKey."
        }
        Rejection::MfaRequired | Rejection::MfaInvalid(_) => {
            "Send the current code of the key's MFA device in X-Akgate-MFA-Code and sign that header."
        }
        Rejection::SourceIpNotAllowed(_) => "Call from an allowed network; ask your administrator.",
        Rejection::TimestampMalformed | Rejection::TimestampExpired => {
            "Synchronise the client clock (NTP)."
        }
        Rejection::ContentMd5Mismatch => "Send the MD5 of the exact body bytes.",
        Rejection::UnsignedBody => "Sign the body: send Content-MD5 (ROA) or use ACS3-HMAC-SHA256.",
        Rejection::SecurityTokenMissing
        | Rejection::SecurityTokenMismatch
        | Rejection::SecurityTokenExpired => {
            "Request fresh temporary credentials (STS) and send the token with them."
        }
        Rejection::ContentHashMismatch | Rejection::SignatureDoesNotMatch { .. } => {
            "Check the AccessKey secret and that nothing between the client and the gateway rewrites the request."
        }
        Rejection::NonceUsed => "Send each request with a new x-acs-signature-nonce.",
        Rejection::LeakedKeyHighRisk => {
            "Rotate this AccessKey now: create a new one, switch clients, delete this one."
        }
        Rejection::BodyTooLarge => "Send a smaller body.",
        Rejection::Overloaded | Rejection::StateUnavailable => {
            "Retry with exponential backoff; the official SDKs do this for 503."
        }
        Rejection::RequestTimeout => "Send the whole body promptly; check the client's network.",
        Rejection::BadRequest(_) => "Send a well-formed HTTP request.",
        Rejection::SourceThrottled => {
            "Check the AccessKey secret and the client clock; retry after the cool-down."
        }
        Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => "Retry later.",
    }
}
