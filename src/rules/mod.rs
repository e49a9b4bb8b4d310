//! Rule tables: raw serde types ([`raw`]) → validated, compiled [`Snapshot`] ([`load`]) →
//! one pointer swapped on reload ([`store`]).
//!
//! A snapshot is immutable. The request path reads it through one `ArcSwap` load and never takes a
//! lock; everything a request needs (HMAC states, prefix tries, lower-cased action sets) is
//! prepared here, at load time.

pub mod load;
pub mod raw;
pub mod store;

use hmac::block_api::HmacCore;
use hmac::digest::block_api::{Buffer, CoreProxy, EagerHash};
use hmac::{Hmac, KeyInit};
use sha1::Sha1;
use sha2::Sha256;
use sm3::Sm3;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::inline_str::InlineStr;
use crate::policy::IpSet;
use crate::time::UnixSeconds;
pub use load::{LoadError, LoadOptions, Problem, load_dir};
pub use raw::{KeyStatus, RuleMode, UnsignedBodyPolicy};
pub use store::RulesStore;

/// Where a rule was written, for explanations and audit lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug)]
pub struct Account {
    pub id: String,
    pub name: Option<String>,
    pub allow: IpSet,
    pub allow_mode: RuleMode,
    pub origin: Origin,
}

#[derive(Debug)]
pub struct User {
    pub name: String,
    pub account: String,
    pub allow: IpSet,
    pub allow_mode: RuleMode,
    pub origin: Origin,
}

/// An AccessKey secret, kept only as ready-to-clone MAC states, one per way the schemes key their
/// MAC, so that the raw bytes are not held and each request skips the key schedule.
///
/// Only the two keyed hash states of each MAC are stored (`HmacCore`: the ipad- and opad-keyed
/// cores), not `Hmac`'s empty block buffer beside them: a request gets a fresh buffer, so a key
/// costs about half the memory (368 bytes instead of 688; 32 MB per 100k keys).
///
/// Every state (and every per-request copy of one) is wiped when dropped: the `zeroize`
/// features of `hmac`, `sha1`, `sha2` and `sm3` give the hash cores and block buffers inside
/// `Hmac` a zeroing `Drop`, which [`_hmac_states_are_zeroized_on_drop`] pins at compile time.
#[derive(Clone)]
pub struct Secret {
    /// ACS3-HMAC-SHA256: the secret itself.
    hmac_sha256: HmacCore<Sha256>,
    /// ACS3-HMAC-SM3: the secret itself.
    hmac_sm3: HmacCore<Sm3>,
    /// ROA v1: the secret itself.
    hmac_sha1: HmacCore<Sha1>,
    /// RPC v1: the secret followed by `&`.
    hmac_sha1_amp: HmacCore<Sha1>,
    /// AWS SigV4: `"AWS4" + secret`, the first step of the signing-key derivation.
    aws4: HmacCore<Sha256>,
}

