//! Calibration of the confidence estimate (LEARNING.md §8 check 7: "in replayed outcomes,
//! patterns at ≥ 0.90 succeed ≥ 90% of the time").
//!
//! [`replay`] walks each pattern's recorded outcomes in time order. Before each outcome it asks
//! the pattern's track record, rebuilt from its prior and the outcomes before this one, what
//! the confidence was at that moment ([`TrackRecord::confidence`], the store's own estimate
//! with its decay), puts the outcome in that confidence's bucket, and only then records it. A
//! bucket's success rate is then what the patterns it holds actually did: a calibrated
//! estimate has patterns at ≥ 0.90 succeed at least 90% of the time. When they do not, the
//! auto-apply bar is too low (LEARNING.md §5: tighten it).
//!
//! The replay starts every pattern from its prior at its creation. The counts an imported
//! pattern brought with it have no outcome rows, so they are not replayed; the success a
//! pattern learned from a heal starts with is an outcome row and is replayed like any other.

use agency_core::confidence::{ConfidenceParams, TrackRecord};

/// Confidence at or above which a pattern is expected to succeed at least this often: the
/// default auto-apply bar, and the success rate check 7 asks of it.
pub const CALIBRATION_TARGET: f64 = 0.9;

/// The lower edges of the confidence buckets; a bucket runs to the next edge (exclusive), the
/// last one, from [`CALIBRATION_TARGET`], to 1.
pub const BUCKET_EDGES: [f64; 4] = [0.0, 0.5, 0.7, CALIBRATION_TARGET];

/// One pattern's history as recorded: its curated prior, when it was created, and its outcomes
/// `(unix seconds, success)` in any order.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// `(successes, failures)` of the curated prior (zero for learned patterns).
    pub prior: (f64, f64),
    pub created_at: i64,
    pub outcomes: Vec<(i64, bool)>,
}

/// The outcomes that happened while a pattern's confidence was in `[from, to)` (`to` is 1,
/// inclusive, for the last bucket).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub from: f64,
    pub to: f64,
    pub outcomes: u64,
    pub successes: u64,
}

impl Bucket {
    /// Successes ÷ outcomes; `None` without outcomes.
    pub fn success_rate(&self) -> Option<f64> {
        (self.outcomes > 0).then(|| self.successes as f64 / self.outcomes as f64)
    }
}

/// What a replay found: one bucket per [`BUCKET_EDGES`] entry, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub buckets: Vec<Bucket>,
    /// Patterns with at least one outcome.
    pub patterns: usize,
    /// Outcomes replayed.
    pub outcomes: u64,
}

impl Calibration {
    /// The bucket of confidence ≥ [`CALIBRATION_TARGET`].
    pub fn top(&self) -> &Bucket {
        self.buckets
            .last()
            .expect("a calibration always has every bucket")
    }

    /// Whether patterns at ≥ 0.90 succeeded at least 90% of the time; `None` when no outcome
    /// happened at that confidence (nothing to judge).
    pub fn calibrated(&self) -> Option<bool> {
        self.top()
            .success_rate()
            .map(|rate| rate >= CALIBRATION_TARGET)
    }
}

/// The index in [`BUCKET_EDGES`] of the bucket holding `confidence`.
fn bucket_of(confidence: f64) -> usize {
    BUCKET_EDGES
        .iter()
        .rposition(|edge| confidence >= *edge)
        .unwrap_or(0)
}

