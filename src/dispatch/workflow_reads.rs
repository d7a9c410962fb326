//! What reads of a connector's workflows found, kept under `state/` for the next process (a
//! restart, even after a crash; the next `sendtime tick`; a connector rebuilt for new
//! credentials), each written as soon as a read changes it:
//! - `workflows-off-{connector}.json`: those found turned off (workflow id → what the read
//!   said), which the next process reads before any call to them goes. Holds live in memory,
//!   and a workflow that is off takes enrollments and runs none: a forgotten hold would send
//!   the due contacts into it until its next read.
//! - `workflows-read-{connector}.json`: when each was last found usable, or first called
//!   (workflow id → epoch ms), so that the read every [`crate::hubspot::policy::TARGET_RECHECK_MS`]
//!   comes on time across processes: `sendtime tick` run by cron, or a process restarted
//!   more often than that, would otherwise never make it.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Workflow id → why it is held (the read's finding).
pub type Off = BTreeMap<String, String>;

/// Workflow id → when it was last found usable, or first called (clock ms).
pub type Reads = BTreeMap<String, i64>;

/// Where a connector's findings are kept.
#[derive(Debug, Clone)]
pub struct Files {
    pub off: PathBuf,
    pub reads: PathBuf,
}

/// Where `connector`'s findings are kept under `data_dir`.
pub fn files(data_dir: &Path, connector: &str) -> Files {
    let state = crate::store::state_dir(data_dir);
    Files {
        off: state.join(format!("workflows-off-{connector}.json")),
        reads: state.join(format!("workflows-read-{connector}.json")),
    }
}

/// What `path` keeps (empty when it does not exist); `None` when it cannot be read (logged:
/// what it kept is then unknown).
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Option<T> {
    let read = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| format!("not the JSON sendtime writes: {e}"))
        });
    match read {
        Ok(kept) => Some(kept),
        Err(_) if !path.exists() => Some(T::default()),
        Err(e) => {
            tracing::warn!(
                "cannot read {} ({e}): any workflow may have been found turned off or be due a read, so each is read before its first call",
                path.display()
            );
            None
        }
    }
}

/// Record `kept` in `path` (when empty, the file goes).
pub fn store<T: Serialize>(path: &Path, kept: &BTreeMap<String, T>) -> io::Result<()> {
    if kept.is_empty() {
        return crate::store::remove_if_exists(path);
    }
    let bytes = serde_json::to_vec_pretty(kept).map_err(io::Error::other)?;
    crate::store::write_durably(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_stored_is_loaded_and_an_empty_set_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = files(dir.path(), "main");
        assert_eq!(load(&main.off), Some(Off::new()));
        let off = Off::from([(
            "101".to_string(),
            "workflow 101 (W) is turned off".to_string(),
        )]);
        store(&main.off, &off).unwrap();
        assert_eq!(load(&main.off), Some(off));
        assert_eq!(load(&files(dir.path(), "other").off), Some(Off::new()));
        let reads = Reads::from([("101".to_string(), 1_800_000_000_000)]);
        store(&main.reads, &reads).unwrap();
        assert_eq!(load(&main.reads), Some(reads));
        store(&main.off, &Off::new()).unwrap();
        assert!(!main.off.exists());
        // Unreadable: not known.
        std::fs::write(&main.off, b"{not json").unwrap();
        assert_eq!(load::<Off>(&main.off), None);
    }
}
