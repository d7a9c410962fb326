//! The one place the dispatcher touches the model's profile building, cached between ticks.
//!
//! Building profiles reads every event, so it happens only when the events (or the contact
//! dictionary) gain or lose a part file, not every minute. The model's owner may swap what
//! [`model::dataset::build`] does; nothing else here depends on how.

use std::path::{Path, PathBuf};

use crate::events::{contact_key, day_of};
use crate::model::{self, ModelConfig, Profile, dataset::Built};
use crate::store::Dataset;

/// Profiles as of the last change to the events dataset.
pub struct ProfileCache {
    data_dir: PathBuf,
    key: Option<(Vec<PathBuf>, ModelConfigKey)>,
    built: Option<Built>,
}

/// The model config as comparable bits (it holds floats).
type ModelConfigKey = String;

impl ProfileCache {
    pub fn new(data_dir: &Path) -> ProfileCache {
        ProfileCache {
            data_dir: data_dir.to_path_buf(),
            key: None,
            built: None,
        }
    }

    /// Rebuild if the events' part files or the model config changed since the last build.
    pub fn refresh(&mut self, config: ModelConfig, now_ms: i64) -> anyhow::Result<()> {
        let mut parts = Vec::new();
        for name in ["events", "contacts"] {
            parts.extend(Dataset::open(&self.data_dir, name)?.parts()?);
        }
        let key = (parts, format!("{config:?}"));
        if self.key.as_ref() == Some(&key) && self.built.is_some() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let built = model::dataset::build(&self.data_dir, config, now_ms)?;
        tracing::info!(
            contacts = built.contacts.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "profiles rebuilt (events changed)"
        );
        self.built = Some(built);
        self.key = Some(key);
        Ok(())
    }

    /// The population profile (uniform before any events exist).
    pub fn population(&self) -> [f64; crate::events::SLOTS] {
        self.built.as_ref().map_or(
            [1.0 / crate::events::SLOTS as f64; crate::events::SLOTS],
            |b| b.profiles.population,
        )
    }

    /// What the model knows about a contact on the day of `now_ms`; `None` for a stranger.
    pub fn profile(
        &self,
        contact_id: Option<i64>,
        email: Option<&str>,
        now_ms: i64,
    ) -> Option<Profile> {
        let built = self.built.as_ref()?;
        let index = built.contacts.find(contact_id, email)?;
        Some(built.profiles.profile(Some(index), day_of(now_ms)))
    }

    /// The contact's key as the model seeds its draws with.
    pub fn subject_key(contact_id: Option<i64>, email: Option<&str>) -> String {
        contact_key(contact_id, email).unwrap_or_default()
    }
}
