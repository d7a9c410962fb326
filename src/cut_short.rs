//! The intent file of a command that rewrites receipts with no dispatcher running (`erase`,
//! `discard`): `state/{command}.pending`, written durably before it deletes or moves a row and
//! removed once it is done. While it is there the command was cut short: a dispatcher
//! refuses to start (a receipt half moved or half deleted could be sent), and the command run
//! again finishes what it names.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The commands that leave one, and why a dispatcher must wait for each.
const COMMANDS: [(Command, &str); 2] = [
    (
        Command::Erase,
        "its receipts may be half deleted, and one could be sent",
    ),
    (
        Command::Discard,
        "a receipt whose plan rows moved and inbox row did not would be planned again",
    ),
];

#[derive(Debug, Clone, Copy)]
pub enum Command {
    Erase,
    Discard,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Erase => "erase",
            Command::Discard => "discard",
        }
    }

    /// What it does to rows: "erased", "moved".
    fn done(self) -> &'static str {
        match self {
            Command::Erase => "erased",
            Command::Discard => "moved",
        }
    }

    /// "an erase", "a discard".
    fn one(self) -> &'static str {
        match self {
            Command::Erase => "an erase",
            Command::Discard => "a discard",
        }
    }
}

/// One command's intent file under a data folder.
pub struct Intent {
    pub path: PathBuf,
    command: Command,
}

impl Intent {
    pub fn of(data_dir: &Path, command: Command) -> Intent {
        Intent {
            path: crate::store::state_dir(data_dir).join(format!("{}.pending", command.name())),
            command,
        }
    }

    /// What a run cut short left to do; `how` says what to do if it cannot be read.
    pub fn read<T: DeserializeOwned>(&self, how: &str) -> anyhow::Result<Option<T>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "cannot read {} ({} cut short): {how}",
                    self.path.display(),
                    self.command.one()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    /// Name what the run is about to do, durably, before it deletes or moves a row.
    pub fn write<T: Serialize>(&self, what: &T) -> anyhow::Result<()> {
        crate::store::write_durably(&self.path, &serde_json::to_vec(what)?).with_context(|| {
            format!(
                "cannot write {} (nothing was {} yet)",
                self.path.display(),
                self.command.done()
            )
        })
    }

    /// The run is done. A temporary copy a crash left mid-write goes too (an erase's names
    /// the person).
    pub fn remove(&self) -> anyhow::Result<()> {
        let done = || format!("the {} is done, but not cleared", self.command.name());
        self.remove_copies().with_context(done)?;
        std::fs::remove_file(&self.path)
            .and_then(|()| crate::store::sync_dir(self.folder()))
            .with_context(|| {
                format!(
                    "{}: {} could not be removed: remove it by hand",
                    done(),
                    self.path.display()
                )
            })
    }

    /// The temporary copies of a write cut short; `erase.tmp` is an earlier version's name.
    fn remove_copies(&self) -> anyhow::Result<()> {
        for copy in [
            crate::store::temp_of(&self.path),
            self.path.with_extension("tmp"),
        ] {
            crate::store::remove_if_exists(&copy).with_context(|| {
                format!("{} could not be removed: remove it by hand", copy.display())
            })?;
        }
        Ok(())
    }

    fn folder(&self) -> &Path {
        self.path.parent().expect("an intent file has a folder")
    }
}

/// Stop an import from storing events while an erase is cut short: the person's entry may
/// still be in the contact dictionary beside its blank, and their new events would be stored
/// under it until the erase is run again.
pub fn refuse_to_import(data_dir: &Path) -> anyhow::Result<()> {
    refuse_if_cut_short(
        data_dir,
        Command::Erase,
        "the person's new events could be stored again: import once it is finished",
    )
}

/// Stop a dispatcher from starting on a data folder where a command was cut short. Called
/// under the dispatch lock, which a run writing its intent holds: a copy left by a crash
/// mid-write, with no intent (nothing was done yet), is removed (said if it cannot be). An
/// erase's names the person, and stayed until an erase was run again (an audit).
pub fn refuse_to_dispatch(data_dir: &Path) -> anyhow::Result<()> {
    for (command, why) in COMMANDS {
        refuse_if_cut_short(data_dir, command, why)?;
        // Not a reason to stop: nothing was done.
        if let Err(e) = Intent::of(data_dir, command).remove_copies() {
            tracing::warn!("{e:#}");
        }
    }
    Ok(())
}

/// An error saying `why` if `command` was cut short in `data_dir`.
fn refuse_if_cut_short(data_dir: &Path, command: Command, why: &str) -> anyhow::Result<()> {
    let intent = Intent::of(data_dir, command);
    // An intent that cannot be looked at (a permission, an I/O error) refuses too: taken for
    // none, the dispatcher started on a folder cut short (an audit).
    let cut_short = intent.path.try_exists().with_context(|| {
        format!(
            "cannot tell whether {} was cut short: {} cannot be read",
            command.one(),
            intent.path.display()
        )
    })?;
    anyhow::ensure!(
        !cut_short,
        "{} was cut short ({why}): run `sendtime {}` to finish it ({} names what)",
        command.one(),
        command.name(),
        intent.path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of the intent a crash left mid-write (an erase's names the person) goes when
    /// the run is done, and two files whose names differ after a dot are written through
    /// temporary files of their own.
    #[test]
    fn a_done_run_leaves_no_copy_of_its_intent() {
        let dir = tempfile::tempdir().unwrap();
        let intent = Intent::of(dir.path(), Command::Erase);
        intent.write(&["ann@example.com"]).unwrap();
        let copy = crate::store::temp_of(&intent.path);
        std::fs::write(&copy, "[\"ann@example.com\"").unwrap();
        std::fs::write(intent.path.with_extension("tmp"), "[\"ann@").unwrap();
        intent.remove().unwrap();
        let left: Vec<_> = std::fs::read_dir(intent.folder()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let [main, backup] = ["pause-eu.main", "pause-eu.backup"].map(|n| dir.path().join(n));
        assert_ne!(crate::store::temp_of(&main), crate::store::temp_of(&backup));
        // A run cut short writing its intent did nothing yet: a dispatcher's start removes
        // the copy, and starts.
        std::fs::write(&copy, "[\"ann@example.com\"").unwrap();
        refuse_to_dispatch(dir.path()).unwrap();
        assert!(!copy.exists());
    }
}
