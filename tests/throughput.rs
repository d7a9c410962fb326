//! Benchmark, not a timed test (ignored by default; results go in BENCHMARKS.md): the real
//! `serve` against the stand-in limited to 190 calls per 10 s, with a backlog larger than five
//! minutes of calls. Reports the sustained enrollment rate and the 429s.
//!
//! Run: `cargo test --test throughput -- --ignored --nocapture` (set THROUGHPUT_SECS to shorten).

mod common;

use std::time::{Duration, SystemTime};

use common::{Server, eventually};
use sendtime::hubspot::standin::{Options, StandIn};
use sendtime::receiver::signature::sign_v2;

const SECRET: &str = "bench-secret";

#[test]
#[ignore]
fn sustained_throughput_against_190_per_10s() {
    let secs: u64 = std::env::var("THROUGHPUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(StandIn::start(Options {
            limit_per_10s: 190,
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("webhooks.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[server]
public_url = "https://hooks.example.com"
[scheduler]
cron = "* * * * * *"
[[connector]]
id = "main"
portal_id = 1
app_id = 2
client_secret_env = "BENCH_SECRET"
access_token_env = "BENCH_TOKEN"
api_base = "{}"
requests_per_10s = 190
[[webhook]]
id = "now"
type = "IMMEDIATE"
workflow_id = 9
"#,
            standin.url()
        ),
    )
    .unwrap();
    let server = Server::start(
        &config,
        &dir.path().join("data"),
        &[("BENCH_SECRET", SECRET), ("BENCH_TOKEN", "standin-token")],
    );
    let n = (secs as usize * 19) + 2000;
    let addr = server.url("/hooks/now");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let client = common::http();
                for i in (t..n).step_by(4) {
                    let body = format!(
                        r#"{{"vid": {}, "portal-id": 1, "properties": {{"email": {{"value": "b{i}@example.com"}}}}}}"#,
                        i + 1
                    );
                    let sig = sign_v2(
                        SECRET.as_bytes(),
                        "POST",
                        "https://hooks.example.com/hooks/now",
                        body.as_bytes(),
                    );
                    let r = client
                        .post(&addr)
                        .header("X-HubSpot-Signature", sig)
                        .header("X-HubSpot-Signature-Version", "v2")
                        .body(body)
                        .send()
                        .unwrap();
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let first = eventually(Duration::from_secs(60), || {
        standin.log().first().map(|e| e.at)
    })
    .expect("calls started");
    // Skip the first 10 s (the start-up burst), then measure.
    let from = first + Duration::from_secs(10);
    let to = from + Duration::from_secs(secs);
    while SystemTime::now() < to + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_secs(1));
    }
    let log = standin.log();
    let window: Vec<_> = log.iter().filter(|e| e.at >= from && e.at < to).collect();
    let ok = window.iter().filter(|e| e.status == Some(204)).count();
    let limited = log.iter().filter(|e| e.status == Some(429)).count();
    let rate = ok as f64 / secs as f64;
    println!(
        "throughput: {ok} enrollments in {secs} s = {rate:.2}/s = {:.1}% of 19/s; 429s: {limited}; calls in window: {}",
        rate / 19.0 * 100.0,
        window.len()
    );
    assert_eq!(limited, 0);
}
