//! Workflow-action delivery end to end, through the real binary and the HubSpot stand-in: a
//! signed execution is answered BLOCK once durable, a retried one is stored once, and each
//! callback is completed (in batches) at its planned time.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{PORTAL_ID, PUBLIC_URL, Server, TestConfig, eventually, now_ms, runtime, set_clock};
use sendtime::clock::Clock;
use sendtime::datasets::outcomes::{self, Action, Status};
use sendtime::datasets::plan;
use sendtime::hubspot::standin::{Options, StandIn, WorkflowRun};
use sendtime::receiver::signature::sign_v2;

const SECRET: &str = "action-secret";
const TOKEN: &str = "standin-token";
const COMPLETE: &str = "/automation/actions/callbacks/2026-03/complete";

/// The actions tests' config: ticks every second, action `send-time`, the connector calling
/// `api_base`, with `extra` lines.
fn write_config(dir: &Path, api_base: &str, extra: &str) -> std::path::PathBuf {
    TestConfig {
        env: "ACTIONS",
        tables: "[scheduler]\ncron = \"* * * * * *\"\n\
                 [[action]]\nid = \"send-time\"\nname = \"Send at the best time\"",
        connector: &format!("api_base = \"{api_base}\"\n{extra}"),
        ..TestConfig::default()
    }
    .write(dir)
}

fn start(config: &Path, data: &Path, clock: &Path) -> Server {
    let clock = clock.display().to_string();
    Server::start(
        config,
        data,
        &[
            ("ACTIONS_SECRET", SECRET),
            ("ACTIONS_TOKEN", TOKEN),
            ("SENDTIME_CLOCK_FILE", clock.as_str()),
        ],
    )
}

/// Post HubSpot's execution of the action for contact `vid`, signed v2: (status, answer).
/// [`start`], then wait for its start-up tick.
fn start_ticked(config: &Path, data: &Path, clock: &Path) -> Server {
    let server = start(config, data, clock);
    eventually(Duration::from_secs(30), || {
        (common::ticks(&server) >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no start-up tick; logs:\n{}", server.logs()));
    server
}

fn execute(server: &Server, callback: &str, vid: u64, delivery: &str) -> (u16, serde_json::Value) {
    let path = "/actions/send-time";
    let body = serde_json::json!({
        "callbackId": callback,
        "origin": {"portalId": PORTAL_ID, "actionDefinitionId": 10646, "actionDefinitionVersion": 1},
        "context": {"source": "WORKFLOWS", "workflowId": 123456},
        "object": {"objectId": vid, "objectType": "CONTACT",
                   "properties": {"email": format!("c{vid}@example.com")}},
        "inputFields": {"delivery_type": delivery}
    })
    .to_string();
    let signature = sign_v2(
        SECRET.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}{path}"),
        body.as_bytes(),
    );
    let resp = common::http()
        .post(server.url(path))
        .header("X-HubSpot-Signature", signature)
        .header("X-HubSpot-Signature-Version", "v2")
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or_default())
}

/// A workflow reaching the action for `vid`: HubSpot holds `callback` (for as long as the
/// answer says) and posts the execution: (status, answer).
fn reach(
    standin: &StandIn,
    server: &Server,
    callback: &str,
    vid: u64,
    delivery: &str,
) -> (u16, serde_json::Value) {
    standin.add_callback(callback);
    let (status, answer) = execute(server, callback, vid, delivery);
    if status == 200 {
        standin.answered(callback, &answer);
    }
    (status, answer)
}

/// A stand-in, a data folder, a config calling the stand-in, a clock file.
struct Setup {
    rt: tokio::runtime::Runtime,
    standin: StandIn,
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
    clock: std::path::PathBuf,
}

impl Setup {
    /// The stand-in on the real clock: its holds start and end in real time, as sendtime's
    /// receipts do, whatever the dispatcher's clock file says.
    fn new() -> Setup {
        Setup::with(false)
    }

    /// The stand-in on the dispatcher's clock file too: a hold ends when that clock passes
    /// it (for tests of what happens then).
    fn holds_by_the_clock() -> Setup {
        Setup::with(true)
    }

    fn with(shared_clock: bool) -> Setup {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("clock");
        let standin = rt
            .block_on(StandIn::start(Options {
                token: TOKEN.into(),
                clock: if shared_clock {
                    Clock::File(clock.clone())
                } else {
                    Clock::System
                },
                ..Options::default()
            }))
            .unwrap();
        let data = dir.path().join("data");
        let config = write_config(dir.path(), &standin.url(), "");
        Setup {
            rt,
            standin,
            dir,
            data,
            config,
            clock,
        }
    }
}

/// Wait until callbacks `cb-0` to `cb-{n - 1}` are completed.
fn all_completed(standin: &StandIn, server: &Server, n: usize) {
    eventually(Duration::from_secs(30), || {
        (0..n)
            .all(|i| standin.completion(&format!("cb-{i}")).is_some())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not all completed; logs:\n{}", server.logs()));
}

fn complete_calls(standin: &StandIn) -> Vec<u16> {
    standin
        .log()
        .iter()
        .filter(|e| e.path == COMPLETE)
        .filter_map(|e| e.status)
        .collect()
}

#[test]
fn executions_are_blocked_then_completed_in_batches_at_their_time() {
    let Setup {
        rt: _rt,
        standin,
        dir: _dir,
        data,
        config,
        clock,
    } = Setup::new();
    // The dispatcher's clock a day behind: what is received is not due yet.
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let server = start(&config, &data, &clock);

    // 250 executions to release at once, and one for the next 24 hours.
    for i in 0..250u64 {
        let callback = format!("cb-{i}");
        let (status, answer) = reach(&standin, &server, &callback, 1000 + i, "IMMEDIATE");
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outputFields"]["hs_execution_state"], "BLOCK");
        assert_eq!(answer["outputFields"]["hs_expiration_duration"], "P1D");
    }
    let (status, answer) = reach(&standin, &server, "cb-day", 2000, "NEXT_24_HOURS");
    assert_eq!(
        (status, &answer["outputFields"]["hs_expiration_duration"]),
        (200, &"P2D".into())
    );
    // HubSpot retries an execution whose answer it lost: the same answer, nothing stored.
    let (status, again) = execute(&server, "cb-0", 1000, "IMMEDIATE");
    assert_eq!((status, &again), (200, &answer_for("P1D")));
    // A delivery type the action does not offer is refused with a message.
    let (status, refused) = execute(&server, "cb-x", 3000, "UPDATE_ONLY");
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["reason"], "unknown_delivery_type");

    let planned = eventually(Duration::from_secs(20), || {
        let rows = plan::read(&plan::dataset(&data).unwrap()).unwrap();
        (rows.len() == 251).then_some(rows)
    })
    .unwrap_or_else(|| panic!("not all planned; logs:\n{}", server.logs()));
    let day = planned
        .iter()
        .find(|p| p.callback_id.as_deref() == Some("cb-day"))
        .unwrap();
    assert!(day.due_at_ms > day.received_at_ms && day.due_at_ms <= day.received_at_ms + 86_400_000);
    // Ticks that ran whole with all of them planned (the clock a day behind) complete none.
    common::wait_ticks(&server, 2);
    assert!(complete_calls(&standin).is_empty(), "nothing is due yet");
    // The IMMEDIATE ones are due at receipt; the 24-hour one later (its hour is drawn, so this
    // is checked rather than assumed: the checks below tell the two apart by time).
    let immediate_due = planned
        .iter()
        .filter(|p| p.callback_id.as_deref() != Some("cb-day"))
        .map(|p| p.due_at_ms)
        .max()
        .unwrap();
    assert!(day.due_at_ms > immediate_due, "{day:?} due with the others");

    // The IMMEDIATE ones fall due together: 100 + 100 + 50.
    set_clock(&clock, immediate_due);
    all_completed(&standin, &server, 250);
    assert_eq!(complete_calls(&standin), [204, 204, 204]);
    // A retry HubSpot sends after the release (once its outcome is recorded): a hold now
    // would never be released.
    let success = serde_json::json!({"outputFields": {"hs_execution_state": "SUCCESS"}});
    eventually(Duration::from_secs(10), || {
        (execute(&server, "cb-1", 1001, "IMMEDIATE") == (200, success.clone())).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "a released execution's retry is held; logs:\n{}",
            server.logs()
        )
    });
    let fields = standin.completion("cb-7").unwrap();
    assert_eq!(fields["hs_execution_state"], "SUCCESS");
    assert!(
        fields["sendtime_slot"]
            .as_str()
            .unwrap()
            .ends_with(":00 UTC")
    );
    assert!(
        standin.completion("cb-day").is_none(),
        "not before its time"
    );

    // The 24-hour one at its planned minute, not before.
    set_clock(&clock, day.due_at_ms - 60_000);
    common::wait_ticks(&server, 2);
    assert!(standin.completion("cb-day").is_none());
    set_clock(&clock, day.due_at_ms);
    eventually(Duration::from_secs(20), || standin.completion("cb-day"))
        .unwrap_or_else(|| panic!("cb-day not completed; logs:\n{}", server.logs()));
    server.stop();

    let received = sendtime::datasets::inbox::recover(&data).unwrap();
    assert_eq!(received.len(), 251, "the retries stored nothing");
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    let completed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == Status::Completed)
        .collect();
    assert_eq!(completed.len(), 251, "one final row per receipt");
    assert!(completed.iter().all(|r| r.action == Action::Complete));
    let mut targets: Vec<&str> = completed.iter().map(|r| r.target.as_str()).collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), 251, "each callback once");
}

