//! `sendtime import hubspot` through the real binary against the HubSpot stand-in: every
//! event stored exactly once, through 429s, 5xx, an interrupted run, kill -9, and re-runs.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sendtime::hubspot::standin::{DEFAULT_TOKEN, Fault, Injection, Options, StandIn};
use sendtime::hubspot::{EmailEvent, RatePolicy};
use sendtime::store::{Dataset, concat_frames};

const TOKEN_ENV: &str = "HS_IMPORT_TEST_TOKEN";
const EVENTS: &str = "/email/public/v1/events";
const PAGE: &str = "250";

/// 2,501 events over the last 30 days; one reuses an id at another time (a distinct event).
fn events() -> Vec<EmailEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    let kinds = ["OPEN", "CLICK", "OPEN", "CLICK", "OPEN"];
    let mut out: Vec<EmailEvent> = (0..2500)
        .map(|i| EmailEvent {
            id: format!("ev-{i:05}"),
            created: now - 3_600_000 - (i as i64) * 1_000_000,
            kind: kinds[i % kinds.len()].into(),
            recipient: Some(format!("person{}@example.com", i % 300)),
            email_campaign_id: Some(7),
            filtered_event: i.is_multiple_of(10),
            extra: Default::default(),
        })
        .collect();
    let mut again = out[0].clone();
    again.created -= 1;
    out.push(again);
    out
}

/// Panics with a short summary (not 2,500 keys) unless `got` holds exactly `setup`'s events.
fn assert_all_once(got: &HashSet<(String, i64)>, setup: &Setup) {
    let want: HashSet<(String, i64)> = setup
        .events
        .iter()
        .map(|e| (e.id.clone(), e.created))
        .collect();
    let missing = want.difference(got).count();
    let extra: Vec<_> = got.difference(&want).take(3).collect();
    assert!(
        missing == 0 && extra.is_empty(),
        "{missing} events missing, unexpected: {extra:?} (stored {}, want {})",
        got.len(),
        want.len()
    );
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
    /// Runs the stand-in; dropped last.
    _rt: tokio::runtime::Runtime,
    standin: StandIn,
    events: Vec<EmailEvent>,
}

fn setup(options: Options) -> Setup {
    setup_with(events(), options)
}

/// [`setup`] with the stand-in serving `events`.
fn setup_with(events: Vec<EmailEvent>, options: Options) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(StandIn::start(Options {
            events: events.clone(),
            ..options
        }))
        .unwrap();
    let config = dir.path().join("webhooks.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[server]
public_url = "https://hooks.example.com"
[[connector]]
id = "main"
portal_id = 1
app_id = 2
client_secret_env = "HS_IMPORT_TEST_SECRET"
access_token_env = "{TOKEN_ENV}"
api_base = "{}"
requests_per_10s = 190
[[webhook]]
id = "w"
type = "IMMEDIATE"
workflow_id = 3
"#,
            standin.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    Setup {
        config,
        data,
        _dir: dir,
        _rt: rt,
        standin,
        events,
    }
}

impl Setup {
    fn command(&self, token: Option<&str>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendtime"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data")
            .arg(&self.data)
            .args(["import", "hubspot", "--page-size", PAGE])
            .env("RUST_LOG", "info")
            .env_remove(TOKEN_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env(TOKEN_ENV, t);
        }
        cmd
    }

    fn import(&self) -> Output {
        self.command(Some(DEFAULT_TOKEN)).output().unwrap()
    }

    /// An import with `--since` `days` ago.
    fn import_since_days_ago(&self, days: i64) -> Output {
        let since = (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339();
        let mut cmd = self.command(Some(DEFAULT_TOKEN));
        cmd.args(["--since", &since]).output().unwrap()
    }

    fn events_requests(&self) -> Vec<sendtime::hubspot::standin::LogEntry> {
        self.standin
            .log()
            .into_iter()
            .filter(|e| e.path == EVENTS)
            .collect()
    }
}

/// `serve`'s config in `dir` for the scheduled-import tests: a tick every second, an import
/// every 2 s, connector `main` calling `api_base` (its secret and token in `{env}_SECRET` and
/// `{env}_TOKEN`), and one webhook, `hook`.
fn serve_config(dir: &Path, env: &str, hook: &'static str, api_base: &str) -> PathBuf {
    use common::{Hook, TestConfig};
    TestConfig {
        env,
        tables: "[scheduler]\ncron = \"* * * * * *\"\n[import]\ncron = \"*/2 * * * * *\"",
        connector: &format!("api_base = \"{api_base}\""),
        hooks: &[&Hook {
            id: hook,
            kind: "NEXT_24_HOURS",
            target: "workflow_id = 101",
        }],
        ..TestConfig::default()
    }
    .write(dir)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every stored (event_id, at) with its multiplicity checked: panics on a double.
fn stored(data: &Path) -> (HashSet<(String, i64)>, usize) {
    let parts = Dataset::open(data, "events").unwrap().read_all().unwrap();
    let n_parts = parts.len();
    if parts.is_empty() {
        return (HashSet::new(), 0);
    }
    let df = concat_frames(parts.into_iter().map(|(_, df)| df).collect()).unwrap();
    let ids = df.column("event_id").unwrap().str().unwrap().clone();
    let at = df
        .column("at")
        .unwrap()
        .cast(&polars::prelude::DataType::Int64)
        .unwrap();
    let at = at.i64().unwrap();
    let mut keys = HashSet::new();
    for (id, at) in ids.iter().zip(at.iter()) {
        let key = (id.unwrap().to_string(), at.unwrap());
        assert!(keys.insert(key.clone()), "event {key:?} stored twice");
    }
    (keys, n_parts)
}

#[test]
fn imports_every_event_once_through_429_and_5xx_and_reruns_add_nothing() {
    let s = setup(Options::default());
    s.standin.inject(
        Injection::next(Fault::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: Some(Duration::from_secs(1)),
        })
        .after(2)
        .on(EVENTS),
    );
    s.standin.inject(
        Injection::next(Fault::Status {
            status: 503,
            message: "Service Unavailable".into(),
        })
        .after(5)
        .on(EVENTS),
    );
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported 2501 new events"),
        "{}",
        text(&out)
    );

    let (keys, parts) = stored(&s.data);
    assert_all_once(&keys, &s);
    // The 429 was waited out (at least its Retry-After) before the page was asked again.
    let log = s.events_requests();
    let statuses: Vec<_> = log.iter().map(|e| e.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == Some(429)).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == Some(503)).count(), 1);
    let i429 = statuses.iter().position(|s| *s == Some(429)).unwrap();
    let waited = log[i429 + 1].at.duration_since(log[i429].at).unwrap();
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
    assert_eq!(
        log[i429 + 1].query,
        log[i429].query,
        "same page asked again"
    );
    assert_eq!(statuses.iter().filter(|s| **s == Some(200)).count(), 11);
    assert!(
        log.iter()
            .all(|e| e.query.as_deref().unwrap().contains("limit=250")),
        "{log:?}"
    );

    // filteredEvent and the kind made it into the rows.
    let df = concat_frames(
        Dataset::open(&s.data, "events")
            .unwrap()
            .read_all()
            .unwrap()
            .into_iter()
            .map(|(_, df)| df)
            .collect(),
    )
    .unwrap();
    let filtered = df
        .column("filtered")
        .unwrap()
        .bool()
        .unwrap()
        .sum()
        .unwrap();
    let want = s.events.iter().filter(|e| e.filtered_event).count();
    assert_eq!(filtered as usize, want);
    let sources: HashSet<_> = df
        .column("source")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    assert_eq!(sources, HashSet::from(["hubspot:main".to_string()]));

    // Up to date: a re-run reads only the overlap and stores nothing.
    let before = s.events_requests().len();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 0 new events"),
        "{}",
        text(&out)
    );
    let (again, parts_again) = stored(&s.data);
    assert!(again == keys);
    assert_eq!(parts_again, parts, "a run with nothing new writes no part");
    let rerun = &s.events_requests()[before..];
    assert_eq!(rerun.len(), 1, "only the recent overlap is re-read");

    // An explicit --since re-reads everything and still doubles nothing.
    let out = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--since", "2000-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 0 new events"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2501 already stored"));
    assert!(stored(&s.data).0 == keys);
}

