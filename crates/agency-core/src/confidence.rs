//! How sure we are that a pattern's fix works: a decayed Beta posterior, auto-apply gating and
//! the retirement rule.
//!
//! Every outcome counts with weight `0.5^(age / half_life)`. Because every weight decays by the
//! same factor, the decayed sums at a later time are the stored sums times one factor, so a
//! pattern keeps just `(decayed successes, decayed failures, as_of)` and never rescans history.
//!
//! With a curated prior of `a` successes and `b` failures (zero for learned patterns):
//!
//! ```text
//! confidence = (1 + a + s) / (2 + a + b + s + f)      s, f: decayed outcome counts
//! ```
//!
//! That is the posterior mean of `Beta(1 + a + s, 1 + b + f)`. One success out of one gives
//! 0.67, nine out of nine 0.91, so a pattern must earn auto-apply (≥ 0.90) with a clean record of
//! about nine verified uses. Retirement looks at evidence only (the prior is belief): after at
//! least `retire_min_attempts` real attempts, a pattern whose Wilson score upper bound on the
//! decayed success rate is below `retire_below_upper` is retired. Five failures in a row retire
//! a pattern; one success in five keeps it for now.

use crate::Applicability;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// The knobs of the estimate; [`ConfidenceParams::default`] holds the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfidenceParams {
    /// An outcome this old counts half (default 90 days).
    pub half_life_days: f64,
    /// Confidence at or above which a `Safe` pattern may be applied without a human (0.90).
    pub auto_apply_at: f64,
    /// Real attempts needed before a pattern can be retired (5).
    pub retire_min_attempts: u32,
    /// Retire when the Wilson upper bound of the success rate falls below this (0.5).
    pub retire_below_upper: f64,
    /// The normal quantile of the Wilson interval (1.96, a 95% interval).
    pub wilson_z: f64,
}

impl Default for ConfidenceParams {
    fn default() -> Self {
        Self {
            half_life_days: 90.0,
            auto_apply_at: 0.90,
            retire_min_attempts: 5,
            retire_below_upper: 0.5,
            wilson_z: 1.96,
        }
    }
}

/// A pattern's track record: its curated prior, raw counts, and decayed counts as of a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackRecord {
    pub prior_successes: f64,
    pub prior_failures: f64,
    pub successes: u32,
    pub failures: u32,
    pub decayed_successes: f64,
    pub decayed_failures: f64,
    /// Unix seconds at which the decayed counts were last brought up to date.
    pub as_of: i64,
}

impl TrackRecord {
    /// A record with a prior and no outcomes yet.
    pub fn with_prior(prior_successes: f64, prior_failures: f64, now: i64) -> Self {
        Self {
            prior_successes: prior_successes.max(0.0),
            prior_failures: prior_failures.max(0.0),
            successes: 0,
            failures: 0,
            decayed_successes: 0.0,
            decayed_failures: 0.0,
            as_of: now,
        }
    }

    /// Real attempts recorded (successes plus failures, undecayed).
    pub fn attempts(&self) -> u32 {
        self.successes + self.failures
    }

    /// Decayed `(successes, failures)` as seen at `now`.
    pub fn decayed_at(&self, now: i64, params: &ConfidenceParams) -> (f64, f64) {
        let factor = decay(now - self.as_of, params);
        (
            self.decayed_successes * factor,
            self.decayed_failures * factor,
        )
    }

    /// Adds one outcome that happened at `at`. An outcome older than `as_of` (it arrived late)
    /// is decayed by its own age instead of moving the record back in time.
    pub fn record(&mut self, success: bool, at: i64, params: &ConfidenceParams) {
        let weight = if at >= self.as_of {
            let (s, f) = self.decayed_at(at, params);
            self.decayed_successes = s;
            self.decayed_failures = f;
            self.as_of = at;
            1.0
        } else {
            decay(self.as_of - at, params)
        };
        if success {
            self.successes += 1;
            self.decayed_successes += weight;
        } else {
            self.failures += 1;
            self.decayed_failures += weight;
        }
    }

