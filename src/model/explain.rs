//! What the model knows and would do for one contact: `sendtime explain` prints it, and the
//! dashboard's contact lookup shows it, from the same [`Explanation`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::dataset::Built;
use super::plan::{Subject, plan};
use crate::config::{Config, Target, WebhookType};
use crate::datasets::contacts::contact_key;
use crate::datasets::outcomes::{OutcomeRow, Status};
use crate::dispatch::plan_alone;
use crate::pauses::Pauses;
use crate::time::{DAY_MS, SLOTS, day_of, format_minute, slot_name};
use chrono_tz::Tz;

/// Planned receipts shown per contact (the latest), each with its outcome.
const RECEIPTS_SHOWN: usize = 10;

/// One contact as the model sees it at `as_of_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// As asked: an email address or a HubSpot contact id.
    pub contact: String,
    pub as_of_ms: i64,
    /// The contact has events; otherwise it is planned as a new contact.
    pub known: bool,
    /// The key of the events learned from (a lower-cased email, or `#` and a HubSpot id),
    /// when known: a receipt's email and id can name two, and the one with more history is
    /// taken (an id is one account's: with several, another account's contact may share it).
    pub learned_from: Option<String>,
    /// The other contact learned from, as said (`HubSpot id 4242`, or an email), when that
    /// is not the one asked: the dashboard's lookup says so too (it showed another key's
    /// history as the contact's own; an audit).
    pub learned_elsewhere: Option<String>,
    pub class: &'static str,
    /// Opens and clicks learned from.
    pub engagements: u32,
    /// The day of the last engagement (`YYYY-MM-DD`).
    pub last_engaged: Option<String>,
    /// Machine-like volume or cadence: not learned from.
    pub machine: bool,
    /// Probability per hour-of-week slot, Monday 00:00 UTC first.
    pub scores: Vec<f64>,
    /// None when every slot scores the same (nothing learned yet): no hour is best.
    pub best_slot: Option<String>,
    /// What each webhook type would do now, in its default window.
    pub plans: Vec<TypePlan>,
    /// What each configured webhook and action would do now, as planning places a receipt
    /// alone: its window, quiet hours and the contact's zone.
    pub webhooks: Vec<WebhookPlan>,
    /// Receipts of the contact in `plan/`, live and archived.
    pub receipts_total: usize,
    /// The latest of them, oldest first.
    pub receipts: Vec<PlannedReceipt>,
    /// How the model's knobs were fitted to the account's data.
    pub fit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypePlan {
    pub webhook_type: &'static str,
    pub due_at_ms: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookPlan {
    pub webhook: String,
    /// Its type; an action's is the one used when its workflow chooses no delivery type.
    pub webhook_type: &'static str,
    /// A workflow action, released by its callback.
    pub action: bool,
    /// The share of its receipts held out (sent at receipt instead).
    pub holdout: f64,
    /// Paused by an operator (or its connector is): held, not sent, until resumed.
    pub paused: bool,
    /// Its connector is in dry run: recorded, not sent.
    pub dry_run: bool,
    /// Its connector is paused by HubSpot's answer (its daily limit, a refused token, ...).
    pub connector_paused: Option<ConnectorPaused>,
    pub due_at_ms: i64,
    pub reason: String,
}

/// A pause HubSpot's answer set on a connector: nothing is sent through it until then.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorPaused {
    pub until_ms: i64,
    /// As `/status` says it (`daily_limit`, `refused_token`, ...).
    pub why: &'static str,
}

impl ConnectorPaused {
    /// As `explain` says it: "its connector is paused by HubSpot's answer (daily limit) until
    /// ...", the reason as the dashboard's status table words it.
    fn text(&self) -> String {
        format!(
            "its connector is paused by HubSpot's answer ({}) until {}",
            self.why.replace('_', " "),
            format_minute(self.until_ms)
        )
    }
}