/// In `dry_run` nothing would release a hold, so an execution is answered SUCCESS at once (the
/// contact goes on, as without sendtime), and its plan is recorded as a dry run with no call,
/// even when the connector calls HubSpot by the time it is due. Before, it was answered BLOCK:
/// the real contact waited until HubSpot's hold expired.
#[test]
fn in_dry_run_an_execution_is_not_held() {
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        clock,
        ..
    } = Setup::new();
    let write = |dry_run: &str| write_config(dir.path(), &standin.url(), dry_run);
    // The dispatcher's clock a day behind: received, not yet due.
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let config = write("dry_run = true");
    let server = start(&config, &data, &clock);
    standin.add_callback("cb-dry");
    let success = serde_json::json!({"outputFields": {"hs_execution_state": "SUCCESS"}});
    assert_eq!(
        execute(&server, "cb-dry", 1000, "IMMEDIATE"),
        (200, success.clone())
    );
    // HubSpot's retry gets the same answer.
    assert_eq!(
        execute(&server, "cb-dry", 1000, "IMMEDIATE"),
        (200, success)
    );
    server.stop();
    // Live by the time it is due: its contact went on at receipt, so it is never completed.
    let config = write("");
    let server = start(&config, &data, &clock);
    set_clock(&clock, t0 + 60_000);
    let recorded = eventually(Duration::from_secs(20), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).ok()?;
        rows.into_iter().find(|r| r.status == Status::DryRun)
    })
    .unwrap_or_else(|| panic!("no dry-run outcome; logs:\n{}", server.logs()));
    server.stop();
    assert_eq!(recorded.target, "cb-dry");
    assert!(
        recorded
            .message
            .as_deref()
            .is_some_and(|m| m.contains("never completed")),
        "{recorded:?}"
    );
    assert!(complete_calls(&standin).is_empty());
    assert!(standin.completion("cb-dry").is_none());
}

