//! Tick benchmark (issue 5): a tick that plans 1M new receipts against profiles of 2M contacts
//! and selects what is due, and an idle tick (nothing new, nothing due).
//!
//! `cargo bench --bench tick -- GEN_DIR [RECEIPTS] [RUNS]`: GEN_DIR is a `sendtime gen` output
//! (its `events/` and `contacts/` are hard-linked into a scratch data folder next to it). The
//! connector is in dry-run; receipts are NEXT_WEEK posts received "now", so planning puts
//! almost all of them in the future and the tick's time is planning and selecting. They are
//! received at `TICK_NOW` (RFC 3339; by default 2026-12-01T12:45:00Z, the instant the
//! benchmarks since 2026-12-01 used).
//!
//! To profile the busy tick alone: `mkfifo ctl; perf record -D -1 --control fifo:ctl -- BENCH
//! ...` with `PERF_CTL=ctl`, which is told `enable` before that tick and `disable` after.

/// The same allocator as the `sendtime` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::time::Instant;

use sendtime::clock::Clock;
use sendtime::config::{Config, EnvCheck, Overrides, WebhookType};
use sendtime::datasets::inbox::{self, Receipt};
use sendtime::dispatch::Dispatcher;
use sendtime::metrics::Metrics;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let gen_dir = PathBuf::from(args.first().expect("GEN_DIR"));
    let receipts: usize = args
        .get(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(3);
    // Planning depends on where "now" falls in the contacts' weeks: fixed, so runs on
    // different days compare.
    let now = chrono::DateTime::parse_from_rfc3339(
        std::env::var("TICK_NOW")
            .as_deref()
            .unwrap_or("2026-12-01T12:45:00Z"),
    )
    .expect("TICK_NOW: an RFC 3339 time")
    .timestamp_millis();
    eprintln!("receipts at {}", sendtime::time::format_rfc3339(now));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut busy = Vec::new();
    let mut idle = Vec::new();
    let mut steady = Vec::new();
    for run in 0..runs {
        let data = gen_dir.with_file_name(format!(
            "{}-tick",
            gen_dir.file_name().unwrap().to_string_lossy()
        ));
        let _ = std::fs::remove_dir_all(&data);
        for ds in ["events", "contacts"] {
            link_dir(&gen_dir.join(ds), &data.join(ds));
        }
        let config = config(&data);
        let mut dispatcher = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(now)).unwrap();
        let (_, stop) = tokio::sync::watch::channel(false);
        // Warm-up: loads (builds and stores) the profiles; nothing to plan yet.
        rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
        write_receipts(&data, receipts, now, &config.identity);

        perf_control("enable");
        let t = Instant::now();
        let report = rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
        let busy_s = t.elapsed().as_secs_f64();
        perf_control("disable");
        assert_eq!(report.planned, receipts, "{report}");
        let t = Instant::now();
        let report2 = rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
        let idle_s = t.elapsed().as_secs_f64();
        assert_eq!((report2.planned, report2.due), (0, 0), "{report2}");
        // Steady state: the 1M stay pending, a minute's worth of new posts arrives.
        write_receipts_from(&data, receipts, STEADY, now, &config.identity);
        let t = Instant::now();
        let report3 = rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
        let steady_s = t.elapsed().as_secs_f64();
        assert_eq!(report3.planned, STEADY, "{report3}");
        eprintln!(
            "run {}: busy tick {busy_s:.3} s ({report}); idle tick {:.1} ms; {STEADY} new with {} pending: {:.1} ms",
            run + 1,
            idle_s * 1000.0,
            report2.queued,
            steady_s * 1000.0
        );
        busy.push(busy_s);
        idle.push(idle_s);
        steady.push(steady_s);
        dispatcher.close();
        let _ = std::fs::remove_dir_all(&data);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "tick planning and selecting {receipts} new receipts (profiles of {} contacts): median {:.3} s; idle tick with them pending: median {:.1} ms; tick planning {STEADY} new with them pending: median {:.1} ms ({runs} runs)",
        sendtime::datasets::contacts::Contacts::count(&gen_dir).unwrap(),
        median(&mut busy),
        median(&mut idle) * 1000.0,
        median(&mut steady) * 1000.0
    );
}

fn config(data: &Path) -> Config {
    let text = format!(
        r#"version = 1
[server]
public_url = "https://hooks.example.com"
data_dir = "{}"
[[connector]]
id = "main"
portal_id = 1
app_id = 1
client_secret_env = "TICK_BENCH_SECRET"
access_token_env = "TICK_BENCH_TOKEN"
dry_run = true
[[webhook]]
id = "week"
type = "NEXT_WEEK"
workflow_id = 1
"#,
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

/// New receipts in the steady-state tick: a minute of posts at about 330 per second.
const STEADY: usize = 20_000;

/// One inbox part of `n` receipts for contacts `#1..#n` of the generated dictionary.
fn write_receipts(data: &Path, n: usize, now: i64, identity: &str) {
    write_receipts_from(data, 0, n, now, identity)
}

/// One inbox part of `n` receipts for contacts `#from+1..#from+n`.
fn write_receipts_from(data: &Path, from: usize, n: usize, now: i64, identity: &str) {
    let rows: Vec<Receipt> = (from..from + n)
        .map(|i| Receipt {
            receipt_id: format!("{:026}", i),
            webhook_id: "week".into(),
            webhook_type: WebhookType::NextWeek,
            contact_id: Some(i as i64 + 1),
            email: None,
            portal_id: Some(1),
            received_at_ms: now,
            signature: "v2".into(),
            config: identity.into(),
            callback_id: None,
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

/// Tell `perf record --control fifo:...` to start or stop sampling, when `PERF_CTL` names its fifo.
fn perf_control(command: &str) {
    if let Ok(fifo) = std::env::var("PERF_CTL") {
        std::fs::write(fifo, format!("{command}\n")).expect("PERF_CTL: perf's control fifo");
    }
}

fn link_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        std::fs::hard_link(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}
