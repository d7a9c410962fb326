//! Parquet datasets on disk: each dataset is a folder of immutable part files.
//!
//! A Parquet file cannot be appended in place, so every append is a new part written as
//! `part-<ulid>.parquet.tmp`, fsync'd, renamed, and made durable with a directory fsync.
//! Readers only ever see `*.parquet`, so a half-written part is never visible. Each part's
//! checksum ([`checksum`]) is durable before the part is, and is checked before it is read.

pub mod checksum;
mod files;
mod frames;
mod intent;
pub mod wal;

pub use files::{
    create_data_dir, create_dir_durably, exists, folder_of, is_dir, lock_file, physical,
    remove_if_exists, remove_if_unused, state_dir, sync_dir, temp_of, write_durably,
};
pub use frames::{
    Undecodable, concat_frames, read_columns_or_null, read_part, read_present_columns, read_with,
};

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use intent::Rewrite;
use polars::prelude::*;
use ulid::Ulid;

const PART_EXT: &str = "parquet";
/// A list of parts being published together, hidden from readers while it exists.
const PENDING_EXT: &str = "pending";

/// Rows per part below which a part counts as small and is merged by [`Dataset::compact`].
pub const SMALL_PART_ROWS: usize = 200_000;
/// How much larger than the smaller parts together a part may be and still join a compaction.
const MERGE_RATIO: usize = 4;
/// Rows one compaction merges at most.
const MERGE_ROWS: usize = 5 * SMALL_PART_ROWS;
/// How long a compaction's sources stay on disk, no longer listed: a reader that listed them
/// just before (a rebuild, a lift report) still reads them.
pub const SOURCE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// One dataset folder, e.g. `{data_dir}/inbox`.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    /// Where unreadable parts go: `{data_dir}/quarantine/{dataset}`.
    quarantine: PathBuf,
    /// The columns a merged part is sorted by, as its writers sort theirs (none: as read).
    order: &'static [&'static str],
    /// A damaged part met is named in an error instead of set aside ([`Self::for_dry_run`]).
    names_damage: bool,
}

impl Dataset {
    /// Open (creating if needed) the dataset `name` under `data_dir`.
    pub fn open(data_dir: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = data_dir.join(name);
        create_dir_durably(&dir)
            .with_context(|| format!("cannot create dataset folder {}", dir.display()))?;
        Ok(Self {
            dir,
            quarantine: data_dir.join("quarantine").join(name),
            order: &[],
            names_damage: false,
        })
    }

    /// This dataset for a dry run, which moves nothing: a damaged part met while reading is
    /// named in an error ([`named_for_dry_run`]), not set aside into quarantine (beside a
    /// running `serve`, whose folder it is, a dry run moved its parts: an audit found it).
    pub fn for_dry_run(self) -> Self {
        Self {
            names_damage: true,
            ..self
        }
    }

