//! `sendtime demo`: the whole loop with no account and no setup. A temporary data folder gets
//! synthetic engagement for 2,000 contacts; a HubSpot stand-in runs in-process; a simulated
//! workflow posts signed contacts to a webhook of every type and executes the workflow action;
//! `serve` runs on it with a clock `speed` times faster, ticking every second, so a day of
//! sends passes in minutes. A fifth of the timed webhooks' and the action's contacts are held
//! out, and the contacts open the stand-in's mails by the habits their history was drawn
//! from, so the dashboard's lift has figures once the windows of the first receipts end
//! ([`first_lift_minutes`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::clock::Clock;
use crate::config::{Overrides, Server};
use crate::hubspot::EmailEvent;
use crate::hubspot::standin::{DEFAULT_TOKEN, Mail, Options, StandIn, WorkflowRun};
use crate::model::synth;
use crate::receiver::signature::sign_v2;
use crate::time::now_ms;

const SECRET: &str = "sendtime-demo-secret";
const PUBLIC_URL: &str = "https://demo.sendtime.invalid";
const CONTACTS: u64 = 2_000;
/// The connector's pace: the stand-in's limit, a Professional account's burst limit (at the
/// default 100 a tick of the demo's best hours ran past the next, a warning each time).
const REQUESTS_PER_10S: u32 = crate::hubspot::standin::DEFAULT_LIMIT_PER_10S;
const WEBHOOKS: [(&str, &str, &str); 5] = [
    (
        "nurture",
        "NEXT_24_HOURS",
        "workflow_id = 101\nholdout = 0.2",
    ),
    (
        "win-back",
        "NEXT_WEEK_FREQUENCY_OPTIMIZED",
        "workflow_id = 102\nholdout = 0.2",
    ),
    ("webinar", "NEXT_WEEK", "workflow_id = 103\nholdout = 0.2"),
    ("fatigue", "IMMEDIATE", "workflow_id = 104"),
    ("newsletter", "UPDATE_ONLY", "list_id = \"987\""),
];

/// Run the demo until Ctrl-C (or SIGTERM). `listen` and `admin_listen` as for `serve`.
pub fn run(
    speed: u32,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    // The config names its secrets by environment variable, as every config does.
    // SAFETY: first thing the demo does, while the process has one thread (nothing has
    // spawned one yet: no runtime, no thread pool), so nothing reads the environment meanwhile.
    unsafe {
        std::env::set_var("SENDTIME_DEMO_SECRET", SECRET);
        std::env::set_var("SENDTIME_DEMO_TOKEN", DEFAULT_TOKEN);
    }
    // First: a port in use is the likeliest way for the demo to fail, and it should fail
    // before it prints the addresses or leaves a folder behind. Port 0 becomes the port the
    // system gives, so the addresses printed and posted to are real ones.
    // Both held until both are bound: one port given to both was taken twice, and `serve`
    // refused it after the data was made (an audit).
    let bind = |addr: SocketAddr, flag: &str| {
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen on {addr}: choose another with {flag}"))
    };
    let admin = admin_listen.unwrap_or(Server::DEFAULT_ADMIN_LISTEN);
    // Its config has no admin token, which `serve` needs off this machine: said here, not
    // as advice to edit a config the demo makes and deletes (an audit).
    anyhow::ensure!(
        admin.ip().is_loopback(),
        "--admin-listen {admin}: the demo's admin surface has no token, so it listens on this machine only (127.0.0.1 or [::1]); from another machine, forward its port (e.g. ssh -L 8081:127.0.0.1:8081 HOST)"
    );
    let listen = listen.unwrap_or(Server::DEFAULT_LISTEN);
    // Its own two listeners on one port: the second bind said the port was in use, sending
    // the user after some other process (an audit).
    anyhow::ensure!(
        !crate::config::share_a_port(listen, admin),
        "--listen {listen} and --admin-listen {admin} share a port: the demo listens on both (the admin surface is never on the public listener); give one of them another port"
    );
    let public = bind(listen, "--listen")?;
    let private = bind(admin, "--admin-listen")?;
    let (listen, admin) = (public.local_addr()?, private.local_addr()?);
    drop((public, private));
    let dir = std::env::temp_dir().join(format!("sendtime-demo-{}", ulid::Ulid::generate()));
    let handover = stop_early(dir.clone())?;
    let data = dir.join("data");
    let folder = Temporary(dir);
    // Its folder made under the early stop's watch too: a signal between the folder and its
    // `data` ended the process with 1 (the failed `data`), not 130 (a CI run).
    let result = std::fs::create_dir_all(&data)
        .with_context(|| format!("cannot create {}", folder.0.display()))
        .and_then(|()| run_in(&folder.0, data, speed, listen, admin, handover.clone()));
    // Stopped before it was ready: nothing writes in the folder any more, so it goes for good
    // (removed from the signal's thread while this one wrote, it was made again: a CI run).
    if handover.stopping() {
        let dir = folder.0.clone();
        std::mem::forget(folder);
        remove_folder(&dir);
        std::process::exit(130);
    }
    result
}

