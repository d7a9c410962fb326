//! `sendtime discard`: give up the contacts held for a webhook or action that left the config
//! (or changed kind, or moved to another account's connector), which are otherwise held until
//! it returns. Their receipts' inbox, plan and outcome rows move to `discarded/`, out of what
//! the dispatcher reads, and are kept there: moved back, they are held again.
//!
//! Runs with no dispatcher on the data folder (its memory holds the same receipts; a dry run
//! may run beside one), and
//! names the receipts in `state/discard.pending` before moving them: a dispatcher refuses to
//! start while a discard is cut short (a receipt whose plan row moved and inbox row did not
//! would be planned again).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Target, WebhookType};
use crate::cut_short;
use crate::datasets::outcomes::Action;
use crate::datasets::{inbox, outcomes, plan};
use crate::store::Dataset;

/// Where discarded receipts go (`{data_dir}/discarded/{inbox,plan,outcomes}`).
pub const DISCARDED: &str = "discarded";

/// The receipts a discard gives up.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Held {
    receipts: BTreeSet<String>,
    /// Those of a workflow action.
    actions: BTreeSet<String>,
    /// The accounts they were taken for, where their rows say.
    #[serde(default)]
    portals: BTreeSet<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    webhook: String,
    held: Held,
}

/// What a discard moved (or, in a dry run, would move).
#[derive(Debug, Default)]
pub struct Discarded {
    pub webhook: String,
    /// A discard cut short, finished.
    pub finished: bool,
    /// Finished with the webhook back in the config as what its receipts were received by.
    pub back_in_config: bool,
    /// Receipts given up.
    pub receipts: usize,
    /// Rows moved, by dataset.
    pub rows: Vec<(&'static str, usize)>,
    /// Action receipts among them: HubSpot moves each on when its hold ends.
    pub actions: usize,
    /// A dry run beside a running dispatcher.
    pub beside: bool,
}

impl std::fmt::Display for Discarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.finished {
            writeln!(f, "finished a discard that was cut short")?;
        }
        if self.beside {
            writeln!(f, "{}", crate::dispatch::locks::COUNTED_BESIDE)?;
        }
        writeln!(f, "webhook: {}", self.webhook)?;
        writeln!(
            f,
            "receipts: {} (given up: not sent from now on)",
            self.receipts
        )?;
        if self.back_in_config {
            writeln!(
                f,
                "{} is in the config again: the receipts this discard named were given up as it began",
                self.webhook
            )?;
        }
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
/// (or has it as the other kind); with `dry_run`, only count them. Without `webhook`, finish
/// a discard that was cut short.
pub fn run(config: &Config, webhook: Option<&str>, dry_run: bool) -> anyhow::Result<Discarded> {
    let data_dir = &config.server.data_dir;
    let rewriting = crate::dispatch::locks::lock_rewriting(
        data_dir,
        dry_run,
        "its memory holds the webhook's receipts, which it would go on holding",
    )?;
    let intent_file = cut_short::Intent::of(data_dir, cut_short::Command::Discard);
    let unfinished: Option<Intent> = intent_file
        .read("delete it and run `sendtime discard ID` again, with ID still out of the config")?;
    if let Some(cut) = &unfinished {
        anyhow::ensure!(
            webhook.is_none() && !dry_run,
            "a discard of {} was cut short: run `sendtime discard` (no id, no --dry-run) to finish it first",
            cut.webhook
        );
    }
    let datasets = [
        plan::dataset(data_dir)?,
        inbox::dataset(data_dir)?,
        outcomes::dataset(data_dir)?,
    ];
    let beside = rewriting.beside;
    let recovered = match beside {
        // A running dispatcher recovers the folder for itself.
        true => None,
        // The inbox is recovered with its log.
        false => {
            let receipts = inbox::recover(data_dir)?;
            let [plan_ds, _, outcomes_ds] = &datasets;
            plan_ds.recover()?;
            outcomes_ds.recover()?;
            Some(receipts)
        }
    };
    // Past the recovery, a dry run moves nothing: it names a damaged part.
    let datasets = datasets.map(|d| if dry_run { d.for_dry_run() } else { d });
    let [plan_ds, inbox_ds, outcomes_ds] = &datasets;
    let receipts = match recovered {
        Some(receipts) => receipts,
        None => inbox::read_keys(inbox_ds)?,
    };
    let finished = unfinished.is_some();
    let intent = match unfinished {
        Some(intent) => intent,
        None => {
            let webhook = webhook.context(
                "name the webhook or action whose held contacts to give up (`sendtime discard ID`)",
            )?;
            let mut all = held_by_webhook(config, &receipts, plan_ds, outcomes_ds)?;
            let held = all.remove(webhook).unwrap_or_default();
            if held.receipts.is_empty() {
                anyhow::bail!(nothing_held(config, webhook, &all));
            }
            Intent {
                webhook: webhook.to_string(),
                held,
            }
        }
    };
    let mut out = Discarded {
        webhook: intent.webhook.clone(),
        finished,
        back_in_config: finished && {
            let held = &intent.held;
            // An intent file of an older version names no account.
            let portals: Vec<Option<u64>> = match held.portals.is_empty() {
                true => vec![None],
                false => held.portals.iter().map(|p| Some(*p)).collect(),
            };
            (held.receipts.iter()).any(|id| {
                let callback = held.actions.contains(id);
                (portals.iter()).any(|p| routable(config, &intent.webhook, callback, None, *p))
            })
        },
        receipts: intent.held.receipts.len(),
        actions: intent.held.actions.len(),
        beside,
        ..Discarded::default()
    };
    if !dry_run && !finished {
        intent_file.write(&intent)?;
    }
    let pick = |df: &DataFrame| -> anyhow::Result<BooleanChunked> {
        Ok(df
            .column(inbox::col::RECEIPT_ID)?
            .str()?
            .iter()
            .map(|r| r.is_some_and(|r| intent.held.receipts.contains(r)))
            .collect())
    };
    let columns = [inbox::col::RECEIPT_ID];
    for (dataset, name) in datasets.iter().zip(NAMES) {
        let rows = match dry_run {
            true => dataset.count_rows(&columns, pick)?,
            false => {
                let into = Dataset::open(&data_dir.join(DISCARDED), name);
                into.and_then(|into| {
                    into.recover()?;
                    dataset.move_rows(&into, &columns, pick)
                })
                .with_context(|| {
                    format!(
                        "the discard of {} was cut short moving its {name} rows: fix the cause and run `sendtime discard` (no id) to finish it",
                        intent.webhook
                    )
                })?
            }
        };
        out.record(name, rows);
    }
    if !dry_run {
        intent_file.remove()?;
    }
    Ok(out)
}

/// The datasets' names, in the order their rows move.
const NAMES: [&str; 3] = [plan::NAME, inbox::NAME, outcomes::NAME];

impl Discarded {
    fn record(&mut self, name: &'static str, rows: usize) {
        if rows > 0 {
            self.rows.push((name, rows));
        }
    }
}

/// The receipts of each webhook id that the config cannot route (no such id, the other kind,
/// or another account's connector) and that have no final outcome: those the dispatcher
/// holds. Read from the inbox (`receipts`), plan and outcome rows, so a receipt whose other
/// rows moved is found too.
fn held_by_webhook(
    config: &Config,
    receipts: &[inbox::ReceiptKey],
    plan_ds: &Dataset,
    outcomes_ds: &Dataset,
) -> anyhow::Result<BTreeMap<String, Held>> {
    let outcome_rows = outcomes::read(outcomes_ds)?;
    let finished: std::collections::HashSet<&str> = outcome_rows
        .iter()
        .filter(|r| r.status.is_final())
        .map(|r| r.receipt_id.as_str())
        .collect();
    // Each receipt as taken, from its inbox or plan row (the account from either, as the
    // dispatcher takes it); from its outcome rows only when those are all that is left.
    let mut kinds: HashMap<&str, Taken> = HashMap::new();
    let plans = plan::read(plan_ds)?;
    let account = |p| inbox::account(p).map(std::num::NonZeroU64::get);
    for r in receipts {
        let kind = Taken {
            webhook: &r.webhook_id,
            callback: r.callback_id.is_some(),
            enrolls: r.webhook_type.map(WebhookType::enrolls),
            portal: account(r.portal_id),
        };
        kinds.insert(&r.receipt_id, kind);
    }
    for p in &plans {
        let inbox = kinds.get(p.receipt_id.as_str()).and_then(|k| k.portal);
        let kind = Taken {
            webhook: &p.webhook_id,
            callback: p.callback_id.is_some(),
            enrolls: Some(p.webhook_type.enrolls()),
            portal: account(p.portal_id).or(inbox),
        };
        kinds.insert(&p.receipt_id, kind);
    }
    for r in &outcome_rows {
        let kind = Taken {
            webhook: &r.webhook_id,
            callback: r.action == Action::Complete,
            enrolls: (r.action != Action::Complete).then_some(r.action == Action::Enroll),
            portal: None,
        };
        kinds.entry(&r.receipt_id).or_insert(kind);
    }
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    for (id, t) in kinds {
        if !routable(config, t.webhook, t.callback, t.enrolls, t.portal) && !finished.contains(id) {
            let of = held.entry(t.webhook.to_string()).or_default();
            of.receipts.insert(id.to_string());
            if t.callback {
                of.actions.insert(id.to_string());
            }
            of.portals.extend(t.portal);
        }
    }
    Ok(held)
}

/// A receipt as it was taken: by which webhook, as an action's (with a callback id) or a
/// webhook's that enrolls or not (its type, or an outcome row's call), for which account.
#[derive(Clone, Copy)]
struct Taken<'a> {
    webhook: &'a str,
    callback: bool,
    enrolls: Option<bool>,
    portal: Option<u64>,
}

/// Whether the config routes a receipt of `webhook` (an action's when `callback`, else one
/// that enrolls or not as `enrolls` says) taken for the account `portal`.
fn routable(
    config: &Config,
    webhook: &str,
    callback: bool,
    enrolls: Option<bool>,
    portal: Option<u64>,
) -> bool {
    config.route(webhook, callback, enrolls, portal).is_some()
}

/// Why nothing of `webhook` can be discarded, and what is held.
fn nothing_held(config: &Config, webhook: &str, held: &BTreeMap<String, Held>) -> String {
    let why = match config.webhook(webhook) {
        Some(w) => format!(
            "{webhook} is in the config, as {}: its contacts are sent as planned. To give them \
             up, remove it from the config first; to hold them, `sendtime pause {webhook}`",
            match w.target {
                Target::Callback => "an action",
                _ => "a webhook",
            }
        ),
        None => format!("no contact of {webhook} is held (ids are matched as written)"),
    };
    let others: Vec<String> = held
        .iter()
        .map(|(w, h)| format!("{w} ({})", h.receipts.len()))
        .collect();
    match others.is_empty() {
        true => format!("{why}; no contact is held"),
        false => format!("{why}; held now: {}", others.join(", ")),
    }
}
