//! The load generator behind `agency patterns bench --http`: many concurrent clients of a
//! running service, each an OS thread with its own [`HttpClient`] (its own keep-alive
//! connection), on a mixed workload of queries and outcome writes.
//!
//! Clients are paced (open loop): with a total `rate`, each client sends on a fixed schedule of
//! `clients / rate` seconds, and a request's latency is counted from the time it was *due*, not
//! from when it went out, so a service that falls behind is charged for the queue it causes
//! (no coordinated omission). With `rate` 0 each client sends as soon as its previous request
//! returned (closed loop): the service's capacity, with latencies that are mostly queueing.
//!
//! Retries are off unless the options enable them: every refusal is counted as an error. Each
//! write carries a unique idempotency key; afterwards every written pattern's outcome count is
//! compared with the writes the service acknowledged. The same query texts run through an
//! in-process client first, as the baseline of the same run.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use agency_core::contract::SCHEMA_VERSION;
use agency_patterns::bench::Latency;
use serde::Serialize;

use crate::PatternClient;
use crate::error::{Error, Result};
use crate::http::{HttpClient, HttpOptions};
use crate::wire::{OutcomeRequest, QueryRequest};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The service, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The bearer token; writes fail with 401 without it.
    pub token: Option<String>,
    /// Concurrent clients (threads, one connection each).
    pub clients: usize,
    /// How long the load runs.
    pub duration: Duration,
    /// Requests per second over all clients; 0 for a closed loop (as fast as answers come).
    pub rate: f64,
    /// Fraction of requests that are outcome writes (the rest are queries).
    pub write_fraction: f64,
    /// Query texts, each sent as `{"text", "k"}`.
    pub queries: Vec<String>,
    /// Patterns that writes report outcomes for.
    pub write_patterns: Vec<String>,
    /// `k` of every query.
    pub k: usize,
    /// Prefix of the idempotency keys, unique per run so that runs do not collide.
    pub run_id: String,
    /// Seed of the clients' choices (operation, text, pattern, success).
    pub seed: u64,
    /// Baseline passes over the query texts (after one warm-up pass).
    pub baseline_rounds: usize,
    /// Timeouts of the load clients; `max_attempts` 1 counts every refusal as an error.
    pub http: HttpOptions,
}

/// Latency and count of one kind of request under load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpReport {
    /// Requests answered with success.
    pub ok: u64,
    /// Successful requests per second of the load phase.
    pub per_s: f64,
    /// Latency of successful requests, from the time each was due.
    pub latency: Latency,
}

/// Acknowledged writes against what the store holds afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteCheck {
    /// Patterns written to.
    pub patterns: usize,
    /// Writes the service answered 200 with `recorded: true`.
    pub acknowledged: u64,
    /// New outcomes found on those patterns afterwards (successes plus failures, undecayed).
    pub present: u64,
    /// Acknowledged writes not found: must be 0.
    pub missing: u64,
    /// Outcomes found beyond the acknowledged ones: writes that failed on the client side (a
    /// timeout) after the service had applied them.
    pub unacknowledged_present: u64,
}

/// Everything one load run measured (`agency patterns bench --http --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    pub version: u32,
    pub url: String,
    pub clients: usize,
    /// The requested total rate (0: closed loop).
    pub target_rate: f64,
    pub write_fraction: f64,
    /// Distinct query texts.
    pub query_texts: usize,
    pub k: usize,
    /// The load phase's measured length.
    pub duration_s: f64,
    /// Requests sent in the load phase, answered or not.
    pub requests: u64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    pub queries: OpReport,
    pub writes: OpReport,
    /// Failed requests by kind: `http_<status>_<code>`, `timeout`, `connection`, ….
    pub errors: BTreeMap<String, u64>,
    pub errors_total: u64,
    /// Requests that went out more than 10 ms after they were due, because the client's
    /// previous request was still running (paced runs only).
    pub late_sends: u64,
    pub write_check: WriteCheck,
    /// One client, no load: the same queries over HTTP, one at a time.
    pub http_idle: Latency,
    /// The same queries through the store opened in this process (absent without a store).
    pub in_process: Option<Latency>,
    /// Query p50 under load over the in-process p50.
    pub ratio_p50: Option<f64>,
    /// Query p99 under load over the in-process p99.
    pub ratio_p99: Option<f64>,
}

/// A small deterministic generator (splitmix64): the clients' choices repeat with the seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A failed request's kind, for the error table.
pub fn error_kind(e: &Error) -> String {
    match e {
        Error::Api { status, code, .. } => format!("http_{status}_{code}"),
        Error::BadResponse { status, .. } => format!("bad_response_{status}"),
        Error::Unreachable { source, .. } => match &**source {
            ureq::Error::Timeout(t) => format!("timeout_{t:?}").to_lowercase(),
            ureq::Error::Io(io) => format!("io_{:?}", io.kind()).to_lowercase(),
            other => format!(
                "connection_{}",
                other.to_string().split(':').next().unwrap_or("other")
            )
            .replace(' ', "_"),
        },
        other => other.code().unwrap_or("other").to_string(),
    }
}

