//! Load generator: zero-latency `POST /subscribe/payments/again` throughput of the sandbox over loopback.
//!
//! ```text
//! cargo run --release -p billd-sandbox --example loadgen -- [--url http://127.0.0.1:8787]
//!     [--concurrency 64] [--duration 10] [--max-requests 2000000]
//!     [--imp-key imp_sandbox_key] [--imp-secret imp_sandbox_secret]
//! ```
//!
//! Without `--url` it starts an in-process sandbox on 127.0.0.1 (zero latency, no faults) and
//! loads that. Each request charges a distinct `merchant_uid` on one approving billing key, over
//! keep-alive connections. The run is bounded by `--duration` seconds and `--max-requests`.
//! Only loopback targets are accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use billd_sandbox::{Sandbox, SandboxConfig, cards};
use serde_json::{Value, json};

struct Args {
    url: Option<String>,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
    imp_key: String,
    imp_secret: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: None,
        concurrency: 64,
        duration: Duration::from_secs(10),
        max_requests: 2_000_000,
        imp_key: billd_sandbox::DEFAULT_IMP_KEY.to_string(),
        imp_secret: billd_sandbox::DEFAULT_IMP_SECRET.to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = Some(value()?.trim_end_matches('/').to_string()),
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--duration" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            "--max-requests" => args.max_requests = value()?.parse()?,
            "--imp-key" => args.imp_key = value()?,
            "--imp-secret" => args.imp_secret = value()?,
            "-h" | "--help" => {
                println!(
                    "usage: loadgen [--url URL] [--concurrency N] [--duration SECS] [--max-requests N] [--imp-key K] [--imp-secret S]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other} (try --help)"),
        }
    }
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(args.duration <= Duration::from_secs(300), "--duration is capped at 300 seconds");
    if let Some(url) = &args.url {
        let rest = url.strip_prefix("http://").unwrap_or("");
        let host = rest.split(['/', ':']).next().unwrap_or("");
        anyhow::ensure!(
            host == "localhost"
                || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
                || rest.starts_with("[::1]"),
            "--url must be a loopback http:// address, got {url}"
        );
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let (_sandbox, base) = match &args.url {
        Some(url) => (None, url.clone()),
        None => {
            let s = Sandbox::start(SandboxConfig::default())?;
            let base = s.base_url();
            (Some(s), base)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(args, base))
}

async fn run(args: Args, base: String) -> anyhow::Result<()> {
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).timeout(Duration::from_secs(10)).build()?;
    let token: Value = http
        .post(format!("{base}/users/getToken"))
        .json(&json!({"imp_key": args.imp_key, "imp_secret": args.imp_secret}))
        .send()
        .await?
        .json()
        .await?;
    let token = token["response"]["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("getToken failed: {token}"))?
        .to_string();
    let customer_uid = format!("loadgen_{}", std::process::id());
    let issued: Value = http
        .post(format!("{base}/subscribe/customers/{customer_uid}"))
        .bearer_auth(&token)
        .json(&json!({"card_number": cards::APPROVE, "expiry": "2099-12", "birth": "900101"}))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(issued["code"] == 0, "billing key issue failed: {issued}");

    let run_id = rand_suffix();
    let stop = Arc::new(AtomicBool::new(false));
    let issued_count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let http = http.clone();
        let url = format!("{base}/subscribe/payments/again");
        let token = token.clone();
        let customer_uid = customer_uid.clone();
        let run_id = run_id.clone();
        let stop = stop.clone();
        let issued_count = issued_count.clone();
        let max = args.max_requests;
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && issued_count.fetch_add(1, Ordering::Relaxed) < max {
                let body = json!({
                    "customer_uid": customer_uid,
                    "merchant_uid": format!("lg{run_id}_{worker}_{i}"),
                    "amount": 9900,
                    "name": "loadgen",
                });
                i += 1;
                let t = Instant::now();
                let outcome = http.post(&url).bearer_auth(&token).json(&body).send().await;
                let ok = match outcome {
                    Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                        Ok(b) => b.windows(15).any(|w| w == b"\"status\":\"paid\""),
                        Err(_) => false,
                    },
                    _ => false,
                };
                stats.latencies_us.push(t.elapsed().as_micros() as u32);
                if ok {
                    stats.ok += 1;
                } else {
                    stats.failed += 1;
                }
            }
            stats
        }));
    }
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Stats::default();
    for t in tasks {
        let s = t.await?;
        total.ok += s.ok;
        total.failed += s.failed;
        total.latencies_us.extend(s.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let n = total.latencies_us.len();
        if n == 0 { 0.0 } else { f64::from(total.latencies_us[((n as f64 * p) as usize).min(n - 1)]) / 1000.0 }
    };
    let done = total.ok + total.failed;
    println!("target        {base}");
    println!("concurrency   {}", args.concurrency);
    println!("elapsed       {elapsed:.2} s");
    println!("requests      {done} ({} paid, {} failed)", total.ok, total.failed);
    println!("throughput    {:.0} requests/s", done as f64 / elapsed);
    println!("latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", pct(0.50), pct(0.90), pct(0.99), pct(1.0));
    anyhow::ensure!(total.failed == 0, "{} requests did not end paid", total.failed);
    Ok(())
}

#[derive(Default)]
struct Stats {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
}

fn rand_suffix() -> String {
    let n: u32 = rand::random();
    format!("{n:08x}")
}
