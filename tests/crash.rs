//! Durability under kill -9: every post that got a 2xx (a webhook's receipt, an action's
//! execution answered BLOCK) is in the inbox exactly once after a restart, and the restarted
//! server serves again.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Hook, PORTAL_ID, PUBLIC_URL, Server, TestConfig};
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

/// What is posted, and what says it was taken.
#[derive(Clone, Copy)]
enum Endpoint {
    /// A webhook's contact: a 2xx with its receipt id.
    Hook,
    /// An action's execution: BLOCK (only once it is durable), named by its callback id.
    Action,
}

impl Endpoint {
    /// The post for contact `vid`: its path and body.
    fn post(self, vid: u64) -> (&'static str, String) {
        match self {
            Endpoint::Hook => (
                "/hooks/w",
                format!(
                    r#"{{"vid": {vid}, "portal-id": {PORTAL_ID}, "properties": {{"email": {{"value": "c{vid}@example.com"}}}}}}"#
                ),
            ),
            Endpoint::Action => (
                "/actions/a",
                serde_json::json!({
                    "callbackId": format!("cb-{vid}"),
                    "origin": {"portalId": PORTAL_ID, "actionDefinitionId": 1, "actionDefinitionVersion": 1},
                    "object": {"objectId": vid, "objectType": "CONTACT",
                               "properties": {"email": format!("c{vid}@example.com")}},
                    "inputFields": {"delivery_type": "NEXT_24_HOURS"}
                })
                .to_string(),
            ),
        }
    }

    /// What a 2xx answer says was taken.
    fn taken(self, answer: &serde_json::Value, vid: u64) -> Option<String> {
        match self {
            Endpoint::Hook => answer["receipt_id"].as_str().map(str::to_string),
            Endpoint::Action => (answer["outputFields"]["hs_execution_state"] == "BLOCK")
                .then(|| format!("cb-{vid}")),
        }
    }
}

/// What a run of posts did: what was acknowledged (receipt ids, or callback ids answered
/// BLOCK), each with its contact's id, and the id of every contact posted, answered or not.
#[derive(Default)]
struct Posted {
    acked: Vec<(String, u64)>,
    sent: HashSet<u64>,
}

impl Posted {
    fn extend(&mut self, other: Posted) {
        self.acked.extend(other.acked);
        self.sent.extend(other.sent);
    }
}

/// Post distinct contacts from several threads until `stop`; returns what each thread posted
/// and had acknowledged, counting acknowledgements in `acks` as they come.
fn hammer(
    addr: String,
    endpoint: Endpoint,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
    threads: usize,
    round: u64,
) -> Vec<std::thread::JoinHandle<Posted>> {
    (0..threads)
        .map(|t| {
            let addr = addr.clone();
            let stop = stop.clone();
            let acks = acks.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .no_proxy()
                    .build()
                    .unwrap();
                let mut posted = Posted::default();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                    i += 1;
                    let vid = round * 1_000_000_000 + (t as u64) * 10_000_000 + i;
                    let (path, body) = endpoint.post(vid);
                    posted.sent.insert(vid);
                    let url = format!("{PUBLIC_URL}{path}");
                    let sig = sign_v2(SECRET.as_bytes(), "POST", &url, body.as_bytes());
                    let resp = client
                        .post(format!("http://{addr}{path}"))
                        .header("X-HubSpot-Signature", sig)
                        .header("X-HubSpot-Signature-Version", "v2")
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send();
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().unwrap_or_default();
                            if let Some(id) = endpoint.taken(&v, vid) {
                                posted.acked.push((id, vid));
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => break, // the server is gone
                    }
                }
                posted
            })
        })
        .collect()
}