    /// This dataset, its merged parts sorted by `columns` (readers rely on its parts' order).
    pub fn sorted_by(self, columns: &'static [&'static str]) -> Self {
        Self {
            order: columns,
            ..self
        }
    }

    /// Where this dataset's unreadable parts are moved.
    pub fn quarantine_dir(&self) -> &Path {
        &self.quarantine
    }

    /// The parts in quarantine (their checksum files not counted).
    pub fn quarantined_parts(&self) -> io::Result<usize> {
        match fs::read_dir(&self.quarantine) {
            Ok(entries) => Ok(entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == PART_EXT))
                .count()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// When the newest part in quarantine was written (epoch ms, from its ULID name), if any:
    /// rows written before then may be missing from what this dataset reads. A second part
    /// set aside under one name (`part-{id}-{ulid}`) counts too (it was not read as a part's
    /// name; an audit).
    pub fn quarantined_until(&self) -> io::Result<Option<i64>> {
        let entries = match fs::read_dir(&self.quarantine) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id_of = |path: &Path| {
            let name = path.file_name()?.to_str()?.strip_prefix("part-")?;
            Ulid::from_string(name.get(..26)?).ok()
        };
        let mut newest = None;
        for entry in entries {
            if let Some(id) = id_of(&entry?.path()) {
                newest = newest.max(Some(id.timestamp_ms() as i64));
            }
        }
        Ok(newest)
    }

    /// The committed parts, oldest first (ULID names sort by creation time).
    ///
    /// Parts named in a `*.pending` file are being published together ([`publish`]) and stay
    /// hidden until that file is gone; so are the sources of a compaction whose merged part
    /// is written (their rows are in it: a reader that counts rows would count them twice).
    /// These files are read before and after the parts are listed, until both agree: a
    /// publish or compaction that started or ended while listing could otherwise show some
    /// of its parts.
    pub fn parts(&self) -> io::Result<Vec<PathBuf>> {
        let mut pending = self.pending()?;
        loop {
            // A listing cut short by an error is an error: a short dictionary handed out
            // indices its missing parts use (an audit).
            let mut parts: Vec<PathBuf> = fs::read_dir(&self.dir)?
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()?;
            parts.retain(|p| p.extension().is_some_and(|e| e == PART_EXT));
            let after = self.pending()?;
            if after == pending {
                parts.retain(|p| !pending.contains(p));
                parts.sort();
                return Ok(parts);
            }
            pending = after;
        }
    }

    /// The parts that `*.pending` files name, and the sources of rewrites whose new part
    /// exists (or, for a move's or deletion's, was set aside: [`Rewrite::took_rows`]).
    fn pending(&self) -> io::Result<HashSet<PathBuf>> {
        let mut pending = HashSet::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let hides = path.extension().is_some_and(|e| e == PENDING_EXT)
                || match self.rewrite_of(&path)? {
                    Some((_, _, NewPart::Written)) => true,
                    Some((kind, _, NewPart::SetAside)) => kind.took_rows(),
                    _ => false,
                };
            if hides {
                match fs::read_to_string(&path) {
                    Ok(names) => pending.extend(names.lines().map(|n| self.dir.join(n))),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(pending)
    }

    /// Name `sources` durably in the intent file of the part `id` about to replace them by
    /// the rewrite `kind`: once that part exists, they are no longer listed.
    fn write_intent(&self, kind: Rewrite, id: Ulid, sources: &[PathBuf]) -> io::Result<PathBuf> {
        let intent = self.dir.join(kind.file_name(id));
        let names: Vec<&str> = sources
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        write_durably(&intent, names.join("\n").as_bytes())?;
        Ok(intent)
    }

    /// The rewrite an intent file ([`Dataset::write_intent`]) notes, its new part and where
    /// that part is; `None` for any other file. Absent is "not found", never "cannot tell"
    /// (a stat that failed rolled back a finished compaction, whose part and sources were
    /// then both listed for good; an audit).
    fn rewrite_of(&self, intent: &Path) -> io::Result<Option<(Rewrite, PathBuf, NewPart)>> {
        let Some((mut kind, id)) = Rewrite::of(intent) else {
            return Ok(None);
        };
        let part = self.part_path(id);
        let state = if part.try_exists()? {
            NewPart::Written
        } else if (part.file_name().map(|n| self.quarantine.join(n)))
            .map_or(Ok(false), |aside| aside.try_exists())?
        {
            NewPart::SetAside
        } else {
            NewPart::Missing
        };
        // An earlier version noted moves and deletions as compactions; a compaction merges two
        // parts or more, so one naming a single part was one of those, almost surely a move
        // (a deletion's intent lived for the moment between two writes, a move's ten minutes):
        // its source is set aside intact, as a move's, holding rows found nowhere else.
        if kind == Rewrite::Compaction && state == NewPart::SetAside {
            match fs::read_to_string(intent) {
                Ok(names) if names.lines().count() == 1 => kind = Rewrite::Move,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some((kind, part, state)))
    }

    /// Path of the part with id `id`.
    pub fn part_path(&self, id: Ulid) -> PathBuf {
        self.dir.join(format!("part-{id}.{PART_EXT}"))
    }

    /// Remove the part `id` (and its checksum) if it exists, durably.
    pub fn remove_part(&self, id: Ulid) -> io::Result<()> {
        remove_part_files(&self.part_path(id))?;
        sync_dir(&self.dir)
    }

    /// Write `df` durably as the part `id`: tmp file, fsync, checksum, rename, directory fsync.
    /// A part already under `id` is removed first, so its rows must be held elsewhere too (the
    /// inbox's log holds them).
    pub fn write_part(&self, id: Ulid, df: &mut DataFrame) -> anyhow::Result<PathBuf> {
        self.write_with(id, |file| {
            ParquetWriter::new(file)
                // LZ4: several times faster to write and read than zstd, for files a little larger.
                .with_compression(ParquetCompression::Lz4Raw)
                .finish(df)?;
            Ok(())
        })
    }

    /// Write a part of `schema` durably as the part `id` from frames handed to the writer
    /// function `fill` receives, one row group per frame. That function may be called from
    /// several threads at once (row groups land in the order written), so producers can
    /// write as they go instead of gathering every row first.
    pub fn write_part_with(
        &self,
        id: Ulid,
        schema: &Schema,
        fill: impl FnOnce(&(dyn Fn(&DataFrame) -> anyhow::Result<()> + Sync)) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        self.write_with(id, |file| {
            let writer = ParquetWriter::new(file)
                .with_compression(ParquetCompression::Lz4Raw)
                .batched(schema)?;
            fill(&|df: &DataFrame| {
                let groups = writer
                    .encode_and_compress(df)
                    .collect::<PolarsResult<Vec<_>>>()?;
                writer.write_row_groups(groups)?;
                Ok(())
            })?;
            writer.finish()?;
            Ok(())
        })
    }

    /// Write a part through `write`: tmp file, fsync, the part under `id` removed if any, its
    /// checksum (durable), rename, directory fsync.
    fn write_with(
        &self,
        id: Ulid,
        write: impl FnOnce(&mut checksum::Hashing) -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        self.write_stepwise(id, write, || Ok(()))
    }

    /// [`Self::write_with`], calling `before_rename` once the checksum is durable: where a
    /// crash is the worst, for the tests.
    fn write_stepwise(
        &self,
        id: Ulid,
        write: impl FnOnce(&mut checksum::Hashing) -> anyhow::Result<()>,
        before_rename: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<PathBuf> {
        let path = self.part_path(id);
        let tmp = path.with_extension(format!("{PART_EXT}.tmp"));
        let result = (|| -> anyhow::Result<()> {
            let mut file = File::create(&tmp)?;
            let mut hashing = checksum::Hashing::new(&mut file);
            write(&mut hashing)?;
            hashing.flush()?;
            let digest = hashing.digest();
            drop(hashing);
            file.sync_all()?;
            // A part rewritten under its id (the inbox's, after a failed flush or a replay
            // cut short) goes first: a crash between the new checksum and the rename would
            // leave the old bytes under it, set aside as damaged at the next read. While it
            // is gone, the inbox's log holds its rows.
            if path.try_exists()? {
                remove_part_files(&path)?;
                sync_dir(&self.dir)?;
            }
            write_durably(
                &checksum::path_of(&path),
                format!("{digest:016x}\n").as_bytes(),
            )?;
            before_rename()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("cannot write part {}", path.display())));
        }
        Ok(path)
    }

    /// Read every part into one frame. Parts whose content cannot be decoded are quarantined
    /// (and logged) rather than failing the whole read or silently dropping rows; a part that
    /// cannot be opened (out of file descriptors, permissions) fails the read, since the
    /// file may be fine and a later read will get it.
    pub fn read_all(&self) -> anyhow::Result<Vec<(PathBuf, DataFrame)>> {
        let mut out: Vec<(PathBuf, DataFrame)> = Vec::new();
        self.read_each(|path, df| {
            out.push((path.to_path_buf(), df));
            Ok(())
        })?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// [`Self::read_all`] one part at a time, for a reader that keeps only some rows of each.
    pub fn read_each(
        &self,
        mut f: impl FnMut(&Path, DataFrame) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut seen = HashSet::new();
        loop {
            // A part that compaction removed after the listing: its rows are in a newer part,
            // which a second listing finds. A merged part set aside: its sources, listed
            // again while on disk (they were read only by the next reader; an audit).
            let mut relist = false;
            for path in self.parts()? {
                if !seen.insert(path.clone()) {
                    continue;
                }
                match read_part(&path) {
                    Ok(df) => f(&path, df)?,
                    Err(e) if is_not_found(&e) => relist = true,
                    Err(e) if cannot_open(&e) => {
                        return Err(e.context(format!("cannot open {}", path.display())));
                    }
                    Err(e) => {
                        self.quarantine(&path, &e)?;
                        relist = true;
                    }
                }
            }
            if !relist {
                return Ok(());
            }
        }
    }

    /// Move an unreadable part aside so the server keeps serving and nobody loses the bytes.
    pub fn quarantine(&self, path: &Path, why: &anyhow::Error) -> anyhow::Result<()> {
        if self.names_damage {
            return Err(named_for_dry_run(path, anyhow::anyhow!("{why:#}")));
        }
        self.set_aside(path, why)
    }

    /// Move the part at `path` (with its checksum) into quarantine, saying `why`.
    fn set_aside(&self, path: &Path, why: &anyhow::Error) -> anyhow::Result<()> {
        create_dir_durably(&self.quarantine)?;
        let name = path.file_name().context("part without a file name")?;
        let mut dest = self.quarantine.join(name);
        // A part of that name set aside before (a log segment's part, rewritten by replay and
        // damaged again) is kept too.
        if exists(&dest)? {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("part");
            dest = self
                .quarantine
                .join(format!("{stem}-{}.{PART_EXT}", Ulid::generate()));
        }
        fs::rename(path, &dest).with_context(|| {
            format!("cannot move corrupt part {} to quarantine", path.display())
        })?;
        // Its checksum goes with it: the evidence of what the bytes were. (After the part: a
        // part left without its checksum would be read unchecked.)
        let sum = checksum::path_of(path);
        if exists(&sum)? {
            fs::rename(&sum, checksum::path_of(&dest))?;
        }
        sync_dir(&self.quarantine)?;
        sync_dir(&self.dir)?;
        tracing::error!(
            part = %path.display(),
            moved_to = %dest.display(),
            "quarantined unreadable part: {why:#}"
        );
        Ok(())
    }

    /// Merge small parts into one.
    ///
    /// An intent file names the sources before the merged part is written; once it is, the
    /// sources are no longer listed (so no reader counts a row twice), and they are removed
    /// after [`SOURCE_GRACE`], not now (so a reader that listed them before still finds
    /// them). `skip` says, of each part once the parts are listed, whether to leave it for now.
    ///
    /// Parts are sized from their footers. The largest small parts sit out while each is more
    /// than [`MERGE_RATIO`] times the rows of the smaller ones together: a growing merged part
    /// is rewritten once the newcomers add up to a share of it, not on every round.
    ///
    /// A panic (a bug) is an error here: the compactor threads go on to their next round, and
    /// the parts are as a crash at that point would leave them.
    pub fn compact(&self, skip: &dyn Fn(&Path) -> bool) -> anyhow::Result<Option<Merged>> {
        use std::sync::TryLockError;
        let lock = rewrite_lock(&self.dir);
        let _rewriting = match lock.try_lock() {
            Ok(guard) => guard,
            // A rewrite that panicked holding it: its files are as after a crash, which every
            // rewrite is made to survive.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Compaction is opportunistic: while the parts are being rewritten, a later round.
            Err(TryLockError::WouldBlock) => return Ok(None),
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.merge_small(skip)))
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "compacting {} panicked (a bug); its parts are left to a later round",
                    self.dir.display()
                ))
            })
    }

    /// Remove the sources of earlier compactions, hidden since their merged part was written,
    /// once [`SOURCE_GRACE`] has passed; drop the intent of one that never wrote its merged
    /// part. Skipped while another rewrite of the dataset is under way in this process;
    /// `compact` does it too.
    pub fn finish_compactions(&self) -> anyhow::Result<()> {
        let lock = rewrite_lock(&self.dir);
        let _rewriting = match lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        self.finish_intents(SOURCE_GRACE).map(|_| ())
    }

    /// [`Self::finish_compactions`]' work, under the rewrite lock: an intent whose new part is
    /// written is finished once `grace` old (a deletion's at any age), any other at once
    /// (rolled back; a move's or a deletion's whose new part was set aside, finished); the merged parts of those left, each with its
    /// intent (not to be merged or rewritten again before their sources go, or the sources
    /// would be listed again).
    fn finish_intents(
        &self,
        grace: std::time::Duration,
    ) -> anyhow::Result<HashMap<PathBuf, PathBuf>> {
        let mut left = HashMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some((kind, part, state)) = self.rewrite_of(&path)? else {
                continue;
            };
            // A clock set back makes an intent look young: it waits for the next start. Not
            // so with no grace (a deletion): the sources it hides would keep the rows deleted
            // (an audit).
            let young = || {
                fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| !t.elapsed().is_ok_and(|age| age >= grace))
            };
            // A deletion's sources keep no reader's rows: they go at once (after a crash).
            let keeps = kind != Rewrite::Deletion && state == NewPart::Written;
            if !grace.is_zero() && keeps && young() {
                left.insert(part, path);
            } else {
                self.finish_intent(&path)?;
            }
        }
        Ok(left)
    }

    /// The intent file `intent`'s rewrite finished (its sources removed) if its new part was
    /// written, else rolled back (its sources stay); the intent removed, after the removals
    /// are durable (a source back after a power loss would be listed beside its new part for
    /// good). A move whose new part was set aside as damaged is finished too, its sources set
    /// aside beside it (intact, they hold the rows it lost, and the rows moved); a deletion's
    /// are removed.
    fn finish_intent(&self, intent: &Path) -> anyhow::Result<()> {
        let sources = || -> io::Result<Vec<PathBuf>> {
            let names = fs::read_to_string(intent)?;
            Ok(names.lines().map(|n| self.dir.join(n)).collect())
        };
        match self.rewrite_of(intent)? {
            Some((Rewrite::Move, part, NewPart::SetAside)) => {
                let why = anyhow::anyhow!(
                    "the part {} holding the rows a move left in it was set aside as damaged: this one holds them intact, and the rows moved from it",
                    part.display()
                );
                for source in sources()? {
                    if exists(&source)? {
                        self.set_aside(&source, &why)?;
                    }
                }
            }
            Some((_, _, NewPart::Written)) | Some((Rewrite::Deletion, _, NewPart::SetAside)) => {
                for source in sources()? {
                    remove_part_files(&source)?;
                }
                sync_dir(&self.dir)?;
            }
            _ => {}
        }
        remove_if_exists(intent)?;
        Ok(())
    }

    /// [`Dataset::compact`]'s work, under the rewrite lock.
    fn merge_small(&self, skip: &dyn Fn(&Path) -> bool) -> anyhow::Result<Option<Merged>> {
        // Earlier rounds' sources go once their grace is over; a merged part whose sources
        // are still there is not merged again (its sources would come back when it goes).
        let unfinished = self.finish_intents(SOURCE_GRACE)?;
        let mut small: Vec<(usize, PathBuf)> = Vec::new();
        for path in self.parts()? {
            if skip(&path) || unfinished.contains_key(&path) {
                continue;
            }
            // A footer that cannot be read leaves the part to the full read below, which
            // quarantines it if it is damaged.
            let rows = File::open(&path)
                .ok()
                .and_then(|f| ParquetReader::new(f).num_rows().ok())
                .unwrap_or(0);
            if rows < SMALL_PART_ROWS {
                small.push((rows, path));
            }
        }
        small.sort();
        let mut rest: usize = small.iter().map(|(rows, _)| rows).sum();
        while let Some((largest, _)) = small.last() {
            rest -= largest;
            if *largest <= MERGE_RATIO * rest.max(1) {
                break;
            }
            small.pop();
        }
        if small.len() < 2 {
            return Ok(None);
        }
        // Merged in the order they were written (ULID names), the oldest first up to
        // MERGE_ROWS: a folder of tens of thousands of parts is merged over several rounds,
        // never all in memory at once.
        small.sort_by(|a, b| a.1.cmp(&b.1));
        let mut taken = 0;
        small.retain(|(rows, _)| {
            taken += rows;
            taken <= MERGE_ROWS
        });
        if small.len() < 2 {
            return Ok(None);
        }
        let mut sources = Vec::new();
        let mut frames = Vec::new();
        for (_, path) in small {
            match read_part(&path) {
                Ok(df) => {
                    sources.push(path);
                    frames.push(df);
                }
                Err(e) if is_not_found(&e) => {}
                // Maybe fine: left for a later compaction.
                Err(e) if cannot_open(&e) => {
                    tracing::warn!(part = %path.display(), "cannot open part to compact: {e:#}");
                }
                Err(e) => self.quarantine(&path, &e)?,
            }
        }
        if sources.len() < 2 {
            return Ok(None);
        }
        let mut merged = concat_frames(frames)?;
        if !self.order.is_empty() {
            merged.sort_in_place(self.order.iter().copied(), SortMultipleOptions::default())?;
        }
        let id = Ulid::generate();
        self.write_intent(Rewrite::Compaction, id, &sources)?;
        // From here on the sources are hidden from listings (`parts`), but left in place for
        // SOURCE_GRACE: a reader that listed them before can still read them, where a removal
        // would have lost their rows to it.
        let target = self.write_part(id, &mut merged)?;
        tracing::debug!(parts = sources.len(), rows = merged.height(), target = %target.display(), "compacted");
        Ok(Some(Merged {
            part: target,
            sources,
        }))
    }

    /// Move the rows `picked` chooses out of every part into a part of `archive`, leaving the
    /// others in a new part here; the number of rows moved. `picked` sees only `columns`,
    /// read first: a part none of whose rows it picks is not read whole.
    ///
    /// Both new parts are durable before the old one is hidden (it goes after
    /// [`SOURCE_GRACE`]), so a crash in between leaves the moved rows in both places, never in
    /// neither (readers here de-duplicate by receipt); the rows left here are listed once
    /// whenever it falls.
    pub fn move_rows(
        &self,
        archive: &Dataset,
        columns: &[&str],
        picked: impl Fn(&DataFrame) -> anyhow::Result<BooleanChunked>,
    ) -> anyhow::Result<usize> {
        self.take_rows(Some(archive), columns, picked)
    }

    /// Delete the rows `picked` chooses (seeing only `columns`), rewriting each part that
    /// held one without them; the number of rows deleted. A crash leaves a part listed whole
    /// or rewritten, never both nor half.
    pub fn remove_rows(
        &self,
        columns: &[&str],
        picked: impl Fn(&DataFrame) -> anyhow::Result<BooleanChunked>,
    ) -> anyhow::Result<usize> {
        self.take_rows(None, columns, picked)
    }

    /// How many rows `picked` chooses, seeing only `columns` (what [`Self::remove_rows`]
    /// would take).
    pub fn count_rows(
        &self,
        columns: &[&str],
        picked: impl Fn(&DataFrame) -> anyhow::Result<BooleanChunked>,
    ) -> anyhow::Result<usize> {
        let mut n = 0;
        for part in self.parts()? {
            let df = match read_present_columns(&part, columns) {
                Ok(df) => df,
                // Moved or merged since listed (a dry run beside `serve`).
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(named_for_dry_run(&part, e)),
            };
            n += picked(&df)?.sum().unwrap_or(0) as usize;
        }
        Ok(n)
    }

    /// [`Self::move_rows`] (`into` set) or [`Self::remove_rows`]. A part a move rewrites
    /// stays on disk, hidden, for [`SOURCE_GRACE`], as a compaction's sources do: a reader
    /// that listed it just before (a lift report, a lookup) reads it whole, where a removal
    /// would have lost the rows left in it to that reader (the rows moved it finds in the
    /// archive, listed after). A deletion removes every copy at once.
    fn take_rows(
        &self,
        into: Option<&Dataset>,
        columns: &[&str],
        picked: impl Fn(&DataFrame) -> anyhow::Result<BooleanChunked>,
    ) -> anyhow::Result<usize> {
        let lock = rewrite_lock(&self.dir);
        let _rewriting = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Merged parts whose sources are still on disk, with their intents. A merged part
        // replaced below must not leave those sources to be listed again, with the rows taken
        // out of it (or, deleted, on disk).
        let grace = match into {
            Some(_) => SOURCE_GRACE,
            None => std::time::Duration::ZERO,
        };
        let unfinished = self.finish_intents(grace)?;
        let mut taken = 0;
        let mut seen = HashSet::new();
        // Listed again after a part vanished or was set aside: a merged part's sources come
        // back, holding rows to take (left, the archive's receipts, forgotten by the
        // dispatcher, were planned again from them; a review).
        let mut relist = true;
        while std::mem::take(&mut relist) {
            for path in self.parts()? {
                if !seen.insert(path.clone()) {
                    continue;
                }
                let Some(keys) =
                    self.read_or_set_aside(&path, read_present_columns(&path, columns))?
                else {
                    relist = true;
                    continue;
                };
                let mask = picked(&keys)?;
                let n = mask.sum().unwrap_or(0) as usize;
                if n == 0 {
                    continue;
                }
                let Some(df) = self.read_or_set_aside(&path, read_part(&path))? else {
                    relist = true;
                    continue;
                };
                if let Some(into) = into {
                    into.write_part(Ulid::generate(), &mut df.filter(&mask)?)?;
                }
                let earlier = unfinished.get(&path);
                if n < df.height() {
                    // As a compaction of one part: once the rest is written the part is hidden,
                    // so a crash before it goes never leaves its rows listed twice. Its own
                    // compaction's sources are hidden with it and go with it.
                    let mut sources = vec![path.clone()];
                    if let Some(intent) = earlier {
                        let names = fs::read_to_string(intent)?;
                        sources.extend(names.lines().map(|n| self.dir.join(n)));
                    }
                    let id = Ulid::generate();
                    let kind = match into {
                        Some(_) => Rewrite::Move,
                        None => Rewrite::Deletion,
                    };
                    let intent = self.write_intent(kind, id, &sources)?;
                    self.write_part(id, &mut df.filter(&!&mask)?)?;
                    if into.is_none() {
                        self.finish_intent(&intent)?;
                    }
                } else {
                    // Its rows are all taken: moved, a reader that listed it finds them in the
                    // archive, which it lists after.
                    if let Some(intent) = earlier {
                        self.finish_intent(intent)?;
                    }
                    remove_part_files(&path)?;
                    sync_dir(&self.dir)?;
                }
                taken += n;
            }
        }
        Ok(taken)
    }

    /// What reading the part at `path` gave: `None` when it is gone (compacted since it was
    /// listed) or damaged (moved to quarantine); an error when it cannot be opened now.
    fn read_or_set_aside<T>(
        &self,
        path: &Path,
        read: anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        match read {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) if cannot_open(&e) => Err(e),
            Err(e) => {
                self.quarantine(path, &e)?;
                Ok(None)
            }
        }
    }

    /// Finish or roll back compactions interrupted by a crash. Run before reading at start-up.
    /// The sources of a merged part written less than [`SOURCE_GRACE`] ago stay (hidden): a
    /// reader in another process may have listed them before (an import starting beside a
    /// profile build).
    pub fn recover(&self) -> anyhow::Result<()> {
        self.finish_intents(SOURCE_GRACE)?;
        // A publish that a crash interrupted moves each checksum in before its part: those
        // are finished by the next publisher, not removed here.
        let publishing = self.pending()?;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                fs::remove_file(&path)?;
            } else if name.ends_with(&format!(".{}", checksum::EXT))
                && !path.with_extension(PART_EXT).try_exists()?
                && !publishing.contains(&path.with_extension(PART_EXT))
            {
                // The checksum of a part a crash left half set aside joins it, as evidence
                // (it was deleted; an audit); else its part never became visible.
                let part = path.with_extension(PART_EXT);
                let aside = part.file_name().map(|n| self.quarantine.join(n));
                match aside {
                    Some(aside)
                        if aside.try_exists()? && !checksum::path_of(&aside).try_exists()? =>
                    {
                        fs::rename(&path, checksum::path_of(&aside))?;
                        sync_dir(&self.quarantine)?;
                    }
                    _ => remove_if_exists(&path)?,
                }
            }
        }
        sync_dir(&self.dir)?;
        Ok(())
    }
}

