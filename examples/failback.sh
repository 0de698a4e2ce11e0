#!/usr/bin/env bash
# Failback without CockroachDB: `replicator start --tlsSelfSigned` in front of the local
# PostgreSQL (consistent mode, the default: staged, applied by resolved timestamp) and the
# local MariaDB (`--immediate`: applied request by request), fed with requests shaped as a
# CockroachDB changefeed sends them (curl plays the changefeed).
#
#   bash examples/failback.sh
#
# It provisions the local servers (tests/databases.sh: needs root or sudo), creates the
# target databases `failback_pg` (PostgreSQL, also staging for both) and `failback_my`
# (MariaDB), recreated on every run; builds replicator; makes a P-256 key and a token with
# `replicator make-jwt`; starts two `replicator start` (one per target); inserts the public
# key into staging and sends SIGHUP; posts inserts, updates, deletes and a resolved
# timestamp, plus a few requests that are refused (no token, a token for another schema, an
# unknown column, an older resolved timestamp); prints each answer and what reached each
# target (once PostgreSQL's resolved timestamp is applied), then stops both with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then bash tests/databases.sh; else sudo bash tests/databases.sh; fi
cargo build --locked --quiet
bin=target/debug/replicator
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

my() { mariadb -uroot -h127.0.0.1 -P3306 -N -B "$@"; }
pg() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the targets: the schema the application had before it moved to CockroachDB ---------------
pg -d postgres -c "DROP DATABASE IF EXISTS failback_pg WITH (FORCE)" -c "CREATE DATABASE failback_pg"
pg -d failback_pg -c "
CREATE TABLE customers (id int8 PRIMARY KEY, name text NOT NULL, tags text[], profile jsonb);
CREATE TABLE orders (id int8 PRIMARY KEY, customer_id int8, total numeric(12,2), placed_at timestamptz);"
my -e "DROP DATABASE IF EXISTS failback_my; CREATE DATABASE failback_my"
my failback_my -e "
CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, tags JSON, profile JSON);
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT, total DECIMAL(12,2), placed_at DATETIME(6));"

# --- a key and a token ------------------------------------------------------------------------------
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ec.pem"
openssl pkcs8 -topk8 -nocrypt -in "$work/ec.pem" -out "$work/key.pem"
openssl pkey -in "$work/key.pem" -pubout -out "$work/key.pub.pem"
"$bin" make-jwt -k "$work/key.pem" -a failback_pg.public -a failback_my -o "$work/token.jwt" >/dev/null 2>&1
token=$(cat "$work/token.jwt")
echo "== token for failback_pg.public and failback_my: ${token:0:24}…"

# --- two webhooks: one per target, both staging in PostgreSQL ---------------------------------
pg_port=$(port); my_port=$(port)
"$bin" start --tlsSelfSigned --bindAddr "127.0.0.1:$pg_port" \
  --targetConn postgres://postgres@127.0.0.1:5432/failback_pg \
  --stagingSchema _replicator --stagingCreateSchema >"$work/pg.log" 2>&1 &
pids+=($!)
"$bin" start --immediate --tlsSelfSigned --bindAddr "127.0.0.1:$my_port" \
  --targetConn mysql://root@127.0.0.1:3306/failback_my \
  --stagingConn postgres://postgres@127.0.0.1:5432/failback_pg \
  --stagingSchema _replicator_my --stagingCreateSchema >"$work/my.log" 2>&1 &
pids+=($!)
for log in pg my; do
  for _ in $(seq 200); do grep -q "listening for changefeed requests" "$work/$log.log" && break; sleep 0.05; done
  grep -q "listening for changefeed requests" "$work/$log.log" || { cat "$work/$log.log"; exit 1; }
done
echo "== listening: https://127.0.0.1:$pg_port (PostgreSQL) and https://127.0.0.1:$my_port (MariaDB)"

# The operator's step: the public key into staging, then SIGHUP (or wait a minute).
for schema in _replicator _replicator_my; do
  echo "INSERT INTO $schema.jwt_public_keys (public_key) VALUES (:'key')" \
    | pg -d failback_pg -v key="$(cat "$work/key.pub.pem")"
done
kill -HUP "${pids[@]}"
for log in pg my; do
  for _ in $(seq 100); do grep -q "JWT public keys re-read" "$work/$log.log" && break; sleep 0.05; done
done

