//! What the lift report reads of a large archive: every planned receipt and its send.
//!
//! `cargo bench --bench lift -- gen DIR ROWS`: an archive of ROWS planned receipts (ten
//! parts), each with its `attempting` and `enrolled` rows, a tenth held out. Then, one
//! process per run, `cargo bench --bench lift -- MODE DIR`, MODE `whole` (every plan and
//! outcome row read whole, as the report read before) or `lean` (the report's read now: the
//! plan's columns it needs and the outcomes' sends, a part at a time). Prints the read's wall
//! time; run it under `/usr/bin/time` for the peak RSS (`benches/lift.sh` does both,
//! alternating).

/// The same allocator as the `sendtime` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::Instant;

use sendtime::config::WebhookType;
use sendtime::datasets::outcomes::{self, Action, OutcomeRow, Status};
use sendtime::datasets::plan::{self, PlanRow};

const PARTS: usize = 10;
const T: i64 = 1_790_000_000_000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().expect("gen, whole or lean");
    let dir = Path::new(args.get(1).expect("DIR"));
    match mode.as_str() {
        "gen" => generate(dir, args.get(2).expect("ROWS").parse().expect("ROWS")),
        "whole" | "lean" => {
            let started = Instant::now();
            let sent = if mode == "whole" {
                whole(dir)
            } else {
                sendtime::lift::sends::planned(dir)
                    .unwrap()
                    .iter()
                    .filter(|p| p.sent_at_ms.is_some())
                    .count()
            };
            let secs = started.elapsed().as_secs_f64();
            eprintln!("{sent} receipts sent");
            println!("{mode} {secs:.4}");
        }
        other => panic!("unknown mode {other}"),
    }
}

/// The read the report made before: every row of both datasets as structs.
fn whole(dir: &Path) -> usize {
    let done = outcomes::read_kept(dir).unwrap();
    let sent: std::collections::HashSet<&str> = done
        .iter()
        .filter(|o| o.status == Status::Enrolled)
        .map(|o| o.receipt_id.as_str())
        .collect();
    plan::read_kept(dir)
        .unwrap()
        .iter()
        .filter(|p| sent.contains(p.receipt_id.as_str()))
        .count()
}

fn generate(dir: &Path, rows: usize) {
    let archive = dir.join(sendtime::datasets::ARCHIVE);
    let per_part = rows / PARTS;
    std::fs::create_dir_all(dir).unwrap();
    for part in 0..PARTS {
        let plans: Vec<PlanRow> = (part * per_part..(part + 1) * per_part)
            .map(|i| {
                let contact = (i / 3) as i64;
                let due = T + i as i64 * 1000 + 3_600_000;
                PlanRow {
                    receipt_id: ulid::Ulid::from_parts(T as u64, i as u128).to_string(),
                    webhook_id: "nurture".into(),
                    webhook_type: WebhookType::NextWeek,
                    contact_id: Some(contact),
                    email: Some(format!("c{contact}@example.com")),
                    received_at_ms: T + i as i64 * 1000,
                    due_at_ms: due,
                    slot: Some((i % 168) as u8),
                    // As long as the planner's own.
                    reason: format!(
                        "NEXT_WEEK: the next 7 days; best hour for this active contact ({} opens/clicks): Tue 09:00 UTC (2.3x the window's average); due 2026-09-22 09:{:02} UTC",
                        i % 40,
                        i % 60
                    ),
                    planned_at_ms: T + i as i64 * 1000,
                    callback_id: None,
                    holdout: i % 10 == 0,
                    time_zone: None,
                    hold_ends_ms: None,
                    portal_id: None,
                    holdout_share: Some(0.1),
                }
            })
            .collect();
        let step = |p: &PlanRow, status, http_status, at_ms| OutcomeRow {
            receipt_id: p.receipt_id.clone(),
            webhook_id: p.webhook_id.clone(),
            connector: "main".into(),
            action: Action::Enroll,
            target: "123456".into(),
            status,
            http_status,
            message: None,
            attempts: 1,
            in_doubt: false,
            retry_at_ms: None,
            at_ms,
            holdout: p.holdout,
        };
        let done: Vec<OutcomeRow> = plans
            .iter()
            .flat_map(|p| {
                [
                    step(p, Status::Attempting, None, p.due_at_ms),
                    step(p, Status::Enrolled, Some(204), p.due_at_ms + 200),
                ]
            })
            .collect();
        let id = ulid::Ulid::generate();
        plan::dataset(&archive)
            .unwrap()
            .write_part(id, &mut plan::frame(&plans).unwrap())
            .unwrap();
        outcomes::dataset(&archive)
            .unwrap()
            .write_part(id, &mut outcomes::frame(&done).unwrap())
            .unwrap();
    }
    println!(
        "{} planned receipts and {} outcome rows in {}",
        per_part * PARTS,
        2 * per_part * PARTS,
        archive.display()
    );
}