/// What the contact's latest receipt was posted with. Planning looks a contact up by its
/// email and its HubSpot id (events imported by id know no email; HubSpot's carry emails),
/// spreads it over the minutes of an hour by its email, and keeps quiet hours in its zone.
#[derive(Debug, Clone, Default)]
pub struct Posted {
    /// The HubSpot id it carried, when asked by email.
    pub id: Option<i64>,
    /// The email it carried, when asked by HubSpot id.
    pub email: Option<String>,
    /// The zone it posted (none: its connector's).
    pub zone: Option<Tz>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedReceipt {
    pub webhook: String,
    pub webhook_type: &'static str,
    pub received_at_ms: i64,
    pub due_at_ms: i64,
    pub reason: String,
    /// What became of it, from its latest outcome row; none yet: it waits for its time.
    pub outcome: Option<String>,
    /// Without an outcome, what it waits for: a pause, its webhook's return, its quiet hours
    /// or the next tick (due already) or its time (it said "waiting for its time" of a
    /// contact a pause held past its due time; an audit).
    pub waiting: Option<String>,
    /// An action's receipt: when HubSpot's hold on the contact ends, as asked on receipt.
    pub hold_ends_ms: Option<i64>,
    /// What the dispatcher routes it by ([`Config::route`]): an action's, an enrolling type's,
    /// and the account it came from.
    #[serde(skip)]
    pub routed_as: (bool, Option<bool>, Option<u64>),
    /// Whether quiet hours hold it (a timed send, not held out), the zone it was posted with
    /// and its type.
    #[serde(skip)]
    pub quiet_as: (bool, Option<chrono_tz::Tz>, WebhookType),
}

impl Explanation {
    /// Explain `contact` (an email or a HubSpot id) at `now` from `built` (none: no events yet),
    /// what its receipts were `posted` with, the operators' `pauses` and the pause HubSpot's
    /// answers set on each connector (`paused`, by connector id); its planned receipts come
    /// from [`Explanation::with_receipts`].
    pub fn new(
        config: &Config,
        built: Option<&Built>,
        contact: &str,
        posted: Posted,
        pauses: &Pauses,
        paused: &dyn Fn(&str) -> Option<ConnectorPaused>,
        now: i64,
    ) -> anyhow::Result<Explanation> {
        let contact = contact.trim();
        anyhow::ensure!(
            !contact.is_empty(),
            "CONTACT is empty: give an email address or a HubSpot contact id"
        );
        let (id, email) = id_or_email(contact);
        let id = id.or(posted.id);
        let email = email.or(posted.email.as_deref());
        let index = built.and_then(|b| {
            let email_key = email.and_then(|e| contact_key(None, Some(e)));
            b.find(email_key.as_deref(), id)
        });
        let uniform = [1.0 / SLOTS as f64; SLOTS];
        let population = built.map_or(&uniform, |b| &b.profiles.population);
        let profile = built.map(|b| b.profiles.profile(index, day_of(now)));
        let key = contact_key(id, email).unwrap_or_default();
        let scores = profile.as_ref().map_or(uniform, |p| p.scores);
        let known = profile.as_ref().filter(|_| index.is_some());
        let plans = WebhookType::ALL
            .into_iter()
            .map(|kind| {
                let p = plan(
                    kind,
                    now,
                    known,
                    population,
                    Subject {
                        contact: &key,
                        receipt: "explain",
                    },
                );
                TypePlan {
                    webhook_type: kind.as_str(),
                    due_at_ms: p.due_at_ms,
                    reason: p.reason,
                }
            })
            .collect();
        let learned_from = built
            .zip(index)
            .and_then(|(b, i)| b.contacts.keys.get(i as usize).cloned());
        let (id, email) = id_or_email(contact);
        let asked = contact_key(id, email);
        let learned_elsewhere = (learned_from.as_deref())
            .filter(|k| asked.as_deref() != Some(*k))
            .map(|k| match k.strip_prefix('#') {
                Some(id) => format!("HubSpot id {id}"),
                None => k.to_string(),
            });
        Ok(Explanation {
            contact: contact.to_string(),
            as_of_ms: now,
            known: index.is_some(),
            learned_from,
            learned_elsewhere,
            class: profile.as_ref().map_or("evaluating", |p| p.class.as_str()),
            engagements: profile.as_ref().map_or(0, |p| p.engagements),
            last_engaged: profile
                .as_ref()
                .and_then(|p| p.last_day)
                .map(|d| format_minute(d as i64 * DAY_MS)[..10].to_string()),
            machine: profile.as_ref().is_some_and(|p| p.machine),
            best_slot: best_slot(&scores).map(|s| slot_name(s as u8)),
            scores: scores.to_vec(),
            plans,
            webhooks: config
                .webhooks
                .iter()
                .map(|w| {
                    let p = plan_alone(config, w, known, population, &key, posted.zone, now);
                    WebhookPlan {
                        webhook: w.id.clone(),
                        webhook_type: w.kind.as_str(),
                        action: w.target == Target::Callback,
                        holdout: w.holdout,
                        paused: pauses.holds(&w.id, &w.connector),
                        dry_run: config.connector(&w.connector).is_some_and(|c| c.dry_run),
                        // A dry run calls nothing: no pause of HubSpot's holds it.
                        connector_paused: config
                            .connector(&w.connector)
                            .filter(|c| !c.dry_run)
                            .and_then(|c| paused(&c.id)),
                        due_at_ms: p.due_at_ms,
                        reason: p.reason,
                    }
                })
                .collect(),
            receipts_total: 0,
            receipts: Vec::new(),
            fit: built.and_then(|b| b.profiles.fit).map(|f| f.describe()),
        })
    }

