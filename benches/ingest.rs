//! Ingest benchmark: signed 20–40 KB contact bodies posted to `sendtime serve` on loopback over
//! 64 connections, side by side with a bare axum handler that reads the body and answers 204.
//!
//! `cargo bench --bench ingest [-- --requests N --connections C --rounds R]`
//! Prints one Markdown table row per server with medians over the rounds, for BENCHMARKS.md.

/// The same allocator as the `sendtime` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sendtime::receiver::signature::sign_v2;

const SECRET: &str = "bench-secret";
const PUBLIC: &str = "https://hooks.example.com";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bare-server") {
        return bare_server();
    }
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let requests = arg("--requests", 40_000);
    let connections = arg("--connections", 64);
    let rounds = arg("--rounds", 3);

    eprintln!("generating {requests} signed bodies...");
    let bodies = Arc::new(make_requests(requests));
    let executions = Arc::new(make_executions(requests));
    let avg_kb = bodies.iter().map(|(b, _)| b.len()).sum::<usize>() / bodies.len() / 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut bare_runs = Vec::new();
    let mut full_runs = Vec::new();
    let mut action_runs = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        // Each round starts with the next server, so none always runs first.
        for server in (0..3).map(|k| (round + k) % 3) {
            let sendtime = |path: &str, bodies: &Arc<Vec<(Vec<u8>, String)>>| {
                let dir = tempfile::tempdir().unwrap();
                let (child, addr) = start_sendtime(dir.path());
                let _guard = Kill(child);
                rt.block_on(load(&addr, path, bodies.clone(), connections))
            };
            match server {
                0 => {
                    let (child, addr) = start_bare();
                    let _guard = Kill(child);
                    bare_runs.push(rt.block_on(load(&addr, "/bare", bodies.clone(), connections)));
                }
                1 => full_runs.push(sendtime("/hooks/bench", &bodies)),
                _ => action_runs.push(sendtime("/actions/bench-action", &executions)),
            }
        }
        eprintln!("  bare     {:?}", bare_runs.last().unwrap());
        eprintln!("  sendtime {:?}", full_runs.last().unwrap());
        eprintln!("  actions  {:?}", action_runs.last().unwrap());
    }
    let bare = Run::median(&bare_runs);
    let full = Run::median(&full_runs);
    let actions = Run::median(&action_runs);
    println!("| server | req/s (median of {rounds}) | p50 ms | p99 ms | non-2xx |");
    println!("|---|---|---|---|---|");
    for (name, r) in [
        ("bare axum, 204", &bare),
        ("sendtime serve (verify v2, parse, fsync)", &full),
        (
            "sendtime serve, workflow-action executions (~0.4 KB; verify v2, parse, fsync, BLOCK)",
            &actions,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            r.rps, r.p50_ms, r.p99_ms, r.failed
        );
    }
    // Side by side within a round: the median of the rounds' ratios, and the ratio of the
    // medians.
    let mut ratios: Vec<f64> = full_runs
        .iter()
        .zip(&bare_runs)
        .map(|(f, b)| f.rps / b.rps)
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "\n{requests} requests per run, {connections} connections, bodies ~{avg_kb} KB; sendtime/bare per round {ratios:.3?}, median {:.3}; of the medians {:.3}",
        ratios[ratios.len() / 2],
        full.rps / bare.rps
    );
}

#[derive(Debug, Clone)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: usize,
}

impl Run {
    fn median(runs: &[Run]) -> Run {
        let med = |f: &dyn Fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        Run {
            rps: med(&|r| r.rps),
            p50_ms: med(&|r| r.p50_ms),
            p99_ms: med(&|r| r.p99_ms),
            failed: runs.iter().map(|r| r.failed).max().unwrap_or(0),
        }
    }
}

async fn load(
    addr: &str,
    path: &str,
    bodies: Arc<Vec<(Vec<u8>, String)>>,
    connections: usize,
) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("http://{addr}{path}");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, next, bodies) =
                (client.clone(), url.clone(), next.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((body, sig)) = bodies.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .header("X-HubSpot-Signature", sig)
                        .header("X-HubSpot-Signature-Version", "v2")
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    // Only what was taken counts: fast refusals would look like speed.
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(t.elapsed());
                        }
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    assert!(!latencies.is_empty(), "every post failed ({failed})");
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    Run {
        rps: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        failed,
    }
}

