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
use crate::config::{Target, Webhook};
use crate::store::write_durably;

/// An endpoint's key: a webhook's id, an action's `action:ID`. An id may change kind in a
/// reload, and an action's executions carry v2 whatever its namesake webhook took (keyed alike,
/// a webhook's v3 refused every execution of the action that took its id). Ids hold no `:`.
pub fn endpoint(webhook: &Webhook) -> String {
    match webhook.target {
        Target::Callback => format!("action:{}", webhook.id),
        _ => webhook.id.clone(),
    }
}

/// The strongest version an endpoint has taken, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub version: Version,
    pub since_ms: i64,
}

/// Every endpoint's strongest version, as on disk.
pub struct Ratchet {
    path: PathBuf,
    /// Read by every signed post on the runtime's threads: never held while the disk writes
    /// (a stalled disk held it, and each new post then blocked a runtime thread: an audit).
    floors: Mutex<Floors>,
    /// Held while the file is written, one write at a time (on blocking threads).
    writing: Mutex<()>,
}

/// The floors in force, and whether they are on disk.
struct Floors {
    seen: BTreeMap<String, Seen>,
    /// When writing `seen` last failed (clock ms): it is tried again a minute on, at a post.
    unsaved_since: Option<i64>,
    /// How many times `seen` has changed, and as of which of them it is on disk.
    changes: u64,
    written: u64,
}

impl Ratchet {
    /// Read what earlier runs saw. A file that cannot be read is an error: starting without
    /// it would take stripped posts again.
    pub fn open(data_dir: &Path) -> anyhow::Result<Ratchet> {
        let path = crate::store::state_dir(data_dir).join("signatures.json");
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
            floors: Mutex::new(Floors {
                seen,
                unsaved_since: None,
                changes: 0,
                written: 0,
            }),
            writing: Mutex::new(()),
        })
    }

    /// The strongest version `endpoint` has taken, if any.
    pub fn seen(&self, endpoint: &str) -> Option<Seen> {
        self.floors.lock().unwrap().seen.get(endpoint).copied()
    }

    /// Whether a post to `endpoint` signed with `version` at `now_ms` leaves nothing to
    /// [`Self::raise`]: no stronger version, and no failed write to try again.
    pub fn settled(&self, endpoint: &str, version: Version, now_ms: i64) -> bool {
        let floors = self.floors.lock().unwrap();
        floors
            .seen
            .get(endpoint)
            .is_some_and(|s| s.version >= version)
            && !floors.retry_due(now_ms)
    }

    /// Record that `endpoint` took a post signed with `version`; written to disk (blocking)
    /// when that is stronger than before. The floor holds in memory even when the file cannot
    /// be written: stripped posts are refused meanwhile, the write is tried again at a post a
    /// minute on (each failure returned), and only a restart before one succeeds forgets it.
    pub fn raise(&self, endpoint: &str, version: Version, now_ms: i64) -> std::io::Result<()> {
        {
            let mut floors = self.floors.lock().unwrap();
            let stronger = floors
                .seen
                .get(endpoint)
                .is_none_or(|s| s.version < version);
            if !stronger && !floors.retry_due(now_ms) {
                return Ok(());
            }
            if stronger {
                floors.seen.insert(
                    endpoint.to_string(),
                    Seen {
                        version,
                        since_ms: now_ms,
                    },
                );
                floors.changes += 1;
            } else {
                // The retry is this call's; the next is due a minute on (every post found it
                // due while a stalled write went on, and queued one more: a review).
                floors.unsaved_since = Some(now_ms);
            }
        }
        let _writing = self.writing.lock().unwrap();
        // Written from the floors as they are once it is this call's turn: a write waited for
        // may have put every change on disk.
        let (bytes, change) = {
            let floors = self.floors.lock().unwrap();
            if floors.written == floors.changes {
                return Ok(());
            }
            let bytes = serde_json::to_vec_pretty(&floors.seen).expect("a map of plain values");
            (bytes, floors.changes)
        };
        let written = write_durably(&self.path, &bytes);
        let mut floors = self.floors.lock().unwrap();
        match &written {
            Ok(()) => {
                floors.written = change;
                if change == floors.changes {
                    floors.unsaved_since = None;
                }
            }
            // The later of this call's and a claim made while it wrote.
            Err(_) => floors.unsaved_since = floors.unsaved_since.max(Some(now_ms)),
        }
        written
    }
}

impl Floors {
    /// Whether a write that failed is to be tried again at `now_ms`.
    fn retry_due(&self, now_ms: i64) -> bool {
        self.unsaved_since
            .is_some_and(|t| now_ms - t >= crate::time::MINUTE_MS)
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

    /// A file that cannot be written (its folder is a file here) fails the raise; the floor
    /// holds in memory, a post within the minute tries no write (each post logged one), and
    /// one a minute on writes it once the disk is fixed (it stayed unwritten, and a restart
    /// forgot it).
    #[test]
    fn a_floor_that_cannot_be_written_holds_in_memory_and_is_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let ratchet = Ratchet::open(dir.path()).unwrap();
        let state = dir.path().join("state");
        std::fs::write(&state, b"not a folder").unwrap();
        assert!(ratchet.raise("a", Version::V3, 0).is_err());
        assert_eq!(ratchet.seen("a").map(|s| s.version), Some(Version::V3));
        assert!(ratchet.settled("a", Version::V3, 30_000));
        assert!(ratchet.raise("a", Version::V3, 30_000).is_ok());
        assert!(!ratchet.settled("a", Version::V3, 60_000));
        assert!(ratchet.raise("a", Version::V3, 60_000).is_err());
        std::fs::remove_file(&state).unwrap();
        assert!(ratchet.raise("a", Version::V2, 120_000).is_ok());
        assert!(ratchet.settled("a", Version::V3, 180_000));
        let again = Ratchet::open(dir.path()).unwrap();
        assert_eq!(again.seen("a").map(|s| s.version), Some(Version::V3));
    }

    /// A write that stalls (the file's temporary name a FIFO no one reads, here) leaves the
    /// floors readable: every signed post reads them on the runtime's threads.
    #[cfg(unix)]
    #[test]
    fn a_stalled_write_leaves_the_floors_readable() {
        use std::sync::Arc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let fifo = crate::store::temp_of(&state.join("signatures.json"));
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let ratchet = Arc::new(Ratchet::open(dir.path()).unwrap());
        let writer = std::thread::spawn({
            let ratchet = ratchet.clone();
            move || ratchet.raise("a", Version::V3, 0)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let ratchet = ratchet.clone();
            move || {
                // Until the raise has taken the floor, then while it writes.
                while ratchet.seen("a").is_none() {
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_millis(100));
                tx.send(ratchet.settled("a", Version::V3, 0)).unwrap();
            }
        });
        let read = rx.recv_timeout(Duration::from_secs(10));
        // The write goes on once something reads the FIFO (then fails: it is no file).
        let reader = std::fs::File::open(&fifo);
        let _ = writer.join().unwrap();
        drop(reader);
        assert_eq!(
            read,
            Ok(true),
            "the floor could not be read while it was written"
        );
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
