// Table-level handlers: per-row rewrites and delete suppression, bare and qualified names,
// state kept across calls, onRowUpsert/onRowDelete given together.
import * as api from "replicator@v2";

let seen = 0;

const STATUS: Record<string, string> = { "1": "active", "2": "closed" };

api.configureTargetSchema("db.public", { onRowUpsert: (r) => r, onRowDelete: (r) => r });

api.configureTargetTables(["orders", "db.public.archive"], {
  onRowUpsert: (row, meta) => {
    seen++;
    if (row.hidden === true) return null;
    return {
      ...row,
      status_description: STATUS[String(row.status_code)] ?? "unknown",
      replicated_at: new Date().toISOString().length > 0 ? "set" : "unset",
      seen,
      table: meta.table,
    };
  },
  onRowDelete: (key, meta) => {
    if (key[1] === "EU") return null;
    if (Number(key[0]) >= 1000) return null;
    if (meta.table === "archive") return [String(Number(key[0]) + 1), key[1]];
    return key;
  },
});

api.configureTargetTables(["only_write"], {
  onWrite: async (rows) => {
    await api.write(rows);
  },
});
