//! The model's commands: `explain`, `predict`, `backtest` and `gen`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::ModelConfig;
use super::backtest::{self, Rows};
use super::dataset;
use super::explain::{ConnectorPaused, Explanation};
use super::synth;
use crate::config::Config;
use crate::datasets::events;
use crate::import::csv::{self as csv_import, Columns};
use crate::time::{day_of, format_minute, now_ms};

/// `sendtime explain CONTACT`: class, heat map, and what each webhook type would do now.
pub fn explain(config: &Config, contact: &str, at: Option<i64>) -> anyhow::Result<()> {
    let contact = contact.trim();
    anyhow::ensure!(
        crate::datasets::contacts::is_contact_query(contact),
        crate::datasets::contacts::not_a_contact(contact)
    );
    let now = at.unwrap_or_else(now_ms);
    let data_dir = &config.server.data_dir;
    // Now, with the knobs `serve` plans with: the stored fit while it holds, not a new one.
    let stored = match at {
        None => super::stored::fit_in_use(data_dir, config.model, now)?,
        Some(_) => None,
    };
    let built = match stored {
        Some(fit) => {
            let unfitted = ModelConfig {
                auto: super::calibrate::Auto::NONE,
                ..config.model
            };
            let mut built = dataset::build(data_dir, unfitted, now)?;
            let counts = built.profiles.population_counts();
            built.profiles.apply_fit(fit, &counts);
            built
        }
        None => dataset::build(data_dir, config.model, now)?,
    };
    let receipts = super::explain::receipts(data_dir, contact)?;
    let explanation = Explanation::new(
        config,
        Some(&built),
        contact,
        receipts.posted.clone(),
        &crate::pauses::read_or_hold(data_dir),
        &|connector| {
            crate::dispatch::connector::stored_pause_of(data_dir, connector, now).map(
                |(until_ms, why)| ConnectorPaused {
                    until_ms,
                    why: why.as_str(),
                },
            )
        },
        now,
    )?
    .with_receipts(receipts, config);
    print!("{}", explanation.text(&data_dir.join(events::NAME)));
    Ok(())
}

/// Fail unless `{data_dir}/events/` holds a part: a command that learns from events has
/// nothing to say without them, and an empty answer would hide a wrong `--data`.
fn require_events(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.join(events::NAME);
    let any = std::fs::read_dir(&dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "parquet")))
    });
    anyhow::ensure!(
        any,
        "no events in {}: import some first (`sendtime import csv FILE ...` or `sendtime import hubspot`), or point --data at the folder that has them",
        dir.display()
    );
    Ok(())
}

/// `sendtime predict`: every contact's slot scores as of a time, long format.
pub fn predict(config: &Config, as_of: i64, out: &Path) -> anyhow::Result<()> {
    let classes_path = classes_path(out);
    // A folder would fail only at the rename, after the build and with the classes file in
    // place (beside the folder; an audit).
    for path in [out, classes_path.as_path()] {
        anyhow::ensure!(
            !path.is_dir(),
            "--out {}: {} is a folder; name another file",
            out.display(),
            path.display(),
        );
    }
    // Said before the build, which may take minutes, not after it (an audit).
    let folder = crate::store::folder_of(out);
    anyhow::ensure!(
        crate::store::is_dir(folder)?,
        "--out {}: no folder {} to write it in",
        out.display(),
        folder.display()
    );
    require_events(&config.server.data_dir)?;
    let built = dataset::build(&config.server.data_dir, config.model, as_of)?;
    anyhow::ensure!(
        built.seen.iter().any(|s| *s),
        "no events before {} in {}: pick a later --as-of",
        format_minute(as_of),
        config.server.data_dir.join(events::NAME).display()
    );
    let day = day_of(as_of);
    // Written under `.partial` names, renamed once whole: a run cut short (Ctrl-C, a full
    // disk) left files at the final names that ended mid-contact and read as complete.
    let partial = |p: &Path| {
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        p.with_file_name(name)
    };
    let (scores_partial, classes_partial) = (partial(out), partial(&classes_path));
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).with_context(|| format!("cannot write {}", to.display()))
    };
    let written = write_predictions(&built, day, &scores_partial, &classes_partial).and_then(|n| {
        rename(&classes_partial, &classes_path)?;
        rename(&scores_partial, out)?;
        Ok(n)
    });
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&scores_partial);
            let _ = std::fs::remove_file(&classes_partial);
            return Err(e);
        }
    };
    println!(
        "wrote scores of {n} contacts to {} and their classes to {}",
        out.display(),
        classes_path.display()
    );
    Ok(())
}