#[test]
fn a_run_that_fails_after_some_pages_resumes_where_it_stopped() {
    let s = setup(Options::default());
    s.standin.inject(
        Injection::next(Fault::Status {
            status: 403,
            message: "This app hasn't been granted all required scopes".into(),
        })
        .after(4)
        .times(u64::MAX)
        .on(EVENTS),
    );
    let out = s.import();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("granted all required scopes"), "{stderr}");
    assert!(stderr.contains("the same command resumes"), "{stderr}");
    assert!(!stderr.contains(DEFAULT_TOKEN), "token leaked: {stderr}");
    assert_eq!(stored(&s.data).0.len(), 1000);

    s.standin.clear_faults();
    let before = s.events_requests().len();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
    let resumed = &s.events_requests()[before];
    assert!(
        resumed.query.as_deref().unwrap().contains("offset=1000"),
        "{resumed:?}"
    );
    assert_all_once(&stored(&s.data).0, &s);
}

#[test]
fn kill_9_mid_run_then_rerun_stores_every_event_once() {
    let s = setup(Options {
        slow_rate: 1.0,
        slow_by: Duration::from_millis(150),
        ..Options::default()
    });
    let mut child = s.command(Some(DEFAULT_TOKEN)).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.events_requests().len() < 5 {
        assert!(Instant::now() < deadline, "import never got going");
        assert!(child.try_wait().unwrap().is_none(), "import ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = stored(&s.data).0.len();
    assert!(partial < 2501, "killed too late to test anything");

    s.standin.set_fault_rates(0.0, 0.0, 0.0);
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_once(&stored(&s.data).0, &s);
}

/// With room for about 30 ids, a run holds the window's ids a time slice at a time: a first
/// import stores every event once, and a re-read of the whole window recognises every one.
#[test]
fn a_window_with_more_ids_than_the_dedup_memory_still_stores_each_event_once() {
    let s = setup(Options::default());
    let run = |args: &[&str]| {
        let out = s
            .command(Some(DEFAULT_TOKEN))
            .args(["--dedup-memory", "0.001"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&[]).contains("imported 2501 new events"));
    let (keys, parts) = stored(&s.data);
    assert_all_once(&keys, &s);

    let again = run(&["--since", "2000-01-01T00:00:00Z"]);
    assert!(again.contains("imported 0 new events"), "{again}");
    assert!(again.contains("2501 already stored"), "{again}");
    let (keys_again, parts_again) = stored(&s.data);
    assert!(keys_again == keys);
    assert_eq!(parts_again, parts);

    let out = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--dedup-memory", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a number of megabytes above 0"));
}

#[test]
fn a_missing_token_names_the_variable() {
    let s = setup(Options::default());
    let out = s.command(None).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(TOKEN_ENV), "{stderr}");
    assert!(s.standin.log().is_empty());
}

#[test]
fn a_rejected_token_is_a_clear_error() {
    let s = setup(Options::default());
    let out = s.command(Some("wrong-token")).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("rejected the token in {TOKEN_ENV}")),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-token"), "{stderr}");
}