    /// Add the contact's receipts ([`receipts`]), each without an outcome with what holds it
    /// under `config`, as the dispatcher routes it.
    pub fn with_receipts(mut self, receipts: Receipts, config: &Config) -> Explanation {
        (self.receipts_total, self.receipts) = (receipts.total, receipts.shown);
        for p in self.receipts.iter_mut().filter(|p| p.outcome.is_none()) {
            let webhook = self.webhooks.iter().find(|w| w.webhook == p.webhook);
            let (callback, enrolls, portal) = p.routed_as;
            let routed = config
                .route(&p.webhook, callback, enrolls, portal)
                .is_some();
            p.waiting = Some(match webhook {
                None => "held: its webhook is not in the config (put it back, or `sendtime discard` gives it up)".to_string(),
                // As the dispatcher holds it (it read "due" while held; an audit).
                Some(_) if !routed => format!(
                    "held: its webhook {}: {}",
                    crate::config::HELD_AS_CHANGED,
                    crate::config::held_until_back(&p.webhook)
                ),
                // An action's contact HubSpot moves on at its hold's end, paused or not: the
                // dispatcher fails it then (it said "sent once resumed"; a review).
                Some(w) if w.paused => match action_hold(config, p).filter(|_| !w.dry_run) {
                    Some(end) if end <= self.as_of_ms => format!("held by a pause (sendtime pause) past HubSpot's hold on the contact (it ended {}): recorded failed at the dispatcher's next tick", format_minute(end)),
                    Some(end) => format!("held by a pause (sendtime pause): sent once resumed, or failed when HubSpot's hold ends ({}) if still paused", format_minute(end)),
                    None => "held by a pause (sendtime pause): sent once resumed".to_string(),
                },
                Some(w) if p.due_at_ms <= self.as_of_ms => match (&w.connector_paused, quiet_until(config, p, self.as_of_ms)) {
                    // The dispatcher's last try, a minute before the hold ends: a callback
                    // the pause outlasts fails there (held to its release-by, then looked at
                    // again; `callback_deadline` at each tick).
                    (Some(c), _) => match action_hold(config, p).map(super::plan::last_try) {
                        Some(last) if c.until_ms > last && last <= self.as_of_ms => format!("held: {}, past its last try before HubSpot's hold ends ({}): recorded failed at the dispatcher's next tick", c.text(), format_minute(last)),
                        Some(last) if c.until_ms > last => format!("held: {}, past its last try ({}) before HubSpot's hold ends: failed then, not completed", c.text(), format_minute(last)),
                        _ => format!("held: {}: sent after", c.text()),
                    },
                    (None, Some(until)) => format!("held by its quiet hours until {}: sent then", format_minute(until)),
                    (None, None) => "due: sent at the dispatcher's next tick".to_string(),
                },
                Some(_) => "waiting for its time".to_string(),
            });
        }
        self
    }