fn keyed<D: EagerHash>(key: &[u8]) -> HmacCore<D> {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacCore::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// A MAC ready for a request's bytes: the stored keyed states and an empty block buffer, as
/// `Hmac::new_from_slice` would leave them.
fn ready<D: EagerHash>(core: &HmacCore<D>) -> Hmac<D> {
    Hmac::compose(core.clone(), Default::default())
}

/// Does not compile unless the states inside [`Secret`] wipe themselves on drop. `HmacCore<D>`
/// keeps two cores of `D` (the ipad- and opad-keyed states) and `Hmac<D>` adds a block buffer;
/// with the crates' `zeroize` features each of them implements `ZeroizeOnDrop`, without them none
/// does. (Neither `HmacCore` nor `Hmac` declares the marker trait itself, so their parts are
/// checked.)
fn _hmac_states_are_zeroized_on_drop() {
    use hmac::digest::zeroize::ZeroizeOnDrop;
    fn wiped<T: ZeroizeOnDrop>() {}
    wiped::<<Sha256 as CoreProxy>::Core>();
    wiped::<<Sha1 as CoreProxy>::Core>();
    wiped::<<Sm3 as CoreProxy>::Core>();
    wiped::<Buffer<HmacCore<Sha256>>>();
    wiped::<Buffer<HmacCore<Sha1>>>();
    wiped::<Buffer<HmacCore<Sm3>>>();
}

impl Secret {
    pub fn new(secret: &[u8]) -> Self {
        // The keys with a prefix or suffix are copies of the secret: wiped once keyed.
        let with = |prefix: &[u8], suffix: &[u8]| {
            zeroize::Zeroizing::new([prefix, secret, suffix].concat())
        };
        Secret {
            hmac_sha256: keyed(secret),
            hmac_sm3: keyed(secret),
            hmac_sha1: keyed(secret),
            hmac_sha1_amp: keyed(&with(b"", b"&")),
            aws4: keyed(&with(b"AWS4", b"")),
        }
    }

    /// ACS3-HMAC-SHA256, keyed with the secret.
    pub(crate) fn hmac_sha256(&self) -> Hmac<Sha256> {
        ready(&self.hmac_sha256)
    }

    /// ACS3-HMAC-SM3, keyed with the secret.
    pub(crate) fn hmac_sm3(&self) -> Hmac<Sm3> {
        ready(&self.hmac_sm3)
    }

    /// ROA v1, keyed with the secret.
    pub(crate) fn hmac_sha1(&self) -> Hmac<Sha1> {
        ready(&self.hmac_sha1)
    }

    /// RPC v1, keyed with the secret followed by `&`.
    pub(crate) fn hmac_sha1_amp(&self) -> Hmac<Sha1> {
        ready(&self.hmac_sha1_amp)
    }

    /// AWS SigV4's first derivation step, keyed with `"AWS4" + secret`.
    pub(crate) fn aws4(&self) -> Hmac<Sha256> {
        ready(&self.aws4)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// An RSA public key (PKCS#1 `RSAPublicKey` DER) for `ACS3-RSA-SHA256`.
#[derive(Clone, Debug)]
pub struct RsaPublicKey {
    pub der: Vec<u8>,
}

/// What a request's signature is checked against.
#[derive(Clone, Debug)]
pub enum KeyMaterial {
    /// Boxed: the prepared MAC states are large next to an RSA key.
    Secret(Box<Secret>),
    RsaPublicKey(RsaPublicKey),
}

/// STS-style temporary credentials.
#[derive(Clone)]
pub struct Temporary {
    pub expires: UnixSeconds,
    /// SHA-256 of the security token: compared in constant time, never kept in clear.
    pub token_sha256: [u8; 32],
}

impl fmt::Debug for Temporary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Temporary")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakInfo {
    pub reported: Option<String>,
    pub reason: Option<String>,
    pub mode: RuleMode,
    pub origin: Origin,
}

#[derive(Debug)]
pub struct AccessKey {
    pub id: String,
    pub account: Arc<Account>,
    pub user: Option<Arc<User>>,
    pub status: KeyStatus,
    pub created: Option<String>,
    /// `created` as Unix seconds (a bare date is its midnight UTC): where idle days count from
    /// for a key never seen in use.
    pub created_at: Option<crate::time::UnixSeconds>,
    pub allow: IpSet,
    pub allow_mode: RuleMode,
    /// Boxed, as `temporary` and `totp`: most keys have none, and a key table of 100k entries
    /// would otherwise carry their full size in every slot.
    pub leaked: Option<Box<LeakInfo>>,
    pub material: KeyMaterial,
    pub temporary: Option<Box<Temporary>>,
    /// The key's second factor for critical operations; `None` when none is set up.
    pub totp: Option<Box<crate::policy::mfa::totp::TotpSeed>>,
    /// SigV4 derived signing keys for this key's secret.
    pub sigv4_keys: crate::auth::sigv4::SigningKeyCache,
    pub origin: Origin,
}

impl AccessKey {
    /// This key with another leaked flag, for a snapshot that shares the rest of the key table
    /// ([`KeyTable`]). The SigV4 signing-key cache starts empty: it is only a cache.
    fn with_leak(&self, leaked: Option<Box<LeakInfo>>) -> AccessKey {
        AccessKey {
            id: self.id.clone(),
            account: self.account.clone(),
            user: self.user.clone(),
            status: self.status,
            created: self.created.clone(),
            created_at: self.created_at,
            allow: self.allow.clone(),
            allow_mode: self.allow_mode,
            leaked,
            material: self.material.clone(),
            temporary: self.temporary.clone(),
            totp: self.totp.clone(),
            sigv4_keys: Default::default(),
            origin: self.origin.clone(),
        }
    }
}

/// The hasher of the key table: a folded 128-bit multiply per 16 bytes of id, with per-process
/// random seeds.
///
/// Key ids come from the rule files; clients only look them up, so which ids share a probe
/// sequence is not theirs to choose, and SipHash's resistance to flooding (std's default, some
/// 150 instructions for a 23-byte id) buys nothing here. The seeds still differ per process, and
/// every id goes through full multiply-folds, so the low bits a table uses depend on all of it.
#[derive(Clone, Copy)]
pub struct IdHash {
    seeds: [u64; 3],
}

impl Default for IdHash {
    fn default() -> Self {
        static SEEDS: std::sync::OnceLock<[u64; 3]> = std::sync::OnceLock::new();
        let seeds = *SEEDS.get_or_init(|| {
            // std's RandomState is seeded from the operating system's randomness.
            use std::hash::BuildHasher;
            let random = std::collections::hash_map::RandomState::new();
            [1u64, 2, 3].map(|i| random.hash_one(i) | 1)
        });
        IdHash { seeds }
    }
}

impl fmt::Debug for IdHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdHash")
    }
}

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    #[inline]
    fn build_hasher(&self) -> IdHasher {
        let [acc, s1, s2] = self.seeds;
        IdHasher { acc, s1, s2 }
    }
}

