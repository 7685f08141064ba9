//! Latency summaries of measured durations (nearest-rank percentiles), shared by every
//! benchmark report: the pattern store's, the load test's and the scanner's.

use std::time::Duration;

use serde::Serialize;

/// Latency percentiles of one measured operation, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises measured durations (all zero when there are none).
    pub fn from_samples(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let mean_ms = if ms.is_empty() {
            0.0
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        };
        Self {
            samples: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p95_ms: percentile(&ms, 95.0),
            p99_ms: percentile(&ms, 99.0),
            mean_ms,
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of ascending `sorted` samples; 0 when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        let cases: &[(&[f64], f64, f64)] = &[
            (&sorted, 50.0, 50.0),
            (&sorted, 95.0, 95.0),
            (&sorted, 99.0, 99.0),
            (&sorted, 100.0, 100.0),
            (&sorted, 0.0, 1.0),
            (&[1.0, 2.0, 3.0, 4.0], 50.0, 2.0),
            (&[1.0, 2.0, 3.0, 4.0], 51.0, 3.0),
            (&[7.0], 99.0, 7.0),
            (&[], 50.0, 0.0),
        ];
        for (samples, p, expected) in cases {
            let got = percentile(samples, *p);
            assert!(
                (got - expected).abs() < 1e-12,
                "p{p} of {} samples: {got}",
                samples.len()
            );
        }
    }

    #[test]
    fn latency_sorts_its_samples() {
        let samples: Vec<Duration> = [5, 1, 4, 2, 3].map(Duration::from_millis).to_vec();
        let l = Latency::from_samples(&samples);
        assert_eq!(l.samples, 5);
        assert!((l.p50_ms - 3.0).abs() < 1e-9, "{l:?}");
        assert!((l.p99_ms - 5.0).abs() < 1e-9, "{l:?}");
        assert!((l.mean_ms - 3.0).abs() < 1e-9, "{l:?}");
        assert!((l.max_ms - 5.0).abs() < 1e-9, "{l:?}");
        assert_eq!(Latency::from_samples(&[]).samples, 0);
    }
}
