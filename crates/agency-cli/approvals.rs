//! `agency approvals list | show ID | approve ID | reject ID`: the fixes a heal verified but
//! left for a human (`agency_heal::approvals`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agency_core::contract::Finding;
use agency_heal::approvals::{Approval, ApprovalVerification, Approvals, Approved, short};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::ExitStatus;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// The fixes waiting for a human, oldest first.
    List(ListArgs),
    /// One pending fix: the finding, why it waits, how it was verified, and its diff.
    Show(IdArgs),
    /// Check that the file is unchanged, verify the fix again in a private copy, then apply it
    /// (exit 0 only when it was applied).
    Approve(IdArgs),
    /// Drop the fix; the pattern that proposed it, if any, records a failure.
    Reject(RejectArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print `{"version": 1, "approvals": [...]}` on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The approval id, or at least 4 of its first characters.
    id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The approval id, or at least 4 of its first characters.
    id: String,
    /// Why, for the audit trail.
    #[arg(long, default_value = "rejected by hand")]
    reason: String,
    #[arg(long)]
    json: bool,
}

/// One approval in the contract's JSON (`{"id", "finding", "diff", "verification", "reason",
/// "created_at"}` and more).
#[derive(Debug, Serialize)]
pub struct ApprovalDoc {
    pub id: String,
    pub finding: Finding,
    pub diff: String,
    pub verification: ApprovalVerification,
    pub reason: String,
    pub created_at: String,
    pub repository: PathBuf,
    pub file: String,
    pub strategy: String,
    pub pattern_id: Option<String>,
    pub confidence: Option<f64>,
}

impl From<&Approval> for ApprovalDoc {
    fn from(a: &Approval) -> Self {
        ApprovalDoc {
            id: a.id.clone(),
            finding: a.finding.clone(),
            diff: a.diff.clone(),
            verification: a.verification.clone(),
            reason: a.reason.clone(),
            created_at: a.created_at.clone(),
            repository: a.repository.clone(),
            file: a.file.clone(),
            strategy: a.strategy.clone(),
            pattern_id: a.pattern_id.clone(),
            confidence: a.confidence,
        }
    }
}

#[derive(Debug, Serialize)]
struct ListDoc {
    version: u32,
    approvals: Vec<ApprovalDoc>,
}

/// What `approve` and `reject` did.
#[derive(Debug, Serialize)]
struct DecisionDoc {
    version: u32,
    id: String,
    /// `applied`, `conflict`, `failed_verification` or `rejected`.
    result: &'static str,
    reason: Option<String>,
    /// The verification this time (`approve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    verification: Option<ApprovalVerification>,
    file: String,
    repository: PathBuf,
}

/// Every readable pending approval, for `healing status`.
pub fn pending_docs(home: &Path) -> Vec<ApprovalDoc> {
    Approvals::new(home)
        .list()
        .0
        .iter()
        .map(ApprovalDoc::from)
        .collect()
}

pub fn run(home: &Path, command: &ApprovalsCommand) -> Result<ExitStatus> {
    let store = Approvals::new(home);
    match command {
        ApprovalsCommand::List(args) => {
            let (approvals, damaged) = store.list();
            for e in &damaged {
                output::warn(&e.to_string());
            }
            if args.json {
                output::print_json(&ListDoc {
                    version: 1,
                    approvals: approvals.iter().map(ApprovalDoc::from).collect(),
                })?;
            } else {
                output::print_text(&render_list(&approvals))?;
            }
            Ok(ExitStatus::Success)
        }
        ApprovalsCommand::Show(args) => {
            let approval = store.get(&args.id)?;
            if args.json {
                output::print_json(&ApprovalDoc::from(&approval))?;
            } else {
                output::print_text(&render_one(&approval))?;
            }
            Ok(ExitStatus::Success)
        }
        ApprovalsCommand::Approve(args) => approve(home, &store, args),
        ApprovalsCommand::Reject(args) => {
            let approval = store.get(&args.id)?;
            let mut attempt = attempt_of(&approval);
            attempt.status = agency_heal::Status::Skipped;
            attempt.reason = Some(format!(
                "rejected in `agency approvals reject`: {}",
                args.reason
            ));
            agency_heal::audit::write(
                &approval.repository,
                &agency_heal::audit::run_id(),
                None,
                std::slice::from_ref(&attempt),
                std::slice::from_ref(&approval.finding),
            )
            .context("cannot write the audit record of the rejection; the fix is still pending")?;
            store.remove(&approval.id)?;
            report_outcome(home, &approval, false, "reject");
            let doc = DecisionDoc {
                version: 1,
                id: approval.id.clone(),
                result: "rejected",
                reason: Some(args.reason.clone()),
                verification: None,
                file: approval.file.clone(),
                repository: approval.repository.clone(),
            };
            if args.json {
                output::print_json(&doc)?;
            } else {
                output::print_text(&format!(
                    "rejected {} ({} at {}:{}); nothing was written\n",
                    short(&approval.id),
                    approval.finding.rule,
                    approval.file,
                    approval.finding.line
                ))?;
            }
            Ok(ExitStatus::Success)
        }
    }
}

