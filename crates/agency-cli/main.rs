//! The `agency` binary: parses the command line, resolves the data directory, calls the
//! libraries, renders their results (a table, or one JSON document with `--json`), and picks
//! the exit code. Only this crate writes to stdout and stderr.

// The CLI is the one place allowed to print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod approvals;
mod config;
mod heal;
mod healing;
mod learn;
mod learn_bench;
mod llm;
mod output;
mod patterns;
mod serve;
mod setup;
mod watch;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes from CONTRACT.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Success, nothing left at or above the failing priority.
    Success,
    /// Ran, and findings at or above the failing priority remain.
    Failure,
    /// Usage error, bad configuration or input, or an internal error.
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        match status {
            ExitStatus::Success => ExitCode::from(0),
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Error => ExitCode::from(2),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "agency",
    version,
    about = "Autonomous healing for Python codebases",
    propagate_version = true
)]
struct Cli {
    /// Data directory (model, runtime library, tools, default pattern store).
    #[arg(long, global = true, env = "AGENCY_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug); AGENCY_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the embedding model, the ONNX Runtime library and the pinned Python tools.
    Setup(setup::SetupArgs),
    /// Look up, list and maintain learned fix patterns.
    #[command(subcommand)]
    Patterns(patterns::PatternsCommand),
    /// Serve the pattern API over HTTP (docs/api.md).
    Serve(serve::ServeArgs),
    /// Find problems (ruff, mypy, bandit and agency's own analyzers) and fix them: each fix is
    /// verified with the project's tests in a private copy before it touches your files
    /// (`--scan`: detect only; `--dry-run`: show the fixes).
    Heal(heal::HealArgs),
    /// Record today's findings so that scans report only new ones.
    #[command(subcommand)]
    Baseline(heal::BaselineCommand),
    /// Measure agency's own speed (docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Emergency stop of all healing on this machine, and its state.
    #[command(subcommand)]
    Healing(healing::HealingCommand),
    /// Fixes verified but left for a human: list, show, approve (re-verified, then applied)
    /// or reject.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Generated (LLM) fixes: this month's spend against the budget.
    #[command(subcommand)]
    Llm(llm::LlmCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time a scan and its parts (native rules, each tool alone, cold, warm, one-file
    /// incremental) on a copy of the repository.
    Scan(heal::ScanBenchArgs),
    /// Time a heal of the repository on private copies, with batching and with one test run
    /// per fix: latency per healed finding (p50/p95/p99) and suite runs per heal.
    Heal(heal::HealBenchArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout and usage errors to stderr itself.
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Error.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    init_logging(cli.verbose);
    let home = cli.home.clone().unwrap_or_else(default_home);
    // A relative home (`AGENCY_HOME=.agency-home`) must mean the same directory to the tools a
    // heal runs in a copy of the repository, whose working directory is elsewhere.
    let home = std::path::absolute(&home).unwrap_or(home);
    let result = match cli.command {
        Command::Setup(args) => setup::run(&home, &args),
        Command::Patterns(cmd) => patterns::run(&home, cmd),
        Command::Serve(args) => serve::run(&home, &args),
        Command::Heal(args) => heal::run(&home, &args),
        Command::Baseline(cmd) => heal::run_baseline(&home, &cmd),
        Command::Bench(BenchCommand::Scan(args)) => heal::run_bench(&home, &args),
        Command::Bench(BenchCommand::Heal(args)) => heal::run_heal_bench(&home, &args),
        Command::Healing(cmd) => healing::run(&home, &cmd),
        Command::Approvals(cmd) => approvals::run(&home, &cmd),
        Command::Llm(cmd) => llm::run(&home, &cmd),
    };
    match result {
        Ok(status) => status.into(),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitStatus::Success.into();
            }
            let mut stderr = io::stderr().lock();
            let _ = writeln!(stderr, "agency: error: {err}");
            for cause in err.chain().skip(1) {
                let _ = writeln!(stderr, "  cause: {cause}");
            }
            ExitStatus::Error.into()
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            // serde_json wraps the writer's error and does not expose it as its source.
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

/// `$XDG_DATA_HOME/agency`, else `~/.local/share/agency`.
fn default_home() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("agency");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/agency")
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENCY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}
