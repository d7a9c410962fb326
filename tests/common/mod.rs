//! Helpers shared by the integration tests: write a test config, start the real `sendtime
//! serve` on an ephemeral port, capture its logs, send it signals, stop it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The public URL of every test config (signatures are computed over it).
pub const PUBLIC_URL: &str = "https://hooks.example.com";
/// The portal and app of every test config's connector `main`.
pub const PORTAL_ID: u64 = 62515;
pub const APP_ID: u64 = 54321;

/// A `[[webhook]]` of a test config; `target` is its `workflow_id` or `list_id` line.
pub struct Hook {
    pub id: &'static str,
    pub kind: &'static str,
    pub target: &'static str,
}

/// `webhooks.toml` for a test: `[server]` at [`PUBLIC_URL`], one connector `main` whose secret
/// and token are read from `{env}_SECRET` and `{env}_TOKEN`, and `hooks`. The other fields are
/// extra lines for `[server]`, for tables after it (`[scheduler]`, `[model]`) and for the
/// connector.
#[derive(Default)]
pub struct TestConfig<'a> {
    pub env: &'a str,
    pub server: &'a str,
    pub tables: &'a str,
    pub connector: &'a str,
    pub hooks: &'a [&'a Hook],
}

impl TestConfig<'_> {
    pub fn text(&self) -> String {
        let TestConfig {
            env,
            server,
            tables,
            connector,
            hooks,
        } = self;
        // serve's own HubSpot import stays off unless a test turns it on: a run at a quarter
        // hour would add calls to what the stand-in counts.
        let import = if tables.contains("[import]") {
            ""
        } else {
            "[import]\nenabled = false\n"
        };
        let mut text = format!(
            "version = 1\n[server]\npublic_url = \"{PUBLIC_URL}\"\n{server}\n{tables}\n{import}\
             [[connector]]\nid = \"main\"\nportal_id = {PORTAL_ID}\napp_id = {APP_ID}\n\
             client_secret_env = \"{env}_SECRET\"\naccess_token_env = \"{env}_TOKEN\"\n{connector}\n"
        );
        for h in *hooks {
            text.push_str(&format!(
                "[[webhook]]\nid = \"{}\"\ntype = \"{}\"\n{}\n",
                h.id, h.kind, h.target
            ));
        }
        text
    }

    /// It as a validated config read from `dir/webhooks.toml` (not written), for tests that
    /// drive the library.
    #[allow(dead_code)]
    pub fn config(&self, dir: &Path) -> sendtime::config::Config {
        use sendtime::config::{Config, EnvCheck, Overrides};
        Config::from_text(
            &dir.join("webhooks.toml"),
            &self.text(),
            &Overrides::default(),
            EnvCheck::Warn,
        )
        .unwrap()
        .config
    }

    /// Write it as `dir/webhooks.toml`; its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("webhooks.toml");
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin surface (`/status`, `/metrics`).
    pub admin_addr: SocketAddr,
    logs: Arc<Mutex<String>>,
}

impl Server {
    /// Start `sendtime serve` with `config`, data in `data`, and wait until it listens.
    pub fn start(config: &Path, data: &Path, env: &[(&str, &str)]) -> Server {
        let listen = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
        Server::start_with(config, data, &listen, env)
    }

    /// [`Server::start`] with `args` after `serve` in place of its listen flags.
    pub fn start_with(config: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(Server::command(config, data, args, env))
    }

    /// The command [`Server::start_with`] runs, to change before [`Server::spawn`].
    pub fn command(config: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendtime"));
        cmd.arg("--config")
            .arg(config)
            .arg("--data")
            .arg(data)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Start `cmd`, a `serve`, and wait until it listens.
    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.spawn().expect("start sendtime serve");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            admin_addr: "0.0.0.0:0".parse().unwrap(),
            logs,
        };
        let line = server
            .wait_log("listening on ", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("server did not start; logs:\n{}", server.logs()));
        let addr = line.rsplit("listening on ").next().unwrap().trim();
        server.addr = addr.parse().expect("listen address in log");
        let line = server
            .wait_log(
                "admin surface (dashboard, /status, /metrics) on ",
                Duration::from_secs(30),
            )
            .unwrap_or_else(|| panic!("no admin surface; logs:\n{}", server.logs()));
        let addr = line.rsplit(" on ").next().unwrap().trim();
        server.admin_addr = addr.parse().expect("admin address in log");
        server
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Wait until a log line contains `needle` (after any already consumed); returns that line.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_log_count(needle, 1, timeout)
    }

    /// Wait until at least `n` log lines contain `needle`; returns the n-th.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .logs()
                .lines()
                .filter(|l| l.contains(needle))
                .nth(n - 1)
                .map(str::to_string);
            if found.is_some() {
                return found;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the admin surface.
    #[allow(dead_code)]
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stop it as an operator would (SIGTERM), check it exits cleanly, and return its logs.
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        assert_eq!(
            self.wait_exit(Duration::from_secs(20)),
            Some(0),
            "{}",
            self.logs()
        );
        self.logs()
    }

    /// Wait for the process to exit by itself; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process, killed when dropped: a test that fails leaves none running.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A contact record body as HubSpot's "Send a webhook" step posts it (the fields sendtime
/// reads).
#[allow(dead_code)]
pub fn contact_body(vid: u64, email: &str) -> String {
    format!(
        r#"{{"vid": {vid}, "portal-id": {PORTAL_ID}, "properties": {{"email": {{"value": "{email}"}}}}}}"#
    )
}

