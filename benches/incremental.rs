//! In-process incremental profile update: a long-running process holds the profiles; new
//! event parts arrive; `Cache::refresh` adds only them (and stores the delta).
//!
//! `cargo bench --bench incremental -- DATA_DIR NEW_EVENTS_DIR [RUNS]`: NEW_EVENTS_DIR's
//! `events/*.parquet` (generated for the same contacts) are copied into DATA_DIR's events for
//! each run and removed after it. Prints the median refresh time.

/// The same allocator as the `sendtime` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use sendtime::model::ModelConfig;
use sendtime::model::stored::Cache;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let data = PathBuf::from(args.first().expect("DATA_DIR"));
    let new = PathBuf::from(args.get(1).expect("NEW_EVENTS_DIR")).join("events");
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let now = chrono::Utc::now().timestamp_millis();
    let parts: Vec<PathBuf> = std::fs::read_dir(&new)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    let copies: Vec<PathBuf> = parts
        .iter()
        .map(|p| data.join("events").join(p.file_name().unwrap()))
        .collect();
    let rows: usize = parts.iter().map(|p| rows_of(p)).sum();
    let mut times = Vec::new();
    for run in 0..runs {
        let (mut cache, _) = Cache::open(&data, ModelConfig::default(), now, true).unwrap();
        for (from, to) in parts.iter().zip(&copies) {
            std::fs::copy(from, to).unwrap();
        }
        let started = Instant::now();
        let update = cache.refresh(now).unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert!(!update.rebuilt && update.new_parts == parts.len());
        eprintln!(
            "run {}: {secs:.3} s ({:.3} s before storing the delta)",
            run + 1,
            update.build_seconds
        );
        times.push(secs);
        for c in &copies {
            std::fs::remove_file(c).unwrap();
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "incremental refresh with {rows} new events into profiles of {} contacts: median {:.3} s over {runs} runs",
        contacts(&data),
        times[times.len() / 2]
    );
}

fn rows_of(p: &Path) -> usize {
    use polars::prelude::*;
    ParquetReader::new(std::fs::File::open(p).unwrap())
        .num_rows()
        .unwrap()
}

fn contacts(data: &Path) -> usize {
    sendtime::datasets::contacts::Contacts::count(data).unwrap()
}