    /// The posterior mean success probability at `now` (see the module docs).
    pub fn confidence(&self, now: i64, params: &ConfidenceParams) -> f64 {
        let (s, f) = self.decayed_at(now, params);
        let alpha = 1.0 + self.prior_successes + s;
        let beta = 1.0 + self.prior_failures + f;
        alpha / (alpha + beta)
    }

    /// Why this pattern must be retired at `now`, or `None` while its evidence allows it to stay.
    pub fn retirement(&self, now: i64, params: &ConfidenceParams) -> Option<String> {
        if self.attempts() < params.retire_min_attempts {
            return None;
        }
        let (s, f) = self.decayed_at(now, params);
        let upper = wilson_upper(s, s + f, params.wilson_z);
        (upper < params.retire_below_upper).then(|| {
            format!(
                "{} of {} attempts failed; success rate upper bound {upper:.2} < {:.2}",
                self.failures,
                self.attempts(),
                params.retire_below_upper
            )
        })
    }
}

/// Whether a fix may be applied without asking a human: confident enough, and only for fixes
/// whose applicability is `Safe`.
pub fn auto_apply(
    confidence: f64,
    applicability: Applicability,
    params: &ConfidenceParams,
) -> bool {
    applicability == Applicability::Safe && confidence >= params.auto_apply_at
}

/// The weight of an outcome `age_s` seconds old. Negative ages (clock skew) weigh 1.
pub fn decay(age_s: i64, params: &ConfidenceParams) -> f64 {
    if age_s <= 0 || params.half_life_days <= 0.0 {
        return 1.0;
    }
    0.5_f64.powf(age_s as f64 / (params.half_life_days * SECONDS_PER_DAY))
}