/// HubSpot's retry of an execution still waiting (its answer was lost) gets the answer the
/// first post got, whatever the config says by then: SUCCESS for one taken in dry run (its
/// contact went on, and its receipt is never completed), the same hold for one held. Before,
/// the retry was answered by the config in force: a dry run turned off made it BLOCK a
/// contact nothing would release, and a shorter window a hold shorter than the plan's.
#[test]
fn a_retry_of_a_waiting_execution_gets_the_first_answer() {
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        clock,
        ..
    } = Setup::new();
    let config = |window: &str, connector: &str| {
        TestConfig {
            env: "ACTIONS",
            tables: &format!(
                "[scheduler]\ncron = \"* * * * * *\"\n\
                 [[action]]\nid = \"send-time\"\nwindow = \"{window}\""
            ),
            connector: &format!("api_base = \"{}\"\n{connector}", standin.url()),
            ..TestConfig::default()
        }
        .write(dir.path())
    };
    // The dispatcher's clock a day behind: received, not due for days.
    set_clock(&clock, now_ms() - 86_400_000);
    let server = start(&config("7d", "dry_run = true"), &data, &clock);
    let success = serde_json::json!({"outputFields": {"hs_execution_state": "SUCCESS"}});
    assert_eq!(
        execute(&server, "cb-dry", 1000, "NEXT_WEEK"),
        (200, success.clone())
    );
    server.stop();
    let server = start(&config("7d", ""), &data, &clock);
    let (status, held) = reach(&standin, &server, "cb-held", 1001, "NEXT_WEEK");
    assert_eq!(status, 200);
    assert_eq!(held["outputFields"]["hs_expiration_duration"], "P8D");
    server.stop();
    // Live, with a window of two hours: the retries get what the first posts got.
    let server = start(&config("2h", ""), &data, &clock);
    assert_eq!(
        execute(&server, "cb-dry", 1000, "NEXT_WEEK"),
        (200, success)
    );
    assert_eq!(execute(&server, "cb-held", 1001, "NEXT_WEEK"), (200, held));
    // A new execution gets the window in force.
    let (_, fresh) = execute(&server, "cb-new", 1002, "NEXT_WEEK");
    assert_eq!(fresh["outputFields"]["hs_expiration_duration"], "P1DT2H");
    server.stop();
    // A window of 90 minutes: HubSpot is asked for whole hours (26), and the receipt keeps
    // the hold asked for, not 25 and a half hours (a contact HubSpot still held was taken
    // for one whose hold had ended; an audit).
    let server = start(&config("90m", ""), &data, &clock);
    let (_, odd) = execute(&server, "cb-odd", 1003, "NEXT_24_HOURS");
    assert_eq!(odd["outputFields"]["hs_expiration_duration"], "P1DT2H");
    server.stop();
    let received = sendtime::datasets::inbox::recover(&data).unwrap();
    assert_eq!(
        received.len(),
        4,
        "the retries stored nothing: {received:?}"
    );
    let odd = (received.iter())
        .find(|r| r.callback_id.as_deref() == Some("cb-odd"))
        .unwrap();
    assert_eq!(odd.hold_ends_ms, Some(odd.received_at_ms + 26 * 3_600_000));
}

/// A contact held (answered BLOCK) while the connector was live waits through a dry run,
/// which releases nothing, and is released once the connector is live again. Before, it was
/// recorded as a dry run when due, and never released: its contact waited at HubSpot until
/// the hold expired.
#[test]
fn a_contact_held_before_a_dry_run_is_released_once_live_again() {
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        clock,
        ..
    } = Setup::new();
    let write = |dry_run: &str| write_config(dir.path(), &standin.url(), dry_run);
    // The dispatcher's clock a day behind: received, not yet due.
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let server = start(&write(""), &data, &clock);
    let (status, answer) = reach(&standin, &server, "cb-held", 1001, "NEXT_24_HOURS");
    assert_eq!(status, 200);
    assert_eq!(answer["outputFields"]["hs_execution_state"], "BLOCK");
    server.stop();
    // Due in dry run (its hold lasts two days): a few ticks, and nothing is recorded or
    // called.
    let server = start(&write("dry_run = true"), &data, &clock);
    set_clock(&clock, t0 + 36 * 3_600_000);
    common::wait_ticks(&server, 3);
    server.stop();
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert!(rows.is_empty(), "{rows:?}");
    assert!(complete_calls(&standin).is_empty());
    // Live again, within its hold: released.
    let server = start(&write(""), &data, &clock);
    set_clock(&clock, t0 + 37 * 3_600_000);
    eventually(Duration::from_secs(20), || standin.completion("cb-held"))
        .unwrap_or_else(|| panic!("not completed; logs:\n{}", server.logs()));
    server.stop();
}

/// HubSpot holds an action's contact for days, so a callback is tried through an outage of
/// any number of failures until that hold ends. Before, it failed for good after 12 failures
/// in a row (about 18 minutes of 5xx) with most of its day left, and its contact waited in the
/// workflow until HubSpot's hold expired.
#[test]
fn a_callback_is_tried_through_an_outage_until_its_hold_ends() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let Setup {
        rt: _rt,
        standin,
        dir: _dir,
        data,
        config,
        clock,
    } = Setup::new();
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start(&config, &data, &clock);
    standin.inject(
        Injection::next(Fault::Status {
            status: 502,
            message: "Bad Gateway".into(),
        })
        .times(14)
        .on(COMPLETE),
    );
    let (status, _) = reach(&standin, &server, "cb-0", 1000, "IMMEDIATE");
    assert_eq!(status, 200);
    // Six minutes of the dispatcher's time a second: each retry's wait (at most five minutes)
    // is over by the next step, and the day's hold is four minutes of steps away.
    let mut at = t0;
    eventually(Duration::from_secs(120), || {
        at += 360_000;
        set_clock(&clock, at);
        std::thread::sleep(Duration::from_millis(900));
        standin.completion("cb-0")
    })
    .unwrap_or_else(|| panic!("cb-0 not completed; logs:\n{}", server.logs()));
    server.stop();
    assert_eq!(complete_calls(&standin).len(), 15);
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert!(rows.iter().all(|r| r.status != Status::Failed), "{rows:?}");
    assert!(rows.iter().any(|r| r.status == Status::Completed));
}

/// A dispatcher down past its callbacks' holds finds HubSpot refusing them all: they fail on
/// the batch's one call, not split out one by one (199 calls for 100, outside the budget).
#[test]
fn callbacks_past_their_hold_fail_without_splitting() {
    let Setup {
        rt: _rt,
        standin,
        dir: _dir,
        data,
        config,
        clock,
    } = Setup::holds_by_the_clock();
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let server = start(&config, &data, &clock);
    for i in 0..100u64 {
        let callback = format!("cb-{i}");
        assert_eq!(
            reach(&standin, &server, &callback, 1000 + i, "IMMEDIATE").0,
            200
        );
    }
    eventually(Duration::from_secs(20), || {
        let rows = plan::read(&plan::dataset(&data).unwrap()).ok()?;
        (rows.len() == 100).then_some(())
    })
    .unwrap_or_else(|| panic!("not all planned; logs:\n{}", server.logs()));
    // Two days on: every hold (a day) has ended, at HubSpot too.
    set_clock(&clock, t0 + 2 * 86_400_000);
    let rows = eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).ok()?;
        (rows.iter().filter(|r| r.status == Status::Failed).count() == 100).then_some(rows)
    })
    .unwrap_or_else(|| panic!("not all failed; logs:\n{}", server.logs()));
    server.stop();
    assert_eq!(complete_calls(&standin), [400]);
    let failed = rows.iter().find(|r| r.status == Status::Failed).unwrap();
    assert!(
        failed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("(expired)")),
        "{failed:?}"
    );
}

