//! Holdouts and `sendtime report lift` where the truth is known: a synthetic year (`gen`), the
//! real `serve` dispatching to the HubSpot stand-in with half the receipts held out, the
//! contacts' responses drawn by `gen --respond` from their habits, then the report.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Hook, Server, TestConfig, eventually, post_signed, runtime, sendtime, set_clock, wait_ticks,
};
use sendtime::hubspot::standin::{Options, StandIn};
use serde_json::Value;

const SECRET: &str = "lift-secret";
const TOKEN: &str = "standin-token";
const ENV: &[(&str, &str)] = &[("LIFT_SECRET", SECRET), ("LIFT_TOKEN", TOKEN)];
const CONTACTS: u64 = 800;
const SEED: &str = "5";
const HOUR: i64 = 3_600_000;

fn sent(server: &Server) -> u64 {
    let status: Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    status["webhooks"][0]["counts"]["sent"].as_u64().unwrap()
}

/// A year of habits, 800 contacts posted to a NEXT_24_HOURS webhook holding out half, and a
/// day of dispatching; the data folder and the time the sends started.
fn dispatched_world(dir: &Path) -> (PathBuf, PathBuf, i64, String) {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            limit_per_10s: 1000,
            ..Options::default()
        }))
        .unwrap();
    let data = dir.join("data");
    let hooks = [&Hook {
        id: "nurture",
        kind: "NEXT_24_HOURS",
        target: "workflow_id = 101\nholdout = 0.5",
    }];
    let config = TestConfig {
        env: "LIFT",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: &format!("api_base = \"{}\"\nrequests_per_10s = 1000", standin.url()),
        hooks: &hooks,
        ..TestConfig::default()
    }
    .write(dir);
    let start = chrono::Utc::now().timestamp_millis();
    let end = start.to_string();
    let contacts = CONTACTS.to_string();
    sendtime(
        &config,
        &data,
        &[
            "gen",
            "--contacts",
            &contacts,
            "--events",
            "80000",
            "--seed",
            SEED,
            "--end",
            &end,
            "--out",
            data.to_str().unwrap(),
        ],
        ENV,
    );
    let clock = dir.join("clock");
    set_clock(&clock, start);
    let clock_env = clock.display().to_string();
    let server = Server::start(
        &config,
        &data,
        &[ENV, &[("SENDTIME_CLOCK_FILE", clock_env.as_str())]].concat(),
    );
    let http = common::http();
    for id in 1..=CONTACTS {
        let email = format!("c{id}@example.com");
        standin.add_contact(&email, id);
        let body = common::contact_body(id, &email);
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/nurture", body),
            200
        );
    }
    // A day passes, an hour every two ticks.
    for h in 1..=25 {
        set_clock(&clock, start + h * HOUR);
        wait_ticks(&server, 2);
    }
    eventually(Duration::from_secs(60), || {
        (sent(&server) == CONTACTS).then_some(())
    })
    .unwrap_or_else(|| panic!("not all sent: {}; logs:\n{}", sent(&server), server.logs()));
    server.stop();
    (config, data, start, end)
}