/// See [`IdHash`].
pub struct IdHasher {
    acc: u64,
    s1: u64,
    s2: u64,
}

/// The halves of the 128-bit product folded together: every bit of either factor reaches the
/// middle of the product, and the fold brings the middle down to the low bits.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Eight bytes as a little-endian word; `bytes` is eight long wherever this is called.
#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn word32(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(bytes);
    u64::from(u32::from_le_bytes(w))
}

impl std::hash::Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        let mut acc = self.acc;
        // The last (or only) 16 bytes as two words, read overlapping when shorter, after every
        // 16-byte piece before them.
        let (a, b) = if n > 16 {
            let mut rest = bytes;
            while rest.len() > 16 {
                let (piece, tail) = rest.split_at(16);
                acc = fold_mul(word(&piece[..8]) ^ self.s1, word(&piece[8..]) ^ acc);
                rest = tail;
            }
            let last = &bytes[n - 16..];
            (word(&last[..8]), word(&last[8..]))
        } else if n >= 8 {
            (word(&bytes[..8]), word(&bytes[n - 8..]))
        } else if n >= 4 {
            (word32(&bytes[..4]), word32(&bytes[n - 4..]))
        } else if n > 0 {
            let three = u64::from(bytes[0]) << 16 | u64::from(bytes[n / 2]) << 8;
            (three | u64::from(bytes[n - 1]), 0)
        } else {
            (0, 0)
        };
        self.acc = fold_mul(a ^ self.s1, b ^ self.s2 ^ acc.wrapping_add(n as u64));
    }

    /// `str`'s `Hash` ends every string with `0xff`; it needs no multiply of its own, as
    /// [`IdHasher::finish`] folds once more.
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.acc = self.acc.rotate_left(8) ^ u64::from(i);
    }

    /// `[u8]`'s `Hash`, which the tables use (ids are `InlineStr`s looked up by their bytes),
    /// writes the length before the bytes, and [`IdHasher::write`] folds right after: no multiply
    /// is needed here (the default spends one). Not a plain `^` of the length: `write` adds it
    /// again, and `(acc ^ n) + n` takes the same value for several `n` (ids of 4 and 5 `k`s
    /// collided). The length lands in the upper half, clear of the addition's low bits.
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.acc ^= (i as u64).rotate_left(32);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.acc ^ self.s2, self.s1)
    }
}

