//! Verifying many fixes with one suite run (issue 6, "Throughput"). Every fix that passed its
//! cheap checks (parse, re-scan) joins one batch, applied cumulatively in the copy in the order
//! the fixes were made. The suite runs once on the whole batch; when it fails, [`bisect`] finds
//! the fixes that break it, restoring the copy between runs, and only those are rolled back.
//!
//! Fixes of one file build on each other: a fix's edits were computed on the text its
//! predecessor in the same file left. When a fix breaks the tests, the later fixes of its file
//! are rolled back too, with the reason "built on a fix that broke the tests" (re-making them
//! on the restored text would need another round of scans and suite runs).

use std::collections::{BTreeMap, BTreeSet};

use crate::verify::{SuiteRun, run_suite};
use crate::{Attempt, Progress, Session, Status, Tests};

/// Splits `fixes` into (verified, broken) with as few calls of `passes` as bisection allows.
///
/// `passes(set)` applies the fixes in `set` (a sub-sequence of `fixes`, in their order) on top
/// of the untouched state and says whether the suite accepts the result. It is first asked
/// about every fix; when that fails, the first half is tried on top of the fixes already known
/// good, then the second half on top of whatever of the first half was good, recursively. A set
/// whose result is already known (the second half, when the whole first half was good and the
/// two together failed) is not asked again. Both results keep the order of `fixes`.
pub fn bisect(
    fixes: &[usize],
    passes: &mut dyn FnMut(&[usize]) -> bool,
) -> (Vec<usize>, Vec<usize>) {
    let mut good = Vec::with_capacity(fixes.len());
    let mut broken = Vec::new();
    split(fixes, false, &mut good, &mut broken, passes);
    good.sort_by_key(|f| fixes.iter().position(|x| x == f));
    broken.sort_by_key(|f| fixes.iter().position(|x| x == f));
    (good, broken)
}

/// One step of [`bisect`]: `candidates` on top of `good`; `known_failing` when that exact set
/// already failed.
fn split(
    candidates: &[usize],
    known_failing: bool,
    good: &mut Vec<usize>,
    broken: &mut Vec<usize>,
    passes: &mut dyn FnMut(&[usize]) -> bool,
) {
    if candidates.is_empty() {
        return;
    }
    if !known_failing {
        let mut set = good.clone();
        set.extend_from_slice(candidates);
        if passes(&set) {
            good.extend_from_slice(candidates);
            return;
        }
    }
    if let [only] = candidates {
        broken.push(*only);
        return;
    }
    let (first, second) = candidates.split_at(candidates.len() / 2);
    let broken_before = broken.len();
    split(first, false, good, broken, passes);
    // The whole first half was good: `good + second` is the set that just failed.
    let first_all_good = broken.len() == broken_before;
    split(second, first_all_good, good, broken, passes);
}

/// A fix that passed its cheap checks and waits for the suite.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// Its index in the run's attempts.
    pub attempt: usize,
    pub file: String,
    /// The file's text before this fix (after the previous fix of the file, if any).
    pub before: String,
    /// The file's text with this fix.
    pub after: String,
}

/// One run of the suite during a batch, with the batch positions it covered.
struct Run {
    set: BTreeSet<usize>,
    suite: SuiteRun,
    acceptable: bool,
}

