//! Planning within what HubSpot can take, through the real binary: a crowd of contacts that
//! all prefer one hour is spread over the minutes the connector can send (and its daily
//! budget), inside each contact's window or marked as spilled, and the stand-in never answers
//! 429; quiet hours hold in each contact's own zone across a daylight-saving change.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Timelike};
use chrono_tz::Tz;
use common::{Hook, Server, TestConfig, contact_body, eventually, now_ms, post_signed, runtime};
use sendtime::datasets::inbox::{self, Receipt};
use sendtime::datasets::plan::{self, PlanRow};
use sendtime::hubspot::standin::{Options, StandIn};

const SECRET: &str = "capacity-secret";
const TOKEN: &str = "standin-token";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// Two webhooks sent at once to workflows 1 and 2: one paused or taken out beside the other.
const IMMEDIATE_A: Hook = Hook {
    id: "a",
    kind: "IMMEDIATE",
    target: "workflow_id = 1",
};
const IMMEDIATE_B: Hook = Hook {
    id: "b",
    kind: "IMMEDIATE",
    target: "workflow_id = 2",
};

fn plans(data: &Path) -> Vec<PlanRow> {
    plan::read(&plan::dataset(data).unwrap()).unwrap()
}

fn sendtime(config: &Path, data: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .env("CAPACITY_SECRET", SECRET)
        .env("CAPACITY_TOKEN", TOKEN)
        .output()
        .unwrap()
}

/// `sendtime serve` on `config` and `data`, its clock read from the file `clock`.
fn serve_at(config: &Path, data: &Path, clock: &Path) -> Server {
    let clock_file = clock.display().to_string();
    Server::start(
        config,
        data,
        &[
            ("CAPACITY_SECRET", SECRET),
            ("CAPACITY_TOKEN", TOKEN),
            ("SENDTIME_CLOCK_FILE", clock_file.as_str()),
        ],
    )
}

