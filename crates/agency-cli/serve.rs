//! `agency serve`: the pattern service on HTTP, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::ExitStatus;
use crate::output::print_text;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; loopback unless --allow-remote.
    #[arg(long, default_value_t = agency_service::DEFAULT_ADDR, value_name = "ADDR")]
    addr: SocketAddr,
    /// The pattern store directory (default: <home>/store).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Print the bearer token that writes require, and exit.
    #[arg(long)]
    print_token: bool,
    /// Allow a non-loopback address (writes always need the token).
    #[arg(long)]
    allow_remote: bool,
}

pub fn run(home: &Path, args: &ServeArgs) -> anyhow::Result<ExitStatus> {
    let token = agency_service::load_or_create_token(home).with_context(|| {
        format!(
            "cannot read or create the service token in {}",
            home.display()
        )
    })?;
    if args.print_token {
        print_text(&format!("{token}\n"))?;
        return Ok(ExitStatus::Success);
    }
    agency_service::check_addr(args.addr, args.allow_remote)?;
    let layout = agency_setup::Layout::new(home);
    let store = crate::patterns::open_store_at(&layout, args.store.clone())?;
    let config = agency_service::ServiceConfig {
        addr: args.addr,
        ..agency_service::ServiceConfig::new(token)
    };
    let token_file = home.join(agency_service::TOKEN_FILE);
    agency_service::run(Arc::new(store), &config, |addr| {
        eprintln!(
            "agency: serving the pattern API on http://{addr} (writes need the token in {})",
            token_file.display()
        );
    })
    .with_context(|| format!("cannot serve on {}", args.addr))?;
    Ok(ExitStatus::Success)
}
