#!/usr/bin/env bash
# The quickstart: replicate a small shop from one PostgreSQL database into another, live,
# through the table_filter userscript (it keeps audit_logs out).
#
#   bash examples/quickstart.sh
#
# It provisions the local servers (tests/databases.sh: needs root or sudo), creates the
# source and target databases (quickstart_src, quickstart_tgt; recreated on every run),
# builds replicator, starts `replicator pglogical`, writes a burst of inserts, updates and
# deletes, waits until the target has caught up, prints what arrived and what the filter kept
# out, and stops replicator with SIGTERM. PostgreSQL stands in for CockroachDB here.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then bash tests/databases.sh; else sudo bash tests/databases.sh; fi
cargo build --locked --quiet
bin=target/debug/replicator
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

q() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
slot=quickstart_slot
q -d postgres -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
for db in quickstart_src quickstart_tgt; do
  q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
done
schema="CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2), status text);
CREATE TABLE audit_logs (id serial PRIMARY KEY, action text, at timestamptz DEFAULT now());"
q -d quickstart_src -c "$schema" -c "CREATE PUBLICATION quickstart FOR ALL TABLES"
q -d quickstart_tgt -c "$schema"

# The userscript: the table_filter template, aimed at our target schema.
"$bin" script new --template table_filter --dir "$work" --targetSchema quickstart_tgt.public >/dev/null 2>&1
echo "== userscript: $(grep -m1 'SKIPPED_TABLES =' "$work/table_filter.ts")"

"$bin" pglogical \
  --sourceConn postgres://postgres@127.0.0.1:5432/quickstart_src \
  --targetConn postgres://postgres@127.0.0.1:5432/quickstart_tgt \
  --targetSchema quickstart_tgt.public \
  --slotName "$slot" --createSlot --publicationName quickstart \
  --stagingSchema _replicator --stagingCreateSchema \
  --userscript "$work/table_filter.ts" --flushPeriod 100ms >"$work/replicator.log" 2>&1 &
pid=$!
until grep -q "streaming changes" "$work/replicator.log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/replicator.log"; exit 1; }
  sleep 0.1
done
echo "== replicator is streaming; writing a burst of changes"

q -d quickstart_src <<'SQL'
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 200) g;
INSERT INTO orders SELECT g, 1 + g % 200, (g * 7 % 1000) / 10.0, 'new' FROM generate_series(1, 1000) g;
INSERT INTO audit_logs (action) SELECT 'login ' || g FROM generate_series(1, 500) g;
UPDATE orders SET status = 'shipped' WHERE id % 3 = 0;
UPDATE customers SET email = NULL WHERE id % 10 = 0;
DELETE FROM orders WHERE id % 50 = 0;
UPDATE orders SET id = id + 10000 WHERE id = 7;
SQL

digest() { q -d "$1" -c "SELECT (SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c) || (SELECT md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o)"; }
deadline=$((SECONDS + 60))
until [ "$(digest quickstart_src)" = "$(digest quickstart_tgt)" ]; do
  [ $SECONDS -lt $deadline ] || { echo "the target did not catch up within 60s"; cat "$work/replicator.log"; exit 1; }
  sleep 0.2
done

echo "== caught up: the target matches the source"
printf '%-12s %8s %8s\n' table source target
for t in customers orders audit_logs; do
  printf '%-12s %8s %8s\n' "$t" "$(q -d quickstart_src -c "SELECT count(*) FROM $t")" "$(q -d quickstart_tgt -c "SELECT count(*) FROM $t")"
done
echo "(audit_logs is kept out by the userscript)"
echo "== orders by status on the target"
q -d quickstart_tgt -c "SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1"
echo "== checkpoint in staging"
q -d quickstart_tgt -c "SELECT key, convert_from(value, 'UTF8') FROM _replicator.memo"

kill "$pid"
wait "$pid"
pid=
echo "== replicator stopped cleanly; its last lines:"
tail -3 "$work/replicator.log"
