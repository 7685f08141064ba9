//! `agency setup`: install or verify the run-time assets, with progress on stderr.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::ExitStatus;
use crate::output::{print_json, progress_line};

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Python interpreter used to download wheels and create the managed environment.
    #[arg(
        long,
        env = "AGENCY_PYTHON",
        default_value = "python3",
        value_name = "PYTHON"
    )]
    python: PathBuf,
    /// Do not create or update the managed virtual environment of Python tools.
    #[arg(long)]
    skip_tools: bool,
    /// Print what was installed as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct SetupJson<'a> {
    version: u32,
    home: &'a Path,
    installed: &'a [String],
    already_present: &'a [String],
    tools: Vec<Tool<'a>>,
}

#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    version: &'a str,
}

pub fn run(home: &Path, args: &SetupArgs) -> anyhow::Result<ExitStatus> {
    let layout = agency_setup::Layout::new(home);
    let opts = agency_setup::SetupOptions {
        python: args.python.clone(),
        skip_tools: args.skip_tools,
    };
    let mut progress = |p: agency_setup::Progress<'_>| match p {
        agency_setup::Progress::Step { what } => progress_line(&format!("{what} ...")),
        agency_setup::Progress::Done { what, detail } => {
            progress_line(&format!("{what}: {detail}"));
        }
        agency_setup::Progress::Skipped { what, why } => progress_line(&format!("{what}: {why}")),
    };
    let report = agency_setup::install(&layout, &opts, &mut progress)
        .with_context(|| format!("setup of {} failed", home.display()))?;
    if args.json {
        print_json(&SetupJson {
            version: 1,
            home,
            installed: &report.installed,
            already_present: &report.already_present,
            tools: report
                .tools
                .iter()
                .map(|(name, version)| Tool { name, version })
                .collect(),
        })?;
    } else {
        let mut out = String::new();
        out.push_str(&format!("agency home: {}\n", home.display()));
        for name in &report.installed {
            out.push_str(&format!("  installed  {name}\n"));
        }
        for name in &report.already_present {
            out.push_str(&format!("  current    {name}\n"));
        }
        for (name, version) in &report.tools {
            out.push_str(&format!("  tool       {name} {version}\n"));
        }
        crate::output::print_text(&out)?;
    }
    Ok(ExitStatus::Success)
}
