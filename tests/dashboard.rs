//! The dashboard in a real browser: Debian's headless Chromium driven over WebDriver
//! (chromedriver; `.ci/run` installs both) against the real `sendtime serve`, with engagement
//! imported through the CLI, contacts posted signed, and the HubSpot stand-in over real HTTP.
//! Also the admin surface's guards over plain HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    Hook, Server, TestConfig, enrollments, eventually, now_ms, post_signed, runtime, sendtime,
    set_clock, wait_ticks,
};
use fantoccini::{Client, ClientBuilder, Locator};
use sendtime::hubspot::standin::{Options, StandIn};
use serde_json::{Value, json};

const SECRET: &str = "dashboard-secret";
const TOKEN: &str = "standin-token";
const ENV: &[(&str, &str)] = &[("DASH_SECRET", SECRET), ("DASH_TOKEN", TOKEN)];

const HOOKS: &[Hook] = &[
    Hook {
        id: "nurture",
        kind: "NEXT_24_HOURS",
        target: "workflow_id = 101",
    },
    Hook {
        id: "fatigue",
        kind: "IMMEDIATE",
        target: "workflow_id = 104",
    },
];

fn write_config(dir: &Path, api_base: &str, server: &str) -> PathBuf {
    TestConfig {
        env: "DASH",
        server,
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: &format!("api_base = \"{api_base}\""),
        hooks: &HOOKS.iter().collect::<Vec<_>>(),
    }
    .write(dir)
}

/// Opens of 40 contacts over the last four weeks, most on Tuesdays at 15:00 UTC.
fn import_engagement(config: &Path, data: &Path) {
    let day = 86_400_000i64;
    let today = now_ms() / day * day;
    let mut csv = String::from("email,opened\n");
    for c in 0..40 {
        for d in 1..=28 {
            let at = today - d * day;
            // 1970-01-01 was a Thursday: Tuesday is weekday 1 counting Monday as 0.
            let weekday = (at / day + 3).rem_euclid(7);
            let hour = if weekday == 1 { 15 } else { 9 + (c + d) % 3 };
            csv.push_str(&format!(
                "reader{c}@example.com,{}\n",
                at + hour * 3_600_000 + 5 * 60_000
            ));
        }
    }
    let file = data.parent().unwrap().join("opens.csv");
    std::fs::write(&file, csv).unwrap();
    let file = file.display().to_string();
    sendtime(
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
        ENV,
    );
}

fn status(server: &Server) -> Value {
    common::get(server.admin_url("/status"))
        .unwrap()
        .json()
        .unwrap()
}

