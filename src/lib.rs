//! akgate: a reverse proxy that verifies cloud AccessKey signatures, enforces source-IP
//! allowlists and refuses high-risk operations to AccessKeys flagged as leaked.
//!
//! The crate is a library with a thin binary (`src/main.rs`). The request decision
//! ([`decision::decide`]) is a pure function of the rule snapshot, the request and the clock,
//! shared by the server and by offline tooling.
#![forbid(unsafe_code)]

pub mod admin;
mod ascii;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod decision;
pub mod demo;
pub mod error;
mod inline_str;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod rules;
pub mod state;
pub mod time;
pub mod tools;
