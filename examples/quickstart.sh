#!/usr/bin/env bash
# The quickstart: replicate a small shop from MariaDB into PostgreSQL, live, through the
# table_filter userscript (it keeps audit_logs out).
#
#   bash examples/quickstart.sh
#
# It provisions the local servers (tests/databases.sh: needs root or sudo), creates the source
# database `quickstart` in MariaDB and the target database `quickstart_tgt` in PostgreSQL
# (both recreated on every run), builds replicator, starts `replicator mylogical` at the
# binlog's current GTID position, writes a burst of inserts, updates and deletes, waits until
# the target has caught up, prints what arrived and what the filter kept out, and stops
# replicator with SIGTERM. PostgreSQL stands in for CockroachDB here, MariaDB for MySQL.
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

my() { mariadb -uroot -h127.0.0.1 -P3306 -N -B "$@"; }
pg() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }

my -e "DROP DATABASE IF EXISTS quickstart; CREATE DATABASE quickstart"
my quickstart -e "
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200));
CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2), status ENUM('new','shipped'),
  placed_at DATETIME(3), FOREIGN KEY (customer_id) REFERENCES customers(id));
CREATE TABLE audit_logs (id INT AUTO_INCREMENT PRIMARY KEY, action VARCHAR(100), at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);"
pg -d postgres -c "DROP DATABASE IF EXISTS quickstart_tgt WITH (FORCE)" -c "CREATE DATABASE quickstart_tgt"
pg -d quickstart_tgt -c "
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(10,2), status text,
  placed_at timestamp(3));
CREATE TABLE audit_logs (id int PRIMARY KEY, action text, at timestamptz);"

# Start where the binlog is now: the target is empty and so is the source.
position=$(my -e "SELECT @@gtid_binlog_pos")
echo "== source GTID position: $position"

# The userscript: the table_filter template, aimed at our target schema.
"$bin" script new --template table_filter --dir "$work" --targetSchema quickstart_tgt.public >/dev/null 2>&1
echo "== userscript: $(grep -m1 'SKIPPED_TABLES =' "$work/table_filter.ts")"

"$bin" mylogical \
  --sourceConn 'mysql://root@tcp(127.0.0.1:3306)/quickstart' \
  --targetConn postgres://postgres@127.0.0.1:5432/quickstart_tgt \
  --targetSchema quickstart_tgt.public \
  --defaultGTIDSet "$position" \
  --stagingSchema _replicator --stagingCreateSchema \
  --replicationProcessID 4242 \
  --userscript "$work/table_filter.ts" --flushPeriod 100ms >"$work/replicator.log" 2>&1 &
pid=$!
until grep -q "streaming the binlog" "$work/replicator.log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/replicator.log"; exit 1; }
  sleep 0.1
done
echo "== replicator is streaming; writing a burst of changes"

my quickstart <<'SQL'
INSERT INTO customers
  WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 200)
  SELECT g, CONCAT('customer ', g), CONCAT('c', g, '@example.com') FROM s;
INSERT INTO orders
  WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 1000)
  SELECT g, 1 + g % 200, (g * 7 % 1000) / 10.0, 'new', TIMESTAMP '2026-01-01 00:00:00' + INTERVAL g MINUTE FROM s;
INSERT INTO audit_logs (action)
  WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < 500)
  SELECT CONCAT('login ', g) FROM s;
UPDATE orders SET status = 'shipped' WHERE id % 3 = 0;
UPDATE customers SET email = NULL WHERE id % 10 = 0;
DELETE FROM orders WHERE id % 50 = 0;
UPDATE orders SET id = id + 10000 WHERE id = 7;
SQL

summary_my() {
  my quickstart -e "SELECT CONCAT((SELECT CONCAT(COUNT(*), '/', SUM(id), '/', COUNT(email)) FROM customers), ' ',
    (SELECT CONCAT(COUNT(*), '/', SUM(id), '/', SUM(total), '/', SUM(status = 'shipped'), '/', DATE_FORMAT(MAX(placed_at), '%Y-%m-%d %H:%i:%s.%f')) FROM orders))"
}
summary_pg() {
  pg -d quickstart_tgt -c "SELECT (SELECT count(*) || '/' || sum(id) || '/' || count(email) FROM customers) || ' ' ||
    (SELECT count(*) || '/' || sum(id) || '/' || sum(total) || '/' || count(*) FILTER (WHERE status = 'shipped') || '/' || to_char(max(placed_at), 'YYYY-MM-DD HH24:MI:SS.US') FROM orders)"
}
deadline=$((SECONDS + 60))
until [ "$(summary_my)" = "$(summary_pg)" ]; do
  [ $SECONDS -lt $deadline ] || { echo "the target did not catch up within 60s"; summary_my; summary_pg; cat "$work/replicator.log"; exit 1; }
  sleep 0.2
done

echo "== caught up: the target matches the source (counts, key sums, totals, statuses)"
printf '%-12s %8s %8s\n' table source target
for t in customers orders audit_logs; do
  printf '%-12s %8s %8s\n' "$t" "$(my quickstart -e "SELECT COUNT(*) FROM $t")" "$(pg -d quickstart_tgt -c "SELECT count(*) FROM $t")"
done
echo "(audit_logs is kept out by the userscript)"
echo "== orders by status on the target"
pg -d quickstart_tgt -c "SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1"
echo "== checkpoint in staging (the source's GTID position once everything above is applied)"
pg -d quickstart_tgt -c "SELECT key, convert_from(value, 'UTF8') FROM _replicator.memo"

kill "$pid"
wait "$pid"
pid=
echo "== replicator stopped cleanly; its last lines:"
tail -3 "$work/replicator.log"
