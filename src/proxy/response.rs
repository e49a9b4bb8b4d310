//! Turning a [`Rejection`] into the response an official SDK can parse: Alibaba's JSON error shape
//! (SIGNATURES.md §5–6).

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, Full};
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

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
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
    let mut resp = Response::new(full(json));
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
        Rejection::SourceIpNotAllowed(_) => "Call from an allowed network; ask your administrator.",
        Rejection::TimestampMalformed | Rejection::TimestampExpired => {
            "Synchronise the client clock (NTP)."
        }
        Rejection::ContentHashMismatch | Rejection::SignatureDoesNotMatch { .. } => {
            "Check the AccessKey secret and that nothing between the client and the gateway rewrites the request."
        }
        Rejection::NonceUsed => "Send each request with a new x-acs-signature-nonce.",
        Rejection::LeakedKeyHighRisk => {
            "Rotate this AccessKey now: create a new one, switch clients, delete this one."
        }
        Rejection::BodyTooLarge => "Send a smaller body.",
        Rejection::BadRequest(_) => "Send a well-formed HTTP request.",
        Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => "Retry later.",
    }
}