/// Runs the suite on the pending fixes as one batch, bisects when it fails, and settles each
/// one: verified (`batch`: how many fixes its suite run verified together), rolled back
/// (breaks the tests, or built on a fix that does), or failed (the suite could not run). The
/// copy and the session's verified texts end with the verified fixes only.
pub(crate) fn settle(
    session: &mut Session,
    attempts: &mut [Attempt],
    pending: &[Pending],
    progress: &dyn Fn(Progress),
) {
    let Some(command) = session.verify.clone() else {
        return;
    };
    if pending.is_empty() {
        return;
    }
    progress(Progress::Batch {
        fixes: pending.len(),
    });
    let copy = session.workspace.root().to_path_buf();
    // Per file, its fixes' positions in the batch, in the order they were made.
    let mut chains: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (pos, p) in pending.iter().enumerate() {
        chains.entry(p.file.as_str()).or_default().push(pos);
    }
    // The text of every file for a set of fixes: per file, its fixes applied up to the first
    // one missing from the set (a later fix cannot be applied without the ones before it).
    let texts = |set: &BTreeSet<usize>| -> BTreeMap<&str, &str> {
        chains
            .iter()
            .map(|(file, chain)| {
                let upto = chain.iter().take_while(|pos| set.contains(pos)).last();
                let text = match upto {
                    Some(&pos) => pending[pos].after.as_str(),
                    None => pending[chain[0]].before.as_str(),
                };
                (*file, text)
            })
            .collect()
    };
    let mut runs: Vec<Run> = Vec::new();
    let mut last_good = texts(&BTreeSet::new());
    let mut error: Option<String> = None;
    let baseline = session.baseline.clone();
    let mut suite_runs = 0;
    let positions: Vec<usize> = (0..pending.len()).collect();
    // The fixes not verified broke the tests, or were never judged (the suite could not run).
    let (verified, _) = bisect(&positions, &mut |set| {
        if error.is_some() {
            return false;
        }
        let set: BTreeSet<usize> = set.iter().copied().collect();
        let state = texts(&set);
        if state == last_good {
            // Nothing new applies (only fixes built on a broken one): the state already passed.
            return true;
        }
        for (file, text) in &state {
            if let Err(e) = std::fs::write(copy.join(file), text.as_bytes()) {
                error = Some(format!("cannot write {file} in the private copy: {e}"));
                return false;
            }
        }
        progress(Progress::Suite);
        let suite = match run_suite(&command, &copy) {
            Ok(suite) => suite,
            Err(e) => {
                error = Some(e.to_string());
                return false;
            }
        };
        suite_runs += 1;
        let acceptable = suite.acceptable_against(baseline.as_ref());
        if acceptable {
            last_good = state;
        }
        runs.push(Run {
            set,
            suite,
            acceptable,
        });
        acceptable
    });
    session.suite_runs += suite_runs;
    // A fix stays only with every earlier fix of its file: its edits were made on their text.
    let passed: BTreeSet<usize> = verified.into_iter().collect();
    let kept: BTreeSet<usize> = chains
        .values()
        .flat_map(|chain| chain.iter().take_while(|pos| passed.contains(pos)).copied())
        .collect();
    // The copy ends with the kept fixes only; the session keeps their texts for `apply`.
    for (file, text) in texts(&kept) {
        // Best effort: the copy is discarded after the run, and `apply` writes `session.fixed`.
        let _ = std::fs::write(copy.join(file), text.as_bytes());
        match chains[file]
            .iter()
            .take_while(|pos| kept.contains(pos))
            .last()
        {
            Some(&last) => {
                session
                    .fixed
                    .insert(file.to_string(), pending[last].after.clone());
            }
            None => {
                session.fixed.remove(file);
            }
        }
    }
    // How many fixes each passing run verified: the kept fixes whose first passing run it is.
    let first_pass = |pos: usize| {
        runs.iter()
            .position(|r| r.acceptable && r.set.contains(&pos))
    };
    let mut per_run: BTreeMap<usize, usize> = BTreeMap::new();
    for &pos in &kept {
        if let Some(run) = first_pass(pos) {
            *per_run.entry(run).or_insert(0) += 1;
        }
    }
    for (pos, p) in pending.iter().enumerate() {
        if kept.contains(&pos) {
            let attempt = &mut attempts[p.attempt];
            if let Some(run) = first_pass(pos) {
                attempt.verification.tests = Tests::Passed;
                attempt.verification.duration_ms += runs[run].suite.duration_ms;
                attempt.verification.suite = Some(runs[run].suite.clone());
                attempt.verification.batch = per_run.get(&run).copied();
            }
            continue;
        }
        if let Some(reason) = &error {
            // The suite could not run: not a verdict on the fix.
            let attempt = &mut attempts[p.attempt];
            attempt.status = Status::Failed;
            attempt.reason = Some(reason.clone());
            continue;
        }
        let chain = &chains[p.file.as_str()];
        if let Some(&by) = chain
            .iter()
            .take_while(|&&c| c < pos)
            .find(|c| !kept.contains(c))
        {
            // Built on a fix of the same file that broke the tests: never tried without it.
            let earlier = &attempts[pending[by].attempt].finding;
            let reason = format!(
                "built on a fix that broke the tests ({} at {}:{})",
                earlier.rule, earlier.file, earlier.line
            );
            let attempt = &mut attempts[p.attempt];
            attempt.status = Status::RolledBack;
            attempt.reason = Some(reason);
            continue;
        }
        let attempt = &mut attempts[p.attempt];
        attempt.status = Status::RolledBack;
        attempt.verification.tests = Tests::Failed;
        // The last failing run with this fix: the one that singled it out.
        if let Some(run) = runs
            .iter()
            .rev()
            .find(|r| !r.acceptable && r.set.contains(&pos))
        {
            attempt.reason = Some(format!(
                "the tests fail with the fix ({})",
                run.suite.describe_failures()
            ));
            attempt.verification.duration_ms += run.suite.duration_ms;
            attempt.verification.suite = Some(run.suite.clone());
            attempt.verification.batch = Some(run.set.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bisects fixes 0..n where `bad` break the suite; returns (verified, broken, calls).
    fn check(n: usize, bad: &[usize]) -> (Vec<usize>, Vec<usize>, usize) {
        let fixes: Vec<usize> = (0..n).collect();
        let mut calls = 0;
        let (verified, broken) = bisect(&fixes, &mut |set| {
            calls += 1;
            !set.iter().any(|f| bad.contains(f))
        });
        (verified, broken, calls)
    }

    #[test]
    fn all_good_costs_one_run() {
        assert_eq!(check(8, &[]), ((0..8).collect(), vec![], 1));
    }

    #[test]
    fn no_fixes_costs_nothing() {
        assert_eq!(check(0, &[]), (vec![], vec![], 0));
    }

    #[test]
    fn one_breaking_fix_among_eight_is_found_in_a_few_runs() {
        for bad in 0..8 {
            let (verified, broken, calls) = check(8, &[bad]);
            assert_eq!(broken, [bad]);
            assert_eq!(verified, (0..8).filter(|&f| f != bad).collect::<Vec<_>>());
            // The whole batch, then at most two runs per halving (3 halvings of 8).
            assert!(calls <= 1 + 2 * 3, "{calls} runs for fix {bad}");
        }
        // The last fix: each first half passes, so each second half is known to fail.
        assert_eq!(check(8, &[7]).2, 4);
        // The first fix: each first half fails, so each second half must be run too.
        assert_eq!(check(8, &[0]).2, 7);
    }

    #[test]
    fn two_breaking_fixes_among_eight_are_both_found() {
        // Each halving that holds a breaking fix costs at most two runs.
        for (a, b, runs) in [(0, 7, 9), (2, 3, 6), (5, 6, 7), (1, 4, 10)] {
            let (verified, broken, calls) = check(8, &[a, b]);
            assert_eq!(broken, [a, b]);
            assert_eq!(verified.len(), 6);
            assert_eq!(calls, runs, "runs for fixes {a} and {b}");
        }
    }

    #[test]
    fn all_bad_ends_with_every_fix_broken() {
        let (verified, broken, calls) = check(8, &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(verified.is_empty());
        assert_eq!(broken, (0..8).collect::<Vec<_>>());
        // The tree of halvings, minus each second half whose result is already known.
        assert_eq!(calls, 15);
    }

    #[test]
    fn fixes_that_break_only_together_are_caught_on_top_of_the_good_ones() {
        // 2 and 5 each pass alone; together they fail: the later one is rolled back.
        let fixes: Vec<usize> = (0..8).collect();
        let (verified, broken) = bisect(&fixes, &mut |set| !(set.contains(&2) && set.contains(&5)));
        assert_eq!(broken, [5]);
        assert_eq!(verified, [0, 1, 2, 3, 4, 6, 7]);
    }

    #[test]
    fn every_set_asked_is_the_good_ones_plus_candidates_in_order() {
        let fixes = [10, 20, 30, 40];
        let mut asked = Vec::new();
        let (verified, broken) = bisect(&fixes, &mut |set| {
            asked.push(set.to_vec());
            !set.contains(&30)
        });
        assert_eq!((verified, broken), (vec![10, 20, 40], vec![30]));
        assert_eq!(
            asked,
            [
                vec![10, 20, 30, 40],
                vec![10, 20],
                vec![10, 20, 30],
                vec![10, 20, 40]
            ]
        );
    }
}