/// What one client thread saw.
#[derive(Debug, Default)]
struct ClientResult {
    requests: u64,
    query_ms: Vec<Duration>,
    write_ms: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    late: u64,
    acked: BTreeMap<usize, u64>,
}

/// Runs the whole benchmark: baseline through `in_process` (if given), idle HTTP latency, the
/// load, then the write check. `progress` gets a stage name.
pub fn run(
    opts: &LoadOptions,
    in_process: Option<&dyn PatternClient>,
    progress: &mut dyn FnMut(&str),
) -> Result<LoadReport> {
    if opts.queries.is_empty() || opts.clients == 0 {
        return Err(Error::Invalid {
            code: "invalid_load",
            message: "the load needs at least one client and one query text".into(),
        });
    }
    // Setup uses retries: it is not what is measured.
    let setup = HttpClient::new(&opts.url, opts.token.clone(), HttpOptions::default())?;
    setup.health()?;
    let before = outcome_counts(&setup, &opts.write_patterns)?;

    progress("warming the service's query cache");
    for text in &opts.queries {
        setup.query(&query(text, opts.k))?;
    }
    let in_process_latency = match in_process {
        Some(client) => {
            progress("in-process baseline");
            Some(measure_sequential(client, opts, opts.baseline_rounds)?)
        }
        None => None,
    };
    progress("idle HTTP latency");
    let http_idle = measure_sequential(&setup, opts, 1)?;

    progress("load");
    let (results, elapsed) = load(opts)?;

    progress("checking acknowledged writes");
    let after = outcome_counts(&setup, &opts.write_patterns)?;
    let mut merged = ClientResult::default();
    for r in results {
        merged.requests += r.requests;
        merged.query_ms.extend(r.query_ms);
        merged.write_ms.extend(r.write_ms);
        merged.late += r.late;
        for (k, v) in r.errors {
            *merged.errors.entry(k).or_default() += v;
        }
        for (k, v) in r.acked {
            *merged.acked.entry(k).or_default() += v;
        }
    }
    let mut check = WriteCheck {
        patterns: opts.write_patterns.len(),
        acknowledged: merged.acked.values().sum(),
        present: 0,
        missing: 0,
        unacknowledged_present: 0,
    };
    for (idx, (b, a)) in before.iter().zip(&after).enumerate() {
        let present = a.saturating_sub(*b);
        let acked = merged.acked.get(&idx).copied().unwrap_or(0);
        check.present += present;
        check.missing += acked.saturating_sub(present);
        check.unacknowledged_present += present.saturating_sub(acked);
    }
    let secs = elapsed.as_secs_f64().max(f64::EPSILON);
    let op = |samples: &[Duration]| OpReport {
        ok: samples.len() as u64,
        per_s: samples.len() as f64 / secs,
        latency: Latency::from_samples(samples),
    };
    let queries = op(&merged.query_ms);
    let writes = op(&merged.write_ms);
    let ratio = |load: f64, base: f64| (base > 0.0).then(|| load / base);
    Ok(LoadReport {
        version: SCHEMA_VERSION,
        url: setup.url().to_string(),
        clients: opts.clients,
        target_rate: opts.rate,
        write_fraction: opts.write_fraction,
        query_texts: opts.queries.len(),
        k: opts.k,
        duration_s: secs,
        requests: merged.requests,
        throughput_rps: (queries.ok + writes.ok) as f64 / secs,
        ratio_p50: in_process_latency.and_then(|b| ratio(queries.latency.p50_ms, b.p50_ms)),
        ratio_p99: in_process_latency.and_then(|b| ratio(queries.latency.p99_ms, b.p99_ms)),
        queries,
        writes,
        errors_total: merged.errors.values().sum(),
        errors: merged.errors,
        late_sends: merged.late,
        write_check: check,
        http_idle,
        in_process: in_process_latency,
    })
}

fn query(text: &str, k: usize) -> QueryRequest {
    QueryRequest {
        k: Some(k),
        ..QueryRequest::new(text)
    }
}

/// Outcomes recorded so far (successes plus failures) of each pattern.
fn outcome_counts(client: &dyn PatternClient, ids: &[String]) -> Result<Vec<u64>> {
    ids.iter()
        .map(|id| {
            let view = client.show(id)?;
            Ok(u64::from(view.successes) + u64::from(view.failures))
        })
        .collect()
}

