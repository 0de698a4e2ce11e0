// Replicate source tables into target tables with other names.
//
// Upserts and deletes of each listed source table are routed to its target table; tables
// not listed keep their names. Renaming has to happen here, in the schema-level handlers,
// because the target table must be known before the change is staged. MOLT Fetch's
// equivalent for the initial load is a --transformations-file with table_rename_opts.
//
// Check:  replicator script test --userscript rename_tables.ts \
//           --input rename_tables.input.ndjson --expect rename_tables.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript rename_tables.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Source table -> target table. Both are case-sensitive (source casing on the left).
const TABLE_RENAMES: Record<string, string> = {
  tblCustomers: "customers",
  tblOrders: "orders",
};

function rename(row: api.Row, meta: api.Metadata): api.Row | api.RoutedRows {
  if (!Object.prototype.hasOwnProperty.call(TABLE_RENAMES, meta.table)) return row;
  return { [TABLE_RENAMES[meta.table]]: [row] };
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: rename,
  onRowDelete: rename,
});
