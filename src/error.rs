//! Every way a request can be refused, each knowing its wire code, HTTP status and message.
//!
//! The variants carry only what the response may reveal, plus (for audit) which allowlist level
//! refused. Messages never contain a secret; the allowlist level never reaches the client.

use http::StatusCode;
use std::borrow::Cow;

/// Which allowlist refused a source IP. Logged, never sent to the client (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistLevel {
    Account,
    User,
    Key,
}

impl AllowlistLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowlistLevel::Account => "account",
            AllowlistLevel::User => "user",
            AllowlistLevel::Key => "key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no route for this host and path")]
    InvalidRoute,
    #[error("no AccessKey id in the request")]
    MissingAccessKeyId,
    #[error("malformed signature: {0}")]
    IncompleteSignature(Cow<'static, str>),
    #[error("unknown AccessKey")]
    KeyNotFound,
    #[error("AccessKey is disabled")]
    KeyDisabled,
    #[error("AccessKey unused for longer than max_idle_days")]
    KeyIdle,
    #[error("source IP not allowed by the {} allowlist", .0.as_str())]
    SourceIpNotAllowed(AllowlistLevel),
    #[error("timestamp is not in the required format")]
    TimestampMalformed,
    #[error("timestamp outside the accepted window")]
    TimestampExpired,
    #[error("body does not match x-acs-content-sha256")]
    ContentHashMismatch,
    #[error("body does not match Content-MD5")]
    ContentMd5Mismatch,
    #[error("the body is not covered by the signature")]
    UnsignedBody,
    #[error("a temporary AccessKey was used without its security token")]
    SecurityTokenMissing,
    #[error("the security token does not belong to this AccessKey")]
    SecurityTokenMismatch,
    #[error("the security token has expired")]
    SecurityTokenExpired,
    #[error("signature does not match")]
    SignatureDoesNotMatch { string_to_sign: String },
    #[error("signature nonce already used")]
    NonceUsed,
    #[error("leaked AccessKey calling a high-risk action")]
    LeakedKeyHighRisk,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("request could not be read: {0}")]
    BadRequest(Cow<'static, str>),
    #[error("source refused for repeated signature failures")]
    SourceThrottled,
    #[error("upstream unreachable")]
    UpstreamUnavailable,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("a bound on connections, requests, body memory or nonces was reached")]
    Overloaded,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("critical operation without a second factor")]
    MfaRequired,
    #[error("critical operation, and no second factor is set up for the AccessKey")]
    MfaNotSetUp,
    #[error("second-factor code refused: {0}")]
    MfaInvalid(Cow<'static, str>),
    #[error("the shared state store is unavailable")]
    StateUnavailable,
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidRoute => "InvalidRoute",
            Rejection::MissingAccessKeyId => "MissingAccessKeyId",
            Rejection::IncompleteSignature(_) => "IncompleteSignature",
            Rejection::KeyNotFound => "InvalidAccessKeyId.NotFound",
            Rejection::KeyDisabled | Rejection::KeyIdle => "InvalidAccessKeyId.Inactive",
            Rejection::SourceIpNotAllowed(_) => "Forbidden.SourceIpNotAllowed",
            Rejection::TimestampMalformed => "InvalidTimeStamp.Format",
            Rejection::TimestampExpired => "InvalidTimeStamp.Expired",
            Rejection::ContentHashMismatch => "InvalidContentSha256",
            Rejection::ContentMd5Mismatch => "InvalidContentMD5",
            Rejection::UnsignedBody => "Forbidden.UnsignedBody",
            Rejection::SecurityTokenMissing => "MissingSecurityToken",
            Rejection::SecurityTokenMismatch => "InvalidSecurityToken.MismatchWithAccessKey",
            Rejection::SecurityTokenExpired => "InvalidSecurityToken.Expired",
            Rejection::SignatureDoesNotMatch { .. } => "SignatureDoesNotMatch",
            Rejection::NonceUsed => "SignatureNonceUsed",
            Rejection::LeakedKeyHighRisk => "Forbidden",
            Rejection::BodyTooLarge => "RequestBodyTooLarge",
            Rejection::BadRequest(_) => "InvalidRequest",
            Rejection::SourceThrottled => "Throttling.AuthFailure",
            Rejection::UpstreamUnavailable => "ServiceUnavailable",
            Rejection::UpstreamTimeout => "GatewayTimeout",
            Rejection::Overloaded => "ServiceUnavailable",
            Rejection::RequestTimeout => "RequestTimeout",
            Rejection::MfaRequired | Rejection::MfaNotSetUp => "Forbidden.MFARequired",
            Rejection::MfaInvalid(_) => "Forbidden.MFAInvalid",
            Rejection::StateUnavailable => "ServiceUnavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::InvalidRoute | Rejection::KeyNotFound => StatusCode::NOT_FOUND,
            Rejection::SourceIpNotAllowed(_)
            | Rejection::LeakedKeyHighRisk
            | Rejection::UnsignedBody
            | Rejection::MfaRequired
            | Rejection::MfaNotSetUp
            | Rejection::MfaInvalid(_) => StatusCode::FORBIDDEN,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::SourceThrottled => StatusCode::TOO_MANY_REQUESTS,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Overloaded | Rejection::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The client-facing message. Every message contains a `:` because aliyun-python-sdk-core
    /// splits `SignatureDoesNotMatch` messages on it and crashes without one (SIGNATURES.md §6).
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Rejection::InvalidRoute => "No API is served at this host and path: check the endpoint.".into(),
            Rejection::MissingAccessKeyId => {
                "The request is not signed: AccessKeyId is missing.".into()
            }
            Rejection::IncompleteSignature(why) => format!(
                "The request signature does not conform to Aliyun standards: {why}."
            )
            .into(),
            Rejection::KeyNotFound => "Specified access key is not found: check the AccessKeyId.".into(),
            Rejection::KeyDisabled => "Specified access key is disabled: use an active AccessKey.".into(),
            Rejection::KeyIdle => {
                "Specified access key is disabled: it was not used for longer than the idle limit.".into()
            }
            Rejection::SourceIpNotAllowed(_) => {
                "Forbidden: the source IP of this request is not allowed for this AccessKey.".into()
            }
            Rejection::TimestampMalformed => {
                "Specified time stamp or date value is not well formatted: expected yyyy-MM-ddTHH:mm:ssZ in UTC.".into()
            }
            Rejection::TimestampExpired => {
                "Specified time stamp or date value is expired: check the client clock.".into()
            }
            Rejection::ContentHashMismatch => {
                "The x-acs-content-sha256 header does not match the request body: hash the exact body sent.".into()
            }
            Rejection::SignatureDoesNotMatch { string_to_sign } => format!(
                "Specified signature does not match our calculation. server string to sign is:{string_to_sign}"
            )
            .into(),
            Rejection::ContentMd5Mismatch => {
                "The Content-MD5 header does not match the request body: hash the exact body sent.".into()
            }
            Rejection::UnsignedBody => {
                "Forbidden: this operation needs a signed body (send Content-MD5 or use a V3 signature).".into()
            }
            Rejection::SecurityTokenMissing => {
                "The security token is missing: this AccessKey is temporary and needs its SecurityToken.".into()
            }
            Rejection::SecurityTokenMismatch => {
                "Specified SecurityToken does not match the AccessKey: use the token issued with it.".into()
            }
            Rejection::SecurityTokenExpired => "Specified SecurityToken is expired: request new credentials.".into(),
            Rejection::NonceUsed => "Specified signature nonce was used already: send a fresh nonce.".into(),
            Rejection::LeakedKeyHighRisk => "There is a risk of leakage of this AccessKey.".into(),
            Rejection::BodyTooLarge => "Request body is too large: see max_body_bytes.".into(),
            Rejection::SourceThrottled => {
                "Too many failed signatures from this source: wait for the cool-down, then fix the credentials.".into()
            }
            Rejection::BadRequest(why) => format!("The request could not be read: {why}.").into(),
            Rejection::UpstreamUnavailable => {
                "The service is unavailable: the upstream could not be reached.".into()
            }
            Rejection::UpstreamTimeout => {
                "The service did not respond in time: the upstream timed out.".into()
            }
            Rejection::Overloaded => {
                "The request has failed due to a temporary failure of the server: too many requests at once, retry with backoff.".into()
            }
            Rejection::RequestTimeout => {
                "The request body was not received in time: send the whole body without pausing.".into()
            }
            Rejection::MfaRequired => {
                "Forbidden: this is a critical operation; send a current MFA code in X-Akgate-MFA-Code, covered by the signature.".into()
            }
            Rejection::MfaNotSetUp => {
                "Forbidden: this is a critical operation and no second factor is set up for this AccessKey: ask your administrator for an MFA device.".into()
            }
            Rejection::MfaInvalid(why) => format!("Forbidden: the MFA code is not valid: {why}.").into(),
            Rejection::StateUnavailable => {
                "The request has failed due to a temporary failure of the server: shared state unavailable, retry with backoff.".into()
            }
        }
    }

    /// A small fixed label for metrics: which stage refused.
    pub fn decision(&self) -> &'static str {
        match self {
            Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => "upstream_error",
            Rejection::Overloaded | Rejection::StateUnavailable => "overloaded",
            _ => "denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaked_key_message_is_exact() {
        let r = Rejection::LeakedKeyHighRisk;
        assert_eq!(r.code(), "Forbidden");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "There is a risk of leakage of this AccessKey.");
    }

    #[test]
    fn signature_mismatch_message_ends_with_string_to_sign() {
        let r = Rejection::SignatureDoesNotMatch {
            string_to_sign: "ACS3-HMAC-SHA256\nabc".into(),
        };
        assert!(
            r.message()
                .ends_with("server string to sign is:ACS3-HMAC-SHA256\nabc")
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn allowlist_level_is_not_revealed() {
        for level in [
            AllowlistLevel::Account,
            AllowlistLevel::User,
            AllowlistLevel::Key,
        ] {
            let m = Rejection::SourceIpNotAllowed(level).message();
            assert!(!m.contains(level.as_str()), "{m}");
        }
    }
}