/// The lock that one dataset's rewrites (compaction, moving rows to the archive) take in this
/// process: a part rewritten by both at once would leave rows the archive took in a merged
/// part too, where the dispatcher, having forgotten them, would plan them again.
fn rewrite_lock(dir: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    // Keyed by the datasets' folders: a handful.
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    let mut locks = locks.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    locks.entry(dir).or_default().clone()
}

/// Make the parts of `staging` (a dataset folder written by one writer, e.g. one import) parts
/// of `target` all at once: readers of `target` see none of them or all. A pending file
/// naming them is made durable first and removed last, so a crash in between leaves them
/// hidden until [`finish_publishing`] moves the rest in. The staging folder is removed.
pub fn publish(staging: &Dataset, target: &Dataset) -> anyhow::Result<usize> {
    let parts = staging.parts()?;
    let names: Vec<String> = parts
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    let staging_name = staging
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("staging folder without a name")?;
    let pending = target.dir.join(format!("{staging_name}.{PENDING_EXT}"));
    write_durably(&pending, names.join("\n").as_bytes())?;
    finish_publishing(&pending, &staging.dir, &target.dir)?;
    Ok(parts.len())
}

/// Move the parts a pending file names (those still in `staging_dir`, with their checksums)
/// into `target_dir`, then remove the pending file and the staging folder.
pub fn finish_publishing(
    pending: &Path,
    staging_dir: &Path,
    target_dir: &Path,
) -> anyhow::Result<()> {
    for name in fs::read_to_string(pending)?.lines() {
        let from = staging_dir.join(name);
        let to = target_dir.join(name);
        // The checksum first: a part is never without it.
        if exists(&checksum::path_of(&from))? {
            fs::rename(checksum::path_of(&from), checksum::path_of(&to))?;
        }
        if exists(&from)? {
            fs::rename(&from, &to)?;
        }
    }
    sync_dir(target_dir)?;
    fs::remove_file(pending)?;
    sync_dir(target_dir)?;
    match fs::remove_dir_all(staging_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Where a rewrite's new part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewPart {
    Written,
    /// Moved to quarantine as damaged.
    SetAside,
    /// Not written: a crash came first.
    Missing,
}

/// What [`Dataset::compact`] merged.
#[derive(Debug)]
pub struct Merged {
    /// The merged part.
    pub part: PathBuf,
    /// The parts it replaced: no longer listed, and removed after [`SOURCE_GRACE`].
    pub sources: Vec<PathBuf>,
}

/// An error reading `part` in a dry run, which moves nothing: it names the part, and for a
/// damaged one says what the real run does with it.
pub fn named_for_dry_run(part: &Path, e: anyhow::Error) -> anyhow::Error {
    let what = match cannot_open(&e) {
        true => format!("cannot read {}", part.display()),
        false => format!(
            "{} is damaged: run without --dry-run, which sets it aside into quarantine/ (its rows are then no longer read) and goes on, or move it there yourself",
            part.display()
        ),
    };
    e.context(what)
}

/// The id of the part at `path` (`part-{ULID}.parquet`), if it is named as one.
pub fn part_id(path: &Path) -> Option<Ulid> {
    let name = path.file_name()?.to_str()?;
    let id = name
        .strip_prefix("part-")?
        .strip_suffix(&format!(".{PART_EXT}"))?;
    Ulid::from_string(id).ok()
}

/// An error of [`read_part`] for a file that is gone (compacted away since it was listed).
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

/// An error of [`read_part`] that is not the file's damage: opening or reading it (the
/// machine's state), or a part that matches its checksum ([`Undecodable`]). Such a part is
/// left in place, never quarantined: its rows may be acknowledged receipts.
pub fn cannot_open(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>().is_some() || e.downcast_ref::<Undecodable>().is_some()
}

/// Remove a part and its checksum, whichever exist.
fn remove_part_files(part: &Path) -> io::Result<()> {
    remove_if_exists(part)?;
    remove_if_exists(&checksum::path_of(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// A part rewritten under its id, cut short where its new checksum is durable and its
    /// bytes not yet in place, is read as whole or as absent, never set aside as damaged.
    #[test]
    fn a_rewrite_cut_short_never_leaves_a_part_against_its_checksum() {
        let root = tempfile::tempdir().unwrap();
        let ds = Dataset::open(root.path(), "inbox").unwrap();
        let id = Ulid::generate();
        ds.write_part(id, &mut df!("x" => [1i64]).unwrap()).unwrap();
        let mut more = df!("x" => [1i64, 2]).unwrap();
        let cut = ds.write_stepwise(
            id,
            |file| Ok(ParquetWriter::new(file).finish(&mut more).map(drop)?),
            || anyhow::bail!("the machine stops here"),
        );
        assert!(cut.is_err());
        let part = ds.part_path(id);
        assert!(!part.exists() || checksum::verify(&part).is_ok());
        let rows: usize = ds
            .read_all()
            .unwrap()
            .iter()
            .map(|(_, df)| df.height())
            .sum();
        assert_eq!(rows, 0, "the old part went before the new checksum came");
        assert_eq!(ds.quarantined_parts().unwrap(), 0);
    }

    /// A part set aside under a name already in quarantine keeps the one there, and each
    /// keeps its checksum.
    #[test]
    fn quarantine_never_replaces_a_part_it_holds() {
        let root = tempfile::tempdir().unwrap();
        let ds = Dataset::open(&root.path().join("a/b"), "plan").unwrap();
        let id = Ulid::generate();
        for rows in [1, 2] {
            let mut df = df!("x" => vec![7i64; rows]).unwrap();
            let path = ds.write_part(id, &mut df).unwrap();
            ds.quarantine(&path, &anyhow::anyhow!("damaged")).unwrap();
        }
        let mut kept: Vec<(String, usize)> = fs::read_dir(ds.quarantine_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == PART_EXT))
            .map(|p| {
                assert!(checksum::path_of(&p).exists(), "{p:?}");
                (p.display().to_string(), read_part(&p).unwrap().height())
            })
            .collect();
        kept.sort_by_key(|k| k.1);
        assert_eq!(kept.iter().map(|k| k.1).collect::<Vec<_>>(), [1, 2]);
        // The one set aside under a second name counts on its own.
        fs::remove_file(ds.quarantine_dir().join(format!("part-{id}.{PART_EXT}"))).unwrap();
        let until = ds.quarantined_until().unwrap();
        assert_eq!(until, Some(id.timestamp_ms() as i64));
    }

    /// Only folders and lock files nobody holds are removed; data, or a held lock, keeps all.
    #[test]
    fn an_unused_data_directory_is_removed_and_a_used_one_kept() {
        let root = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let dir = root.path().join(name);
            assert_eq!(create_data_dir(&dir).unwrap(), Some(dir.clone()));
            assert_eq!(create_data_dir(&dir).unwrap(), None, "made once");
            fs::create_dir_all(dir.join("events/.staging")).unwrap();
            fs::write(dir.join("events.lock"), b"").unwrap();
            dir
        };
        let unused = make("unused");
        remove_if_unused(&unused);
        assert!(!unused.exists());

        let with_data = make("data");
        fs::write(with_data.join("events/part-1.parquet"), b"x").unwrap();
        remove_if_unused(&with_data);
        assert!(with_data.join("events/part-1.parquet").exists());

        let nested = root.path().join("a/b/data");
        assert_eq!(
            create_data_dir(&nested).unwrap(),
            Some(root.path().join("a"))
        );
        remove_if_unused(&root.path().join("a"));
        assert!(!root.path().join("a").exists());

        let in_use = make("in-use");
        let lock = lock_file(&in_use.join("events.lock")).unwrap();
        lock.try_lock().unwrap();
        remove_if_unused(&in_use);
        assert!(in_use.join("events.lock").exists());
    }

    /// The file may be fine: only content that cannot be decoded goes to quarantine. (A link
    /// to itself stands in for running out of file descriptors.)
    #[test]
    fn a_part_that_cannot_be_opened_is_not_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let part = ds.part_path(Ulid::generate());
        std::os::unix::fs::symlink(&part, &part).unwrap();
        let err = ds.read_all().unwrap_err();
        assert!(format!("{err:#}").contains("cannot open"), "{err:#}");
        assert!(ds.compact(&|_| false).unwrap().is_none());
        assert!(part.symlink_metadata().is_ok(), "left in place");
        assert!(!dir.path().join("quarantine").join("rows").exists());
        // Content that is not Parquet is quarantined.
        fs::remove_file(&part).unwrap();
        fs::write(&part, b"not parquet").unwrap();
        assert!(ds.read_all().unwrap().is_empty());
        assert!(!part.exists());
        assert!(
            dir.path()
                .join("quarantine")
                .join("rows")
                .join(part.file_name().unwrap())
                .exists()
        );
    }

    /// A part whose bytes match its checksum is as written, so one this build cannot decode
    /// (a newer build's) is left in place, and the read fails saying why; it was quarantined,
    /// and receipts in it were never planned.
    #[test]
    fn a_part_matching_its_checksum_is_never_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let part = ds.part_path(Ulid::generate());
        let mut file = File::create(&part).unwrap();
        let mut hashing = checksum::Hashing::new(&mut file);
        hashing.write_all(b"not parquet this build reads").unwrap();
        hashing.flush().unwrap();
        let digest = hashing.digest();
        fs::write(checksum::path_of(&part), format!("{digest:016x}\n")).unwrap();
        let err = ds.read_all().unwrap_err();
        assert!(
            format!("{err:#}").contains("matches its checksum"),
            "{err:#}"
        );
        assert!(ds.compact(&|_| false).unwrap().is_none());
        assert!(part.exists(), "left in place");
        assert!(!dir.path().join("quarantine").join("rows").exists());
    }

    /// A checksum whose bytes are not text (a flipped high bit) is a damaged one: its part
    /// is set aside with it, and the read goes on. It was read as a part that could not be
    /// opened, left in place, and every start failed on it (an audit).
    #[test]
    fn a_checksum_that_is_not_text_sets_its_part_aside() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let good = ds
            .write_part(Ulid::generate(), &mut df!("x" => [1i64]).unwrap())
            .unwrap();
        let bad = ds
            .write_part(Ulid::generate(), &mut df!("x" => [2i64]).unwrap())
            .unwrap();
        fs::write(checksum::path_of(&bad), b"\xff\xfe\n").unwrap();
        let read = ds.read_all().unwrap();
        assert_eq!(read.iter().map(|(p, _)| p).collect::<Vec<_>>(), [&good]);
        let set_aside = ds.quarantine_dir().join(bad.file_name().unwrap());
        assert!(set_aside.exists() && checksum::path_of(&set_aside).exists());
    }

    /// A crash between a part set aside and its checksum: recovery moves the checksum to it.
    #[test]
    fn recovery_finishes_a_part_set_aside_half_way() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let part = ds
            .write_part(Ulid::generate(), &mut df!("x" => [1i64]).unwrap())
            .unwrap();
        create_dir_durably(ds.quarantine_dir()).unwrap();
        let aside = ds.quarantine_dir().join(part.file_name().unwrap());
        fs::rename(&part, &aside).unwrap();
        ds.recover().unwrap();
        assert!(checksum::path_of(&aside).exists());
        assert!(!checksum::path_of(&part).exists());
    }

    /// A merged part that dwarfs the newcomers is left alone until they add up to a quarter
    /// of it; the newcomers are merged among themselves meanwhile.
    #[test]
    fn a_large_part_waits_for_the_small_ones_to_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let write = |n: usize| {
            let mut df = df!("x" => vec![1i64; n]).unwrap();
            ds.write_part(Ulid::generate(), &mut df).unwrap()
        };
        let rows = |p: &Path| read_part(p).unwrap().height();
        let big = write(100_000);
        write(10);
        write(10);
        let merged = ds.compact(&|_| false).unwrap().unwrap().part;
        assert_eq!(rows(&merged), 20);
        assert!(big.exists());
        assert!(ds.compact(&|_| false).unwrap().is_none());
        write(30_000);
        // The first merge's sources gone (their grace over), its merged part joins.
        age_intents(&ds.dir);
        let merged = ds.compact(&|_| false).unwrap().unwrap().part;
        assert_eq!(rows(&merged), 130_020);
        assert_eq!(ds.parts().unwrap(), [merged]);
    }

    /// A compaction merges at most MERGE_ROWS rows, the oldest parts first: a folder of many
    /// small parts is merged over several rounds, not read into memory at once.
    #[test]
    fn a_compaction_merges_a_bounded_number_of_rows() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let mut written = Vec::new();
        for _ in 0..10 {
            let mut df = df!("x" => vec![1i64; 150_000]).unwrap();
            written.push(ds.write_part(Ulid::generate(), &mut df).unwrap());
        }
        // Listed by name: ULIDs of one millisecond are in no set order.
        written.sort();
        let first = ds.compact(&|_| false).unwrap().unwrap();
        assert_eq!(first.sources, written[..6]);
        assert_eq!(read_part(&first.part).unwrap().height(), 900_000);
        let second = ds.compact(&|_| false).unwrap().unwrap();
        assert_eq!(second.sources, written[6..]);
        assert!(ds.compact(&|_| false).unwrap().is_none());
        assert_eq!(ds.parts().unwrap(), [first.part, second.part]);
    }

    /// Set every compaction intent in `dir` an hour back: their sources' grace is over.
    fn age_intents(dir: &Path) {
        date_intents(dir, an_hour_ago());
    }

    fn an_hour_ago() -> std::time::SystemTime {
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600)
    }

    /// Date every compaction intent in `dir` at `at`.
    fn date_intents(dir: &Path, at: std::time::SystemTime) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "intent") {
                date_intent(&path, at);
            }
        }
    }

    /// Set the intent at `path` an hour back.
    fn age_intent(path: &Path) {
        date_intent(path, an_hour_ago());
    }

    fn date_intent(path: &Path, at: std::time::SystemTime) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(at).unwrap();
    }

    /// A compaction's sources stay for readers that listed them before, and a merged part
    /// whose sources are still there is not merged again; once their grace is over (or
    /// after a crash), the next round removes them first and may merge the merged part:
    /// the sources never come back, and each row is listed once.
    #[test]
    fn a_compaction_is_finished_after_its_grace_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let listed_rows = |ds: &Dataset| -> usize {
            (ds.parts().unwrap().iter())
                .map(|p| read_part(p).unwrap().height())
                .sum()
        };
        let write = |x: i64| {
            let mut df = df!("x" => vec![x; 10]).unwrap();
            ds.write_part(Ulid::generate(), &mut df).unwrap()
        };
        let first: Vec<PathBuf> = (0..2).map(write).collect();
        // A reader lists the parts; a compaction merges them meanwhile.
        let listed = ds.parts().unwrap();
        let merged = ds.compact(&|_| false).unwrap().unwrap();
        assert_eq!(listed_rows(&ds), 20);
        // New parts: the next round, within the grace, merges them and not the merged part.
        (2..4).for_each(|x| {
            write(x);
        });
        let second = ds.compact(&|_| false).unwrap().unwrap();
        assert!(!second.sources.contains(&merged.part));
        assert_eq!(listed_rows(&ds), 40);
        // What the reader listed is still there to read.
        let read: usize = listed.iter().map(|p| read_part(p).unwrap().height()).sum();
        assert_eq!(read, 20);
        // Past the grace, the next round removes the sources first, then merges what is left.
        age_intents(&ds.dir);
        let third = ds.compact(&|_| false).unwrap().unwrap();
        assert!(third.sources.contains(&merged.part));
        assert!(first.iter().all(|p| !p.exists()));
        assert_eq!(listed_rows(&ds), 40);
        ds.recover().unwrap();
        assert_eq!(listed_rows(&ds), 40);
        assert_eq!(ds.parts().unwrap(), [third.part]);
    }

    /// A deletion removes the part a move hid whatever its intent's age: a clock set back
    /// made an intent look young, and the hidden part kept the moved rows, deleted from their
    /// new place, on disk.
    #[test]
    fn a_deletion_leaves_no_part_a_move_hid_in_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let archive = Dataset::open(&dir.path().join("archive"), "rows").unwrap();
        let mut df = df!("x" => [0i64, 1, 0, 1]).unwrap();
        ds.write_part(Ulid::generate(), &mut df).unwrap();
        let zero = |df: &DataFrame| Ok(df.column("x")?.i64()?.equal(0));
        assert_eq!(ds.move_rows(&archive, &["x"], zero).unwrap(), 2);
        date_intents(
            &ds.dir,
            std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        assert_eq!(archive.remove_rows(&["x"], zero).unwrap(), 2);
        assert_eq!(ds.remove_rows(&["x"], zero).unwrap(), 0);
        for entry in fs::read_dir(&ds.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "parquet") {
                let x = read_part(&path).unwrap();
                let zeros = x.column("x").unwrap().i64().unwrap().equal(0).sum();
                assert_eq!(zeros, Some(0), "{}", path.display());
            }
        }
    }

    /// Recovery at another process's start (an import's, beside a profile build) leaves the
    /// sources of a compaction within its grace to the readers that listed them, hidden;
    /// past the grace it removes them.
    #[test]
    fn recovery_keeps_a_young_compaction_s_sources_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let sources: Vec<PathBuf> = (0..3)
            .map(|x| {
                let mut df = df!("x" => vec![x; 10]).unwrap();
                ds.write_part(Ulid::generate(), &mut df).unwrap()
            })
            .collect();
        let listed = ds.parts().unwrap();
        let merged = ds.compact(&|_| false).unwrap().unwrap();
        ds.recover().unwrap();
        let read: usize = listed.iter().map(|p| read_part(p).unwrap().height()).sum();
        assert_eq!(read, 30);
        assert_eq!(ds.parts().unwrap(), std::slice::from_ref(&merged.part));
        age_intents(&ds.dir);
        ds.recover().unwrap();
        assert!(sources.iter().all(|p| !p.exists()));
        assert_eq!(ds.parts().unwrap(), [merged.part]);
    }

    /// Rows moved out of a merged part whose sources are still on disk: the sources go
    /// first, never listed again with the rows the move took (the dispatcher, having
    /// forgotten those receipts, would plan them again).
    #[test]
    fn moving_rows_out_of_a_merged_part_leaves_no_source_behind() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let archive = Dataset::open(dir.path(), "archive").unwrap();
        for x in [1i64, 2] {
            let mut df = df!("x" => vec![x; 10]).unwrap();
            ds.write_part(Ulid::generate(), &mut df).unwrap();
        }
        let merged = ds.compact(&|_| false).unwrap().unwrap();
        let moved = ds
            .move_rows(&archive, &["x"], |df| {
                Ok(df
                    .column("x")?
                    .i64()?
                    .iter()
                    .map(|x| x == Some(1))
                    .collect())
            })
            .unwrap();
        assert_eq!(moved, 10);
        let values = |ds: &Dataset| -> Vec<i64> {
            let mut v: Vec<i64> = ds
                .parts()
                .unwrap()
                .iter()
                .flat_map(|p| {
                    let df = read_part(p).unwrap();
                    let x: Vec<i64> = df
                        .column("x")
                        .unwrap()
                        .i64()
                        .unwrap()
                        .into_no_null_iter()
                        .collect();
                    x
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(values(&ds), [2; 10]);
        ds.recover().unwrap();
        assert_eq!(values(&ds), [2; 10]);
        assert_eq!(values(&archive), [1; 10]);
        // The rewritten part goes after its grace, before its compaction's intent does: the
        // compaction's sources go with it, never listed again.
        let id = merged.part.file_stem().unwrap().to_str().unwrap();
        let compaction = ds.dir.join(format!(
            "compact-{}.intent",
            id.strip_prefix("part-").unwrap()
        ));
        assert!(compaction.exists());
        let newer = fs::read_dir(&ds.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "intent") && *p != compaction)
            .unwrap();
        age_intent(&newer);
        ds.finish_compactions().unwrap();
        assert_eq!(values(&ds), [2; 10]);
        ds.recover().unwrap();
        assert_eq!(values(&ds), [2; 10]);
        let parts = fs::read_dir(&ds.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|e| e == PART_EXT)
            })
            .count();
        assert_eq!(
            parts, 1,
            "the merged part's sources and the part moved from are gone"
        );
    }

    /// A reader that listed the parts before a move (a lift report beside the daily archive
    /// move) still reads every row: those left in a part the move rewrote from that part,
    /// kept on disk for its grace, and those moved from the archive, listed after.
    #[test]
    fn a_reader_that_listed_the_parts_before_a_move_reads_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let archive = Dataset::open(dir.path(), "archive").unwrap();
        // One part with rows to move and rows to keep, one with rows to move only.
        let mut mixed = df!("id" => (0i64..20).collect::<Vec<_>>()).unwrap();
        let mut moved_only = df!("id" => (20i64..30).collect::<Vec<_>>()).unwrap();
        let mixed = ds.write_part(Ulid::generate(), &mut mixed).unwrap();
        ds.write_part(Ulid::generate(), &mut moved_only).unwrap();
        let ids = |parts: &[PathBuf]| -> Vec<i64> {
            parts
                .iter()
                .filter_map(|p| read_part(p).ok())
                .flat_map(|df| {
                    let ids: Vec<i64> = df["id"].i64().unwrap().into_no_null_iter().collect();
                    ids
                })
                .collect()
        };
        let listed = ds.parts().unwrap();
        let moved = ds
            .move_rows(&archive, &["id"], |df| {
                Ok(df["id"].i64()?.iter().map(|id| id >= Some(10)).collect())
            })
            .unwrap();
        assert_eq!(moved, 20);
        // The reader goes on: the parts it listed, then the archive.
        let mut seen = ids(&listed);
        seen.extend(ids(&archive.parts().unwrap()));
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        // A reader listing now sees each row once.
        let mut live = ids(&ds.parts().unwrap());
        live.sort();
        assert_eq!(live, (0..10).collect::<Vec<_>>());
        // Past the grace the part moved from goes; the rows left stay listed once.
        age_intents(&ds.dir);
        ds.finish_compactions().unwrap();
        assert!(!mixed.exists());
        let mut live = ids(&ds.parts().unwrap());
        live.sort();
        assert_eq!(live, (0..10).collect::<Vec<_>>());
    }

    /// The ids in `ds`'s parts as listed now (reading them sets a damaged one aside), sorted.
    fn listed_ids(ds: &Dataset) -> Vec<i64> {
        let mut ids: Vec<i64> = (ds.read_all().unwrap().iter())
            .flat_map(|(_, df)| {
                df["id"]
                    .i64()
                    .unwrap()
                    .into_no_null_iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids
    }

    /// Damage the part at `path`: its bytes no longer match its checksum.
    fn damage(path: &Path) {
        fs::write(path, b"bytes a disk mangled").unwrap();
    }

    /// A move's new part set aside as damaged within its grace: the part it was written from
    /// stays hidden, and is set aside intact when the move is finished. Its intent was a
    /// compaction's, rolled back: the part came back with the rows moved to the archive, whose
    /// receipts the dispatcher had forgotten, to be planned and sent again (a review).
    #[test]
    fn a_move_s_new_part_set_aside_never_brings_back_the_rows_moved() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let archive = Dataset::open(&dir.path().join("archive"), "rows").unwrap();
        let mut df = df!("id" => (0i64..20).collect::<Vec<_>>()).unwrap();
        let from = ds.write_part(Ulid::generate(), &mut df).unwrap();
        let moved = ds
            .move_rows(&archive, &["id"], |df| {
                Ok(df["id"].i64()?.iter().map(|id| id >= Some(10)).collect())
            })
            .unwrap();
        assert_eq!(moved, 10);
        let [left] = &ds.parts().unwrap()[..] else {
            panic!("one part listed")
        };
        damage(left);
        assert_eq!(listed_ids(&ds), [0i64; 0], "the damaged part is set aside");
        assert!(from.exists(), "within its grace, the part moved from stays");
        assert_eq!(listed_ids(&ds), [0i64; 0], "never listed again");
        ds.recover().unwrap();
        assert_eq!(listed_ids(&ds), [0i64; 0]);
        assert!(!from.exists());
        let aside = ds.quarantine_dir().join(from.file_name().unwrap());
        assert_eq!(read_part(&aside).unwrap().height(), 20, "kept intact");
        assert_eq!(listed_ids(&archive), (10..20).collect::<Vec<_>>());
        let intents = fs::read_dir(&ds.dir).unwrap().map(|e| e.unwrap().path());
        assert_eq!(intents.filter(|p| Rewrite::of(p).is_some()).count(), 0);
    }

    /// A move that meets a young merged part set aside as damaged takes its rows from the
    /// merged part's sources, listed again: it took none, and the receipts the dispatcher then
    /// forgot came back with them (a review).
    #[test]
    fn a_move_takes_rows_from_the_sources_of_a_merged_part_it_finds_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let archive = Dataset::open(&dir.path().join("archive"), "rows").unwrap();
        for ids in [0i64..10, 10..20] {
            let mut df = df!("id" => ids.collect::<Vec<_>>()).unwrap();
            ds.write_part(Ulid::generate(), &mut df).unwrap();
        }
        let merged = ds.compact(&|_| false).unwrap().unwrap();
        damage(&merged.part);
        let moved = ds
            .move_rows(&archive, &["id"], |df| {
                Ok(df["id"].i64()?.iter().map(|id| id >= Some(5)).collect())
            })
            .unwrap();
        assert_eq!(moved, 15);
        assert_eq!(listed_ids(&ds), (0..5).collect::<Vec<_>>());
        assert_eq!(listed_ids(&archive), (5..20).collect::<Vec<_>>());
    }

    /// A rewrite `kind` of one part (ids 0..20) that a crash cut short once its new part (ids
    /// 0..10) was written: the part rewritten and the new one.
    fn cut_short(ds: &Dataset, kind: Rewrite) -> (PathBuf, PathBuf) {
        let mut df = df!("id" => (0i64..20).collect::<Vec<_>>()).unwrap();
        let source = ds.write_part(Ulid::generate(), &mut df).unwrap();
        let id = Ulid::generate();
        (ds.write_intent(kind, id, std::slice::from_ref(&source))).unwrap();
        let mut left = df!("id" => (0i64..10).collect::<Vec<_>>()).unwrap();
        (source, ds.write_part(id, &mut left).unwrap())
    }

    /// A move an earlier version noted as a compaction (`compact-`, one source) whose new part
    /// is set aside is finished as a move: the part it was taken from is never listed again,
    /// and is set aside intact (the rows the move left are nowhere else whole).
    #[test]
    fn an_earlier_version_s_move_is_finished_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let (source, new) = cut_short(&ds, Rewrite::Compaction);
        damage(&new);
        assert_eq!(listed_ids(&ds), [0i64; 0]);
        ds.recover().unwrap();
        assert!(!source.exists());
        assert!(
            (ds.quarantine_dir())
                .join(source.file_name().unwrap())
                .exists()
        );
        assert_eq!(listed_ids(&ds), [0i64; 0]);
    }

    /// A deletion cut short by a crash after its new part was written is finished by the next
    /// start however young: its sources hold rows deleted, and keep no reader's.
    #[test]
    fn recovery_finishes_a_deletion_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let (source, _) = cut_short(&ds, Rewrite::Deletion);
        ds.recover().unwrap();
        assert!(!source.exists());
        assert_eq!(listed_ids(&ds), (0..10).collect::<Vec<_>>());
    }

    /// Each rewrite cut short by a crash after its new part was written, that part then set
    /// aside as damaged: a compaction's sources are listed again (they hold its rows), a
    /// move's and a deletion's are not (they hold the rows taken too); at the next start a
    /// move's are set aside intact and a deletion's removed (its rows are not kept anywhere).
    #[test]
    fn a_rewrite_s_new_part_set_aside_lists_its_sources_again_only_for_a_compaction() {
        for kind in Rewrite::ALL {
            let dir = tempfile::tempdir().unwrap();
            let ds = Dataset::open(dir.path(), "rows").unwrap();
            // Two sources, as a compaction has at least.
            let sources: Vec<PathBuf> = [0i64..10, 10..20]
                .into_iter()
                .map(|ids| {
                    let mut df = df!("id" => ids.collect::<Vec<_>>()).unwrap();
                    ds.write_part(Ulid::generate(), &mut df).unwrap()
                })
                .collect();
            let id = Ulid::generate();
            ds.write_intent(kind, id, &sources).unwrap();
            let new = ds
                .write_part(
                    id,
                    &mut df!("id" => (0i64..10).collect::<Vec<_>>()).unwrap(),
                )
                .unwrap();
            damage(&new);
            let again = match kind {
                Rewrite::Compaction => (0..20).collect(),
                Rewrite::Move | Rewrite::Deletion => vec![],
            };
            assert_eq!(
                listed_ids(&ds),
                again,
                "{kind:?}: read with the part set aside"
            );
            assert!(sources.iter().all(|s| s.exists()), "{kind:?}");
            ds.recover().unwrap();
            assert_eq!(listed_ids(&ds), again, "{kind:?}");
            for source in &sources {
                let aside = ds.quarantine_dir().join(source.file_name().unwrap());
                assert_eq!(source.exists(), kind == Rewrite::Compaction, "{kind:?}");
                assert_eq!(aside.exists(), kind == Rewrite::Move, "{kind:?}");
            }
            assert!(!ds.dir.join(kind.file_name(id)).exists(), "{kind:?}");
        }
    }

    /// Parts whose text column is a dictionary in some (a bulk import's one-value `source`)
    /// and plain text in others (an import from HubSpot) merge, as text.
    #[test]
    fn text_and_dictionary_columns_merge_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let one =
            |value: &str| FrozenCategories::new([value]).map(DataType::from_frozen_categories);
        for (value, dtype) in [
            ("csv:a", Some(one("csv:a").unwrap())),
            ("hubspot:main", None),
            ("csv:b", Some(one("csv:b").unwrap())),
        ] {
            let text = Column::new("source".into(), [value, value]);
            let column = match dtype {
                Some(d) => text.cast(&d).unwrap(),
                None => text,
            };
            let mut df = DataFrame::new(2, vec![column]).unwrap();
            ds.write_part(Ulid::generate(), &mut df).unwrap();
        }
        let merged = ds.compact(&|_| false).unwrap().expect("merged").part;
        let df = read_part(&merged).unwrap();
        let values: Vec<Option<&str>> =
            df.column("source").unwrap().str().unwrap().iter().collect();
        // Parts written in one millisecond list in any order.
        let mut values: Vec<&str> = values.into_iter().flatten().collect();
        values.sort_unstable();
        assert_eq!(
            values,
            [
                "csv:a",
                "csv:a",
                "csv:b",
                "csv:b",
                "hubspot:main",
                "hubspot:main"
            ]
        );
    }

    /// A compaction a crash cut short, as it leaves the folder: its intent names the sources.
    /// With the merged part durable, the sources are not listed, and the next start removes
    /// them (each row once in the folder); without it, only the intent goes (the rows stay
    /// in their sources). Run on
    /// many folders, as the order they list their files in decides: recovery failed (so did
    /// the start) when a source's checksum was listed after the intent that removed it.
    #[test]
    fn recovery_finishes_or_drops_an_interrupted_compaction() {
        for merged_written in [[true; 16], [false; 16]].concat() {
            let dir = tempfile::tempdir().unwrap();
            let ds = Dataset::open(dir.path(), "rows").unwrap();
            let mut sources = Vec::new();
            for x in [1i64, 2] {
                let mut df = df!("x" => vec![x; 10]).unwrap();
                sources.push(ds.write_part(Ulid::generate(), &mut df).unwrap());
            }
            let id = Ulid::generate();
            let intent = ds.dir.join(format!("compact-{id}.intent"));
            let names: Vec<&str> = sources
                .iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap())
                .collect();
            write_durably(&intent, names.join("\n").as_bytes()).unwrap();
            let merged = merged_written.then(|| {
                let frames = sources.iter().map(|p| read_part(p).unwrap()).collect();
                ds.write_part(id, &mut concat_frames(frames).unwrap())
                    .unwrap()
            });
            // Before recovery too, a reader lists each row once: one that counts rows (the
            // profiles) would otherwise count the sources' twice.
            let listed: usize = (ds.parts().unwrap().iter())
                .map(|p| read_part(p).unwrap().height())
                .sum();
            assert_eq!(
                listed, 20,
                "before recovery, merged written: {merged_written}"
            );
            if merged_written {
                // Within the grace, the sources stay for readers that listed them, hidden.
                ds.recover().unwrap();
                assert!(intent.exists() && sources.iter().all(|s| s.exists()));
                assert_eq!(ds.parts().unwrap().len(), 1);
                age_intents(&ds.dir);
            }
            ds.recover().unwrap();
            assert!(!intent.exists());
            let parts = ds.parts().unwrap();
            match &merged {
                Some(m) => assert_eq!(&parts, std::slice::from_ref(m)),
                // Listed by name: ULIDs of one millisecond are in no set order.
                None => assert_eq!(parts, {
                    let mut sorted = sources.clone();
                    sorted.sort();
                    sorted
                }),
            }
            let rows: usize = parts.iter().map(|p| read_part(p).unwrap().height()).sum();
            assert_eq!(rows, 20, "merged written: {merged_written}");
            assert!(sources.iter().all(|s| s.exists() != merged_written));
        }
    }

    /// A rewrite that panicked (a bug) while holding the dataset's rewrite lock does not stop
    /// the dataset's compactions for the rest of the process.
    #[test]
    fn compaction_goes_on_after_a_rewrite_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let archive = Dataset::open(dir.path(), "archive").unwrap();
        for _ in 0..2 {
            let mut df = df!("x" => vec![1i64; 10]).unwrap();
            ds.write_part(Ulid::generate(), &mut df).unwrap();
        }
        let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ds.move_rows(&archive, &["x"], |_| panic!("a bug in a rewrite"))
        }));
        assert!(moved.is_err(), "the rewrite panicked");
        let merged = ds.compact(&|_| false).unwrap().expect("merged").part;
        assert_eq!(read_part(&merged).unwrap().height(), 20);
        assert_eq!(ds.parts().unwrap(), [merged]);
    }

    /// Parts published together are seen all or none: a crash after the pending file and one
    /// part moved leaves all of them hidden, and finishing the publish shows all.
    #[test]
    fn parts_published_together_are_hidden_until_all_are_in() {
        let dir = tempfile::tempdir().unwrap();
        let target = Dataset::open(dir.path(), "rows").unwrap();
        let staging = Dataset::open(dir.path(), "rows/.import-a").unwrap();
        for v in 0..3i64 {
            let mut df = DataFrame::new(1, vec![Column::new("v".into(), [v])]).unwrap();
            staging.write_part(Ulid::generate(), &mut df).unwrap();
        }
        let names: Vec<String> = staging
            .parts()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        let pending = target.dir.join(".import-a.pending");
        write_durably(&pending, names.join("\n").as_bytes()).unwrap();
        let moved = staging.dir.join(&names[1]);
        fs::rename(
            checksum::path_of(&moved),
            checksum::path_of(&target.dir.join(&names[1])),
        )
        .unwrap();
        fs::rename(&moved, target.dir.join(&names[1])).unwrap();
        assert!(
            target.parts().unwrap().is_empty(),
            "none visible mid-publish"
        );
        finish_publishing(&pending, &staging.dir, &target.dir).unwrap();
        let parts = target.parts().unwrap();
        assert_eq!(parts.len(), 3);
        for part in &parts {
            read_part(part).unwrap(); // checksum beside it
        }
        assert!(!pending.exists() && !staging.dir.exists());

        let staging = Dataset::open(dir.path(), "rows/.import-b").unwrap();
        let mut df = DataFrame::new(1, vec![Column::new("v".into(), [9i64])]).unwrap();
        staging.write_part(Ulid::generate(), &mut df).unwrap();
        assert_eq!(publish(&staging, &target).unwrap(), 1);
        assert_eq!(target.parts().unwrap().len(), 4);
        assert!(!staging.dir.exists());
    }

    /// A staged part that cannot be looked at fails the publish and keeps the staging folder
    /// (taken for gone, it was removed with the folder and the import said it was done: an
    /// audit). A file where a folder is named makes the look fail, as an I/O error would.
    #[test]
    fn a_publish_that_cannot_look_at_a_part_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = Dataset::open(dir.path(), "rows").unwrap();
        let staging = Dataset::open(dir.path(), "rows/.import-c").unwrap();
        let mut df = DataFrame::new(1, vec![Column::new("v".into(), [1i64])]).unwrap();
        let part = staging.write_part(Ulid::generate(), &mut df).unwrap();
        fs::write(staging.dir.join("blocked"), "a file").unwrap();
        let pending = target.dir.join(format!(".import-c.{PENDING_EXT}"));
        let name = part.file_name().unwrap().to_str().unwrap();
        write_durably(&pending, format!("blocked/{name}\n{name}").as_bytes()).unwrap();
        assert!(finish_publishing(&pending, &staging.dir, &target.dir).is_err());
        assert!(staging.dir.join("blocked").exists() && pending.exists());
    }

    #[test]
    fn frames_written_from_several_threads_become_one_part_with_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Dataset::open(dir.path(), "rows").unwrap();
        let frame = |from: i64, n: i64| {
            let values: Vec<i64> = (from..from + n).collect();
            let names: Vec<String> = values.iter().map(|v| format!("row {v}")).collect();
            DataFrame::new(
                n as usize,
                vec![
                    Column::new("v".into(), values),
                    Column::new("name".into(), names),
                ],
            )
            .unwrap()
        };
        let schema = frame(0, 0).schema().clone();
        let path = ds
            .write_part_with(Ulid::generate(), &schema, |write| {
                (0..8i64)
                    .into_par_iter()
                    .try_for_each(|k| write(&frame(k * 1000, 1000)))
            })
            .unwrap();
        assert_eq!(ds.parts().unwrap(), vec![path.clone()]);
        let back = read_part(&path).unwrap();
        let mut v: Vec<i64> = back
            .column("v")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        v.sort_unstable();
        assert_eq!(v, (0..8000).collect::<Vec<_>>());
        let names = back.column("name").unwrap().str().unwrap();
        let vs = back.column("v").unwrap().i64().unwrap();
        for (n, v) in names.iter().zip(vs.into_no_null_iter()) {
            assert_eq!(n, Some(format!("row {v}").as_str()));
        }
    }
}