fn approve(home: &Path, store: &Approvals, args: &IdArgs) -> Result<ExitStatus> {
    let approval = store.get(&args.id)?;
    let root = &approval.repository;
    let settings = crate::heal::default_heal_settings(home, root)?;
    // What a fix made by a fixer or the model is learned from, once it is applied.
    let before = std::fs::read_to_string(root.join(&approval.file)).ok();
    // The stop switch applies to approvals as to heals: refuse while stopped, die on a stop.
    let watch = crate::healing::RunWatch::start(home, root)?;
    let plain = output::plain_progress();
    let progress = |event: agency_heal::Progress| {
        let line = match event {
            agency_heal::Progress::Copied { dir, .. } => {
                watch.set_copy(&dir);
                "agency: copied the working tree to a private workspace".to_string()
            }
            agency_heal::Progress::Baseline => "agency: running the tests without the fix".into(),
            agency_heal::Progress::Suite => "agency: running the tests with the fix".into(),
            agency_heal::Progress::Attempt { .. } | agency_heal::Progress::Batch { .. } => {
                return;
            }
        };
        if plain {
            eprintln!("{line}");
        } else {
            output::progress_line(&line);
        }
    };
    let outcome = {
        let _writing = watch.writing();
        agency_heal::approvals::approve(&settings, &approval, &progress)?
    };
    let (result, reason, attempt, status) = match outcome {
        Approved::Applied { attempt, .. } => (
            "applied",
            attempt.reason.clone(),
            Some(attempt),
            ExitStatus::Success,
        ),
        Approved::Conflict { reason } => ("conflict", Some(reason), None, ExitStatus::Failure),
        Approved::Rejected { attempt, .. } => (
            "failed_verification",
            attempt.reason.clone(),
            Some(attempt),
            ExitStatus::Failure,
        ),
    };
    if let Some(attempt) = &attempt {
        agency_heal::audit::write(
            root,
            &agency_heal::audit::run_id(),
            settings.verify.as_ref(),
            std::slice::from_ref(attempt),
            std::slice::from_ref(&approval.finding),
        )
        .context("cannot write the audit record of the approval")?;
    }
    if result == "applied" {
        store.remove(&approval.id)?;
    }
    match result {
        "applied" if approval.pattern_id.is_none() => {
            if let Some(before) = before {
                learn_approved(home, &approval, before);
            }
        }
        "applied" => report_outcome(home, &approval, true, "approve"),
        // Rolled back: the tests failed or the finding stayed; agency's own errors say
        // nothing about the pattern.
        "failed_verification"
            if attempt
                .as_ref()
                .is_some_and(|a| a.status == agency_heal::Status::RolledBack) =>
        {
            report_outcome(home, &approval, false, "approve");
        }
        _ => {}
    }
    let doc = DecisionDoc {
        version: 1,
        id: approval.id.clone(),
        result,
        reason,
        verification: attempt.as_ref().map(|a| ApprovalVerification {
            tests: a.verification.tests.as_str().to_string(),
            duration_ms: a.verification.duration_ms,
            command: a.verification.suite.as_ref().map(|s| s.command.clone()),
        }),
        file: approval.file.clone(),
        repository: root.clone(),
    };
    if args.json {
        output::print_json(&doc)?;
    } else {
        let text = match result {
            "applied" => format!(
                "approved {}: re-verified (tests {}) and applied to {}\n",
                short(&approval.id),
                doc.verification
                    .as_ref()
                    .map_or("skipped", |v| v.tests.as_str()),
                approval.file
            ),
            _ => format!(
                "not applied: {}\nthe fix is still pending; `agency approvals reject {}` drops it\n",
                doc.reason.as_deref().unwrap_or("verification failed"),
                short(&approval.id)
            ),
        };
        output::print_text(&text)?;
    }
    Ok(status)
}

