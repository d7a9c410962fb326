//! The dispatcher end to end: the real `sendtime serve` on an ephemeral port, signed webhooks
//! of every type, events imported through the CLI, the HubSpot stand-in over real HTTP, and a
//! clock file that moves the dispatcher's "now" forward without sleeping for hours.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Hook, PUBLIC_URL, Server, TestConfig, enrollments, eventually, now_ms, runtime, set_clock,
};
use sendtime::config::WebhookType;
use sendtime::datasets::outcomes::{self, OutcomeRow, Status};
use sendtime::datasets::plan::{self, PlanRow};
use sendtime::hubspot::standin::{Fault, Injection, ListKind, LogEntry, Options, StandIn};
use sendtime::receiver::signature::sign_v2;
use sendtime::store::Dataset;

const SECRET: &str = "dispatch-secret";
const TOKEN: &str = "standin-token";
const LOG: &str = "info,sendtime::scheduler=debug";

const HOOKS: &[Hook] = &[
    Hook {
        id: "nurture",
        kind: "NEXT_24_HOURS",
        target: "workflow_id = 101",
    },
    Hook {
        id: "winback",
        kind: "NEXT_WEEK_FREQUENCY_OPTIMIZED",
        target: "workflow_id = 102",
    },
    Hook {
        id: "webinar",
        kind: "NEXT_WEEK",
        target: "workflow_id = 103",
    },
    Hook {
        id: "fatigue",
        kind: "IMMEDIATE",
        target: "workflow_id = 104",
    },
    Hook {
        id: "big-list",
        kind: "UPDATE_ONLY",
        target: "list_id = \"987\"",
    },
];

/// Sent at once to a workflow that exists, beside one that is gone.
const FINE: Hook = Hook {
    id: "fine",
    kind: "IMMEDIATE",
    target: "workflow_id = 101",
};

/// A list add naming a record the account does not have: HubSpot ignores it and names it in
/// `recordIdsMissing`; that contact fails with why, and the rest of its batch is listed.
#[test]
fn a_record_hubspot_reports_missing_fails_alone_in_its_batch() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            known_records_only: true,
            ..Options::default()
        }))
        .unwrap();
    standin.add_contact("real@example.com", 8001);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[4]]);
    let server = start(&config, &data, None, &[]);
    let http = common::http();
    for (vid, email) in [(8001, "real@example.com"), (8002, "gone@example.com")] {
        let body = common::contact_body(vid, email);
        assert_eq!(
            common::post_signed(&http, &server, SECRET, "/hooks/big-list", body),
            200
        );
    }
    let rows = eventually(Duration::from_secs(20), || {
        let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).ok()?;
        let last: Vec<OutcomeRow> = rows.into_iter().filter(|r| r.status.is_final()).collect();
        (last.len() == 2).then_some(last)
    })
    .unwrap_or_else(|| panic!("not both final; logs:\n{}", server.logs()));
    server.stop();
    let failed: Vec<&OutcomeRow> = rows.iter().filter(|r| r.status == Status::Failed).collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert!(
        failed[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("record id 8002 missing")),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.status == Status::Listed));
    assert_eq!(standin.list_members("987"), ["8001"]);
}

/// HubSpot enrolls by email. A contact whose address was changed in HubSpot after its post
/// is not found by the old one (404): its address now is read by its id, and it is enrolled
/// by that (an earlier version failed it for good). One whose first read fails (a 502) is
/// read again and enrolled; a deleted one fails, saying so; one whose address did not change
/// is enrolled without a read.
#[test]
fn a_contact_whose_email_changed_after_its_post_is_enrolled_by_its_address_now() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let posted = receive_only(&config, &data, &standin, ("posted", 4), 7001);
    standin.change_email(7001, "moved@example.com");
    standin.change_email(7003, "moved-later@example.com");
    standin.delete_contact(7004);
    standin.inject(
        Injection::next(Fault::Status {
            status: 502,
            message: "Bad Gateway".into(),
        })
        .on("/crm/objects/2026-03/contacts/7003"),
    );
    let server = start(&config, &data, None, &[]);
    let rows = eventually(Duration::from_secs(30), || {
        let rows = outcomes(&data);
        let last: Vec<OutcomeRow> = rows.into_iter().filter(|r| r.status.is_final()).collect();
        (last.len() == 4).then_some(last)
    })
    .unwrap_or_else(|| panic!("not all final; logs:\n{}", server.logs()));
    server.stop();
    let receipt_of = |email: &str| {
        plans(&data)
            .into_iter()
            .find(|p| p.email.as_deref() == Some(email))
            .unwrap()
            .receipt_id
    };
    let final_of = |email: &str| {
        let id = receipt_of(email);
        rows.iter().find(|r| r.receipt_id == id).unwrap().clone()
    };
    let reads = |vid: u64| {
        let path = format!("/crm/objects/2026-03/contacts/{vid}");
        standin
            .log()
            .iter()
            .filter(|e| e.method == "GET" && e.path == path)
            .count()
    };
    for (posted, now, vid, read) in [
        (&posted[0], "moved@example.com", 7001, 1),
        (&posted[2], "moved-later@example.com", 7003, 2),
    ] {
        let row = final_of(posted);
        assert_eq!(row.status, Status::Enrolled, "{row:?}");
        assert!(
            row.message
                .as_deref()
                .is_some_and(|m| m.contains("address now")),
            "{row:?}"
        );
        assert_eq!(standin.enrollments_of(now), [104], "{now}");
        assert_eq!(reads(vid), read, "reads of {vid}");
    }
    // The failed read put no doubt on the enrollment HubSpot had refused: its enrollments
    // were not checked.
    let checks = standin
        .log()
        .iter()
        .filter(|e| e.path.starts_with("/automation/v2/workflows/enrollments/"))
        .count();
    assert_eq!(checks, 0);
    let unchanged = final_of(&posted[1]);
    assert_eq!(unchanged.status, Status::Enrolled);
    assert_eq!(unchanged.message, None);
    assert_eq!(
        reads(7002),
        0,
        "an address that still finds its contact is not read"
    );
    let deleted = final_of(&posted[3]);
    assert_eq!(deleted.status, Status::Failed, "{deleted:?}");
    assert!(
        deleted
            .message
            .as_deref()
            .is_some_and(|m| m.contains("does not exist") && m.contains("no longer exists")),
        "{deleted:?}"
    );
    assert_eq!(reads(7004), 1);
    // Each contact enrolled once, none by an address it no longer has.
    let enrolled = enrollments(&standin.log());
    assert_eq!(enrolled.values().sum::<usize>(), 3, "{enrolled:?}");
}

/// A token without the scope to read contacts (`crm.objects.contacts.read`): a contact whose
/// address changed fails as before, its message naming the scope to grant, and the
/// connector's other enrollments go on (the read's refusal does not hold them).
#[test]
fn without_the_contacts_read_scope_a_changed_address_fails_naming_it() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            scopes: Some(vec!["automation".into()]),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let posted = receive_only(&config, &data, &standin, ("scoped", 3), 7101);
    standin.change_email(7101, "moved@example.com");
    let server = start(&config, &data, None, &[]);
    let rows = eventually(Duration::from_secs(30), || {
        let rows = outcomes(&data);
        let last: Vec<OutcomeRow> = rows.into_iter().filter(|r| r.status.is_final()).collect();
        (last.len() == 3).then_some(last)
    })
    .unwrap_or_else(|| panic!("not all final; logs:\n{}", server.logs()));
    server.stop();
    let failed: Vec<&OutcomeRow> = rows.iter().filter(|r| r.status == Status::Failed).collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert!(
        failed[0].message.as_deref().is_some_and(
            |m| m.contains("does not exist") && m.contains("crm.objects.contacts.read")
        ),
        "{rows:?}"
    );
    enrolled_once(&standin, "104", &posted[1..]);
}

/// A workflow deleted in HubSpot and a list made DYNAMIC: their contacts wait, queued, none
/// failed, and `/status` says which target and why, while the webhook whose target is fine
/// goes on. Forty contacts due at once into the deleted workflow cost at most a call each and
/// one read of it, none a second call while it is held or when the hold ends (a read then).
/// Once the config names another workflow, its contacts go there (one whose address changed
/// meanwhile by its address now); once the list takes changes again, the read at the hold's
/// end finds it so and its contacts are listed. An earlier version failed every contact that
/// came due, for good.
#[test]
fn a_deleted_workflow_or_a_dynamic_list_holds_its_contacts_until_fixed() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            workflows: vec![101, 105],
            lists: vec![("987".into(), ListKind::Dynamic)],
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let hooks = [&HOOKS[3], &HOOKS[4], &FINE];
    let config = write_config(dir.path(), &standin.url(), "", &hooks);
    let server = start(&config, &data, Some(&clock), &[]);
    let mut fatigue = Vec::new();
    for i in 0..40u64 {
        let email = format!("gone{i}@example.com");
        standin.add_contact(&email, 7400 + i);
        post(&server, "fatigue", 7400 + i, &email);
        fatigue.push(email);
    }
    // Posted by the address it had; HubSpot's is another now.
    standin.change_email(7400, "moved@example.com");
    for i in 0..3u64 {
        post(&server, "big-list", 7310 + i, &format!("l{i}@example.com"));
    }
    standin.add_contact("fine@example.com", 7320);
    post(&server, "fine", 7320, "fine@example.com");
    // Received by the system's clock, due at once: the dispatcher's reaches them.
    set_clock(&clock, t0 + 30_000);
    let status = || -> serde_json::Value {
        common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap()
    };
    let held = eventually(Duration::from_secs(30), || {
        let s = status();
        (s["connectors"][0]["held_targets"].as_array()?.len() == 2).then_some(s)
    })
    .unwrap_or_else(|| panic!("targets not held; logs:\n{}", server.logs()));
    let targets = &held["connectors"][0]["held_targets"];
    assert_eq!(targets[0]["action"], "enroll", "{targets}");
    assert_eq!(targets[0]["target"], "104", "{targets}");
    assert!(
        targets[0]["why"]
            .as_str()
            .unwrap()
            .contains("no workflow 104")
    );
    assert_eq!(targets[1]["action"], "list_add", "{targets}");
    assert!(targets[1]["why"].as_str().unwrap().contains("DYNAMIC"));
    let row = |s: &serde_json::Value, id: &str| {
        s["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .unwrap()
            .clone()
    };
    for id in ["fatigue", "big-list"] {
        let w = row(&held, id);
        assert!(w["target_held_until_ms"].as_i64() > Some(t0), "{w}");
        assert_eq!(w["held"], w["pending"], "{w}");
    }
    wait_enrolled(&standin, &server, "101", "fine@example.com");
    // Nothing of the held webhooks final; the workflow was read once for all three.
    let final_rows = |data: &Path| -> Vec<OutcomeRow> {
        outcomes(data)
            .into_iter()
            .filter(|r| r.status.is_final())
            .collect()
    };
    // (The row is written once HubSpot's answer is in: after the stand-in logged the call.)
    let finals = eventually(Duration::from_secs(10), || {
        Some(final_rows(&data)).filter(|rows| !rows.is_empty())
    })
    .unwrap_or_default();
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].webhook_id, "fine", "{finals:?}");
    let reads = |path: &str| {
        standin
            .log()
            .iter()
            .filter(|e| e.method == "GET" && e.path == path)
            .count()
    };
    assert_eq!(reads("/automation/v3/workflows/104"), 1);
    assert_eq!(reads("/crm/lists/2026-03/987"), 1);
    // The calls already under way when the first 404 came back went out, none twice.
    let mut calls_to_104 = HashMap::new();
    for e in standin.log() {
        if e.path.starts_with("/automation/v2/workflows/104/") {
            *calls_to_104.entry(e.path).or_insert(0) += 1;
        }
    }
    assert!(calls_to_104.values().all(|n| *n == 1), "{calls_to_104:?}");
    // The reads after the first 404 go ahead of the calls queued at the limiter: only those
    // the limiter let go meanwhile are refused, not all 40 (an earlier version queued them).
    assert!(calls_to_104.len() < 20, "{calls_to_104:?}");
    let list_adds = |s: &StandIn| {
        s.log()
            .iter()
            .filter(|e| e.path.ends_with("/memberships/add"))
            .count()
    };
    assert_eq!(list_adds(&standin), 1);
    // The holds end with both targets still unusable: each is read once more before any of
    // its calls goes, and held twice as long. No contact is called again (an earlier version
    // sent every contact then due to find out).
    let t1 = t0 + 6 * 60_000;
    set_clock(&clock, t1);
    eventually(Duration::from_secs(30), || {
        let s = status();
        let targets = s["connectors"][0]["held_targets"].as_array()?.clone();
        let longer = |t: &serde_json::Value| t["until_ms"].as_i64() >= Some(t1 + 10 * 60_000);
        (targets.len() == 2 && targets.iter().all(longer)).then_some(())
    })
    .unwrap_or_else(|| panic!("not held again; logs:\n{}", server.logs()));
    assert_eq!(reads("/automation/v3/workflows/104"), 2);
    assert_eq!(reads("/crm/lists/2026-03/987"), 2);
    let calls_now = standin
        .log()
        .iter()
        .filter(|e| e.path.starts_with("/automation/v2/workflows/104/"))
        .count();
    assert_eq!(calls_now, calls_to_104.len());
    assert_eq!(list_adds(&standin), 1);
    // The config names another workflow: its contacts go there within the minute.
    let fixed = Hook {
        target: "workflow_id = 105",
        ..HOOKS[3]
    };
    write_config(dir.path(), &standin.url(), "", &[&fixed, &HOOKS[4], &FINE]);
    wait_for_config(&server, &config);
    set_clock(&clock, t1 + 60_000);
    wait_enrolled(&standin, &server, "105", "moved@example.com");
    for email in &fatigue[1..] {
        wait_enrolled(&standin, &server, "105", email);
    }
    // The list takes changes again: after the hold, its contacts are listed.
    standin.set_lists(vec![("987".into(), ListKind::Manual)]);
    set_clock(&clock, t1 + 11 * 60_000);
    let rows = eventually(Duration::from_secs(30), || {
        let rows = final_rows(&data);
        (rows.len() == 44).then_some(rows)
    })
    .unwrap_or_else(|| panic!("not all final; logs:\n{}", server.logs()));
    server.stop();
    assert!(
        rows.iter()
            .all(|r| matches!(r.status, Status::Enrolled | Status::Listed)),
        "{rows:?}"
    );
    assert_eq!(standin.list_members("987").len(), 3);
    assert!(enrollments(&standin.log()).keys().all(|(w, _)| w != "104"));
}

/// A workflow read and found to exist a moment ago (after the 404 of a contact posted without
/// an id, whose address HubSpot does not know), then deleted: the next contact's 404 has it
/// read again, and the contact waits, rather than failing on what the first read found.
#[test]
fn a_workflow_deleted_right_after_it_was_found_to_exist_still_holds_its_contacts() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            workflows: vec![104],
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let server = start(&config, &data, None, &[]);
    standin.add_contact("kept@example.com", 7502);
    let first = post_body(
        &server,
        "fatigue",
        r#"{"portal-id": 62515, "properties": {"email": {"value": "nobody@example.com"}}}"#.into(),
    );
    let status_of = |receipt: &str| {
        outcomes(&data)
            .into_iter()
            .rfind(|r| r.receipt_id == receipt)
    };
    let failed = eventually(Duration::from_secs(20), || {
        status_of(&first).filter(|r| r.status.is_final())
    })
    .unwrap_or_else(|| panic!("not final; logs:\n{}", server.logs()));
    assert_eq!(failed.status, Status::Failed, "{failed:?}");
    standin.set_workflows(vec![999]);
    let second = post(&server, "fatigue", 7502, "kept@example.com");
    eventually(Duration::from_secs(20), || {
        let status: serde_json::Value =
            common::get(server.admin_url("/status")).ok()?.json().ok()?;
        (status["connectors"][0]["held_targets"][0]["target"] == "104").then_some(())
    })
    .unwrap_or_else(|| panic!("not held; logs:\n{}", server.logs()));
    server.stop();
    let last = status_of(&second).unwrap();
    assert_eq!(last.status, Status::Retrying, "{last:?}");
    assert!(
        last.message
            .as_deref()
            .is_some_and(|m| m.contains("no workflow 104"))
    );
    let reads = standin
        .log()
        .iter()
        .filter(|e| e.path == "/automation/v3/workflows/104")
        .count();
    assert_eq!(reads, 2);
}

/// A workflow deleted while HubSpot's workflow reads fail (503): the first refusal's read
/// fails, and the workflow's calls wait a minute for a read that answers instead of each
/// contact being sent, refused and retried meanwhile (an earlier version did, once per
/// contact and backoff). Each hold's end is one read; failing, it lets one contact's call go,
/// whose refusal holds the rest again. Once the workflow is back, every contact is enrolled,
/// none called more than its refused calls and the enrollment.
#[test]
fn a_failing_target_read_holds_its_contacts_instead_of_sending_each() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            workflows: vec![101],
            ..Options::default()
        }))
        .unwrap();
    standin.inject(workflow_reads_fail());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let server = start(&config, &data, Some(&clock), &[]);
    let emails: Vec<String> = (0..12u64).map(|i| format!("r{i}@example.com")).collect();
    for (i, email) in emails.iter().enumerate() {
        standin.add_contact(email, 7600 + i as u64);
        post(&server, "fatigue", 7600 + i as u64, email);
    }
    let reads = || {
        standin
            .log()
            .iter()
            .filter(|e| e.path == "/automation/v3/workflows/104")
            .count()
    };
    let calls = || {
        let mut by_path = HashMap::new();
        for e in standin.log() {
            if e.path.starts_with("/automation/v2/workflows/104/") {
                *by_path.entry(e.path).or_insert(0) += 1;
            }
        }
        by_path
    };
    // Held until the clock moves; `why` says the workflow could not be read.
    let held = |after: i64| {
        eventually(Duration::from_secs(30), || {
            let status: serde_json::Value =
                common::get(server.admin_url("/status")).ok()?.json().ok()?;
            let target = status["connectors"][0]["held_targets"][0].clone();
            (target["until_ms"].as_i64() > Some(after)).then_some(target)
        })
        .unwrap_or_else(|| panic!("not held; logs:\n{}", server.logs()))
    };
    set_clock(&clock, t0 + 30_000);
    let target = held(t0 + 30_000);
    assert!(
        target["why"]
            .as_str()
            .is_some_and(|w| w.contains("could not be read")),
        "{target}"
    );
    // Each contact's first refusal may have come before the hold; none was sent again.
    common::wait_ticks(&server, 2);
    let first = calls();
    assert!(first.values().all(|n| *n == 1), "{first:?}");
    let reads_then = reads();
    // The hold's end: one read (failing again), then the reader's call goes, refused, and
    // holds the rest again (a call started before that refusal goes too).
    let t1 = t0 + 3 * 60_000;
    set_clock(&clock, t1);
    held(t1);
    common::wait_ticks(&server, 2);
    assert_eq!(reads(), reads_then + 1);
    let doubted = calls();
    let more: Vec<_> = doubted
        .iter()
        .filter(|(path, n)| **n != first.get(*path).copied().unwrap_or(0))
        .collect();
    assert!(
        !more.is_empty()
            && more
                .iter()
                .all(|(path, n)| **n == first.get(*path).copied().unwrap_or(0) + 1),
        "{doubted:?} after {first:?}"
    );
    // Reads answer and find it gone: held for the longer wait, still no call.
    standin.clear_faults();
    let t2 = t1 + 2 * 60_000;
    set_clock(&clock, t2);
    let target = held(t2 + 60_000);
    assert!(
        target["why"]
            .as_str()
            .is_some_and(|w| w.contains("no workflow 104")),
        "{target}"
    );
    assert_eq!(reads(), reads_then + 2);
    assert_eq!(calls(), doubted);
    // Restored: read at the hold's end (the reader's contact goes; the others, told to wait
    // for the read, a moment later), and every contact enrolled.
    standin.set_workflows(vec![101, 104]);
    set_clock(&clock, t2 + 6 * 60_000);
    eventually(Duration::from_secs(30), || {
        (reads() == reads_then + 3).then_some(())
    })
    .unwrap_or_else(|| panic!("not read; logs:\n{}", server.logs()));
    set_clock(&clock, t2 + 7 * 60_000);
    for email in &emails {
        wait_enrolled(&standin, &server, "104", email);
    }
    server.stop();
    let last = calls();
    assert!(
        last.iter()
            .all(|(path, n)| *n == doubted.get(path).copied().unwrap_or(0) + 1),
        "{last:?}"
    );
    assert_eq!(reads(), reads_then + 3);
    let rows = outcomes(&data);
    assert!(rows.iter().all(|r| r.status != Status::Failed), "{rows:?}");
}

/// A workflow that exists while HubSpot's workflow reads fail (503), and a contact it does not
/// know refused first: the read fails and the calls wait a minute, but at the hold's end the
/// failing read lets a call go, HubSpot takes it, and the contacts are enrolled rather than
/// held as long as reads fail (an earlier version held them so).
#[test]
fn a_workflow_that_cannot_be_read_but_takes_calls_is_not_held_for_it() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            workflows: vec![104],
            ..Options::default()
        }))
        .unwrap();
    standin.inject(workflow_reads_fail());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = dir.path().join("clock");
    let mut now = now_ms();
    set_clock(&clock, now);
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let server = start(&config, &data, Some(&clock), &[]);
    post_body(
        &server,
        "fatigue",
        r#"{"portal-id": 62515, "properties": {"email": {"value": "nobody@example.com"}}}"#.into(),
    );
    now += 30_000;
    set_clock(&clock, now);
    eventually(Duration::from_secs(30), || {
        let status: serde_json::Value =
            common::get(server.admin_url("/status")).ok()?.json().ok()?;
        (status["connectors"][0]["held_targets"][0]["target"] == "104").then_some(())
    })
    .unwrap_or_else(|| panic!("not held; logs:\n{}", server.logs()));
    let emails: Vec<String> = (0..8u64).map(|i| format!("g{i}@example.com")).collect();
    for (i, email) in emails.iter().enumerate() {
        standin.add_contact(email, 7700 + i as u64);
        post(&server, "fatigue", 7700 + i as u64, email);
    }
    common::wait_ticks(&server, 2);
    assert!(
        enrollments(&standin.log()).is_empty(),
        "sent during the hold"
    );
    // Past the hold's end, in steps shorter than a hold: within a few minutes, all enrolled.
    let all_enrolled = || {
        let enrolled = enrollments(&standin.log());
        emails
            .iter()
            .all(|e| enrolled.contains_key(&("104".to_string(), e.clone())))
    };
    let mut steps = 0;
    while !all_enrolled() && steps < 24 {
        now += 15_000;
        steps += 1;
        set_clock(&clock, now);
        common::wait_ticks(&server, 2);
    }
    let logs = server.stop();
    assert!(
        all_enrolled(),
        "not all enrolled after {steps} steps; logs:\n{logs}"
    );
    assert!(steps <= 16, "{steps} steps of 15 s");
    let enrolled = enrollments(&standin.log());
    assert!(enrolled.values().all(|n| *n == 1), "{enrolled:?}");
    let reads = standin
        .log()
        .iter()
        .filter(|e| e.path == "/automation/v3/workflows/104")
        .count();
    assert!(reads <= steps / 4 + 2, "{reads} reads in {steps} steps");
}

/// Every workflow read answers 503 until the faults are cleared.
fn workflow_reads_fail() -> Injection {
    Injection::next(Fault::Status {
        status: 503,
        message: "Service Unavailable".into(),
    })
    .times(u64::MAX)
    .on("/automation/v3/workflows/")
}