/// Post `body` to `path` signed v2 with `secret`, as HubSpot does: the HTTP status.
#[allow(dead_code)]
pub fn post_signed(
    client: &reqwest::blocking::Client,
    server: &Server,
    secret: &str,
    path: &str,
    body: String,
) -> u16 {
    let sig = sendtime::receiver::signature::sign_v2(
        secret.as_bytes(),
        "POST",
        &format!("{PUBLIC_URL}{path}"),
        body.as_bytes(),
    );
    client
        .post(server.url(path))
        .header("X-HubSpot-Signature", sig)
        .header("X-HubSpot-Signature-Version", "v2")
        .body(body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Poll `f` until it returns `Some`, or give up after `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A two-thread runtime for tests that drive async library code (the stand-in, a dispatcher).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The real time, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Move the dispatcher's "now" (`SENDTIME_CLOCK_FILE`) to `ms`, atomically.
pub fn set_clock(file: &Path, ms: i64) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, ms.to_string()).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Successful enrollments per (workflow, email) in the stand-in's log.
pub fn enrollments(
    log: &[sendtime::hubspot::standin::LogEntry],
) -> std::collections::HashMap<(String, String), usize> {
    let mut out = std::collections::HashMap::new();
    for e in log {
        if e.method != "POST" || e.status != Some(204) {
            continue;
        }
        let parts: Vec<&str> = e.path.split('/').collect();
        if let [
            "",
            "automation",
            "v2",
            "workflows",
            wf,
            "enrollments",
            "contacts",
            email,
        ] = parts.as_slice()
        {
            *out.entry((wf.to_string(), email.replace("%40", "@")))
                .or_default() += 1;
        }
    }
    out
}

/// The repository's own `webhooks.toml`.
pub fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks.toml")
}

/// How long [`run`] waits for a command to end.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Run `sendtime --config CONFIG --data DATA ARGS` with `env` set (and the caller's `RUST_LOG`
/// not), to its end; a command still running after [`RUN_TIMEOUT`] (a `serve` that should
/// have refused to start) is killed and fails the test rather than hanging it.
/// `serve` on ports the system picks: one busy elsewhere cannot end it.
pub const SERVE_ON_ANY_PORTS: [&str; 5] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

pub fn run(config: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    use std::io::Read;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sendtime"));
    // `gen` reads no config, and refuses one.
    if args.first() != Some(&"gen") {
        cmd.arg("--config").arg(config);
    }
    let mut child = cmd
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("sendtime {args:?} still running after {RUN_TIMEOUT:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// [`run`]: its standard output, or a panic that shows its standard error.
pub fn sendtime(config: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(config, data, args, env);
    assert!(
        out.status.success(),
        "sendtime {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until the server has run `n` more dispatcher ticks. A tick under way now counts as
/// one, so with `n` ≥ 2 a whole tick has run since: a check that something did *not* happen
/// is then not made before the tick that could have done it.
pub fn wait_ticks(server: &Server, n: u64) {
    let before = ticks(server);
    // Generous: a tick pacing its calls to a low limit takes tens of seconds on a loaded
    // machine (30 s was too short once); it costs time only when the test fails.
    eventually(Duration::from_secs(120), || {
        (ticks(server) >= before + n).then_some(())
    })
    .unwrap_or_else(|| panic!("fewer than {n} ticks in 120 s; logs:\n{}", server.logs()));
}

/// Dispatcher ticks the server has run so far (its `/metrics`).
pub fn ticks(server: &Server) -> u64 {
    metric(server, "sendtime_tick_seconds_count")
}

/// The value of `series` (a name with its labels, as `/metrics` writes them) on the server's
/// `/metrics`; 0 while it is not there.
pub fn metric(server: &Server, series: &str) -> u64 {
    get(server.admin_url("/metrics"))
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// An HTTP client for the servers the tests start on this machine: never through a proxy
/// from the environment, which cannot reach them.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// `GET url` through [`http`].
pub fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::blocking::Response> {
    http().get(url).send()
}

/// Copy the folder `from` and all it holds to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// An inbox row as the receiver writes one for a v2-signed webhook post of contact `vid` to
/// `webhook` (an IMMEDIATE one) for the test account, received at `at`.
pub fn inbox_row(
    receipt: &str,
    webhook: &str,
    vid: i64,
    email: Option<String>,
    at: i64,
) -> sendtime::datasets::inbox::Receipt {
    sendtime::datasets::inbox::Receipt {
        receipt_id: receipt.into(),
        webhook_id: webhook.into(),
        webhook_type: sendtime::config::WebhookType::Immediate,
        contact_id: Some(vid),
        email,
        portal_id: Some(PORTAL_ID as i64),
        received_at_ms: at,
        signature: "v2".into(),
        config: "test".into(),
        callback_id: None,
        body_hash: None,
        time_zone: None,
        hold_ends_ms: None,
    }
}

/// Write `rows` as one inbox part under `data`.
pub fn write_inbox(data: &Path, rows: &[sendtime::datasets::inbox::Receipt]) {
    use sendtime::datasets::inbox;
    let mut df = inbox::frame(rows).unwrap();
    inbox::dataset(data)
        .unwrap()
        .write_part(ulid::Ulid::generate(), &mut df)
        .unwrap();
}
