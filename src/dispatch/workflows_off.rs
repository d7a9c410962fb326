//! Workflows found turned off in HubSpot, kept in `state/workflows-off-{connector}.json`
//! (workflow id → what the read said), written as soon as a read changes them, so that the
//! next process (a restart, even after a crash; the next `sendtime tick`; a connector rebuilt
//! for new credentials) reads each before any call to it goes. Holds live in memory, and a
//! workflow that is off takes enrollments and runs none: a forgotten hold would send the due
//! contacts into it until its next read.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Workflow id → why it is held (the read's finding).
pub type Off = BTreeMap<String, String>;

/// Where the workflows `connector` found off are kept.
pub fn path(data_dir: &Path, connector: &str) -> PathBuf {
    data_dir
        .join("state")
        .join(format!("workflows-off-{connector}.json"))
}

/// The workflows found off kept in `path` (none when it does not exist); `None` when it
/// cannot be read (logged), as any workflow may then be off.
pub fn load(path: &Path) -> Option<Off> {
    let read = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| format!("not the JSON sendtime writes: {e}"))
        });
    match read {
        Ok(off) => Some(off),
        Err(_) if !path.exists() => Some(Off::new()),
        Err(e) => {
            tracing::warn!(
                "cannot read {} ({e}): any workflow may have been found turned off, so each is read before its first call",
                path.display()
            );
            None
        }
    }
}

/// Record `off` in `path` (none: the file goes).
pub fn store(path: &Path, off: &Off) -> io::Result<()> {
    if off.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(off).map_err(io::Error::other)?;
    crate::store::write_durably(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_stored_is_loaded_and_an_empty_set_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), "main");
        assert_eq!(load(&file), Some(Off::new()));
        let off = Off::from([(
            "101".to_string(),
            "workflow 101 (W) is turned off".to_string(),
        )]);
        store(&file, &off).unwrap();
        assert_eq!(load(&file), Some(off));
        assert_eq!(load(&path(dir.path(), "other")), Some(Off::new()));
        store(&file, &Off::new()).unwrap();
        assert!(!file.exists());
        // Unreadable: not known.
        std::fs::write(&file, b"{not json").unwrap();
        assert_eq!(load(&file), None);
    }
}