/// A token without the lists scope: its list adds wait (HubSpot's `MISSING_SCOPES` 403),
/// while the connector's enrollments go on (an earlier version paused the whole connector, so
/// one list webhook held every enrollment).
#[test]
fn a_missing_scope_holds_only_the_calls_that_need_it() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            scopes: Some(vec!["automation".into()]),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3], &HOOKS[4]]);
    let server = start(&config, &data, None, &[]);
    for i in 0..3 {
        post(&server, "big-list", 8100 + i, &format!("l{i}@example.com"));
    }
    let refused = |s: &StandIn| {
        s.log()
            .iter()
            .filter(|e| e.path.contains("/lists/") && e.status == Some(403))
            .count()
    };
    eventually(Duration::from_secs(20), || {
        (refused(&standin) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("no list add refused; logs:\n{}", server.logs()));
    let emails: Vec<String> = (0..3).map(|i| format!("e{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 8200 + i as u64);
        post(&server, "fatigue", 8200 + i as u64, e);
    }
    eventually(Duration::from_secs(20), || {
        let enrolled = enrollments(&standin.log());
        emails
            .iter()
            .all(|e| enrolled.contains_key(&("104".to_string(), e.clone())))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not every contact enrolled; logs:\n{}", server.logs()));
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    let main = &status["connectors"][0];
    assert_eq!(main["paused"], serde_json::Value::Null, "{main}");
    // List adds wait from the 403 (the dispatcher's clock is the system's here) for as long
    // as a refused token's pause, give or take the time the answer took to come back.
    let refused_at: i64 = standin
        .log()
        .iter()
        .find(|e| e.path.contains("/lists/") && e.status == Some(403))
        .map(|e| {
            let since = e.at.duration_since(std::time::UNIX_EPOCH).unwrap();
            since.as_millis() as i64
        })
        .unwrap();
    let hold = sendtime::hubspot::policy::REFUSED_TOKEN_PAUSE_MS;
    let until = main["missing_scopes"]["list_add"].as_i64();
    assert!(
        until.is_some_and(|u| (refused_at + hold..refused_at + hold + 5_000).contains(&u)),
        "held until {until:?}, refused at {refused_at}: {main}"
    );
    assert!(main["missing_scopes"].get("enroll").is_none(), "{main}");
    // The list webhook's row says its contacts are held, and till when (it said nothing held,
    // as if sending); the enrolling webhook's holds none.
    let row = |id: &str| {
        status["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .unwrap()
            .clone()
    };
    let list = row("big-list");
    assert_eq!(list["scope_held_until_ms"].as_i64(), until, "{list}");
    assert_eq!(list["held"], list["pending"], "{list}");
    assert!(list["held"].as_u64() > Some(0), "{list}");
    let fatigue = row("fatigue");
    assert_eq!(fatigue["scope_held_until_ms"], serde_json::Value::Null);
    assert_eq!(fatigue["held"], 0, "{fatigue}");
    server.stop();
    // The list's contacts wait, none failed, and the list was asked once in the hold.
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert!(
        rows.iter()
            .filter(|r| r.webhook_id == "big-list")
            .all(|r| !r.status.is_final()),
        "{rows:?}"
    );
    assert_eq!(refused(&standin), 1);
    assert!(standin.list_members("987").is_empty());
}

/// Calls that waited on the limiter while the first of their kind was refused for a missing
/// scope are not made: one refusal, not one per contact queued (each would also count
/// against the day's budget).
#[test]
fn calls_waiting_on_the_limiter_keep_to_a_scope_hold() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            scopes: Some(vec!["crm.lists.write".into()]),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Paced at 400 ms: the first refusal is back before the second call may go (at the
    // default 100 ms a slow machine's second call went before it, and was refused too).
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 25",
        &[&HOOKS[3]],
    );
    receive_only(&config, &data, &standin, ("s", 20), 8600);
    let (out, err) = tick_once(&config, &data, now_ms() + 60_000, TOKEN);
    assert!(
        out.contains("failed=0 ") && out.contains("queued=20 "),
        "{out}\n{err}"
    );
    let refused = standin
        .log()
        .iter()
        .filter(|e| e.path.starts_with("/automation/") && e.status == Some(403))
        .count();
    assert_eq!(refused, 1, "{out}\n{err}");
}

/// HubSpot's 477 (the account is being moved between data hosting locations; "typically up
/// to 24 hours") holds the connector for an hour without a `Retry-After`, and as long as one
/// says, up to a day: one call refused, not one per contact, and the contacts wait, none
/// failed. It was a permanent refusal: every due contact failed.
#[test]
fn an_account_migration_pauses_the_connector() {
    // Tried again an hour on without a `Retry-After`...
    let (at, retry) = migration_retry(None);
    assert!(
        (at + 3_500_000..=at + 3_700_000).contains(&retry),
        "retry at {retry}, ticked at {at}"
    );
    // ...and when it says, that long, up to a day (it was cut to an hour, as a 429's wait).
    let (at, retry) = migration_retry(Some(Duration::from_secs(20 * 3600)));
    let twenty = at + 20 * 3_600_000;
    assert!(
        (twenty - 100_000..=twenty + 100_000).contains(&retry),
        "retry at {retry}, ticked at {at}"
    );
}

/// A `sendtime tick` whose calls HubSpot answers 477 with `retry_after`: when it ticked, and
/// the latest retry its rows name. No contact fails.
fn migration_retry(retry_after: Option<Duration>) -> (i64, i64) {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    receive_only(&config, &data, &standin, ("m", 5), 8800);
    standin.inject(
        Injection::next(Fault::Migrating { retry_after })
            .times(u64::MAX)
            .on("/automation/"),
    );
    let at = now_ms() + 60_000;
    let (out, err) = tick_once(&config, &data, at, TOKEN);
    assert!(
        out.contains("failed=0 ") && out.contains("queued=5 "),
        "{out}\n{err}"
    );
    let refused: Vec<_> = standin
        .log()
        .into_iter()
        .filter(|e| e.status == Some(477))
        .collect();
    // The pause holds the calls after the first answer; one already on its way when it came
    // goes too (two, once, on a loaded machine).
    assert!(
        (1..=2).contains(&refused.len()),
        "{refused:?}\n{out}\n{err}"
    );
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    assert!(rows.iter().all(|r| !r.status.is_final()), "{rows:?}");
    let retry = rows
        .iter()
        .filter_map(|r| r.retry_at_ms)
        .max()
        .unwrap_or_else(|| panic!("no retry recorded: {rows:?}"));
    // The move is the account's: the next `sendtime tick` keeps the pause, and calls nothing
    // (each called into it again).
    let calls = standin.log().len();
    let (out, err) = tick_once(&config, &data, at + 60_000, TOKEN);
    assert!(out.contains("queued=5 "), "{out}\n{err}");
    assert_eq!(standin.log().len(), calls, "{out}\n{err}");
    (at, retry)
}

/// The dispatch tests' config: ticks every second, the connector calling `api_base`.
fn write_config(dir: &Path, api_base: &str, extra: &str, hooks: &[&Hook]) -> PathBuf {
    TestConfig {
        env: "DISPATCH",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: &format!("api_base = \"{api_base}\"\n{extra}"),
        hooks,
        ..TestConfig::default()
    }
    .write(dir)
}

/// A config whose one webhook, `fatigue` (IMMEDIATE), enrolls as `target` says.
fn fatigue_config(dir: &Path, api_base: &str, extra: &str, target: &'static str) -> PathBuf {
    let hook = Hook {
        id: "fatigue",
        kind: "IMMEDIATE",
        target,
    };
    write_config(dir, api_base, extra, &[&hook])
}

/// A config of `hooks` whose connector is in dry run (and reaches nothing).
fn dry_run_config(dir: &Path, hooks: &[&Hook]) -> PathBuf {
    write_config(dir, "http://127.0.0.1:9", "dry_run = true", hooks)
}

fn start(config: &Path, data: &Path, clock: Option<&Path>, extra_env: &[(&str, &str)]) -> Server {
    let clock = clock.map(|c| c.display().to_string());
    let mut env = vec![
        ("DISPATCH_SECRET", SECRET),
        ("DISPATCH_TOKEN", TOKEN),
        ("RUST_LOG", LOG),
    ];
    if let Some(c) = &clock {
        env.push(("SENDTIME_CLOCK_FILE", c.as_str()));
    }
    env.extend_from_slice(extra_env);
    Server::start(config, data, &env)
}

/// Post one contact, signed v2; the receipt id.
fn post(server: &Server, webhook: &str, vid: u64, email: &str) -> String {
    post_body(
        server,
        webhook,
        format!(
            r#"{{"vid": {vid}, "canonical-vid": {vid}, "portal-id": 62515, "properties": {{"email": {{"value": "{email}"}}}}}}"#
        ),
    )
}

/// Post `body`, signed v2; the receipt id.
fn post_body(server: &Server, webhook: &str, body: String) -> String {
    let path = format!("/hooks/{webhook}");
    let sig = sign_v2(
        SECRET.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}{path}"),
        body.as_bytes(),
    );
    let resp = common::http()
        .post(server.url(&path))
        .header("X-HubSpot-Signature", sig)
        .header("X-HubSpot-Signature-Version", "v2")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "post {webhook}");
    let v: serde_json::Value = resp.json().unwrap();
    v["receipt_id"].as_str().unwrap().to_string()
}

/// Wait until the stand-in has enrolled `email` into `workflow`.
fn wait_enrolled(standin: &StandIn, server: &Server, workflow: &str, email: &str) {
    eventually(Duration::from_secs(20), || {
        enrollments(&standin.log())
            .get(&(workflow.to_string(), email.to_string()))
            .copied()
    })
    .unwrap_or_else(|| panic!("{email} not enrolled; logs:\n{}", server.logs()));
}

/// Wait until the server runs the config now in `path` (its identity on `/status`).
fn wait_for_config(server: &Server, path: &Path) {
    let identity = sendtime::config::identity_of(&std::fs::read(path).unwrap());
    eventually(Duration::from_secs(10), || {
        let status: serde_json::Value =
            common::get(server.admin_url("/status")).ok()?.json().ok()?;
        (status["config"] == identity.as_str()).then_some(())
    })
    .unwrap_or_else(|| panic!("config {identity} not loaded; logs:\n{}", server.logs()));
}

/// Run `sendtime ARGS` on `data` and kill it (SIGKILL) as the `nth` file `listed` did not
/// show before appears, or when it ends first.
fn kill_at_nth_file(
    config: &Path,
    data: &Path,
    args: &[&str],
    nth: usize,
    listed: impl Fn() -> HashSet<PathBuf>,
) {
    let mut seen = listed();
    let before = seen.len();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    loop {
        seen.extend(listed());
        if seen.len() >= before + nth || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill(); // SIGKILL
    child.wait().unwrap();
}

/// An inbox part of one IMMEDIATE receipt, signed v2, taken for the test config's account.
fn write_inbox_row(data: &Path, receipt: &str, webhook: &str, vid: i64, email: &str, at: i64) {
    let row = common::inbox_row(receipt, webhook, vid, Some(email.into()), at);
    common::write_inbox(data, &[row]);
}

fn plans(data: &Path) -> Vec<PlanRow> {
    plan::read(&plan::dataset(data).unwrap()).unwrap()
}

fn outcomes(data: &Path) -> Vec<OutcomeRow> {
    outcomes::read(&outcomes::dataset(data).unwrap()).unwrap()
}

/// How many receipts a dry run has recorded as sent.
fn dry_runs(data: &Path) -> usize {
    outcomes(data)
        .iter()
        .filter(|r| r.status == Status::DryRun)
        .count()
}

/// Opens at `hour` UTC on each of `days` (days ago) for each of `contacts` (emails, or HubSpot
/// ids), imported with `sendtime import csv`.
fn import_events(
    config: &Path,
    data: &Path,
    contacts: &[(String, u32)],
    days: std::ops::RangeInclusive<i64>,
) {
    let mut csv = String::from("email,opened\n");
    let day = 86_400_000i64;
    let today = now_ms() / day * day;
    for (email, hour) in contacts {
        for d in days.clone() {
            let at = today - d * day + *hour as i64 * 3_600_000 + 10 * 60_000;
            csv.push_str(&format!("{email},{at}\n"));
        }
    }
    let file = data.parent().unwrap().join("opens.csv");
    std::fs::write(&file, csv).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(["import", "csv"])
        .arg(&file)
        .args(["--contact", "email", "--time", "opened"])
        .env("DISPATCH_SECRET", SECRET)
        .env("DISPATCH_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A contact whose history was imported by HubSpot id (20 opens at 09:00) and by email (12
/// at 17:00, the hour 30 others read at) is two contacts in the store: a receipt naming both
/// is planned from the richer history. Before, the email always won, so one event imported by
/// email hid any number imported by id. Richer weighs recency as the model does: another
/// contact's 100 opens by id from about three years ago (at 09:00, decayed to about a
/// quarter, still enough to plan it at 09:00) do not outweigh its 40 recent ones by email (at
/// 17:00); by count they did. And a machine-like entry (30 opens a day by id), scored as the
/// population, counts for nothing: a third contact is planned from its 12 opens by email at
/// 06:00, not at the population's 17:00.
#[test]
fn a_contact_known_by_id_and_by_email_is_planned_from_the_richer_history() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "dry_run = true", &[&HOOKS[0]]);
    let (id_hour, email_hour) = (9, 17);
    let others: Vec<(String, u32)> = (0..30)
        .map(|i| (format!("other{i}@example.com"), email_hour))
        .chain([("both@example.com".to_string(), email_hour)])
        .collect();
    import_events(&config, &data, &others, 1..=12);
    import_events(&config, &data, &[("4242".to_string(), id_hour)], 1..=20);
    let old = "old@example.com".to_string();
    import_events(&config, &data, &[(old, email_hour)], 1..=40);
    import_events(
        &config,
        &data,
        &[("4343".to_string(), id_hour)],
        1000..=1099,
    );
    let bot_hour = 6;
    let bot = "bot@example.com".to_string();
    import_events(&config, &data, &[(bot, bot_hour)], 1..=12);
    import_events(
        &config,
        &data,
        &vec![("4444".to_string(), id_hour); 30],
        1..=5,
    );
    let server = start(&config, &data, None, &[]);
    post(&server, "nurture", 4242, "both@example.com");
    post(&server, "nurture", 4343, "old@example.com");
    post(&server, "nurture", 4444, "bot@example.com");
    let planned = eventually(Duration::from_secs(30), || {
        let plans = plans(&data);
        (plans.len() == 3).then_some(plans)
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    server.stop();
    let hour_of = |email: &str| {
        let p = planned
            .iter()
            .find(|p| p.email.as_deref() == Some(email))
            .unwrap();
        (
            p.due_at_ms.rem_euclid(86_400_000) / 3_600_000,
            p.reason.clone(),
        )
    };
    let (hour, reason) = hour_of("both@example.com");
    assert_eq!(hour, i64::from(id_hour), "{reason}");
    let (hour, reason) = hour_of("old@example.com");
    assert_eq!(hour, i64::from(email_hour), "{reason}");
    let (hour, reason) = hour_of("bot@example.com");
    assert_eq!(hour, i64::from(bot_hour), "{reason}");
    // `explain` of the email shows the history planning used (it looks the id up through
    // the email's receipt).
    let env = [("DISPATCH_SECRET", SECRET), ("DISPATCH_TOKEN", TOKEN)];
    let explained = common::sendtime(&config, &data, &["explain", "both@example.com"], &env);
    assert!(
        explained.contains(
            ", 20 opens/clicks (the events of HubSpot id 4242, which its receipts carry),"
        ),
        "{explained}"
    );
    let explained = common::sendtime(&config, &data, &["explain", "old@example.com"], &env);
    assert!(explained.contains(", 40 opens/clicks, last"), "{explained}");
}

/// Once HubSpot's refusals taught the dispatcher a smaller list batch than `list_batch_size`,
/// planning charges a call per batch of that size: it went on charging one per
/// `list_batch_size` (an audit: minutes of list adds then took several times the calls
/// planned, and a daily budget refused those it had not foreseen).
#[test]
fn planning_charges_list_adds_at_the_batch_size_hubspot_taught() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            max_list_batch: Some(5),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let connector = "requests_per_10s = 1\nlist_batch_size = 20";
    let config = write_config(dir.path(), &standin.url(), connector, &[&HOOKS[4]]);
    let loaded = TestConfig {
        env: "DISPATCH",
        connector: &format!("api_base = \"{}\"\n{connector}", standin.url()),
        hooks: &[&HOOKS[4]],
        ..TestConfig::default()
    }
    .config(dir.path());
    let per_minute = sendtime::capacity::Capacity::of(&loaded.connectors[0]).per_minute
        / sendtime::capacity::CALL;
    assert_eq!(per_minute, 5, "the counts below assume it");
    // Minutes ahead: receipts are stamped with the system clock, and all come due at once.
    let t0 = (now_ms() / 60_000 + 5) * 60_000;
    let clock = dir.path().join("clock");
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    // Ten list adds: HubSpot refuses them as one batch, and its halves teach the size 5.
    let mut vid = 9000;
    let mut post_n = |n: usize| {
        for _ in 0..n {
            vid += 1;
            let email = format!("c{vid}@example.com");
            standin.add_contact(&email, vid);
            post(&server, "big-list", vid, &email);
        }
    };
    post_n(10);
    eventually(Duration::from_secs(60), || {
        (standin.list_members("987").len() == 10).then_some(())
    })
    .unwrap_or_else(|| panic!("not listed; logs:\n{}", server.logs()));
    // Forty more in the same minute: 8 calls at 5 a batch, more than the 2 the minute has
    // left after the 3 spent; at 20 a batch, 2 calls, and all would be planned in it.
    post_n(40);
    let planned = eventually(Duration::from_secs(30), || {
        Some(plans(&data)).filter(|p| p.len() == 50)
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    let later = planned
        .iter()
        .filter(|p| p.due_at_ms >= t0 + 60_000)
        .count();
    assert!(later >= 25, "{later} of 40 planned after the first minute");
    server.stop();
}

#[test]
fn every_contact_is_enrolled_or_listed_once_at_its_planned_minute() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            max_list_batch: Some(5),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hooks: Vec<&Hook> = HOOKS.iter().collect();
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 150\nlist_batch_size = 8",
        &hooks,
    );

    // Contacts: 5 per enrolling webhook, 20 for the list. Half the enrolling ones have history.
    let mut contacts: Vec<(&str, u64, String)> = Vec::new();
    let mut vid = 5000u64;
    for h in HOOKS {
        let n = if h.kind == "UPDATE_ONLY" { 20 } else { 5 };
        for i in 0..n {
            vid += 1;
            let email = format!("{}-{i}@example.com", h.id);
            standin.add_contact(&email, vid);
            contacts.push((h.id, vid, email));
        }
    }
    let with_history: Vec<(String, u32)> = contacts
        .iter()
        .filter(|(h, v, _)| *h != "big-list" && v % 2 == 0)
        .map(|(_, v, e)| (e.clone(), (v % 24) as u32))
        .collect();
    import_events(&config, &data, &with_history, 1..=12);

    let clock = dir.path().join("clock");
    let t0 = now_ms() / 60_000 * 60_000;
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    let mut receipts: HashMap<String, (&str, u64, String)> = HashMap::new();
    for (hook, vid, email) in &contacts {
        let id = post(&server, hook, *vid, email);
        receipts.insert(id, (hook, *vid, email.clone()));
    }

    // Every receipt gets planned by a tick.
    let planned = eventually(Duration::from_secs(30), || {
        let p = plans(&data);
        (p.len() == receipts.len()).then_some(p)
    })
    .unwrap_or_else(|| panic!("not everything planned; logs:\n{}", server.logs()));
    let due: HashMap<String, i64> = planned
        .iter()
        .map(|p| (p.receipt_id.clone(), p.due_at_ms))
        .collect();
    for p in &planned {
        let (hook, vid, _) = &receipts[&p.receipt_id];
        let window = match *hook {
            "nurture" => 24,
            "webinar" | "winback" => 168,
            _ => 0,
        };
        assert!(p.due_at_ms >= p.received_at_ms, "{p:?}");
        assert!(
            p.due_at_ms <= p.received_at_ms + window * 3_600_000,
            "{p:?}"
        );
        if *hook == "nurture" && vid % 2 == 0 {
            assert!(p.reason.contains("best hour"), "{}", p.reason);
        }
    }

    // Walk the clock through every planned minute; after each tick, exactly the contacts due
    // by then are enrolled (or listed), once.
    // UPDATE_ONLY contacts are due as received; one step past the last of them lets them go
    // out together, in batches.
    let list_dues: Vec<i64> = receipts
        .iter()
        .filter(|(_, r)| r.0 == "big-list")
        .map(|(id, _)| due[id])
        .collect();
    let (list_first, list_last) = (
        *list_dues.iter().min().unwrap(),
        *list_dues.iter().max().unwrap(),
    );
    let steps: BTreeSet<i64> = receipts
        .iter()
        .filter(|(_, r)| r.0 != "big-list")
        .map(|(id, _)| due[id])
        .chain([list_last])
        .collect();
    for step in steps {
        set_clock(&clock, step);
        // A whole tick at `step` has run; with the clock still, a following one sends nothing.
        common::wait_ticks(&server, 2);
        let log = standin.log();
        let enrolled = enrollments(&log);
        let members: HashSet<String> = standin.list_members("987").into_iter().collect();
        for (id, (hook, vid, email)) in &receipts {
            let is_due = due[id] <= step;
            if *hook == "big-list" {
                if step < list_first || step >= list_last {
                    assert_eq!(
                        members.contains(&vid.to_string()),
                        is_due,
                        "{email} at {step}"
                    );
                }
                continue;
            }
            let wf = match *hook {
                "nurture" => "101",
                "winback" => "102",
                "webinar" => "103",
                _ => "104",
            };
            let n = enrolled
                .get(&(wf.to_string(), email.clone()))
                .copied()
                .unwrap_or(0);
            assert_eq!(n, usize::from(is_due), "{email} due {} at {step}", due[id]);
        }
    }

    // UPDATE_ONLY: batches (never one call per contact), split when HubSpot said too large,
    // and never an enrollment.
    let log = standin.log();
    let puts: Vec<&LogEntry> = log.iter().filter(|e| e.method == "PUT").collect();
    assert!(
        puts.iter().any(|e| e.status == Some(400)),
        "a batch of 8 is refused"
    );
    let ok_puts = puts.iter().filter(|e| e.status == Some(200)).count();
    assert!(
        (4..20).contains(&ok_puts),
        "{ok_puts} list calls for 20 contacts"
    );
    assert_eq!(standin.list_members("987").len(), 20);
    assert!(
        !log.iter()
            .any(|e| e.method == "POST" && e.path.contains("big-list")),
        "UPDATE_ONLY contacts are never enrolled"
    );
    // Outcomes: one final row per receipt, with the right status (those of receipts settled
    // days ago are in the archive: `serve` moves them once a day).
    let finals: HashMap<String, Status> = outcomes::read_kept(&data)
        .unwrap()
        .into_iter()
        .filter(|o| o.status.is_final())
        .map(|o| (o.receipt_id, o.status))
        .collect();
    for (id, (hook, _, _)) in &receipts {
        let want = if *hook == "big-list" {
            Status::Listed
        } else {
            Status::Enrolled
        };
        assert_eq!(finals.get(id), Some(&want), "{id} {hook}");
    }
    // The same contact posted again after being enrolled, with a body that changed since
    // (a later pass through the workflow), is a new receipt; the very same post (a replay,
    // or HubSpot's retry of a lost 200) is a duplicate for three days.
    let (hook, vid, email) = receipts
        .values()
        .find(|r| r.0 == "fatigue")
        .unwrap()
        .clone();
    let replayed = post(&server, hook, vid, &email);
    assert!(receipts.contains_key(&replayed), "the first receipt's id");
    let again = post(&server, hook, vid, &email.to_uppercase());
    assert!(!receipts.contains_key(&again));
    drop(server);
}

#[test]
fn faults_and_slow_answers_still_enroll_everyone_exactly_once() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            error_rate: 0.2,
            slow_rate: 0.15,
            slow_by: Duration::from_millis(1500),
            seed: 7,
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 150",
        &[&HOOKS[3]],
    );
    let server = start(
        &config,
        &data,
        None,
        &[("SENDTIME_HUBSPOT_TIMEOUT_MS", "600")],
    );
    let emails: Vec<String> = (0..40).map(|i| format!("f{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 7000 + i as u64);
        post(&server, "fatigue", 7000 + i as u64, e);
    }
    let all = eventually(Duration::from_secs(120), || {
        let finals = outcomes(&data)
            .into_iter()
            .filter(|o| o.status.is_final())
            .count();
        (finals >= emails.len()).then_some(())
    });
    if all.is_none() {
        let rows = outcomes(&data);
        let finals: HashSet<&String> = rows
            .iter()
            .filter(|r| r.status.is_final())
            .map(|r| &r.receipt_id)
            .collect();
        let open: Vec<&OutcomeRow> = rows
            .iter()
            .filter(|r| !finals.contains(&r.receipt_id))
            .collect();
        let calls: Vec<String> = standin
            .log()
            .iter()
            .map(|e| format!("{} {} {} {:?}", e.seq, e.method, e.path, e.status))
            .collect();
        panic!(
            "not all final: {open:#?}\nstand-in:\n{}\nlogs:\n{}",
            calls.join("\n"),
            server.logs()
        );
    }
    // Ticks that ran whole after every receipt was final: none sends a contact again.
    common::wait_ticks(&server, 2);
    let log = standin.log();
    let enrolled = enrollments(&log);
    for e in &emails {
        assert_eq!(
            enrolled.get(&("104".to_string(), e.clone())).copied(),
            Some(1),
            "{e} enrolled exactly once"
        );
    }
    // The faults really happened, and the unknown outcomes were checked, not re-sent blindly.
    assert!(log.iter().any(|e| e.status == Some(502)));
    let o = outcomes(&data);
    assert!(o.iter().any(|r| r.status == Status::Retrying));
    assert!(o.iter().all(|r| r.status != Status::Failed), "{o:?}");
    assert!(
        log.iter()
            .any(|e| e.method == "GET" && e.path.contains("/enrollments/contacts/"))
    );
}

#[test]
fn kill_9_mid_tick_loses_nothing_and_duplicates_only_calls_in_flight() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            limit_per_10s: 100,
            slow_rate: 0.3,
            slow_by: Duration::from_millis(400),
            ..Options::default()
        }))
        .unwrap();
    // One contact with an id is answered 20 s late (its enrollment made at once, as HubSpot
    // would): the kill comes while that call waits, so the check after the restart runs.
    standin.inject(
        Injection::next(Fault::Slow(Duration::from_secs(20)))
            .on("/automation/v2/workflows/104/enrollments/contacts/k38%40example.com"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 100",
        &[&HOOKS[3]],
    );
    let emails: Vec<String> = (0..150).map(|i| format!("k{i}@example.com")).collect();
    let mut server = start(&config, &data, None, &[]);
    // Half the contacts carry an id (their enrollments can be checked), half only an email.
    let mut with_id = HashSet::new();
    for (i, e) in emails.iter().enumerate() {
        let vid = 9000 + i as u64;
        standin.add_contact(e, vid);
        if i % 2 == 0 {
            post(&server, "fatigue", vid, e);
            with_id.insert(e.clone());
        } else {
            post_body(
                &server,
                "fatigue",
                format!(r#"{{"properties": {{"email": {{"value": "{e}"}}}}}}"#),
            );
        }
    }
    let slow = ("104".to_string(), "k38@example.com".to_string());
    eventually(Duration::from_secs(60), || {
        enrollments(&standin.log())
            .contains_key(&slow)
            .then_some(())
    })
    .expect("enrolling started");
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    // What the disk says was in flight: an attempting row without a result for that attempt.
    let rows = outcomes(&data);
    let mut started: HashMap<String, u32> = HashMap::new();
    let mut finished: HashMap<String, u32> = HashMap::new();
    for r in &rows {
        let m = if r.status == Status::Attempting {
            &mut started
        } else {
            &mut finished
        };
        let e = m.entry(r.receipt_id.clone()).or_default();
        *e = (*e).max(r.attempts);
    }
    let in_flight: HashSet<String> = started
        .iter()
        .filter(|(id, n)| finished.get(*id).copied().unwrap_or(0) < **n)
        .map(|(id, _)| id.clone())
        .collect();
    let receipt_email: HashMap<String, String> = plans(&data)
        .into_iter()
        .map(|p| (p.receipt_id, p.email.unwrap_or_default()))
        .collect();
    let in_flight_emails: HashSet<String> = in_flight
        .iter()
        .filter_map(|id| receipt_email.get(id).cloned())
        .collect();

    let server = start(&config, &data, None, &[]);
    let done = eventually(Duration::from_secs(90), || {
        let e = enrollments(&standin.log());
        emails
            .iter()
            .all(|m| e.contains_key(&("104".to_string(), m.clone())))
            .then_some(())
    });
    assert!(
        done.is_some(),
        "not everyone enrolled; logs:\n{}",
        server.logs()
    );
    // Ticks that ran whole after everyone was enrolled: none sends a contact again.
    common::wait_ticks(&server, 2);
    // A contact with an id in flight was checked before it was sent again, and found enrolled
    // (the stand-in processed every call that reached it): once. Only a contact posted with
    // an email alone, in flight, may have been enrolled twice.
    assert!(
        in_flight_emails.contains(&slow.1),
        "{} was not in flight at the kill",
        slow.1
    );
    let log = standin.log();
    for e in in_flight_emails.iter().filter(|e| with_id.contains(*e)) {
        let vid = 9000 + emails.iter().position(|m| m == e).unwrap();
        assert!(
            log.iter()
                .any(|l| l.method == "GET"
                    && l.path.ends_with(&format!("/enrollments/contacts/{vid}"))),
            "{e} was in flight but its enrollments were not checked"
        );
    }
    for ((_, email), n) in enrollments(&log) {
        assert!(
            n == 1 || (in_flight_emails.contains(&email) && !with_id.contains(&email)),
            "{email} enrolled {n} times (in flight: {}, with an id: {})",
            in_flight_emails.contains(&email),
            with_id.contains(&email)
        );
    }
}

/// A call left unanswered by a crash enrolled the contact into workflow 104; `workflow_id` is
/// 105 by the restart. The check before sending again finds the contact in 104 and sends
/// nothing: one email, not two.
#[test]
fn an_unanswered_call_is_found_in_its_workflow_after_workflow_id_changed() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let email = "ada@example.com";
    let receipt = enrolled_by_a_lost_call(&rt, &standin, &data, email, 8300);
    let config = fatigue_config(dir.path(), &standin.url(), "", "workflow_id = 105");
    let (out, err) = tick_once(&config, &data, now_ms(), TOKEN);
    assert!(out.contains("enrolled=1 "), "{out}\n{err}");
    let enrolled = enrollments(&standin.log());
    assert_eq!(
        enrolled.get(&("104".to_string(), email.to_string())),
        Some(&1)
    );
    assert_eq!(enrolled.get(&("105".to_string(), email.to_string())), None);
    let last = outcomes(&data)
        .into_iter()
        .find(|r| r.receipt_id == receipt && r.status == Status::Enrolled)
        .unwrap();
    assert_eq!(last.target, "104");
    assert!(
        last.message
            .as_deref()
            .is_some_and(|m| m.starts_with("already enrolled into workflow 104")),
        "{last:?}"
    );
}

/// After a restart the check looks in the workflow of the call whose answer was lost, as a
/// running dispatcher does: not in that of a later call (sent unchecked after the checks
/// failed), nor in that of the latest call by a clock set back since; and in that of a send
/// made after a check found nothing. Each time the contact was enrolled into another
/// workflow again (an audit, and a review of its first fix).
#[test]
fn after_a_restart_the_check_looks_where_the_lost_call_went() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let enrolled_into = |workflow, email: &str, vid| {
        enrolled_at_standin(&rt, &standin, workflow, email, vid);
    };
    // Enrolled into 104 by a call whose answer was lost; the checks failed, and a send to
    // 105 (the workflow_id then) is in flight.
    let checked = "checked@example.com";
    enrolled_into(104, checked, 8330);
    planned_with(&data, checked, 8330, |id, t| {
        vec![
            enroll_row(id, 104, 1, Status::Attempting, t),
            doubt_row(id, 104, 1, t + 1),
            enroll_row(id, 104, 2, Status::Attempting, t + 2),
            doubt_row(id, 104, 2, t + 3),
            enroll_row(id, 105, 3, Status::Attempting, t + 4),
        ]
    });
    // Enrolled into 105 by its second call, stamped an hour before its first (the clock set
    // back between them).
    let stepped = "stepped@example.com";
    enrolled_into(105, stepped, 8331);
    planned_with(&data, stepped, 8331, |id, t| {
        vec![
            enroll_row(id, 104, 1, Status::Attempting, t + 3_600_000),
            enroll_row(id, 105, 2, Status::Attempting, t),
        ]
    });
    // Enrolled into 105 by a send after a check of 104 found nothing (a check that finds
    // nothing records no row), its answer lost.
    let resent = "resent@example.com";
    enrolled_into(105, resent, 8332);
    planned_with(&data, resent, 8332, |id, t| {
        vec![
            enroll_row(id, 104, 1, Status::Attempting, t),
            doubt_row(id, 104, 1, t + 1),
            enroll_row(id, 104, 2, Status::Attempting, t + 2),
            enroll_row(id, 105, 3, Status::Attempting, t + 3),
        ]
    });
    let config = fatigue_config(dir.path(), &standin.url(), "", "workflow_id = 106");
    let (out, err) = tick_once(&config, &data, now_ms(), TOKEN);
    assert!(out.contains("enrolled=3 "), "{out}\n{err}");
    let enrolled = enrollments(&standin.log());
    for email in [checked, stepped, resent] {
        assert_eq!(
            enrolled.get(&("106".to_string(), email.to_string())),
            None,
            "{email}"
        );
    }
    let found: HashMap<String, String> = outcomes(&data)
        .into_iter()
        .filter(|r| r.status == Status::Enrolled)
        .map(|r| (r.receipt_id, r.target))
        .collect();
    assert_eq!(found.len(), 3);
    let mut targets: Vec<&str> = found.values().map(String::as_str).collect();
    targets.sort();
    assert_eq!(targets, ["104", "105", "105"]);
}

