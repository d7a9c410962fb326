//! The report as it reads: the notes on what was left out and why, and the table.

use super::compare::{MIN_CONTACTS, NoVerdict, Share, Verdict};
use super::report::Lift;
use crate::time::{DAY_MS, format_minute};

impl Lift {
    /// What a reader needs to know to read the figures: what was left out, why a group has
    /// nothing to show, and whether the events are current.
    pub fn explain(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.untimed_receipts > 0 {
            // Named, the webhook also went at a chosen time: naming it is no A/A check (an
            // audit: the hint asked for what was done).
            let hint = match self.webhook {
                Some(_) => "its timed receipts are compared alone",
                None => "name such a webhook with --webhook for an A/A check",
            };
            notes.push(format!(
                "{} receipts of IMMEDIATE and UPDATE_ONLY deliveries left out: both groups go at receipt ({hint})",
                self.untimed_receipts
            ));
        }
        if self.holdout_receipts == 0 {
            notes.push(match self.since_ms {
                // A share is set, and chance has drawn none yet (an audit: the note asked
                // for a share that was set; with --since it said none were taken since).
                _ if self.optimized_receipts > 0 => format!(
                    "none of {} receipts{} held out yet: each is held out at random, with the probability its webhook's `holdout` share sets",
                    self.optimized_receipts,
                    self.since_ms
                        .map_or(String::new(), |t| format!(" since {}", format_minute(t)))
                ),
                Some(since) => format!(
                    "no receipts of a webhook or action holding some out since {}",
                    format_minute(since)
                ),
                // Said the same whether a share is set or not (it asked for a share that
                // was set, before the first receipt: an audit).
                None => "nothing held out yet: a webhook or action holds receipts out once its `holdout` share is set (`holdout = 0.1`) and it takes receipts".into(),
            });
        } else if self.holdout_sends == 0 || self.optimized_sends == 0 {
            notes.push("a group has receipts and no sends yet: a receipt counts once HubSpot took it (enrolled, listed or released); one recorded as a dry run, waiting or failed is not a send".into());
        }
        if let Some(n) = self
            .metrics
            .iter()
            .map(|m| m.too_few_contacts)
            .max()
            .filter(|&n| n > 0)
        {
            notes.push(format!(
                "{n} webhook{} (each at each holdout share it had) left out of some comparisons: fewer than {MIN_CONTACTS} contacts in a group, too few to tell their difference from chance",
                if n == 1 { "" } else { "s" }
            ));
        }
        for u in &self.unsent {
            notes.push(format!(
                "{}: counted up to its receipts of {}, when the first of its {} not yet sent (waiting, retrying, held, or not planned while the profiles cannot be built) was received: the receipts after a receipt not done with count, in both groups, once it is sent or fails",
                u.webhook,
                format_minute(u.first_received_ms),
                u.receipts
            ));
        }
        for c in &self.unimported {
            notes.push(format!(
                "no engagement of connector {c}'s account is imported yet (serve's scheduled import, or `sendtime import hubspot --connector {c}`, has not completed once): its sends count as not engaged until one does"
            ));
        }
        for c in &self.imported_until {
            notes.push(format!(
                "connector {} is in dry run, so `serve` imports none of its engagement: it is known up to {}, and any live sends it made before count as not engaged after that (pass --as-of {} to count only what is known, or import it with `sendtime import hubspot --connector {}`)",
                c.connector,
                format_minute(c.until_ms),
                crate::time::format_rfc3339(c.until_ms),
                c.connector
            ));
        }
        if self.as_of_newest_event {
            notes.push(format!(
                "as of the newest imported event, {}: `serve` imports no engagement ([import] is off), so none later is known; import newer events, or pass --as-of",
                format_minute(self.as_of_ms)
            ));
        }
        if self
            .metrics
            .iter()
            .any(|m| m.no_verdict == Some(NoVerdict::LostUnequally))
        {
            let (o, h) = (self.optimized_lost, self.holdout_lost);
            notes.push(format!(
                "no verdict where the losses could explain it: {} of {} optimized receipts and {} of {} held-out ones done with failed, never sent (over every webhook); in the webhooks such a metric compares, each with itself, too different for chance, so the groups' sends no longer compare like with like (an optimized receipt waits longer for a contact to be deleted or unsubscribed); the figures stand",
                o.failed, o.receipts, h.failed, h.receipts
            ));
        }
        if self.quarantined > 0 {
            notes.push(format!(
                "{} parts of the plan, outcomes or events are in quarantine, set aside as unreadable: their receipts, sends and events are missing from these figures (README, *Data layout*)",
                self.quarantined
            ));
        }
        if self.no_events && self.unimported.is_empty() {
            notes.push("no engagement event is imported yet: every send counts as not engaged (`sendtime import hubspot` or `import csv`, or `serve`'s scheduled import, brings them)".into());
        }
        if let Some(newest) = self.newest_event_ms.filter(|t| *t < self.as_of_ms - DAY_MS) {
            notes.push(format!(
                "the newest imported event is from {}: import the events since, or pass --as-of, or later windows count as not engaged",
                format_minute(newest)
            ));
        }
        notes
    }

