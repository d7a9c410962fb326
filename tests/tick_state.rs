//! The dispatcher's in-memory state across ticks, through its library interface: inbox parts
//! that repeat receipts (as a compaction's merged part does) plan nothing twice, finished
//! receipts are never planned again, and the state rebuilt from disk matches.

mod common;

use std::path::Path;

use common::{Hook, TestConfig, runtime};
use sendtime::clock::Clock;
use sendtime::config::{Config, WebhookType};
use sendtime::datasets::inbox::{self, Receipt};
use sendtime::datasets::outcomes::{self, Status};
use sendtime::datasets::plan;
use sendtime::dispatch::Dispatcher;
use sendtime::metrics::Metrics;

const HOUR: i64 = 3_600_000;
/// 2026-11-29 10:17 UTC.
const NOW: i64 = 1_795_947_420_000;

fn config(data: &Path) -> Config {
    on_portal(data, common::PORTAL_ID)
}

/// The webhook `week`, a NEXT_WEEK one.
const WEEK: Hook = Hook {
    id: "week",
    kind: "NEXT_WEEK",
    target: "workflow_id = 7",
};

/// The test's config, its connector's account `portal`.
fn on_portal(data: &Path, portal: u64) -> Config {
    with_hooks(data, &[&WEEK], portal)
}

/// A config of `hooks`, its connector's account `portal`, in dry run.
fn with_hooks(data: &Path, hooks: &[&Hook], portal: u64) -> Config {
    let text = TestConfig {
        env: "TICK_STATE",
        server: &format!("data_dir = \"{}\"", data.display()),
        connector: "dry_run = true",
        hooks,
        ..TestConfig::default()
    }
    .text()
    .replace(
        &format!("portal_id = {}", common::PORTAL_ID),
        &format!("portal_id = {portal}"),
    );
    let path = data.join("webhooks.toml");
    let env = sendtime::config::EnvCheck::Warn;
    Config::from_text(&path, &text, &Default::default(), env)
        .unwrap()
        .config
}

fn receipt(n: u64) -> Receipt {
    // Canonical ULIDs, as the receiver issues them; one hand-written id besides.
    let id = match n {
        99 => "not-a-ulid".to_string(),
        _ => ulid::Ulid::from_parts(NOW as u64, n as u128).to_string(),
    };
    let email = n.is_multiple_of(2).then(|| format!("c{n}@example.com"));
    Receipt {
        webhook_type: WebhookType::NextWeek,
        ..common::inbox_row(&id, "week", n as i64, email, NOW)
    }
}

fn write_inbox(data: &Path, ns: &[u64]) {
    let rows: Vec<Receipt> = ns.iter().map(|n| receipt(*n)).collect();
    common::write_inbox(data, &rows);
}

fn tick(d: &mut Dispatcher, config: &Config, rt: &tokio::runtime::Runtime) -> (usize, usize) {
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let r = rt.block_on(d.tick(config, stop)).unwrap();
    (r.planned, r.dry_run)
}