    /// As `sendtime explain` prints it; `events_dir` is named when the contact has no events.
    pub fn text(&self, events_dir: &Path) -> String {
        let mut out = String::new();
        let contact = &self.contact;
        if self.known {
            // Learned from another key than the one asked: the id or email its receipts carry.
            let from = (self.learned_elsewhere.as_deref()).map_or(String::new(), |other| {
                format!(" (the events of {other}, which its receipts carry)")
            });
            let _ = writeln!(
                out,
                "{contact}: class {}, {} opens/clicks{from}, last {}{}",
                self.class,
                self.engagements,
                self.last_engaged.as_deref().unwrap_or("never"),
                if self.machine {
                    "; MACHINE-LIKE: not learned from"
                } else {
                    ""
                }
            );
        } else {
            let _ = writeln!(
                out,
                "{contact}: no events for this contact in {}; treated as a new contact (class evaluating)",
                events_dir.display()
            );
        }
        let _ = writeln!(out, "as of {}", format_minute(self.as_of_ms));
        if let Some(fit) = &self.fit {
            let _ = writeln!(out, "model knobs {fit}");
        }
        let _ = writeln!(out);
        out.push_str(&heat_map(&self.scores, self.best_slot.as_deref()));
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "if posted now, by type, in the type's default window, without quiet hours"
        );
        for p in &self.plans {
            let _ = writeln!(out, "{:<30} {}", p.webhook_type, format_minute(p.due_at_ms));
            let _ = writeln!(out, "{:<30} {}", "", p.reason);
        }
        let _ = writeln!(
            out,
            "\nif posted now to each webhook, as planning places it alone: its window, quiet hours and the contact's zone (not what other contacts take of its connector)"
        );
        for w in &self.webhooks {
            let what = if w.action {
                format!(
                    "action {} ({}, when its workflow chooses no delivery type)",
                    w.webhook, w.webhook_type
                )
            } else {
                format!("webhook {} ({})", w.webhook, w.webhook_type)
            };
            let _ = writeln!(out, "{what}: {}", format_minute(w.due_at_ms));
            let _ = writeln!(out, "  {}", w.reason);
            if w.paused {
                let _ = writeln!(
                    out,
                    "  PAUSED (sendtime pause): held, not sent, until resumed"
                );
            }
            if let Some(c) = &w.connector_paused {
                let _ = writeln!(out, "  {}: nothing sent until then", c.text());
            }
            if w.dry_run {
                let _ = writeln!(out, "  its connector is in dry run: recorded, not sent");
            }
            if w.holdout > 0.0 {
                let _ = writeln!(
                    out,
                    "  {:.0}% of its receipts are held out and go at receipt instead (sendtime report lift)",
                    w.holdout * 100.0
                );
            }
        }
        let _ = writeln!(out, "\nplanned receipts: {}", self.receipts_total);
        for p in &self.receipts {
            let held = p.hold_ends_ms.map_or(String::new(), |t| {
                format!(" (HubSpot holds the contact until {})", format_minute(t))
            });
            let _ = writeln!(
                out,
                "{} {} received {}, due {}{held}\n  {}\n  {}",
                p.webhook,
                p.webhook_type,
                format_minute(p.received_at_ms),
                format_minute(p.due_at_ms),
                p.reason,
                (p.outcome.as_deref()).unwrap_or(p.waiting.as_deref().unwrap_or_default())
            );
        }
        out
    }
}

/// A contact's receipts in `plan/`, live and archived.
pub struct Receipts {
    pub total: usize,
    /// The latest [`RECEIPTS_SHOWN`], oldest first, with what became of each.
    pub shown: Vec<PlannedReceipt>,
    /// What the latest receipt was posted with.
    pub posted: Posted,
}

/// A contact as asked: a HubSpot id when it is a number, else an email address.
fn id_or_email(contact: &str) -> (Option<i64>, Option<&str>) {
    match contact.parse::<i64>() {
        Ok(id) => (Some(id), None),
        Err(_) => (None, Some(contact)),
    }
}

/// The earliest of equal bests; none when every slot scores the same.
fn best_slot(scores: &[f64; SLOTS]) -> Option<usize> {
    let best = (0..SLOTS).fold(0, |b, s| if scores[s] > scores[b] { s } else { b });
    let least = scores.iter().copied().fold(f64::INFINITY, f64::min);
    (scores[best] - least > 1e-12).then_some(best)
}

