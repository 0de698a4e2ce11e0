// Rename primary-key columns between source and target, in upserts and deletes.
//
// Upserts: the key columns are renamed (the source names are removed). Deletes: depending
// on the source, a delete row carries the key under the source names, the target names or
// both, so the key values are copied to the target names when the source names are there,
// and the rest is left as is (a delete only reads the target key columns; others are
// ignored). MOLT Fetch cannot rename columns: rename them on the target after the load.
//
// Check:  replicator script test --userscript rename_primary_keys.ts \
//           --input rename_primary_keys.input.ndjson --expect rename_primary_keys.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript rename_primary_keys.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Source table -> { source key column: target key column }. Names are case-sensitive.
const KEY_RENAMES: Record<string, Record<string, string>> = {
  order_lines: { order_no: "order_id", line_no: "line_id" },
};

function renamesFor(table: string): Record<string, string> | null {
  return Object.prototype.hasOwnProperty.call(KEY_RENAMES, table) ? KEY_RENAMES[table] : null;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => {
    const renames = renamesFor(meta.table);
    if (renames === null) return row;
    const out: api.Row = { ...row };
    for (const [from, to] of Object.entries(renames)) {
      if (from in out) {
        out[to] = out[from];
        delete out[from];
      }
    }
    return out;
  },
  onRowDelete: (row, meta) => {
    const renames = renamesFor(meta.table);
    if (renames === null) return row;
    const out: api.Row = { ...row };
    for (const [from, to] of Object.entries(renames)) {
      const value = row[from];
      if (value !== undefined) out[to] = value;
    }
    return out;
  },
});
