// Skip one source table: replicate every table except it.
//
// Changes (upserts and deletes) of the skipped source table are dropped before they are
// staged; every other table passes through unchanged. If you load the data with MOLT Fetch
// first, exclude the same table there (--table-exclusion-filter) so both agree.
//
// Check:  replicator script test --userscript filter_table.ts \
//           --input filter_table.input.ndjson --expect filter_table.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript filter_table.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// The source table to skip. Names are case-sensitive: use the source's casing.
const SKIPPED_TABLE = "audit_logs";

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => (meta.table === SKIPPED_TABLE ? null : row),
  // Returning null for a delete keeps the target row; nothing of this table reaches it.
  onRowDelete: (row, meta) => (meta.table === SKIPPED_TABLE ? null : row),
});
