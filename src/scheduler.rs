//! Runs the dispatcher's ticks inside `serve` at the times of `[scheduler] cron`.
//!
//! This is a small loop over `croner` rather than tokio-cron-scheduler: that crate's repeated
//! jobs can stop firing for good once their computed next tick drifts into the past under load
//! (mvniekerk/tokio-cron-scheduler#113, open), and it runs a job again while the previous run
//! is still going unless the job guards itself. Here the next fire time is recomputed from the
//! wall clock after every tick (no accumulated drift, a clock jump corrects itself), ticks run
//! one after another in one task (they cannot overlap), and a tick that overruns makes the
//! scheduled ticks it covered count as skipped, logged and in metrics. Skipping loses nothing:
//! a tick takes everything due by its own "now". The last fire time a tick ran for is kept
//! (`{data_dir}/state/scheduler.json`): a start after a fire that was missed while `serve` was
//! down ticks at once, so a sparse cron (a tick a day) does not wait for its next time, and so
//! does a start without that record, or with one unreadable or ahead of the clock (whether a
//! fire was missed is unknown).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use tokio::sync::watch;

use crate::config::ConfigHandle;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;

/// The longest the scheduler sleeps before looking at the config and the clock again.
pub const RECHECK: Duration = Duration::from_secs(60);
/// How far the clock may step back and the scheduler still wait for the fire time after the
/// last it ran: a tick is not run again for a step of seconds, nor held an hour by a long one.
const STEP_BACK_WAITED: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// Whether `last`, a fire time kept, lies further ahead of `now` than a step back is waited
/// ([`STEP_BACK_WAITED`]): the clock went back (NTP correcting a wrong boot time), and the
/// next fire is planned from now, not from it. The dispatcher's ticks and the scheduled
/// import alike (the import waited out the whole step; an audit).
pub(crate) fn ahead_of_the_clock(last: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    last > now + STEP_BACK_WAITED
}

/// The first fire time strictly after `after`.
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> DateTime<Utc> {
    cron.find_next_occurrence(&after, false)
        .unwrap_or(after + chrono::Duration::seconds(60))
}

/// How much longer than `cron` planned the gap from the end of one tick to the start of the
/// next was, each given as (the dispatcher's clock, the system clock) in epoch ms, the first
/// running `speed` times faster: the system clock past the cron's next fire after the first
/// (a host suspended), or the dispatcher's clock moved on further than the system clock's (the
/// demo's or a test's clock stepped forward). A sparse cron's gaps are planned, and so is the
/// wait after a tick that overran (the scheduler plans the next fire from its end).
pub fn gap_beyond(cron: &Cron, last: (i64, i64), now: (i64, i64), speed: i64) -> i64 {
    let ((then, then_wall), (now, wall)) = (last, now);
    let planned = DateTime::from_timestamp_millis(then_wall)
        .map_or(then_wall, |t| next_after(cron, t).timestamp_millis());
    let stepped = (now - then) - (wall - then_wall) * speed;
    (wall - planned).max(stepped)
}

fn last_fire_path(data_dir: &Path) -> PathBuf {
    crate::store::state_dir(data_dir).join("scheduler.json")
}

/// The last fire time a tick ran for, as kept.
#[derive(serde::Serialize, serde::Deserialize)]
struct LastFire {
    last_fire_ms: i64,
}

/// The last fire time kept; none when there is no record (a new data folder, or one last run
/// by a version that kept none), it is unreadable, or it is ahead of the clock (kept while the
/// clock ran ahead: a fire missed since would wait for the next), so whether a fire was
/// missed is unknown.
fn read_last_fire(data_dir: &Path) -> Option<DateTime<Utc>> {
    let path = last_fire_path(data_dir);
    let bytes = std::fs::read(&path).ok()?;
    let kept = serde_json::from_slice::<LastFire>(&bytes)
        .ok()
        .and_then(|k| DateTime::from_timestamp_millis(k.last_fire_ms));
    let Some(kept) = kept else {
        tracing::warn!(
            path = %path.display(),
            "the last tick's fire time is unreadable: ticking at once, in case a fire was missed while stopped"
        );
        return None;
    };
    if ahead_of_the_clock(kept, Utc::now()) {
        tracing::warn!(
            path = %path.display(),
            "the last tick's fire time is ahead of the clock (it went back): ticking at once, in case a fire was missed while stopped"
        );
        return None;
    }
    Some(kept)
}

