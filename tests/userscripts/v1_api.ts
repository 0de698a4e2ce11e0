// The legacy API: configureSource with dispatch/deletesTo (meta.before included) and with
// target, configureTable map/deleteKey/apply, setOptions, randomUUID, standardMerge,
// replicationKey; cdc-sink@v1 is the same module.
import * as api from "replicator@v1";
import { replicationKey as legacyKey } from "cdc-sink@v1";

api.setOptions({ flushSize: "500", "--parallelism": "4" });

const ALLOWED = new Set(["orders", "customers"]);

api.configureSource("db.public", {
  dispatch: (doc, meta) => {
    if (!ALLOWED.has(meta.table)) return null;
    const before = meta.before as api.Document | null;
    return { [meta.table]: [{ ...doc, had_before: before !== null, old_status: before ? before.status : null }] };
  },
  deletesTo: (doc, meta) => (ALLOWED.has(meta.table) ? { [meta.table]: [doc] } : null),
});

api.configureSource("db.legacy", { target: "everything" });

api.configureSource("db.simple", {
  dispatch: (doc) => ({ simple: [doc] }),
  deletesTo: "simple_deletes",
});

api.configureTable("orders", {
  map: (doc) => ({ ...doc, uuid_ok: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(api.randomUUID()), key: api.replicationKey, legacy: legacyKey, merge: typeof api.standardMerge() }),
  deleteKey: (key) => (key[0] === "0" ? null : key.map((k) => `${k}`)),
  apply: async (ops) => {
    await api.getTX().apply(ops.filter((op) => op.action === "upsert"));
  },
});
