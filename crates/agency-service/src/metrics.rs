//! Request metrics in the Prometheus text format, kept by hand: a counter per route, method and
//! status, and a latency histogram per route with fixed buckets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS_S: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; BUCKETS_S.len() + 1],
    sum_s: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// (route, method) → latency.
    latency: BTreeMap<(String, String), Histogram>,
}

/// Counters shared by every request.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let h = inner
            .latency
            .entry((route.to_string(), method.to_string()))
            .or_default();
        let s = elapsed.as_secs_f64();
        let idx = BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS_S.len());
        h.buckets[idx] += 1;
        h.sum_s += s;
        h.count += 1;
    }

    /// The Prometheus text exposition, with gauges for the store appended.
    pub fn render(&self, live_patterns: usize, store_bytes: u64) -> String {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        out.push_str(
            "# HELP agency_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE agency_http_requests_total counter\n");
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "agency_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str(
            "# HELP agency_http_request_duration_seconds HTTP request latency by route and method.\n",
        );
        out.push_str("# TYPE agency_http_request_duration_seconds histogram\n");
        for ((route, method), h) in &inner.latency {
            let labels = format!("route=\"{}\",method=\"{}\"", escape(route), escape(method));
            let mut cumulative = 0;
            for (bound, n) in BUCKETS_S.iter().zip(&h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "agency_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "agency_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "agency_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum_s
            );
            let _ = writeln!(
                out,
                "agency_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP agency_patterns_live Live (not retired) patterns in the store.\n");
        out.push_str("# TYPE agency_patterns_live gauge\n");
        let _ = writeln!(out, "agency_patterns_live {live_patterns}");
        out.push_str("# HELP agency_store_bytes Size of the store's database files on disk.\n");
        out.push_str("# TYPE agency_store_bytes gauge\n");
        let _ = writeln!(out, "agency_store_bytes {store_bytes}");
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe("/health", "GET", 200, Duration::from_micros(500));
        m.observe("/health", "GET", 200, Duration::from_millis(20));
        m.observe("/health", "GET", 503, Duration::from_secs(20));
        let text = m.render(3, 10);
        assert!(text.contains(
            "agency_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "agency_http_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "agency_http_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",le=\"0.025\"} 2"
        ));
        assert!(text.contains(
            "agency_http_request_duration_seconds_bucket{route=\"/health\",method=\"GET\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("agency_patterns_live 3\n"));
    }
}