/// Runs `sendtime hubspot-standin` with `args`; its process and the address it prints.
fn hidden_standin(args: &[&std::ffi::OsStr]) -> (common::Killed, String) {
    use std::io::{BufRead, BufReader};
    let mut child = common::Killed(
        Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .args(["hubspot-standin", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("HUBSPOT_STANDIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

const ONE_EVENT: &str = r#"{"events": [{"id": "a", "created": 1700000000000, "type": "OPEN", "recipient": "x@example.com"}]}"#;

#[test]
fn the_hidden_standin_subcommand_serves_events_with_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    std::fs::write(&file, ONE_EVENT).unwrap();
    let (child, url) = hidden_standin(&[
        "--limit-per-10s".as_ref(),
        "1".as_ref(),
        "--events".as_ref(),
        file.as_os_str(),
    ]);
    let http = common::http();
    let get = || {
        http.get(format!("{url}{EVENTS}"))
            .bearer_auth(DEFAULT_TOKEN)
            .send()
            .unwrap()
    };
    let first = get();
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = first.json().unwrap();
    assert_eq!(body["events"][0]["id"], "a");
    assert_eq!(body["hasMore"], false);
    assert_eq!(get().status(), 429);
    drop(child);
}

/// Enrolling needs a contact: the events' recipients and the `--contacts` file's are known
/// (with the ids given there), any other email gets HubSpot's 404.
#[test]
fn the_hidden_standin_knows_the_recipients_and_the_contacts_file() {
    let dir = tempfile::tempdir().unwrap();
    let (events, contacts) = (dir.path().join("events.json"), dir.path().join("contacts"));
    std::fs::write(&events, ONE_EVENT).unwrap();
    std::fs::write(&contacts, "ann@example.com,501\n\nbob@example.com\n").unwrap();
    let (child, url) = hidden_standin(&[
        "--events".as_ref(),
        events.as_os_str(),
        "--contacts".as_ref(),
        contacts.as_os_str(),
    ]);
    let http = common::http();
    let enroll = |email: &str| {
        http.post(format!(
            "{url}/automation/v2/workflows/42/enrollments/contacts/{email}"
        ))
        .bearer_auth(DEFAULT_TOKEN)
        .send()
        .unwrap()
        .status()
    };
    for known in ["x@example.com", "ann@example.com", "bob@example.com"] {
        assert_eq!(enroll(known), 204, "{known}");
    }
    assert_eq!(enroll("nobody@example.com"), 404);
    let read: serde_json::Value = http
        .get(format!(
            "{url}/automation/v2/workflows/enrollments/contacts/501"
        ))
        .bearer_auth(DEFAULT_TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(read[0]["id"], 42, "{read}");
    // A workflow action's callback completes, though it learned of no execution (it refused
    // every completion: "not found").
    let completed = common::http()
        .post(format!(
            "{url}{}",
            sendtime::hubspot::client::CALLBACKS_COMPLETE
        ))
        .bearer_auth(DEFAULT_TOKEN)
        .json(&serde_json::json!({"inputs": [{
            "callbackId": "cb-1",
            "outputFields": {"hs_execution_state": "SUCCESS"},
            "typedOutputs": {},
        }]}))
        .send()
        .unwrap();
    assert_eq!(completed.status(), 204, "{:?}", completed.text());
    drop(child);

    // A line that is neither `email` nor `email,id` is refused, naming the line.
    std::fs::write(&contacts, "ann@example.com,-3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .args(["hubspot-standin", "--contacts"])
        .arg(&contacts)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));

    // An event with a field of the wrong kind (`created` as text) is refused naming where it
    // is and what was expected (it said only that no shape matched).
    let bad = dir.path().join("bad-events.json");
    for body in [
        r#"[{"id":"x","created":"2026-11-01T00:00:00Z","type":"OPEN","recipient":"a@b.c"}]"#,
        r#"{"events": [{"id":"x","created":"2026-11-01T00:00:00Z","type":"OPEN"}]}"#,
    ] {
        std::fs::write(&bad, body).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .args(["hubspot-standin", "--events"])
            .arg(&bad)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("expected i64 at line 1"), "{said}");
    }
    // Limits and a time zone no account has, and an empty token, are refused as usage.
    for args in [
        ["--limit-per-10s", "0"],
        ["--daily-limit", "0"],
        ["--utc-offset-minutes", "5000"],
        ["--token", ""],
    ] {
        // Taken, the stand-in would run until stopped: waited for a while, then stopped.
        let mut child = Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .args(["hubspot-standin", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        assert_eq!(child.wait().unwrap().code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_saved_offset_hubspot_refuses_restarts_the_window_without_doubling() {
    let s = setup(Options::default());
    s.standin.inject(
        Injection::next(Fault::Status {
            status: 403,
            message: "stop".into(),
        })
        .after(2)
        .times(u64::MAX)
        .on(EVENTS),
    );
    assert!(!s.import().status.success());
    let path = sendtime::import::hubspot::state_path(&s.data, "main");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(state["run"]["offset"], "500");
    state["run"]["offset"] = "expired-cursor".into();
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    s.standin.clear_faults();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the saved offset"));
    assert_all_once(&stored(&s.data).0, &s);
}

/// Two runs for one connector at once would resume the same cursor and store pages twice:
/// the second is refused while the first holds the lock.
#[test]
fn a_second_run_for_the_same_connector_is_refused_while_one_runs() {
    let s = setup(Options::default());
    let state = s.data.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let held = std::fs::File::create(state.join("hubspot-main.lock")).unwrap();
    held.lock().unwrap();
    let out = s.command(Some(DEFAULT_TOKEN)).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another import from HubSpot for connector main is running"),
        "{stderr}"
    );
    assert!(s.standin.log().is_empty(), "nothing was called");
    drop(held);
    assert!(
        s.command(Some(DEFAULT_TOKEN))
            .output()
            .unwrap()
            .status
            .success()
    );
}

/// Started by hand while a `serve` sends from the same data folder (its dispatch lock held),
/// the import paces at the share of the limit the dispatcher's planning leaves, and says so:
/// at its full pace, on a limiter apart from serve's, the two together went past HubSpot's
/// limit.
#[test]
fn an_import_beside_a_running_serve_takes_the_share_planning_leaves() {
    let s = setup(Options::default());
    std::fs::create_dir_all(&s.data).unwrap();
    let held = std::fs::File::create(s.data.join("dispatch.lock")).unwrap();
    held.lock().unwrap();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("paces at 19 calls per 10 s"), "{said}");
    let calls = s.events_requests();
    assert!(calls.len() >= 5, "{} pages", calls.len());
    // Paced at 17 calls per 10 s (19 less the limiter's margin): about 590 ms apart; at the
    // full 190, about 55 ms. The whole span, not each gap, for a loaded machine's jitter.
    let span = (calls.last().unwrap().at)
        .duration_since(calls[0].at)
        .unwrap();
    let least = Duration::from_millis(450) * (calls.len() as u32 - 1);
    assert!(span >= least, "{} calls in {span:?}", calls.len());
    drop(held);

    // A `serve` started after the import: seen at the next page (each answer takes 300 ms, so
    // at full pace pages start about 300 ms apart, at the share about 590 ms).
    let s = setup(Options::default());
    let slow = Injection::next(Fault::Slow(Duration::from_millis(300)));
    s.standin.inject(slow.times(u64::MAX).on(EVENTS));
    let import = s.command(Some(DEFAULT_TOKEN)).spawn().unwrap();
    common::eventually(Duration::from_secs(30), || {
        (!s.events_requests().is_empty()).then_some(())
    })
    .expect("the import reads its first page");
    let held = std::fs::File::create(s.data.join("dispatch.lock")).unwrap();
    held.lock().unwrap();
    let locked = std::time::SystemTime::now();
    let out = import.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("paces at 19 calls per 10 s from now on"),
        "{said}"
    );
    // The page asked for as the lock was taken may have gone at full pace; the rest are shared.
    let after: Vec<_> = (s.events_requests().into_iter())
        .filter(|c| c.at > locked)
        .skip(1)
        .collect();
    assert!(after.len() >= 4, "{} pages after the lock", after.len());
    let span = (after.last().unwrap().at)
        .duration_since(after[0].at)
        .unwrap();
    let least = Duration::from_millis(450) * (after.len() as u32 - 1);
    assert!(span >= least, "{} calls in {span:?}", after.len());
}

/// An erase while `sendtime import hubspot` runs is refused: the import takes the events lock
/// a page at a time, so its later pages would bring the person's older events back (an audit
/// found an erase between two pages undone). Once the import has finished, the erase goes.
#[test]
fn an_erase_is_refused_while_an_import_from_hubspot_runs() {
    let s = setup(Options::default());
    let slow = Injection::next(Fault::Slow(Duration::from_millis(700)));
    s.standin.inject(slow.times(u64::MAX).on(EVENTS));
    let import = s.command(Some(DEFAULT_TOKEN)).spawn().unwrap();
    let erase = || {
        Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .arg("--config")
            .arg(&s.config)
            .arg("--data")
            .arg(&s.data)
            .args(["erase", "person7@example.com"])
            .output()
            .unwrap()
    };
    // Two pages read: the first is stored.
    common::eventually(Duration::from_secs(30), || {
        (s.events_requests().len() >= 2).then_some(())
    })
    .expect("the import reads its pages");
    let refused = erase();
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("an import from HubSpot is running"),
        "{}",
        text(&refused)
    );
    let imported = import.wait_with_output().unwrap();
    assert!(imported.status.success(), "{}", text(&imported));
    let erased = erase();
    assert!(erased.status.success(), "{}", text(&erased));
    let theirs = |e: &EmailEvent| e.recipient.as_deref() == Some("person7@example.com");
    let kept: HashSet<(String, i64)> = (s.events.iter())
        .filter(|e| !theirs(e))
        .map(|e| (e.id.clone(), e.created))
        .collect();
    assert_eq!(stored(&s.data).0, kept);
    // The next runs do not bring them back: the default one reads the hours before the last
    // run's end again, and one over the whole history (a connector renamed) reads them all.
    assert!(s.import().status.success());
    let again = s.import_since_days_ago(400);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(stored(&s.data).0, kept);
}

/// An empty window is refused: as a first run it marked every event before it imported, so
/// the next default run started there and never read the history.
#[test]
fn an_empty_window_is_refused_and_marks_nothing() {
    let s = setup(Options::default());
    // Within the history: five days ago.
    let at = (chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339();
    let out = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--since", &at, "--until", &at])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // The next default run reads the whole history, the days before `at` too.
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_once(&stored(&s.data).0, &s);
}

/// This machine's clock four hours ahead of HubSpot's: a run marks its window complete up to
/// HubSpot's time (its `Date`), so an event HubSpot records after the run, stamped before this
/// machine's "now" then, is read by the next run. Marked complete up to this machine's clock,
/// it fell before the next window, and every run missed such events (an audit).
#[test]
fn a_clock_ahead_of_hubspots_marks_nothing_complete_before_hubspot_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("hubspot-clock");
    let hour = 3_600_000;
    let now = chrono::Utc::now().timestamp_millis();
    common::set_clock(&clock, now - 4 * hour);
    let event = |id: &str, created: i64| EmailEvent {
        id: id.into(),
        created,
        kind: "OPEN".into(),
        recipient: Some(format!("{id}@example.com")),
        email_campaign_id: Some(7),
        filtered_event: false,
        extra: Default::default(),
    };
    // One HubSpot has at the first run; one it records half an hour after it.
    let events = vec![
        event("late", now - 3 * hour - hour / 2),
        event("early", now - 5 * hour),
    ];
    let s = setup_with(
        events,
        Options {
            clock: sendtime::clock::Clock::File(clock.clone()),
            ..Options::default()
        },
    );
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let ids = |data: &Path| -> Vec<String> {
        let mut ids: Vec<String> = stored(data).0.into_iter().map(|(id, _)| id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&s.data), ["early"]);
    // An hour on, by HubSpot's clock: the late event is there, and the next run reads it.
    common::set_clock(&clock, now - 3 * hour);
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(&s.data), ["early", "late"]);
    // A mark an earlier version set five hours ahead: the default run stops, saying to give
    // --since; a run with it lowers the mark, and the default runs go on.
    common::set_clock(&clock, now);
    let state = s.data.join("state/hubspot-main.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["complete_until_ms"] = serde_json::json!(now + 5 * hour);
    std::fs::write(&state, v.to_string()).unwrap();
    let out = s.import();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--since TIME"), "{}", text(&out));
    let since = chrono::DateTime::from_timestamp_millis(now - 6 * hour)
        .unwrap()
        .to_rfc3339();
    let out = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--since", &since])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
}

/// A window that starts after the last complete run ends leaves a gap: the mark of what is
/// complete stays where it was, so the next default run starts there and fills it.
#[test]
fn a_later_window_does_not_skip_the_gap_before_it() {
    let s = setup(Options::default());
    let complete_until = || {
        let text = std::fs::read_to_string(s.data.join("state/hubspot-main.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["complete_until_ms"].as_i64()
    };
    let run = |args: &[&str]| {
        let out = s.command(Some(DEFAULT_TOKEN)).args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    let lift = || -> serde_json::Value {
        let out = common::run(&s.config, &s.data, &["report", "lift", "--json"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Before any import (a data folder `serve` has only received into), the report says
    // the account's engagement is missing (it reported as of now, saying nothing).
    std::fs::create_dir_all(s.data.join("inbox")).unwrap();
    let before = lift();
    assert_eq!(
        before["unimported"],
        serde_json::json!(["main"]),
        "{before}"
    );
    let notes = before["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("no engagement of connector main's account is imported yet")),
        "{before}"
    );
    run(&[
        "--since",
        "2020-01-01T00:00:00Z",
        "--until",
        "2020-02-01T00:00:00Z",
    ]);
    let first = complete_until().unwrap();
    run(&[
        "--since",
        "2020-03-01T00:00:00Z",
        "--until",
        "2020-04-01T00:00:00Z",
    ]);
    assert_eq!(
        complete_until(),
        Some(first),
        "the gap is not marked complete"
    );
    // Contiguous: the mark moves on.
    run(&[
        "--since",
        "2020-01-15T00:00:00Z",
        "--until",
        "2020-05-01T00:00:00Z",
    ]);
    assert!(complete_until().unwrap() > first);
    // A window that ends in the future is refused: it would be marked complete up to then.
    let marked = complete_until();
    let out = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--until", "2999-01-01T00:00:00Z"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(complete_until(), marked);
    // `report lift` knows engagement up to there, less the three hours HubSpot may record
    // an event late, not up to now.
    let lift = lift();
    let late = 3 * 3_600_000;
    assert_eq!(
        lift["as_of_ms"].as_i64(),
        complete_until().map(|t| t - late)
    );
    assert_eq!(lift["unimported"], serde_json::json!([]));
}

/// `serve` imports HubSpot's email events on its own schedule (`[import] cron`): a contact whose
/// opens are only in HubSpot is planned at its own best hour, with no manual import, and
/// `/status` and the metrics show the import.
#[test]
fn serve_keeps_profiles_current_from_hubspot_events() {
    use common::{Server, eventually};
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000i64;
    let best_hour = (now / 3_600_000 + 5) % 24;
    let opens: Vec<EmailEvent> = (1..=12)
        .map(|d| EmailEvent {
            id: format!("fresh-{d}"),
            created: (now / day - d) * day + best_hour * 3_600_000 + 600_000,
            kind: "OPEN".into(),
            recipient: Some("fresh@example.com".into()),
            email_campaign_id: Some(7),
            filtered_event: false,
            extra: Default::default(),
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(StandIn::start(Options {
            events: opens,
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), "FRESH", "nurture", &standin.url());
    let data = dir.path().join("data");
    let server = Server::start(
        &config,
        &data,
        &[
            ("FRESH_SECRET", "fresh-secret"),
            ("FRESH_TOKEN", DEFAULT_TOKEN),
        ],
    );
    let client = common::http();
    let status = eventually(Duration::from_secs(30), || {
        let s: serde_json::Value = client
            .get(server.admin_url("/status"))
            .send()
            .ok()?
            .json()
            .ok()?;
        s["imports"]["main"]["last_success_at_ms"]
            .as_i64()
            .map(|_| s)
    })
    .unwrap_or_else(|| panic!("no scheduled import; logs:\n{}", server.logs()));
    assert_eq!(
        status["imports"]["main"]["last_error"],
        serde_json::Value::Null
    );
    // The account's daily use, from the import's calls (the dispatcher has made none).
    let main = &status["connectors"][0];
    let used =
        main["daily_limit"].as_u64().unwrap_or(0) - main["daily_remaining"].as_u64().unwrap_or(0);
    assert_eq!(
        main["daily_limit"].as_u64(),
        Some(Options::default().daily_limit.into())
    );
    assert!(
        (1..=standin.log().len() as u64).contains(&used),
        "{main}: {} calls",
        standin.log().len()
    );
    // And when it came: yesterday's use after the account's midnight is not today's.
    let as_of = main["daily_as_of_ms"].as_i64().unwrap_or(0);
    assert!(
        (now..=status["now_ms"].as_i64().unwrap()).contains(&as_of),
        "{main}"
    );
    assert!(
        status["imports"]["main"]["complete_until_ms"]
            .as_i64()
            .unwrap()
            >= now - 60_000
    );
    let metrics = client
        .get(server.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("sendtime_import_runs_total{connector=\"main\",result=\"ok\"}"),
        "{metrics}"
    );

    // Posted now, the contact is planned from the imported opens.
    let body = common::contact_body(5, "fresh@example.com");
    assert_eq!(
        common::post_signed(&client, &server, "fresh-secret", "/hooks/nurture", body),
        200
    );
    let plan = eventually(Duration::from_secs(20), || {
        sendtime::datasets::plan::read(&sendtime::datasets::plan::dataset(&data).unwrap())
            .ok()?
            .into_iter()
            .next()
    })
    .unwrap();
    assert!(
        plan.reason.contains("(12 opens/clicks)"),
        "planned without the imported history: {}",
        plan.reason
    );
    assert_eq!(
        (plan.due_at_ms / 3_600_000) % 24,
        best_hour,
        "{}",
        plan.reason
    );
    server.stop();
}

/// A paused connector's scheduled import makes no call: an operator's pause (until resumed)
/// and a daily-limit pause an earlier run stored. Before, the import kept calling HubSpot
/// through both. The operator's pause is lifted with the command `pause` names, though a
/// webhook shares the connector's id (the command named the webhook, so the pause stayed),
/// and `resume` of that id names the webhook, and says which command lifts the pause.
#[test]
fn a_paused_connector_imports_nothing_until_resumed() {
    use common::{Server, eventually};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let imports = || standin.log().iter().filter(|e| e.path == EVENTS).count();
    let env = [
        ("HELD_SECRET", "held-secret"),
        ("HELD_TOKEN", DEFAULT_TOKEN),
    ];
    for daily in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let config = serve_config(dir.path(), "HELD", "main", &standin.url());
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("state")).unwrap();
        // The command `pause` names to lift it.
        let mut resume = String::new();
        if daily {
            let until = chrono::Utc::now().timestamp_millis() + 3_600_000;
            std::fs::write(data.join("state/dispatch-pause-main"), until.to_string()).unwrap();
        } else {
            let paused = common::run(&config, &data, &["pause", "main", "--connector"], &env);
            assert!(paused.status.success(), "{}", text(&paused));
            resume = String::from_utf8_lossy(&paused.stdout)
                .split('`')
                .nth(1)
                .unwrap_or_else(|| panic!("no command to resume with: {}", text(&paused)))
                .to_string();
        }
        let before = imports();
        let server = Server::start(&config, &data, &env);
        // Two scheduled imports came and were not run.
        let paused_runs = || {
            common::metric(
                &server,
                "sendtime_import_runs_total{connector=\"main\",result=\"paused\"}",
            )
        };
        eventually(Duration::from_secs(30), || {
            (paused_runs() >= 2).then_some(())
        })
        .unwrap_or_else(|| panic!("no import came while paused:\n{}", server.logs()));
        // `/status` says so (it showed the last run before the pause, as if nothing came).
        let status: serde_json::Value = common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap();
        let why = if daily { "(daily_limit)" } else { "(operator)" };
        let shown = status["imports"]["main"]["paused"].as_str().unwrap_or("");
        assert!(
            shown.starts_with("skipped") && shown.ends_with(why),
            "{status}"
        );
        assert_eq!(
            imports(),
            before,
            "imported while paused:\n{}",
            server.logs()
        );
        if !daily {
            // `resume main` names the webhook, which is not paused: it says so, and which
            // command lifts the connector's pause.
            let wrong = common::run(&config, &data, &["resume", "main"], &env);
            let said = String::from_utf8_lossy(&wrong.stdout);
            assert!(
                said.contains("not paused") && said.contains(&format!("`{resume}`")),
                "{}",
                text(&wrong)
            );
            let args: Vec<&str> = resume.split_whitespace().skip(1).collect();
            let resumed = common::run(&config, &data, &args, &env);
            assert!(resumed.status.success(), "{}", text(&resumed));
            eventually(Duration::from_secs(10), || {
                (imports() > before).then_some(())
            })
            .unwrap_or_else(|| panic!("no import once resumed:\n{}", server.logs()));
        }
        server.stop();
    }
}

/// A connector renamed (or a second one on the same account) has no cursor, so it reads the
/// account's whole history again, and stores none of it twice: HubSpot's event ids are
/// matched whichever connector stored them (before, the history was stored again).
#[test]
fn a_renamed_connector_does_not_store_the_history_again() {
    let s = setup(Options::default());
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(&s.config).unwrap();
    assert_eq!(config.matches("id = \"main\"").count(), 1);
    std::fs::write(&s.config, config.replace("id = \"main\"", "id = \"prod\"")).unwrap();
    let before = s.events_requests().len();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        s.events_requests().len() >= before + 11,
        "the renamed connector did not read the history"
    );
    let (got, _) = stored(&s.data);
    assert_all_once(&got, &s);
}

/// A pause set while a scheduled import runs stops it after the page in flight (before, a
/// first import of a large account went on calling HubSpot for hours under an operator's
/// pause), and the first run after the resume goes on from there: every event once.
#[test]
fn a_pause_stops_a_scheduled_import_under_way() {
    use common::{Server, eventually};
    let s = setup(Options::default());
    // Each page answered 2 s late: the 11 pages take more than 20 s.
    s.standin.inject(
        Injection::next(Fault::Slow(Duration::from_secs(2)))
            .times(u64::MAX)
            .on(EVENTS),
    );
    let env = [
        ("HELD_SECRET", "held-secret"),
        ("HELD_TOKEN", DEFAULT_TOKEN),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), "HELD", "main", &s.standin.url());
    let data = dir.path().join("data");
    let server = Server::start(&config, &data, &env);
    let pages = || s.events_requests().len();
    eventually(Duration::from_secs(30), || (pages() >= 1).then_some(()))
        .unwrap_or_else(|| panic!("no import began:\n{}", server.logs()));
    let paused = common::run(&config, &data, &["pause", "main", "--connector"], &env);
    assert!(paused.status.success(), "{}", text(&paused));
    let at_pause = pages();
    // Stopped: the run ends (and counts as paused) well before its pages could.
    eventually(Duration::from_secs(12), || {
        let series = "sendtime_import_runs_total{connector=\"main\",result=\"paused\"}";
        (common::metric(&server, series) >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the import went on under the pause:\n{}", server.logs()));
    let status = || -> serde_json::Value {
        common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap()
    };
    let shown = status()["imports"]["main"].clone();
    assert!(
        shown["paused"]
            .as_str()
            .is_some_and(|p| p.starts_with("stopped: the connector was paused")),
        "{shown}"
    );
    assert!(
        pages() <= at_pause + 1,
        "{} pages, {at_pause} at the pause",
        pages()
    );
    let (got, _) = stored(&data);
    assert!(got.len() < s.events.len(), "all {} imported", got.len());

    let resumed = common::run(&config, &data, &["resume", "main", "--connector"], &env);
    assert!(resumed.status.success(), "{}", text(&resumed));
    eventually(Duration::from_secs(60), || {
        (stored(&data).0.len() >= s.events.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("not all imported once resumed:\n{}", server.logs()));
    // The run that finished is shown, not the pause before it.
    let shown = eventually(Duration::from_secs(10), || {
        let s = status()["imports"]["main"].clone();
        s["last_success_at_ms"].as_i64().map(|_| s)
    })
    .unwrap();
    assert_eq!(shown["paused"], serde_json::Value::Null, "{shown}");
    server.stop();
    assert_all_once(&stored(&data).0, &s);
}

/// Each account's scheduled import runs beside the others': one account's first import
/// (days, for a large account at the share planning leaves) no longer holds back every other
/// account's, which waited for it in turn (an audit).
#[test]
fn one_accounts_long_import_does_not_hold_back_anothers() {
    use common::{Server, eventually};
    let s = setup(Options::default());
    // The first account's pages are answered 2 s late (and it is first in the config).
    s.standin.inject(
        Injection::next(Fault::Slow(Duration::from_secs(2)))
            .times(u64::MAX)
            .on(EVENTS),
    );
    let quick = s
        ._rt
        .block_on(StandIn::start(Options {
            events: events(),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("webhooks.toml");
    let connector = |id: &str, portal: u32, url: &str| {
        format!(
            "[[connector]]\nid = \"{id}\"\nportal_id = {portal}\napp_id = 2\nclient_secret_env = \"TWO_SECRET\"\naccess_token_env = \"TWO_TOKEN\"\napi_base = \"{url}\"\n"
        )
    };
    let webhook = |id: &str, on: &str| {
        format!(
            "[[webhook]]\nid = \"{id}\"\nconnector = \"{on}\"\ntype = \"IMMEDIATE\"\nworkflow_id = 3\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\npublic_url = \"https://hooks.example.com\"\n[import]\ncron = \"*/2 * * * * *\"\n{}{}{}{}",
            connector("slow", 1, &s.standin.url()),
            connector("quick", 7, &quick.url()),
            webhook("a", "slow"),
            webhook("b", "quick"),
        ),
    )
    .unwrap();
    let env = [("TWO_SECRET", "two-secret"), ("TWO_TOKEN", DEFAULT_TOKEN)];
    let data = dir.path().join("data");
    let server = Server::start(&config, &data, &env);
    let done = |c: &str| {
        let series = format!("sendtime_import_runs_total{{connector=\"{c}\",result=\"ok\"}}");
        common::metric(&server, &series)
    };
    eventually(Duration::from_secs(15), || {
        (done("quick") >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the quick account waited:\n{}", server.logs()));
    assert_eq!(
        done("slow"),
        0,
        "the slow account's first import is still under way"
    );
    assert!(!s.events_requests().is_empty(), "the slow account's began");
    eventually(Duration::from_secs(60), || {
        (done("slow") >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the slow account never finished:\n{}", server.logs()));
    server.stop();
    // The two accounts' imports shared one dictionary: each contact in it once, at the
    // index every event of its address carries.
    let frame = |name: &str| {
        let parts = Dataset::open(&data, name).unwrap().read_all().unwrap();
        concat_frames(parts.into_iter().map(|(_, df)| df).collect()).unwrap()
    };
    let contacts = frame("contacts");
    let mut keys: Vec<(u32, String)> = (contacts.column("contact").unwrap().u32().unwrap())
        .iter()
        .zip(contacts.column("key").unwrap().str().unwrap().iter())
        .map(|(i, k)| (i.unwrap(), k.unwrap().to_string()))
        .collect();
    keys.sort();
    assert_eq!(keys.len(), 300, "each of the 300 addresses once");
    assert!(keys.iter().enumerate().all(|(n, (i, _))| n == *i as usize));
    let events = frame("events");
    let sources: HashSet<&str> = (events.column("source").unwrap().str().unwrap())
        .iter()
        .flatten()
        .collect();
    assert_eq!(sources.len(), 2, "both accounts' events: {sources:?}");
    let pairs = (events.column("contact").unwrap().u32().unwrap())
        .iter()
        .zip(events.column("email").unwrap().str().unwrap().iter());
    for (i, email) in pairs {
        assert_eq!(keys[i.unwrap() as usize].1, email.unwrap());
    }
}

/// Pages of odd but real shape: an event without a type (HubSpot's UNBOUNCE events have
/// none) is skipped, not a page that cannot be read; an empty page that says there is more
/// goes on to the next one.
#[test]
fn an_event_without_a_type_and_an_empty_page_with_more_do_not_stop_the_import() {
    let s = setup(Options::default());
    let created = chrono::Utc::now().timestamp_millis() - 7_200_000;
    for (offset, events) in [
        (
            "00",
            serde_json::json!([{"id": "unbounce-1", "created": created}]),
        ),
        ("0", serde_json::json!([])),
    ] {
        s.standin.inject(
            Injection::next(Fault::Json(
                serde_json::json!({"hasMore": true, "offset": offset, "events": events}),
            ))
            .on(EVENTS),
        );
    }
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let (got, _) = stored(&s.data);
    assert_all_once(&got, &s);
    let pages = s.events_requests().len();
    assert_eq!(pages, 2 + 2501usize.div_ceil(250), "{pages} requests");
}

/// Empty pages that each say more follow, with a new offset each time (so the repeated-offset
/// check never ends them), stop the run after 50 in a row, saying so, where it went on for
/// good; the next run resumes there and, once HubSpot answers pages again, stores every event
/// once. A page holding only an unreadable event is not an empty one.
#[test]
fn a_chain_of_empty_pages_saying_more_stops_the_run() {
    let s = setup(Options::default());
    // "0", "00", ...: new each time, and the stand-in's first page when it is asked with one.
    let chain = |unreadable_at: Option<usize>| {
        for i in 1..=60 {
            let events = match unreadable_at == Some(i) {
                true => serde_json::json!([{"neither": "id nor time"}]),
                false => serde_json::json!([]),
            };
            s.standin.inject(
                Injection::next(Fault::Json(
                    serde_json::json!({"hasMore": true, "offset": "0".repeat(i), "events": events}),
                ))
                .on(EVENTS),
            );
        }
    };
    // A page of an unreadable event is not empty: 30 and 29 in a row go on.
    chain(Some(31));
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let before = s.events_requests().len();
    chain(None);
    let out = s.import();
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("HubSpot answered 50 empty pages in a row, each saying more events follow: stopped after page 50"),
        "{said}"
    );
    assert_eq!(s.events_requests().len() - before, 50);
    // Ten more empty pages, then the stand-in's own from its first.
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_once(&stored(&s.data).0, &s);
}

/// A connector given another account's `portal_id` in place imports that account's events
/// from the first: the old account's cursor would have started the new one's history hours
/// ago, and its events before never been read.
#[test]
fn a_connector_moved_to_another_account_imports_its_history_afresh() {
    let s = setup(Options::default());
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let start_of = |request: &sendtime::hubspot::standin::LogEntry| {
        let query = request.query.clone().unwrap_or_default();
        let start = query
            .split('&')
            .find_map(|p| p.strip_prefix("startTimestamp="));
        start.and_then(|v| v.parse::<i64>().ok())
    };
    // A second run of the same account starts at the last one's end, less the overlap.
    let before = s.events_requests().len();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert!(start_of(&s.events_requests()[before]).unwrap() > 0);
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        config.replace("portal_id = 1\n", "portal_id = 9\n"),
    )
    .unwrap();
    let before = s.events_requests().len();
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(start_of(&s.events_requests()[before]), Some(0));
    let state = std::fs::read_to_string(s.data.join("state/hubspot-main.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["portal_id"], 9, "{state}");
}

/// A page that says there is more but gives no new offset to ask for it by: the offset it was
/// given back or one given before (going on would loop; a loop over two pages went on for
/// good), or none (ending the window there marked the events after it imported, and they were
/// never read). The run fails without marking the window complete, and the next run reads it
/// again and stores every event once.
#[test]
fn more_without_a_new_offset_leaves_the_window_for_the_next_run() {
    let more = |offset: &str| serde_json::json!({"hasMore": true, "offset": offset, "events": []});
    let none = serde_json::json!({"hasMore": true, "events": []});
    let given_back = vec![more("7"), more("7")];
    let given_before = vec![more("7"), more("8"), more("7")];
    for pages in [given_back, vec![none], given_before] {
        let s = setup(Options::default());
        let page = serde_json::Value::from(pages.clone());
        for p in pages {
            s.standin.inject(Injection::next(Fault::Json(p)).on(EVENTS));
        }
        let state = || {
            let text = std::fs::read_to_string(s.data.join("state/hubspot-main.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        };
        let out = s.import();
        assert_eq!(out.status.code(), Some(1), "{page}: {}", text(&out));
        assert_eq!(
            state()["complete_until_ms"],
            serde_json::Value::Null,
            "{page}"
        );
        let out = s.import();
        assert!(out.status.success(), "{page}: {}", text(&out));
        let (got, _) = stored(&s.data);
        assert_all_once(&got, &s);
        assert!(state()["complete_until_ms"].is_i64(), "{page}");
    }
}

/// An event with a field of another type than HubSpot documents (a `null` flag, a campaign id
/// as text) is read without it; one without an id or time is skipped. Either stopped the
/// import at that page, and every later run with it.
#[test]
fn an_odd_event_is_read_or_skipped_and_the_import_goes_on() {
    let s = setup(Options::default());
    let created = chrono::Utc::now().timestamp_millis() - 7_200_000;
    let odd = serde_json::json!([
        {"id": "odd-1", "created": created, "type": "OPEN", "recipient": "odd@example.com",
         "filteredEvent": null, "emailCampaignId": "12x"},
        {"created": created, "type": "OPEN", "recipient": "noid@example.com"},
        {"id": "odd-2", "created": "yesterday", "type": "OPEN", "recipient": "odd@example.com"},
    ]);
    s.standin.inject(
        Injection::next(Fault::Json(
            serde_json::json!({"hasMore": true, "offset": "0", "events": odd}),
        ))
        .on(EVENTS),
    );
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let (mut got, _) = stored(&s.data);
    assert!(got.remove(&("odd-1".to_string(), created)), "{got:?}");
    assert_all_once(&got, &s);
}

/// HubSpot's next events page holds 20 events none of which can be read (every time as
/// text): the run stops before it, its cursor kept.
fn an_unreadable_page_next(standin: &StandIn) {
    let changed: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            serde_json::json!({"id": format!("new-{i}"), "created": "2026-12-01T10:00:00Z",
                "type": "OPEN", "recipient": "new@example.com"})
        })
        .collect();
    standin.inject(
        Injection::next(Fault::Json(
            serde_json::json!({"hasMore": true, "offset": "0", "events": changed}),
        ))
        .on(EVENTS),
    );
}

/// A page none of whose events can be read (HubSpot's answer changed shape: here every time
/// as text) stops the run before it, progress saved: skipping them marked the window
/// imported with nothing stored, for good. The next run reads the page again.
#[test]
fn a_page_of_unreadable_events_stops_the_run_before_it() {
    let s = setup(Options::default());
    an_unreadable_page_next(&s.standin);
    let out = s.import();
    assert!(!out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("none of the 20 events of page 1"), "{said}");
    assert_eq!(stored(&s.data).0.len(), 0);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sendtime::import::hubspot::state_path(&s.data, "main")).unwrap(),
    )
    .unwrap();
    assert!(
        state["complete_until_ms"].is_null() && state["run"].is_object(),
        "{state}"
    );
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_once(&stored(&s.data).0, &s);
}

/// A `--since` window that replaces an unfinished first import of the whole history marks
/// nothing complete: it marked every event before it imported, and the next default run
/// started hours ago, the history never read (an audit).
#[test]
fn a_since_replacing_an_unfinished_first_import_leaves_the_history_to_read() {
    let s = setup(Options::default());
    // The first run stops at its first page (unreadable), its cursor kept from the start.
    an_unreadable_page_next(&s.standin);
    assert!(!s.import().status.success());
    let state = || -> serde_json::Value {
        let path = sendtime::import::hubspot::state_path(&s.data, "main");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    assert_eq!(state()["run"]["start_ms"], 0, "{}", state());
    let out = s.import_since_days_ago(5);
    assert!(out.status.success(), "{}", text(&out));
    assert!(state()["complete_until_ms"].is_null(), "{}", state());
    // Nor does the run say so (it said every event before its window's end was imported).
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("every event before"), "{said}");
    assert!(
        said.contains("the history before it is left to read"),
        "{said}"
    );
    // The next default run reads the whole history.
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_once(&stored(&s.data).0, &s);
    assert!(state()["complete_until_ms"].is_i64(), "{}", state());
    // An unfinished `--since` window replaced by another was not the whole history: the
    // second marks its window as a first `--since` run does.
    let s = setup(Options::default());
    an_unreadable_page_next(&s.standin);
    assert!(!s.import_since_days_ago(10).status.success());
    assert!(s.import_since_days_ago(5).status.success());
    let path = sendtime::import::hubspot::state_path(&s.data, "main");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(state["complete_until_ms"].is_i64(), "{state}");
}

/// A `serve` stopped while its scheduled import waits out HubSpot's 429 (ten minutes here)
/// exits at once, not when the wait ends; the import resumes at the next start.
#[test]
fn serve_stops_while_its_import_waits_on_hubspot() {
    use common::{Hook, Server, TestConfig, eventually};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    standin.inject(
        Injection::next(Fault::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: Some(Duration::from_secs(600)),
        })
        .on(EVENTS),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig {
        env: "WAIT",
        tables: "[import]\ncron = \"*/2 * * * * *\"",
        connector: &format!("api_base = \"{}\"", standin.url()),
        hooks: &[&Hook {
            id: "nurture",
            kind: "NEXT_24_HOURS",
            target: "workflow_id = 101",
        }],
        ..TestConfig::default()
    }
    .write(dir.path());
    let server = Server::start(
        &config,
        &dir.path().join("data"),
        &[
            ("WAIT_SECRET", "wait-secret"),
            ("WAIT_TOKEN", DEFAULT_TOKEN),
        ],
    );
    eventually(Duration::from_secs(20), || {
        let log = standin.log();
        log.iter()
            .any(|e| e.path == EVENTS && e.status == Some(429))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no 429; logs:\n{}", server.logs()));
    // `stop` fails unless it exits, cleanly, within 20 s.
    server.stop();
}

/// A reload that changes `[import] cron` takes effect before the old schedule's next fire:
/// before, the import ran once more at the old time, worked out before the reload.
#[test]
fn a_changed_import_cron_does_not_run_the_old_fire() {
    use common::{Server, eventually, metric};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let imports = || standin.log().iter().filter(|e| e.path == EVENTS).count();
    let env = [
        ("CRON_SECRET", "cron-secret"),
        ("CRON_TOKEN", DEFAULT_TOKEN),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), "CRON", "hook", &standin.url());
    // Once a minute, at the second 25 s from now (start and reload take a few on a busy
    // machine).
    let old_fire = Instant::now() + Duration::from_secs(25);
    let second = (chrono::Utc::now().timestamp() + 25) % 60;
    let every_two = "cron = \"*/2 * * * * *\"";
    let minutely = format!("cron = \"{second} * * * * *\"");
    let file = std::fs::read_to_string(&config).unwrap();
    assert_eq!(file.matches(every_two).count(), 1);
    let file = file.replace(every_two, &minutely);
    std::fs::write(&config, &file).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&config, &data, &env);
    // Moved to once a year before the old fire.
    std::fs::write(&config, file.replace(&minutely, "cron = \"0 0 0 1 1 *\"")).unwrap();
    eventually(Duration::from_secs(10), || {
        (metric(&server, "sendtime_config_reloads_total{result=\"loaded\"}") == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("the cron change was not loaded:\n{}", server.logs()));
    assert!(
        Instant::now() + Duration::from_secs(2) < old_fire,
        "the reload came too late to show anything"
    );
    std::thread::sleep(old_fire + Duration::from_secs(3) - Instant::now());
    assert_eq!(imports(), 0, "imported at the old time:\n{}", server.logs());
    server.stop();
}

/// `n` opens of 300 people, `apart_ms` apart from an hour ago back.
fn opens(n: u32, apart_ms: i64) -> Vec<EmailEvent> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| EmailEvent {
            id: format!("ev-{i:05}"),
            created: now - 3_600_000 - i64::from(i) * apart_ms,
            kind: "OPEN".into(),
            recipient: Some(format!("person{}@example.com", i % 300)),
            email_campaign_id: Some(7),
            filtered_event: false,
            extra: Default::default(),
        })
        .collect()
}

/// A reload that turns imports off stops a scheduled run under way at its next page: the
/// run went on with the config it began with (a first import may last hours).
#[test]
fn a_reload_that_turns_imports_off_stops_a_run_under_way() {
    use common::{Server, eventually};
    // 20,000 events over 23 days: 20 pages of HubSpot's 1,000.
    let many = opens(20_000, 100_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(StandIn::start(Options {
            events: many.clone(),
            ..Options::default()
        }))
        .unwrap();
    let slow = Injection::next(Fault::Slow(Duration::from_millis(500)));
    standin.inject(slow.times(u64::MAX).on(EVENTS));
    let pages = || standin.log().iter().filter(|e| e.path == EVENTS).count();
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), "OFF", "hook", &standin.url());
    let env = [("OFF_SECRET", "off-secret"), ("OFF_TOKEN", DEFAULT_TOKEN)];
    let server = Server::start(&config, &dir.path().join("data"), &env);
    eventually(Duration::from_secs(30), || (pages() > 0).then_some(()))
        .unwrap_or_else(|| panic!("no import began:\n{}", server.logs()));
    let file = std::fs::read_to_string(&config).unwrap();
    assert_eq!(file.matches("[import]\n").count(), 1);
    std::fs::write(
        &config,
        file.replace("[import]\n", "[import]\nenabled = false\n"),
    )
    .unwrap();
    let status = || -> serde_json::Value {
        common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap()
    };
    let shown = eventually(Duration::from_secs(30), || {
        let s = status()["imports"]["main"]["paused"].as_str()?.to_string();
        s.contains("imports were turned off in the config")
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("the run went on: {}\n{}", status(), server.logs()));
    assert!(shown.starts_with("stopped"), "{shown}");
    // No page after it (the one in flight at the reload may end), and not all 20 of them.
    let stopped = pages();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pages(), stopped, "{}", server.logs());
    assert!(stopped < 20, "{stopped} pages");
    server.stop();
}

/// A reload that lowers `requests_per_10s` slows a scheduled import under way to its new
/// share from its next page: the share was worked out once, when the run began (a first
/// import may last days).
#[test]
fn a_lowered_limit_slows_a_scheduled_import_under_way() {
    use common::{Server, eventually, metric};
    // 40,000 events: 40 pages of HubSpot's 1,000.
    let many = opens(40_000, 50_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let standin = rt
        .block_on(StandIn::start(Options {
            events: many,
            ..Options::default()
        }))
        .unwrap();
    let pages = || standin.log().iter().filter(|e| e.path == EVENTS).count();
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), "LOW", "hook", &standin.url());
    let file = std::fs::read_to_string(&config).unwrap();
    let base = format!("api_base = \"{}\"\n", standin.url());
    assert_eq!(file.matches(&base).count(), 1);
    let at = |limit: u32| file.replace(&base, &format!("{base}requests_per_10s = {limit}\n"));
    // 190: a share of 19 calls per 10 s, paced about 590 ms apart.
    std::fs::write(&config, at(190)).unwrap();
    let env = [("LOW_SECRET", "low-secret"), ("LOW_TOKEN", DEFAULT_TOKEN)];
    let server = Server::start(&config, &dir.path().join("data"), &env);
    eventually(Duration::from_secs(30), || (pages() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("no import began:\n{}", server.logs()));
    // 50: a share of 5, paced 3.3 s apart.
    std::fs::write(&config, at(50)).unwrap();
    eventually(Duration::from_secs(30), || {
        (metric(&server, "sendtime_config_reloads_total{result=\"loaded\"}") == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no reload:\n{}", server.logs()));
    let before = pages();
    std::thread::sleep(Duration::from_secs(10));
    let during = pages() - before;
    server.stop();
    // At most the page in flight at the reload and three at the new pace; 17 at the old.
    assert!((1..=5).contains(&during), "{during} pages in 10 s");
    assert!(pages() < 40, "the run ended before the reload");
}

/// A connector moved to another account by a reload while its round runs is not started again
/// in a round of the new account: the two runs met at its import lock, and each fire, for the
/// days a first import lasts, counted a failed run.
#[test]
fn a_connector_moved_to_another_account_mid_round_is_not_run_twice() {
    use common::{Server, eventually, metric};
    let s = setup(Options::default());
    let slow = Injection::next(Fault::Slow(Duration::from_secs(2)));
    s.standin.inject(slow.times(u64::MAX).on(EVENTS));
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), "MOVE", "hook", &s.standin.url());
    let env = [
        ("MOVE_SECRET", "move-secret"),
        ("MOVE_TOKEN", DEFAULT_TOKEN),
    ];
    let server = Server::start(&config, &dir.path().join("data"), &env);
    eventually(Duration::from_secs(30), || {
        (!s.events_requests().is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("no import began:\n{}", server.logs()));
    let file = std::fs::read_to_string(&config).unwrap();
    let portal = format!("portal_id = {}\n", common::PORTAL_ID);
    assert_eq!(file.matches(&portal).count(), 1);
    let moved = format!("portal_id = {}\n", common::PORTAL_ID + 1);
    std::fs::write(&config, file.replace(&portal, &moved)).unwrap();
    eventually(Duration::from_secs(30), || {
        (metric(&server, "sendtime_config_reloads_total{result=\"loaded\"}") == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no reload:\n{}", server.logs()));
    // Two fires of `*/2` while the first round reads its pages 2 s apart.
    std::thread::sleep(Duration::from_secs(5));
    let failed = "sendtime_import_runs_total{connector=\"main\",result=\"error\"}";
    assert_eq!(metric(&server, failed), 0, "{}", server.logs());
    eventually(Duration::from_secs(60), || {
        (metric(
            &server,
            "sendtime_import_runs_total{connector=\"main\",result=\"ok\"}",
        ) >= 1)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the first round never ended:\n{}", server.logs()));
    server.stop();
}

/// Two connectors of one account do not import at once: each matches the events stored before
/// it began, so together they stored every event twice. The second is refused while the first
/// runs; run after it, it stores nothing again.
#[test]
fn two_connectors_of_one_account_import_one_at_a_time() {
    let s = setup(Options::default());
    let config = std::fs::read_to_string(&s.config).unwrap();
    let second = config
        .split("[[webhook]]")
        .next()
        .unwrap()
        .split("[[connector]]")
        .nth(1)
        .unwrap()
        .replace("id = \"main\"", "id = \"second\"");
    std::fs::write(
        &s.config,
        config.replace(
            "[[webhook]]",
            &format!("[[connector]]{second}[[webhook]]\nconnector = \"main\""),
        ),
    )
    .unwrap();
    // Each page answered a second late: the first run takes a while.
    s.standin.inject(
        Injection::next(Fault::Slow(Duration::from_secs(1)))
            .times(u64::MAX)
            .on(EVENTS),
    );
    let first = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--connector", "main"])
        .spawn()
        .unwrap();
    common::eventually(Duration::from_secs(20), || {
        (!s.events_requests().is_empty()).then_some(())
    })
    .expect("the first run's first page");
    let refused = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--connector", "second"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("for portal 1 is running"),
        "{}",
        text(&refused)
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    s.standin.clear_faults();
    let out = s
        .command(Some(DEFAULT_TOKEN))
        .args(["--connector", "second"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_all_once(&stored(&s.data).0, &s);
}

/// Only opens and clicks are stored: the sends and deliveries (most of an account's events)
/// are never learnt from. A recipient that is no email address is skipped, as a file's row
/// would be refused: it would be a contact no webhook names, with a key of any length.
#[test]
fn events_not_learnt_from_are_skipped() {
    let now = chrono::Utc::now().timestamp_millis();
    let event = |id: &str, recipient: &str| EmailEvent {
        id: id.into(),
        created: now - 3_600_000,
        kind: if id == "sent" { "DELIVERED" } else { "OPEN" }.into(),
        recipient: Some(recipient.into()),
        email_campaign_id: Some(7),
        filtered_event: false,
        extra: Default::default(),
    };
    let long = format!("{}@example.com", "a".repeat(300));
    let s = setup_with(
        vec![
            event("ok", " Someone@Example.com"),
            event("sent", "someone.else@example.com"),
            event("none", "undisclosed-recipients"),
            event("long", &long),
        ],
        Options::default(),
    );
    let out = s.import();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("imported 1 new event from HubSpot") && stdout.contains(", 3 skipped;"),
        "{stdout}"
    );
    let (ids, _) = stored(&s.data);
    assert_eq!(
        ids.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        ["ok"]
    );
    let contacts = Dataset::open(&s.data, "contacts")
        .unwrap()
        .read_all()
        .unwrap();
    let mut keys: Vec<String> = Vec::new();
    for (_, df) in &contacts {
        let column = df.column("key").unwrap().str().unwrap();
        keys.extend(column.iter().flatten().map(str::to_string));
    }
    assert_eq!(keys, ["someone@example.com"]);
}