    /// As `sendtime report lift` prints it.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "lift of {}{}, as of {}: {} optimized sends (of {} receipts), {} held out (of {})",
            self.webhook
                .as_deref()
                .unwrap_or("every webhook and action"),
            self.since_ms
                .map_or(String::new(), |t| format!(" since {}", format_minute(t))),
            format_minute(self.as_of_ms),
            self.optimized_sends,
            self.optimized_receipts,
            self.holdout_sends,
            self.holdout_receipts
        );
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        let _ = writeln!(
            out,
            "\n{:<22} {:>20} {:>20} {:>28}",
            "", "optimized", "held out", "difference (95% interval)"
        );
        for m in &self.metrics {
            let pct = |s: &Share| format!("{:.1}% of {}", s.rate * 100.0, s.sends);
            let diff = match (m.difference, m.interval, m.no_verdict) {
                (Some(d), Some([lo, hi]), _) => {
                    format!("{} pts [{}, {}]", points(d), points(lo), points(hi))
                }
                (_, _, Some(why)) => why.text(),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<22} {:>20} {:>20} {:>28}",
                format!("{} within {} h", m.metric.as_str(), m.window_hours),
                pct(&m.optimized),
                pct(&m.holdout),
                diff
            );
        }
        let _ = writeln!(out);
        for m in &self.metrics {
            let what = format!("{} within {} h", m.metric.as_str(), m.window_hours);
            let points = points(m.difference.unwrap_or_default());
            let _ = match (m.verdict, m.no_verdict) {
                (Some(Verdict::OptimizedBetter), _) => writeln!(
                    out,
                    "{what}: optimized sends did better ({points} points; the interval excludes zero)"
                ),
                (Some(Verdict::HoldoutBetter), _) => writeln!(
                    out,
                    "{what}: held-out sends did better ({points} points; the interval excludes zero)"
                ),
                (None, Some(NoVerdict::NoWindowEnded)) => writeln!(
                    out,
                    "{what}: no verdict: no send's window has ended by {}; the first ends {}",
                    format_minute(self.as_of_ms),
                    // None: every send waits behind a receipt not yet done with (an audit:
                    // "later" named no cause).
                    m.first_window_end_ms.map_or(
                        "once the receipts not yet sent (above) are sent or fail".into(),
                        format_minute
                    )
                ),
                // A narrow interval around zero says there is little to find, not "send more".
                (None, Some(NoVerdict::IncludesZero)) => {
                    let [lo, hi] = m.interval.unwrap_or_default();
                    writeln!(
                        out,
                        "{what}: no verdict (the interval includes zero): the difference lies between {} and {} points; more sends would narrow that",
                        self::points(lo),
                        self::points(hi)
                    )
                }
                // More sends would not even out what the groups lost (an audit: it said so).
                (None, Some(why @ NoVerdict::LostUnequally)) => writeln!(
                    out,
                    "{what}: no verdict ({}): more sends will not settle it while the groups lose unequal shares",
                    why.text()
                ),
                (None, why) => writeln!(
                    out,
                    "{what}: no verdict ({}): more sends are needed to tell",
                    why.map_or(String::new(), NoVerdict::text)
                ),
            };
        }
        let _ = writeln!(
            out,
            "\nA receipt counts once its windows, from its receipt plus the longest wait of its webhook's sends, ended before {}, up to which events are known (imported).",
            format_minute(self.as_of_ms)
        );
        let _ = writeln!(
            out,
            "Only webhooks with a holdout are compared, each with itself at each holdout share it had (weighted by its sends; receipts planned before the share was recorded: those between the first and last held-out ones); a send's window ends at the contact's next send; the interval resamples contacts, since one contact's sends are not independent."
        );
        out
    }
}

/// Percentage points of a share, signed, with one decimal ("+0.0", never "-0.0").
pub(super) fn points(share: f64) -> String {
    format!("{:+.1}", (share * 1000.0).round() / 10.0 + 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_signed_and_never_negative_zero() {
        assert_eq!(points(-0.00001), "+0.0");
        assert_eq!(points(0.0), "+0.0");
        assert_eq!(points(-0.0042), "-0.4");
        assert_eq!(points(0.125), "+12.5");
    }
}