fn write_last_fire(data_dir: &Path, fire: DateTime<Utc>, errors: &mut crate::throttle::Throttle) {
    let kept = LastFire {
        last_fire_ms: fire.timestamp_millis(),
    };
    let bytes = serde_json::to_vec(&kept).expect("plain values");
    let path = last_fire_path(data_dir);
    let written = crate::store::write_durably(&path, &bytes);
    if let Err(e) = written
        && let Some(suppressed) = errors.due()
    {
        tracing::warn!(
            suppressed,
            "cannot record the tick's fire time (a fire missed while stopped may not be caught up): {e}"
        );
    }
}

/// Run ticks until `stop` turns true, the dispatcher answering contact lookups between them
/// (and as its ticks wait on calls); the running tick finishes (and records its calls) first.
/// Returns the dispatcher so the caller can close it.
pub async fn run(
    config: ConfigHandle,
    mut dispatcher: Dispatcher,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Dispatcher> {
    let mut last_fire: Option<DateTime<Utc>> = None;
    // The fire time being waited for, kept across a lookup or a once-a-minute look: worked out
    // again from a later now, it would be skipped.
    let mut waiting: Option<DateTime<Utc>> = None;
    let mut cron_text = String::new();
    let data_dir = dispatcher.data_dir().to_path_buf();
    // A full disk fails the record at every tick: said once a minute.
    let mut fire_errors = crate::throttle::Throttle::default();
    // A fire time passed since the last tick ran (serve was down then), or, with no record of
    // one, it may have: tick at once. An extra tick sends nothing that is not due.
    let last_run = read_last_fire(&data_dir);
    let mut catch_up =
        last_run.is_none_or(|l| next_after(&config.load().scheduler.schedule, l) <= Utc::now());
    loop {
        let snapshot = config.load_full();
        // Validated with the config: it parses and fires after now.
        let cron = &snapshot.scheduler.schedule;
        if snapshot.scheduler.cron != cron_text {
            tracing::info!(
                cron = %snapshot.scheduler.cron,
                next = %crate::time::format_rfc3339(next_after(cron, Utc::now()).timestamp_millis()),
                "scheduler: ticks follow this cron expression"
            );
            cron_text = snapshot.scheduler.cron.clone();
            waiting = None;
        }
        let now = Utc::now();
        // The wall clock stepped back (NTP correcting a wrong boot time) further than
        // [`STEP_BACK_WAITED`]: schedule from now, not from a fire time far in the future. A
        // smaller step waits for the fire time after the last (an earlier version ran the last
        // again after a step of seconds; an audit found it).
        if last_fire.is_some_and(|l| ahead_of_the_clock(l, now)) {
            tracing::warn!("the clock went back: scheduling from now");
            last_fire = None;
        }
        if std::mem::take(&mut catch_up) {
            if last_run.is_some() {
                tracing::info!("scheduler: a scheduled tick was missed while stopped; ticking now");
            } else {
                tracing::info!(
                    "scheduler: no usable record of the last tick (a new data folder, the first start of this version, or a record said above to be unreadable or ahead of the clock); ticking now"
                );
            }
            waiting = Some(now);
        }
        let from = last_fire.map_or(now, |l| l.max(now));
        // A kept fire time is never later than the next one from now (the clock went back).
        let fire = match waiting {
            Some(w) if w <= next_after(cron, now) => w,
            _ => next_after(cron, from),
        };
        waiting = Some(fire);
        // Wake at least once a minute, so a changed cron expression (a reload) or a clock
        // step is seen then, not at the old schedule's next fire.
        let wait = (fire - now).to_std().unwrap_or_default().min(RECHECK);
        if *stop.borrow() {
            break;
        }
        // With no outcome writer (it panicked) no call can be recorded, so none is made:
        // serve stops, so that its supervisor starts it again.
        anyhow::ensure!(
            dispatcher.records(),
            "the outcome writer stopped: no call can be recorded, so none is made"
        );
        let lookup = tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            _ = stop.changed() => break,
            lookup = dispatcher.lookups.next() => Some(lookup),
        };
        if let Some(lookup) = lookup {
            dispatcher.answer(&config.load(), lookup);
            continue;
        }
        // A timer can wake a hair early: never run the same fire time twice, never early.
        let woke = Utc::now();
        if woke < fire {
            let early = (fire - woke).to_std().unwrap_or_default();
            if early > Duration::from_secs(1) {
                continue; // the once-a-minute look
            }
            tokio::time::sleep(early).await;
        }
        waiting = None;
        last_fire = Some(fire);
        let config_now: Arc<_> = config.load_full();
        let started = std::time::Instant::now();
        let ticked = dispatcher.tick(&config_now, stop.clone()).await;
        // Only a tick that ran whole counts as run: one that failed or was cut short by a
        // stop is caught up at the next start.
        let ran = ticked.is_ok() && !*stop.borrow();
        match ticked {
            Ok(report) => {
                if report.due > 0 || report.planned > 0 {
                    tracing::info!("tick finished: {report}");
                } else {
                    tracing::debug!("tick finished: {report}");
                }
            }
            Err(e) => tracing::error!("tick failed (the next tick tries again): {e:#}"),
        }
        // By the monotonic clock: a wall-clock jump during the tick is not a slow tick.
        let finished = fire + chrono::Duration::from_std(started.elapsed()).unwrap_or_default();
        let mut skipped = 0usize;
        let mut t = fire;
        while skipped < 100_000 {
            t = next_after(cron, t);
            if t > finished {
                break;
            }
            skipped += 1;
        }
        if skipped > 0 {
            metrics.ticks_skipped.inc_by(skipped as u64);
            tracing::warn!(
                skipped,
                took_s = (finished - fire).num_milliseconds() as f64 / 1000.0,
                "tick ran past its next scheduled time: {skipped} scheduled tick(s) skipped (ticks never overlap; the next tick takes everything due by then)"
            );
            last_fire = Some(finished);
        }
        if ran {
            // Off the runtime's worker (an fsync on a hung disk held one of its two threads,
            // and the posts and admin requests queued on it; an audit), as planning is.
            tokio::task::block_in_place(|| {
                write_last_fire(&data_dir, last_fire.unwrap_or(fire), &mut fire_errors)
            });
        }
    }
    tracing::info!("scheduler stopped");
    Ok(dispatcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    /// A sparse cron's gaps are planned; a host suspended, a clock stepped forward are not; a
    /// demo's clock running 720 times faster is.
    #[test]
    fn a_gap_is_measured_against_what_the_cron_planned() {
        let parse = |e: &str| -> Cron {
            let parser = croner::parser::CronParser::builder()
                .seconds(croner::parser::Seconds::Required)
                .build();
            parser.parse(e).unwrap()
        };
        let (every_15, every_second) = (parse("0 */15 * * * *"), parse("* * * * * *"));
        // 2026-11-02 10:00:00 UTC, a fire of both.
        let t = 1_794_045_600_000 - 5 * 24 * 60 * MINUTE;
        let tick = |at: i64| (at, at);
        // The next fire, a few seconds late: nothing unplanned.
        let gap = gap_beyond(&every_15, tick(t), tick(t + 15 * MINUTE + 3_000), 1);
        assert!(gap <= 3_000, "{gap}");
        // Suspended eight hours.
        let gap = gap_beyond(&every_15, tick(t), tick(t + 8 * 60 * MINUTE), 1);
        assert_eq!(gap, 8 * 60 * MINUTE - 15 * MINUTE);
        // The dispatcher's clock stepped a day on within a second.
        let gap = gap_beyond(&every_second, tick(t), (t + 24 * 60 * MINUTE, t + 1_000), 1);
        assert!(gap > 23 * 60 * MINUTE, "{gap}");
        // The demo's clock: 720 times the system clock's second.
        let gap = gap_beyond(&every_second, tick(t), (t + 720_000, t + 1_000), 720);
        assert!(gap <= 0, "{gap}");
    }
}