/// `s`'s dispatcher a day behind, and callback `cb-0` (IMMEDIATE) received and planned: the
/// server and when HubSpot's hold on its contact ends.
fn one_held_callback(s: &Setup) -> (Server, i64) {
    set_clock(&s.clock, now_ms() - 86_400_000);
    let server = start(&s.config, &s.data, &s.clock);
    assert_eq!(reach(&s.standin, &server, "cb-0", 1000, "IMMEDIATE").0, 200);
    eventually(Duration::from_secs(20), || {
        let rows = plan::read(&plan::dataset(&s.data).unwrap()).ok()?;
        (rows.len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    let received = sendtime::datasets::inbox::recover(&s.data).unwrap();
    (server, received[0].hold_ends_ms.unwrap())
}

/// The first failed outcome row, once there is one.
fn first_failed(server: &Server, data: &Path) -> outcomes::OutcomeRow {
    eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(data).unwrap()).ok()?;
        rows.into_iter().find(|r| r.status == Status::Failed)
    })
    .unwrap_or_else(|| panic!("not failed; logs:\n{}", server.logs()))
}

/// A callback whose last try before its hold ends meets a wait (here the day's limit) fails
/// then, its contact still held, rather than being tried again once HubSpot has moved the
/// contact on (its failed row a day late).
#[test]
fn a_callback_whose_last_try_meets_a_wait_fails_then() {
    use sendtime::hubspot::RatePolicy;
    use sendtime::hubspot::standin::{Fault, Injection};
    let s = Setup::holds_by_the_clock();
    let (server, hold_end) = one_held_callback(&s);
    let Setup {
        standin,
        data,
        clock,
        ..
    } = &s;
    standin.inject(
        Injection::next(Fault::RateLimited {
            policy: RatePolicy::Daily,
            retry_after: None,
        })
        .on(COMPLETE),
    );
    // Half a minute before the hold ends: the one try left.
    set_clock(clock, hold_end - 30_000);
    let failed = first_failed(&server, data);
    server.stop();
    assert_eq!(complete_calls(standin), [429]);
    assert_eq!(failed.http_status, Some(429), "{failed:?}");
    assert!(failed.at_ms < hold_end, "{failed:?}");
    assert!(
        (failed.message.as_deref()).is_some_and(|m| m.contains("last try before")),
        "{failed:?}"
    );
}

/// A callback whose connector is paused past its hold (here five minutes for a refused token,
/// met three minutes before the hold ends) fails at its last try, its contact still held,
/// without a call: before, it waited out the pause and was refused once the hold had ended.
#[test]
fn a_callback_whose_hold_ends_during_a_pause_fails_at_its_last_try() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let s = Setup::holds_by_the_clock();
    let (server, hold_end) = one_held_callback(&s);
    let Setup {
        standin,
        data,
        clock,
        ..
    } = &s;
    standin.inject(
        Injection::next(Fault::Status {
            status: 401,
            message: "Authentication credentials not found.".into(),
        })
        .on(COMPLETE),
    );
    set_clock(clock, hold_end - 3 * 60_000);
    eventually(Duration::from_secs(20), || {
        (complete_calls(standin) == [401]).then_some(())
    })
    .unwrap_or_else(|| panic!("not tried; logs:\n{}", server.logs()));
    std::thread::sleep(Duration::from_secs(3));
    // Its last try, a minute before the hold ends: the pause lasts two minutes past it.
    set_clock(clock, hold_end - 50_000);
    let failed = first_failed(&server, data);
    server.stop();
    assert_eq!(complete_calls(standin), [401]);
    assert!(failed.at_ms < hold_end, "{failed:?}");
    assert!(
        (failed.message.as_deref()).is_some_and(|m| m.contains("the connector is paused until")),
        "{failed:?}"
    );
}

/// An operator's pause of an action holds its contacts at most until HubSpot's hold on each
/// ends (the README says so): HubSpot then moves the contact on, and it is recorded failed
/// then, without a call. It was sent after the resume, refused and recorded failed, days late.
#[test]
fn a_paused_actions_contact_fails_when_its_hold_ends_without_a_call() {
    let Setup {
        rt: _rt,
        standin,
        dir: _dir,
        data,
        config,
        clock,
    } = Setup::holds_by_the_clock();
    let t0 = now_ms();
    set_clock(&clock, t0);
    let env = [("ACTIONS_SECRET", SECRET), ("ACTIONS_TOKEN", TOKEN)];
    let server = start(&config, &data, &clock);
    // A pause of its connector says the same of the connector's actions (it said it of an
    // action's own pause alone).
    let bound = "at most until HubSpot's hold on each ends";
    let paused = common::run(&config, &data, &["pause", "main", "--connector"], &env);
    assert!(paused.status.success(), "{paused:?}");
    assert!(
        String::from_utf8_lossy(&paused.stdout).contains(bound),
        "{paused:?}"
    );
    let resumed = common::run(&config, &data, &["resume", "main", "--connector"], &env);
    assert!(resumed.status.success(), "{resumed:?}");
    let paused = common::run(&config, &data, &["pause", "send-time"], &env);
    assert!(paused.status.success(), "{paused:?}");
    assert!(
        String::from_utf8_lossy(&paused.stdout).contains(bound),
        "{paused:?}"
    );
    let (status, answer) = reach(&standin, &server, "cb-late", 1000, "NEXT_24_HOURS");
    assert_eq!(
        (status, &answer["outputFields"]["hs_expiration_duration"]),
        (200, &"P2D".into())
    );
    // Planned, `explain` says what becomes of it (it said "sent once resumed").
    eventually(Duration::from_secs(20), || {
        (plan::read(&plan::dataset(&data).unwrap()).unwrap().len() == 1).then_some(())
    })
    .expect("planned");
    let explained = common::run(&config, &data, &["explain", "c1000@example.com"], &env);
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(
        text.contains("held by a pause (sendtime pause): sent once resumed, or failed when HubSpot's hold ends ("),
        "{text}"
    );
    // Three days on, still paused: the hold (two days) has ended; failed, nothing called.
    set_clock(&clock, t0 + 3 * 86_400_000);
    let failed = eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).ok()?;
        rows.into_iter().find(|r| r.status == Status::Failed)
    })
    .unwrap_or_else(|| panic!("not recorded; logs:\n{}", server.logs()));
    assert_eq!(
        (failed.target.as_str(), failed.http_status),
        ("cb-late", None)
    );
    assert!(
        failed.message.as_deref().is_some_and(
            |m| m.contains("an operator's pause holds it; HubSpot's hold on the contact ended")
        ),
        "{failed:?}"
    );
    let resumed = common::run(&config, &data, &["resume", "send-time"], &env);
    assert!(resumed.status.success(), "{resumed:?}");
    set_clock(&clock, t0 + 3 * 86_400_000 + 2 * 60_000);
    common::wait_ticks(&server, 3);
    server.stop();
    assert!(complete_calls(&standin).is_empty());
    assert!(standin.completion("cb-late").is_none());
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert_eq!(
        rows.iter().filter(|r| r.status.is_final()).count(),
        1,
        "{rows:?}"
    );
}

