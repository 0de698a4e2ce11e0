// Leave some source columns out of the target, per table.
//
// For each listed table, the named columns are removed from every upsert (and from delete
// rows too, which only need the primary key), so they are never staged or written. Use it
// when the target table does not have those columns. Never drop a primary-key column.
// MOLT Fetch's equivalent for the initial load is a --transformations-file with
// column_exclusion_opts.
//
// Check:  replicator script test --userscript drop_columns.ts \
//           --input drop_columns.input.ndjson --expect drop_columns.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript drop_columns.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Source table -> source columns to drop. Tables not listed pass through unchanged.
const DROPPED_COLUMNS: Record<string, string[]> = {
  orders: ["internal_notes"],
  customers: ["ssn", "password_hash"],
};

function dropColumns(row: api.Row, meta: api.Metadata): api.Row {
  if (!Object.prototype.hasOwnProperty.call(DROPPED_COLUMNS, meta.table)) return row;
  const dropped = DROPPED_COLUMNS[meta.table];
  const out: api.Row = {};
  for (const [column, value] of Object.entries(row)) {
    if (!dropped.includes(column)) out[column] = value;
  }
  return out;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: dropColumns,
  onRowDelete: dropColumns,
});
