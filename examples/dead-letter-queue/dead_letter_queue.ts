// Writes orders and order_items through a dead-letter queue: rows the target rejects for a
// data problem (NULL in a NOT NULL column, a failed CHECK) are parked in the table
// replication_dlq with the error, instead of stopping replication. Every other error still
// fails the batch, so the replicator retries it and reports it.
//
// Check:  replicator script test --userscript dead_letter_queue.ts \
//           --input dead_letter_queue.input.ndjson --expect dead_letter_queue.expected.ndjson
// Run:    see README.md (CREATE TABLE for the DLQ, replicator pglogical ...)
import * as api from "replicator@v2";

// The target schema (--targetSchema); the DLQ table lives there too.
const TARGET_SCHEMA = "defaultdb.public";

// Target tables written through the DLQ.
const TABLES = ["orders", "order_items"];

// The dead-letter table (see README.md for its CREATE TABLE).
const DLQ_TABLE = "replication_dlq";

// SQLSTATE codes that mean "this row's data is bad": 23502 not_null_violation,
// 23514 check_violation.
const DLQ_SQLSTATES = new Set(["23502", "23514"]);

// The SQLSTATE carried in an error message ("... (SQLSTATE 23502)"), or null.
function sqlstate(err: unknown): string | null {
  const match = /SQLSTATE ([0-9A-Z]{5})/.exec(String(err));
  return match === null ? null : match[1];
}

function isBadData(err: unknown): boolean {
  const code = sqlstate(err);
  return code !== null && DLQ_SQLSTATES.has(code);
}

// Runs fn under a savepoint: released on success, rolled back (and rethrown) on failure,
// which leaves the transaction usable after a failed statement.
async function underSavepoint(tx: api.TargetTX, name: string, fn: () => Promise<void>): Promise<void> {
  await tx.exec(`SAVEPOINT ${name}`);
  try {
    await fn();
  } catch (err) {
    await tx.exec(`ROLLBACK TO SAVEPOINT ${name}`);
    throw err;
  }
  await tx.exec(`RELEASE SAVEPOINT ${name}`);
}

async function park(tx: api.TargetTX, op: api.RowOp, err: unknown): Promise<void> {
  // The key only in the log; the full row goes to the DLQ table.
  console.warn(`dead-lettered ${op.meta.table} [${op.pk.join(", ")}]: SQLSTATE ${sqlstate(err)}`);
  await tx.exec(
    `INSERT INTO ${tx.schema()}.${DLQ_TABLE} (table_name, pk, action, data, sqlstate, err) ` +
      "VALUES ($1, $2, $3, $4, $5, $6)",
    op.meta.table,
    JSON.stringify(op.pk),
    op.action,
    op.action === "upsert" ? JSON.stringify(op.data) : null,
    sqlstate(err),
    String(err),
  );
}

api.configureTargetSchema(TARGET_SCHEMA, {
  onRowUpsert: (row) => row,
  onRowDelete: (row) => row,
});

api.configureTargetTables(TABLES, {
  onWrite: async (rows) => {
    const tx = api.getTX();
    try {
      // Usually the whole batch goes through in one statement per table.
      await underSavepoint(tx, "dlq_batch", () => api.write(rows));
      return;
    } catch (err) {
      if (!isBadData(err)) throw err;
      console.debug(`batch of ${rows.length} failed with SQLSTATE ${sqlstate(err)}; retrying row by row`);
    }
    // Some row is bad: write them one by one and park the ones that fail.
    let parked = 0;
    for (const op of rows) {
      try {
        await underSavepoint(tx, "dlq_row", () => api.write([op]));
      } catch (err) {
        if (!isBadData(err)) throw err;
        await park(tx, op, err);
        parked++;
      }
    }
    console.info(`${parked} of ${rows.length} rows sent to ${DLQ_TABLE}`);
  },
});
