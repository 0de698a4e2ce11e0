// The benchmark's "simple map": filter one table, rename a column, compute one, tag a JSON field.
import * as api from "replicator@v2";

api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    if (meta.table === "audit_logs") return null;
    const { name, ...rest } = row;
    return {
      ...rest,
      customer_name: String(name).toUpperCase(),
      amount_cents: String(Math.round(Number(row.amount) * 100)),
      attrs: { ...(row.attrs as api.Row), migrated: true },
    };
  },
  onRowDelete: (row) => row,
});
