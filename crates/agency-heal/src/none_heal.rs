//! Runtime NoneType crashes healed by agency's own fixers ([`crate::runtime`]): the candidates
//! are tried in their order of fit, and where the crash can be driven from a test, a candidate
//! is taken only if a regression test that fails before it passes with it. The test is run in
//! the private copy on its own (the project's pytest, one node id), then taken out again: the
//! heal's suite run verifies the fix as any other, and the test is written beside the fix when
//! the fix is kept.

use std::time::Duration;

use agency_core::contract::Finding;

use crate::runtime::{self, Crash};
use crate::verify::{self, SuiteRun, VerifyCommand};
use crate::{Ctx, Regression, RegressionTest};

/// The rules of the None crashes agency fixes itself.
const NONE_RULES: &[&str] = &[
    "none-attribute",
    "none-subscript",
    "none-call",
    "none-iteration",
];

/// How long a regression test may run.
const TEST_TIMEOUT: Duration = Duration::from_mins(2);

/// The crash a runtime finding reports, if it is a None crash agency can fix.
pub(crate) fn crash(finding: &Finding) -> Option<Crash<'_>> {
    (finding.category == "runtime" && NONE_RULES.contains(&finding.rule.as_str())).then_some(
        Crash {
            rule: finding.rule.as_str(),
            line: finding.line,
            column: finding.column,
            end_column: finding.end_column,
        },
    )
}

/// Whether one of agency's None fixers has a candidate for `finding` in `text`.
pub(crate) fn has_fix(finding: &Finding, text: &str) -> bool {
    crash(finding).is_some_and(|c| !runtime::none_fixes(text, &c).is_empty())
}

/// A dry run's proposal for a None crash: the best-fitting candidate's diff, not verified.
/// `None` when the finding is not such a crash or no candidate fits.
pub(crate) fn preview(root: &std::path::Path, finding: &Finding) -> Option<crate::Attempt> {
    let crash = crash(finding)?;
    let text = std::fs::read_to_string(root.join(&finding.file)).ok()?;
    let fix = runtime::none_fixes(&text, &crash).into_iter().next()?;
    let mut attempt = crate::Attempt::without_fix(
        finding,
        crate::Status::Skipped,
        format!(
            "dry run: proposed ({}), not verified, not applied",
            fix.summary
        ),
    );
    attempt.strategy = Some(crate::Strategy::Rule);
    attempt.file = Some(finding.file.clone());
    attempt.diff = crate::diff::unified(&finding.file, &text, &fix.after);
    Some(attempt)
}

/// The fix that was chosen, and its regression test (or why there is none).
pub(crate) struct Made {
    pub after: String,
    pub summary: String,
    pub regression: Regression,
}

/// Chooses the fix of a None crash in `rel` (whose text in the copy is `before`): the first
/// candidate whose regression test fails before it and passes with it; a candidate without a
/// possible test is taken as it is (the suite still verifies it). `Err`: why no candidate
/// holds.
pub(crate) fn make(
    ctx: &Ctx<'_>,
    rel: &str,
    before: &str,
    finding: &Finding,
) -> Result<Made, String> {
    let Some(crash) = crash(finding) else {
        return Err(format!("{} is not a None crash agency fixes", finding.rule));
    };
    let fixes = runtime::none_fixes(before, &crash);
    if fixes.is_empty() {
        return Err(format!(
            "no None fix of agency's fits {rel}:{} (the expression has effects, or the crash is outside a function)",
            finding.line
        ));
    }
    let files: Vec<String> = ctx.workspace.files().map(ToString::to_string).collect();
    let runner = ctx.verify.and_then(single_test_command);
    let mut refused: Vec<String> = Vec::new();
    for fix in &fixes {
        let test = match runtime::regression_test(&files, rel, before, &crash, fix) {
            Ok(test) => test,
            Err(no) => {
                return Ok(Made {
                    after: fix.after.clone(),
                    summary: fix.summary.clone(),
                    regression: Regression::None(no.reason),
                });
            }
        };
        let Some(runner) = &runner else {
            return Ok(Made {
                after: fix.after.clone(),
                summary: fix.summary.clone(),
                regression: Regression::None(
                    "the verify command is not pytest, so no regression test can be run".into(),
                ),
            });
        };
        let test = RegressionTest {
            path: test.path,
            text: test.text,
            node_id: test.node_id,
        };
        match check_test(ctx, runner, rel, before, &fix.after, &test) {
            TestVerdict::Holds => {
                return Ok(Made {
                    after: fix.after.clone(),
                    summary: fix.summary.clone(),
                    regression: Regression::Added(test),
                });
            }
            TestVerdict::DoesNotReproduce(why) => {
                return Ok(Made {
                    after: fix.after.clone(),
                    summary: fix.summary.clone(),
                    regression: Regression::None(why),
                });
            }
            TestVerdict::FixFails(why) => refused.push(format!("{}: {why}", fix.summary)),
        }
    }
    Err(format!(
        "no None fix passed its regression test ({})",
        refused.join("; ")
    ))
}

/// What running a regression test around a fix showed.
enum TestVerdict {
    /// It failed before the fix and passes with it.
    Holds,
    /// It cannot be used (it passed before the fix, or did not run): the fix stands alone.
    DoesNotReproduce(String),
    /// It failed before and still fails with the fix: this fix is not the right one.
    FixFails(String),
}

