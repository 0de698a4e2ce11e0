// Migration of the MySQL database "shop" to CockroachDB, skipping tables that should not
// be carried over: the audit trail, login history and every scratch table (tmp_* / *_tmp).
//
// Check:  replicator script test --userscript table_filter.ts \
//           --input table_filter.input.ndjson --expect table_filter.expected.ndjson
// Run:    see README.md (replicator mylogical ... --userscript table_filter.ts)
import * as api from "replicator@v2";

// The CockroachDB schema the shop tables are replicated into (--targetSchema).
const TARGET_SCHEMA = "shop.public";

// MySQL tables left behind. MySQL table names are case-sensitive on Linux, and so is this.
const SKIPPED_TABLES = new Set<string>(["audit_log", "login_history"]);

// Scratch tables created by batch jobs: tmp_<job> or <table>_tmp.
const SCRATCH_TABLE = /^tmp_|_tmp$/;

function keep(table: string): boolean {
  return !SKIPPED_TABLES.has(table) && !SCRATCH_TABLE.test(table);
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => (keep(meta.table) ? row : null),
  onRowDelete: (row, meta) => (keep(meta.table) ? row : null),
});

// Log once at startup which filter is active (shows up in the replicator's log).
console.info(`table filter: skipping ${[...SKIPPED_TABLES].join(", ")} and tables matching ${SCRATCH_TABLE}`);