/// How long a signal before the demo is ready waits for the demo's thread to stop (at its
/// next step, or as `serve` takes the signals) and remove its folder, before it removes it
/// and ends the process itself.
const EARLY_STOP_WAIT: Duration = Duration::from_secs(20);

/// Until `serve` handles them, a signal stops the demo, its folder removed, with 130: by
/// default it ended the process and left the folder, while the demo generated its data and
/// started (an audit).
fn stop_early(dir: PathBuf) -> anyhow::Result<Arc<crate::serve::Handover>> {
    let handover = Arc::new(crate::serve::Handover::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut signals = rt.block_on(async { crate::serve::Signals::install(true) })?;
    let early = handover.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let why = signals.next().await;
            if !early.stop() {
                return;
            }
            // Said without `eprintln!`, which panics on a stderr gone with the terminal or a
            // pipe (`| tee`): the thread ended before the exit, and the demo hung for good,
            // deaf to further signals (an audit).
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = writeln!(err, "{why} before the demo was ready: stopping");
            // After the write, which a full pipe may hold: a repeat of this signal seen late
            // would pass for a second.
            let first = tokio::time::Instant::now();
            // The demo's thread did not stop in time (a step that takes longer), or a second
            // signal: the folder is removed under it.
            tokio::select! {
                _ = tokio::time::sleep(EARLY_STOP_WAIT) => {}
                _ = signals.next_apart_from(first) => {}
            }
            remove_folder(&dir);
            std::process::exit(130);
        })
    });
    Ok(handover)
}

/// Remove the demo's folder, tried a few times, as serve does (something may be writing in
/// it); said without `eprintln!` (see [`stop_early`]).
fn remove_folder(dir: &std::path::Path) {
    if !(0..3).any(|_| std::fs::remove_dir_all(dir).is_ok() || !dir.exists()) {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "cannot remove the demo's folder {}",
            dir.display()
        );
    }
}

/// The demo's folder: a run leaves nothing behind, whether it ran, failed to start or
/// panicked.
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("cannot remove the demo's folder {}: {e}", self.0.display());
        }
    }
}

/// The demo in `dir`, its data in `data`, until Ctrl-C.
fn run_in(
    dir: &std::path::Path,
    data: PathBuf,
    speed: u32,
    listen: SocketAddr,
    admin: SocketAddr,
    handover: Arc<crate::serve::Handover>,
) -> anyhow::Result<()> {
    let spec = synth::Spec {
        contacts: CONTACTS as usize,
        events: 60_000,
        seed: 1,
        end_ms: now_ms(),
        habits: true,
    };
    let events = synth::generate(&data, spec)?;
    anyhow::ensure!(!handover.stopping(), "stopped before the demo was ready");
    let clock = Clock::Scaled {
        origin_ms: now_ms(),
        speed: speed.max(1),
    };
    // The stand-in and the simulated workflow run on their own small runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Its account has the demo's contacts and no others, as HubSpot's would, and its time
    // is the dispatcher's (the events it serves, the holds of the action).
    let standin = rt.block_on(StandIn::start(Options {
        known_records_only: true,
        // Nothing reads it here: a million requests were some 200 MB after three days.
        log_limit: 10_000,
        clock: clock.clone(),
        mail: Some(mail(spec)),
        ..Options::default()
    }))?;
    for id in 1..=CONTACTS {
        standin.add_contact(&email(id), id);
    }
    let config = write_config(dir, &standin.url(), listen)?;
    let ready = format!(
        "sendtime demo: {events} engagement events of {CONTACTS} contacts in {}\n\
         the HubSpot stand-in at {}; a simulated workflow posts to http://{listen}\n\
         dashboard: http://{admin}/   status: http://{admin}/status   metrics: http://{admin}/metrics\n\
         the clock runs {speed}x; Ctrl-C stops it. A fifth of the timed webhooks' and the action's contacts are \
         held out (sent at receipt): the dashboard's lift compares them with the rest after about {} minutes",
        data.display(),
        standin.url(),
        first_lift_minutes(speed),
    );
    rt.spawn(simulate(standin, listen, ready));
    let overrides = Overrides {
        data_dir: Some(data),
        listen: Some(listen),
        admin_listen: Some(admin),
    };
    let session = crate::serve::Session {
        hangup_stops: true,
        scratch: Some(dir.to_path_buf()),
        signals: Some(handover),
    };
    let result = crate::serve::run(config, overrides, clock, session);
    rt.shutdown_background();
    result
}

/// Real minutes until the lift has its first figures: a receipt counts once a day's window
/// and the 24 hours after it end (on the demo's clock; the 72 hours' figures come later),
/// with the hours HubSpot may record an event late, and once the import (every minute) has
/// read that far.
fn first_lift_minutes(speed: u32) -> u64 {
    let hours = 24 + 24 + crate::import::hubspot::OVERLAP.as_secs() / 3600;
    (hours * 3600 / u64::from(speed.max(1)) + 60).div_ceil(60)
}

