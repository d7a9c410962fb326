//! Capacity benchmark (issue 12): 500,000 NEXT_24_HOURS receipts that arrive in one minute,
//! planned against profiles of the 2M generated contacts through a connector paced at 190
//! requests per 10 s, once as enrollments (one call each: capacity binds) and once as
//! workflow-action callbacks (a hundredth of a call each: it should not).
//!
//! `cargo bench --bench capacity -- GEN_DIR [RECEIPTS] [RUNS] [auto]`: GEN_DIR is a `sendtime
//! gen` output. The model's knobs are fixed at the values before they were fitted (prior 12,
//! σ 1 h), whose preferences crowd a few hours; `auto` fits them as `serve` does (on generated
//! data, personal hours that spread the crowd). Reports the planning tick's time, the busiest planned minute against capacity, the
//! share of receipts planned in one of their contact's three best hours of the window, and the
//! predicted engagement lost against planning each alone (no capacity). The two deliveries
//! alternate within each run, planned at one fixed instant: `TICK_NOW` (RFC 3339, on a minute
//! boundary), by default 2026-12-01T12:45:00Z, since how crowded the best hours are depends on
//! where "now" falls in the week.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sendtime::clock::Clock;
use sendtime::config::{Config, EnvCheck, Overrides, WebhookType};
use sendtime::datasets::inbox::{self, Receipt};
use sendtime::datasets::plan;
use sendtime::dispatch::Dispatcher;
use sendtime::metrics::Metrics;
use sendtime::model::plan::{score, window};
use sendtime::time::{MINUTE_MS, day_of};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let gen_dir = PathBuf::from(args.first().expect("GEN_DIR"));
    let receipts: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let runs: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3);
    let fitted = args.get(3).is_some_and(|a| a == "auto");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // A minute boundary, so "arriving in one minute" is one minute.
    let now = std::env::var("TICK_NOW")
        .as_deref()
        .unwrap_or("2026-12-01T12:45:00Z")
        .parse::<chrono::DateTime<chrono::Utc>>()
        .expect("TICK_NOW: an RFC 3339 time")
        .timestamp_millis()
        / MINUTE_MS
        * MINUTE_MS;
    eprintln!("planning at {}", sendtime::time::format_rfc3339(now));
    let deliveries = ["enrollment", "action"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); deliveries.len()];
    let mut last = vec![String::new(); deliveries.len()];
    for run in 0..runs {
        for (d, delivery) in deliveries.into_iter().enumerate() {
            let data = gen_dir.with_file_name(format!(
                "{}-capacity",
                gen_dir.file_name().unwrap().to_string_lossy()
            ));
            let _ = std::fs::remove_dir_all(&data);
            for ds in ["events", "contacts"] {
                link_dir(&gen_dir.join(ds), &data.join(ds));
            }
            let config = config(&data, delivery, fitted);
            let mut dispatcher =
                Dispatcher::open(&data, Metrics::new(), Clock::Fixed(now + MINUTE_MS)).unwrap();
            let (_, stop) = tokio::sync::watch::channel(false);
            // Warm-up: loads (builds and stores) the profiles; nothing to plan yet.
            rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
            write_receipts(&data, receipts, now, delivery == "action");
            let t = Instant::now();
            let report = rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
            let took = t.elapsed().as_secs_f64();
            assert_eq!(report.planned, receipts, "{report}");
            dispatcher.close();
            times[d].push(took);
            if run + 1 == runs {
                last[d] = quality(&data, &config, now + MINUTE_MS);
            }
            eprintln!("{delivery} run {}: planning tick {took:.3} s", run + 1);
            let _ = std::fs::remove_dir_all(&data);
        }
    }
    for (d, delivery) in deliveries.into_iter().enumerate() {
        let times = &mut times[d];
        times.sort_by(f64::total_cmp);
        println!(
            "{delivery}: {receipts} NEXT_24_HOURS receipts planned in a tick: median {:.3} s (min {:.3}, max {:.3}, {runs} runs); {}",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            last[d],
        );
    }
}

