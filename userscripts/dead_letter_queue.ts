// Park rows the target rejects (NOT NULL violations) in a dead-letter table.
//
// Replication keeps going when some rows cannot be written: they go to a dead-letter table
// instead of failing the whole batch.
//
// Schema level: everything passes through. Table level, for the listed tables, onWrite
// takes over the write: it tries the whole batch under a SAVEPOINT; if that fails with one
// of the listed SQLSTATE codes (by default 23502, NOT NULL violation), it rolls back to the
// savepoint and writes the rows one at a time, each under its own savepoint. A row that
// still fails with such a code goes to the dead-letter table; any other error fails the
// batch as usual (fail fast: the replicator retries it and reports it).
//
// Create the dead-letter table in the target schema first:
//
//   CREATE TABLE defaultdb.public.userscript_dlq (
//     id         UUID        NOT NULL PRIMARY KEY DEFAULT gen_random_uuid(),
//     table_name STRING      NOT NULL,
//     op         STRING      NOT NULL, -- the failed operation as JSON text
//     err        STRING      NOT NULL,
//     created_at TIMESTAMPTZ NOT NULL DEFAULT now()
//   );
//
// Check:  replicator script test --userscript dead_letter_queue.ts \
//           --input dead_letter_queue.input.ndjson --expect dead_letter_queue.expected.ndjson
//         (without --targetConn the test does not run onWrite; it checks the rows only)
// Run:    replicator pglogical --sourceConn ... --targetConn ... \
//           --targetSchema defaultdb.public --userscript dead_letter_queue.ts ...
import * as api from "replicator@v2";

// The target schema, exactly as passed to --targetSchema.
const TARGET_SCHEMA = "defaultdb.public";

// Target tables whose failed rows go to the dead-letter table.
const TABLES_WITH_DLQ = ["orders"];

// The dead-letter table (created as above), in the target schema.
const DLQ_TABLE = "userscript_dlq";

// SQLSTATE codes that send a row to the dead-letter table rather than failing the batch.
// 23502 = NOT NULL violation; you might add 23514 (CHECK) or 22001 (value too long).
const DLQ_SQLSTATES = ["23502"];

function belongsInDLQ(err: unknown): boolean {
  const text = String(err);
  return DLQ_SQLSTATES.some((code) => text.includes(`SQLSTATE ${code}`));
}

async function writeWithDLQ(rows: api.RowOp[]): Promise<void> {
  const tx = api.getTX();

  // Fast path: the whole batch at once.
  await tx.exec("SAVEPOINT dlq_batch");
  try {
    await api.write(rows);
    await tx.exec("RELEASE SAVEPOINT dlq_batch");
    return;
  } catch (err) {
    if (!belongsInDLQ(err)) throw err;
    await tx.exec("ROLLBACK TO SAVEPOINT dlq_batch");
    console.debug(`batch of ${rows.length} rows failed (${String(err)}); retrying one row at a time`);
  }

  // Slow path: one row at a time, each under its own savepoint.
  for (const op of rows) {
    await tx.exec("SAVEPOINT dlq_row");
    try {
      await api.write([op]);
      await tx.exec("RELEASE SAVEPOINT dlq_row");
    } catch (err) {
      if (!belongsInDLQ(err)) throw err;
      await tx.exec("ROLLBACK TO SAVEPOINT dlq_row");
      // Log the key only: the row itself may hold sensitive data.
      console.warn(`${op.meta.table} key [${op.pk.join(", ")}] sent to ${DLQ_TABLE}: ${String(err)}`);
      await tx.exec(
        `INSERT INTO ${tx.schema()}.${DLQ_TABLE} (table_name, op, err) VALUES ($1, $2, $3)`,
        op.meta.table,
        JSON.stringify(op),
        String(err),
      );
    }
  }
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row) => row,
  onRowDelete: (row) => row,
});

api.configureTargetTables(TABLES_WITH_DLQ, { onWrite: writeWithDLQ });
