#!/usr/bin/env bash
# Failback ingest: `replicator start` taking changefeed webhook requests into PostgreSQL, in
# immediate and in consistent mode, against COPY of the same rows into the same table, same
# machine, same run.
#
#   bash benches/start.sh [ROWS]        (default 200000; a multiple of BENCH_BATCH)
#
# BENCH_BATCH rows per request (default 1000), BENCH_CONCURRENCY requests at once (default 8),
# BENCH_TLS=1 serves TLS (--tlsSelfSigned) instead of plain HTTP, BENCH_BIN runs another
# build instead of building this checkout, BENCH_FLAGS adds flags to `replicator start`,
# BENCH_PERF=FILE records a perf profile (with call graphs) of replicator during the drain
# (BENCH_PERF_ALL=1: of every process, PostgreSQL's backends too).
#
# The target is the local PostgreSQL on 5432 (tests/databases.sh provisions it), staging in
# the same database (the default). The rows (9 mixed-type columns: bigint, int, numeric,
# text, timestamptz, bool, jsonb, uuid, double) are written once as CSV and once as webhook
# bodies ({"payload":[…]} with key, topic and updated, as a CockroachDB changefeed sends
# them). COPY loads the CSV into an empty table; then replicator starts, and a client posts
# the bodies (read into memory first), BENCH_CONCURRENCY at a time on connections kept
# alive, each with a token from make-jwt. The drain is timed from the first request to the
# last 200; every request must get 200. Prints rows/s, the
# ratio to COPY, and replicator's peak RSS (VmHWM); both tables must end up identical.
#
# What the ratio means: COPY is one statement streaming rows into one table; replicator
# parses JSON, checks the token, claims each key's version in staging (so an older version
# never overwrites a newer one) and writes each request in one target transaction.
#
# Consistent mode (the default) runs twice more, each into a database of its own: a drain
# (the same requests BENCH_CONCURRENCY at a time, a resolved timestamp after every
# BENCH_RESOLVE_EVERY rows once every earlier request got 200, default 10000), timed from the
# first request until the last resolved timestamp is marked applied in staging; and a steady
# feed of BENCH_STEADY_RATE rows/s (default 5000) with the same resolved timestamps, printing
# p50 and p99 of resolved-to-applied latency (staging's target_applied_at - first_seen).
# BENCH_MODES=immediate or consistent runs one mode only; BENCH_LOGS=DIR keeps consistent
# mode's logs there.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000}
batch=${BENCH_BATCH:-1000}
concurrency=${BENCH_CONCURRENCY:-8}
modes=${BENCH_MODES:-immediate consistent}
resolve_every=${BENCH_RESOLVE_EVERY:-10000}
steady_rate=${BENCH_STEADY_RATE:-5000}
(( batch > 0 && rows % batch == 0 )) || { echo "ROWS must be a multiple of BENCH_BATCH ($batch)" >&2; exit 2; }

psql_() { PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p 5432 -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }
# CPU seconds (user + system) used so far by the processes named $1 and by their children
# that have ended (PostgreSQL's postmaster counts its backends' time when they exit), or by
# pid $2.
cpu() {
  local ticks
  ticks=$(getconf CLK_TCK)
  if [ -n "${2:-}" ]; then
    awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$2/stat"
  else
    for p in $(pgrep -x "$1"); do cat "/proc/$p/stat" 2>/dev/null; done \
      | awk -v t="$ticks" '{s += $14 + $15 + $16 + $17} END {print s / t}'
  fi
}

if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --locked --quiet
  bin=target/release/replicator
fi

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ddl="CREATE TABLE bench (id bigint PRIMARY KEY, n int, amount numeric(12,2), name text,
       at timestamptz, ok bool, doc jsonb, ref uuid, f double precision)"
for db in bench_copy bench_start; do
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  psql_ -d "$db" -c "$ddl"
done