/// The check before sending again reads HubSpot's *current* enrollments: a workflow that
/// sent its email and ended before the check looks like no enrollment, and the contact is
/// enrolled again, as the README warns (give such workflows a delay step after the email).
/// One still running is found, and nothing is sent again.
#[test]
fn a_workflow_that_ended_before_the_check_is_enrolled_again_as_the_readme_warns() {
    for (ended, calls) in [(false, 1), (true, 2)] {
        let rt = runtime();
        let standin = rt
            .block_on(StandIn::start(Options {
                workflows_end_after: ended.then_some(Duration::ZERO),
                ..Options::default()
            }))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let email = "short@example.com";
        enrolled_by_a_lost_call(&rt, &standin, &data, email, 8310);
        let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
        let (out, err) = tick_once(&config, &data, now_ms(), TOKEN);
        assert!(out.contains("enrolled=1 "), "{out}\n{err}");
        let enrolled = enrollments(&standin.log());
        let key = ("104".to_string(), email.to_string());
        assert_eq!(enrolled.get(&key), Some(&calls), "ended: {ended}");
    }
}

/// A webhook made an action of the same id while its contacts wait (or the reverse) holds
/// them, as a removed webhook does, until it is a webhook again: they were sent the action's
/// way, and failed for want of a callback to complete.
#[test]
fn a_webhook_made_an_action_holds_its_contacts_until_it_is_a_webhook_again() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let x = Hook {
        id: "x",
        kind: "IMMEDIATE",
        target: "workflow_id = 7",
    };
    let config = write_config(dir.path(), &standin.url(), "", &[&x]);
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0 - 60_000);
    let server = start(&config, &data, Some(&clock), &[]);
    let emails: Vec<String> = (0..2).map(|i| format!("x-{i}@example.com")).collect();
    for (i, email) in emails.iter().enumerate() {
        standin.add_contact(email, 700 + i as u64);
        post(&server, "x", 700 + i as u64, email);
    }
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == 2).then_some(())
    })
    .expect("planned");
    let as_action = TestConfig {
        env: "DISPATCH",
        tables: "[scheduler]\ncron = \"* * * * * *\"\n[[action]]\nid = \"x\"",
        connector: &format!("api_base = \"{}\"", standin.url()),
        ..TestConfig::default()
    }
    .write(dir.path());
    wait_for_config(&server, &as_action);
    set_clock(&clock, t0 + 3_600_000);
    eventually(Duration::from_secs(20), || {
        (common::metric(&server, "sendtime_dispatch_held{webhook=\"x\"}") == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not held; outcomes {:?}", outcomes(&data)));
    assert!(outcomes(&data).is_empty(), "{:?}", outcomes(&data));
    assert!(
        standin
            .log()
            .iter()
            .all(|e| !e.path.starts_with("/automation"))
    );
    // A webhook again: each is enrolled once.
    write_config(dir.path(), &standin.url(), "", &[&x]);
    wait_for_config(&server, &config);
    eventually(Duration::from_secs(20), || {
        let e = enrollments(&standin.log());
        emails
            .iter()
            .all(|m| e.get(&("7".into(), m.clone())) == Some(&1))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not sent once a webhook again:\n{}", server.logs()));
}

const STEP_A: Hook = Hook {
    id: "step-a",
    kind: "IMMEDIATE",
    target: "workflow_id = 1",
};
const STEP_B: Hook = Hook {
    id: "step-b",
    kind: "IMMEDIATE",
    target: "workflow_id = 2",
};

/// A `serve` on a stand-in whose webhook step-a left the config, its contacts held.
struct StepARemoved {
    /// The stand-in's: bind it, or the stand-in stops.
    _rt: tokio::runtime::Runtime,
    standin: StandIn,
    dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    clock: PathBuf,
    t0: i64,
    server: Server,
    /// step-a's receipts.
    held: HashSet<String>,
}

/// Three contacts each posted to step-a (workflow 1) and step-b (workflow 2) and planned;
/// then the config has `then` (with connector lines `extra` throughout), and an hour on
/// step-a's three are held.
fn remove_step_a(extra: &str, then: &[&Hook]) -> StepARemoved {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), extra, &[&STEP_A, &STEP_B]);
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0 - 60_000);
    let server = start(&config, &data, Some(&clock), &[]);
    let mut held = HashSet::new();
    for i in 0..3u64 {
        for (hook, base) in [("step-a", 100), ("step-b", 200)] {
            let email = format!("{hook}-{i}@example.com");
            standin.add_contact(&email, base + i);
            let receipt = post(&server, hook, base + i, &email);
            if hook == "step-a" {
                held.insert(receipt);
            }
        }
    }
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == 6).then_some(())
    })
    .expect("planned");
    write_config(dir.path(), &standin.url(), extra, then);
    wait_for_config(&server, &config);
    set_clock(&clock, t0 + 3_600_000);
    eventually(Duration::from_secs(20), || {
        (common::metric(&server, "sendtime_dispatch_held{webhook=\"step-a\"}") == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("step-a's contacts not held; logs:\n{}", server.logs()));
    StepARemoved {
        _rt: rt,
        standin,
        dir,
        data,
        config,
        clock,
        t0,
        server,
        held,
    }
}

#[test]
fn a_removed_webhook_holds_its_contacts_and_a_changed_workflow_applies_to_the_rest() {
    let b2 = Hook {
        id: "step-b",
        kind: "IMMEDIATE",
        target: "workflow_id = 22",
    };
    // step-a leaves the config; step-b now enrolls into workflow 22.
    let extra = "requests_per_10s = 150";
    let s = remove_step_a(extra, &[&b2]);
    eventually(Duration::from_secs(20), || {
        let e = enrollments(&s.standin.log());
        (0..3)
            .all(|i| e.contains_key(&("22".into(), format!("step-b-{i}@example.com"))))
            .then_some(())
    })
    .expect("step-b enrolled into its new workflow");
    let enrolled = enrollments(&s.standin.log());
    for i in 0..3 {
        assert_eq!(
            enrolled.get(&("22".into(), format!("step-b-{i}@example.com"))),
            Some(&1)
        );
        assert!(
            s.standin
                .enrollments_of(&format!("step-a-{i}@example.com"))
                .is_empty()
        );
    }
    assert!(!enrolled.keys().any(|(wf, _)| wf == "2"), "{enrolled:?}");

    // step-a returns: its held contacts go out on the next tick.
    write_config(s.dir.path(), &s.standin.url(), extra, &[&STEP_A, &b2]);
    wait_for_config(&s.server, &s.config);
    let done = eventually(Duration::from_secs(20), || {
        let e = enrollments(&s.standin.log());
        (0..3)
            .all(|i| e.get(&("1".into(), format!("step-a-{i}@example.com"))) == Some(&1))
            .then_some(())
    });
    assert!(
        done.is_some(),
        "held contacts not sent; logs:\n{}",
        s.server.logs()
    );
}

/// `sendtime discard ID`: the contacts held for a webhook that left the config are given up
/// (moved to `discarded/`, not sent when the webhook returns), and no other; refused beside
/// `serve` and for a webhook whose contacts are sent; moved back, they are held and sent again.
#[test]
fn discarding_a_removed_webhook_gives_up_its_held_contacts_alone() {
    let StepARemoved {
        _rt,
        standin,
        dir,
        data,
        config,
        clock,
        t0,
        server,
        held,
        ..
    } = remove_step_a("", &[&STEP_B]);
    let status = || -> serde_json::Value {
        common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap()
    };
    // `/status` names what is held, and for what (the dashboard says how to give it up).
    let held_for_removed = serde_json::json!({"step-a": 3});
    eventually(Duration::from_secs(10), || {
        (status()["held_for_removed"] == held_for_removed).then_some(())
    })
    .unwrap_or_else(|| panic!("not on /status: {}", status()));
    let emails: Vec<String> = (0..3).map(|i| format!("step-b-{i}@example.com")).collect();
    for e in &emails {
        wait_enrolled(&standin, &server, "2", e);
    }
    enrolled_once(&standin, "2", &emails);
    let beside = common::run(&config, &data, &["discard", "step-a"], &[]);
    assert!(!beside.status.success());
    let dry_run = ["discard", "--dry-run", "step-a"];
    let dry_beside = common::sendtime(&config, &data, &dry_run, &[]);
    server.stop();
    assert_eq!(
        without_counted_beside(&dry_beside),
        common::sendtime(&config, &data, &dry_run, &[])
    );
    // Beside an erase or discard at work (both its locks held, as here), a dry run waits for
    // it: taken for one beside `serve`, it read the rows half-way through their move.
    let at_work = ["erase-discard.lock", "dispatch.lock"].map(|name| {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data.join(name))
            .unwrap();
        file.lock().unwrap();
        file
    });
    let busy = common::run(&config, &data, &dry_run, &[]);
    let said = String::from_utf8_lossy(&busy.stderr);
    assert!(
        !busy.status.success(),
        "{}",
        String::from_utf8_lossy(&busy.stdout)
    );
    assert!(said.contains("another erase or discard"), "{said}");
    drop(at_work);

    for other in ["step-b", "step-c"] {
        let refused = common::run(&config, &data, &["discard", other], &[]);
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("held now: step-a (3)"), "{said}");
    }
    let dry = common::sendtime(&config, &data, &["discard", "--dry-run", "step-a"], &[]);
    assert!(dry.contains("receipts: 3"), "{dry}");
    assert!(!data.join("discarded").exists());
    let before = receipts_in(&data);
    // Cut short after the plan and inbox rows moved (a file where the outcomes' folder goes):
    // nothing dispatches until a discard without an id finishes it.
    std::fs::create_dir_all(data.join("discarded")).unwrap();
    std::fs::write(data.join("discarded/outcomes"), "").unwrap();
    let cut = common::run(&config, &data, &["discard", "step-a"], &[]);
    assert!(!cut.status.success());
    let env = [("DISPATCH_SECRET", SECRET), ("DISPATCH_TOKEN", TOKEN)];
    let tick = common::run(&config, &data, &["tick"], &env);
    assert!(!tick.status.success());
    let said = String::from_utf8_lossy(&tick.stderr);
    assert!(said.contains("a discard was cut short"), "{said}");
    std::fs::remove_file(data.join("discarded/outcomes")).unwrap();
    assert!(
        !common::run(&config, &data, &["discard", "step-a"], &[])
            .status
            .success()
    );
    // step-a back meanwhile: what was begun is finished, and it says so.
    write_config(dir.path(), &standin.url(), "", &[&STEP_A, &STEP_B]);
    let out = common::sendtime(&config, &data, &["discard"], &[]);
    assert!(
        out.starts_with("finished a discard that was cut short"),
        "{out}"
    );
    assert!(out.contains("step-a is in the config again"), "{out}");
    assert!(out.contains("receipts: 3"), "{out}");
    assert!(!data.join("state/discard.pending").exists());
    let after = receipts_in(&data);
    let gone: HashSet<String> = &before[0] - &after[0];
    assert_eq!(gone, held);
    assert_eq!(&before[1] - &after[1], held);
    assert_eq!(after[2], before[2], "step-b's outcomes stay");
    let discarded = receipts_in(&data.join("discarded"));
    assert_eq!(discarded[0], held);
    assert_eq!(discarded[1], held);
    assert!(discarded[2].is_empty());
    // An erase finds them there.
    let erase = ["erase", "--dry-run", "step-a-0@example.com"];
    let found = common::sendtime(&config, &data, &erase, &[]);
    assert!(found.contains("discarded/inbox: 1 rows"), "{found}");

    // step-a returns: its discarded contacts are not sent; a new one is.
    write_config(dir.path(), &standin.url(), "", &[&STEP_A, &STEP_B]);
    let server = start(&config, &data, Some(&clock), &[]);
    standin.add_contact("step-a-new@example.com", 150);
    post(&server, "step-a", 150, "step-a-new@example.com");
    set_clock(&clock, t0 + 7_200_000);
    wait_enrolled(&standin, &server, "1", "step-a-new@example.com");
    common::wait_ticks(&server, 2);
    for i in 0..3 {
        assert!(
            standin
                .enrollments_of(&format!("step-a-{i}@example.com"))
                .is_empty()
        );
    }
    server.stop();

    // Moved back, part files and checksums, they are held again, and sent.
    for name in ["inbox", "plan"] {
        for entry in std::fs::read_dir(data.join("discarded").join(name)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::rename(&path, data.join(name).join(path.file_name().unwrap())).unwrap();
        }
    }
    let server = start(&config, &data, Some(&clock), &[]);
    set_clock(&clock, t0 + 10_800_000);
    let emails: Vec<String> = (0..3).map(|i| format!("step-a-{i}@example.com")).collect();
    for e in &emails {
        wait_enrolled(&standin, &server, "1", e);
    }
    enrolled_once(&standin, "1", &emails);
    server.stop();
}

/// A dry run of `discard` or `erase` beside a running dispatcher (its lock held) that meets a
/// damaged part names it and moves nothing: the folder is the dispatcher's. An earlier version
/// set the part aside into quarantine, out of the counts; a dictionary part so moved stopped
/// `serve`'s planning (an audit found it).
#[test]
fn a_dry_run_beside_the_dispatcher_names_a_damaged_part_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let email = "ann@example.com";
    planned_with(&data, email, 8360, |id, t| {
        vec![enroll_row(id, 104, 1, Status::Attempting, t + 1000)]
    });
    let config = write_config(dir.path(), "http://127.0.0.1:9", "", &[&HOOKS[3]]);
    let csv = dir.path().join("opens.csv");
    std::fs::write(&csv, format!("email,at\n{email},2026-11-01T10:00:00Z\n")).unwrap();
    let csv = csv.to_str().unwrap();
    let import = ["import", "csv", csv, "--contact", "email", "--time", "at"];
    common::sendtime(
        &config,
        &data,
        &[&import[..], &["--kind-default", "OPEN"]].concat(),
        &[],
    );
    let dispatching = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data.join("dispatch.lock"))
        .unwrap();
    dispatching.lock().unwrap();
    let part_of = |name: &str| {
        (std::fs::read_dir(data.join(name)).unwrap())
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .unwrap_or_else(|| panic!("no {name} part"))
    };
    for (name, args) in [
        ("outcomes", &["discard", "--dry-run", "fatigue"][..]),
        ("contacts", &["erase", "--dry-run", email][..]),
    ] {
        let part = part_of(name);
        let bytes = std::fs::read(&part).unwrap();
        let mut damaged = bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        std::fs::write(&part, damaged).unwrap();
        let out = common::run(&config, &data, args, &[]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {said}");
        let file = part.file_name().unwrap().to_str().unwrap();
        assert!(said.contains(file) && said.contains("is damaged"), "{said}");
        assert!(part.exists(), "{name}: moved by {args:?}");
        assert!(!data.join("quarantine").join(name).exists(), "{name}");
        std::fs::write(&part, bytes).unwrap();
    }
}

/// What a dry run beside a running `serve` printed, less the line that says it counted beside
/// it (asserted here).
fn without_counted_beside(printed: &str) -> String {
    let beside = printed
        .lines()
        .filter(|l| l.starts_with("counted beside a running serve"))
        .count();
    assert_eq!(beside, 1, "{printed}");
    printed
        .lines()
        .filter(|l| !l.starts_with("counted beside"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// kill -9 during `sendtime discard`, as each of the first ten files it writes under the
/// data folder appears: whenever it lands, `tick` refuses while the discard is cut short, and
/// the next `discard` leaves step-a's receipts in `discarded/` and nowhere live, and step-b's
/// rows as they were.
#[test]
fn kill_9_during_a_discard_is_finished_by_the_next() {
    let StepARemoved {
        _rt,
        dir,
        data: pristine,
        config,
        server,
        held,
        ..
    } = remove_step_a("", &[&STEP_B]);
    server.stop();
    let files = |data: &Path| -> HashSet<PathBuf> {
        let mut out = HashSet::new();
        let mut folders = vec![data.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                match entry.path() {
                    p if p.is_dir() => folders.push(p),
                    p => {
                        out.insert(p);
                    }
                }
            }
        }
        out
    };
    let live = receipts_in(&pristine);
    let others: [HashSet<String>; 3] = live.clone().map(|ids| &ids - &held);
    let env = [("DISPATCH_SECRET", SECRET), ("DISPATCH_TOKEN", TOKEN)];
    let mut cut_short = 0;
    for nth in 1..=10 {
        let data = dir.path().join(format!("data-{nth}"));
        common::copy_dir(&pristine, &data);
        kill_at_nth_file(&config, &data, &["discard", "step-a"], nth, || files(&data));
        let finish = if data.join("state/discard.pending").exists() {
            cut_short += 1;
            let tick = common::run(&config, &data, &["tick"], &env);
            assert!(!tick.status.success(), "kill {nth}: tick ran");
            vec!["discard"]
        } else if receipts_in(&data)[0].is_superset(&held) {
            vec!["discard", "step-a"]
        } else {
            vec![]
        };
        if !finish.is_empty() {
            common::sendtime(&config, &data, &finish, &[]);
        }
        assert!(!data.join("state/discard.pending").exists(), "kill {nth}");
        assert_eq!(receipts_in(&data), others, "kill {nth}: live");
        let set_aside = receipts_in(&data.join("discarded"));
        assert_eq!(set_aside[0], held, "kill {nth}: discarded inbox");
        assert_eq!(set_aside[1], held, "kill {nth}: discarded plan");
    }
    assert!(cut_short > 0, "no kill landed inside the discard");
}

#[test]
fn the_shipped_config_runs_in_dry_run_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("webhooks.toml");
    // As shipped, but with list batches of 2 so that the dry run shows the batching.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/webhooks.toml")).unwrap();
    assert!(shipped.contains("list_batch_size = 2500"));
    std::fs::write(
        &config,
        shipped.replace("list_batch_size = 2500", "list_batch_size = 2"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let secret = "shipped-secret";
    let server = Server::start(
        &config,
        &data,
        &[
            ("HUBSPOT_CLIENT_SECRET", secret),
            ("HUBSPOT_ACCESS_TOKEN", ""),
        ],
    );
    for (hook, vid, email) in [
        ("fatigue-update", 11, "dry@example.com"),
        ("big-list", 12, "list@example.com"),
        ("big-list", 13, "list13@example.com"),
        ("big-list", 14, "list14@example.com"),
    ] {
        let body = format!(
            r#"{{"vid": {vid}, "portal-id": 62515, "properties": {{"email": {{"value": "{email}"}}}}}}"#
        );
        let path = format!("/hooks/{hook}");
        let sig = sign_v2(
            secret.as_bytes(),
            "POST",
            &format!("{PUBLIC_URL}{path}"),
            body.as_bytes(),
        );
        let resp = common::http()
            .post(server.url(&path))
            .header("X-HubSpot-Signature", sig)
            .header("X-HubSpot-Signature-Version", "v2")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    // A midnight far past every receipt's window, whatever today's date.
    let later = (now_ms() / 86_400_000 + 30) * 86_400_000;
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap();
    let rfc3339 = |ms: i64| at(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tick = |now: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(["tick", "--now", now])
            .env("HUBSPOT_CLIENT_SECRET", secret)
            .env_remove("HUBSPOT_ACCESS_TOKEN")
            .output()
            .unwrap()
    };
    // While serve dispatches from the folder, a second dispatcher is refused.
    let refused = tick(&rfc3339(later));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another sendtime"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    server.stop();

    let out = tick(&rfc3339(later));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dry_run=4"), "{stdout}");
    let rows = outcomes(&data);
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(rows.iter().all(|r| r.status == Status::DryRun));
    let messages: Vec<&str> = rows.iter().filter_map(|r| r.message.as_deref()).collect();
    assert!(
        messages.contains(&"dry run: would enroll dry@example.com into workflow 1234570"),
        "{messages:?}"
    );
    // Three list adds in batches of 2: two in the first batch, one in the second.
    let batches: Vec<&str> = messages
        .iter()
        .filter(|m| m.starts_with("dry run: would add record "))
        .map(|m| &m[m.find(" (batch").unwrap()..])
        .collect();
    assert_eq!(batches.len(), 3, "{messages:?}");
    assert_eq!(
        batches
            .iter()
            .filter(|b| **b == " (batch 1 of 2, 2 records)")
            .count(),
        2,
        "{messages:?}"
    );
    assert!(
        batches.contains(&" (batch 2 of 2, 1 record)"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("dry run: would add record 12 to list 987 (batch ")),
        "{messages:?}"
    );
    // `explain` tells what became of the contact's receipt.
    let explained = common::sendtime(
        &config,
        &data,
        &["explain", "dry@example.com"],
        &[("HUBSPOT_CLIENT_SECRET", secret)],
    );
    assert!(
        explained.contains(&format!(
            "\n  dry-run at {} 00:00 UTC\n",
            at(later).format("%Y-%m-%d")
        )),
        "{explained}"
    );
    // No engagement is stored: no hour is best (it named Monday 00:00, the first of equals).
    assert!(explained.contains("best slot: none"), "{explained}");
    // Nothing is left to do: a second tick is idle.
    let again = tick(&rfc3339(later + 60_000));
    assert!(String::from_utf8_lossy(&again.stdout).contains("due=0"));
}

/// A stand-in whose account, at UTC-05:00, allows `daily_limit` calls a day, and a config for
/// its `fatigue` webhook. Both read a clock file set to 03:30 UTC tomorrow (after any post's
/// receipt time, so posts are due): 22:30 the day before for the account, whose daily limit
/// resets at 05:00 UTC. Returns the stand-in, the config, the clock file and tomorrow 00:00 UTC.
fn daily_limited(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    daily_limit: u32,
    usage_api: bool,
) -> (StandIn, PathBuf, PathBuf, i64) {
    const HOUR: i64 = 3_600_000;
    let clock = dir.join("clock");
    let day = (now_ms() / (24 * HOUR) + 1) * (24 * HOUR);
    set_clock(&clock, day + 3 * HOUR + 30 * 60_000);
    let standin = rt
        .block_on(StandIn::start(Options {
            daily_limit,
            utc_offset_minutes: -300,
            clock: sendtime::clock::Clock::File(clock.clone()),
            usage_api,
            ..Options::default()
        }))
        .unwrap();
    let config = write_config(dir, &standin.url(), "requests_per_10s = 150", &[&HOOKS[3]]);
    (standin, config, clock, day)
}

#[test]
fn a_daily_429_pauses_the_connector_until_the_limit_resets_and_loses_nothing() {
    const HOUR: i64 = 3_600_000;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Without the usage endpoint: the hourly probe.
    let (standin, config, clock, day) = daily_limited(&rt, dir.path(), 8, false);
    let server = start(&config, &data, Some(&clock), &[]);
    let emails: Vec<String> = (0..12).map(|i| format!("d{i}@example.com")).collect();
    let mut receipts = Vec::new();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 8000 + i as u64);
        receipts.push(post(&server, "fatigue", 8000 + i as u64, e));
    }
    let metric = |value: u64| {
        common::metric(&server, "sendtime_connector_paused{connector=\"main\"}") == value
    };
    let enrolled = || {
        let e = enrollments(&standin.log());
        emails
            .iter()
            .filter(|m| e.contains_key(&("104".to_string(), m.to_string())))
            .count()
    };
    let rate_limited = || {
        standin
            .log()
            .iter()
            .filter(|e| e.status == Some(429))
            .count()
    };

    // The day's allowance goes on the first 8; the 9th call meets the DAILY 429, and the
    // pause, until a minute past the next whole hour, is kept where a restart finds it.
    let pause_file = data.join("state").join("dispatch-pause-main");
    let until = eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&pause_file).ok()
    })
    .unwrap_or_else(|| panic!("no pause; logs:\n{}", server.logs()));
    assert_eq!(until, (day + 4 * HOUR + 60_000).to_string());
    // The tick that met the 429 ends once its calls have; from then on, while paused, ticks
    // go on (every second) and HubSpot hears nothing more.
    common::wait_ticks(&server, 1);
    assert_eq!(enrolled(), 8);
    assert!(metric(1), "paused in the metrics");
    let calls = standin.log().len();
    let first_429s = rate_limited();
    assert!(first_429s >= 1);
    common::wait_ticks(&server, 3);
    assert_eq!(standin.log().len(), calls, "no calls while paused");

    // At the next hour it tries again; HubSpot's day has not ended: paused again, one call.
    set_clock(&clock, day + 4 * HOUR + 60_000);
    eventually(Duration::from_secs(30), || {
        (rate_limited() > first_429s).then_some(())
    })
    .unwrap_or_else(|| panic!("no second try; logs:\n{}", server.logs()));
    common::wait_ticks(&server, 1);
    assert_eq!(enrolled(), 8);
    let retry_429s = rate_limited() - first_429s;
    assert!(
        (1..4).contains(&retry_429s),
        "the retry stops at the first 429 (calls in flight aside): {retry_429s}"
    );
    assert!(metric(1));

    // The account's midnight: everyone left goes, once.
    set_clock(&clock, day + 5 * HOUR + 60_000);
    let all = eventually(Duration::from_secs(30), || {
        (enrolled() == emails.len()).then_some(())
    });
    assert!(all.is_some(), "not all enrolled; logs:\n{}", server.logs());
    eventually(Duration::from_secs(10), || metric(0).then_some(()))
        .expect("the pause is over in the metrics");
    // Ticks that ran whole after everyone was enrolled: none sends a contact again.
    common::wait_ticks(&server, 2);
    for ((wf, email), n) in enrollments(&standin.log()) {
        assert_eq!((wf.as_str(), n), ("104", 1), "{email}");
    }
    let rows = outcomes(&data);
    assert!(
        rows.iter().all(|r| r.status != Status::Failed),
        "nothing failed: {rows:?}"
    );
    let finals: HashMap<&str, Status> = rows
        .iter()
        .filter(|r| r.status.is_final())
        .map(|r| (r.receipt_id.as_str(), r.status))
        .collect();
    for id in &receipts {
        assert_eq!(finals.get(id.as_str()), Some(&Status::Enrolled), "{id}");
    }
    let daily_rows: Vec<&OutcomeRow> = rows.iter().filter(|r| r.http_status == Some(429)).collect();
    // One row per enrollment refused so (a workflow's read, every 10 minutes, has none).
    let refused_enrollments = standin
        .log()
        .iter()
        .filter(|e| e.method == "POST" && e.status == Some(429))
        .count();
    assert_eq!(daily_rows.len(), refused_enrollments, "{daily_rows:?}");
    assert!(
        daily_rows.iter().all(|r| r.status == Status::Retrying
            && r.message.as_deref().is_some_and(|m| m.contains("daily"))),
        "{daily_rows:?}"
    );
}

