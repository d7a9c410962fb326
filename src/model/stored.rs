//! Stored profiles (`{data_dir}/profiles/`), updated incrementally as event parts arrive.
//!
//! Counts decayed to a fixed reference day are additive, so an update reads only the event
//! parts it has not seen, and stores what they add as a sparse delta part (contact, slot,
//! weight) plus a stats part; loading sums the deltas. A full rebuild happens only when the
//! model's decay or click weight changes, an included event part disappears, the reference day
//! is more than 30 days old (decay is re-applied on that slower cadence), or `--rebuild` asks. `state.json` (written durably, last) says which parts are included, so a crash
//! mid-update leaves the previous state in force. Processes (`serve`, `sendtime profiles`)
//! take turns on `profiles.lock` to read or write the folder ([`lock`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use super::ModelConfig;
use super::calibrate::Fit;
use super::dataset::{self, Built};
use super::profile::{Delta, Profiles, Stats};
use crate::datasets::contacts::Contacts;
use crate::datasets::events;
use crate::store::{read_part, write_durably};
use crate::time::{SLOTS, day_of};

/// Counts are re-decayed (a full rebuild at today's reference day) this often, so weights of
/// new events, which grow with their distance from the reference day, stay in range.
pub(super) const REBASE_DAYS: i32 = 30;

/// The profiles' folder in the data folder.
pub const NAME: &str = "profiles";
/// The ends of a delta's two files' names (`delta-<ulid>.weights.parquet`): each contact's
/// slot weights, and its counts.
const WEIGHTS: &str = "weights.parquet";
const STATS: &str = "stats.parquet";

/// The columns of a delta's files.
mod col {
    /// Both files': the contact's index in the dictionary (`u32`).
    pub const CONTACT: &str = "contact";
    /// The weights': hour of week (`u8`) and its decayed weight (`f32`).
    pub const SLOT: &str = "slot";
    pub const WEIGHT: &str = "weight";
    /// The stats' ([`super::Stats`]).
    pub const ENGAGEMENTS: &str = "engagements";
    pub const ACTIVE_DAYS: &str = "active_days";
    pub const FIRST_DAY: &str = "first_day";
    pub const LAST_DAY: &str = "last_day";
    pub const FAST: &str = "fast";
    pub const SLOW: &str = "slow";
}

/// Event parts past which a refresh merges the small ones ([`Cache::compact_events`]).
const COMPACT_PARTS: usize = 64;
/// Stored deltas past which a refresh stores the profiles as one.
const MAX_DELTAS: usize = 64;
/// Builds a rebuild makes while parts it read vanish before it stores (an erase, a merge):
/// then it stores what it has, as the next update sees the part gone and rebuilds.
const REBUILD_TRIES: usize = 3;

/// How the stored profiles are counted and fitted: bumped when either changes, so that
/// profiles a former build stored are built again rather than extended (0: stored before it
/// was kept; an audit found a build's fixed fit loaded as it was by the next).
const MODEL_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    /// [`MODEL_VERSION`] of the build that stored them.
    #[serde(default)]
    model: u32,
    reference_day: i32,
    half_life_days: f64,
    click_weight: f64,
    /// Event part file names already counted.
    parts: Vec<String>,
    /// Delta files (weights and stats) whose sum is the profiles.
    deltas: Vec<String>,
    /// The knobs fitted at the last rebuild, and for which `[model]` settings.
    #[serde(default)]
    fit: Option<Fit>,
    #[serde(default)]
    fit_for: String,
    /// Opens and clicks counted when the fit was made: one that found too little data is
    /// made again at a rebuild once they have doubled ([`State::refit_due`]).
    #[serde(default)]
    engagements_at_fit: u64,
}

/// What an update did, for logs and the `profiles` command.
#[derive(Debug, Clone)]
pub struct Update {
    pub rebuilt: bool,
    pub new_parts: usize,
    pub contacts: usize,
    /// Reading events into profiles.
    pub build_seconds: f64,
    /// The whole update, storing included.
    pub seconds: f64,
}

/// Bring the stored profiles up to date with the events dataset and return them.
pub fn update(
    data_dir: &Path,
    config: ModelConfig,
    now_ms: i64,
    rebuild: bool,
) -> anyhow::Result<(Built, Update)> {
    let (cache, update) = Cache::open(data_dir, config, now_ms, rebuild)?;
    Ok((cache.built, update))
}

/// Delete the stored profiles (an erase whose config does not validate, so that no model
/// settings say how to rebuild them): the next update rebuilds them from the events.
/// `state.json` goes first, so a delete cut short leaves files no state names.
pub fn delete(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.join(NAME);
    if !crate::store::is_dir(&dir)? {
        return Ok(());
    }
    let _writing = lock(&dir)?;
    crate::store::remove_if_exists(&dir.join("state.json"))
        .with_context(|| format!("cannot remove {}", dir.join("state.json").display()))?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_file() && p.file_name().is_some_and(|n| n != "profiles.lock") {
            crate::store::remove_if_exists(&p)
                .with_context(|| format!("cannot remove old profiles {}", p.display()))?;
        }
    }
    crate::store::sync_dir(&dir)?;
    Ok(())
}

