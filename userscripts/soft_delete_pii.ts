// Skip soft-deleted rows and strip PII columns of one table.
//
// Two transformations on one table, both applied before anything is staged.
//
// For the listed table: an upsert whose soft-delete flag is 1/true is dropped; otherwise the
// PII columns are removed and the rest is replicated. Deletes replicate (hard deletes still
// apply) with the PII columns removed as well, since some sources send the whole old row.
// Other tables pass through untouched. For a MOLT Fetch initial load, use the same filter
// (--filter-path, "is_deleted != 1") and column exclusions (--transformations-file).
//
// Check:  replicator script test --userscript soft_delete_pii.ts \
//           --input soft_delete_pii.input.ndjson --expect soft_delete_pii.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript soft_delete_pii.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// The source table both transformations apply to.
const TABLE = "customers";

// The column that marks a row as deleted (1, "1" or true means deleted).
const SOFT_DELETE_COLUMN = "is_deleted";

// Columns holding personal data, removed before staging. Never list a primary-key column.
const PII_COLUMNS = ["ssn", "credit_card_number"];

function isSoftDeleted(value: api.RowValue | undefined): boolean {
  return value === true || (typeof value === "string" && Number(value) === 1);
}

function withoutPII(row: api.Row): api.Row {
  const out: api.Row = { ...row };
  for (const column of PII_COLUMNS) delete out[column];
  return out;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => {
    if (meta.table !== TABLE) return row;
    if (isSoftDeleted(row[SOFT_DELETE_COLUMN])) return null;
    return withoutPII(row);
  },
  onRowDelete: (row, meta) => (meta.table === TABLE ? withoutPII(row) : row),
});