/// Post `n` `fatigue` contacts (`{prefix}{i}@example.com`, ids from `first_vid`) to a `serve`
/// that only receives (its clock is a day behind, so nothing is due while it runs), then stop
/// it. Returns the emails.
fn receive_only(
    config: &Path,
    data: &Path,
    standin: &StandIn,
    (prefix, n): (&str, usize),
    first_vid: u64,
) -> Vec<String> {
    let serve_clock = config.with_file_name("serve-clock");
    set_clock(&serve_clock, now_ms() - 24 * 3_600_000);
    let server = start(config, data, Some(&serve_clock), &[]);
    let emails: Vec<String> = (0..n).map(|i| format!("{prefix}{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, first_vid + i as u64);
        post(&server, "fatigue", first_vid + i as u64, e);
    }
    server.stop();
    emails
}

/// Each of `emails` enrolled into `workflow` exactly once, by the stand-in's log.
fn enrolled_once(standin: &StandIn, workflow: &str, emails: &[String]) {
    let enrolled = enrollments(&standin.log());
    for e in emails {
        assert_eq!(
            enrolled.get(&(workflow.to_string(), e.clone())),
            Some(&1),
            "{e}"
        );
    }
}

/// An IMMEDIATE receipt of webhook `fatigue` for `email` (`vid`), planned a minute ago, and
/// the outcome rows `rows` makes for its id and that minute. The receipt's id.
fn planned_with(
    data: &Path,
    email: &str,
    vid: i64,
    rows: impl FnOnce(&str, i64) -> Vec<OutcomeRow>,
) -> String {
    planned_as(data, WebhookType::Immediate, email, vid, rows)
}

/// [`planned_with`], the receipt taken as a post of `webhook_type`.
fn planned_as(
    data: &Path,
    webhook_type: WebhookType,
    email: &str,
    vid: i64,
    rows: impl FnOnce(&str, i64) -> Vec<OutcomeRow>,
) -> String {
    let t = now_ms() - 60_000;
    let receipt = ulid::Ulid::generate().to_string();
    let plan = PlanRow {
        receipt_id: receipt.clone(),
        webhook_id: "fatigue".into(),
        webhook_type,
        contact_id: Some(vid),
        email: Some(email.into()),
        received_at_ms: t,
        due_at_ms: t,
        slot: None,
        reason: "immediately".into(),
        planned_at_ms: t,
        callback_id: None,
        holdout: false,
        time_zone: None,
        hold_ends_ms: None,
        portal_id: None,
        holdout_share: None,
    };
    for (name, mut df) in [
        (plan::NAME, plan::frame(&[plan]).unwrap()),
        (outcomes::NAME, outcomes::frame(&rows(&receipt, t)).unwrap()),
    ] {
        Dataset::open(data, name)
            .unwrap()
            .write_part(ulid::Ulid::generate(), &mut df)
            .unwrap();
    }
    receipt
}

/// An enrollment of `receipt` into `workflow`: its `attempts`-th call, `status` at `at_ms`.
fn enroll_row(
    receipt: &str,
    workflow: u64,
    attempts: u32,
    status: Status,
    at_ms: i64,
) -> OutcomeRow {
    OutcomeRow {
        receipt_id: receipt.into(),
        webhook_id: "fatigue".into(),
        connector: "main".into(),
        action: sendtime::datasets::outcomes::Action::Enroll,
        target: workflow.to_string(),
        status,
        http_status: None,
        message: None,
        attempts,
        in_doubt: false,
        retry_at_ms: None,
        at_ms,
        holdout: false,
    }
}

/// What the disk says after a call to enroll `email` (`vid`) into `workflow` that was made
/// and never answered: the receipt planned, and an `attempting` row with no result. The
/// receipt's id.
fn unanswered_call(data: &Path, email: &str, vid: i64, workflow: u64) -> String {
    planned_with(data, email, vid, |id, t| {
        vec![enroll_row(id, workflow, 1, Status::Attempting, t + 1000)]
    })
}

/// What an unanswered call to enroll `email` (`vid`) into workflow 104 left: the contact
/// enrolled at HubSpot, and on disk its receipt planned with an `attempting` row and no
/// result. The receipt's id.
fn enrolled_by_a_lost_call(
    rt: &tokio::runtime::Runtime,
    standin: &StandIn,
    data: &Path,
    email: &str,
    vid: i64,
) -> String {
    enrolled_at_standin(rt, standin, 104, email, vid);
    unanswered_call(data, email, vid, 104)
}

/// `email` (`vid`) a contact of the stand-in, enrolled into `workflow` there.
fn enrolled_at_standin(
    rt: &tokio::runtime::Runtime,
    standin: &StandIn,
    workflow: u64,
    email: &str,
    vid: i64,
) {
    standin.add_contact(email, vid as u64);
    let client = sendtime::hubspot::Client::new(
        &standin.url(),
        TOKEN,
        sendtime::hubspot::ClientOptions::default(),
    )
    .unwrap();
    rt.block_on(client.enroll(workflow, email)).unwrap();
}

/// A failed call's row that leaves `receipt` in doubt, retried at once.
fn doubt_row(receipt: &str, workflow: u64, attempts: u32, at_ms: i64) -> OutcomeRow {
    OutcomeRow {
        in_doubt: true,
        retry_at_ms: Some(at_ms),
        ..enroll_row(receipt, workflow, attempts, Status::Retrying, at_ms)
    }
}

/// A batch's split (HubSpot refused a batch naming a bad callback; each half is sent again)
/// records `retrying` rows with HubSpot's 4xx: after a restart they are not counted as the
/// contact's transient failures. An earlier version counted them, so a callback split down
/// from 100 could give up after about five real failures instead of twelve.
#[test]
fn retrying_rows_of_a_refused_batch_do_not_use_up_the_retries() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let email = "split@example.com";
    planned_with(&data, email, 8320, |id, t| {
        (1..=11)
            .flat_map(|k| {
                let at = t + i64::from(k) * 1000;
                let mut refused = enroll_row(id, 104, k, Status::Retrying, at + 1);
                refused.http_status = Some(422);
                refused.retry_at_ms = Some(at + 1);
                [enroll_row(id, 104, k, Status::Attempting, at), refused]
            })
            .collect()
    });
    // HubSpot has a bad minute: a 5xx is one failure, retried.
    a_bad_minute_fails_no_one(&rt, dir.path(), &data, now_ms());
}

/// A contact in doubt (an unanswered call to enroll `email` into workflow 105 on disk) and
/// HubSpot failing every call under `failing` with a 503, with `serve` running on a clock
/// file the test moves: ten minutes a look ([`Outage::later`]) is past any wait, so only the
/// count of failures decides.
struct Outage {
    /// The stand-in's: bind it, or the stand-in stops.
    _rt: tokio::runtime::Runtime,
    standin: StandIn,
    _dir: tempfile::TempDir,
    data: PathBuf,
    clock: PathBuf,
    now: i64,
    server: Server,
    receipt: String,
}

impl Outage {
    fn start(failing: &str, email: &str, vid: i64) -> Outage {
        Outage::start_for(failing, email, vid, u64::MAX)
    }

    /// [`Outage::start`], HubSpot failing the first `calls` calls only.
    fn start_for(failing: &str, email: &str, vid: i64, calls: u64) -> Outage {
        use sendtime::hubspot::standin::{Fault, Injection};
        let rt = runtime();
        let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        standin.add_contact(email, vid as u64);
        standin.inject(
            Injection::next(Fault::Status {
                status: 503,
                message: "Service Unavailable".into(),
            })
            .times(calls)
            .on(failing),
        );
        let receipt = unanswered_call(&data, email, vid, 105);
        let config = fatigue_config(dir.path(), &standin.url(), "", "workflow_id = 105");
        let clock = dir.path().join("clock");
        let now = now_ms();
        set_clock(&clock, now);
        let server = start(&config, &data, Some(&clock), &[]);
        Outage {
            _rt: rt,
            standin,
            _dir: dir,
            data,
            clock,
            now,
            server,
            receipt,
        }
    }

    /// Move the clock ten minutes on.
    fn later(&mut self) {
        self.set(self.now + 10 * 60_000);
    }

    /// Move the clock to `at`.
    fn set(&mut self, at: i64) {
        self.now = at;
        set_clock(&self.clock, at);
    }

    /// When each check of the contact's enrollments (a GET) reached HubSpot, in order.
    fn checks(&self) -> Vec<std::time::SystemTime> {
        self.standin
            .log()
            .iter()
            .filter(|e| e.method == "GET" && e.path.contains("/enrollments/contacts/"))
            .map(|e| e.at)
            .collect()
    }

    /// Wait until a whole tick has run since now (one begun after this call, and ended): a
    /// tick ends once its calls have, retries it waits for within it included, which may take
    /// the tick's whole retry horizon (30 s).
    fn whole_tick(&self) {
        let before = common::ticks(&self.server);
        eventually(Duration::from_secs(120), || {
            (common::ticks(&self.server) >= before + 2).then_some(())
        })
        .unwrap_or_else(|| panic!("no whole tick in 120 s; logs:\n{}", self.server.logs()));
    }

    /// Calls with `method` to the contact's enrollments: GET checks, POST sends.
    fn calls(&self, method: &str) -> usize {
        self.standin
            .log()
            .iter()
            .filter(|e| e.method == method && e.path.contains("/enrollments/contacts/"))
            .count()
    }
}

/// A contact in doubt whose enrollments HubSpot will not list (503 on every check): the
/// checks back off as calls do and, after the last, the contact is sent (at-least-once).
/// An earlier version checked about once a second for ever, never sending.
///
/// The backoff ([`Backoff::DISPATCH`]) is checked both ways it waits: within a tick, in real
/// time, by the time between checks; past the tick's retry horizon, in the dispatcher's
/// time, by moving the clock to just short of the shortest wait (no check in a whole tick),
/// then past the longest.
///
/// [`Backoff::DISPATCH`]: sendtime::hubspot::policy::Backoff::DISPATCH
#[test]
fn a_failing_enrollments_check_backs_off_and_then_sends() {
    use sendtime::hubspot::policy::Backoff;
    let backoff = Backoff::DISPATCH;
    let tries = backoff.give_up_after as usize;
    // The wait after the `n`-th failure in a row before its jitter: each wait is drawn from
    // half of it to one and a half times it, never past the cap.
    let full = |n: usize| {
        backoff
            .base
            .saturating_mul(1 << (n - 1).min(16))
            .min(backoff.cap)
    };
    let email = "grace@example.com";
    let mut o = Outage::start(
        "/automation/v2/workflows/enrollments/contacts/",
        email,
        8310,
    );
    // The checks made when the clock moved past a wait: the check after is in a later tick.
    let mut moved_after = Vec::new();
    loop {
        o.whole_tick();
        let n = o.calls("GET");
        if n >= tries {
            break;
        }
        assert!(n > 0, "no check; logs:\n{}", o.server.logs());
        // Left to a later tick after `n` failures: it waits at least half its full wait.
        let from = o.now;
        let least = (full(n) / 2).as_millis() as i64;
        let most = (full(n) * 3 / 2).min(backoff.cap).as_millis() as i64;
        o.set(from + least * 9 / 10);
        o.whole_tick();
        assert_eq!(
            o.calls("GET"),
            n,
            "checked again {} ms after {n} failures (the wait is at least {least} ms); logs:\n{}",
            least * 9 / 10,
            o.server.logs()
        );
        moved_after.push(n);
        o.set(from + most + 1_000);
    }
    // Within a tick: each check waited at least half its full wait after the one before.
    let checks = o.checks();
    for n in 1..checks.len() {
        if moved_after.contains(&n) {
            continue;
        }
        let waited = checks[n].duration_since(checks[n - 1]).unwrap_or_default();
        assert!(
            waited >= full(n) / 2,
            "check {} came {waited:?} after check {n} (at least {:?}); moved after {moved_after:?}",
            n + 1,
            full(n) / 2
        );
    }
    assert!(
        moved_after.len() < tries - 1,
        "no check waited within a tick: {moved_after:?}"
    );
    let enrolled = enrollments(&o.standin.log())
        .get(&("105".to_string(), email.to_string()))
        .copied();
    assert_eq!(
        enrolled,
        Some(1),
        "{} checks; logs:\n{}",
        o.calls("GET"),
        o.server.logs()
    );
    assert_eq!(
        o.calls("GET"),
        tries,
        "one check per failure the dispatcher allows"
    );
}

/// A contact in doubt while HubSpot fails every call (503 on checks and enrollments): after
/// the checks' tries, one send (at-least-once); the outage going on, it is checked again at
/// growing intervals, never sent unchecked again, until three days after it was due; then it
/// is sent once more and, when that fails too, fails. An earlier version failed it after the
/// twelve tries, about 18 minutes of an outage; one before that gave each failed send tries
/// of its own, and each put the contact back in doubt: a check and an unchecked send every
/// half hour for as long as the outage lasted, and it never failed.
#[test]
fn a_contact_in_doubt_is_tried_through_an_outage_until_three_days_past_due() {
    use sendtime::hubspot::policy::{Backoff, OUTLAST_MS};
    let tries = Backoff::DISPATCH.give_up_after as usize;
    let mut o = Outage::start("/automation/v2/workflows/", "hedy@example.com", 8311);
    let due = plans(&o.data)[0].due_at_ms;
    let failed = |o: &Outage| {
        outcomes(&o.data)
            .into_iter()
            .find(|r| r.receipt_id == o.receipt && r.status == Status::Failed)
    };
    // A whole tick each ten minutes: past the tries, three checks more, hours of outage.
    for _ in 0..40 {
        if o.calls("GET") >= tries + 3 || failed(&o).is_some() {
            break;
        }
        o.later();
        o.whole_tick();
    }
    assert!(
        failed(&o).is_none() && o.calls("GET") >= tries + 3,
        "{} checks, failed {:?}, {} h into the outage; logs:\n{}",
        o.calls("GET"),
        failed(&o),
        (o.now - due) / 3_600_000,
        o.server.logs()
    );
    assert_eq!(
        o.calls("POST"),
        1,
        "one unchecked send, after the checks' tries"
    );
    // Half an hour short of three days past due, then ten minutes a look.
    o.set(due + OUTLAST_MS - 30 * 60_000);
    let last = eventually(Duration::from_secs(120), || {
        o.later();
        failed(&o)
    });
    let (checks, sends) = (o.calls("GET"), o.calls("POST"));
    let logs = o.server.stop();
    let last = last.unwrap_or_else(|| panic!("{checks} checks, {sends} sends; logs:\n{logs}"));
    assert!(last.at_ms >= due + OUTLAST_MS, "{last:?}");
    assert_eq!(
        sends, 2,
        "one unchecked send after the tries, one at the end"
    );
}

/// A contact in doubt whose checks fail, and whose unchecked send after them fails in a way
/// that says nothing of the earlier call (a 423, refused before it was taken): its doubt
/// stands, so the later tries check again rather than send unchecked again. An earlier
/// version cleared the doubt with that failure, and sent unchecked at every later try (a
/// review found it).
#[test]
fn a_doubt_no_check_settled_stands_through_an_outage() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let tries = 12;
    let mut o = Outage::start(
        "/automation/v2/workflows/enrollments/contacts/",
        "iris@example.com",
        8313,
    );
    o.standin.inject(
        Injection::next(Fault::Status {
            status: 423,
            message: "Locked".into(),
        })
        .times(u64::MAX)
        .on("/automation/v2/workflows/105/"),
    );
    for _ in 0..40 {
        if o.calls("GET") >= tries + 3 {
            break;
        }
        o.later();
        o.whole_tick();
    }
    let (checks, sends) = (o.calls("GET"), o.calls("POST"));
    let logs = o.server.stop();
    assert!(checks >= tries + 3, "{checks} checks; logs:\n{logs}");
    assert_eq!(sends, 1, "one unchecked send; {checks} checks");
}

/// A contact in doubt through an outage of 20 calls (checks, and the unchecked send after
/// the twelfth): when HubSpot answers again, its check finds it not enrolled, and it is
/// enrolled once; nothing failed. An earlier version failed it when the unchecked send did.
#[test]
fn an_enrollment_outlasts_an_outage_and_goes_out_when_it_ends() {
    let email = "ida@example.com";
    let mut o = Outage::start_for("/automation/v2/workflows/", email, 8312, 20);
    let enrolled = |o: &Outage| {
        enrollments(&o.standin.log())
            .get(&("105".to_string(), email.to_string()))
            .copied()
    };
    for _ in 0..60 {
        if enrolled(&o).is_some() {
            break;
        }
        o.later();
        o.whole_tick();
    }
    let enrolled = enrolled(&o);
    let (checks, sends) = (o.calls("GET"), o.calls("POST"));
    let logs = o.server.stop();
    assert_eq!(
        enrolled,
        Some(1),
        "{checks} checks, {sends} sends; logs:\n{logs}"
    );
    let rows = outcomes(&o.data);
    assert!(rows.iter().all(|r| r.status != Status::Failed), "{rows:?}");
    // Tried past its tries: an earlier version failed it at the twelfth failure.
    let refused = (rows.iter())
        .filter(|r| r.status == Status::Retrying && r.http_status == Some(503))
        .count();
    assert!(refused > 12, "{refused} failures recorded: {rows:?}");
    assert_eq!(
        sends, 2,
        "the unchecked send after the tries, and the one that took"
    );
}

/// The `fatigue` webhook as a list webhook.
const LISTED: Hook = Hook {
    id: "fatigue",
    kind: "UPDATE_ONLY",
    target: "list_id = \"987\"",
};

/// A stand-in that knows `email` as `vid`, and a data folder holding its receipt, planned as
/// an `UPDATE_ONLY` post of `fatigue` ([`LISTED`]).
fn listed_receipt(
    email: &str,
    vid: i64,
) -> (tokio::runtime::Runtime, StandIn, tempfile::TempDir, PathBuf) {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    standin.add_contact(email, vid as u64);
    planned_as(&data, WebhookType::UpdateOnly, email, vid, |_, _| {
        Vec::new()
    });
    (rt, standin, dir, data)
}

/// A list add through an outage longer than its tries (16 failures, hours apart at the end)
/// under `sendtime tick`: tried again at growing intervals and listed when HubSpot answers
/// again; nothing failed. An earlier version failed the contact at the twelfth failure.
#[test]
fn a_list_add_outlasts_an_outage() {
    let (_rt, standin, dir, data) = listed_receipt("june@example.com", 8350);
    let down = Fault::Status {
        status: 503,
        message: "Service Unavailable".into(),
    };
    standin.inject(
        Injection::next(down)
            .times(16)
            .on("/crm/lists/2026-03/987/memberships"),
    );
    let config = write_config(dir.path(), &standin.url(), "", &[&LISTED]);
    let (mut at, mut processes) = (now_ms(), 0);
    while standin.list_members("987").is_empty() && processes < 40 {
        tick_once(&config, &data, at, TOKEN);
        processes += 1;
        at += 10 * 60_000;
    }
    assert_eq!(standin.list_members("987"), ["8350"], "{processes} ticks");
    let rows = outcomes(&data);
    assert!(rows.iter().all(|r| r.status != Status::Failed), "{rows:?}");
    let refused = (rows.iter())
        .filter(|r| r.status == Status::Retrying && r.http_status == Some(503))
        .count();
    assert_eq!(refused, 16, "{rows:?}");
}

/// Posts taken unsigned while the connector was in dry run (a listener anyone reaches may take
/// them) are only ever recorded as dry runs: once the connector calls HubSpot they are not
/// sent, whether they were planned before (read back at start-up) or are planned after (from
/// the inbox). They were enrolled for real, anyone's contacts into the account's workflows.
#[test]
fn unsigned_posts_taken_in_dry_run_are_never_sent() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write = |connector: &str, cron: &str| {
        TestConfig {
            env: "DISPATCH",
            tables: &format!("[scheduler]\ncron = \"{cron}\""),
            connector: &format!("api_base = \"{}\"\n{connector}", standin.url()),
            hooks: &[&HOOKS[3]],
            ..TestConfig::default()
        }
        .write(dir.path())
    };
    // In dry run, taking unsigned posts, planning nothing before the next start.
    let dry = write("dry_run = true\nallow_unsigned = true", "0 0 0 1 1 *");
    let server = start(&dry, &data, None, &[]);
    for (vid, email) in [(8501, "u1@example.com"), (8502, "u2@example.com")] {
        let resp = common::http()
            .post(server.url("/hooks/fatigue"))
            .body(common::contact_body(vid, email))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    server.stop();
    let received = sendtime::datasets::inbox::recover(&data).unwrap();
    assert_eq!(received.len(), 2);
    assert!(
        received.iter().all(|r| r.dry_run_only),
        "stored as taken in dry run"
    );
    // The first planned before the connector goes live, the second not yet.
    let first = received
        .iter()
        .find(|r| r.contact_id == Some(8501))
        .unwrap();
    let t = now_ms() - 60_000;
    let mut row = plan::frame(&[PlanRow {
        receipt_id: first.receipt_id.clone(),
        webhook_id: "fatigue".into(),
        webhook_type: WebhookType::Immediate,
        contact_id: Some(8501),
        email: Some("u1@example.com".into()),
        received_at_ms: first.received_at_ms,
        due_at_ms: t,
        slot: None,
        reason: "immediately".into(),
        planned_at_ms: t,
        callback_id: None,
        holdout: false,
        time_zone: None,
        hold_ends_ms: None,
        portal_id: None,
        holdout_share: None,
    }])
    .unwrap();
    plan::dataset(&data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut row)
        .unwrap();

    let live = write("", "* * * * * *");
    let server = start(&live, &data, None, &[]);
    standin.add_contact("signed@example.com", 8503);
    post(&server, "fatigue", 8503, "signed@example.com");
    let recorded = eventually(Duration::from_secs(20), || {
        let rows = outcomes(&data);
        let dry: Vec<_> = rows
            .iter()
            .filter(|r| r.status == Status::DryRun)
            .cloned()
            .collect();
        let sent = rows.iter().any(|r| r.status == Status::Enrolled);
        (dry.len() == 2 && sent).then_some(dry)
    })
    .unwrap_or_else(|| panic!("not recorded; logs:\n{}", server.logs()));
    server.stop();
    assert!(
        recorded.iter().all(|r| r
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("never sent to HubSpot")),
        "{recorded:?}"
    );
    let enrolled = enrollments(&standin.log());
    assert_eq!(
        enrolled.keys().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
        ["signed@example.com"],
        "only the signed post is sent"
    );
}

/// A daily-limit pause an earlier run stored shows on `/status` from the first tick, before
/// any contact comes due. It showed only once one did: the connector read "sending" for hours.
#[test]
fn a_stored_daily_limit_pause_shows_before_anything_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let until = now_ms() + 2 * 3_600_000;
    std::fs::create_dir_all(data.join("state")).unwrap();
    std::fs::write(data.join("state/dispatch-pause-main"), until.to_string()).unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "", &[&HOOKS[0]]);
    let server = start(&config, &data, None, &[]);
    let paused = eventually(Duration::from_secs(10), || {
        let status: serde_json::Value = common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap();
        let c = &status["connectors"][0];
        (c["paused"] == "daily_limit").then(|| c["paused_until_ms"].as_i64())
    });
    let logs = server.stop();
    assert_eq!(paused, Some(Some(until)), "{logs}");
}

/// A stand-in that answers its first enrollment 6 s late (time to take the outcomes folder
/// away meanwhile), and a config of `fatigue` (workflow 104) on it: the runtime to keep, the
/// stand-in, the folder, the data folder and the config.
fn first_enrollment_answered_late() -> (
    tokio::runtime::Runtime,
    StandIn,
    tempfile::TempDir,
    PathBuf,
    PathBuf,
) {
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    standin.inject(
        Injection::next(Fault::Slow(Duration::from_secs(6))).on("/automation/v2/workflows/"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    (rt, standin, dir, data, config)
}

/// `sendtime tick` from a shell without the token's variable, beside a running `serve`: it
/// says first that another sendtime dispatches from the folder (what stops it), then what the
/// shell lacks. It named the variable alone, and a user who set it met the lock next.
#[test]
fn a_tick_beside_serve_from_a_shell_without_its_token_names_the_serve_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "", &[&HOOKS[3]]);
    let server = start(&config, &data, None, &[]);
    let said = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let beside = said(common::run(&config, &data, &["tick"], &[]));
    let (lock, token) = (
        beside.find("another sendtime"),
        beside.find("DISPATCH_TOKEN"),
    );
    assert!(lock.is_some() && lock < token, "{beside}");
    server.stop();
    let alone = said(common::run(&config, &data, &["tick"], &[]));
    assert!(!alone.contains("another sendtime"), "{alone}");
    assert!(alone.contains("DISPATCH_TOKEN"), "{alone}");
}

/// `sendtime tick`, run once (from cron), exits non-zero when an outcome row could not be
/// written (the outcomes folder gone while HubSpot answers), saying so; the next tick records
/// the enrollment without calling again. It exited 0.
#[test]
fn a_tick_that_cannot_record_an_outcome_fails() {
    let (_rt, standin, _dir, data, config) = first_enrollment_answered_late();
    let emails = receive_only(&config, &data, &standin, ("t", 1), 8950);
    let at = (now_ms() + 60_000).to_string();
    let tick = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .args(["tick", "--now", &at])
        .env("DISPATCH_SECRET", SECRET)
        .env("DISPATCH_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), || {
        (standin.log().iter())
            .any(|e| e.path.starts_with("/automation/v2/workflows/"))
            .then_some(())
    })
    .expect("the enrollment call is made");
    let folder = data.join("outcomes");
    let aside = data.join("outcomes-aside");
    std::fs::rename(&folder, &aside).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let out = tick.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("outcome rows could not be written"), "{said}");
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&aside, &folder).unwrap();
    common::sendtime(
        &config,
        &data,
        &["tick", "--now", &at],
        &[("DISPATCH_TOKEN", TOKEN)],
    );
    enrolled_once(&standin, "104", &emails);
    let statuses: Vec<Status> = outcomes(&data).into_iter().map(|r| r.status).collect();
    assert!(statuses.contains(&Status::Enrolled), "{statuses:?}");
}

/// Something in front of HubSpot passes an enrollment on and answers a 200 page in its place:
/// the call may have been taken, so the contact is checked before it is sent again, and found
/// enrolled. Taken for a call that never went, it was sent again after the pause.
#[test]
fn an_enrollment_answered_by_a_2xx_page_is_checked_before_it_is_sent_again() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let email = "paged@example.com";
    standin.add_contact(email, 8960);
    planned_with(&data, email, 8960, |_, _| Vec::new());
    standin.inject(
        Injection::next(Fault::HtmlAfterProcessing(200))
            .on("/automation/v2/workflows/104/enrollments/contacts/"),
    );
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let mut at = now_ms();
    for _ in 0..3 {
        tick_once(&config, &data, at, TOKEN);
        at += 6 * 60_000;
    }
    // The page's call (its 200 logged) was the one enrollment call.
    let calls = (standin.log().iter())
        .filter(|e| e.method == "POST" && e.path.contains("/enrollments/contacts/"))
        .count();
    assert_eq!(calls, 1, "{:?}", standin.log());
    let enrolled = (outcomes(&data).into_iter())
        .find(|r| r.status == Status::Enrolled)
        .expect("recorded as enrolled");
    assert!(
        enrolled
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("already enrolled"),
        "{enrolled:?}"
    );
}

/// A contact posted without a HubSpot id (no check can tell whether a lost answer's call
/// enrolled it) whose every enrollment HubSpot takes and answers too late: sent twice at most,
/// then failed, saying an earlier call may have enrolled it. It was sent once per timeout, up
/// to twelve times.
#[test]
fn a_contact_without_an_id_is_sent_at_most_twice_through_timeouts() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let email = "slowly@example.com";
    standin.add_contact(email, 8950);
    standin.inject(
        Injection::next(Fault::Slow(Duration::from_millis(1500)))
            .times(u64::MAX)
            .on("/automation/v2/workflows/104/enrollments/contacts/"),
    );
    let server = start(
        &config,
        &data,
        None,
        &[("SENDTIME_HUBSPOT_TIMEOUT_MS", "500")],
    );
    post_body(
        &server,
        "fatigue",
        format!(r#"{{"portal-id": 62515, "properties": {{"email": {{"value": "{email}"}}}}}}"#),
    );
    let failed = eventually(Duration::from_secs(60), || {
        outcomes(&data)
            .into_iter()
            .find(|r| r.status == Status::Failed)
    })
    .unwrap_or_else(|| panic!("not failed; logs:\n{}", server.logs()));
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("may have enrolled it"),
        "{failed:?}"
    );
    common::wait_ticks(&server, 2);
    server.stop();
    assert_eq!(
        enrollments(&standin.log()).get(&("104".to_string(), email.to_string())),
        Some(&2)
    );
}

