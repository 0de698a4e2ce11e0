#!/usr/bin/env bash
# Draining a logical-replication backlog: PostgreSQL's own subscriber against
# `replicator pglogical`, same rows, same machine, same run.
#
#   bash benches/pglogical.sh [ROWS]        (default 300000)
#
# For profiling: BENCH_ONLY=replicator runs replicator alone (no ratios), BENCH_ONLY=script
# replicator with the pass-through userscript alone, and BENCH_WRAP
# prefixes its command line (e.g. BENCH_WRAP="perf record -g -o /tmp/perf.data --"), BENCH_FLAGS
# adds flags to it (e.g. BENCH_FLAGS="--flushSize 10000"). BENCH_BIN runs another build of
# replicator (to compare two builds under the same machine conditions) instead of building
# this checkout. BENCH_LOG names a file to keep replicator's log in. BENCH_TX sets the rows per source transaction (default 1000; it must divide
# ROWS).
#
# The source is the local PostgreSQL on 5432 (tests/databases.sh provisions it); the target is
# a second cluster on port 5433, created here if missing (Debian's pg_createcluster). One
# backlog of ROWS rows (mixed types, BENCH_TX-row transactions) is written once and sits in
# four slots. pg_recvlogical drains the first (pgoutput, to /dev/null: it costs nothing, so
# its rate is the walsender's own, the source's ceiling), the native subscription the second,
# replicator the third, replicator with a pass-through userscript the fourth; each of the
# last three into its own target database on 5433. A drain is
# timed from the start of the consumer until the last row is on the target (commits apply
# in order, so the last id arriving means every row did). Prints rows/s, the ratios to the
# native subscriber, and replicator's peak RSS. Connections use the default sslmode
# (prefer) on both sides, as users run them.
#
# The source's own limit is shown too: for each drain, the CPU time of the walsender that
# decoded and sent it (from /proc, sampled while it runs), as a share of the drain's wall
# time. One walsender decodes a slot on one core; no consumer drains faster than it sends,
# so a drain whose walsender was busy 90% of the time can go at most 1/0.9 as fast.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-300000}
tx=${BENCH_TX:-1000}
(( tx > 0 && rows % tx == 0 )) || { echo "ROWS must be a multiple of BENCH_TX ($tx)" >&2; exit 2; }

src_psql() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p 5432 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
tgt_psql() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p 5433 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }

# --- the target cluster on 5433 ---------------------------------------------------------------
ver=$(ls /etc/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "bench" {f=1} END {exit !f}'; then
  echo "creating PostgreSQL $ver cluster 'bench' on port 5433"
  pg_createcluster "$ver" bench --port 5433 >/dev/null
  hba=/etc/postgresql/$ver/bench/pg_hba.conf
  { echo "host all all 127.0.0.1/32 trust"; cat "$hba"; } >"$hba.new" && mv "$hba.new" "$hba"
  chown postgres:postgres "$hba"
fi
pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "bench" {print $4}' | grep -q online \
  || pg_ctlcluster --skip-systemctl-redirect "$ver" bench start
for _ in $(seq 100); do tgt_psql -c 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done

if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --locked --quiet
  bin=target/release/replicator
fi

# --- the backlog ------------------------------------------------------------------------------
slots=(bench_ceiling bench_native bench_replicator bench_script)
cleanup() {
  tgt_psql -d bench_native -c "ALTER SUBSCRIPTION bench_sub DISABLE" >/dev/null 2>&1 || true
  tgt_psql -d bench_native -c "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)" >/dev/null 2>&1 || true
  tgt_psql -d bench_native -c "DROP SUBSCRIPTION IF EXISTS bench_sub" >/dev/null 2>&1 || true
  for s in "${slots[@]}"; do
    src_psql -d postgres -c "SELECT pg_drop_replication_slot('$s') WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$s')" >/dev/null 2>&1 || true
  done
  if [ -n "${BENCH_LOG:-}" ] && [ -f "${work:-}/bench_replicator.log" ]; then cp "$work/bench_replicator.log" "$BENCH_LOG"; fi
  if [ -n "${work:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
cleanup

ddl="CREATE TABLE bench (id bigint PRIMARY KEY, n int, amount numeric(12,2), name text,
       at timestamptz, ok bool, doc jsonb, ref uuid, f double precision)"
src_psql -d postgres -c "DROP DATABASE IF EXISTS bench_src WITH (FORCE)" -c "CREATE DATABASE bench_src"
src_psql -d bench_src -c "$ddl" -c "CREATE PUBLICATION bench_pub FOR TABLE bench"
for s in "${slots[@]}"; do
  src_psql -d bench_src -c "SELECT pg_create_logical_replication_slot('$s', 'pgoutput')" >/dev/null
done
for db in bench_native bench_replicator bench_script; do
  tgt_psql -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  tgt_psql -d "$db" -c "$ddl"
done

echo "writing $rows rows in $((rows / tx)) transactions of $tx"
start=$(date +%s.%N)
src_psql -d bench_src <<SQL
DO \$\$
BEGIN
  FOR b IN 0..$((rows / tx - 1)) LOOP
    INSERT INTO bench
    SELECT g, g % 1000, (g % 100000) / 100.0, 'name ' || g || ' ' || md5(g::text),
           timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', g % 2 = 0,
           jsonb_build_object('k', g, 'tags', jsonb_build_array('a', g % 7)),
           md5(g::text)::uuid, g / 7.0
    FROM generate_series(b * $tx + 1, b * $tx + $tx) g;
    COMMIT;
  END LOOP;
END
\$\$;
SQL
echo "backlog written in $(echo "$(date +%s.%N) - $start" | bc) s"
end_lsn=$(src_psql -d bench_src -c "SELECT pg_current_wal_lsn()")

# Waits until the last row is on the target (commits apply in order, so every row is). One
# session polls inside the server: a new psql every 50 ms costs more CPU than it measures, and
# EXECUTE plans the query afresh each time (a plan cached while the table was empty would scan
# the whole table). Gives up after 10 minutes.
wait_last() { # database
  tgt_psql -d "$1" -c "DO \$\$ DECLARE last bigint; BEGIN
    FOR i IN 1..12000 LOOP
      EXECUTE 'SELECT coalesce(max(id), 0) FROM bench' INTO last;
      EXIT WHEN last >= $rows;
      PERFORM pg_sleep(0.05);
    END LOOP; END \$\$"
  [ "$(tgt_psql -d "$1" -c 'SELECT coalesce(max(id), 0) FROM bench')" = "$rows" ] \
    || { echo "$1 did not catch up within 10 minutes" >&2; exit 1; }
}

# Follows the walsender of a slot until it exits and writes its CPU seconds (user + system)
# to a file. Run in the background while the slot is drained.
walsender_cpu() { # slot file
  local pid="" last=0 ticks tck
  tck=$(getconf CLK_TCK)
  for _ in $(seq 600); do
    pid=$(src_psql -d postgres -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$1'")
    [ -n "$pid" ] && break
    sleep 0.05
  done
  while [ -n "$pid" ] && ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null); do
    last=$ticks
    sleep 0.05
  done
  echo "scale=2; $last / $tck" | bc >"$2"
}

# CPU ticks the target cluster has used so far: its postmaster, every live process under it,
# and those that have exited (reaped into the postmaster's children's time). A drain's share
# is the difference over its wall time (the polling session of wait_last included, alike in
# every drain).
tgt_datadir=$(pg_lsclusters -h | awk -v v="$ver" '$1 == v && $2 == "bench" {print $6}')
target_ticks() {
  local pm total child
  pm=$(head -1 "$tgt_datadir/postmaster.pid")
  total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat")
  for child in $(pgrep -P "$pm"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# A process's own CPU ticks (user + system), 0 once it is gone.
own_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# --- the source's ceiling: pg_recvlogical -----------------------------------------------------
work=$(mktemp -d)
if [ -n "${BENCH_ONLY:-}" ]; then ceiling=1; else
walsender_cpu bench_ceiling "$work/bench_ceiling.cpu" &
follower=$!
t0=$(date +%s.%N)
pg_recvlogical -h 127.0.0.1 -p 5432 -U postgres -d bench_src --slot bench_ceiling --start \
  --endpos "$end_lsn" -o proto_version=1 -o publication_names=bench_pub -f /dev/null
ceiling=$(echo "$(date +%s.%N) - $t0" | bc)
wait "$follower"
fi

# --- PostgreSQL's subscriber ------------------------------------------------------------------
if [ -n "${BENCH_ONLY:-}" ]; then native=1; else
tgt_psql -d bench_native -c "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port=5432 dbname=bench_src user=postgres' PUBLICATION bench_pub WITH (create_slot = false, slot_name = 'bench_native', copy_data = false, enabled = false)"
walsender_cpu bench_native "$work/bench_native.cpu" &
follower=$!
t0=$(date +%s.%N) ticks0=$(target_ticks)
tgt_psql -d bench_native -c "ALTER SUBSCRIPTION bench_sub ENABLE"
wait_last bench_native
native=$(echo "$(date +%s.%N) - $t0" | bc)
echo "$(($(target_ticks) - ticks0))" >"$work/bench_native.target"
tgt_psql -d bench_native -c "ALTER SUBSCRIPTION bench_sub DISABLE" >/dev/null
wait "$follower"
fi

# --- replicator -------------------------------------------------------------------------------
work=${work:-$(mktemp -d)}
run_replicator() { # slot database [extra flags…]
  local slot=$1 db=$2
  shift 2
  local t0 pid secs rss follower ticks0
  walsender_cpu "$slot" "$work/$slot.cpu" &
  follower=$!
  t0=$(date +%s.%N) ticks0=$(target_ticks)
  ${BENCH_WRAP:-} "$bin" pglogical --sourceConn postgres://postgres@127.0.0.1:5432/bench_src \
    --targetConn "postgres://postgres@127.0.0.1:5433/$db" --targetSchema "$db.public" \
    --slotName "$slot" --publicationName bench_pub --stagingSchema _replicator --stagingCreateSchema \
    "$@" >"$work/$slot.log" 2>&1 &
  pid=$!
  wait_last "$db"
  secs=$(echo "$(date +%s.%N) - $t0" | bc)
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  echo "$(($(target_ticks) - ticks0))" >"$work/$slot.target"
  # Under BENCH_WRAP the process is the wrapper's: no share of replicator's own then.
  if [ -z "${BENCH_WRAP:-}" ]; then own_ticks "$pid" >"$work/$slot.replicator"; fi
  if [ -n "${BENCH_WRAP:-}" ]; then
    pkill -INT -P "$pid" || true # the wrapped replicator; the wrapper then exits
    wait "$pid" || true
  else
    kill "$pid"
    wait "$pid" || { echo "replicator failed:" >&2; cat "$work/$slot.log" >&2; exit 1; }
  fi
  wait "$follower"
  echo "$secs $rss"
}
if [ "${BENCH_ONLY:-}" != script ]; then
read -r plain plain_rss < <(run_replicator bench_replicator bench_replicator ${BENCH_FLAGS:-})
fi
if [ "${BENCH_ONLY:-}" = replicator ]; then
  echo "replicator pglogical: $plain s"
  exit 0
fi
cat >"$work/pass.ts" <<'TS'
import * as api from "replicator@v2";
api.configureTargetSchema("bench_script.public", {
  onRowUpsert: (row) => row,
  onRowDelete: (row) => row,
});
TS
read -r scripted scripted_rss < <(run_replicator bench_script bench_script --userscript "$work/pass.ts" ${BENCH_FLAGS:-})
if [ "${BENCH_ONLY:-}" = script ]; then
  echo "replicator pglogical + pass-through script: $scripted s, peak RSS $((scripted_rss / 1024)) MiB"
  exit 0
fi

# --- figures ----------------------------------------------------------------------------------
rate() { echo "$rows / $1" | bc; }
ratio() { echo "scale=2; $2 / $1" | bc; }
busy() { # slot seconds: the walsender's CPU as a share of the drain's wall time
  printf '%3.0f%%' "$(echo "100 * $(cat "$work/$1.cpu") / $2" | bc -l)"
}
tck=$(getconf CLK_TCK)
share() { # file seconds: CPU ticks in the file as a share of the drain's wall time
  if [ -f "$1" ]; then printf '%3.0f%%' "$(echo "100 * $(cat "$1") / $tck / $2" | bc -l)"; else printf '  -'; fi
}
cpu() { # slot seconds: the drain's CPU shares
  printf 'walsender %s  target server %s  replicator %s' "$(busy "$1" "$2")" \
    "$(share "$work/$1.target" "$2")" "$(share "$work/$1.replicator" "$2")"
}
echo
echo "rows: $rows ($tx-row transactions), target: PostgreSQL $ver on 5433"
printf '%-44s %8.2f s %9s rows/s  %5s× native  %s\n' "pg_recvlogical to /dev/null (the ceiling)" "$ceiling" "$(rate "$ceiling")" "$(ratio "$ceiling" "$native")" "$(cpu bench_ceiling "$ceiling")"
printf '%-44s %8.2f s %9s rows/s  %5s× native  %s\n' "PostgreSQL subscription (native)" "$native" "$(rate "$native")" "1.00" "$(cpu bench_native "$native")"
printf '%-44s %8.2f s %9s rows/s  %5s× native  %s  peak RSS %s MiB\n' "replicator pglogical" "$plain" "$(rate "$plain")" "$(ratio "$plain" "$native")" "$(cpu bench_replicator "$plain")" "$((plain_rss / 1024))"
printf '%-44s %8.2f s %9s rows/s  %5s× native  %s  peak RSS %s MiB\n' "replicator pglogical + pass-through script" "$scripted" "$(rate "$scripted")" "$(ratio "$scripted" "$native")" "$(cpu bench_script "$scripted")" "$((scripted_rss / 1024))"
echo "(CPU shares are of one core over the drain's wall time; 2 cores make 200%. A drain cannot go"
echo " faster than its walsender sends: at most 100% / walsender share as fast as it went. The"
echo " native subscriber's apply worker is part of the target server's share.)"
echo "of the ceiling: native $(ratio "$native" "$ceiling")×, replicator $(ratio "$plain" "$ceiling")×, with the script $(ratio "$scripted" "$ceiling")×; with the script replicator goes $(ratio "$scripted" "$plain")× as fast as without"