fn endpoint<'s>(status: &'s Value, id: &str) -> &'s Value {
    status["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .unwrap()
}

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let binary =
            std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            Path::new(&binary).exists(),
            "{binary} is missing: install Debian's chromium and chromium-driver (.ci/run does), or set CHROMEDRIVER"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A group of its own: the browsers it starts are killed with it.
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), || {
            common::get(format!("{url}/status"))
                .ok()
                .filter(|r| r.status().is_success())
        })
        .expect("chromedriver answers");
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it launched (left behind when a test
        // fails before closing its session).
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: kill(2) on a process group this test started; no memory is involved.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A headless Chromium session: no network beyond loopback, a fresh profile.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let options = json!({
        "binary": chromium,
        "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1400,2200",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    // chromedriver is on loopback: plain HTTP, no TLS stack.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Evaluate `script` (which returns a value) in the page until `ready` accepts it.
fn until_page<T>(
    rt: &tokio::runtime::Runtime,
    page: &Client,
    script: &str,
    what: &str,
    mut ready: impl FnMut(Value) -> Option<T>,
) -> T {
    eventually(Duration::from_secs(30), || {
        let v = rt.block_on(page.execute(script, vec![])).ok()?;
        ready(v)
    })
    .unwrap_or_else(|| {
        let last = rt.block_on(page.execute(script, vec![]));
        let error = rt.block_on(page.execute(
            "return document.querySelector('#error').textContent;",
            vec![],
        ));
        panic!("the dashboard never showed {what}; last: {last:?}; its error line: {error:?}")
    })
}

/// The text `script` returns, once it is not empty.
fn text_shown(rt: &tokio::runtime::Runtime, page: &Client, script: &str, what: &str) -> String {
    until_page(rt, page, script, what, |v| {
        v.as_str().filter(|t| !t.is_empty()).map(str::to_string)
    })
}

/// Click `selector`, found afresh if the page redrew it between finding and clicking (it
/// redraws every few seconds: the element found is then stale).
/// Look `contact` up in the page's contact lookup.
fn look_up(rt: &tokio::runtime::Runtime, page: &Client, contact: &str) {
    rt.block_on(async {
        let input = page.find(Locator::Css("#lookup")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(contact).await.unwrap();
        page.find(Locator::Css("#lookup-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    });
}

fn click(rt: &tokio::runtime::Runtime, page: &Client, selector: &str) {
    rt.block_on(async {
        let mut tries = 0;
        loop {
            let found = page
                .find(Locator::Css(selector))
                .await
                .unwrap_or_else(|e| panic!("{selector}: {e}"));
            match found.click().await {
                Ok(()) => return,
                // Stale: nothing was clicked, so clicking again clicks once.
                Err(e) if tries < 5 && e.to_string().contains("stale element") => {
                    tries += 1;
                    eprintln!("{selector}: clicking again after: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{selector}: {e}"),
            }
        }
    });
}

/// The page draws the heat map and the queue with `/status`'s numbers; pausing a webhook from
/// it holds that webhook's contacts (nothing reaches HubSpot) until it is resumed there; the
/// contact lookup explains a contact; a screenshot is saved.
#[test]
fn the_dashboard_shows_status_and_pauses_and_resumes_a_webhook_in_a_real_browser() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &standin.url(), "");
    import_engagement(&config, &data);
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let clock_env = clock.display().to_string();
    let server = Server::start(
        &config,
        &data,
        &[
            ("DASH_SECRET", SECRET),
            ("DASH_TOKEN", TOKEN),
            ("SENDTIME_CLOCK_FILE", &clock_env),
        ],
    );
    let http = common::http();
    for i in 0..5u64 {
        let email = format!("reader{i}@example.com");
        standin.add_contact(&email, 7000 + i);
        let body = common::contact_body(7000 + i, &email);
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/nurture", body),
            200
        );
    }
    // Planned, so the queue has something to draw.
    let before = eventually(Duration::from_secs(20), || {
        let s = status(&server);
        let planned: u64 = s["capacity"]["connectors"][0]["planned_per_hour"]
            .as_array()?
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        (planned == 5 && s["population"].is_array()).then_some(s)
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));

    let driver = Driver::start();
    let page = rt.block_on(browser(&driver, &dir.path().join("chromium")));
    rt.block_on(page.goto(&server.admin_url("/"))).unwrap();

    // The heat map: 168 cells, each with the population's value from /status.
    let cells: Vec<f64> = until_page(
        &rt,
        &page,
        "return [...document.querySelectorAll('#heatmap td')].map(td => Number(td.dataset.value));",
        "the heat map",
        |v| {
            let cells: Vec<f64> = serde_json::from_value(v).ok()?;
            (cells.len() == 168).then_some(cells)
        },
    );
    let population: Vec<f64> = serde_json::from_value(before["population"].clone()).unwrap();
    for (slot, (shown, known)) in cells.iter().zip(&population).enumerate() {
        assert!(
            (shown - known).abs() < 1e-12,
            "slot {slot}: {shown} vs {known}"
        );
    }
    let best = (0..168).fold(0, |b, s| if population[s] > population[b] { s } else { b });
    assert_eq!(
        best % 24,
        15,
        "the imported habit is the population's best hour"
    );
    let best_text = text_shown(
        &rt,
        &page,
        "return document.querySelector('#heat-best').textContent;",
        "the best hour",
    );
    assert_eq!(best_text, "Best hour: Tue 15:00 UTC");

    // The queue: the planned calls /status reports, and the webhook's pending contacts.
    let queue = until_page(
        &rt,
        &page,
        "return [document.querySelector('#queue-total').dataset.value, \
         document.querySelector('tr[data-endpoint=nurture] td.pending').textContent];",
        "the queue",
        |v| (v[0] == "5").then_some(v),
    );
    assert_eq!(
        queue[1],
        endpoint(&before, "nurture")["pending"].to_string()
    );
    // The forecast's day lines and dates stand at UTC midnights (they stood every 24 bars
    // from the current hour, so a date sat over the day before's hours).
    let from = before["capacity"]["from_ms"].as_i64().unwrap();
    let days: Vec<(f64, String)> = until_page(
        &rt,
        &page,
        "return [...document.querySelectorAll('#forecast text')].map(t => [Number(t.getAttribute('x')), t.textContent]);",
        "the forecast's days",
        |v| {
            serde_json::from_value(v)
                .ok()
                .filter(|d: &Vec<(f64, String)>| d.len() >= 6)
        },
    );
    for (x, date) in days {
        let start = from + ((x - 2.0) / 6.0) as i64 * 3_600_000;
        let day = chrono::DateTime::from_timestamp_millis(start).unwrap();
        assert_eq!(day.format("%H:%M").to_string(), "00:00", "{date} at {day}");
        assert_eq!(day.format("%Y-%m-%d").to_string(), date);
    }

    // Pause `fatigue` from the page; its contacts are received and held.
    click(
        &rt,
        &page,
        "tr[data-endpoint=fatigue] button[data-action=pause]",
    );
    eventually(Duration::from_secs(10), || {
        (endpoint(&status(&server), "fatigue")["paused"] == true).then_some(())
    })
    .expect("paused from the dashboard");
    for i in 0..3u64 {
        let email = format!("held{i}@example.com");
        standin.add_contact(&email, 7100 + i);
        let body = common::contact_body(7100 + i, &email);
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/fatigue", body),
            200
        );
    }
    // Due, and three ticks later still held.
    set_clock(&clock, now_ms() + 60_000);
    wait_ticks(&server, 3);
    until_page(
        &rt,
        &page,
        "const r = document.querySelector('tr[data-endpoint=fatigue]'); \
         return [r.querySelector('td.held').textContent, r.querySelector('td.pending').textContent, \
         r.querySelector('button').dataset.action];",
        "three contacts held",
        |v| (v == json!(["3", "3", "resume"])).then_some(()),
    );
    assert!(
        !enrollments(&standin.log())
            .keys()
            .any(|(wf, _)| wf == "104"),
        "nothing reaches HubSpot while paused"
    );
    let shot = rt.block_on(page.screenshot()).unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&saved, &shot).unwrap();
    eprintln!("screenshot: {}", saved.display());

    // Resume from the page; the held contacts go out.
    click(
        &rt,
        &page,
        "tr[data-endpoint=fatigue] button[data-action=resume]",
    );
    eventually(Duration::from_secs(10), || {
        (endpoint(&status(&server), "fatigue")["paused"] == false).then_some(())
    })
    .expect("resumed from the dashboard");
    set_clock(&clock, now_ms() + 180_000);
    until_page(
        &rt,
        &page,
        "return document.querySelector('tr[data-endpoint=fatigue] td.sent').textContent;",
        "three contacts sent",
        |v| (v == "3").then_some(()),
    );
    let sent = enrollments(&standin.log());
    for i in 0..3 {
        assert_eq!(
            sent.get(&("104".to_string(), format!("held{i}@example.com"))),
            Some(&1)
        );
    }
    let latest = until_page(
        &rt,
        &page,
        "return [...document.querySelectorAll('#outcomes tbody tr')].map(r => r.textContent);",
        "the latest outcomes",
        |v| {
            let rows: Vec<String> = serde_json::from_value(v).ok()?;
            (rows
                .iter()
                .filter(|r| r.contains("fatigue") && r.contains("enrolled"))
                .count()
                == 3)
                .then_some(rows)
        },
    );
    assert!(latest.len() >= 3);

    // The contact lookup explains a contact from the profiles in memory.
    look_up(&rt, &page, "reader3@example.com");
    let summary = until_page(
        &rt,
        &page,
        "const s = document.querySelector('#lookup-summary'); \
         return s ? [s.textContent, document.querySelectorAll('#lookup-heat td').length, \
         document.querySelectorAll('#lookup-receipts tr').length, \
         [...document.querySelectorAll('#lookup-webhooks tr')].map(r => r.textContent)] : null;",
        "the contact lookup",
        |v| v.is_array().then_some(v),
    );
    assert!(
        summary[0]
            .as_str()
            .unwrap()
            .starts_with("reader3@example.com: class "),
        "{summary}"
    );
    assert_eq!(summary[1], 168);
    assert_eq!(summary[2], 1, "its one planned receipt");
    // Each webhook with when it would send the contact and why.
    let hooks: Vec<String> = serde_json::from_value(summary[3].clone()).unwrap();
    assert_eq!(hooks.len(), 1 + HOOKS.len(), "{hooks:?}");
    assert!(
        hooks[1].starts_with("nurtureNEXT_24_HOURS")
            && hooks[1].contains("NEXT_24_HOURS: the next 24 hours"),
        "{hooks:?}"
    );
    assert!(
        hooks[2].starts_with("fatigueIMMEDIATE")
            && hooks[2].contains("IMMEDIATE: on the next tick"),
        "{hooks:?}"
    );
    // By its id, whose receipt carries the email its events are of: said as `explain` says
    // it (the page showed that history as the id's own).
    look_up(&rt, &page, "7003");
    let by_id = until_page(
        &rt,
        &page,
        "const s = document.querySelector('#lookup-summary'); return s ? s.textContent : null;",
        "the lookup by id",
        |v| {
            v.as_str()
                .filter(|t| t.starts_with("7003"))
                .map(str::to_string)
        },
    );
    assert!(
        by_id.contains(
            "opens/clicks (the events of reader3@example.com, which its receipts carry), last"
        ),
        "{by_id}"
    );

    // Lift: the sends so far, none held out, so nothing to compare yet.
    click(&rt, &page, "#lift-button");
    let lift = until_page(
        &rt,
        &page,
        "return [...document.querySelectorAll('#lift-table tr')].map(r => r.textContent);",
        "the lift table",
        |v| {
            let rows: Vec<String> = serde_json::from_value(v).ok()?;
            (rows.len() == 5).then_some(rows)
        },
    );
    assert!(lift[1].starts_with("opened within 24 h"), "{lift:?}");
    assert!(
        lift[1].contains("no webhook sent in both groups"),
        "{lift:?}"
    );
    // With the report's as-of time and what it says to do (it showed neither).
    let said = rt
        .block_on(page.execute(
            "return [...document.querySelectorAll('#lift-result p')].map(p => p.textContent);",
            vec![],
        ))
        .unwrap();
    let said: Vec<String> = serde_json::from_value(said).unwrap();
    assert!(said[0].starts_with("As of 20"), "{said:?}");
    assert!(
        said.iter()
            .any(|p| p.starts_with("nothing held out yet: a webhook or action holds receipts out")),
        "{said:?}"
    );
    rt.block_on(page.close()).unwrap();
    server.stop();
}

/// An unreadable pauses file holds every contact in the dispatcher: `/status` says so, each
/// webhook's pending contacts held and the connector paused, with why. It showed nothing
/// paused and the connector sending.
#[test]
fn an_unreadable_pauses_file_shows_every_contact_held() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    std::fs::create_dir_all(data.join("state")).unwrap();
    sendtime(&config, &data, &["pause", "nurture"], ENV);
    let server = Server::start(&config, &data, ENV);
    let http = common::http();
    let metric = |line: &str| {
        let text = http
            .get(server.admin_url("/metrics"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse::<i64>().ok())
    };
    let nurture = "sendtime_operator_paused{id=\"nurture\",kind=\"webhook\"} ";
    eventually(Duration::from_secs(20), || {
        (metric(nurture)? == 1).then_some(())
    })
    .expect("the pause is shown");
    std::fs::write(data.join("state/pauses.json"), "garbage{").unwrap();
    // Unreadable, it holds everything; what it held is not known, so the gauge stays.
    eventually(Duration::from_secs(20), || {
        (metric("sendtime_pauses_unreadable ")? == 1).then_some(())
    })
    .expect("the unreadable file is shown in the metrics");
    assert_eq!(metric(nurture), Some(1));
    for i in 0..3 {
        let body = common::contact_body(7300 + i, &format!("held{i}@example.com"));
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/fatigue", body),
            200
        );
    }
    let s = status(&server);
    // A pause is neither set nor lifted over it: a conflict, saying what to fix; so too
    // over a file that cannot be read at all (here a folder).
    let pauses = data.join("state/pauses.json");
    for (path, folder) in [("/pause", false), ("/resume", false), ("/pause", true)] {
        if folder && !pauses.is_dir() {
            std::fs::remove_file(&pauses).unwrap();
            std::fs::create_dir(&pauses).unwrap();
        }
        let r = http
            .post(server.admin_url(path))
            .json(&serde_json::json!({"id": "fatigue"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 409, "{path}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["error"], "conflict", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("pauses.json is unreadable; fix or delete it"),
            "{body}"
        );
    }
    server.stop();
    let fatigue = endpoint(&s, "fatigue");
    assert_eq!(fatigue["pending"], 3, "{s}");
    assert_eq!(fatigue["held"], 3, "{s}");
    assert_eq!(s["connectors"][0]["paused"], "pauses_unreadable", "{s}");
    let error = s["pauses_error"].as_str().unwrap_or_default();
    assert!(error.contains("pauses.json is unreadable"), "{s}");
}

/// A pause set by the CLI shows at once in a contact lookup and on `/metrics`, with no tick
/// between (here the cron fires once a year): both showed the pauses of the last tick.
#[test]
fn a_pause_set_by_the_cli_shows_in_lookups_and_metrics_before_a_tick() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = TestConfig {
        env: "DASH",
        server: "",
        tables: "[scheduler]\ncron = \"0 0 0 1 1 *\"",
        connector: "api_base = \"http://127.0.0.1:9\"",
        hooks: &HOOKS.iter().collect::<Vec<_>>(),
    }
    .write(dir.path());
    // HubSpot's daily limit met, as a dispatcher before this one stored it: the lookup says so
    // of each webhook of the connector (only `/status` did).
    let resets = sendtime::time::now_ms() + 3 * 3_600_000;
    std::fs::create_dir_all(data.join("state")).unwrap();
    std::fs::write(data.join("state/dispatch-pause-main"), resets.to_string()).unwrap();
    let server = Server::start(&config, &data, ENV);
    let http = common::http();
    let lookup = || -> Value {
        let r = http
            .get(server.admin_url("/contact?q=ann@example.com"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    };
    let paused = |x: &Value, id: &str| {
        let webhooks = x["webhooks"].as_array().unwrap();
        webhooks.iter().find(|w| w["webhook"] == id).unwrap()["paused"].clone()
    };
    let x = lookup();
    assert_eq!(paused(&x, "nurture"), false);
    for w in x["webhooks"].as_array().unwrap() {
        let by_hubspot = &w["connector_paused"];
        assert_eq!(by_hubspot["why"], "daily_limit", "{x}");
        assert_eq!(by_hubspot["until_ms"], resets, "{x}");
    }
    sendtime(&config, &data, &["pause", "nurture"], ENV);
    let x = lookup();
    assert_eq!(paused(&x, "nurture"), true, "{x}");
    assert_eq!(paused(&x, "fatigue"), false, "{x}");
    let metrics = http
        .get(server.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    server.stop();
    let gauge = "sendtime_operator_paused{id=\"nurture\",kind=\"webhook\"} 1";
    assert!(metrics.lines().any(|l| l == gauge), "{metrics}");
}

/// In dry run, with no engagement and an unreadable pause file, the page says what holds the
/// contacts: the connector's pause shows over its dry run, the file's error is on the page, no
/// best hour is named, and dry-run outcomes are counted. It showed "dry run", nothing of the
/// file, "Best hour: Mon 00:00 UTC" (every hour alike) and no dry-run count.
#[test]
fn the_dashboard_shows_what_holds_a_dry_run_connector_without_engagement() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = TestConfig {
        env: "DASH",
        tables: "[scheduler]\ncron = \"* * * * * *\"",
        connector: "api_base = \"http://127.0.0.1:9\"\ndry_run = true",
        hooks: &HOOKS.iter().collect::<Vec<_>>(),
        ..TestConfig::default()
    }
    .write(dir.path());
    let server = Server::start(&config, &data, ENV);
    let http = common::http();
    for i in 0..2 {
        let body = common::contact_body(7500 + i, &format!("dry{i}@example.com"));
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/fatigue", body),
            200
        );
    }
    eventually(Duration::from_secs(20), || {
        (endpoint(&status(&server), "fatigue")["counts"]["dry_run"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no dry run; logs:\n{}", server.logs()));
    let driver = Driver::start();
    let page = rt.block_on(browser(&driver, &dir.path().join("chromium")));
    rt.block_on(page.goto(&server.admin_url("/"))).unwrap();
    // The webhook's row says its contacts are recorded, not sent.
    until_page(
        &rt,
        &page,
        "return document.querySelector('tr[data-endpoint=fatigue] td.state-dry')?.textContent;",
        "the webhook's dry-run state",
        |v| (v == "dry run").then_some(()),
    );
    // Empty error lines take no room (two empty pink bars always showed).
    let shown = rt
        .block_on(page.execute(
            "return ['#pauses-error', '#planning-error', '#write-errors', '#config-rejected'].map(s => document.querySelector(s).offsetHeight);",
            vec![],
        ))
        .unwrap();
    assert_eq!(shown, json!([0, 0, 0, 0]));
    // A config edit refused is said while the file stays so (the log alone said it).
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}bogus = 1\n")).unwrap();
    let rejected = "return document.querySelector('#config-rejected').textContent;";
    let said = text_shown(&rt, &page, rejected, "the refused config");
    assert!(
        said.starts_with("The config file was not loaded") && said.contains("bogus"),
        "{said}"
    );
    std::fs::write(&config, text).unwrap();
    until_page(&rt, &page, rejected, "the refusal gone", |v| {
        (v == "").then_some(())
    });
    // An inbox that cannot be written to Parquet (its folder gone, as on a full disk) is said
    // while it lasts.
    let folder = data.join("inbox");
    std::fs::rename(&folder, data.join("inbox-aside")).unwrap();
    std::fs::write(&folder, b"not a folder").unwrap();
    let body = common::contact_body(7502, "dry2@example.com");
    assert_eq!(
        post_signed(&http, &server, SECRET, "/hooks/fatigue", body),
        200
    );
    let write_errors = "return document.querySelector('#write-errors').textContent;";
    let said = text_shown(&rt, &page, write_errors, "the write error");
    assert!(
        said.starts_with("Cannot write to the data folder") && said.contains("inbox: cannot flush"),
        "{said}"
    );
    std::fs::remove_file(&folder).unwrap();
    std::fs::rename(data.join("inbox-aside"), &folder).unwrap();
    until_page(&rt, &page, write_errors, "the write error gone", |v| {
        (v == "").then_some(())
    });
    eventually(Duration::from_secs(20), || {
        (endpoint(&status(&server), "fatigue")["counts"]["dry_run"] == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("the logged post not recorded; logs:\n{}", server.logs()));

    std::fs::write(data.join("state/pauses.json"), "garbage{").unwrap();
    let shown = until_page(
        &rt,
        &page,
        "return [document.querySelector('tr[data-connector=main] td:nth-child(2)').textContent, \
         document.querySelector('#pauses-error').textContent, \
         document.querySelector('#heat-best').textContent, \
         document.querySelector('tr[data-endpoint=fatigue] td.dry_run').textContent];",
        "the unreadable pause file",
        |v| {
            v[0].as_str()
                .is_some_and(|t| t.starts_with("paused"))
                .then_some(v)
        },
    );
    // A pause the server cannot write says so, and two refreshes later still does (each
    // refresh hid it, so a refused pause looked taken).
    click(
        &rt,
        &page,
        "tr[data-endpoint=fatigue] button[data-action=pause]",
    );
    let error =
        "const e = document.querySelector('#error'); return e.hidden ? null : e.textContent;";
    let said = until_page(&rt, &page, error, "the refused pause", |v| {
        v.as_str().map(str::to_string)
    });
    assert!(
        said.starts_with("pause fatigue failed: ") && said.contains("pauses.json is unreadable"),
        "{said}"
    );
    let updated = || {
        rt.block_on(page.execute("return Number(document.body.dataset.updated);", vec![]))
            .unwrap()
            .as_f64()
            .unwrap()
    };
    let clicked = updated();
    eventually(Duration::from_secs(20), || {
        let now = updated();
        (now > clicked + 2_500.0).then_some(())
    })
    .expect("two refreshes");
    let still = rt.block_on(page.execute(error, vec![])).unwrap();
    assert_eq!(still.as_str(), Some(said.as_str()));
    rt.block_on(page.close()).unwrap();
    server.stop();
    assert_eq!(shown[0], "paused: pauses unreadable (dry run)");
    assert!(
        shown[1]
            .as_str()
            .unwrap()
            .contains("pauses.json is unreadable"),
        "{shown:?}"
    );
    assert_eq!(shown[2], "No engagement imported yet: every hour is alike.");
    assert_eq!(shown[3], "3");
}

/// Contacts held for a webhook removed from the config: the page says how many, for which id,
/// and how to give them up (`held_for_removed` on `/status`; not checked in a browser before).
#[test]
fn the_dashboard_says_how_to_give_up_contacts_held_for_a_removed_webhook() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let write = |hooks: &[&Hook]| {
        TestConfig {
            env: "DASH",
            tables: "[scheduler]\ncron = \"* * * * * *\"",
            connector: &format!("api_base = \"{}\"", standin.url()),
            hooks,
            ..TestConfig::default()
        }
        .write(dir.path())
    };
    let config = write(&HOOKS.iter().collect::<Vec<_>>());
    let clock = dir.path().join("clock");
    set_clock(&clock, now_ms());
    let clock_env = clock.display().to_string();
    let env = [ENV, &[("SENDTIME_CLOCK_FILE", clock_env.as_str())]].concat();
    let server = Server::start(&config, &data, &env);
    let http = common::http();
    // One contact enrolled through fatigue before it is removed: the page's total keeps it.
    standin.add_contact("sent@example.com", 7599);
    let body = common::contact_body(7599, "sent@example.com");
    assert_eq!(
        post_signed(&http, &server, SECRET, "/hooks/fatigue", body),
        200
    );
    set_clock(&clock, now_ms());
    eventually(Duration::from_secs(20), || {
        (endpoint(&status(&server), "fatigue")["counts"]["sent"] == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("not sent; logs:\n{}", server.logs()));
    // The dispatcher's clock a minute behind: the contacts are planned, not yet due.
    set_clock(&clock, now_ms() - 60_000);
    for i in 0..2 {
        let body = common::contact_body(7600 + i, &format!("removed{i}@example.com"));
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/fatigue", body),
            200
        );
    }
    eventually(Duration::from_secs(20), || {
        (endpoint(&status(&server), "fatigue")["pending"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not planned; logs:\n{}", server.logs()));
    // Its pause holds nothing once it is gone, and the page says so.
    sendtime(&config, &data, &["pause", "fatigue"], &env);
    write(&[&HOOKS[0]]);
    let identity = sendtime::config::identity_of(&std::fs::read(&config).unwrap());
    eventually(Duration::from_secs(10), || {
        (status(&server)["config"] == identity.as_str()).then_some(())
    })
    .expect("the config without fatigue loaded");
    // Shown before they are due (they were only once due: days later for a NEXT_WEEK
    // webhook's contacts; an audit).
    assert_eq!(status(&server)["held_for_removed"]["fatigue"], 2);
    set_clock(&clock, now_ms() + 3_600_000);
    eventually(Duration::from_secs(20), || {
        (status(&server)["held_for_removed"]["fatigue"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("not held; logs:\n{}", server.logs()));
    let driver = Driver::start();
    let page = rt.block_on(browser(&driver, &dir.path().join("chromium")));
    rt.block_on(page.goto(&server.admin_url("/"))).unwrap();
    let shown = until_page(
        &rt,
        &page,
        "return [document.querySelector('#held-for-removed').textContent, \
         [...document.querySelectorAll('tr[data-endpoint]')].map(r => r.dataset.endpoint), \
         document.querySelector('#sent-total').textContent, \
         document.querySelector('#paused-unknown').textContent];",
        "the contacts held for fatigue",
        |v| v[0].as_str().is_some_and(|t| !t.is_empty()).then_some(v),
    );
    rt.block_on(page.close()).unwrap();
    server.stop();
    assert_eq!(
        shown[0],
        "2 contacts held for fatigue, which the config no longer has as it received them \
         (removed, made the other kind, or moved to another account's connector): put it back, or `sendtime discard fatigue` (with serve stopped) gives them up."
    );
    assert_eq!(shown[1], json!(["nurture"]));
    // Since the start, the removed webhook's send included (the card fell to 0 with its row).
    assert_eq!(shown[2], "1");
    assert_eq!(
        shown[3],
        "The pause of webhook fatigue holds nothing: the config has no webhook of that id. \
         If it was renamed, pause the new id; `sendtime resume fatigue` drops this one."
    );
}

/// A connector's scheduled import skipped by its pause says so, with when, and once resumed
/// the account's daily use says as of when: in the page as `/status` has them (neither text
/// was checked in a browser).
#[test]
fn the_dashboard_shows_a_skipped_import_and_daily_use_as_of() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = TestConfig {
        env: "DASH",
        tables: "[scheduler]\ncron = \"* * * * * *\"\n[import]\ncron = \"*/2 * * * * *\"",
        connector: &format!("api_base = \"{}\"", standin.url()),
        hooks: &HOOKS.iter().collect::<Vec<_>>(),
        ..TestConfig::default()
    }
    .write(dir.path());
    let started = now_ms() / 60_000 * 60_000;
    std::fs::create_dir_all(&data).unwrap();
    sendtime(&config, &data, &["pause", "main", "--connector"], ENV);
    let server = Server::start(&config, &data, ENV);
    let driver = Driver::start();
    let page = rt.block_on(browser(&driver, &dir.path().join("chromium")));
    rt.block_on(page.goto(&server.admin_url("/"))).unwrap();
    let cells = "const r = document.querySelector('tr[data-connector=main]'); \
        return r ? [r.querySelector('td:nth-child(4)').textContent, \
        r.querySelector('td:nth-child(6)').textContent] : null;";
    // "YYYY-MM-DD HH:MM UTC" at the start of `text`, as ms, checked to be since the start.
    let when = |text: &str| {
        let at = chrono::NaiveDateTime::parse_from_str(text.get(..20)?, "%Y-%m-%d %H:%M UTC")
            .ok()?
            .and_utc()
            .timestamp_millis();
        (started..=now_ms()).contains(&at).then_some(at)
    };
    let skipped = until_page(&rt, &page, cells, "the skipped import", |v| {
        v[1].as_str()
            .is_some_and(|t| t.contains("skipped"))
            .then_some(v)
    });
    assert_eq!(skipped[0], "–", "no call made, so no daily use");
    let import = skipped[1].as_str().unwrap();
    assert!(when(import).is_some(), "{import}");
    assert_eq!(
        &import[21..],
        "skipped: the connector is paused (operator)",
        "{import}"
    );
    assert_eq!(standin.log().len(), 0, "a call while paused");

    sendtime(&config, &data, &["resume", "main", "--connector"], ENV);
    let shown = until_page(&rt, &page, cells, "the import's calls", |v| {
        v[1].as_str()
            .is_some_and(|t| t.ends_with("new events"))
            .then_some(v)
    });
    let import = shown[1].as_str().unwrap();
    assert!(when(import).is_some(), "{import}");
    assert!(import.ends_with(", 0 new events"), "{import}");
    // "{used} of {limit} as of {time}", the figures /status has and HubSpot's headers gave.
    let daily = shown[0].as_str().unwrap();
    let s = status(&server);
    let main = &s["connectors"][0];
    let (limit, remaining) = (
        main["daily_limit"].as_u64().unwrap(),
        main["daily_remaining"].as_u64().unwrap(),
    );
    let calls = standin.log().len() as u64;
    assert!((1..=calls).contains(&(limit - remaining)), "{main}");
    let (figures, as_of) = daily
        .split_once(" as of ")
        .unwrap_or_else(|| panic!("{daily}"));
    let (used, of) = figures.split_once(" of ").unwrap();
    let number = |t: &str| t.replace(',', "").parse::<u64>().unwrap();
    assert_eq!(number(of), limit, "{daily}");
    assert!((1..=calls).contains(&number(used)), "{daily}");
    let at = when(as_of).unwrap_or_else(|| panic!("{daily}"));
    // The imports go on every 2 s, each moving it on: the page's, drawn before, is the minute
    // of /status's or the one before.
    let minute = main["daily_as_of_ms"].as_i64().unwrap() / 60_000 * 60_000;
    assert!(
        at == minute || at == minute - 60_000,
        "{daily}: /status's is {minute}"
    );
    rt.block_on(page.close()).unwrap();
    server.stop();
}

/// A contact lookup whose read never returns (a hung disk; here an archived plan part whose
/// checksum file is a FIFO held open and never written) does not hold a stop: after the grace
/// its connection is closed and serve exits 0 with the inbox flushed. A second signal stops at
/// once. Before, serve waited for the lookup for ever, and a second signal did nothing.
#[test]
fn a_lookup_that_never_returns_does_not_hold_a_stop() {
    use std::os::unix::fs::OpenOptionsExt;
    for second_signal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = write_config(dir.path(), "http://127.0.0.1:9", "");
        let mut server = Server::start(&config, &data, ENV);
        let archived = data.join("archive/plan");
        std::fs::create_dir_all(&archived).unwrap();
        std::fs::write(archived.join("part-00000000000000000000000000.parquet"), "").unwrap();
        let fifo = archived.join("part-00000000000000000000000000.xxh3");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let http = common::http();
        let body = common::contact_body(7400, "kept@example.com");
        assert_eq!(
            post_signed(&http, &server, SECRET, "/hooks/nurture", body),
            200
        );
        let url = server.admin_url("/contact?q=kept@example.com");
        std::thread::spawn(move || common::get(url));
        // A writer opens a FIFO without blocking only once a reader has it open: the lookup.
        let writer = eventually(Duration::from_secs(20), || {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok()
        })
        .expect("the lookup reads the archived part");
        server.signal("TERM");
        if second_signal {
            server
                .wait_log("SIGTERM: shutting down", Duration::from_secs(10))
                .expect("the first signal is taken");
            // An operator's second, not the first sent twice (which comes within a moment).
            std::thread::sleep(Duration::from_millis(500));
            server.signal("TERM");
            assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(1));
        } else {
            let exited = server.wait_exit(Duration::from_secs(40));
            assert_eq!(exited, Some(0), "{}", server.logs());
        }
        drop(writer);
        // The post was acknowledged before the stop: it is in the inbox (flushed, or in the
        // log after the forced stop), as a restart shows.
        std::fs::remove_file(&fifo).unwrap();
        let server = Server::start(&config, &data, ENV);
        let s = status(&server);
        server.stop();
        assert_eq!(endpoint(&s, "nurture")["pending"], 1, "{s}");
    }
}

/// With `admin_token_env`, data needs the bearer token (the page itself does not); without it,
/// a foreign Host is refused; pause and resume take JSON only and name known ids; refusals
/// are JSON.
#[test]
fn the_admin_surface_guards_its_data_and_its_buttons() {
    let rt = runtime();
    let standin = rt.block_on(StandIn::start(Options::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &standin.url(),
        "admin_token_env = \"DASH_ADMIN\"",
    );
    // A token short enough to guess is refused at start, and so is one no request's header
    // carries as it is (one with an accent started, and every request was refused).
    for (token, said) in [
        ("hunter2", "holds fewer than 16 characters"),
        ("a-long-random-admin-tokén", "beyond printable ASCII"),
    ] {
        let env = [
            ("DASH_SECRET", SECRET),
            ("DASH_TOKEN", TOKEN),
            ("DASH_ADMIN", token),
        ];
        // On ports of its own: a busy default port would also end it with 1.
        let refused = common::run(&config, &data, &common::SERVE_ON_ANY_PORTS, &env);
        assert_eq!(refused.status.code(), Some(1), "{token}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(said), "{stderr}");
    }
    let env = [
        ("DASH_SECRET", SECRET),
        ("DASH_TOKEN", TOKEN),
        ("DASH_ADMIN", "a-long-random-admin-token"),
    ];
    let server = Server::start(&config, &data, &env);
    let http = common::http();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(server.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap()
    };
    for path in ["/status", "/metrics", "/contact?q=a@example.com"] {
        let r = get(path, None);
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(get(path, Some("a-long-random-admin-tokeX")).status(), 401);
    }
    // A lookup of what names no contact (a word, a record id HubSpot never gives) is refused:
    // it was answered with a plan, as for a new contact.
    for q in ["nobody", "0", "-1"] {
        let r = get(
            &format!("/contact?q={q}"),
            Some("a-long-random-admin-token"),
        );
        assert_eq!(r.status(), 400, "{q}");
    }
    let r = get("/status", Some("a-long-random-admin-token"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // The scheme's name in any case.
    let lower = http
        .get(server.admin_url("/status"))
        .header("authorization", "bearer a-long-random-admin-token")
        .send()
        .unwrap();
    assert_eq!(lower.status(), 200);
    // Every route with data or an effect, without the token: 401; a request another site's
    // page made the browser send is refused, token or not. The page and its assets are not:
    // a link from another site (or an SSO redirect) opens the dashboard. A post to them is
    // refused before its body is read (its 405 came after reading up to 2 MiB).
    let data_routes = [
        ("POST", "/"),
        ("POST", "/dashboard.js"),
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/contact?q=a@example.com"),
        ("POST", "/lift"),
        ("POST", "/pause"),
        ("POST", "/resume"),
    ];
    for (method, path) in data_routes {
        let request = |token: Option<&str>, site: &str| {
            let mut req = http
                .request(method.parse().unwrap(), server.admin_url(path))
                .header("sec-fetch-site", site)
                .json(&json!({"id": "fatigue"}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().unwrap().status()
        };
        assert_eq!(request(None, "same-origin"), 401, "{method} {path}");
        let token = Some("a-long-random-admin-token");
        assert_eq!(request(token, "cross-site"), 403, "{method} {path}");
        assert_eq!(request(token, "same-site"), 403, "{method} {path}");
    }
    for path in ["/", "/dashboard.js", "/dashboard.css", "/healthz"] {
        assert_eq!(get(path, None).status(), 200, "{path}");
        let linked = http
            .get(server.admin_url(path))
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", "navigate")
            .send()
            .unwrap();
        assert_eq!(linked.status(), 200, "{path} from another site");
    }
    let page = get("/", None);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    let post = |path: &str, body: Value| {
        http.post(server.admin_url(path))
            .bearer_auth("a-long-random-admin-token")
            .json(&body)
            .send()
            .unwrap()
    };
    let r = post("/pause", json!({"id": "fatigue"}));
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"id": "fatigue", "kind": "webhook", "paused": true, "changed": true})
    );
    assert_eq!(
        post("/pause", json!({"id": "fatigue"}))
            .json::<Value>()
            .unwrap()["changed"],
        false
    );
    let paused = sendtime(&config, &data, &["pause"], ENV);
    assert!(
        paused.contains("fatigue (webhook) paused since"),
        "{paused}"
    );
    let nope = post("/pause", json!({"id": "nope"}));
    assert_eq!(nope.status(), 404);
    let message = nope.json::<Value>().unwrap()["message"].to_string();
    assert!(
        message.contains("it has: ") && message.contains("fatigue"),
        "{message}"
    );
    assert_eq!(post("/resume", json!({"id": "fatigue"})).status(), 200);
    assert!(!sendtime(&config, &data, &["pause"], ENV).contains("fatigue"));
    // A pause of a webhook since removed from the config can still be lifted, as by the CLI.
    let before = dir.path().join("before");
    std::fs::create_dir(&before).unwrap();
    let gone = Hook {
        id: "gone",
        kind: "IMMEDIATE",
        target: "workflow_id = 105",
    };
    let before = TestConfig {
        env: "DASH",
        hooks: &[&gone],
        ..TestConfig::default()
    }
    .write(&before);
    sendtime(&before, &data, &["pause", "gone"], ENV);
    assert!(sendtime(&config, &data, &["pause"], ENV).contains("gone"));
    assert_eq!(post("/resume", json!({"id": "gone"})).status(), 200);
    assert!(!sendtime(&config, &data, &["pause"], ENV).contains("gone"));
    assert_eq!(post("/resume", json!({"id": "gone"})).status(), 404);
    // A cross-site form cannot post: JSON only.
    let form = http
        .post(server.admin_url("/pause"))
        .bearer_auth("a-long-random-admin-token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=fatigue")
        .send()
        .unwrap();
    assert_eq!(form.status(), 415);
    // Nor start a lift report, which reads every send and event: a POST of JSON only.
    let lift = |req: reqwest::blocking::RequestBuilder| {
        req.bearer_auth("a-long-random-admin-token")
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(lift(http.get(server.admin_url("/lift"))), 405);
    let plain = http.post(server.admin_url("/lift")).body("{}");
    assert_eq!(lift(plain.header("content-type", "text/plain")), 415);
    assert_eq!(
        lift(http.post(server.admin_url("/lift")).json(&json!({}))),
        200
    );
    // Every refusal is JSON with its label, which says what was wrong (a body too large or
    // not JSON was labelled `bad_request`): a typo'd key, a huge id, a value quoted back by
    // the parser (all of a 100 KB one came back), a missing parameter, an unknown path, a
    // wrong method.
    let huge = "x".repeat(100_000);
    let refusals = [
        (
            post("/pause", json!({"id": "fatigue", "conector": true})),
            422,
            "unprocessable",
        ),
        (post("/pause", json!({"id": huge})), 400, "bad_request"),
        (
            post("/pause", json!({"id": "fatigue", "connector": huge})),
            422,
            "unprocessable",
        ),
        (
            (http.post(server.admin_url("/lift")))
                .bearer_auth("a-long-random-admin-token")
                .body("{}")
                .send()
                .unwrap(),
            415,
            "not_json",
        ),
        (
            get("/contact", Some("a-long-random-admin-token")),
            400,
            "bad_request",
        ),
        (
            get("/nowhere", Some("a-long-random-admin-token")),
            404,
            "not_found",
        ),
        (post("/status", json!({})), 405, "method_not_allowed"),
        (post("/healthz", json!({})), 405, "method_not_allowed"),
    ];
    for (r, status, label) in refusals {
        assert_eq!(r.status(), status, "{label}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"], label, "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert!(
            body.to_string().len() < 1000,
            "what was sent is echoed back"
        );
    }
    assert!(!sendtime(&config, &data, &["pause"], ENV).contains("fatigue"));
    // A body that never arrives is answered 408 (it held the connection, and 64 such the
    // surface, for good; an audit): the headers promise 100 bytes, and none come.
    let mut stalled = std::net::TcpStream::connect(server.admin_addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stalled,
        "POST /pause HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer a-long-random-admin-token\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stalled.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"timeout""#), "{answer}");
    server.stop();

    // Without a token: loopback names only (no DNS rebinding).
    let config = write_config(dir.path(), &standin.url(), "");
    let server = Server::start(&config, &data, &env[..2]);
    let status = |host: &str| {
        http.get(server.admin_url("/status"))
            .header("host", host)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(status("evil.example.com"), 421);
    assert_eq!(
        status(&format!("evil.example.com:{}", server.admin_addr.port())),
        421
    );
    assert_eq!(status(&server.admin_addr.to_string()), 200);
    assert_eq!(
        status(&format!("localhost:{}", server.admin_addr.port())),
        200
    );
    // A proxy on this machine passes its upstream's address as the Host: what it passes on
    // is refused without a token (it opened the surface to whoever reached the proxy).
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-forwarded-host", "admin.example.com"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "203.0.113.9"),
        ("via", "1.1 nginx"),
    ] {
        let r = (http.post(server.admin_url("/pause")))
            .header(name, value)
            .json(&json!({"id": "fatigue"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 403, "{name}");
        assert_eq!(r.json::<Value>().unwrap()["error"], "proxied", "{name}");
    }
    assert!(!sendtime(&config, &data, &["pause"], ENV).contains("fatigue"));
    server.stop();
}
