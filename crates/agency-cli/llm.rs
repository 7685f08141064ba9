//! `agency llm usage [--json]`: the generated-fix spend of this month on this machine (the
//! usage record under the data directory), against the budget of the current repository's
//! `[llm]` (the default budget when it has none). The numbers come from
//! `agency_llm::usage_report`; this module only renders them.

use std::fmt::Write as _;
use std::path::Path;

use agency_llm::{LlmConfig, UsageReport};
use anyhow::Context;
use clap::{Args, Subcommand};

use crate::ExitStatus;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Generated-fix spend this month: calls, cache hits, tokens and dollars by model and
    /// category, against the monthly budget.
    Usage(UsageArgs),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// One JSON document on stdout: {"version": 1, "month", "budget_usd", "spent_usd",
    /// "remaining_usd", "calls", "cache_hits", "by_model", "by_category"}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(home: &Path, cmd: &LlmCommand) -> anyhow::Result<ExitStatus> {
    match cmd {
        LlmCommand::Usage(args) => usage(home, args),
    }
}

fn usage(home: &Path, args: &UsageArgs) -> anyhow::Result<ExitStatus> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = crate::config::find_root(&cwd);
    let loaded = crate::config::load(&root)?;
    let config = agency_llm::LlmConfig::from_table(loaded.options.llm.as_ref())
        .with_context(|| format!("invalid [llm] in {}", loaded.source(&root)))?;
    let budget = config
        .as_ref()
        .map_or(agency_llm::config::DEFAULT_MONTHLY_BUDGET_USD, |c| {
            c.monthly_budget_usd
        });
    let month = agency_llm::current_month();
    let report = agency_llm::usage_report(home, &month, budget).with_context(|| {
        format!(
            "cannot read the LLM usage record under {}",
            home.join("llm").display()
        )
    })?;
    if args.json {
        output::print_json(&report)?;
    } else {
        output::print_text(&render(&report, config.as_ref()))?;
    }
    Ok(ExitStatus::Success)
}

/// The text report: one line per model and category, then the budget.
fn render(report: &UsageReport, config: Option<&LlmConfig>) -> String {
    let mut out = format!("generated-fix spend in {} (UTC)\n\n", report.month);
    if report.lines.is_empty() {
        out.push_str("no model calls this month\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .lines
            .iter()
            .map(|l| {
                vec![
                    l.model.clone(),
                    l.category.clone(),
                    l.calls.to_string(),
                    l.cache_hits.to_string(),
                    l.tokens_in.to_string(),
                    l.tokens_out.to_string(),
                    format!("${:.4}", l.spent_usd),
                ]
            })
            .collect();
        out.push_str(&output::table(
            &[
                "model",
                "category",
                "calls",
                "cache hits",
                "tokens in",
                "tokens out",
                "spend",
            ],
            &rows,
        ));
    }
    let _ = writeln!(
        out,
        "\ncalls {}, cache hits {}; spent ${:.4} of ${:.2}, remaining ${:.4}",
        report.calls, report.cache_hits, report.spent_usd, report.budget_usd, report.remaining_usd
    );
    if config.is_none() {
        out.push_str(
            "the LLM tier is off in this repository (no [llm] in agency.toml): the budget shown is the default\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_unconfigured() {
        let dir = tempfile::tempdir().unwrap();
        let report = agency_llm::usage_report(dir.path(), "2026-12", 10.0).unwrap();
        let text = render(&report, None);
        assert_eq!(
            text,
            "generated-fix spend in 2026-12 (UTC)\n\nno model calls this month\n\ncalls 0, cache hits 0; spent $0.0000 of $10.00, remaining $10.0000\nthe LLM tier is off in this repository (no [llm] in agency.toml): the budget shown is the default\n"
        );
        let config = LlmConfig::new("http://127.0.0.1:1/v1", "m");
        assert!(!render(&report, Some(&config)).contains("tier is off"));
    }

    #[test]
    fn one_line_per_model_and_category() {
        let dir = tempfile::tempdir().unwrap();
        let db = agency_llm::usage::UsageDb::open(dir.path()).unwrap();
        let reservation = db
            .reserve("gpt-4o-mini", "security", "h1", 0.01, 10.0)
            .unwrap();
        db.finish(
            reservation,
            1200,
            300,
            0.0012,
            agency_llm::usage::CallStatus::Answered,
        )
        .unwrap();
        db.record_cache_hit("gpt-4o-mini", "security", "h1")
            .unwrap();
        let month = agency_llm::current_month();
        let report = agency_llm::usage_report(dir.path(), &month, 5.0).unwrap();
        let config = LlmConfig::new("http://127.0.0.1:1/v1", "gpt-4o-mini");
        let text = render(&report, Some(&config));
        assert_eq!(
            text,
            format!(
                "generated-fix spend in {month} (UTC)\n\nmodel        category  calls  cache hits  tokens in  tokens out  spend\ngpt-4o-mini  security  1      1           1200       300         $0.0012\n\ncalls 1, cache hits 1; spent $0.0012 of $5.00, remaining $4.9988\n"
            )
        );
    }
}
