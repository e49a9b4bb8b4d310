//! Upstream connections kept alive between requests (being written).