# --- the rows, as CSV and as changefeed requests ----------------------------------------------
python3 - "$rows" "$batch" "$work" <<'EOF'
import json, sys, uuid
rows, batch, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
base = 1_700_000_000_000_000_000
stub = "\\x" + '{"__stub__":true}'.encode().hex()
versions = open(f"{work}/versions.csv", "w")
staged = open(f"{work}/staged.csv", "w")
stubs = open(f"{work}/stubs.csv", "w")
with open(f"{work}/rows.csv", "w") as csv:
    for start in range(1, rows + 1, batch):
        lines = []
        for i in range(start, start + batch):
            amount = f"{i % 100000}.{i % 100:02d}"
            name = f"name {i}"
            at = f"2026-12-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000000:06d}Z"
            ok = i % 2 == 0
            doc = {"i": i, "tags": ["a", "b"], "s": "x" * (i % 7)}
            ref = str(uuid.UUID(int=i))
            f = i / 7
            csv.write(f'{i},{i % 1000},{amount},"{name}",{at},{str(ok).lower()},"{json.dumps(doc).replace(chr(34), chr(34) * 2)}",{ref},{f!r}\n')
            after = f'{{"id":{i},"n":{i % 1000},"amount":{amount},"name":{json.dumps(name)},"at":"{at}","ok":{str(ok).lower()},"doc":{json.dumps(doc)},"ref":"{ref}","f":{f!r}}}'
            lines.append(f'{{"after":{after},"key":[{i}],"topic":"bench","updated":"{base + i}.0000000000"}}')
            versions.write(f'bench_start_public_bench,"[{i}]",{base + i},0\n')
            staged.write(f'{base + i},0,"[{i}]",\\x{after.encode().hex()},false\n')
            stubs.write(f'{base + i},0,"[{i}]",{stub},true,2026-12-01T00:00:00Z\n')
        with open(f"{work}/req-{start:09d}.json", "w") as out:
            out.write('{"payload":[' + ",".join(lines) + f'],"length":{len(lines)}}}')
EOF
requests=$(ls "$work"/req-*.json | wc -l)
bytes=$(cat "$work"/req-*.json | wc -c)

# --- COPY ---------------------------------------------------------------------------------------
t0=$(now)
psql_ -d bench_copy -c "\\copy bench FROM '$work/rows.csv' CSV"
t1=$(now)
copy_secs=$(echo "$t1 - $t0" | bc -l)
[ "$(psql_ -d bench_copy -c 'SELECT count(*) FROM bench')" = "$rows" ] || { echo "COPY lost rows" >&2; exit 1; }

