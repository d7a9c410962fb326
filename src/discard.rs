//! `sendtime discard`: give up the contacts held for a webhook or action that left the config
//! (or changed kind), which are otherwise held until it returns. Their receipts' inbox, plan
//! and outcome rows move to `discarded/`, out of what the dispatcher reads, and are kept
//! there: moved back, they are held again.
//!
//! Runs with no dispatcher on the data folder (its memory holds the same receipts).

use std::collections::HashSet;
use std::path::Path;

use polars::prelude::*;

use crate::config::{Config, Target};
use crate::datasets::outcomes::Action;
use crate::datasets::{inbox, outcomes, plan};
use crate::store::Dataset;

/// Where discarded receipts go (`{data_dir}/discarded/{inbox,plan,outcomes}`).
pub const DISCARDED: &str = "discarded";

/// What a discard moved (or, in a dry run, would move).
#[derive(Debug, Default)]
pub struct Discarded {
    pub webhook: String,
    /// Receipts given up.
    pub receipts: usize,
    /// Rows moved, by dataset.
    pub rows: Vec<(&'static str, usize)>,
    /// Action receipts among them: HubSpot moves each on when its hold ends.
    pub actions: usize,
}

impl std::fmt::Display for Discarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "webhook: {}", self.webhook)?;
        writeln!(f, "receipts: {} (their contacts not sent)", self.receipts)?;
        for (name, n) in &self.rows {
            writeln!(f, "{name}: {n} rows to {DISCARDED}/{name}")?;
        }
        if self.actions > 0 {
            writeln!(
                f,
                "{} of them a workflow action's: HubSpot moves each contact on when its hold ends",
                self.actions
            )?;
        }
        Ok(())
    }
}

/// Give up the contacts of `webhook` held because the config has no such webhook or action
/// (or has it as the other kind); with `dry_run`, only count them.
pub fn run(config: &Config, webhook: &str, dry_run: bool) -> anyhow::Result<Discarded> {
    let data_dir = &config.server.data_dir;
    let _dispatching = crate::dispatch::lock(
        data_dir,
        "its memory holds the webhook's receipts, which it would go on holding",
    )?;
    let configured = config.webhook(webhook);
    // A receipt is held when the config cannot route it: no such id, or the other kind.
    let held =
        |callback: bool| configured.is_none_or(|w| (w.target == Target::Callback) != callback);
    let receipts = inbox::recover(data_dir)?;
    let datasets = [
        // Plan rows first: a crash after them leaves the inbox rows, planned (and held) again.
        plan::dataset(data_dir)?,
        inbox::dataset(data_dir)?,
        outcomes::dataset(data_dir)?,
    ];
    for dataset in &datasets {
        dataset.recover()?;
    }
    let [plan_ds, _, outcomes_ds] = &datasets;
    let outcome_rows = outcomes::read(outcomes_ds)?;
    let finished: HashSet<&str> = outcome_rows
        .iter()
        .filter(|r| r.status.is_final())
        .map(|r| r.receipt_id.as_str())
        .collect();
    let mut ids: HashSet<String> = HashSet::new();
    let mut actions: HashSet<String> = HashSet::new();
    let mut take = |id: &str, callback: bool| {
        if held(callback) && !finished.contains(id) {
            ids.insert(id.to_string());
            if callback {
                actions.insert(id.to_string());
            }
        }
    };
    for r in receipts.iter().filter(|r| r.webhook_id == webhook) {
        take(&r.receipt_id, r.callback_id.is_some());
    }
    for p in plan::read(plan_ds)?
        .iter()
        .filter(|p| p.webhook_id == webhook)
    {
        take(&p.receipt_id, p.callback_id.is_some());
    }
    // Outcome rows of receipts whose other rows a discard cut short has moved already.
    for r in outcome_rows.iter().filter(|r| r.webhook_id == webhook) {
        take(&r.receipt_id, r.action == Action::Complete);
    }
    if let (Some(w), true) = (configured, ids.is_empty()) {
        anyhow::bail!(
            "{} is in the config, as {}: its contacts are sent as planned, none is held. \
             To hold them, `sendtime pause {}`",
            w.id,
            match w.target {
                Target::Callback => "an action",
                _ => "a webhook",
            },
            w.id
        );
    }
    let pick = |df: &DataFrame| -> anyhow::Result<BooleanChunked> {
        Ok(df
            .column(inbox::col::RECEIPT_ID)?
            .str()?
            .iter()
            .map(|r| r.is_some_and(|r| ids.contains(r)))
            .collect())
    };
    let mut out = Discarded {
        webhook: webhook.to_string(),
        receipts: ids.len(),
        actions: actions.len(),
        ..Discarded::default()
    };
    let columns = [inbox::col::RECEIPT_ID];
    for (dataset, name) in datasets
        .iter()
        .zip([plan::NAME, inbox::NAME, outcomes::NAME])
    {
        let rows = match dry_run {
            true => dataset.count_rows(&columns, pick)?,
            false => dataset.move_rows(&discarded(data_dir, name)?, &columns, pick)?,
        };
        if rows > 0 {
            out.rows.push((name, rows));
        }
    }
    Ok(out)
}

fn discarded(data_dir: &Path, name: &str) -> anyhow::Result<Dataset> {
    Dataset::open(&data_dir.join(DISCARDED), name)
}
