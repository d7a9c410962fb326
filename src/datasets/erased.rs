//! The contacts `sendtime erase` erased, so that no import brings their events back: the
//! HubSpot import reads the hours before its last run again, and a file may still hold them.
//! Kept as keyed hashes (HMAC-SHA256 of each contact key, with a key of this folder's made at
//! the first erase), not as the addresses themselves: the list cannot be read off, but the
//! key is kept beside it, so whoever holds the folder can test an address (pseudonymous, not
//! anonymous). Boundary: `state/erased.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

type Hmac = hmac::Hmac<sha2::Sha256>;

/// The erased contacts' keys, hashed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Erased {
    /// The hashes' key, hex; empty until the first erase.
    key: String,
    /// Hex HMACs of the dictionary keys (a lower-cased email, `#` and an id).
    hashes: BTreeSet<String>,
    #[serde(skip)]
    mac: Option<Hmac>,
}

fn path(data_dir: &Path) -> PathBuf {
    crate::store::state_dir(data_dir).join("erased.json")
}

impl Erased {
    /// What earlier erases recorded (nothing when none ran). An unreadable file is an error:
    /// importing without it would bring erased contacts back.
    pub fn load(data_dir: &Path) -> anyhow::Result<Erased> {
        let path = path(data_dir);
        let mut erased: Erased = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is unreadable: it names the contacts erased, which imports skip; restore it from a backup",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Erased::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if !erased.key.is_empty() {
            let key = hex::decode(&erased.key)
                .with_context(|| format!("{}: its key is not hex", path.display()))?;
            erased.mac = Some(Hmac::new_from_slice(&key).expect("HMAC takes any key"));
        }
        Ok(erased)
    }

    /// Record `keys` (dictionary keys) as erased, durably.
    pub fn record<'k>(
        data_dir: &Path,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> anyhow::Result<()> {
        let mut erased = Erased::load(data_dir)?;
        if erased.mac.is_none() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random key: {e}"))?;
            erased.key = hex::encode(key);
            erased.mac = Some(Hmac::new_from_slice(&key).expect("HMAC takes any key"));
        }
        for key in keys {
            let hash = erased.hash(key).expect("a key was made above");
            erased.hashes.insert(hash);
        }
        let path = path(data_dir);
        let bytes = serde_json::to_vec_pretty(&erased).expect("serialisable");
        crate::store::write_durably(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn hash(&self, key: &str) -> Option<String> {
        let mut mac = self.mac.clone()?;
        mac.update(key.as_bytes());
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// No contact was ever erased: nothing to look up.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether the contact with dictionary key `key` was erased.
    pub fn holds(&self, key: &str) -> bool {
        !self.is_empty() && self.hash(key).is_some_and(|h| self.hashes.contains(&h))
    }

    /// Whether the contact with HubSpot id `id` was erased.
    pub fn holds_id(&self, id: i64) -> bool {
        !self.is_empty() && self.holds(&format!("#{id}"))
    }

    /// Whether the contact with address `email` (any case) was erased.
    pub fn holds_email(&self, email: &str) -> bool {
        let email = email.trim();
        !self.is_empty() && !email.is_empty() && self.holds(&email.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_recorded_are_held_by_hash_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!Erased::load(dir.path()).unwrap().holds("ann@example.com"));
        Erased::record(dir.path(), ["ann@example.com", "#7"]).unwrap();
        Erased::record(dir.path(), ["bob@example.com"]).unwrap();
        let erased = Erased::load(dir.path()).unwrap();
        assert!(erased.holds("ann@example.com") && erased.holds("bob@example.com"));
        assert!(erased.holds_id(7) && erased.holds_email(" Ann@Example.com"));
        assert!(!erased.holds("cy@example.com") && !erased.holds_id(8));
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(!text.contains("ann@") && !text.contains("bob@"), "{text}");
    }
}
