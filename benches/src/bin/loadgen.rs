//! `loadgen`: a small HTTP/1.1 load generator for the aetherv server.
//!
//! Opens `--connections` keep-alive connections to the server, each one a tokio task issuing
//! GET requests back to back (the next request leaves when the previous body has been read in
//! full). With several `--url`s the requests rotate over them, e.g. many `/api/v1/vms/{id}`
//! URLs. After `--warmup-secs` (not measured) it measures for `--duration-secs`, or until
//! `--requests` requests have completed, and prints one JSON object on stdout:
//!
//! ```text
//! {"url": ..., "urls": 1000, "connections": 64, "requests": N, "errors": E, "non_2xx": X,
//!  "seconds": S, "rps": R, "p50_ms": .., "p90_ms": .., "p99_ms": .., "max_ms": ..,
//!  "bytes_per_response": B}
//! ```
//!
//! `requests` counts the measured requests that received a full answer (any status),
//! `errors` the measured ones that failed (connect, I/O, protocol error or timeout; the
//! connection is then re-opened), `non_2xx` the answers with another status than 2xx. Latencies
//! are those of the answered requests, from sending to having read the whole body.
//! `bytes_per_response` is the mean body size of those answers.
//!
//! ```text
//! cargo run --release -p aetherv-benches --bin loadgen -- \
//!     --url http://127.0.0.1:8000/api/v1/vms --connections 64 --duration-secs 10
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::Uri;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

/// HTTP/1.1 keep-alive load generator printing throughput and latency percentiles as JSON.
#[derive(Debug, Parser)]
#[command(name = "loadgen", about)]
struct Args {
    /// URL to GET (`http://host:port/path`); repeat it to rotate over several URLs, which must
    /// all name the same host and port.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Keep-alive connections, each issuing requests back to back.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured duration in seconds (ignored when `--requests` is given).
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Stop after this many measured requests instead of after `--duration-secs`.
    #[arg(long)]
    requests: Option<u64>,
    /// Unmeasured warm-up in seconds before the measurement starts.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Time limit of one request (sending it and reading the whole body), in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    /// Extra request header `Name: value` (repeatable), e.g. `Accept-Encoding: gzip`.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Worker threads of the runtime (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

/// What every request goes to: one socket address, several request targets.
struct Target {
    /// `host:port` to connect to, also sent as the `Host` header.
    authority: String,
    /// Path and query of each URL, in rotation order.
    paths: Vec<String>,
    /// Extra headers of every request.
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
}

impl Target {
    fn parse(urls: &[String]) -> Result<Self, String> {
        let mut authority: Option<String> = None;
        let mut paths = Vec::with_capacity(urls.len());
        for url in urls {
            let uri: Uri = url
                .parse()
                .map_err(|e| format!("--url {url:?}: not a URL: {e}"))?;
            if uri.scheme_str() != Some("http") {
                return Err(format!("--url {url:?}: only http:// URLs are supported"));
            }
            let Some(auth) = uri.authority() else {
                return Err(format!("--url {url:?}: no host"));
            };
            let auth = if auth.port().is_some() {
                auth.as_str().to_owned()
            } else {
                format!("{}:80", auth.host())
            };
            match &authority {
                None => authority = Some(auth),
                Some(a) if *a == auth => {}
                Some(a) => {
                    return Err(format!(
                        "--url {url:?}: every URL must name the same host and port ({a})"
                    ));
                }
            }
            paths.push(
                uri.path_and_query()
                    .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            );
        }
        let authority = authority.ok_or_else(|| "at least one --url is required".to_owned())?;
        Ok(Self {
            authority,
            paths,
            headers: Vec::new(),
        })
    }

    /// Adds `Name: value` headers to every request.
    fn with_headers(mut self, headers: &[String]) -> Result<Self, String> {
        for header in headers {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| format!("--header {header:?}: expected `Name: value`"))?;
            let name = name
                .trim()
                .parse::<hyper::header::HeaderName>()
                .map_err(|e| format!("--header {header:?}: {e}"))?;
            let value = value
                .trim()
                .parse::<hyper::header::HeaderValue>()
                .map_err(|e| format!("--header {header:?}: {e}"))?;
            self.headers.push((name, value));
        }
        Ok(self)
    }
}

/// Run phases shared by every connection.
struct Plan {
    /// Requests that start before this instant are warm-up.
    measure_from: Instant,
    /// No request starts at or after this instant (duration mode).
    stop_at: Option<Instant>,
    /// Measured requests handed out so far (request-count mode).
    issued: AtomicU64,
    /// Measured request budget (request-count mode).
    budget: Option<u64>,
    /// Time limit of one request.
    timeout: Duration,
}

impl Plan {
    /// Whether a request starting now is measured, or `None` when the run is over.
    fn next(&self, now: Instant) -> Option<bool> {
        if now < self.measure_from {
            return Some(false);
        }
        if let Some(stop) = self.stop_at
            && now >= stop
        {
            return None;
        }
        if let Some(budget) = self.budget
            && self.issued.fetch_add(1, Ordering::Relaxed) >= budget
        {
            return None;
        }
        Some(true)
    }
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    /// Latency of each answered measured request, in nanoseconds.
    latencies: Vec<u64>,
    errors: u64,
    non_2xx: u64,
    body_bytes: u64,
    /// When the last measured request ended.
    last_end: Option<Instant>,
}

