//! The data folder's locks: one dispatcher (`serve` or `tick`) per folder, and the lock of
//! the commands that rewrite it (`erase`, `discard`), whose dry runs may count beside a
//! dispatcher but never beside one of them at work.

use std::path::Path;
use std::time::Duration;

use crate::store::lock_file;

/// The data folder's dispatch lock: one dispatcher (`serve` or `tick`) per folder.
const LOCK: &str = "dispatch.lock";

/// Whether the dispatch lock of `data_dir` is held: a `serve` or `tick` dispatching, or an
/// `erase` or `discard` at work.
pub fn dispatching(data_dir: &Path) -> anyhow::Result<bool> {
    let lock = lock_file(&data_dir.join(LOCK))?;
    Ok(lock.try_lock_shared().is_err())
}

/// [`dispatching`], making nothing: false when the folder or its lock file is not there, or
/// the lock cannot be read.
pub fn dispatching_now(data_dir: &Path) -> bool {
    let path = data_dir.join(LOCK);
    path.is_file() && dispatching(data_dir).unwrap_or(false)
}

/// What a command refused for the dispatch lock of `data_dir` says, with `why` it must not
/// run beside the holder.
pub fn held(data_dir: &Path, why: &str) -> String {
    format!(
        "another sendtime (serve, tick, erase or discard) holds {}; stop it or let it finish first ({why})",
        data_dir.display()
    )
}

/// Take the data folder's dispatch lock, held while the file is open; an error saying `why`
/// when a `serve`, `tick`, `erase` or `discard` holds it.
pub fn lock(data_dir: &Path, why: &str) -> anyhow::Result<std::fs::File> {
    let lock = lock_file(&data_dir.join(LOCK))?;
    // Tried for a moment: `sendtime pause` looks at the lock ([`dispatching`]) for as long
    // as taking and letting it go takes.
    let mut tries = 0;
    while lock.try_lock().is_err() {
        tries += 1;
        anyhow::ensure!(tries < 20, "{}", held(data_dir, why));
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(lock)
}

/// Held by `erase` and `discard` (taken before the dispatch lock, let go after it): the
/// dispatch lock alone does not say whether a dispatcher or one of them holds it.
const ERASE_DISCARD_LOCK: &str = "erase-discard.lock";

/// What `erase` and `discard` hold while they run ([`lock_rewriting`]).
pub struct Rewriting {
    /// A dry run beside a running `serve` or `tick`: it counts the parts as they are and
    /// leaves recovering the folder, which is the dispatcher's, alone.
    pub beside: bool,
    /// Let go in order: the dispatch lock first.
    _locks: Vec<std::fs::File>,
}

/// The locks of a command that rewrites the folder (`erase`, `discard`): its own lock
/// and the dispatch lock; for its dry run beside a running `serve` or `tick`, its own lock
/// shared alone. An error saying `why` when another holds them.
pub fn lock_rewriting(data_dir: &Path, dry_run: bool, why: &str) -> anyhow::Result<Rewriting> {
    let own = lock_file(&data_dir.join(ERASE_DISCARD_LOCK))?;
    // No erase or discard at work (they hold it alone), and the dispatch lock held: by a
    // dispatcher. (A dry run beside a running erase read it half-way through its rewrite.)
    if dry_run && own.try_lock_shared().is_ok() && dispatching(data_dir)? {
        return Ok(Rewriting {
            beside: true,
            _locks: vec![own],
        });
    }
    anyhow::ensure!(
        own.try_lock().is_ok(),
        "another erase or discard (or its dry run) is at work on {}; let it finish first ({why})",
        data_dir.display()
    );
    let dispatch = lock(data_dir, why)?;
    Ok(Rewriting {
        beside: false,
        _locks: vec![dispatch, own],
    })
}

/// Said under a dry run counted beside a running dispatcher ([`lock_rewriting`]).
pub const COUNTED_BESIDE: &str = "counted beside a running serve or tick, from the rows it has written: a post of the last second may not be counted yet";
