//! Request policy that is not signature math: who may call from where, and replay protection.

pub mod allowlist;
pub mod bruteforce;
pub mod idle;
pub mod mfa;
pub mod replay;
pub mod source_ip;
pub mod totp;

pub use allowlist::IpSet;
pub use replay::NonceCache;