/// One warm-up pass over the query texts, then `rounds` measured passes, one at a time.
fn measure_sequential(
    client: &dyn PatternClient,
    opts: &LoadOptions,
    rounds: usize,
) -> Result<Latency> {
    for text in &opts.queries {
        client.query(&query(text, opts.k))?;
    }
    let mut samples = Vec::with_capacity(opts.queries.len() * rounds);
    for _ in 0..rounds {
        for text in &opts.queries {
            let started = Instant::now();
            client.query(&query(text, opts.k))?;
            samples.push(started.elapsed());
        }
    }
    Ok(Latency::from_samples(&samples))
}

/// The load phase: every client on its own thread, started together.
fn load(opts: &LoadOptions) -> Result<(Vec<ClientResult>, Duration)> {
    // Connect every client before the clock starts, so that the load measures requests, not
    // 200 TCP handshakes at once.
    let clients = (0..opts.clients)
        .map(|_| HttpClient::new(&opts.url, opts.token.clone(), opts.http))
        .collect::<Result<Vec<_>>>()?;
    let barrier = Arc::new(Barrier::new(opts.clients + 1));
    let shared = Arc::new(opts.clone());
    let mut handles = Vec::with_capacity(opts.clients);
    for (idx, client) in clients.into_iter().enumerate() {
        let barrier = Arc::clone(&barrier);
        let opts = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name(format!("load-{idx}"))
            .stack_size(256 << 10)
            .spawn(move || {
                // Opens the connection (and checks the service) before the start.
                let _ = client.health();
                barrier.wait();
                client_loop(&client, &opts, idx)
            })
            .map_err(|e| Error::Invalid {
                code: "threads",
                message: format!("cannot start load client thread {idx}: {e}"),
            })?;
        handles.push(handle);
    }
    barrier.wait();
    let started = Instant::now();
    let results = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    Ok((results, started.elapsed()))
}

fn client_loop(client: &HttpClient, opts: &LoadOptions, idx: usize) -> ClientResult {
    let mut rng = Rng(opts.seed ^ (idx as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut out = ClientResult::default();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let interval = if opts.rate > 0.0 {
        Some(Duration::from_secs_f64(opts.clients as f64 / opts.rate))
    } else {
        None
    };
    // Spread the clients' schedules over one interval so that they do not send in waves.
    let mut due = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.unit()));
    let mut seq = 0_u64;
    loop {
        let now = Instant::now();
        let from = if let Some(i) = interval {
            if due >= deadline {
                break;
            }
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_millis(10) {
                out.late += 1;
            }
            let from = due;
            due += i;
            from
        } else {
            if now >= deadline {
                break;
            }
            now
        };
        out.requests += 1;
        if rng.unit() < opts.write_fraction && !opts.write_patterns.is_empty() {
            let pattern = rng.below(opts.write_patterns.len());
            let mut req = OutcomeRequest::new(&opts.write_patterns[pattern], rng.unit() < 0.9);
            req.idempotency_key = Some(format!("{}-{idx}-{seq}", opts.run_id));
            seq += 1;
            match client.record_outcome(&req) {
                Ok(result) => {
                    out.write_ms.push(from.elapsed());
                    if result.recorded {
                        *out.acked.entry(pattern).or_default() += 1;
                    }
                }
                Err(e) => *out.errors.entry(error_kind(&e)).or_default() += 1,
            }
        } else {
            let text = &opts.queries[rng.below(opts.queries.len())];
            match client.query(&query(text, opts.k)) {
                Ok(_) => out.query_ms.push(from.elapsed()),
                Err(e) => *out.errors.entry(error_kind(&e)).or_default() += 1,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_in_range() {
        let mut a = Rng(42);
        let mut b = Rng(42);
        for _ in 0..1000 {
            let x = a.unit();
            assert_eq!(x.to_bits(), b.unit().to_bits());
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(7) < 7);
            b.below(7);
        }
    }

    #[test]
    fn error_kinds_are_short_and_stable() {
        let e = Error::Api {
            method: "POST",
            url: "http://x/v1/outcomes".into(),
            status: 503,
            code: "overloaded".into(),
            message: "m".into(),
            hint: String::new(),
        };
        assert_eq!(error_kind(&e), "http_503_overloaded");
        let e = Error::Unreachable {
            url: "u".into(),
            attempts: 1,
            source: Box::new(ureq::Error::Timeout(ureq::Timeout::RecvResponse)),
        };
        assert_eq!(error_kind(&e), "timeout_recvresponse");
    }

    #[test]
    fn nothing_to_send_is_refused_before_connecting() {
        let opts = LoadOptions {
            url: "http://127.0.0.1:1".into(),
            token: None,
            clients: 1,
            duration: Duration::from_secs(1),
            rate: 0.0,
            write_fraction: 0.1,
            queries: vec![],
            write_patterns: vec![],
            k: 5,
            run_id: "t".into(),
            seed: 1,
            baseline_rounds: 1,
            http: HttpOptions::default(),
        };
        let err = run(&opts, None, &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), Some("invalid_load"));
    }
}
