//! The webhooks whose backlog the ledgers were last built without (paused, their target or
//! kind of call held, out of the config), or that a tick found held since: when the ledgers
//! are built with it, it is booked after the rest ([`super::Dispatcher::capacities`]). Kept in
//! `state/dispatch-unbooked`, one id a line (in memory only, the next process, `sendtime
//! tick` or a restart, booked it first, as the oldest, and moved the contacts at their planned
//! minutes later).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A longer file is not one this build wrote: read as empty.
const MAX_BYTES: u64 = 1 << 20;

pub(super) struct Unbooked {
    path: PathBuf,
    ids: HashSet<String>,
    /// What the file holds, as last read or written.
    saved: HashSet<String>,
    write_errors: crate::throttle::Throttle,
}

impl Unbooked {
    /// The set the last process left in `data_dir` (none if unreadable: booked in due order).
    pub(super) fn open(data_dir: &Path) -> Unbooked {
        let path = crate::store::state_dir(data_dir).join("dispatch-unbooked");
        let saved: HashSet<String> = std::fs::metadata(&path)
            .ok()
            .filter(|m| m.len() <= MAX_BYTES)
            .and_then(|_| std::fs::read_to_string(&path).ok())
            .map(|text| text.lines().map(String::from).collect())
            .unwrap_or_default();
        Unbooked {
            path,
            ids: saved.clone(),
            saved,
            write_errors: Default::default(),
        }
    }

    /// Whether `webhook` is new to the set.
    pub(super) fn insert(&mut self, webhook: &str) -> bool {
        !self.ids.contains(webhook) && self.ids.insert(webhook.to_string())
    }

    pub(super) fn take(&mut self) -> HashSet<String> {
        std::mem::take(&mut self.ids)
    }

    pub(super) fn set(&mut self, ids: HashSet<String>) {
        self.ids = ids;
    }

    /// Written when it changed, keeping only the webhooks `known` (the config's, and those of
    /// receipts held for one it lacks).
    pub(super) fn save(&mut self, known: impl Fn(&str) -> bool) {
        self.ids.retain(|w| known(w));
        if self.ids == self.saved {
            return;
        }
        let mut ids: Vec<&String> = self.ids.iter().collect();
        ids.sort();
        let text: String = ids.iter().map(|w| format!("{w}\n")).collect();
        match crate::store::write_durably(&self.path, text.as_bytes()) {
            Ok(()) => self.saved = self.ids.clone(),
            Err(e) => {
                if let Some(suppressed) = self.write_errors.due() {
                    tracing::warn!(
                        suppressed,
                        "cannot record which webhooks' backlogs were held in {} (the next process books them before the contacts at their planned minutes): {e}",
                        self.path.display()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_process_reads_what_this_one_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Unbooked::open(dir.path());
        assert!(first.take().is_empty());
        first.set(["a".to_string(), "gone".to_string()].into());
        first.insert("b");
        first.save(|w| w != "gone");
        let mut second = Unbooked::open(dir.path());
        assert_eq!(second.take(), ["a".to_string(), "b".to_string()].into());
        second.save(|_| true);
        assert!(Unbooked::open(dir.path()).take().is_empty());
    }
}