/// A failure of sendtime's own that a retry may get past (here no client secret) is answered
/// 429 with a Retry-After on the action's route: HubSpot's rule for workflow extensions
/// retries a 429 only and sends the contact on after any other status (it was a 503, which a
/// workflow webhook gets, retried for three days).
#[test]
fn an_execution_refused_for_our_failure_is_a_429() {
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        ..
    } = Setup::new();
    let config = held_config(dir.path(), &standin.url(), "24h", "dry_run = true");
    let server = Server::start(&config, &data, &[]);
    let (status, answer) = execute(&server, "cb-nosecret", 1, "IMMEDIATE");
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["reason"], "no_secret");
    server.stop();
    // A signature that does not match (the secret configured is not the app's) may be ours
    // to fix too: retried (it was a 401, after which HubSpot sends the contact on).
    let server = Server::start(&config, &data, &[("ACTIONS_SECRET", "another-apps-secret")]);
    let (status, answer) = execute(&server, "cb-mismatch", 2, "IMMEDIATE");
    assert_eq!(
        (status, answer["reason"].as_str()),
        (429, Some("signature_mismatch")),
        "{answer}"
    );
}

/// A webhook made an action of the same id: the action's executions (signed v2, as HubSpot's
/// action guide says) are taken, though the webhook took v3 posts. Both kept their signature
/// floor under the bare id, so every execution was refused as a downgrade (401), and HubSpot
/// sends the contact on after any status but 429.
#[test]
fn a_webhook_made_an_action_of_its_id_takes_its_executions() {
    use sendtime::receiver::signature::sign_v3;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("ACTIONS_SECRET", SECRET), ("ACTIONS_TOKEN", TOKEN)];
    let as_webhook = TestConfig {
        env: "ACTIONS",
        tables: "[[webhook]]\nid = \"send-time\"\ntype = \"IMMEDIATE\"\nworkflow_id = 1",
        connector: "dry_run = true",
        ..TestConfig::default()
    }
    .write(dir.path());
    let server = Server::start(&as_webhook, &data, &env);
    let (path, body) = (
        "/hooks/send-time",
        common::contact_body(1, "c1@example.com"),
    );
    let ts = now_ms();
    let signature = sign_v3(
        SECRET.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}{path}"),
        body.as_bytes(),
        ts,
    );
    let taken = common::http()
        .post(server.url(path))
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", ts.to_string())
        .body(body)
        .send()
        .unwrap();
    assert_eq!(taken.status().as_u16(), 200);
    server.stop();
    let as_action = write_config(dir.path(), "http://127.0.0.1:9", "dry_run = true");
    let server = Server::start(&as_action, &data, &env);
    let (status, answer) = execute(&server, "cb-namesake", 2, "IMMEDIATE");
    assert_eq!(status, 200, "{answer}");
}

/// The hold tests' config in `dir`: action `send-time` with `window`, no tick but the one at
/// start-up, the connector calling `api_base` (and `connector`'s lines).
fn held_config(dir: &Path, api_base: &str, window: &str, connector: &str) -> PathBuf {
    TestConfig {
        env: "ACTIONS",
        tables: &format!(
            "[scheduler]\ncron = \"0 0 0 1 1 *\"\n\
             [[action]]\nid = \"send-time\"\nname = \"Send at the best time\"\n\
             window = \"{window}\""
        ),
        connector: &format!("api_base = \"{api_base}\"\n{connector}"),
        ..TestConfig::default()
    }
    .write(dir)
}

/// [`Setup::new`] with [`held_config`] (a 7-day window) as its config, once `serve` has
/// answered an execution under `callback` BLOCK (HubSpot holds its contact 8 days) and
/// stopped: the receipt is in the inbox, unplanned.
fn a_blocked_execution(callback: &str) -> Setup {
    let mut setup = Setup::new();
    setup.config = held_config(setup.dir.path(), &setup.standin.url(), "7d", "");
    set_clock(&setup.clock, now_ms());
    let server = start_ticked(&setup.config, &setup.data, &setup.clock);
    let (status, answer) = reach(&setup.standin, &server, callback, 1000, "NEXT_24_HOURS");
    assert_eq!(
        (status, &answer["outputFields"]["hs_execution_state"]),
        (200, &"BLOCK".into())
    );
    server.stop();
    setup
}

/// `ms` as RFC 3339, for `tick --now`.
fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}