/// `sendtime tick --now at`, which must succeed.
fn tick_at(config: &Path, data: &Path, at: &str) {
    let out = sendtime(config, data, &["tick", "--now", at]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The contact ids of the receipts a dry run released, sorted.
fn released(data: &Path) -> Vec<i64> {
    use sendtime::datasets::outcomes::{self, Status};
    let contacts: HashMap<String, Option<i64>> = plans(data)
        .into_iter()
        .map(|p| (p.receipt_id, p.contact_id))
        .collect();
    let mut ids: Vec<i64> = outcomes::read(&outcomes::dataset(data).unwrap())
        .unwrap()
        .into_iter()
        .filter(|r| r.status == Status::DryRun)
        .filter_map(|r| *contacts.get(&r.receipt_id)?)
        .collect();
    ids.sort();
    ids
}

/// Opens at `hour` UTC on 12 past days for each of `emails`, through `sendtime import csv`.
fn import_opens(config: &Path, data: &Path, emails: &[String], hour: i64) {
    let mut csv = String::from("email,opened\n");
    let today = now_ms() / DAY * DAY;
    for email in emails {
        for d in 1..=12 {
            csv.push_str(&format!(
                "{email},{}\n",
                today - d * DAY + hour * HOUR + 10 * MINUTE
            ));
        }
    }
    let file = data.parent().unwrap().join("opens.csv");
    std::fs::write(&file, csv).unwrap();
    let file = file.display().to_string();
    let out = sendtime(
        config,
        data,
        &[
            "import",
            "csv",
            &file,
            "--contact",
            "email",
            "--time",
            "opened",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 1,500 contacts who all open at one hour, through a connector allowed 5 calls per 10 s
/// and 600 per day ([`PER_MINUTE_AT_5`] planned a minute, 960 an hour).
#[test]
fn a_crowded_hour_is_spread_within_capacity_and_nothing_is_rate_limited() {
    const CONTACTS: u64 = 1500;
    const BUDGET: usize = 600;
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            limit_per_10s: 5,
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let test_config = TestConfig {
        env: "CAPACITY",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: &format!(
            "api_base = \"{}\"\nrequests_per_10s = 5\ndaily_budget = {BUDGET}",
            standin.url()
        ),
        hooks: &[&Hook {
            id: "crowd",
            kind: "NEXT_24_HOURS",
            target: "workflow_id = 101",
        }],
        ..TestConfig::default()
    };
    let config = test_config.write(dir.path());
    // What the connector may be planned: whole calls a minute, and an hour. The day's budget,
    // not the pace, is what fills first at the best hour.
    let calls_a_minute = PER_MINUTE_AT_5 as usize;
    let per_hour = PER_MINUTE_AT_5 * 60;
    const _: () = assert!(PER_MINUTE_AT_5 * 60 > BUDGET as u64);
    let emails: Vec<String> = (0..CONTACTS).map(|i| format!("c{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 10_000 + i as u64);
    }
    // Everyone's best hour is three hours from now.
    let best_hour = (now_ms() / HOUR + 3) % 24;
    import_opens(&config, &data, &emails, best_hour);

    let clock = dir.path().join("clock");
    let t0 = now_ms() / MINUTE * MINUTE;
    std::fs::write(&clock, t0.to_string()).unwrap();
    let server = serve_at(&config, &data, &clock);
    let client = common::http();
    for (i, e) in emails.iter().enumerate() {
        let body = contact_body(10_000 + i as u64, e);
        assert_eq!(
            post_signed(&client, &server, SECRET, "/hooks/crowd", body),
            200
        );
    }
    let planned = eventually(Duration::from_secs(60), || {
        let p = plans(&data);
        (p.len() == CONTACTS as usize).then_some(p)
    })
    .unwrap_or_else(|| panic!("not everything planned; logs:\n{}", server.logs()));

    let mut per_minute: HashMap<i64, usize> = HashMap::new();
    let mut per_day: HashMap<i64, usize> = HashMap::new();
    let (mut moved, mut spilled, mut best) = (0, 0, 0);
    for p in &planned {
        *per_minute.entry(p.due_at_ms / MINUTE).or_default() += 1;
        *per_day.entry(p.due_at_ms / DAY).or_default() += 1;
        assert!(p.due_at_ms >= p.received_at_ms, "{p:?}");
        if p.reason.contains("spilled past the window") {
            spilled += 1;
            assert!(p.due_at_ms >= p.received_at_ms + DAY, "{p:?}");
            continue;
        }
        assert!(p.due_at_ms < p.received_at_ms + DAY, "{p:?}");
        if p.reason
            .contains("that hour is full on connector main: moved to")
        {
            moved += 1;
            // The reason rates the hour it was moved to no higher than the one it preferred.
            let ratio = |after: &str, before: &str| -> f64 {
                let rest = &p.reason[p.reason.find(after).unwrap()..];
                let rest = &rest[..rest.find(before).unwrap()];
                rest[rest.rfind('(').unwrap() + 1..].parse().unwrap()
            };
            let preferred = ratio("best hour for this", "x the window's average");
            let taken = ratio("moved to", "x)");
            assert!((0.0..=preferred).contains(&taken), "{p:?}");
        } else if (p.due_at_ms / HOUR) % 24 == best_hour {
            best += 1;
        }
    }
    let busiest = per_minute.values().max().copied().unwrap();
    assert!(busiest <= calls_a_minute, "{busiest} planned in one minute");
    let busiest_day = per_day.values().max().copied().unwrap();
    assert!(busiest_day <= BUDGET, "{busiest_day} planned in one day");
    // The best hour takes all its day's budget allows (it could take `per_hour`); the rest went
    // to other hours of the window, and what the budget left no room for went past it.
    assert_eq!(best, BUDGET, "{per_day:?}");
    assert!(moved > 0 && spilled > 0, "moved {moved}, spilled {spilled}");
    assert_eq!(
        moved + spilled + best,
        CONTACTS as usize,
        "every contact is at its best hour, moved in its window or spilled"
    );

    // What the dispatcher publishes agrees with plan/: once the tick that wrote the last plan
    // rows has published its forecast, a moment later (read at once, it was the tick
    // before's on a loaded machine).
    let status: serde_json::Value = eventually(Duration::from_secs(10), || {
        let status: serde_json::Value = (client.get(server.admin_url("/status")).send().ok())?
            .json()
            .ok()?;
        let hours = status["capacity"]["connectors"][0]["planned_per_hour"].as_array()?;
        let planned: u64 = hours.iter().filter_map(|h| h.as_u64()).sum();
        (planned == CONTACTS).then_some(status)
    })
    .unwrap_or_else(|| {
        panic!(
            "the forecast never counted every contact; logs:\n{}",
            server.logs()
        )
    });
    let forecast = &status["capacity"]["connectors"][0];
    assert_eq!(forecast["connector"], "main");
    assert_eq!(forecast["capacity_per_hour"], per_hour);
    let hours: Vec<u64> = serde_json::from_value(forecast["planned_per_hour"].clone()).unwrap();
    assert_eq!(hours.len(), 168);
    assert_eq!(hours.iter().sum::<u64>(), CONTACTS);
    let metrics = client
        .get(server.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let moves = |kind: &str| {
        let prefix = format!("sendtime_plan_moves_total{{connector=\"main\",move=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<usize>().ok())
    };
    assert_eq!(moves("capacity"), Some(moved), "{metrics}");
    assert_eq!(moves("spilled"), Some(spilled), "{metrics}");

    // The first planned minute is sent at the connector's pace: no 429.
    let first = planned.iter().map(|p| p.due_at_ms).min().unwrap();
    let due: Vec<&PlanRow> = planned.iter().filter(|p| p.due_at_ms == first).collect();
    std::fs::write(&clock, first.to_string()).unwrap();
    let log = eventually(Duration::from_secs(90), || {
        let log = standin.log();
        let enrolled = log
            .iter()
            .filter(|e| e.method == "POST" && e.status == Some(204))
            .count();
        (enrolled == due.len()).then_some(log)
    })
    .unwrap_or_else(|| panic!("first minute not sent; logs:\n{}", server.logs()));
    assert!(log.iter().all(|e| e.status != Some(429)), "{log:?}");
    server.stop();
}

fn receipt(n: u64, zone: &str, received_at_ms: i64) -> Receipt {
    Receipt {
        receipt_id: ulid::Ulid::generate().to_string(),
        webhook_id: "weekly".into(),
        webhook_type: sendtime::config::WebhookType::NextWeek,
        contact_id: Some(n as i64),
        email: Some(format!("z{n}@example.com")),
        portal_id: Some(62515),
        received_at_ms,
        signature: "v2".into(),
        config: "test".into(),
        callback_id: None,
        body_hash: None,
        time_zone: Some(zone.into()),
        hold_ends_ms: None,
    }
}

/// Receipts `ns` of `webhook` received at `at`, zone unknown.
fn receipts_of(
    webhook: &str,
    kind: sendtime::config::WebhookType,
    ns: std::ops::Range<u64>,
    at: i64,
) -> Vec<Receipt> {
    ns.map(|n| Receipt {
        webhook_id: webhook.into(),
        webhook_type: kind,
        time_zone: None,
        hold_ends_ms: None,
        ..receipt(n, "", at)
    })
    .collect()
}

/// `rows` as one inbox part, as the receiver writes them.
fn write_inbox(data: &Path, rows: &[Receipt]) {
    let mut df = inbox::frame(rows).unwrap();
    inbox::dataset(data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut df)
        .unwrap();
}

/// A dry-run connector with quiet hours 21:00-08:00 (and `extra`), and its NEXT_WEEK
/// webhook `weekly`, which [`receipt`] posts to.
fn quiet_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    TestConfig {
        env: "CAPACITY",
        connector: &format!("dry_run = true\nquiet_hours = \"21:00-08:00\"\n{extra}"),
        hooks: &[&Hook {
            id: "weekly",
            kind: "NEXT_WEEK",
            target: "workflow_id = 7",
        }],
        ..TestConfig::default()
    }
    .write(dir)
}

/// Contacts in Brussels received the day before Europe's clocks go back (2026-10-25), and in
/// New York the day before America's (2026-11-01), with quiet hours 21:00-08:00: every plan
/// falls outside them in the contact's own zone, on both sides of each change.
#[test]
fn quiet_hours_hold_in_each_contacts_zone_across_daylight_saving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = quiet_config(dir.path(), "time_zone = \"Asia/Tokyo\"");
    let brussels_received = 1_793_016_000_000; // 2026-10-24 12:00 UTC
    let brussels_change = 1_793_062_800_000; // 2026-10-25 01:00 UTC
    let new_york_received = 1_793_620_800_000; // 2026-10-31 12:00 UTC
    let new_york_change = 1_793_685_600_000; // 2026-11-01 06:00 UTC
    let mut rows = Vec::new();
    for n in 0..300 {
        rows.push(receipt(n, "europe_slash_brussels", brussels_received));
        rows.push(receipt(1000 + n, "America/New_York", new_york_received));
        // No zone of its own: the connector's.
        let mut r = receipt(2000 + n, "", brussels_received);
        r.time_zone = None;
        rows.push(r);
    }
    write_inbox(&data, &rows);
    tick_at(&config, &data, "2026-10-24T12:00:00Z");

    let planned = plans(&data);
    assert_eq!(planned.len(), rows.len());
    let mut sides: HashMap<(&str, bool), usize> = HashMap::new();
    for p in &planned {
        let n = p.contact_id.unwrap();
        let (zone, change): (Tz, i64) = match n {
            0..1000 => (Tz::Europe__Brussels, brussels_change),
            1000..2000 => (Tz::America__New_York, new_york_change),
            _ => (Tz::Asia__Tokyo, brussels_change),
        };
        assert!(
            (p.received_at_ms..p.received_at_ms + 7 * DAY).contains(&p.due_at_ms),
            "{p:?}"
        );
        let local = DateTime::from_timestamp_millis(p.due_at_ms)
            .unwrap()
            .with_timezone(&zone);
        assert!(
            (8..21).contains(&local.hour()),
            "{p:?} is due at {local} in {zone}"
        );
        assert!(
            p.reason
                .contains(&format!("quiet hours 21:00-08:00 in {}", zone.name())),
            "{}",
            p.reason
        );
        *sides
            .entry((zone.name(), p.due_at_ms >= change))
            .or_default() += 1;
    }
    // `explain` shows the contact's plan and why.
    let out = sendtime(
        &config,
        &data,
        &["explain", "5", "--at", "2026-10-24T12:00:00Z"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan5 = planned.iter().find(|p| p.contact_id == Some(5)).unwrap();
    assert!(text.contains("planned receipts: 1"), "{text}");
    assert!(text.contains(&plan5.reason), "{text}");
    for zone in ["Europe/Brussels", "America/New_York"] {
        for after in [false, true] {
            assert!(
                sides.get(&(zone, after)).copied().unwrap_or(0) > 5,
                "{zone}: {sides:?}"
            );
        }
    }
}

/// `explain` says when each webhook would send a contact posted now as planning places it
/// alone: in the webhook's own window, outside quiet hours in the zone the contact's receipts
/// posted (the connector's without one). Each time and reason is the plan row's of a receipt
/// posted at that time; the type's default plan, which knows no quiet hours, differs.
#[test]
fn explain_plans_each_webhook_as_planning_does_in_the_contacts_zone() {
    use sendtime::time::format_minute;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The config, with `weekly` as given.
    let write = |weekly: &Hook| {
        TestConfig {
            env: "CAPACITY",
            connector: "dry_run = true\nquiet_hours = \"21:00-08:00\"\ntime_zone = \"Asia/Tokyo\"",
            hooks: &[
                weekly,
                &Hook {
                    id: "soon",
                    kind: "NEXT_24_HOURS",
                    target: "workflow_id = 8\nwindow = \"6h\"",
                },
            ],
            ..TestConfig::default()
        }
        .write(dir.path())
    };
    let config = write(&Hook {
        id: "weekly",
        kind: "NEXT_WEEK",
        target: "workflow_id = 7",
    });
    // Both open at 02:10 UTC: 03:10 in Brussels (quiet), 11:10 in Tokyo.
    let emails = ["z1@example.com".to_string(), "z2@example.com".to_string()];
    import_opens(&config, &data, &emails, 2);
    let at = now_ms() / DAY * DAY + 12 * HOUR;
    let at_text = sendtime::time::format_rfc3339(at);
    let mut rows = Vec::new();
    for (n, zone) in [(1, Some("Europe/Brussels")), (2, None)] {
        for (webhook, kind) in [
            ("weekly", sendtime::config::WebhookType::NextWeek),
            ("soon", sendtime::config::WebhookType::Next24Hours),
        ] {
            rows.push(Receipt {
                webhook_id: webhook.into(),
                webhook_type: kind,
                time_zone: zone.map(Into::into),
                ..receipt(n, "", at)
            });
        }
    }
    write_inbox(&data, &rows);
    tick_at(&config, &data, &at_text);
    let planned = plans(&data);
    assert_eq!(planned.len(), 4);
    let paused = sendtime(&config, &data, &["pause", "soon"]);
    assert!(paused.status.success(), "{paused:?}");

    let explain = |who: &str| {
        let out = sendtime(&config, &data, &["explain", who, "--at", &at_text]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The webhooks' plans, from the line that heads them to the planned receipts.
    let webhooks_part = |text: &str| {
        let from = text.find("\nif posted now to each webhook").unwrap();
        let to = text.find("\nplanned receipts").unwrap();
        text[from..to].to_string()
    };
    let mut texts = Vec::new();
    for (n, zone) in [(1, Tz::Europe__Brussels), (2, Tz::Asia__Tokyo)] {
        let email = format!("z{n}@example.com");
        let text = explain(&email);
        // Asked by HubSpot id, it is the contact its receipts carry: the same plans.
        assert_eq!(
            webhooks_part(&explain(&n.to_string())),
            webhooks_part(&text),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        for (webhook, kind) in [("weekly", "NEXT_WEEK"), ("soon", "NEXT_24_HOURS")] {
            let row = planned
                .iter()
                .find(|p| p.contact_id == Some(n) && p.webhook_id == webhook)
                .unwrap();
            let head = format!(
                "webhook {webhook} ({kind}): {}",
                format_minute(row.due_at_ms)
            );
            let at_line = lines
                .iter()
                .position(|l| l.starts_with(&format!("webhook {webhook} (")))
                .unwrap_or_else(|| panic!("no line for {webhook}:\n{text}"));
            assert_eq!(lines[at_line], head, "{email}:\n{text}");
            assert_eq!(
                lines[at_line + 1],
                format!("  {}", row.reason),
                "{email}:\n{text}"
            );
            let local = DateTime::from_timestamp_millis(row.due_at_ms)
                .unwrap()
                .with_timezone(&zone);
            assert!((8..21).contains(&local.hour()), "{row:?} at {local}");
        }
        texts.push(text);
    }
    // What holds each back: the pause, and the connector's dry run.
    let text = &texts[0];
    let lines: Vec<&str> = text.lines().collect();
    let after = |webhook: &str| notes_of(&lines, webhook);
    let dry_run = "its connector is in dry run: recorded, not sent";
    assert_eq!(after("weekly"), [dry_run], "{text}");
    assert_eq!(
        after("soon"),
        [
            "PAUSED (sendtime pause): held, not sent, until resumed",
            dry_run
        ],
        "{text}"
    );
    // Brussels's best hour is quiet: the type's default plan, which knows no quiet hours,
    // takes it; the webhook's does not.
    let by_type = text
        .lines()
        .find(|l| l.starts_with("NEXT_WEEK "))
        .unwrap_or_else(|| panic!("{text}"));
    let default_due = by_type["NEXT_WEEK".len()..].trim();
    let weekly = planned
        .iter()
        .find(|p| p.contact_id == Some(1) && p.webhook_id == "weekly")
        .unwrap();
    assert_ne!(default_due, format_minute(weekly.due_at_ms), "{text}");
    assert_eq!(&default_due[11..13], "02", "{text}");
    // Each planned receipt says what it waits for: the pause for `soon` (it said "waiting
    // for its time", due or not), its time for `weekly`.
    let waits = |webhook: &str| {
        let at = (lines.iter())
            .position(|l| l.starts_with(&format!("{webhook} ")) && l.contains(" received "))
            .unwrap_or_else(|| panic!("no receipt of {webhook}:\n{text}"));
        lines[at + 2].trim()
    };
    assert_eq!(
        waits("soon"),
        "held by a pause (sendtime pause): sent once resumed",
        "{text}"
    );
    assert_eq!(waits("weekly"), "waiting for its time", "{text}");
    // Past its time, in Brussels's quiet hours (after a dispatcher that was down): held until
    // they end, as the dispatcher holds it (it said "due" all night; an audit).
    let late = (weekly.due_at_ms / DAY + 1) * DAY - 2 * HOUR; // 22:00 UTC
    let local = DateTime::from_timestamp_millis(late)
        .unwrap()
        .with_timezone(&Tz::Europe__Brussels);
    let day = local.date_naive() + chrono::Days::new(u64::from(local.hour() >= 21));
    let morning = (day.and_hms_opt(8, 0, 0).unwrap())
        .and_local_timezone(Tz::Europe__Brussels)
        .unwrap()
        .timestamp_millis();
    let late_text = sendtime::time::format_rfc3339(late);
    let out = sendtime(
        &config,
        &data,
        &["explain", "z1@example.com", "--at", &late_text],
    );
    let late_text = String::from_utf8(out.stdout).unwrap();
    let held = (late_text.lines())
        .skip_while(|l| !(l.starts_with("weekly ") && l.contains(" received ")))
        .nth(2)
        .unwrap_or_else(|| panic!("{late_text}"));
    assert_eq!(
        held.trim(),
        format!(
            "held by its quiet hours until {}: sent then",
            format_minute(morning)
        ),
        "{late_text}"
    );
    // HubSpot's daily limit met, its pause stored by the dispatcher: said for the connector's
    // webhooks and for the receipt due (it said "held by its quiet hours" or "due").
    let resets = late + 3 * HOUR;
    let pause_file = data.join("state").join("dispatch-pause-main");
    std::fs::write(&pause_file, resets.to_string()).unwrap();
    let dry = std::fs::read_to_string(&config).unwrap();
    assert!(dry.contains("dry_run = true\n"));
    let explain_late = |toml: &str| {
        std::fs::write(&config, toml).unwrap();
        let late = sendtime::time::format_rfc3339(late);
        let out = sendtime(
            &config,
            &data,
            &["explain", "z1@example.com", "--at", &late],
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // A dry run calls nothing: no pause of HubSpot's is said of it.
    let dry_text = explain_late(&dry);
    assert!(
        dry_text.contains("its connector is in dry run"),
        "{dry_text}"
    );
    assert!(
        !dry_text.contains("paused by HubSpot's answer"),
        "{dry_text}"
    );
    let paused_text = explain_late(&dry.replacen("dry_run = true\n", "", 1));
    std::fs::write(&config, &dry).unwrap();
    let lines: Vec<&str> = paused_text.lines().collect();
    let weekly_receipt = (lines.iter())
        .position(|l| l.starts_with("weekly ") && l.contains(" received "))
        .unwrap_or_else(|| panic!("{paused_text}"));
    assert_eq!(
        lines[weekly_receipt + 2].trim(),
        format!(
            "held: its connector is paused by HubSpot's answer (daily limit) until {}: sent after",
            format_minute(resets)
        ),
        "{paused_text}"
    );
    let said = format!(
        "its connector is paused by HubSpot's answer (daily limit) until {}: nothing sent until then",
        format_minute(resets)
    );
    for webhook in ["weekly", "soon"] {
        assert!(
            notes_of(&lines, webhook).contains(&said.as_str()),
            "{paused_text}"
        );
    }
    std::fs::remove_file(&pause_file).unwrap();

    // `weekly` made a list's webhook: its receipts, taken to enroll, are held as the
    // dispatcher holds them (explain said "waiting for its time").
    write(&Hook {
        id: "weekly",
        kind: "UPDATE_ONLY",
        target: "list_id = \"9\"",
    });
    let text = explain("z1@example.com");
    let lines: Vec<&str> = text.lines().collect();
    let weekly = (lines.iter())
        .position(|l| l.starts_with("weekly ") && l.contains(" received "))
        .unwrap_or_else(|| panic!("no receipt of weekly:\n{text}"));
    assert!(
        lines[weekly + 2]
            .trim()
            .starts_with("held: its webhook changed"),
        "{text}"
    );
}

/// The notes `explain` prints under `webhook`'s plan (after its time and reason), trimmed.
fn notes_of<'t>(lines: &[&'t str], webhook: &str) -> Vec<&'t str> {
    let at = (lines.iter())
        .position(|l| l.starts_with(&format!("webhook {webhook} (")))
        .unwrap_or_else(|| panic!("no plan of {webhook}"));
    (lines[at + 2..].iter())
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim())
        .collect()
}

/// Lower limits after planning: the queue is spread again so that no hour holds more than
/// the connector can now send, and nothing is lost.
#[test]
fn lowered_limits_spread_what_is_queued() {
    use sendtime::clock::Clock;
    use sendtime::config::Config;
    use sendtime::dispatch::Dispatcher;
    use sendtime::metrics::Metrics;

    const NOW: i64 = 1_795_947_420_000; // 2026-11-29 10:17 UTC
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = |per_10s: u32| -> Config {
        TestConfig {
            env: "CAPACITY",
            server: &format!("data_dir = \"{}\"", data.display()),
            connector: &format!("dry_run = true\nrequests_per_10s = {per_10s}"),
            hooks: &[&Hook {
                id: "weekly",
                kind: "NEXT_WEEK",
                target: "workflow_id = 7\nwindow = \"2h\"",
            }],
            ..TestConfig::default()
        }
        .config(&data)
    };
    let rows: Vec<Receipt> = (0..3000)
        .map(|n| {
            let mut r = receipt(n, "", NOW + MINUTE);
            r.time_zone = None;
            r
        })
        .collect();
    write_inbox(&data, &rows);
    let metrics = Metrics::new();
    let mut d = Dispatcher::open(&data, metrics.clone(), Clock::Fixed(NOW)).unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let report = rt.block_on(d.tick(&config(100), stop.clone())).unwrap();
    assert_eq!((report.planned, report.queued), (3000, 3000));
    let hours = |m: &Metrics| m.forecast().connectors[0].planned_per_hour.clone();
    let before = hours(&metrics);
    // 5 per 10 s: this many calls an hour may be planned.
    let per_hour = PER_MINUTE_AT_5 * 60;
    assert!(before.iter().any(|&n| n > per_hour), "{before:?}");

    let report = rt.block_on(d.tick(&config(5), stop)).unwrap();
    assert_eq!(report.queued, 3000);
    let after = hours(&metrics);
    assert_eq!(metrics.forecast().connectors[0].capacity_per_hour, per_hour);
    assert!(after.iter().all(|&n| n <= per_hour), "{after:?}");
    assert_eq!(after.iter().sum::<u64>(), 3000);
    d.close();
}

/// A daily budget counts the calls already made today. `sendtime tick` (a restart each time)
/// does not start the day afresh, and list adds that trickle in one a minute cost a call each:
/// what the budget has no room for today is planned for tomorrow.
#[test]
fn the_daily_budget_counts_calls_made_before_a_restart_and_each_small_batch() {
    use sendtime::config::WebhookType;

    const NOW: i64 = 1_795_947_420_000; // 2026-11-29 10:17 UTC
    let tomorrow = NOW / DAY * DAY + DAY;
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    for n in 0..100 {
        standin.add_contact(&format!("z{n}@example.com"), n);
    }
    let run = |budget: u32, hook: &Hook, kind: WebhookType, batches: &[(u64, u64, i64)]| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = TestConfig {
            env: "CAPACITY",
            connector: &format!("api_base = \"{}\"\ndaily_budget = {budget}", standin.url()),
            hooks: &[hook],
            ..TestConfig::default()
        }
        .write(dir.path());
        // Contacts from..to received at `at`, then a tick at `at` (a process of its own).
        for &(from, to, at) in batches {
            std::fs::create_dir_all(&data).unwrap();
            write_inbox(&data, &receipts_of(hook.id, kind, from..to, at));
            let now = sendtime::time::format_rfc3339_ms(at);
            tick_at(&config, &data, &now);
        }
        plans(&data)
    };

    // 20 enrollments at 10:17, then 20 more a minute later in a new process.
    let now_hook = Hook {
        id: "now",
        kind: "IMMEDIATE",
        target: "workflow_id = 7",
    };
    let planned = run(
        20,
        &now_hook,
        WebhookType::Immediate,
        &[(0, 20, NOW), (20, 40, NOW + MINUTE)],
    );
    let enrolled = common::enrollments(&standin.log()).values().sum::<usize>();
    assert_eq!(enrolled, 20, "the day's budget is spent by the first 20");
    let later: Vec<&PlanRow> = planned
        .iter()
        .filter(|p| p.contact_id >= Some(20))
        .collect();
    assert_eq!(later.len(), 20);
    assert!(later.iter().all(|p| p.due_at_ms >= tomorrow), "{later:?}");

    // One list add a minute for ten minutes: ten calls, of which the budget allows three.
    let list_hook = Hook {
        id: "list",
        kind: "UPDATE_ONLY",
        target: "list_id = \"9\"",
    };
    let ticks: Vec<(u64, u64, i64)> = (0..10)
        .map(|k| (50 + k, 51 + k, NOW + k as i64 * MINUTE))
        .collect();
    let planned = run(3, &list_hook, WebhookType::UpdateOnly, &ticks);
    let calls = standin
        .log()
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/memberships/add"))
        .count();
    assert_eq!(calls, 3, "{:?}", standin.log());
    let today = planned.iter().filter(|p| p.due_at_ms < tomorrow).count();
    assert_eq!((today, planned.len()), (3, 10), "{planned:?}");
}

/// The daily budget holds every call, not only those the plan booked: the retry of a failed
/// call that would go past it waits for the account's next day.
#[test]
fn retries_the_plan_did_not_foresee_stay_within_the_daily_budget() {
    use sendtime::config::WebhookType;
    use sendtime::hubspot::standin::{Fault, Injection};
    use sendtime::time::format_rfc3339_ms;

    const NOW: i64 = 1_795_947_420_000; // 2026-11-29 10:17 UTC
    let tomorrow = NOW / DAY * DAY + DAY;
    let rt = runtime();
    // Paced at milliseconds, the ten first calls are all made before any retry (which waits
    // half a second at least): which contacts the budget reaches does not depend on timing.
    let standin = rt
        .block_on(StandIn::start(Options {
            limit_per_10s: 10_000,
            ..Options::default()
        }))
        .unwrap();
    for n in 0..10 {
        standin.add_contact(&format!("z{n}@example.com"), n);
    }
    // The last three of the ten enrollments fail: each is worth a retry a second later.
    standin.inject(
        Injection::next(Fault::Status {
            status: 503,
            message: "Service Unavailable".into(),
        })
        .after(7)
        .times(3)
        .on("/automation"),
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hook = Hook {
        id: "now",
        kind: "IMMEDIATE",
        target: "workflow_id = 7",
    };
    let config = TestConfig {
        env: "CAPACITY",
        connector: &format!(
            "api_base = \"{}\"\nrequests_per_10s = 10000\ndaily_budget = 10\ntime_zone = \"UTC\"",
            standin.url()
        ),
        hooks: &[&hook],
        ..TestConfig::default()
    }
    .write(dir.path());
    std::fs::create_dir_all(&data).unwrap();
    write_inbox(
        &data,
        &receipts_of("now", WebhookType::Immediate, 0..10, NOW),
    );
    let calls = || {
        standin
            .log()
            .iter()
            .filter(|e| e.path.contains("/contacts/"))
            .count()
    };
    let enrolled = || common::enrollments(&standin.log());
    tick_at(&config, &data, &format_rfc3339_ms(NOW));
    assert_eq!(calls(), 10, "{:?}", standin.log());
    assert_eq!(enrolled().len(), 7, "{:?}", standin.log());
    // Later that day, in another process: the day's calls are counted from the disk.
    tick_at(&config, &data, &format_rfc3339_ms(NOW + 5 * MINUTE));
    assert_eq!(calls(), 10, "{:?}", standin.log());
    tick_at(&config, &data, &format_rfc3339_ms(tomorrow + MINUTE));
    let enrolled = enrolled();
    assert_eq!(enrolled.len(), 10);
    assert!(enrolled.values().all(|&n| n == 1), "{enrolled:?}");
}

/// In one `serve`, a reload builds the ledgers again: the day's enrollments already made
/// still count (they are no longer in the queue), so what the budget has no room for after
/// it is planned for tomorrow.
#[test]
fn a_reload_keeps_the_calls_made_today_in_the_daily_budget() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hook = Hook {
        id: "now",
        kind: "IMMEDIATE",
        target: "workflow_id = 7",
    };
    // The account's zone puts its day's end some twelve hours away, whatever the hour now.
    let t0 = now_ms() + MINUTE;
    let offset = (12 - (t0 / HOUR) % 24).rem_euclid(24);
    let offset = if offset > 12 { offset - 24 } else { offset };
    let zone = match offset {
        0 => "Etc/UTC".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let tomorrow = ((t0 + offset * HOUR) / DAY + 1) * DAY - offset * HOUR;
    let config = TestConfig {
        env: "CAPACITY",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: &format!(
            "api_base = \"{}\"\ndaily_budget = 20\ntime_zone = \"{zone}\"",
            standin.url()
        ),
        hooks: &[&hook],
        ..TestConfig::default()
    }
    .write(dir.path());
    let clock = dir.path().join("clock");
    common::set_clock(&clock, t0);
    let server = serve_at(&config, &data, &clock);
    let client = common::http();
    let post = |from: u64, to: u64| {
        for n in from..to {
            let email = format!("r{n}@example.com");
            standin.add_contact(&email, 7000 + n);
            let body = contact_body(7000 + n, &email);
            assert_eq!(
                post_signed(&client, &server, SECRET, "/hooks/now", body),
                200
            );
        }
    };
    let enrolled = || common::enrollments(&standin.log()).values().sum::<usize>();
    post(0, 20);
    eventually(Duration::from_secs(30), || (enrolled() == 20).then_some(()))
        .unwrap_or_else(|| panic!("not enrolled; logs:\n{}", server.logs()));

    // A comment is a new config: the ledgers are built again.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("# reloaded\n");
    std::fs::write(&config, &text).unwrap();
    let identity = sendtime::config::identity_of(text.as_bytes());
    eventually(Duration::from_secs(10), || {
        let status: serde_json::Value = client
            .get(server.admin_url("/status"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (status["config"] == identity.as_str()).then_some(())
    })
    .unwrap_or_else(|| panic!("config not reloaded; logs:\n{}", server.logs()));
    common::set_clock(&clock, now_ms() + MINUTE);
    post(20, 40);
    let later = eventually(Duration::from_secs(30), || {
        let p: Vec<PlanRow> = plans(&data)
            .into_iter()
            .filter(|p| p.contact_id >= Some(7020))
            .collect();
        (p.len() == 20).then_some(p)
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    assert!(later.iter().all(|p| p.due_at_ms >= tomorrow), "{later:?}");
    // Ticks that ran whole with them planned (for tomorrow) send none of them.
    common::wait_ticks(&server, 2);
    assert_eq!(enrolled(), 20);
    server.stop();
}

/// A stand-in whose token was granted `scopes` alone.
fn scoped_standin(rt: &tokio::runtime::Runtime, scopes: &[&str]) -> StandIn {
    rt.block_on(StandIn::start(Options {
        token: TOKEN.into(),
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        ..Options::default()
    }))
    .unwrap()
}

/// Calls to paths containing `path` that `standin` answered with `status`.
fn answered(standin: &StandIn, path: &str, status: u16) -> usize {
    (standin.log().iter())
        .filter(|e| e.path.contains(path) && e.status == Some(status))
        .count()
}

/// Contacts whose calls wait for a scope the token lacks are not booked: they took the
/// minutes from the hold's end on, so each hold pushed the connector's other calls planned
/// then (timed list adds, say) behind their backlog (an audit). A list webhook's contacts go
/// while the enrollments wait.
#[test]
fn contacts_held_for_a_missing_scope_book_none_of_the_connectors_minutes() {
    let rt = runtime();
    let standin = scoped_standin(&rt, &["crm.lists.read", "crm.lists.write"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = TestConfig {
        env: "CAPACITY",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: &format!("api_base = \"{}\"\nrequests_per_10s = 5", standin.url()),
        hooks: &[
            &IMMEDIATE_A,
            &Hook {
                id: "l",
                kind: "UPDATE_ONLY",
                target: "list_id = \"987\"",
            },
        ],
        ..TestConfig::default()
    }
    .write(dir.path());
    // The dispatcher's clock stands still, a minute past the posts: they are due, and the
    // hold never ends.
    let clock = dir.path().join("clock");
    common::set_clock(&clock, now_ms() + MINUTE);
    let server = serve_at(&config, &data, &clock);
    let client = common::http();
    const HELD: u64 = 40;
    for i in 0..HELD {
        let body = contact_body(20_000 + i, &format!("a{i}@example.com"));
        assert_eq!(post_signed(&client, &server, SECRET, "/hooks/a", body), 200);
    }
    let calls = |path: &str, status: u16| answered(&standin, path, status);
    eventually(Duration::from_secs(30), || {
        (calls("/automation/", 403) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("no enrollment refused; logs:\n{}", server.logs()));
    for i in 0..3 {
        let body = contact_body(30_000 + i, &format!("l{i}@example.com"));
        assert_eq!(post_signed(&client, &server, SECRET, "/hooks/l", body), 200);
    }
    eventually(Duration::from_secs(30), || {
        (calls("/lists/", 200) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("no list add made; logs:\n{}", server.logs()));
    // Ticks later, the held enrollments wait unbooked: the hour holds the list adds' calls
    // alone (booked as they were planned).
    common::wait_ticks(&server, 2);
    let status: serde_json::Value = common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap();
    let hours = status["capacity"]["connectors"][0]["planned_per_hour"]
        .as_array()
        .unwrap_or_else(|| panic!("{status}"));
    let booked: u64 = hours.iter().filter_map(|h| h.as_u64()).sum();
    assert!(booked <= 3, "{status}");
    assert_eq!(calls("/automation/", 403), 1, "one refusal, then they wait");
    server.stop();
}

/// The contacts of [`timed_beside_a_list`]'s webhook `timed`.
const TIMED: u64 = 5;

/// A config in `data`'s folder (with `tables`) of a NEXT_24_HOURS webhook `timed` (workflow
/// 101) and an UPDATE_ONLY one `l` (list 987) through `standin`, paced at 5 calls per 10 s
/// and one call per list add (a backlog takes minutes of calls); and `timed`'s contacts (ids
/// from 40,000, in the stand-in), whose best hour is two hours on. The config and their
/// emails.
fn timed_beside_a_list(
    standin: &StandIn,
    data: &Path,
    tables: &str,
) -> (std::path::PathBuf, Vec<String>) {
    let config = TestConfig {
        env: "CAPACITY",
        tables,
        connector: &format!(
            "api_base = \"{}\"\nrequests_per_10s = 5\nlist_batch_size = 1",
            standin.url()
        ),
        hooks: &[
            &Hook {
                id: "timed",
                kind: "NEXT_24_HOURS",
                target: "workflow_id = 101",
            },
            &Hook {
                id: "l",
                kind: "UPDATE_ONLY",
                target: "list_id = \"987\"",
            },
        ],
        ..TestConfig::default()
    }
    .write(data.parent().unwrap());
    let emails: Vec<String> = (0..TIMED).map(|i| format!("t{i}@example.com")).collect();
    for (i, e) in emails.iter().enumerate() {
        standin.add_contact(e, 40_000 + i as u64);
    }
    import_opens(&config, data, &emails, (now_ms() / HOUR + 2) % 24);
    (config, emails)
}

/// When a missing scope's hold ends and the scope is still missing, the contacts it held are
/// booked after the connector's others at their planned minutes. Booked first, as the oldest,
/// they moved those later at each hold's end (every 5 minutes while the scope is missing), and
/// those stayed moved when the first call was refused again and the hold came back.
#[test]
fn a_held_backlog_coming_due_again_leaves_the_planned_contacts_their_minutes() {
    const HELD: u64 = 40;
    let rt = runtime();
    let standin = scoped_standin(&rt, &["automation"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (config, emails) =
        timed_beside_a_list(&standin, &data, "[scheduler]\ncron = \"* * * * * *\"");
    let clock = dir.path().join("clock");
    // The dispatcher's clock stands still, past the posts (they are due), until the test
    // moves it.
    let t0 = (now_ms() / MINUTE + 2) * MINUTE;
    common::set_clock(&clock, t0);
    let server = serve_at(&config, &data, &clock);
    let client = common::http();
    for i in 0..HELD {
        let body = contact_body(30_000 + i, &format!("l{i}@example.com"));
        assert_eq!(post_signed(&client, &server, SECRET, "/hooks/l", body), 200);
    }
    let refused = || answered(&standin, "/lists/", 403);
    eventually(Duration::from_secs(30), || (refused() > 0).then_some(()))
        .unwrap_or_else(|| panic!("no list add refused; logs:\n{}", server.logs()));
    for (i, e) in emails.iter().enumerate() {
        let body = contact_body(40_000 + i as u64, e);
        assert_eq!(
            post_signed(&client, &server, SECRET, "/hooks/timed", body),
            200
        );
    }
    let due = eventually(Duration::from_secs(30), || {
        let timed: Vec<i64> = (plans(&data).iter())
            .filter(|p| p.webhook_id == "timed")
            .map(|p| p.due_at_ms)
            .collect();
        (timed.len() == TIMED as usize).then(|| timed.into_iter().max().unwrap())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    let minute = due / MINUTE * MINUTE;
    assert!(minute > t0 + 30 * MINUTE, "{due}");
    // The minute before theirs, the hold has ended: the held list adds come due, the first is
    // refused again, and the hold is back.
    common::set_clock(&clock, minute - MINUTE);
    eventually(Duration::from_secs(60), || (refused() > 1).then_some(())).unwrap_or_else(|| {
        panic!(
            "the list adds were not tried again; logs:\n{}",
            server.logs()
        )
    });
    common::wait_ticks(&server, 2);
    // Their minute: they go in it, as planned.
    common::set_clock(&clock, minute);
    let enrolled = || {
        (common::enrollments(&standin.log()).into_iter())
            .filter(|((wf, _), _)| wf == "101")
            .count() as u64
    };
    eventually(Duration::from_secs(60), || {
        (enrolled() == TIMED).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} of {TIMED} sent in their minute; logs:\n{}",
            enrolled(),
            server.logs()
        )
    });
    assert_eq!(refused(), 2, "one refusal at each hold's end");
    server.stop();
}

/// The same in the next process: each `sendtime tick` (as a cron runs it) or a restart booked
/// a held backlog first, as the oldest (the webhooks held were known in memory only), and so
/// did a `serve` whose cron fires every 5 minutes or more, the hold beginning and ending
/// between two builds of its ledgers. Here the hold begins in one tick and the next runs at
/// the planned contacts' minute.
#[test]
fn the_next_tick_books_a_held_backlog_after_the_planned_contacts() {
    use sendtime::config::WebhookType;
    use sendtime::time::format_rfc3339_ms;
    const HELD: u64 = 40;
    let rt = runtime();
    let standin = scoped_standin(&rt, &["automation"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (config, emails) = timed_beside_a_list(&standin, &data, "");
    let t0 = (now_ms() / MINUTE + 1) * MINUTE;
    let mut rows = receipts_of("l", WebhookType::UpdateOnly, 30_000..30_000 + HELD, t0);
    rows.extend(
        (receipts_of(
            "timed",
            WebhookType::Next24Hours,
            40_000..40_000 + TIMED,
            t0,
        )
        .into_iter())
        .zip(&emails)
        .map(|(r, e)| Receipt {
            email: Some(e.clone()),
            ..r
        }),
    );
    write_inbox(&data, &rows);
    // The first list add is refused for the missing scope: the hold begins.
    tick_at(&config, &data, &format_rfc3339_ms(t0));
    let refused = || answered(&standin, "/lists/", 403);
    assert_eq!(refused(), 1);
    let due = (plans(&data).iter())
        .filter(|p| p.webhook_id == "timed")
        .map(|p| p.due_at_ms)
        .max()
        .unwrap();
    let minute = due / MINUTE * MINUTE;
    assert!(minute > t0 + 30 * MINUTE, "{due}");
    // Their minute, the hold long over: the held list adds come due, the first is refused
    // again, and the timed contacts go in their minute, as planned.
    tick_at(&config, &data, &format_rfc3339_ms(minute));
    let enrolled = (common::enrollments(&standin.log()).into_iter())
        .filter(|((wf, _), _)| wf == "101")
        .count() as u64;
    assert_eq!(enrolled, TIMED, "sent in their minute");
    assert_eq!(refused(), 2, "one refusal a tick");
}

/// 2026-11-29 10:17 UTC: where the tests that tick a dispatcher by hand start.
const NOW: i64 = 1_795_947_420_000;

/// A dispatcher on a data folder of its own, ticked by hand at the instants a test gives.
struct Ticked {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    clock: std::path::PathBuf,
    dispatcher: Option<sendtime::dispatch::Dispatcher>,
}

impl Ticked {
    fn new() -> Ticked {
        let dir = tempfile::tempdir().unwrap();
        let (data, clock) = (dir.path().join("data"), dir.path().join("clock"));
        std::fs::create_dir_all(&data).unwrap();
        common::set_clock(&clock, NOW);
        let mut t = Ticked {
            rt: runtime(),
            _dir: dir,
            data,
            clock,
            dispatcher: None,
        };
        t.restart();
        t
    }

    /// A new dispatcher on the folder, as a restart or the next `sendtime tick` opens it.
    fn restart(&mut self) {
        use sendtime::{clock::Clock, metrics::Metrics};
        if let Some(d) = self.dispatcher.take() {
            d.close();
        }
        let clock = Clock::File(self.clock.clone());
        let d = sendtime::dispatch::Dispatcher::open(&self.data, Metrics::new(), clock);
        self.dispatcher = Some(d.unwrap());
    }

    /// A config of `hooks` on this folder, through a dry-run connector allowed 5 calls per
    /// 10 s.
    fn config(&self, hooks: &[&Hook]) -> sendtime::config::Config {
        TestConfig {
            env: "CAPACITY",
            server: &format!("data_dir = \"{}\"", self.data.display()),
            connector: "dry_run = true\nrequests_per_10s = 5",
            hooks,
            ..TestConfig::default()
        }
        .config(&self.data)
    }

    /// IMMEDIATE receipts `ns` of `webhook` received at `at`, in the inbox.
    fn write(&self, webhook: &str, ns: std::ops::Range<u64>, at: i64) {
        let kind = sendtime::config::WebhookType::Immediate;
        write_inbox(&self.data, &receipts_of(webhook, kind, ns, at));
    }

    /// One tick of `config` at `at`.
    fn tick(
        &mut self,
        config: &sendtime::config::Config,
        at: i64,
    ) -> sendtime::dispatch::TickReport {
        common::set_clock(&self.clock, at);
        let (_tx, stop) = tokio::sync::watch::channel(false);
        self.rt
            .block_on(self.dispatcher.as_mut().unwrap().tick(config, stop))
            .unwrap()
    }
}

/// Whole calls a minute planned through a connector allowed 5 calls per 10 s, worked out here
/// rather than asked of the library: paced to 3 (the limit less a 2 % margin of at least one,
/// and one more), 18 a minute, of which 90 % may be planned (16.2), the rest left for retries.
const PER_MINUTE_AT_5: u64 = 16;

/// An operator's pause holds its webhook's contacts without taking the connector's minutes
/// from the others, and when it ends what it held is spread over the minutes the connector
/// can send, not sent at once.
#[test]
fn a_paused_webhook_leaves_the_connector_to_the_others_and_is_spread_when_resumed() {
    let mut t = Ticked::new();
    let config = t.config(&[&IMMEDIATE_A, &IMMEDIATE_B]);
    let per_minute = PER_MINUTE_AT_5;
    let named = sendtime::config::Named::of(&config);
    sendtime::pauses::set(&named, "a", false, true, NOW).unwrap();
    t.write("a", 0..200, NOW);
    assert_eq!(t.tick(&config, NOW).dry_run, 0, "a is paused");
    assert_eq!(t.tick(&config, NOW + MINUTE).dry_run, 0);
    // b's contacts go at once: a's held ones do not fill the minutes.
    t.write("b", 1000..1010, NOW + 2 * MINUTE);
    assert_eq!(t.tick(&config, NOW + 2 * MINUTE).dry_run, 10);
    sendtime::pauses::set(&named, "a", false, false, NOW + 3 * MINUTE).unwrap();
    let mut sent = 0;
    for k in 3..30 {
        let report = t.tick(&config, NOW + k * MINUTE);
        assert!(report.dry_run as u64 <= per_minute, "{report}");
        sent += report.dry_run;
    }
    assert_eq!(sent, 200);
}

/// A tick sends what came due since the last, as planned, also when something builds the
/// ledgers again before it (here a pause of another webhook; a retry, a reload): the rebuild
/// put what one minute could not take in the minutes after now, which a sparse cron reaches
/// only at its next fire, so each of its ticks sent a minute's worth (an audit).
#[test]
fn a_rebuild_between_ticks_sends_what_came_due_since_the_last() {
    let mut t = Ticked::new();
    let config = t.config(&[&IMMEDIATE_A, &IMMEDIATE_B]);
    let per_minute = PER_MINUTE_AT_5;
    t.write("a", 0..(10 * per_minute), NOW);
    let first = t.tick(&config, NOW).dry_run;
    assert!(first as u64 <= per_minute, "{first}");
    // Four minutes on (a gap the scheduler counts as planned), with b paused meanwhile.
    let later = NOW + 4 * MINUTE;
    let named = sendtime::config::Named::of(&config);
    sendtime::pauses::set(&named, "b", false, true, later).unwrap();
    let second = t.tick(&config, later).dry_run;
    let due = plans(&t.data)
        .iter()
        .filter(|p| p.due_at_ms / MINUTE <= later / MINUTE)
        .count();
    assert!(due as u64 > 3 * per_minute, "{due}");
    assert_eq!(first + second, due, "sent {first} then {second}");
}

/// A webhook taken out of the config holds its contacts as they come due; put back, its
/// backlog is spread over the minutes the connector can send, as a resumed pause's is, not
/// sent in one tick (an audit found it was: the held contacts were queued after the ledgers
/// were built, and the tick sent them all).
#[test]
fn a_webhook_back_in_the_config_has_its_held_backlog_spread() {
    let mut t = Ticked::new();
    let (both, without_a) = (
        t.config(&[&IMMEDIATE_A, &IMMEDIATE_B]),
        t.config(&[&IMMEDIATE_B]),
    );
    let per_minute = PER_MINUTE_AT_5;
    t.write("a", 0..200, NOW);
    let first = t.tick(&both, NOW).dry_run;
    assert!(first as u64 <= per_minute && first > 0, "{first}");
    // Taken out: the rest come due over the next minutes and are held, none sent.
    for k in 1..20 {
        assert_eq!(t.tick(&without_a, NOW + k * MINUTE).dry_run, 0);
    }
    let mut sent = first;
    for k in 20..40 {
        let report = t.tick(&both, NOW + k * MINUTE);
        assert!(report.dry_run as u64 <= per_minute, "minute {k}: {report}");
        sent += report.dry_run;
    }
    assert_eq!(sent, 200);
}

/// So is it after a restart: the webhook's absence is kept with the data, and the contacts the
/// other webhook has waiting go first, in the minutes they were moved to (the first process
/// to build the ledgers with it booked its backlog first, as the oldest).
#[test]
fn a_webhook_back_in_the_config_after_a_restart_waits_behind_the_others() {
    let mut t = Ticked::new();
    let (both, without_a) = (
        t.config(&[&IMMEDIATE_A, &IMMEDIATE_B]),
        t.config(&[&IMMEDIATE_B]),
    );
    let per_minute = PER_MINUTE_AT_5;
    t.write("a", 0..200, NOW);
    // b's contacts, received a minute later, take three minutes: a minute's go at once.
    t.write("b", 1000..(1000 + 3 * per_minute), NOW + MINUTE);
    assert_eq!(t.tick(&without_a, NOW + MINUTE).dry_run as u64, per_minute);
    t.restart();
    assert_eq!(t.tick(&both, NOW + 2 * MINUTE).dry_run as u64, per_minute);
    let of_b = released(&t.data).iter().filter(|&&id| id >= 1000).count() as u64;
    assert_eq!(of_b, 2 * per_minute, "a's backlog went first");
}

/// IMMEDIATE receipts beyond a minute's capacity wait for the first minute with room: they
/// have no window, so they are counted as `delayed`, not `spilled` past a window (whose
/// warning says to widen it), and their reasons say the minutes before were full.
#[test]
fn receipts_without_a_window_past_a_minutes_capacity_are_delayed_not_spilled() {
    use sendtime::clock::Clock;
    use sendtime::config::WebhookType;
    use sendtime::dispatch::Dispatcher;
    use sendtime::metrics::Metrics;

    const NOW: i64 = 1_795_947_420_000; // 2026-11-29 10:17 UTC
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let now = Hook {
        id: "now",
        kind: "IMMEDIATE",
        target: "workflow_id = 1",
    };
    let config = TestConfig {
        env: "CAPACITY",
        server: &format!("data_dir = \"{}\"", data.display()),
        connector: "dry_run = true\nrequests_per_10s = 5",
        hooks: &[&now],
        ..TestConfig::default()
    }
    .config(&data);
    write_inbox(
        &data,
        &receipts_of("now", WebhookType::Immediate, 0..200, NOW),
    );
    let clock = dir.path().join("clock");
    common::set_clock(&clock, NOW);
    let metrics = Metrics::new();
    let mut d = Dispatcher::open(&data, metrics.clone(), Clock::File(clock)).unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    rt.block_on(d.tick(&config, stop)).unwrap();
    let rows = plans(&data);
    assert_eq!(rows.len(), 200);
    let later: Vec<&PlanRow> = rows
        .iter()
        .filter(|p| p.due_at_ms / MINUTE > p.received_at_ms / MINUTE)
        .collect();
    assert!(later.len() > 100, "{}", later.len());
    assert!(
        later
            .iter()
            .all(|p| p.reason.contains("the minutes before are full")),
        "{:?}",
        later[0]
    );
    let count = |kind: &str| metrics.plan_move("main", kind).get();
    assert_eq!(count("delayed"), later.len() as u64);
    assert_eq!(count("spilled"), 0);
}

/// Contacts whose time came while nothing ran (a stopped `serve`) still keep their quiet
/// hours: a tick in the middle of their night sends none of them, the first one after 08:00
/// in their own zone sends them all.
#[test]
fn overdue_contacts_wait_out_their_quiet_hours() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = quiet_config(dir.path(), "");
    // 2026-11-02 15:00:30 UTC, 10:00 in New York: after the first tick's instant, so that
    // tick plans them and sends none (received at its very instant, a receipt drawn into
    // that hour's first minute would be due: about one run in a hundred).
    let received = 1_793_631_630_000;
    let rows: Vec<Receipt> = (0..50)
        .map(|n| receipt(n, "America/New_York", received))
        .collect();
    write_inbox(&data, &rows);
    let tick = |at: &str| tick_at(&config, &data, at);
    let sent = || released(&data);
    tick("2026-11-02T15:00:00Z");
    assert_eq!(plans(&data).len(), rows.len());
    assert!(
        plans(&data)
            .iter()
            .all(|p| p.due_at_ms < received + 7 * DAY)
    );
    assert!(sent().is_empty());
    // Five more of that time, first planned a week on: their window is over (late, not a
    // lack of capacity), and they wait for the morning too.
    let late: Vec<Receipt> = (200..205)
        .map(|n| receipt(n, "America/New_York", received))
        .collect();
    write_inbox(&data, &late);
    // A week on, all overdue: 02:00 in New York holds them, 08:30 sends them.
    tick("2026-11-10T07:00:00Z");
    assert_eq!(sent().len(), 0);
    let planned = plans(&data);
    let late_reasons: Vec<&str> = planned
        .iter()
        .filter(|p| p.contact_id.is_some_and(|c| c >= 200))
        .map(|p| p.reason.as_str())
        .collect();
    assert_eq!(late_reasons.len(), late.len());
    assert!(
        late_reasons
            .iter()
            .all(|r| r.contains("the window was over when planned")
                && !r.contains("spilled")
                && !r.contains("due now")),
        "{late_reasons:?}"
    );
    tick("2026-11-10T13:30:00Z");
    assert_eq!(sent().len(), rows.len() + late.len());
}

/// Once HubSpot's answers say the app's limit is below the connector's `requests_per_10s`,
/// `serve` plans under HubSpot's, as it paces: an earlier version planned from the key, more
/// calls a minute than it could send.
#[test]
fn planning_counts_from_hubspots_limit_once_it_says_a_lower_one() {
    const NOW: Hook = Hook {
        id: "now",
        kind: "IMMEDIATE",
        target: "workflow_id = 7",
    };
    let rt = runtime();
    let standin = rt
        .block_on(StandIn::start(Options {
            limit_per_10s: 20,
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let with_limit = |limit: u32| {
        format!(
            "api_base = \"{}\"\nrequests_per_10s = {limit}",
            standin.url()
        )
    };
    let own = with_limit(100);
    let test_config = |connector| TestConfig {
        env: "CAPACITY",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector,
        hooks: &[&NOW],
        ..TestConfig::default()
    };
    // Worked out as [`PER_MINUTE_AT_5`] is: the key's 100 per 10 s is paced to 97, 582 a
    // minute, 523 whole calls planned; HubSpot's 20 to 18, 108 a minute, 97 planned.
    let (planned_own, planned_hubspots) = (523 * 60, 97 * 60);
    let config = test_config(&own).write(dir.path());
    // A minute ahead: receipts are stamped with the system clock.
    let clock = dir.path().join("clock");
    common::set_clock(&clock, now_ms() + MINUTE);
    let server = serve_at(&config, &data, &clock);
    let client = common::http();
    let published = || {
        let status: serde_json::Value = (client.get(server.admin_url("/status")))
            .send()
            .ok()?
            .json()
            .ok()?;
        status["capacity"]["connectors"][0]["capacity_per_hour"].as_u64()
    };
    eventually(Duration::from_secs(30), || {
        (published() == Some(planned_own)).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?} published; logs:\n{}", published(), server.logs()));
    // A contact due at once: the answer to its enrollment says HubSpot's limit.
    standin.add_contact("first@example.com", 7001);
    let body = contact_body(7001, "first@example.com");
    assert_eq!(
        post_signed(&client, &server, SECRET, "/hooks/now", body),
        200
    );
    eventually(Duration::from_secs(30), || {
        (published() == Some(planned_hubspots)).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?} published; logs:\n{}", published(), server.logs()));
    assert_eq!(common::enrollments(&standin.log()).len(), 1);
    // Another API base (another app's limit, say): HubSpot's word on the old one is dropped,
    // and the key plans again until an answer says otherwise (it was kept).
    let other = rt.block_on(StandIn::start(Options::default())).unwrap();
    let moved = format!("api_base = \"{}\"\nrequests_per_10s = 100", other.url());
    test_config(&moved).write(dir.path());
    eventually(Duration::from_secs(30), || {
        (published() == Some(planned_own)).then_some(())
    })
    .unwrap_or_else(|| panic!("{:?} published; logs:\n{}", published(), server.logs()));
    server.stop();
}

/// A backlog that comes due while `serve` runs without ticking (a host suspended, its clock
/// stepped a week on) is spread over the minutes the connector can send, as a start spreads
/// it, not sent in one tick: that tick could last hours, into the contacts' quiet hours, with
/// planning waiting behind it. An earlier version sent all of it in the first tick.
#[test]
fn a_backlog_that_came_due_while_nothing_ticked_is_spread_not_sent_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = TestConfig {
        env: "CAPACITY",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: "dry_run = true\nrequests_per_10s = 1",
        hooks: &[&Hook {
            id: "weekly",
            kind: "NEXT_WEEK",
            target: "workflow_id = 7",
        }],
        ..TestConfig::default()
    }
    .write(dir.path());
    // 2026-11-02 10:00:30 UTC; the connector plans 5 calls a minute.
    let received = 1_793_613_630_000;
    let rows: Vec<Receipt> = (0..40).map(|n| receipt(n, "UTC", received)).collect();
    write_inbox(&data, &rows);
    let clock = dir.path().join("clock");
    common::set_clock(&clock, received);
    let server = serve_at(&config, &data, &clock);
    eventually(Duration::from_secs(30), || {
        (plans(&data).len() == rows.len()).then_some(())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    // Counted by `serve` (rows sent are archived from the live folder within the tick).
    let sent = || {
        common::metric(
            &server,
            r#"sendtime_dispatch_outcomes_total{status="dry-run"}"#,
        )
    };
    common::wait_ticks(&server, 2);
    let before = sent();
    // Eight days on, every one is overdue: a minute's capacity goes in each minute.
    let later = received + 8 * DAY;
    common::set_clock(&clock, later);
    common::wait_ticks(&server, 3);
    let first = sent() - before;
    assert!(
        (1..=5).contains(&first),
        "{first} sent in the first minute; logs:\n{}",
        server.logs()
    );
    // The rest, minute by minute.
    for minute in 1..=7 {
        common::set_clock(&clock, later + minute * MINUTE);
        common::wait_ticks(&server, 2);
    }
    assert_eq!(sent(), rows.len() as u64, "logs:\n{}", server.logs());
    server.stop();
}

/// A workflow action's overdue contacts wait out their quiet hours too, but only while HubSpot
/// still holds them: one whose hold ends before the morning is released at night.
#[test]
fn overdue_actions_wait_out_quiet_hours_within_their_hold() {
    use sendtime::config::WebhookType;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = TestConfig {
        env: "CAPACITY",
        tables: "[[action]]\nid = \"act\"",
        connector: "dry_run = true\nquiet_hours = \"21:00-08:00\"",
        ..TestConfig::default()
    }
    .write(dir.path());
    // Taken in the dry run (a contact held before it would wait for the connector to go
    // live): each is recorded as a dry run when it would be released.
    let action = |n: u64, kind: WebhookType, received: i64| Receipt {
        webhook_id: "act".into(),
        webhook_type: kind,
        callback_id: Some(format!("cb-{n}")),
        signature: format!("v2{}", inbox::DRY_RUN_MARK),
        ..receipt(n, "America/New_York", received)
    };
    // Held a week and a day from 2026-11-02 15:00 UTC: still held on 11-10 at 13:00 UTC
    // (08:00 in New York); held two days from 11-08 10:00 UTC: released by 11-10 09:59 UTC.
    let mut rows: Vec<Receipt> = (0..20)
        .map(|n| action(n, WebhookType::NextWeek, 1_793_631_600_000))
        .collect();
    rows.extend((100..110).map(|n| action(n, WebhookType::Next24Hours, 1_794_132_000_000)));
    write_inbox(&data, &rows);
    let tick = |at: &str| tick_at(&config, &data, at);
    let released = || released(&data);
    tick("2026-11-08T10:00:00Z");
    assert_eq!(plans(&data).len(), rows.len());
    // 02:00 in New York, all overdue: only those HubSpot would not hold till morning go.
    tick("2026-11-10T07:00:00Z");
    assert_eq!(released(), (100..110).collect::<Vec<i64>>());
    tick("2026-11-10T13:30:00Z");
    assert_eq!(released().len(), rows.len());
}

/// With the day's budget spent, list adds join the batch of a minute already paid for (each
/// was planned for tomorrow, a call of its own), and a workflow action's callback goes now, as
/// it is sent whatever the budget (it waited for the account's midnight); an enrollment waits.
#[test]
fn a_spent_budget_still_takes_batch_riders_and_callbacks() {
    use sendtime::config::WebhookType;
    const NOW: i64 = 1_795_947_420_000; // 2026-11-29 10:17 UTC
    let tomorrow = NOW / DAY * DAY + DAY;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = TestConfig {
        env: "CAPACITY",
        tables: "[[action]]\nid = \"act\"",
        connector: "dry_run = true\ndaily_budget = 1",
        hooks: &[
            &Hook {
                id: "list",
                kind: "UPDATE_ONLY",
                target: "list_id = \"9\"",
            },
            &Hook {
                id: "now",
                kind: "IMMEDIATE",
                target: "workflow_id = 7",
            },
        ],
        ..TestConfig::default()
    }
    .write(dir.path());
    // Planned in this order: the first list add spends the day's one call.
    let mut rows = receipts_of("list", WebhookType::UpdateOnly, 0..3, NOW);
    rows.extend(receipts_of("now", WebhookType::Immediate, 10..11, NOW));
    rows.push(Receipt {
        webhook_id: "act".into(),
        webhook_type: WebhookType::Immediate,
        callback_id: Some("cb-20".into()),
        signature: format!("v2{}", inbox::DRY_RUN_MARK),
        hold_ends_ms: Some(NOW + DAY),
        ..receipt(20, "", NOW)
    });
    write_inbox(&data, &rows);
    tick_at(&config, &data, "2026-11-29T10:17:00Z");
    let due: HashMap<i64, i64> = plans(&data)
        .iter()
        .map(|p| (p.contact_id.unwrap(), p.due_at_ms))
        .collect();
    assert_eq!(due.len(), rows.len());
    for c in [0, 1, 2, 20] {
        assert!(due[&c] < NOW + MINUTE, "{c}: {due:?}");
    }
    assert!(due[&10] >= tomorrow, "{due:?}");
    assert_eq!(released(&data), [0, 1, 2, 20]);
}