fn email(id: u64) -> String {
    format!("contact{id}@example.com")
}

/// How the contacts generated with `spec` answer the stand-in's mails: by their habits, so
/// a mail sent at a contact's reading time is opened more often than one sent at receipt.
fn mail(spec: synth::Spec) -> Mail {
    let contacts = synth::Responder::new(spec, synth::Response::Habit);
    let sent = AtomicU64::new(0);
    Mail(Arc::new(move |vid, at_ms| {
        let n = sent.fetch_add(1, Ordering::Relaxed);
        let events = i64::try_from(vid)
            .ok()
            .and_then(|id| contacts.respond(id, at_ms, n))
            .unwrap_or_default();
        (events.into_iter().enumerate())
            .map(|(k, e)| EmailEvent {
                id: format!("demo-{n}-{k}"),
                created: e.at_ms,
                kind: e.kind.as_str().to_string(),
                recipient: Some(email(vid)),
                email_campaign_id: None,
                filtered_event: e.filtered,
                extra: Default::default(),
            })
            .collect()
    }))
}

fn write_config(
    dir: &std::path::Path,
    api_base: &str,
    listen: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        "version = 1\n[server]\npublic_url = \"{PUBLIC_URL}\"\nlisten = \"{listen}\"\n\
         [scheduler]\ncron = \"* * * * * *\"\n[import]\ncron = \"0 * * * * *\"\n\
         [[connector]]\nid = \"demo\"\nportal_id = 62515\napp_id = 1\n\
         client_secret_env = \"SENDTIME_DEMO_SECRET\"\naccess_token_env = \"SENDTIME_DEMO_TOKEN\"\n\
         api_base = \"{api_base}\"\nquiet_hours = \"22:00-07:00\"\ntime_zone = \"UTC\"\n\
         requests_per_10s = {REQUESTS_PER_10S}\n"
    );
    for (id, kind, target) in WEBHOOKS {
        text.push_str(&format!(
            "[[webhook]]\nid = \"{id}\"\ntype = \"{kind}\"\n{target}\n"
        ));
    }
    text.push_str("[[action]]\nid = \"send-time\"\nholdout = 0.2\n");
    let path = dir.join("webhooks.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Once sendtime answers, print `ready` (its addresses); then post a signed contact to a
/// webhook every 200 ms, round the webhooks, and execute the workflow action for a contact
/// every second. (Started at once, it logged a refused post at each start, and the addresses
/// printed were refused for the first seconds.)
async fn simulate(standin: StandIn, listen: SocketAddr, ready: String) {
    // sendtime is on this machine: no proxy from the environment (HTTP_PROXY) can reach it.
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client without options builds");
    let healthz = format!("http://{listen}/healthz");
    while !http
        .get(&healthz)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{ready}");
    let mut failures = crate::throttle::Throttle::default();
    let action_url = format!("{PUBLIC_URL}/actions/send-time");
    let send_to = format!("http://{listen}/actions/send-time");
    let mut n: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        n += 1;
        let id = 1 + (n * 7919) % CONTACTS;
        let (webhook, _, _) = WEBHOOKS[(n % WEBHOOKS.len() as u64) as usize];
        // Numbered: after a pass over every contact, the same body again would be a replay.
        let body = format!(
            r#"{{"vid": {id}, "portal-id": 62515, "demo-post": {n}, "properties": {{"email": {{"value": "{}"}}}}}}"#,
            email(id)
        );
        let path = format!("/hooks/{webhook}");
        let sig = sign_v2(
            SECRET.as_bytes(),
            "POST",
            &format!("{PUBLIC_URL}{path}"),
            body.as_bytes(),
        );
        let posted = http
            .post(format!("http://{listen}{path}"))
            .header("X-HubSpot-Signature", sig)
            .header("X-HubSpot-Signature-Version", "v2")
            .body(body)
            .send()
            .await;
        if let Err(e) = posted
            && let Some(suppressed) = failures.due()
        {
            tracing::warn!(
                suppressed,
                "the simulated workflow cannot post to sendtime: {e}"
            );
        }
        if n.is_multiple_of(5) {
            let run = WorkflowRun {
                action_url: &action_url,
                send_to: &send_to,
                client_secret: SECRET,
                portal_id: 62515,
                workflow_id: 123,
                delivery_type: "NEXT_24_HOURS",
            };
            // The contacts `fatigue` sends at receipt (each webhook has its own: 2,000 is a
            // multiple of 5), not nurture's at the same instant: both optimized, the two sends
            // would go together and share each open in the lift (a review).
            let id = 1 + ((n + 3) * 7919) % CONTACTS;
            let email = email(id);
            let _ = standin.play_workflow(&run, &[(id, email.as_str())]).await;
        }
    }
}