async fn connect(authority: &str) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http handshake with {authority} failed: {e}"))?;
    tokio::spawn(async move {
        // The connection ends with an error when the server closes it; the request that was
        // using it reports the failure.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole body; returns the status and the body size.
async fn one_request(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
    path: &str,
) -> Result<(u16, usize), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let mut request = Request::get(path).header(hyper::header::HOST, target.authority.as_str());
    for (name, value) in &target.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.len()))
}

async fn run_connection(index: usize, target: Arc<Target>, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut turn = index;
    loop {
        let start = Instant::now();
        let Some(measured) = plan.next(start) else {
            break;
        };
        let mut current = match sender.take() {
            Some(s) => s,
            None => match tokio::time::timeout(plan.timeout, connect(&target.authority)).await {
                Ok(Ok(s)) => s,
                Ok(Err(_)) | Err(_) => {
                    if measured {
                        tally.errors += 1;
                        tally.last_end = Some(Instant::now());
                    }
                    // Do not spin on a server that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let path = &target.paths[turn % target.paths.len()];
        turn = turn.wrapping_add(1);
        let outcome =
            tokio::time::timeout(plan.timeout, one_request(&mut current, &target, path)).await;
        let end = Instant::now();
        match outcome {
            Ok(Ok((status, bytes))) => {
                sender = Some(current);
                if measured {
                    let nanos = u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
                    tally.latencies.push(nanos);
                    tally.body_bytes += bytes as u64;
                    if !(200..300).contains(&status) {
                        tally.non_2xx += 1;
                    }
                    tally.last_end = Some(end);
                }
            }
            // A failed or timed-out connection is dropped and re-opened for the next request.
            Ok(Err(_)) | Err(_) => {
                if measured {
                    tally.errors += 1;
                    tally.last_end = Some(end);
                }
            }
        }
    }
    tally
}

/// The value at quantile `q` (0..=1) of sorted nanoseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1e6
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn seconds(value: f64, name: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{name}: expected a non-negative number of seconds, got {value}"))
}

async fn run(args: Args, target: Target) -> Result<serde_json::Value, String> {
    let warmup = seconds(args.warmup_secs, "warmup-secs")?;
    let duration = seconds(args.duration_secs, "duration-secs")?;
    let timeout = seconds(args.timeout_secs, "timeout-secs")?;
    if args.connections == 0 {
        return Err("--connections: must be at least 1".to_owned());
    }
    let target = Arc::new(target);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let plan = Arc::new(Plan {
        measure_from,
        stop_at: args.requests.is_none().then(|| measure_from + duration),
        issued: AtomicU64::new(0),
        budget: args.requests,
        timeout,
    });
    let tasks: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(run_connection(i, Arc::clone(&target), Arc::clone(&plan))))
        .collect();
    let mut latencies = Vec::new();
    let (mut errors, mut non_2xx, mut body_bytes) = (0u64, 0u64, 0u64);
    let mut last_end: Option<Instant> = None;
    for task in tasks {
        match task.await {
            Ok(t) => {
                latencies.extend(t.latencies);
                errors += t.errors;
                non_2xx += t.non_2xx;
                body_bytes += t.body_bytes;
                last_end = last_end.max(t.last_end);
            }
            Err(e) => return Err(format!("a connection task failed: {e}")),
        }
    }
    latencies.sort_unstable();
    let answered = latencies.len() as u64;
    let elapsed = last_end
        .map(|end| end.saturating_duration_since(measure_from))
        .unwrap_or_default()
        .as_secs_f64();
    let rps = if elapsed > 0.0 {
        answered as f64 / elapsed
    } else {
        0.0
    };
    let bytes_per_response = if answered > 0 {
        body_bytes as f64 / answered as f64
    } else {
        0.0
    };
    let first_url = args.urls.first().cloned().unwrap_or_default();
    Ok(json!({
        "url": first_url,
        "urls": args.urls.len(),
        "connections": args.connections,
        "requests": answered,
        "errors": errors,
        "non_2xx": non_2xx,
        "seconds": round3(elapsed),
        "rps": round3(rps),
        "p50_ms": round3(percentile_ms(&latencies, 0.50)),
        "p90_ms": round3(percentile_ms(&latencies, 0.90)),
        "p99_ms": round3(percentile_ms(&latencies, 0.99)),
        "max_ms": round3(percentile_ms(&latencies, 1.0)),
        "bytes_per_response": bytes_per_response.round(),
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let target = match Target::parse(&args.urls).and_then(|t| t.with_headers(&args.headers)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, target)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn urls_must_share_one_server() {
        let t = Target::parse(&[
            "http://127.0.0.1:8000/api/v1/vms/a".to_owned(),
            "http://127.0.0.1:8000/api/v1/vms?q=x".to_owned(),
        ])
        .unwrap();
        assert_eq!(t.authority, "127.0.0.1:8000");
        assert_eq!(t.paths, ["/api/v1/vms/a", "/api/v1/vms?q=x"]);
        assert!(
            Target::parse(&[
                "http://127.0.0.1:8000/".to_owned(),
                "http://127.0.0.1:8001/".to_owned()
            ])
            .is_err()
        );
        assert!(Target::parse(&["https://127.0.0.1/".to_owned()]).is_err());
        assert_eq!(
            Target::parse(&["http://localhost/x".to_owned()])
                .unwrap()
                .authority,
            "localhost:80"
        );
    }
}