/// A contact posted without a HubSpot id whose first call's answer was lost and whose second
/// was in flight at a crash (its `attempting` row alone): two calls may each have enrolled it
/// and no check can tell, so it fails without a third (a restart sent it again, once per
/// crash: an audit). One doubt alone (the crash's call its first) is sent once more.
#[test]
fn a_contact_without_an_id_in_doubt_twice_across_a_crash_is_not_sent_again() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (twice, once, crashed) = (
        "twice@example.com",
        "once@example.com",
        "crashed@example.com",
    );
    standin.add_contact(twice, 8960);
    standin.add_contact(once, 8961);
    standin.add_contact(crashed, 8962);
    // Id 0: none to check by, as a post without one.
    let doubted = planned_with(&data, twice, 0, |id, t| {
        vec![
            enroll_row(id, 104, 1, Status::Attempting, t + 1000),
            doubt_row(id, 104, 1, t + 2000),
            enroll_row(id, 104, 2, Status::Attempting, t + 3000),
        ]
    });
    planned_with(&data, once, 0, |id, t| {
        vec![enroll_row(id, 104, 1, Status::Attempting, t + 1000)]
    });
    // Two crashes, each in a call.
    let crashed_twice = planned_with(&data, crashed, 0, |id, t| {
        vec![
            enroll_row(id, 104, 1, Status::Attempting, t + 1000),
            enroll_row(id, 104, 2, Status::Attempting, t + 2000),
        ]
    });
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    tick_once(&config, &data, now_ms(), TOKEN);
    let sent = enrollments(&standin.log());
    let key = |email: &str| ("104".to_string(), email.to_string());
    let sent = [twice, once, crashed].map(|e| sent.get(&key(e)).copied());
    assert_eq!(sent, [None, Some(1), None]);
    let rows = outcomes(&data);
    for receipt in [&doubted, &crashed_twice] {
        let failed = (rows.iter())
            .find(|r| r.receipt_id == *receipt && r.status == Status::Failed)
            .expect("a failed row");
        let why = failed.message.as_deref().unwrap_or_default();
        assert!(why.contains("may have enrolled it"), "{why}");
    }
}

/// HubSpot takes an enrollment, and the row saying so cannot be written (the outcomes folder
/// is gone, as on a full disk): once it is back, the contact is recorded as enrolled, at the
/// time HubSpot took it, and HubSpot is not called again. It was put back in doubt, and a
/// contact without a HubSpot id (nothing to look its enrollments up by) was enrolled twice.
/// An operator's pause set meanwhile does not hold the row back (it held it until resumed).
#[test]
fn an_enrollment_whose_row_cannot_be_written_is_not_sent_again() {
    row_left_to_write(false);
}

/// Nor does a reload that removes its webhook meanwhile: the row waited, unrecorded, among the
/// contacts held for a webhook that is gone (an audit).
#[test]
fn an_enrollment_whose_row_cannot_be_written_is_recorded_with_its_webhook_removed() {
    row_left_to_write(true);
}

