#!/usr/bin/env bash
# Draining a MariaDB binlog backlog into PostgreSQL with `replicator mylogical`, against COPY
# of the same rows into the same target table (the ingest limit), same machine, same run.
#
#   bash benches/mylogical.sh [ROWS]        (default 300000)
#
# BENCH_TX sets the rows per source transaction (default 1000; it must divide ROWS).
# BENCH_FLAGS adds flags to replicator (e.g. BENCH_FLAGS="--flushSize 5000"); BENCH_WRAP
# prefixes its command line (e.g. BENCH_WRAP="perf record -g -o /tmp/perf.data --"); BENCH_LOG
# names a file to keep replicator's log in; BENCH_BIN runs another build of replicator (to
# compare two builds under the same machine conditions) instead of building this checkout.
#
# The source is the local MariaDB on 3306, the target the local PostgreSQL on 5432
# (tests/databases.sh provisions both). ROWS rows of mixed types are written in BENCH_TX-row
# transactions after the GTID position is noted, then exported to a file. COPY loads that
# file into the empty target table (timed, then the table is emptied again); replicator
# drains the binlog from the noted position into the same table, timed from its start until
# the last row is on the target (commits apply in order, so the last id arriving means every
# row did). BENCH_RUNS rounds (default 3) alternate the three — COPY, replicator, replicator
# with a pass-through userscript (every row through onRowUpsert and back) — each on an
# emptied table and a fresh staging schema; prints the median rates, their ratios, and
# replicator's peak RSS. BENCH_NO_SCRIPT=1 leaves the scripted drain out.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-300000}
tx=${BENCH_TX:-1000}
(( tx > 0 && rows % tx == 0 )) || { echo "ROWS must be a multiple of BENCH_TX ($tx)" >&2; exit 2; }

my() { mariadb -uroot -h127.0.0.1 -P3306 -N -B "$@"; }
pg() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p 5432 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }

if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --locked --quiet
  bin=target/release/replicator
fi
work=$(mktemp -d)
trap '[ -z "${BENCH_LOG:-}" ] || cp "$work/replicator.log" "$BENCH_LOG"; rm -rf "$work"' EXIT

my -e "DROP DATABASE IF EXISTS bench_my; CREATE DATABASE bench_my"
my bench_my -e "CREATE TABLE bench (id BIGINT PRIMARY KEY, n INT, amount DECIMAL(12,2), name VARCHAR(80),
  at DATETIME(6), ok BOOLEAN, ref CHAR(32), f DOUBLE, flags TINYINT UNSIGNED)"
pg -d postgres -c "DROP DATABASE IF EXISTS bench_my_tgt WITH (FORCE)" -c "CREATE DATABASE bench_my_tgt"
pg -d bench_my_tgt -c "CREATE TABLE bench (id bigint PRIMARY KEY, n int, amount numeric(12,2), name text,
  at timestamp(6), ok smallint, ref text, f double precision, flags smallint)"
# A fresh binlog file: the server finds the start position without reading through what
# earlier runs left in the current one.
my -e "FLUSH BINARY LOGS"
position=$(my -e "SELECT @@gtid_binlog_pos")

echo "writing $rows rows in $((rows / tx)) transactions of $tx"
start=$(date +%s.%N)
for ((b = 0; b < rows / tx; b++)); do
  echo "INSERT INTO bench WITH RECURSIVE s(g) AS (SELECT $((b * tx + 1)) UNION ALL SELECT g + 1 FROM s WHERE g < $((b * tx + tx)))
    SELECT g, g % 1000, (g % 100000) / 100.0, CONCAT('name ', g, ' ', MD5(g)),
           TIMESTAMP '2024-01-01 00:00:00' + INTERVAL g SECOND, g % 2 = 0, MD5(g), g / 7.0, g % 256 FROM s;"
done | my bench_my
echo "backlog written in $(echo "$(date +%s.%N) - $start" | bc) s"
[ "$(my bench_my -e 'SELECT COUNT(*) FROM bench')" = "$rows" ] || { echo "the backlog is incomplete" >&2; exit 1; }

# One round: COPY the file into the empty table, empty it, let replicator drain the binlog
# into it. Rounds alternate the two so both meet the same machine conditions; the medians are
# reported (a 2-core machine shared with the databases varies by tens of percent run to run).
my bench_my -e "SELECT id, n, amount, name, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), ok, ref, f, flags FROM bench ORDER BY id" >"$work/rows.tsv"
want=$(my bench_my -e "SELECT CONCAT(COUNT(*), '/', SUM(n), '/', SUM(amount), '/', SUM(flags)) FROM bench")
reset() { pg -d bench_my_tgt -c "TRUNCATE bench" -c "DROP SCHEMA IF EXISTS _replicator CASCADE" -c "VACUUM bench"; }

