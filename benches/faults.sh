#!/usr/bin/env bash
# The fault suite's kill -9 case at full size: replicator killed with -9 at ten random points of
# a 1,000,000-row stream (1,000-row source transactions) and restarted each time, for pglogical
# and mylogical; then the target is compared with the source value by value. CI runs the same
# test with 100,000 rows (tests/faults.rs); this is the size the reliability figures name.
#
#   bash benches/faults.sh [ROWS]        (default 1000000)
#
# Prints each run's kill points, the rows compared and the time to converge
# (docs/reliability.md keeps the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
FAULT_KILL_ROWS=$rows cargo test --locked --release --test faults -- --nocapture \
  --test-threads=1 survives_kill_9 2>&1 | grep -E "^FIGURE|^test |test result"