/// Workflow-action executions as HubSpot posts them, each with its own callback.
fn make_executions(n: usize) -> Vec<(Vec<u8>, String)> {
    let uri = format!("{PUBLIC}/actions/bench-action");
    (0..n)
        .map(|i| {
            let vid = 1_000_000 + i as u64;
            let body = format!(
                r#"{{"callbackId":"ap-62515-{vid}-7-0","origin":{{"portalId":62515,"actionDefinitionId":10646,"actionDefinitionVersion":1}},"context":{{"source":"WORKFLOWS","workflowId":123456}},"object":{{"objectId":{vid},"objectType":"CONTACT","properties":{{"email":"c{vid}@example.com"}}}},"inputFields":{{"delivery_type":"NEXT_24_HOURS"}}}}"#
            )
            .into_bytes();
            let sig = sign_v2(SECRET.as_bytes(), "POST", &uri, &body);
            (body, sig)
        })
        .collect()
}

/// Realistic Contacts v1 bodies: ~150 properties each with a version history, 20–40 KB.
fn make_requests(n: usize) -> Vec<(Vec<u8>, String)> {
    let uri = format!("{PUBLIC}/hooks/bench");
    (0..n)
        .map(|i| {
            let vid = 1_000_000 + i as u64;
            let mut props = format!(
                r#""email":{{"value":"c{vid}@example.com","versions":[{{"value":"c{vid}@example.com","source-type":"API","timestamp":1700000000000,"selected":false}}]}}"#
            );
            let extra = 110 + (i * 7919) % 90; // 110..200 properties
            for p in 0..extra {
                props.push_str(&format!(
                    r#","custom_property_{p}":{{"value":"value {p} for contact {vid}","versions":[{{"value":"value {p} for contact {vid}","source-type":"CRM_UI","source-id":"user-{p}","timestamp":{},"selected":false}}]}}"#,
                    1_700_000_000_000u64 + p as u64
                ));
            }
            let body = format!(
                r#"{{"vid":{vid},"canonical-vid":{vid},"merged-vids":[],"portal-id":62515,"is-contact":true,"properties":{{{props}}},"form-submissions":[],"list-memberships":[],"identity-profiles":[{{"vid":{vid},"identities":[{{"type":"EMAIL","value":"c{vid}@example.com","is-primary":true}}]}}],"merge-audits":[]}}"#
            )
            .into_bytes();
            let sig = sign_v2(SECRET.as_bytes(), "POST", &uri, &body);
            (body, sig)
        })
        .collect()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

/// Start a child and read "listening on ADDR" from its stderr.
fn wait_listening(mut child: Child) -> (Child, String) {
    use std::io::{BufRead, BufReader};
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
    panic!("server exited before listening");
}

fn start_bare() -> (Child, String) {
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--bare-server")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(child)
}

fn start_sendtime(dir: &Path) -> (Child, String) {
    let config = dir.join("webhooks.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[server]\npublic_url = \"{PUBLIC}\"\n[[connector]]\nid = \"main\"\nportal_id = 62515\napp_id = 1\nclient_secret_env = \"BENCH_SECRET\"\naccess_token_env = \"BENCH_TOKEN\"\ndry_run = true\n[[webhook]]\nid = \"bench\"\ntype = \"NEXT_24_HOURS\"\nworkflow_id = 1\n[[action]]\nid = \"bench-action\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sendtime"))
        .arg("--config")
        .arg(&config)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("BENCH_SECRET", SECRET)
        .env("RUST_LOG", "warn,sendtime::serve=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(child)
}

/// The baseline: axum reading the whole body and answering 204.
fn bare_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/bare",
                axum::routing::post(|_body: axum::body::Bytes| async {
                    axum::http::StatusCode::NO_CONTENT
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(1 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eprintln!("listening on {}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}