/// The busiest minute against capacity, the share in a top-3 hour of the window, and the
/// engagement lost against unconstrained plans.
fn quality(data: &Path, config: &Config, now: i64) -> String {
    let plans = plan::read(&plan::dataset(data).unwrap()).unwrap();
    let mut per_minute: HashMap<i64, usize> = HashMap::new();
    let connector = &config.connectors[0];
    // Calls: a minute's callbacks go in batches.
    let batch = match config.webhooks[0].target {
        sendtime::config::Target::Callback => connector.callback_batch_size,
        _ => 1,
    };
    for p in &plans {
        *per_minute.entry(p.due_at_ms / MINUTE_MS).or_default() += 1;
    }
    let busiest = per_minute
        .values()
        .map(|n| n.div_ceil(batch) as f64)
        .fold(0.0, f64::max);
    let capacity = sendtime::capacity::Capacity::of(connector);
    let per_minute_cap = capacity.per_minute as f64 / sendtime::capacity::CALL as f64;
    let (cache, _) = sendtime::model::stored::Cache::open(data, config.model, now, false).unwrap();
    let built = &cache.built;
    let population = built.profiles.population;
    let day = day_of(now);
    let (mut top3, mut with_history, mut lost, mut best_sum, mut spilled) = (0, 0, 0.0, 0.0, 0);
    for p in &plans {
        let index = built.contacts.find(p.contact_id, None);
        let Some(index) = index else { continue };
        let profile = built.profiles.profile(Some(index), day);
        if profile.engagements == 0 || profile.machine {
            continue;
        }
        with_history += 1;
        let w = window(
            WebhookType::Next24Hours,
            p.received_at_ms,
            now,
            None,
            Some(&profile),
        )
        .unwrap();
        let mut scores: Vec<(f64, u8)> = (0..w.hours)
            .map(|k| (score(&w, k, Some(&profile), &population), w.slot(k)))
            .collect();
        scores.sort_by(|a, b| b.0.total_cmp(&a.0));
        let chosen = sendtime::time::slot_of(p.due_at_ms);
        let got = profile.scores[chosen as usize];
        if p.due_at_ms >= p.received_at_ms + 24 * 3_600_000 {
            spilled += 1;
        }
        if scores.iter().take(3).any(|(_, s)| *s == chosen) {
            top3 += 1;
        }
        lost += scores[0].0 - got;
        best_sum += scores[0].0;
    }
    format!(
        "busiest minute {busiest:.1} calls against {per_minute_cap:.1} planned capacity; of {with_history} receipts of contacts with history, {:.1} % in one of their top-3 hours of the window, {spilled} past it; predicted engagement lost against unconstrained {:.4} per receipt ({:.1} % of the best hour's)",
        100.0 * top3 as f64 / with_history.max(1) as f64,
        lost / with_history.max(1) as f64,
        100.0 * lost / best_sum.max(f64::MIN_POSITIVE),
    )
}

fn config(data: &Path, delivery: &str, fitted: bool) -> Config {
    let model = if fitted {
        ""
    } else {
        "[model]\nprior_strength = 12\nhour_bandwidth = 1.0\n"
    };
    let endpoint = match delivery {
        "action" => "[[action]]\nid = \"send\"\n",
        _ => "[[webhook]]\nid = \"send\"\ntype = \"NEXT_24_HOURS\"\nworkflow_id = 1\n",
    };
    let text = format!(
        r#"version = 1
[server]
public_url = "https://hooks.example.com"
data_dir = "{}"
{model}[[connector]]
id = "main"
portal_id = 1
app_id = 1
client_secret_env = "CAPACITY_BENCH_SECRET"
access_token_env = "CAPACITY_BENCH_TOKEN"
requests_per_10s = 190
dry_run = true
{endpoint}"#,
        data.display()
    );
    Config::from_text(
        &data.join("webhooks.toml"),
        &text,
        &Overrides::default(),
        EnvCheck::Warn,
    )
    .unwrap()
    .config
}

/// One inbox part of `n` receipts for contacts `#1..#n`, arriving over the minute from `now`.
fn write_receipts(data: &Path, n: usize, now: i64, action: bool) {
    let rows: Vec<Receipt> = (0..n)
        .map(|i| Receipt {
            receipt_id: format!("{:026}", i),
            webhook_id: "send".into(),
            webhook_type: WebhookType::Next24Hours,
            contact_id: Some(i as i64 + 1),
            email: None,
            portal_id: Some(1),
            received_at_ms: now + (i as i64 * MINUTE_MS) / n as i64,
            signature: "v2".into(),
            config: "bench".into(),
            callback_id: action.then(|| format!("cb-{i}")),
            body_hash: None,
            time_zone: None,
            hold_ends_ms: None,
        })
        .collect();
    let mut df = inbox::frame(&rows).unwrap();
    inbox::dataset(data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut df)
        .unwrap();
}

fn link_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        std::fs::hard_link(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}