#[test]
fn repeated_and_finished_receipts_are_never_planned_twice() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = config(&data);
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();

    write_inbox(&data, &[1, 2, 3, 99]);
    assert_eq!(tick(&mut d, &config, &rt), (4, 0));
    // A merged part repeats receipts already planned, next to a new one (twice in it).
    write_inbox(&data, &[2, 3, 99, 4, 4]);
    assert_eq!(tick(&mut d, &config, &rt), (1, 0));
    assert_eq!(d.queued(), 5);

    let plans = plan::read(&plan::dataset(&data).unwrap()).unwrap();
    let mut ids: Vec<&str> = plans.iter().map(|p| p.receipt_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((plans.len(), ids.len()), (5, 5), "{plans:?}");
    assert!(ids.contains(&"not-a-ulid"));
    for p in &plans {
        assert_eq!(p.webhook_type, WebhookType::NextWeek);
        assert_eq!(p.received_at_ms, NOW);
        assert!((NOW..NOW + 168 * HOUR).contains(&p.due_at_ms), "{p:?}");
        assert!(
            p.reason
                .starts_with("NEXT_WEEK: the next 7 days; contact without history: "),
            "{}",
            p.reason
        );
        let n: u64 = p.contact_id.unwrap() as u64;
        assert_eq!(p.email, receipt(n).email);
    }
    drop(d);

    // A week later every one is due; then the inbox repeats a finished receipt.
    let later = NOW + 169 * HOUR;
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(later)).unwrap();
    assert_eq!(d.queued(), 5, "the state rebuilt from disk");
    assert_eq!(
        d.pending().len(),
        5,
        "each contact waits once, repeats or not"
    );
    assert_eq!(tick(&mut d, &config, &rt), (0, 5));
    assert_eq!(d.queued(), 0);
    assert!(
        d.pending().is_empty(),
        "finished receipts leave the pending set"
    );
    write_inbox(&data, &[1, 99]);
    assert_eq!(tick(&mut d, &config, &rt), (0, 0));
    let finals = outcomes::read(&outcomes::dataset(&data).unwrap())
        .unwrap()
        .into_iter()
        .filter(|o| o.status == Status::DryRun)
        .count();
    assert_eq!(finals, 5);
    d.close();
}

/// Planning that fails (a part of the contact dictionary in quarantine: contacts would be mixed
/// up without it) leaves new receipts in the inbox, says why, and does not hold the contacts
/// planned before: they go when due.
#[test]
fn a_planning_failure_does_not_hold_the_contacts_planned_before() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = config(&data);
    write_inbox(&data, &[1, 2]);
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();
    assert_eq!(tick(&mut d, &config, &rt), (2, 0));
    d.close();

    let quarantine = data.join("quarantine").join("contacts");
    std::fs::create_dir_all(&quarantine).unwrap();
    let part = format!("part-{}.parquet", ulid::Ulid::generate());
    std::fs::write(quarantine.join(part), b"damaged").unwrap();
    write_inbox(&data, &[3]);
    let metrics = Metrics::new();
    let later = NOW + 169 * HOUR;
    let mut d = Dispatcher::open(&data, metrics.clone(), Clock::Fixed(later)).unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let r = rt.block_on(d.tick(&config, stop.clone())).unwrap();
    assert_eq!((r.planned, r.due, r.dry_run), (0, 2, 2), "{r}");
    assert!(r.planning_error.is_some());
    assert_eq!(metrics.board.planning_error(), r.planning_error);
    assert_eq!(metrics.planning_failures.get(), 1);
    let mut sent: Vec<String> = outcomes::read(&outcomes::dataset(&data).unwrap())
        .unwrap()
        .into_iter()
        .filter(|o| o.status == Status::DryRun)
        .map(|o| o.receipt_id)
        .collect();
    sent.sort();
    assert_eq!(sent, [receipt(1).receipt_id, receipt(2).receipt_id]);

    // The part put back (here: its place emptied), the receipt that waited is planned.
    std::fs::remove_dir_all(&quarantine).unwrap();
    let r = rt.block_on(d.tick(&config, stop)).unwrap();
    assert_eq!((r.planned, r.planning_error.as_deref()), (1, None));
    assert_eq!(metrics.board.planning_error(), None);
    assert_eq!(metrics.planning_failures.get(), 1);
    d.close();
}

