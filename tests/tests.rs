//! End-to-end tests of the `agency` binary: the real binary, the real model, a store in a
//! temporary directory. Paths and timings are redacted from snapshots.

mod approvals;
mod cli;
mod client;
mod docs;
mod durability;
mod faults;
mod heal;
mod healing;
mod learn_git;
mod llm_heal;
mod patterns_heal;
mod runtime_heal;
mod scan;
mod service;
mod util;
mod watch_log;