/// Write the scores and classes of every contact seen, as of `day`; how many.
fn write_predictions(
    built: &dataset::Built,
    day: i32,
    scores_path: &Path,
    classes_path: &Path,
) -> anyhow::Result<usize> {
    let create = |p: &Path| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("cannot create {}", p.display()))
    };
    let (mut scores, mut classes) = (create(scores_path)?, create(classes_path)?);
    writeln!(scores, "contact_id,slot,score")?;
    writeln!(classes, "contact_id,class,engagements,machine")?;
    let mut n = 0;
    for (c, seen) in built.seen.iter().enumerate() {
        if !seen {
            continue;
        }
        // Events naming an index past the dictionary (its writer killed before it): no key to
        // print them by (an audit: it panicked).
        let Some(key) = built.contacts.keys.get(c) else {
            continue;
        };
        let key = key.trim_start_matches('#');
        n += 1;
        let p = built.profiles.profile(Some(c as u32), day);
        for (slot, score) in p.scores.iter().enumerate() {
            writeln!(scores, "{key},{slot},{score:.6}")?;
        }
        writeln!(classes, "{key},{},{},{}", p.class, p.engagements, p.machine)?;
    }
    scores.flush()?;
    classes.flush()?;
    Ok(n)
}

/// `p.csv` → `p.classes.csv`; another extension is kept (`p.txt` → `p.txt.classes.csv`), so
/// `p.txt` and `p.csv` do not write one classes file.
fn classes_path(out: &Path) -> PathBuf {
    let csv = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let stem = if csv {
        out.file_stem()
    } else {
        out.file_name()
    }
    .map_or_else(|| "predict".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.classes.csv"))
}

/// How `backtest` runs and reports.
#[derive(Debug, Clone, Copy)]
pub struct BacktestOptions {
    /// Tune the parameters on validation windows inside the training period first.
    pub tune: bool,
    /// Days before the split that the validation windows cover.
    pub validation_days: i64,
    /// The hour (UTC) of the fixed-hour baseline.
    pub fixed_hour: u8,
    /// Learn again every this many days of the test period (else once, at the split).
    pub relearn_days: Option<u32>,
    /// JSON instead of a table.
    pub json: bool,
}

/// Where `backtest` reads events from.
pub enum Events {
    /// A CSV file, read with these columns.
    Csv(PathBuf, Columns),
    /// The events dataset of this data directory.
    Dataset(PathBuf),
}

/// `sendtime backtest`: on the events of a CSV file when given, else on the events dataset.
pub fn backtest(
    model: ModelConfig,
    events: Events,
    split_ms: i64,
    options: BacktestOptions,
) -> anyhow::Result<()> {
    let BacktestOptions {
        tune,
        validation_days,
        fixed_hour,
        relearn_days,
        json,
    } = options;
    let rows = match events {
        Events::Csv(file, columns) => {
            let (rows, contacts) = csv_import::read(&file, &columns)?;
            Rows::new(rows, contacts)
        }
        Events::Dataset(data_dir) => {
            require_events(&data_dir)?;
            Rows::from_dataset(&data_dir)?
        }
    };
    anyhow::ensure!(
        rows.rows.iter().any(|r| r.at_ms < split_ms)
            && rows.rows.iter().any(|r| r.at_ms >= split_ms),
        "no events on one side of the split {}; pick a time inside the data",
        format_minute(split_ms)
    );
    let (model, tuning) = if tune {
        let (m, t) = backtest::tune(model, &rows, split_ms, validation_days)?;
        (m, Some(t))
    } else {
        (model, None)
    };
    let mut report = backtest::evaluate(model, &rows, split_ms, fixed_hour, relearn_days);
    anyhow::ensure!(
        report.test_events() > 0,
        "no opens or clicks after the split {} to score (the events after it are of other kinds: check --kind and --kind-default)",
        format_minute(split_ms)
    );
    report.tuning = tuning;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `sendtime profiles`.
pub fn profiles(config: &Config, rebuild: bool, dry_run: bool) -> anyhow::Result<()> {
    if dry_run {
        let started = std::time::Instant::now();
        // Only the profiles: the contact dictionary is for lookups, which a dry run makes none of.
        let (profiles, _) = dataset::profiles_at(
            &config.server.data_dir,
            config.model,
            day_of(now_ms()),
            i64::MAX,
        )?;
        let engaged = profiles.stats.iter().filter(|s| s.engagements > 0).count();
        println!(
            "dry run: profiles of {} contacts ({engaged} with opens or clicks) built in {:.2} s; nothing stored",
            profiles.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let (built, update) =
        super::stored::update(&config.server.data_dir, config.model, now_ms(), rebuild)?;
    let classes = {
        let day = day_of(now_ms());
        let mut n = std::collections::BTreeMap::new();
        for c in 0..built.contacts.len() as u32 {
            *n.entry(built.profiles.class(Some(c), day).as_str())
                .or_insert(0usize) += 1;
        }
        let listed: Vec<String> = n.iter().map(|(k, v)| format!("{v} {k}")).collect();
        // None on an empty store: no dangling separator.
        if listed.is_empty() {
            String::new()
        } else {
            format!("; {}", listed.join(", "))
        }
    };
    println!(
        "profiles of {} contacts {} ({} event part{} read) in {:.2} s ({:.2} s building, {:.2} s storing){classes}",
        update.contacts,
        if update.rebuilt { "rebuilt" } else { "updated" },
        update.new_parts,
        if update.new_parts == 1 { "" } else { "s" },
        update.seconds,
        update.build_seconds,
        update.seconds - update.build_seconds,
    );
    if let Some(fit) = built.profiles.fit {
        println!("model knobs in use: {}", fit.describe());
    }
    Ok(())
}

/// Where `gen`'s year ends unless `--end` says: 2026-01-01.
const DEFAULT_GEN_END_MS: i64 = 1_767_225_600_000;

/// `sendtime gen --respond`: draw (`draw` picks one of many independent draws) the responses
/// of the contacts generated with this spec to the sends recorded in `out` since `since_ms`,
/// and store them as events.
pub fn respond(
    contacts: usize,
    seed: u64,
    end_ms: Option<i64>,
    out: &Path,
    since_ms: Option<i64>,
    response: synth::Response,
    draw: u64,
) -> anyhow::Result<()> {
    let spec = synth::Spec {
        contacts,
        events: 0,
        seed,
        end_ms: end_ms.unwrap_or(DEFAULT_GEN_END_MS),
        habits: true,
    };
    let sends: Vec<(i64, i64, u64)> = crate::lift::sends::planned(out)?
        .into_iter()
        .filter_map(|s| {
            let at = s
                .sent_at_ms
                .filter(|at| since_ms.is_none_or(|t| *at >= t))?;
            let seed = xxhash_rust::xxh3::xxh3_64_with_seed(&s.receipt.to_le_bytes(), draw);
            Some((s.contact_id?, at, seed))
        })
        .collect();
    anyhow::ensure!(
        !sends.is_empty(),
        "no sends recorded in {}{}: a send is a contact HubSpot took (enrolled, listed or released), and one recorded as a dry run is not; dispatch some first (sendtime serve or tick) on a connector that calls HubSpot, or `sendtime hubspot-standin` in its place",
        out.display(),
        since_ms.map_or(String::new(), |t| format!(
            " since {}",
            crate::time::format_minute(t)
        ))
    );
    let events = synth::respond(spec, &sends, response)?;
    let (new, _) = crate::datasets::events::append(out, &events)?;
    println!(
        "{new} response events ({response:?}) to {} sends stored in {}",
        sends.len(),
        out.display()
    );
    Ok(())
}

/// `sendtime gen`.
pub fn generate(
    contacts: usize,
    events: usize,
    seed: u64,
    out: &Path,
    end_ms: Option<i64>,
    habits: bool,
) -> anyhow::Result<()> {
    let end_ms = end_ms.unwrap_or(DEFAULT_GEN_END_MS);
    let started = std::time::Instant::now();
    let n = synth::generate(
        out,
        synth::Spec {
            contacts,
            events,
            seed,
            end_ms,
            habits,
        },
    )?;
    println!(
        "generated {n} events of {contacts} contacts (seed {seed}) in {:.1} s into {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_files_of_other_extensions_get_classes_files_of_their_own() {
        let of = |p: &str| classes_path(Path::new(p)).display().to_string();
        assert_eq!(of("out/p.csv"), "out/p.classes.csv");
        assert_eq!(of("out/p.CSV"), "out/p.classes.csv");
        assert_eq!(of("out/p.txt"), "out/p.txt.classes.csv");
        assert_eq!(of("p"), "p.classes.csv");
    }
}