/// A table of keys by id, hashed with [`IdHash`].
/// Keyed by the id held in place ([`InlineStr`]): a lookup then compares the id it reads from the
/// table's own slot, where a `String` key sent every request to a second, cold heap block.
pub(crate) type KeyMap = HashMap<InlineStr, AccessKey, IdHash>;

/// The access keys of a snapshot, by id.
///
/// Compiling 100k keys and their allowlists takes most of a second, and a reload that changed
/// only a leaked-key list, a route or a setting would otherwise pay it again, and hold a second
/// copy of every key while both snapshots live. So the compiled keys (`base`) are shared, through
/// an `Arc`, by every snapshot whose key-bearing files and outside values are those they were
/// compiled from; a key whose leaked flag differs from the one compiled into `base` is held again,
/// with the flag of this snapshot, in `changed`, which is looked up first.
pub struct KeyTable {
    base: Arc<KeyMap>,
    /// A subset of `base`'s ids: the keys whose leaked flag differs from `base`'s.
    changed: KeyMap,
}

impl KeyTable {
    /// `base` with the leaked flags of `changes` (key id, flag), sharing every other key. Ids
    /// not in `base`, repeats (the first counts) and flags that turn out the same as `base`'s
    /// are fine. The caller narrows the ids down without touching `base` (see
    /// `KeyPart::leaks`): each lookup here is a cache miss in a large table.
    pub(crate) fn with_leaks<'a>(
        base: Arc<KeyMap>,
        changes: impl IntoIterator<Item = (&'a str, Option<&'a LeakInfo>)>,
    ) -> Self {
        let mut changed = KeyMap::default();
        for (id, want) in changes {
            let Some(k) = base.get(id.as_bytes()) else {
                continue;
            };
            if changed.contains_key(id.as_bytes()) {
                continue;
            }
            if k.leaked.as_deref() != want {
                changed.insert(InlineStr::new(id), k.with_leak(want.cloned().map(Box::new)));
            }
        }
        KeyTable { base, changed }
    }

    #[inline]
    pub fn get(&self, id: &str) -> Option<&AccessKey> {
        if !self.changed.is_empty()
            && let Some(k) = self.changed.get(id.as_bytes())
        {
            return Some(k);
        }
        self.base.get(id.as_bytes())
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.base.contains_key(id.as_bytes())
    }

    pub fn len(&self) -> usize {
        self.base.len()
    }

    pub fn is_empty(&self) -> bool {
        self.base.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.base.keys().map(InlineStr::as_str)
    }

    pub fn values(&self) -> impl Iterator<Item = &AccessKey> {
        self.iter().map(|(_, k)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &AccessKey)> {
        self.base
            .iter()
            .map(|(id, k)| (id.as_str(), self.changed.get(id).unwrap_or(k)))
    }

    /// Whether both tables hold the same compiled keys (a reload reused them).
    pub fn shares_keys_with(&self, other: &KeyTable) -> bool {
        Arc::ptr_eq(&self.base, &other.base)
    }

    /// How many keys this table holds apart from the shared ones.
    pub fn own_keys(&self) -> usize {
        self.changed.len()
    }

    /// Takes a key out, for tests that need one on its own. `None` when the compiled keys are
    /// shared with another snapshot.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, id: &str) -> Option<AccessKey> {
        self.changed
            .remove(id.as_bytes())
            .or_else(|| Arc::get_mut(&mut self.base)?.remove(id.as_bytes()))
    }
}

impl fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyTable")
            .field("len", &self.len())
            .field("own", &self.changed.len())
            .finish_non_exhaustive()
    }
}