# --- the floor: what immediate mode writes for these rows, at COPY's speed -------------------------
# Besides the target rows, each row's version in key_versions and its applied stub in the
# per-table staging table (the layouts replicator creates), each session in one transaction:
# once in one session (as COPY above), once split over one session per core (replicator
# writes in parallel too).
floor() { # sessions -> seconds
  local n=$1 t0 t1 i
  psql_ -d postgres -c "DROP DATABASE IF EXISTS bench_floor WITH (FORCE)" -c "CREATE DATABASE bench_floor"
  psql_ -d bench_floor -c "$ddl" -c "CREATE TABLE key_versions (table_name TEXT NOT NULL, key TEXT NOT NULL,
    nanos INT8 NOT NULL, logical INT8 NOT NULL, PRIMARY KEY (table_name, key))" \
    -c "CREATE TABLE stubs (nanos INT8 NOT NULL, logical INT8 NOT NULL, key TEXT NOT NULL, mut BYTEA NOT NULL,
    before BYTEA NULL, applied BOOL NOT NULL DEFAULT false, applied_at TIMESTAMPTZ NULL,
    deletion BOOL NOT NULL DEFAULT false, source_time TIMESTAMPTZ GENERATED ALWAYS AS
    (to_timestamp(nanos::float8 / 1e9)) STORED, PRIMARY KEY (nanos, logical, key))" \
    -c "CREATE INDEX ON stubs (key) INCLUDE (applied)"
  for f in rows versions stubs; do split -n "l/$n" -d "$work/$f.csv" "$work/$f.part."; done
  local pg0
  pg0=$(cpu postgres)
  t0=$(now)
  for ((i = 0; i < n; i++)); do
    psql_ -d bench_floor -c "BEGIN" -c "\\copy bench FROM '$work/rows.part.0$i' CSV" \
      -c "\\copy key_versions FROM '$work/versions.part.0$i' CSV" \
      -c "\\copy stubs (nanos, logical, key, mut, applied, applied_at) FROM '$work/stubs.part.0$i' CSV" -c "COMMIT" &
  done
  wait
  t1=$(now)
  echo "$(cpu postgres) - $pg0" | bc -l >"$work/floor-$n.cpu"
  rm -f "$work"/*.part.*
  psql_ -d postgres -c "DROP DATABASE bench_floor WITH (FORCE)"
  echo "$t1 - $t0" | bc -l
}
cores=$(nproc)
floor_secs=$(floor 1)
floor_all_secs=$(floor "$cores")

digest="SELECT md5(string_agg(b::text, ',' ORDER BY id)) FROM bench b"
copy_rate=$(echo "$rows / $copy_secs" | bc -l)
printf 'rows %d in %d requests of %d (%.1f MiB of JSON), %d at once\n' \
  "$rows" "$requests" "$batch" "$(echo "$bytes / 1048576" | bc -l)" "$concurrency"
printf '%-30s %10.0f rows/s  %6.2f s\n' "COPY" "$copy_rate" "$copy_secs"

# --- replicator start --immediate ---------------------------------------------------------------
if [[ "$modes" == *immediate* ]]; then
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
scheme=http; tls=()
if [ "${BENCH_TLS:-0}" = 1 ]; then scheme=https; tls=(--tlsSelfSigned); fi
# shellcheck disable=SC2086
"$bin" start --immediate --bindAddr "127.0.0.1:$port" "${tls[@]}" \
  --targetConn "postgres://postgres@127.0.0.1:5432/bench_start" --stagingCreateSchema \
  ${BENCH_FLAGS:-} >"$work/replicator.log" 2>&1 &
pid=$!
for _ in $(seq 200); do grep -q "listening for changefeed requests" "$work/replicator.log" && break; sleep 0.05; done
grep -q "listening for changefeed requests" "$work/replicator.log" || { cat "$work/replicator.log" >&2; exit 1; }
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ec.pem"
openssl pkcs8 -topk8 -nocrypt -in "$work/ec.pem" -out "$work/key.pem"
openssl pkey -in "$work/key.pem" -pubout -out "$work/pub.pem"
echo "INSERT INTO _replicator.jwt_public_keys (public_key) VALUES (:'key')" | psql_ -d bench_start -v key="$(cat "$work/pub.pem")"
kill -HUP "$pid"
for _ in $(seq 100); do grep -q "JWT public keys re-read" "$work/replicator.log" && break; sleep 0.05; done
"$bin" make-jwt --key "$work/key.pem" --allow bench_start.public --out "$work/token" 2>/dev/null
token=$(cat "$work/token")
url="$scheme://127.0.0.1:$port/bench_start/public"

perf_pid=
perf_what=(-p "$pid"); [ -n "${BENCH_PERF_ALL:-}" ] && perf_what=(-a)
if [ -n "${BENCH_PERF:-}" ]; then perf record -q --call-graph ${BENCH_PERF_GRAPH:-fp} "${perf_what[@]}" -o "$BENCH_PERF" 2>/dev/null & perf_pid=$!; sleep 0.5; fi
pg0=$(cpu postgres); r0=$(cpu replicator "$pid")
# The client keeps one connection per worker alive, as a changefeed's webhook sink does; its
# CPU (on the same cores as what is measured) is printed. (curl, a process and a connection
# per request, took 2 s of CPU for 200 requests: a quarter of the machine during the drain.)
python3 - "$work" "$url" "$concurrency" "$token" >"$work/codes" <<'PY'
import concurrent.futures, glob, http.client, resource, sys, threading, time, urllib.parse
work, url, concurrency, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlparse(url)
bodies = [open(f, "rb").read() for f in sorted(glob.glob(f"{work}/req-*.json"))]
local = threading.local()
def connection():
    if not hasattr(local, "c"):
        if u.scheme == "https":
            import ssl
            local.c = http.client.HTTPSConnection(u.hostname, u.port, timeout=300,
                                                  context=ssl._create_unverified_context())
        else:
            local.c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    return local.c
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
def post(body):
    c = connection()
    c.request("POST", u.path, body, headers)
    r = c.getresponse(); r.read()
    return r.status
pool = concurrent.futures.ThreadPoolExecutor(concurrency)
cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
statuses = list(pool.map(post, bodies))
t1, cpu1 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
print("\n".join(map(str, statuses)))
with open(f"{work}/client.cpu", "w") as out:
    out.write(f"{cpu1.ru_utime - cpu0.ru_utime} {cpu1.ru_stime - cpu0.ru_stime}\n")
with open(f"{work}/drain.secs", "w") as out:
    out.write(f"{t1 - t0}\n")
PY
start_secs=$(cat "$work/drain.secs")
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
pg_cpu=$(echo "$(cpu postgres) - $pg0" | bc -l); r_cpu=$(echo "$(cpu replicator "$pid") - $r0" | bc -l)
ok=$(grep -c '^200$' "$work/codes" || true)
[ "$ok" = "$requests" ] || { echo "only $ok of $requests requests got 200:"; sort "$work/codes" | uniq -c; tail -5 "$work/replicator.log"; exit 1; } >&2
[ "$(psql_ -d bench_start -c 'SELECT count(*) FROM bench')" = "$rows" ] || { echo "replicator lost rows" >&2; exit 1; }
[ "$(psql_ -d bench_start -c "$digest")" = "$(psql_ -d bench_copy -c "$digest")" ] \
  || { echo "replicator's rows differ from COPY's" >&2; exit 1; }
rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

start_rate=$(echo "$rows / $start_secs" | bc -l)
floor_rate=$(echo "$rows / $floor_secs" | bc -l)
floor_all_rate=$(echo "$rows / $floor_all_secs" | bc -l)
printf '%-30s %10.0f rows/s  %6.2f s   %.2fx COPY (COPY of the rows, their key_versions and their stubs)\n' "floor, 1 session" "$floor_rate" "$floor_secs" "$(echo "$floor_rate / $copy_rate" | bc -l)"
printf '%-30s %10.0f rows/s  %6.2f s   %.2fx COPY (the same, split over %d sessions)\n' "floor, $cores sessions" "$floor_all_rate" "$floor_all_secs" "$(echo "$floor_all_rate / $copy_rate" | bc -l)" "$cores"
printf '%-30s %10.0f rows/s  %6.2f s   %.2fx COPY, %.2fx the %d-session floor\n' "replicator start --immediate" "$start_rate" "$start_secs" "$(echo "$start_rate / $copy_rate" | bc -l)" "$(echo "$start_rate / $floor_all_rate" | bc -l)" "$cores"
client_cpu=$(awk '{print $1 + $2}' "$work/client.cpu")
printf 'CPU during the drain: replicator %.2f s, PostgreSQL %.2f s, client %.2f s (of %.2f s x %d cores); PostgreSQL in the %d-session floor %.2f s\n' \
  "$r_cpu" "$pg_cpu" "$client_cpu" "$start_secs" "$(nproc)" "$cores" "$(cat "$work/floor-$cores.cpu")"
printf 'replicator peak RSS %.1f MiB\n' "$(echo "$rss_kib / 1024" | bc -l)"
echo "every row identical to COPY's (md5 of the table's text)"
fi

# --- replicator start, consistent mode --------------------------------------------------------
if [[ "$modes" == *consistent* ]]; then
kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=
# The floor of consistent mode: what PostgreSQL must write for these rows at COPY's speed —
# the rows into the per-table staging table (MOLT's layout and indexes, and ours on unapplied
# rows) in one transaction, then in another their applied marks (one UPDATE), their
# key_versions and the target rows — in $1 sessions at once.
consistent_floor() { # sessions -> seconds
  local n=$1 t0 t1 i lo hi
  psql_ -d postgres -c "DROP DATABASE IF EXISTS bench_floor WITH (FORCE)" -c "CREATE DATABASE bench_floor"
  psql_ -d bench_floor -c "$ddl" -c "CREATE TABLE key_versions (table_name TEXT NOT NULL, key TEXT NOT NULL,
    nanos INT8 NOT NULL, logical INT8 NOT NULL, PRIMARY KEY (table_name, key))" \
    -c "CREATE TABLE staged (nanos INT8 NOT NULL, logical INT8 NOT NULL, key TEXT NOT NULL, mut BYTEA NOT NULL,
    before BYTEA NULL, applied BOOL NOT NULL DEFAULT false, applied_at TIMESTAMPTZ NULL,
    deletion BOOL NOT NULL DEFAULT false, source_time TIMESTAMPTZ GENERATED ALWAYS AS
    (to_timestamp(nanos::float8 / 1e9)) STORED, PRIMARY KEY (nanos, logical, key))" \
    -c "CREATE INDEX ON staged (key) INCLUDE (applied)" \
    -c "CREATE INDEX ON staged (nanos, logical, key) WHERE NOT applied"
  for f in rows versions staged; do split -n "l/$n" -d "$work/$f.csv" "$work/$f.part."; done
  t0=$(now)
  for ((i = 0; i < n; i++)); do
    lo=$(head -1 "$work/staged.part.0$i" | cut -d, -f1); hi=$(tail -1 "$work/staged.part.0$i" | cut -d, -f1)
    psql_ -d bench_floor -c "\\copy staged (nanos, logical, key, mut, deletion) FROM '$work/staged.part.0$i' CSV" \
      -c "BEGIN" -c "UPDATE staged SET applied = true, applied_at = now() WHERE nanos BETWEEN $lo AND $hi" \
      -c "\\copy key_versions FROM '$work/versions.part.0$i' CSV" \
      -c "\\copy bench FROM '$work/rows.part.0$i' CSV" -c "COMMIT" &
  done
  wait
  t1=$(now)
  rm -f "$work"/*.part.*
  psql_ -d postgres -c "DROP DATABASE bench_floor WITH (FORCE)"
  echo "$t1 - $t0" | bc -l
}

# Runs consistent mode into database $1; phase $2 (drain or steady) names the results:
# $work/$2.result (seconds, p50, p99, resolved timestamps) and $work/$2.usage (CPU, RSS).
consistent() {
  local db=$1 phase=$2
  psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  psql_ -d "$db" -c "$ddl"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # shellcheck disable=SC2086
  "$bin" start --bindAddr "127.0.0.1:$port" --disableAuthentication \
    --targetConn "postgres://postgres@127.0.0.1:5432/$db" --stagingCreateSchema \
    ${BENCH_FLAGS:-} >"$work/consistent-$phase.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q "listening for changefeed requests" "$work/consistent-$phase.log" && break; sleep 0.05; done
  grep -q "listening for changefeed requests" "$work/consistent-$phase.log" || { cat "$work/consistent-$phase.log" >&2; exit 1; }
  pg0=$(cpu postgres); r0=$(cpu replicator "$pid")
  (python3 - "$phase" "$work" "http://127.0.0.1:$port/$db/public" "$concurrency" "$resolve_every" "$batch" "$steady_rate" "$db" <<'PY'
import concurrent.futures, glob, http.client, resource, subprocess, sys, threading, time, urllib.parse
phase, work, url, concurrency, every, batch, rate, db = sys.argv[1:9]
concurrency, every, batch, rate = int(concurrency), int(every), int(batch), int(rate)
u = urllib.parse.urlparse(url)
base = 1_700_000_000_000_000_000
files = sorted(glob.glob(f"{work}/req-*.json"))
local = threading.local()
def post(body):
    # One connection per worker, kept alive (as a changefeed's webhook sink does).
    if not hasattr(local, "c"):
        local.c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    for _ in range(100):
        local.c.request("POST", u.path, body, {"Content-Type": "application/json"})
        r = local.c.getresponse(); r.read()
        if r.status == 200:
            return
        time.sleep(0.05)
    raise SystemExit(f"not acknowledged: {r.status}")
def sql(q):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtX", "-d", db, "-c", q],
                          check=True, capture_output=True, text=True).stdout.strip()
# Waiting for the last resolved timestamp asks one session that stays open: a new psql every
# 10 ms (a Perl wrapper, a new connection) took most of a core from what is measured.
watcher = subprocess.Popen(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtX", "-d", db],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def ask(q):
    watcher.stdin.write(q + ";\n"); watcher.stdin.flush()
    return watcher.stdout.readline().strip()
per = max(1, every // batch)
groups = [files[i:i + per] for i in range(0, len(files), per)]
last = None
t0 = time.time()
with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    for g in groups:
        start = time.time()
        bodies = [open(f).read() for f in g]
        list(pool.map(post, bodies))
        first = int(g[0].rsplit("-", 1)[1].split(".")[0])
        last = f"{base + first + batch * len(g) - 1}.0000000000"
        post('{"resolved":"%s"}' % last)
        if phase == "steady":
            time.sleep(max(0.0, batch * len(g) / rate - (time.time() - start)))
posted = time.time()
while ask(f"SELECT count(*) FROM _replicator.checkpoints WHERE source_hlc = {last} AND target_applied_at IS NOT NULL") != "1":
    time.sleep(0.01)
t1 = time.time()
cpu = resource.getrusage(resource.RUSAGE_SELF)
with open(f"{work}/{phase}.client", "w") as out:
    out.write(f"{cpu.ru_utime + cpu.ru_stime}\n")
lat = sorted(float(x) for x in sql("SELECT extract(epoch FROM target_applied_at - first_seen) FROM _replicator.checkpoints").split())
print(f"{t1 - t0:.3f} {lat[len(lat) // 2]:.3f} {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.3f} {len(lat)} {posted - t0:.3f}")
PY
  ) >"$work/$phase.result"
  pg_cpu=$(echo "$(cpu postgres) - $pg0" | bc -l); r_cpu=$(echo "$(cpu replicator "$pid") - $r0" | bc -l)
  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  [ "$(psql_ -d "$db" -c "$digest")" = "$(psql_ -d bench_copy -c "$digest")" ] \
    || { echo "consistent mode's rows differ from COPY's" >&2; exit 1; }
  echo "$r_cpu $pg_cpu $rss_kib" >"$work/$phase.usage"
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp "$work/consistent-$phase.log" "$BENCH_LOGS/"; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
cfloor_secs=$(consistent_floor 1)
cfloor_all_secs=$(consistent_floor "$(nproc)")
for v in cfloor_secs cfloor_all_secs; do
  rate=$(echo "$rows / ${!v}" | bc -l)
  label="consistent floor, 1 session"; [ "$v" = cfloor_all_secs ] && label="consistent floor, $(nproc) sessions"
  printf '%-30s %10.0f rows/s  %6.2f s   %.2fx COPY (staged rows, their marks, key_versions, target rows)\n' \
    "$label" "$rate" "${!v}" "$(echo "$rate / $copy_rate" | bc -l)"
done
cfloor_all_rate=$(echo "$rows / $cfloor_all_secs" | bc -l)
cfloor_rate=$(echo "$rows / $cfloor_secs" | bc -l)
consistent bench_consistent drain
read -r secs _ _ windows posted <"$work/drain.result"
read -r r_cpu pg_cpu rss_kib <"$work/drain.usage"
rate=$(echo "$rows / $secs" | bc -l)
printf '%-30s %10.0f rows/s  %6.2f s   %.2fx COPY, %.2fx the 1-session floor, %.2fx the %d-session floor (%d resolved timestamps, until the last is applied)\n' \
  "replicator start (consistent)" "$rate" "$secs" "$(echo "$rate / $copy_rate" | bc -l)" \
  "$(echo "$rate / $cfloor_rate" | bc -l)" "$(echo "$rate / $cfloor_all_rate" | bc -l)" "$(nproc)" "$windows"
echo "  (one table is one group of tables: its target transactions commit one after the other, in time order, so the 1-session floor bounds it)"
printf 'the last request was answered after %.2f s; CPU during the drain: replicator %.2f s, PostgreSQL %.2f s, client %.2f s; replicator peak RSS %.1f MiB\n' \
  "$posted" "$r_cpu" "$pg_cpu" "$(cat "$work/drain.client")" "$(echo "$rss_kib / 1024" | bc -l)"
consistent bench_steady steady
read -r secs p50 p99 windows _ <"$work/steady.result"
read -r _ _ rss_kib <"$work/steady.usage"
printf 'steady %d rows/s for %.1f s: resolved-to-applied p50 %.3f s, p99 %.3f s (%d resolved timestamps); peak RSS %.1f MiB\n' \
  "$steady_rate" "$secs" "$p50" "$p99" "$windows" "$(echo "$rss_kib / 1024" | bc -l)"
echo "consistent mode's rows identical to COPY's (md5 of the table's text)"
fi
