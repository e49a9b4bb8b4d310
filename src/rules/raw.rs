//! The rule files exactly as written: serde types that reject unknown fields and keep the spans
//! needed to point at a line. Nothing here is trusted or interpreted; [`super::load`] turns it into
//! a [`super::Snapshot`].

use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

/// One `rules/*.toml` file. Any file may hold any table; together they are one rule set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    #[serde(default)]
    pub account: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    pub user: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub access_key: Vec<Spanned<RawAccessKey>>,
    #[serde(default)]
    pub leaked_key: Vec<Spanned<RawLeakedKey>>,
    #[serde(default)]
    pub service: Vec<Spanned<RawService>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub critical: Vec<Spanned<RawCritical>>,
    pub settings: Option<Spanned<RawSettings>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub id: Spanned<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub api_source_cidrs: Vec<Spanned<String>>,
    /// `"shadow"`: the allowlist is evaluated and its refusals logged, not enforced.
    #[serde(default)]
    pub allowlist_mode: RuleMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Spanned<String>,
    pub account: Spanned<String>,
    #[serde(default)]
    pub api_source_cidrs: Vec<Spanned<String>>,
    /// `"shadow"`: the allowlist is evaluated and its refusals logged, not enforced.
    #[serde(default)]
    pub allowlist_mode: RuleMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Disabled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessKey {
    pub id: Spanned<String>,
    pub user: Option<Spanned<String>>,
    pub account: Spanned<String>,
    pub secret_env: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
    /// For `ACS3-RSA-SHA256` keys: the PEM public key (`-----BEGIN PUBLIC KEY-----`), instead of a
    /// secret.
    pub public_key: Option<Spanned<String>>,
    pub public_key_file: Option<Spanned<String>>,
    pub status: Spanned<KeyStatus>,
    pub created: Option<Datetime>,
    /// STS-style temporary credentials: requests must carry this key's security token, and are
    /// refused after `expires`.
    #[serde(default)]
    pub temporary: bool,
    pub expires: Option<Spanned<Datetime>>,
    pub security_token_env: Option<Spanned<String>>,
    pub security_token_file: Option<Spanned<String>>,
    pub security_token: Option<Spanned<String>>,
    /// The key's second factor for critical operations: an environment variable or a file
    /// (relative to the rules directory) holding a base32 TOTP seed (RFC 6238). Not inline: a
    /// rule file is shared more widely than a secret should be.
    pub totp_secret_env: Option<Spanned<String>>,
    pub totp_secret_file: Option<Spanned<String>>,
    #[serde(default)]
    pub api_source_cidrs: Vec<Spanned<String>>,
    /// `"shadow"`: the allowlist is evaluated and its refusals logged, not enforced.
    #[serde(default)]
    pub allowlist_mode: RuleMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLeakedKey {
    pub id: Spanned<String>,
    pub reported: Option<Datetime>,
    pub reason: Option<String>,
    #[serde(default)]
    pub mode: RuleMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Spanned<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub actions: Vec<Spanned<String>>,
    #[serde(default)]
    pub mode: RuleMode,
}

/// Operations of one service that need a second factor (`critical.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCritical {
    pub service: Spanned<String>,
    pub description: Option<String>,
    /// Action names, `Prefix*`, or `*` for every action, as in `[[service]]`.
    pub actions: Vec<Spanned<String>>,
    #[serde(default)]
    pub mode: RuleMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub service: Spanned<String>,
    pub upstream: Spanned<String>,
    /// Which signatures this API speaks; requests signed the other way are refused, because the
    /// action the gateway reads would not be the one the upstream executes.
    pub signatures: Option<SignatureFamily>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureFamily {
    /// V3, RPC v1, ROA v1.
    #[default]
    Alibaba,
    /// SigV4; the credential scope's service must be the route's service (an `aws-` prefix on
    /// the route's service name is ignored, for names that clash with Alibaba products).
    Aws,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub clock_skew: Option<Spanned<String>>,
    pub nonce_ttl: Option<Spanned<String>>,
    pub max_idle_days: Option<Spanned<u32>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub max_body_bytes: Option<u64>,
    pub upstream_timeout: Option<Spanned<String>>,
    pub unsigned_body: Option<UnsignedBodyPolicy>,
    /// Signature failures per source IP per minute before that source is refused; 0 = off.
    pub auth_failure_limit: Option<u32>,
    /// How long such a source stays refused.
    pub auth_failure_cooldown: Option<Spanned<String>>,
    /// How long a verified second factor lets the key call critical operations without another
    /// code (default 15m).
    pub mfa_trust_window: Option<Spanned<String>>,
}

/// Whether a rule is enforced, or only evaluated and logged (`would_deny`) so that a team can
/// roll it out safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    #[default]
    Enforce,
    Shadow,
}

/// What to do with requests whose scheme leaves the body unsigned (ROA v1 without Content-MD5, as
/// tea-openapi sends it; SigV4 `UNSIGNED-PAYLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsignedBodyPolicy {
    /// Refuse them for high-risk actions (of any key), allow them otherwise.
    #[default]
    RefuseHighRisk,
    Refuse,
    Allow,
}
