#!/usr/bin/env bash
# Userscript throughput: replicator's embedded engine against Node.js, same script, same rows,
# same machine, same run. Prints Node's rate, then replicator's with one engine and with one
# engine per core, each with its ratio to Node (single-threaded, as a Node transform runs).
#   bash benches/script_vs_node.sh [ROWS] [SCRIPT.ts]
# Needs node, and tsc in target/tsc (tests/run.sh installs it). Builds replicator in release.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}
script=${2:-benches/scripts/simple_map.ts}
schema=db.public
table=orders

command -v node >/dev/null || { echo "node is not installed (tests/databases.sh installs it)" >&2; exit 1; }
tsc=target/tsc/node_modules/.bin/tsc
[ -x "$tsc" ] || npm install --prefix target/tsc --no-audit --no-fund --loglevel=error typescript@5.9.3 >/dev/null
cargo build --release --locked --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Compile the script for Node with tsc (our typings), then point replicator@v2 at the stand-in.
cp "$script" "$work/script.ts"
cat >"$work/tsconfig.json" <<JSON
{"extends": "$PWD/typings/tsconfig.json",
 "compilerOptions": {"noEmit": false, "allowImportingTsExtensions": false, "outDir": "$work/out"},
 "files": ["$work/script.ts"]}
JSON
"$tsc" -p "$work/tsconfig.json"
js=$(find "$work/out" -name 'script.js' | head -1)
cp benches/node/replicator@v2.mjs "$work/out/"
sed 's#from "replicator@v2"#from "./replicator@v2.mjs"#' "$js" >"$work/out/script.mjs"

echo "== Node.js $(node --version) =="
theirs=$(node benches/node/bench.mjs "$work/out/script.mjs" "$rows" "$schema" "$table")
echo "$theirs"
node_rate=$(echo "$theirs" | sed -n 's/^rows_per_second=//p')
for workers in 1 "$(nproc)"; do
  echo "== replicator (QuickJS, $workers worker(s)) =="
  ours=$(./target/release/replicator script bench --userscript "$script" --rows "$rows" \
    --targetSchema "$schema" --table "$table" --workers "$workers")
  echo "$ours"
  rate=$(echo "$ours" | sed -n 's/^rows_per_second=//p')
  echo "ratio (replicator with $workers worker(s) / node): $(awk -v a="$rate" -v b="$node_rate" 'BEGIN { printf "%.2f", a / b }')x"
done
