//! The model's commands: `explain`, `predict`, `backtest` and `gen`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::backtest::{self, Rows};
use super::dataset;
use super::plan::{Subject, plan};
use super::synth;
use crate::config::{Config, WebhookType};
use crate::datasets::contacts::contact_key;
use crate::import::csv::{self as csv_import, Columns};
use crate::time::{DAY_MS, SLOTS, day_of, format_minute, now_ms, slot_name};

/// `sendtime explain CONTACT`: class, heat map, and what each webhook type would do now.
pub fn explain(config: &Config, contact: &str, at: Option<i64>) -> anyhow::Result<()> {
    anyhow::ensure!(
        !contact.trim().is_empty(),
        "CONTACT is empty: give an email address or a HubSpot contact id"
    );
    let now = at.unwrap_or_else(now_ms);
    let data_dir = &config.server.data_dir;
    let built = dataset::build(data_dir, config.model, now)?;
    let (id, email) = match contact.parse::<i64>() {
        Ok(id) => (Some(id), None),
        Err(_) => (None, Some(contact)),
    };
    let index = built.contacts.find(id, email);
    let profile = built.profiles.profile(index, day_of(now));
    let key = contact_key(id, email).unwrap_or_default();
    let mut out = String::new();
    use std::fmt::Write as _;
    match index {
        None => {
            let _ = writeln!(
                out,
                "{contact}: no events for this contact in {}; treated as a new contact (class evaluating)",
                data_dir.join("events").display()
            );
        }
        Some(_) => {
            let _ = writeln!(
                out,
                "{contact}: class {}, {} opens/clicks, last {}{}",
                profile.class,
                profile.engagements,
                profile
                    .last_day
                    .map_or("never".into(), |d| format_minute(d as i64 * DAY_MS)[..10]
                        .to_string()),
                if profile.machine {
                    "; MACHINE-LIKE: not learned from"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(out, "as of {}\n", format_minute(now));
    out.push_str(&heat_map(&profile.scores));
    let _ = writeln!(out);
    for kind in WebhookType::ALL {
        let p = plan(
            kind,
            now,
            index.map(|_| &profile),
            &built.profiles.population,
            Subject {
                contact: &key,
                receipt: "explain",
            },
        );
        let _ = writeln!(out, "{:<30} {}", kind.as_str(), format_minute(p.due_at_ms));
        let _ = writeln!(out, "{:<30} {}", "", p.reason);
    }
    // A workflow action releases the contact at its delivery type's time above.
    for action in config
        .webhooks
        .iter()
        .filter(|w| w.target == crate::config::Target::Callback)
    {
        let _ = writeln!(
            out,
            "action {}: released as its delivery type above ({} when the workflow chooses none)",
            action.id, action.kind
        );
    }
    planned_receipts(data_dir, id, email, &mut out)?;
    print!("{out}");
    Ok(())
}

/// The contact's receipts in `plan/`, newest last (at most the ten latest), with the reasons
/// that say where capacity and quiet hours moved them.
fn planned_receipts(
    data_dir: &std::path::Path,
    id: Option<i64>,
    email: Option<&str>,
    out: &mut String,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let dataset = crate::datasets::plan::dataset(data_dir)?;
    let mut rows: Vec<_> = crate::datasets::plan::read(&dataset)?
        .into_iter()
        .filter(|p| match (id, email) {
            (Some(id), _) => p.contact_id == Some(id),
            (None, Some(e)) => p
                .email
                .as_deref()
                .is_some_and(|pe| pe.eq_ignore_ascii_case(e.trim())),
            (None, None) => false,
        })
        .collect();
    rows.sort_by_key(|p| (p.planned_at_ms, p.received_at_ms));
    rows.dedup_by(|a, b| a.receipt_id == b.receipt_id);
    let _ = writeln!(out, "\nplanned receipts: {}", rows.len());
    for p in rows.iter().skip(rows.len().saturating_sub(10)) {
        let _ = writeln!(
            out,
            "{} {} received {}, due {}\n  {}",
            p.webhook_id,
            p.webhook_type,
            format_minute(p.received_at_ms),
            format_minute(p.due_at_ms),
            p.reason
        );
    }
    Ok(())
}

/// A 7×24 heat map of slot scores, darker = likelier; two columns per hour, each label over
/// the first column of its hour.
fn heat_map(scores: &[f64; SLOTS]) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let max = scores.iter().cloned().fold(0.0, f64::max).max(1e-12);
    let mut out = String::from("      UTC  ");
    for h in (0..24).step_by(3) {
        out.push_str(&format!("{h:<6}"));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    for (d, day) in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .enumerate()
    {
        out.push_str(&format!("      {day}  "));
        for h in 0..24 {
            let v = scores[d * 24 + h] / max;
            let shade = SHADES[((v * 4.0).round() as usize).min(4)];
            out.push(shade);
            out.push(shade);
        }
        out.push('\n');
    }
    // The earliest of equal bests.
    let best = (0..SLOTS).fold(0, |b, s| if scores[s] > scores[b] { s } else { b });
    out.push_str(&format!(
        "      ░ ▒ ▓ █ = about 1/4, 1/2, 3/4, all of the best slot's score; best slot: {}\n",
        slot_name(best as u8)
    ));
    out
}

/// Fail unless `{data_dir}/events/` holds a part: a command that learns from events has
/// nothing to say without them, and an empty answer would hide a wrong `--data`.
fn require_events(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.join("events");
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
    require_events(&config.server.data_dir)?;
    let built = dataset::build(&config.server.data_dir, config.model, as_of)?;
    anyhow::ensure!(
        built.seen.iter().any(|s| *s),
        "no events before {} in {}: pick a later --as-of",
        format_minute(as_of),
        config.server.data_dir.join("events").display()
    );
    let day = day_of(as_of);
    let classes_path = classes_path(out);
    let mut scores = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    let mut classes = std::io::BufWriter::new(
        std::fs::File::create(&classes_path)
            .with_context(|| format!("cannot create {}", classes_path.display()))?,
    );
    writeln!(scores, "contact_id,slot,score")?;
    writeln!(classes, "contact_id,class,engagements,machine")?;
    let mut n = 0;
    for (c, seen) in built.seen.iter().enumerate() {
        if !seen {
            continue;
        }
        n += 1;
        let key = built.contacts.keys[c].trim_start_matches('#');
        let p = built.profiles.profile(Some(c as u32), day);
        for (slot, score) in p.scores.iter().enumerate() {
            writeln!(scores, "{key},{slot},{score:.6}")?;
        }
        writeln!(classes, "{key},{},{},{}", p.class, p.engagements, p.machine)?;
    }
    scores.flush()?;
    classes.flush()?;
    println!(
        "wrote scores of {n} contacts to {} and their classes to {}",
        out.display(),
        classes_path.display()
    );
    Ok(())
}

fn classes_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
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
    /// JSON instead of a table.
    pub json: bool,
}

/// `sendtime backtest`: on the events of a CSV file when given, else on the events dataset.
pub fn backtest(
    config: &Config,
    split_ms: i64,
    events_csv: Option<(PathBuf, Columns)>,
    options: BacktestOptions,
) -> anyhow::Result<()> {
    let BacktestOptions {
        tune,
        validation_days,
        fixed_hour,
        json,
    } = options;
    anyhow::ensure!(fixed_hour < 24, "--fixed-hour must be 0..23");
    let rows = match events_csv {
        Some((file, columns)) => {
            let events = csv_import::read(&file, &columns)?;
            Rows::from_events(&events)
        }
        None => {
            require_events(&config.server.data_dir)?;
            Rows::from_dataset(&config.server.data_dir)?
        }
    };
    anyhow::ensure!(
        rows.rows.iter().any(|r| r.at_ms < split_ms)
            && rows.rows.iter().any(|r| r.at_ms >= split_ms),
        "no events on one side of the split {}; pick a time inside the data",
        format_minute(split_ms)
    );
    let (model, tuning) = if tune {
        let (m, t) = backtest::tune(config.model, &rows, split_ms, validation_days);
        (m, Some(t))
    } else {
        (config.model, None)
    };
    let mut report = backtest::evaluate(model, &rows, split_ms, fixed_hour);
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
        n.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "profiles of {} contacts {} ({} event part{} read) in {:.2} s ({:.2} s building, {:.2} s storing); {classes}",
        update.contacts,
        if update.rebuilt { "rebuilt" } else { "updated" },
        update.new_parts,
        if update.new_parts == 1 { "" } else { "s" },
        update.seconds,
        update.build_seconds,
        update.seconds - update.build_seconds,
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
) -> anyhow::Result<()> {
    let end_ms = end_ms.unwrap_or(1_767_225_600_000); // 2026-01-01
    let started = std::time::Instant::now();
    let n = synth::generate(
        out,
        synth::Spec {
            contacts,
            events,
            seed,
            end_ms,
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

    /// Each hour label stands over its own hour's cells.
    #[test]
    fn heat_map_labels_sit_over_their_hours() {
        let mut scores = [0.0; SLOTS];
        for h in [0, 12, 21] {
            scores[24 + h] = 1.0; // Tuesday
        }
        let map = heat_map(&scores);
        let lines: Vec<&str> = map.lines().collect();
        // The header is ASCII: byte offsets are columns.
        let header = format!("{} ", lines[0]);
        let label = |h: &str| header.find(&format!(" {h} ")).unwrap() + 1;
        let tuesday: Vec<char> = lines[2].chars().collect();
        assert!(lines[2].trim_start().starts_with("Tue"), "{map}");
        let full: Vec<usize> = (0..tuesday.len()).filter(|i| tuesday[*i] == '█').collect();
        assert_eq!(full.len(), 6, "{map}");
        for (k, h) in ["0", "12", "21"].iter().enumerate() {
            assert_eq!(full[2 * k], label(h), "hour {h}:\n{map}");
            assert_eq!(full[2 * k + 1], full[2 * k] + 1);
        }
        assert!(map.contains("best slot: Tue 00:00"), "{map}");
    }
}
