// Splits the source table "customers" into customers_eu, customers_us and customers_other
// by its "region" column ("eu-west-1" -> customers_eu, "US" -> customers_us, anything else,
// including NULL, -> customers_other). Deletes are routed the same way; a delete that does
// not carry the region is sent to all three tables (deleting a missing row is harmless).
//
// Check:  replicator script test --userscript split_by_region.ts \
//           --input split_by_region.input.ndjson --expect split_by_region.expected.ndjson
// Run:    see README.md (replicator pglogical ... --userscript split_by_region.ts)
import * as api from "replicator@v2";

// The target schema (--targetSchema).
const TARGET_SCHEMA = "defaultdb.public";

// The source table to split and the column that decides where a row goes.
const SOURCE_TABLE = "customers";
const REGION_COLUMN = "region";

// Region prefix (the part before the first "-", lowercased) -> target table.
const REGION_TABLES: Record<string, string> = {
  eu: "customers_eu",
  us: "customers_us",
};

// Target table for every other region, and for rows without one.
const OTHER_TABLE = "customers_other";

// Every target table, in the order a key-only delete is fanned out.
const ALL_TABLES = [...Object.values(REGION_TABLES), OTHER_TABLE];

function tableFor(region: api.RowValue): string {
  if (typeof region !== "string") return OTHER_TABLE;
  const prefix = region.trim().toLowerCase().split("-")[0];
  return Object.prototype.hasOwnProperty.call(REGION_TABLES, prefix) ? REGION_TABLES[prefix] : OTHER_TABLE;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => {
    if (meta.table !== SOURCE_TABLE) return row;
    return { [tableFor(row[REGION_COLUMN] ?? null)]: [row] };
  },
  onRowDelete: (row, meta) => {
    if (meta.table !== SOURCE_TABLE) return row;
    // Only the primary key is guaranteed in a delete. With region in the key (see README)
    // it is always there; otherwise the row may be in any of the tables.
    if (!(REGION_COLUMN in row)) {
      const routed: api.RoutedRows = {};
      for (const table of ALL_TABLES) routed[table] = [row];
      return routed;
    }
    return { [tableFor(row[REGION_COLUMN])]: [row] };
  },
});