fn respond(config: &Path, data: &Path, end: &str, extra: &[&str]) {
    let contacts = CONTACTS.to_string();
    let mut args = vec![
        "gen",
        "--respond",
        "--contacts",
        &contacts,
        "--seed",
        SEED,
        "--end",
        end,
        "--out",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    sendtime(config, data, &args, ENV);
}

/// The report as of five days after the sends began, on a clock set there (the sends
/// began at the real now).
fn lift(config: &Path, data: &Path, start: i64) -> Value {
    serde_json::from_str(&report(config, data, start, &["--json"])).unwrap()
}

fn report(config: &Path, data: &Path, start: i64, extra: &[&str]) -> String {
    let out = run_report(config, data, start, extra, true);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `report lift` as of five days after `start`, with `extra`; `on_clock`: with "now" read from
/// a clock set there, else the real now (before that as-of).
fn run_report(
    config: &Path,
    data: &Path,
    start: i64,
    extra: &[&str],
    on_clock: bool,
) -> std::process::Output {
    let as_of = start + 5 * 24 * HOUR;
    let clock = data.with_file_name("report-clock");
    set_clock(&clock, as_of);
    let clock = clock.display().to_string();
    let as_of = as_of.to_string();
    let args = [&["report", "lift", "--as-of", &as_of], extra].concat();
    let env = match on_clock {
        true => [ENV, &[("SENDTIME_CLOCK_FILE", clock.as_str())]].concat(),
        false => ENV.to_vec(),
    };
    common::run(config, data, &args, &env)
}

fn metric<'v>(lift: &'v Value, name: &str, hours: i64) -> &'v Value {
    lift["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == name && m["window_hours"] == hours)
        .unwrap()
}

/// Where a mail that waits is buried, optimized sends are opened more, with an interval that
/// excludes zero; where send time does not matter, the intervals cover zero (as a 95 % interval
/// should: in most of several independent draws); the share held out is the one configured.
#[test]
fn lift_has_the_right_sign_where_send_time_matters_and_covers_zero_where_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, start, end) = dispatched_world(dir.path());
    let flat_worlds: Vec<PathBuf> = (0..8)
        .map(|i| {
            let copy = dir.path().join(format!("flat{i}"));
            common::copy_dir(&data, &copy);
            copy
        })
        .collect();

    respond(&config, &data, &end, &[]);
    let habit = lift(&config, &data, start);
    // Seeded: the same data gives the same report, intervals included.
    assert_eq!(lift(&config, &data, start), habit);
    // A webhook since removed from the config is reported from its receipts alone; a name
    // with neither is refused.
    let removed = dir.path().join("removed");
    std::fs::create_dir_all(&removed).unwrap();
    let removed = TestConfig {
        env: "LIFT",
        hooks: &[&Hook {
            id: "other",
            kind: "NEXT_24_HOURS",
            target: "workflow_id = 102",
        }],
        ..TestConfig::default()
    }
    .write(&removed);
    let named = |webhook: &str, on_clock| {
        let extra = ["--json", "--webhook", webhook];
        run_report(&removed, &data, start, &extra, on_clock)
    };
    // An as-of after now is refused: the windows past now would count as not engaged.
    let ahead = named("nurture", false);
    assert!(!ahead.status.success(), "{ahead:?}");
    assert!(
        String::from_utf8_lossy(&ahead.stderr).contains("from 2000 to now"),
        "{ahead:?}"
    );
    let alone: Value = serde_json::from_slice(&named("nurture", true).stdout).unwrap();
    assert_eq!(
        (&alone["optimized_sends"], &alone["holdout_sends"]),
        (&habit["optimized_sends"], &habit["holdout_sends"])
    );
    let typo = named("nurtur", true);
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("no receipts of one in the data"),
        "{typo:?}"
    );
    let (optimized, holdout) = (
        habit["optimized_sends"].as_u64().unwrap(),
        habit["holdout_sends"].as_u64().unwrap(),
    );
    // Each plan row says the share it was drawn at, so every receipt is compared (rows
    // without one are compared between the first and last held-out receipts only).
    let plans = sendtime::datasets::plan::read_kept(&data).unwrap();
    assert!(plans.iter().all(|p| p.holdout_share == Some(0.5)));
    let compared = optimized + holdout;
    assert_eq!(compared, CONTACTS);
    let share = holdout as f64 / compared as f64;
    let sd = (0.25 / compared as f64).sqrt();
    assert!(
        (share - 0.5).abs() < 4.0 * sd,
        "held out {holdout} of {compared}"
    );
    let opened = metric(&habit, "opened", 24);
    assert_eq!(opened["optimized"]["sends"], optimized, "{habit}");
    assert_eq!(opened["verdict"], "optimized_better", "{habit}");
    assert!(opened["difference"].as_f64().unwrap() > 0.0);
    assert!(opened["interval"][0].as_f64().unwrap() > 0.0);

    let mut covered = 0;
    for (i, world) in flat_worlds.iter().enumerate() {
        let draw = i.to_string();
        respond(&config, world, &end, &["--flat", "--draw", &draw]);
        let flat = lift(&config, world, start);
        let m = metric(&flat, "opened", 24);
        let (lo, hi) = (
            m["interval"][0].as_f64().unwrap(),
            m["interval"][1].as_f64().unwrap(),
        );
        if lo <= 0.0 && hi >= 0.0 {
            assert!(m["verdict"].is_null(), "{flat}");
            covered += 1;
        }
    }
    // Each covers zero with probability 0.95: five or more of eight fail once in 2,500 runs.
    assert!(
        covered >= 5,
        "only {covered} of 8 flat worlds' intervals cover zero"
    );
    let text = report(&config, &data, start, &[]);
    assert!(
        text.contains("opened within 24 h: optimized sends did better"),
        "{text}"
    );
    eprintln!("{text}");
}
