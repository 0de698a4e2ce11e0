// onWrite against a real PostgreSQL transaction (tests/userscript_target.rs): the
// cookbook's dead-letter queue with savepoints, exact values through getTX().query,
// columns(), and schema()/table() in SQL.
import * as api from "replicator@v2";

api.configureTargetSchema("db.public", { onRowUpsert: (row) => row, onRowDelete: (row) => row });

api.configureTargetTables(["orders"], {
  onWrite: async (rows) => {
    const tx = api.getTX();
    const seen = [
      ...(await tx.query(
        "SELECT $1::int8, 12.50::numeric(12,2), 'héllo'::text, true, " +
          "'2024-01-02 03:04:05.5+00'::timestamptz, '{\"a\": [1, 2.50]}'::jsonb, NULL::text, " +
          "ARRAY[1, 2, 3]::int4[], '\\x01ff'::bytea, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid, " +
          "'2024-02-29'::date, 1.5::float8",
        "9007199254740993",
      )),
    ];
    await tx.exec("INSERT INTO probe (what, seen) VALUES ('types', $1)", JSON.stringify(seen[0]));

    await tx.exec("SAVEPOINT dlq");
    try {
      await api.write(rows);
      await tx.exec("RELEASE SAVEPOINT dlq");
    } catch (err) {
      if (!String(err).includes("SQLSTATE 23502")) throw err;
      console.debug("batch failed on a NOT NULL column; retrying row by row");
      await tx.exec("ROLLBACK TO SAVEPOINT dlq");
      for (const op of rows) {
        await tx.exec("SAVEPOINT one");
        try {
          await api.write([op]);
          await tx.exec("RELEASE SAVEPOINT one");
        } catch (e) {
          if (!String(e).includes("SQLSTATE 23502")) throw e;
          await tx.exec("ROLLBACK TO SAVEPOINT one");
          await tx.exec("INSERT INTO replicator_dlq (stmt, err) VALUES ($1, $2)", JSON.stringify(op.pk), String(e));
        }
      }
    }
    await tx.exec(`UPDATE ${tx.schema()}.customers SET num_orders = num_orders + $1 WHERE id = $2`, rows.length, "7");
    await tx.exec("INSERT INTO probe (what, seen) VALUES ('columns', $1), ('table', $2)", JSON.stringify(tx.columns()), tx.table());
  },
});

api.configureTargetTables(["missing"], {
  onWrite: async () => {
    await api.getTX().query("SELECT * FROM no_such_table");
  },
});

api.configureTargetTables(["slow"], {
  onWrite: async () => {
    for (let i = 0; i < 3; i++) await api.getTX().exec("SELECT pg_sleep(0.3)");
  },
});