/// The contact's (an email or a HubSpot id) receipts in `plan/`, live and archived (a read of
/// every part, one at a time, keeping the contact's rows: kept apart so that the dispatcher,
/// which answers the profile part, does not wait on it), with the reasons that say where
/// capacity and quiet hours moved them.
pub fn receipts(data_dir: &Path, contact: &str) -> anyhow::Result<Receipts> {
    let (id, email) = id_or_email(contact.trim());
    let mut rows = crate::datasets::plan::read_kept_of_contact(data_dir, id, email)?;
    // A row read twice (live and archived during a move) sorts next to itself.
    rows.sort_by(|a, b| {
        (a.planned_at_ms, a.received_at_ms, &a.receipt_id).cmp(&(
            b.planned_at_ms,
            b.received_at_ms,
            &b.receipt_id,
        ))
    });
    rows.dedup_by(|a, b| a.receipt_id == b.receipt_id);
    let latest = rows.iter().max_by_key(|p| p.planned_at_ms);
    // The latest that carries one: a later post of the id alone (`UPDATE_ONLY`) showed a
    // contact with history as new (an audit).
    let newest = |has: fn(&crate::datasets::plan::PlanRow) -> bool| {
        rows.iter()
            .filter(|p| has(p))
            .max_by_key(|p| p.planned_at_ms)
    };
    let posted = Posted {
        id: email
            .and(newest(|p| p.contact_id.is_some()))
            .and_then(|p| p.contact_id),
        email: id
            .and(newest(|p| p.email.is_some()))
            .and_then(|p| p.email.clone()),
        zone: latest.and_then(|p| p.time_zone),
    };
    let total = rows.len();
    let rows: Vec<_> = rows
        .into_iter()
        .skip(total.saturating_sub(RECEIPTS_SHOWN))
        .collect();
    let mut outcomes = latest_outcomes(data_dir, rows.iter().map(|p| p.receipt_id.as_str()))?;
    let shown = rows
        .into_iter()
        .map(|p| PlannedReceipt {
            outcome: outcomes.remove(&p.receipt_id).map(|o| describe(&o)),
            waiting: None,
            webhook: p.webhook_id,
            webhook_type: p.webhook_type.as_str(),
            received_at_ms: p.received_at_ms,
            due_at_ms: p.due_at_ms,
            reason: p.reason,
            hold_ends_ms: p.hold_ends_ms,
            routed_as: (
                p.callback_id.is_some(),
                Some(p.webhook_type.enrolls()),
                crate::datasets::inbox::account(p.portal_id).map(std::num::NonZeroU64::get),
            ),
            quiet_as: (
                p.webhook_type.timed() && !p.holdout,
                p.time_zone,
                p.webhook_type,
            ),
        })
        .collect();
    Ok(Receipts {
        total,
        shown,
        posted,
    })
}

/// Until when its webhook's quiet hours hold a due receipt at `now`, as the dispatcher judges
/// it ([`crate::local_time::QuietHours::hold_until`]: in its zone, else its connector's; an
/// action's only when they end by its release-by, else not at all): it was said to be due at
/// the next tick all night (an audit). Judged from its planned time (a ledger rebuild may have moved it since).
fn quiet_until(config: &Config, p: &PlannedReceipt, now: i64) -> Option<i64> {
    let (timed, zone, kind) = p.quiet_as;
    let w = config.webhook(&p.webhook).filter(|_| timed)?;
    let zone = zone.or(config.connector(&w.connector)?.time_zone);
    let release_by = (w.target == Target::Callback)
        .then(|| super::plan::release_by(p.hold_ends_ms, p.received_at_ms, kind, w.window));
    let zone = zone.unwrap_or(chrono_tz::Tz::UTC);
    w.quiet_hours?
        .hold_until(zone, p.due_at_ms, release_by, now)
}

/// When HubSpot's hold on an action's receipt `p` ends; `None` for a webhook's.
fn action_hold(config: &Config, p: &PlannedReceipt) -> Option<i64> {
    let w = config
        .webhook(&p.webhook)
        .filter(|w| w.target == Target::Callback)?;
    let (_, _, kind) = p.quiet_as;
    let (hold, received) = (p.hold_ends_ms, p.received_at_ms);
    Some(super::plan::hold_end(hold, received, kind, w.window))
}

/// The latest outcome row of each of `receipts` that has one.
fn latest_outcomes<'r>(
    data_dir: &Path,
    receipts: impl Iterator<Item = &'r str>,
) -> anyhow::Result<HashMap<String, OutcomeRow>> {
    let wanted: HashSet<&str> = receipts.collect();
    let mut latest: HashMap<String, OutcomeRow> = HashMap::new();
    if wanted.is_empty() {
        return Ok(latest);
    }
    for row in crate::datasets::outcomes::read_kept_of_receipts(data_dir, &wanted)? {
        match latest.get(&row.receipt_id) {
            Some(seen) if (seen.at_ms, seen.attempts) > (row.at_ms, row.attempts) => {}
            _ => {
                latest.insert(row.receipt_id.clone(), row);
            }
        }
    }
    Ok(latest)
}

