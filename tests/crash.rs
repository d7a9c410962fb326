//! Durability under kill -9: every post that got a 2xx is in the inbox exactly once after a
//! restart, and the restarted server serves again.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Hook, Server, TestConfig};
use sendtime::receiver::signature::sign_v2;

const SECRET: &str = "crash-secret";

fn write_config(dir: &Path) -> std::path::PathBuf {
    TestConfig {
        env: "CRASH",
        connector: "dry_run = true",
        hooks: &[&Hook {
            id: "w",
            kind: "IMMEDIATE",
            target: "workflow_id = 3",
        }],
        ..TestConfig::default()
    }
    .write(dir)
}

/// Post distinct contacts from several threads until `stop`; returns acknowledged receipt ids,
/// counting them in `acks` as they come.
fn hammer(
    addr: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    threads: usize,
    round: u64,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..threads)
        .map(|t| {
            let addr = addr.clone();
            let stop = stop.clone();
            let acks = acks.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut acked = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                    i += 1;
                    let vid = round * 1_000_000_000 + (t as u64) * 10_000_000 + i;
                    let body = format!(r#"{{"vid": {vid}, "portal-id": 62515, "properties": {{"email": {{"value": "c{vid}@example.com"}}}}}}"#);
                    let sig = sign_v2(SECRET.as_bytes(), "POST", "https://hooks.example.com/hooks/w", body.as_bytes());
                    let resp = client
                        .post(format!("http://{addr}/hooks/w"))
                        .header("X-HubSpot-Signature", sig)
                        .header("X-HubSpot-Signature-Version", "v2")
                        .body(body)
                        .send();
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().unwrap_or_default();
                            if let Some(id) = v["receipt_id"].as_str() {
                                acked.push(id.to_string());
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
                acked
            })
        })
        .collect()
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_post() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let env = [("CRASH_SECRET", SECRET)];

    let mut acked: Vec<String> = Vec::new();
    for round in 0..3u64 {
        let mut server = Server::start(&config, &data, &env);
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let workers = hammer(
            server.addr.to_string(),
            stop.clone(),
            acks.clone(),
            8,
            round,
        );
        // Long enough for several flushes to Parquet and many group commits in the log; on a
        // disk slow to sync (another process flushing gigabytes), until a hundred posts are in.
        std::thread::sleep(Duration::from_millis(2500 + 300 * round));
        let started = Instant::now();
        while acks.load(Ordering::Relaxed) < 100 && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let before = acked.len();
        for w in workers {
            acked.extend(w.join().unwrap());
        }
        assert!(
            acked.len() > before + 50,
            "round {round}: only {} posts acknowledged",
            acked.len() - before
        );
    }

    // Restart: the log is replayed; the server serves; a clean stop flushes everything.
    let server = Server::start(&config, &data, &env);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = hammer(server.addr.to_string(), stop.clone(), Arc::default(), 1, 99);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let after_restart: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        !after_restart.is_empty(),
        "the restarted server did not accept posts"
    );
    acked.extend(after_restart);
    server.stop();

    let rows = receipt_ids(&data.join("inbox"));
    let stored: HashSet<&String> = rows.iter().collect();
    assert_eq!(stored.len(), rows.len(), "some receipt is stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged posts lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} posts acknowledged over 3 kills, {} rows stored",
        acked.len(),
        rows.len()
    );
    // Everything stored was posted by us (nothing invented); unacknowledged-but-stored rows
    // are posts whose reply the kill cut off.
    assert!(rows.len() >= acked.len());
}

fn receipt_ids(inbox: &Path) -> Vec<String> {
    use polars::prelude::*;
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(inbox).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let df = ParquetReader::new(std::fs::File::open(&path).unwrap())
                .finish()
                .unwrap();
            let col = df.column("receipt_id").unwrap().str().unwrap().clone();
            ids.extend(col.iter().map(|v| v.unwrap().to_string()));
        }
    }
    ids
}