/// A contact is released within the hold its execution was answered with, even when the
/// action's window grows before it is planned (a reload, or receipts planned after a restart):
/// HubSpot moves the contact on when that hold ends. Here the window is 6 hours at receipt
/// (held 30 hours) and 7 days when planned, and the contact reads email mostly in one hour of
/// the week about three days on, and less in one 20 hours on. After a restart, the hold is
/// still the one asked for: in dry run, a held contact waits for the connector to go live until
/// its hold ends, and is then recorded as a dry run.
#[test]
fn a_window_grown_before_planning_keeps_to_the_hold_answered() {
    const HOUR: i64 = 3_600_000;
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        config: _,
        clock,
    } = Setup::new();
    let env = [("ACTIONS_SECRET", SECRET), ("ACTIONS_TOKEN", TOKEN)];
    // No tick but the one at start-up: planning waits for `sendtime tick` below.
    let config =
        |window: &str, connector: &str| held_config(dir.path(), &standin.url(), window, connector);
    // Receipts are stamped by the real clock; the stand-in's hold follows the clock file.
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start_ticked(&config("6h", ""), &data, &clock);
    let (status, answer) = reach(&standin, &server, "cb-grown", 1000, "NEXT_24_HOURS");
    assert_eq!(
        (status, &answer["outputFields"]["hs_expiration_duration"]),
        (200, &"P1DT6H".into())
    );
    server.stop();

    // Opens 69 hours on in each of the eight weeks before, and 20 hours on in three.
    let mut csv = String::from("email,opened\n");
    for (hours, weeks) in [(69, 8), (20, 3)] {
        for week in 1..=weeks {
            let opened = t0 + hours * HOUR - week * 7 * 24 * HOUR;
            csv.push_str(&format!("c1000@example.com,{opened}\n"));
        }
    }
    let opens = dir.path().join("opens.csv");
    std::fs::write(&opens, csv).unwrap();
    let config_grown = config("7d", "");
    let opens = opens.display().to_string();
    let import = [
        "import",
        "csv",
        &opens,
        "--contact",
        "email",
        "--time",
        "opened",
    ];
    common::sendtime(&config_grown, &data, &import, &env);
    let received = sendtime::datasets::inbox::recover(&data).unwrap()[0].received_at_ms;
    let planned_at = at(received + 2 * 60_000);
    // Planned in dry run: the contact may be due at once (the hour it is planned in depends
    // on the hour of day the test runs), and a held contact waits in dry run.
    let config_dry = config("7d", "dry_run = true");
    common::sendtime(&config_dry, &data, &["tick", "--now", &planned_at], &env);

    let rows = plan::read(&plan::dataset(&data).unwrap()).unwrap();
    let [row] = rows.as_slice() else {
        panic!("{rows:?}")
    };
    assert_eq!(row.hold_ends_ms, Some(received + 30 * HOUR), "{row:?}");
    assert!(
        (received..=received + 6 * HOUR).contains(&row.due_at_ms),
        "planned past the window its hold was asked for: {row:?}"
    );
    // `explain` says until when HubSpot holds the contact.
    let explained = common::sendtime(&config_grown, &data, &["explain", "1000"], &env);
    let held = sendtime::time::format_minute(received + 30 * HOUR);
    assert!(
        explained.contains(&format!("(HubSpot holds the contact until {held})")),
        "{explained}"
    );
    // In dry run an hour past its hold (the queue read back from the plan): recorded.
    let late = at(received + 31 * HOUR);
    common::sendtime(&config_dry, &data, &["tick", "--now", &late], &env);
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::DryRun],
        "{rows:?}"
    );
    assert!(standin.log().is_empty(), "{:?}", standin.log());
}

/// A window that shrinks after receipt does not shorten the hold HubSpot keeps: a retry of
/// the execution gets the first answer, so the contact is held as first asked (here 8 days, not
/// the 30 hours the new window gives). It was taken to be released by the shorter: in dry run
/// it was recorded as a dry run on day two while HubSpot still held it.
#[test]
fn a_window_shrunk_after_receipt_keeps_the_hold_answered() {
    const HOUR: i64 = 3_600_000;
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        config: _,
        clock,
    } = Setup::new();
    let env = [("ACTIONS_SECRET", SECRET), ("ACTIONS_TOKEN", TOKEN)];
    let config =
        |window: &str, connector: &str| held_config(dir.path(), &standin.url(), window, connector);
    set_clock(&clock, now_ms());
    let server = start_ticked(&config("7d", ""), &data, &clock);
    let (status, answer) = reach(&standin, &server, "cb-shrunk", 1000, "NEXT_24_HOURS");
    assert_eq!(
        (status, &answer["outputFields"]["hs_expiration_duration"]),
        (200, &"P8D".into())
    );
    server.stop();
    let received = sendtime::datasets::inbox::recover(&data).unwrap()[0].received_at_ms;
    // Six hours now, and in dry run: a held contact waits for the connector until its hold
    // ends, then is recorded as a dry run.
    let shrunk = config("6h", "dry_run = true");
    let outcomes = || outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    common::sendtime(
        &shrunk,
        &data,
        &["tick", "--now", &at(received + 3 * 24 * HOUR)],
        &env,
    );
    assert_eq!(outcomes(), [], "released by the new window's hold");
    common::sendtime(
        &shrunk,
        &data,
        &["tick", "--now", &at(received + 8 * 24 * HOUR + HOUR)],
        &env,
    );
    assert_eq!(
        outcomes().iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::DryRun]
    );
    assert!(standin.log().iter().all(|e| !e.path.contains("callbacks")));
}

/// A workflow action's callbacks are completed whatever the daily budget, as they are planned
/// whatever the capacity: HubSpot's hold on their contacts runs out. Here a budget of one call
/// a day, and three callbacks that each take a call.
#[test]
fn callbacks_are_completed_past_a_spent_daily_budget() {
    let Setup {
        rt: _rt,
        standin,
        dir,
        data,
        clock,
        ..
    } = Setup::new();
    let config = TestConfig {
        env: "ACTIONS",
        tables: "[scheduler]\ncron = \"* * * * * *\"\n\
                 [[action]]\nid = \"send-time\"\nname = \"Send at the best time\"",
        connector: &format!(
            "api_base = \"{}\"\ndaily_budget = 1\ntime_zone = \"UTC\"\ncallback_batch_size = 1",
            standin.url()
        ),
        ..TestConfig::default()
    }
    .write(dir.path());
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let server = start(&config, &data, &clock);
    for i in 0..3u64 {
        let callback = format!("cb-{i}");
        assert_eq!(
            reach(&standin, &server, &callback, 1000 + i, "IMMEDIATE").0,
            200
        );
    }
    // Past the budget, planning keeps each by its hold's end: all are due before it.
    set_clock(&clock, t0 + 86_400_000 - 30_000);
    all_completed(&standin, &server, 3);
    assert_eq!(complete_calls(&standin), [204, 204, 204]);
}