/// Replays every history with the confidence estimate of `params` (see the module docs).
pub fn replay<'a>(
    histories: impl IntoIterator<Item = &'a History>,
    params: &ConfidenceParams,
) -> Calibration {
    let mut buckets: Vec<Bucket> = BUCKET_EDGES
        .iter()
        .enumerate()
        .map(|(idx, from)| Bucket {
            from: *from,
            to: BUCKET_EDGES.get(idx + 1).copied().unwrap_or(1.0),
            outcomes: 0,
            successes: 0,
        })
        .collect();
    let mut patterns = 0;
    let mut outcomes = 0;
    for history in histories {
        if history.outcomes.is_empty() {
            continue;
        }
        patterns += 1;
        let mut ordered = history.outcomes.clone();
        // Stable: outcomes at the same second keep the order they were recorded in.
        ordered.sort_by_key(|(at, _)| *at);
        let mut track =
            TrackRecord::with_prior(history.prior.0, history.prior.1, history.created_at);
        for (at, success) in ordered {
            let bucket = &mut buckets[bucket_of(track.confidence(at, params))];
            bucket.outcomes += 1;
            bucket.successes += u64::from(success);
            outcomes += 1;
            track.record(success, at, params);
        }
    }
    Calibration {
        buckets,
        patterns,
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Rng;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_795_000_000;

    fn history(outcomes: &[bool], start: i64, gap_s: i64) -> History {
        History {
            prior: (0.0, 0.0),
            created_at: start,
            outcomes: outcomes
                .iter()
                .enumerate()
                .map(|(idx, ok)| (start + gap_s * idx as i64, *ok))
                .collect(),
        }
    }

    #[test]
    fn patterns_used_at_their_true_rates_are_calibrated() {
        let params = ConfidenceParams::default();
        let mut rng = Rng::new(7);
        let mut histories = Vec::new();
        for p in [0.3, 0.6, 0.85, 0.95, 0.99] {
            for _ in 0..20 {
                let outcomes: Vec<bool> = (0..200).map(|_| rng.unit() < p).collect();
                // Four uses a day for 50 days: decay matters but does not dominate.
                histories.push(history(&outcomes, T0, DAY / 4));
            }
        }
        let c = replay(&histories, &params);
        assert_eq!(c.patterns, 100);
        assert_eq!(c.outcomes, 100 * 200);
        assert_eq!(
            c.buckets.iter().map(|b| b.outcomes).sum::<u64>(),
            c.outcomes
        );
        let top = c.top();
        assert!(top.outcomes > 1_000, "{c:#?}");
        assert!(top.success_rate().unwrap() >= CALIBRATION_TARGET, "{c:#?}");
        assert_eq!(c.calibrated(), Some(true));
        // More confidence, more success: the estimate orders patterns as they behave.
        let rates: Vec<f64> = c.buckets.iter().filter_map(Bucket::success_rate).collect();
        assert_eq!(rates.len(), BUCKET_EDGES.len(), "{c:#?}");
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
    }

    #[test]
    fn a_pattern_that_turns_bad_after_earning_trust_is_not_calibrated() {
        let params = ConfidenceParams::default();
        let outcomes: Vec<bool> = (0..40).map(|idx| idx < 12).collect();
        // All at one moment, so nothing decays: before an outcome with `s` successes and `f`
        // failures behind it, the confidence is the posterior mean (1 + s) / (2 + s + f).
        let mut expected = vec![(0_u64, 0_u64); BUCKET_EDGES.len()];
        let (mut s, mut f) = (0.0, 0.0);
        for ok in &outcomes {
            let confidence: f64 = (1.0 + s) / (2.0 + s + f);
            let idx = BUCKET_EDGES
                .iter()
                .rposition(|edge| confidence >= *edge)
                .unwrap();
            expected[idx].0 += 1;
            expected[idx].1 += u64::from(*ok);
            if *ok {
                s += 1.0;
            } else {
                f += 1.0;
            }
        }
        let c = replay(&[history(&outcomes, T0, 0)], &params);
        let got: Vec<(u64, u64)> = c
            .buckets
            .iter()
            .map(|b| (b.outcomes, b.successes))
            .collect();
        assert_eq!(got, expected);
        // It reached ≥ 0.90 while succeeding, then failed there: below the target.
        let top = c.top();
        assert!(top.outcomes > 0 && top.outcomes > top.successes, "{c:#?}");
        assert!(top.success_rate().unwrap() < CALIBRATION_TARGET, "{c:#?}");
        assert_eq!(c.calibrated(), Some(false));
        // Beside a pattern that earns trust and keeps it (60 clean uses, the last 52 at ≥ 9/10),
        // the bucket is judged on both: (4 + 52) of (5 + 52) clear the target.
        let good = history(&[true; 60], T0, 0);
        let both = replay(&[history(&outcomes, T0, 0), good], &params);
        assert_eq!(both.patterns, 2);
        assert_eq!(
            (both.top().outcomes, both.top().successes),
            (top.outcomes + 52, top.successes + 52)
        );
        assert_eq!(both.calibrated(), Some(true));
    }

    #[test]
    fn the_replay_uses_the_prior_the_decay_and_time_order() {
        let params = ConfidenceParams::default();
        // Nine clean uses make 10/11 ≥ 0.90; two years later they weigh almost nothing, so
        // the tenth use happens at about 0.5 confidence, not in the top bucket.
        let mut h = history(&[true; 9], T0, 0);
        h.outcomes.push((T0 + 730 * DAY, true));
        let c = replay(&[h.clone()], &params);
        // Before the n-th use of the first nine, the confidence is n / (n + 1): 1/2 and 2/3,
        // then 3/4 to 8/9, then 9/10 for the ninth; the tenth adds one at about 0.5.
        let counts: Vec<u64> = c.buckets.iter().map(|b| b.outcomes).collect();
        assert_eq!(counts, [0, 3, 6, 1], "{c:#?}");
        // Without decay the tenth use would have happened at 10/11.
        let undecayed = ConfidenceParams {
            half_life_days: 0.0,
            ..params
        };
        assert_eq!(replay(&[h.clone()], &undecayed).top().outcomes, 2);
        // The same outcomes listed out of order replay the same.
        h.outcomes.reverse();
        assert_eq!(replay(&[h], &params), c);
        // A curated prior of 8 clean uses puts the very first outcome at ≥ 0.90.
        let seeded = History {
            prior: (8.0, 0.0),
            ..history(&[false], T0, 0)
        };
        let c = replay(&[seeded], &params);
        assert_eq!((c.top().outcomes, c.top().successes), (1, 0));
    }

    #[test]
    fn no_outcomes_judge_nothing() {
        let params = ConfidenceParams::default();
        let c = replay(&[history(&[], T0, 0)], &params);
        assert_eq!((c.patterns, c.outcomes), (0, 0));
        assert_eq!(c.calibrated(), None);
        assert!(c.buckets.iter().all(|b| b.success_rate().is_none()));
        // A history below the bar only: still nothing to judge at ≥ 0.90.
        let c = replay(&[history(&[true, false, true], T0, DAY)], &params);
        assert_eq!(c.outcomes, 3);
        assert_eq!(c.calibrated(), None);
    }
}