/// While the profiles cannot be built (a contact dictionary part in quarantine), receipts
/// that need none go all the same: an IMMEDIATE webhook's, and those a webhook holds out
/// (sent at receipt, as without sendtime); a timed one's waits for them. All waited before.
#[test]
fn receipts_that_need_no_profile_go_while_profiles_cannot_be_built() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let hooks = [
        &WEEK,
        &Hook {
            id: "held",
            kind: "NEXT_WEEK",
            target: "workflow_id = 8\nholdout = 0.5",
        },
        &Hook {
            id: "now",
            kind: "IMMEDIATE",
            target: "workflow_id = 9",
        },
    ];
    let config = with_hooks(&data, &hooks, common::PORTAL_ID);
    let quarantine = data.join("quarantine").join("contacts");
    std::fs::create_dir_all(&quarantine).unwrap();
    let part = format!("part-{}.parquet", ulid::Ulid::generate());
    std::fs::write(quarantine.join(part), b"damaged").unwrap();
    let row = |n: u64, webhook: &str, kind| Receipt {
        webhook_type: kind,
        ..common::inbox_row(
            &ulid::Ulid::from_parts(NOW as u64, n as u128).to_string(),
            webhook,
            n as i64,
            None,
            NOW,
        )
    };
    let mut rows = vec![
        row(1, "week", WebhookType::NextWeek),
        row(2, "now", WebhookType::Immediate),
    ];
    rows.extend((10..50).map(|n| row(n, "held", WebhookType::NextWeek)));
    common::write_inbox(&data, &rows);
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let r = rt.block_on(d.tick(&config, stop)).unwrap();
    assert!(r.planning_error.is_some(), "{r}");
    let sent: Vec<String> = outcomes::read(&outcomes::dataset(&data).unwrap())
        .unwrap()
        .into_iter()
        .filter(|o| o.status == Status::DryRun)
        .map(|o| o.receipt_id)
        .collect();
    let planned = plan::read(&plan::dataset(&data).unwrap()).unwrap();
    let held: Vec<&str> = (planned.iter())
        .filter(|p| p.holdout)
        .map(|p| p.receipt_id.as_str())
        .collect();
    assert!(!held.is_empty() && held.len() < 40, "{held:?}");
    assert!(
        sent.contains(&rows[1].receipt_id),
        "the IMMEDIATE receipt waited: {sent:?}"
    );
    assert!(held.iter().all(|h| sent.iter().any(|s| s == h)), "{sent:?}");
    assert!(
        !sent.contains(&rows[0].receipt_id),
        "a timed receipt went unplanned"
    );
    assert_eq!(sent.len(), held.len() + 1, "{sent:?}");
    d.close();
}

/// A receipt of a webhook type this build does not know (a newer version wrote it) is not
/// planned with a guessed type: it is left for later, and the rest of its part (a compaction
/// merges parts) and the parts around it are planned.
#[test]
fn a_receipt_of_an_unknown_webhook_type_is_left_unplanned_and_the_rest_go_on() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = config(&data);
    write_inbox(&data, &[1, 2]);
    let mut df = inbox::frame(&[receipt(3), receipt(5)]).unwrap();
    df.replace(
        inbox::col::WEBHOOK_TYPE,
        polars::prelude::Column::new(
            inbox::col::WEBHOOK_TYPE.into(),
            ["NEXT_FORTNIGHT", "NEXT_WEEK"],
        ),
    )
    .unwrap();
    inbox::dataset(&data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut df)
        .unwrap();
    write_inbox(&data, &[4]);

    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();
    assert_eq!(tick(&mut d, &config, &rt), (4, 0));
    assert_eq!(tick(&mut d, &config, &rt), (0, 0));
    d.close();
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();
    assert_eq!(
        tick(&mut d, &config, &rt),
        (0, 0),
        "after a restart, still unknown"
    );
    let mut planned: Vec<i64> = plan::read(&plan::dataset(&data).unwrap())
        .unwrap()
        .iter()
        .filter_map(|p| p.contact_id)
        .collect();
    planned.sort();
    assert_eq!(planned, [1, 2, 4, 5]);
    d.close();
}

