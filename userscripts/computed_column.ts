// Add a column computed from other columns (order_items.total = price * qty).
//
// Numbers reach the script as strings ("19.90"), so they are parsed, multiplied and turned
// back into a string with toFixed(2). If price or qty is missing, NULL or not a number, the
// total is NULL. Deletes and other tables pass through. The target table needs the extra
// column; MOLT Fetch cannot compute columns, so fill it after an initial load with
// UPDATE ... SET total = price * qty.
//
// Check:  replicator script test --userscript computed_column.ts \
//           --input computed_column.input.ndjson --expect computed_column.expected.ndjson
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript computed_column.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// The source table that gets the new column.
const TABLE = "order_items";

// The new column's name, and the columns it is computed from.
const TOTAL_COLUMN = "total";
const PRICE_COLUMN = "price";
const QUANTITY_COLUMN = "qty";

// Parses a numeric column value; null when it is absent, NULL or not a number.
function numeric(value: api.RowValue | undefined): number | null {
  if (typeof value !== "string" || value.trim() === "") return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row, meta) => {
    if (meta.table !== TABLE) return row;
    const price = numeric(row[PRICE_COLUMN]);
    const qty = numeric(row[QUANTITY_COLUMN]);
    // JS numbers are binary floats: fine for a rounded two-decimal total, but compute
    // exact amounts (large sums, many decimals) on the target with SQL instead.
    const total = price === null || qty === null ? null : (price * qty).toFixed(2);
    return { ...row, [TOTAL_COLUMN]: total };
  },
  onRowDelete: (row) => row,
});
