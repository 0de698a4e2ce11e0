// Skip a list of source tables (by name or pattern), e.g. audit and temporary tables.
//
// Every other table replicates unchanged. This is the script to pass to a migration, for
// example
//
//   replicator mylogical --sourceConn ... --targetConn ... --targetSchema defaultdb.public \
//     --userscript table_filter.ts ...
//
// Changes of skipped tables (upserts and deletes) are dropped before they are staged.
// When MOLT Fetch does the initial load, exclude the same tables there too
// (--table-exclusion-filter 'audit_logs|sessions|tmp_.*').
//
// Check:  replicator script test --userscript table_filter.ts \
//           --input table_filter.input.ndjson --expect table_filter.expected.ndjson
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Source tables to skip, by exact (case-sensitive) name. Add or remove names here.
const SKIPPED_TABLES = new Set<string>(["audit_logs", "sessions"]);

// Source tables to skip by pattern as well, e.g. scratch tables called tmp_<something>.
// Set it to null to skip only the tables listed above.
const SKIPPED_PATTERN: RegExp | null = /^tmp_/;

function skipped(table: string): boolean {
  return SKIPPED_TABLES.has(table) || (SKIPPED_PATTERN !== null && SKIPPED_PATTERN.test(table));
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => (skipped(meta.table) ? null : row),
  onRowDelete: (row, meta) => (skipped(meta.table) ? null : row),
});