/// Three rounds of posting from 8 threads, each ended by kill -9, then a restart that takes
/// posts again and a clean stop: what was posted and acknowledged.
fn kill_rounds(config: &Path, data: &Path, env: &[(&str, &str)], endpoint: Endpoint) -> Posted {
    let mut posted = Posted::default();
    for round in 0..3u64 {
        let mut server = Server::start(config, data, env);
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let workers = hammer(
            server.addr.to_string(),
            endpoint,
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
        let before = posted.acked.len();
        for w in workers {
            posted.extend(w.join().unwrap());
        }
        assert!(
            posted.acked.len() > before + 50,
            "round {round}: only {} posts acknowledged",
            posted.acked.len() - before
        );
    }

    // Restart: the log is replayed; the server serves; a clean stop flushes everything.
    let server = Server::start(config, data, env);
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let workers = hammer(
        server.addr.to_string(),
        endpoint,
        stop.clone(),
        acks.clone(),
        1,
        99,
    );
    // Until the first post is answered (a fixed wait was too short on a loaded machine).
    let started = Instant::now();
    while acks.load(Ordering::Relaxed) == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let before = posted.acked.len();
    for w in workers {
        posted.extend(w.join().unwrap());
    }
    assert!(
        posted.acked.len() > before,
        "the restarted server did not accept posts"
    );
    server.stop();
    posted
}

/// Every one of `posted.acked` is among `stored` (the inbox's rows: key, contact id, email),
/// which holds each once, with the contact it was acknowledged for; and every row stored is
/// a contact the test posted (nothing invented): rows stored but not acknowledged are posts
/// whose answer the kill cut off. `key_of`: the key a contact's post is stored under, when
/// the test chose it (an action's callback id).
fn all_stored_once(
    posted: &Posted,
    stored: &[(String, Option<i64>, Option<String>)],
    key_of: impl Fn(u64) -> Option<String>,
) {
    let by_key: HashMap<&str, Option<i64>> = stored
        .iter()
        .map(|(key, contact, _)| (key.as_str(), *contact))
        .collect();
    assert_eq!(by_key.len(), stored.len(), "some receipt is stored twice");
    let missing: Vec<&(String, u64)> = posted
        .acked
        .iter()
        .filter(|(id, _)| !by_key.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged posts lost, e.g. {:?}",
        missing.len(),
        posted.acked.len(),
        &missing[..missing.len().min(5)]
    );
    let contacts: HashSet<Option<i64>> = stored.iter().map(|(_, contact, _)| *contact).collect();
    assert_eq!(
        contacts.len(),
        stored.len(),
        "a contact posted once is stored twice"
    );
    for (key, contact, email) in stored {
        let vid = contact.and_then(|c| u64::try_from(c).ok());
        let posted_vid = vid.filter(|v| posted.sent.contains(v));
        assert!(
            posted_vid.is_some(),
            "{key} is stored for contact {contact:?}, which was never posted"
        );
        let vid = posted_vid.unwrap();
        assert_eq!(
            email.as_deref(),
            Some(format!("c{vid}@example.com").as_str()),
            "{key}"
        );
        if let Some(want) = key_of(vid) {
            assert_eq!(key, &want, "contact {vid}");
        }
    }
    for (id, vid) in &posted.acked {
        assert_eq!(
            by_key[id.as_str()],
            Some(*vid as i64),
            "{id} was acknowledged for contact {vid}"
        );
    }
    eprintln!(
        "{} posts acknowledged over 3 kills ({} sent), {} rows stored",
        posted.acked.len(),
        posted.sent.len(),
        stored.len()
    );
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_post() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let posted = kill_rounds(&config, &data, &[("CRASH_SECRET", SECRET)], Endpoint::Hook);
    all_stored_once(&posted, &stored(&data.join("inbox"), "receipt_id"), |_| {
        None
    });
}

/// An action's execution is answered BLOCK only once it is durable (HubSpot then holds the
/// contact until it is released, and never sends it again): under kill -9, every execution
/// answered BLOCK is in the inbox once after a restart. The connector is live (in a dry run
/// executions are answered at once), against an API that is not there: nothing comes due.
#[test]
fn kill_9_mid_stream_loses_no_execution_answered_block() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig {
        env: "CRASH",
        tables: "[[action]]\nid = \"a\"\nname = \"Send at the best time\"",
        connector: "api_base = \"http://127.0.0.1:9\"",
        ..TestConfig::default()
    }
    .write(dir.path());
    let data = dir.path().join("data");
    let env = [("CRASH_SECRET", SECRET), ("CRASH_TOKEN", "token")];
    let posted = kill_rounds(&config, &data, &env, Endpoint::Action);
    all_stored_once(
        &posted,
        &stored(&data.join("inbox"), "callback_id"),
        |vid| Some(format!("cb-{vid}")),
    );
}

/// Every row in the inbox's parts: the text column `key`, the contact id and the email.
fn stored(inbox: &Path, key: &str) -> Vec<(String, Option<i64>, Option<String>)> {
    use polars::prelude::*;
    let mut rows = Vec::new();
    // As readers list them: a merge's sources stay a while, unlisted.
    let dataset = sendtime::store::Dataset::open(inbox.parent().unwrap(), "inbox").unwrap();
    for path in dataset.parts().unwrap() {
        let df = ParquetReader::new(std::fs::File::open(&path).unwrap())
            .finish()
            .unwrap();
        let keys = df.column(key).unwrap().str().unwrap().clone();
        let contacts = df
            .column("contact_id")
            .unwrap()
            .cast(&DataType::Int64)
            .unwrap();
        let contacts = contacts.i64().unwrap();
        let emails = df.column("email").unwrap().str().unwrap().clone();
        for ((k, c), e) in keys.iter().zip(contacts.iter()).zip(emails.iter()) {
            rows.push((k.unwrap().to_string(), c, e.map(str::to_string)));
        }
    }
    rows
}
