//! The one place the dispatcher touches the model's profiles, kept in memory between ticks.
//!
//! [`model::stored::Cache`] loads the stored profiles once and then adds only event parts that
//! appeared since (storing what they added), so a tick after an import costs in proportion to
//! the new events, not to all history.

use std::path::{Path, PathBuf};

use crate::model::dataset::Built;
use crate::model::stored::{Cache, Update};
use crate::model::{ModelConfig, Profile};

/// Profiles as of the last event part seen.
pub struct ProfileCache {
    data_dir: PathBuf,
    /// The cache and the model config it was built for (as comparable text: it holds floats).
    cache: Option<(Cache, String)>,
}

impl ProfileCache {
    pub fn new(data_dir: &Path) -> ProfileCache {
        ProfileCache {
            data_dir: data_dir.to_path_buf(),
            cache: None,
        }
    }

    /// Add new event parts (or rebuild when the model config changed).
    pub fn refresh(&mut self, config: ModelConfig, now_ms: i64) -> anyhow::Result<()> {
        let key = format!("{config:?}");
        let update = match &mut self.cache {
            Some((cache, k)) if *k == key => match cache.refresh(now_ms) {
                Ok(update) => update,
                Err(e) => {
                    // Some new parts may be in memory already, without being recorded as
                    // read: start from the stored profiles next time, or they count twice.
                    self.cache = None;
                    return Err(e);
                }
            },
            _ => {
                // Dropped first: kept when the open fails, profiles of the old `[model]`
                // answered lookups while planning stopped (a model audit).
                self.cache = None;
                let (cache, update) = Cache::open(&self.data_dir, config, now_ms, false)?;
                self.cache = Some((cache, key));
                update
            }
        };
        log(&update);
        // Planning looks contacts up by key: have the index ready before receipts arrive.
        if let Some(built) = self.built() {
            built.contacts.build_index();
        }
        Ok(())
    }

    /// The profiles and contacts, once built.
    pub fn built(&self) -> Option<&Built> {
        self.cache.as_ref().map(|(c, _)| &c.built)
    }

    /// The population profile (uniform before any events exist).
    pub fn population(&self) -> [f64; crate::time::SLOTS] {
        self.built()
            .map_or([1.0 / crate::time::SLOTS as f64; crate::time::SLOTS], |b| {
                b.profiles.population
            })
    }

    /// The contact's index among the profiles (`None` for a stranger), and in `key` (cleared
    /// first) the contact's key as the model seeds its draws with
    /// ([`crate::datasets::contacts::contact_key`]): planning a million receipts reuses one
    /// buffer instead of allocating a key each. The contact is found by its email, or by its
    /// HubSpot id; known by both, as the entry the model has learnt more of
    /// ([`crate::model::dataset::Built::find`]).
    pub fn find(
        &self,
        contact_id: Option<i64>,
        email: Option<&str>,
        key: &mut String,
    ) -> Option<u32> {
        use std::fmt::Write;
        key.clear();
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        match (email, contact_id) {
            (Some(e), _) => key.extend(e.chars().map(|c| c.to_ascii_lowercase())),
            (None, Some(id)) => {
                let _ = write!(key, "#{id}");
            }
            (None, None) => {}
        }
        self.built()?.find(email.map(|_| key.as_str()), contact_id)
    }

    /// What the model knows on `now_day` about the contact [`ProfileCache::find`] found since
    /// the last [`ProfileCache::refresh`].
    pub fn profile(&self, index: Option<u32>, now_day: i32) -> Option<Profile> {
        let built = self.built()?;
        index.map(|i| built.profiles.profile(Some(i), now_day))
    }
}

fn log(update: &Update) {
    if update.rebuilt || update.new_parts > 0 {
        tracing::info!(
            contacts = update.contacts,
            new_parts = update.new_parts,
            rebuilt = update.rebuilt,
            took_ms = (update.seconds * 1000.0) as u64,
            "profiles updated"
        );
    }
}
