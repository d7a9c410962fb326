//! `sendtime demo` through the real binary: with no account and no setup, contacts of every
//! kind are received, planned and sent on (enrolled, listed, released) within a minute of real
//! time, and it stops cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Killed;

#[test]
fn the_demo_sends_every_kind_of_contact_and_stops_cleanly() {
    let started = Instant::now();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("demo.log");
    let child = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .args(["demo", "--speed", "3600"])
        // Ports the system gives: the demo prints them, and its workflow posts to them.
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        // A proxy from the environment cannot reach the demo on this machine: not used.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let printed: Vec<String> = stdout.lines().take(4).map(Result::unwrap).collect();
    // "dashboard: http://{admin}/   status: ...".
    let admin = printed
        .iter()
        .find_map(|l| l.strip_prefix("dashboard: http://"))
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("{printed:?}"))
        .to_string();
    assert!(!admin.ends_with(":0"), "{printed:?}");
    let status_url = format!("http://{admin}/status");
    // "... engagement events of 2000 contacts in {data folder}": its parent is the demo's.
    let data = printed
        .iter()
        .find_map(|l| l.split(" contacts in ").nth(1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("{printed:?}"));
    let folder = data.parent().unwrap().to_path_buf();
    assert!(folder.exists());
    let count = |metrics: &str, status: &str| -> u64 {
        let prefix = format!("sendtime_dispatch_outcomes_total{{status=\"{status}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok(resp) = common::get(format!("http://{admin}/metrics")) {
            last = resp.text().unwrap_or_default();
            if ["enrolled", "listed", "completed"]
                .iter()
                .all(|s| count(&last, s) > 0)
            {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not every kind sent:\n{last}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // At 3,600×, a receipt stamped with the wall clock looked a day old 24 s in, and every
    // window was over when planned ("late"). Receipts are stamped with the demo's clock.
    while started.elapsed() < Duration::from_secs(45) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = common::get(format!("http://{admin}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let late: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sendtime_plan_moves_total{") && l.contains("move=\"late\""))
        .collect();
    assert!(late.is_empty(), "{late:?}");
    assert!(count(&metrics, "enrolled") > 0);
    let status: serde_json::Value = common::get(&status_url).unwrap().json().unwrap();
    assert_eq!(status["webhooks"].as_array().unwrap().len(), 5);
    // SIGTERM twice at once, as `timeout` sends it (to the process and to its group): one
    // stop, not the "second signal" that stops at once (and left the demo's folder behind).
    let term = || unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(term(), 0);
    // Polled closely: the second must come within a moment of the first.
    let taken = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGTERM: shutting down")) {
        assert!(Instant::now() < taken, "the first SIGTERM was not taken");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(term(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(0));
    assert!(!folder.exists(), "{} left behind", folder.display());
}