fn answer_for(expiration: &str) -> serde_json::Value {
    serde_json::json!({"outputFields": {
        "hs_execution_state": "BLOCK",
        "hs_expiration_duration": expiration,
    }})
}

/// A callback HubSpot no longer takes fails alone: its batch is split and the others are
/// completed.
#[test]
fn a_callback_hubspot_refuses_fails_alone() {
    let Setup {
        rt,
        standin,
        dir: _dir,
        data,
        config,
        clock,
    } = Setup::new();
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let server = start(&config, &data, &clock);
    // The stand-in plays a workflow that reaches the action for five contacts.
    let action_url = format!("{PUBLIC_URL}/actions/send-time");
    let send_to = server.url("/actions/send-time");
    let run = WorkflowRun {
        action_url: &action_url,
        send_to: &send_to,
        client_secret: SECRET,
        portal_id: PORTAL_ID,
        workflow_id: 77,
        delivery_type: "IMMEDIATE",
    };
    let emails: Vec<String> = (0..5).map(|i| format!("w{i}@example.com")).collect();
    let contacts: Vec<(u64, &str)> = (0..5)
        .map(|i| (10 + i as u64, emails[i].as_str()))
        .collect();
    let mut played = rt.block_on(standin.play_workflow(&run, &contacts)).unwrap();
    // A contact the workflow reaches again is another execution, held apart (not a repeat).
    played.extend(
        rt.block_on(standin.play_workflow(&run, &contacts[..1]))
            .unwrap(),
    );
    assert_ne!(played[0].0, played[5].0);
    for (_, answer) in &played {
        assert_eq!(answer["outputFields"]["hs_execution_state"], "BLOCK");
    }
    // A callback HubSpot does not hold (never registered): refused as not found.
    assert_eq!(execute(&server, "gone", 99, "IMMEDIATE").0, 200);
    eventually(Duration::from_secs(20), || {
        (plan::read(&plan::dataset(&data).unwrap()).unwrap().len() == 7).then_some(())
    })
    .expect("planned");
    set_clock(&clock, t0 + 60_000);
    let rows = eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
        let finals = rows.iter().filter(|r| r.status.is_final()).count();
        (finals == 7).then_some(rows)
    })
    .unwrap_or_else(|| panic!("not all final; logs:\n{}", server.logs()));
    for (callback, _) in &played {
        assert!(standin.completion(callback).is_some(), "{callback}");
    }
    let gone = rows
        .iter()
        .find(|r| r.target == "gone" && r.status.is_final())
        .unwrap();
    assert_eq!(gone.status, Status::Failed);
    assert_eq!(gone.http_status, Some(400));
    assert!(
        gone.message
            .as_deref()
            .unwrap()
            .contains("gone (not found)"),
        "{gone:?}"
    );
    server.stop();
}

/// The workflow editor's delivery options say the action's `window`, as planning uses it.
#[test]
fn the_editor_labels_follow_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = held_config(dir.path(), "http://127.0.0.1:9", "3d", "");
    let defined = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(&config)
        .args(["hubspot", "action-definition"])
        .output()
        .unwrap();
    assert!(defined.status.success());
    let body: serde_json::Value = serde_json::from_slice(&defined.stdout).unwrap();
    let labels: Vec<(&str, &str)> = body["inputFields"][0]["typeDefinition"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["value"].as_str().unwrap(), o["label"].as_str().unwrap()))
        .collect();
    assert_eq!(
        labels,
        [
            ("NEXT_24_HOURS", "Best time in the next 3 days"),
            (
                "NEXT_WEEK_FREQUENCY_OPTIMIZED",
                "Best time in the next 24 hours; the next 3 days for passive or inactive contacts"
            ),
            ("NEXT_WEEK", "Best time in the next 3 days"),
            ("IMMEDIATE", "Right away (no wait)"),
        ]
    );
}

/// `validate`, `/status` and `hubspot action-definition` name the action's URL.
#[test]
fn the_action_url_is_shown_where_it_is_wired() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let url = format!("{PUBLIC_URL}/actions/send-time");
    let validated = run(&["validate"]);
    assert!(validated.status.success());
    let stdout = String::from_utf8_lossy(&validated.stdout);
    assert!(stdout.contains(&format!("Action URL:   {url}")), "{stdout}");
    let defined = run(&["hubspot", "action-definition"]);
    assert!(
        defined.status.success(),
        "{}",
        String::from_utf8_lossy(&defined.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&defined.stdout).unwrap();
    assert_eq!(body["actionUrl"], url.as_str());
    assert_eq!(body["objectTypes"], serde_json::json!(["CONTACT"]));
    let field = &body["inputFields"][0]["typeDefinition"];
    assert_eq!(field["name"], "delivery_type");
    let values: Vec<&str> = field["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        values,
        [
            "NEXT_24_HOURS",
            "NEXT_WEEK_FREQUENCY_OPTIMIZED",
            "NEXT_WEEK",
            "IMMEDIATE"
        ]
    );
    assert_eq!(body["labels"]["en"]["actionName"], "Send at the best time");
    let unknown = run(&["hubspot", "action-definition", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no [[action]] \"nope\""));

    let data = dir.path().join("data");
    let clock = dir.path().join("clock");
    let server = start(&config, &data, &clock);
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["actions"][0]["url"], url.as_str());
    assert_eq!(status["webhooks"], serde_json::json!([]));
    server.stop();
}

/// kill -9 while a batch completion is unanswered (HubSpot did complete it): after the
/// restart every callback is completed again, HubSpot's refusal of the second completion is
/// taken as done, and each receipt ends with one final outcome.
#[test]
fn kill_9_during_an_unanswered_completion_ends_with_one_final_outcome_each() {
    completion_killed_unanswered(false);
}

/// As above, but a proxy's HTML page answers the second completion's 400: it says nothing of
/// the callback, so none is taken as completed (each was: an earlier version recorded them
/// done on any 400), and each ends failed, saying it may have been.
#[test]
fn a_proxy_s_page_refusing_a_completion_in_doubt_is_not_taken_as_done() {
    completion_killed_unanswered(true);
}