/// The approval as a heal attempt, for its audit record.
fn attempt_of(approval: &Approval) -> agency_heal::Attempt {
    agency_heal::Attempt {
        finding: approval.finding.clone(),
        strategy: agency_heal::Strategy::parse(&approval.strategy),
        status: agency_heal::Status::PendingApproval,
        reason: Some(approval.reason.clone()),
        diff: approval.diff.clone(),
        verification: agency_heal::Verification {
            tests: agency_heal::Tests::Skipped,
            suite: None,
            duration_ms: 0,
            batch: None,
        },
        file: Some(approval.file.clone()),
        fixed_by: None,
        duration_ms: 0,
        proposal: None,
        texts: None,
        lookup_hit: None,
        regression: agency_heal::Regression::NotApplicable,
        pattern: approval
            .pattern_id
            .as_ref()
            .map(|id| agency_heal::PatternUse {
                id: id.clone(),
                confidence: approval.confidence.unwrap_or(0.0),
            }),
    }
}

/// Tells the pattern store how a human's decision went for a pattern-made fix: applied after
/// re-verification is a success; rejected, or failing verification again, is a failure. A
/// store that cannot be reached is a warning: the decision itself stands.
fn report_outcome(home: &Path, approval: &Approval, success: bool, decision: &str) {
    let Some(pattern_id) = &approval.pattern_id else {
        return;
    };
    match crate::patterns::heal_client(home) {
        Ok(client) => {
            let patterns = agency_heal::patterns::Patterns::new(client);
            patterns.outcome(
                pattern_id,
                success,
                &approval.finding,
                &format!("approval-{}-{decision}", approval.id),
            );
            for e in patterns.errors() {
                output::warn(&e);
            }
        }
        Err(e) => output::warn(&format!(
            "cannot record the outcome of pattern {pattern_id}: {e:#}"
        )),
    }
}

/// An approved fix that a fixer or the model made becomes a pattern, as a healed one does
/// (`unsafe`: a human approved it once; it applies unattended only after verified uses).
fn learn_approved(home: &Path, approval: &Approval, before: String) {
    let mut attempt = attempt_of(approval);
    attempt.status = agency_heal::Status::Healed;
    attempt.texts = Some((before, approval.after.clone()));
    match crate::patterns::heal_client(home) {
        Ok(client) => {
            let patterns = agency_heal::patterns::Patterns::new(client);
            if let agency_heal::patterns::Learned::Skipped(why) = patterns.learn_from(&attempt) {
                tracing::debug!(id = %approval.id, "approved fix not learned: {why}");
            }
            for e in patterns.errors() {
                output::warn(&e);
            }
        }
        Err(e) => output::warn(&format!("cannot learn from the approved fix: {e:#}")),
    }
}

fn render_list(approvals: &[Approval]) -> String {
    if approvals.is_empty() {
        return "no fix is waiting for approval\n".into();
    }
    let rows: Vec<Vec<String>> = approvals
        .iter()
        .map(|a| {
            vec![
                short(&a.id).to_string(),
                a.finding.rule.clone(),
                format!("{}:{}", a.file, a.finding.line),
                a.verification.tests.clone(),
                a.created_at.clone(),
                a.repository.display().to_string(),
            ]
        })
        .collect();
    let mut out = output::table(
        &["ID", "RULE", "WHERE", "TESTS", "CREATED", "REPOSITORY"],
        &rows,
    );
    let _ = writeln!(
        out,
        "{} pending; `agency approvals show ID` for the diff, `approve ID` or `reject ID` to decide",
        approvals.len()
    );
    out
}

fn render_one(a: &Approval) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "approval {}", a.id);
    let _ = writeln!(
        out,
        "finding:    {} {} at {}:{}: {}",
        a.finding.rule, a.finding.category, a.file, a.finding.line, a.finding.message
    );
    let _ = writeln!(out, "repository: {}", a.repository.display());
    let _ = writeln!(out, "why:        {}", a.reason);
    let _ = writeln!(
        out,
        "verified:   tests {} in {} ms{}",
        a.verification.tests,
        a.verification.duration_ms,
        a.verification
            .command
            .as_deref()
            .map_or(String::new(), |c| format!(" (`{c}`)"))
    );
    let _ = writeln!(out, "strategy:   {}", a.strategy);
    let _ = writeln!(out, "created:    {} by run {}", a.created_at, a.run_id);
    out.push_str(&a.diff);
    out
}
