//! Connector pauses: a DAILY 429 stops a connector until HubSpot's day is over, and the pause
//! is written under `state/` so the next process (a restart, the next `sendtime tick`) keeps
//! it; a refused token pauses only this process.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::Dispatcher;

impl Dispatcher {
    /// Lift the pauses that are over by `now`.
    pub(super) fn resume_connectors(&mut self, now: i64) {
        for (_, link) in self.links.values() {
            let mut paused = link.paused_until.lock().unwrap();
            if paused.is_some_and(|t| t <= now) {
                *paused = None;
                self.metrics.connector_paused(&link.id).set(0);
                let why = if link.auth_pause.swap(false, Ordering::Relaxed) {
                    "refused-token pause over: trying the token again"
                } else {
                    "daily-limit pause over: sending again"
                };
                tracing::info!(connector = %link.id, "{why}");
            }
        }
    }

    /// A daily-limit pause an earlier run recorded and that is not over yet.
    pub(super) fn stored_pause(&mut self, connector: &str) -> Option<i64> {
        let path = pause_path(&self.data_dir, connector);
        let until = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())?;
        if until > self.clock.now_ms() {
            self.pauses_on_disk.insert(connector.to_string(), until);
            return Some(until);
        }
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Write each connector's daily-limit pause where the next process finds it (and remove
    /// it once over), so a restart or the next `sendtime tick` does not spend a call on
    /// learning again that the limit still holds.
    pub(super) fn store_pauses(&mut self) {
        let changed: Vec<(String, Option<i64>)> = self
            .links
            .iter()
            .map(|(id, (_, link))| (id.clone(), link.daily_pause()))
            .filter(|(id, p)| self.pauses_on_disk.get(id).copied() != *p)
            .collect();
        for (id, until) in changed {
            let path = pause_path(&self.data_dir, &id);
            let written = match until {
                Some(t) => path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| crate::store::write_durably(&path, t.to_string().as_bytes())),
                None => match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            match (written, until) {
                (Ok(()), Some(t)) => {
                    self.pauses_on_disk.insert(id, t);
                }
                (Ok(()), None) => {
                    self.pauses_on_disk.remove(&id);
                }
                (Err(e), _) => tracing::warn!(
                    connector = %id,
                    "cannot record the daily-limit pause in {} (a restart would try HubSpot again before it ends): {e}",
                    path.display()
                ),
            }
        }
    }
}

/// Where a connector's daily-limit pause (epoch ms, as text) outlasts the process.
fn pause_path(data_dir: &Path, connector: &str) -> PathBuf {
    data_dir
        .join("state")
        .join(format!("dispatch-pause-{connector}"))
}