/// HubSpot takes an enrollment of webhook `fatigue` whose row cannot be written; meanwhile
/// the webhook is paused, or (`removed`) a reload removes it.
fn row_left_to_write(removed: bool) {
    let (_rt, standin, dir, data, config) = first_enrollment_answered_late();
    let clock = dir.path().join("clock");
    let now = now_ms();
    set_clock(&clock, now);
    let server = start(&config, &data, Some(&clock), &[]);
    let email = "unwritten@example.com";
    standin.add_contact(email, 8900);
    post_body(
        &server,
        "fatigue",
        format!(r#"{{"portal-id": 62515, "properties": {{"email": {{"value": "{email}"}}}}}}"#),
    );
    set_clock(&clock, now + 60_000);
    wait_enrolled(&standin, &server, "104", email);
    let folder = data.join("outcomes");
    let aside = data.join("outcomes-aside");
    std::fs::rename(&folder, &aside).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    // Said on /status and counted, not only logged.
    let write_error = || write_error(&server, "outcomes");
    let said = eventually(Duration::from_secs(20), write_error).expect("a write error on /status");
    assert!(said.contains("outcomes"), "{said}");
    // The answer came after the folder went (6 s late): no row says "enrolled" yet, so what
    // follows is the path of a row that could not be written, not the ordinary one.
    let written: Vec<String> = std::fs::read_dir(&aside)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .flat_map(|p| {
            let df = sendtime::store::read_part(&p).unwrap();
            let statuses = df.column("status").unwrap().str().unwrap().clone();
            statuses
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !written.iter().any(|s| s == Status::Enrolled.as_str()),
        "the enrollment was recorded before its folder went: {written:?}"
    );
    let failures = r#"sendtime_write_failures_total{dataset="outcomes"}"#;
    assert!(common::metric(&server, failures) >= 1);
    if removed {
        write_config(dir.path(), &standin.url(), "", &[&FINE]);
        wait_for_config(&server, &config);
    } else {
        let paused = common::sendtime(&config, &data, &["pause", "fatigue"], &[]);
        assert!(paused.contains("webhook fatigue paused"), "{paused}");
    }
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&aside, &folder).unwrap();
    // Past the minute it waits after a row that could not be written.
    set_clock(&clock, now + 5 * 60_000);
    let enrolled = eventually(Duration::from_secs(20), || {
        outcomes(&data)
            .into_iter()
            .find(|r| r.status == Status::Enrolled)
    })
    .unwrap_or_else(|| panic!("not recorded; logs:\n{}", server.logs()));
    eventually(Duration::from_secs(10), || {
        write_error().is_none().then_some(())
    })
    .expect("over once a write succeeds");
    // Ticks that ran whole after the row was recorded: none calls HubSpot again.
    common::wait_ticks(&server, 2);
    // Counted once, as its row was written (an earlier version also counted the try whose
    // row could not be, so /metrics said 2).
    let counted = r#"sendtime_dispatch_outcomes_total{status="enrolled"}"#;
    assert_eq!(common::metric(&server, counted), 1);
    server.stop();
    let sent = enrollments(&standin.log());
    assert_eq!(
        sent.get(&("104".to_string(), email.to_string())),
        Some(&1),
        "{:?}",
        standin.log()
    );
    assert!(enrolled.at_ms < now + 5 * 60_000, "{enrolled:?}");
}

/// HubSpot's gateway gives up on an enrollment (a 504, 6 s late) after the outcomes folder
/// went (as on a full disk): the retry, whose row is not written again, is on `/status` as in
/// `/metrics`, in the webhook's counts and as the connector's last error. `/status` showed
/// neither: it counted only rows written.
#[test]
fn a_retry_whose_row_cannot_be_written_is_on_status() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    standin.inject(
        Injection::next(Fault::LateStatus {
            status: 504,
            after: Duration::from_secs(6),
        })
        .on("/automation/v2/workflows/"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let clock = dir.path().join("clock");
    let now = now_ms();
    set_clock(&clock, now);
    let server = start(&config, &data, Some(&clock), &[]);
    standin.add_contact("late@example.com", 8900);
    post(&server, "fatigue", 8900, "late@example.com");
    set_clock(&clock, now + 60_000);
    eventually(Duration::from_secs(20), || {
        standin
            .log()
            .iter()
            .any(|e| {
                e.path
                    .starts_with("/automation/v2/workflows/104/enrollments")
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no enrollment call; logs:\n{}", server.logs()));
    let folder = data.join("outcomes");
    std::fs::rename(&folder, data.join("outcomes-aside")).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let status = || -> Option<serde_json::Value> {
        common::get(server.admin_url("/status")).ok()?.json().ok()
    };
    let shown = eventually(Duration::from_secs(20), || {
        let s = status()?;
        (s["connectors"][0]["last_error"]["http_status"] == 504).then_some(s)
    })
    .unwrap_or_else(|| panic!("no last error; /status: {:?}", status()));
    assert_eq!(shown["webhooks"][0]["counts"]["retrying"], 1, "{shown}");
    assert_eq!(shown["webhooks"][0]["counts"]["sent"], 0, "{shown}");
    assert!(shown["write_errors"]["outcomes"].is_string(), "{shown}");
    let retried = r#"sendtime_dispatch_outcomes_total{status="retrying"}"#;
    assert_eq!(common::metric(&server, retried), 1);
    server.stop();
}

/// Posts answered while the inbox cannot be written to Parquet (its folder gone, as on a full
/// disk) stay in the log, and `/status` says why they wait; once it can, they are sent and
/// `/status` says nothing more. It said nothing while they waited.
#[test]
fn posts_that_cannot_reach_parquet_wait_in_the_log_and_status_says_why() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let server = start(&config, &data, None, &[]);
    let folder = data.join("inbox");
    let aside = data.join("inbox-aside");
    std::fs::rename(&folder, &aside).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let email = "logged@example.com";
    standin.add_contact(email, 8950);
    post(&server, "fatigue", 8950, email);
    let write_error = || write_error(&server, "inbox");
    let said = eventually(Duration::from_secs(20), write_error)
        .unwrap_or_else(|| panic!("no write error on /status; logs:\n{}", server.logs()));
    assert!(said.contains("rows stay in the log"), "{said}");
    let failures = r#"sendtime_write_failures_total{dataset="inbox"}"#;
    assert!(common::metric(&server, failures) >= 1);
    common::wait_ticks(&server, 2);
    assert!(enrollments(&standin.log()).is_empty(), "sent unplanned");
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(&aside, &folder).unwrap();
    wait_enrolled(&standin, &server, "104", email);
    eventually(Duration::from_secs(10), || {
        write_error().is_none().then_some(())
    })
    .expect("over once the flush succeeds");
    server.stop();
}

/// A disk where nothing can be written (here a file size limit of 0 set on the running
/// `serve`: each write fails, as on a full disk) gets posts answered 503, said on `/status`,
/// and leaves no file per retry: an earlier version left an empty log segment each time the
/// writer tried again (92 in 45 s). Once writes succeed, posts are taken and sent again.
#[test]
fn a_disk_that_takes_no_write_refuses_posts_and_leaves_no_file_per_try() {
    // Past its file size limit a process gets SIGXFSZ, which ends it; ignored here (and so in
    // the `serve` this test starts), the write fails instead, as one on a full disk does.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let file_size_limit = |pid: u32, bytes: libc::rlim_t| {
        let limit = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: libc::RLIM_INFINITY,
        };
        let set =
            unsafe { libc::prlimit(pid as i32, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    };
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let server = start(&config, &data, None, &[]);
    let email = "before@example.com";
    standin.add_contact(email, 8960);
    post(&server, "fatigue", 8960, email);
    wait_enrolled(&standin, &server, "104", email);
    let wal = data.join("wal");
    let segments = || std::fs::read_dir(&wal).unwrap().count();
    let before = segments();

    file_size_limit(server.child.id(), 0);
    let client = common::http();
    let body = |vid: u64| common::contact_body(vid, &format!("refused{vid}@example.com"));
    // Five seconds of posts: the writer tries again at each.
    for vid in 8970..8990 {
        let status = common::post_signed(&client, &server, SECRET, "/hooks/fatigue", body(vid));
        assert_eq!(status, 503, "a post answered {status} with nothing written");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(write_error(&server, "inbox").is_some(), "not on /status");
    let left = segments();
    assert!(left <= before + 1, "{left} log segments, {before} before");

    file_size_limit(server.child.id(), libc::RLIM_INFINITY);
    let email = "after@example.com";
    standin.add_contact(email, 8991);
    eventually(Duration::from_secs(20), || {
        let status = common::post_signed(
            &client,
            &server,
            SECRET,
            "/hooks/fatigue",
            common::contact_body(8991, email),
        );
        (status == 200).then_some(())
    })
    .expect("posts taken once writes succeed");
    wait_enrolled(&standin, &server, "104", email);
    eventually(Duration::from_secs(10), || {
        write_error(&server, "inbox").is_none().then_some(())
    })
    .expect("/status says nothing once writes succeed");
    server.stop();
    let sent = enrollments(&standin.log());
    assert!(
        sent.keys().all(|(_, e)| !e.starts_with("refused")),
        "a refused post was sent: {sent:?}"
    );
}

/// What `/status` says of the last failed write to `dataset`, if anything.
fn write_error(server: &Server, dataset: &str) -> Option<String> {
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    status["write_errors"][dataset].as_str().map(String::from)
}

/// A token and a client secret set with a final newline (a secret file, CRLF line ends) are
/// used without it. The secret's newline refused every post (401); the token's failed every
/// call before it left, as a connection failure (the contact was retried, then failed).
#[test]
fn credentials_set_with_a_final_newline_are_used_without_it() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let secret = format!("{SECRET}\r\n");
    let token = format!("{TOKEN}\n");
    let server = start(
        &config,
        &data,
        None,
        &[("DISPATCH_SECRET", &secret), ("DISPATCH_TOKEN", &token)],
    );
    let email = "newline@example.com";
    standin.add_contact(email, 8800);
    post(&server, "fatigue", 8800, email);
    wait_enrolled(&standin, &server, "104", email);
    server.stop();
}

/// An edge that answers a 404 page, not HubSpot's API (a retired route, a wrong `api_base`,
/// an incident): every call would get it, so the connector is paused and its contacts wait,
/// then go once HubSpot answers. The contact failed for good.
#[test]
fn a_404_page_instead_of_the_api_pauses_the_connector_and_fails_no_one() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    standin.inject(Injection::next(Fault::Html(404)).on("/automation/v2/workflows/"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let clock = dir.path().join("clock");
    let now = now_ms();
    set_clock(&clock, now);
    let server = start(&config, &data, Some(&clock), &[]);
    let email = "edge@example.com";
    standin.add_contact(email, 8700);
    post(&server, "fatigue", 8700, email);
    set_clock(&clock, now + 60_000);
    let paused = eventually(Duration::from_secs(20), || {
        let status: serde_json::Value = common::get(server.admin_url("/status"))
            .unwrap()
            .json()
            .unwrap();
        (status["connectors"][0]["paused"] == "no_api_route").then_some(())
    });
    assert!(paused.is_some(), "not paused; logs:\n{}", server.logs());
    // Past the pause: HubSpot answers, and the contact goes.
    set_clock(&clock, now + 7 * 60_000);
    wait_enrolled(&standin, &server, "104", email);
    server.stop();
    assert!(outcomes(&data).iter().all(|r| r.status != Status::Failed));
}

/// A 404 page for one contact's call while the connector's other enrollments go through is
/// that call's (an HTML 404 for one record), not the route's: the contact is retried with
/// backoff and the connector goes on. It paused the connector for five minutes at each of
/// that contact's tries (an audit).
#[test]
fn a_404_page_for_one_contact_while_others_go_through_holds_only_that_contact() {
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let clock = dir.path().join("clock");
    let now = now_ms();
    set_clock(&clock, now);
    let server = start(&config, &data, Some(&clock), &[]);
    let contacts = ["first@example.com", "odd@example.com", "after@example.com"];
    for (n, email) in contacts.iter().enumerate() {
        standin.add_contact(email, 8900 + n as u64);
    }
    post(&server, "fatigue", 8900, contacts[0]);
    set_clock(&clock, now + 60_000);
    wait_enrolled(&standin, &server, "104", contacts[0]);
    standin.inject(
        Injection::next(Fault::Html(404))
            .times(u64::MAX)
            .on("/automation/v2/workflows/104/enrollments/contacts/odd"),
    );
    post(&server, "fatigue", 8901, contacts[1]);
    set_clock(&clock, now + 2 * 60_000);
    let retrying = eventually(Duration::from_secs(20), || {
        outcomes(&data)
            .iter()
            .any(|r| r.status == Status::Retrying && r.http_status == Some(404))
            .then_some(())
    });
    assert!(retrying.is_some(), "not retried; logs:\n{}", server.logs());
    // The connector is not paused: the next contact goes, once the tick that retries the
    // first with backoff (some 20 s) has ended, long before the five minutes of a pause.
    post(&server, "fatigue", 8902, contacts[2]);
    set_clock(&clock, now + 3 * 60_000);
    eventually(Duration::from_secs(90), || {
        let key = ("104".to_string(), contacts[2].to_string());
        enrollments(&standin.log()).get(&key).copied()
    })
    .unwrap_or_else(|| panic!("not enrolled; logs:\n{}", server.logs()));
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    assert!(status["connectors"][0]["paused"].is_null(), "{status}");
    server.stop();
}

/// An account where workflow 101 alone exists, with a data folder and a clock file set to now
/// (`t0`): the workflow tests below each start `serve` on them with their own config.
struct Workflow101 {
    /// The stand-in's: bind it, or the stand-in stops.
    _rt: tokio::runtime::Runtime,
    standin: StandIn,
    dir: tempfile::TempDir,
    data: PathBuf,
    clock: PathBuf,
    t0: i64,
}

impl Workflow101 {
    fn new() -> Workflow101 {
        let rt = runtime();
        let standin = rt
            .block_on(StandIn::start(Options {
                token: TOKEN.into(),
                workflows: vec![101],
                ..Options::default()
            }))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (data, clock) = (dir.path().join("data"), dir.path().join("clock"));
        let t0 = now_ms();
        set_clock(&clock, t0);
        Workflow101 {
            _rt: rt,
            standin,
            dir,
            data,
            clock,
            t0,
        }
    }

    /// How many times workflow 101 was read.
    fn reads(&self) -> usize {
        self.standin
            .log()
            .iter()
            .filter(|e| e.method == "GET" && e.path == "/automation/v3/workflows/101")
            .count()
    }

    /// Turn workflow 101 off, move the clock eleven minutes past `t0` (its first call: it is
    /// read then) and post `n` contacts to `fine` (ids from `vid`, emails `{prefix}{i}@…`).
    /// The first one's call reads it and holds it; the others are posted once it is held
    /// (calls admitted while a periodic read is under way go, by design: a read that hangs
    /// would otherwise stop them all). The clock's time, and the emails.
    fn post_while_off(
        &self,
        server: &Server,
        prefix: &str,
        vid: u64,
        n: u64,
    ) -> (i64, Vec<String>) {
        self.standin.set_workflows_off(vec![101]);
        let t1 = self.t0 + 11 * 60_000;
        set_clock(&self.clock, t1);
        let emails = (0..n)
            .map(|i| {
                let email = format!("{prefix}{i}@example.com");
                self.standin.add_contact(&email, vid + i);
                post(server, "fine", vid + i, &email);
                if i == 0 {
                    eventually(Duration::from_secs(30), || {
                        let held = status(server)["connectors"][0]["held_targets"].clone();
                        held.as_array().is_some_and(|h| !h.is_empty()).then_some(())
                    })
                    .unwrap_or_else(|| panic!("workflow not held; logs:\n{}", server.logs()));
                }
                email
            })
            .collect();
        (t1, emails)
    }

    /// `serve` with the `fine` webhook (into 101) on a connector with `extra` settings, and
    /// its config, once it has enrolled a first contact (id `vid`) due at once: the first
    /// call to the workflow, which is not read.
    fn serve_after_a_first_enrollment(&self, vid: u64, extra: &str) -> (PathBuf, Server) {
        let config = write_config(self.dir.path(), &self.standin.url(), extra, &[&FINE]);
        let server = start(&config, &self.data, Some(&self.clock), &[]);
        self.standin.add_contact("first@example.com", vid);
        post(&server, "fine", vid, "first@example.com");
        set_clock(&self.clock, self.t0 + 30_000);
        wait_enrolled(&self.standin, &server, "101", "first@example.com");
        assert_eq!(self.standin.enrollments_of("first@example.com"), vec![101]);
        (config, server)
    }
}

/// `/status` as the admin listener answers it.
fn status(server: &Server) -> serde_json::Value {
    common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap()
}

/// A workflow turned off in HubSpot while contacts are sent to it: HubSpot enrolls only into
/// a workflow that is on, and the stand-in, as HubSpot may, takes the call (204) and enrolls no
/// one. The call due ten minutes after the first call (or the last read) reads it: found off,
/// its contacts are held, shown on `/status`, and after a kill -9 and a restart too (the next
/// process reads it first), and after the connector is rebuilt for new settings; turned on
/// again, they go at the hold's end. An earlier version never read it once sending, and sent
/// them all into the workflow that was off.
#[test]
fn a_workflow_turned_off_in_hubspot_holds_its_contacts_until_it_is_on() {
    let world = Workflow101::new();
    let (config, mut server) = world.serve_after_a_first_enrollment(7601, "");
    let standin = &world.standin;
    let (data, clock) = (world.data.clone(), world.clock.clone());
    let reads = || world.reads();
    assert_eq!(reads(), 0, "the first call is not read");
    // Turned off; the next contacts are due eleven minutes later.
    let (t1, later) = world.post_while_off(&server, "later", 7610, 5);
    let sent = |email: &str| {
        enrollments(&standin.log()).contains_key(&("101".to_string(), email.to_string()))
    };
    let held_off = |server: &Server| {
        let held = eventually(Duration::from_secs(30), || {
            let s = status(server);
            let targets = s["connectors"][0]["held_targets"].as_array()?.clone();
            (targets.len() == 1).then(|| targets[0].clone())
        })
        .unwrap_or_else(|| panic!("workflow not held; logs:\n{}", server.logs()));
        assert_eq!(held["target"], "101", "{held}");
        let why = held["why"].as_str().unwrap();
        assert!(why.contains("is turned off in HubSpot"), "{why}");
        let fine = || {
            let s = status(server);
            let webhooks = s["webhooks"].as_array().unwrap();
            webhooks.iter().find(|w| w["id"] == "fine").unwrap().clone()
        };
        eventually(Duration::from_secs(30), || {
            (fine()["held"] == 5).then_some(())
        })
        .unwrap_or_else(|| panic!("not 5 held: {}", fine()));
    };
    held_off(&server);
    assert_eq!(reads(), 1);
    assert!(later.iter().all(|e| !sent(e)), "{:?}", standin.log());
    // Killed (SIGKILL) and started again, it reads the workflow before any call to it goes:
    // the finding was kept under `state/` as it was made.
    assert!(data.join("state/workflows-off-main.json").exists());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    server = start(&config, &data, Some(&clock), &[]);
    held_off(&server);
    assert_eq!(reads(), 2);
    assert!(later.iter().all(|e| !sent(e)), "{:?}", standin.log());
    // A connector rebuilt for new settings (its rate here) reads it before any call too, when
    // the held contacts are looked at again a minute on.
    write_config(
        world.dir.path(),
        &standin.url(),
        "requests_per_10s = 50",
        &[&FINE],
    );
    common::wait_ticks(&server, 3);
    set_clock(&clock, t1 + 61_000);
    eventually(Duration::from_secs(30), || (reads() == 3).then_some(())).unwrap_or_else(|| {
        panic!(
            "not read by the rebuilt connector; logs:\n{}",
            server.logs()
        )
    });
    held_off(&server);
    assert!(later.iter().all(|e| !sent(e)), "{:?}", standin.log());
    // On again: read at the hold's end, and the contacts go.
    standin.set_workflows_off(Vec::new());
    let t2 = t1 + 8 * 60_000;
    set_clock(&clock, t2);
    eventually(Duration::from_secs(20), || (reads() == 4).then_some(()))
        .unwrap_or_else(|| panic!("not read at the hold's end; logs:\n{}", server.logs()));
    // The others waited for that read's answer, a few seconds by the dispatcher's clock: from
    // the time of the tick that read, once it is over (moved on while that tick still ran, the
    // clock put them later than the time the test sets, as CI saw).
    common::wait_ticks(&server, 2);
    set_clock(&clock, t2 + 10_000);
    for email in &later {
        wait_enrolled(standin, &server, "101", email);
        assert_eq!(standin.enrollments_of(email), vec![101]);
    }
    assert_eq!(reads(), 4);
    server.stop();
    assert!(outcomes(&data).iter().all(|r| r.status != Status::Failed));
}

/// The contacts held for a workflow turned off go, when it is on again, as the connector
/// can send them: spread over the minutes with room, not all in the tick after the hold's
/// end. An earlier version sent the whole backlog in that tick, for as long as the rate
/// limiter took (a day's backlog, hours), while the tick's quiet hours and new receipts
/// waited behind it.
#[test]
fn a_held_workflows_backlog_is_spread_when_it_is_on_again() {
    let world = Workflow101::new();
    // Paced 3 calls in 10 s; 16 planned in a minute.
    let (_config, server) = world.serve_after_a_first_enrollment(7901, "requests_per_10s = 5");
    let (standin, clock) = (&world.standin, &world.clock);
    // Turned off; 24 contacts due eleven minutes on.
    let (t1, held) = world.post_while_off(&server, "held", 7910, 24);
    // Planned (due at once) and queued, held.
    let queued = || common::metric(&server, "sendtime_dispatch_queued");
    eventually(Duration::from_secs(30), || (queued() == 24).then_some(()))
        .unwrap_or_else(|| panic!("not all queued; logs:\n{}", server.logs()));
    common::wait_ticks(&server, 2);
    let enrolled = || {
        (held.iter())
            .filter(|e| standin.enrollments_of(e) == vec![101])
            .count()
    };
    assert_eq!(enrolled(), 0);
    // On again, past the hold's end, a second into a minute: read, and the contacts go in
    // that minute and the next.
    standin.set_workflows_off(Vec::new());
    let t2 = ((t1 + 6 * 60_000) / 60_000 + 1) * 60_000 + 1_000;
    set_clock(clock, t2);
    eventually(Duration::from_secs(30), || {
        (world.reads() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not read at the hold's end; logs:\n{}", server.logs()));
    common::wait_ticks(&server, 2);
    set_clock(clock, t2 + 10_000);
    // The minute's sends end within a minute at 3 calls in 10 s; the ticks go on after.
    let ticked = common::ticks(&server);
    eventually(Duration::from_secs(90), || {
        (common::ticks(&server) >= ticked + 3).then_some(())
    })
    .unwrap_or_else(|| panic!("the minute's sends did not end; logs:\n{}", server.logs()));
    let first = enrolled();
    assert!(
        (1..=16).contains(&first),
        "{first} of 24 sent in the minute the hold ended; logs:\n{}",
        server.logs()
    );
    // The rest in the minutes after.
    set_clock(clock, t2 + 70_000);
    eventually(Duration::from_secs(90), || (enrolled() == 24).then_some(()))
        .unwrap_or_else(|| panic!("{} of 24 sent; logs:\n{}", enrolled(), server.logs()));
    server.stop();
}

/// Under `sendtime tick` run by cron, a process a minute, a workflow calls go to is read every
/// ten minutes too: when it was last read (or first called) is kept under `state/`. Turned off,
/// the tick that comes eleven minutes after the first call reads it and holds its contact; on
/// again, a later tick reads it first and sends. An earlier version counted from
/// each process's first call, so no tick ever read it, and every contact went into the
/// workflow that was off.
#[test]
fn under_sendtime_tick_a_workflow_is_read_every_ten_minutes_and_held_when_off() {
    let world = Workflow101::new();
    let (standin, data, t0) = (&world.standin, &world.data, world.t0);
    let config = write_config(world.dir.path(), &standin.url(), "", &[&FINE]);
    let reads = || world.reads();
    let due = |email: &str, vid: i64, at: i64| {
        standin.add_contact(email, vid as u64);
        let receipt = ulid::Ulid::generate().to_string();
        write_inbox_row(data, &receipt, "fine", vid, email, at);
    };
    due("first@example.com", 7801, t0);
    tick_once(&config, data, t0, TOKEN);
    assert_eq!(standin.enrollments_of("first@example.com"), vec![101]);
    assert_eq!(reads(), 0, "the first call is not read");
    // A tick five minutes on, a process of its own, sends without a read.
    due("second@example.com", 7803, t0 + 5 * 60_000);
    tick_once(&config, data, t0 + 5 * 60_000, TOKEN);
    assert_eq!(standin.enrollments_of("second@example.com"), vec![101]);
    assert_eq!(reads(), 0);
    // Turned off; a contact due eleven minutes after the first call.
    standin.set_workflows_off(vec![101]);
    let t1 = t0 + 11 * 60_000;
    due("later@example.com", 7802, t1);
    let (out, err) = tick_once(&config, data, t1, TOKEN);
    assert_eq!(reads(), 1, "{out}\n{err}");
    let sent =
        || enrollments(&standin.log()).contains_key(&("101".into(), "later@example.com".into()));
    assert!(!sent(), "{:?}", standin.log());
    // On again: a later tick reads it first (it was found off), and the contact goes.
    standin.set_workflows_off(Vec::new());
    let t2 = t1 + 6 * 60_000;
    let (out, err) = tick_once(&config, data, t2, TOKEN);
    assert_eq!(reads(), 2, "{out}\n{err}");
    assert_eq!(
        standin.enrollments_of("later@example.com"),
        vec![101],
        "{out}\n{err}"
    );
    assert!(outcomes(data).iter().all(|r| r.status != Status::Failed));
}

/// Contacts held for a workflow turned off in HubSpot are not booked in the connector's
/// capacity, so another workflow's contacts due meanwhile go at once. An earlier version
/// booked the held ones first whenever the ledgers were built again (each `sendtime tick`
/// does), as the oldest, and the other webhook's contacts waited behind the whole backlog;
/// and `serve` booked those it received meanwhile as it planned them.
#[test]
fn contacts_held_for_a_workflow_turned_off_do_not_push_back_another_workflows() {
    const OTHER: Hook = Hook {
        id: "other",
        kind: "IMMEDIATE",
        target: "workflow_id = 102",
    };
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            token: TOKEN.into(),
            workflows: vec![101, 102],
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = "requests_per_10s = 5";
    let config = write_config(dir.path(), &standin.url(), extra, &[&FINE, &OTHER]);
    let due = |webhook: &str, first: u64, n: u64, at: i64| -> Vec<String> {
        let contacts: Vec<(String, u64)> = (first..first + n)
            .map(|vid| (format!("{webhook}{vid}@example.com"), vid))
            .collect();
        let rows: Vec<_> = (contacts.iter())
            .map(|(email, vid)| {
                standin.add_contact(email, *vid);
                let receipt = ulid::Ulid::generate().to_string();
                common::inbox_row(&receipt, webhook, *vid as i64, Some(email.clone()), at)
            })
            .collect();
        common::write_inbox(&data, &rows);
        contacts.into_iter().map(|(email, _)| email).collect()
    };
    let t0 = now_ms();
    let first = due("fine", 9100, 1, t0);
    tick_once(&config, &data, t0, TOKEN);
    assert_eq!(standin.enrollments_of(&first[0]), vec![101]);
    // Turned off; 100 contacts due eleven minutes on: the first call reads it, and all wait.
    standin.set_workflows_off(vec![101]);
    let t1 = t0 + 11 * 60_000;
    due("fine", 9200, 100, t1);
    tick_once(&config, &data, t1, TOKEN);
    assert!(outcomes(&data).iter().all(|r| r.status != Status::Failed));
    // A minute on, a process of its own: the other workflow's contacts due then go then (the
    // connector plans about 20 calls a minute, so behind the 100 they would wait 5 minutes).
    let t2 = t1 + 60_000;
    let others = due("other", 9400, 3, t2);
    let (out, err) = tick_once(&config, &data, t2, TOKEN);
    for email in &others {
        assert_eq!(standin.enrollments_of(email), vec![102], "{out}\n{err}");
    }
    // Under `serve`, contacts received for the held workflow are not booked as they are
    // planned either (they were, until the ledgers were next built: up to an hour's hold).
    let clock = dir.path().join("clock");
    set_clock(&clock, t2 + 60_000);
    let server = start(&config, &data, Some(&clock), &[]);
    let queued = || common::metric(&server, "sendtime_dispatch_queued");
    for vid in 9500..9540 {
        let email = format!("fine{vid}@example.com");
        standin.add_contact(&email, vid);
        post(&server, "fine", vid, &email);
    }
    eventually(Duration::from_secs(30), || (queued() == 140).then_some(()))
        .unwrap_or_else(|| panic!("{} queued; logs:\n{}", queued(), server.logs()));
    let others: Vec<String> = (9600..9603)
        .map(|vid| {
            let email = format!("other{vid}@example.com");
            standin.add_contact(&email, vid);
            post(&server, "other", vid, &email);
            email
        })
        .collect();
    for email in &others {
        wait_enrolled(&standin, &server, "102", email);
    }
    server.stop();
}

/// The workflow's periodic read meets what every call would meet: HubSpot's 401 pauses the
/// connector before the due call is made. A 403 that names no missing scope is the read's
/// alone: the call goes. (The first version paused on both, so a GET refused alone could pause
/// every call of the connector.)
#[test]
fn a_periodic_read_refused_its_token_pauses_the_connector_before_the_call() {
    for (code, pauses) in [(401u16, true), (403, false)] {
        let world = Workflow101::new();
        let (_, server) = world.serve_after_a_first_enrollment(7701, "");
        let (standin, clock, t0) = (&world.standin, &world.clock, world.t0);
        let refused = Fault::Status {
            status: code,
            message: "This oauth-token is not allowed".into(),
        };
        standin.inject(
            Injection::next(refused)
                .on("/automation/v3/workflows/101")
                .times(u64::MAX),
        );
        // Due eleven minutes on: its call reads the workflow first.
        set_clock(clock, t0 + 11 * 60_000);
        standin.add_contact("due@example.com", 7702);
        post(&server, "fine", 7702, "due@example.com");
        let paused = || {
            status(&server)["connectors"][0]["paused"]
                .as_str()
                .map(str::to_string)
        };
        let read = || {
            standin
                .log()
                .iter()
                .any(|e| e.path == "/automation/v3/workflows/101" && e.status == Some(code))
        };
        if pauses {
            let why = eventually(Duration::from_secs(30), paused)
                .unwrap_or_else(|| panic!("not paused; logs:\n{}", server.logs()));
            assert_eq!(why, "refused_token");
            assert!(read());
            common::wait_ticks(&server, 2);
            let sent = enrollments(&standin.log());
            assert!(
                !sent.contains_key(&("101".to_string(), "due@example.com".to_string())),
                "{:?}",
                standin.log()
            );
        } else {
            wait_enrolled(standin, &server, "101", "due@example.com");
            assert!(read());
            assert_eq!(paused(), None);
        }
        server.stop();
    }
}

/// A reload naming a token HubSpot takes lifts the refused-token pause at the next tick, and
/// the contact it held goes then, the clock still: it waited for the pause's five minutes to
/// end (queued until then, as a pause in force holds contacts).
#[test]
fn a_reload_with_a_working_token_lifts_the_refused_token_pause_at_once() {
    let world = Workflow101::new();
    let (standin, dir, clock) = (&world.standin, &world.dir, &world.clock);
    let config = write_config(dir.path(), &standin.url(), "", &[&FINE]);
    let env = [("DISPATCH_TOKEN", "not-the-token"), ("FIXED_TOKEN", TOKEN)];
    let server = start(&config, &world.data, Some(clock), &env);
    standin.add_contact("due@example.com", 7702);
    post(&server, "fine", 7702, "due@example.com");
    set_clock(clock, world.t0 + 60_000);
    let paused = || {
        status(&server)["connectors"][0]["paused"]
            .as_str()
            .map(str::to_string)
    };
    let why = eventually(Duration::from_secs(30), paused)
        .unwrap_or_else(|| panic!("not paused; logs:\n{}", server.logs()));
    assert_eq!(why, "refused_token");
    // A tick finds it paused: the contact waits for the pause's end.
    common::wait_ticks(&server, 2);
    let fixed = std::fs::read_to_string(&config).unwrap().replace(
        "access_token_env = \"DISPATCH_TOKEN\"",
        "access_token_env = \"FIXED_TOKEN\"",
    );
    let tmp = config.with_extension("tmp");
    std::fs::write(&tmp, fixed).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    wait_for_config(&server, &config);
    wait_enrolled(standin, &server, "101", "due@example.com");
    assert_eq!(paused(), None);
    server.stop();
}

/// Calls queued at the rate limiter for a workflow found gone leave the queue when it is held,
/// rather than each use a turn to be turned away: the connector's other calls go next. An
/// earlier version turned them away one turn at a time (1.25 s each here), the other calls
/// queued behind them.
#[test]
fn calls_queued_for_a_workflow_found_gone_leave_the_rate_limiters_queue() {
    let world = Workflow101::new();
    let (standin, dir, t0) = (&world.standin, &world.dir, world.t0);
    let (data, clock) = (world.data.clone(), world.clock.clone());
    // Paced 1.25 s apart: the calls to the gone workflow queue at the limiter.
    let extra = "requests_per_10s = 10";
    let config = write_config(dir.path(), &standin.url(), extra, &[&HOOKS[3], &FINE]);
    let server = start(&config, &data, Some(&clock), &[]);
    for i in 0..30u64 {
        let email = format!("gone{i}@example.com");
        standin.add_contact(&email, 7500 + i);
        post(&server, "fatigue", 7500 + i, &email);
    }
    // Due a second later, so queued behind them.
    set_clock(&clock, t0 + 1_000);
    standin.add_contact("fine@example.com", 7600);
    post(&server, "fine", 7600, "fine@example.com");
    set_clock(&clock, t0 + 30_000);
    wait_enrolled(standin, &server, "101", "fine@example.com");
    let log = standin.log();
    let read = log
        .iter()
        .find(|e| e.path == "/automation/v3/workflows/104")
        .expect("workflow 104 read");
    let enrolled = log
        .iter()
        .find(|e| e.path.starts_with("/automation/v2/workflows/101/"))
        .unwrap();
    let calls_to_104 = log
        .iter()
        .filter(|e| e.path.starts_with("/automation/v2/workflows/104/"))
        .count();
    assert!(calls_to_104 < 10, "{calls_to_104} enrollments into 104");
    // The 104 calls still queued when it was held would take 1.25 s each to turn away.
    let after = enrolled.at.duration_since(read.at).unwrap();
    assert!(
        after < Duration::from_secs((30 - calls_to_104 as u64) * 5 / 8),
        "enrolled {after:?} after the read; {calls_to_104} enrollments into 104"
    );
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    let held = &status["connectors"][0]["held_targets"];
    assert_eq!(held[0]["target"], "104", "{held}");
    server.stop();
    assert!(outcomes(&data).iter().all(|r| r.status != Status::Failed));
}

/// A 429 whose `Retry-After` holds the connector for ten minutes: the calls waiting on the
/// limiter are left to a later tick, as the one that got it is, so ticks go on and a stop is
/// prompt. They slept the hold out: the tick, and a SIGTERM, waited the ten minutes.
#[test]
fn a_long_rate_limit_hold_ends_the_tick_and_never_delays_a_stop() {
    use sendtime::hubspot::RatePolicy;
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    standin.inject(
        Injection::next(Fault::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: Some(Duration::from_secs(600)),
        })
        .on("/automation/v2/workflows/"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Paced 1.25 s apart, so the others wait on the limiter when the first call's 429 comes.
    let config = fatigue_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 10",
        "workflow_id = 105",
    );
    let server = start(&config, &data, None, &[]);
    for i in 0..5u64 {
        let email = format!("held{i}@example.com");
        standin.add_contact(&email, 7100 + i);
        post(&server, "fatigue", 7100 + i, &email);
    }
    eventually(Duration::from_secs(20), || {
        standin
            .log()
            .iter()
            .any(|e| e.status == Some(429))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no 429; logs:\n{}", server.logs()));
    let before = common::ticks(&server);
    let went_on = eventually(Duration::from_secs(10), || {
        (common::ticks(&server) >= before + 2).then_some(())
    });
    assert!(
        went_on.is_some(),
        "no tick ended after the 429's (at {before}); logs:\n{}",
        server.logs()
    );
    let calls = standin.log().iter().filter(|e| e.method == "POST").count();
    assert_eq!(calls, 1, "nothing went during the hold");
    // `stop` fails unless it exits, cleanly, within 20 s.
    server.stop();
}

/// A request timeout that is not whole milliseconds above 0 stops `tick` with what to write;
/// an earlier version used the default 30 s instead, unseen.
#[test]
fn a_malformed_request_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A data folder `serve` made (`tick` refuses one that holds none of sendtime's datasets).
    std::fs::create_dir_all(data.join("inbox")).unwrap();
    let config = write_config(dir.path(), "http://127.0.0.1:9", "", &[&HOOKS[3]]);
    let tick = |timeout: &str| {
        common::run(
            &config,
            &data,
            &["tick"],
            &[
                ("DISPATCH_TOKEN", TOKEN),
                ("SENDTIME_HUBSPOT_TIMEOUT_MS", timeout),
            ],
        )
    };
    for bad in ["30s", "0", "-5", ""] {
        let out = tick(bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {err}");
        assert!(
            err.contains("SENDTIME_HUBSPOT_TIMEOUT_MS"),
            "{bad:?}: {err}"
        );
    }
    let out = tick("600");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tick at `at` against a HubSpot whose every call fails (5xx): a failure worth retrying
/// each, so no contact is failed. The one contact on disk (planned, not final) is tried: its
/// enrollment is sent and refused, recorded as the next attempt and retrying with HubSpot's
/// 502, and, as its call may have reached HubSpot, its enrollments are checked before it is
/// sent again (those checks failing too, within the tick).
fn a_bad_minute_fails_no_one(rt: &tokio::runtime::Runtime, dir: &Path, data: &Path, at: i64) {
    let failing = rt
        .block_on(StandIn::start(Options {
            error_rate: 1.0,
            ..Options::default()
        }))
        .unwrap();
    let config = write_config(dir, &failing.url(), "", &[&HOOKS[3]]);
    let plan = plans(data);
    assert_eq!(plan.len(), 1, "one contact: {plan:?}");
    let (receipt, email) = (&plan[0].receipt_id, plan[0].email.clone().unwrap());
    let before = outcomes(data);
    let attempts = before.iter().map(|r| r.attempts).max().unwrap_or(0);
    let (out, err) = tick_once(&config, data, at, TOKEN);
    assert!(out.contains("failed=0 "), "{out}\n{err}");
    let rows = outcomes(data);
    assert!(rows.iter().all(|r| r.status != Status::Failed), "{rows:?}");

    // HubSpot was asked: one enrollment, refused, then only checks, refused too.
    let log = failing.log();
    let calls: Vec<(&str, &str, Option<u16>)> = log
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.status))
        .collect();
    let enroll = format!(
        "/automation/v2/workflows/104/enrollments/contacts/{}",
        email.replace('@', "%40")
    );
    assert_eq!(
        calls.first(),
        Some(&("POST", enroll.as_str(), Some(502))),
        "{calls:?}\n{err}"
    );
    assert!(
        calls[1..]
            .iter()
            .all(|(method, path, status)| *method == "GET"
                && path.contains("/enrollments/contacts/")
                && *status == Some(502)),
        "{calls:?}"
    );
    // The call is recorded as the next attempt, and each check as one more: an `attempting`
    // row and a `retrying` one each, with HubSpot's 502, in doubt. The contact waits to be
    // tried again.
    let new: Vec<&OutcomeRow> = rows
        .iter()
        .filter(|r| !before.contains(r) && r.receipt_id == *receipt)
        .collect();
    assert_eq!(new.len(), 2 * (calls.len()), "{new:?}");
    for k in 1..=calls.len() as u32 {
        let of: Vec<_> = new.iter().filter(|r| r.attempts == attempts + k).collect();
        assert!(
            of.len() == 2 && of.iter().any(|r| r.status == Status::Attempting),
            "attempt {k} after {attempts}: {new:?}"
        );
        let retrying = of
            .iter()
            .find(|r| r.status == Status::Retrying)
            .unwrap_or_else(|| panic!("no retrying row: {new:?}"));
        assert_eq!(
            (retrying.http_status, retrying.in_doubt),
            (Some(502), true),
            "{retrying:?}"
        );
        assert!(retrying.retry_at_ms.is_some_and(|t| t > at), "{retrying:?}");
    }
}

/// `sendtime tick --now at` with `token` as the connector's token: (stdout, stderr). It is
/// given no client secret: a tick receives nothing, so it needs none.
fn tick_once(config: &Path, data: &Path, at: i64, token: &str) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(["tick", "--now", &at.to_string()])
        .env_remove("DISPATCH_SECRET")
        .env("DISPATCH_TOKEN", token)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

/// A plan part in quarantine: its receipts, still in the inbox, are planned again as new, and
/// the calls recorded for them may have reached HubSpot, so each is checked before a call
/// goes out. Here the unanswered call had enrolled the contact: it is not enrolled twice.
#[test]
fn a_receipt_whose_plan_part_is_quarantined_is_checked_before_it_is_sent_again() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let email = "grace@example.com";
    let receipt = enrolled_by_a_lost_call(&rt, &standin, &data, email, 8400);
    let plan = plans(&data).remove(0);
    write_inbox_row(&data, &receipt, "fatigue", 8400, email, plan.received_at_ms);
    for part in plan::dataset(&data).unwrap().parts().unwrap() {
        std::fs::write(part, b"not parquet").unwrap();
    }
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let (out, err) = tick_once(&config, &data, now_ms(), TOKEN);
    assert!(out.contains("enrolled=1 "), "{out}\n{err}");
    let enrolled = enrollments(&standin.log());
    assert_eq!(
        enrolled.get(&("104".to_string(), email.to_string())),
        Some(&1)
    );
    let last = outcomes(&data)
        .into_iter()
        .find(|r| r.receipt_id == receipt && r.status == Status::Enrolled)
        .unwrap();
    assert!(
        last.message
            .as_deref()
            .is_some_and(|m| m.starts_with("already enrolled")),
        "{last:?}"
    );
    // Its attempts are numbered on from the call recorded, not from 0 again: the check is
    // the second.
    assert_eq!(last.attempts, 2);
}

#[test]
fn a_refused_token_holds_the_queue_instead_of_failing_it() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 150",
        &[&HOOKS[3]],
    );
    let emails = receive_only(&config, &data, &standin, ("a", 5), 8200);
    let due = now_ms() + 2 * 24 * 3_600_000;

    // HubSpot refuses the token: nothing fails, everything stays queued, one loud error (the
    // README's promise is about the log: one line, not one per contact).
    let (out, err) = tick_once(&config, &data, due, "not-the-token");
    assert!(
        out.contains("enrolled=0 ") && out.contains("failed=0 ") && out.contains("queued=5 "),
        "{out}\n{err}"
    );
    assert_eq!(
        err.matches("HubSpot refused the connector's credentials (401")
            .count(),
        1,
        "{err}"
    );
    assert!(
        !err.contains("not-the-token"),
        "the token is never logged:\n{err}"
    );
    let refused = standin.log().len();
    assert!((1..=5).contains(&refused), "{refused} calls");
    assert!(outcomes(&data).iter().all(|r| r.status != Status::Failed));
    // The pause is not kept for the next process: with the right token every contact goes,
    // once.
    assert!(!data.join("state").join("dispatch-pause-main").exists());
    let (out, err) = tick_once(&config, &data, due + 60_000, TOKEN);
    assert!(out.contains("enrolled=5 "), "{out}\n{err}");
    enrolled_once(&standin, "104", &emails);
}

/// Refusals that are the connector's state (a bad token here) do not use up a contact's
/// retries: after 13 ticks with a wrong token, a 502 is still just retried. (The ticks are
/// 30 s apart, all within 10 minutes of the first call: a tick after that reads the workflow
/// first, and the read's 401 pauses the connector before the call.)
#[test]
fn refused_calls_do_not_use_up_the_retries() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refusing = rt.block_on(StandIn::start(Options::default())).unwrap();
    let config = write_config(dir.path(), &refusing.url(), "", &[&HOOKS[3]]);
    receive_only(&config, &data, &refusing, ("r", 1), 8400);
    let due = now_ms() + 2 * 24 * 3_600_000;
    for k in 0..13 {
        tick_once(&config, &data, due + k * 30_000, "not-the-token");
    }
    let calls = |d: &Path| {
        outcomes(d)
            .iter()
            .filter(|r| r.status == Status::Attempting)
            .map(|r| r.attempts)
            .max()
            .unwrap_or(0)
    };
    assert!(calls(&data) >= 13, "{} calls", calls(&data));
    // The token is fixed, and HubSpot has a bad minute.
    a_bad_minute_fails_no_one(&rt, dir.path(), &data, due + 7 * 60_000);
}

/// A redirect is the route's, not the contact's: across `sendtime tick` processes it uses up
/// none of the contact's tries, as within one (a restart counted each redirect row as a
/// failure, so once the route was fixed the contact failed at HubSpot's first bad minute).
#[test]
fn redirects_do_not_use_up_the_retries_across_processes() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let moved = rt.block_on(StandIn::start(Options::default())).unwrap();
    let config = write_config(dir.path(), &moved.url(), "", &[&HOOKS[3]]);
    receive_only(&config, &data, &moved, ("m", 1), 8500);
    let redirect = Fault::Status {
        status: 301,
        message: "Moved Permanently".into(),
    };
    moved.inject(Injection::next(redirect).times(u64::MAX));
    let due = now_ms() + 2 * 24 * 3_600_000;
    for k in 0..13 {
        tick_once(&config, &data, due + k * 30_000, TOKEN);
    }
    let redirected = (outcomes(&data).iter())
        .filter(|r| r.status == Status::Retrying && r.http_status == Some(301))
        .count();
    assert!(redirected >= 13, "{redirected} redirects");
    // The route is fixed, and HubSpot has a bad minute.
    a_bad_minute_fails_no_one(&rt, dir.path(), &data, due + 7 * 60_000);
}

/// A contact in doubt whose enrollments check keeps failing, under `sendtime tick` (a process
/// a minute): each check is an attempt on disk, so its failures count across processes and,
/// after the last, the contact is sent once. An earlier version counted a check's failures in
/// memory only: each process started afresh, made five checks within its retry horizon, and
/// the contact was never sent nor failed.
#[test]
fn a_failing_enrollments_check_gives_up_across_processes() {
    use sendtime::hubspot::policy::Backoff;
    let tries = u64::from(Backoff::DISPATCH.give_up_after);
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let email = "doubt@example.com";
    standin.add_contact(email, 8330);
    let receipt = unanswered_call(&data, email, 8330, 104);
    let down = Fault::Status {
        status: 503,
        message: "Service Unavailable".into(),
    };
    standin.inject(
        Injection::next(down)
            .times(u64::MAX)
            .on("/automation/v2/workflows/enrollments/contacts/"),
    );
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let checks = || {
        (standin.log().iter())
            .filter(|e| e.method == "GET" && e.path.contains("/enrollments/contacts/"))
            .count() as u64
    };
    let mut at = now_ms();
    let mut processes = 0;
    while enrollments(&standin.log()).is_empty() && processes < 12 {
        tick_once(&config, &data, at, TOKEN);
        processes += 1;
        at += 10 * 60_000;
    }
    assert_eq!(
        enrollments(&standin.log()).get(&("104".to_string(), email.to_string())),
        Some(&1),
        "{} checks in {processes} processes",
        checks()
    );
    assert_eq!(checks(), tries, "one check per failure allowed");
    assert!(processes > 1, "the checks spanned processes");
    let rows = outcomes(&data);
    let enrolled = (rows.iter())
        .find(|r| r.receipt_id == receipt && r.status == Status::Enrolled)
        .unwrap();
    // Each check was an attempt, and the call after them one more.
    assert_eq!(enrolled.attempts as u64, 1 + tries + 1, "{enrolled:?}");
}

/// A check HubSpot refuses for good (a JSON 403: the app may not read enrollments) or that
/// meets a route's page is not the connector's: the contact is sent unchecked at once
/// (at-least-once), as when HubSpot will not answer a check. Each paused the connector five
/// minutes, and every process checked again, so the contact was never sent, nor any other.
#[test]
fn a_check_refused_for_good_sends_unchecked_and_pauses_nothing() {
    for (n, fault) in [
        Fault::Status {
            status: 403,
            message: "This app may not read workflow enrollments".into(),
        },
        Fault::Html(404),
    ]
    .into_iter()
    .enumerate()
    {
        let rt = runtime();
        let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let email = format!("refused{n}@example.com");
        let vid = 8340 + n as u64;
        standin.add_contact(&email, vid);
        unanswered_call(&data, &email, vid as i64, 104);
        standin.inject(
            Injection::next(fault)
                .times(u64::MAX)
                .on("/automation/v2/workflows/enrollments/contacts/"),
        );
        let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
        let (out, err) = tick_once(&config, &data, now_ms(), TOKEN);
        assert_eq!(
            enrollments(&standin.log()).get(&("104".to_string(), email.clone())),
            Some(&1),
            "{out}\n{err}"
        );
    }
}

#[test]
fn a_daily_pause_outlasts_the_process_so_sendtime_tick_does_not_call_again() {
    const HOUR: i64 = 3_600_000;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Without the usage endpoint: the hourly probe.
    let (standin, config, clock, day) = daily_limited(&rt, dir.path(), 3, false);
    let t0 = day + 3 * HOUR + 30 * 60_000;
    let emails = receive_only(&config, &data, &standin, ("t", 5), 8100);
    let tick = |at: i64| {
        set_clock(&clock, at);
        tick_once(&config, &data, at, TOKEN)
    };
    let pause_file = data.join("state").join("dispatch-pause-main");

    let (out, err) = tick(t0);
    assert!(out.contains("enrolled=3 "), "{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(&pause_file).unwrap(),
        (day + 4 * HOUR + 60_000).to_string(),
        "paused until a minute past the next whole hour"
    );
    let calls = standin.log().len();

    // A minute later, a new process: it knows the pause and calls nothing.
    let (out, err) = tick(t0 + 60_000);
    assert!(
        out.contains("enrolled=0 ") && out.contains("queued=2 "),
        "{out}\n{err}"
    );
    assert_eq!(standin.log().len(), calls, "no call while paused");

    // At the next hour it tries again, and HubSpot's day is not over yet.
    let (out, err) = tick(day + 4 * HOUR + 60_000);
    assert!(out.contains("enrolled=0 "), "{out}\n{err}");
    assert!(standin.log().len() > calls);
    assert!(pause_file.exists());

    // The account's midnight: the rest go, once each; the pause is forgotten.
    let (out, err) = tick(day + 5 * HOUR + 60_000);
    assert!(out.contains("enrolled=2 "), "{out}\n{err}");
    assert!(!pause_file.exists());
    enrolled_once(&standin, "104", &emails);
    assert!(outcomes(&data).iter().all(|r| r.status != Status::Failed));
}

/// With HubSpot's daily usage endpoint, a DAILY 429 pauses until the reset it reports (the
/// account's midnight) instead of probing every hour.
#[test]
fn a_daily_pause_lasts_until_the_reset_hubspot_reports() {
    const HOUR: i64 = 3_600_000;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (standin, config, clock, day) = daily_limited(&rt, dir.path(), 3, true);
    let t0 = day + 3 * HOUR + 30 * 60_000;
    let emails = receive_only(&config, &data, &standin, ("r", 5), 8300);
    let tick = |at: i64| {
        set_clock(&clock, at);
        tick_once(&config, &data, at, TOKEN)
    };
    let pause_file = data.join("state").join("dispatch-pause-main");

    let (out, err) = tick(t0);
    assert!(out.contains("enrolled=3 "), "{out}\n{err}");
    // The account is at UTC-5: its midnight is 05:00 UTC; a minute more for clocks apart.
    let reset = day + 5 * HOUR + 60_000;
    assert_eq!(
        std::fs::read_to_string(&pause_file).unwrap(),
        reset.to_string(),
        "paused until the reported reset"
    );
    let calls = standin.log().len();
    // The next whole hour is no longer a probe.
    let (out, err) = tick(day + 4 * HOUR + 60_000);
    assert!(out.contains("enrolled=0 "), "{out}\n{err}");
    assert_eq!(standin.log().len(), calls, "no call before the reset");
    let (out, err) = tick(reset);
    assert!(out.contains("enrolled=2 "), "{out}\n{err}");
    assert!(!pause_file.exists());
    enrolled_once(&standin, "104", &emails);
}

/// Start-up reads what is pending and recent, not all history: finished receipts older than
/// the replay window are moved to `archive/` (kept, not deleted), and what is pending stays.
#[test]
fn finished_receipts_past_the_replay_window_move_to_the_archive() {
    const DAY: i64 = 86_400_000;
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &standin.url(),
        "dry_run = true",
        &[&HOOKS[3], &HOOKS[2]],
    );
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    let old: Vec<String> = (0..20)
        .map(|i| post(&server, "fatigue", 7000 + i, &format!("old{i}@example.com")))
        .collect();
    set_clock(&clock, now_ms() + 60_000);
    eventually(Duration::from_secs(30), || {
        (dry_runs(&data) == old.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("not dispatched; logs:\n{}", server.logs()));
    server.stop();

    // Four days on, in the evening: the 20 are settled. Five new ones wait a week, each at an
    // hour drawn from the population's, which another contact's opens put a day and a half
    // ahead: none is likely to draw the hour it came in (with only old3's opens, all five
    // sometimes did, and were sent at once).
    let four_days = t0 + 4 * DAY;
    let hour = 3_600_000;
    let evening = four_days + (21 * hour - four_days.rem_euclid(DAY)).rem_euclid(DAY);
    let peak = |weeks: i64| {
        let at = evening + 36 * hour - weeks * 7 * DAY;
        chrono::DateTime::from_timestamp_millis(at)
            .unwrap()
            .to_rfc3339()
    };
    // Opens of old3's contact id, imported by id: the lookup by email finds them through the
    // id its (archived) receipt carries.
    let mut csv =
        String::from("contact,time\n7003,2026-01-05T09:10:00Z\n7003,2026-01-12T09:20:00Z\n");
    for weeks in 1..=30 {
        csv.push_str(&format!("9000,{}\n", peak(weeks)));
    }
    let opens = dir.path().join("opens.csv");
    std::fs::write(&opens, csv).unwrap();
    let imported = opens.to_str().unwrap();
    let args = [
        "import",
        "csv",
        imported,
        "--contact",
        "contact",
        "--time",
        "time",
    ];
    common::sendtime(&config, &data, &args, &[]);

    set_clock(&clock, evening);
    let server = start(&config, &data, Some(&clock), &[]);
    let new: Vec<String> = (0..5)
        .map(|i| post(&server, "webinar", 7100 + i, &format!("new{i}@example.com")))
        .collect();
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == new.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    server.stop();

    let archive = data.join("archive");
    let archived_plans = plan::read(&Dataset::open(&archive, "plan").unwrap()).unwrap();
    let mut ids: Vec<String> = archived_plans.into_iter().map(|p| p.receipt_id).collect();
    ids.sort();
    let mut want = old.clone();
    want.sort();
    assert_eq!(ids, want, "every settled receipt's plan is archived");
    let archived_outcomes = outcomes::read(&Dataset::open(&archive, "outcomes").unwrap()).unwrap();
    assert!(
        archived_outcomes
            .iter()
            .all(|r| old.contains(&r.receipt_id))
    );
    assert_eq!(archived_outcomes.len(), old.len());
    let live_inbox: Vec<String> =
        sendtime::datasets::inbox::read_keys(&sendtime::datasets::inbox::dataset(&data).unwrap())
            .unwrap()
            .into_iter()
            .map(|k| k.receipt_id)
            .collect();
    assert_eq!(live_inbox.len(), new.len(), "{live_inbox:?}");
    assert!(live_inbox.iter().all(|id| new.contains(id)));
    // (A new contact without history may draw the hour it came in from the population's:
    // sent at once, its outcome is live.)
    assert!(outcomes(&data).iter().all(|r| new.contains(&r.receipt_id)));

    // A restart reads only those; the new ones not sent are still pending (a repeat is a
    // duplicate).
    let sent: HashSet<String> = outcomes(&data).into_iter().map(|r| r.receipt_id).collect();
    let waiting = (0..new.len())
        .find(|&i| !sent.contains(&new[i]))
        .expect("a new contact waits");
    let server = start(&config, &data, Some(&clock), &[]);
    let email = format!("new{waiting}@example.com");
    let again = post(&server, "webinar", 7100 + waiting as u64, &email);
    assert_eq!(again, new[waiting], "still pending after the restart");
    // The dashboard's lookup (as `explain`) still shows an archived receipt and its outcome,
    // and the profile of the id it carries, once the first tick has loaded the profiles.
    let lookup = || -> serde_json::Value {
        common::get(server.admin_url("/contact?q=old3@example.com"))
            .unwrap()
            .json()
            .unwrap()
    };
    eventually(Duration::from_secs(20), || {
        (lookup()["known"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("not known: {}", lookup()));
    let looked = lookup();
    assert_eq!(looked["receipts_total"], 1, "{looked}");
    let outcome = looked["receipts"][0]["outcome"].as_str().unwrap_or("");
    assert!(outcome.starts_with("dry-run at "), "{looked}");
    server.stop();
}

/// The dashboard's contact lookup is answered while a tick sends: a paced connector's backlog
/// kept ticks busy for most of each minute, and lookups, answered only between ticks, timed
/// out after 15 s (a review: 7 of 10).
#[test]
fn a_contact_lookup_is_answered_while_a_tick_sends() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Paced at 8 per 10 s, a call every 1.25 s: 30 contacts keep one tick busy for 35 s.
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 10",
        &[&HOOKS[3]],
    );
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    for i in 0..30u64 {
        let email = format!("busy{i}@example.com");
        standin.add_contact(&email, 9100 + i);
        post(&server, "fatigue", 9100 + i, &email);
    }
    set_clock(&clock, t0 + 60_000);
    let sent = || enrollments(&standin.log()).len();
    eventually(Duration::from_secs(30), || (sent() >= 3).then_some(()))
        .unwrap_or_else(|| panic!("not sending; logs:\n{}", server.logs()));
    let asked = std::time::Instant::now();
    let looked = common::get(server.admin_url("/contact?q=busy0@example.com")).unwrap();
    let took = asked.elapsed();
    let sent_then = sent();
    assert_eq!(looked.status().as_u16(), 200);
    let looked: serde_json::Value = looked.json().unwrap();
    assert_eq!(looked["receipts_total"], 1, "{looked}");
    assert!(
        sent_then < 30,
        "the tick had ended ({sent_then} sent): nothing was tested"
    );
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    server.stop();
}

/// Finished receipts whose plan rows are gone (their part in quarantine) leave for the archive
/// by their inbox rows' time: they stayed in the live datasets, read at every start (an audit).
#[test]
fn finished_receipts_without_plan_rows_move_to_the_archive() {
    const DAY: i64 = 86_400_000;
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "dry_run = true", &[&HOOKS[3]]);
    let server = start(&config, &data, None, &[]);
    let sent: Vec<String> = (0..3)
        .map(|i| {
            post(
                &server,
                "fatigue",
                7200 + i,
                &format!("unplanned{i}@example.com"),
            )
        })
        .collect();
    eventually(Duration::from_secs(30), || {
        (dry_runs(&data) == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("not dispatched; logs:\n{}", server.logs()));
    server.stop();
    let plan_ds = Dataset::open(&data, "plan").unwrap();
    for part in plan_ds.parts().unwrap() {
        std::fs::remove_file(part).unwrap();
    }
    // A start four days on (a `tick --now` that far ahead is taken no later than now for the
    // replay window).
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms() + 4 * DAY);
    let server = start(&config, &data, Some(&clock), &[]);
    common::wait_ticks(&server, 1);
    let logs = server.logs();
    server.stop();
    let receipts = |data: &Path| -> Vec<String> {
        let mut ids: Vec<String> = sendtime::datasets::inbox::read_keys(
            &sendtime::datasets::inbox::dataset(data).unwrap(),
        )
        .unwrap()
        .into_iter()
        .map(|k| k.receipt_id)
        .collect();
        ids.sort();
        ids
    };
    assert_eq!(receipts(&data), Vec::<String>::new(), "{logs}");
    let mut want = sent.clone();
    want.sort();
    assert_eq!(receipts(&data.join("archive")), want);
    assert!(
        outcomes(&data)
            .iter()
            .all(|r| !sent.contains(&r.receipt_id))
    );
    let archived =
        outcomes::read(&Dataset::open(&data.join("archive"), "outcomes").unwrap()).unwrap();
    assert_eq!(
        archived
            .iter()
            .filter(|r| r.status == Status::DryRun)
            .count(),
        3
    );
}

/// A `serve` in dry run on a clock file, which has sent three `fatigue` receipts (contacts
/// `first_vid` on, `{prefix}{vid}@example.com`) by `t0` and a minute.
struct ThreeSent {
    data: PathBuf,
    config: PathBuf,
    clock: PathBuf,
    t0: i64,
    server: Server,
}

fn three_sent_in_dry_run(dir: &Path, prefix: &str, first_vid: u64) -> ThreeSent {
    let data = dir.join("data");
    let config = dry_run_config(dir, &[&HOOKS[3]]);
    let clock = dir.join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    for vid in first_vid..first_vid + 3 {
        post(
            &server,
            "fatigue",
            vid,
            &format!("{prefix}{vid}@example.com"),
        );
    }
    set_clock(&clock, t0 + 60_000);
    eventually(Duration::from_secs(20), || {
        (dry_runs(&data) == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("not finished; logs:\n{}", server.logs()));
    ThreeSent {
        data,
        config,
        clock,
        t0,
        server,
    }
}

/// Receipts in the parts of the live inbox under `data`.
fn live_receipts(data: &Path) -> usize {
    let inbox = sendtime::datasets::inbox::dataset(data).unwrap();
    sendtime::datasets::inbox::read_keys(&inbox).unwrap().len()
}

/// An archive move that fails at start-up (here `archive` is a file, where its folder goes)
/// does not stop `serve`: it starts, and the running process moves the finished receipts a
/// day later, once the move can be made.
#[test]
fn an_archive_move_that_fails_at_start_up_is_tried_a_day_later() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let ThreeSent {
        data,
        config,
        clock,
        t0,
        server,
    } = three_sent_in_dry_run(dir.path(), "arch", 7500);
    server.stop();

    let blocker = data.join("archive");
    std::fs::write(&blocker, b"").unwrap();
    set_clock(&clock, t0 + 4 * DAY);
    let server = start(&config, &data, Some(&clock), &[]);
    let live = || live_receipts(&data);
    let status = common::get(server.admin_url("/status")).unwrap();
    assert_eq!(status.status(), 200, "{}", server.logs());
    assert_eq!(live(), 3, "nothing could be moved");
    std::fs::remove_file(&blocker).unwrap();
    set_clock(&clock, t0 + 5 * DAY + 60_000);
    eventually(Duration::from_secs(30), || (live() == 0).then_some(()))
        .unwrap_or_else(|| panic!("not archived a day later; logs:\n{}", server.logs()));
    server.stop();
    let archived = plan::read(&Dataset::open(&blocker, "plan").unwrap()).unwrap();
    assert_eq!(archived.len(), 3);
}

/// A running `serve`'s daily move takes finished receipts without plan rows too, as a start
/// does (their plan part set aside; an action's contact sent unplanned): they stayed in the
/// live datasets until the next start (an audit).
#[test]
fn the_daily_move_archives_finished_receipts_without_plan_rows() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let ThreeSent {
        data,
        clock,
        t0,
        server,
        ..
    } = three_sent_in_dry_run(dir.path(), "daily", 7600);
    let live = || live_receipts(&data);
    // Their inbox and plan rows in parts (the writers flush on their own pace), then the
    // plan's set aside.
    let plan_ds = Dataset::open(&data, "plan").unwrap();
    eventually(Duration::from_secs(20), || {
        (live() == 3 && plan::read(&plan_ds).unwrap().len() == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("rows not in parts; logs:\n{}", server.logs()));
    for part in plan_ds.parts().unwrap() {
        std::fs::remove_file(part).unwrap();
    }
    set_clock(&clock, t0 + 4 * DAY);
    eventually(Duration::from_secs(30), || (live() == 0).then_some(()))
        .unwrap_or_else(|| panic!("not archived by the daily move; logs:\n{}", server.logs()));
    server.stop();
    let archive = data.join("archive");
    let archived = sendtime::datasets::inbox::read_keys(
        &sendtime::datasets::inbox::dataset(&archive).unwrap(),
    )
    .unwrap();
    assert_eq!(archived.len(), 3);
}

/// A `serve` that runs for days archives, once a day, what start-up would, and forgets it:
/// memory holds the last days' receipts, not every one sent. Here the cut falls inside one
/// compacted inbox part: the receipts left in the rewritten part are remembered and, read
/// again by planning and merged again by compaction, are not sent again.
#[test]
fn a_running_serve_archives_settled_receipts_daily_and_sends_none_again() {
    const DAY: i64 = 86_400_000;
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    let remembered = || finished_remembered(&server);
    let send = |prefix: &str, n: u64, vid: u64| -> Vec<String> {
        (0..n)
            .map(|i| {
                let email = format!("{prefix}{i}@example.com");
                standin.add_contact(&email, vid + i);
                post(&server, "fatigue", vid + i, &email);
                email
            })
            .collect()
    };
    let inbox = sendtime::datasets::inbox::dataset(&data).unwrap();
    let inbox_parts = || inbox.parts().unwrap().len();
    // Two bursts a second and a half apart, sent, and merged into one inbox part.
    let early = send("early", 10, 7200);
    std::thread::sleep(Duration::from_millis(1500));
    let late = send("late", 10, 7210);
    set_clock(&clock, now_ms() + 60_000);
    eventually(Duration::from_secs(40), || {
        (enrollments(&standin.log()).len() == 20 && remembered() == 20 && inbox_parts() == 1)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not sent and merged: {} enrollments, {:?} remembered, {} parts; logs:\n{}",
            enrollments(&standin.log()).len(),
            remembered(),
            inbox_parts(),
            server.logs()
        )
    });

    // Three days after a moment between the bursts, the same process: the early ones are
    // settled, archived and forgotten; the late ones stay.
    let received = |prefix: &str| {
        plans(&data)
            .into_iter()
            .filter(|p| p.email.as_deref().is_some_and(|e| e.starts_with(prefix)))
            .map(|p| p.received_at_ms)
            .collect::<Vec<_>>()
    };
    let last_early = received("early").into_iter().max().unwrap();
    let first_late = received("late").into_iter().min().unwrap();
    assert!(last_early < first_late);
    set_clock(&clock, (last_early + first_late) / 2 + 3 * DAY);
    eventually(Duration::from_secs(30), || {
        (remembered() == 10).then_some(())
    })
    .unwrap_or_else(|| panic!("not archived; {:?}; logs:\n{}", remembered(), server.logs()));
    let new = send("new", 3, 7300);
    set_clock(&clock, now_ms() + 3 * DAY + 60_000);
    eventually(Duration::from_secs(30), || {
        (remembered() == 13 && enrollments(&standin.log()).len() == 23).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "new ones not sent; {:?}; logs:\n{}",
            remembered(),
            server.logs()
        )
    });
    // Rounds of inbox compaction (every 10 s) and ticks (every second) after the move.
    std::thread::sleep(Duration::from_secs(12));
    set_clock(&clock, now_ms() + 3 * DAY + 120_000);
    common::wait_ticks(&server, 2);
    server.stop();

    for emails in [&early, &late, &new] {
        enrolled_once(&standin, "104", emails);
    }
    assert_eq!(enrollments(&standin.log()).len(), 23);
    let archive = data.join("archive");
    let mut archived: Vec<String> = plan::read(&Dataset::open(&archive, "plan").unwrap())
        .unwrap()
        .into_iter()
        .filter_map(|p| p.email)
        .collect();
    archived.sort();
    let mut want = early.clone();
    want.sort();
    assert_eq!(archived, want);
    let live =
        sendtime::datasets::inbox::read_keys(&sendtime::datasets::inbox::dataset(&data).unwrap())
            .unwrap();
    assert_eq!(live.len(), 13);
    assert_eq!(plans(&data).len(), 13);
}

/// `archive_days`: a running `serve` deletes, once a day, the archived rows of receipts
/// received more than that many days ago, from the archive's inbox, plan and outcomes alike,
/// and from every file under the data folder, and keeps those received since.
#[test]
fn archived_receipts_older_than_archive_days_are_deleted() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = TestConfig {
        env: "DISPATCH",
        server: "archive_days = 30",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: "api_base = \"http://127.0.0.1:9\"\ndry_run = true",
        hooks: &[&HOOKS[3]],
    }
    .write(dir.path());
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    let send = |prefix: &str, vid: u64| -> Vec<String> {
        (0..5)
            .map(|i| {
                post(
                    &server,
                    "fatigue",
                    vid + i,
                    &format!("{prefix}{i}@example.com"),
                )
            })
            .collect()
    };
    // Two bursts a second and a half apart.
    let early = send("early", 7600);
    std::thread::sleep(Duration::from_millis(1500));
    let late = send("late", 7610);
    set_clock(&clock, now_ms() + 60_000);
    eventually(Duration::from_secs(30), || {
        (dry_runs(&data) == 10).then_some(())
    })
    .unwrap_or_else(|| panic!("not finished; logs:\n{}", server.logs()));
    let received = |prefix: &str| {
        plans(&data)
            .into_iter()
            .filter(|p| p.email.as_deref().is_some_and(|e| e.starts_with(prefix)))
            .map(|p| p.received_at_ms)
            .collect::<Vec<_>>()
    };
    let between = (received("early").into_iter().max().unwrap()
        + received("late").into_iter().min().unwrap())
        / 2;
    let archive = data.join("archive");
    let archived = || -> [HashSet<String>; 3] {
        if archive.join("outcomes").is_dir() {
            receipts_in(&archive)
        } else {
            Default::default()
        }
    };
    let all: HashSet<String> = early.iter().chain(&late).cloned().collect();

    // Four days on, all ten are archived and kept.
    set_clock(&clock, between + 4 * DAY);
    eventually(Duration::from_secs(30), || {
        (archived() == [all.clone(), all.clone(), all.clone()]).then_some(())
    })
    .unwrap_or_else(|| panic!("not archived: {:?}; logs:\n{}", archived(), server.logs()));
    // Copies set aside by `sendtime discard` are kept as long, no longer.
    let discarded = data.join("discarded/inbox");
    std::fs::create_dir_all(&discarded).unwrap();
    for part in std::fs::read_dir(archive.join("inbox")).unwrap() {
        let part = part.unwrap().path();
        std::fs::copy(&part, discarded.join(part.file_name().unwrap())).unwrap();
    }

    // Thirty days after a moment between the bursts, the early ones go, the late ones stay.
    set_clock(&clock, between + 30 * DAY);
    let kept: HashSet<String> = late.iter().cloned().collect();
    eventually(Duration::from_secs(30), || {
        (archived() == [kept.clone(), kept.clone(), kept.clone()]).then_some(())
    })
    .unwrap_or_else(|| panic!("not deleted: {:?}; logs:\n{}", archived(), server.logs()));
    server.stop();

    // No file under the data folder holds an early receipt's email any more.
    let emails = on_disk(&data, "email");
    assert!(emails.iter().any(|e| e.starts_with("late")), "{emails:?}");
    assert!(!emails.iter().any(|e| e.starts_with("early")), "{emails:?}");
}

/// Every value of `column` (text or integer, as text) in every Parquet file under `dir`,
/// whatever dataset or folder holds it: what a reader of the disk would find.
fn on_disk(dir: &Path, column: &str) -> Vec<String> {
    let mut values = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let df = sendtime::store::read_part(&path).unwrap();
                if let Ok(c) = df.column(column) {
                    let c = c.cast(&polars::prelude::DataType::String).unwrap();
                    values.extend(c.str().unwrap().iter().flatten().map(String::from));
                }
            }
        }
    }
    values
}

/// `sendtime erase`: a person known by an email and a HubSpot id (their receipts carry both;
/// their events came in under each) is gone from every file of the data folder, live and
/// archived receipts, events, the contact dictionary and the stored profiles, and their
/// pending receipt is never sent; another contact keeps everything. It refuses to run beside
/// `serve` and when given the email alone (naming the id), and a dry run deletes nothing.
#[test]
fn erase_deletes_a_person_from_every_file_and_nothing_else() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dry_run_config(dir.path(), &[&HOOKS[3], &HOOKS[2]]);
    std::fs::create_dir_all(&data).unwrap();
    let opens = [
        ("ann@example.com".into(), 9),
        ("7701".into(), 10),
        ("bob@example.com".into(), 11),
    ];
    import_events(&config, &data, &opens, 1..=20);
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    post(&server, "fatigue", 7701, "Ann@example.com");
    post(&server, "fatigue", 7702, "bob@example.com");
    set_clock(&clock, t0 + 60_000);
    eventually(Duration::from_secs(30), || {
        (dry_runs(&data) == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not sent; logs:\n{}", server.logs()));
    server.stop();
    // Four days on, those two are archived; Ann's next receipt waits up to a week.
    set_clock(&clock, t0 + 4 * DAY);
    let server = start(&config, &data, Some(&clock), &[]);
    let pending = post(&server, "webinar", 7701, "ann@example.com");
    post(&server, "webinar", 7702, "bob@example.com");
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    assert_eq!(receipts_in(&data.join("archive"))[1].len(), 2);
    common::sendtime(&config, &data, &["profiles"], &[]);
    let contacts = sendtime::datasets::contacts::Contacts::load(&data).unwrap();
    let index = |key: &str| contacts.get(key).unwrap().to_string();
    let (ann, ann_id, bob) = (
        index("ann@example.com"),
        index("#7701"),
        index("bob@example.com"),
    );

    // Beside a running serve: refused, nothing deleted.
    let before = (
        on_disk(&data, "email").len(),
        on_disk(&data, "contact").len(),
    );
    let beside = common::run(&config, &data, &["erase", "ann@example.com"], &[]);
    assert!(!beside.status.success());
    // A dry run beside it counts what it has written, as one with it stopped does.
    let dry_run = ["erase", "--dry-run", "ann@example.com"];
    let dry_beside = common::sendtime(&config, &data, &dry_run, &[]);
    server.stop();
    let dry = common::sendtime(&config, &data, &dry_run, &[]);
    assert_eq!(without_counted_beside(&dry_beside), dry);
    // Her receipts carry her HubSpot id, under which events came in too: named, not counted.
    assert!(dry.contains("events: 20 rows"), "{dry}");
    assert!(
        dry.lines()
            .any(|l| l.starts_with("their rows also name") && l.ends_with(": 7701")),
        "{dry}"
    );
    // Her email alone is refused, since her rows name that id: whose it is, is for the
    // operator to say.
    let linked = common::run(&config, &data, &["erase", "ann@example.com"], &[]);
    assert!(!linked.status.success());
    assert_eq!(
        (
            on_disk(&data, "email").len(),
            on_disk(&data, "contact").len()
        ),
        before
    );

    // A file set aside from the archive is not searched, and the erase says so.
    let aside = data.join("archive/quarantine/inbox");
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::write(aside.join("part-damaged"), b"unreadable").unwrap();
    // The id as the store's keys write it is taken too (`#7701` was refused).
    let erased = common::sendtime(&config, &data, &["erase", "ann@example.com", "#7701"], &[]);
    assert!(
        erased.lines().any(
            |l| l.starts_with("warning: the quarantine folders") && l.contains(" hold 1 files")
        ),
        "{erased}"
    );
    let emails = on_disk(&data, "email");
    assert!(emails.iter().any(|e| e == "bob@example.com"));
    assert!(
        !emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case("ann@example.com")),
        "{emails:?}"
    );
    assert!(!on_disk(&data, "contact_id").contains(&"7701".to_string()));
    let keys = on_disk(&data, "key");
    assert!(keys.contains(&"bob@example.com".to_string()));
    assert!(
        !keys.iter().any(|k| k == "ann@example.com" || k == "#7701"),
        "{keys:?}"
    );
    // Events and stored profile weights index contacts: Ann's two indices are in neither.
    for folder in ["events", "profiles"] {
        let indexed = on_disk(&data.join(folder), "contact");
        assert!(indexed.contains(&bob), "{folder}");
        assert!(
            !indexed.contains(&ann) && !indexed.contains(&ann_id),
            "{folder}"
        );
    }
    assert_eq!(
        sendtime::datasets::contacts::Contacts::load(&data)
            .unwrap()
            .len(),
        contacts.len(),
        "indices kept"
    );
    // The file her events came from, imported again, brings none back (nor would HubSpot's
    // next import, which reads the hours before its last run again); what records that she
    // was erased does not name her.
    import_events(&config, &data, &opens, 1..=20);
    let indexed = on_disk(&data.join("events"), "contact");
    assert_eq!(indexed.iter().filter(|c| **c == bob).count(), 20);
    assert_eq!(indexed.len(), 20, "{indexed:?}");
    let keys = on_disk(&data, "key");
    assert!(!keys.iter().any(|k| k == "ann@example.com" || k == "#7701"));
    let record = std::fs::read_to_string(data.join("state/erased.json")).unwrap();
    // (Hex alone: a hash may hold the digits 7701.)
    assert!(
        !record.contains("ann@") && !record.contains("#7701"),
        "{record}"
    );

    // Her pending receipt is not sent when its week is up; Bob's is.
    set_clock(&clock, t0 + 12 * DAY);
    let server = start(&config, &data, Some(&clock), &[]);
    eventually(Duration::from_secs(30), || {
        (dry_runs(&data) == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("Bob's not sent; logs:\n{}", server.logs()));
    common::wait_ticks(&server, 2);
    server.stop();
    assert!(outcomes(&data).iter().all(|r| r.receipt_id != pending));
    assert_eq!(dry_runs(&data), 1);
}

/// An erase cut short leaves whom it erases, and their receipts, in `state/erase.pending`:
/// no dispatcher starts on the folder (a receipt half erased could be sent), and `erase`
/// without a contact finishes it, outcome rows of receipts whose other rows went included.
#[test]
fn an_erase_cut_short_stops_dispatching_until_it_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dry_run_config(dir.path(), &[&HOOKS[3]]);
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    let cat = post(&server, "fatigue", 7801, "cat@example.com");
    let dan = post(&server, "fatigue", 7802, "dan@example.com");
    set_clock(&clock, now_ms() + 60_000);
    eventually(Duration::from_secs(30), || {
        (dry_runs(&data) == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not sent; logs:\n{}", server.logs()));
    server.stop();
    // As an erase of Cat leaves it when killed after her inbox and plan rows went.
    for name in ["inbox", "plan"] {
        Dataset::open(&data, name)
            .unwrap()
            .remove_rows(&["receipt_id"], |df| {
                Ok(df
                    .column("receipt_id")?
                    .str()?
                    .iter()
                    .map(|r| r == Some(cat.as_str()))
                    .collect())
            })
            .unwrap();
    }
    let intent = data.join("state/erase.pending");
    std::fs::write(
        &intent,
        format!(r#"{{"person":{{"emails":["cat@example.com"],"ids":[]}},"receipts":["{cat}"]}}"#),
    )
    .unwrap();
    let env = [("DISPATCH_SECRET", SECRET), ("DISPATCH_TOKEN", TOKEN)];
    let refused = common::run(&config, &data, &["tick"], &env);
    assert!(!refused.status.success());
    let out = common::sendtime(&config, &data, &["erase"], &[]);
    assert!(out.contains("contact: cat@example.com"), "{out}");
    assert!(!intent.exists());
    let left: Vec<String> = outcomes(&data).into_iter().map(|r| r.receipt_id).collect();
    assert_eq!(left, std::slice::from_ref(&dan));
    assert_eq!(receipts_in(&data)[1], HashSet::from([dan]));
    common::sendtime(&config, &data, &["tick"], &env);
}

/// kill -9 during `sendtime erase`, as each of the first twelve files it writes in `events/`
/// and `contacts/` appears: whenever it lands, the other contacts' events are listed once (a
/// rewritten part and the one it replaces are never both listed, nor neither), and the next
/// `erase` finishes: the person's events gone, the others' all there, one dictionary row an
/// index.
#[test]
fn kill_9_during_an_erase_lists_every_other_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let config = dry_run_config(dir.path(), &[&HOOKS[3]]);
    std::fs::create_dir_all(&pristine).unwrap();
    let people = ["ann", "carl", "dave", "joann"];
    let contacts: Vec<(String, u32)> = people
        .iter()
        .map(|p| (format!("{p}@example.com"), 9))
        .collect();
    import_events(&config, &pristine, &contacts, 1..=10);
    let count = |data: &Path| -> HashMap<String, usize> {
        let mut n = HashMap::new();
        for part in sendtime::datasets::events::dataset(data)
            .unwrap()
            .parts()
            .unwrap()
        {
            let df = sendtime::store::read_part(&part).unwrap();
            for e in df.column("email").unwrap().str().unwrap().iter().flatten() {
                *n.entry(e.to_string()).or_default() += 1;
            }
        }
        n
    };
    let others: HashMap<String, usize> = people[1..]
        .iter()
        .map(|p| (format!("{p}@example.com"), 10))
        .collect();
    let mut cut_short = 0;
    for nth in 1..=12 {
        let data = dir.path().join(format!("data-{nth}"));
        common::copy_dir(&pristine, &data);
        let folders = [data.join("events"), data.join("contacts")];
        let listed = || -> HashSet<PathBuf> {
            folders
                .iter()
                .flat_map(|f| std::fs::read_dir(f).unwrap().filter_map(|e| e.ok()))
                .map(|e| e.path())
                .collect()
        };
        kill_at_nth_file(&config, &data, &["erase", "ann@example.com"], nth, listed);
        let mut listed_now = count(&data);
        let ann = listed_now.remove("ann@example.com").unwrap_or(0);
        assert!(ann == 10 || ann == 0, "kill {nth}: ann listed {ann} times");
        assert_eq!(listed_now, others, "kill {nth}: before finishing");
        if ann == 10 {
            cut_short += 1;
        }
        // Finished by `erase` alone when the intent was written, else asked again.
        let finish = if data.join("state/erase.pending").exists() {
            vec!["erase"]
        } else {
            vec!["erase", "ann@example.com"]
        };
        common::sendtime(&config, &data, &finish, &[]);
        let mut after = count(&data);
        assert_eq!(after.remove("ann@example.com"), None, "kill {nth}");
        assert_eq!(after, others, "kill {nth}: after finishing");
        // One row an index: no entry left beside its blank, nor a second blank.
        let dictionary = sendtime::datasets::contacts::Contacts::load(&data).unwrap();
        assert_eq!(dictionary.len(), people.len());
        assert_eq!(
            sendtime::datasets::contacts::Contacts::count(&data).unwrap(),
            people.len(),
            "kill {nth}"
        );
    }
    assert!(
        cut_short > 0,
        "no kill landed before the events were rewritten"
    );
}

/// The receipt ids in each of a data folder's `inbox`, `plan` and `outcomes` (under `dir`,
/// the data folder or its archive), as read from their parts.
fn receipts_in(dir: &Path) -> [HashSet<String>; 3] {
    let open = |name| Dataset::open(dir, name).unwrap();
    [
        sendtime::datasets::inbox::read_keys(&open("inbox"))
            .unwrap()
            .into_iter()
            .map(|k| k.receipt_id)
            .collect(),
        plan::read(&open("plan"))
            .unwrap()
            .into_iter()
            .map(|p| p.receipt_id)
            .collect(),
        outcomes::read(&open("outcomes"))
            .unwrap()
            .into_iter()
            .map(|r| r.receipt_id)
            .collect(),
    ]
}

/// `sendtime_dispatch_finished_remembered` on the server's `/metrics`.
fn finished_remembered(server: &Server) -> u64 {
    common::metric(server, "sendtime_dispatch_finished_remembered")
}

/// kill -9 at six points of the daily move to the archive: as the first and as the second
/// file of each dataset's archive appears. The first file of one dataset falls after the one
/// moved before it is done, whatever their order. After each restart, the receipts are in
/// the archive once and nowhere else, and no contact is enrolled twice. The kill lands
/// within a poll (under a millisecond) of the file appearing, while the move's fsyncs take
/// several.
#[test]
fn kill_9_during_the_daily_archive_move_loses_and_repeats_nothing() {
    const DAY: i64 = 86_400_000;
    const DATASETS: [&str; 3] = ["inbox", "plan", "outcomes"];
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive = data.join(sendtime::datasets::ARCHIVE);
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let clock = dir.path().join("clock");
    // Every file name ever seen in the archive of the dataset `name`: how many.
    let mut seen: HashMap<&str, HashSet<PathBuf>> = HashMap::new();
    let mut look = |name: &'static str| {
        let seen = seen.entry(name).or_default();
        if let Ok(entries) = std::fs::read_dir(archive.join(name)) {
            seen.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
        }
        seen.len()
    };
    let mut all = Vec::new();
    let mut ids = HashSet::new();
    let mut cut_short = 0;
    for round in 0..2 * DATASETS.len() {
        // Each round starts four days after the last: what it sent is settled a day on.
        let base = now_ms() + round as i64 * 4 * DAY;
        set_clock(&clock, base);
        let mut server = start(&config, &data, Some(&clock), &[]);
        let emails: Vec<String> = (0..12)
            .map(|i| format!("r{round}-{i}@example.com"))
            .collect();
        for (i, e) in emails.iter().enumerate() {
            let vid = 8000 + 100 * round as u64 + i as u64;
            standin.add_contact(e, vid);
            ids.insert(post(&server, "fatigue", vid, e));
        }
        set_clock(&clock, base + 60_000);
        // Sent, and remembered alone: the last round's are archived at the start.
        let sent = || {
            let enrolled = enrollments(&standin.log());
            emails
                .iter()
                .all(|e| enrolled.contains_key(&("104".to_string(), e.clone())))
        };
        eventually(Duration::from_secs(40), || {
            (sent() && finished_remembered(&server) == emails.len() as u64).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: {:?} remembered, {} enrollments; logs:\n{}",
                finished_remembered(&server),
                enrollments(&standin.log()).len(),
                server.logs()
            )
        });
        all.extend(emails);

        // The day's move, killed once the `nth` new file is in the archive of `name`.
        let (name, nth) = (DATASETS[round / 2], round % 2 + 1);
        let before = look(name);
        set_clock(&clock, base + 3 * DAY + DAY / 2);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while look(name) < before + nth {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no file {nth} in archive/{name}; logs:\n{}",
                server.logs()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        let live = receipts_in(&data);
        if live.iter().any(|set| !set.is_disjoint(&ids)) {
            cut_short += 1;
        }
    }
    assert!(cut_short > 0, "no kill landed before the move was done");

    // The next start finishes what the kills interrupted.
    let server = start(&config, &data, Some(&clock), &[]);
    eventually(Duration::from_secs(20), || {
        receipts_in(&data)
            .iter()
            .all(|set| set.is_disjoint(&ids))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("settled receipts left live; logs:\n{}", server.logs()));
    server.stop();
    enrolled_once(&standin, "104", &all);
    assert_eq!(enrollments(&standin.log()).len(), all.len());
    for (name, archived) in DATASETS.iter().zip(receipts_in(&archive)) {
        assert_eq!(archived, ids, "archive/{name}");
    }
}

/// A receipt received long ago but sent in the last two days stays where the daily budget
/// counts its call at the next start: it is archived only once that call is older. (Archived
/// with its row of the call, a restart would plan that day as if the call was never made.)
#[test]
fn a_receipt_sent_in_the_last_two_days_is_not_archived_yet() {
    const DAY: i64 = 86_400_000;
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3], &HOOKS[2]]);
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0);
    let server = start(&config, &data, Some(&clock), &[]);
    for (hook, vid, email) in [
        ("fatigue", 7400, "now@example.com"),
        ("webinar", 7401, "week@example.com"),
    ] {
        standin.add_contact(email, vid);
        post(&server, hook, vid, email);
    }
    set_clock(&clock, now_ms() + 60_000);
    eventually(Duration::from_secs(30), || {
        (enrollments(&standin.log()).len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("not sent; logs:\n{}", server.logs()));
    // Eight days on, the same process: the week's receipt goes, and a day has passed since
    // the start, so the tick archives what is settled.
    set_clock(&clock, t0 + 8 * DAY);
    let emails =
        |rows: Vec<PlanRow>| -> Vec<String> { rows.into_iter().filter_map(|p| p.email).collect() };
    let archived = || {
        // Not opened before the move made it (opening makes the folder).
        let folder = data.join("archive/plan").is_dir();
        let archive = folder.then(|| Dataset::open(&data.join("archive"), "plan").ok())??;
        Some(emails(plan::read(&archive).ok()?))
    };
    eventually(Duration::from_secs(30), || {
        archived().filter(|a| !a.is_empty())
    })
    .unwrap_or_else(|| panic!("not archived; logs:\n{}", server.logs()));
    assert_eq!(enrollments(&standin.log()).len(), 2);
    server.stop();
    let archive = Dataset::open(&data.join("archive"), "plan").unwrap();
    assert_eq!(emails(plan::read(&archive).unwrap()), ["now@example.com"]);
    assert_eq!(emails(plans(&data)), ["week@example.com"]);

    // Three days later its call is past the budget's two days: the next start archives it.
    set_clock(&clock, t0 + 11 * DAY);
    let server = start(&config, &data, Some(&clock), &[]);
    server.stop();
    assert!(plans(&data).is_empty());
    assert_eq!(plan::read(&archive).unwrap().len(), 2);
    // The two moves' parts are merged: a lookup reads the archive whole.
    assert_eq!(archive.parts().unwrap().len(), 1);
}

/// `sendtime pause ID` beside a running `serve`: the webhook's contacts are received and held,
/// across a restart, and go once `sendtime resume ID` lifts it; `/status` and the metrics show it.
#[test]
fn a_paused_webhook_holds_its_contacts_until_resumed_across_a_restart() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let cli = |args: &[&str]| common::sendtime(&config, &data, args, &[]);
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    assert!(cli(&["pause", "fatigue"]).contains("webhook fatigue paused"));
    let emails: Vec<String> = (0..3).map(|i| format!("p{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 6100 + i as u64);
        post(&server, "fatigue", 6100 + i as u64, e);
    }
    set_clock(&clock, now_ms() + 60_000);
    let status = eventually(Duration::from_secs(20), || {
        let s: serde_json::Value = common::get(server.admin_url("/status")).ok()?.json().ok()?;
        (plans(&data).len() == 3).then_some(s)
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    assert_eq!(status["paused"]["fatigue"]["kind"], "webhook");
    common::wait_ticks(&server, 3);
    assert!(enrollments(&standin.log()).is_empty(), "held while paused");
    assert_eq!(
        common::metric(
            &server,
            "sendtime_operator_paused{id=\"fatigue\",kind=\"webhook\"}"
        ),
        1
    );
    server.stop();

    // The pause outlasts the process.
    let server = start(&config, &data, Some(&clock), &[]);
    common::wait_ticks(&server, 3);
    assert!(
        enrollments(&standin.log()).is_empty(),
        "held after a restart"
    );
    assert!(cli(&["pause"]).contains("fatigue (webhook) paused since"));
    assert!(!cli(&["pause"]).contains("not in the config"));
    // Listed by a config without it, the pause says so.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let without = write_config(&other, &standin.url(), "", &[&HOOKS[0]]);
    let listed = common::sendtime(&without, &data, &["pause"], &[]);
    assert!(
        listed.contains("fatigue (webhook) paused since")
            && listed.contains("not in the config now"),
        "{listed}"
    );
    assert!(cli(&["pause", "fatigue"]).contains("webhook fatigue was already paused, since"));

    assert!(cli(&["resume", "fatigue"]).contains("webhook fatigue resumed"));
    assert!(cli(&["resume", "fatigue"]).contains("webhook fatigue was not paused"));
    // Held contacts are looked at again each minute.
    set_clock(&clock, now_ms() + 180_000);
    eventually(Duration::from_secs(30), || {
        let e = enrollments(&standin.log());
        emails
            .iter()
            .all(|m| e.get(&("104".to_string(), m.clone())) == Some(&1))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not enrolled after resume; logs:\n{}", server.logs()));
    server.stop();
}

/// A pause set while a tick is sending holds what has not gone out yet: the calls still
/// waiting on the limiter check it, not only the next tick. Once resumed, every contact is
/// enrolled once.
#[test]
fn a_pause_set_during_a_tick_holds_the_calls_not_yet_made() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 10 per 10 s: paced at 8, one call every 1.25 s.
    let config = write_config(
        dir.path(),
        &standin.url(),
        "requests_per_10s = 10",
        &[&HOOKS[3]],
    );
    let cli = |args: &[&str]| common::sendtime(&config, &data, args, &[]);
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    let emails: Vec<String> = (0..8).map(|i| format!("mid{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 7300 + i as u64);
        post(&server, "fatigue", 7300 + i as u64, e);
    }
    set_clock(&clock, now_ms() + 2_000);
    let enrolled = || enrollments(&standin.log()).values().sum::<usize>();
    eventually(Duration::from_secs(20), || (enrolled() >= 1).then_some(()))
        .unwrap_or_else(|| panic!("nothing enrolled; logs:\n{}", server.logs()));
    assert!(cli(&["pause", "fatigue"]).contains("webhook fatigue paused"));
    let at_pause = enrolled();
    // Without the check, the tick's remaining calls go on, one every 1.25 s.
    std::thread::sleep(Duration::from_secs(5));
    let after = enrolled();
    assert!(
        after <= at_pause + 1,
        "{at_pause} enrolled at the pause, {after} five seconds later"
    );
    assert!(after < emails.len());
    assert!(cli(&["resume", "fatigue"]).contains("webhook fatigue resumed"));
    // Held contacts are looked at again each minute.
    set_clock(&clock, now_ms() + 180_000);
    eventually(Duration::from_secs(60), || {
        let e = enrollments(&standin.log());
        emails
            .iter()
            .all(|m| e.get(&("104".to_string(), m.clone())) == Some(&1))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not all enrolled once after resume; logs:\n{}",
            server.logs()
        )
    });
    server.stop();
}

/// A batch of several webhooks' contacts (list adds of one list here, as callbacks of one
/// connector) that waits within its tick (on a 429) goes without the contacts of a webhook
/// paused meanwhile; they are listed once it is resumed.
#[test]
fn a_pause_set_while_a_mixed_batch_waits_holds_that_webhooks_contacts() {
    use sendtime::hubspot::RatePolicy;
    use sendtime::hubspot::standin::{Fault, Injection};
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let hooks = [
        Hook {
            id: "list-a",
            kind: "UPDATE_ONLY",
            target: "list_id = \"987\"",
        },
        Hook {
            id: "list-b",
            kind: "UPDATE_ONLY",
            target: "list_id = \"987\"",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "", &[&hooks[0], &hooks[1]]);
    let cli = |args: &[&str]| common::sendtime(&config, &data, args, &[]);
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    // The connector paused while they arrive, so that one tick finds all six due.
    cli(&["pause", "main", "--connector"]);
    for vid in 9101..9104 {
        post(&server, "list-a", vid, &format!("a{vid}@example.com"));
        post(&server, "list-b", vid + 100, &format!("b{vid}@example.com"));
    }
    eventually(Duration::from_secs(20), || {
        let status: serde_json::Value =
            common::get(server.admin_url("/status")).ok()?.json().ok()?;
        let pending = |i: usize| status["webhooks"][i]["pending"].as_u64();
        (pending(0) == Some(3) && pending(1) == Some(3)).then_some(())
    })
    .unwrap_or_else(|| panic!("not all planned; logs:\n{}", server.logs()));
    standin.inject(
        Injection::next(Fault::RateLimited {
            policy: RatePolicy::TenSecondly,
            retry_after: Some(Duration::from_secs(15)),
        })
        .on("/crm/lists"),
    );
    cli(&["resume", "main", "--connector"]);
    set_clock(&clock, now_ms() + 2_000);
    let lists = |log: &[LogEntry]| log.iter().filter(|e| e.path.contains("/lists/")).count();
    eventually(Duration::from_secs(20), || {
        (lists(&standin.log()) == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("no list add; logs:\n{}", server.logs()));
    // The batch waits out the 429 within its tick: list-a is paused meanwhile.
    cli(&["pause", "list-a"]);
    eventually(Duration::from_secs(30), || {
        (lists(&standin.log()) == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no second list add; logs:\n{}", server.logs()));
    // Ticks that ran whole after the second list add: none lists the paused webhook's contacts.
    common::wait_ticks(&server, 2);
    let mut members = standin.list_members("987");
    members.sort();
    assert_eq!(members, ["9201", "9202", "9203"]);
    cli(&["resume", "list-a"]);
    // Held contacts are looked at again each minute.
    set_clock(&clock, now_ms() + 120_000);
    eventually(Duration::from_secs(30), || {
        (standin.list_members("987").len() == 6).then_some(())
    })
    .unwrap_or_else(|| panic!("list-a not listed after resume; logs:\n{}", server.logs()));
    server.stop();
}

/// Outcome parts that fail their checksum are set aside, and with them the record of what
/// went out: the receipts they held are checked at HubSpot before anything is sent again, so
/// contacts already enrolled are not enrolled twice.
#[test]
fn receipts_whose_outcomes_were_quarantined_are_checked_not_sent_again() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let emails = receive_only(&config, &data, &standin, ("q", 3), 8300);
    let due = now_ms() + 2 * 24 * 3_600_000;
    let (out, err) = tick_once(&config, &data, due, TOKEN);
    assert!(out.contains("enrolled=3 "), "{out}\n{err}");

    let ds = outcomes::dataset(&data).unwrap();
    for part in ds.parts().unwrap() {
        let mut bytes = std::fs::read(&part).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&part, bytes).unwrap();
    }
    let (out, err) = tick_once(&config, &data, due + 60_000, TOKEN);
    assert!(out.contains("enrolled=3 "), "{out}\n{err}");
    enrolled_once(&standin, "104", &emails);
    assert!(ds.quarantine_dir().read_dir().unwrap().count() > 0);
}

/// A sparse cron (a tick a day): a start after its time passed while `serve` was down ticks at
/// once, and what came due meanwhile goes then, not at the next day's fire; so does a start
/// with no record of the last tick, or one ahead of the clock.
#[test]
fn a_tick_missed_while_stopped_runs_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = |cron: &str| {
        TestConfig {
            env: "DISPATCH",
            tables: &format!("[scheduler]\ncron = \"{cron}\""),
            connector: "dry_run = true",
            hooks: &[&HOOKS[3]],
            ..TestConfig::default()
        }
        .write(dir.path())
    };
    // The last tick's fire time, as `serve` keeps it.
    let record = |at_ms: i64| {
        std::fs::create_dir_all(data.join("state")).unwrap();
        std::fs::write(
            data.join("state/scheduler.json"),
            format!("{{\"last_fire_ms\": {at_ms}}}"),
        )
        .unwrap();
    };
    // A contact posted under the yearly cron: no tick to wait for (none is due this year),
    // real time, for one started at once (as a catch-up is) to have run, and then no tick at
    // all, not only nothing dispatched (a tick at the start, before the post, would dispatch
    // nothing either).
    let posted_untouched = |vid: u64, email: &str| {
        let server = start(&config("0 0 0 1 1 *"), &data, None, &[]);
        post(&server, "fatigue", vid, email);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(common::ticks(&server), 0, "logs:\n{}", server.logs());
        server.stop();
    };
    // A start under `cron` that catches up at once: `sent` dry runs in all.
    let caught_up = |cron: &str, sent: usize| {
        let server = start(&config(cron), &data, None, &[]);
        let done = eventually(Duration::from_secs(20), || {
            (dry_runs(&data) == sent).then_some(())
        });
        assert!(done.is_some(), "not caught up; logs:\n{}", server.logs());
        server.stop();
    };
    // Once a year, and a tick just recorded (a start without a record ticks at once):
    // nothing is dispatched while the contact is posted.
    record(now_ms());
    posted_untouched(9100, "missed@example.com");
    assert!(outcomes(&data).is_empty());

    // The last tick ran two days ago; midnight passed since, while serve was down.
    let two_days_ago = now_ms() - 2 * 86_400_000;
    record(two_days_ago);
    caught_up("0 0 0 * * *", 1);
    // The tick it ran is kept: the next start has nothing to catch up.
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("state/scheduler.json")).unwrap()).unwrap();
    assert!(kept["last_fire_ms"].as_i64().unwrap() > two_days_ago);

    // A contact posted under the yearly cron again, then the record removed, as in a data
    // folder last run by a version that kept none: whether a fire was missed is unknown, so
    // the start ticks at once.
    posted_untouched(9101, "upgraded@example.com");
    assert_eq!(dry_runs(&data), 1);
    std::fs::remove_file(data.join("state/scheduler.json")).unwrap();
    caught_up("0 0 0 1 1 *", 2);

    // A record ahead of the clock (kept while it ran two days ahead, since corrected): the
    // same (the start waited for the day after the one recorded; an audit).
    record(now_ms());
    posted_untouched(9102, "ahead@example.com");
    record(now_ms() + 2 * 86_400_000);
    caught_up("0 0 0 * * *", 3);
}

/// A running `serve` whose clock jumps past its contacts' due times into the night (a host
/// suspended, a sparse cron) sends none of them in their quiet hours; they go in the morning.
#[test]
fn a_running_serve_holds_overdue_contacts_through_their_quiet_hours() {
    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &standin.url(),
        "dry_run = true\nquiet_hours = \"21:00-08:00\"",
        &[&HOOKS[2]],
    );
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let server = start(&config, &data, Some(&clock), &[]);
    for i in 0..10 {
        post(
            &server,
            "webinar",
            7300 + i,
            &format!("night{i}@example.com"),
        );
    }
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == 10).then_some(())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    let sent = || dry_runs(&data);
    // Eight days on, all overdue, at 02:00 UTC: held.
    let day8 = (now_ms() / DAY + 8) * DAY;
    set_clock(&clock, day8 + 2 * HOUR);
    common::wait_ticks(&server, 3);
    assert_eq!(sent(), 0, "logs:\n{}", server.logs());
    set_clock(&clock, day8 + 8 * HOUR + HOUR / 2);
    eventually(Duration::from_secs(30), || (sent() == 10).then_some(()))
        .unwrap_or_else(|| panic!("not sent in the morning; logs:\n{}", server.logs()));
    server.stop();
}

const STEP_ON_MAIN: Hook = Hook {
    id: "step",
    kind: "IMMEDIATE",
    target: "workflow_id = 1\nconnector = \"main\"",
};
const STEP_ON_OTHER: Hook = Hook {
    id: "step",
    kind: "IMMEDIATE",
    target: "workflow_id = 1\nconnector = \"other\"",
};

/// A webhook whose type changed from `UPDATE_ONLY` to an enrolling one (or back): what it
/// took as the other is held, not sent the new way, and `discard` counts it; back as it was,
/// it goes out as taken. An earlier version enrolled contacts queued for a list into an email
/// workflow (an audit found it).
#[test]
fn a_webhook_whose_type_changed_holds_what_it_took_as_the_other() {
    let (_rt, standin, dir, data) = listed_receipt("listed@example.com", 8340);
    let config = write_config(dir.path(), &standin.url(), "", &[&HOOKS[3]]);
    let (out, err) = tick_once(&config, &data, now_ms(), TOKEN);
    assert!(out.contains("enrolled=0 "), "{out}\n{err}");
    assert!(enrollments(&standin.log()).is_empty(), "{err}");
    assert!(outcomes(&data).is_empty(), "nothing recorded for it");
    let dry = common::sendtime(&config, &data, &["discard", "--dry-run", "fatigue"], &[]);
    assert!(dry.contains("receipts: 1"), "{dry}");

    let config = write_config(dir.path(), &standin.url(), "", &[&LISTED]);
    tick_once(&config, &data, now_ms(), TOKEN);
    assert_eq!(standin.list_members("987"), ["8340"]);
    assert!(enrollments(&standin.log()).is_empty());
}

/// A webhook moved to another account's connector: the contacts it took for the first
/// account are held (contact ids are each account's own: the other would enroll some other
/// person) and book none of the new connector's daily budget, `discard` counts them, what it
/// takes after the move goes through the new connector, and back on its first connector,
/// after a restart, the held go out there once. An earlier version enrolled them through the
/// new connector.
#[test]
fn a_webhook_moved_to_another_accounts_connector_holds_what_it_took_before() {
    let rt = runtime();
    let first = rt.block_on(StandIn::start(Options::default())).unwrap();
    let second = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // `main` (portal 62515) calls `first`; `other` (portal 777) calls `second`, one call a
    // day: the held receipts must not use it up.
    let write = |hook: &Hook| {
        let connectors = format!(
            "api_base = \"{}\"\n[[connector]]\nid = \"other\"\nportal_id = 777\napp_id = 2\n\
             client_secret_env = \"DISPATCH_SECRET\"\naccess_token_env = \"DISPATCH_TOKEN\"\n\
             daily_budget = 1\napi_base = \"{}\"",
            first.url(),
            second.url()
        );
        TestConfig {
            env: "DISPATCH",
            tables: "[scheduler]\ncron = \"* * * * * *\"",
            connector: &connectors,
            hooks: &[hook],
            ..TestConfig::default()
        }
        .write(dir.path())
    };
    let config = write(&STEP_ON_MAIN);
    let clock = dir.path().join("clock");
    let t0 = now_ms();
    set_clock(&clock, t0 - 60_000);
    let server = start(&config, &data, Some(&clock), &[]);
    let emails: Vec<String> = (0..3).map(|i| format!("taken-{i}@example.com")).collect();
    for (i, email) in emails.iter().enumerate() {
        first.add_contact(email, 100 + i as u64);
        // Someone else in the other account has the same record id.
        second.add_contact(&format!("other-{i}@example.com"), 100 + i as u64);
        post(&server, "step", 100 + i as u64, email);
    }
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == 3).then_some(())
    })
    .expect("planned");
    write(&STEP_ON_OTHER);
    wait_for_config(&server, &config);
    second.add_contact("late@example.com", 500);
    post_body(
        &server,
        "step",
        r#"{"vid": 500, "portal-id": 777, "properties": {"email": {"value": "late@example.com"}}}"#
            .into(),
    );
    set_clock(&clock, t0 + 3_600_000);
    wait_enrolled(&second, &server, "1", "late@example.com");
    eventually(Duration::from_secs(20), || {
        (common::metric(&server, "sendtime_dispatch_held{webhook=\"step\"}") == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("not held; logs:\n{}", server.logs()));
    server.stop();
    assert!(enrollments(&first.log()).is_empty());
    let at_second: Vec<(String, String)> = enrollments(&second.log()).into_keys().collect();
    assert_eq!(
        at_second,
        [("1".to_string(), "late@example.com".to_string())]
    );
    // Each plan row names the account its receipt was taken for.
    let portals: BTreeSet<(Option<String>, Option<i64>)> = plans(&data)
        .into_iter()
        .map(|p| (p.email, p.portal_id))
        .collect();
    let mut want: BTreeSet<_> = emails
        .iter()
        .map(|e| (Some(e.clone()), Some(62515)))
        .collect();
    want.insert((Some("late@example.com".into()), Some(777)));
    assert_eq!(portals, want);
    let dry = common::sendtime(&config, &data, &["discard", "--dry-run", "step"], &[]);
    assert!(dry.contains("receipts: 3"), "{dry}");
    // One taken for `main` and not planned yet (serve stopped first) is counted too: its
    // inbox row names its account.
    let receipt = ulid::Ulid::generate().to_string();
    write_inbox_row(
        &data,
        &receipt,
        "step",
        103,
        "unplanned@example.com",
        now_ms(),
    );
    let dry = common::sendtime(&config, &data, &["discard", "--dry-run", "step"], &[]);
    assert!(dry.contains("receipts: 4"), "{dry}");
    // On a copy: a discard cut short and finished while `step` still sends through `other`
    // gives the four up without calling `step` back in the config for them.
    let copy = dir.path().join("copy");
    common::copy_dir(&data, &copy);
    std::fs::create_dir_all(copy.join("discarded")).unwrap();
    std::fs::write(copy.join("discarded/outcomes"), "").unwrap();
    assert!(
        !common::run(&config, &copy, &["discard", "step"], &[])
            .status
            .success()
    );
    std::fs::remove_file(copy.join("discarded/outcomes")).unwrap();
    let out = common::sendtime(&config, &copy, &["discard"], &[]);
    assert!(out.starts_with("finished a discard"), "{out}");
    assert!(out.contains("receipts: 4"), "{out}");
    assert!(!out.contains("in the config again"), "{out}");

    write(&STEP_ON_MAIN);
    let server = start(&config, &data, Some(&clock), &[]);
    for e in &emails {
        wait_enrolled(&first, &server, "1", e);
    }
    server.stop();
    enrolled_once(&first, "1", &emails);
    assert!(!enrollments(&first.log()).contains_key(&("1".into(), "late@example.com".into())));
    assert_eq!(enrollments(&second.log()).len(), 1);
}

/// `sendtime tick` stopped by Ctrl-C finishes the calls in flight and records them, and
/// starts no other: it had no handler, so each contact in flight was left in doubt (an
/// `attempting` row alone) for the next run to check with HubSpot, and the run ended by the
/// signal without a word (an audit).
#[test]
fn a_tick_stopped_by_a_signal_records_its_calls_in_flight() {
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            slow_rate: 1.0,
            slow_by: Duration::from_secs(2),
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = fatigue_config(dir.path(), &standin.url(), "", "workflow_id = 104");
    let now = now_ms();
    let rows: Vec<_> = (1..=60)
        .map(|n| {
            let email = format!("s{n}@example.com");
            standin.add_contact(&email, n);
            let id = ulid::Ulid::from_parts(now as u64, u128::from(n)).to_string();
            common::inbox_row(&id, "fatigue", n as i64, Some(email), now)
        })
        .collect();
    common::write_inbox(&data, &rows);
    let mut tick = common::Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("tick")
            .envs([("DISPATCH_SECRET", SECRET), ("DISPATCH_TOKEN", TOKEN)])
            // Read once it ended: a verbose log would fill the pipe and hold the tick.
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Calls under way at the stand-in (each answered after 2 s).
    eventually(Duration::from_secs(30), || {
        (standin
            .log()
            .iter()
            .any(|e| e.path.contains("/enrollments/")))
        .then_some(())
    })
    .expect("no enrollment called");
    assert_eq!(unsafe { libc::kill(tick.0.id() as i32, libc::SIGINT) }, 0);
    let status = eventually(Duration::from_secs(20), || tick.0.try_wait().unwrap())
        .expect("the tick did not stop");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut tick.0.stderr.take().unwrap(), &mut said).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("stopped by SIGINT"), "{said}");
    let rows = outcomes::read(&outcomes::dataset(&data).unwrap()).unwrap();
    let mut last: HashMap<&str, Status> = HashMap::new();
    for r in &rows {
        last.insert(&r.receipt_id, r.status);
    }
    assert!(!last.is_empty());
    assert!(last.values().all(|s| *s == Status::Enrolled), "{last:?}");
    // Nothing new started once stopped: some were left for the next run.
    assert!(last.len() < 60, "{}", last.len());
}
