#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (the ONNX Runtime
# library, the embedding model and the pinned Python tools, into .agency-home/ inside the clone,
# idempotently), checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENCY_HOME="${AGENCY_HOME:-$PWD/.agency-home}"
# Cache nothing outside the clone.
export PIP_CACHE_DIR="$AGENCY_HOME/pip-cache"
# A one-shot build gains nothing from incremental state; it only costs disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> agency setup (AGENCY_HOME=$AGENCY_HOME)"
cargo build --quiet --bin agency
target/debug/agency setup

echo "==> cargo clippy"
cargo clippy --quiet --workspace --all-targets -- -D warnings

echo "==> cargo test"
cargo test --workspace --lib --bins --tests
