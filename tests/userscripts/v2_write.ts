// onWrite with getTX() and write(): the cookbook's dead-letter queue and the API page's
// "skip orphans, then count" example; getTX() outside onWrite is an error.
import * as api from "replicator@v2";

api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    if (meta.table === "sneaky") api.getTX();
    return row;
  },
  onRowDelete: (row) => row,
});

api.configureTargetTables(["orders"], {
  onWrite: async (rows) => {
    const tx = api.getTX();
    const cols = tx.columns();
    const keep: api.RowOp[] = [];
    for (const op of rows) {
      if (op.action !== "upsert") {
        keep.push(op);
        continue;
      }
      const found = await tx.query("SELECT 1 FROM customers WHERE id = $1", op.data.customer_id);
      if ([...found].length === 0) {
        console.warn("skipping orphan order", op.pk.join(","));
        continue;
      }
      keep.push(op);
    }
    await api.write(keep);
    await tx.exec(`UPDATE ${tx.schema()}.customers SET num_orders = num_orders + $1 -- ${tx.table()} ${cols.map((c) => c.name + (c.primary ? "*" : "")).join(",")}`, keep.length);
  },
});

api.configureTargetTables(["dlq_demo"], {
  onWrite: async (rows) => {
    const tx = api.getTX();
    await tx.exec("SAVEPOINT dlq");
    try {
      await tx.query("SELECT fail");
    } catch (err) {
      if (!String(err).includes("SQLSTATE 23502")) throw err;
      await tx.exec("ROLLBACK TO SAVEPOINT dlq");
      for (const op of rows) {
        await tx.exec("INSERT INTO replicator_dlq (stmt, err) VALUES ($1, $2)", JSON.stringify(op.pk), String(err));
      }
    }
  },
});

api.configureTargetTables(["rethrows"], {
  onWrite: async () => {
    await api.getTX().query("SELECT fail");
  },
});

api.configureTargetTables(["not_async"], {
  // @ts-expect-error onWrite must return a promise: this checks the runtime says so too
  onWrite: (rows) => rows.length,
});
