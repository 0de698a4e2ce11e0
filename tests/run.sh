#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a used one:
#   1. provisions PostgreSQL, MariaDB and Node.js (tests/databases.sh, idempotent; needs root),
#      and TypeScript into target/tsc
#   2. runs the parallel suite: unit tests, doc tests, and every tests/*.rs but tests/serial_*.rs
#   3. runs tests/serial_*.rs one test at a time: they change server-wide settings
# Extra arguments go to the test binaries (e.g. a name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "tests/run.sh: cargo not found: install Rust (rustup) first" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
  bash tests/databases.sh
elif command -v sudo >/dev/null; then
  sudo bash tests/databases.sh
else
  echo "tests/run.sh: tests/databases.sh needs root (or sudo) to provision the databases" >&2
  exit 1
fi

# TypeScript for the typings tests (pinned; npm's registry is reachable from our machines).
tsc_version=5.9.3
if [ "$(target/tsc/node_modules/.bin/tsc --version 2>/dev/null)" != "Version $tsc_version" ]; then
  npm install --prefix target/tsc --no-audit --no-fund --loglevel=error "typescript@$tsc_version" >/dev/null
fi

parallel=()
serial=()
for file in tests/*.rs; do
  name=$(basename "$file" .rs)
  case "$name" in
    serial_*) serial+=("$name") ;;
    faults) ;;
    *) parallel+=(--test "$name") ;;
  esac
done

cargo test --locked --lib --bins "${parallel[@]}" -- "$@"
cargo test --locked --doc -- "$@"
cargo test --locked --test faults -- --test-threads=16 "$@"
for name in "${serial[@]}"; do
  cargo test --locked --test "$name" -- --test-threads=1 "$@"
done
