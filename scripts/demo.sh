#!/usr/bin/env bash
# The demo: installs what agency needs (idempotently, into .agency-home/ inside the clone),
# loads the curated seed pattern library into a fresh demo store, and looks a few errors up.
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENCY_HOME="${AGENCY_HOME:-$PWD/.agency-home}"
export PIP_CACHE_DIR="$AGENCY_HOME/pip-cache"

cargo build --quiet --release --bin agency
agency=target/release/agency
"$agency" setup

store="$AGENCY_HOME/demo-store"
rm -rf "$store"

run() {
    printf '\n$ agency %s\n' "$*"
    "$agency" "$@" --store "$store"
}

run patterns query "AttributeError: 'NoneType' object has no attribute 'group'"
run patterns query "Item \"None\" of \"Optional[str]\" has no attribute \"strip\"" --category type
run patterns query "Possible SQL injection vector through string-based query construction." --k 3
run patterns query "Comparison to None should be 'cond is None'" --rule E711 --k 1
run patterns query "the coffee machine is out of beans" --k 3
run patterns show runtime-none-attribute-dict-get-default
