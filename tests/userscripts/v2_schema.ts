// Schema-level handlers: pass-through, filters, renames, fan-out, computed columns,
// exact numbers, JSON columns, returned numbers/Dates, and the meta fields.
import * as api from "replicator@v2";

const SKIP = new Set(["audit_logs", "tmp"]);
const RENAMES: Record<string, string> = { customers_old: "customers" };

function upsert(row: api.Row, meta: api.Metadata): api.OutRow | api.RoutedRows | null {
  if (SKIP.has(meta.table)) return null;
  if (meta.table in RENAMES) return { [RENAMES[meta.table]]: [row] };
  switch (meta.table) {
    case "orders": {
      if (row.is_deleted !== undefined && Number(row.is_deleted) === 1) return null;
      const total = Number(row.price ?? 0) * Number(row.qty ?? 0);
      const { ssn: _ssn, ...rest } = row;
      return { ...rest, status: String(row.status).toUpperCase(), total: total.toFixed(2) };
    }
    case "events": {
      const id = Number(row.id);
      if (id < 100) return { events_a: [row] };
      if (id < 200) return { events_b: [row] };
      return { events_a: [row], events_b: [row], events_audit: [{ id: row.id, seen: true }] };
    }
    case "docs": {
      const doc = row.doc as api.JsonObject;
      // A number no double holds arrives as its exact text; returned, it is a number again.
      const seen = `${typeof doc.n} ${typeof doc.big} ${doc.big}`;
      return { id: row.id, doc: { ...doc, added: true }, keys: Object.keys(doc).length, seen, at: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)) };
    }
    case "meta":
      return {
        id: row.id,
        schema: meta.schema,
        table: meta.table,
        pglogical: meta.pglogical ?? false,
        nanos: meta.nanos ?? null,
        logical: meta.logical ?? null,
      };
    case "types":
      return { ...row, kinds: Object.values(row).map((v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v)).join(",") };
    case "nothing":
      return {};
    default:
      return row;
  }
}

api.configureTargetSchema("db.public", {
  onRowUpsert: upsert,
  onRowDelete: (row, meta) => {
    if (SKIP.has(meta.table)) return null;
    if (meta.table in RENAMES) return { [RENAMES[meta.table]]: [row] };
    if (meta.table === "items" && Number(row.id) < 100) return null;
    return row;
  },
});

api.configureTargetSchema("db.other", {
  onRowUpsert: (row) => ({ ...row, from: "other" }),
  onRowDelete: (row) => row,
});
