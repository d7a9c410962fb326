//! Durable file operations the datasets and the small state files share: writes that survive
//! power loss, folders made and removed durably, lock files, the data folder itself.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// `dir` as the folder it names now, symlinks resolved (as far as it exists): what `serve`
/// keeps for its life, so that a symlink a deploy swaps meanwhile (`current -> releases/N`)
/// does not move its data under it.
pub fn physical(dir: &Path) -> PathBuf {
    let mut rest = Vec::new();
    for base in dir.ancestors() {
        if let Ok(real) = fs::canonicalize(base) {
            return rest.iter().rev().fold(real, |path, name| path.join(name));
        }
        match base.file_name() {
            Some(name) => rest.push(name),
            None => break,
        }
    }
    dir.to_path_buf()
}

/// The data folder's `state/`: the small files one process leaves the next (pauses, the
/// signature ratchet, imports' cursors, the scheduler's last fire, commands' intents).
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state")
}

/// The data directory, created if needed readable by its owner only: it holds contacts'
/// emails. One that exists keeps the permissions it has. Called by the commands that may
/// create it (`serve`, `import`, `gen`) before anything else writes there. The topmost
/// folder this call created (the directory, or a parent that did not exist), if any: of two
/// calls at once, one creates each.
pub fn create_data_dir(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    let cannot = || format!("cannot create the data directory {}", dir.display());
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    let mut topmost = None;
    for (i, folder) in missing.iter().enumerate().rev() {
        let mode = if i == 0 { 0o700 } else { 0o777 };
        match fs::DirBuilder::new().mode(mode).create(folder) {
            Ok(()) => {
                // Durable in its parent: every acknowledged receipt will be under it.
                sync_parent(folder).with_context(cannot)?;
                topmost.get_or_insert_with(|| folder.to_path_buf());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && folder.is_dir() => {}
            Err(e) => return Err(e).with_context(cannot),
        }
    }
    anyhow::ensure!(dir.is_dir(), "{}: not a directory", cannot());
    Ok(topmost)
}

/// Remove a data directory a failed command created, when it holds nothing but folders and
/// lock files nobody holds: a mistyped `--data` leaves no trace, a partial import (HubSpot's
/// pages are kept as they come) is kept, and so is a folder another process started using.
pub fn remove_if_unused(dir: &Path) {
    /// Folders deepest first, and lock files; `None` when anything else is there.
    fn contents(dir: &Path, dirs: &mut Vec<PathBuf>, locks: &mut Vec<PathBuf>) -> Option<()> {
        for entry in fs::read_dir(dir).ok()? {
            let entry = entry.ok()?;
            let path = entry.path();
            if entry.file_type().ok()?.is_dir() {
                contents(&path, dirs, locks)?;
            } else if path.extension().is_some_and(|e| e == "lock") {
                locks.push(path);
            } else {
                return None;
            }
        }
        dirs.push(dir.to_path_buf());
        Some(())
    }
    let (mut dirs, mut locks) = (Vec::new(), Vec::new());
    if contents(dir, &mut dirs, &mut locks).is_none() {
        return;
    }
    // Held while they are removed: a lock another process holds keeps everything.
    let mut held = Vec::new();
    for path in &locks {
        match File::open(path).map(|f| f.try_lock().map(|()| f)) {
            Ok(Ok(f)) => held.push(f),
            _ => return,
        }
    }
    for path in &locks {
        let _ = fs::remove_file(path);
    }
    // A folder something was written to since is not empty: it stays.
    for d in &dirs {
        let _ = fs::remove_dir(d);
    }
}

/// The lock file at `path`, created (with its folder) if needed, for `try_lock` or `lock`:
/// the lock lasts while the returned file is open. An existing one is opened read-only, which
/// a lock needs no more than: one left by another user (a `sudo sendtime pause`) still serves.
pub fn lock_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent() {
        create_dir_durably(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match File::open(path) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            File::create(path).with_context(|| format!("cannot create {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot open {}", path.display())),
    }
}

/// Remove the file at `path`; one already gone is no error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write a small file so that it survives power loss once this returns (its folder made
/// durably if missing).
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = folder_of(path);
    create_dir_durably(dir)?;
    let tmp = temp_of(path);
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// The folder `path` is in; a bare file name's is the current one.
pub fn folder_of(path: &Path) -> &Path {
    (path.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary file [`write_durably`] writes `path` through: its whole name and `.tmp`
/// (`pause-eu.main` and `pause-eu.backup` shared one before, an audit).
pub fn temp_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Whether `path` is a folder; a look that fails other than "not found" is an error, not
/// "no folder" (an audit: an unreadable `archive/` was skipped by an erase that then said
/// it was done).
pub fn is_dir(path: &Path) -> anyhow::Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.is_dir()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot look at {}", path.display())),
    }
}

/// Whether `path` exists, as [`is_dir`]: a failed look is an error.
pub fn exists(path: &Path) -> anyhow::Result<bool> {
    path.try_exists()
        .with_context(|| format!("cannot look at {}", path.display()))
}

/// fsync a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` and the folders above it that are missing, each made durable in its parent:
/// files made durable inside a folder whose own entry was not could vanish with it.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync_parent(created)?;
    }
    Ok(())
}

/// Make the folder `created` durable in its parent.
fn sync_parent(created: &Path) -> io::Result<()> {
    let parent = created.parent().filter(|p| !p.as_os_str().is_empty());
    match sync_dir(parent.unwrap_or(Path::new("."))) {
        // A parent this user may enter but not read (0711) cannot be opened to sync.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}