/// A snapshot's warnings, in order. Held in parts so that a reload that reuses the compiled keys
/// shares their warnings (one per inline secret, say: 100k of them) instead of copying them, and
/// the lines that log them ([`store::log_warnings`]) are worked out once per part.
#[derive(Debug, Clone, Default)]
pub struct Warnings {
    parts: Vec<Arc<WarningPart>>,
}

/// Warnings found by one stage of a compile (the keys', the leaked flags', the allowlists').
#[derive(Debug)]
pub struct WarningPart {
    problems: Box<[Problem]>,
    /// What logging them writes. Each stage words its own warnings, so no kind of warning spans
    /// two parts and the parts' lines, one after the other, are the lines of the whole.
    lines: std::sync::OnceLock<Vec<String>>,
}

impl WarningPart {
    pub(crate) fn new(problems: Vec<Problem>) -> Arc<Self> {
        Arc::new(WarningPart {
            problems: problems.into_boxed_slice(),
            lines: std::sync::OnceLock::new(),
        })
    }
}

impl Warnings {
    pub(crate) fn from_parts(parts: impl IntoIterator<Item = Arc<WarningPart>>) -> Self {
        Warnings {
            parts: parts
                .into_iter()
                .filter(|p| !p.problems.is_empty())
                .collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> + Clone {
        self.into_iter()
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.problems.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn to_vec(&self) -> Vec<Problem> {
        self.iter().cloned().collect()
    }

    /// The lines [`store::log_warnings`] writes for them.
    pub fn log_lines(&self) -> impl Iterator<Item = &String> {
        self.parts.iter().flat_map(|p| {
            p.lines
                .get_or_init(|| store::warning_lines(p.problems.iter()))
                .iter()
        })
    }
}

impl<'a> IntoIterator for &'a Warnings {
    type Item = &'a Problem;
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Arc<WarningPart>>,
        std::slice::Iter<'a, Problem>,
        fn(&'a Arc<WarningPart>) -> std::slice::Iter<'a, Problem>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.parts.iter().flat_map(|p| p.problems.iter())
    }
}

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Exact, case-insensitive. Compared with the port when the pattern has one.
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix` (stored here with the leading dot).
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(want) => {
                let has_port = want.contains(':') && !want.ends_with(']');
                let host = if has_port { host } else { strip_port(host) };
                host.eq_ignore_ascii_case(want)
            }
            HostMatch::Suffix(suffix) => {
                let host = strip_port(host);
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[derive(Debug)]
pub struct Route {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub service: String,
    /// The signature family this route accepts.
    pub family: crate::auth::Family,
    /// `scheme://authority` of the upstream; requests keep their path and query.
    pub upstream: http::uri::Authority,
    pub origin: Origin,
}

impl Route {
    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(h) = &self.host {
            match host {
                Some(host) if h.matches(host) => {}
                _ => return false,
            }
        }
        match &self.path_prefix {
            None => true,
            Some(p) if p.ends_with('/') => path.starts_with(p.as_str()),
            // A prefix matches whole segments: `/api` serves `/api` and `/api/x`, not `/apix`.
            Some(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        }
    }
}

/// A list of actions of one service (its high-risk actions, or its critical operations),
/// lower-cased: action names are compared without regard to case so that a case variant the
/// upstream might accept cannot slip past the list.
#[derive(Debug, Default)]
pub struct ServiceRisk {
    pub all: bool,
    pub actions: HashSet<String>,
    /// `Create*`-style entries: every action starting with the prefix (lower-cased).
    pub prefixes: Vec<String>,
    pub mode: RuleMode,
    pub origin: Option<Origin>,
}

impl ServiceRisk {
    pub fn is_high_risk(&self, action: &str) -> bool {
        if self.all {
            return true;
        }
        // Lower-cased on the stack: with a `[[critical]]` entry for a service, every request to
        // it asks, and the request path allocates nothing for a typical decision.
        let mut buf = [0u8; 128];
        let lower: Cow<'_, str> = if !action.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Borrowed(action)
        } else if let Some(b) = buf.get_mut(..action.len()) {
            b.copy_from_slice(action.as_bytes());
            b.make_ascii_lowercase();
            // ASCII lower-casing keeps UTF-8 valid; the fallback is never taken.
            match std::str::from_utf8(b) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(action.to_ascii_lowercase()),
            }
        } else {
            Cow::Owned(action.to_ascii_lowercase())
        };
        self.actions.contains(lower.as_ref())
            || self.prefixes.iter().any(|p| lower.starts_with(p.as_str()))
    }
}

