#!/usr/bin/env bash
# The demo: installs what agency needs (idempotently, into .agency-home/ inside the clone),
# scans the bundled demo repository (ruff, mypy, bandit and agency's own rules) and a runtime
# log from it, heals what it safely can (in a temporary copy), then loads the curated seed pattern library into a fresh demo store and looks a
# few errors up.
set -euo pipefail
cd "$(dirname "$0")/.."

export AGENCY_HOME="${AGENCY_HOME:-$PWD/.agency-home}"
export PIP_CACHE_DIR="$AGENCY_HOME/pip-cache"

cargo build --quiet --release --bin agency
agency=target/release/agency
"$agency" setup

# The demo repository is copied, so that the clone stays clean (a scan keeps its cache in
# .agency/ of the scanned repository).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -R fixtures/demo-repo "$work/shop"
git -C "$work/shop" init -q
git -C "$work/shop" add -A
git -C "$work/shop" -c user.name=demo -c user.email=demo@example.org commit -q -m demo
log="$PWD/fixtures/logs/shop-production.log"

agency="$PWD/$agency"
# The demo's heals keep their approvals, outcomes and learned patterns in a data directory of
# their own (sharing the installed model and tools), removed with the copy.
demo_home="$work/home"
mkdir -p "$demo_home"
for asset in lib models venv; do ln -s "$AGENCY_HOME/$asset" "$demo_home/$asset"; done
cp "$AGENCY_HOME/assets.json" "$demo_home/"
scan() {
    printf '\n$ agency %s\n' "$*"
    # Exit 1 means findings at or above the failing priority: expected here.
    (cd "$work/shop" && AGENCY_HOME="$demo_home" "$agency" "$@") || [ $? -eq 1 ]
}
scan heal --scan
scan heal --scan --from-log "$log"
# Heal the copy: each fix is verified in a private copy with the project's tests, then kept.
scan heal --yes
printf '\n$ git diff --stat   # what the heal changed in the demo repository\n'
git -C "$work/shop" diff --stat
# Risky fixes were verified but wait for a human (`agency approvals approve|reject ID`).
scan approvals list
# The production log's NoneType crashes: fixed where they happen, each with a regression test
# where the crash can be driven from one.
scan heal --yes --from-log "$log"
printf '\n$ git status --short   # the fixes and the regression tests they brought\n'
git -C "$work/shop" status --short -- shop tests

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
