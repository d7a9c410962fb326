//! Flood benchmark: strangers hold connections open while HubSpot posts. Two floods, each
//! against a fresh `sendtime serve`: **slow bodies** (the headers of a 60 KB post, then one
//! byte, never the rest) and **long heads** (a header line that never ends, 380 KB of it). During
//! each, signed posts are sent one after another for a while; the benchmark reports how many
//! were accepted (200), how many were refused, and the server's resident memory.
//!
//! `cargo bench --bench flood -- [--connections N] [--seconds S] [--server PATH]`
//! (default 400 connections, 10 s, the `sendtime` binary of this build; `--server` runs an
//! older build instead, to compare).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sendtime::receiver::signature::sign_v2;

const SECRET: &str = "flood-secret";
const PUBLIC: &str = "https://hooks.example.com";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let connections: usize = arg("--connections")
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seconds: u64 = arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(10);
    let server = arg("--server").unwrap_or_else(|| env!("CARGO_BIN_EXE_sendtime").to_string());
    raise_open_files();
    println!("| flood | connections | signed posts accepted | refused | server peak RSS MB |");
    println!("|---|---|---|---|---|");
    for (name, opening) in [
        (
            "slow bodies",
            b"POST /hooks/bench HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{".to_vec(),
        ),
        ("long heads", {
            let mut head = b"POST /hooks/bench HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 380 * 1024));
            head
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = start(&server, dir.path());
        let _guard = Kill(child);
        let pid = _guard.0.id();
        let flood: Vec<TcpStream> = (0..connections)
            .filter_map(|_| {
                let mut s = TcpStream::connect(&addr).ok()?;
                let _ = s.write_all(&opening);
                Some(s)
            })
            .collect();
        // Fewer than asked (this process's open-file limit) would be a smaller flood, unsaid.
        assert_eq!(flood.len(), connections, "connections opened");
        std::thread::sleep(Duration::from_millis(500));
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let (mut accepted, mut refused) = (0, 0);
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut vid = 1u64;
        while Instant::now() < until {
            let body = format!(
                r#"{{"vid":{vid},"portal-id":62515,"properties":{{"email":{{"value":"f{vid}@example.com"}}}}}}"#
            );
            let sig = sign_v2(
                SECRET.as_bytes(),
                "POST",
                &format!("{PUBLIC}/hooks/bench"),
                body.as_bytes(),
            );
            let ok = client
                .post(format!("http://{addr}/hooks/bench"))
                .header("X-HubSpot-Signature", sig)
                .header("X-HubSpot-Signature-Version", "v2")
                .body(body)
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                accepted += 1;
            } else {
                refused += 1;
            }
            vid += 1;
        }
        let rss = rss_mb(pid);
        println!(
            "| {name} | {} | {accepted} | {refused} | {rss} |",
            flood.len()
        );
        drop(flood);
    }
}

/// This process's open-file limit raised to its hard limit, as `serve` raises its own: at the
/// usual soft limit of 1,024, a flood of 1,500 opened about 1,000 connections.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Peak resident memory of process `pid` so far, MB.
fn rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb / 1024)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(server: &str, dir: &Path) -> (Child, String) {
    let config = dir.join("webhooks.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\npublic_url = \"{PUBLIC}\"\n[[connector]]\nid = \"main\"\nportal_id = 62515\napp_id = 1\nclient_secret_env = \"FLOOD_SECRET\"\naccess_token_env = \"FLOOD_TOKEN\"\ndry_run = true\n[[webhook]]\nid = \"bench\"\ntype = \"NEXT_24_HOURS\"\nworkflow_id = 1\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(server)
        .arg("--config")
        .arg(&config)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("FLOOD_SECRET", SECRET)
        .env("RUST_LOG", "warn,sendtime::serve=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.split("listening on ").nth(1) {
            let addr = addr.trim().to_string();
            std::thread::spawn(move || for _ in lines {});
            return (child, addr);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server exited before listening");
}