#[derive(Debug)]
pub struct Settings {
    pub clock_skew: Duration,
    pub nonce_ttl: Duration,
    pub max_idle_days: u32,
    pub trusted_proxies: IpSet,
    pub max_body_bytes: u64,
    pub upstream_timeout: Duration,
    pub unsigned_body: UnsignedBodyPolicy,
    /// Signature failures per source IP per minute before the source is refused; 0 = off.
    pub auth_failure_limit: u32,
    pub auth_failure_cooldown: Duration,
    /// How long a verified second factor lets a key call critical operations without a code.
    pub mfa_trust_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            clock_skew: Duration::from_secs(15 * 60),
            nonce_ttl: Duration::from_secs(15 * 60),
            max_idle_days: 0,
            trusted_proxies: IpSet::new(),
            max_body_bytes: 10 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(30),
            unsigned_body: UnsignedBodyPolicy::default(),
            auth_failure_limit: 0,
            auth_failure_cooldown: Duration::from_secs(5 * 60),
            mfa_trust_window: Duration::from_secs(15 * 60),
        }
    }
}

/// One rule file of a snapshot, as it was read.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub name: Arc<str>,
    /// Its length in bytes.
    pub len: u64,
}

/// One complete, validated rule set.
#[derive(Debug)]
pub struct Snapshot {
    /// The rule files it was compiled from, in load order.
    pub sources: Vec<SourceInfo>,
    pub generation: u64,
    /// Hex SHA-256 over every rule file (name, length and SHA-256 of its bytes) and every value
    /// it takes from outside (secret, token, public-key and seed files and environment variables,
    /// by digest).
    pub content_hash: String,
    /// Where those outside values came from, in hash order: a reload recomputes the hash from
    /// them and the files without compiling ([`load::content_hash_now`]).
    pub external_inputs: Arc<[load::ExternalInput]>,
    pub loaded_at: UnixSeconds,
    pub settings: Settings,
    pub keys: KeyTable,
    pub routes: Vec<Route>,
    pub services: HashMap<String, ServiceRisk>,
    /// Critical operations (`[[critical]]`), by service: they need a second factor.
    pub critical: HashMap<String, ServiceRisk>,
    pub warnings: Warnings,
    /// Keys that can authenticate some request: active, and admitted by some address at every
    /// enforced allowlist level. Zero means every request is refused (and a warning says so).
    pub usable_keys: usize,
    /// What the next reload may take over instead of parsing and compiling it again; `None` for
    /// a set compiled with `check`'s options.
    pub(crate) reuse: Option<Arc<load::Reuse>>,
}