/// Runs `test` in the copy with `rel` as it is (`before`) and with the fix (`after`), then
/// takes the test out and puts `before` back.
fn check_test(
    ctx: &Ctx<'_>,
    runner: &VerifyCommand,
    rel: &str,
    before: &str,
    after: &str,
    test: &RegressionTest,
) -> TestVerdict {
    let root = ctx.workspace.root();
    let test_path = root.join(&test.path);
    if test_path.exists() {
        return TestVerdict::DoesNotReproduce(format!(
            "{} already exists in the copy; no regression test added",
            test.path
        ));
    }
    if let Some(parent) = test_path.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return TestVerdict::DoesNotReproduce(format!("cannot create {}: {e}", test.path));
    }
    if let Err(e) = std::fs::write(&test_path, &test.text) {
        return TestVerdict::DoesNotReproduce(format!("cannot write {}: {e}", test.path));
    }
    let file = root.join(rel);
    let run = |text: &str| -> Result<SuiteRun, String> {
        std::fs::write(&file, text).map_err(|e| format!("cannot write {rel} in the copy: {e}"))?;
        let mut command = runner.clone();
        command.argv.push(test.node_id.clone());
        verify::run_suite(&command, root).map_err(|e| e.to_string())
    };
    let before_run = run(before);
    let after_run = before_run
        .as_ref()
        .ok()
        .filter(|r| failed(r))
        .map(|_| run(after));
    // The copy as it was: the caller writes the chosen fix itself.
    let restored = std::fs::write(&file, before);
    let _ = std::fs::remove_file(&test_path);
    if let Err(e) = restored {
        return TestVerdict::FixFails(format!("cannot restore {rel} in the copy: {e}"));
    }
    let before_run = match before_run {
        Ok(run) => run,
        Err(e) => return TestVerdict::DoesNotReproduce(e),
    };
    if !failed(&before_run) {
        return TestVerdict::DoesNotReproduce(format!(
            "the generated test {} did not fail before the fix (exit {}), so it does not reproduce the crash; not added",
            test.node_id,
            before_run
                .exit_code
                .map_or_else(|| "none".to_string(), |c| c.to_string())
        ));
    }
    match after_run {
        Some(Ok(run)) if run.exit_code == Some(0) => TestVerdict::Holds,
        Some(Ok(run)) => TestVerdict::FixFails(format!(
            "the regression test still fails with it ({})",
            run.describe_failures()
        )),
        Some(Err(e)) => TestVerdict::FixFails(e),
        None => TestVerdict::DoesNotReproduce("the regression test did not run".into()),
    }
}

/// A test run that failed as a test (pytest's exit code 1), not one that could not run.
fn failed(run: &SuiteRun) -> bool {
    run.exit_code == Some(1) && !run.timed_out
}

/// The project's pytest, to run one test: the verify command up to `pytest` (`pytest` or
/// `python -m pytest`), quiet, without its cache. `None` when the verify command is not pytest.
fn single_test_command(verify: &VerifyCommand) -> Option<VerifyCommand> {
    let argv = &verify.argv;
    let is_pytest = |arg: &str| {
        let name = arg.rsplit('/').next().unwrap_or(arg);
        name == "pytest" || name == "py.test"
    };
    let end = argv.iter().enumerate().find_map(|(i, arg)| {
        if is_pytest(arg) && (i == 0 || argv[i - 1] == "-m") {
            Some(i + 1)
        } else {
            None
        }
    })?;
    let mut argv: Vec<String> = argv[..end].to_vec();
    argv.extend(["-q", "-p", "no:cacheprovider"].map(String::from));
    Some(VerifyCommand {
        argv,
        timeout: verify.timeout.min(TEST_TIMEOUT),
        detected: verify.detected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(argv: &[&str]) -> VerifyCommand {
        VerifyCommand {
            argv: argv.iter().map(ToString::to_string).collect(),
            timeout: Duration::from_mins(5),
            detected: false,
        }
    }

    #[test]
    fn one_test_runs_with_the_projects_own_pytest() {
        let single = single_test_command(&command(&["/v/bin/python", "-m", "pytest", "-x"]))
            .expect("pytest");
        assert_eq!(
            single.argv,
            [
                "/v/bin/python",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider"
            ]
        );
        assert_eq!(single.timeout, TEST_TIMEOUT);
        let single = single_test_command(&command(&["/v/bin/pytest", "-q", "tests"])).unwrap();
        assert_eq!(single.argv[0], "/v/bin/pytest");
        assert_eq!(single.argv.len(), 4);
        assert!(single_test_command(&command(&["make", "test"])).is_none());
        assert!(single_test_command(&command(&["tox", "-e", "pytest"])).is_none());
    }

    #[test]
    fn only_runtime_none_crashes_are_ours() {
        let mut finding: Finding = serde_json::from_value(serde_json::json!({
            "id": "x", "category": "runtime", "rule": "none-attribute", "severity": "high",
            "priority": "P1", "file": "a.py", "line": 3, "column": 5, "end_line": 3,
            "end_column": 9, "message": "m", "snippet": "", "tool": "agency", "sources": [],
            "fix": {"available": false, "safe": false, "approval_required": false}
        }))
        .expect("a finding");
        assert!(crash(&finding).is_some());
        finding.rule = "KeyError".into();
        assert!(crash(&finding).is_none());
        finding.rule = "none-call".into();
        finding.category = "type".into();
        assert!(crash(&finding).is_none());
    }
}
