//! Workflows found turned off in HubSpot, kept in `state/workflows-off-{connector}.json`
//! (workflow id → what the read said) so that the next process (a restart, the next `sendtime
//! tick`, a connector rebuilt for new credentials) reads each before any call to it goes.
//! Holds live in memory, and a workflow that is off takes enrollments and runs none: a
//! forgotten hold would send the due contacts into it until its next read.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Workflow id → why it is held (the read's finding).
pub type Off = BTreeMap<String, String>;

fn path(data_dir: &Path, connector: &str) -> PathBuf {
    data_dir
        .join("state")
        .join(format!("workflows-off-{connector}.json"))
}

/// The connector's workflows an earlier process found off. A file that cannot be read names
/// none (logged): each is then read after its first refusal, or ten minutes on.
pub fn load(data_dir: &Path, connector: &str) -> Off {
    let path = path(data_dir, connector);
    let read = std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| format!("not the JSON sendtime writes: {e}"))
        });
    match read {
        Ok(off) => off,
        Err(_) if !path.exists() => Off::new(),
        Err(e) => {
            tracing::warn!(
                connector,
                "cannot read {} ({e}): the workflows found turned off before are not known, so their contacts may be sent before they are read again",
                path.display()
            );
            Off::new()
        }
    }
}

/// Record `off` for the next process (none: the file goes).
pub fn store(data_dir: &Path, connector: &str, off: &Off) -> io::Result<()> {
    let path = path(data_dir, connector);
    if off.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(off).map_err(io::Error::other)?;
    crate::store::write_durably(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_stored_is_loaded_and_an_empty_set_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "main").is_empty());
        let off = Off::from([(
            "101".to_string(),
            "workflow 101 (W) is turned off".to_string(),
        )]);
        store(dir.path(), "main", &off).unwrap();
        assert_eq!(load(dir.path(), "main"), off);
        assert!(load(dir.path(), "other").is_empty());
        store(dir.path(), "main", &Off::new()).unwrap();
        assert!(!path(dir.path(), "main").exists());
        // Unreadable: none known (and said).
        std::fs::write(path(dir.path(), "main"), b"{not json").unwrap();
        assert!(load(dir.path(), "main").is_empty());
    }
}