fn completion_killed_unanswered(then_a_page: bool) {
    use sendtime::hubspot::standin::{Fault, Injection};
    let Setup {
        rt: _rt,
        standin,
        dir: _dir,
        data,
        config,
        clock,
    } = Setup::new();
    // The first completion is carried out, and answered only after a minute.
    standin.inject(Injection::next(Fault::Slow(Duration::from_secs(60))).on(COMPLETE));
    let t0 = now_ms();
    set_clock(&clock, t0 - 86_400_000);
    let mut server = start(&config, &data, &clock);
    let callbacks = ["cb-a", "cb-b", "cb-c"];
    for (i, cb) in callbacks.iter().enumerate() {
        assert_eq!(
            reach(&standin, &server, cb, 500 + i as u64, "IMMEDIATE").0,
            200
        );
    }
    eventually(Duration::from_secs(20), || {
        (plan::read(&plan::dataset(&data).unwrap()).unwrap().len() == 3).then_some(())
    })
    .expect("planned");
    set_clock(&clock, t0 + 60_000);
    eventually(Duration::from_secs(20), || {
        let attempting = outcomes::read(&outcomes::dataset(&data).unwrap())
            .unwrap()
            .iter()
            .filter(|r| r.status == Status::Attempting)
            .count();
        (attempting == 3 && callbacks.iter().all(|cb| standin.completion(cb).is_some()))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the completion was not sent; logs:\n{}", server.logs()));
    server.child.kill().unwrap(); // SIGKILL, the answer still on its way
    server.child.wait().unwrap();
    drop(server);
    if then_a_page {
        standin.inject(Injection::next(Fault::Html(400)).times(100).on(COMPLETE));
    }

    let server = start(&config, &data, &clock);
    let rows = eventually(Duration::from_secs(30), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
        (rows.iter().filter(|r| r.status.is_final()).count() >= 3).then_some(rows)
    })
    .unwrap_or_else(|| panic!("not completed after the restart; logs:\n{}", server.logs()));
    server.stop();
    let (status, says) = match then_a_page {
        false => (Status::Completed, "had completed it"),
        true => (Status::Failed, "may have completed it"),
    };
    for cb in callbacks {
        let finals: Vec<_> = rows
            .iter()
            .filter(|r| r.target == cb && r.status.is_final())
            .collect();
        assert_eq!(finals.len(), 1, "{cb}: {finals:?}");
        assert_eq!(finals[0].status, status, "{:?}", finals[0]);
        assert!(
            finals[0]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(says),
            "{:?}",
            finals[0]
        );
    }
}

/// While planning fails on every tick, an action's contact is sent in its hold's last hour,
/// with a plan row saying so: it waited BLOCKed, unreleased, until HubSpot moved it on
/// without us.
#[test]
fn a_contact_is_released_unplanned_before_its_hold_ends_while_planning_fails() {
    const HOUR: i64 = 3_600_000;
    let world = a_blocked_execution("cb-unplanned");
    let (standin, data, config) = (&world.standin, &world.data, &world.config);
    let env = [("ACTIONS_SECRET", SECRET), ("ACTIONS_TOKEN", TOKEN)];
    let received = sendtime::datasets::inbox::recover(data).unwrap()[0].received_at_ms;
    // Planning fails: the profiles folder is a file.
    let profiles = data.join("profiles");
    if profiles.exists() {
        std::fs::remove_dir_all(&profiles).unwrap();
    }
    std::fs::write(&profiles, "not a folder").unwrap();
    let outcomes = || outcomes::read(&outcomes::dataset(data).unwrap()).unwrap();
    let tick = |at_ms: i64| common::run(config, data, &["tick", "--now", &at(at_ms)], &env);
    // Asked to hold for 8 days (the 7-day window and a spare day).
    let hold_ends = received + 8 * 24 * HOUR;
    let out = tick(hold_ends - 2 * HOUR);
    assert!(!out.status.success(), "planning did not fail");
    assert_eq!(outcomes(), [], "sent before its hold's last hour");
    let out = tick(hold_ends - HOUR / 2);
    assert!(!out.status.success(), "planning did not fail");
    let rows = outcomes();
    assert_eq!(
        rows.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::Attempting, Status::Completed],
        "{rows:?}"
    );
    assert_eq!(complete_calls(standin), [204]);
    // With a plan row, as every sent receipt has: finished receipts are archived by theirs.
    let plans = plan::read(&plan::dataset(data).unwrap()).unwrap();
    assert_eq!(
        plans.iter().map(|p| p.reason.as_str()).collect::<Vec<_>>(),
        ["planning failed: sent in the last hour of HubSpot's hold"]
    );
}

/// An action's contact an earlier version planned a minute before HubSpot's hold ends (its
/// release-by then) goes by this version's release-by, ten minutes before: a tick that late
/// could come after the hold.
#[test]
fn a_release_an_earlier_version_planned_a_minute_before_the_hold_ends_comes_sooner() {
    let world = a_blocked_execution("cb-old");
    let (standin, data, config) = (&world.standin, &world.data, &world.config);
    let env = [("ACTIONS_SECRET", SECRET), ("ACTIONS_TOKEN", TOKEN)];
    let receipt = sendtime::datasets::inbox::recover(data).unwrap().remove(0);
    let hold_ends = receipt.hold_ends_ms.unwrap();
    let planned = plan::PlanRow {
        receipt_id: receipt.receipt_id.clone(),
        webhook_id: receipt.webhook_id.clone(),
        webhook_type: sendtime::config::WebhookType::Next24Hours,
        contact_id: receipt.contact_id,
        email: receipt.email.clone(),
        received_at_ms: receipt.received_at_ms,
        due_at_ms: hold_ends - 60_000,
        slot: None,
        reason: "planned by an earlier version".into(),
        planned_at_ms: receipt.received_at_ms,
        callback_id: receipt.callback_id.clone(),
        holdout: false,
        time_zone: None,
        hold_ends_ms: Some(hold_ends),
        portal_id: receipt.portal_id,
        holdout_share: None,
    };
    let mut part = plan::frame(&[planned]).unwrap();
    plan::dataset(data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut part)
        .unwrap();
    // Five minutes before the hold ends, past this version's release-by: released.
    let out = common::run(
        config,
        data,
        &["tick", "--now", &at(hold_ends - 5 * 60_000)],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(complete_calls(standin), [204]);
}
