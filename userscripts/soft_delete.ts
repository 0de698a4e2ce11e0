// Do not replicate rows that are soft-deleted in the source (is_deleted = 1).
//
// An upsert whose soft-delete flag is set (1, "1", true, "true") is dropped, so flagged rows
// never reach the target; rows without the column, or with 0/false/null, pass unchanged.
// Hard deletes still replicate. The matching MOLT Fetch filter for the initial load is
// a --filter-path expression like "is_deleted != 1".
//
// Note: a row that is flagged after it was replicated stays in the target (the flagging
// update is dropped). To delete such rows instead, let flagged upserts through here and
// turn them into deletes in a table-level onWrite.
//
// Check:  replicator script test --userscript soft_delete.ts \
//           --input soft_delete.input.ndjson --expect soft_delete.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript soft_delete.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// The column that marks a row as deleted. It is checked in every table that has it.
const SOFT_DELETE_COLUMN = "is_deleted";

// True when a flag value means "deleted". Numbers arrive as strings ("1"), PostgreSQL
// booleans as true/false. Adjust if your flag uses other values (e.g. "Y").
function isSoftDeleted(value: api.RowValue | undefined): boolean {
  if (value === true) return true;
  if (typeof value !== "string") return false;
  return Number(value) === 1 || value.toLowerCase() === "true";
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row) => (isSoftDeleted(row[SOFT_DELETE_COLUMN]) ? null : row),
  // Hard deletes pass through.
  onRowDelete: (row) => row,
});
