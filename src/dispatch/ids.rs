//! Receipt ids as the dispatcher keeps them: 16 bytes, no heap allocation.
//!
//! The dispatcher holds every pending and finished receipt id in memory; as `String`s a
//! million receipts cost a million allocations (and, in a VM that zeroes every fresh page, a
//! lot of first-touch time). The receiver issues ULIDs, so an id is normally its 128-bit value;
//! any other text (a hand-written row) is kept as text, so no id is ever confused with another.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A receipt id: a canonical (upper-case, 26-character) ULID as its value, else its text.
/// Ordering matches the ordering of the ids' text for ULIDs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReceiptId {
    /// The ULID's value, high 64 bits first (so the derived order is the numeric order, and
    /// the enum stays 8-byte aligned and 24 bytes large).
    Ulid([u64; 2]),
    Text(Arc<str>),
}

impl ReceiptId {
    /// Parse without allocating when `s` is a canonical ULID.
    pub fn new(s: &str) -> ReceiptId {
        if s.len() == ulid::ULID_LEN
            && let Ok(u) = ulid::Ulid::from_string(s)
        {
            let mut buf = [0u8; ulid::ULID_LEN];
            // Only the canonical spelling maps to the value: a lower-case twin stays distinct.
            if u.array_to_str(&mut buf) == s {
                let v = u.0;
                return ReceiptId::Ulid([(v >> 64) as u64, v as u64]);
            }
        }
        ReceiptId::Text(Arc::from(s))
    }

    /// Write the id's text into `buf` (for ULIDs) and return it.
    pub fn as_str<'a>(&'a self, buf: &'a mut [u8; ulid::ULID_LEN]) -> &'a str {
        match self {
            ReceiptId::Ulid([hi, lo]) => {
                let u = ulid::Ulid(((*hi as u128) << 64) | *lo as u128);
                u.array_to_str(buf)
            }
            ReceiptId::Text(t) => t,
        }
    }
}

impl Hash for ReceiptId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            // The low bits of a ULID are random: one word is a good hash input on its own.
            ReceiptId::Ulid([hi, lo]) => state.write_u64(lo ^ hi.rotate_left(32)),
            ReceiptId::Text(t) => t.hash(state),
        }
    }
}

impl fmt::Display for ReceiptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.as_str(&mut buf))
    }
}

impl fmt::Debug for ReceiptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// Sets of receipt ids use FxHash: SipHash's flooding resistance buys nothing for ids this
/// process issued, and a big tick hashes a million of them.
pub type IdSet = std::collections::HashSet<ReceiptId, BuildHasherDefault<rustc_hash::FxHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_values_and_other_text_stays_text() {
        let u = ulid::Ulid::generate().to_string();
        let id = ReceiptId::new(&u);
        assert!(matches!(id, ReceiptId::Ulid(_)));
        assert_eq!(id.to_string(), u);
        let lower = ReceiptId::new(&u.to_ascii_lowercase());
        assert!(matches!(lower, ReceiptId::Text(_)));
        assert_ne!(lower, id);
        assert_eq!(lower.to_string(), u.to_ascii_lowercase());
        assert_eq!(ReceiptId::new("r-1").to_string(), "r-1");
    }

    #[test]
    fn order_follows_the_text_for_ulids() {
        let mut text: Vec<String> = (0..200)
            .map(|i| {
                ulid::Ulid::from_parts(1_700_000_000_000 + i % 7, i as u128 * 7919).to_string()
            })
            .collect();
        let mut ids: Vec<ReceiptId> = text.iter().map(|t| ReceiptId::new(t)).collect();
        text.sort();
        ids.sort();
        let back: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(back, text);
    }
}