/// Events imported by HubSpot id know no email: a contact looked up by the email its
/// receipts were posted with is explained from the profile planning used (the id they
/// carry), on the dashboard (the queue) and in `sendtime explain` (plan/).
#[test]
fn a_contact_looked_up_by_email_is_found_by_the_id_its_receipts_carry() {
    use sendtime::model::explain::{Explanation, Posted, receipts};
    use sendtime::model::synth::{Spec, generate};

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let spec = Spec {
        contacts: 10,
        events: 2000,
        seed: 1,
        end_ms: NOW - HOUR,
        habits: true,
    };
    generate(&data, spec).unwrap();
    let config = config(&data);
    write_inbox(&data, &[4]);
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();
    assert_eq!(tick(&mut d, &config, &rt), (1, 0));
    // Receipt 4 carries id 4 and c4@example.com; generated contact 4 is "#4".
    let on_dashboard = d
        .explain(
            &config,
            "C4@example.com",
            Posted::default(),
            &Default::default(),
        )
        .unwrap();
    assert!(
        on_dashboard.known && on_dashboard.engagements > 0,
        "{on_dashboard:?}"
    );
    let posted = receipts(&data, "c4@example.com").unwrap().posted;
    assert_eq!(posted.id, Some(4));
    let built = sendtime::model::dataset::build(&data, config.model, NOW).unwrap();
    let pauses = sendtime::pauses::Pauses::default();
    let cli = Explanation::new(
        &config,
        Some(&built),
        "c4@example.com",
        posted,
        &pauses,
        &|_| None,
        NOW,
    )
    .unwrap();
    assert_eq!(
        (cli.known, cli.engagements),
        (true, on_dashboard.engagements)
    );
    // Both say when each webhook would send it, alike.
    let plans = |x: &Explanation| -> Vec<(String, i64, String)> {
        x.webhooks
            .iter()
            .map(|w| (w.webhook.clone(), w.due_at_ms, w.reason.clone()))
            .collect()
    };
    assert_eq!(plans(&cli).len(), config.webhooks.len());
    assert_eq!(plans(&cli), plans(&on_dashboard));
    // And as planning did for receipt 4, posted at this time.
    let row = plan::read(&plan::dataset(&data).unwrap())
        .unwrap()
        .into_iter()
        .find(|p| p.contact_id == Some(4))
        .unwrap();
    assert_eq!(
        plans(&cli),
        [("week".to_string(), row.due_at_ms, row.reason)]
    );
    let unknown = d
        .explain(
            &config,
            "nobody@example.com",
            Posted::default(),
            &Default::default(),
        )
        .unwrap();
    assert!(!unknown.known);
    d.close();
}

/// A plan row written before plan rows named the account takes its inbox row's: a receipt
/// whose webhook now sends through a connector of another account is held, not sent there;
/// through its own account's, it goes.
#[test]
fn a_plan_row_without_its_account_takes_the_inbox_rows() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_inbox(&data, &[1, 2]);
    let rows: Vec<plan::PlanRow> = [1, 2]
        .map(|n| {
            let r = receipt(n);
            plan::PlanRow {
                receipt_id: r.receipt_id,
                webhook_id: r.webhook_id,
                webhook_type: r.webhook_type,
                contact_id: r.contact_id,
                email: r.email,
                received_at_ms: NOW,
                due_at_ms: NOW,
                slot: None,
                reason: "planned by an older version".into(),
                planned_at_ms: NOW,
                callback_id: None,
                holdout: false,
                time_zone: None,
                hold_ends_ms: None,
                portal_id: None,
                holdout_share: None,
            }
        })
        .into();
    let mut df = plan::frame(&rows).unwrap();
    plan::dataset(&data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut df)
        .unwrap();
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let mut d = Dispatcher::open(&data, Metrics::new(), Clock::Fixed(NOW)).unwrap();
    let moved = rt
        .block_on(d.tick(&on_portal(&data, 777), stop.clone()))
        .unwrap();
    assert_eq!((moved.due, moved.dry_run, moved.held), (2, 0, 2), "{moved}");
    let back = rt.block_on(d.tick(&config(&data), stop)).unwrap();
    assert_eq!((back.dry_run, back.held), (2, 0), "{back}");
}