/// The upper bound of the Wilson score interval for `successes` out of `n` (both may be
/// fractional, as decayed counts are). With no evidence the bound is 1.
pub fn wilson_upper(successes: f64, n: f64, z: f64) -> f64 {
    if n <= 0.0 {
        return 1.0;
    }
    let p = (successes / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let margin = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre + margin) / (1.0 + z2 / n)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn record(outcomes: &[(bool, i64)], prior: (f64, f64)) -> TrackRecord {
        let params = ConfidenceParams::default();
        let mut r = TrackRecord::with_prior(prior.0, prior.1, 0);
        for &(ok, at) in outcomes {
            r.record(ok, at, &params);
        }
        r
    }

    fn successes(n: usize, at: i64) -> Vec<(bool, i64)> {
        vec![(true, at); n]
    }

    #[test]
    fn estimate_table() {
        let p = ConfidenceParams::default();
        // (outcomes, prior, now, expected confidence, auto-apply for a Safe fix)
        type Case = (Vec<(bool, i64)>, (f64, f64), i64, f64, bool);
        let cases: Vec<Case> = vec![
            (vec![], (0.0, 0.0), 0, 0.5, false),
            (successes(1, 0), (0.0, 0.0), 0, 2.0 / 3.0, false),
            (successes(8, 0), (0.0, 0.0), 0, 9.0 / 10.0, true),
            (successes(9, 0), (0.0, 0.0), 0, 10.0 / 11.0, true),
            (successes(5, 0), (4.0, 0.0), 0, 10.0 / 11.0, true),
            (vec![(true, 0), (false, 0)], (0.0, 0.0), 0, 0.5, false),
            // Nine clean uses a half-life ago count as 4.5.
            (successes(9, 0), (0.0, 0.0), 90 * DAY, 5.5 / 6.5, false),
        ];
        for (outcomes, prior, now, expected, auto) in cases {
            let r = record(&outcomes, prior);
            let c = r.confidence(now, &p);
            assert!(
                (c - expected).abs() < 1e-9,
                "{outcomes:?} prior {prior:?} at {now}: {c} != {expected}"
            );
            assert_eq!(auto_apply(c, Applicability::Safe, &p), auto, "{outcomes:?}");
        }
    }

    #[test]
    fn one_of_one_is_not_ninety_percent() {
        let r = record(&successes(1, 0), (0.0, 0.0));
        assert!(r.confidence(0, &ConfidenceParams::default()) < 0.7);
    }

    #[test]
    fn unsafe_and_display_only_never_auto_apply() {
        let p = ConfidenceParams::default();
        assert!(!auto_apply(0.99, Applicability::Unsafe, &p));
        assert!(!auto_apply(0.99, Applicability::DisplayOnly, &p));
        assert!(auto_apply(0.90, Applicability::Safe, &p));
        assert!(!auto_apply(0.899, Applicability::Safe, &p));
    }

    #[test]
    fn recent_outcomes_outweigh_old_ones() {
        let p = ConfidenceParams::default();
        // Old successes, recent failures: confidence falls well below a fresh clean record.
        let mut outcomes = successes(10, 0);
        outcomes.extend([(false, 365 * DAY); 3]);
        let r = record(&outcomes, (0.0, 0.0));
        assert!(r.confidence(365 * DAY, &p) < 0.5);
    }

    #[test]
    fn late_outcomes_are_decayed_by_their_own_age() {
        let p = ConfidenceParams::default();
        let mut r = TrackRecord::with_prior(0.0, 0.0, 0);
        r.record(true, 90 * DAY, &p);
        r.record(false, 0, &p);
        assert_eq!(r.as_of, 90 * DAY);
        assert!((r.decayed_failures - 0.5).abs() < 1e-9);
        assert_eq!(r.attempts(), 2);
    }

    #[test]
    fn retirement_table() {
        let p = ConfidenceParams::default();
        let cases: Vec<(Vec<(bool, i64)>, bool)> = vec![
            (vec![(false, 0); 4], false),
            (vec![(false, 0); 5], true),
            (
                vec![(true, 0), (false, 0), (false, 0), (false, 0), (false, 0)],
                false,
            ),
            (
                {
                    let mut v = vec![(true, 0)];
                    v.extend([(false, 0); 7]);
                    v
                },
                true,
            ),
            (successes(20, 0), false),
        ];
        for (outcomes, retire) in cases {
            // A generous prior does not shield a failing pattern from retirement.
            let r = record(&outcomes, (6.0, 0.0));
            assert_eq!(r.retirement(0, &p).is_some(), retire, "{outcomes:?}");
        }
    }

    #[test]
    fn wilson_upper_bounds() {
        assert!((wilson_upper(0.0, 0.0, 1.96) - 1.0).abs() < 1e-12);
        let u = wilson_upper(0.0, 5.0, 1.96);
        assert!((u - 3.8416 / 8.8416).abs() < 1e-4, "{u}");
        assert!(wilson_upper(10.0, 10.0, 1.96) <= 1.0);
        assert!(wilson_upper(5.0, 10.0, 1.96) > 0.5);
    }

    proptest::proptest! {
        #[test]
        fn confidence_is_a_probability(
            outcomes in proptest::collection::vec((proptest::bool::ANY, 0_i64..(1000 * DAY)), 0..60),
            prior_s in 0.0_f64..20.0,
            prior_f in 0.0_f64..20.0,
            later in 0_i64..(1000 * DAY),
        ) {
            let p = ConfidenceParams::default();
            let mut r = TrackRecord::with_prior(prior_s, prior_f, 0);
            for (ok, at) in &outcomes {
                r.record(*ok, *at, &p);
            }
            let c = r.confidence(r.as_of + later, &p);
            proptest::prop_assert!(c > 0.0 && c < 1.0);
            proptest::prop_assert_eq!(r.attempts() as usize, outcomes.len());
        }
    }
}