/// Profiles kept in memory by a long-running process: [`Cache::refresh`] adds only event
/// parts that appeared since, and stores what they added.
pub struct Cache {
    data_dir: PathBuf,
    config: ModelConfig,
    state: State,
    pub built: Built,
}

impl Cache {
    /// Load the stored profiles (rebuilding them when they cannot be used) and add new parts.
    pub fn open(
        data_dir: &Path,
        config: ModelConfig,
        now_ms: i64,
        rebuild: bool,
    ) -> anyhow::Result<(Cache, Update)> {
        let started = Instant::now();
        let dir = data_dir.join(NAME);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let on_disk = event_parts(data_dir)?;
        let reading = lock(&dir)?;
        let state = stored_state(&dir);
        // What a writer killed mid-write left (never stored while another holds the lock).
        if let Some(state) = &state
            && let Err(e) = remove_unnamed(&dir, state)
        {
            tracing::warn!("{e:#}");
        }
        let usable = state.filter(|s| !rebuild && s.usable(config, now_ms, &on_disk));
        let Some(state) = usable else {
            drop(reading);
            return Self::rebuild(data_dir, config, now_ms, on_disk, started);
        };
        let contacts = Contacts::load(data_dir)?;
        let loaded = load(&dir, &state, config, contacts.len());
        drop(reading);
        let profiles = match loaded {
            Ok(p) => p,
            Err(e) => {
                // Stored profiles are derived data: rebuild rather than fail.
                tracing::warn!("stored profiles unreadable, rebuilding: {e:#}");
                return Self::rebuild(data_dir, config, now_ms, on_disk, started);
            }
        };
        let seen = profiles.stats.iter().map(|s| s.engagements > 0).collect();
        let mut cache = Cache {
            data_dir: data_dir.to_path_buf(),
            config,
            state,
            built: Built {
                contacts,
                profiles,
                seen,
            },
        };
        let Some(mut update) = cache.add_new_parts(on_disk, now_ms, started)? else {
            // Another process stored profiles meanwhile: read them.
            return Self::open(data_dir, config, now_ms, rebuild);
        };
        update.seconds = started.elapsed().as_secs_f64();
        Ok((cache, update))
    }

    /// Add the event parts that appeared since the last refresh (or rebuild, when the stored
    /// profiles can no longer be extended).
    pub fn refresh(&mut self, now_ms: i64) -> anyhow::Result<Update> {
        let started = Instant::now();
        // Another process stored profiles since (`sendtime profiles --rebuild` beside
        // `serve`): extending these would name its deltas no more, and delete them. Theirs
        // are taken instead.
        if !self.stored_here() {
            let (fresh, update) = Self::open(&self.data_dir, self.config, now_ms, false)?;
            *self = fresh;
            return Ok(update);
        }
        let on_disk = event_parts(&self.data_dir)?;
        if !self.state.usable(self.config, now_ms, &on_disk) {
            let (fresh, update) =
                Self::rebuild(&self.data_dir, self.config, now_ms, on_disk, started)?;
            *self = fresh;
            return Ok(update);
        }
        match self.add_new_parts(on_disk, now_ms, started)? {
            Some(update) => Ok(update),
            None => {
                let (fresh, update) = Self::open(&self.data_dir, self.config, now_ms, false)?;
                *self = fresh;
                Ok(update)
            }
        }
    }

