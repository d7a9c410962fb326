//! Workflow-action release benchmark: N action receipts fall due in the same minute; the
//! dispatcher completes their callbacks against the HubSpot stand-in limited to 190 calls per
//! 10 s. Measures the time until every callback is completed, and counts HubSpot's 429s.
//!
//! `cargo bench --bench actions -- [RECEIPTS] [BATCH]` (default 500000 100). For comparison,
//! re-enrollment at the same limit is one call per contact: RECEIPTS / 18.6 per second.

/// The same allocator as the `sendtime` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Instant;

use sendtime::clock::Clock;
use sendtime::config::{Config, EnvCheck, Overrides, WebhookType};
use sendtime::datasets::inbox::{self, Receipt};
use sendtime::dispatch::Dispatcher;
use sendtime::hubspot::standin::{Options, StandIn};
use sendtime::metrics::Metrics;

const TOKEN: &str = "bench-token";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let receipts: usize = args.first().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let batch: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    // SAFETY: set before any thread is started; the dispatcher reads the token from it.
    unsafe { std::env::set_var("ACTIONS_BENCH_TOKEN", TOKEN) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            limit_per_10s: 190,
            daily_limit: u32::MAX,
            ..Options::default()
        }))
        .unwrap();
    for i in 0..receipts {
        standin.add_callback(&callback(i));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = chrono::Utc::now().timestamp_millis();
    let config = config(&data, &standin.url(), batch);
    write_receipts(&data, receipts, now, &config.identity);

    eprintln!("rss after writing the receipts: {} MB", rss_mb());
    let mut dispatcher =
        Dispatcher::open(&data, Metrics::new(), Clock::Fixed(now + 60_000)).unwrap();
    eprintln!("rss after opening the dispatcher: {} MB", rss_mb());
    let (_, stop) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let mut ticks = 0;
    let mut completed = 0;
    loop {
        let report = rt.block_on(dispatcher.tick(&config, stop.clone())).unwrap();
        ticks += 1;
        completed += report.completed;
        eprintln!("tick {ticks}: {report}; rss {} MB", rss_mb());
        if report.queued == 0 || ticks > 20 {
            break;
        }
    }
    let took = started.elapsed().as_secs_f64();
    dispatcher.close();
    let log = standin.log();
    let calls = log.iter().filter(|e| e.path.ends_with("/complete")).count();
    let limited = log.iter().filter(|e| e.status == Some(429)).count();
    let done = (0..receipts)
        .filter(|i| standin.completion(&callback(*i)).is_some())
        .count();
    // A run that stopped short (a retry whose time never comes on this fixed clock) is not a
    // time to quote: checked before the time is printed.
    assert_eq!(done, receipts, "not every callback was completed");
    assert_eq!(limited, 0, "HubSpot answered 429");
    println!(
        "{receipts} action receipts due at once, callbacks of {batch} per call, 190 calls / 10 s: \
         {done} completed ({completed} completed outcomes) in {took:.1} s over {ticks} tick(s); \
         {calls} calls, {limited} HTTP 429s; re-enrollment at the same pace: {:.0} s",
        receipts as f64 / 18.6
    );
}

/// Resident memory, MB.
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096 / 1_000_000)
}

fn callback(i: usize) -> String {
    format!("ap-62515-{i}")
}

fn config(data: &Path, api_base: &str, batch: usize) -> Config {
    let text = format!(
        r#"version = 1
[server]
public_url = "https://hooks.example.com"
data_dir = "{}"
[[connector]]
id = "main"
portal_id = 62515
app_id = 1
client_secret_env = "ACTIONS_BENCH_SECRET"
access_token_env = "ACTIONS_BENCH_TOKEN"
api_base = "{api_base}"
requests_per_10s = 190
callback_batch_size = {batch}
[[action]]
id = "send-time"
default_type = "IMMEDIATE"
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

/// One inbox part of `n` IMMEDIATE executions received at `now`.
fn write_receipts(data: &Path, n: usize, now: i64, identity: &str) {
    let rows: Vec<Receipt> = (0..n)
        .map(|i| Receipt {
            receipt_id: ulid::Ulid::from_parts(now as u64, i as u128).to_string(),
            webhook_id: "send-time".into(),
            webhook_type: WebhookType::Immediate,
            contact_id: Some(i as i64 + 1),
            email: None,
            portal_id: Some(62515),
            received_at_ms: now,
            signature: "v2".into(),
            config: identity.into(),
            callback_id: Some(callback(i)),
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