# --- the changefeed's requests --------------------------------------------------------------------
post() { # what, port, path, body [token]
  local code
  code=$(curl -sk -o "$work/answer" -w '%{http_code}' -H "Authorization: Bearer ${5-$token}" \
    -H 'Content-Type: application/json' --data-binary "$4" "https://127.0.0.1:$2$3")
  printf '   %-44s %s %s\n' "$1" "$code" "$(head -c 150 "$work/answer")"
}
t() { echo "$((1764583200000000000 + $1)).0000000000"; }   # an HLC timestamp, as changefeeds write it

for target in pg my; do
  if [ "$target" = pg ]; then p=$pg_port; path=/failback_pg/public; else p=$my_port; path=/failback_my; fi
  echo "== posting to $path ($target)"
  post "inserts" "$p" "$path" '{"payload":[
    {"after":{"id":1,"name":"Ada","tags":["vip","eu"],"profile":{"since":2019,"score":9007199254740993}},"key":[1],"topic":"customers","updated":"'"$(t 1)"'"},
    {"after":{"id":2,"name":"Brendan","tags":[],"profile":null},"key":[2],"topic":"customers","updated":"'"$(t 1)"'"},
    {"after":{"id":10,"customer_id":1,"total":120.50,"placed_at":"2026-12-01T09:30:00.123456Z"},"key":[10],"topic":"orders","updated":"'"$(t 1)"'"},
    {"after":{"id":11,"customer_id":2,"total":4E+1,"placed_at":"2026-12-01T09:31:00Z"},"key":[11],"topic":"orders","updated":"'"$(t 1)"'"}],"length":4}'
  post "an update and a delete" "$p" "$path" '{"payload":[
    {"after":{"id":10,"customer_id":1,"total":99.99,"placed_at":"2026-12-01T09:30:00.123456Z"},"key":[10],"topic":"orders","updated":"'"$(t 2)"'"},
    {"after":null,"key":[11],"topic":"orders","updated":"'"$(t 2)"'"}],"length":2}'
  post "resolved" "$p" "$path" '{"resolved":"'"$(t 3)"'"}'
  post "an older version, re-sent (kept out)" "$p" "$path" '{"payload":[
    {"after":{"id":10,"customer_id":1,"total":120.50},"key":[10],"topic":"orders","updated":"'"$(t 1)"'"}],"length":1}'
  post "no token" "$p" "$path" '{"payload":[]}' ""
  post "an unknown column" "$p" "$path" '{"payload":[
    {"after":{"id":3,"name":"Cy","shoe_size":44},"key":[3],"topic":"customers","updated":"'"$(t 4)"'"}],"length":1}'
  post "an older resolved timestamp" "$p" "$path" '{"resolved":"'"$(t 0)"'"}'
done
echo "== a token for another schema"
post "to failback_pg.other" "$pg_port" /failback_pg/other '{"payload":[]}'

# --- what arrived ---------------------------------------------------------------------------------
# Consistent mode answered 200 once the rows were staged; the sweeper applies them once the
# resolved timestamp covers them.
for _ in $(seq 200); do
  [ "$(pg -d failback_pg -c "SELECT count(*) FROM _replicator.checkpoints WHERE target_applied_at IS NOT NULL")" = 1 ] && break
  sleep 0.05
done
echo "== PostgreSQL (failback_pg, consistent mode: applied up to the resolved timestamp)"
pg -d failback_pg -F ' | ' -c "SELECT 'customers', id, name, tags, profile FROM customers ORDER BY id"
pg -d failback_pg -F ' | ' -c "SELECT 'orders', id, customer_id, total, placed_at FROM orders ORDER BY id"
echo "== MariaDB (failback_my, immediate mode)"
my failback_my -e "SELECT 'customers', id, name, tags, profile FROM customers ORDER BY id;
  SELECT 'orders', id, customer_id, total, placed_at FROM orders ORDER BY id" | tr '\t' '|'
echo "== checkpoints (staging, resolved timestamps)"
pg -d failback_pg -F ' | ' -c "SELECT group_name, source_hlc, target_applied_at IS NOT NULL AS applied
  FROM _replicator.checkpoints UNION ALL
  SELECT group_name, source_hlc, target_applied_at IS NOT NULL FROM _replicator_my.checkpoints"

kill -TERM "${pids[@]}"
for p in "${pids[@]}"; do wait "$p"; done
pids=()
echo "== both stopped cleanly; the refusals each were logged once:"
grep -h "request refused" "$work/pg.log" "$work/my.log" | sed 's/^.*status=/   status=/' | cut -c1-150
