#!/usr/bin/env bash
# Provisions the databases the test suite runs against, on Debian 12 as root:
#   PostgreSQL 15  127.0.0.1:5432  trust auth, wal_level=logical (source, target, staging)
#   MariaDB 10.11  127.0.0.1:3306  root with an empty password, row binlog, GTIDs (source, target)
#   Node.js + npm  (tsc type-checks the typings and examples; Node is the script benchmark's reference)
#   openssl        (the make-jwt tests generate keys and verify tokens with it)
# Idempotent: installs only what is missing, rewrites configuration only when it differs, and
# restarts a server only when its configuration changed. Safe to run before every test run.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { printf 'databases.sh: %s\n' "$*"; }
die() { printf 'databases.sh: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and edits server configuration)"

# --- packages ------------------------------------------------------------------------------
missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)   # tests make and check keys with it
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- PostgreSQL ----------------------------------------------------------------------------
pg_ver=$(ls /etc/postgresql | sort -n | tail -1)
pg_conf=/etc/postgresql/$pg_ver/main/postgresql.conf
pg_hba=/etc/postgresql/$pg_ver/main/pg_hba.conf
pg_changed=0

# Our settings live in one marked block at the end of postgresql.conf (last setting wins).
pg_block='# BEGIN replicator test settings
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
# END replicator test settings'
if [ "$(sed -n '/^# BEGIN replicator test settings$/,/^# END replicator test settings$/p' "$pg_conf")" != "$pg_block" ]; then
  sed -i '/^# BEGIN replicator test settings$/,/^# END replicator test settings$/d' "$pg_conf"
  printf '%s\n' "$pg_block" >>"$pg_conf"
  pg_changed=1
fi

# Trust on loopback for ordinary and replication connections, ahead of any other rule; members
# of replicator_password_auth must log in with a password (SCRAM), so tests can exercise it.
hba_block='# BEGIN replicator test access
host    all             +replicator_password_auth 127.0.0.1/32  scram-sha-256
host    replication     +replicator_password_auth 127.0.0.1/32  scram-sha-256
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
# END replicator test access'
if [ "$(sed -n '/^# BEGIN replicator test access$/,/^# END replicator test access$/p' "$pg_hba")" != "$hba_block" ]; then
  sed -i '/^# BEGIN replicator test access$/,/^# END replicator test access$/d' "$pg_hba"
  { printf '%s\n' "$hba_block"; cat "$pg_hba"; } >"$pg_hba.new" && cat "$pg_hba.new" >"$pg_hba" && rm -f "$pg_hba.new"
  pg_changed=1
fi

if pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  if [ $pg_changed = 1 ]; then
    log "restarting PostgreSQL $pg_ver (configuration changed)"
    pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main restart
  fi
else
  log "starting PostgreSQL $pg_ver"
  pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main start
fi
for _ in $(seq 100); do psql -h 127.0.0.1 -U postgres -qAtc 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
[ "$(psql -h 127.0.0.1 -U postgres -qAtc 'show wal_level')" = logical ] \
  || die "PostgreSQL on 127.0.0.1:5432 does not report wal_level=logical"
# The group whose members authenticate with a password (see pg_hba above).
psql -h 127.0.0.1 -U postgres -qAtc "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'replicator_password_auth') THEN CREATE ROLE replicator_password_auth NOLOGIN; END IF; END \$\$" >/dev/null

# --- MariaDB -------------------------------------------------------------------------------
my_dir=/etc/mysql/mariadb.conf.d
my_cnf=$my_dir/90-replicator-tests.cnf
my_want='[mysqld]
server_id = 1
log_bin = /var/lib/mysql/mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_strict_mode = ON
bind-address = 127.0.0.1
port = 3306'
my_changed=0
mkdir -p "$my_dir"
if [ "$(cat "$my_cnf" 2>/dev/null)" != "$my_want" ]; then
  printf '%s\n' "$my_want" >"$my_cnf"
  my_changed=1
fi
# Some images ship a my.cnf that does not read mariadb.conf.d: make it read it.
if ! grep -qE "^\s*!includedir\s+$my_dir/?\s*$" /etc/mysql/my.cnf 2>/dev/null; then
  printf '\n!includedir %s/\n' "$my_dir" >>/etc/mysql/my.cnf
  my_changed=1
fi

mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
start_mariadb() {
  start-stop-daemon --start --oknodo --background --pidfile /run/mysqld/mysqld.pid \
    --exec /usr/sbin/mariadbd -- --user=mysql
}
if mariadb-admin -uroot ping >/dev/null 2>&1; then
  if [ $my_changed = 1 ]; then
    log "restarting MariaDB (configuration changed)"
    mariadb-admin -uroot shutdown   # returns once the server has stopped
    start_mariadb
  fi
else
  log "starting MariaDB"
  start_mariadb
fi
for _ in $(seq 150); do mariadb-admin -uroot ping >/dev/null 2>&1 && break; sleep 0.2; done
mariadb-admin -uroot ping >/dev/null 2>&1 || die "MariaDB did not start; see /var/log/mysql/error.log"

# TCP login as root with an empty password (the socket login keeps working too).
if ! mariadb -uroot -h127.0.0.1 -P3306 -e 'select 1' >/dev/null 2>&1; then
  mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
fi
got=$(mariadb -uroot -h127.0.0.1 -P3306 -Nse 'select @@log_bin, @@binlog_format, @@binlog_row_image')
[ "$(echo "$got" | tr -s '\t' ' ')" = "1 ROW FULL" ] \
  || die "MariaDB on 127.0.0.1:3306 reports log_bin/binlog_format/binlog_row_image = '$got', want '1 ROW FULL'"

log "ready: PostgreSQL $pg_ver 127.0.0.1:5432 (wal_level=logical), MariaDB 127.0.0.1:3306 (row binlog, GTIDs), node $(node --version)"
