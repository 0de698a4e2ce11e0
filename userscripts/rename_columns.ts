// Rename columns between source and target, per table.
//
// For each listed table, columns are renamed in upserts and in deletes (a delete row holds
// the primary key, which may be among the renamed columns). A column that is absent from a
// row stays absent; one that already has its target name is left alone. Other columns and
// tables pass through. MOLT Fetch cannot rename columns: after an initial load, rename
// them on the target with ALTER TABLE ... RENAME COLUMN before replicating.
//
// Check:  replicator script test --userscript rename_columns.ts \
//           --input rename_columns.input.ndjson --expect rename_columns.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript rename_columns.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Source table -> { source column: target column }. Names are case-sensitive.
const COLUMN_RENAMES: Record<string, Record<string, string>> = {
  employees: { emp_id: "employee_id", emp_name: "employee_name" },
};

function renameColumns(row: api.Row, meta: api.Metadata): api.Row {
  if (!Object.prototype.hasOwnProperty.call(COLUMN_RENAMES, meta.table)) return row;
  const renames = COLUMN_RENAMES[meta.table];
  const out: api.Row = {};
  // Rebuild the row so renamed columns keep their position.
  for (const [column, value] of Object.entries(row)) {
    const target = Object.prototype.hasOwnProperty.call(renames, column) ? renames[column] : column;
    out[target] = value;
  }
  return out;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: renameColumns,
  onRowDelete: renameColumns,
});
