//! The strongest signature version each webhook and action has taken
//! (`min_signature_version = "auto"`), so that a captured post stripped down to its v1
//! signature (which signs only the body) is refused. HubSpot sends the older versions beside
//! the newer, never instead of them.
//!
//! `{data_dir}/state/signatures.json`, written durably the first time an endpoint takes a
//! post with a stronger version (rarely: once or twice per endpoint), kept across restarts.
//! Keyed by the config's endpoint ids, once a post is stored: strangers cannot grow it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::signature::Version;
use crate::store::{sync_dir, write_durably};

/// The strongest version an endpoint has taken, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub version: Version,
    pub since_ms: i64,
}

/// Every endpoint's strongest version, as on disk.
pub struct Ratchet {
    path: PathBuf,
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl Ratchet {
    /// Read what earlier runs saw. A file that cannot be read is an error: starting without
    /// it would take stripped posts again.
    pub fn open(data_dir: &Path) -> anyhow::Result<Ratchet> {
        let path = data_dir.join("state").join("signatures.json");
        let seen = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is unreadable; fix it, or delete it to learn each endpoint's signature version again",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Ratchet {
            path,
            seen: Mutex::new(seen),
        })
    }

    /// The strongest version `endpoint` has taken, if any.
    pub fn seen(&self, endpoint: &str) -> Option<Seen> {
        self.seen.lock().unwrap().get(endpoint).copied()
    }

    /// Record that `endpoint` took a post signed with `version`; written to disk (blocking)
    /// when that is stronger than before. The floor holds in memory even when the file cannot
    /// be written (the error is returned once): stripped posts are refused meanwhile, and a
    /// restart before the disk is fixed forgets it.
    pub fn raise(&self, endpoint: &str, version: Version, now_ms: i64) -> std::io::Result<()> {
        let mut seen = self.seen.lock().unwrap();
        if seen.get(endpoint).is_some_and(|s| s.version >= version) {
            return Ok(());
        }
        let mut next = seen.clone();
        next.insert(
            endpoint.to_string(),
            Seen {
                version,
                since_ms: now_ms,
            },
        );
        let bytes = serde_json::to_vec_pretty(&next).expect("a map of plain values");
        *seen = next;
        let dir = self.path.parent().expect("under the data directory");
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            sync_dir(dir.parent().expect("under the data directory"))?;
        }
        write_durably(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stronger_version_is_recorded_and_it_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Ratchet::open(dir.path()).unwrap();
        assert_eq!(ratchet.seen("a"), None);
        ratchet.raise("a", Version::V2, 10).unwrap();
        ratchet.raise("a", Version::V1, 20).unwrap();
        ratchet.raise("a", Version::V3, 30).unwrap();
        ratchet.raise("a", Version::V2, 40).unwrap();
        let again = Ratchet::open(dir.path()).unwrap();
        let v3 = Seen {
            version: Version::V3,
            since_ms: 30,
        };
        assert_eq!((ratchet.seen("a"), again.seen("a")), (Some(v3), Some(v3)));
        assert_eq!(again.seen("b"), None);
    }

    /// A file that cannot be written (its folder is a file here) fails the raise once; the
    /// floor holds in memory, and taking the same version again is no new error (each post
    /// logged one).
    #[test]
    fn a_floor_that_cannot_be_written_holds_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Ratchet::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("state"), b"not a folder").unwrap();
        assert!(ratchet.raise("a", Version::V3, 10).is_err());
        assert_eq!(ratchet.seen("a").map(|s| s.version), Some(Version::V3));
        assert!(ratchet.raise("a", Version::V3, 20).is_ok());
    }

    #[test]
    fn an_unreadable_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/signatures.json"), b"{not json").unwrap();
        let err = Ratchet::open(dir.path()).err().unwrap();
        assert!(format!("{err:#}").contains("delete it"), "{err:#}");
    }
}
