//! Short strings kept inside their owner instead of behind a pointer.
//!
//! The tables the request path updates for every request (a key's usage, say) are keyed and
//! filled with short strings: AccessKey ids, service codes, action names. Held as `String`s, each
//! comparison reads another heap block, which for a table of 100k keys is a cache miss of its own.
//! Held in place they are read with the entry they belong to.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Bytes kept in place: room for any AccessKey id the clouds issue and for most action names,
/// while the whole value stays 48 bytes. Longer strings go to the heap.
const INLINE: usize = 46;

#[derive(Clone)]
pub(crate) enum InlineStr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl InlineStr {
    pub(crate) fn new(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            InlineStr::Inline {
                // At most INLINE (46), so it fits.
                len: s.len() as u8,
                bytes,
            }
        } else {
            InlineStr::Heap(s.into())
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            InlineStr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            InlineStr::Heap(s) => s.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // The bytes were copied whole from a `str` (see `new`), so they are UTF-8; checking
            // again costs a few nanoseconds and keeps the crate free of `unsafe`.
            InlineStr::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            InlineStr::Heap(s) => s,
        }
    }

    /// Replaces the value with `s` unless it already is `s`: the common case on the request
    /// path, which then only compares bytes it has at hand.
    pub(crate) fn set(&mut self, s: &str) {
        if self.as_bytes() != s.as_bytes() {
            *self = InlineStr::new(s);
        }
    }
}

impl Default for InlineStr {
    fn default() -> Self {
        InlineStr::Inline {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl From<&str> for InlineStr {
    fn from(s: &str) -> Self {
        InlineStr::new(s)
    }
}

impl PartialEq for InlineStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for InlineStr {}

// Hashed as its bytes, so that a map keyed by it is looked up with `s.as_bytes()` (`Borrow`).
// Not as a `str`: that would need `as_str`, whose UTF-8 check costs more than the lookup itself.
impl Hash for InlineStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for InlineStr {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for InlineStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for InlineStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_strings_stay_in_place_and_long_ones_do_not() {
        assert_eq!(std::mem::size_of::<InlineStr>(), 48);
        let id = "LTAI5tQZd8AEcZX6KZV4G8qL";
        assert!(matches!(InlineStr::new(id), InlineStr::Inline { .. }));
        let long = "x".repeat(INLINE + 1);
        assert!(matches!(InlineStr::new(&long), InlineStr::Heap(_)));
        let edge = "é".repeat(INLINE / 2);
        assert!(matches!(InlineStr::new(&edge), InlineStr::Inline { .. }));
        for s in ["", id, &long, &edge] {
            assert_eq!(InlineStr::new(s).as_str(), s);
        }
    }

    #[test]
    fn a_map_keyed_by_it_is_looked_up_by_bytes() {
        let long = "STS.".to_string() + &"N".repeat(60);
        let mut m: HashMap<InlineStr, u32> = HashMap::new();
        m.insert("AK1".into(), 1);
        m.insert(long.as_str().into(), 2);
        assert_eq!(m.get("AK1".as_bytes()), Some(&1));
        assert_eq!(m.get(long.as_bytes()), Some(&2));
        assert_eq!(m.get("AK2".as_bytes()), None);
    }

    #[test]
    fn set_replaces_only_what_differs() {
        let mut s = InlineStr::new("DescribeInstances");
        s.set("DescribeInstances");
        assert_eq!(s.as_str(), "DescribeInstances");
        s.set("RunInstances");
        assert_eq!(s, InlineStr::new("RunInstances"));
        s.set(&"A".repeat(100));
        assert_eq!(s.as_str().len(), 100);
    }
}