    fn rebuild(
        data_dir: &Path,
        config: ModelConfig,
        now_ms: i64,
        on_disk: Vec<String>,
        started: Instant,
    ) -> anyhow::Result<(Cache, Update)> {
        let dir = data_dir.join(NAME);
        let events_dir = data_dir.join(events::NAME);
        let mut on_disk = on_disk;
        let mut tries = 0;
        let (built, build_seconds, _writing) = loop {
            // From exactly the parts the state will name: a part written since they were
            // listed is left for the next update, not counted now and again then.
            let parts: Vec<PathBuf> = on_disk.iter().map(|p| events_dir.join(p)).collect();
            let built = dataset::build_from(data_dir, config, day_of(now_ms), i64::MAX, &parts)?;
            let build_seconds = started.elapsed().as_secs_f64();
            let writing = lock(&dir)?;
            // A part read and since rewritten (an erase, a merge): these profiles may hold
            // rows that are gone, and stored they would stay until the next rebuild. Built
            // again from the parts there now, a few times at most.
            tries += 1;
            if tries < REBUILD_TRIES && parts.iter().any(|p| !p.exists()) {
                drop(writing);
                on_disk = event_parts(data_dir)?;
                continue;
            }
            break (built, build_seconds, writing);
        };
        let delta = write_delta(&dir, Delta::of(&built.profiles))?;
        let state = State {
            model: MODEL_VERSION,
            reference_day: built.profiles.reference_day,
            half_life_days: config.params.half_life_days,
            click_weight: config.params.click_weight,
            parts: on_disk.clone(),
            deltas: vec![delta],
            fit: built.profiles.fit,
            fit_for: fit_for(config),
            engagements_at_fit: engagements(&built.profiles),
        };
        commit_state(&dir, &state)?;
        drop(_writing);
        let update = Update {
            rebuilt: true,
            new_parts: on_disk.len(),
            contacts: built.contacts.len(),
            build_seconds,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut cache = Cache {
            data_dir: data_dir.to_path_buf(),
            config,
            state,
            built,
        };
        cache.compact_if_many(on_disk.len());
        Ok((cache, update))
    }

    /// `None` when another process stored profiles meanwhile (nothing is written then, and
    /// these profiles hold the new parts unrecorded: the caller reads the stored ones).
    fn add_new_parts(
        &mut self,
        on_disk: Vec<String>,
        now_ms: i64,
        started: Instant,
    ) -> anyhow::Result<Option<Update>> {
        let dir = self.data_dir.join(NAME);
        let included: HashSet<&String> = self.state.parts.iter().collect();
        let events_dir = self.data_dir.join(events::NAME);
        let new_parts: Vec<PathBuf> = on_disk
            .iter()
            .filter(|p| !included.contains(p))
            .map(|p| events_dir.join(p))
            .collect();
        let mut build_seconds = 0.0;
        if !new_parts.is_empty() {
            let built = &mut self.built;
            if Contacts::count(&self.data_dir)? > built.contacts.len() {
                built.contacts = Contacts::load(&self.data_dir)?;
            }
            let n = built.contacts.len();
            built.profiles.grow(n);
            built.seen.resize(n.max(built.seen.len()), false);
            // New events go straight into the profiles in memory; what they added is kept
            // sparsely for the stored delta.
            let mut delta = Delta::default();
            dataset::add_parts(
                &self.data_dir,
                &new_parts,
                &mut built.profiles,
                &mut built.seen,
                i64::MAX,
                Some(&mut delta),
                None,
            )?;
            built.profiles.refresh_population();
            build_seconds = started.elapsed().as_secs_f64();
            let _writing = lock(&dir)?;
            // Checked again under the lock: the caller then reads the stored profiles.
            if !self.stored_here() {
                return Ok(None);
            }
            // A part just read has gone since (an erase): what it added may be gone too. A
            // fit that had too little data is made again once there is more: kept until the
            // 30-day rebuild, a history imported into a running `serve` went unfitted.
            let refit = self.state.refit_due(engagements(&self.built.profiles));
            if refit || new_parts.iter().any(|p| !p.exists()) {
                drop(_writing);
                let (fresh, update) = Self::rebuild(
                    &self.data_dir,
                    self.config,
                    now_ms,
                    event_parts(&self.data_dir)?,
                    started,
                )?;
                *self = fresh;
                return Ok(Some(update));
            }
            // Loading sums every delta: past MAX_DELTAS the profiles are stored whole, as one.
            if self.state.deltas.len() >= MAX_DELTAS {
                self.state.deltas = vec![write_delta(&dir, Delta::of(&self.built.profiles))?];
            } else {
                self.state.deltas.push(write_delta(&dir, delta)?);
            }
            self.state
                .parts
                .extend(new_parts.iter().filter_map(|p| file_name(p)));
            commit_added(&dir, &self.state)?;
        }
        // Every refresh: a merge's sources go once their grace is over, new parts or none.
        self.compact_if_many(on_disk.len());
        Ok(Some(Update {
            rebuilt: false,
            new_parts: new_parts.len(),
            contacts: self.built.contacts.len(),
            build_seconds,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }
}

impl Cache {
    /// [`Self::compact_events`], merging once the events dataset has more than
    /// [`COMPACT_PARTS`] `parts`; a failure is logged, and the next refresh tries again.
    fn compact_if_many(&mut self, parts: usize) {
        if let Err(e) = self.compact_events(parts > COMPACT_PARTS) {
            tracing::warn!("cannot compact the events and contacts datasets (will retry): {e:#}");
        }
    }

    /// Merge the small parts of the events and contacts datasets (an import from HubSpot
    /// writes one a page: tens of thousands a year, each read by every full rebuild, lift
    /// report and contact lookup), when `merge`; first, remove the sources earlier rounds
    /// left (hidden since, and left a while for readers that listed them before). Only event
    /// parts these profiles include are merged, and the merged part takes their place in the
    /// state, so no rebuild follows. Skipped while an import writes (it holds the events
    /// lock).
    fn compact_events(&mut self, merge: bool) -> anyhow::Result<()> {
        let Some(_appending) = events::try_lock(&self.data_dir)? else {
            return Ok(());
        };
        let dataset = events::dataset(&self.data_dir)?;
        let contacts = crate::datasets::contacts::dataset(&self.data_dir)?;
        dataset.finish_compactions()?;
        contacts.finish_compactions()?;
        if !merge {
            return Ok(());
        }
        let included: HashSet<&str> = self.state.parts.iter().map(String::as_str).collect();
        let skip: HashSet<PathBuf> = dataset
            .parts()?
            .into_iter()
            .filter(|p| file_name(p).is_none_or(|n| !included.contains(n.as_str())))
            .collect();
        let merged = dataset.compact(&|p| skip.contains(p))?;
        if contacts.parts()?.len() > COMPACT_PARTS {
            contacts.compact(&|_| false)?;
        }
        let Some(merged) = merged else {
            return Ok(());
        };
        let dir = self.data_dir.join(NAME);
        let _writing = lock(&dir)?;
        // Another process's profiles: it finds the merged parts gone and rebuilds.
        if !self.stored_here() {
            return Ok(());
        }
        let sources: HashSet<String> = merged.sources.iter().filter_map(|p| file_name(p)).collect();
        // Taken once stored: a state not stored would differ from the disk's, and the next
        // refresh would take the disk's for another process's and rebuild (a review).
        let mut state = self.state.clone();
        state.parts.retain(|p| !sources.contains(p));
        state.parts.extend(file_name(&merged.part));
        commit_added(&dir, &state)?;
        self.state = state;
        Ok(())
    }

    /// Whether the stored profiles are still the ones this cache last read or wrote: the same
    /// deltas over the same parts (another process's merge of parts, adding no delta, left
    /// this state naming parts gone, and the next refresh rebuilt everything; an audit).
    fn stored_here(&self) -> bool {
        let dir = self.data_dir.join(NAME);
        stored_state(&dir)
            .is_some_and(|s| s.deltas == self.state.deltas && s.parts == self.state.parts)
    }
}

/// Opens and clicks the profiles hold.
fn engagements(profiles: &Profiles) -> u64 {
    profiles
        .stats
        .iter()
        .map(|s| u64::from(s.engagements))
        .sum()
}

/// The stored profiles' state, if readable.
fn stored_state(dir: &Path) -> Option<State> {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

impl State {
    /// Whether a fit that found too little data should be made again, the profiles now
    /// holding `engagements` opens and clicks: once they reach what a fit needs, then each
    /// time they double (a rebuild each time: a few over any account's life).
    fn refit_due(&self, engagements: u64) -> bool {
        let unfitted = self.fit.as_ref().is_some_and(|f| !f.fitted);
        // Short of what a fit needs: as soon as that is reached (doubling from 150 waited
        // for 300, an audit found, where the README says 200).
        let need = super::calibrate::MIN_EVENTS as u64;
        let enough = match self.engagements_at_fit < need {
            true => need,
            false => 2 * self.engagements_at_fit,
        };
        unfitted && engagements >= enough
    }

    /// Whether these stored profiles can be extended rather than rebuilt: decayed to a day
    /// at most [`REBASE_DAYS`] ago (never a later one, which a run with a clock ahead, `tick
    /// --now`, leaves behind), by this build's model, with the same knobs, from parts all still
    /// there.
    fn usable(&self, config: ModelConfig, now_ms: i64, on_disk: &[String]) -> bool {
        let on_disk: HashSet<&str> = on_disk.iter().map(String::as_str).collect();
        self.model == MODEL_VERSION
            && (0..=REBASE_DAYS).contains(&(day_of(now_ms) - self.reference_day))
            && self.half_life_days == config.params.half_life_days
            && self.click_weight == config.params.click_weight
            && self.fit_for == fit_for(config)
            && self.parts.iter().all(|p| on_disk.contains(p.as_str()))
    }
}

/// The fit the stored profiles hold, while `config` at `now_ms` would extend them rather than
/// rebuild: the knobs `serve` plans with, which fits again only on a rebuild. Read only.
pub fn fit_in_use(
    data_dir: &Path,
    config: ModelConfig,
    now_ms: i64,
) -> anyhow::Result<Option<super::calibrate::Fit>> {
    let Some(state) = std::fs::read(data_dir.join(NAME).join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
    else {
        return Ok(None);
    };
    let on_disk = event_parts(data_dir)?;
    Ok(state.fit.filter(|_| state.usable(config, now_ms, &on_disk)))
}

fn event_parts(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(events::dataset(data_dir)?
        .parts()?
        .iter()
        .filter_map(|p| file_name(p))
        .collect())
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name()?.to_str().map(str::to_string)
}

/// Sum the stored deltas into dense profiles.
fn load(
    dir: &Path,
    state: &State,
    config: ModelConfig,
    contacts: usize,
) -> anyhow::Result<Profiles> {
    let mut p = Profiles::new(config, contacts, state.reference_day);
    for name in &state.deltas {
        let mut w = read_part(&dir.join(format!("{name}.{WEIGHTS}")))?;
        w.rechunk_mut();
        let c = w.column(col::CONTACT)?.u32()?.cont_slice()?;
        let s = w.column(col::SLOT)?.u8()?.cont_slice()?;
        let v = w.column(col::WEIGHT)?.f32()?.cont_slice()?;
        if let Some(max) = c.iter().max() {
            p.grow(*max as usize + 1);
        }
        for ((c, s), v) in c.iter().zip(s).zip(v) {
            if (*s as usize) < SLOTS {
                p.weights[*c as usize].add(*s as usize, *v);
            }
        }
        let mut st = read_part(&dir.join(format!("{name}.{STATS}")))?;
        st.rechunk_mut();
        let u32s = |n: &str| -> anyhow::Result<Vec<u32>> {
            Ok(st.column(n)?.u32()?.cont_slice()?.to_vec())
        };
        let i32s = |n: &str| -> anyhow::Result<Vec<i32>> {
            Ok(st.column(n)?.i32()?.cont_slice()?.to_vec())
        };
        let f32s = |n: &str| -> anyhow::Result<Vec<f32>> {
            Ok(st.column(n)?.f32()?.cont_slice()?.to_vec())
        };
        let (c, e, a) = (
            u32s(col::CONTACT)?,
            u32s(col::ENGAGEMENTS)?,
            u32s(col::ACTIVE_DAYS)?,
        );
        let (f, l) = (i32s(col::FIRST_DAY)?, i32s(col::LAST_DAY)?);
        let (fa, sl) = (f32s(col::FAST)?, f32s(col::SLOW)?);
        if let Some(max) = c.iter().max() {
            p.grow(*max as usize + 1);
        }
        for i in 0..c.len() {
            p.stats[c[i] as usize].merge(&Stats {
                engagements: e[i],
                active_days: a[i],
                first_day: f[i],
                last_day: l[i],
                fast: fa[i],
                slow: sl[i],
            });
        }
    }
    // The fitted bandwidth before the population is made, once.
    if let Some(fit) = state.fit {
        p.set_fit(fit);
    }
    p.loaded();
    Ok(p)
}

/// The `[model]` settings a stored fit depends on (other ones fit again, on a rebuild): the
/// knobs fitted and who is machine-like (left out of the fit and the population).
fn fit_for(config: ModelConfig) -> String {
    let (p, t) = (config.params, config.thresholds);
    format!(
        "{:?} {} {} {} {}",
        config.auto, p.prior_strength, p.hour_bandwidth, t.machine_per_day, t.machine_per_year
    )
}

/// Take `profiles.lock` in `dir`, held while the returned file is open: a reader must not
/// see a delta removed under it, and one writer's commit must not remove the delta another
/// has written and not yet committed.
fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("profiles.lock");
    let file = crate::store::lock_file(&path)?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// Write a delta as its pair of Parquet files; returns the pair's name.
fn write_delta(dir: &Path, delta: Delta) -> anyhow::Result<String> {
    let name = format!("delta-{}", Ulid::generate());
    let mut weights = DataFrame::new(
        delta.contact.len(),
        vec![
            Column::new(col::CONTACT.into(), delta.contact),
            Column::new(col::SLOT.into(), delta.slot),
            Column::new(col::WEIGHT.into(), delta.weight),
        ],
    )?;
    let stats = &delta.stats;
    let mut st = DataFrame::new(
        stats.len(),
        vec![
            Column::new(
                col::CONTACT.into(),
                stats.iter().map(|s| s.0).collect::<Vec<_>>(),
            ),
            Column::new(
                col::ENGAGEMENTS.into(),
                stats.iter().map(|s| s.1.engagements).collect::<Vec<_>>(),
            ),
            Column::new(
                col::ACTIVE_DAYS.into(),
                stats.iter().map(|s| s.1.active_days).collect::<Vec<_>>(),
            ),
            Column::new(
                col::FIRST_DAY.into(),
                stats.iter().map(|s| s.1.first_day).collect::<Vec<_>>(),
            ),
            Column::new(
                col::LAST_DAY.into(),
                stats.iter().map(|s| s.1.last_day).collect::<Vec<_>>(),
            ),
            Column::new(
                col::FAST.into(),
                stats.iter().map(|s| s.1.fast).collect::<Vec<_>>(),
            ),
            Column::new(
                col::SLOW.into(),
                stats.iter().map(|s| s.1.slow).collect::<Vec<_>>(),
            ),
        ],
    )?;
    let paths = [WEIGHTS, STATS].map(|suffix| dir.join(format!("{name}.{suffix}")));
    for (path, df) in paths.iter().zip([&mut weights, &mut st]) {
        let written = std::fs::File::create(path)
            .map_err(anyhow::Error::from)
            .and_then(|mut file| {
                ParquetWriter::new(&mut file)
                    .with_compression(ParquetCompression::Lz4Raw)
                    .finish(df)?;
                Ok(file.sync_all()?)
            });
        if let Err(e) = written {
            // No state names them: a half-written file would only hold the space a full disk
            // needs back.
            paths.iter().for_each(|p| drop(std::fs::remove_file(p)));
            return Err(e.context(format!("cannot store profiles in {}", path.display())));
        }
    }
    Ok(name)
}

/// Make `state` the one in force, then remove delta files it no longer names: an error when
/// one cannot be (an erase must know its profile is gone from disk).
fn commit_state(dir: &Path, state: &State) -> anyhow::Result<()> {
    write_state(dir, state)?;
    remove_unnamed(dir, state)
}

/// [`commit_state`] for what only adds to the profiles (new parts, a merge): a file that cannot
/// be removed is said and left for the next update, the state being in force. It failed the
/// refresh, and `serve` planned nothing while it could not be removed (an audit).
fn commit_added(dir: &Path, state: &State) -> anyhow::Result<()> {
    write_state(dir, state)?;
    if let Err(e) = remove_unnamed(dir, state) {
        tracing::warn!("{e:#} (left for the next update)");
    }
    Ok(())
}

fn write_state(dir: &Path, state: &State) -> anyhow::Result<()> {
    let path = &dir.join("state.json");
    crate::store::sync_dir(dir)?;
    write_durably(path, &serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("cannot store profiles in {}", dir.display()))
}

/// Remove the delta files `state` does not name, and a state a writer killed mid-write left
/// as `state.json.tmp` (`state.tmp` before; tens of MB each, for every `profiles` killed).
/// Hold [`lock`]: writers write under it.
fn remove_unnamed(dir: &Path, state: &State) -> anyhow::Result<()> {
    let keep: HashSet<&str> = state.deltas.iter().map(String::as_str).collect();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let unnamed = name
            .strip_suffix(WEIGHTS)
            .or_else(|| name.strip_suffix(STATS))
            .and_then(|n| n.strip_suffix('.'))
            .is_some_and(|delta| !keep.contains(delta));
        if unnamed || name == "state.json.tmp" || name == "state.tmp" {
            // An error said, not swallowed: an erase must know its profile is gone from disk.
            crate::store::remove_if_exists(&p)
                .with_context(|| format!("cannot remove old profiles {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::events::{Event, Kind, append};
    use crate::time::SLOTS;

    /// A data folder holding one contact's event a day before `now`, and the profiles `serve`
    /// opens on it.
    fn serving_one_contact(now: i64) -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        append(dir.path(), &[ev(1, now - crate::time::DAY_MS)]).unwrap();
        let (serving, _) = Cache::open(dir.path(), ModelConfig::default(), now, false).unwrap();
        (dir, serving)
    }

    fn ev(id: i64, at_ms: i64) -> Event {
        Event {
            event_id: None,
            contact_id: Some(id),
            email: None,
            kind: Kind::Open,
            at_ms,
            filtered: false,
            source: "t".into(),
        }
    }

    /// A fit that found too little data is made again once what a fit needs is reached, then
    /// each time the opens and clicks double (a fit short of 200 at 150 waited for 300).
    #[test]
    fn an_unfitted_fit_is_made_again_at_200_then_at_each_doubling() {
        let state = |fitted: bool, at_fit: u64| -> State {
            serde_json::from_value(serde_json::json!({
                "reference_day": 0, "half_life_days": 480.0, "click_weight": 1.0,
                "parts": [], "deltas": [], "engagements_at_fit": at_fit,
                "fit": {"fitted": fitted, "prior_strength": 12.0, "hour_bandwidth": 1.0,
                        "events": 0, "contacts": 0},
            }))
            .unwrap()
        };
        let need = super::super::calibrate::MIN_EVENTS as u64;
        assert!(!state(false, 150).refit_due(need - 1));
        assert!(state(false, 150).refit_due(need));
        assert!(!state(false, 500).refit_due(999));
        assert!(state(false, 500).refit_due(1000));
        assert!(!state(true, 150).refit_due(10_000));
    }

    #[test]
    fn incremental_update_equals_a_full_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let hour = crate::time::HOUR_MS;
        append(
            dir.path(),
            &(0..50)
                .map(|i| ev(i % 7, now - i * 5 * hour))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let cfg = ModelConfig::default();
        let (_, first) = update(dir.path(), cfg, now, false).unwrap();
        assert!(first.rebuilt);
        append(
            dir.path(),
            &(0..30)
                .map(|i| ev(i % 9, now - i * 3 * hour))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let (inc, second) = update(dir.path(), cfg, now, false).unwrap();
        assert!(!second.rebuilt);
        assert_eq!(second.new_parts, 1);
        let (full, third) = update(dir.path(), cfg, now, true).unwrap();
        assert!(third.rebuilt);
        assert_eq!(inc.contacts.len(), full.contacts.len());
        for c in 0..full.contacts.len() {
            for s in 0..SLOTS {
                let (a, b) = (
                    inc.profiles.weights[c].get(s),
                    full.profiles.weights[c].get(s),
                );
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{c}/{s}: {a} vs {b}"
                );
            }
            assert_eq!(
                inc.profiles.stats[c].engagements,
                full.profiles.stats[c].engagements
            );
        }
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(&inc.profiles.population, &full.profiles.population));
        // Nothing new: nothing rewritten, and what is loaded is what a rebuild gives (the
        // population too, not a flat one).
        let (loaded, fourth) = update(dir.path(), cfg, now, false).unwrap();
        assert_eq!((fourth.rebuilt, fourth.new_parts), (false, 0));
        assert!(close(
            &loaded.profiles.population,
            &full.profiles.population
        ));
        assert!(close(&loaded.profiles.weekdays, &full.profiles.weekdays));
    }

    /// A fit that found too little data is made again once the opens have grown enough,
    /// not kept until the 30-day rebuild (a history imported into a running `serve` went
    /// unfitted for a month), and not at every update while they have not.
    #[test]
    fn a_fit_short_of_data_is_made_again_once_the_data_has_grown() {
        let dir = tempfile::tempdir().unwrap();
        let (day, hour) = (crate::time::DAY_MS, crate::time::HOUR_MS);
        let now = 1_700_000_000_000 - 1_700_000_000_000 % day;
        let cfg = ModelConfig::default();
        append(dir.path(), &[ev(1, now - day), ev(2, now - 2 * day)]).unwrap();
        let (few, _) = update(dir.path(), cfg, now, false).unwrap();
        assert!(!few.profiles.fit.unwrap().fitted);
        // 60 contacts, each at an hour of its own every third day for 120 days.
        let history: Vec<Event> = (0..120i64)
            .flat_map(|d| (0..60i64).map(move |c| (d, c)))
            .filter(|(d, c)| (d + c) % 3 == 0)
            .map(|(d, c)| ev(c + 10, now - d * day - day + (c % 24) * hour))
            .collect();
        append(dir.path(), &history).unwrap();
        let (grown, u) = update(dir.path(), cfg, now, false).unwrap();
        assert!(u.rebuilt);
        assert!(grown.profiles.fit.unwrap().fitted);
        // Fitted, the next opens are added, not rebuilt for.
        append(dir.path(), &[ev(3, now - day)]).unwrap();
        let (_, u) = update(dir.path(), cfg, now, false).unwrap();
        assert!(!u.rebuilt);

        // Short of data still: rebuilt once they doubled, not for each new part.
        let dir = tempfile::tempdir().unwrap();
        let old = |n: i64| {
            (0..n)
                .map(|i| ev(i, now - 200 * day - i * hour))
                .collect::<Vec<_>>()
        };
        append(dir.path(), &old(300)).unwrap();
        let (_, u) = update(dir.path(), cfg, now, false).unwrap();
        assert!(u.rebuilt);
        append(dir.path(), &old(200)).unwrap();
        let (few, u) = update(dir.path(), cfg, now, false).unwrap();
        assert!(!u.rebuilt);
        assert!(!few.profiles.fit.unwrap().fitted);
        append(dir.path(), &old(200)).unwrap();
        let (_, u) = update(dir.path(), cfg, now, false).unwrap();
        assert!(u.rebuilt, "700 opens: more than twice the 300 of the fit");
    }

    /// A `profiles` killed as it wrote left its delta files and `state.json.tmp`, tens of MB each,
    /// until some later update stored profiles: the next update of any kind removes them.
    #[test]
    fn files_a_killed_writer_left_go_at_the_next_update() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        append(dir.path(), &[ev(1, now - crate::time::DAY_MS)]).unwrap();
        let cfg = ModelConfig::default();
        update(dir.path(), cfg, now, false).unwrap();
        let profiles = dir.path().join("profiles");
        let listed = || {
            let mut names: Vec<String> = std::fs::read_dir(&profiles)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let stored = listed();
        for left in [
            "delta-01KILLED.weights.parquet",
            "delta-01KILLED.stats.parquet",
            "state.json.tmp",
            "state.tmp",
        ] {
            std::fs::write(profiles.join(left), "half").unwrap();
        }
        let (again, u) = update(dir.path(), cfg, now, false).unwrap();
        assert_eq!((u.rebuilt, u.new_parts), (false, 0));
        assert_eq!(listed(), stored);
        assert_eq!(again.profiles.stats[0].engagements, 1);
    }

    /// A leftover that cannot be removed (here a folder of a delta file's name) does not fail
    /// a refresh that stores new parts: it failed every one, and `serve` planned nothing
    /// meanwhile. A rebuild (an erase's) still says it.
    #[test]
    fn a_leftover_that_cannot_be_removed_does_not_fail_a_refresh() {
        let now = 1_700_000_000_000;
        let (dir, mut serving) = serving_one_contact(now);
        let stuck = dir.path().join("profiles/delta-01STUCK.weights.parquet");
        std::fs::create_dir_all(stuck.join("inside")).unwrap();
        append(dir.path(), &[ev(2, now - crate::time::HOUR_MS)]).unwrap();
        let refreshed = serving.refresh(now).unwrap();
        assert_eq!((refreshed.rebuilt, refreshed.new_parts), (false, 1));
        assert!(stuck.exists());
        assert!(update(dir.path(), ModelConfig::default(), now, true).is_err());
    }

    /// Profiles stored by a run whose clock was ahead (`tick --now` years on) are rebuilt
    /// when the clock is right again, not extended: decayed to a future day, every contact's
    /// recent rate would look passive.
    #[test]
    fn profiles_decayed_to_a_later_day_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        append(dir.path(), &[ev(1, now - crate::time::DAY_MS)]).unwrap();
        let cfg = ModelConfig::default();
        let ahead = now + 6 * 365 * crate::time::DAY_MS;
        let (future, _) = update(dir.path(), cfg, ahead, false).unwrap();
        assert_eq!(future.profiles.reference_day, day_of(ahead));
        let (back, u) = update(dir.path(), cfg, now, false).unwrap();
        assert!(u.rebuilt);
        assert_eq!(back.profiles.reference_day, day_of(now));
    }

    /// New thresholds of what is machine-like change who the fit and the population leave
    /// out: the profiles are rebuilt and fitted again, not extended with the old fit.
    #[test]
    fn new_machine_thresholds_rebuild_the_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        append(dir.path(), &[ev(1, now - crate::time::DAY_MS)]).unwrap();
        let mut cfg = ModelConfig::default();
        update(dir.path(), cfg, now, false).unwrap();
        assert!(!update(dir.path(), cfg, now, false).unwrap().1.rebuilt);
        cfg.thresholds.machine_per_day += 10.0;
        assert!(update(dir.path(), cfg, now, false).unwrap().1.rebuilt);
    }

    /// Another process (`sendtime profiles` beside `serve`) holding `profiles.lock`: an update
    /// waits for it, and goes on once it is let go.
    #[test]
    fn an_update_waits_for_the_profiles_lock() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        append(dir.path(), &[ev(1, now - crate::time::DAY_MS)]).unwrap();
        let profiles = dir.path().join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        // Another open file: its lock is another holder's, even in this process.
        let held = lock(&profiles).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let data = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let updated = update(&data, ModelConfig::default(), now, false);
            tx.send(updated.map(|(_, u)| u.rebuilt).ok()).unwrap();
        });
        let waiting = std::time::Duration::from_millis(500);
        assert!(rx.recv_timeout(waiting).is_err(), "did not wait");
        assert!(!profiles.join("state.json").exists(), "wrote while locked");
        drop(held);
        let done = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        assert_eq!(done, Some(true));
        assert!(profiles.join("state.json").exists());
    }

    /// `sendtime profiles --rebuild` beside a running `serve`: the next refresh takes the
    /// rebuilt profiles instead of extending its own (which would have named deltas the
    /// rebuild deleted, and deleted the rebuild's), so what is stored stays readable.
    #[test]
    fn profiles_rebuilt_by_another_process_are_taken_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let hour = crate::time::HOUR_MS;
        let cfg = ModelConfig::default();
        append(dir.path(), &[ev(1, now - 3 * hour), ev(2, now - 5 * hour)]).unwrap();
        let (mut serving, _) = Cache::open(dir.path(), cfg, now, false).unwrap();
        update(dir.path(), cfg, now, true).unwrap();
        append(dir.path(), &[ev(3, now - hour)]).unwrap();
        let refreshed = serving.refresh(now).unwrap();
        assert_eq!(serving.built.contacts.len(), 3);
        let profiles = dir.path().join("profiles");
        let state = stored_state(&profiles).unwrap();
        for delta in &state.deltas {
            let weights = profiles.join(format!("{delta}.weights.parquet"));
            assert!(weights.exists(), "{delta} named but gone: {refreshed:?}");
        }
        let (_, reread) = Cache::open(dir.path(), cfg, now, false).unwrap();
        assert!(
            !reread.rebuilt,
            "the stored profiles could not be read back"
        );
        assert_eq!(reread.contacts, 3);
    }

    /// Another process (`sendtime profiles`) merges the parts `serve` could not while an
    /// import held the events lock: `serve` takes the merged state, and does not rebuild.
    #[test]
    fn parts_merged_by_another_process_are_taken_not_rebuilt() {
        let now = 1_700_000_000_000;
        let cfg = ModelConfig::default();
        let (dir, mut serving) = serving_one_contact(now);
        for i in 0..COMPACT_PARTS as i64 + 6 {
            append(dir.path(), &[ev(i % 13, now - i * crate::time::HOUR_MS)]).unwrap();
        }
        {
            let _importing = events::lock(dir.path()).unwrap();
            assert!(!serving.refresh(now).unwrap().rebuilt);
        }
        let parts = event_parts(dir.path()).unwrap().len();
        update(dir.path(), cfg, now, false).unwrap();
        assert!(
            event_parts(dir.path()).unwrap().len() < parts,
            "nothing merged"
        );
        let update = serving.refresh(now).unwrap();
        assert!(!update.rebuilt, "rebuilt after another's merge");
    }

    /// A `serve` that refreshes after every import page: the stored deltas and the event
    /// parts stay few, and what a new process loads is what the refreshes built.
    #[test]
    fn many_refreshes_keep_deltas_and_parts_few() {
        let now = 1_700_000_000_000;
        let cfg = ModelConfig::default();
        let (dir, mut serving) = serving_one_contact(now);
        for i in 0..100 {
            append(dir.path(), &[ev(i % 13, now - i * crate::time::HOUR_MS)]).unwrap();
            let update = serving.refresh(now).unwrap();
            assert!(!update.rebuilt, "refresh {i} rebuilt");
            assert!(serving.state.deltas.len() <= MAX_DELTAS);
        }
        assert!(event_parts(dir.path()).unwrap().len() <= COMPACT_PARTS);
        let (loaded, update) = Cache::open(dir.path(), cfg, now, false).unwrap();
        assert!(!update.rebuilt);
        let (a, b) = (&serving.built.profiles, &loaded.built.profiles);
        assert_eq!(a.len(), b.len());
        for c in 0..a.len() {
            for s in 0..SLOTS {
                let (x, y) = (a.weights[c].get(s), b.weights[c].get(s));
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                    "{c}/{s}: {x} vs {y}"
                );
            }
            assert_eq!(a.stats[c].engagements, b.stats[c].engagements);
        }
        assert_eq!(b.stats.iter().map(|s| s.engagements).sum::<u32>(), 101);
    }

    /// Three imports on one day, each picked up by a new process (as `sendtime tick` under
    /// cron does): one active day, as in a rebuild, so 60 opens that day make a machine.
    #[test]
    fn active_days_carry_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_700_000_000_000;
        let cfg = ModelConfig::default();
        // Another contact, so there is a population.
        append(dir.path(), &[ev(2, now - crate::time::DAY_MS)]).unwrap();
        for batch in 0..3 {
            append(
                dir.path(),
                &(0..20)
                    .map(|i| ev(1, now - crate::time::HOUR_MS + batch * 20_000 + i * 500))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            update(dir.path(), cfg, now, false).unwrap();
        }
        let (inc, _) = update(dir.path(), cfg, now, false).unwrap();
        let (full, _) = update(dir.path(), cfg, now, true).unwrap();
        let c = inc.contacts.find(Some(1), None).unwrap();
        assert_eq!(full.profiles.stats[c as usize].active_days, 1);
        assert_eq!(inc.profiles.stats[c as usize].active_days, 1);
        assert!(full.profiles.is_machine(c) && inc.profiles.is_machine(c));
    }
}