/// An outcome row for a person: what happened, when, and HubSpot's word when it failed (or
/// what a sent row notes, such as a release after HubSpot's hold ended).
fn describe(o: &OutcomeRow) -> String {
    let at = format_minute(o.at_ms);
    let message = (o.message.as_deref()).map_or(String::new(), |m| format!(": {m}"));
    let why = |what: &str| {
        let status = o.http_status.map_or(String::new(), |s| format!(" ({s})"));
        format!("{what}{status} at {at}{message}")
    };
    match o.status {
        Status::Attempting => format!("a call was under way at {at}"),
        Status::Retrying => {
            let next = o.retry_at_ms.map_or(String::new(), |t| {
                format!(", again at {}", format_minute(t))
            });
            format!("{}{next}", why("failed, retrying"))
        }
        Status::Failed => why("failed for good"),
        Status::Enrolled | Status::Listed | Status::Completed => {
            format!("{} at {at}{message}", o.status.as_str())
        }
        // Its message is the call it would have made.
        Status::DryRun => format!("{} at {at}", o.status.as_str()),
    }
}

/// A 7×24 heat map of slot scores, darker = likelier; two columns per hour, each label over
/// the first column of its hour.
fn heat_map(scores: &[f64], best: Option<&str>) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let max = scores.iter().cloned().fold(0.0, f64::max).max(1e-12);
    let mut out = String::from("      UTC  ");
    for h in (0..24).step_by(3) {
        out.push_str(&format!("{h:<6}"));
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    for (d, day) in ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        .iter()
        .enumerate()
    {
        out.push_str(&format!("      {day}  "));
        for h in 0..24 {
            let v = scores[d * 24 + h] / max;
            let shade = SHADES[((v * 4.0).round() as usize).min(4)];
            out.push(shade);
            out.push(shade);
        }
        out.push('\n');
    }
    let best = best.unwrap_or("none (every slot scores the same)");
    out.push_str(&format!(
        "      ░ ▒ ▓ █ = about 1/4, 1/2, 3/4, all of the best slot's score; best slot: {best}\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asked by id, the email is the latest that a receipt carries: a later post of the id
    /// alone left none, and a contact with history was shown as new (an audit).
    #[test]
    fn an_id_is_looked_up_with_the_latest_email_its_receipts_carry() {
        use crate::datasets::plan::{self, PlanRow};
        let dir = tempfile::tempdir().unwrap();
        let row = |id: &str, email: Option<&str>, at: i64| PlanRow {
            receipt_id: id.into(),
            webhook_id: "w".into(),
            webhook_type: crate::config::WebhookType::UpdateOnly,
            contact_id: Some(7701),
            email: email.map(str::to_string),
            received_at_ms: at,
            due_at_ms: at,
            slot: None,
            reason: String::new(),
            planned_at_ms: at,
            callback_id: None,
            holdout: false,
            time_zone: None,
            hold_ends_ms: None,
            portal_id: None,
            holdout_share: None,
        };
        let rows = [row("r1", Some("ann@example.com"), 1), row("r2", None, 2)];
        plan::dataset(dir.path())
            .unwrap()
            .write_part(ulid::Ulid::generate(), &mut plan::frame(&rows).unwrap())
            .unwrap();
        let found = receipts(dir.path(), "7701").unwrap();
        assert_eq!(found.total, 2);
        assert_eq!(found.posted.email.as_deref(), Some("ann@example.com"));
    }

    /// Each hour label stands over its own hour's cells.
    #[test]
    fn heat_map_labels_sit_over_their_hours() {
        let mut scores = [0.0; SLOTS];
        for h in [0, 12, 21] {
            scores[24 + h] = 1.0; // Tuesday
        }
        let best = best_slot(&scores).map(|s| slot_name(s as u8));
        let map = heat_map(&scores, best.as_deref());
        let lines: Vec<&str> = map.lines().collect();
        // The header is ASCII: byte offsets are columns.
        let header = format!("{} ", lines[0]);
        let label = |h: &str| header.find(&format!(" {h} ")).unwrap() + 1;
        let tuesday: Vec<char> = lines[2].chars().collect();
        assert!(lines[2].trim_start().starts_with("Tue"), "{map}");
        let full: Vec<usize> = (0..tuesday.len()).filter(|i| tuesday[*i] == '█').collect();
        assert_eq!(full.len(), 6, "{map}");
        for (k, h) in ["0", "12", "21"].iter().enumerate() {
            assert_eq!(full[2 * k], label(h), "hour {h}:\n{map}");
            assert_eq!(full[2 * k + 1], full[2 * k] + 1);
        }
        assert!(map.contains("best slot: Tue 00:00"), "{map}");
    }
}
