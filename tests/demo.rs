//! `sendtime demo` through the real binary: with no account and no setup, contacts of every
//! kind are received, planned and sent on (enrolled, listed, released) within a minute of real
//! time, and it stops cleanly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Killed;

/// A running demo: the process, its log file, its admin address and its temporary folder.
struct Demo {
    child: Killed,
    log: std::path::PathBuf,
    admin: String,
    listen: String,
    folder: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

/// Start `sendtime demo` at 3,600× and read what it prints once it answers.
fn start_demo() -> Demo {
    start_demo_at("3600")
}

fn start_demo_at(speed: &str) -> Demo {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("demo.log");
    let child = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .args(["demo", "--speed", speed])
        // Ports the system gives: the demo prints them, and its workflow posts to them.
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        // A proxy from the environment cannot reach the demo on this machine: not used.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let printed: Vec<String> = stdout.lines().take(4).map(Result::unwrap).collect();
    // "dashboard: http://{admin}/   status: ...".
    let admin = printed
        .iter()
        .find_map(|l| l.strip_prefix("dashboard: http://"))
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("{printed:?}"))
        .to_string();
    assert!(!admin.ends_with(":0"), "{printed:?}");
    // "...; a simulated workflow posts to http://{listen}".
    let listen = printed
        .iter()
        .find_map(|l| l.split("posts to http://").nth(1))
        .unwrap_or_else(|| panic!("{printed:?}"))
        .to_string();
    // "... engagement events of 2000 contacts in {data folder}": its parent is the demo's.
    let data = printed
        .iter()
        .find_map(|l| l.split(" contacts in ").nth(1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("{printed:?}"));
    let folder = data.parent().unwrap().to_path_buf();
    assert!(folder.exists());
    Demo {
        child,
        log,
        admin,
        listen,
        folder,
        _logs: logs,
    }
}

/// A test that fails leaves no demo folder behind (killed, the demo cannot remove it).
impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

impl Demo {
    fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.0.id() as i32, signal) }, 0);
    }

    /// Wait until the log says `needle`.
    fn wait_log(&self, needle: &str) {
        let taken = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle)) {
            assert!(Instant::now() < taken, "never logged {needle:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Its exit code once it stopped, within 30 s.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.0.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "the demo did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_demo_sends_every_kind_of_contact_and_stops_cleanly() {
    let started = Instant::now();
    let mut demo = start_demo();
    let admin = demo.admin.clone();
    let status_url = format!("http://{admin}/status");
    let count = |metrics: &str, status: &str| -> u64 {
        let prefix = format!("sendtime_dispatch_outcomes_total{{status=\"{status}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    loop {
        if let Ok(resp) = common::get(format!("http://{admin}/metrics")) {
            last = resp.text().unwrap_or_default();
            if ["enrolled", "listed", "completed"]
                .iter()
                .all(|s| count(&last, s) > 0)
            {
                break;
            }
        }
        assert!(Instant::now() < deadline, "not every kind sent:\n{last}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // At 3,600×, a receipt stamped with the wall clock looked a day old 24 s in, and every
    // window was over when planned ("late"). Receipts are stamped with the demo's clock.
    while started.elapsed() < Duration::from_secs(45) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let metrics = common::get(format!("http://{admin}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let late: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sendtime_plan_moves_total{") && l.contains("move=\"late\""))
        .collect();
    assert!(late.is_empty(), "{late:?}");
    assert!(count(&metrics, "enrolled") > 0);
    let status: serde_json::Value = common::get(&status_url).unwrap().json().unwrap();
    assert_eq!(status["webhooks"].as_array().unwrap().len(), 5);
    // Capacity per hour of the demo's clock, an hour of which passes in a second: one call a
    // minute, the least planned (60,240 an hour were, while a second takes about 19).
    let capacity = &status["capacity"]["connectors"][0]["capacity_per_hour"];
    assert_eq!(capacity, 60, "{}", status["capacity"]);
    // SIGTERM twice at once, as `timeout` sends it (to the process and to its group): one
    // stop, not the "second signal" that stops at once (and left the demo's folder behind).
    // Polled closely: the second must come within a moment of the first.
    demo.signal(libc::SIGTERM);
    demo.wait_log("SIGTERM: shutting down");
    demo.signal(libc::SIGTERM);
    assert_eq!(demo.exit_code(), Some(0));
    assert!(
        !demo.folder.exists(),
        "{} left behind",
        demo.folder.display()
    );
}

/// The demo holds a fifth of the contacts out, and its contacts open the stand-in's mails by
/// their habits, which `serve` imports: the dashboard's lift has sends and opens in both
/// groups. It had none: nothing was held out, and no email event came after the history.
#[test]
fn the_demos_lift_compares_held_out_contacts_with_the_rest() {
    // At 20,000×, a day's window and the 72 hours after it end in 20 s; the import runs
    // every real minute.
    let mut demo = start_demo_at("20000");
    let url = format!("http://{}/lift", demo.admin);
    let counted = common::eventually(Duration::from_secs(240), || {
        let lift: serde_json::Value = (common::http().post(&url))
            .json(&serde_json::json!({}))
            .send()
            .ok()?
            .json()
            .ok()?;
        let opened = lift["metrics"]
            .as_array()?
            .iter()
            .find(|m| m["metric"] == "opened" && m["window_hours"] == 24)?
            .clone();
        let engaged = |group: &str| opened[group]["engaged"].as_f64().unwrap_or(0.0);
        (engaged("optimized") > 0.0 && engaged("holdout") > 0.0).then_some(lift)
    });
    let lift = counted.unwrap_or_else(|| panic!("no opens in both groups in 4 minutes"));
    // A fifth of the receipts of the webhooks and the action that hold out, within
    // sampling error (4 standard deviations).
    let held = lift["holdout_receipts"].as_f64().unwrap();
    let all = held + lift["optimized_receipts"].as_f64().unwrap();
    let sd = (0.2 * 0.8 / all).sqrt();
    assert!(
        (held / all - 0.2).abs() < 4.0 * sd,
        "{held} of {all} held out"
    );
    demo.signal(libc::SIGTERM);
    assert_eq!(demo.exit_code(), Some(0));
    assert!(!demo.folder.exists());
}

/// Addresses the demo cannot serve are refused before it makes its data, saying which flag
/// to change: an admin address off this machine (its config has no admin token; `serve`
/// refused it after generating, advising to edit the config the demo deletes) and one port
/// given to both listeners.
#[test]
fn the_demo_refuses_addresses_it_cannot_serve_before_it_starts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let same = format!("127.0.0.1:{port}");
    for (args, why) in [
        (
            ["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"],
            "listens on this machine only",
        ),
        // Said as such: the second bind's "in use" sent the user after another process.
        (
            ["--listen", same.as_str(), "--admin-listen", same.as_str()],
            "share a port",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_sendtime"))
            .args(["demo"])
            .args(args)
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains("--admin-listen"), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: {stderr}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}

/// Its terminal closed (SIGHUP), the demo stops and leaves nothing behind: `serve` reloads its
/// config on SIGHUP, so the demo ran on, its ports held and its folder growing. An operator's
/// second Ctrl-C, which stops it at once, removes its folder too.
#[test]
fn the_demo_stops_when_its_terminal_closes_and_on_a_second_ctrl_c() {
    let mut demo = start_demo();
    demo.signal(libc::SIGHUP);
    assert_eq!(demo.exit_code(), Some(0));
    assert!(
        !demo.folder.exists(),
        "{} left behind",
        demo.folder.display()
    );

    let mut demo = start_demo();
    // A post whose body never ends holds the stop (the connection is given its grace).
    let mut held = std::net::TcpStream::connect(&demo.listen).unwrap();
    held.write_all(
        b"POST /hooks/nurture HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"vid\"",
    )
    .unwrap();
    // Long enough to be taken, on a loaded machine, before the stop begins.
    std::thread::sleep(Duration::from_secs(1));
    demo.signal(libc::SIGINT);
    demo.wait_log("SIGINT: shutting down");
    std::thread::sleep(Duration::from_millis(500));
    demo.signal(libc::SIGINT);
    assert_eq!(demo.exit_code(), Some(1));
    assert!(
        !demo.folder.exists(),
        "{} left behind",
        demo.folder.display()
    );
}

/// Stopped before it is ready (Ctrl-C while it makes its data and starts), the demo leaves no
/// folder behind: until `serve` took the signals, their default action ended the process with
/// its folder left in the temporary directory.
#[test]
fn a_demo_stopped_before_it_is_ready_leaves_no_folder() {
    // With its stderr gone too (a `| tee` the Ctrl-C ended, a closed terminal): saying why
    // panicked the handler, and the demo hung for good (an audit).
    for stderr_gone in [false, true] {
        stopped_before_ready(stderr_gone);
    }
}

fn stopped_before_ready(stderr_gone: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .args(["demo", "--speed", "3600"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::null())
        .stderr(if stderr_gone {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut demo = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let folder = loop {
        let made = std::fs::read_dir(tmp.path()).unwrap().find_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_string();
            name.starts_with("sendtime-demo-").then_some(path)
        });
        if let Some(folder) = made {
            break folder;
        }
        assert!(Instant::now() < deadline, "no demo folder in 30 s");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(unsafe { libc::kill(demo.0.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop (stderr gone: {stderr_gone})"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stopped by the demo's own early handler, not by serve's ordered stop.
    assert_eq!(code, Some(130), "stderr gone: {stderr_gone}");
    assert!(!folder.exists(), "{} left behind", folder.display());
}