impl Snapshot {
    /// First route, in file order, whose host and path prefix match.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(host, path))
    }

    pub fn key(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id)
    }

    /// The service name as signers use it: AWS routes may carry an `aws-` prefix where the
    /// signing name clashes with an Alibaba product (`aws-ecs`).
    pub fn signing_service(route: &Route) -> &str {
        match route.family {
            crate::auth::Family::Aws => {
                route.service.strip_prefix("aws-").unwrap_or(&route.service)
            }
            crate::auth::Family::Alibaba => &route.service,
        }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRisk> {
        self.services.get(name)
    }

    /// The `[[critical]]` entry of a service, if it has one.
    pub fn critical(&self, service: &str) -> Option<&ServiceRisk> {
        self.critical.get(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hash_spreads_similar_ids_over_buckets() {
        use std::hash::BuildHasher;
        let h = IdHash::default();
        // Every length from empty to past two 16-byte pieces, and ids that differ in one place.
        let mut ids: Vec<String> = (0..40).map(|n| "k".repeat(n)).collect();
        ids.extend((0..20_000).map(|i| format!("LTAI5tBENCH{i:012}")));
        ids.extend((0..20_000).map(|i| format!("{i:x}")));
        // As a `str` and as the tables hash them: their bytes (`InlineStr`'s `Borrow<[u8]>`).
        type Way = fn(&IdHash, &str) -> u64;
        let ways: [(&str, Way); 2] = [
            ("str", |h, id| h.hash_one(id)),
            ("bytes", |h, id| h.hash_one(InlineStr::new(id))),
        ];
        for (way, hash) in ways {
            let hashes: std::collections::HashSet<u64> =
                ids.iter().map(|id| hash(&h, id)).collect();
            assert_eq!(
                hashes.len(),
                ids.len(),
                "{way}: no two of these ids collide in 64 bits"
            );
            // The low bits pick the bucket: 40k ids spread over 1024 buckets put about 39 in
            // each (none empty, none past twice that, unless the low bits ignore part of the id).
            let mut buckets = vec![0u32; 1024];
            for id in &ids {
                buckets[(hash(&h, id) & 1023) as usize] += 1;
            }
            let (min, max) = (buckets.iter().min(), buckets.iter().max());
            assert!(min > Some(&0) && max < Some(&80), "{way}: {min:?} {max:?}");
        }
        assert_eq!(
            h.hash_one(InlineStr::new("LTAI5tBENCH000000000001")),
            h.hash_one("LTAI5tBENCH000000000001".as_bytes()),
            "a table keyed by InlineStr is looked up by bytes"
        );
        assert_eq!(
            h.hash_one("LTAI5tBENCH000000000001"),
            h.hash_one("LTAI5tBENCH000000000001")
        );
    }

    #[test]
    fn host_matching() {
        let exact = HostMatch::Exact("ecs.example.internal".into());
        assert!(exact.matches("ECS.example.internal:8080"));
        assert!(!exact.matches("ecs.example.internal.evil"));
        let with_port = HostMatch::Exact("127.0.0.1:8080".into());
        assert!(with_port.matches("127.0.0.1:8080"));
        assert!(!with_port.matches("127.0.0.1:8081"));
        let suffix = HostMatch::Suffix(".example.internal".into());
        assert!(suffix.matches("a.b.example.internal:443"));
        assert!(!suffix.matches("example.internal"));
        assert!(!suffix.matches("badexample.internal"));
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let r = |p: &str| Route {
            host: None,
            path_prefix: Some(p.into()),
            service: "s".into(),
            family: crate::auth::Family::Alibaba,
            upstream: "127.0.0.1:1".parse().unwrap(),
            origin: Origin {
                file: "routes.toml".into(),
                line: 1,
            },
        };
        assert!(r("/api").matches(None, "/api"));
        assert!(r("/api").matches(None, "/api/x"));
        assert!(!r("/api").matches(None, "/apix"));
        assert!(r("/api/").matches(None, "/api/x"));
        assert!(r("/").matches(None, "/anything"));
    }

    #[test]
    fn risk_lookup_ignores_case() {
        let risk = ServiceRisk {
            all: false,
            actions: ["deleteinstance".to_string()].into_iter().collect(),
            prefixes: vec!["createaccess".to_string()],
            mode: RuleMode::Enforce,
            origin: None,
        };
        assert!(risk.is_high_risk("CreateAccessKey"));
        assert!(!risk.is_high_risk("CreateBucket"));
        assert!(risk.is_high_risk("DeleteInstance"));
        assert!(risk.is_high_risk("deleteINSTANCE"));
        assert!(!risk.is_high_risk("DescribeInstances"));
        let long = format!("DeleteInstance{}", "X".repeat(200));
        let risk = ServiceRisk {
            prefixes: vec!["deleteinstance".to_string()],
            ..Default::default()
        };
        assert!(risk.is_high_risk(&long), "longer than the stack buffer");
        assert!(risk.is_high_risk("DELETEINSTANCEX"));
    }
}
