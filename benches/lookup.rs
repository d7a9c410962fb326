//! A contact lookup (`sendtime explain`, the dashboard) against a large archive: the
//! contact's planned receipts and their latest outcomes.
//!
//! `cargo bench --bench lookup -- gen DIR ROWS`: an archive of ROWS plan rows and as many
//! outcome rows (ten parts each; five receipts a contact). Then, one process per run,
//! `cargo bench --bench lookup -- MODE DIR`, MODE `whole` (every row read and converted,
//! then filtered: how lookups read before) or `parts` (each part filtered before its rows
//! are converted: how they read now). Prints the lookup's wall time; run it under
//! `/usr/bin/time` for the peak RSS (`benches/lookup.sh` does both, alternating).

/// The same allocator as the `sendtime` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use sendtime::config::WebhookType;
use sendtime::datasets::outcomes::{self, Action, OutcomeRow, Status};
use sendtime::datasets::plan::{self, PlanRow};

const PARTS: usize = 10;
const RECEIPTS_PER_CONTACT: usize = 5;
const T: i64 = 1_790_000_000_000;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().expect("gen, whole or parts");
    let dir = Path::new(args.get(1).expect("DIR"));
    match mode.as_str() {
        "gen" => generate(dir, args.get(2).expect("ROWS").parse().expect("ROWS")),
        "whole" | "parts" => {
            let email = std::fs::read_to_string(dir.join(LOOKED_UP)).expect("run gen first");
            let started = Instant::now();
            let found = if mode == "whole" {
                whole(dir, &email)
            } else {
                sendtime::model::explain::receipts(dir, &email)
                    .unwrap()
                    .shown
                    .iter()
                    .filter(|r| r.outcome.is_some())
                    .count()
            };
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(found, RECEIPTS_PER_CONTACT);
            println!("{mode} {secs:.4}");
        }
        other => panic!("unknown mode {other}"),
    }
}

/// The read lookups made before: every row of both datasets as structs, then filtered.
fn whole(dir: &Path, email: &str) -> usize {
    let rows: Vec<PlanRow> = plan::read_kept(dir)
        .unwrap()
        .into_iter()
        .filter(|p| {
            p.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
        .collect();
    let wanted: HashSet<&str> = rows.iter().map(|p| p.receipt_id.as_str()).collect();
    let done: HashSet<String> = outcomes::read_kept(dir)
        .unwrap()
        .into_iter()
        .filter(|o| wanted.contains(o.receipt_id.as_str()))
        .map(|o| o.receipt_id)
        .collect();
    done.len()
}

/// The file naming the email looked up: a contact in the middle of the archive.
const LOOKED_UP: &str = "looked-up.txt";

fn generate(dir: &Path, rows: usize) {
    assert!(
        rows >= PARTS * RECEIPTS_PER_CONTACT,
        "at least {} rows",
        PARTS * RECEIPTS_PER_CONTACT
    );
    let archive = dir.join(sendtime::datasets::ARCHIVE);
    let per_part = rows / PARTS;
    let middle = (per_part * PARTS / 2 / RECEIPTS_PER_CONTACT) as i64;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(LOOKED_UP), format!("c{middle}@example.com")).unwrap();
    for part in 0..PARTS {
        let plans: Vec<PlanRow> = (part * per_part..(part + 1) * per_part)
            .map(|i| {
                let contact = (i / RECEIPTS_PER_CONTACT) as i64;
                PlanRow {
                    receipt_id: format!("01JRECEIPT{i:016}"),
                    webhook_id: "nurture".into(),
                    webhook_type: WebhookType::NextWeek,
                    contact_id: Some(contact),
                    email: Some(format!("c{contact}@example.com")),
                    received_at_ms: T + i as i64 * 1000,
                    due_at_ms: T + i as i64 * 1000 + 3_600_000,
                    slot: Some((i % 168) as u8),
                    reason: "best hour of the contact's week (Tue 09:00, 31% of its opens)".into(),
                    planned_at_ms: T + i as i64 * 1000,
                    callback_id: None,
                    holdout: false,
                    time_zone: None,
                    hold_ends_ms: None,
                    portal_id: None,
                    holdout_share: Some(0.0),
                }
            })
            .collect();
        let done: Vec<OutcomeRow> = plans
            .iter()
            .map(|p| OutcomeRow {
                receipt_id: p.receipt_id.clone(),
                webhook_id: p.webhook_id.clone(),
                connector: "main".into(),
                action: Action::Enroll,
                target: "123456".into(),
                status: Status::Enrolled,
                http_status: Some(204),
                message: None,
                attempts: 1,
                in_doubt: false,
                retry_at_ms: None,
                at_ms: p.due_at_ms,
                holdout: false,
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
        "{} plan and outcome rows in {}",
        per_part * PARTS,
        archive.display()
    );
}