copy_once() {
  local t0
  t0=$(date +%s.%N)
  pg -d bench_my_tgt -c "\\copy bench FROM '$work/rows.tsv'"
  copy_secs=$(echo "$(date +%s.%N) - $t0" | bc)
  [ "$(pg -d bench_my_tgt -c 'SELECT count(*) FROM bench')" = "$rows" ] || { echo "COPY loaded the wrong count" >&2; exit 1; }
}

cat >"$work/pass.ts" <<'TS'
import * as api from "replicator@v2";
api.configureTargetSchema("bench_my_tgt.public", {
  onRowUpsert: (row) => row,
  onRowDelete: (row) => row,
});
TS

# One drain by replicator; extra arguments go to it (the userscript).
replicator_once() {
  local t0 pid secs got
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  ${BENCH_WRAP:-} "$bin" mylogical --sourceConn 'mysql://root@tcp(127.0.0.1:3306)/bench_my' \
    --targetConn postgres://postgres@127.0.0.1:5432/bench_my_tgt --targetSchema bench_my_tgt.public \
    --defaultGTIDSet "$position" --stagingSchema _replicator --stagingCreateSchema \
    --replicationProcessID 4343 ${BENCH_FLAGS:-} "$@" >>"$work/replicator.log" 2>&1 &
  pid=$!
  # One session polls inside the server: a new psql every 50 ms costs more CPU than it
  # measures, and EXECUTE plans the query afresh each time (a plan cached while the table was
  # empty would scan the whole table). It gives up after 10 minutes.
  pg -d bench_my_tgt -c "DO \$\$ DECLARE last bigint; BEGIN
    FOR i IN 1..12000 LOOP
      EXECUTE 'SELECT coalesce(max(id), 0) FROM bench' INTO last;
      EXIT WHEN last >= $rows;
      PERFORM pg_sleep(0.05);
    END LOOP; END \$\$"
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  kill -0 "$pid" 2>/dev/null || { echo "replicator exited:" >&2; cat "$work/replicator.log" >&2; exit 1; }
  [ "$(pg -d bench_my_tgt -c 'SELECT coalesce(max(id), 0) FROM bench')" = "$rows" ] \
    || { echo "the target did not catch up within 10 minutes" >&2; cat "$work/replicator.log" >&2; exit 1; }
  last_rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  if [ -n "${BENCH_WRAP:-}" ]; then
    pkill -INT -P "$pid" || true
    wait "$pid" || true
  else
    kill "$pid"
    wait "$pid" || { echo "replicator failed:" >&2; cat "$work/replicator.log" >&2; exit 1; }
  fi
  # Same rows on both sides.
  got=$(pg -d bench_my_tgt -c "SELECT count(*) || '/' || sum(n) || '/' || sum(amount) || '/' || sum(flags) FROM bench")
  [ "$want" = "$got" ] || { echo "target differs: source $want, target $got" >&2; exit 1; }
  replicator_secs=$secs
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
runs=${BENCH_RUNS:-3}
max() { if (( $1 > $2 )); then echo "$1"; else echo "$2"; fi; }
rss=0 script_rss=0
copies=() replicators=() scripted=()
for ((r = 1; r <= runs; r++)); do
  reset
  copy_once
  copies+=("$copy_secs")
  reset
  replicator_once
  replicators+=("$replicator_secs")
  rss=$(max "$rss" "$last_rss")
  if [ -z "${BENCH_NO_SCRIPT:-}" ]; then
    reset
    replicator_once --userscript "$work/pass.ts"
    scripted+=("$replicator_secs")
    script_rss=$(max "$script_rss" "$last_rss")
    printf "round %d: COPY %.2f s, replicator %.2f s, with the script %.2f s\n" "$r" "$copy_secs" "${replicators[-1]}" "$replicator_secs"
  else
    printf "round %d: COPY %.2f s, replicator %.2f s\n" "$r" "$copy_secs" "$replicator_secs"
  fi
done
copy=$(printf '%s\n' "${copies[@]}" | median)
secs=$(printf '%s\n' "${replicators[@]}" | median)

rate() { echo "$rows / $1" | bc; }
echo
echo "rows: $rows ($tx-row transactions), MariaDB $(my -e 'SELECT VERSION()') → PostgreSQL on 5432"
printf '%-34s %8.2f s %9s rows/s\n' "COPY into the target table (median)" "$copy" "$(rate "$copy")"
printf '%-34s %8.2f s %9s rows/s  %s of COPY  peak RSS %s MiB\n' "replicator mylogical (median)" "$secs" "$(rate "$secs")" \
  "$(echo "scale=0; 100 * $copy / $secs" | bc)%" "$((rss / 1024))"
if [ -z "${BENCH_NO_SCRIPT:-}" ]; then
  with=$(printf '%s\n' "${scripted[@]}" | median)
  printf '%-34s %8.2f s %9s rows/s  %s of COPY  %s× without  peak RSS %s MiB\n' "  + pass-through userscript" "$with" "$(rate "$with")" \
    "$(echo "scale=0; 100 * $copy / $with" | bc)%" "$(echo "scale=2; $secs / $with" | bc)" "$((script_rss / 1024))"
fi
