// Stamp each written row with the time it was replicated and the source's name.
//
// Adds two target columns, replicated_at and replicated_from, to every upsert of the listed
// tables.
//
// This is a table-level handler: it runs just before the write, after staging, so
// replicated_at is the apply time. Deletes pass through (v2 needs onRowUpsert and
// onRowDelete together). Add the columns to the target tables first, e.g.
//
//   ALTER TABLE defaultdb.public.orders ADD COLUMN replicated_at TIMESTAMPTZ,
//     ADD COLUMN replicated_from STRING;
//
// Check:  replicator script test --userscript audit_columns.ts \
//           --input audit_columns.input.ndjson --expect audit_columns.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript audit_columns.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Target tables that get the audit columns (they must have both columns).
const AUDITED_TABLES = ["orders", "customers"];

// Written into replicated_from: a name for this source, e.g. the source database.
const SOURCE_NAME = "legacy-postgres";

// Every change passes through the schema level unchanged.
api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row) => row,
  onRowDelete: (row) => row,
});

api.configureTargetTables(AUDITED_TABLES, {
  onRowUpsert: (row) => ({
    ...row,
    replicated_at: new Date().toISOString(),
    replicated_from: SOURCE_NAME,
  }),
  // Key values pass through unchanged.
  onRowDelete: (keyVals) => keyVals,
});
